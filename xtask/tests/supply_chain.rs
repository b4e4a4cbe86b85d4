//! What the pipeline publishes carries its provenance, its SBOMs and a signature, on a real
//! Docker Engine and offline: each platform's build records `mode=max` provenance and an SBOM
//! from the catalog's vendored generator (a stand-in, built here from the busybox base, that
//! follows BuildKit's generator protocol), both survive the merge attached to their platform,
//! and the index is signed by digest with a local cosign key; `cosign verify` accepts it, here
//! and wherever `thirdparty` copies it.

mod common;

use std::process::Command;

use common::engine::{Setup, digest, engine_or_skip, run};
use common::{stderr, stdout};

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"
sbom_generator = "docker/buildkit-syft-scanner:1.10.0"

[versions]
BUSYBOX_VERSION = "1.35"

[[image]]
name = "app"
description = "one RUN on busybox"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[cloud_builder]
name = "app"
description = "unused"
tag = "1"
"#;

const APP: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    RUN uname -m > /built-on\nCOPY file.txt /file.txt\n";

/// A stand-in for docker/buildkit-syft-scanner: BuildKit runs it with the build's root
/// filesystem at `$BUILDKIT_SCAN_SOURCE` and takes in-toto statements from
/// `$BUILDKIT_SCAN_DESTINATION/<target>.spdx.json`; this one writes a small SPDX document.
const SCANNER: &str = r#"#!/bin/sh
set -eu
name=$(basename "$BUILDKIT_SCAN_SOURCE")
files=$(find "$BUILDKIT_SCAN_SOURCE" -type f | wc -l)
arch=$(uname -m)
cat > "$BUILDKIT_SCAN_DESTINATION/$name.spdx.json" <<EOF
{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document", "subject": [],
 "predicate": {"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
  "name": "$name", "documentNamespace": "https://xtask.invalid/sbom/$name",
  "creationInfo": {"created": "2026-01-01T00:00:00Z", "creators": ["Tool: xtask-test-scanner"]},
  "packages": [{"name": "busybox", "SPDXID": "SPDXRef-busybox", "downloadLocation": "NOASSERTION",
   "comment": "$files files, scanned on $arch"}]}}
EOF
"#;

