//! The arm64 VM's side, on this machine's stand-ins: the tunnel key can do one thing (a real
//! sshd with the startup script's config), the idle timer's script (builder-vm/startup.sh's text) powers
//! off when idle and not when busy, and the pipeline, run step by step as Cloud Build would
//! with fake `gcloud`, `docker` and `ssh`, never leaves the VM running after a failed build and
//! never stops it under another pipeline's builds.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::engine::{
    SecondEngine, TUNNEL_USER, TestSshd, engine_or_skip, root_or_skip, startup_script_file,
};
use common::{FakeTools, stderr, stdout};

/// The tunnel user and sshd are this machine's: one test at a time.
static VM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn turn() -> std::sync::MutexGuard<'static, ()> {
    VM.lock().unwrap_or_else(|e| e.into_inner())
}

/// The processes of the tunnel user, as the idle script sees them.
fn tunnel_sessions() -> usize {
    let out = Command::new("pgrep").args(["-u", TUNNEL_USER]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Through the key Cloud Build holds: no command or shell runs (every session is the forced
/// `docker system dial-stdio`), no TTY, no forward to a port or a socket, and root does not log
/// in at all.
#[test]
fn the_tunnel_key_reaches_the_engine_and_nothing_else() {
    if !root_or_skip("the_tunnel_key_reaches_the_engine_and_nothing_else") {
        return;
    }
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("no-engine.sock");
    let sshd = TestSshd::start(&socket);

    // A command: what runs is dial-stdio (which finds no engine here), never the command.
    let output = sshd.ssh(TUNNEL_USER, &[]).args(["id", ";", "echo", "shell-ran"]).output().unwrap();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(!out.contains("uid=") && !out.contains("shell-ran"), "{out}");
    assert!(err.contains("no-engine.sock"), "the forced command ran: {err}");
    // A terminal is refused.
    let output = sshd.ssh(TUNNEL_USER, &["-tt"]).output().unwrap();
    assert!(!stdout(&output).contains("$ "), "{}", stdout(&output));
    assert!(sshd.log().contains("not allowed") || stderr(&output).contains("PTY allocation request failed"));
    // Root: refused outright.
    let output = sshd.ssh("root", &[]).arg("true").output().unwrap();
    assert_eq!(output.status.code(), Some(255), "{}", stderr(&output));

    // Forwards: to sshd's own port, to this machine's engine socket. The local ends open, and
    // every connection through them is refused at the VM's end.
    let ports: Vec<u16> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port())
        .collect();
    let tcp = format!("127.0.0.1:{}:127.0.0.1:{}", ports[0], sshd.port);
    let unix = format!("127.0.0.1:{}:/var/run/docker.sock", ports[1]);
    let mut forward = sshd
        .ssh(TUNNEL_USER, &["-N", "-o", "ExitOnForwardFailure=yes", "-L", &tcp, "-L", &unix])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for port in &ports {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], *port));
        wait_until("the forward's local end listens", || std::net::TcpStream::connect(addr).is_ok());
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        use std::io::{Read, Write};
        let _ = stream.write_all(b"GET /_ping HTTP/1.0\r\n\r\n");
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        assert!(answer.is_empty(), "a forward went through: {}", String::from_utf8_lossy(&answer));
    }
    let _ = forward.kill();
    let _ = forward.wait();
    let log = sshd.log();
    assert!(log.contains("refused local port forward"), "{log}");
    assert!(log.contains("refused streamlocal port forward"), "{log}");
}

