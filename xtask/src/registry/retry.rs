//! Retries of registry requests, in one place: which failures are worth another try
//! (`is_transient`), how many tries and how long (`RetryPolicy`, whose defaults the command line
//! takes too), and the one loop that every request, blob copy and blob download goes through
//! (`RetryPolicy::run`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::http::{Cause, Failure};

/// How often, and how patiently, a failed request is tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all, the first included, that brought nothing: a try that made progress (a
    /// download's new bytes) starts the count over, so a transfer that keeps advancing is never
    /// abandoned for its failures. A registry that says when to come back (`Retry-After` on a
    /// 429 or 503) is throttling, not failing: those answers use no try, and only
    /// `give_up_after` bounds them.
    pub attempts: u32,
    /// Wait before the second try; doubled for each one after it.
    pub first_backoff: Duration,
    /// No single wait of ours is longer than this.
    pub max_backoff: Duration,
    /// The longest wait a registry's `Retry-After` gets: a registry asking for an hour gets
    /// this, and then another try.
    pub max_retry_after: Duration,
    /// The longest one operation (a request, a blob's download, a blob's copy) may keep failing
    /// before it is given up.
    pub give_up_after: Duration,
}

/// Tries in all, by default: enough to ride out a registry restart or a burst of 5xx, few
/// enough that a dead registry fails the run promptly (five tries over about six seconds).
pub const DEFAULT_ATTEMPTS: u32 = 5;

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: DEFAULT_ATTEMPTS,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(4),
            max_retry_after: Duration::from_secs(60),
            give_up_after: Duration::from_secs(15 * 60),
        }
    }
}

/// What a request was for, where that changes what is worth another try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Any,
    /// A manifest push: refused when the registry does not (yet) see content the manifest
    /// refers to. With another run writing the same blobs and manifests at that moment, the
    /// registry's storage can be caught mid-write, so that is worth another try; a real
    /// omission fails again each time.
    ManifestPush,
}

/// Whether an HTTP status says the registry is busy or broken for now (a timeout, throttling, a
/// 5xx), not that the request is wrong: the rule for registry answers, here and for buildx's.
pub fn is_busy_status(code: u16) -> bool {
    code == 408 || code == 429 || (500..600).contains(&code)
}

/// Whether another try of `request` could succeed after `failure`: the one rule.
pub fn is_transient(failure: &Failure, request: Request) -> bool {
    if failure.gave_up {
        return false;
    }
    match failure.cause {
        Cause::InFlight | Cause::StaleToken => true,
        Cause::QuotaSpent | Cause::Fatal => false,
        Cause::Answered => {
            let code = failure.status.unwrap_or(0);
            let busy = is_busy_status(code) || failure.is_rate_limited();
            let racing = request == Request::ManifestPush
                && code == 400
                && failure.codes.iter().any(|c| {
                    matches!(c.as_str(), "DIGEST_INVALID" | "BLOB_UNKNOWN" | "MANIFEST_BLOB_UNKNOWN")
                });
            busy || racing
        }
    }
}

/// The registry said when to come back (`Retry-After` on a 429 or 503): it is throttling, and
/// the try is not counted.
pub fn asked_to_wait(failure: &Failure, request: Request) -> bool {
    failure.retry_after.is_some() && is_transient(failure, request)
}

/// Told by an operation when one of its tries got somewhere, so that the next failure starts
/// the count of tries, and the waits, over.
#[derive(Debug, Default)]
pub struct ProgressMade(AtomicBool);

impl ProgressMade {
    pub fn made(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

/// A retry about to happen: the fruitless tries so far, the failure, the wait before the next.
pub struct Retrying<'a> {
    pub tries: u32,
    pub attempts: u32,
    pub failure: &'a Failure,
    pub wait: Duration,
}

/// The waits between tries: doubling from `first_backoff`, or what the registry asked for.
#[derive(Debug, Clone)]
struct Backoff {
    policy: RetryPolicy,
    next: Duration,
}

impl Backoff {
    fn new(policy: &RetryPolicy) -> Backoff {
        Backoff { policy: policy.clone(), next: policy.first_backoff }
    }

    /// The wait before the try after `failure`. A registry's `Retry-After` is honoured (up to
    /// `max_retry_after`); a 429 without one waits at least the second registries commonly ask.
    fn after(&mut self, failure: &Failure) -> Duration {
        let ours = jitter(self.next);
        self.next = (self.next * 2).min(self.policy.max_backoff);
        match failure.retry_after {
            Some(asked) => asked.min(self.policy.max_retry_after),
            None if failure.is_rate_limited() => ours.max(Duration::from_secs(1)),
            None => ours,
        }
    }

