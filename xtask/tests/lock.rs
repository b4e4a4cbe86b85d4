//! `thirdparty.lock` and the artifacts that travel with an image, against real registries
//! (Debian's `docker-registry` 2.8, which has no referrers API: the OCI fallback tags are what is
//! exercised), fixtures pushed and results read with skopeo.

mod common;

use common::vendoring::Vendoring;
use common::{stderr, stdout};
use xtask_testbed::fault_proxy::FaultProxy;
use xtask_testbed::{Fixture, FixtureSpec, TestRegistry, sha256_digest, skopeo_raw};

fn push(registry: &TestRegistry, fixture: &Fixture, repository: &str, tag: &str) {
    fixture.push(&registry.host(), repository, tag).unwrap();
}

fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}{suffix}", digest.replacen(':', "-", 1))
}

fn ok(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}\n{}", stdout(output), stderr(output));
    stdout(output)
}

/// An index signed on itself and on one of its platforms, with an SBOM attached through the
/// OCI referrers fallback tag: all of it arrives with identical digests, and the lock records it.
#[test]
fn signatures_and_referrers_travel_with_their_image() {
    let setup = Vendoring::new();
    let image = Fixture::generate(&FixtureSpec::small(60)).unwrap();
    push(&setup.source, &image, "signed/app", "1");
    let child = image.children()[0].clone();
    let index_signature = Fixture::signature(&image.digest, 1).unwrap();
    let child_signature = Fixture::signature(&child, 2).unwrap();
    let sbom = Fixture::referrers(&image.digest, image.manifest_size(&image.digest), 3).unwrap();
    push(&setup.source, &index_signature, "signed/app", &cosign_tag(&image.digest, ".sig"));
    push(&setup.source, &child_signature, "signed/app", &cosign_tag(&child, ".sig"));
    sbom.push_raw(setup.source.addr, "signed/app", Some(&cosign_tag(&image.digest, ""))).unwrap();
    setup.list(&["signed/app: 1"]);

    let out = ok(&setup.run(&[]));
    assert!(out.contains("3 signature(s)/artifact(s)"), "{out}");
    let expected = [
        ("signed/app:1".to_string(), &image.digest),
        (format!("signed/app:{}", cosign_tag(&image.digest, ".sig")), &index_signature.digest),
        (format!("signed/app:{}", cosign_tag(&child, ".sig")), &child_signature.digest),
        (format!("signed/app:{}", cosign_tag(&image.digest, "")), &sbom.digest),
    ];
    for (path, digest) in &expected {
        assert_eq!(setup.at_destination(&setup.destination, path).as_ref(), Some(*digest), "{path}");
    }
    // The SBOM the referrers index lists came too, byte for byte.
    let artifact = sbom.children()[0].clone();
    let reference = format!("{}/mirror/thirdparty/signed/app@{artifact}", setup.destination.host());
    assert_eq!(sha256_digest(&skopeo_raw(&reference).unwrap()), artifact);

    let locked = setup.locked();
    let entry = &locked["tag"][setup.key("signed/app:1").as_str()];
    let artifacts: Vec<(String, String)> = entry["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["tag"].as_str().unwrap().to_string(), a["digest"].as_str().unwrap().to_string()))
        .collect();
    let mut wanted: Vec<(String, String)> = expected[1..]
        .iter()
        .map(|(path, digest)| (path.trim_start_matches("signed/app:").to_string(), digest.to_string()))
        .collect();
    wanted.sort();
    assert_eq!(artifacts, wanted, "{}", setup.lock());

    // `--no-referrers` copies the image alone.
    let bare = TestRegistry::start().unwrap();
    ok(&setup.run_into(&bare, &["--no-referrers"]));
    assert_eq!(setup.at_destination(&bare, "signed/app:1").as_ref(), Some(&image.digest));
    assert_eq!(setup.at_destination(&bare, &expected[1].0), None);

    // `--locked` reproduces the lock exactly, artifacts included, into yet another destination.
    let lock = setup.lock();
    let again = TestRegistry::start().unwrap();
    ok(&setup.run_into(&again, &["--locked"]));
    for (path, digest) in &expected {
        assert_eq!(setup.at_destination(&again, path).as_ref(), Some(*digest), "{path}");
    }
    assert_eq!(setup.lock(), lock);
}

/// A tag that moved upstream: a plain run and `--locked` keep the locked digest; `--check` says
/// upstream moved; `--update` copies the new one and says so as `old → new`, with platforms.
#[test]
fn a_tag_that_moved_upstream_stays_locked_until_update() {
    let setup = Vendoring::new();
    let first = Fixture::generate(&FixtureSpec::small(70)).unwrap();
    push(&setup.source, &first, "moving/app", "1");
    setup.list(&["moving/app: 1"]);
    ok(&setup.run(&[]));
    let seen =
        setup.locked()["tag"][setup.key("moving/app:1").as_str()]["first_seen"].as_str().unwrap().to_string();

    let moved_spec = FixtureSpec {
        platforms: vec![("linux", "amd64"), ("linux", "arm64"), ("linux", "s390x")],
        ..FixtureSpec::small(71)
    };
    let moved = Fixture::generate(&moved_spec).unwrap();
    push(&setup.source, &moved, "moving/app", "1");

    for mode in [&[][..], &["--locked"][..]] {
        let out = ok(&setup.run(mode));
        assert!(
            out.lines().any(|l| l.starts_with("up to date") && l.contains(&first.digest[..19])),
            "{mode:?}: {out}"
        );
        assert_eq!(setup.at_destination(&setup.destination, "moving/app:1").as_ref(), Some(&first.digest));
    }

    let check = setup.run(&["--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains("upstream moved"), "{}", stdout(&check));

    let out = ok(&setup.run(&["--update", &format!("{}/moving/app", setup.source.host())]));
    let expected = format!(
        "    Updating {} {} → {} (linux/amd64 linux/arm64 unknown/unknown → linux/amd64 linux/arm64 linux/s390x unknown/unknown)",
        setup.key("moving/app:1"),
        &first.digest[..19],
        &moved.digest[..19]
    );
    assert!(out.lines().any(|l| l == expected), "{expected}\n{out}");
    assert_eq!(setup.at_destination(&setup.destination, "moving/app:1").as_ref(), Some(&moved.digest));
    let entry = setup.locked()["tag"][setup.key("moving/app:1").as_str()].clone();
    assert_eq!(entry["digest"].as_str(), Some(moved.digest.as_str()));
    assert!(entry["first_seen"].as_str().unwrap() >= seen.as_str());
    ok(&setup.run(&["--check"]));
}

/// Nothing moved: `--update` and a plain run leave the lock byte for byte, first-seen times too.
#[test]
fn a_lock_is_left_unchanged_when_nothing_moved() {
    let setup = Vendoring::new();
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(80)).unwrap(), "still/a", "1");
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(81)).unwrap(), "still/b", "2");
    setup.list(&["still/a: 1", "still/b: 2"]);
    ok(&setup.run(&[]));
    let lock = setup.lock();
    let modified = std::fs::metadata(setup.dir.path().join("thirdparty.lock")).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let before = setup.source.requests().len();
    let out = ok(&setup.run(&["--update"]));
    assert!(!out.contains("Updating") && !out.contains("Adding"), "{out}");
    // Re-resolving a tag that did not move spends no pull: HEADs, no manifest GET.
    let pulls: Vec<_> = setup
        .source
        .requests()
        .into_iter()
        .skip(before)
        .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .collect();
    assert_eq!(pulls, [], "--update read manifests that did not move");
    ok(&setup.run(&[]));
    assert_eq!(setup.lock(), lock);
    let after = std::fs::metadata(setup.dir.path().join("thirdparty.lock")).unwrap().modified().unwrap();
    assert_eq!(after, modified, "not even rewritten");
}

