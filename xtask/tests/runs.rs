//! Real runs against fake `docker` and `gcloud` programs on `PATH` that record their arguments
//! and exit with chosen codes.

mod common;

use common::{FakeTools, call, has_arg, stderr, stdout};

/// The probe every build task makes first: which image store the engine uses (the fake answers
/// nothing: the classic store, so builds run in a builder container).
/// The test catalog's folder, where its images' build contexts are.
const C: &str = common::TEST_CATALOG_DIR;

const STORE: &str = "docker DOCKER_BUILDKIT=1 info --format '{{json .DriverStatus}}'";

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
    assert_eq!(fake.calls().len(), 3);
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
    // full build, no merge. (First, a gcloud token to read what is published.)
    let calls = fake.calls();
    assert_eq!(calls.len(), 6, "{calls:?}");
    assert_eq!(calls[0], call("gcloud auth print-access-token"));
    assert!(calls[4..].iter().all(|c| c[3] == "build" && !has_arg(c, "--push")), "{calls:?}");
}

/// One platform failing is enough: the other finishes, and nothing is merged.
#[test]
fn a_failing_platform_fails_the_task_and_nothing_is_merged() {
    let fake = FakeTools::new();
    fake.fail(4, &format!("docker buildx build --file {C}/runtime/Dockerfile --platform linux/arm64"));
    let output = fake.xtask(&["buildx-publish-runtime"], &[]);
    assert_eq!(output.status.code(), Some(4));
    assert!(stderr(&output).contains("the linux/arm64 build of runtime failed"), "{}", stderr(&output));
    let calls = fake.calls();
    assert!(
        calls.iter().any(|c| c.get(3).is_some_and(|w| w == "build") && has_arg(c, "linux/amd64")),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.get(3).map(String::as_str) == Some("imagetools")), "{calls:?}");
    // The build's own failure is final: it was not tried again.
    assert_eq!(platform_calls(&calls, "linux/arm64").len(), 1, "{calls:?}");
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
    let calls = fake.calls();
    assert_eq!(platform_calls(&calls, "linux/arm64").len(), 2, "{calls:?}");
    assert_eq!(platform_calls(&calls, "linux/amd64").len(), 1, "{calls:?}");
    assert_eq!(calls.last().unwrap()[2..5], ["buildx", "imagetools", "create"], "{calls:?}");
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
    let calls = fake.calls();
    assert_eq!(platform_calls(&calls, "linux/arm64").len(), 3, "{calls:?}");
    assert!(!calls.iter().any(|c| c.get(3).map(String::as_str) == Some("imagetools")), "{calls:?}");
}

#[test]
fn every_command_is_logged_before_it_runs() {
    let fake = FakeTools::new();
    let output = fake.xtask(&["stop-vm"], &[]);
    assert!(output.status.success());
    assert!(
        stderr(&output).contains("+ gcloud compute instances stop builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a"),
        "{}",
        stderr(&output)
    );
    assert_eq!(
        fake.calls(),
        [call(
            "gcloud compute instances stop builder-arm64-2cpu --project multi-arch-docker --zone us-central1-a"
        )]
    );
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
        let (pasted, ran) = (&calls[0], calls.last().unwrap());
        assert_eq!(pasted, ran, "bash -c {line:?}");
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
    let calls: Vec<String> = fake.calls().iter().map(|c| c[..3].join(" ")).collect();
    assert_eq!(
        calls,
        [
            "gcloud compute instances",
            "gcloud compute instances",
            "gcloud compute instances",
            "gcloud compute ssh",
            "gcloud compute ssh",
            "gcloud compute ssh"
        ]
    );
    let calls = fake.calls();
    assert_eq!(calls[0][3], "start");
    assert!(calls[1..3].iter().all(|c| c[3] == "describe" && has_arg(c, "--format=value(status)")));
    assert!(calls[3..].iter().all(|c| has_arg(c, "--tunnel-through-iap") && has_arg(c, "--command=true")));
}

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
    assert_eq!(fake.calls().iter().filter(|c| c[2] == "ssh").count(), 4);
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
    let cases: [(&[&str], &str, usize); 8] = [
        // A gcloud token to read what is published, the store probe, ls, inspect, then both
        // platforms' builds (they run at once).
        (&["buildx-publish-runtime"], "docker buildx build", 6),
        (&["build-odb"], "docker build", 1),
        (&["pull-build"], "docker pull", 1),
        (&["clean"], "docker rmi", 1),
        (&["prune"], "docker buildx prune", 2),
        (&["start-vm", "--wait"], "gcloud compute instances start", 1),
        (&["stop-vm"], "gcloud compute instances stop", 1),
        (&["ssh-tunnel", "--wait"], "ssh -f -N", 1),
    ];
    for (args, failing, calls_made) in cases {
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
        assert_eq!(
            fake.calls().len(),
            calls_made,
            "{args:?}: nothing runs after the failure: {:?}",
            fake.calls()
        );
    }
}

