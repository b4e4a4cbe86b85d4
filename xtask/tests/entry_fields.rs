//! An entry that says all a build needs, on the real engine: several tags, build arguments
//! with values (the version, the run's date and commit), the stage to build, labels, an index
//! and a manifest annotation, and two secrets for a `RUN --mount=type=secret` step (one from the
//! environment, one from Secret Manager through gcloud, whose cloud side is faked). What is
//! published is read back with skopeo; the secret's value is looked for everywhere it must not
//! be: the run's output, the dry run, the build logs, every blob of the published image (its
//! layers unpacked, its config, its provenance).

mod common;

use std::path::Path;

use common::engine::{FAKE_GCLOUD, Setup, digest, engine_or_skip, file_in, platform_manifests, run};
use common::{TEST_COMMIT, TEST_SOURCE, stderr, stdout};
use xtask_testbed::skopeo_raw;

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
VERSION = "1.4.2"
MAJOR = "1"
MINOR = "4"

[[image]]
name = "app"
description = "the app, released under every tag"
tags = ["{VERSION}", "{MAJOR}.{MINOR}", "latest", "sha-{GIT_SHA_SHORT}"]
target = "runtime"
args = { APP_VERSION = "{VERSION}", BUILT_ON = "{DATE}", COMMIT = "{GIT_SHA}" }
labels = { "org.example.team" = "platform" }
annotations = { "index:org.example.release" = "{VERSION}", "manifest:org.example.flavour" = "slim" }
secrets = { npm_token = { env = "NPM_TOKEN" }, deploy_key = { gcp_secret = "deploy-key" } }

[[image]]
name = "worker"
description = "on the app, by its tag latest"
tag = "{VERSION}"

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

/// The secret reaches one step, which keeps only its hash; the `debug` stage, after the
/// target, would fail the build if it were built.
const DOCKERFILE: &str = r#"ARG DOCKER_REPO
FROM ${DOCKER_REPO}/thirdparty/busybox:1.35 AS build
ARG APP_VERSION
ARG BUILT_ON
ARG COMMIT
RUN --mount=type=secret,id=npm_token,required=true --mount=type=secret,id=deploy_key,required=true \
    sha256sum /run/secrets/npm_token | cut -d' ' -f1 > /token.sha256 && \
    sha256sum /run/secrets/deploy_key | cut -d' ' -f1 > /key.sha256 && \
    echo "$APP_VERSION" > /version && echo "$COMMIT" > /commit

FROM ${DOCKER_REPO}/thirdparty/busybox:1.35 AS runtime
COPY --from=build /token.sha256 /key.sha256 /version /commit /

FROM runtime AS debug
RUN false
"#;

const TOKEN: &str = "npm_s3cr3t-token-value-0xC0FFEE";
/// The Secret Manager secret's value, which the fake gcloud hands out.
const KEY: &str = "-----BEGIN deploy key 0xFEEDFACE-----";

static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let (mut stack, mut files) = (vec![dir.to_path_buf()], Vec::new());
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
        } else {
            files.push(path);
        }
    }
    files
}

/// Whether a file under `dir` (not unpacked) holds `needle`.
fn somewhere_in(dir: &Path, needle: &str) -> bool {
    files_under(dir)
        .iter()
        .any(|path| String::from_utf8_lossy(&std::fs::read(path).unwrap()).contains(needle))
}

/// Every file under `dir`, gzip ones unpacked, holds `needle` nowhere.
#[track_caller]
fn nowhere_in(dir: &Path, needle: &str, what: &str) {
    let files = files_under(dir);
    assert!(!files.is_empty(), "{what}: nothing to look in under {}", dir.display());
    for path in files {
        let bytes = std::fs::read(&path).unwrap();
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            std::process::Command::new("gzip").args(["-dc"]).arg(&path).output().unwrap().stdout
        } else {
            bytes
        };
        assert!(
            !String::from_utf8_lossy(&text).contains(needle),
            "{what}: the secret's value is in {}",
            path.display()
        );
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    xtask_testbed::hex(&sha2::Sha256::digest(text.as_bytes()))
}

fn raw_digest(raw: &[u8]) -> String {
    xtask_testbed::sha256_digest(raw)
}

