//! `cargo xtask thirdparty` against real registries: Debian's `docker-registry` on 127.0.0.1
//! as source and destination, fixture images pushed with skopeo, results checked with skopeo
//! and oci-client.

mod common;

use std::path::Path;

use common::vendoring::Vendoring;
use common::{stderr, stdout};
use xtask::registry::reference::repository_of;
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw};

fn push(registry: &TestRegistry, spec: &FixtureSpec, repository: &str, tag: &str) -> Fixture {
    let fixture = Fixture::generate(spec).unwrap();
    fixture.push(&registry.host(), repository, tag).unwrap();
    fixture
}

/// The destination serves the same bytes as the source for the index and every manifest it
/// lists, read by skopeo.
fn assert_identical(source: &str, destination: &str, index_digest: &str) {
    let index = skopeo_raw(source).unwrap();
    assert_eq!(sha256_digest(&index), index_digest);
    assert_eq!(skopeo_raw(destination).unwrap(), index, "{destination} differs from {source}");
    let parsed: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let children = parsed["manifests"].as_array().unwrap();
    assert!(children.len() >= 2);
    let repo = repository_of(destination);
    let source_repo = repository_of(source);
    for child in children {
        let digest = child["digest"].as_str().unwrap();
        let copied = skopeo_raw(&format!("{repo}@{digest}")).unwrap();
        assert_eq!(copied, skopeo_raw(&format!("{source_repo}@{digest}")).unwrap());
        assert_eq!(sha256_digest(&copied), digest);
    }
}

fn blob_uploads(registry: &TestRegistry) -> Vec<String> {
    registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/"))
        .filter_map(|r| r.path.split("digest=").nth(1).map(|d| d.replace("%3A", ":")))
        .collect()
}

#[test]
fn mirrors_every_platform_then_finds_everything_up_to_date() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    let alpine = push(&setup.source, &FixtureSpec::small(1), "base/alpine", "3.15");
    let alpine_next = push(&setup.source, &FixtureSpec::small(2), "base/alpine", "3.16");
    let golang = push(&setup.source, &FixtureSpec::small(3), "lib/golang", "1.18-alpine3.15");
    let list = setup.write_list(&format!(
        "# fixtures\n{src}/base/alpine: 3.15 3.16\n\n{src}/lib/golang: 1.18-alpine3.15  # go\n"
    ));

    let first = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert!(first.status.success(), "{}\n{}", stdout(&first), stderr(&first));
    let out = stdout(&first);
    assert_eq!(out.lines().filter(|l| l.starts_with("copied ")).count(), 3, "{out}");
    assert!(out.contains("thirdparty: 3 tags: 3 copied"), "{out}");

    let dst = setup.docker_repo();
    assert_identical(
        &format!("{src}/base/alpine:3.15"),
        &format!("{dst}/thirdparty/base/alpine:3.15"),
        &alpine.digest,
    );
    assert_identical(
        &format!("{src}/base/alpine:3.16"),
        &format!("{dst}/thirdparty/base/alpine:3.16"),
        &alpine_next.digest,
    );
    assert_identical(
        &format!("{src}/lib/golang:1.18-alpine3.15"),
        &format!("{dst}/thirdparty/lib/golang:1.18-alpine3.15"),
        &golang.digest,
    );
    // Every blob of every platform (and of the attestation) arrived, each exactly once.
    let mut uploaded = blob_uploads(&setup.destination);
    let mut expected: Vec<String> =
        [&alpine, &alpine_next, &golang].iter().flat_map(|f| f.blobs.clone()).collect();
    expected.sort();
    expected.dedup();
    uploaded.sort();
    assert_eq!(uploaded, expected);

    // The same check through oci-client.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = common::oci_client_over_http();
        let reference: oci_client::Reference =
            format!("{dst}/thirdparty/lib/golang:1.18-alpine3.15").parse().unwrap();
        let digest = client
            .fetch_manifest_digest(&reference, &oci_client::secrets::RegistryAuth::Anonymous)
            .await
            .unwrap();
        assert_eq!(digest, golang.digest);
    });

    // The lock beside the list records each tag's digest and platforms.
    let lock = std::fs::read_to_string(setup.dir.path().join("thirdparty.lock")).unwrap();
    let locked: toml::Value = toml::from_str(&lock).unwrap();
    let golang_entry = &locked["tag"][format!("{src}/lib/golang:1.18-alpine3.15").as_str()];
    assert_eq!(golang_entry["digest"].as_str(), Some(golang.digest.as_str()), "{lock}");
    let platforms: Vec<&str> = golang_entry["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "unknown/unknown"], "{lock}");

    // Second run: the lock names every digest, so one HEAD per tag at the destination and
    // nothing at the source; no blob request anywhere, nothing pushed; the lock unchanged.
    let source_before = setup.source.requests().len();
    let destination_before = setup.destination.requests().len();
    let second = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert!(second.status.success(), "{}", stderr(&second));
    let out = stdout(&second);
    assert_eq!(out.lines().filter(|l| l.starts_with("up to date ")).count(), 3, "{out}");
    let new_at = |registry: &TestRegistry, before: usize| -> Vec<_> {
        registry.requests().into_iter().skip(before).filter(|r| r.path != "/v2/").collect()
    };
    assert_eq!(new_at(&setup.source, source_before), []);
    let at_destination = new_at(&setup.destination, destination_before);
    assert_eq!(at_destination.len(), 3, "{at_destination:#?}");
    assert!(at_destination.iter().all(|r| r.method == "HEAD" && r.path.contains("/manifests/")));
    assert_eq!(std::fs::read_to_string(setup.dir.path().join("thirdparty.lock")).unwrap(), lock);
}