/// build-publish-cloud-builder vendors its own bases (from a stand-in upstream here), then builds
/// and pushes; a failing build stops it before the push.
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
            ("alpine", "3.15"),
        ],
    );
    let repo = format!("{}/dev", registry.host());
    let work = fake.dir.path().join("work");
    let work_env = work.display().to_string();
    let env = [("DOCKER_REPO", repo.as_str()), ("CARGO_TARGET_DIR", work_env.as_str())];
    let output = fake.xtask(&["build-publish-cloud-builder", "--file", &list], &env);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("thirdparty: 4 tags: 4 copied"), "not alpine: {}", stdout(&output));
    let calls = fake.calls();
    assert_eq!(calls.iter().map(|c| c[2].as_str()).collect::<Vec<_>>(), ["build", "push"], "{calls:?}");
    // The build got the xtask's dependency recipe: this repository's lock, a stub for its code.
    let recipe = work.join("cloud-builder/xtask-recipe");
    assert!(calls[0].contains(&format!("xtask-recipe={}", recipe.display())), "{:?}", calls[0]);
    let root = xtask::project_root();
    let read = |path: &std::path::Path| std::fs::read_to_string(path).unwrap();
    assert_eq!(read(&recipe.join("Cargo.lock")), read(&root.join("Cargo.lock")));
    assert_eq!(read(&recipe.join("xtask/Cargo.toml")), read(&root.join("xtask/Cargo.toml")));
    assert!(!read(&recipe.join("xtask/src/main.rs")).contains("cargo xtask"), "a stub, not the code");
    xtask_testbed::skopeo_raw(&format!("{repo}/thirdparty/docker/buildx-bin:0.19.3")).unwrap();

    // Up to date now; a failing build stops the task with its status, before the push.
    let failing = FakeTools::new();
    failing.fail(7, "docker build");
    let output = failing.xtask(&["build-publish-cloud-builder", "--file", &list], &[("DOCKER_REPO", &repo)]);
    assert_eq!(output.status.code(), Some(7), "{}", stderr(&output));
    assert!(stdout(&output).contains("4 up to date"), "{}", stdout(&output));
    assert_eq!(failing.calls().len(), 1, "{:?}", failing.calls());
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
    // The vendoring, all plain HTTP, built its clients without the CA bundle; the builds after
    // it still get the caller's.
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
    assert_eq!(builders.len(), 3, "{builders:?}");
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
    let listed =
        fake.calls().iter().filter(|c| c.get(4).map(String::as_str) == Some("list-vulnerabilities")).count();
    assert_eq!(listed, 2, "each platform's findings read");
    // At HIGH, it fails, naming both platforms.
    let output = fake.xtask(&["scan", "runtime", "--fail-on", "HIGH"], &env);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("findings of HIGH or worse in runtime linux/amd64, runtime linux/arm64"),
        "{}",
        stderr(&output)
    );
}