/// `docker buildx imagetools inspect <reference> --format <format>`, as JSON.
fn inspect(reference: &str, format: &str) -> serde_json::Value {
    let out = run("docker", &["buildx", "imagetools", "inspect", reference, "--format", format]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{format} of {reference}: {e}: {out}"))
}

fn cosign_verify(key: &str, reference: &str) -> std::process::Output {
    Command::new("cosign")
        .args([
            "verify",
            "--key",
            key,
            "--insecure-ignore-tlog",
            "--allow-http-registry",
            "--allow-insecure-registry",
        ])
        .arg(reference)
        .output()
        .expect("cosign is installed (.ci/engine installs it)")
}

#[test]
fn what_is_published_carries_provenance_sboms_and_a_signature() {
    if !engine_or_skip("what_is_published_carries_provenance_sboms_and_a_signature") {
        return;
    }
    let files = [
        ("app/Dockerfile", APP.to_string()),
        ("app/file.txt", "one\n".to_string()),
        ("pipeline.yaml", "steps: []\n".to_string()),
    ];
    let list = |up: &str| format!("{up}/busybox: 1.35\n{up}/docker/buildkit-syft-scanner: 1.10.0\n");
    let setup = Setup::new(CATALOG, &files, list);
    let (up, repo) = (setup.upstream.host(), setup.repo());

    // The generator, upstream for both platforms, from the busybox base.
    let scanner = setup.dir.path().join("scanner");
    std::fs::create_dir_all(&scanner).unwrap();
    std::fs::write(scanner.join("scan.sh"), SCANNER).unwrap();
    std::fs::write(
        scanner.join("Dockerfile"),
        format!("FROM {up}/busybox:1.35\nCOPY scan.sh /scan.sh\nENTRYPOINT [\"/bin/sh\", \"/scan.sh\"]\n"),
    )
    .unwrap();
    let generator = format!("{up}/docker/buildkit-syft-scanner:1.10.0");
    let build = ["buildx", "build", "--builder", "default", "--platform", "linux/amd64,linux/arm64"];
    let push = ["--provenance=false", "--tag", &generator, "--push", &scanner.display().to_string()]
        .map(String::from);
    let push: Vec<&str> = push.iter().map(String::as_str).collect();
    run("docker", &[&build[..], &push[..]].concat());

    // A key pair of the test's own, its password empty.
    let (key, public) = xtask_testbed::cosign_key_pair(&setup.dir.path().join("keys")).unwrap();
    let logs = setup.logs();
    let signing = [("SIGN_KEY", key.as_str()), ("COSIGN_PASSWORD", "")];
    let publish = || setup.xtask_ok(&["publish-all", "--logs", &logs], &signing);

    // Published: the generator vendored with the base, each platform's provenance and SBOM.
    let output = publish();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(out.contains("thirdparty: 2 tags: 2 copied"), "the generator is vendored too: {out}");
    let reference = format!("{repo}/app:1");
    let vendored = format!("{repo}/thirdparty/docker/buildkit-syft-scanner:1.10.0");
    assert!(err.contains(&format!("--attest 'type=sbom,generator={vendored}'")), "{err}");
    let base_digest = digest(&format!("{repo}/thirdparty/busybox:1.35"));
    let provenance = inspect(&reference, "{{json .Provenance}}");
    let platforms: Vec<&String> = provenance.as_object().unwrap().keys().collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"], "{provenance}");
    for (platform, attestation) in provenance.as_object().unwrap() {
        let slsa = &attestation["SLSA"];
        let args = &slsa["invocation"]["parameters"]["args"];
        assert_eq!(args["build-arg:BUSYBOX_VERSION"], "1.35", "{platform}: {slsa}");
        let materials: Vec<String> = slsa["materials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"]["sha256"].as_str().unwrap().to_string())
            .collect();
        // mode=max names the base by the digest of the platform's own manifest, or the index's.
        let base_manifests: Vec<String> =
            common::engine::platform_manifests(&format!("{repo}/thirdparty/busybox:1.35"))
                .into_iter()
                .map(|(_, d)| d.trim_start_matches("sha256:").to_string())
                .chain([base_digest.trim_start_matches("sha256:").to_string()])
                .collect();
        assert!(
            materials.iter().any(|m| base_manifests.contains(m)),
            "{platform}: {materials:?} names no base digest"
        );
        assert!(slsa["buildConfig"].is_object(), "mode=max records the build's steps: {platform}");
    }
    let sboms = inspect(&reference, "{{json .SBOM}}");
    for platform in ["linux/amd64", "linux/arm64"] {
        let spdx = &sboms[platform]["SPDX"];
        assert_eq!(spdx["creationInfo"]["creators"][0], "Tool: xtask-test-scanner", "{platform}: {sboms}");
    }

    // Signed by digest, with the test's key; cosign verify accepts it.
    let index_digest = digest(&reference);
    assert!(err.contains(&format!("cosign sign --yes --key {key} '--tlog-upload=false'")), "{err}");
    assert!(err.contains(&format!("{repo}/app@{index_digest}")), "signed by digest: {err}");
    let verified = cosign_verify(&public, &reference);
    assert!(verified.status.success(), "{}", stderr(&verified));

    // verify: the signature, and the provenance per platform, read from the attestation
    // manifests: the test engine's BuildKit (0.13) writes SLSA v0.2, with the builder's id the
    // build gave it (this host, by the name the tests give it), the build argument, and the
    // base by a digest the vendored busybox has.
    let output = setup.xtask_ok(&["verify", "app", "--insecure-ignore-tlog"], &signing);
    let out = stdout(&output);
    assert!(out.contains(&format!("app: {reference}, signature verified")), "{out}");
    let base_digests: Vec<String> =
        common::engine::platform_manifests(&format!("{repo}/thirdparty/busybox:1.35"))
            .into_iter()
            .map(|(_, d)| d)
            .chain([base_digest.clone()])
            .collect();
    for platform in ["linux/amd64", "linux/arm64"] {
        let report = out
            .split(&format!("\n  {platform}: "))
            .nth(1)
            .unwrap_or_else(|| panic!("no report for {platform}: {out}"));
        let report: Vec<&str> =
            report.lines().take_while(|line| !line.starts_with("  ") || line.starts_with("    ")).collect();
        assert_eq!(report[0], format!("built by host:{} (SLSA v0.2)", common::TEST_HOST), "{out}");
        assert!(report.contains(&"    build argument BUSYBOX_VERSION=1.35"), "{platform}: {out}");
        let bases: Vec<&&str> = report
            .iter()
            .filter(|line| line.starts_with("    from pkg:docker/") && line.contains("busybox"))
            .collect();
        assert!(
            bases.iter().any(|line| base_digests.iter().any(|d| line.ends_with(&format!(" {d}")))),
            "{platform}: the base by a digest of the vendored busybox ({base_digests:?}): {out}"
        );
    }

    // Up to date: nothing built, nothing signed again; the signature is still there.
    let output = publish();
    assert!(!stderr(&output).contains("cosign sign"), "{}", stderr(&output));
    assert!(cosign_verify(&public, &reference).status.success());

    // Rebuilt: signed again, at its new digest.
    std::fs::write(setup.path("app/file.txt"), "two\n").unwrap();
    let output = publish();
    let new_digest = digest(&reference);
    assert_ne!(new_digest, index_digest);
    assert!(stderr(&output).contains(&format!("{repo}/app@{new_digest}")), "{}", stderr(&output));
    assert!(cosign_verify(&public, &reference).status.success());

    // The signature travels with the image wherever thirdparty copies it.
    let copies = setup.dir.path().join("copies.txt");
    std::fs::write(&copies, format!("{repo}/app: 1\n")).unwrap();
    let elsewhere = format!("{}/elsewhere", setup.destination.host());
    setup.xtask_ok(&["thirdparty", "--file", &copies.display().to_string()], &[("DOCKER_REPO", &elsewhere)]);
    let copied = format!("{elsewhere}/thirdparty/local/app:1");
    assert_eq!(digest(&copied), new_digest);
    let verified = cosign_verify(&public, &copied);
    assert!(verified.status.success(), "the copy's signature: {}", stderr(&verified));
}