#[test]
fn a_changed_tag_sends_only_its_new_blobs() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    let spec = FixtureSpec::small(10);
    push(&setup.source, &spec, "base/debian", "11-slim");
    push(&setup.source, &FixtureSpec::small(11), "base/other", "1");
    let list = setup.write_list(&format!("{src}/base/debian: 11-slim\n{src}/base/other: 1\n"));
    assert!(setup.run_list(&list, &setup.docker_repo(), &[], &[]).status.success());
    let uploads_before = blob_uploads(&setup.destination).len();

    // The same image with one more layer on arm64: a new layer, a new arm64 config.
    let changed = FixtureSpec { extra_layer_on: Some(1), ..spec };
    let fixture = push(&setup.source, &changed, "base/debian", "11-slim");
    let check = setup.run_list(&list, &setup.docker_repo(), &["--check"], &[]);
    assert_eq!(check.status.code(), Some(1), "--check must fail when upstream moved");
    let out = stdout(&check);
    let drift = out.lines().find(|l| l.starts_with("drift")).unwrap_or_else(|| panic!("{out}"));
    assert!(drift.contains("base/debian:11-slim") && drift.contains("upstream moved"), "{drift}");
    assert_eq!(out.lines().filter(|l| l.starts_with("drift")).count(), 1, "{out}");
    assert!(stderr(&check).contains("1 drift(s)"), "{}", stderr(&check));
    assert_eq!(blob_uploads(&setup.destination).len(), uploads_before, "--check copies nothing");

    // The lock holds: a plain run keeps the locked digest.
    let kept = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert!(kept.status.success(), "{}", stderr(&kept));
    assert_eq!(blob_uploads(&setup.destination).len(), uploads_before, "nothing new: {}", stdout(&kept));

    let run = setup.run_list(&list, &setup.docker_repo(), &["--update"], &[]);
    assert!(run.status.success(), "{}", stderr(&run));
    let update = stdout(&run);
    let line =
        update.lines().find(|l| l.trim_start().starts_with("Updating")).unwrap_or_else(|| panic!("{update}"));
    assert!(line.contains(&format!("{src}/base/debian:11-slim")) && line.contains(" → "), "{line}");
    assert!(line.contains(&fixture.digest[..19]), "{line}");
    let sent: Vec<String> = blob_uploads(&setup.destination).into_iter().skip(uploads_before).collect();
    assert_eq!(sent.len(), 2, "only the new layer and the new config: {sent:?}");
    assert!(sent.iter().all(|digest| fixture.blobs.contains(digest)));
    let dst = setup.docker_repo();
    assert_identical(
        &format!("{src}/base/debian:11-slim"),
        &format!("{dst}/thirdparty/base/debian:11-slim"),
        &fixture.digest,
    );
    assert!(stdout(&run).contains("up to date "), "the unchanged tag stays: {}", stdout(&run));
    assert!(setup.run_list(&list, &setup.docker_repo(), &["--check"], &[]).status.success());
}

