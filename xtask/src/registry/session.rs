//! One run's connection to its registries: the oci-client client, each registry's credentials,
//! and the requests a copy makes, each retried on transient failures and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::TryStreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use reqwest::header::{HeaderValue, WWW_AUTHENTICATE};

use super::manifest::ACCEPTED;
use super::retry::{RetryPolicy, is_transient, is_transient_for_manifest_push};

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

pub struct Session {
    client: Client,
    probe: reqwest::Client,
    auth: HashMap<String, Result<RegistryAuth, String>>,
    plain_http: Vec<String>,
    options: SessionOptions,
    retries: AtomicU64,
}

#[derive(Debug, Clone)]
pub struct SessionOptions {
    pub retry: RetryPolicy,
    /// The longest a read may stall (a connection must open in a sixth of it, at most 10 s).
    /// A whole blob may take as long as it needs while bytes keep coming.
    pub stall_timeout: Duration,
    /// Tell every request and every retry on stderr (never a credential).
    pub verbose: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            retry: RetryPolicy::default(),
            stall_timeout: Duration::from_secs(60),
            verbose: false,
        }
    }
}

impl Session {
    /// The clients of a run over `registries`. Call it before starting the async runtime: when
    /// no registry speaks TLS, the clients are built without the CA bundle (see
    /// `without_tls_roots`), which must happen while this is the process's only thread.
    pub fn new(registries: &[RegistryAccess], options: SessionOptions) -> Result<Session> {
        let plain_http: Vec<String> =
            registries.iter().filter(|access| access.plain_http).map(|access| access.host.clone()).collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http.clone()),
            // One PUT per blob with its size, instead of one round trip per 4 MiB chunk.
            use_monolithic_push: true,
            connect_timeout: Some(connect_timeout(&options)),
            read_timeout: Some(options.stall_timeout),
            platform_resolver: None,
            ..ClientConfig::default()
        };
        let build = || -> Result<(Client, reqwest::Client)> {
            let client = Client::try_from(config).context("cannot set up the registry client")?;
            let probe = reqwest::Client::builder()
                .connect_timeout(connect_timeout(&options))
                .timeout(options.stall_timeout)
                .build()
                .context("cannot set up the HTTP client")?;
            Ok((client, probe))
        };
        let tls = registries.iter().any(|access| !access.plain_http);
        let (client, probe) = if tls { build()? } else { without_tls_roots(build)? };
        Ok(Session { client, probe, auth: HashMap::new(), plain_http, options, retries: AtomicU64::new(0) })
    }

    /// Ask every registry of the run once whether it wants credentials, and keep those found for
    /// it (`registries`: each with the credentials found for it).
    pub async fn authenticate(mut self, registries: Vec<(RegistryAccess, RegistryAuth)>) -> Session {
        let probes = registries.into_iter().map(|(access, auth)| {
            let session = &self;
            async move {
                let resolved = session.resolve_auth(&access.host, auth).await;
                (access.host, resolved)
            }
        });
        let resolved = futures_util::future::join_all(probes).await;
        for (host, auth) in &resolved {
            if let Ok(auth) = auth {
                self.client.store_auth_if_needed(host, auth).await;
            }
        }
        self.auth = resolved.into_iter().collect();
        self
    }

    /// Ask the registry once (`GET /v2/`) whether it wants credentials at all. oci-client pings
    /// `/v2/` before every request to a registry that has no auth challenge when it is handed
    /// anonymous credentials, doubling each round trip; an empty bearer token (which such a
    /// registry ignores) lets it skip that. Registries that challenge get the real credentials.
    async fn resolve_auth(&self, host: &str, auth: RegistryAuth) -> Result<RegistryAuth, String> {
        let scheme = if self.plain_http.iter().any(|h| h == host) { "http" } else { "https" };
        let url = format!("{scheme}://{host}/v2/");
        let answer = self
            .with_retry(&format!("GET {url}"), || async {
                let response = self.probe.get(&url).send().await?;
                // Any other answer (200, 401, even 404) means the registry is there.
                let code = response.status().as_u16();
                let error =
                    OciDistributionError::ServerError { code, url: url.clone(), message: String::new() };
                if is_transient(&error) {
                    return Err(error);
                }
                Ok(response.headers().get(WWW_AUTHENTICATE).cloned())
            })
            .await;
        match answer {
            Ok(None) => Ok(RegistryAuth::Bearer(String::new())),
            Ok(Some(_challenge)) => Ok(auth),
            Err(err) => Err(format!("cannot reach registry {host} ({url}): {}", describe(&err))),
        }
    }

    fn auth_for(&self, reference: &Reference) -> Result<&RegistryAuth> {
        let host = reference.resolve_registry();
        match self.auth.get(host).or_else(|| self.auth.get(reference.registry())) {
            Some(Ok(auth)) => Ok(auth),
            Some(Err(unreachable)) => Err(anyhow!("{unreachable}")),
            None => Err(anyhow!("registry {host} was not set up for this run")),
        }
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// `op`, tried again on transient failures; `what` names it in verbose output.
    async fn with_retry<T, F, Fut>(&self, what: &str, op: F) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.with_retry_classified(what, is_transient, op).await
    }

    async fn with_retry_classified<T, F, Fut>(
        &self,
        what: &str,
        worth_retrying: fn(&OciDistributionError) -> bool,
        op: F,
    ) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
    {
        self.trace(what);
        let attempts = self.options.retry.attempts;
        let on_retry = |attempt: u32, err: &OciDistributionError| {
            self.trace(&format!(
                "retrying {what} (try {attempt}/{attempts} failed: {})",
                describe_cause(err)
            ));
        };
        self.options.retry.run_classified(&self.retries, &on_retry, worth_retrying, op).await
    }

    fn trace(&self, message: &str) {
        if self.options.verbose {
            eprintln!("registry: {message}");
        }
    }

    /// The digest a tag points at, by HEAD (free against Docker Hub's pull limit); `None` when the
    /// tag or the repository does not exist.
    pub async fn manifest_digest(&self, reference: &Reference) -> Result<Option<String>> {
        let auth = self.auth_for(reference)?;
        let answer = self
            .with_retry(&format!("HEAD manifest {reference}"), || {
                self.client.fetch_manifest_digest(reference, auth)
            })
            .await;
        match answer {
            Ok(digest) => Ok(Some(digest)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(anyhow!("{}", describe(&err))),
        }
    }

    /// The bytes of a manifest, checked against the digest in `reference`.
    pub async fn manifest(&self, reference: &Reference) -> Result<Bytes> {
        let auth = self.auth_for(reference)?;
        let (bytes, _digest) = self
            .with_retry(&format!("GET manifest {reference}"), || {
                self.client.pull_manifest_raw(reference, auth, ACCEPTED)
            })
            .await
            .map_err(|err| anyhow!("cannot read manifest {reference}: {}", describe(&err)))?;
        Ok(bytes)
    }

    pub async fn blob_exists(&self, repository: &Reference, digest: &str) -> Result<bool> {
        self.auth_for(repository)?;
        self.with_retry(&format!("HEAD blob {digest} in {repository}"), || {
            self.client.blob_exists(repository, digest)
        })
        .await
        .map_err(|err| anyhow!("cannot check blob {digest} in {repository}: {}", describe(&err)))
    }

    /// Link a blob the registry already holds in `from` into `repository`, sending no bytes.
    /// `false` when the registry would not (a failed mount is not an error: we copy instead).
    pub async fn mount_blob(&self, repository: &Reference, from: &Reference, digest: &str) -> bool {
        self.trace(&format!("mount blob {digest} from {} into {repository}", from.repository()));
        self.auth_for(repository).is_ok() && self.client.mount_blob(repository, from, digest).await.is_ok()
    }

    /// Stream one blob from `source` to `destination`. Its sha256 is checked while it streams:
    /// on a mismatch the upload is abandoned before it completes, so the destination never
    /// holds a wrong blob. `on_bytes` sees every chunk as it passes.
    pub async fn copy_blob(
        &self,
        source: &Reference,
        destination: &Reference,
        digest: &str,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        self.auth_for(source)?;
        self.auth_for(destination)?;
        let what = format!(
            "copy blob {digest} ({size} bytes) {} -> {}",
            source.repository(),
            destination.repository()
        );
        self.with_retry(&what, || async {
            let stream = self.client.pull_blob_stream(source, digest).await?;
            let counted =
                stream.inspect_ok(|chunk| on_bytes(chunk.len() as u64)).map_err(OciDistributionError::from);
            // oci-client wants a 'static stream; the closure above borrows `on_bytes`, so the
            // chunks go through a channel fed from here while the upload runs.
            let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, OciDistributionError>>(4);
            let received = futures_util::stream::unfold(receiver, |mut receiver| async move {
                receiver.recv().await.map(|item| (item, receiver))
            });
            let feed = forward(counted, sender);
            let upload = self.client.push_blob_stream(destination, received, digest, Some(size));
            let (fed, uploaded) = futures_util::future::join(feed, upload).await;
            fed?;
            uploaded.map(drop)
        })
        .await
        .map_err(|err| anyhow!("blob {digest}: {}", describe(&err)))
    }

    /// Push a manifest's exact bytes, by digest or by tag as `reference` says.
    pub async fn push_manifest(&self, reference: &Reference, bytes: &Bytes, media_type: &str) -> Result<()> {
        self.auth_for(reference)?;
        let content_type = HeaderValue::from_str(media_type)
            .with_context(|| format!("invalid media type {media_type:?}"))?;
        let what = format!("PUT manifest {reference}");
        self.with_retry_classified(&what, is_transient_for_manifest_push, || {
            self.client.push_manifest_raw(reference, bytes.clone(), content_type.clone())
        })
        .await
        .map(drop)
        .map_err(|err| anyhow!("cannot push manifest {reference}: {}", describe(&err)))
    }
}

