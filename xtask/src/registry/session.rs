//! One run's connection to its registries: one HTTP client, each registry's credentials and
//! challenge, its tokens, and the requests a copy makes, each retried on transient failures and
//! counted. Every request passes through `send`, which sees every answer's headers: the
//! `Retry-After` of a 429 or 503, a registry's `RateLimit-*` pull quota, a token refused mid-run.
//! Blob transfers, which build on these requests, are in `blob.rs`.
//!
//! It is one piece of more than 500 lines on purpose: the manifest, referrer, blob-check, mount
//! and push requests below are each a few lines around `send` and `with_retry`, and they share
//! the session's private state (the registries' challenges, the token cache, the counters). Split
//! into files, each would reach into that state, which now only this file can touch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use bytes::Bytes;
use oci_client::Reference;
use oci_client::secrets::RegistryAuth;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::http::Cause;
use super::http::{Failure, RateLimit};
use super::manifest::{self, ACCEPTED, Descriptor, OCI_INDEX, sha256_digest};
use super::retry::{ProgressMade, Request, RetryPolicy, Retrying};
use super::tls;
use super::token::{Challenge, Tokens, parse_challenge, repository_scope};

/// How a registry is reached, decided once per run.
#[derive(Debug, Clone)]
pub struct RegistryAccess {
    /// `host[:port]` as it appears in references.
    pub host: String,
    /// Plain HTTP: loopback registries (as Docker does) and those listed as insecure.
    pub plain_http: bool,
}

/// Whether a registry speaks plain HTTP: loopback addresses always, like Docker; any other only
/// when listed in `insecure` (host or host:port).
pub fn uses_plain_http(host: &str, insecure: &[String]) -> bool {
    let name = host_without_port(host);
    let loopback = name == "localhost" || name.starts_with("127.") || name == "[::1]" || name == "::1";
    loopback || insecure.iter().any(|entry| entry == host || entry == name)
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(name, _)| &host[..=name.len()]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// One registry of the run: how to reach it, the credentials found for it, and what it asked
/// for when first asked (`Err`: it could not be reached).
struct Registry {
    scheme: &'static str,
    credentials: RegistryAuth,
    challenge: Result<Challenge, String>,
}

pub struct Session {
    pub(super) http: reqwest::Client,
    registries: HashMap<String, Registry>,
    tokens: Tokens,
    pub(super) options: SessionOptions,
    pub(super) retries: AtomicU64,
    requests: AtomicU64,
    rate_limits: Mutex<BTreeMap<String, RateLimit>>,
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub retry: RetryPolicy,
    /// The longest a read may stall (a connection must open in a sixth of it, at most 10 s).
    /// A whole blob may take as long as it needs while bytes keep coming.
    pub stall_timeout: Duration,
    /// Tell every request and every retry on stderr (never a credential).
    pub verbose: bool,
    /// Start no new pull from a registry that reports fewer pulls left than this.
    pub min_pulls_left: u64,
}

/// How long a read may stall, by default: a minute, far beyond any healthy registry's pause.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            retry: RetryPolicy::default(),
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            verbose: false,
            min_pulls_left: 1,
        }
    }
}

/// No pull started from `host`: it reports fewer pulls left than the session keeps in reserve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldBack {
    pub host: String,
    pub limit: RateLimit,
    pub min_pulls_left: u64,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (host, limit, reserve) = (&self.host, &self.limit, self.min_pulls_left);
        write!(
            f,
            "held back: {host} reports {limit} (RateLimit-Remaining), fewer than the {reserve} kept in reserve"
        )
    }
}

impl std::error::Error for HeldBack {}

/// The registry, and the token scopes a request needs there.
pub(super) struct Target {
    pub(super) host: String,
    pub(super) scopes: Vec<String>,
}

impl Target {
    pub(super) fn pull(reference: &Reference) -> Target {
        Target {
            host: reference.resolve_registry().to_string(),
            scopes: vec![repository_scope(reference.repository(), false)],
        }
    }

    pub(super) fn push(reference: &Reference) -> Target {
        Target {
            host: reference.resolve_registry().to_string(),
            scopes: vec![repository_scope(reference.repository(), true)],
        }
    }
}