#[test]
fn an_entry_with_tags_args_target_labels_annotations_and_a_secret_publishes_them_all() {
    if !engine_or_skip("an_entry_with_tags_args_target_labels_annotations_and_a_secret_publishes_them_all") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let files: Vec<(&str, String)> = vec![
        ("app/Dockerfile", DOCKERFILE.into()),
        ("worker/Dockerfile", "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/app:latest\nCOPY note.txt /\n".into()),
        ("worker/note.txt", "the worker\n".into()),
        ("cloud/Dockerfile", "FROM scratch\n".into()),
        ("pipeline.yaml", "steps: []\n".into()),
    ];
    let setup = Setup::new(CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"));
    let (repo, logs) = (setup.repo(), setup.logs());
    // gcloud as the cloud's side of Secret Manager: it writes the value into --out-file.
    let fake = setup.dir.path().join("fake-gcloud");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(fake.join("bin/gcloud"), FAKE_GCLOUD).unwrap();
    std::fs::set_permissions(fake.join("bin/gcloud"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    std::fs::write(fake.join("key"), KEY).unwrap();
    // The run's private folders go here, to be seen gone.
    let tmp = setup.dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let path = format!("{}:{}", fake.join("bin").display(), std::env::var("PATH").unwrap());
    let (fake_dir, key_file, tmp_dir) =
        (fake.display().to_string(), fake.join("key").display().to_string(), tmp.display().to_string());
    let cloud = [
        ("PATH", path.as_str()),
        ("FAKE_VM", fake_dir.as_str()),
        ("FAKE_VM_KEY", key_file.as_str()),
        ("TMPDIR", tmp_dir.as_str()),
    ];
    let secret: Vec<(&str, &str)> = [("NPM_TOKEN", TOKEN)].into_iter().chain(cloud).collect();
    let secret = secret.as_slice();

    // The dry run names the secret by its id and where it comes from, never its value.
    let dry = setup.xtask_ok(&["publish-all", "--dry-run"], secret);
    let (out, err) = (stdout(&dry), stderr(&dry));
    assert!(out.contains("--secret 'id=npm_token,env=NPM_TOKEN'"), "{out}");
    assert!(
        out.contains("[dry-run] gcloud secrets versions access latest '--secret=deploy-key' --project "),
        "{out}"
    );
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "the dry run shows the secret");
    // A child that names the image by another of its tags builds on it.
    assert!(out.contains("[dry-run] # worker: would build: app would be rebuilt"), "{out}");

    // Without the secret: an error naming it, before anything is done (not even vendored).
    let output = setup.xtask(&["publish-all", "--logs", &logs], &cloud);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(!stdout(&output).contains("thirdparty: "), "vendored first: {}", stdout(&output));
    assert!(
        err.contains(
            "image `app` needs the secret `npm_token`, read from the environment variable NPM_TOKEN"
        ),
        "{err}"
    );
    assert!(!err.contains("buildx build"), "{err}");

    // Published: every tag on one index.
    let output = setup.xtask_ok(&["publish-all", "--logs", &logs], secret);
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "the run's output shows the secret");
    let first = format!("{repo}/app:1.4.2");
    let index = digest(&first);
    let short = &TEST_COMMIT[..7];
    for tag in ["1.4", "latest", &format!("sha-{short}")] {
        assert_eq!(digest(&format!("{repo}/app:{tag}")), index, "{tag} is the same index");
    }
    // The arguments, the secret's hash (it reached its step), the target (debug's `false` never ran).
    let expected_hash = sha256_hex(TOKEN);
    // The Secret Manager value was read into a folder of the run's, gone with it.
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "the run left its secrets behind");
    for platform in ["linux/amd64", "linux/arm64"] {
        assert_eq!(file_in(&first, platform, "/version"), "1.4.2");
        assert_eq!(file_in(&first, platform, "/commit"), TEST_COMMIT);
        assert_eq!(file_in(&first, platform, "/token.sha256"), expected_hash, "{platform}");
        assert_eq!(file_in(&first, platform, "/key.sha256"), sha256_hex(KEY), "{platform}");
    }
    assert_eq!(file_in(&format!("{repo}/worker:1.4.2"), "linux/arm64", "/version"), "1.4.2", "worker on app");
    // Labels, on each platform's config: the entry's and the OCI defaults.
    for (platform, manifest) in platform_manifests(&first) {
        let raw = skopeo_raw(&format!("{repo}/app@{manifest}")).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["annotations"]["org.example.flavour"], "slim", "{platform}: {manifest}");
        let reference = format!("docker://{repo}/app@{}", raw_digest(&raw));
        let config = run("skopeo", &["inspect", "--tls-verify=false", "--raw", "--config", &reference]);
        let config: serde_json::Value = serde_json::from_str(&config).unwrap();
        let labels = &config["config"]["Labels"];
        assert_eq!(labels["org.example.team"], "platform", "{platform}: {config}");
        assert_eq!(labels["org.opencontainers.image.revision"], TEST_COMMIT, "{platform}");
        assert_eq!(labels["org.opencontainers.image.source"], TEST_SOURCE, "{platform}");
        assert!(
            labels["org.opencontainers.image.created"].as_str().is_some_and(|c| c.ends_with('Z')),
            "{platform}"
        );
    }
    let raw = skopeo_raw(&first).unwrap();
    let index_json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(index_json["annotations"]["org.example.release"], "1.4.2", "{index_json}");

    // The secret's value is in no log, no layer, no config, no attestation.
    for value in [TOKEN, KEY] {
        nowhere_in(Path::new(&logs), value, "the build logs");
        assert!(!out.contains(value) && !err.contains(value), "the run's output shows a secret");
    }
    let copy = setup.dir.path().join("published");
    run(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{first}"),
            &format!("oci:{}:app", copy.display()),
        ],
    );
    for value in [TOKEN, KEY] {
        nowhere_in(&copy, value, "the published image");
    }
    // What was looked in holds the provenance too (mode=max: the build's steps and arguments).
    assert!(somewhere_in(&copy, "https://slsa.dev/provenance/"), "no provenance was copied to look in");

    // Another commit, another day: the values that change from run to run do not make it out
    // of date; the new commit's tag is added to the same index.
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    let again: Vec<(&str, &str)> = secret.iter().copied().chain([("GIT_SHA", other)]).collect();
    let output = setup.xtask_ok(&["publish-all", "--logs", &logs], &again);
    assert!(!stderr(&output).contains("buildx build"), "rebuilt: {}", stdout(&output));
    assert!(stdout(&output).contains("up to date  app"), "{}", stdout(&output));
    assert!(stdout(&output).contains("up to date  worker"), "{}", stdout(&output));
    assert_eq!(digest(&format!("{repo}/app:sha-{}", &other[..7])), index, "the missing tag, added");
    assert_eq!(digest(&format!("{repo}/app:sha-{short}")), index, "the old one stays");
}

