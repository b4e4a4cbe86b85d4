//! A pool of three arm64 VMs on this machine's stand-ins: three Docker engines, each on its own
//! unix socket behind its own sshd with the startup script's tunnel file, a fake gcloud keeping
//! each VM's state and relaying IAP to that VM's sshd. `publish-all` builds an eight-image graph
//! with linux/amd64 on this engine and linux/arm64 on the pool, as the pipeline's images step
//! does (MULTI_CONTEXT=1, AUTO_START_STOP=1, ARM64_VMS), beside an image for amd64 alone, and
//! the tests read where each build went from its `timeline.json`, and what each engine holds
//! from the engines themselves.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::engine::{
    FAKE_GCLOUD, SecondEngine, Setup, TUNNEL_USER, TestSshd, engine_or_skip, platforms, root_or_skip,
};
use common::{stderr, stdout};

/// The tunnel user, the sshds and the engine: one test at a time.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

const VMS: [&str; 3] = ["pool-vm-1", "pool-vm-2", "pool-vm-3"];

const CATALOG: &str = r#"
thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v0.18.0"

[versions]
BUSYBOX_VERSION = "1.35"
FAIL = "0"

[[image]]
name = "base"
description = "the root"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "solo"
description = "on its own"
tag = "1"
build_args = ["BUSYBOX_VERSION"]

[[image]]
name = "left"
description = "on base"
tag = "1"

[[image]]
name = "middle"
description = "on base"
tag = "1"
build_args = ["FAIL"]

[[image]]
name = "right"
description = "on base"
tag = "1"

[[image]]
name = "left-child"
description = "on left"
tag = "1"

[[image]]
name = "right-child"
description = "on right"
tag = "1"

[[image]]
name = "leaf"
description = "on left-child"
tag = "1"

[[image]]
name = "tool"
description = "for amd64 alone"
tag = "1"
platforms = ["linux/amd64"]
build_args = ["BUSYBOX_VERSION"]

[cloud_builder]
name = "cloud"
description = "never built here"
tag = "1"
"#;

/// Each image and the image it starts from (none: the vendored busybox).
const GRAPH: [(&str, Option<&str>); 8] = [
    ("base", None),
    ("solo", None),
    ("left", Some("base")),
    ("middle", Some("base")),
    ("right", Some("base")),
    ("left-child", Some("left")),
    ("right-child", Some("right")),
    ("leaf", Some("left-child")),
];

/// The catalog's folder: each image a RUN (which records where it ran and takes a while, so that
/// a build can be caught running) and a file of its own; `middle` fails when FAIL is not 0.
fn files() -> Vec<(String, String)> {
    let mut files = vec![("pipeline.yaml".to_string(), "steps: []\n".to_string())];
    files.push(("cloud/Dockerfile".into(), "FROM scratch\n".into()));
    for (name, parent) in GRAPH {
        let from = match parent {
            None => {
                "ARG BUSYBOX_VERSION\nFROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}".to_string()
            }
            Some(parent) => format!("FROM ${{DOCKER_REPO}}/{parent}:1"),
        };
        let fail = if name == "middle" { "ARG FAIL\nRUN test \"$FAIL\" = 0\n" } else { "" };
        let dockerfile = format!(
            "ARG DOCKER_REPO\n{from}\n{fail}RUN uname -m > /built-on-{name} && sleep 2\nCOPY file.txt /file-{name}.txt\n"
        );
        files.push((format!("{name}/Dockerfile"), dockerfile));
        files.push((format!("{name}/file.txt"), "first\n".into()));
    }
    let tool = "ARG DOCKER_REPO\nARG BUSYBOX_VERSION\nFROM ${DOCKER_REPO}/thirdparty/busybox:${BUSYBOX_VERSION}\n\
                COPY file.txt /file-tool.txt\n";
    files.push(("tool/Dockerfile".into(), tool.into()));
    files.push(("tool/file.txt".into(), "first\n".into()));
    files
}

