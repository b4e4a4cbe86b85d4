//! Credentials for a registry, looked up the way Docker (and crane's default keychain) does:
//! Docker's config file (`credHelpers`, then `credsStore`, then `auths`), then for Google's
//! registries an access token from `gcloud`, else anonymous.
//!
//! Secrets found here go to oci-client and nowhere else: they are never printed or logged, and
//! nothing here implements `Debug` with them in it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

/// Runs an external program with `args`, feeding it `stdin`, and returns its standard output.
/// The caller decides how (logging, PATH checks); the output may be a secret and must not be
/// shown.
pub type RunProgram<'a> = dyn Fn(&str, &[&str], Option<&str>) -> Result<String> + 'a;

/// The parts of Docker's `config.json` that hold credentials.
#[derive(Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Docker's config folder, as docker finds it: `$DOCKER_CONFIG`, else `$HOME/.docker`.
pub fn docker_config_dir() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")),
    }
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; none at all is no credentials.
    pub fn load() -> Result<DockerConfig> {
        let Some(path) = Self::path() else {
            return Ok(DockerConfig::default());
        };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("cannot parse the Docker config {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DockerConfig::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read the Docker config {}", path.display())),
        }
    }

    fn path() -> Option<PathBuf> {
        docker_config_dir().map(|dir| dir.join("config.json"))
    }

    /// The credential helper for `host`, if the config names one.
    fn helper_for(&self, host: &str) -> Option<&str> {
        let specific = self.cred_helpers.iter().find(|(key, _)| same_registry(key, host));
        specific.map(|(_, helper)| helper.as_str()).or(self.creds_store.as_deref())
    }

    /// The user name and password stored inline for `host`.
    fn inline_for(&self, host: &str) -> Option<(String, String)> {
        let entry = self.auths.iter().find(|(key, _)| same_registry(key, host)).map(|(_, e)| e)?;
        if let (Some(user), Some(pass)) = (&entry.username, &entry.password) {
            return Some((user.clone(), pass.clone()));
        }
        let decoded = base64::engine::general_purpose::STANDARD.decode(entry.auth.as_deref()?.trim()).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some((user.to_string(), pass.to_string()))
    }
}

/// Docker Hub goes by several names; config keys may carry a scheme and a path.
fn same_registry(config_key: &str, host: &str) -> bool {
    fn normalize(name: &str) -> &str {
        let name = name.strip_prefix("https://").or_else(|| name.strip_prefix("http://")).unwrap_or(name);
        let name = name.split('/').next().unwrap_or(name);
        match name {
            "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        }
    }
    normalize(config_key) == normalize(host)
}

/// The name Docker's helpers know Docker Hub by.
fn helper_server_name(host: &str) -> String {
    if same_registry(host, "docker.io") {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    }
}

/// Google's registries take an OAuth access token as the password of `oauth2accesstoken`.
pub fn is_google_registry(host: &str) -> bool {
    host.ends_with(".pkg.dev") || host == "gcr.io" || host.ends_with(".gcr.io")
}

/// Where a registry's credentials came from, for messages (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    Helper(String),
    DockerConfig,
    Gcloud,
    Anonymous,
    /// Anonymous because gcloud gave no token (the reason), for a registry only read from:
    /// public images there need no login.
    AnonymousWithoutGcloud(String),
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Helper(name) => write!(f, "docker-credential-{name}"),
            CredentialSource::DockerConfig => f.write_str("Docker config"),
            CredentialSource::Gcloud => f.write_str("gcloud access token"),
            CredentialSource::Anonymous => f.write_str("anonymous"),
            CredentialSource::AnonymousWithoutGcloud(_) => f.write_str("anonymous (no gcloud token)"),
        }
    }
}