/// Move the chunks of `stream` into `sender`, always one chunk behind. The source stream says
/// whether the blob's sha256 matched only after its last chunk; holding that chunk back until
/// then means a bad blob never reaches the registry whole: the upload ends short and is dropped.
/// A failure is returned as an I/O error, which is worth a retry (the next try may get good bytes).
async fn forward<S>(
    stream: S,
    sender: tokio::sync::mpsc::Sender<Result<Bytes, OciDistributionError>>,
) -> Result<(), OciDistributionError>
where
    S: futures_util::Stream<Item = Result<Bytes, OciDistributionError>>,
{
    let mut stream = std::pin::pin!(stream);
    let mut held: Option<Bytes> = None;
    while let Some(item) = futures_util::StreamExt::next(&mut stream).await {
        match item {
            Ok(chunk) => {
                if let Some(previous) = held.replace(chunk)
                    && sender.send(Ok(previous)).await.is_err()
                {
                    // The upload stopped reading: it failed, and its own error says why.
                    return Ok(());
                }
            }
            Err(err) => {
                let text = describe_cause(&err);
                // Dropping the sender without the held chunk cuts the upload short.
                let _ = sender
                    .send(Err(OciDistributionError::IoError(std::io::Error::other(text.clone()))))
                    .await;
                return Err(OciDistributionError::IoError(std::io::Error::other(text)));
            }
        }
    }
    if let Some(last) = held {
        let _ = sender.send(Ok(last)).await;
    }
    Ok(())
}

