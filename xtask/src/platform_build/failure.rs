//! Which failures of a build or a merge pass, so that another try may succeed: the classifier
//! of buildx's last line, as `registry::retry::is_transient` is the registry code's. What the
//! run then decides on is a `crate::failure::Kind`.

/// Why a build or a merge failed, when that cause passes and another try may succeed: buildx's
/// last line (`ERROR: …`) names a registry's 408, 429 or 5xx, a broken connection, a manifest refused
/// for blobs the registry does not see yet, or the engine's snapshot race (concurrent builds on
/// the containerd image store lose a snapshot: moby/buildkit#6977). The registry of the tests
/// (Distribution 2.8) answers 500 now and then while the other platform pushes into the same
/// repository: it writes its link files in place, so a read between the truncate and the write
/// finds "invalid checksum digest format". A failing `RUN` step, or any other answer, is the
/// build's own and final.
pub fn transient_cause(line: &str) -> Option<String> {
    let error = line.strip_prefix("ERROR: ")?;
    if error.contains("did not complete successfully") {
        return None;
    }
    if let Some((code, status)) = answered_status(error) {
        if crate::registry::retry::is_busy_status(code) {
            return Some(format!("the registry answered {status}"));
        }
        // BuildKit sends a manifest only after its blobs; a 400 for it is a registry that does
        // not see them yet (Distribution's "manifest blob unknown" after the race above). buildx
        // does not show the error code that the registry code's own rule reads.
        let manifest_push = error.contains("PUT request to") && error.contains("/manifests/");
        return (code == 400 && manifest_push)
            .then(|| "the registry refused a manifest whose blobs it was just sent".to_string());
    }
    const BROKEN: [&str; 3] = ["connection reset by peer", "i/o timeout", "TLS handshake timeout"];
    if let Some(broken) = BROKEN.iter().find(|broken| error.contains(*broken)) {
        return Some(format!("the connection to the registry broke: {broken}"));
    }
    (error.contains("snapshot") && error.contains("does not exist: not found"))
        .then(|| "the engine lost a snapshot to a concurrent build".to_string())
}

/// The HTTP status in containerd's `unexpected status[ from <method> request to <url>]: <code>
/// <text>`, as its code and `<code> <text>`.
fn answered_status(error: &str) -> Option<(u16, &str)> {
    let (_, rest) = error.split_once("unexpected status")?;
    rest.match_indices(": ").find_map(|(at, _)| {
        let status = &rest[at + 2..];
        let code = status
            .get(..3)
            .filter(|code| code.bytes().all(|b| b.is_ascii_digit()) && status[3..].starts_with(' '))?;
        Some((code.parse().ok()?, status.trim_end()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_that_pass_are_tried_again() {
        // Lines as buildx printed them here (the first from a failed graph test).
        let passing = [
            (
                "ERROR: unexpected status from HEAD request to http://127.0.0.1:35051/v2/local/top/manifests/1-amd64: 500 Internal Server Error",
                "the registry answered 500 Internal Server Error",
            ),
            (
                "ERROR: failed to push r/a:1: unexpected status from PUT request to https://r/v2/a/blobs/uploads/x: 503 Service Unavailable",
                "the registry answered 503 Service Unavailable",
            ),
            (
                "ERROR: failed to solve: r/base:1: failed to resolve source metadata for r/base:1: unexpected status code https://r/v2/base/manifests/1: 502 Bad Gateway",
                "the registry answered 502 Bad Gateway",
            ),
            (
                "ERROR: failed to solve: failed to copy: unexpected status: 408 Request Timeout",
                "the registry answered 408 Request Timeout",
            ),
            (
                "ERROR: failed to solve: failed to do request: Head \"https://r/v2/a/manifests/1\": read tcp 10.0.0.2:443: read: connection reset by peer",
                "the connection to the registry broke: connection reset by peer",
            ),
            (
                "ERROR: failed to solve: failed to push 127.0.0.1:40385/local/left:1-amd64: failed commit on ref \"manifest-sha256:d95b\": unexpected status from PUT request to http://127.0.0.1:40385/v2/local/left/manifests/sha256:d95b: 400 Bad Request",
                "the registry refused a manifest whose blobs it was just sent",
            ),
            (
                "ERROR: failed to solve: failed to prepare extraction snapshot \"extract-1\": parent snapshot sha256:ab does not exist: not found",
                "the engine lost a snapshot to a concurrent build",
            ),
        ];
        for (line, cause) in passing {
            assert_eq!(transient_cause(line).as_deref(), Some(cause), "{line}");
        }
        for line in [
            // The build's own failure, even when its output mentions a 500.
            "ERROR: failed to solve: process \"/bin/sh -c curl -f https://x # 500 Internal Server Error\" did not complete successfully: exit code: 22",
            "ERROR: failed to solve: r/base:1: not found",
            "ERROR: unexpected status from HEAD request to https://r/v2/a/manifests/1: 401 Unauthorized",
            "ERROR: failed to solve: unexpected status: 404 Not Found",
            "ERROR: failed to solve: failed to push r/a:1: unexpected status from PUT request to https://r/v2/a/blobs/uploads/x: 400 Bad Request",
            // A step's line, or the output of a RUN, is not buildx's verdict.
            "#13 ERROR: unexpected status from HEAD request to http://r/v2/a/manifests/1: 500 Internal Server Error",
            "#9 0.312 wget: server returned error: HTTP/1.1 503 Service Unavailable",
        ] {
            assert_eq!(transient_cause(line), None, "{line}");
        }
    }
}
