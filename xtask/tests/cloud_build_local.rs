//! The real `cloudbuild/pr.yaml`, rehearsed with `cargo xtask cloud-build --local --on-host` as
//! Cloud Build runs it: every step in order in a process of its own, `HOME` the rehearsal's
//! `/builder/home`, a workspace copied from this working tree, the substitutions and
//! `options.env`. Only the cloud's side is faked, by a `gcloud` on `PATH`: the secrets (into
//! files), the VM's states, IAP (relaying to an sshd) and the scan's answers. Everything else is
//! real: this machine's engine builds linux/amd64; a second engine on a unix socket only, behind
//! Debian's sshd running the builder VM's tunnel file (builder-vm/startup.sh), is the arm64 VM, reached by a real `ssh`
//! through the account's ssh config as docker starts it; cosign signs with a key file (keyless
//! signing needs sigstore's servers); the registries are real, on 127.0.0.1.
//!
//! The tests point the pipeline at a catalog and a registry of their own with `--step-env`, as a user
//! would. The xtask step compiles the workspace's xtask for real; its `CARGO_TARGET_DIR` is one
//! kept between runs (`target/cloud-build-rehearsal`), as the cloud builder image keeps the
//! compiled dependencies, so that only the xtask crate compiles each time.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::engine::{
    FAKE_GCLOUD, SecondEngine, Setup, TUNNEL_USER, TestSshd, engine_or_skip, platforms, root_or_skip, run,
};
use common::{IncludedSshConfig, stderr, stdout};

/// The engines, the tunnel user and the VM's name are this machine's: one rehearsal at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The stand-in VM's name (its ssh host is `xtask-<vm>`).
const VM: &str = "rehearsal-arm";

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
BUSYBOX_VERSION = "1.35"
V = "1"
FAIL = "0"

[[image]]
name = "base"
description = "on the vendored busybox"
tag = "{V}"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "child"
description = "on base; fails with FAIL=1"
tag = "{V}"
build_args = ["FAIL"]

[[image]]
name = "solo"
description = "on busybox alone"
tag = "{V}"
build_args = ["BUSYBOX_VERSION"]

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

const BASE: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    RUN uname -m > /built-on\n";
const CHILD: &str = "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/base:1\nARG FAIL\n\
    RUN test \"$FAIL\" = 0 && uname -m > /child-built-on\n";
const SOLO: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    RUN uname -m > /built-on\n";

const IMAGES: [&str; 3] = ["base", "child", "solo"];

/// The bucket the images step keeps its logs and timeline in (`_RUN_LOGS_BUCKET`).
const LOGS_BUCKET: &str = "run-logs";

/// One rehearsal's world: the catalog and its registries, the VM's engine and sshd, the fake
/// gcloud, a signing key.
struct Rehearsal {
    _turn: std::sync::MutexGuard<'static, ()>,
    setup: Setup,
    vm_engine: SecondEngine,
    sshd: TestSshd,
    /// The fake gcloud's folder: `bin/gcloud`, the VM's `state`, its `calls`.
    fake: PathBuf,
    /// The rehearsal's own output (its workspace, home, logs): `CARGO_TARGET_DIR` of the task.
    work: tempfile::TempDir,
    key: PathBuf,
}