#[test]
fn dry_run_says_what_it_would_copy_and_copies_nothing() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    push(&setup.source, &FixtureSpec::small(20), "x/y", "1");
    let list = setup.write_list(&format!("{src}/x/y: 1\n"));
    let dry = setup.run_list(&list, &setup.docker_repo(), &["--dry-run"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stdout(&dry)
            .contains(&format!("would copy  {src}/x/y:1 -> {}/thirdparty/x/y:1", setup.docker_repo())),
        "{}",
        stdout(&dry)
    );
    assert!(setup.destination.requests().iter().all(|r| r.method == "HEAD" || r.method == "GET"));
    assert!(stdout(&dry).contains("would change as above (dry run: not written)"), "{}", stdout(&dry));
    assert!(!setup.dir.path().join("thirdparty.lock").exists(), "a dry run writes no lock");
}

#[test]
fn a_missing_tag_fails_alone() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    push(&setup.source, &FixtureSpec::small(30), "x/present", "1");
    let list = setup.write_list(&format!("{src}/x/present: 1\n{src}/x/absent: 9.9\n"));
    let run = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert_eq!(run.status.code(), Some(1));
    let out = stdout(&run);
    assert!(out.contains(&format!("FAILED      {src}/x/absent:9.9")), "{out}");
    assert!(out.contains(&format!("source {src}/x/absent:9.9 not found")), "{out}");
    assert!(out.lines().any(|l| l.starts_with(&format!("copied      {src}/x/present:1"))), "{out}");
    assert!(stderr(&run).contains("1 of 2 tags failed"), "{}", stderr(&run));
}

#[test]
fn an_unreachable_registry_is_named() {
    let setup = Vendoring::new();
    // Nothing listens on port 1.
    let list = setup.write_list("127.0.0.1:1/x/y: 1\n");
    let run = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert_eq!(run.status.code(), Some(1));
    let out = stdout(&run);
    assert!(out.contains("cannot reach registry 127.0.0.1:1"), "{out}");
}

#[test]
fn a_malformed_file_is_reported_by_line_before_any_request() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    let list = setup.write_list(&format!("{src}/ok: 1\n{src}/Bad: 1\n{src}/no-tags:\n"));
    let before = (setup.source.requests().len(), setup.destination.requests().len());
    let run = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(err.contains("2 problem(s), nothing was copied"), "{err}");
    assert!(err.contains("thirdparty.txt:line 2: "), "{err}");
    assert!(err.contains("thirdparty.txt:line 3: no tags"), "{err}");
    assert_eq!(
        (setup.source.requests().len(), setup.destination.requests().len()),
        before,
        "no request at all"
    );
}