impl Session {
    /// The client of a run over `registries`, with an HTTP client of its own (its connect timeout)
    /// over the process's one TLS config (`tls.rs`). Any thread may make one, at any time.
    pub fn new(registries: &[RegistryAccess], options: SessionOptions) -> Result<Session> {
        let http = tls::client_builder()
            .connect_timeout(connect_timeout(&options))
            .build()
            .context("cannot set up the HTTP client")?;
        let registries = registries
            .iter()
            .map(|access| {
                let scheme = if access.plain_http { "http" } else { "https" };
                let registry = Registry {
                    scheme,
                    credentials: RegistryAuth::Anonymous,
                    challenge: Err(format!("registry {} was not asked yet", access.host)),
                };
                (access.host.clone(), registry)
            })
            .collect();
        Ok(Session {
            http,
            registries,
            tokens: Tokens::default(),
            options,
            retries: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            rate_limits: Mutex::new(BTreeMap::new()),
        })
    }

    /// Ask every registry of the run once (`GET /v2/`) what it wants, and keep the credentials
    /// found for it (`registries`: each with the credentials found for it).
    pub async fn authenticate(mut self, registries: Vec<(RegistryAccess, RegistryAuth)>) -> Session {
        let probes = registries.iter().map(|(access, _)| self.challenge_of(&access.host));
        let challenges = futures_util::future::join_all(probes).await;
        for ((access, credentials), challenge) in registries.into_iter().zip(challenges) {
            if let Some(registry) = self.registries.get_mut(&access.host) {
                registry.credentials = credentials;
                registry.challenge = challenge;
            }
        }
        self
    }

    async fn challenge_of(&self, host: &str) -> Result<Challenge, String> {
        let scheme = self.registries.get(host).map_or("https", |r| r.scheme);
        let url = format!("{scheme}://{host}/v2/");
        let what = format!("GET {url}");
        let answer = self
            .with_retry(&what, Request::Any, || async {
                self.requests.fetch_add(1, Ordering::Relaxed);
                let response =
                    self.http.get(&url).send().await.map_err(|e| Failure::from_reqwest(&what, &e))?;
                let status = response.status();
                // Any other answer (200, 401, even 404) means the registry is there.
                if status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
                {
                    return Err(Failure::from_status(&what, status, response.headers(), b""));
                }
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .map(parse_challenge);
                Ok(match (status, challenge) {
                    (StatusCode::UNAUTHORIZED, Some(challenge)) => challenge,
                    (StatusCode::UNAUTHORIZED, None) => Challenge::Basic,
                    _ => Challenge::Open,
                })
            })
            .await;
        answer.map_err(|failure| format!("cannot reach registry {host} ({url}): {}", failure.describe()))
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Requests made so far, token requests included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Each registry's pull quota as it last reported it.
    pub fn rate_limits(&self) -> Vec<(String, RateLimit)> {
        let limits = self.rate_limits.lock().expect("never poisoned");
        limits.iter().map(|(host, limit)| (host.clone(), *limit)).collect()
    }

    /// Keep the lowest quota a registry reported this run: answers to concurrent requests
    /// arrive in any order, and the last to arrive may be an older count. (Should the window
    /// roll over mid-run, this undercounts, which errs on the side of sparing the quota.)
    fn note_rate_limit(&self, host: &str, limit: RateLimit) {
        let mut limits = self.rate_limits.lock().expect("never poisoned");
        let lowest = match limits.get(host) {
            Some(known) if known.remaining < limit.remaining => {
                RateLimit { remaining: known.remaining, ..limit }
            }
            _ => limit,
        };
        limits.insert(host.to_string(), lowest);
    }

    fn quota_spent(&self, host: &str) -> bool {
        self.rate_limits.lock().expect("never poisoned").get(host).is_some_and(|limit| limit.remaining == 0)
    }

    /// Why no new pull should start from `source`'s registry, if its quota is that low.
    pub fn pulls_held_back(&self, source: &Reference) -> Option<HeldBack> {
        let host = source.resolve_registry();
        let limit = *self.rate_limits.lock().expect("never poisoned").get(host)?;
        (limit.remaining < self.options.min_pulls_left).then(|| HeldBack {
            host: host.to_string(),
            limit,
            min_pulls_left: self.options.min_pulls_left,
        })
    }

    /// `op` under the session's retry policy; `what` names it in verbose output.
    pub(super) async fn with_retry<T, Fut>(
        &self,
        what: &str,
        request: Request,
        op: impl FnMut() -> Fut,
    ) -> Result<T, Failure>
    where
        Fut: std::future::Future<Output = Result<T, Failure>>,
    {
        self.trace(what);
        let on_retry = |retry: &Retrying<'_>| {
            self.trace(&format!(
                "retrying {what} in {:.1} s (try {}/{} failed: {})",
                retry.wait.as_secs_f64(),
                retry.tries,
                retry.attempts,
                retry.failure
            ));
        };
        self.options.retry.run(request, &self.retries, &on_retry, &ProgressMade::default(), op).await
    }

