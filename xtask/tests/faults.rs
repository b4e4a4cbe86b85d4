//! The mirror under registry faults, injected by a proxy in front of the source or the
//! destination registry (both real `docker-registry` servers on 127.0.0.1).

mod common;

use std::time::{Duration, Instant};

use common::{stderr, stdout};
use xtask_testbed::fault_proxy::{Fault, FaultProxy, Rule, Schedule, measured_mix};
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw};

struct Mirror {
    source: TestRegistry,
    destination: TestRegistry,
    dir: tempfile::TempDir,
    fixtures: Vec<(String, Fixture)>,
}

/// Three multi-arch tags of 64 KiB layers in the source registry.
fn mirror() -> Mirror {
    mirror_of(&["faults/a", "faults/b", "faults/c"], 64 << 10)
}

/// A multi-arch tag `1` in each of `repositories`, with layers of `layer_size` bytes.
fn mirror_of(repositories: &[&str], layer_size: usize) -> Mirror {
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start().unwrap();
    let mut fixtures = Vec::new();
    for (n, repository) in repositories.iter().enumerate() {
        let spec = FixtureSpec { layer_size, ..FixtureSpec::small(500 + n as u64) };
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
        Rule::new(None, "/v2/", Fault::TooManyRequests(1), Schedule::EveryNth(5)),
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
    let heads = proxy
        .log()
        .iter()
        .filter(|l| l.method == "HEAD" && l.path.starts_with("/v2/faults/c/manifests/1"))
        .count();
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
            Fault::Silent(Duration::from_secs(60)),
            Schedule::Always,
        )],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: blobs of one image never answered", &run, &proxy);
    assert_eq!(run.output.status.code(), Some(1));
    assert!(run.elapsed < Duration::from_secs(30), "took {:?}", run.elapsed);
    let out = stdout(&run.output);
    assert!(out.lines().any(|l| l.starts_with("FAILED") && l.contains("faults/a:1")), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("copied")).count(), 2, "{out}");
}

/// The mix measured in issue 12, all at once at the source: a 503 on every 5th request, a 429
/// (`Retry-After: 1`) on every 7th, a reset on every 4th blob GET. Before downloads resumed and
/// tries counted only fruitless failures, one tag of four gave up.
#[test]
fn the_fault_mix_completes_with_identical_digests() {
    let mirror = mirror_of(&["mix/a", "mix/b", "mix/c", "mix/d"], 256 << 10);
    let proxy = FaultProxy::start(mirror.source.addr, measured_mix());
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: 503 1 in 5, 429 1 in 7, reset 1 blob GET in 4", &run, &proxy);
    assert!(run.output.status.success(), "{}\n{}", stdout(&run.output), stderr(&run.output));
    assert!(proxy.injected() >= 5, "{:#?}", proxy.log());
    mirror.assert_all_copied();
    assert_eq!(mirror.blob_puts().1, 0, "the destination had to refuse an upload");
}

/// A blob cut off mid-body is fetched again from the byte where it stopped: the source's own
/// access log shows the second GET answered 206 with only the missing bytes, and the proxy saw
/// the `Range` asked for.
#[test]
fn a_resumed_blob_fetches_only_its_missing_bytes() {
    let mirror = mirror_of(&["resume/a"], 2 << 20);
    let fixture = &mirror.fixtures[0].1;
    // The first layer of the first platform: 2 MiB.
    let digest = fixture
        .blobs
        .iter()
        .find(|d| std::fs::metadata(fixture.blob_path(d)).unwrap().len() == 2 << 20)
        .unwrap()
        .clone();
    let size = 2u64 << 20;
    let path: &'static str = Box::leak(format!("/blobs/{digest}").into_boxed_str());
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(Some("GET"), path, Fault::ResetMidBody, Schedule::FirstN(1))],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: one 2 MiB blob reset halfway", &run, &proxy);
    assert!(run.output.status.success(), "{}\n{}", stdout(&run.output), stderr(&run.output));
    mirror.assert_all_copied();

    let gets: Vec<_> =
        proxy.log().into_iter().filter(|l| l.method == "GET" && l.path.ends_with(&digest)).collect();
    assert_eq!(gets.len(), 2, "{gets:#?}");
    assert_eq!(gets[0].range, None);
    let resumed_at: u64 = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or_else(|| panic!("the second GET asked no range: {gets:#?}"));
    assert!(resumed_at > 0 && resumed_at < size, "resumed at {resumed_at}");
    let served: Vec<_> = mirror
        .source
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with(&digest))
        .collect();
    assert_eq!(served.len(), 2, "{served:#?}");
    assert_eq!((served[1].status, served[1].bytes), (206, size - resumed_at), "{served:#?}");
}

