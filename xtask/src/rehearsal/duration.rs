//! Cloud Build's durations (`timeout: 600s`, `3.5s`): seconds, a decimal number, then `s`.

use std::time::Duration;

use anyhow::{Result, anyhow};

/// `600s` → 600 s. A plain number is read as seconds too.
pub fn parse(text: &str) -> Result<Duration> {
    let number = text.trim().strip_suffix('s').unwrap_or(text.trim());
    number
        .parse::<f64>()
        .ok()
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            anyhow!("{text:?} is not a duration as Cloud Build writes them: seconds then `s`, e.g. `600s`")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds() {
        assert_eq!(parse("600s").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("20").unwrap(), Duration::from_secs(20));
        for bad in ["", "s", "10m", "-1s", "0s", "1h"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