/// Find the credentials for `host`. `gcloud_hosts`: more registries (host or host:port) that
/// take a gcloud access token, besides Google's own (a private endpoint, a proxy).
/// `read_only`: nothing is pushed there, so a registry that gcloud cannot log in to is read
/// anonymously (public images on gcr.io or pkg.dev need no account); pushing needs the token.
pub fn credentials_for(
    host: &str,
    config: &DockerConfig,
    gcloud_hosts: &[String],
    read_only: bool,
    run: &RunProgram<'_>,
) -> Result<(RegistryAuth, CredentialSource)> {
    if let Some(helper) = config.helper_for(host) {
        let program = format!("docker-credential-{helper}");
        let server = helper_server_name(host);
        // A helper that has nothing for this registry exits non-zero ("credentials not found"):
        // that is not an error, the registry may be public.
        if let Ok(output) = run(&program, &["get"], Some(&server))
            && let Ok(answer) = serde_json::from_str::<HelperAnswer>(&output)
            && !answer.secret.is_empty()
        {
            return Ok((
                RegistryAuth::Basic(answer.username, answer.secret),
                CredentialSource::Helper(helper.into()),
            ));
        }
    }
    if let Some((user, pass)) = config.inline_for(host) {
        return Ok((RegistryAuth::Basic(user, pass), CredentialSource::DockerConfig));
    }
    if is_google_registry(host) || gcloud_hosts.iter().any(|h| h == host) {
        let token = match run("gcloud", &["auth", "print-access-token"], None) {
            Ok(token) => token,
            Err(err) if read_only => {
                return Ok((
                    RegistryAuth::Anonymous,
                    CredentialSource::AnonymousWithoutGcloud(format!("{err:#}")),
                ));
            }
            Err(err) => {
                return Err(err.context(format!(
                    "cannot get an access token for {host} from gcloud, which pushing there needs: run `gcloud auth login`"
                )));
            }
        };
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok((RegistryAuth::Basic("oauth2accesstoken".into(), token), CredentialSource::Gcloud));
        }
    }
    Ok((RegistryAuth::Anonymous, CredentialSource::Anonymous))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn no_programs(program: &str, _: &[&str], _: Option<&str>) -> Result<String> {
        anyhow::bail!("{program} not expected")
    }

    #[test]
    fn reads_inline_auths_under_any_spelling_of_the_host() {
        let cfg = config(
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"}, "localhost:5000": {"username": "u", "password": "p"}}}"#,
        );
        let (auth, source) = credentials_for("index.docker.io", &cfg, &[], false, &no_programs).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("user".into(), "pass".into()));
        assert_eq!(source, CredentialSource::DockerConfig);
        let (auth, _) = credentials_for("localhost:5000", &cfg, &[], false, &no_programs).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("u".into(), "p".into()));
        let (auth, _) = credentials_for("localhost:5001", &cfg, &[], false, &no_programs).unwrap();
        assert_eq!(auth, RegistryAuth::Anonymous);
    }

    #[test]
    fn a_helper_wins_and_gets_the_server_on_stdin() {
        let cfg = config(
            r#"{"credHelpers": {"r.example": "test"}, "auths": {"r.example": {"auth": "dXNlcjpwYXNz"}}}"#,
        );
        let run = |program: &str, args: &[&str], stdin: Option<&str>| {
            assert_eq!((program, args, stdin), ("docker-credential-test", &["get"][..], Some("r.example")));
            Ok(r#"{"ServerURL": "r.example", "Username": "h", "Secret": "s"}"#.to_string())
        };
        let (auth, source) = credentials_for("r.example", &cfg, &[], false, &run).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("h".into(), "s".into()));
        assert_eq!(source, CredentialSource::Helper("test".into()));
    }

    #[test]
    fn a_helper_without_credentials_falls_through() {
        let cfg = config(r#"{"credsStore": "desktop"}"#);
        let run =
            |_: &str, _: &[&str], _: Option<&str>| anyhow::bail!("credentials not found in native keychain");
        let (auth, _) = credentials_for("quay.io", &cfg, &[], false, &run).unwrap();
        assert_eq!(auth, RegistryAuth::Anonymous);
    }

    #[test]
    fn google_registries_use_a_gcloud_token() {
        let run = |program: &str, args: &[&str], _: Option<&str>| {
            assert_eq!((program, args), ("gcloud", &["auth", "print-access-token"][..]));
            Ok("ya29.token\n".to_string())
        };
        let (auth, source) =
            credentials_for("us-docker.pkg.dev", &DockerConfig::default(), &[], false, &run).unwrap();
        assert_eq!(auth, RegistryAuth::Basic("oauth2accesstoken".into(), "ya29.token".into()));
        assert_eq!(source, CredentialSource::Gcloud);
    }

    #[test]
    fn without_gcloud_a_google_source_is_read_anonymously_and_a_destination_fails() {
        let run = |_: &str, _: &[&str], _: Option<&str>| anyhow::bail!("`gcloud` is not installed");
        let (auth, source) = credentials_for("gcr.io", &DockerConfig::default(), &[], true, &run).unwrap();
        assert_eq!(auth, RegistryAuth::Anonymous);
        assert!(
            matches!(source, CredentialSource::AnonymousWithoutGcloud(why) if why.contains("not installed"))
        );
        let err =
            credentials_for("us-docker.pkg.dev", &DockerConfig::default(), &[], false, &run).unwrap_err();
        assert!(format!("{err:#}").contains("gcloud auth login"), "{err:#}");
    }
}