    pub(super) fn trace(&self, message: &str) {
        if self.options.verbose {
            eprintln!("registry: {message}");
        }
    }

    /// The registries of the run that could not be reached at all, sorted.
    pub fn unreachable(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .registries
            .iter()
            .filter(|(_, r)| r.challenge.is_err())
            .map(|(host, _)| host.clone())
            .collect();
        hosts.sort();
        hosts
    }

    fn registry(&self, host: &str) -> Result<&Registry, Failure> {
        let registry = self
            .registries
            .get(host)
            .ok_or_else(|| Failure::permanent(format!("registry {host} was not set up for this run")))?;
        match &registry.challenge {
            Ok(_) => Ok(registry),
            Err(unreachable) => Err(Failure::permanent(unreachable.clone())),
        }
    }

    pub(super) fn url(&self, reference: &Reference, path: &str) -> Result<String, Failure> {
        let host = reference.resolve_registry();
        let registry = self.registry(host)?;
        Ok(format!("{}://{host}/v2/{}/{path}", registry.scheme, reference.repository()))
    }

    /// The `Authorization` header for `target`, and whether its token was fetched just now (a
    /// fresh token refused is a real refusal, not an expired one).
    async fn authorization(&self, target: &Target) -> Result<(Option<HeaderValue>, bool), Failure> {
        let registry = self.registry(&target.host)?;
        let (value, fresh) =
            match (registry.challenge.as_ref().expect("checked by registry()"), &registry.credentials) {
                (Challenge::Open, _) => return Ok((None, false)),
                (Challenge::Basic, RegistryAuth::Basic(user, password)) => {
                    let encoded =
                        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                    (format!("Basic {encoded}"), false)
                }
                (Challenge::Basic, _) => return Ok((None, false)),
                (Challenge::Bearer { realm, service }, credentials) => {
                    match self.tokens.cached(&target.host, &target.scopes) {
                        Some(token) => (format!("Bearer {token}"), false),
                        None => {
                            self.trace(&format!("token for {} from {realm}", target.scopes.join(" ")));
                            self.requests.fetch_add(1, Ordering::Relaxed);
                            let token = self
                                .tokens
                                .fetch(
                                    &self.http,
                                    &target.host,
                                    realm,
                                    service.as_deref(),
                                    &target.scopes,
                                    credentials,
                                )
                                .await?;
                            (format!("Bearer {token}"), true)
                        }
                    }
                }
            };
        let mut header = HeaderValue::from_str(&value).map_err(|_| {
            Failure::permanent(format!("the credentials for {} are not a valid header", target.host))
        })?;
        header.set_sensitive(true);
        Ok((Some(header), fresh))
    }

    /// Send `request` for `target`, authorized, and return a successful answer; any other
    /// answer becomes a `Failure` carrying its status, error codes and `Retry-After`. Every
    /// answer's `RateLimit-*` headers are noted.
    /// The answer's head must come within the stall timeout.
    pub(super) async fn send(
        &self,
        what: &str,
        target: &Target,
        request: RequestBuilder,
    ) -> Result<Response, Failure> {
        self.send_with(what, target, request, true, Some(self.options.stall_timeout)).await
    }