/// A digest the lock names that is gone upstream is an error naming it; a tag the lock lacks is
/// an error under `--locked` saying to run `--update`.
#[test]
fn locked_digests_gone_upstream_and_tags_the_lock_lacks_are_errors() {
    let setup = Vendoring::new();
    let old = Fixture::generate(&FixtureSpec::small(90)).unwrap();
    push(&setup.source, &old, "gone/app", "1");
    setup.list(&["gone/app: 1"]);
    ok(&setup.run(&[]));
    // Upstream replaces the tag and deletes the old image.
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(91)).unwrap(), "gone/app", "1");
    let status = std::process::Command::new("skopeo")
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{}/gone/app@{}", setup.source.host(), old.digest))
        .status()
        .unwrap();
    assert!(status.success());

    let fresh = TestRegistry::start().unwrap();
    let run = setup.run_into(&fresh, &["--locked"]);
    assert_eq!(run.status.code(), Some(1));
    let out = stdout(&run);
    let failed = out.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        failed.contains(&old.digest) && failed.contains("is gone from") && failed.contains("--update"),
        "{failed}"
    );

    setup.list(&["gone/app: 1", "gone/other: 2"]);
    let run = setup.run(&["--locked"]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(err.contains(&format!("thirdparty.lock lacks {}", setup.key("gone/other:2"))), "{err}");
    assert!(err.contains("cargo xtask thirdparty --update"), "{err}");
}

