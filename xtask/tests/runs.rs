//! Real runs against fake `docker` and `gcloud` programs on `PATH` that record their arguments
//! and exit with chosen codes.

mod common;

use common::{FakeTools, call, has_arg, stderr, stdout};

/// The probe every build task makes first: which image store the engine uses (the fake answers
/// nothing: the classic store, so builds run in a builder container).
/// The test catalog's folder, where its images' build contexts are.
const C: &str = common::TEST_CATALOG_DIR;

const STORE: &str = "docker DOCKER_BUILDKIT=1 info --format '{{json .DriverStatus}}'";

// The calls a build task makes before it builds, with the default builder: a gcloud token to
// read what is published, the store probe (STORE), the builders, and the default builder.
const TOKEN: &str = "gcloud auth print-access-token";
const LS: &str = "docker DOCKER_BUILDKIT=1 buildx ls";
const INSPECT: &str = "docker DOCKER_BUILDKIT=1 buildx inspect --builder builder-local";

/// The repository of the test settings.
const REPO: &str = "us-docker.pkg.dev/multi-arch-docker/docker-dev";

/// The builder's id the provenance records outside Cloud Build: the machine, by the name the
/// tests give it.
fn builder_id() -> String {
    format!("mode=max,builder-id=host:{}", common::TEST_HOST)
}

/// The one build of runtime for `arch` (`amd64`, `arm64`), pushed, with the default builder.
fn runtime_build(arch: &str) -> Vec<String> {
    call(&format!(
        "docker DOCKER_BUILDKIT=1 buildx build --file {C}/runtime/Dockerfile --platform linux/{arch} \
         --builder builder-local --progress plain --build-arg DOCKER_REPO={REPO} \
         --build-arg ALPINE_VERSION=3.15 --build-arg REFRESH= {} \
         --cache-from type=registry,ref={REPO}/cache/runtime:3.15-{arch} \
         --cache-to type=registry,ref={REPO}/cache/runtime:3.15-{arch},mode=max \
         --pull --provenance {} --push --tag {REPO}/runtime:3.15-{arch} {C}/runtime",
        common::TEST_LABELS,
        builder_id()
    ))
}

/// The merge of runtime's two platforms, with the default builder.
fn runtime_merge() -> Vec<String> {
    call(&format!(
        "docker DOCKER_BUILDKIT=1 buildx imagetools create --builder builder-local \
         --tag {REPO}/runtime:3.15 {REPO}/runtime:3.15-amd64 {REPO}/runtime:3.15-arm64"
    ))
}

/// The first step of odb's split build for `arch`: built, neither pushed nor cached.
fn odb_first_build(arch: &str) -> Vec<String> {
    call(&format!(
        "docker DOCKER_BUILDKIT=1 buildx build --file {C}/odb/Dockerfile --platform linux/{arch} \
         --builder builder-local --progress plain --build-arg DOCKER_REPO={REPO} \
         --build-arg DEBIAN_VERSION=11-slim --build-arg ODB_VERSION=2.5.0-b.23 --build-arg REFRESH= {} \
         --cache-from type=registry,ref={REPO}/cache/odb:2.5.0-b.23-{arch} \
         --pull --provenance {} --tag {REPO}/odb:2.5.0-b.23-{arch} {C}/odb",
        common::TEST_LABELS,
        builder_id()
    ))
}

/// `calls` are exactly `before`, in that order, then `at_once` in any order (the calls made
/// at the same time, on threads of their own), then `after`, in that order.
#[track_caller]
fn assert_calls(
    calls: &[Vec<String>],
    before: &[Vec<String>],
    at_once: &[Vec<String>],
    after: &[Vec<String>],
) {
    let calls: Vec<Vec<String>> = calls.iter().map(|call| without_build_seconds(call)).collect();
    let n = calls.len();
    assert_eq!(n, before.len() + at_once.len() + after.len(), "not the calls expected: {calls:#?}");
    assert_eq!(calls[..before.len()], *before, "{calls:#?}");
    let mut middle = calls[before.len()..n - after.len()].to_vec();
    let mut expected = at_once.to_vec();
    middle.sort();
    expected.sort();
    assert_eq!(middle, expected, "the calls made at once: {calls:#?}");
    assert_eq!(calls[n - after.len()..], *after, "{calls:#?}");
}

/// A merge's call without its record of how long each platform's build took (a real run's
/// times, which a dry run cannot know): what is left compares exactly.
fn without_build_seconds(call: &[String]) -> Vec<String> {
    let record = |arg: &String| arg.starts_with("index:dev.multi-arch-docker.build-seconds=");
    let at = call.iter().position(record);
    call.iter()
        .enumerate()
        .filter(|(i, _)| at.is_none_or(|at| *i != at && *i + 1 != at))
        .map(|(_, arg)| arg.clone())
        .collect()
}