/// A 429's `Retry-After: 2` is waited out before the request goes again, and counted.
#[test]
fn a_429_waits_the_time_the_registry_asked() {
    let mirror = mirror_of(&["wait/a"], 4096);
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(Some("GET"), "/manifests/", Fault::TooManyRequests(2), Schedule::FirstN(1))],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: 429 Retry-After 2 on the first manifest GET", &run, &proxy);
    assert!(run.output.status.success(), "{}\n{}", stdout(&run.output), stderr(&run.output));
    let log = proxy.log();
    let refused = log.iter().find(|l| l.fault.is_some()).unwrap();
    let again =
        log.iter().find(|l| l.at > refused.at && l.method == "GET" && l.path == refused.path).unwrap();
    let waited = again.at - refused.at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}: {log:#?}");
    assert!(waited < Duration::from_secs(4), "retried after {waited:?}");
    assert_eq!(retries(&run), 1);
    mirror.assert_all_copied();
}

/// A registry that reports its pull quota (`RateLimit-*`, as Docker Hub does): the summary shows
/// what is left, and below `--min-pulls-left` no new pull starts: the tags are held back, named,
/// and the run fails saying why.
#[test]
fn a_low_pull_quota_holds_back_new_pulls_and_says_why() {
    let mirror = mirror_of(&["quota/a", "quota/b", "quota/c"], 4096);
    let proxy = FaultProxy::start_with_quota(mirror.source.addr, Vec::new(), Some((10, 21600)));
    let manifest_gets = |proxy: &FaultProxy| {
        proxy.log().iter().filter(|l| l.method == "GET" && l.path.contains("/manifests/")).count()
    };

    // One tag first, with the default threshold: it is copied, and the quota is reported.
    let (lists, first) = (mirror.dir.path().join("first.txt"), format!("{}/quota/a: 1", proxy.host()));
    std::fs::write(&lists, first).unwrap();
    let list = lists.display().to_string();
    let repo = format!("{}/mirror", mirror.destination.host());
    let config = mirror.dir.path().display().to_string();
    let env = [("DOCKER_REPO", repo.as_str()), ("DOCKER_CONFIG", config.as_str())];
    let output = common::xtask(&["thirdparty", "--file", &list], &env);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let pulled = manifest_gets(&proxy);
    assert!(pulled >= 3, "an index and its manifests: {pulled}");
    let expected =
        format!("thirdparty: {} rate limit: {} of 10 pulls left (per 6 h)", proxy.host(), 10 - pulled);
    assert!(stdout(&output).contains(&expected), "{expected}\n{}", stdout(&output));

    // The rest, with a threshold above what is left: nothing more is pulled.
    let threshold = (10 - pulled + 1).to_string();
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &["--min-pulls-left", &threshold]);
    let out = stdout(&run.output);
    assert_eq!(run.output.status.code(), Some(1), "{out}");
    assert_eq!(manifest_gets(&proxy), pulled, "no new pull started: {:#?}", proxy.log());
    // quota/a too: this list has no lock yet, and locking a tag reads its manifest (a pull).
    for tag in ["quota/a:1", "quota/b:1", "quota/c:1"] {
        let line = out
            .lines()
            .find(|l| l.starts_with("held back") && l.contains(tag))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains(&format!("fewer than --min-pulls-left {threshold}")), "{line}");
    }
    assert!(stderr(&run.output).contains("3 of 3 tags were held back"), "{}", stderr(&run.output));
}

/// A blob that takes longer than `--timeout` to arrive, but never stalls that long: nothing is
/// given up. (The upload's answer comes only after its last byte; waiting for it is not a stall.)
#[test]
fn a_slow_blob_that_keeps_coming_is_never_given_up() {
    let mirror = mirror_of(&["slow/a"], 256 << 10);
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(
            Some("GET"),
            "/blobs/",
            Fault::Trickle(Duration::from_millis(150)),
            Schedule::FirstN(1),
        )],
    );
    // 16 pieces, 150 ms apart: 2.4 s for the blob, against a 1 s stall timeout.
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: one blob trickles in over 2.4 s (timeout 1 s)", &run, &proxy);
    assert!(run.output.status.success(), "{}\n{}", stdout(&run.output), stderr(&run.output));
    assert_eq!(retries(&run), 0, "{}", stdout(&run.output));
    mirror.assert_all_copied();
}

/// A source that sends only half of what is left of a blob on every GET, then hangs up: each
/// try brings bytes, so none counts against the tries, and the blobs arrive whole.
#[test]
fn a_transfer_that_keeps_advancing_is_never_abandoned() {
    let mirror = mirror_of(&["halves/a"], 64 << 10);
    let proxy = FaultProxy::start(
        mirror.source.addr,
        vec![Rule::new(Some("GET"), "/blobs/", Fault::TruncateBody, Schedule::Always)],
    );
    let run = mirror.run(&proxy.host(), &mirror.destination.host(), &[]);
    report("source: every blob GET sends half of what is left, then closes", &run, &proxy);
    assert!(run.output.status.success(), "{}\n{}", stdout(&run.output), stderr(&run.output));
    assert!(retries(&run) > 5 * 4, "more failures than the tries of any one request: {}", retries(&run));
    mirror.assert_all_copied();
}