/// `--check` compares upstream, lock and destination, naming each drift.
#[test]
fn check_names_every_drift_between_upstream_lock_and_destination() {
    let setup = Vendoring::new();
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(100)).unwrap(), "three/a", "1");
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(101)).unwrap(), "three/b", "1");
    setup.list(&["three/a: 1", "three/b: 1"]);
    ok(&setup.run(&[]));
    let out = ok(&setup.run(&["--check"]));
    assert!(out.contains("2 tags: upstream, thirdparty.lock and the destination agree"), "{out}");

    // A destination that lacks everything, a tag the lock lacks, a lock entry the list dropped.
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(102)).unwrap(), "three/c", "1");
    setup.list(&["three/a: 1", "three/c: 1"]);
    let empty = TestRegistry::start().unwrap();
    let check = setup.run_into(&empty, &["--check"]);
    assert_eq!(check.status.code(), Some(1));
    let out = stdout(&check);
    let drift = |tag: &str, what: &str| {
        out.lines().any(|l| l.starts_with("drift") && l.contains(&setup.key(tag)) && l.contains(what))
    };
    assert!(drift("three/a:1", "destination differs"), "{out}");
    assert!(drift("three/a:1", "destination missing") || out.contains("destination missing"), "{out}");
    assert!(drift("three/c:1", "not in the lock"), "{out}");
    assert!(drift("three/b:1", "in the lock but not in the list"), "{out}");
    assert!(stderr(&check).contains("3 drift(s)"), "{}", stderr(&check));
}

