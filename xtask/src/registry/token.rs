//! Authorization the way registries ask for it. `GET /v2/` answers with a challenge: nothing
//! (open), `Basic` (send the credentials with every request), or `Bearer` with a realm (trade the
//! credentials, or nothing for public images, for a token scoped to repositories and actions).
//! Docker Hub, gcr.io, Artifact Registry and GHCR all use bearer tokens.
//!
//! Tokens are kept per registry and set of scopes until shortly before they expire. A registry
//! can still refuse one early (revoked, clocks apart): the caller then `forget`s it and the
//! next request fetches a new one. Tokens are secrets: nothing here prints or logs them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::http::Failure;

/// What a registry wants before it serves a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Nothing: an open registry.
    Open,
    /// HTTP basic auth on every request.
    Basic,
    /// A bearer token from `realm` (with `service`, when the registry names one).
    Bearer { realm: String, service: Option<String> },
}

/// The challenge of a `WWW-Authenticate` header, e.g.
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io"`.
pub fn parse_challenge(header: &str) -> Challenge {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::Basic;
    }
    let params = parse_params(rest);
    let param =
        |name: &str| params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
    match param("realm") {
        Some(realm) => Challenge::Bearer { realm, service: param("service") },
        None => Challenge::Basic,
    }
}

/// `key="value", key2=value2`: values may be quoted and hold commas (scopes do).
fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut params = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            (quoted[..end].to_string(), quoted.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key, value));
        rest = remainder.trim_start().trim_start_matches(',');
    }
    params
}

/// A token scope for one repository: `repository:library/alpine:pull`.
pub fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

struct Cached {
    token: String,
    renew_at: Instant,
}

/// Tokens by registry and scopes.
#[derive(Default)]
pub struct Tokens {
    cached: Mutex<HashMap<String, Cached>>,
}

/// A token service's answer. `expires_in` defaults to 60 s, as the token spec says.
#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

fn cache_key(host: &str, scopes: &[String]) -> String {
    format!("{host} {}", scopes.join(" "))
}

impl Tokens {
    /// A token still good for `scopes` at `host`, if one was fetched before.
    pub fn cached(&self, host: &str, scopes: &[String]) -> Option<String> {
        let cached = self.cached.lock().expect("the token cache is never poisoned");
        cached.get(&cache_key(host, scopes)).filter(|c| Instant::now() < c.renew_at).map(|c| c.token.clone())
    }

    /// Drop the token for `scopes`: the registry refused it.
    pub fn forget(&self, host: &str, scopes: &[String]) {
        self.cached.lock().expect("the token cache is never poisoned").remove(&cache_key(host, scopes));
    }

    /// Ask the token service at `realm` for a token covering `scopes`, with `credentials`
    /// (anonymous for public images), and keep it.
    pub async fn fetch(
        &self,
        http: &reqwest::Client,
        host: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
        credentials: &RegistryAuth,
    ) -> Result<String, Failure> {
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = service {
            query.push(("service", service));
        }
        let mut request = http.get(realm).query(&query);
        match credentials {
            RegistryAuth::Basic(user, password) => request = request.basic_auth(user, Some(password)),
            // A token handed to us (an identity token) is the token.
            RegistryAuth::Bearer(token) if !token.is_empty() => return Ok(token.clone()),
            _ => {}
        }
        let what = format!("GET token for {} from {realm}", scopes.join(" "));
        let response = request.send().await.map_err(|e| Failure::from_reqwest(&what, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| Failure::from_reqwest(&what, &e))?;
        if !status.is_success() {
            let mut failure = Failure::from_status(&what, status, &headers, &body);
            if matches!(status.as_u16(), 401 | 403) {
                failure.message.push_str(": the token service refused these credentials");
            }
            return Err(failure);
        }
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|e| Failure::permanent(format!("{what}: the answer is not a token ({e})")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::permanent(format!("{what}: the answer holds no token")))?;
        // Renew a little early, so that a token never runs out between our check and its use.
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(60).max(1));
        let renew_at = Instant::now() + lifetime.mul_f64(0.9);
        self.cached
            .lock()
            .expect("the token cache is never poisoned")
            .insert(cache_key(host, scopes), Cached { token: token.clone(), renew_at });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(
            parse_challenge(
                r#"bearer realm="http://127.0.0.1:9/token", service="s", scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer { realm: "http://127.0.0.1:9/token".into(), service: Some("s".into()) }
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://gcr.io/v2/token,service=gcr.io"),
            Challenge::Bearer { realm: "https://gcr.io/v2/token".into(), service: Some("gcr.io".into()) }
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Challenge::Basic);
    }

    #[test]
    fn scopes_name_repository_and_actions() {
        assert_eq!(repository_scope("library/alpine", false), "repository:library/alpine:pull");
        assert_eq!(repository_scope("team/app", true), "repository:team/app:pull,push");
    }
}
