//! Retries of registry requests: which failures are worth another try, and how long to wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

/// How often, and how patiently, a failed request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Wait before the second try; doubled for each one after it.
    pub first_backoff: Duration,
    /// No single wait is longer than this.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    /// Five tries over about six seconds: enough to ride out a registry restart or a burst of
    /// 5xx, short enough that a dead registry fails the run promptly.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(4),
        }
    }
}

/// Whether another try could succeed: connection trouble, timeouts, a body cut short or
/// corrupted in flight (digest mismatch), 408, 429 and 5xx. Not: 4xx answers such as
/// "not found" or "unauthorized", which say the same thing every time.
pub fn is_transient(err: &OciDistributionError) -> bool {
    if is_rate_limited(err) {
        return true;
    }
    match err {
        OciDistributionError::RequestError(e) => !e.is_builder() && !e.is_redirect(),
        OciDistributionError::IoError(_) | OciDistributionError::DigestError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 408 || (500..600).contains(code),
        _ => false,
    }
}

/// A manifest push refused because the registry does not (yet) see content the manifest refers
/// to, or read it back wrong: with another run writing the same blobs and manifests at that
/// moment, the registry's storage can be caught mid-write. Worth another try, then; a real
/// omission fails again each time.
pub fn is_transient_for_manifest_push(err: &OciDistributionError) -> bool {
    let racy = |text: &str| {
        ["DIGEST_INVALID", "BLOB_UNKNOWN", "MANIFEST_BLOB_UNKNOWN"].iter().any(|c| text.contains(c))
    };
    is_transient(err)
        || match err {
            OciDistributionError::ServerError { code: 400, message, .. } => racy(message),
            OciDistributionError::RegistryError { envelope, .. } => racy(&envelope.to_string()),
            _ => false,
        }
}

/// A 429 asks us to slow down. oci-client does not hand us the `Retry-After` header with its
/// error, so wait at least the one second registries commonly ask for.
fn is_rate_limited(err: &OciDistributionError) -> bool {
    match err {
        OciDistributionError::ServerError { code, .. } => *code == 429,
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|e| matches!(e.code, OciErrorCode::Toomanyrequests))
        }
        _ => false,
    }
}

impl RetryPolicy {
    /// Run `op` until it succeeds, fails for good, or runs out of tries. Each retry is counted
    /// in `retries` and told to `on_retry` (the try that failed, its error).
    pub async fn run<T, F, Fut>(
        &self,
        retries: &AtomicU64,
        on_retry: &(dyn Fn(u32, &OciDistributionError) + Sync),
        op: F,
    ) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        self.run_classified(retries, on_retry, is_transient, op).await
    }

    /// `run`, with `worth_retrying` deciding which errors are tried again.
    pub async fn run_classified<T, F, Fut>(
        &self,
        retries: &AtomicU64,
        on_retry: &(dyn Fn(u32, &OciDistributionError) + Sync),
        worth_retrying: fn(&OciDistributionError) -> bool,
        mut op: F,
    ) -> Result<T, OciDistributionError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, OciDistributionError>>,
    {
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(err) if attempt < self.attempts && worth_retrying(&err) => {
                    let wait =
                        if is_rate_limited(&err) { backoff.max(Duration::from_secs(1)) } else { backoff };
                    retries.fetch_add(1, Ordering::Relaxed);
                    on_retry(attempt, &err);
                    tokio::time::sleep(jitter(wait)).await;
                    backoff = (backoff * 2).min(self.max_backoff);
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

/// Up to a quarter more, so that many tags failing at once do not retry in lockstep.
fn jitter(wait: Duration) -> Duration {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    wait + wait.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16) -> OciDistributionError {
        OciDistributionError::ServerError { code, url: "u".into(), message: String::new() }
    }

    #[test]
    fn classifies_status_codes() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(&server_error(code)), "{code}");
        }
        for code in [400, 401, 403, 404] {
            assert!(!is_transient(&server_error(code)), "{code}");
        }
        assert!(!is_transient(&OciDistributionError::UnauthorizedError { url: "u".into() }));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_a_bounded_number_of_times() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let policy = RetryPolicy::default();
        let result: Result<(), _> = policy
            .run(&retries, &|_, _| {}, || {
                calls += 1;
                async { Err(server_error(503)) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 5);
        assert_eq!(retries.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_a_permanent_error() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result: Result<(), _> = RetryPolicy::default()
            .run(&retries, &|_, _| {}, || {
                calls += 1;
                async { Err(server_error(404)) }
            })
            .await;
        assert!(result.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result = RetryPolicy::default()
            .run(&retries, &|_, _| {}, || {
                calls += 1;
                let fail = calls < 3;
                async move { if fail { Err(server_error(500)) } else { Ok(calls) } }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }
}
