//! The mirror under registry faults, injected by a proxy in front of the source or the
//! destination registry (both real `docker-registry` servers on 127.0.0.1).

mod common;

use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy, Rule, Schedule};
use common::{stderr, stdout};
use xtask::testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw};

struct Mirror {
    source: TestRegistry,
    destination: TestRegistry,
    dir: tempfile::TempDir,
    fixtures: Vec<(String, Fixture)>,
}

/// Three multi-arch tags of 64 KiB layers in the source registry.
fn mirror() -> Mirror {
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start().unwrap();
    let mut fixtures = Vec::new();
    for (n, repository) in ["faults/a", "faults/b", "faults/c"].into_iter().enumerate() {
        let spec = FixtureSpec { layer_size: 64 << 10, ..FixtureSpec::small(500 + n as u64) };
        let fixture = Fixture::generate(&spec).unwrap();
        fixture.push(&source.host(), repository, "1").unwrap();
        fixtures.push((repository.to_string(), fixture));
    }
    Mirror { source, destination, dir: tempfile::tempdir().unwrap(), fixtures }
}

struct Run {
    output: std::process::Output,
    elapsed: Duration,
}

impl Mirror {
    /// Mirror from `source_host` (the registry or a proxy before it) into `destination_host`.
    fn run(&self, source_host: &str, destination_host: &str, extra: &[&str]) -> Run {
        let list = self.dir.path().join("list.txt");
        let lines: Vec<String> =
            self.fixtures.iter().map(|(repo, _)| format!("{source_host}/{repo}: 1")).collect();
        std::fs::write(&list, lines.join("\n")).unwrap();
        let list = list.display().to_string();
        let mut args = vec!["thirdparty", "--file", &list, "--timeout", "1"];
        args.extend_from_slice(extra);
        let repo = format!("{destination_host}/mirror");
        let config = self.dir.path().display().to_string();
        let started = Instant::now();
        let output = common::xtask(&args, &[("DOCKER_REPO", &repo), ("DOCKER_CONFIG", &config)]);
        Run { output, elapsed: started.elapsed() }
    }

    /// Every tag at the destination (read directly, not through a proxy) is the source's.
    fn assert_all_copied(&self) {
        for (repository, fixture) in &self.fixtures {
            let raw =
                skopeo_raw(&format!("{}/mirror/thirdparty/{repository}:1", self.destination.host())).unwrap();
            assert_eq!(sha256_digest(&raw), fixture.digest, "{repository}");
        }
    }

    /// Blob uploads the destination completed (201), and ones it refused as invalid (400: a
    /// wrong digest or size). An upload we abandon midway shows as neither (the registry logs
    /// the cut-off body as 500).
    fn blob_puts(&self) -> (usize, usize) {
        let puts: Vec<_> = self
            .destination
            .requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
            .collect();
        (puts.iter().filter(|r| r.status == 201).count(), puts.iter().filter(|r| r.status == 400).count())
    }
}

fn retries(run: &Run) -> u64 {
    let out = stdout(&run.output);
    let summary =
        out.lines().find(|l| l.starts_with("thirdparty:")).unwrap_or_else(|| panic!("no summary in {out}"));
    summary.split("; ").nth(1).and_then(|part| part.split(' ').next()).unwrap().parse().unwrap()
}

fn report(case: &str, run: &Run, proxy: &FaultProxy) {
    println!(
        "| {case} | exit {} | {} faults injected | {} retries | {:.1} s |",
        run.output.status.code().unwrap_or(-1),
        proxy.injected(),
        retries(run),
        run.elapsed.as_secs_f64()
    );
}

/// A transient fault on a steady share of requests: the mirror completes, every digest right,
/// and the summary counts the retries.
fn survives(case: &str, at_source: bool, rule: Rule) {
    let mirror = mirror();
    let (upstream, other) =
        if at_source { (&mirror.source, &mirror.destination) } else { (&mirror.destination, &mirror.source) };
    let proxy = FaultProxy::start(upstream.addr, vec![rule]);
    let (source_host, destination_host) =
        if at_source { (proxy.host(), other.host()) } else { (other.host(), proxy.host()) };
    let run = mirror.run(&source_host, &destination_host, &[]);
    report(case, &run, &proxy);
    assert!(run.output.status.success(), "{case}:\n{}\n{}", stdout(&run.output), stderr(&run.output));
    assert!(proxy.injected() > 0, "{case}: no fault was injected: {:#?}", proxy.log());
    assert!(retries(&run) >= 1, "{case}: {}", stdout(&run.output));
    mirror.assert_all_copied();
    // No corrupt or short blob ever reached the destination whole (it would have refused it).
    assert_eq!(mirror.blob_puts().1, 0, "{case}: the destination had to refuse an upload");
}

