//! The main job for real, on a real Docker Engine and offline: a test catalog whose images build
//! from a multi-arch busybox base served by an "upstream" registry on 127.0.0.1, published into
//! a second registry as ENV=local does. Nothing here can reach Docker Hub, so every image a build
//! or builder needs must come from `$DOCKER_REPO`.
//!
//! The tests run one at a time and in steps, because they share the engine and its build cache
//! (which they empty: run them on a machine whose cache you do not need). The second one adds a
//! second engine behind a real ssh tunnel, standing in for the arm64 VM.

mod common;

use std::path::Path;

use common::engine::{
    FAKE_GCLOUD, SecondEngine, Setup, TUNNEL_USER, TestSshd, built_on, digest, distinct_builds,
    engine_or_skip, platforms, run,
};
use common::{stderr, stdout};
use xtask_testbed::skopeo_raw;

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
BUSYBOX_VERSION = "1.35"
HELLO_VERSION = "1"
SLOW_VERSION = "2"
FAIL = "0"

[[image]]
name = "hello"
task = "hello"
description = "a RUN per platform"
tag = "{HELLO_VERSION}"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "slow"
task = "slow"
description = "two stages, split in Cloud Build"
tag = "{SLOW_VERSION}"
build_args = ["BUSYBOX_VERSION", "FAIL"]
split_build = true

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

// An expensive step early and a file used late: a rebuild after a late change must take the
// expensive step from the registry cache.
const HELLO: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
    RUN uname -m > /built-on\n\
    RUN sleep 3 && echo expensive > /expensive\n\
    COPY late.txt /late.txt\n";

const SLOW: &str = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\n\
    FROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION} AS base\n\
    RUN sleep 1 && uname -m > /built-on\n\
    FROM base\nARG FAIL\n\
    RUN test \"$FAIL\" = 0\n\
    COPY late.txt /late.txt\n";

const PIPELINE: &str = "steps:\n\
    - id: hello\n  name: builder\n  entrypoint: cargo\n  args: [xtask, buildx-publish-hello]\n\
    - id: slow\n  name: builder\n  entrypoint: cargo\n  args: [xtask, buildx-publish-slow]\n";

/// A platform's test: its image, run by the engine that built it (DOCKER_CONTEXT), says it is
/// that platform's machine; the container carries the platform in a label, for the engines'
/// event logs.
const ARCH_TEST: &str = r#"set -eu
case "$PLATFORM" in linux/arm64) want=aarch64 ;; *) want=x86_64 ;; esac
got=$(docker run --rm --label "xtask.test=$PLATFORM" "$IMAGE" uname -m)
echo "uname -m: $got"
[ "$got" = "$want" ]
"#;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The engine is one: the tests take turns.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The hello/slow catalog, its busybox base upstream, and an empty destination.
fn take_engine(test: &str) -> Option<(std::sync::MutexGuard<'static, ()>, Setup)> {
    if !engine_or_skip(test) {
        return None;
    }
    let turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let files = [
        ("hello/Dockerfile", format!("ARG DOCKER_REPO\n{HELLO}")),
        ("hello/late.txt", "first\n".to_string()),
        ("slow/Dockerfile", format!("ARG DOCKER_REPO\n{SLOW}")),
        ("slow/late.txt", "first\n".to_string()),
        ("cloud/Dockerfile", "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/thirdparty/cloudbase:1\n".to_string()),
        ("pipeline.yaml", PIPELINE.to_string()),
    ];
    // cloudbase is never pushed upstream and Docker Hub is out of reach: vendoring either
    // would fail, so publish-all must take only what the builds start from.
    let list =
        |up: &str| format!("{up}/busybox: 1.35\n{up}/cloudbase: 1\ndocker.io/moby/buildkit: v0.18.0\n");
    Some((turn, Setup::new(CATALOG, &files, list)))
}

