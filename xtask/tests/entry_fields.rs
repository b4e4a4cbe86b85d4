//! An entry that says all a build needs, on the real engine: several tags, build arguments
//! with values (the version, the run's date and commit), the stage to build, labels, an index
//! and a manifest annotation, and a secret for a `RUN --mount=type=secret` step. What is
//! published is read back with skopeo; the secret's value is looked for everywhere it must not
//! be: the run's output, the dry run, the build logs, every blob of the published image (its
//! layers unpacked, its config, its provenance).

mod common;

use std::path::Path;

use common::engine::{Setup, digest, engine_or_skip, file_in, platform_manifests, run};
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
secrets = { npm_token = { env = "NPM_TOKEN" } }

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
RUN --mount=type=secret,id=npm_token,required=true \
    sha256sum /run/secrets/npm_token | cut -d' ' -f1 > /token.sha256 && \
    echo "$APP_VERSION" > /version && echo "$COMMIT" > /commit

FROM ${DOCKER_REPO}/thirdparty/busybox:1.35 AS runtime
COPY --from=build /token.sha256 /version /commit /

FROM runtime AS debug
RUN false
"#;

const TOKEN: &str = "npm_s3cr3t-token-value-0xC0FFEE";

static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Every file under `dir`, gzip ones unpacked, holds `needle` nowhere.
#[track_caller]
fn nowhere_in(dir: &Path, needle: &str, what: &str) {
    let mut stack = vec![dir.to_path_buf()];
    let mut files = 0;
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().flatten().map(|e| e.path()));
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).unwrap();
        let text = if bytes.starts_with(&[0x1f, 0x8b]) {
            let out = std::process::Command::new("gzip").args(["-dc"]).arg(&path).output().unwrap();
            out.stdout
        } else {
            bytes
        };
        assert!(
            !String::from_utf8_lossy(&text).contains(needle),
            "{what}: the secret's value is in {}",
            path.display()
        );
    }
    assert!(files > 0, "{what}: nothing to look in under {}", dir.display());
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
    let secret = [("NPM_TOKEN", TOKEN)];

    // The dry run names the secret by its id and where it comes from, never its value.
    let dry = setup.xtask_ok(&["publish-all", "--dry-run"], &secret);
    let (out, err) = (stdout(&dry), stderr(&dry));
    assert!(out.contains("--secret 'id=npm_token,env=NPM_TOKEN'"), "{out}");
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "the dry run shows the secret");
    // A child that names the image by another of its tags builds on it.
    assert!(out.contains("[dry-run] # worker: would build: app would be rebuilt"), "{out}");

    // Without the secret: an error naming it, before anything is built.
    let output = setup.xtask(&["publish-all", "--logs", &logs], &[]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(
            "image `app` needs the secret `npm_token`, read from the environment variable NPM_TOKEN"
        ),
        "{err}"
    );
    assert!(!err.contains("buildx build"), "{err}");

    // Published: every tag on one index.
    let output = setup.xtask_ok(&["publish-all", "--logs", &logs], &secret);
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(!out.contains(TOKEN) && !err.contains(TOKEN), "the run's output shows the secret");
    let first = format!("{repo}/app:1.4.2");
    let index = digest(&first);
    let short = &TEST_COMMIT[..7];
    for tag in ["1.4", "latest", &format!("sha-{short}")] {
        assert_eq!(digest(&format!("{repo}/app:{tag}")), index, "{tag} is the same index");
    }
    // The arguments, the secret's hash (it reached its step), the target (debug's `false` never ran).
    let expected_hash = {
        use sha2::Digest;
        xtask_testbed::hex(&sha2::Sha256::digest(TOKEN.as_bytes()))
    };
    for platform in ["linux/amd64", "linux/arm64"] {
        assert_eq!(file_in(&first, platform, "/version"), "1.4.2");
        assert_eq!(file_in(&first, platform, "/commit"), TEST_COMMIT);
        assert_eq!(file_in(&first, platform, "/token.sha256"), expected_hash, "{platform}");
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
    nowhere_in(Path::new(&logs), TOKEN, "the build logs");
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
    nowhere_in(&copy, TOKEN, "the published image");

    // Another commit, another day: the values that change from run to run do not make it out
    // of date; the new commit's tag is added to the same index.
    let other = "fedcba9876543210fedcba9876543210fedcba98";
    let output =
        setup.xtask_ok(&["publish-all", "--logs", &logs], &[("NPM_TOKEN", TOKEN), ("GIT_SHA", other)]);
    assert!(!stderr(&output).contains("buildx build"), "rebuilt: {}", stdout(&output));
    assert!(stdout(&output).contains("up to date  app"), "{}", stdout(&output));
    assert!(stdout(&output).contains("up to date  worker"), "{}", stdout(&output));
    assert_eq!(digest(&format!("{repo}/app:sha-{}", &other[..7])), index, "the missing tag, added");
    assert_eq!(digest(&format!("{repo}/app:sha-{short}")), index, "the old one stays");
}