/// Build TLS-capable clients without the CA bundle. OpenSSL parses the whole bundle for every
/// client built (two per run), which was three quarters of the CPU of a run whose registries all
/// speak plain HTTP (loopback ones always do) and so never verify a certificate. Pointing OpenSSL
/// at an empty bundle for the build alone skips that; the variables are restored at once, so
/// that nothing started later inherits them. Environment changes are only sound while no other
/// thread runs, hence `Session::new` before the runtime.
fn without_tls_roots<T>(build: impl FnOnce() -> T) -> T {
    const EMPTY: [(&str, &str); 2] = [("SSL_CERT_FILE", "/dev/null"), ("SSL_CERT_DIR", "/nonexistent")];
    let saved: Vec<(&str, Option<std::ffi::OsString>)> =
        EMPTY.iter().map(|(name, _)| (*name, std::env::var_os(name))).collect();
    for (name, value) in EMPTY {
        // SAFETY: `Session::new` runs before the async runtime and any thread of ours.
        unsafe { std::env::set_var(name, value) };
    }
    let built = build();
    for (name, value) in saved {
        // SAFETY: as above.
        match value {
            Some(value) => unsafe { std::env::set_var(name, value) },
            None => unsafe { std::env::remove_var(name) },
        }
    }
    built
}

fn connect_timeout(options: &SessionOptions) -> Duration {
    (options.stall_timeout / 6).min(Duration::from_secs(10))
}

fn is_not_found(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// An error in one line, with the cause reqwest keeps in its source chain (connection refused,
/// timed out, …), and a hint for the common permanent ones.
pub fn describe(err: &OciDistributionError) -> String {
    let mut text = describe_cause(err);
    if matches!(err, OciDistributionError::UnauthorizedError { .. })
        || matches!(err, OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)))
    {
        text.push_str(
            " (check the credentials: `docker login`, or `gcloud auth login` for Google registries)",
        );
    }
    if is_transient(err) {
        text.push_str(" (gave up after retrying)");
    }
    text
}

/// The error and its causes in one line.
fn describe_cause(err: &OciDistributionError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