    /// `send`, with `authorize`: whether the request may carry credentials, and `head_within`:
    /// how long its answer may take to begin (`None` for an upload, which is answered only
    /// after its whole body: the body's own progress is watched instead).
    pub(super) async fn send_with(
        &self,
        what: &str,
        target: &Target,
        request: RequestBuilder,
        authorize: bool,
        head_within: Option<Duration>,
    ) -> Result<Response, Failure> {
        let (authorization, fresh) =
            if authorize { self.authorization(target).await? } else { (None, false) };
        let reused_token = authorization.is_some() && !fresh;
        let request = match authorization {
            Some(header) => request.header(AUTHORIZATION, header),
            None => request,
        };
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = match head_within {
            Some(limit) => within(limit, what, request.send()).await?,
            None => request.send().await,
        };
        let response = answer.map_err(|e| Failure::from_reqwest(what, &e))?;
        if let Some(limit) = RateLimit::from_headers(response.headers()) {
            self.note_rate_limit(&target.host, limit);
        }
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let headers = response.headers().clone();
        let body = within(self.options.stall_timeout, what, response.bytes()).await?.unwrap_or_default();
        let mut failure = Failure::from_status(what, status, &headers, &body);
        if failure.is_rate_limited() && self.quota_spent(&target.host) {
            // Docker Hub's pull limit: waiting seconds will not bring back a quota of hours.
            failure.cause = Cause::QuotaSpent;
            failure.message.push_str(" (the registry's pull quota is spent: RateLimit-Remaining is 0)");
        }
        if status == StatusCode::UNAUTHORIZED && reused_token {
            // A token the registry took before: expired or revoked. The next try fetches anew.
            self.tokens.forget(&target.host, &target.scopes);
            failure.cause = Cause::StaleToken;
            failure.message.push_str(" (token no longer accepted: fetching a new one)");
        }
        Err(failure)
    }