/// The merge records how long each platform's build took, for the next run's critical path.
#[test]
fn the_merge_records_each_platform_build_time() {
    let fake = FakeTools::new();
    fake.slow(&format!("docker buildx build --file {C}/runtime/Dockerfile --platform linux/arm64"), 1.0);
    let output = fake.xtask(&["buildx-publish-runtime"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = fake.calls();
    let merge = calls.last().unwrap();
    let at = merge
        .iter()
        .position(|a| a.starts_with("index:dev.multi-arch-docker.build-seconds="))
        .expect("recorded");
    assert_eq!(merge[at - 1], "--annotation");
    let record = merge[at].split_once('=').unwrap().1;
    let seconds: std::collections::BTreeMap<String, f64> = serde_json::from_str(record).unwrap();
    assert_eq!(seconds.keys().collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"]);
    assert!(seconds["linux/arm64"] >= 1.0 && seconds["linux/amd64"] < seconds["linux/arm64"], "{seconds:?}");
    assert_eq!(without_build_seconds(merge), runtime_merge());
}

#[test]
fn buildx_setup_reuses_an_existing_builder() {
    let fake = FakeTools::new();
    let output = fake.xtask(&["buildx-setup"], &[("BUILDER", "b1")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        fake.calls(),
        [
            call(STORE),
            call("docker DOCKER_BUILDKIT=1 buildx ls"),
            call("docker DOCKER_BUILDKIT=1 buildx inspect --builder b1")
        ]
    );
    assert!(stdout(&output).contains("Using existing builder b1"));
}

#[test]
fn buildx_setup_creates_a_missing_builder() {
    let fake = FakeTools::new();
    fake.fail(1, "docker buildx inspect");
    let output = fake.xtask(&["buildx-setup"], &[("BUILDER", "b2")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        fake.calls(),
        [
            call(STORE),
            call("docker DOCKER_BUILDKIT=1 buildx ls"),
            call("docker DOCKER_BUILDKIT=1 buildx inspect --builder b2"),
            call(
                "docker DOCKER_BUILDKIT=1 buildx create --name b2 --driver docker-container \
                 --driver-opt image=us-docker.pkg.dev/multi-arch-docker/docker-dev/thirdparty/moby/buildkit:v0.18.0"
            ),
        ]
    );
}

/// MULTI_CONTEXT: a builder on each node, each asked on its own engine; where the engine has the
/// containerd store (here the arm64 VM's) its own builder serves and nothing is created.
#[test]
fn buildx_setup_sets_up_each_node() {
    let fake = FakeTools::new();
    fake.fail(1, "docker buildx inspect");
    fake.print("docker --context arm_node info", r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
    let output = fake.xtask(&["buildx-setup", "--multi-context"], &[("BUILDER", "odb")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let image = "image=us-docker.pkg.dev/multi-arch-docker/docker-dev/thirdparty/moby/buildkit:v0.18.0";
    assert_eq!(
        fake.calls(),
        [
            call(STORE),
            call("docker DOCKER_BUILDKIT=1 --context arm_node info --format '{{json .DriverStatus}}'"),
            call("docker DOCKER_BUILDKIT=1 buildx ls"),
            call("docker DOCKER_BUILDKIT=1 buildx inspect --builder odb"),
            call(&format!(
                "docker DOCKER_BUILDKIT=1 buildx create --name odb --driver docker-container --driver-opt {image}"
            )),
        ]
    );
    let out = stdout(&output);
    assert!(
        out.contains("linux/amd64 on this engine: builder odb, the engine uses the classic image store"),
        "{out}"
    );
    assert!(
        out.contains("linux/arm64 on the engine of docker context arm_node: builder arm_node, the engine uses the containerd image store"),
        "{out}"
    );
}

#[test]
fn a_failing_buildx_ls_does_not_stop_the_setup() {
    let fake = FakeTools::new();
    fake.fail(1, "docker buildx ls");
    let output = fake.xtask(&["buildx-setup"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    // The setup goes on to the builder, the default one.
    assert_eq!(fake.calls(), [call(STORE), call(LS), call(INSPECT)]);
}

/// The calls of one platform's build steps, in order.
fn platform_calls(calls: &[Vec<String>], platform: &str) -> Vec<Vec<String>> {
    calls
        .iter()
        .filter(|c| {
            c.get(2..4) == Some(&["buildx".to_string(), "stop".to_string()][..])
                || (c.get(3).is_some_and(|w| w == "build") && has_arg(c, platform))
        })
        .cloned()
        .collect()
}

#[test]
fn split_build_runs_its_three_steps_in_order_on_each_platform() {
    let fake = FakeTools::new();
    let output =
        fake.xtask(&["buildx-publish-odb"], &[("BUILDER_OUTPUT", "/builder/outputs"), ("BUILDER", "odb")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let calls = fake.calls();
    for platform in ["linux/amd64", "linux/arm64"] {
        let steps: Vec<Vec<String>> = platform_calls(&calls, platform);
        // Each platform's stop is among them: build, stop, (other's stop), build.
        let builds: Vec<&Vec<String>> = steps.iter().filter(|c| c[3] == "build").collect();
        assert_eq!(builds.len(), 2, "{calls:?}");
        assert!(!has_arg(builds[0], "--push") && !has_arg(builds[0], "--cache-to"), "{:?}", builds[0]);
        assert!(has_arg(builds[0], "--cache-from"));
        assert!(has_arg(builds[1], "--push") && has_arg(builds[1], "--cache-to"), "{:?}", builds[1]);
        // The full build is the first one plus exactly `--push` and `--cache-to <ref>`.
        assert_eq!(builds[1].len(), builds[0].len() + 3);
        let first = calls.iter().position(|c| c == builds[0]).unwrap();
        let last = calls.iter().position(|c| c == builds[1]).unwrap();
        assert!(
            calls[first..last].contains(&call("docker DOCKER_BUILDKIT=1 buildx stop odb")),
            "the builder stops between the two builds: {calls:?}"
        );
    }
    let merge = calls.last().unwrap();
    assert_eq!(merge[2..5], ["buildx", "imagetools", "create"], "the merge comes last: {calls:?}");
}

#[test]
fn a_failing_command_stops_the_task_with_its_exit_status() {
    let fake = FakeTools::new();
    fake.fail(3, "docker buildx build");
    let output = fake.xtask(&["buildx-publish-odb"], &[("BUILDER_OUTPUT", "/builder/outputs")]);
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    assert!(err.contains(&format!("command failed with exit status 3: DOCKER_BUILDKIT=1 docker buildx build --file {C}/odb/Dockerfile")), "{err}");
    assert!(
        err.contains("so us-docker.pkg.dev/multi-arch-docker/docker-dev/odb:2.5.0-b.23 was not pushed"),
        "{err}"
    );
    // Nothing after the failing first step of each platform's split build ran: no stop, no
    // full build, no merge.
    assert_calls(
        &fake.calls(),
        &[call(TOKEN), call(STORE), call(LS), call(INSPECT)],
        &[odb_first_build("amd64"), odb_first_build("arm64")],
        &[],
    );
}

/// One platform failing is enough: the other finishes, and nothing is merged.
#[test]
fn a_failing_platform_fails_the_task_and_nothing_is_merged() {
    let fake = FakeTools::new();
    fake.fail(4, &format!("docker buildx build --file {C}/runtime/Dockerfile --platform linux/arm64"));
    let output = fake.xtask(&["buildx-publish-runtime"], &[]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("the linux/arm64 build of runtime failed"), "{}", stderr(&output));
    // Both builds ran, each once (the build's own failure is final: it was not tried again),
    // and no merge after them.
    assert_calls(
        &fake.calls(),
        &[call(TOKEN), call(STORE), call(LS), call(INSPECT)],
        &[runtime_build("amd64"), runtime_build("arm64")],
        &[],
    );
}

/// A registry's 500 passes: the build that met it runs again, after a wait, and the image is
/// merged. Each try is logged with its cause.
#[test]
fn a_build_that_meets_a_registry_500_is_tried_again() {
    let fake = FakeTools::new();
    let arm64 = format!("docker buildx build --file {C}/runtime/Dockerfile --platform linux/arm64");
    let error = "ERROR: unexpected status from HEAD request to http://r/v2/runtime/manifests/1-arm64: 500 Internal Server Error";
    fake.answer(&arm64, 1, error);
    let output = fake.xtask(&["buildx-publish-runtime"], &[]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    assert!(
        err.contains("a failure that passes (the registry answered 500 Internal Server Error): trying again in 1 s, try 2 of 3"),
        "{err}"
    );
    // The same arm64 build twice, the amd64 build once, then the merge.
    assert_calls(
        &fake.calls(),
        &[call(TOKEN), call(STORE), call(LS), call(INSPECT)],
        &[runtime_build("arm64"), runtime_build("amd64"), runtime_build("arm64")],
        &[runtime_merge()],
    );
}

/// A cause that keeps coming back is tried three times in all, then fails the task with the
/// build's exit status.
#[test]
fn a_registry_that_keeps_failing_fails_the_build_after_three_tries() {
    let fake = FakeTools::new();
    let arm64 = format!("docker buildx build --file {C}/runtime/Dockerfile --platform linux/arm64");
    for _ in 0..3 {
        fake.answer(
            &arm64,
            7,
            "ERROR: failed to push r/runtime:3.15-arm64: unexpected status: 503 Service Unavailable",
        );
    }
    let output = fake.xtask(&["buildx-publish-runtime"], &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(7), "{err}");
    assert!(err.contains("tried 3 times: command failed with exit status 7"), "{err}");
    // The same arm64 build three times, the amd64 build once, and no merge.
    let arm64 = runtime_build("arm64");
    assert_calls(
        &fake.calls(),
        &[call(TOKEN), call(STORE), call(LS), call(INSPECT)],
        &[arm64.clone(), arm64.clone(), arm64, runtime_build("amd64")],
        &[],
    );
}

/// Each command's `+ <command>` line is on stderr before the command runs. The xtask's stderr
/// and the fakes' own record of each run (`ran <program> <args>`, written first thing when the
/// fake starts) go to one file, opened for appending on both sides, so that the file keeps the
/// order of both. A runner that logged a command after it ran (or after it ended) would put
/// the command's `ran` line first.
#[test]
fn every_command_is_logged_before_it_runs() {
    // Commands started each way the runner has: run (stop, start, create), a query (the store
    // probe), a branch (inspect), a poll (describe, ssh).
    type Setup = fn(&FakeTools);
    let cases: [(&[&str], Setup); 3] = [
        (&["stop-vm"], |_| ()),
        (&["buildx-setup"], |fake| fake.fail(1, "docker buildx inspect")),
        (&["start-vm", "--wait", "--interval", "0"], |fake| {
            fake.answer("gcloud compute instances describe", 0, "RUNNING")
        }),
    ];
    for (args, setup) in cases {
        let fake = FakeTools::new();
        setup(&fake);
        let order = fake.dir.path().join("order.log");
        for program in ["docker", "gcloud"] {
            record_runs(&fake, program);
        }
        let stderr_file = std::fs::OpenOptions::new().create(true).append(true).open(&order).unwrap();
        let (path, dir, home) =
            (fake.path(), fake.dir.path().display().to_string(), fake.home().display().to_string());
        let status = common::xtask_command(
            args,
            &[("PATH", &path), ("FAKE_TOOLS_DIR", &dir), ("HOME", &home), ("CARGO_TARGET_DIR", &dir)],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr_file)
        .status()
        .unwrap();
        let text = std::fs::read_to_string(&order).unwrap();
        assert!(status.success(), "{args:?}: {text}");
        // Each `+` line, as the words the fake sees (the environment it sets left out, and a
        // poll's note of its try), then its run, and so on: one after the other.
        let events: Vec<String> = text
            .lines()
            .filter_map(|line| {
                if let Some(logged) = line.strip_prefix("+ ") {
                    let command =
                        logged.split_once("  (waiting until ").map_or(logged, |(command, _)| command);
                    let words = shlex::split(command).unwrap_or_else(|| panic!("not valid shell: {line:?}"));
                    let program = words.iter().position(|w| !w.contains('=')).unwrap();
                    Some(format!("+ {}", words[program..].join(" ")))
                } else {
                    line.starts_with("ran ").then(|| line.to_string())
                }
            })
            .collect();
        let calls = fake.calls();
        assert!(!calls.is_empty(), "{args:?}: nothing ran");
        let expected: Vec<String> = calls
            .iter()
            .flat_map(|c| {
                let command = c
                    .iter()
                    .filter(|w| !w.starts_with("DOCKER_BUILDKIT="))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" ");
                [format!("+ {command}"), format!("ran {command}")]
            })
            .collect();
        assert_eq!(events, expected, "{args:?}: each command logged, then run:\n{text}");
    }
}

/// The fake `program` wrapped: each call appends `ran <program> <args>` to `order.log` in the
/// fakes' folder first, then runs the fake itself (as `program`, from a folder of its own).
fn record_runs(fake: &FakeTools, program: &str) {
    use std::os::unix::fs::PermissionsExt;
    let wrapped = fake.dir.path().join("wrapped");
    std::fs::create_dir_all(&wrapped).unwrap();
    let path = fake.bin().join(program);
    std::fs::rename(&path, wrapped.join(program)).unwrap();
    let script = format!(
        "#!/bin/sh\nprintf 'ran %s\\n' \"{program} $*\" >> \"$FAKE_TOOLS_DIR/order.log\"\n\
         exec \"$FAKE_TOOLS_DIR/wrapped/{program}\" \"$@\"\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_missing_program_is_named_with_how_to_install_it() {
    let output = common::xtask(&["pull-runtime"], &[("PATH", "/nonexistent")]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("`docker` is not installed or not on PATH"), "{err}");
    assert!(err.contains("Install Docker"), "{err}");
    let output = common::xtask(&["start-vm"], &[("PATH", "/nonexistent")]);
    assert!(stderr(&output).contains("Install the Google Cloud CLI"), "{}", stderr(&output));
}

/// A dry-run line pasted into a shell runs exactly the argument vector of the task.
#[test]
fn dry_run_lines_survive_a_shell() {
    let fake = FakeTools::new();
    let tricky_builder = r#"my builder's "odd" $name `x` \ end"#;
    let tricky_zone = "a b;c&&d|e*";
    for task in ["prune", "buildx-publish-runtime", "ssh-vm"] {
        let dry = fake.xtask(&[task, "--dry-run"], &[("BUILDER", tricky_builder), ("ZONE", tricky_zone)]);
        assert!(dry.status.success());
        let line = stdout(&dry).lines().last().unwrap().strip_prefix("[dry-run] ").unwrap().to_string();
        let log = fake.dir.path().join("calls.log");
        let _ = std::fs::remove_file(&log);
        // The same clean environment as the real run (common::xtask), so the calls compare.
        let status = std::process::Command::new("bash")
            .env_clear()
            .args(["-c", &line])
            .env("PATH", fake.path())
            .env("FAKE_TOOLS_DIR", fake.dir.path())
            .status()
            .unwrap();
        assert!(status.success());
        let real = fake.xtask(&[task], &[("BUILDER", tricky_builder), ("ZONE", tricky_zone)]);
        assert!(real.status.success(), "{}", stderr(&real));
        let calls = fake.calls();
        let (pasted, ran) = (&calls[0], without_build_seconds(calls.last().unwrap()));
        assert_eq!(*pasted, ran, "bash -c {line:?}");
        assert!(ran.iter().any(|a| a.contains(tricky_builder) || a.contains(tricky_zone)), "{ran:?}");
    }
}

#[test]
fn start_vm_waits_until_running_and_ssh_answers() {
    let fake = FakeTools::new();
    fake.answer("gcloud compute instances describe", 0, "TERMINATED");
    fake.answer("gcloud compute instances describe", 0, "RUNNING");
    fake.answer("gcloud compute ssh", 255, "");
    fake.answer("gcloud compute ssh", 255, "");
    let output = fake.xtask(&["start-vm", "--wait", "--interval", "0"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let (describe, ssh) = (call(VM_DESCRIBE), call(VM_SSH));
    assert_eq!(
        fake.calls(),
        [call(VM_START), describe.clone(), describe, ssh.clone(), ssh.clone(), ssh],
        "started, asked until RUNNING, then ssh until it answers"
    );
}

/// The calls of start-vm with the default settings: the start, the probe of its state, the
/// probe of ssh through IAP.
const VM_START: &str =
    "gcloud compute instances start builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a";
const VM_DESCRIBE: &str = "gcloud compute instances describe builder-arm64-2cpu --project multi-arch-docker \
                           --zone us-central1-a --format=value(status)";
const VM_SSH: &str = "gcloud compute ssh --project multi-arch-docker --zone us-central1-a builder-arm64-2cpu \
                      --tunnel-through-iap --quiet --command=true";

#[test]
fn start_vm_gives_up_within_its_bound() {
    let fake = FakeTools::new();
    fake.fail(255, "gcloud compute ssh");
    fake.answer("gcloud compute instances describe", 0, "RUNNING");
    let started = std::time::Instant::now();
    let output = fake.xtask(&["start-vm", "--wait", "--tries", "4", "--interval", "0.05"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("gave up waiting until ssh to builder-arm64-2cpu through IAP works after 4 tries"),
        "{err}"
    );
    let ssh = call(VM_SSH);
    assert_eq!(fake.calls(), [call(VM_START), call(VM_DESCRIBE), ssh.clone(), ssh.clone(), ssh.clone(), ssh]);
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// The tunnel: the ssh config of the VM's host (through IAP, as the tunnel user, one shared
/// connection), the master connection, the docker context on it; `--wait` gives up within its
/// bound when the engine does not answer through it (the fake docker answers nothing).
#[test]
fn ssh_tunnel_writes_its_ssh_config_and_gives_up_when_nothing_answers() {
    let fake = FakeTools::new();
    // No context arm_node yet: it is created.
    fake.fail(1, "docker context inspect arm_node");
    // A home that is not the account's, as Cloud Build's /builder/home.
    let home = fake.home();
    let home_text = home.display().to_string();
    let env = [("HOME", home_text.as_str()), ("ARM64_VM", "arm-b"), ("ZONE", "z1")];
    let output = fake.xtask(&["ssh-tunnel", "--wait", "--tries", "2", "--interval", "0"], &env);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("gave up waiting until the engine of arm-b answers through docker context arm_node"),
        "{err}"
    );
    // Twice: the Include is there once, by its absolute path (first, unless a test running
    // beside this one wrote its own on top since).
    let again = fake.xtask(&["ssh-tunnel"], &env);
    assert!(again.status.success(), "{}", stderr(&again));
    let host_file = home.join(".ssh/multi-arch-docker-arm-b.conf");
    let config = std::fs::read_to_string(common::account_ssh_config()).unwrap();
    let include = format!("Include {}", host_file.display());
    assert_eq!(config.lines().filter(|l| *l == include).count(), 1, "{config}");
    let host = std::fs::read_to_string(&host_file).unwrap();
    for line in [
        "Host xtask-arm-b",
        "  User buildx",
        &format!("  IdentityFile {home_text}/.ssh/google_compute_engine"),
        "  ProxyCommand gcloud compute start-iap-tunnel arm-b 22 --listen-on-stdin --project multi-arch-docker \
         --zone z1 --verbosity=warning",
        "  ControlMaster auto",
    ] {
        assert!(host.lines().any(|l| l == line), "no {line:?} in\n{host}");
    }
    let calls = fake.calls();
    assert_eq!(calls[0], call("ssh -f -N xtask-arm-b"));
    let create = call("docker DOCKER_BUILDKIT=1 context create arm_node --docker host=ssh://xtask-arm-b");
    assert!(calls.contains(&create), "{calls:?}");
    drop(fake);
    let config = std::fs::read_to_string(common::account_ssh_config()).unwrap_or_default();
    assert!(!config.contains(&host_file.display().to_string()), "the test's Include stayed: {config}");
}

/// The defect of every Cloud Build run: the host `ssh-tunnel` defines must resolve for a real
/// ssh whatever `HOME` is (Cloud Build's is /builder/home, not the account's), as `ssh -G`
/// shows: the VM and the tunnel user, not the host's name and root.
#[test]
fn the_tunnel_host_resolves_for_a_real_ssh_whatever_home_is() {
    let fake = FakeTools::new();
    let home = fake.home();
    let home_text = home.display().to_string();
    let env = [("HOME", home_text.as_str()), ("ARM64_VM", "arm-c"), ("ARM64_USER", "tunnel")];
    let output = fake.xtask(&["ssh-tunnel"], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    let elsewhere = tempfile::tempdir().unwrap();
    for home in [home.as_path(), elsewhere.path()] {
        let resolved = std::process::Command::new("/usr/bin/ssh")
            .args(["-G", "xtask-arm-c"])
            .env("HOME", home)
            .output()
            .expect("a real ssh runs (apt-get install openssh-client)");
        let resolved = common::stdout(&resolved);
        let lines: Vec<&str> = resolved.lines().collect();
        assert!(lines.contains(&"hostname arm-c"), "HOME={}: {resolved}", home.display());
        assert!(lines.contains(&"user tunnel"), "HOME={}: {resolved}", home.display());
        assert!(
            lines.iter().any(|l| l.starts_with("proxycommand gcloud compute start-iap-tunnel arm-c 22")),
            "{resolved}"
        );
    }
}

#[test]
fn seed_arm64_without_a_terminal_stops_at_once() {
    let fake = FakeTools::new();
    let output = fake.xtask(&["seed-arm64"], &[("ENV", "docker-prod")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("pass --yes"), "{}", stderr(&output));
    assert!(fake.calls().is_empty(), "nothing may run unconfirmed");
}

#[test]
fn seed_arm64_needs_env() {
    let output = common::xtask(&["seed-arm64", "--yes", "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("say which with ENV"), "{}", stderr(&output));
}

/// A failing docker or gcloud stops every task at that command, which the error names, with
/// the command's own exit status, and nothing after it runs.
#[test]
fn every_task_stops_at_a_failing_command() {
    let build_odb = format!(
        "docker DOCKER_BUILDKIT=1 build --file {C}/odb/Dockerfile --build-arg DOCKER_REPO={REPO} \
         --build-arg DEBIAN_VERSION=11-slim --build-arg ODB_VERSION=2.5.0-b.23 {} --pull \
         --tag {REPO}/odb:2.5.0-b.23 {C}/odb",
        common::TEST_LABELS
    );
    let pull_build = format!("docker DOCKER_BUILDKIT=1 pull {REPO}/golang-build:1.18");
    let rmi = format!(
        "docker DOCKER_BUILDKIT=1 rmi {REPO}/runtime:3.15 {REPO}/golang-build:1.18 {REPO}/odb:2.5.0-b.23"
    );
    let stop =
        "gcloud compute instances stop builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a";
    // Each task, the prefix of its failing call, and the calls it makes up to the failing one,
    // which comes last: in order, then those made at once.
    type Case<'a> = (&'a [&'a str], &'a str, &'a [&'a str], &'a [Vec<String>]);
    let cases: [Case; 8] = [
        // Both platforms' builds run at once: both start, both fail.
        (
            &["buildx-publish-runtime"],
            "docker buildx build",
            &[TOKEN, STORE, LS, INSPECT],
            &[runtime_build("amd64"), runtime_build("arm64")],
        ),
        (&["build-odb"], "docker build", &[&build_odb], &[]),
        (&["pull-build"], "docker pull", &[&pull_build], &[]),
        (&["clean"], "docker rmi", &[&rmi], &[]),
        (
            &["prune"],
            "docker buildx prune",
            &[STORE, "docker DOCKER_BUILDKIT=1 buildx prune --builder builder-local --all --force"],
            &[],
        ),
        (&["start-vm", "--wait"], "gcloud compute instances start", &[VM_START], &[]),
        (&["stop-vm"], "gcloud compute instances stop", &[stop], &[]),
        (&["ssh-tunnel", "--wait"], "ssh -f -N", &["ssh -f -N xtask-builder-arm64-2cpu"], &[]),
    ];
    for (args, failing, in_order, at_once) in cases {
        let fake = FakeTools::new();
        fake.fail(7, failing);
        let output = fake.xtask(args, &[]);
        assert_eq!(output.status.code(), Some(7), "{args:?}: {}", stderr(&output));
        let err = stderr(&output);
        let named = err.lines().last().unwrap();
        assert!(named.starts_with("error: "), "{args:?}: {err}");
        assert!(named.contains("command failed with exit status 7: "), "{args:?}: {err}");
        let program = failing.split(' ').next().unwrap();
        assert!(named.contains(&format!(" {program} ")), "{args:?}: {named}");
        // Nothing runs after the failure.
        let in_order: Vec<Vec<String>> = in_order.iter().map(|c| call(c)).collect();
        assert_calls(&fake.calls(), &in_order, at_once, &[]);
    }
}

/// build-publish-cloud-builder vendors its own bases and BuildKit (from a stand-in upstream
/// here), readies this engine's builder, then builds with provenance and pushes; a failing build
/// stops it.
#[test]
fn the_cloud_builder_is_built_from_what_it_vendors() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fake = FakeTools::new();
    let list = upstream_list(
        &fake,
        &registry,
        &[
            ("docker", "27.4.1-cli"),
            ("docker/buildx-bin", "0.19.3"),
            ("rust", "1.95.0-slim-bookworm"),
            ("google.com/cloudsdktool/google-cloud-cli", "502.0.0-slim"),
            ("moby/buildkit", "v0.18.0"),
            ("alpine", "3.15"),
        ],
    );
    let repo = format!("{}/dev", registry.host());
    let work = fake.dir.path().join("work");
    let work_env = work.display().to_string();
    let env = [("DOCKER_REPO", repo.as_str()), ("CARGO_TARGET_DIR", work_env.as_str())];
    let output = fake.xtask(&["build-publish-cloud-builder", "--file", &list], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("thirdparty: 5 tags: 5 copied"), "not alpine: {}", stdout(&output));
    // This engine's builder (a BuildKit container on the fake's classic engine, from the
    // vendored image), then the build with provenance, given the xtask's dependency recipe
    // (written under the work folder), pushing as it goes.
    let tag = format!("{repo}/cloud-builder:gcloud502.0.0-docker27.4.1-buildx0.19.3-rust1.95.0");
    let build = |work: &std::path::Path| {
        call(&format!(
            "docker DOCKER_BUILDKIT=1 buildx build --file {C}/cloud-builder/Dockerfile --platform linux/amd64 \
             --builder builder-local --progress plain \
             --build-arg DOCKER_REPO={repo} --build-arg BUILDER_GCLOUD_VERSION=502.0.0 \
             --build-arg BUILDER_DOCKER_VERSION=27.4.1 --build-arg BUILDER_BUILDX_VERSION=0.19.3 \
             --build-arg BUILDER_RUST_VERSION=1.95.0 \
             --build-context xtask-recipe={work}/cloud-builder/xtask-recipe \
             --pull --provenance mode=max,builder-id=host:{} \
             --metadata-file {work}/cloud-builder/metadata.json --push --tag {tag} {C}/cloud-builder",
            common::TEST_HOST,
            work = work.display()
        ))
    };
    let builder = [
        call(STORE),
        call("docker DOCKER_BUILDKIT=1 buildx ls"),
        call("docker DOCKER_BUILDKIT=1 buildx inspect --builder builder-local"),
    ];
    assert_eq!(fake.calls(), [&builder[..], &[build(&work)]].concat());
    // The recipe: this repository's lock, a stub for its code.
    let recipe = work.join("cloud-builder/xtask-recipe");
    let root = xtask::project_root();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    assert_eq!(read(&recipe.join("Cargo.lock")), read(&root.join("Cargo.lock")));
    assert_eq!(read(&recipe.join("xtask/Cargo.toml")), read(&root.join("xtask/Cargo.toml")));
    assert!(!read(&recipe.join("xtask/src/main.rs")).contains("cargo xtask"), "a stub, not the code");
    xtask_testbed::skopeo_raw(&format!("{repo}/thirdparty/docker/buildx-bin:0.19.3")).unwrap();

    // Up to date now; a failing build stops the task with its status, before the push.
    let failing = FakeTools::new();
    failing.fail(7, "docker buildx build");
    let work = failing.dir.path().join("work");
    let work_env = work.display().to_string();
    let env = [("DOCKER_REPO", repo.as_str()), ("CARGO_TARGET_DIR", work_env.as_str())];
    let output = failing.xtask(&["build-publish-cloud-builder", "--file", &list], &env);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(stdout(&output).contains("5 up to date"), "{}", stdout(&output));
    assert_eq!(failing.calls(), [&builder[..], &[build(&work)]].concat(), "the build, and nothing after it");
}

const BOTH_PLATFORMS: &str = "Platforms: linux/amd64*, linux/amd64/v2, linux/arm64, linux/386";

/// A vendoring list whose images (small fixtures) come from `registry` itself, standing in for
/// Docker Hub: `path:tag` pairs, each vendored to `thirdparty/path:tag` as the real list's are.
fn upstream_list(
    fake: &FakeTools,
    registry: &xtask_testbed::TestRegistry,
    images: &[(&str, &str)],
) -> String {
    let mut text = String::new();
    for (seed, (path, tag)) in images.iter().enumerate() {
        let fixture =
            xtask_testbed::Fixture::generate(&xtask_testbed::FixtureSpec::small(seed as u64)).unwrap();
        fixture.push(&registry.host(), path, tag).unwrap();
        text.push_str(&format!("{}/{path}: {tag}\n", registry.host()));
    }
    let list = fake.dir.path().join("thirdparty.txt");
    std::fs::write(&list, text).unwrap();
    list.display().to_string()
}

/// ENV=local with fake docker on a classic engine: the bases and the BuildKit image are
/// vendored first, then the three images build at the same time, each with its own builder,
/// and a failing one is reported beside the others' results.
#[test]
fn publish_all_builds_in_parallel_and_reports_a_failing_image() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fake = FakeTools::new();
    fake.print("docker buildx inspect --bootstrap", BOTH_PLATFORMS);
    fake.slow("docker buildx build", 1.0);
    fake.fail(5, &format!("docker buildx build --file {C}/odb/Dockerfile"));
    let list = upstream_list(
        &fake,
        &registry,
        &[
            ("alpine", "3.15"),
            ("golang", "1.18-alpine3.15"),
            ("debian", "11-slim"),
            ("moby/buildkit", "v0.18.0"),
        ],
    );
    let repo = format!("{}/local", registry.host());
    let logs = fake.dir.path().join("logs").display().to_string();
    let output = fake.xtask(
        &["publish-all", "--file", &list, "--logs", &logs],
        &[("ENV", "local"), ("DOCKER_REPO", &repo), ("SSL_CERT_FILE", "/the/callers/bundle.pem")],
    );
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out}\n{}", stderr(&output));
    assert!(out.contains("thirdparty: 4 tags: 4 copied"), "{out}");
    // The xtask writes no environment of its own: the builds after the vendoring get the
    // caller's CA bundle.
    let builds: Vec<Vec<String>> =
        fake.calls().into_iter().filter(|c| c.get(3).map(String::as_str) == Some("build")).collect();
    assert!(
        !builds.is_empty()
            && builds.iter().all(|c| c.last().unwrap() == "SSL_CERT_FILE=/the/callers/bundle.pem"),
        "{builds:?}"
    );
    assert!(out.contains(&format!("published   runtime -> {repo}/runtime:3.15")), "{out}");
    assert!(out.contains(&format!("published   golang-build -> {repo}/golang-build:1.18")), "{out}");
    let failed = out.lines().find(|l| l.starts_with("FAILED      odb:")).unwrap_or_else(|| panic!("{out}"));
    assert!(failed.contains("exit status 5") && failed.contains("log: "), "{failed}");
    assert!(
        out.lines().any(|l| l.starts_with("  | odb/") && l.ends_with("| fake docker: failing with 5")),
        "the end of the odb log is shown, each line with its platform: {out}"
    );
    assert!(stderr(&output).contains("1 of 3 images failed"), "{}", stderr(&output));
    assert!(fake.max_concurrency() >= 2, "the builds ran one after another");
    // One builder per image.
    let builders: std::collections::BTreeSet<String> = fake
        .calls()
        .iter()
        .filter(|c| c.get(3).map(String::as_str) == Some("build"))
        .map(|c| c[c.iter().position(|w| w == "--builder").unwrap() + 1].clone())
        .collect();
    assert_eq!(
        builders,
        ["builder-local-build", "builder-local-odb", "builder-local-runtime"].map(String::from).into(),
        "one builder per image"
    );
}

/// publish-all refuses, before any build, when an image's base is missing from the list.
#[test]
fn publish_all_names_a_base_the_list_does_not_vendor() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fake = FakeTools::new();
    let list = upstream_list(&fake, &registry, &[("alpine", "3.15")]);
    let repo = format!("{}/local", registry.host());
    let output = fake.xtask(&["publish-all", "--file", &list], &[("ENV", "local"), ("DOCKER_REPO", &repo)]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "{C}/golang-build/Dockerfile needs {repo}/thirdparty/golang:1.18-alpine3.15, which {list} does not vendor"
        )),
        "{err}"
    );
    assert!(!fake.calls().iter().any(|c| c.get(3).map(String::as_str) == Some("build")), "no build ran");
    assert!(registry.requests().iter().all(|r| !r.path.contains("/local/")), "nothing was copied");
}

#[test]
fn a_local_builder_without_arm64_says_how_to_get_it() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fake = FakeTools::new();
    fake.fail(1, "docker buildx inspect --builder");
    fake.print("docker buildx inspect --bootstrap", "Platforms: linux/amd64*, linux/386");
    let repo = format!("{}/local", registry.host());
    // The base is vendored: the build would start.
    let base = xtask_testbed::Fixture::generate(&xtask_testbed::FixtureSpec::small(0)).unwrap();
    base.push(&registry.host(), "local/thirdparty/alpine", "3.15").unwrap();
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().display().to_string();
    let output = fake.xtask(
        &["buildx-publish-runtime"],
        &[("ENV", "local"), ("DOCKER_REPO", &repo), ("CARGO_TARGET_DIR", &work_dir)],
    );
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("cannot build linux/arm64") && err.contains("qemu-user-static"), "{err}");
    let create = fake.calls().into_iter().find(|c| c.get(3).map(String::as_str) == Some("create")).unwrap();
    assert!(has_arg(&create, "network=host") && has_arg(&create, "--buildkitd-config"), "{create:?}");
    let config = std::fs::read_to_string(work.path().join("xtask/buildkitd.toml")).unwrap();
    assert!(config.contains("http = true"), "{config}");
    assert!(
        !fake.calls().iter().any(|c| c.get(3).map(String::as_str) == Some("build")),
        "no build without arm64"
    );
}

/// A reader that goes away (`| head -1`) ends the output quietly: no panic, no backtrace.
#[test]
fn a_closed_pipe_ends_output_quietly() {
    use std::io::{BufRead, BufReader};
    let fake = FakeTools::new();
    // The engine answers slowly, so that the plan goes on after the reader has gone.
    fake.slow("docker info", 0.5);
    let path = fake.path();
    let dir = fake.dir.path().display().to_string();
    let mut child = common::xtask_command(
        &["publish-all", "--dry-run"],
        &[("ENV", "local"), ("PATH", &path), ("FAKE_TOOLS_DIR", &dir), ("CARGO_TARGET_DIR", &dir)],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.starts_with("[dry-run] "), "{first}");
    // The pipe is closed here, with most of the plan still to come.
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGPIPE), "{:?}", output.status);
}

/// `thirdparty --bases` vendors what the catalog's builds start from, and nothing of the cloud
/// builder's: the step publish-all runs first, as a task of its own.
#[test]
fn thirdparty_bases_vendors_only_what_the_builds_start_from() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fake = FakeTools::new();
    let list = upstream_list(
        &fake,
        &registry,
        &[
            ("alpine", "3.15"),
            ("golang", "1.18-alpine3.15"),
            ("debian", "11-slim"),
            ("moby/buildkit", "v0.18.0"),
            ("google.com/cloudsdktool/google-cloud-cli", "502.0.0-slim"),
        ],
    );
    let repo = format!("{}/local", registry.host());
    let output =
        fake.xtask(&["thirdparty", "--bases", "--file", &list], &[("ENV", "local"), ("DOCKER_REPO", &repo)]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    // A classic engine (the fake's): the builder container's BuildKit image too.
    assert!(out.contains("thirdparty: 4 tags: 4 copied"), "{out}");
    assert!(!out.contains("google-cloud-cli"), "not the cloud builder's base: {out}");
}

/// An ENV=local run that starts the local registry and then fails (its sources are out of
/// reach) stops that registry again, writes no lock, and says what to do.
#[test]
fn a_failed_local_run_leaves_nothing_running() {
    let work = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let list = work.path().join("list.txt");
    std::fs::write(&list, format!("{unreachable}/alpine: 3.15\n")).unwrap();
    let (list_text, target) = (list.display().to_string(), work.path().display().to_string());
    let repo = format!("127.0.0.1:{port}/local");
    let output = common::xtask(
        &["thirdparty", "--file", &list_text, "--tries", "1"],
        &[("ENV", "local"), ("DOCKER_REPO", &repo), ("CARGO_TARGET_DIR", &target)],
    );
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("no registry answers at 127.0.0.1:{port}, starting one")), "{err}");
    assert!(err.contains("this run failed, so the registry it started"), "{err}");
    assert!(err.contains("could not be reached (offline?)") && err.contains("--file <list>"), "{err}");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    assert!(!xtask::registry_server::answers(addr), "the registry is still running");
    assert!(!work.path().join("list.lock").exists(), "a lock of nothing was written");
    assert!(!stdout(&output).contains("Use it with DOCKER_REPO"), "a hint for local-registry run by hand");
}

/// scan: one on-demand scan per platform digest of each published image (the attestation
/// manifests left out), a table of the findings by severity, and a failure at the threshold.
#[test]
fn scan_looks_at_every_platform_and_fails_at_its_threshold() {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    let fixture = xtask_testbed::Fixture::generate(&xtask_testbed::FixtureSpec::small(7)).unwrap();
    fixture.push(&registry.host(), "dev/runtime", "3.15").unwrap();
    let platform_digests: Vec<String> = fixture.children().into_iter().take(2).collect();
    let repo = format!("{}/dev", registry.host());
    let env = [("DOCKER_REPO", repo.as_str())];

    // The plan: a scan of each platform's digest, by digest.
    let plan = common::plan(&["scan", "runtime"], &env);
    let scans: Vec<&Vec<String>> = plan
        .iter()
        .filter(|l| l.get(..4) == Some(&call("gcloud artifacts docker images")[..]) && l[4] == "scan")
        .collect();
    assert_eq!(scans.len(), 2, "{plan:#?}");
    for (scan, digest) in scans.iter().zip(&platform_digests) {
        assert_eq!(scan[5], format!("{repo}/runtime@{digest}"), "{plan:#?}");
        assert!(has_arg(scan, "--remote"), "{scan:?}");
    }

    // Findings: one HIGH, one MEDIUM on each platform. Below CRITICAL, the default, it passes.
    let fake = FakeTools::new();
    fake.print("gcloud artifacts docker images scan", "projects/p/locations/us/scans/s1");
    fake.print(
        "gcloud artifacts docker images list-vulnerabilities projects/p/locations/us/scans/s1",
        r#"[{"vulnerability": {"effectiveSeverity": "HIGH", "shortDescription": "CVE-1"}}, {"vulnerability": {"effectiveSeverity": "MEDIUM"}}]"#,
    );
    let output = fake.xtask(&["scan", "runtime"], &env);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    let header = out.lines().find(|l| l.starts_with("IMAGE")).unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["IMAGE", "PLATFORM", "DIGEST", "CRITICAL", "HIGH", "MEDIUM", "LOW", "MINIMAL", "OTHER"]
    );
    for platform in ["linux/amd64", "linux/arm64"] {
        let row = out
            .lines()
            .find(|l| l.starts_with("runtime ") && l.contains(platform))
            .unwrap_or_else(|| panic!("{out}"));
        assert_eq!(
            row.split_whitespace().skip(3).collect::<Vec<_>>(),
            ["0", "1", "1", "0", "0", "0"],
            "{row}"
        );
    }
    // Each platform's digest scanned, and the findings of that scan read.
    let list = call(
        "gcloud artifacts docker images list-vulnerabilities projects/p/locations/us/scans/s1 \
         --project multi-arch-docker --format=json",
    );
    let scan = |digest: &str| {
        call(&format!(
            "gcloud artifacts docker images scan {repo}/runtime@{digest} --remote --project multi-arch-docker \
             '--format=value(response.scan)'"
        ))
    };
    assert_eq!(
        fake.calls(),
        [scan(&platform_digests[0]), list.clone(), scan(&platform_digests[1]), list],
        "each platform's findings read"
    );
    // At HIGH, it fails, naming both platforms.
    let output = fake.xtask(&["scan", "runtime", "--fail-on", "HIGH"], &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("findings of HIGH or worse in runtime linux/amd64, runtime linux/arm64"),
        "{}",
        stderr(&output)
    );
}

/// create-vms' calls with the default settings.
const FIREWALL_DESCRIBE: &str = "gcloud compute firewall-rules describe allow-ssh-from-iap --project multi-arch-docker --format=value(name)";
const VM_EXISTS: &str = "gcloud compute instances describe builder-arm64-2cpu --project multi-arch-docker \
                         --zone us-central1-a --format=value(name)";
const POOL_LIST: &str = "gcloud compute instances list --project multi-arch-docker \
                         --filter labels.multi-arch-docker-pool=builders --format=value(name,zone.basename())";

#[test]
fn create_vms_makes_what_is_missing_and_reports_a_vm_the_pool_no_longer_names() {
    let fake = FakeTools::new();
    fake.answer("gcloud compute firewall-rules describe", 1, "");
    fake.answer("gcloud compute instances describe", 1, "");
    fake.answer("gcloud compute instances list", 0, "old-vm us-central1-b");
    let output = fake.xtask(&["create-vms"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let create_rule = "gcloud compute firewall-rules create allow-ssh-from-iap --project multi-arch-docker \
                       --direction INGRESS --action allow --rules tcp:22 --source-ranges 35.235.240.0/20";
    let create_vm = "gcloud compute instances create builder-arm64-2cpu --project multi-arch-docker \
                     --zone us-central1-a --machine-type c4a-standard-2 --image-family debian-12-arm64 \
                     --image-project debian-cloud --boot-disk-size 40GB --boot-disk-type hyperdisk-balanced \
                     --metadata enable-oslogin=TRUE,registry=us-docker.pkg.dev \
                     --metadata-from-file startup-script=builder-vm/startup.sh \
                     --service-account builder@multi-arch-docker.iam.gserviceaccount.com --scopes cloud-platform \
                     --labels multi-arch-docker-pool=builders";
    assert_eq!(
        fake.calls(),
        [call(FIREWALL_DESCRIBE), call(create_rule), call(VM_EXISTS), call(create_vm), call(POOL_LIST)]
    );
    let out = stdout(&output);
    assert!(
        out.contains("old-vm (us-central1-b) carries the label multi-arch-docker-pool=builders but is not in the pool: kept"),
        "{out}"
    );
    // Without a key the VM's tunnel user accepts none, and the run says so.
    assert!(
        stdout(&output).contains("no tunnel key given") || stderr(&output).contains("no tunnel key given")
    );
}

#[test]
fn create_vms_keeps_what_exists_brings_its_script_up_to_date_and_deletes_strays_when_asked() {
    let fake = FakeTools::new();
    let key = fake.dir.path().join("tunnel.pub");
    std::fs::write(&key, "ssh-ed25519 AAAA buildx@builder\n").unwrap();
    fake.answer("gcloud compute instances list", 0, "old-vm us-central1-b");
    let key_arg = key.display().to_string();
    let output = fake.xtask(&["create-vms", "--tunnel-key", &key_arg, "--delete-unlisted"], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut update = call(
        "gcloud compute instances add-metadata builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a \
         --metadata-from-file",
    );
    update.push(format!("startup-script=builder-vm/startup.sh,tunnel-authorized-key={key_arg}"));
    let delete =
        "gcloud compute instances delete old-vm --project multi-arch-docker --zone us-central1-b --quiet";
    assert_eq!(
        fake.calls(),
        [call(FIREWALL_DESCRIBE), call(VM_EXISTS), update, call(POOL_LIST), call(delete)]
    );
}

/// The run of `publish-all` with a pool of three arm64 VMs on the fakes (every VM answering
/// RUNNING), its stdout, and the builds of its `timeline.json`.
fn pool_run(fake: &FakeTools, more: &[(&str, &str)]) -> (std::process::Output, Vec<serde_json::Value>) {
    let registry = xtask_testbed::TestRegistry::start().unwrap();
    fake.print("gcloud compute instances describe", "RUNNING");
    fake.print("docker --context", "27.0");
    let list = upstream_list(
        fake,
        &registry,
        &[
            ("alpine", "3.15"),
            ("golang", "1.18-alpine3.15"),
            ("debian", "11-slim"),
            ("moby/buildkit", "v0.18.0"),
        ],
    );
    let repo = format!("{}/dev", registry.host());
    let logs = fake.dir.path().join("logs");
    let mut env = vec![
        ("DOCKER_REPO", repo.as_str()),
        ("MULTI_CONTEXT", "1"),
        ("AUTO_START_STOP", "1"),
        ("ARM64_VMS", "vm-a,vm-b,vm-c"),
        ("BUILD_ID", "pool"),
    ];
    env.extend_from_slice(more);
    let output = fake.xtask(
        &["publish-all", "--file", &list, "--logs", &logs.display().to_string(), "--vm-interval", "0"],
        &env,
    );
    let json =
        std::fs::read_to_string(logs.join("timeline.json")).unwrap_or_else(|_| "{\"builds\": []}".into());
    let timeline: serde_json::Value = serde_json::from_str(&json).unwrap();
    (output, timeline["builds"].as_array().unwrap().clone())
}

/// The VM of each `gcloud compute instances start|stop` call, in order.
fn vm_calls(fake: &FakeTools, action: &str) -> Vec<String> {
    fake.calls()
        .iter()
        .filter(|c| c.len() > 4 && c[..4] == ["gcloud", "compute", "instances", action])
        .map(|c| c[4].clone())
        .collect()
}

const POOL_NODES: [&str; 3] = ["arm_node-vm-a", "arm_node-vm-b", "arm_node-vm-c"];

/// Each image's arm64 build goes to its home among the pool's nodes (the same rendezvous hash
/// as the placement's own), only the VMs that are some image's home are started, each once,
/// and each is stopped after the last build on it.
#[test]
fn a_pool_builds_each_image_on_its_home_and_starts_only_the_vms_with_builds() {
    let fake = FakeTools::new();
    fake.slow("docker --context arm_node-vm-", 0.5);
    let (output, builds) = pool_run(&fake, &[]);
    assert!(output.status.success(), "{}\n{}", stdout(&output), stderr(&output));
    let labels: Vec<String> = POOL_NODES.map(String::from).to_vec();
    let mut homes = std::collections::BTreeSet::new();
    for image in ["runtime", "golang-build", "odb"] {
        let home = xtask::publish::placement::home(image, &labels).unwrap().clone();
        let arm = builds
            .iter()
            .find(|b| b["image"] == image && b["platform"] == "linux/arm64")
            .unwrap_or_else(|| panic!("no arm64 build of {image}: {builds:?}"));
        assert_eq!((arm["node"].as_str(), arm["home"].as_str()), (Some(home.as_str()), Some(home.as_str())));
        assert_eq!(arm["spilled"], false);
        homes.insert(home.trim_start_matches("arm_node-").to_string());
    }
    let started = vm_calls(&fake, "start");
    assert_eq!(
        started.iter().cloned().collect::<std::collections::BTreeSet<_>>(),
        homes,
        "only the homes start"
    );
    assert_eq!(started.len(), homes.len(), "each once: {started:?}");
    assert_eq!(vm_calls(&fake, "stop").len(), homes.len());
    // Each VM's stop comes after every build on its engine.
    let calls = fake.calls();
    for vm in &homes {
        let stop = calls.iter().position(|c| c.len() > 4 && c[3] == "stop" && c[4] == *vm).unwrap();
        let context = format!("arm_node-{vm}");
        let last_build = calls.iter().rposition(|c| {
            c.windows(2).any(|w| w[0] == "--context" && w[1] == context) && has_arg(c, "build")
        });
        assert!(last_build.is_some_and(|b| b < stop), "{vm} stopped before its last build");
    }
    let out = stdout(&output);
    assert!(
        out.contains("NODES")
            && out.lines().any(|l| l.starts_with("runtime ") && l.contains("arm64 arm_node-vm-")),
        "{out}"
    );
}

/// A build whose VM's engine goes away (the build fails, then the engine does not answer) moves
/// to another VM of the pool: the run succeeds, says which build moved and why, and the dead
/// VM is stopped; a build's own failure on a VM that still answers is not moved.
#[test]
fn a_build_whose_vm_engine_goes_away_moves_to_another_vm() {
    let fake = FakeTools::new();
    let labels: Vec<String> = POOL_NODES.map(String::from).to_vec();
    let home = xtask::publish::placement::home("runtime", &labels).unwrap().clone();
    let vm = home.trim_start_matches("arm_node-").to_string();
    // The engine answers while the VM comes up, then the build loses it.
    fake.answer(&format!("docker --context {home} version"), 0, "27.0");
    fake.answer(&format!("docker --context {home} buildx build --file {C}/runtime/Dockerfile"), 1, "ERROR: failed to receive status: rpc error: code = Unavailable desc = error reading from server: EOF");
    fake.answer(&format!("docker --context {home} version"), 255, "");
    let (output, builds) = pool_run(&fake, &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    let moved =
        out.lines().find(|l| l.starts_with("moved       runtime/arm64: ")).unwrap_or_else(|| panic!("{out}"));
    assert!(moved.contains(&format!("{home} -> arm_node-")), "{moved}");
    assert!(out.contains(&format!("node {home} is out of the run")), "{out}");
    let dead =
        builds.iter().find(|b| b["image"] == "runtime" && b["outcome"] == "moved").expect("the dead attempt");
    assert_eq!(dead["node"].as_str(), Some(home.as_str()));
    let again = builds
        .iter()
        .find(|b| b["image"] == "runtime" && b["platform"] == "linux/arm64" && b["outcome"] == "built")
        .expect("built again");
    assert_eq!(again["moved_from"].as_str(), Some(home.as_str()));
    assert_ne!(again["node"].as_str(), Some(home.as_str()));
    assert!(vm_calls(&fake, "stop").contains(&vm), "the dead VM is stopped too");
    let row = out.lines().find(|l| l.starts_with("runtime ")).unwrap_or_default();
    assert!(row.contains(&format!("(moved from {home}: ")), "the table says so, and why: {out}");

    // A RUN step that fails on a VM that still answers: the build's own failure, final.
    let fake = FakeTools::new();
    fake.fail(4, &format!("docker --context {home} buildx build --file {C}/runtime/Dockerfile"));
    let (output, builds) = pool_run(&fake, &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(!stdout(&output).contains("moved       "), "{}", stdout(&output));
    assert!(builds.iter().any(|b| b["image"] == "runtime" && b["outcome"] == "failed"));
    assert_eq!(vm_calls(&fake, "start").len(), vm_calls(&fake, "stop").len(), "every VM started is stopped");
}
