//! What a registry answered, beyond its body: why a request failed (and whether another try
//! could succeed), how long the registry asked us to wait (`Retry-After`), and how many pulls it
//! says are left (`RateLimit-*`). Registry clients that turn answers into errors drop these
//! headers; every request of a run goes through here so that none is lost.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;

/// A request that did not do what it was for. It records what happened; whether another try
/// could succeed is decided in one place, `retry::is_transient`.
#[derive(Debug, Clone)]
pub struct Failure {
    /// One line: what was asked, and what came back.
    pub message: String,
    /// What went wrong, as far as a retry cares.
    pub cause: Cause,
    /// The HTTP status, when the registry answered at all.
    pub status: Option<u16>,
    /// The registry's error codes (`MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, …), from its error body.
    pub codes: Vec<String>,
    /// How long the registry asked us to wait before trying again.
    pub retry_after: Option<Duration>,
    /// Retried as long as the retry policy allows: no loop around this one tries again.
    pub gave_up: bool,
}

/// What went wrong with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// No answer, or one cut short or spoiled on the way: connection refused or reset, a
    /// timeout, a stall, a body that ended early or whose bytes do not match their digest.
    InFlight,
    /// The registry answered with an error status (`status`, `codes`).
    Answered,
    /// The registry's pull quota is spent (`RateLimit-Remaining: 0`): a quota of hours.
    QuotaSpent,
    /// A token the registry accepted before was refused: expired or revoked.
    StaleToken,
    /// Nothing a registry did: a request we could not build, an answer no retry can mend.
    Fatal,
}

impl Failure {
    fn new(message: impl Into<String>, cause: Cause) -> Failure {
        Failure {
            message: message.into(),
            cause,
            status: None,
            codes: Vec::new(),
            retry_after: None,
            gave_up: false,
        }
    }