/// What an entry asks that cannot be carried out is an error of the dry run too, before
/// anything is built: a secret not where it is said to be, a target that is no stage, a tag
/// that makes no image reference.
#[test]
fn an_entry_that_cannot_be_carried_out_fails_its_dry_run() {
    let cases = [
        (
            "secrets = { npm_token = { env = \"XTASK_TEST_UNSET_TOKEN\" } }",
            "needs the secret `npm_token`, read from the environment variable XTASK_TEST_UNSET_TOKEN, which is not set",
        ),
        ("target = \"runtim\"", "its target `runtim` is no stage of"),
        ("tags = [\"1\", \"1+build\"]", "its tag `1+build` makes"),
    ];
    for (entry, words) in cases {
        let dir = tempfile::tempdir().unwrap();
        let catalog = format!(
            "thirdparty = \"thirdparty.txt\"\n[[image]]\nname = \"app\"\ndescription = \"d\"\n{}{entry}\n",
            if entry.starts_with("tags") { "" } else { "tag = \"1\"\n" }
        );
        std::fs::write(dir.path().join("images.toml"), catalog).unwrap();
        std::fs::write(dir.path().join("thirdparty.txt"), "docker.io/library/busybox: 1.35\n").unwrap();
        std::fs::create_dir(dir.path().join("app")).unwrap();
        std::fs::write(dir.path().join("app/Dockerfile"), "FROM busybox:1.35 AS runtime\nRUN true\n")
            .unwrap();
        let fakes = common::FakeTools::new();
        fakes.print("docker info", r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
        let catalog = dir.path().join("images.toml").display().to_string();
        let output =
            fakes.xtask(&["publish-all", "--dry-run"], &[("CATALOG", catalog.as_str()), ("ENV", "local")]);
        let (out, err) = (stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{entry}: {out}\n{err}");
        assert!(out.contains(words) || err.contains(words), "{entry}: {out}\n{err}");
        assert!(!out.contains("[dry-run] DOCKER_BUILDKIT=1 docker buildx build"), "{entry}: {out}");
    }
}