    /// The digest a tag points at, by HEAD (free against Docker Hub's pull limit); `None` when the
    /// tag or the repository does not exist. `for_push`: the token asked for covers pushing too,
    /// so that the copy that follows reuses it.
    pub async fn manifest_digest(&self, reference: &Reference, for_push: bool) -> Result<Option<String>> {
        let target = if for_push { Target::push(reference) } else { Target::pull(reference) };
        let url = self.url(reference, &format!("manifests/{}", reference_in_path(reference)))?;
        let what = format!("HEAD manifest {reference}");
        let answer = self
            .with_retry(&what, Request::Any, || async {
                let request = self.http.head(&url).header(ACCEPT, ACCEPTED.join(", "));
                let response = self.send(&what, &target, request).await?;
                Ok(response
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string))
            })
            .await;
        match answer {
            Ok(Some(digest)) => Ok(Some(digest)),
            // A registry that does not say: read the manifest and hash it.
            Ok(None) => Ok(Some(sha256_digest(&self.manifest(reference).await?))),
            Err(failure) if failure.is_not_found() => Ok(None),
            Err(failure) => Err(anyhow!("{}", failure.describe())),
        }
    }

    /// The bytes of a manifest, checked against the digest in `reference`. Each such GET is a
    /// pull to a registry with a quota: none starts once the quota is below the threshold.
    pub async fn manifest(&self, reference: &Reference) -> Result<Bytes> {
        if let Some(held) = self.pulls_held_back(reference) {
            return Err(held.into());
        }
        self.manifest_answer(reference)
            .await
            .map_err(|failure| anyhow!("cannot read manifest {reference}: {}", failure.describe()))
    }

    /// The bytes of a manifest, as `manifest`; `None` when the tag or repository does not exist.
    pub async fn manifest_if_any(&self, reference: &Reference) -> Result<Option<Bytes>> {
        if let Some(held) = self.pulls_held_back(reference) {
            return Err(held.into());
        }
        match self.manifest_answer(reference).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(failure) if failure.is_not_found() => Ok(None),
            Err(failure) => Err(anyhow!("cannot read manifest {reference}: {}", failure.describe())),
        }
    }

    async fn manifest_answer(&self, reference: &Reference) -> Result<Bytes, Failure> {
        let target = Target::pull(reference);
        let url = self.url(reference, &format!("manifests/{}", reference_in_path(reference)))?;
        let what = format!("GET manifest {reference}");
        self.with_retry(&what, Request::Any, || async {
            let request = self.http.get(&url).header(ACCEPT, ACCEPTED.join(", "));
            let response = self.send(&what, &target, request).await?;
            let bytes = within(self.options.stall_timeout, &what, response.bytes())
                .await?
                .map_err(|e| Failure::from_reqwest(&what, &e))?;
            if let Some(expected) = reference.digest()
                && sha256_digest(&bytes) != expected
            {
                return Err(Failure::in_flight(format!("{what}: the bytes do not match the digest")));
            }
            Ok(bytes)
        })
        .await
    }

    /// The referrers of the manifest `digest`, through the OCI 1.1 referrers API; `None` when the
    /// registry has no such API (it answers 404, or 400/405 for a path it does not know).
    pub async fn referrers(&self, repository: &Reference, digest: &str) -> Result<Option<Vec<Descriptor>>> {
        let target = Target::pull(repository);
        let url = self.url(repository, &format!("referrers/{digest}"))?;
        let what = format!("GET referrers of {digest} in {repository}");
        let answer = self
            .with_retry(&what, Request::Any, || async {
                let request = self.http.get(&url).header(ACCEPT, OCI_INDEX);
                let response = self.send(&what, &target, request).await?;
                within(self.options.stall_timeout, &what, response.bytes())
                    .await?
                    .map_err(|e| Failure::from_reqwest(&what, &e))
            })
            .await;
        match answer {
            Ok(bytes) => {
                let index = manifest::parse(&bytes).with_context(|| format!("{what}: not an index"))?;
                Ok(Some(index.children))
            }
            Err(failure) if matches!(failure.status, Some(400 | 404 | 405)) => Ok(None),
            Err(failure) => Err(anyhow!("{}", failure.describe())),
        }
    }

    pub async fn blob_exists(&self, repository: &Reference, digest: &str) -> Result<bool> {
        let target = Target::push(repository);
        let url = self.url(repository, &format!("blobs/{digest}"))?;
        let what = format!("HEAD blob {digest} in {repository}");
        let answer =
            self.with_retry(&what, Request::Any, || self.send(&what, &target, self.http.head(&url))).await;
        match answer {
            Ok(_) => Ok(true),
            Err(failure) if failure.is_not_found() => Ok(false),
            Err(failure) => {
                Err(anyhow!("cannot check blob {digest} in {repository}: {}", failure.describe()))
            }
        }
    }

    /// Link a blob the registry already holds in `from_repository` into `repository`, sending no
    /// bytes. Its token needs pull on the repository mounted from, besides push here. `false`
    /// when the registry would not (a failed mount is not an error: we copy instead).
    pub async fn mount_blob(&self, repository: &Reference, from_repository: &str, digest: &str) -> bool {
        let mut target = Target::push(repository);
        target.scopes.push(repository_scope(from_repository, false));
        target.scopes.sort();
        let Ok(url) = self.url(repository, "blobs/uploads/") else {
            return false;
        };
        let what = format!("mount blob {digest} from {from_repository} into {repository}");
        self.trace(&what);
        let request = self
            .http
            .post(&url)
            .query(&[("mount", digest), ("from", from_repository)])
            .header(CONTENT_LENGTH, 0);
        let answer = self
            .with_retry(&what, Request::Any, || {
                self.send(&what, &target, request.try_clone().expect("no body"))
            })
            .await;
        // 201: mounted. 202: the registry opened an upload instead, which we leave unused.
        matches!(answer, Ok(response) if response.status() == StatusCode::CREATED)
    }

    /// Push a manifest's exact bytes, by digest or by tag as `reference` says.
    pub async fn push_manifest(&self, reference: &Reference, bytes: &Bytes, media_type: &str) -> Result<()> {
        let target = Target::push(reference);
        let url = self.url(reference, &format!("manifests/{}", reference_in_path(reference)))?;
        let what = format!("PUT manifest {reference}");
        self.with_retry(&what, Request::ManifestPush, || {
            let request = self.http.put(&url).header(CONTENT_TYPE, media_type).body(bytes.clone());
            self.send(&what, &target, request)
        })
        .await
        .map(drop)
        .map_err(|failure| anyhow!("cannot push manifest {reference}: {}", failure.describe()))
    }
}

/// `work`, unless it takes longer than `limit`: a registry that stalls.
pub(super) async fn within<T>(
    limit: Duration,
    what: &str,
    work: impl std::future::Future<Output = T>,
) -> Result<T, Failure> {
    tokio::time::timeout(limit, work).await.map_err(|_| {
        Failure::in_flight(format!("{what}: the registry stalled for {} s", limit.as_secs_f64()))
    })
}

/// The tag or digest part of a manifest URL.
fn reference_in_path(reference: &Reference) -> &str {
    reference.digest().or(reference.tag()).unwrap_or("latest")
}

fn connect_timeout(options: &SessionOptions) -> Duration {
    (options.stall_timeout / 6).min(Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_use_plain_http() {
        let insecure = vec!["registry.lan".to_string(), "10.0.0.5:5000".to_string()];
        for host in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "registry.lan:443",
            "10.0.0.5:5000",
        ] {
            assert!(uses_plain_http(host, &insecure), "{host}");
        }
        for host in ["us-docker.pkg.dev", "index.docker.io", "10.0.0.5:5001", "localhost.example.com"] {
            assert!(!uses_plain_http(host, &insecure), "{host}");
        }
    }
}