/// The pool: its three engines behind their sshds, the fake gcloud's folder, and the catalog.
struct Pool {
    setup: Setup,
    engines: Vec<SecondEngine>,
    _sshds: Vec<TestSshd>,
    fake: PathBuf,
    key: PathBuf,
    home: PathBuf,
    _included: common::IncludedSshConfig,
    /// Last: the next test's engines and bridges come only once these are gone.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Pool {
    fn new(test: &str) -> Option<Pool> {
        if !root_or_skip(test) || !engine_or_skip(test) {
            return None;
        }
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let files = files();
        let files: Vec<(&str, String)> =
            files.iter().map(|(path, text)| (path.as_str(), text.clone())).collect();
        let setup = Setup::new(CATALOG, &files, |up| format!("{up}/busybox: 1.35\n"));
        let fake = setup.dir.path().join("fake-gcloud");
        std::fs::create_dir_all(fake.join("bin")).unwrap();
        std::fs::write(fake.join("bin/gcloud"), FAKE_GCLOUD).unwrap();
        std::fs::set_permissions(
            fake.join("bin/gcloud"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (mut engines, mut sshds) = (Vec::new(), Vec::new());
        for (at, vm) in VMS.iter().enumerate() {
            let engine =
                SecondEngine::start_with(&format!("xtask-pool{at}"), &format!("169.254.{}.1/24", 80 + at));
            let sshd = TestSshd::start(&engine.socket());
            std::fs::create_dir_all(fake.join("vms").join(vm)).unwrap();
            std::fs::write(fake.join("vms").join(vm).join("port"), sshd.port.to_string()).unwrap();
            engines.push(engine);
            sshds.push(sshd);
        }
        // One key reaches every VM, as the pipeline's one secret does.
        let key = sshds[0].key();
        let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        for sshd in &sshds[1..] {
            std::fs::write(sshd.dir.path().join("authorized_keys"), &public).unwrap();
        }
        let home = setup.dir.path().join("home");
        let included = common::IncludedSshConfig { dir: home.clone() };
        // The pipeline vendors from the list first; the builds then read it from DOCKER_REPO.
        let pool = Pool { _turn: turn, setup, engines, _sshds: sshds, fake, key, home, _included: included };
        let list = pool.setup.path("thirdparty.txt").display().to_string();
        pool.xtask(&["thirdparty", "--file", &list], &[]);
        Some(pool)
    }

    fn repo(&self) -> String {
        format!("{}/pool", self.setup.destination.host())
    }

    /// The xtask as the images step runs it, on the pool; `more` settings win.
    fn xtask(&self, args: &[&str], more: &[(&str, &str)]) -> Output {
        let path = format!("{}:{}", self.fake.join("bin").display(), std::env::var("PATH").unwrap());
        let (fake, key, home, repo) = (
            self.fake.display().to_string(),
            self.key.display().to_string(),
            self.home.display().to_string(),
            self.repo(),
        );
        let vms = VMS.join(",");
        let mut env: Vec<(&str, &str)> = vec![
            ("PATH", &path),
            ("FAKE_VM", &fake),
            ("ENV", "pool"),
            ("DOCKER_REPO", &repo),
            ("ARM64_VMS", &vms),
            ("ARM64_USER", TUNNEL_USER),
            ("ARM64_SSH_KEY", &key),
            ("HOME", &home),
            ("MULTI_CONTEXT", "1"),
            ("AUTO_START_STOP", "1"),
            ("BUILD_ID", "pool"),
        ];
        env.extend_from_slice(more);
        self.setup.xtask(args, &env)
    }

    /// publish-all with its logs in the setup's folder; its output and the builds of its
    /// timeline.json.
    fn publish(&self, more: &[(&str, &str)]) -> (Output, Vec<serde_json::Value>) {
        let logs = self.setup.logs();
        let _ = std::fs::remove_file(PathBuf::from(&logs).join("timeline.json"));
        let output = self.xtask(&["publish-all", "--logs", &logs, "--vm-interval", "0.2"], more);
        (output, self.timeline())
    }

    fn timeline(&self) -> Vec<serde_json::Value> {
        let json = std::fs::read_to_string(PathBuf::from(self.setup.logs()).join("timeline.json"))
            .unwrap_or_else(|_| "{\"builds\": []}".into());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        value["builds"].as_array().unwrap().clone()
    }

    /// The VM calls (`start`, `stop`) the fake gcloud saw for each VM, in order, from call `from`.
    fn vm_calls(&self, from: usize) -> BTreeMap<String, Vec<String>> {
        let calls = std::fs::read_to_string(self.fake.join("calls")).unwrap_or_default();
        let mut per_vm: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in calls.lines().skip(from) {
            let words: Vec<&str> = line.split(' ').collect();
            if let ["compute", "instances", action @ ("start" | "stop"), vm, ..] = words[..] {
                per_vm.entry(vm.to_string()).or_default().push(action.to_string());
            }
        }
        per_vm
    }

    fn calls_so_far(&self) -> usize {
        std::fs::read_to_string(self.fake.join("calls")).unwrap_or_default().lines().count()
    }

    fn state(&self, vm: &str) -> String {
        let state = std::fs::read_to_string(self.fake.join("vms").join(vm).join("state"));
        state.map_or_else(|_| "TERMINATED".to_string(), |s| s.trim().to_string())
    }

    fn engine_of(&self, node: &str) -> &SecondEngine {
        let at =
            VMS.iter().position(|vm| node == format!("arm_node-{vm}")).unwrap_or_else(|| panic!("{node}"));
        &self.engines[at]
    }

    fn change(&self, image: &str, text: &str) {
        std::fs::write(self.setup.path(&format!("{image}/file.txt")), text).unwrap();
    }
}

/// The arm64 builds that ran to the end: image -> (node, spilled).
fn arm64_nodes(builds: &[serde_json::Value]) -> BTreeMap<String, (String, bool)> {
    builds
        .iter()
        .filter(|b| b["platform"] == "linux/arm64" && b["outcome"] != "moved")
        .map(|b| {
            let node = b["node"].as_str().unwrap().to_string();
            (b["image"].as_str().unwrap().to_string(), (node, b["spilled"] == true))
        })
        .collect()
}

#[track_caller]
fn assert_ok(phase: &str, output: &Output) {
    assert!(output.status.success(), "{phase}: the run failed:\n{}\n{}", stdout(output), stderr(output));
}

/// Cold, the graph spreads over the pool: every image published with both platforms, the arm64
/// halves on more than one VM, each one built by the engine the timeline names, only the VMs
/// with builds started and each stopped after its last build. After a change to the root, each
/// image builds on the same VM as before unless it spilled; after a change to one leaf, only
/// that leaf's VM starts.
#[test]
fn the_graph_spreads_over_the_pool_and_each_image_stays_on_its_vm() {
    let Some(pool) = Pool::new("the_graph_spreads_over_the_pool_and_each_image_stays_on_its_vm") else {
        return;
    };
    let repo = pool.repo();
    // Cold.
    let (output, builds) = pool.publish(&[]);
    assert_ok("cold", &output);
    // For docs/builds.md: the picture of this run (and its timeline.json beside it).
    if let Some(keep) = std::env::var_os("KEEP_TIMELINE").map(PathBuf::from) {
        let logs = PathBuf::from(pool.setup.logs());
        std::fs::copy(logs.join("timeline.svg"), &keep).unwrap();
        std::fs::copy(logs.join("timeline.json"), keep.with_extension("json")).unwrap();
    }
    for (image, _) in GRAPH {
        assert_eq!(platforms(&format!("{repo}/{image}:1")), ["linux/amd64", "linux/arm64"], "cold: {image}");
    }
    // The amd64-only image: one build, on this engine.
    assert_eq!(platforms(&format!("{repo}/tool:1")), ["linux/amd64"], "cold: tool");
    let tool: Vec<&serde_json::Value> = builds.iter().filter(|b| b["image"] == "tool").collect();
    assert!(
        tool.len() == 1 && tool[0]["platform"] == "linux/amd64" && tool[0]["node"] == "this engine",
        "cold: {tool:?}"
    );
    let cold = arm64_nodes(&builds);
    assert_eq!(cold.len(), GRAPH.len(), "cold: one arm64 build per image of both platforms: {builds:?}");
    let used: BTreeSet<&String> = cold.values().map(|(node, _)| node).collect();
    assert!(used.len() > 1, "cold: the arm64 builds all ran on {used:?}");
    for (image, (node, _)) in &cold {
        let built = pool.engine_of(node).docker(&["image", "inspect", &format!("{repo}/{image}:1-arm64")]);
        assert!(built.status.success(), "cold: {image}'s arm64 half is not on {node}'s engine");
    }
    // Only the VMs with builds started, each once, each stopped after its last build.
    let calls = pool.vm_calls(0);
    let started: BTreeSet<String> = calls.keys().cloned().collect();
    let with_builds: BTreeSet<String> =
        used.iter().map(|node| node.trim_start_matches("arm_node-").to_string()).collect();
    assert_eq!(started, with_builds, "cold: the VMs started are those that built");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(pool.setup.logs()).join("timeline.json")).unwrap(),
    )
    .unwrap();
    for vm in &started {
        assert_eq!(pool.state(vm), "TERMINATED", "cold: {vm} was left running");
        let node = format!("arm_node-{vm}");
        let last_end = builds
            .iter()
            .filter(|b| b["node"] == node)
            .map(|b| b["end"].as_f64().unwrap())
            .fold(0.0, f64::max);
        let stopped = json["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["node"] == node)
            .map(|v| v["stopped"].as_f64().unwrap())
            .fold(0.0, f64::max);
        assert!(
            stopped >= last_end,
            "cold: {vm} was stopped at {stopped} s, before its last build ended at {last_end} s"
        );
    }
    for vm in VMS.iter().filter(|vm| !started.contains(**vm)) {
        assert_eq!(pool.state(vm), "TERMINATED", "cold: {vm} had no build and was started");
    }

    // A change to the root: every image below it builds again, each on its VM of before unless
    // the table says it spilled.
    pool.change("base", "second\n");
    let (output, builds) = pool.publish(&[]);
    assert_ok("root change", &output);
    let again = arm64_nodes(&builds);
    // Every image but `solo`, which does not build on the root.
    assert_eq!(again.len(), GRAPH.len() - 1, "root change: {builds:?}");
    assert!(!again.contains_key("solo"), "root change: solo was built again");
    for (image, (node, spilled)) in &again {
        let (before, spilled_before) = &cold[image];
        if !spilled && !spilled_before {
            assert_eq!(node, before, "root change: {image} moved from {before} to {node} without spilling");
        } else {
            let row = stdout(&output)
                .lines()
                .find(|l| l.starts_with(&format!("{image} ")))
                .unwrap_or_default()
                .to_string();
            assert!(
                !spilled || row.contains("spilled from"),
                "root change: the table does not say {image} spilled: {row}"
            );
        }
    }

    // A change to one leaf: only its VM starts.
    let from = pool.calls_so_far();
    pool.change("leaf", "second\n");
    let (output, builds) = pool.publish(&[]);
    assert_ok("leaf change", &output);
    let leaf_node = &arm64_nodes(&builds)["leaf"].0;
    assert_eq!(builds.len(), 2, "leaf change: only the leaf builds: {builds:?}");
    let calls = pool.vm_calls(from);
    let leaf_vm = leaf_node.trim_start_matches("arm_node-").to_string();
    assert_eq!(calls.keys().collect::<Vec<_>>(), [&leaf_vm], "leaf change: {calls:?}");
    assert_eq!(calls[&leaf_vm], ["start", "stop"], "leaf change");

    // A change to the amd64-only image: it builds here, and no VM starts.
    let from = pool.calls_so_far();
    pool.change("tool", "second\n");
    let (output, builds) = pool.publish(&[]);
    assert_ok("amd64-only change", &output);
    assert!(
        builds.len() == 1 && builds[0]["image"] == "tool" && builds[0]["node"] == "this engine",
        "amd64-only change: {builds:?}"
    );
    assert_eq!(pool.vm_calls(from), BTreeMap::new(), "amd64-only change: a VM started");
}

/// An engine killed while it builds costs a move, not the run: its builds go to the other VMs
/// and are named. A failing image leaves the others published and every VM stopped.
#[test]
fn a_dead_engine_moves_its_builds_and_a_failing_image_stops_nothing_else() {
    let Some(pool) = Pool::new("a_dead_engine_moves_its_builds_and_a_failing_image_stops_nothing_else")
    else {
        return;
    };
    let repo = pool.repo();
    // A failing image: the others are published, every VM stopped, the run fails.
    let (output, _) = pool.publish(&[("FAIL", "1")]);
    assert!(!output.status.success(), "a failing image: the run succeeded");
    let out = stdout(&output);
    assert!(out.lines().any(|l| l.starts_with("FAILED      middle:")), "a failing image: {out}");
    for (image, _) in GRAPH.iter().filter(|(image, _)| *image != "middle") {
        assert_eq!(
            platforms(&format!("{repo}/{image}:1")),
            ["linux/amd64", "linux/arm64"],
            "a failing image: {image}"
        );
    }
    for (vm, calls) in pool.vm_calls(0) {
        assert_eq!(calls.last().map(String::as_str), Some("stop"), "a failing image: {vm} {calls:?}");
        assert_eq!(pool.state(&vm), "TERMINATED", "a failing image: {vm}");
    }

    // An engine killed in the middle of a build: the run succeeds and names what moved.
    pool.change("base", "second\n");
    let logs = PathBuf::from(pool.setup.logs());
    // The failing run's logs go first: the watch below reads this run's.
    std::fs::remove_dir_all(&logs).unwrap();
    let mut run = std::thread::scope(|scope| {
        let run = scope.spawn(|| pool.publish(&[]));
        // The first arm64 build on a VM's engine: that engine dies under it.
        let deadline = Instant::now() + Duration::from_secs(240);
        let victim = loop {
            assert!(Instant::now() < deadline, "a dead engine: no arm64 build started");
            let building = GRAPH.iter().find_map(|(image, _)| {
                let log = std::fs::read_to_string(logs.join(format!("{image}.log"))).unwrap_or_default();
                log.lines()
                    .filter(|l| l.contains("linux/arm64 on the engine of docker context arm_node-"))
                    .find_map(|l| l.split("docker context ").nth(1)?.split(':').next().map(str::to_string))
            });
            if let Some(node) = building {
                break node;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(pool.engine_of(&victim).pid() as i32, libc::SIGKILL) };
        (run.join().unwrap(), victim)
    });
    let ((output, builds), victim) = (&mut run.0, run.1.clone());
    let out = stdout(output);
    assert_ok("a dead engine", output);
    let moved: Vec<&str> = out.lines().filter(|l| l.starts_with("moved       ")).collect();
    assert!(!moved.is_empty(), "a dead engine: no build moved off {victim}:\n{out}");
    assert!(
        moved.iter().all(|l| l.contains(&format!(": {victim} -> arm_node-"))),
        "a dead engine: {moved:?}"
    );
    assert!(builds.iter().any(|b| b["outcome"] == "moved" && b["node"] == victim.as_str()), "{builds:?}");
    for (image, (node, _)) in arm64_nodes(builds) {
        assert_ne!(node, victim, "a dead engine: {image} was built on the dead engine after it died");
    }
    for (image, _) in GRAPH {
        assert_eq!(
            platforms(&format!("{repo}/{image}:1")),
            ["linux/amd64", "linux/arm64"],
            "a dead engine: {image}"
        );
    }
    for vm in VMS {
        assert_eq!(pool.state(vm), "TERMINATED", "a dead engine: {vm} was left running");
    }
}