const CLOUD_BUILDER_CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
BUSYBOX_VERSION = "1.35"

[[image]]
name = "app"
description = "unused"
tag = "1"

[cloud_builder]
name = "cloud-builder"
description = "the image the pipeline runs in, small"
tag = "1"
build_args = ["BUSYBOX_VERSION"]
"#;

/// The image the pipeline runs in is built like the catalog's: with provenance, pushed, and
/// signed by digest with SIGN_KEY; `verify cloud-builder` checks the signature and shows its one
/// platform's provenance.
#[test]
fn the_cloud_builder_carries_provenance_and_a_signature() {
    if !engine_or_skip("the_cloud_builder_carries_provenance_and_a_signature") {
        return;
    }
    let dockerfile = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
        FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\nRUN echo built > /built\n";
    let files = [
        ("cloud-builder/Dockerfile", dockerfile.to_string()),
        ("app/Dockerfile", "FROM scratch\n".to_string()),
        ("pipeline.yaml", "steps: []\n".to_string()),
    ];
    let setup = Setup::new(CLOUD_BUILDER_CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"));
    let (key, public) = xtask_testbed::cosign_key_pair(&setup.dir.path().join("keys")).unwrap();
    let work = setup.dir.path().join("work").display().to_string();
    let signing = [("SIGN_KEY", key.as_str()), ("COSIGN_PASSWORD", ""), ("CARGO_TARGET_DIR", work.as_str())];

    let output = setup.xtask_ok(&["build-publish-cloud-builder"], &signing);
    let reference = format!("{}/cloud-builder:1", setup.repo());
    let digest = digest(&reference);
    assert!(
        stderr(&output).contains(&format!("{}/cloud-builder@{digest}", setup.repo())),
        "signed by the digest pushed: {}",
        stderr(&output)
    );
    assert!(cosign_verify(&public, &reference).status.success());

    let output = setup.xtask_ok(&["verify", "cloud-builder", "--insecure-ignore-tlog"], &signing);
    let out = stdout(&output);
    assert!(out.contains(&format!("cloud-builder: {reference}, signature verified")), "{out}");
    assert!(
        out.contains(&format!("\n  linux/amd64: built by host:{} (SLSA v0.2)\n", common::TEST_HOST)),
        "{out}"
    );
    assert!(out.contains("    build argument BUSYBOX_VERSION=1.35"), "{out}");
    assert!(!out.contains("linux/arm64"), "built for amd64 alone: {out}");
}

/// The merge (`buildx imagetools create` of each platform's index) keeps each half's
/// attestation manifest however BuildKit stored it: before 0.32 as an image manifest, since as
/// an OCI artifact whose `subject` is the platform manifest. Both are entries of the halves'
/// indexes, copied by digest, so the subject still names a platform manifest of the merged
/// index. Done with the Debian buildx of the test engine (0.13).
#[test]
fn the_merge_keeps_attestations_stored_either_way() {
    use xtask_testbed::buildkit::{BuildkitImage, Provenance, SLSA_V1, Storage};
    if !engine_or_skip("the_merge_keeps_attestations_stored_either_way") {
        return;
    }
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    for (seed, storage) in [(1, Storage::Image), (3, Storage::Artifact)] {
        let provenance = Provenance {
            predicate_type: SLSA_V1.into(),
            builder_id: "https://ci.example/1".into(),
            args: vec![("A".into(), "1".into())],
            base: ("pkg:docker/busybox@1.36".into(), "ab".repeat(32)),
        };
        let name = format!("merged-{seed}");
        let mut halves = Vec::new();
        for (offset, arch) in [(0, "amd64"), (1, "arm64")] {
            let half = xtask_testbed::Fixture::buildkit(&BuildkitImage {
                seed: seed + offset,
                platforms: vec![(("linux", arch), Some(provenance.clone()))],
                storage,
            })
            .unwrap();
            half.push_raw(registry.addr, &name, Some(&format!("1-{arch}"))).unwrap();
            halves.push(half);
        }
        let target = format!("{}/{name}:1", registry.host());
        let sources: Vec<String> =
            ["amd64", "arm64"].iter().map(|arch| format!("{}/{name}:1-{arch}", registry.host())).collect();
        run("docker", &["buildx", "imagetools", "create", "--tag", &target, &sources[0], &sources[1]]);
        let merged: serde_json::Value =
            serde_json::from_slice(&xtask_testbed::skopeo_raw(&target).unwrap()).unwrap();
        // Every entry of both halves, by digest: two platforms, two attestations.
        let mut entries: Vec<String> = merged["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap().into())
            .collect();
        let mut wanted: Vec<String> = halves.iter().flat_map(|half| half.children()).collect();
        entries.sort();
        wanted.sort();
        assert_eq!(entries, wanted, "{storage:?}: {merged}");
        // Each attestation entry still says which platform manifest it belongs to (the older
        // layout has nothing else to say it), and that manifest is in the merge; an artifact's
        // subject, read back from the registry, is that same manifest.
        for half in &halves {
            let children = half.children();
            let entry = merged["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["digest"].as_str() == Some(children[1].as_str()))
                .unwrap();
            assert_eq!(
                entry["annotations"]["vnd.docker.reference.digest"].as_str(),
                Some(children[0].as_str())
            );
            assert_eq!(
                entry["annotations"]["vnd.docker.reference.type"].as_str(),
                Some("attestation-manifest")
            );
            let at = format!("{}/{name}@{}", registry.host(), children[1]);
            let attestation: serde_json::Value =
                serde_json::from_slice(&xtask_testbed::skopeo_raw(&at).unwrap()).unwrap();
            let subject = attestation["subject"]["digest"].as_str();
            match storage {
                Storage::Artifact => assert_eq!(subject, Some(children[0].as_str())),
                Storage::Image => assert_eq!(subject, None),
            }
        }
    }
}