/// In `--progress plain` output, each line behind its `<image>/<arch> | ` prefix: how many
/// steps' headers contain `step`, and the longest any of those steps took. The expensive step
/// sleeps 3 s, so a run where none took near that did not run it.
fn steps_and_longest(log: &str, step: &str) -> (usize, f64) {
    let lines: Vec<(&str, &str)> = log.lines().filter_map(|l| l.split_once(" | ")).collect();
    let ids: Vec<(&str, &str)> = lines
        .iter()
        .filter(|(_, l)| l.starts_with('#') && l.contains(step))
        .filter_map(|(prefix, l)| Some((*prefix, l.split_whitespace().next()?)))
        .collect();
    let longest = lines
        .iter()
        .filter_map(|(prefix, l)| l.split_once(" DONE ").map(|(id, took)| (*prefix, id, took)))
        .filter(|(prefix, id, _)| ids.contains(&(*prefix, *id)))
        .filter_map(|(_, _, took)| took.strip_suffix('s')?.parse::<f64>().ok())
        .fold(0.0, f64::max);
    (ids.len(), longest)
}

fn log_of(setup: &Setup, image: &str) -> String {
    std::fs::read_to_string(Path::new(&setup.logs()).join(format!("{image}.log"))).unwrap()
}

#[test]
fn the_main_job_runs_offline_on_a_real_engine() {
    let Some((_turn, setup)) = take_engine("the_main_job_runs_offline_on_a_real_engine") else {
        return;
    };
    let repo = setup.repo();
    let logs = setup.logs();

    // 1. publish-all, as in Cloud Build (BUILDER_OUTPUT: slow takes the split build).
    let output = setup.xtask_ok(&["publish-all", "--logs", &logs], &[("BUILDER_OUTPUT", "/unused")]);
    let out = stdout(&output);
    assert!(out.contains("thirdparty: 1 tags: 1 copied"), "only the busybox base is vendored:\n{out}");
    assert!(out.contains(&format!("published   hello -> {repo}/hello:1")), "{out}");
    assert!(out.contains(&format!("published   slow -> {repo}/slow:2")), "{out}");
    assert!(
        setup.upstream.requests().iter().all(|r| !r.path.contains("cloudbase")),
        "the cloud builder's base was not asked for"
    );
    for reference in [format!("{repo}/hello:1"), format!("{repo}/slow:2")] {
        assert_eq!(platforms(&reference), ["linux/amd64", "linux/arm64"], "{reference}");
        assert_eq!(built_on(&reference, "linux/arm64"), "aarch64", "{reference}: arm64 RUN under QEMU");
        assert_eq!(built_on(&reference, "linux/amd64"), "x86_64", "{reference}");
    }
    // One build per platform, each with its own cache, merged into one index.
    for image in ["hello:1", "slow:2"] {
        for arch in ["amd64", "arm64"] {
            let cache = format!("{repo}/cache/{image}-{arch}");
            skopeo_raw(&cache).unwrap_or_else(|e| panic!("no registry cache {cache}: {e}"));
            assert_eq!(platforms(&format!("{repo}/{image}-{arch}")), [format!("linux/{arch}")]);
        }
    }
    let slow_log = log_of(&setup, "slow");
    assert_eq!(
        slow_log.matches("+ DOCKER_BUILDKIT=1 docker buildx stop default").count(),
        2,
        "split builds:\n{slow_log}"
    );
    // Each platform built twice: without pushing, then again with the push.
    assert_eq!(distinct_builds(&slow_log).len(), 4, "{slow_log}");
    assert!(
        slow_log.contains(
            "imagetools create --builder default --annotation 'index:dev.multi-arch-docker.inputs=sha256:"
        ) && slow_log.contains(&format!(" --tag {repo}/slow:2 {repo}/slow:2-amd64 {repo}/slow:2-arm64")),
        "{slow_log}"
    );

    // 2. A late change with the engine's build cache emptied: the early steps come from the
    //    registry cache, for both platforms.
    let first = digest(&format!("{repo}/hello:1"));
    std::fs::write(setup.dir.path().join("catalog/hello/late.txt"), "second\n").unwrap();
    setup.xtask_ok(&["prune"], &[]);
    let output = setup.xtask_ok(&["buildx-publish-hello"], &[]);
    let log = stderr(&output);
    for arch in ["amd64", "arm64"] {
        assert!(log.contains(&format!("importing cache manifest from {repo}/cache/hello:1-{arch}")), "{log}");
    }
    let (headers, longest) = steps_and_longest(&log, "RUN sleep 3");
    assert!(headers >= 2 && longest < 2.5, "the expensive step, cached on both platforms:\n{log}");
    assert_ne!(digest(&format!("{repo}/hello:1")), first, "the new image was pushed");

    // 3. A failing image is reported with the end of its log; the others still finish.
    let output = setup.xtask(&["publish-all", "--logs", &logs], &[("FAIL", "1")]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}\n{}", stderr(&output));
    assert!(out.contains(&format!("up to date  hello -> {repo}/hello:1")), "unchanged, not rebuilt: {out}");
    let failed = out.lines().find(|l| l.starts_with("FAILED      slow:")).unwrap_or_else(|| panic!("{out}"));
    assert!(failed.contains("log: "), "{failed}");
    assert!(
        out.lines().any(|l| l.starts_with("  | ") && l.contains("test \"$FAIL\" = 0")),
        "log tail:\n{out}"
    );

    // 4. The single-platform tasks: build, pull, clean.
    setup.xtask_ok(&["build-hello"], &[]);
    run("docker", &["image", "inspect", &format!("{repo}/hello:1")]);
    setup.xtask_ok(&["pull-hello"], &[]);
    setup.xtask_ok(&["pull-slow"], &[]);
    setup.xtask_ok(&["clean"], &[]);
    for image in ["hello:1", "slow:2"] {
        let inspect = std::process::Command::new("docker")
            .args(["image", "inspect", &format!("{repo}/{image}")])
            .output()
            .unwrap();
        assert!(!inspect.status.success(), "clean left {image}");
    }
    let ls = stdout(&setup.xtask_ok(&["buildx-ls"], &[]));
    assert!(ls.contains("default"), "{ls}");

    // 5. seed-arm64: the pipeline's builds, arm64 only, under seed tags, into the same caches.
    let output = setup.xtask_ok(&["seed-arm64", "--yes"], &[]);
    let log = stderr(&output);
    for (image, tag) in [("hello", "1"), ("slow", "2")] {
        let seeded = format!("{repo}/{image}:{tag}-arm64-seed");
        assert_eq!(platforms(&seeded), ["linux/arm64"], "{seeded}");
        assert_eq!(built_on(&seeded, "linux/arm64"), "aarch64");
        // The very cache ref the arm64 half of the pipeline's builds reads.
        assert!(
            log.contains(&format!("type=registry,ref={repo}/cache/{image}:{tag}-arm64,mode=max")),
            "{log}"
        );
    }
}