impl Rehearsal {
    fn new(test: &str, bridge: &str) -> Option<Rehearsal> {
        if !root_or_skip(test) || !engine_or_skip(test) {
            return None;
        }
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let files: Vec<(&str, String)> = vec![
            ("base/Dockerfile", BASE.into()),
            ("child/Dockerfile", CHILD.into()),
            ("solo/Dockerfile", SOLO.into()),
            ("cloud/Dockerfile", "FROM scratch\n".into()),
            ("pipeline.yaml", "steps: []\n".into()),
        ];
        let setup = Setup::new(CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"));
        let vm_engine = SecondEngine::start(bridge);
        let sshd = TestSshd::start(&vm_engine.socket());
        let fake = setup.dir.path().join("fake-gcloud");
        std::fs::create_dir_all(fake.join("bin")).unwrap();
        std::fs::write(fake.join("bin/gcloud"), FAKE_GCLOUD).unwrap();
        std::fs::set_permissions(
            fake.join("bin/gcloud"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        // The key pair the pipeline signs with, its password empty.
        let keys = setup.dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let generated = std::process::Command::new("cosign")
            .arg("generate-key-pair")
            .current_dir(&keys)
            .env("COSIGN_PASSWORD", "")
            .output()
            .expect("cosign is installed (.ci/engine installs it)");
        assert!(generated.status.success(), "{}", stderr(&generated));
        let rehearsal = Rehearsal {
            _turn: turn,
            setup,
            vm_engine,
            sshd,
            fake,
            work: tempfile::tempdir().unwrap(),
            key: keys,
        };
        // The lock a reviewed pull request has: the pipeline vendors `--locked`.
        rehearsal.setup.xtask_ok(&["thirdparty"], &[("DOCKER_REPO", &rehearsal.repo())]);
        Some(rehearsal)
    }

    fn repo(&self) -> String {
        format!("{}/dev", self.setup.destination.host())
    }

    /// `cloud-build --local --on-host` of the repository's pr.yaml, with `more` step variables.
    fn rehearse(&self, more: &[(&str, &str)]) -> Output {
        let cargo = std::env::var("CARGO").expect("cargo runs the tests");
        let cargo_dir = Path::new(&cargo).parent().unwrap().display().to_string();
        let path =
            format!("{}:{cargo_dir}:{}", self.fake.join("bin").display(), std::env::var("PATH").unwrap());
        let kept_target = xtask::project_root().join("target/cloud-build-rehearsal");
        let key = self.key.join("cosign.key").display().to_string();
        let mut step_env: Vec<(String, String)> = [
            ("PATH", path),
            ("CATALOG", self.setup.catalog()),
            ("DOCKER_REPO", self.repo()),
            ("ARM64_VM", VM.to_string()),
            ("ARM64_USER", TUNNEL_USER.to_string()),
            ("COSIGN_PASSWORD", String::new()),
            ("FAKE_VM", self.fake.display().to_string()),
            ("FAKE_VM_SSH_PORT", self.sshd.port.to_string()),
            ("FAKE_VM_KEY", self.sshd.key().display().to_string()),
            ("CARGO_TARGET_DIR", kept_target.display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec();
        step_env.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let substitutions =
            format!("--substitutions=_AUTO_START_STOP=1,_SIGN_KEY={key},_RUN_LOGS_BUCKET={LOGS_BUCKET}");
        let mut args = vec![
            "cloud-build".to_string(),
            "--local".into(),
            "--on-host".into(),
            substitutions,
            "--project".into(),
            "rehearsal-project".into(),
        ];
        for (name, value) in &step_env {
            args.extend(["--step-env".to_string(), format!("{name}={value}")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let work = self.work.path().display().to_string();
        // The rehearsal runs the repository's pipeline, from the repository's catalog setting:
        // the steps get the test's catalog through --step-env only.
        common::xtask_command(&args, &[("CARGO_TARGET_DIR", &work), ("CATALOG", common::REPOSITORY_CATALOG)])
            .current_dir(xtask::project_root())
            .output()
            .expect("xtask runs")
    }

    /// The VM calls the fake gcloud saw, in order (`start`, `stop`; `describe` left out).
    fn vm_calls(&self) -> Vec<String> {
        let calls = std::fs::read_to_string(self.fake.join("calls")).unwrap_or_default();
        calls
            .lines()
            .filter_map(|line| line.strip_prefix("compute instances "))
            .filter_map(|rest| rest.split(' ').next())
            .filter(|action| *action != "describe")
            .map(str::to_string)
            .collect()
    }

    /// The names of the files the images step kept in the logs bucket, under
    /// `<build id>/publish-all/`.
    fn kept_logs(&self) -> Vec<String> {
        let bucket = self.fake.join("buckets").join(LOGS_BUCKET);
        let Ok(builds) = std::fs::read_dir(&bucket) else { return Vec::new() };
        let mut names: Vec<String> = builds
            .flatten()
            .filter_map(|build| std::fs::read_dir(build.path().join("publish-all")).ok())
            .flat_map(|files| files.flatten().map(|f| f.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        names
    }

    /// The VM's state as the fake cloud keeps it.
    fn vm_state(&self) -> String {
        std::fs::read_to_string(self.fake.join("state"))
            .unwrap_or_else(|_| "TERMINATED".into())
            .trim()
            .to_string()
    }

    /// The ssh config lines of this rehearsal's home go with it.
    fn included(&self) -> IncludedSshConfig {
        IncludedSshConfig { dir: self.work.path().to_path_buf() }
    }

    /// What the run printed, and each step's log, for a failure message.
    fn explain(&self, output: &Output) -> String {
        let mut text = format!("stdout:\n{}\nstderr:\n{}\n", stdout(output), stderr(output));
        for log in find_logs(self.work.path()) {
            let body = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = body.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            text += &format!("--- {}:\n{}\n", log.display(), tail.join("\n"));
        }
        text
    }

    /// The row of `step` in the closing table of steps.
    fn status_of(&self, output: &Output, step: &str) -> String {
        let out = stdout(output);
        out.lines()
            .rev()
            .find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(step)).then(|| words.next().unwrap_or_default().to_string())
            })
            .unwrap_or_else(|| panic!("no row for step {step}:\n{}", self.explain(output)))
    }
}

/// The step logs under `dir`, every `.log` file below a `logs` folder.
fn find_logs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && !path.ends_with("workspace") {
                folders.push(path);
            } else if path.extension().is_some_and(|e| e == "log")
                && path.parent().is_some_and(|p| p.ends_with("logs"))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The whole pipeline green: every image is one index of both platforms, each arm64 half built
/// and stored by the VM's engine (and only there), each amd64 half by this one, every index
/// signed; the VM was started for the builds and stopped after them; the scan step ran.
#[test]
fn the_real_pipeline_publishes_every_image_with_the_arm64_half_built_on_the_vm() {
    let test = "the_real_pipeline_publishes_every_image_with_the_arm64_half_built_on_the_vm";
    let Some(rehearsal) = Rehearsal::new(test, "xtask-cbl1") else { return };
    let _included = rehearsal.included();
    let output = rehearsal.rehearse(&[]);
    assert!(output.status.success(), "the rehearsal failed:\n{}", rehearsal.explain(&output));
    for step in ["setup-ssh", "xtask", "thirdparty", "setup", "images", "scan"] {
        assert_eq!(rehearsal.status_of(&output, step), "SUCCESS", "{step}");
    }
    let repo = rehearsal.repo();
    let docker_here = |args: &[&str]| std::process::Command::new("docker").args(args).output().unwrap();
    for image in IMAGES {
        let reference = format!("{repo}/{image}:1");
        assert_eq!(platforms(&reference), ["linux/amd64", "linux/arm64"], "{reference}");
        let arm = format!("{reference}-arm64");
        assert!(
            rehearsal.vm_engine.docker(&["image", "inspect", &arm]).status.success(),
            "{arm} not on the VM"
        );
        assert!(!docker_here(&["image", "inspect", &arm]).status.success(), "{arm} built here too");
        let amd = format!("{reference}-amd64");
        assert!(docker_here(&["image", "inspect", &amd]).status.success(), "{amd} not built here");
        assert!(!rehearsal.vm_engine.docker(&["image", "inspect", &amd]).status.success(), "{amd} on the VM");
        let public = rehearsal.key.join("cosign.pub").display().to_string();
        run(
            "cosign",
            &[
                "verify",
                "--key",
                &public,
                "--insecure-ignore-tlog",
                "--allow-http-registry",
                "--allow-insecure-registry",
                &reference,
            ],
        );
    }
    // Each half's provenance, read back by verify, names the Cloud Build it was built in: the
    // images step's BUILD_ID and project, on this engine and on the VM's alike.
    let said = format!("{}{}", stdout(&output), stderr(&output));
    let build_id = said
        .split(" as build ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("the rehearsal names its build: {said}"));
    let public = rehearsal.key.join("cosign.pub").display().to_string();
    let catalog = rehearsal.setup.catalog();
    let env = [("DOCKER_REPO", repo.as_str()), ("CATALOG", catalog.as_str())];
    let mut verify = vec!["verify", "--key", &public, "--insecure-ignore-tlog"];
    verify.extend(IMAGES);
    let verified = common::xtask(&verify, &env);
    assert!(verified.status.success(), "{}\n{}", stdout(&verified), stderr(&verified));
    let page = format!(
        "built by https://console.cloud.google.com/cloud-build/builds;region=global/{build_id}?project=rehearsal-project"
    );
    assert_eq!(stdout(&verified).matches(&page).count(), 2 * IMAGES.len(), "{}", stdout(&verified));
    assert_eq!(rehearsal.vm_calls(), ["start", "stop"], "{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.vm_state(), "TERMINATED");
    let leases =
        rehearsal.vm_engine.docker(&["volume", "ls", "-q", "--filter", "label=dev.multi-arch-docker.lease"]);
    assert_eq!(stdout(&leases).trim(), "", "a lease was left on the VM");
    let calls = std::fs::read_to_string(rehearsal.fake.join("calls")).unwrap();
    assert!(calls.contains("artifacts docker images list-vulnerabilities"), "the scan step scanned: {calls}");
    let kept = rehearsal.kept_logs();
    for file in ["base.log", "child.log", "solo.log", "timeline.svg"] {
        assert!(kept.iter().any(|k| k == file), "{file} not kept in the bucket: {kept:?}");
    }
}

/// One image fails: the images step fails and the build with it (the scan never runs), the
/// images that do not build on it are published, and the VM is stopped.
#[test]
fn a_failing_image_fails_the_pipeline_publishes_the_others_and_stops_the_vm() {
    let test = "a_failing_image_fails_the_pipeline_publishes_the_others_and_stops_the_vm";
    let Some(rehearsal) = Rehearsal::new(test, "xtask-cbl2") else { return };
    let _included = rehearsal.included();
    let output = rehearsal.rehearse(&[("FAIL", "1")]);
    assert!(!output.status.success(), "the rehearsal must fail:\n{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.status_of(&output, "images"), "FAILURE", "{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.status_of(&output, "scan"), "QUEUED", "no step runs after a failed one");
    let repo = rehearsal.repo();
    for image in ["base", "solo"] {
        assert_eq!(platforms(&format!("{repo}/{image}:1")), ["linux/amd64", "linux/arm64"], "{image}");
    }
    assert!(xtask_testbed::skopeo_raw(&format!("{repo}/child:1")).is_err(), "child was published");
    // A failed run keeps its logs and timeline too, the failed image's log among them.
    let kept = rehearsal.kept_logs();
    for file in ["child.log", "timeline.svg"] {
        assert!(kept.iter().any(|k| k == file), "{file} not kept in the bucket: {kept:?}");
    }
    assert_eq!(rehearsal.vm_calls(), ["start", "stop"], "{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.vm_state(), "TERMINATED");
}

/// The VM starts, but the tunnel to it fails (IAP refuses): the images step fails, nothing is
/// published, and the VM that step started is stopped.
#[test]
fn a_tunnel_that_fails_after_the_start_fails_the_pipeline_and_stops_the_vm() {
    let test = "a_tunnel_that_fails_after_the_start_fails_the_pipeline_and_stops_the_vm";
    let Some(rehearsal) = Rehearsal::new(test, "xtask-cbl3") else { return };
    let _included = rehearsal.included();
    std::fs::write(rehearsal.fake.join("iap-down"), "").unwrap();
    let output = rehearsal.rehearse(&[]);
    assert!(!output.status.success(), "the rehearsal must fail:\n{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.status_of(&output, "images"), "FAILURE", "{}", rehearsal.explain(&output));
    for image in IMAGES {
        assert!(xtask_testbed::skopeo_raw(&format!("{}/{image}:1", rehearsal.repo())).is_err(), "{image}");
    }
    assert_eq!(rehearsal.vm_calls(), ["start", "stop"], "{}", rehearsal.explain(&output));
    assert_eq!(rehearsal.vm_state(), "TERMINATED");
}