    fn reset(&mut self) {
        self.next = self.policy.first_backoff;
    }
}

impl RetryPolicy {
    /// Run `op` until it succeeds, fails for good, or runs out of tries or time; a failure it
    /// gives up on comes back marked `gave_up`. Each retry is counted in `retries` and told to
    /// `on_retry`. `op` reports the tries that got somewhere on `progress`.
    pub async fn run<T, F, Fut>(
        &self,
        request: Request,
        retries: &AtomicU64,
        on_retry: &(dyn Fn(&Retrying<'_>) + Sync),
        progress: &ProgressMade,
        mut op: F,
    ) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut backoff = Backoff::new(self);
        let mut fruitless = 0;
        let started = tokio::time::Instant::now();
        loop {
            let mut failure = match op().await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            if progress.take() {
                fruitless = 0;
                backoff.reset();
            }
            if !is_transient(&failure, request) {
                return Err(failure);
            }
            if !asked_to_wait(&failure, request) {
                fruitless += 1;
            }
            if fruitless >= self.attempts || started.elapsed() >= self.give_up_after {
                failure.gave_up = true;
                return Err(failure);
            }
            let wait = backoff.after(&failure);
            retries.fetch_add(1, Ordering::Relaxed);
            on_retry(&Retrying { tries: fruitless, attempts: self.attempts, failure: &failure, wait });
            tokio::time::sleep(wait).await;
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

    fn answer(code: u16) -> Failure {
        Failure::from_status("GET u", StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), b"")
    }

    fn quiet(_: &Retrying<'_>) {}

    #[test]
    fn busy_and_broken_answers_are_transient_refusals_are_not() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(&answer(code), Request::Any), "{code}");
        }
        for code in [400, 401, 403, 404] {
            assert!(!is_transient(&answer(code), Request::Any), "{code}");
        }
        assert!(is_transient(&Failure::in_flight("reset"), Request::Any));
        assert!(!is_transient(&Failure::permanent("bad url"), Request::Any));
        let spent = Failure { cause: Cause::QuotaSpent, ..answer(429) };
        assert!(!is_transient(&spent, Request::Any), "a spent quota is not worth seconds of waiting");
        let stale = Failure { cause: Cause::StaleToken, ..answer(401) };
        assert!(is_transient(&stale, Request::Any), "the next try fetches a new token");
        let given_up = Failure { gave_up: true, ..answer(503) };
        assert!(!is_transient(&given_up, Request::Any), "an inner loop already retried it");
    }

    #[test]
    fn a_manifest_push_racing_its_blobs_is_worth_another_try() {
        let body = br#"{"errors":[{"code":"BLOB_UNKNOWN"}]}"#;
        let racy = Failure::from_status("PUT m", StatusCode::BAD_REQUEST, &HeaderMap::new(), body);
        assert!(!is_transient(&racy, Request::Any));
        assert!(is_transient(&racy, Request::ManifestPush));
        assert!(!is_transient(&answer(400), Request::ManifestPush));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_a_bounded_number_of_times() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result: Result<(), _> = RetryPolicy::default()
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || {
                calls += 1;
                async { Err(answer(503)) }
            })
            .await;
        let failure = result.unwrap_err();
        assert!(failure.gave_up && failure.describe().ends_with("(gave up after retrying)"));
        assert_eq!(calls, DEFAULT_ATTEMPTS);
        assert_eq!(retries.load(Ordering::Relaxed), u64::from(DEFAULT_ATTEMPTS - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_a_permanent_error() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result: Result<(), _> = RetryPolicy::default()
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || {
                calls += 1;
                async { Err(answer(404)) }
            })
            .await;
        assert!(!result.unwrap_err().gave_up);
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn succeeds_after_transient_failures() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        let result = RetryPolicy::default()
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || {
                calls += 1;
                let answer = if calls < 3 { Err(answer(500)) } else { Ok(calls) };
                async move { answer }
            })
            .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(retries.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tries_that_make_progress_are_not_counted() {
        let retries = AtomicU64::new(0);
        let mut calls = 0;
        // Twelve failures, more than twice the tries, each after some bytes: then success.
        let progress = ProgressMade::default();
        let result = RetryPolicy::default()
            .run(Request::Any, &retries, &quiet, &progress, || {
                calls += 1;
                let answer = if calls <= 12 {
                    progress.made();
                    Err(Failure::in_flight("reset mid-body"))
                } else {
                    Ok(calls)
                };
                async move { answer }
            })
            .await;
        assert_eq!(result.unwrap(), 13);
        // Without progress the same failures end at the count of tries.
        let mut calls = 0;
        let stuck: Result<(), _> = RetryPolicy::default()
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || {
                calls += 1;
                async { Err(Failure::in_flight("reset before any byte")) }
            })
            .await;
        assert!(stuck.is_err());
        assert_eq!(calls, DEFAULT_ATTEMPTS);
    }

    #[tokio::test(start_paused = true)]
    async fn progress_does_not_outlast_the_time_bound() {
        let retries = AtomicU64::new(0);
        let policy = RetryPolicy { give_up_after: Duration::from_secs(10), ..RetryPolicy::default() };
        let progress = ProgressMade::default();
        let result: Result<(), _> = policy
            .run(Request::Any, &retries, &quiet, &progress, || async {
                progress.made();
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(Failure::in_flight("cut off again"))
            })
            .await;
        assert!(result.unwrap_err().gave_up);
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
        let bare_429 = answer(429);
        assert!(backoff.after(&bare_429) >= Duration::from_secs(1));
        let plain = answer(503);
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
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || {
                calls += 1;
                let answer = if calls <= 8 { Err(throttled.clone()) } else { Ok(calls) };
                async move { answer }
            })
            .await;
        assert_eq!(result.unwrap(), 9, "eight throttled answers, more than the five tries");
        let always: Result<(), _> = policy
            .run(Request::Any, &retries, &quiet, &ProgressMade::default(), || async {
                Err(throttled.clone())
            })
            .await;
        assert!(always.is_err(), "the time bound ends it");
    }
}