/// The startup script's idle script, on the VM stand-in: busy while a session of the tunnel user
/// is open (a pipeline's tunnel), idle once it is closed; powers off after its idle minutes, not
/// before, and removes the leases of pipelines that never ended.
#[test]
fn the_idle_timer_powers_off_an_idle_vm_and_only_then() {
    if !root_or_skip("the_idle_timer_powers_off_an_idle_vm_and_only_then")
        || !engine_or_skip("the_idle_timer_powers_off_an_idle_vm_and_only_then")
    {
        return;
    }
    let _turn = turn();
    let engine = SecondEngine::start("xtask-idle0");
    let sshd = TestSshd::start(&engine.socket());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("buildx-idle-poweroff");
    std::fs::write(&script, startup_script_file("buildx-idle-poweroff")).unwrap();
    let (state, off) = (dir.path().join("idle-since"), dir.path().join("powered-off"));
    let idle_run = |minutes: &str| {
        let output = Command::new("sh")
            .arg(&script)
            .env("IDLE_MINUTES", minutes)
            .env("TUNNEL_USER", TUNNEL_USER)
            .env("STATE", &state)
            .env("DOCKER_SOCKET", engine.socket())
            .env("POWEROFF", format!("touch {}", off.display()))
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    // A stale lease, of a pipeline that was cancelled.
    let lease = engine.docker(&[
        "volume",
        "create",
        "--label",
        "dev.multi-arch-docker.lease=gone",
        "xtask-lease-gone",
    ]);
    assert!(lease.status.success());

    // Busy: a pipeline's tunnel is open.
    let mut tunnel =
        sshd.ssh(TUNNEL_USER, &["-N"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("the tunnel's session is open", || tunnel_sessions() > 0);
    assert_eq!(idle_run("0"), format!("busy: {TUNNEL_USER} has a session open\n"));
    assert!(!off.exists() && !state.exists(), "busy is not idle");

    // The tunnel closed: idle from now on; not yet long enough, then long enough.
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    wait_until("the tunnel's session is gone", || tunnel_sessions() == 0);
    assert_eq!(idle_run("1"), "idle for 0 of 1 minutes\n");
    assert!(state.exists() && !off.exists());
    let since: u64 = std::fs::read_to_string(&state).unwrap().trim().parse().unwrap();
    std::fs::write(&state, format!("{}\n", since - 61)).unwrap();
    assert_eq!(idle_run("1"), "idle for 1 minutes: powering off\n");
    assert!(off.exists(), "POWEROFF ran");
    let leases = engine.docker(&["volume", "ls", "--quiet", "--filter", "label=dev.multi-arch-docker.lease"]);
    assert_eq!(stdout(&leases).trim(), "", "the stale lease went with the VM");
}

/// The fakes of a pipeline run: `gcloud` (the VM: RUNNING when asked, ssh through IAP answering),
/// `docker` (its engines, and the VM's engine answering through the tunnel), `ssh`, and a
/// registry with the list's one base, as upstream and as `DOCKER_REPO`.
struct Pipeline {
    fake: FakeTools,
    registry: xtask_testbed::TestRegistry,
    catalog: tempfile::TempDir,
}

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"
[versions]
V = "1"
[[image]]
name = "good"
description = "builds"
tag = "{V}"
[[image]]
name = "bad"
description = "fails"
tag = "{V}"
[cloud_builder]
name = "good"
description = "unused"
tag = "1"
"#;

impl Pipeline {
    fn new() -> Pipeline {
        let fake = FakeTools::new();
        fake.print("gcloud compute instances describe", "RUNNING");
        fake.print("docker --context arm_node version", "26.1.5");
        let registry = xtask_testbed::TestRegistry::start().unwrap();
        for (seed, (path, tag)) in [("alpine", "3.15"), ("moby/buildkit", "v0.18.0")].into_iter().enumerate()
        {
            let fixture =
                xtask_testbed::Fixture::generate(&xtask_testbed::FixtureSpec::small(seed as u64)).unwrap();
            fixture.push(&registry.host(), path, tag).unwrap();
        }
        let catalog = tempfile::tempdir().unwrap();
        let dir = catalog.path();
        std::fs::write(dir.join("images.toml"), CATALOG).unwrap();
        let up = registry.host();
        std::fs::write(
            dir.join("thirdparty.txt"),
            format!("{up}/alpine: 3.15\n{up}/moby/buildkit: v0.18.0\n"),
        )
        .unwrap();
        std::fs::write(dir.join("pipeline.yaml"), "steps: []\n").unwrap();
        for image in ["good", "bad"] {
            std::fs::create_dir_all(dir.join(image)).unwrap();
            std::fs::write(
                dir.join(image).join("Dockerfile"),
                "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/thirdparty/alpine:3.15\n",
            )
            .unwrap();
        }
        Pipeline { fake, registry, catalog }
    }

    /// The settings every run gets: this catalog, the registry, the fakes.
    fn env(&self) -> Vec<(String, String)> {
        let dir = self.fake.dir.path();
        [
            ("CATALOG", self.catalog.path().join("images.toml").display().to_string()),
            ("DOCKER_REPO", format!("{}/dev", self.registry.host())),
            ("HOME", self.fake.home().display().to_string()),
            ("CARGO_TARGET_DIR", dir.join("target").display().to_string()),
        ]
        .map(|(k, v)| (k.to_string(), v))
        .to_vec()
    }

    /// The VM calls gcloud saw, in order (`start`, `stop`).
    fn vm_calls(&self) -> Vec<String> {
        self.fake
            .calls()
            .iter()
            .filter(|c| {
                c[0] == "gcloud" && c.get(1..3) == Some(&["compute".to_string(), "instances".to_string()][..])
            })
            .map(|c| c[3].clone())
            .filter(|action| action != "describe")
            .collect()
    }
}

/// `cloudbuild/pr.yaml`'s steps, one after another as Cloud Build runs them, each in bash with
/// its environment and the substitutions filled in; the run stops at the first failing step, as
/// Cloud Build's does. One image fails: the VM the images step started is stopped all the same,
/// in that step, and the build fails.
#[test]
fn a_failed_build_stops_the_vm_it_started() {
    let pipeline = Pipeline::new();
    // The bad image's amd64 build fails.
    let catalog = pipeline.catalog.path().display().to_string();
    pipeline.fake.fail(3, &format!("docker buildx build --file {catalog}/bad/Dockerfile"));
    // The lock the pipeline's `thirdparty --locked` needs, as a reviewed pull request has it.
    let env = pipeline.env();
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let locked = pipeline.fake.xtask(&["thirdparty"], &env_refs);
    assert!(locked.status.success(), "{}", stderr(&locked));

    // A fake `cargo`: `cargo xtask …` is the xtask under test; `cargo build …` has nothing to do.
    let bin = pipeline.fake.bin();
    std::fs::write(
        bin.join("cargo"),
        format!("#!/bin/sh\nif [ \"$1\" = xtask ]; then shift; exec {} \"$@\"; fi\nexit 0\n", common::XTASK),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("cargo"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let builder_home = pipeline.fake.dir.path().join("builder-home");
    std::fs::create_dir_all(builder_home.join(".ssh")).unwrap();
    for key in ["google_compute_engine", "google_compute_engine.pub"] {
        // What `gcloud secrets versions access --out-file` writes, which the fake does not.
        std::fs::write(builder_home.join(".ssh").join(key), "key\n").unwrap();
    }

    let pipeline_yaml =
        xtask::pipeline::Pipeline::load(&xtask::project_root(), Path::new("cloudbuild/pr.yaml")).unwrap();
    let substitutions = [
        ("${PROJECT_ID}", "test-project"),
        ("${BUILD_ID}", "b-1"),
        ("${_ENV}", "docker-dev"),
        ("${_AUTO_START_STOP}", "1"),
        ("${_ARM64_VMS}", ""),
        ("${_BUILDS_PER_NODE}", ""),
        ("${_REFRESH}", ""),
        ("${_RELEASE}", "each"),
        // The fake docker pushes nothing, so there is no digest to sign (the end-to-end tests sign).
        ("${_SIGN_KEY}", ""),
        ("${_SCAN_FAIL_ON}", "CRITICAL"),
        ("${_CLOUDBUILD_IMAGE}", "builder"),
    ];
    let fill = |text: &str| {
        let mut text = text.replace("/builder/home", &builder_home.display().to_string());
        for (name, value) in substitutions {
            text = text.replace(name, value);
        }
        text.replace("$$", "$")
    };
    let options_env: Vec<String> =
        ["GCP_PROJECT=${PROJECT_ID}", "ENV=${_ENV}"].iter().map(|e| fill(e)).collect();
    let mut failed_at = None;
    for step in &pipeline_yaml.steps {
        let (program, args): (String, Vec<String>) = match step.entrypoint.as_deref() {
            Some(entrypoint) => (entrypoint.to_string(), step.args.iter().map(|a| fill(a)).collect()),
            None => panic!("step {:?} has no entrypoint", step.id),
        };
        let mut command = Command::new(&program);
        command.args(&args).env_clear();
        command.env("PATH", pipeline.fake.path()).env("HOME", &builder_home);
        command.env("FAKE_TOOLS_DIR", pipeline.fake.dir.path());
        for (name, value) in &env {
            command.env(name, value);
        }
        for entry in options_env.iter().chain(&step.env.iter().map(|e| fill(e)).collect::<Vec<_>>()) {
            let (name, value) = entry.split_once('=').unwrap();
            command.env(name, value);
        }
        let output = command.output().unwrap();
        if !output.status.success() {
            failed_at = Some((step.id.clone().unwrap(), stdout(&output), stderr(&output)));
            break;
        }
    }
    let (step, out, err) = failed_at.expect("the build fails");
    assert_eq!(step, "images", "{out}\n{err}");
    assert!(out.contains("FAILED      bad:") && out.contains("published   good"), "{out}\n{err}");
    assert!(err.contains("1 of 2 images failed"), "{err}");
    assert_eq!(pipeline.vm_calls(), ["start", "stop"], "started for the arm64 builds, stopped after them");
    assert!(err.contains("volume rm xtask-lease-b-1"), "the lease given back: {err}");
}

/// Two pipelines at once on one VM: the first to finish sees the other's lease and leaves the VM
/// running; the last one stops it.
#[test]
fn overlapping_pipelines_never_stop_the_vm_under_each_other() {
    let pipeline = Pipeline::new();
    // The arm64 builds take a while: long enough for the second run to take its lease.
    pipeline.fake.slow("docker --context arm_node buildx build", 4.0);
    let env = pipeline.env();
    let run = |build_id: &str| {
        let mut all: Vec<(String, String)> = env.clone();
        all.extend(
            [("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1"), ("BUILD_ID", build_id)]
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        all.push(("PATH".into(), pipeline.fake.path()));
        all.push(("FAKE_TOOLS_DIR".into(), pipeline.fake.dir.path().display().to_string()));
        let mut command = common::xtask_command(&["publish-all", "--file"], &[]);
        command.arg(pipeline.catalog.path().join("thirdparty.txt"));
        command.envs(all).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.spawn().unwrap()
    };
    let first = run("first");
    let lease = pipeline.fake.dir.path().join("volumes/xtask-lease-first");
    wait_until("the first pipeline holds its lease", || lease.exists());
    let second = run("second");
    let second_lease = pipeline.fake.dir.path().join("volumes/xtask-lease-second");
    wait_until("the second pipeline holds its lease", || second_lease.exists());
    let first = first.wait_with_output().unwrap();
    let calls_when_first_ended = pipeline.vm_calls();
    let second = second.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&first).contains("stays up: 1 other pipeline(s) have a lease on it (xtask-lease-second)"),
        "{}",
        stdout(&first)
    );
    assert!(
        !calls_when_first_ended.contains(&"stop".to_string()),
        "stopped under the second: {calls_when_first_ended:?}"
    );
    assert_eq!(pipeline.vm_calls(), ["start", "start", "stop"], "the last one stops it");
    assert!(!lease.exists() && !second_lease.exists(), "both leases given back");
}

/// `publish-all` as the pipeline's images step runs it (MULTI_CONTEXT=1, AUTO_START_STOP=1) on
/// the fakes, with `more` settings.
fn images_step(pipeline: &Pipeline, more: &[(&str, &str)]) -> std::process::Output {
    let mut env: Vec<(String, String)> = pipeline.env();
    env.extend(
        [("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1"), ("BUILD_ID", "b-2")]
            .iter()
            .chain(more)
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let list = pipeline.catalog.path().join("thirdparty.txt").display().to_string();
    pipeline.fake.xtask(&["publish-all", "--file", &list, "--vm-tries", "2", "--vm-interval", "0"], &env)
}

/// A VM this run started is stopped on every way out, whatever part of its setup failed after
/// the start: the wait for it, the tunnel, the lease, giving the lease back. Before the fix each
/// of these returned before the stop.
#[test]
fn a_vm_this_run_started_is_stopped_on_every_way_out() {
    // What breaks, what is said, and whether the step fails: the builds themselves succeed, so
    // leases that cannot be read afterwards fail nothing.
    type Case = (&'static str, fn(&FakeTools), &'static str, bool);
    let cases: [Case; 4] = [
        (
            "the wait gives up",
            |f| f.fail(255, "gcloud compute ssh"),
            "ssh to builder-arm64-2cpu through IAP",
            true,
        ),
        ("the tunnel fails", |f| f.fail(255, "ssh -f -N"), "ssh -f -N xtask-builder-arm64-2cpu", true),
        (
            "no lease can be taken",
            |f| f.fail(1, "docker --context arm_node volume create"),
            "volume create",
            true,
        ),
        (
            "the lease cannot be given back",
            |f| f.fail(1, "docker --context arm_node volume rm"),
            "this run found it stopped and started it, so it stops it",
            false,
        ),
    ];
    for (case, break_it, said, fails) in cases {
        let pipeline = Pipeline::new();
        // Stopped before the run: this run starts it.
        pipeline.fake.answer("gcloud compute instances describe", 0, "TERMINATED");
        break_it(&pipeline.fake);
        let output = images_step(&pipeline, &[]);
        let (out, err) = (stdout(&output), stderr(&output));
        assert_eq!(!output.status.success(), fails, "{case}: the step's outcome:\n{out}\n{err}");
        assert_eq!(pipeline.vm_calls(), ["start", "stop"], "{case}:\n{out}\n{err}");
        assert!(out.contains(said) || err.contains(said), "{case}: {said:?} not said:\n{out}\n{err}");
    }
}

/// The leases cannot be read and the VM was already up when the run began (another pipeline's,
/// maybe): it is left to its idle timer, and the run says so.
#[test]
fn a_vm_found_running_is_left_up_when_its_leases_cannot_be_read() {
    let pipeline = Pipeline::new();
    pipeline.fake.answer("gcloud compute instances describe", 0, "RUNNING");
    pipeline.fake.fail(1, "docker --context arm_node volume ls");
    let output = images_step(&pipeline, &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "the builds succeeded: {}", stderr(&output));
    assert_eq!(pipeline.vm_calls(), ["start"], "{out}");
    assert!(out.contains("it was not this run that started it: its idle timer stops it"), "{out}");
}

/// A failed build stays the error reported, with its exit status, when the stop fails after
/// it: the stop's failure is added, not put in its place.
#[test]
fn a_failed_stop_is_added_to_the_build_error_not_put_in_its_place() {
    let pipeline = Pipeline::new();
    let catalog = pipeline.catalog.path().display().to_string();
    pipeline.fake.fail(3, &format!("docker buildx build --file {catalog}/bad/Dockerfile"));
    pipeline.fake.fail(9, "gcloud compute instances stop");
    let output = images_step(&pipeline, &[]);
    let err = stderr(&output);
    assert_eq!(pipeline.vm_calls(), ["start", "stop"], "{err}");
    let reported = &err[err.rfind("error: ").expect("an error is reported")..];
    assert!(reported.starts_with("error: 1 of 2 images failed"), "the build's error first: {reported}");
    assert!(reported.contains("and then: builder-arm64-2cpu could not be stopped"), "{reported}");
    assert!(reported.contains("exit status 9: gcloud compute instances stop"), "{reported}");

    // One image: the build's own exit status is the task's.
    let one = Pipeline::new();
    one.fake.fail(3, &format!("docker buildx build --file {}/bad/Dockerfile", one.catalog.path().display()));
    one.fake.fail(9, "gcloud compute instances stop");
    let mut env: Vec<(String, String)> = one.env();
    env.extend(
        [("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1")].map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let locked = one
        .fake
        .xtask(&["thirdparty", "--file", &format!("{}/thirdparty.txt", one.catalog.path().display())], &env);
    assert!(locked.status.success(), "{}", stderr(&locked));
    let output = one.fake.xtask(&["buildx-publish-bad", "--vm-tries", "2", "--vm-interval", "0"], &env);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(one.vm_calls(), ["start", "stop"]);
}

/// Only a node that is up can say which builder it needs. The arm64 node is asked once the run
/// has started it, never before (before the fix, `thirdparty --bases` asked it first, got no
/// answer, took it for a classic engine and required the BuildKit image). A node that reports
/// the containerd store needs no BuildKit image, so a list without one builds; a node that
/// reports the classic store gets it vendored then.
#[test]
fn the_arm64_node_says_which_builder_it_needs_once_it_is_up() {
    let containerd = r#"[["driver-type","io.containerd.snapshotter.v1"]]"#;
    for (store, buildkit_vendored) in [(containerd, false), ("[]", true)] {
        let pipeline = Pipeline::new();
        pipeline.fake.print("docker info", containerd);
        pipeline.fake.print("docker --context arm_node info", store);
        let list = pipeline.catalog.path().join("thirdparty.txt");
        if !buildkit_vendored {
            // A list that vendors no BuildKit image at all.
            std::fs::write(&list, format!("{}/alpine: 3.15\n", pipeline.registry.host())).unwrap();
        }
        let output = images_step(&pipeline, &[]);
        let (out, err) = (stdout(&output), stderr(&output));
        assert!(output.status.success(), "{store}:\n{out}\n{err}");
        let calls = pipeline.fake.calls();
        let position = |words: &[&str]| calls.iter().position(|c| c.windows(words.len()).any(|w| w == words));
        let started = position(&["instances", "start"]).expect("the VM is started");
        let asked = position(&["--context", "arm_node", "info"]).expect("the node is asked");
        assert!(asked > started, "{store}: the node was asked before it was started: {calls:?}");
        let buildkit = format!("{}/dev/thirdparty/moby/buildkit:v0.18.0", pipeline.registry.host());
        assert_eq!(
            xtask_testbed::skopeo_raw(&buildkit).is_ok(),
            buildkit_vendored,
            "{store}: BuildKit vendored?\n{out}\n{err}"
        );
        let created = calls.iter().any(|c| c.iter().any(|w| w == "docker-container"));
        assert!(!created || buildkit_vendored, "a builder container without the classic store: {calls:?}");
    }
}

/// A Ctrl-C at a terminal (SIGINT to the whole job) or a SIGTERM to the xtask alone (as
/// `docker stop` or a rehearsal's timeout sends it) in the middle of the arm64 builds: the
/// builds are interrupted, the lease given back and the VM that this run started is stopped;
/// the run fails. Without the deferral, the process ended where it stood and the VM ran on.
#[test]
fn an_interrupted_run_stops_the_vm_it_started() {
    use std::os::unix::process::CommandExt;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let pipeline = Pipeline::new();
        pipeline.fake.answer("gcloud compute instances describe", 0, "TERMINATED");
        pipeline.fake.slow("docker --context arm_node buildx build", 30.0);
        let mut env: Vec<(String, String)> = pipeline.env();
        env.extend(
            [("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1"), ("BUILD_ID", "int")]
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env.push(("PATH".into(), pipeline.fake.path()));
        env.push(("FAKE_TOOLS_DIR".into(), pipeline.fake.dir.path().display().to_string()));
        let list = pipeline.catalog.path().join("thirdparty.txt");
        let mut command = common::xtask_command(&["publish-all", "--vm-interval", "0", "--file"], &[]);
        command.arg(&list).envs(env).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, as a shell gives a job.
        command.process_group(0);
        let child = command.spawn().unwrap();
        let pid = child.id() as i32;
        let running = pipeline.fake.dir.path().join("running");
        wait_until("an arm64 build runs", || {
            std::fs::read_dir(&running).is_ok_and(|mut d| d.next().is_some())
        });
        let started = Instant::now();
        // SAFETY: signalling the group (Ctrl-C) or the process (SIGTERM) the test started.
        unsafe {
            if signal == libc::SIGINT {
                libc::kill(-pid, signal);
            } else {
                libc::kill(pid, signal);
            }
        }
        let output = child.wait_with_output().unwrap();
        assert!(!output.status.success(), "signal {signal}: {}", stderr(&output));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "signal {signal}: the builds were not interrupted: {}",
            stderr(&output)
        );
        assert_eq!(pipeline.vm_calls(), ["start", "stop"], "signal {signal}: {}", stderr(&output));
        assert!(!pipeline.fake.dir.path().join("volumes/xtask-lease-int").exists(), "the lease stayed");
    }
}

/// The account's ssh config as a run found it: the images step's `Include` (of its own home)
/// goes on the way out, and a developer's `Include` of the same VM from another home stays
/// where it was, then and during the run.
#[test]
fn the_images_step_leaves_the_account_ssh_config_as_it_found_it() {
    let pipeline = Pipeline::new();
    let developer = tempfile::tempdir().unwrap();
    let theirs = developer.path().join("multi-arch-docker-builder-arm64-2cpu.conf");
    std::fs::write(&theirs, "Host xtask-builder-arm64-2cpu\n  User me\n").unwrap();
    let their_line = format!("Include {}", theirs.display());
    let _theirs = common::IncludedSshConfig { dir: developer.path().to_path_buf() };
    let config = common::account_ssh_config();
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    let before = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(&config, format!("{before}{their_line}\n")).unwrap();

    // While the run holds the tunnel, its Include comes first and theirs is still there.
    pipeline.fake.slow("docker --context arm_node buildx build", 2.0);
    let ours =
        format!("Include {}/.ssh/multi-arch-docker-builder-arm64-2cpu.conf", pipeline.fake.home().display());
    let watcher = std::thread::spawn({
        let config = config.clone();
        let (ours, their_line) = (ours.clone(), their_line.clone());
        move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let text = std::fs::read_to_string(&config).unwrap_or_default();
                if text.lines().any(|l| l == ours) {
                    let first = text.lines().position(|l| l == ours).unwrap();
                    let theirs = text.lines().position(|l| l == their_line);
                    return Some((first, theirs));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            None
        }
    });
    let output = images_step(&pipeline, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (first, theirs) = watcher.join().unwrap().expect("the run included its host");
    assert!(theirs.is_some_and(|t| t > first), "theirs kept, below ours: {first} {theirs:?}");
    let after = std::fs::read_to_string(&config).unwrap();
    assert!(!after.lines().any(|l| l == ours), "the run's Include stayed:\n{after}");
    assert!(after.lines().any(|l| l == their_line), "theirs went:\n{after}");
}