fn write_docker_config(dir: &Path, json: &str) {
    let config = dir.join("docker-config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("config.json"), json).unwrap();
}

#[test]
fn credentials_reach_a_registry_that_requires_them() {
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start_with_auth("mirror", "s3cret-pass").unwrap();
    let setup = Vendoring { source, destination, dir: tempfile::tempdir().unwrap() };
    let src = setup.source.host();
    push(&setup.source, &FixtureSpec::small(40), "x/y", "1");
    let list = setup.write_list(&format!("{src}/x/y: 1\n"));

    // No credentials: refused, with a hint.
    let run = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert_eq!(run.status.code(), Some(1));
    assert!(stdout(&run).contains("check the credentials"), "{}", stdout(&run));

    // From the Docker config's `auths`.
    let dst = setup.destination.host();
    write_docker_config(
        setup.dir.path(),
        &format!(r#"{{"auths": {{"{dst}": {{"auth": "bWlycm9yOnMzY3JldC1wYXNz"}}}}}}"#),
    );
    let run = setup.run_list(&list, &setup.docker_repo(), &[], &[]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    assert!(!stdout(&run).contains("s3cret") && !stderr(&run).contains("s3cret"));

    // From a credential helper on PATH.
    let bin = setup.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-testhelper");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\n[ \"$1\" = get ] || exit 1\nprintf '{\"ServerURL\":\"%s\",\"Username\":\"mirror\",\"Secret\":\"s3cret-pass\"}' \"$server\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    write_docker_config(setup.dir.path(), &format!(r#"{{"credHelpers": {{"{dst}": "testhelper"}}}}"#));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let list2 = setup.write_list(&format!("{src}/x/y: 1\n"));
    // A fresh destination tag, so that the copy needs the credentials again.
    push(&setup.source, &FixtureSpec::small(41), "x/y", "1");
    let run = setup.run_list(&list2, &setup.docker_repo(), &[], &[("PATH", &path)]);
    assert!(run.status.success(), "{}\n{}", stdout(&run), stderr(&run));
    assert!(stdout(&run).contains("copied "), "{}", stdout(&run));
    assert!(stderr(&run).contains("+ docker-credential-testhelper get"), "{}", stderr(&run));
    assert!(!stdout(&run).contains("s3cret") && !stderr(&run).contains("s3cret"));
}

#[test]
fn local_registry_starts_one_on_loopback() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let port_text = port.to_string();
    let data_text = data.path().display().to_string();
    let args = ["local-registry", "--port", &port_text, "--data", &data_text];

    let dry = common::plan(&args, &[]);
    assert_eq!(
        dry,
        [
            vec![format!("# in the background, its output in {data_text}/registry.log:")],
            vec!["docker-registry".to_string(), "serve".into(), format!("{data_text}/config.yml")]
        ]
    );

    let output = common::xtask(&args, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let out = stdout(&output);
    let pid: i32 =
        out.split("(pid ").nth(1).and_then(|rest| rest.split(';').next()).unwrap().parse().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let still_there = xtask::registry_server::answers(addr);
    let again = common::xtask(&args, &[]);
    let stop = [&args[..], &["--stop"]].concat();
    let stopped = common::xtask(&stop, &[]);
    if xtask::registry_server::answers(addr) {
        // SAFETY: stopping the registry this test started, when --stop did not.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    assert!(still_there, "the registry outlives the task that started it");
    assert!(
        out.contains(&format!("Stop it with `cargo xtask local-registry --stop --port {port}`")),
        "{out}"
    );
    assert!(stdout(&again).contains("already running"), "{}", stdout(&again));
    assert!(stopped.status.success(), "{}", stderr(&stopped));
    assert!(stderr(&stopped).contains(&format!("+ kill {pid}")), "{}", stderr(&stopped));
    assert!(stdout(&stopped).contains(&format!("Stopped the registry at {addr}")), "{}", stdout(&stopped));
    let nothing = common::xtask(&stop, &[]);
    assert!(stdout(&nothing).contains("nothing to stop"), "{}", stdout(&nothing));
}

/// The benchmark's quick settings run to the end and print their tables (the full benchmark
/// takes minutes; its measurements are for people, but it must not rot).
#[test]
fn the_benchmark_runs() {
    let output = common::xtask(
        &[
            "bench-thirdparty",
            "--only",
            "memory",
            "--only",
            "startup",
            "--memory-layer-mib",
            "8",
            "--runs",
            "1",
        ],
        &[],
    );
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    assert!(out.contains("copied it in") && out.contains("peak RSS"), "{out}");
    let ours = out
        .lines()
        .find(|l| l.contains("| cargo xtask thirdparty --tries 1 |"))
        .unwrap_or_else(|| panic!("{out}"));
    let cpu_ms: f64 = ours.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(cpu_ms > 0.0, "{ours}");
}