/// The dry run of each mode says what it would do and changes nothing: no write at the
/// destination, no lock written.
#[test]
fn the_dry_run_of_each_mode_changes_nothing() {
    let setup = Vendoring::new();
    push(&setup.source, &Fixture::generate(&FixtureSpec::small(110)).unwrap(), "dry/app", "1");
    setup.list(&["dry/app: 1"]);
    let key = setup.key("dry/app:1");

    // No lock yet: a plain dry run and `--update` would add the tag; `--locked` refuses.
    for mode in [&["--dry-run"][..], &["--dry-run", "--update"][..]] {
        let out = ok(&setup.run(mode));
        assert!(out.contains(&format!("      Adding {key} sha256:")), "{mode:?}: {out}");
        assert!(out.contains("would copy") && out.contains("(dry run: not written)"), "{mode:?}: {out}");
    }
    let locked = setup.run(&["--dry-run", "--locked"]);
    assert_eq!(locked.status.code(), Some(1));
    assert!(stderr(&locked).contains("run `cargo xtask thirdparty --update`"), "{}", stderr(&locked));
    let check = setup.run(&["--dry-run", "--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(stdout(&check).contains("not in the lock"), "{}", stdout(&check));
    assert!(!setup.dir.path().join("thirdparty.lock").exists());

    // With a lock: `--locked` would copy the locked digest.
    ok(&setup.run(&[]));
    let fresh = TestRegistry::start().unwrap();
    let out = ok(&setup.run_into(&fresh, &["--dry-run", "--locked"]));
    assert!(out.contains(&format!("would copy  {key} -> ")), "{out}");
    assert!(
        fresh.requests().iter().all(|r| r.method == "HEAD" || r.method == "GET"),
        "{:#?}",
        fresh.requests()
    );
}

/// A source with the OCI referrers API lists an SBOM for the image. Debian's registry has no
/// such API, so the proxy in front of it plays one (a small fake: nothing real is at hand). The
/// destination, a real registry without the API, gets the SBOM by digest and the fallback tag
/// listing it; the lock records the referrer with its subject, and `--locked` reproduces it.
#[test]
fn referrers_from_the_api_land_under_the_destination_fallback_tag() {
    let setup = Vendoring::new();
    let image = Fixture::generate(&FixtureSpec::small(120)).unwrap();
    push(&setup.source, &image, "api/app", "1");
    let sbom = Fixture::referrers(&image.digest, image.manifest_size(&image.digest), 5).unwrap();
    // At the source the SBOM is reachable by digest only: no fallback tag, the API lists it.
    sbom.push_raw(setup.source.addr, "api/app", None).unwrap();
    let artifact = sbom.children()[0].clone();
    let proxy = FaultProxy::start(setup.source.addr, Vec::new());
    proxy.serve_referrers(&image.digest, std::fs::read(sbom.blob_path(&sbom.digest)).unwrap());
    setup.list_from(&proxy.host(), &["api/app: 1"]);

    let out = ok(&setup.run(&[]));
    assert!(out.contains("1 signature(s)/artifact(s)"), "{out}");
    let by_digest = format!("api/app@{artifact}");
    assert_eq!(setup.at_destination(&setup.destination, &by_digest).as_ref(), Some(&artifact));
    let fallback = |destination: &TestRegistry| -> Vec<String> {
        let reference =
            format!("{}/mirror/thirdparty/api/app:{}", destination.host(), cosign_tag(&image.digest, ""));
        let index: serde_json::Value = serde_json::from_slice(&skopeo_raw(&reference).unwrap()).unwrap();
        index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(fallback(&setup.destination), std::slice::from_ref(&artifact));

    let locked = setup.locked();
    let entry = &locked["tag"][format!("{}/api/app:1", proxy.host()).as_str()];
    let recorded = &entry["artifacts"][0];
    assert_eq!(recorded["digest"].as_str(), Some(artifact.as_str()), "{}", setup.lock());
    assert_eq!(recorded["subject"].as_str(), Some(image.digest.as_str()), "{}", setup.lock());
    assert_eq!(recorded["artifact_type"].as_str(), Some("application/spdx+json"), "{}", setup.lock());
    ok(&setup.run(&["--check"]));

    let again = TestRegistry::start().unwrap();
    ok(&setup.run_into(&again, &["--locked"]));
    assert_eq!(setup.at_destination(&again, &by_digest).as_ref(), Some(&artifact));
    assert_eq!(fallback(&again), [artifact]);
}

/// A lock entry is written only for what was copied: a run whose every source is unreachable
/// writes no lock at all, and a tag whose blobs cannot be copied stays out of the lock (or keeps
/// its old entry) while the others are locked.
#[test]
fn nothing_is_locked_that_was_not_copied() {
    use xtask_testbed::fault_proxy::{Fault, Rule, Schedule};
    let setup = Vendoring::new();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    setup.list_from(&unused.to_string(), &["gone/app: 1"]);
    let output = setup.run(&["--tries", "1"]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(!setup.dir.path().join("thirdparty.lock").exists(), "a lock of nothing: {}", setup.lock());

    let (good, broken) = (
        Fixture::generate(&FixtureSpec::small(90)).unwrap(),
        Fixture::generate(&FixtureSpec::small(91)).unwrap(),
    );
    push(&setup.source, &good, "good/app", "1");
    push(&setup.source, &broken, "broken/app", "1");
    // Every blob of broken/app comes back corrupt: it resolves, and its copy fails.
    let proxy = FaultProxy::start(
        setup.source.addr,
        vec![Rule::new(Some("GET"), "/broken/app/blobs/", Fault::FlipByte, Schedule::Always)],
    );
    setup.list_from(&proxy.host(), &["good/app: 1", "broken/app: 1"]);
    let output = setup.run(&["--tries", "2"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(out.contains("FAILED      ") && out.contains("broken/app"), "{out}");
    let locked = setup.locked();
    let tags = locked["tag"].as_table().unwrap();
    assert!(tags.contains_key(&format!("{}/good/app:1", proxy.host())), "{}", setup.lock());
    assert!(!tags.contains_key(&format!("{}/broken/app:1", proxy.host())), "{}", setup.lock());
}

/// BuildKit 0.32 stores each platform's attestations as an OCI artifact in the index, with the
/// platform manifest as its `subject`. Distribution 2.8 has no referrers API, so the copy alone
/// would leave them listed as nobody's referrer: each is merged into its subject's fallback tag
/// (where a referrer attached by tag upstream, and one the destination had already, stay
/// listed), found there by `oras discover`, and recorded in the lock as the API's referrers are.
/// A lock written before this (without those records) still passes `--locked` and `--check`.
#[test]
fn attestations_with_a_subject_are_listed_as_referrers_where_they_land() {
    use xtask_testbed::buildkit::{ATTESTATION_ARTIFACT, BuildkitImage, Provenance, SLSA_V1, Storage};
    use xtask_testbed::oras_referrers;
    let setup = Vendoring::new();
    let provenance = Provenance {
        predicate_type: SLSA_V1.into(),
        builder_id: "https://ci.example/1".into(),
        args: vec![("A".into(), "1".into())],
        base: ("pkg:docker/busybox@1.36".into(), "ab".repeat(32)),
    };
    let image = Fixture::buildkit(&BuildkitImage {
        seed: 130,
        platforms: vec![
            (("linux", "amd64"), Some(provenance.clone())),
            (("linux", "arm64"), Some(provenance)),
        ],
        storage: Storage::Artifact,
    })
    .unwrap();
    image.push_raw(setup.source.addr, "att/app", Some("1")).unwrap();
    let children = image.children();
    let (amd64, arm64, attestations) = (&children[0], &children[1], &children[2..]);
    // Upstream, an SBOM attached to the amd64 manifest by its fallback tag.
    let sbom = Fixture::referrers(amd64, image.manifest_size(amd64), 7).unwrap();
    sbom.push_raw(setup.source.addr, "att/app", Some(&cosign_tag(amd64, ""))).unwrap();
    let sbom_artifact = sbom.children()[0].clone();
    // At the destination, something attached to the arm64 manifest already.
    let there = Fixture::referrers(arm64, image.manifest_size(arm64), 8).unwrap();
    there
        .push_raw(setup.destination.addr, "mirror/thirdparty/att/app", Some(&cosign_tag(arm64, "")))
        .unwrap();
    let there_artifact = there.children()[0].clone();
    setup.list(&["att/app: 1"]);

    ok(&setup.run(&[]));
    let listed = |destination: &TestRegistry, subject: &str| {
        oras_referrers(&format!("{}/mirror/thirdparty/att/app@{subject}", destination.host())).unwrap()
    };
    let attestation = |n: usize| (attestations[n].clone(), ATTESTATION_ARTIFACT.to_string());
    let sorted = |mut list: Vec<(String, String)>| {
        list.sort();
        list
    };
    let amd64_wanted = sorted(vec![attestation(0), (sbom_artifact.clone(), "application/spdx+json".into())]);
    let arm64_wanted = sorted(vec![attestation(1), (there_artifact.clone(), "application/spdx+json".into())]);
    assert_eq!(listed(&setup.destination, amd64), amd64_wanted);
    assert_eq!(listed(&setup.destination, arm64), arm64_wanted);

    // The lock records each attestation with its subject and artifactType.
    let records = subject_records(&setup);
    let mut wanted = vec![
        (attestations[0].clone(), amd64.clone(), ATTESTATION_ARTIFACT.to_string()),
        (attestations[1].clone(), arm64.clone(), ATTESTATION_ARTIFACT.to_string()),
    ];
    wanted.sort();
    assert_eq!(records, wanted, "{}", setup.lock());

    // Again: nothing to write; the tags stay as they are.
    let tag_digest = |destination: &TestRegistry, subject: &str| {
        setup.at_destination(destination, &format!("att/app:{}", cosign_tag(subject, "")))
    };
    let before = (tag_digest(&setup.destination, amd64), tag_digest(&setup.destination, arm64));
    ok(&setup.run(&[]));
    assert_eq!((tag_digest(&setup.destination, amd64), tag_digest(&setup.destination, arm64)), before);
    ok(&setup.run(&["--check"]));

    // A destination that lost its fallback tag's entries: --check says so.
    let bare = TestRegistry::start().unwrap();
    image.push_raw(bare.addr, "mirror/thirdparty/att/app", Some("1")).unwrap();
    let output = setup.run_into(&bare, &["--check"]);
    assert!(!output.status.success());
    assert!(stdout(&output).contains("does not list"), "{}", stdout(&output));

    // A lock written before attestations were recorded: --locked lists what it knows (the SBOM
    // the source's tag lists), --check passes.
    let old_lock: String = {
        let mut value = setup.locked();
        let key = setup.key("att/app:1");
        let entry = value["tag"][key.as_str()].as_table_mut().unwrap();
        assert!(entry.remove("entries_read").is_some(), "the lock says the entries were read");
        let artifacts = entry["artifacts"].as_array_mut().unwrap();
        artifacts.retain(|a| !attestations.iter().any(|d| a["digest"].as_str() == Some(d.as_str())));
        toml::to_string(&value).unwrap()
    };
    std::fs::write(setup.dir.path().join("thirdparty.lock"), old_lock).unwrap();
    let again = TestRegistry::start().unwrap();
    ok(&setup.run_into(&again, &["--locked"]));
    assert_eq!(listed(&again, amd64), vec![(sbom_artifact, "application/spdx+json".to_string())]);
    ok(&setup.run_into(&again, &["--check"]));
    ok(&setup.run(&["--check"]));
    // `--update` of the unchanged tag reads its attestation entries once more and records them.
    ok(&setup.run(&["--update"]));
    assert_eq!(subject_records(&setup), wanted, "{}", setup.lock());

    // A destination with the referrers API (played by the harness) lists them by itself: no
    // fallback tag is written there.
    let with_api = TestRegistry::start().unwrap();
    let proxy = FaultProxy::start(with_api.addr, Vec::new());
    proxy.serve_referrers("sha256:none", br#"{"schemaVersion":2,"manifests":[]}"#.to_vec());
    let list = setup.dir.path().join("thirdparty.txt").display().to_string();
    ok(&setup.run_list(&list, &format!("{}/mirror", proxy.host()), &[], &[]));
    assert_eq!(setup.at_destination(&with_api, "att/app:1").as_ref(), Some(&image.digest));
    assert_eq!(tag_digest(&with_api, amd64), None);
    assert_eq!(tag_digest(&with_api, arm64), None);
}

/// The lock's records of referrers with a subject, for `att/app:1`: (digest, subject,
/// artifactType), sorted as the lock keeps them.
fn subject_records(setup: &Vendoring) -> Vec<(String, String, String)> {
    let locked = setup.locked();
    let entry = &locked["tag"][setup.key("att/app:1").as_str()];
    entry["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a.get("subject").is_some())
        .map(|a| {
            let field = |name: &str| a[name].as_str().unwrap_or_default().to_string();
            (field("digest"), field("subject"), field("artifact_type"))
        })
        .collect()
}

/// A fallback tag never lists what is not there: while a referrer of the image cannot be
/// copied, no fallback tag of it is written; once it is copied, they are.
#[test]
fn nothing_is_listed_as_a_referrer_before_it_is_there() {
    use xtask_testbed::buildkit::{BuildkitImage, Provenance, SLSA_V1, Storage};
    use xtask_testbed::fault_proxy::{Fault, Rule, Schedule};
    let setup = Vendoring::new();
    let provenance = Provenance {
        predicate_type: SLSA_V1.into(),
        builder_id: String::new(),
        args: Vec::new(),
        base: ("pkg:docker/busybox@1.36".into(), "cd".repeat(32)),
    };
    let image = Fixture::buildkit(&BuildkitImage {
        seed: 140,
        platforms: vec![(("linux", "amd64"), Some(provenance))],
        storage: Storage::Artifact,
    })
    .unwrap();
    image.push_raw(setup.source.addr, "att/app", Some("1")).unwrap();
    let amd64 = image.children()[0].clone();
    let sbom = Fixture::referrers(&amd64, image.manifest_size(&amd64), 9).unwrap();
    sbom.push_raw(setup.source.addr, "att/app", Some(&cosign_tag(&amd64, ""))).unwrap();
    // The SBOM the source's fallback tag lists cannot be read: its copy fails.
    let path: &'static str = Box::leak(format!("/manifests/{}", sbom.children()[0]).into_boxed_str());
    let proxy = FaultProxy::start(
        setup.source.addr,
        vec![Rule::new(Some("GET"), path, Fault::Status(500), Schedule::Always)],
    );
    setup.list_from(&proxy.host(), &["att/app: 1"]);
    let output = setup.run(&["--tries", "1"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let fallback = format!("att/app:{}", cosign_tag(&amd64, ""));
    assert_eq!(setup.at_destination(&setup.destination, &fallback), None, "listed before it is there");

    let healthy = FaultProxy::start(setup.source.addr, Vec::new());
    setup.list_from(&healthy.host(), &["att/app: 1"]);
    // The same source under another host: the lock's key changes, so lock it anew.
    ok(&setup.run(&[]));
    let listed = xtask_testbed::oras_referrers(&format!(
        "{}/mirror/thirdparty/att/app@{amd64}",
        setup.destination.host()
    ))
    .unwrap();
    assert_eq!(listed.len(), 2, "the attestation and the SBOM: {listed:?}");
}

/// The reads (HEAD, GET) the registry had of `repository`'s tag `tag` (not by digest), after
/// its first `since` requests.
fn tag_reads(registry: &TestRegistry, since: usize, repository: &str, tag: &str) -> Vec<String> {
    let path = format!("/v2/{repository}/manifests/{tag}");
    registry
        .requests()
        .into_iter()
        .skip(since)
        .filter(|r| r.path == path && (r.method == "HEAD" || r.method == "GET"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// A pinned tag is vendored as its pin, never as what the tag points at upstream: the tag
/// moved before the first run, and no run asks for it. The dry run names the pin as the source,
/// the lock records the pin under the tag's key, `--update` keeps it there, and the plain tag
/// beside it is vendored as ever.
#[test]
fn a_pinned_tag_vendors_its_pin_after_the_tag_moved_upstream() {
    let setup = Vendoring::new();
    let (src, dst) = (setup.source.host(), setup.docker_repo());
    let pinned = Fixture::generate(&FixtureSpec::small(150)).unwrap();
    let moved = Fixture::generate(&FixtureSpec::small(151)).unwrap();
    let plain = Fixture::generate(&FixtureSpec::small(152)).unwrap();
    push(&setup.source, &pinned, "pin/app", "1");
    push(&setup.source, &moved, "pin/app", "1");
    push(&setup.source, &plain, "pin/app", "2");
    let pushed = setup.source.requests().len();
    setup.list(&[&format!("pin/app: 1@{}  2", pinned.digest)]);
    let key = setup.key("pin/app:1");

    let out = ok(&setup.run(&["--dry-run"]));
    let copy = format!("would copy  {src}/pin/app@{} -> {dst}/thirdparty/pin/app:1 ", pinned.digest);
    assert!(out.lines().any(|l| l.starts_with(&copy)), "{copy}\n{out}");
    assert!(out.contains(&format!("      Adding {key} {}", &pinned.digest[..19])), "{out}");
    assert!(out.contains(&format!("would copy  {src}/pin/app:2 -> {dst}/thirdparty/pin/app:2 ")), "{out}");

    let out = ok(&setup.run(&[]));
    let copied = format!("copied      {src}/pin/app@{} -> {dst}/thirdparty/pin/app:1 ", pinned.digest);
    assert!(out.lines().any(|l| l.starts_with(&copied)), "{copied}\n{out}");
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&pinned.digest));
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:2").as_ref(), Some(&plain.digest));
    let locked = setup.locked();
    assert_eq!(
        locked["tag"][key.as_str()]["digest"].as_str(),
        Some(pinned.digest.as_str()),
        "{}",
        setup.lock()
    );
    assert_eq!(
        locked["tag"][setup.key("pin/app:2").as_str()]["digest"].as_str(),
        Some(plain.digest.as_str()),
        "{}",
        setup.lock()
    );

    // Where the tag points upstream is no drift of a pinned tag; `--update` records the pin again.
    ok(&setup.run(&["--check"]));
    let lock = setup.lock();
    for update in [&["--update"][..], &["--update", &format!("{src}/pin/app")][..]] {
        let out = ok(&setup.run(update));
        assert!(!out.contains("Updating") && !out.contains("Adding"), "{update:?}: {out}");
        assert_eq!(setup.lock(), lock, "{update:?}");
        assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&pinned.digest));
    }
    let fresh = TestRegistry::start().unwrap();
    ok(&setup.run_into(&fresh, &["--locked"]));
    assert_eq!(setup.at_destination(&fresh, "pin/app:1").as_ref(), Some(&pinned.digest));
    assert_eq!(
        tag_reads(&setup.source, pushed, "pin/app", "1"),
        Vec::<String>::new(),
        "the pinned tag was asked for"
    );
    assert!(
        !tag_reads(&setup.source, pushed, "pin/app", "2").is_empty(),
        "the plain tag is resolved by its tag"
    );

    // The pin deleted upstream: `--check` says so, and `--locked` fails the tag saying what to do.
    let status = std::process::Command::new("skopeo")
        .args(["delete", "--tls-verify=false"])
        .arg(format!("docker://{src}/pin/app@{}", pinned.digest))
        .status()
        .unwrap();
    assert!(status.success());
    let check = setup.run(&["--check"]);
    assert_eq!(check.status.code(), Some(1));
    let gone = format!("the pinned digest {} is missing upstream", &pinned.digest[..19]);
    assert!(stdout(&check).contains(&gone), "{gone}\n{}", stdout(&check));
    let run = setup.run_into(&TestRegistry::start().unwrap(), &["--locked"]);
    assert_eq!(run.status.code(), Some(1));
    let out = stdout(&run);
    let failed = out.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{out}"));
    let said =
        format!("{}, which the list pins, is gone from {src}/pin/app upstream: pin a digest", pinned.digest);
    assert!(failed.contains(&said), "{said}\n{failed}");
}

/// A lock whose digest for a pinned tag is not the pin: `--locked` and `--check` refuse it,
/// naming both digests and what to do, and copy nothing; a plain run locks and copies the pin,
/// and `--update` of the image records a changed pin, not the tag upstream. A pin that is not
/// upstream fails the tag, and the lock's old entry is neither copied nor lost.
#[test]
fn a_lock_that_disagrees_with_a_pin_is_an_error_until_the_lock_takes_the_pin() {
    let setup = Vendoring::new();
    let src = setup.source.host();
    let first = Fixture::generate(&FixtureSpec::small(160)).unwrap();
    let second = Fixture::generate(&FixtureSpec::small(161)).unwrap();
    push(&setup.source, &first, "pin/app", "1");
    // The lock of the plain tag, as before any pin: `first`.
    setup.list(&["pin/app: 1"]);
    ok(&setup.run(&[]));
    push(&setup.source, &second, "pin/app", "1");
    setup.list(&[&format!("pin/app: 1@{}", second.digest)]);
    let key = setup.key("pin/app:1");
    let update = format!("cargo xtask thirdparty --update {src}/pin/app");

    let before = setup.destination.requests().len();
    let locked = setup.run(&["--locked"]);
    assert_eq!(locked.status.code(), Some(1), "{}", stdout(&locked));
    let err = stderr(&locked);
    assert!(
        err.contains(&format!(
            "{key}: the list pins {}, thirdparty.lock has {}",
            second.digest, first.digest
        )),
        "{err}"
    );
    assert!(err.contains(&update) && err.contains("or change the pin"), "{err}");
    assert_eq!(setup.destination.requests().len(), before, "nothing was asked of the destination");
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&first.digest));

    let check = setup.run(&["--check"]);
    assert_eq!(check.status.code(), Some(1));
    let out = stdout(&check);
    let drift =
        out.lines().find(|l| l.starts_with("drift") && l.contains(&key)).unwrap_or_else(|| panic!("{out}"));
    assert!(
        drift.contains(&second.digest) && drift.contains(&first.digest) && drift.contains(&update),
        "{drift}"
    );

    // A plain run makes the lock agree with the pin, and copies it.
    let out = ok(&setup.run(&[]));
    let change = format!("    Updating {key} {} → {}", &first.digest[..19], &second.digest[..19]);
    assert!(out.lines().any(|l| l.starts_with(&change)), "{change}\n{out}");
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&second.digest));
    assert_eq!(setup.locked()["tag"][key.as_str()]["digest"].as_str(), Some(second.digest.as_str()));
    ok(&setup.run(&["--locked"]));
    ok(&setup.run(&["--check"]));

    // Pinned back to `first` while the tag points at `second`: `--update` records the pin.
    setup.list(&[&format!("pin/app: 1@{}", first.digest)]);
    ok(&setup.run(&["--update", &format!("{src}/pin/app")]));
    assert_eq!(setup.locked()["tag"][key.as_str()]["digest"].as_str(), Some(first.digest.as_str()));
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&first.digest));

    // A pin nothing upstream has: the tag fails; the destination keeps `first`, the lock too.
    let absent = format!("sha256:{}", "e".repeat(64));
    setup.list(&[&format!("pin/app: 1@{absent}")]);
    let lock = setup.lock();
    let run = setup.run(&["--tries", "1"]);
    assert_eq!(run.status.code(), Some(1), "{}", stdout(&run));
    let out = stdout(&run);
    let failed = out.lines().find(|l| l.starts_with("FAILED")).unwrap_or_else(|| panic!("{out}"));
    assert!(
        failed.contains(&format!("{src}/pin/app@{absent} -> "))
            && failed.contains(&format!("{absent}, which the list pins, is not in {src}/pin/app upstream")),
        "{failed}"
    );
    assert!(!out.contains("Removing") && !out.contains("Updating"), "the lock stays: {out}");
    assert_eq!(setup.at_destination(&setup.destination, "pin/app:1").as_ref(), Some(&first.digest));
    assert_eq!(setup.lock(), lock);
}
