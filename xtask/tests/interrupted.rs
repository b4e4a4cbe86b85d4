//! Interrupted and concurrent mirrors: a run killed midway leaves no tag pointing at missing
//! content and the next run completes; two runs at once both finish right.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{XTASK, stderr, stdout};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use xtask::registry::manifest::{self, ACCEPTED};
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw};

fn thirdparty(list: &std::path::Path, docker_repo: &str, config: &std::path::Path) -> Command {
    let mut command = Command::new(XTASK);
    command
        .args(["thirdparty", "--file"])
        .arg(list)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("DOCKER_REPO", docker_repo)
        .env("DOCKER_CONFIG", config)
        .stdin(Stdio::null());
    command
}

/// Whether the tag, if present, points at an index whose manifests and blobs all exist.
async fn tag_is_whole(client: &Client, tag: &Reference) -> Result<bool, String> {
    let auth = RegistryAuth::Anonymous;
    let Ok((index, _)) = client.pull_manifest_raw(tag, &auth, ACCEPTED).await else {
        return Ok(false);
    };
    let index = manifest::parse(&index).map_err(|e| e.to_string())?;
    for child in &index.children {
        let at = tag.clone_with_digest(child.digest.clone());
        let (bytes, _) = client
            .pull_manifest_raw(&at, &auth, ACCEPTED)
            .await
            .map_err(|e| format!("the tag lists {} but it is missing: {e}", child.digest))?;
        for blob in manifest::parse(&bytes).map_err(|e| e.to_string())?.blobs {
            if !client.blob_exists(tag, &blob.digest).await.map_err(|e| e.to_string())? {
                return Err(format!("manifest {} refers to missing blob {}", child.digest, blob.digest));
            }
        }
    }
    Ok(true)
}

#[test]
fn a_killed_run_leaves_no_broken_tag_and_the_next_run_completes() {
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start().unwrap();
    let spec = FixtureSpec { layers: 3, layer_size: 12 << 20, ..FixtureSpec::small(700) };
    let fixture = Fixture::generate(&spec).unwrap();
    fixture.push(&source.host(), "big/image", "1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, format!("{}/big/image: 1\n", source.host())).unwrap();
    let docker_repo = format!("{}/mirror", destination.host());
    let tag: Reference = format!("{docker_repo}/thirdparty/big/image:1").parse().unwrap();

    // A second client watches the tag the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let (stop, checks, tag) = (Arc::clone(&stop), Arc::clone(&checks), tag.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let client = common::oci_client_over_http();
            while !stop.load(Ordering::SeqCst) {
                runtime.block_on(tag_is_whole(&client, &tag))?;
                checks.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
    };

    // The watcher is looking before the first run starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while checks.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    let checks_before_runs = checks.load(Ordering::SeqCst);

    // Kill the first run once the destination has taken its first blob. One blob at a time,
    // so that five of the six are still to come then.
    let mut first = thirdparty(&list, &docker_repo, dir.path())
        .args(["--jobs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let taken = destination
            .requests_now()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/blobs/uploads/") && r.status == 201);
        if taken || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();

    let killed_midway = skopeo_raw(&tag.to_string()).is_err();

    let second = thirdparty(&list, &docker_repo, dir.path()).output().unwrap();
    let checks_during_runs = checks.load(Ordering::SeqCst) - checks_before_runs;
    stop.store(true, Ordering::SeqCst);
    watcher.join().unwrap().expect("the tag never pointed at missing content");
    assert!(second.status.success(), "{}\n{}", stdout(&second), stderr(&second));
    assert!(killed_midway, "the first run finished before it could be killed: make the fixture bigger");
    assert!(checks_during_runs >= 3, "the watcher barely looked: {checks_during_runs} checks");
    assert_eq!(sha256_digest(&skopeo_raw(&tag.to_string()).unwrap()), fixture.digest);
}

#[test]
fn two_runs_at_once_both_finish_right() {
    let source = TestRegistry::start().unwrap();
    let destination = TestRegistry::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut fixtures = Vec::new();
    for n in 0..4 {
        let fixture =
            Fixture::generate(&FixtureSpec { layer_size: 256 << 10, ..FixtureSpec::small(800 + n) }).unwrap();
        fixture.push(&source.host(), &format!("both/image{n}"), "1").unwrap();
        lines.push(format!("{}/both/image{n}: 1", source.host()));
        fixtures.push(fixture);
    }
    let list = dir.path().join("list.txt");
    std::fs::write(&list, lines.join("\n")).unwrap();
    let docker_repo = format!("{}/mirror", destination.host());
    let runs: Vec<_> = (0..2)
        .map(|_| {
            thirdparty(&list, &docker_repo, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        let output = run.wait_with_output().unwrap();
        assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    }
    for (n, fixture) in fixtures.iter().enumerate() {
        let raw = skopeo_raw(&format!("{docker_repo}/thirdparty/both/image{n}:1")).unwrap();
        assert_eq!(sha256_digest(&raw), fixture.digest);
    }
}