    /// A failure no other try can mend.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure::new(message, Cause::Fatal)
    }

    /// Something went wrong on the way (see `Cause::InFlight`).
    pub fn in_flight(message: impl Into<String>) -> Failure {
        Failure::new(message, Cause::InFlight)
    }

    /// No answer, or an answer cut short; or a request we could not even build.
    pub fn from_reqwest(what: &str, err: &reqwest::Error) -> Failure {
        let cause = if err.is_builder() { Cause::Fatal } else { Cause::InFlight };
        Failure::new(format!("{what}: {}", error_chain(err)), cause)
    }

    /// An answer with an error status. `body` is the registry's error document, if it sent one.
    pub fn from_status(what: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
        let codes = error_codes(body);
        let code = status.as_u16();
        let detail = if codes.is_empty() {
            status.canonical_reason().unwrap_or("").to_string()
        } else {
            codes.join(", ")
        };
        Failure {
            status: Some(code),
            retry_after: retry_after(headers, SystemTime::now()),
            codes,
            ..Failure::new(format!("{what}: {code} {detail}").trim_end(), Cause::Answered)
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.status == Some(404)
            || self
                .codes
                .iter()
                .any(|c| matches!(c.as_str(), "MANIFEST_UNKNOWN" | "NAME_UNKNOWN" | "BLOB_UNKNOWN"))
    }

    pub fn is_rate_limited(&self) -> bool {
        self.status == Some(429) || self.codes.iter().any(|c| c == "TOOMANYREQUESTS")
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self.status, Some(401 | 403))
            || self.codes.iter().any(|c| c == "UNAUTHORIZED" || c == "DENIED")
    }

    /// The run's failure of this request, `Kind::Registry`, told as `describe` tells it.
    pub fn into_failure(self) -> crate::failure::Failure {
        crate::failure::Failure::new(crate::failure::Kind::Registry { status: self.status }, self.describe())
    }

    /// The message, with a hint for the failures a user can fix.
    pub fn describe(&self) -> String {
        let mut text = self.message.clone();
        if self.is_unauthorized() {
            text.push_str(
                " (check the credentials: `docker login`, or `gcloud auth login` for Google registries)",
            );
        }
        if self.gave_up {
            text.push_str(" (gave up after retrying)");
        }
        text
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// reqwest keeps the useful part (connection refused, timed out, …) in its source chain.
fn error_chain(err: &reqwest::Error) -> String {
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

/// The codes of a registry error document: `{"errors":[{"code":"BLOB_UNKNOWN",…}]}`.
fn error_codes(body: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Document {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        code: String,
    }
    serde_json::from_slice::<Document>(body)
        .map(|doc| doc.errors.into_iter().map(|e| e.code).collect())
        .unwrap_or_default()
}

/// `Retry-After`, as seconds or as an HTTP date (a date in the past is no wait).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A registry's pull quota as it last reported it. Docker Hub sends
/// `RateLimit-Limit: 100;w=21600` and `RateLimit-Remaining: 76;w=21600` on manifest requests:
/// 100 pulls per 21600-second window, 76 of them left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: Option<u64>,
    pub remaining: u64,
    /// The window, in seconds, when the registry names it.
    pub window: Option<u64>,
}

impl RateLimit {
    pub fn from_headers(headers: &HeaderMap) -> Option<RateLimit> {
        let (remaining, remaining_window) = quota_field(headers, "ratelimit-remaining")?;
        let limit = quota_field(headers, "ratelimit-limit");
        Some(RateLimit {
            limit: limit.map(|(n, _)| n),
            remaining,
            window: remaining_window.or(limit.and_then(|(_, w)| w)),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ", self.remaining)?;
        if let Some(limit) = self.limit {
            write!(f, "of {limit} ")?;
        }
        write!(f, "pulls left")?;
        if let Some(window) = self.window {
            write!(f, " (per {})", human_window(window))?;
        }
        Ok(())
    }
}

fn human_window(seconds: u64) -> String {
    match seconds {
        s if s >= 3600 && s % 3600 == 0 => format!("{} h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `76;w=21600` → (76, Some(21600)); a bare `76` → (76, None).
fn quota_field(headers: &HeaderMap, name: &str) -> Option<(u64, Option<u64>)> {
    let value = headers.get(name)?.to_str().ok()?;
    let mut parts = value.split(';').map(str::trim);
    let count = parts.next()?.parse().ok()?;
    let window = parts.find_map(|p| p.strip_prefix("w=")).and_then(|w| w.parse().ok());
    Some((count, window))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn a_request_that_failed_is_the_runs_registry_failure_with_its_status_and_hint() {
        let body = br#"{"errors":[{"code":"DENIED","message":"no"}]}"#;
        let failure =
            Failure::from_status("PUT manifest r/a:1", StatusCode::FORBIDDEN, &HeaderMap::new(), body);
        let run = failure.clone().into_failure();
        assert_eq!(run.kind, crate::failure::Kind::Registry { status: Some(403) });
        assert_eq!(run.to_string(), failure.describe());
        assert!(
            run.to_string().starts_with("PUT manifest r/a:1: 403 DENIED (check the credentials"),
            "{run}"
        );
        let unanswered = Failure::in_flight("GET /v2/: connection refused").into_failure();
        assert_eq!(unanswered.kind, crate::failure::Kind::Registry { status: None });
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let now = httpdate::parse_http_date("Sun, 29 Nov 2026 10:00:00 GMT").unwrap();
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), Some(Duration::from_secs(7)));
        let date = headers(&[("retry-after", "Sun, 29 Nov 2026 10:00:42 GMT")]);
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(42)));
        let past = headers(&[("retry-after", "Sun, 29 Nov 2026 09:59:00 GMT")]);
        assert_eq!(retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn reads_docker_hub_rate_limit_headers() {
        let hub = headers(&[("ratelimit-limit", "100;w=21600"), ("ratelimit-remaining", "76;w=21600")]);
        let limit = RateLimit::from_headers(&hub).unwrap();
        assert_eq!(limit, RateLimit { limit: Some(100), remaining: 76, window: Some(21600) });
        assert_eq!(limit.to_string(), "76 of 100 pulls left (per 6 h)");
        let bare = RateLimit::from_headers(&headers(&[("ratelimit-remaining", "3")])).unwrap();
        assert_eq!(bare.to_string(), "3 pulls left");
        assert_eq!(RateLimit::from_headers(&headers(&[("ratelimit-limit", "100")])), None);
    }

    #[test]
    fn reads_answers() {
        let none = HeaderMap::new();
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        let failure = Failure::from_status("GET m", StatusCode::NOT_FOUND, &none, body);
        assert_eq!(failure.message, "GET m: 404 MANIFEST_UNKNOWN");
        assert!(failure.is_not_found());
        let limited = Failure::from_status(
            "GET m",
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "3")]),
            b"",
        );
        assert_eq!(limited.retry_after, Some(Duration::from_secs(3)));
        assert!(limited.is_rate_limited());
    }
}
