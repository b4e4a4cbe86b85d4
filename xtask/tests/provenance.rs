//! `verify` on images as BuildKit pushes them (fixtures made from its documentation, in
//! `xtask_testbed::buildkit`), in a real registry on 127.0.0.1, signed with cosign: the same
//! facts from SLSA v0.2 and v1 provenance, however the attestation manifests are stored; a
//! format it cannot read is a warning that names it; a platform without provenance fails the
//! check; the single-platform cloud builder is verified like the catalog's images.

mod common;

use std::process::{Command, Output};

use common::{stderr, stdout};
use xtask_testbed::buildkit::{BuildkitImage, Provenance, SLSA_V1, SLSA_V02, Storage};
use xtask_testbed::fault_proxy::{Fault, FaultProxy, Rule, Schedule};
use xtask_testbed::{Fixture, TestRegistry, cosign_key_pair};

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]

[[image]]
name = "old"
description = "SLSA v0.2, attestations stored before BuildKit 0.32"
tag = "1"

[[image]]
name = "new"
description = "SLSA v1, attestations stored as OCI artifacts"
tag = "1"

[[image]]
name = "unrecorded"
description = "SLSA v1 without a builder id"
tag = "1"

[[image]]
name = "odd"
description = "an unknown provenance format on one platform, none on the other"
tag = "1"

[[image]]
name = "lone"
description = "one manifest, no index: its attestation attached as a referrer"
tag = "1"

[[image]]
name = "flipped"
description = "its provenance statement comes back corrupt"
tag = "1"

[cloud_builder]
name = "cloud-builder"
description = "the image the pipeline runs in: one platform"
tag = "1"
"#;

const BASE: &str = "pkg:docker/127.0.0.1%3A5000/thirdparty/busybox@1.36?platform=linux%2Famd64";
const BASE_HEX: &str = "8914eb54f968791faf6a8638949e480fef81e697984fba772b3976835194c6d4";

fn provenance(predicate_type: &str, builder_id: &str) -> Provenance {
    Provenance {
        predicate_type: predicate_type.into(),
        builder_id: builder_id.into(),
        args: vec![("BUSYBOX_VERSION".into(), "1.36".into()), ("REFRESH".into(), "2026-12-01".into())],
        base: (BASE.into(), BASE_HEX.into()),
    }
}

fn both(provenance: Option<Provenance>) -> Vec<((&'static str, &'static str), Option<Provenance>)> {
    vec![(("linux", "amd64"), provenance.clone()), (("linux", "arm64"), provenance)]
}

/// A catalog, a registry holding its images, and a cosign key that signed them.
struct Published {
    registry: TestRegistry,
    dir: tempfile::TempDir,
}

impl Published {
    fn new(images: &[(&str, BuildkitImage)]) -> Published {
        let registry = TestRegistry::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in
            [("images.toml", CATALOG), ("thirdparty.txt", ""), ("pipeline.yaml", "steps: []\n")]
        {
            std::fs::write(dir.path().join(path), text).unwrap();
        }
        for name in ["old", "new", "unrecorded", "odd", "lone", "flipped", "cloud-builder"] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("Dockerfile"), "FROM scratch\n").unwrap();
        }
        cosign_key_pair(dir.path()).unwrap();
        let published = Published { registry, dir };
        for (name, spec) in images {
            let fixture = Fixture::buildkit(spec).unwrap();
            fixture.push_raw(published.registry.addr, &format!("repo/{name}"), Some("1")).unwrap();
            published.sign(name, &fixture.digest);
        }
        published
    }

    fn sign(&self, name: &str, digest: &str) {
        let key = self.dir.path().join("cosign.key");
        let signed = Command::new("cosign")
            .args([
                "sign",
                "--yes",
                "--tlog-upload=false",
                "--allow-http-registry",
                "--allow-insecure-registry",
            ])
            .arg("--key")
            .arg(&key)
            .arg(format!("{}/repo/{name}@{digest}", self.registry.host()))
            .env("COSIGN_PASSWORD", "")
            .output()
            .unwrap();
        assert!(signed.status.success(), "{}", stderr(&signed));
    }

    fn verify(&self, names: &[&str]) -> Output {
        self.verify_at(&self.registry.host(), names)
    }

    /// verify, reaching the registry at `host` (a proxy in front of it, say).
    fn verify_at(&self, host: &str, names: &[&str]) -> Output {
        let mut args = vec!["verify", "--insecure-ignore-tlog"];
        args.extend_from_slice(names);
        let key = self.dir.path().join("cosign.pub").display().to_string();
        args.extend(["--key", key.as_str()]);
        let catalog = self.dir.path().join("images.toml").display().to_string();
        let repo = format!("{host}/repo");
        common::xtask(&args, &[("CATALOG", catalog.as_str()), ("DOCKER_REPO", repo.as_str())])
    }

    /// A proxy in front of the registry that answers every GET whose path holds `path_part`
    /// with `fault`, the rest as the registry does.
    fn behind_fault(&self, path_part: String, fault: Fault) -> FaultProxy {
        let path: &'static str = Box::leak(path_part.into_boxed_str());
        FaultProxy::start(self.registry.addr, vec![Rule::new(Some("GET"), path, fault, Schedule::Always)])
    }

    fn reference(&self, name: &str) -> String {
        format!("{}/repo/{name}:1", self.registry.host())
    }
}