/// The stand-in VM's name: `ssh-tunnel` writes the ssh config of its host, `xtask-<vm>`, under
/// `$HOME/.ssh` and includes it from this account's `~/.ssh/config` (docker runs `ssh`, which
/// reads only that).
const VM: &str = "e2e-arm";

/// The tunnel `ssh-tunnel` opened (its master connection, in the background) and the ssh config
/// it wrote: ended and removed when dropped.
struct Tunnel {
    _included: common::IncludedSshConfig,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let host = format!("xtask-{VM}");
        let _ = std::process::Command::new("ssh").args(["-O", "exit", &host]).output();
    }
}

/// The pipeline with two engines: this one builds linux/amd64, a second one (the arm64 VM's
/// stand-in, with no TCP listener) builds linux/arm64, reached as docker context `arm_node`,
/// `ssh://` through a real sshd set up as ARM64_BUILDER.md says (the tunnel user's sessions all
/// forced to `docker system dial-stdio`) and a fake gcloud's IAP. Each platform has its own
/// registry cache, and the halves are merged into one index. After both engines' caches are
/// emptied and a late file changes, both platforms take the expensive early step from their
/// registry caches.
#[test]
fn each_platform_builds_on_its_own_engine_through_the_tunnel() {
    let Some((_turn, setup)) = take_engine("each_platform_builds_on_its_own_engine_through_the_tunnel")
    else {
        return;
    };
    let vm_engine = SecondEngine::start("xtask-e2e0");
    let sshd = TestSshd::start(&vm_engine.socket());
    // The VM's engine listens on its unix socket alone.
    let listening = run("ss", &["-ltnpH"]);
    assert!(
        !listening.contains(&format!("pid={},", vm_engine.pid())),
        "dockerd listens on TCP:\n{listening}"
    );
    // A HOME of the test's own, as Cloud Build's is not the account's.
    let home = setup.dir.path().join("home");
    let _tunnel = Tunnel { _included: common::IncludedSshConfig { dir: home.clone() } };

    // gcloud, faked, on PATH before the real docker and ssh; a docker config of the test's own
    // for the `arm_node` context and the builders.
    let fake = setup.dir.path().join("fake");
    std::fs::create_dir_all(fake.join("bin")).unwrap();
    std::fs::write(fake.join("bin/gcloud"), FAKE_GCLOUD).unwrap();
    std::fs::set_permissions(fake.join("bin/gcloud"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let docker_config = setup.dir.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let path = format!("{}:{}", fake.join("bin").display(), std::env::var("PATH").unwrap());
    let (fake_vm, ssh_port, config) =
        (fake.display().to_string(), sshd.port.to_string(), docker_config.display().to_string());
    let (key, home_text) = (sshd.key().display().to_string(), home.display().to_string());
    let repo = format!("{}/e2e", setup.destination.host());
    let env: Vec<(&str, &str)> = vec![
        ("PATH", &path),
        ("FAKE_VM", &fake_vm),
        ("FAKE_VM_SSH_PORT", &ssh_port),
        ("DOCKER_CONFIG", &config),
        ("ENV", "e2e"),
        ("DOCKER_REPO", &repo),
        ("ARM64_VM", VM),
        ("ARM64_USER", TUNNEL_USER),
        ("ARM64_SSH_KEY", &key),
        ("HOME", &home_text),
        ("BUILD_ID", "e2e"),
    ];
    // Later settings win: these replace Setup's ENV=local and its DOCKER_REPO.
    let xtask = |args: &[&str], more: &[(&str, &str)]| setup.xtask_ok(args, &[&env[..], more].concat());
    let docker = |args: &[&str]| {
        std::process::Command::new("docker").args(args).env("DOCKER_CONFIG", &config).output().unwrap()
    };

    // The VM, vendoring, the tunnel: the ssh connection and the `arm_node` context on it.
    xtask(&["start-vm", "--wait", "--interval", "0.2"], &[]);
    let list = setup.dir.path().join("busybox.txt");
    std::fs::write(&list, format!("{}/busybox: 1.35\n", setup.upstream.host())).unwrap();
    xtask(&["thirdparty", "--file", &list.display().to_string()], &[]);
    xtask(&["ssh-tunnel", "--wait", "--interval", "0.2"], &[]);
    let context = String::from_utf8_lossy(&docker(&["context", "inspect", "arm_node"]).stdout).into_owned();
    assert!(context.contains(&format!("\"Host\": \"ssh://xtask-{VM}\"")), "{context}");
    let info = stdout(&xtask(&["info"], &[("MULTI_CONTEXT", "1")]));
    assert!(
        info.contains(&format!(
            "Builds of linux/arm64: on the engine of docker context arm_node, VM {VM}, builder arm_node"
        )),
        "{info}"
    );

    // hello gets a test: each platform's image runs `uname -m` on the engine that built it.
    let catalog = std::fs::read_to_string(setup.path("images.toml")).unwrap();
    let catalog = catalog.replace(
        "description = \"a RUN per platform\"",
        "description = \"a RUN per platform\"\ntest = \"sh tests/arch.sh\"",
    );
    std::fs::write(setup.path("images.toml"), catalog).unwrap();
    std::fs::create_dir_all(setup.path("tests")).unwrap();
    std::fs::write(setup.path("tests/arch.sh"), ARCH_TEST).unwrap();
    let since = unix_now();

    // Cold: each platform on its engine, tested there, merged.
    let reference = format!("{repo}/hello:1");
    let started = std::time::Instant::now();
    let output = xtask(&["buildx-publish-hello"], &[("MULTI_CONTEXT", "1")]);
    let cold = started.elapsed();
    let log = stderr(&output);
    // The arm64 test's container ran on the VM's engine, and no such container here.
    let until = unix_now() + 1;
    let started_containers = |docker: &dyn Fn(&[&str]) -> std::process::Output, platform: &str| {
        let label = format!("label=xtask.test={platform}");
        let (since, until) = (since.to_string(), until.to_string());
        let events = docker(&[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--filter",
            &label,
            "--format",
            "{{.Actor.Attributes.name}}",
        ]);
        String::from_utf8_lossy(&events.stdout).lines().count()
    };
    let vm_docker = |args: &[&str]| vm_engine.docker(args);
    assert_eq!(started_containers(&vm_docker, "linux/arm64"), 1, "the arm64 test on the VM's engine:\n{log}");
    assert_eq!(started_containers(&docker, "linux/arm64"), 0, "an arm64 test container here:\n{log}");
    assert_eq!(started_containers(&docker, "linux/amd64"), 1, "the amd64 test here:\n{log}");
    assert!(
        log.contains("DOCKER_CONTEXT=arm_node") && log.contains("PLATFORM=linux/arm64 sh tests/arch.sh"),
        "{log}"
    );
    assert!(log.contains("+ DOCKER_BUILDKIT=1 docker --context arm_node buildx build"), "{log}");
    assert!(steps_and_longest(&log, "RUN sleep 3").1 >= 3.0, "the cold build ran the expensive step:\n{log}");
    assert_eq!(platforms(&reference), ["linux/amd64", "linux/arm64"]);
    let index: serde_json::Value = serde_json::from_slice(&skopeo_raw(&reference).unwrap()).unwrap();
    let attestations =
        index["manifests"].as_array().unwrap().iter().filter(|m| m["platform"]["os"] == "unknown").count();
    assert_eq!(attestations, 2, "the merge keeps each half's attestation manifest: {index}");
    // The arm64 half was built, and stored, by the second engine only.
    let arm_image = format!("{reference}-arm64");
    assert!(vm_engine.docker(&["image", "inspect", &arm_image]).status.success(), "not on the VM's engine");
    assert!(!docker(&["image", "inspect", &arm_image]).status.success(), "built here too");
    assert!(docker(&["image", "inspect", &format!("{reference}-amd64")]).status.success());
    assert!(!vm_engine.docker(&["image", "inspect", &format!("{reference}-amd64")]).status.success());
    // The run's lease on the VM was taken and given back.
    let leases =
        vm_engine.docker(&["volume", "ls", "--quiet", "--filter", "label=dev.multi-arch-docker.lease"]);
    assert_eq!(String::from_utf8_lossy(&leases.stdout).trim(), "", "a lease was left behind");
    assert!(stderr(&output).contains("docker --context arm_node volume create"), "{}", stderr(&output));
    assert_eq!(built_on(&reference, "linux/arm64"), "aarch64");

    // Both engines' build caches emptied, a late file changed: the registry caches serve.
    xtask(&["prune"], &[("MULTI_CONTEXT", "1")]);
    std::fs::write(setup.dir.path().join("catalog/hello/late.txt"), "changed\n").unwrap();
    let started = std::time::Instant::now();
    let output = xtask(&["buildx-publish-hello"], &[("MULTI_CONTEXT", "1")]);
    let rebuild = started.elapsed();
    let log = stderr(&output);
    for arch in ["amd64", "arm64"] {
        assert!(log.contains(&format!("importing cache manifest from {repo}/cache/hello:1-{arch}")), "{log}");
    }
    let (headers, longest) = steps_and_longest(&log, "RUN sleep 3");
    assert!(headers >= 2 && longest < 2.5, "the expensive step, from the caches on both platforms:\n{log}");
    assert!(rebuild < cold, "the rebuild ({rebuild:?}) took longer than the cold build ({cold:?})");
    eprintln!("cold build {cold:.1?}, rebuild after a late change with empty local caches {rebuild:.1?}");

    xtask(&["stop-vm"], &[]);
    let calls = std::fs::read_to_string(fake.join("calls")).unwrap();
    assert!(calls.contains("compute instances stop"), "{calls}");
}