#[test]
fn source_answers_503_to_every_fifth_request() {
    survives(
        "source: 503 on 1 request in 5",
        true,
        Rule::new(None, "/v2/", Fault::Status(503), Schedule::EveryNth(5)),
    );
}

#[test]
fn destination_answers_500_to_every_fifth_request() {
    survives(
        "destination: 500 on 1 request in 5",
        false,
        Rule::new(None, "/v2/", Fault::Status(500), Schedule::EveryNth(5)),
    );
}

#[test]
fn source_rate_limits_every_fifth_request() {
    survives(
        "source: 429 Retry-After 1 on 1 request in 5",
        true,
        Rule::new(None, "/v2/", Fault::TooManyRequests, Schedule::EveryNth(5)),
    );
}

#[test]
fn destination_resets_every_fifth_connection() {
    survives(
        "destination: reset before answering, 1 in 5",
        false,
        Rule::new(None, "/v2/", Fault::ResetBeforeResponse, Schedule::EveryNth(5)),
    );
}

#[test]
fn source_resets_blob_bodies_midway() {
    survives(
        "source: reset mid-body, 1 blob in 3",
        true,
        Rule::new(Some("GET"), "/blobs/", Fault::ResetMidBody, Schedule::EveryNth(3)),
    );
}

#[test]
fn source_ends_blob_bodies_early() {
    survives(
        "source: body ends early, 1 blob in 3",
        true,
        Rule::new(Some("GET"), "/blobs/", Fault::TruncateBody, Schedule::EveryNth(3)),
    );
}

#[test]
fn source_stalls_past_the_timeout() {
    survives(
        "source: stalls 5 s (timeout 1 s), 1 blob in 4",
        true,
        Rule::new(Some("GET"), "/blobs/", Fault::Stall(Duration::from_secs(5)), Schedule::EveryNth(4)),
    );
}

#[test]
fn corrupted_blobs_are_caught_and_fetched_again() {
    survives(
        "source: one byte flipped, 1 blob in 3",
        true,
        Rule::new(Some("GET"), "/blobs/", Fault::FlipByte, Schedule::EveryNth(3)),
    );
}

#[test]
fn a_blob_that_is_always_corrupt_fails_its_tag_and_is_never_pushed() {
    let mirror = mirror();
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(Some("GET"), "/faults/b/blobs/", Fault::FlipByte, Schedule::Always)],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: every blob of one image corrupt", &run, &proxy);
    assert_eq!(run.output.status.code(), Some(1));
    let out = stdout(&run.output);
    let failed = out.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        failed.contains("/faults/b:1") && failed.contains("blob sha256:") && failed.contains("digest"),
        "{failed}"
    );
    assert_eq!(out.lines().filter(|l| l.starts_with("copied")).count(), 2, "the other tags complete: {out}");
    // No upload of a b blob completed or reached the registry whole, and the tag is not there.
    let b_puts: Vec<u16> = mirror
        .destination
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/faults/b/"))
        .map(|r| r.status)
        .collect();
    assert!(!b_puts.is_empty() && b_puts.iter().all(|status| *status == 500), "{b_puts:?}");
    assert!(skopeo_raw(&format!("{}/mirror/thirdparty/faults/b:1", mirror.destination.host())).is_err());
}

#[test]
fn permanent_faults_fail_one_tag_in_bounded_time() {
    let mirror = mirror();
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(None, "/faults/c/", Fault::Status(503), Schedule::Always)],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: one image always 503", &run, &proxy);
    assert_eq!(run.output.status.code(), Some(1));
    let out = stdout(&run.output);
    assert!(
        out.lines().any(|l| l.starts_with("FAILED") && l.contains("faults/c:1") && l.contains("503")),
        "{out}"
    );
    assert!(out.contains("gave up after retrying"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("copied")).count(), 2, "{out}");
    assert!(run.elapsed < Duration::from_secs(20), "took {:?}", run.elapsed);
    // Bounded tries: the HEAD of the failing tag was tried exactly 5 times.
    let heads = proxy.log().iter().filter(|l| l.starts_with("HEAD /v2/faults/c/manifests/1")).count();
    assert_eq!(heads, 5, "{:#?}", proxy.log());
}

#[test]
fn a_registry_that_stalls_forever_fails_in_bounded_time() {
    let mirror = mirror();
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(
            Some("GET"),
            "/faults/a/blobs/",
            Fault::Stall(Duration::from_secs(60)),
            Schedule::Always,
        )],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: blobs of one image stall forever", &run, &proxy);
    assert_eq!(run.output.status.code(), Some(1));
    assert!(run.elapsed < Duration::from_secs(30), "took {:?}", run.elapsed);
    let out = stdout(&run.output);
    assert!(out.lines().any(|l| l.starts_with("FAILED") && l.contains("faults/a:1")), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("copied")).count(), 2, "{out}");
}