/// verify's reports, each image's after its signature was checked (what cosign and the runner
/// print between them left out).
fn reports(output: &Output) -> String {
    let out = stdout(output);
    let lines: Vec<&str> =
        out.lines().filter(|line| line.starts_with("  ") || line.ends_with(", signature verified")).collect();
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// What verify says of one platform, as it prints it.
fn platform_lines(platform: &str, built_by: &str, format: &str) -> String {
    format!(
        "  {platform}: built by {built_by} ({format})\n    build argument BUSYBOX_VERSION=1.36\n    \
         build argument REFRESH=2026-12-01\n    from {BASE} sha256:{BASE_HEX}"
    )
}

#[test]
fn verify_shows_the_same_facts_from_slsa_v02_and_v1() {
    let published = Published::new(&[
        (
            "old",
            BuildkitImage {
                seed: 1,
                platforms: both(Some(provenance(SLSA_V02, "https://ci.example/1"))),
                storage: Storage::Image,
            },
        ),
        (
            "new",
            BuildkitImage {
                seed: 2,
                platforms: both(Some(provenance(SLSA_V1, "https://ci.example/1"))),
                storage: Storage::Artifact,
            },
        ),
        (
            "unrecorded",
            BuildkitImage {
                seed: 3,
                platforms: both(Some(provenance(SLSA_V1, ""))),
                storage: Storage::Image,
            },
        ),
    ]);
    let output = published.verify(&["old", "new", "unrecorded"]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let out = reports(&output);
    let image = |name: &str, built_by: &str, format: &str| {
        format!(
            "{name}: {}, signature verified\n{}\n{}\n",
            published.reference(name),
            platform_lines("linux/amd64", built_by, format),
            platform_lines("linux/arm64", built_by, format)
        )
    };
    // Whole outputs: the SBOM statement beside each provenance, and BuildKit's other request
    // options (a label), are left out.
    let expected = [
        image("old", "https://ci.example/1", "SLSA v0.2"),
        image("new", "https://ci.example/1", "SLSA v1"),
        image("unrecorded", "(builder not recorded)", "SLSA v1"),
    ]
    .concat();
    assert_eq!(out, expected);
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
}

#[test]
fn an_unknown_format_is_a_warning_and_a_platform_without_provenance_fails() {
    let v2 = "https://slsa.dev/provenance/v2";
    let published = Published::new(&[(
        "odd",
        BuildkitImage {
            seed: 4,
            platforms: vec![(("linux", "amd64"), Some(provenance(v2, "x"))), (("linux", "arm64"), None)],
            storage: Storage::Artifact,
        },
    )]);
    let output = published.verify(&["odd"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(out.contains(&format!("  linux/amd64: provenance {v2} unreadable (see the warning)")), "{out}");
    assert!(out.contains("  linux/arm64: no provenance attestation"), "{out}");
    assert!(
        err.contains(&format!("warning: odd linux/amd64: cannot read its provenance of predicate type {v2}")),
        "{err}"
    );
    assert!(err.contains("no provenance attestation on odd linux/arm64"), "{err}");
}

#[test]
fn the_single_platform_cloud_builder_is_verified_by_its_name() {
    let published = Published::new(&[(
        "cloud-builder",
        BuildkitImage {
            seed: 5,
            platforms: vec![(("linux", "amd64"), Some(provenance(SLSA_V1, "https://ci.example/2")))],
            storage: Storage::Artifact,
        },
    )]);
    let output = published.verify(&["cloud-builder"]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let expected = format!(
        "cloud-builder: {}, signature verified\n{}\n",
        published.reference("cloud-builder"),
        platform_lines("linux/amd64", "https://ci.example/2", "SLSA v1")
    );
    assert_eq!(reports(&output), expected);
    // What verify read of the image beyond cosign's own requests: its index, the attestation
    // manifest and the provenance statement; the SBOM statement beside it was not downloaded.
    let image = Fixture::buildkit(&BuildkitImage {
        seed: 5,
        platforms: vec![(("linux", "amd64"), Some(provenance(SLSA_V1, "https://ci.example/2")))],
        storage: Storage::Artifact,
    })
    .unwrap();
    let attestation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&image.children()[1])).unwrap()).unwrap();
    let blob = |n: usize| {
        format!("/v2/repo/cloud-builder/blobs/{}", attestation["layers"][n]["digest"].as_str().unwrap())
    };
    let blob_gets: Vec<String> = published
        .registry
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .map(|r| r.path)
        .collect();
    assert!(blob_gets.contains(&blob(0)), "the provenance statement: {blob_gets:?}");
    assert!(!blob_gets.contains(&blob(1)), "not the SBOM statement: {blob_gets:?}");
    // Unsigned, it is refused like any other image.
    let unsigned = Fixture::buildkit(&BuildkitImage {
        seed: 6,
        platforms: vec![(("linux", "amd64"), Some(provenance(SLSA_V1, "x")))],
        storage: Storage::Artifact,
    })
    .unwrap();
    unsigned.push_raw(published.registry.addr, "repo/cloud-builder", Some("1")).unwrap();
    assert!(!published.verify(&["cloud-builder"]).status.success());
}

/// A lone image manifest (no index) whose attestation is attached as its referrer, by the
/// fallback tag: verify finds it there, and names the platform from the image's config.
#[test]
fn an_attestation_attached_as_a_referrer_is_found() {
    let published = Published::new(&[]);
    let image = Fixture::buildkit(&BuildkitImage {
        seed: 7,
        platforms: vec![(("linux", "arm64"), Some(provenance(SLSA_V1, "https://ci.example/3")))],
        storage: Storage::Artifact,
    })
    .unwrap();
    image.push_as_referrer(published.registry.addr, "repo/lone", "1").unwrap();
    published.sign("lone", &image.children()[0]);
    let output = published.verify(&["lone"]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let expected = format!(
        "lone: {}, signature verified\n{}\n",
        published.reference("lone"),
        platform_lines("linux/arm64", "https://ci.example/3", "SLSA v1")
    );
    assert_eq!(reports(&output), expected);
}

/// A provenance statement that comes back corrupt (its digest does not match) is a warning
/// naming its predicate type, not a failure of the image, and not a silent gap.
#[test]
fn an_unreadable_provenance_is_a_warning_naming_its_type() {
    let spec = BuildkitImage {
        seed: 8,
        platforms: both(Some(provenance(SLSA_V1, "https://ci.example/4"))),
        storage: Storage::Artifact,
    };
    let published = Published::new(&[("flipped", spec.clone())]);
    let image = Fixture::buildkit(&spec).unwrap();
    // The amd64 attestation's provenance statement: its first layer.
    let attestation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.blob_path(&image.children()[2])).unwrap()).unwrap();
    let statement = attestation["layers"][0]["digest"].as_str().unwrap().to_string();
    let proxy = published.behind_fault(format!("/blobs/{statement}"), Fault::FlipByte);
    let output = published.verify_at(&proxy.host(), &["flipped"]);
    let (out, err) = (reports(&output), stderr(&output));
    assert!(output.status.success(), "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "  linux/amd64: its attestation of predicate type {SLSA_V1} unreadable (see the warning)"
        )),
        "{out}"
    );
    assert!(out.contains(&platform_lines("linux/arm64", "https://ci.example/4", "SLSA v1")), "{out}");
    assert!(
        err.contains(&format!(
            "warning: flipped linux/amd64: cannot read its attestation of predicate type {SLSA_V1}"
        )),
        "{err}"
    );
}

/// An attestation manifest the registry will not serve is a warning on the platform its index
/// entry names, not the image's failure.
#[test]
fn an_unreadable_attestation_manifest_is_a_warning_on_its_platform() {
    let spec = BuildkitImage {
        seed: 9,
        platforms: both(Some(provenance(SLSA_V02, "https://ci.example/5"))),
        storage: Storage::Image,
    };
    let published = Published::new(&[("flipped", spec.clone())]);
    let image = Fixture::buildkit(&spec).unwrap();
    let arm64_attestation = image.children()[3].clone();
    let proxy = published.behind_fault(format!("/manifests/{arm64_attestation}"), Fault::Status(500));
    let output = published.verify_at(&proxy.host(), &["flipped"]);
    let (out, err) = (reports(&output), stderr(&output));
    assert!(output.status.success(), "{out}\n{err}");
    assert!(out.contains(&platform_lines("linux/amd64", "https://ci.example/5", "SLSA v0.2")), "{out}");
    assert!(out.contains("  linux/arm64: an attestation manifest unreadable (see the warning)"), "{out}");
    assert!(
        err.contains(&format!(
            "warning: flipped linux/arm64: cannot read an attestation manifest: attestation manifest {arm64_attestation}"
        )),
        "{err}"
    );
}
