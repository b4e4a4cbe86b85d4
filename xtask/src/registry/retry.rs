//! Retries of registry requests: which failures are worth another try, and how long to wait.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::http::Failure;

/// How often, and how patiently, a failed request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included. For a blob download, the tries in a row that brought
    /// no new bytes: a transfer that keeps advancing is never abandoned for its failures. A
    /// registry that says when to come back (`Retry-After` on a 429 or 503) is throttling, not
    /// failing: those answers use no try, and only `give_up_after` bounds them.
    pub attempts: u32,
    /// Wait before the second try; doubled for each one after it.
    pub first_backoff: Duration,
    /// No single wait of ours is longer than this.
    pub max_backoff: Duration,
    /// The longest wait a registry's `Retry-After` gets: a registry asking for an hour gets
    /// this, and then another try.
    pub max_retry_after: Duration,
    /// The longest one request, or one blob's download, may keep failing (and resuming)
    /// before it is given up.
    pub give_up_after: Duration,
}

impl Default for RetryPolicy {
    /// Five tries over about six seconds: enough to ride out a registry restart or a burst of
    /// 5xx, short enough that a dead registry fails the run promptly.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(60),
            give_up_after: Duration::from_secs(15 * 60),
        }
    }
}

/// A manifest push refused because the registry does not (yet) see content the manifest refers
/// to, or read it back wrong: with another run writing the same blobs and manifests at that
/// moment, the registry's storage can be caught mid-write. Worth another try, then; a real
/// omission fails again each time.
pub fn is_transient_for_manifest_push(failure: &Failure) -> bool {
    failure.transient
        || (failure.status == Some(400)
            && failure
                .codes
                .iter()
                .any(|c| matches!(c.as_str(), "DIGEST_INVALID" | "BLOB_UNKNOWN" | "MANIFEST_BLOB_UNKNOWN")))
}

pub fn is_transient(failure: &Failure) -> bool {
    failure.transient
}

/// The waits between tries: doubling from `first_backoff`, or what the registry asked for.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    pub fn new(policy: &RetryPolicy) -> Backoff {
        Backoff { policy: policy.clone(), next: policy.first_backoff }
    }

    /// The wait before the try after `failure`. A registry's `Retry-After` is honoured (up to
    /// `max_retry_after`); a 429 without one waits at least the second registries commonly ask.
    pub fn after(&mut self, failure: &Failure) -> Duration {
        let ours = jitter(self.next);
        self.next = (self.next * 2).min(self.policy.max_backoff);
        match failure.retry_after {
            Some(asked) => asked.min(self.policy.max_retry_after),
            None if failure.is_rate_limited() => ours.max(Duration::from_secs(1)),
            None => ours,
        }
    }

    /// Bytes arrived: the next failure starts the waits over.
    pub fn reset(&mut self) {
        self.next = self.policy.first_backoff;
    }
}

impl RetryPolicy {
    /// Run `op` until it succeeds, fails for good, or runs out of tries. Each retry is counted
    /// in `retries` and told to `on_retry` (the try that failed, its error, the wait).
    pub async fn run<T, F, Fut>(
        &self,
        retries: &AtomicU64,
        on_retry: &(dyn Fn(u32, &Failure, Duration) + Sync),
        worth_retrying: fn(&Failure) -> bool,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self);
        let mut attempt = 1;
        let started = tokio::time::Instant::now();
        loop {
            match op().await {
                Ok(value) => return Ok(value),
                Err(failure)
                    if worth_retrying(&failure)
                        && (attempt < self.attempts || failure.asked_to_wait())
                        && started.elapsed() < self.give_up_after =>
                {
                    let wait = backoff.after(&failure);
                    retries.fetch_add(1, Ordering::Relaxed);
                    on_retry(attempt, &failure, wait);
                    tokio::time::sleep(wait).await;
                    if !failure.asked_to_wait() {
                        attempt += 1;
                    }
                }
                Err(failure) => return Err(failure),
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
    use reqwest::StatusCode;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn server_error(code: u16) -> Failure {
        Failure::from_status("GET u", StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), b"")
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_a_bounded_number_of_times() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result: Result<(), _> = RetryPolicy::default()
            .run(&retries, &|_, _, _| {}, is_transient, || {
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
            .run(&retries, &|_, _, _| {}, is_transient, || {
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
            .run(&retries, &|_, _, _| {}, is_transient, || {
                calls += 1;
                let fail = calls < 3;
                async move { if fail { Err(server_error(500)) } else { Ok(calls) } }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_what_retry_after_asks_with_a_cap() {
        let policy = RetryPolicy { max_retry_after: Duration::from_secs(30), ..RetryPolicy::default() };
        let mut backoff = Backoff::new(&policy);
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let asked = Failure::from_status("GET u", StatusCode::TOO_MANY_REQUESTS, &headers, b"");
        assert_eq!(backoff.after(&asked), Duration::from_secs(7));
        headers.insert("retry-after", HeaderValue::from_static("3600"));
        let greedy = Failure::from_status("GET u", StatusCode::SERVICE_UNAVAILABLE, &headers, b"");
        assert_eq!(backoff.after(&greedy), Duration::from_secs(30));
        let bare_429 = server_error(429);
        assert!(backoff.after(&bare_429) >= Duration::from_secs(1));
        let plain = server_error(503);
        backoff.reset();
        assert!(backoff.after(&plain) < Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_say_when_to_come_back_use_no_try_within_the_time_bound() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("1"));
        let throttled = Failure::from_status("GET u", StatusCode::TOO_MANY_REQUESTS, &headers, b"");
        let policy = RetryPolicy { give_up_after: Duration::from_secs(30), ..RetryPolicy::default() };
        let result = policy
            .run(&retries, &|_, _, _| {}, is_transient, || {
                calls += 1;
                let answer = if calls <= 8 { Err(throttled.clone()) } else { Ok(calls) };
                async move { answer }
            })
            .await;
        assert_eq!(result.unwrap(), 9, "eight throttled answers, more than the five tries");
        let always = policy
            .run(&retries, &|_, _, _| {}, is_transient, || {
                let answer: Result<(), Failure> = Err(throttled.clone());
                async move { answer }
            })
            .await;
        assert!(always.is_err(), "the time bound ends it");
    }

    #[test]
    fn a_manifest_push_racing_its_blobs_is_worth_another_try() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#;
        let racy = Failure::from_status("PUT m", StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert!(!is_transient(&racy));
        assert!(is_transient_for_manifest_push(&racy));
        assert!(!is_transient_for_manifest_push(&server_error(400)));
    }
}
