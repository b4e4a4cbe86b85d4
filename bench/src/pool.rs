//! bench-pool: what the pool's scheduler buys, apart from this machine's CPU. `publish-all` (this
//! very binary) runs a generated catalog with stand-in `docker`, `gcloud` and `ssh` programs: a
//! build sleeps the time given for its image, a VM takes a given time to start, everything else
//! answers at once as an engine and gcloud do. So the figures are the scheduler's own: where
//! each build went and when, against the lower bound max(critical path, total work / slots) of
//! the same graph and durations.
//!
//! The graph is made for catalog order to miss the critical path: twelve independent images
//! listed first, a chain of six listed last, every build 2 units long (a first run has no
//! recorded build times: every image weighs the same, as here). It runs on 1, 2 and 3 arm64
//! VMs with critical-path priority, and on 3 in the catalog's order, one build per node at a
//! time. Each run's `timeline.json` gives the builds and each VM's seconds up and busy. The same
//! scheduler on three real engines behind sshd is what `xtask/tests/pool.rs` runs.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use clap::Args;
use xtask_testbed::TestRegistry;

#[derive(Args, Debug, Clone)]
pub struct BenchPoolArgs {
    /// Seconds one unit of build time lasts (every build takes 2 units)
    #[arg(long, default_value_t = 2.0)]
    pub scale: f64,
    /// Seconds a VM takes from its start until it reports RUNNING
    #[arg(long, default_value_t = 1.0)]
    pub vm_start: f64,
    /// Keep each run's folder (its logs, timeline.svg and timeline.json) under this folder
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
}

/// The stand-in engine: a build sleeps its image's time (from `$STANDIN/durations/<image>`) and
/// logs it; every other call answers as an engine with the containerd image store does.
const DOCKER: &str = r#"#!/bin/sh
context=this
[ "$1" = --context ] && { context=$2; shift 2; }
case "$1 $2" in
  "buildx build")
    prev=
    for arg in "$@"; do
      case "$prev" in --file) file=$arg ;; --platform) platform=$arg ;; esac
      prev=$arg
    done
    image=$(basename "$(dirname "$file")")
    start=$(date +%s.%N)
    sleep "$(cat "$STANDIN/durations/$image")"
    echo "$context $image $platform $start $(date +%s.%N)" >> "$STANDIN/builds.log"
    exit 0 ;;
  "info --format") echo '[["driver-type","io.containerd.snapshotter.v1"]]'; exit 0 ;;
  "context show") echo default; exit 0 ;;
  "version --format") echo 27.0; exit 0 ;;
esac
exit 0
"#;

/// The stand-in gcloud: each VM's state; a started VM says STAGING for `$VM_START` seconds,
/// then RUNNING.
const GCLOUD: &str = r#"#!/bin/sh
mkdir -p "$STANDIN/vms"
case "$1 $2 $3" in
  "compute instances start") date +%s.%N > "$STANDIN/vms/$4"; exit 0 ;;
  "compute instances stop") rm -f "$STANDIN/vms/$4"; exit 0 ;;
  "compute instances describe")
    if [ ! -f "$STANDIN/vms/$4" ]; then echo TERMINATED; exit 0; fi
    since=$(cat "$STANDIN/vms/$4")
    if awk "BEGIN { exit !($(date +%s.%N) - $since >= $VM_START) }"; then echo RUNNING; else echo STAGING; fi
    exit 0 ;;
esac
exit 0
"#;

/// The graph: (name, parent, units), in catalog order.
fn graph() -> Vec<(String, Option<String>, f64)> {
    let leaves = (1..=12).map(|i| (format!("leaf-{i:02}"), None, 2.0));
    let chain = (1..=6).map(|i| (format!("chain-{i}"), (i > 1).then(|| format!("chain-{}", i - 1)), 2.0));
    leaves.chain(chain).collect()
}

/// One measured run.
struct Measured {
    nodes: usize,
    order: &'static str,
    makespan: f64,
    bound: f64,
    /// Each VM's seconds up, busy, and from its start until its first build.
    vms: Vec<(f64, f64, f64)>,
}

/// bench-pool
pub fn bench_pool(args: &BenchPoolArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let registry = TestRegistry::start()
        .context("bench-pool needs docker-registry (apt-get install docker-registry)")?;
    let catalog = write_catalog(dir.path(), args.scale)?;
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    for (name, text) in [("docker", DOCKER), ("gcloud", GCLOUD), ("ssh", "#!/bin/sh\nexit 0\n")] {
        std::fs::write(bin.join(name), text)?;
        std::fs::set_permissions(bin.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let units: BTreeMap<String, f64> =
        graph().into_iter().map(|(name, _, units)| (name, units * args.scale)).collect();
    let mut runs = Vec::new();
    for (nodes, order) in [(1, "critical-path"), (2, "critical-path"), (3, "critical-path"), (3, "catalog")] {
        let run = dir.path().join(format!("run-{nodes}-{order}"));
        let timeline = run_once(dir.path(), &run, &catalog, &registry, nodes, order, args)?;
        let measured = measure(&timeline, nodes, order, &units)?;
        println!(
            "{nodes} node(s), {order}: {:.1} s (lower bound {:.1} s)",
            measured.makespan, measured.bound
        );
        runs.push(measured);
    }
    if let Some(keep) = &args.keep {
        std::fs::create_dir_all(keep)?;
        for entry in std::fs::read_dir(dir.path())? {
            let path = entry?.path();
            if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("run-")) {
                let to = keep.join(path.file_name().unwrap());
                let _ = std::fs::remove_dir_all(&to);
                let copied = Command::new("cp").arg("-r").arg(&path).arg(&to).status()?;
                if !copied.success() {
                    bail!("cannot keep {} in {}", path.display(), keep.display());
                }
            }
        }
        println!("the runs' folders are in {}", keep.display());
    }
    report(&runs, args)
}

/// The catalog of `graph()`: each image a file copied onto scratch or onto its parent, and its
/// build's seconds for the stand-in.
fn write_catalog(dir: &Path, scale: f64) -> Result<String> {
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(dir.join("standin/durations"))?;
    let mut toml = String::from(
        "thirdparty = \"thirdparty.txt\"\npipeline = \"pipeline.yaml\"\nbuildkit = \"moby/buildkit:v0.18.0\"\n[versions]\n",
    );
    for (name, parent, units) in graph() {
        std::fs::create_dir_all(catalog.join(&name))?;
        let from = parent.map_or("scratch".to_string(), |parent| format!("${{DOCKER_REPO}}/{parent}:1"));
        std::fs::write(
            catalog.join(&name).join("Dockerfile"),
            format!("ARG DOCKER_REPO\nFROM {from}\nCOPY f /f\n"),
        )?;
        std::fs::write(catalog.join(&name).join("f"), &name)?;
        std::fs::write(dir.join("standin/durations").join(&name), format!("{}", units * scale))?;
        toml.push_str(&format!("[[image]]\nname = \"{name}\"\ndescription = \"bench\"\ntag = \"1\"\n"));
    }
    toml.push_str("[cloud_builder]\nname = \"cloud-builder\"\ndescription = \"unused\"\ntag = \"1\"\n");
    std::fs::write(catalog.join("images.toml"), toml)?;
    std::fs::write(catalog.join("thirdparty.txt"), "# nothing to vendor: every root starts from scratch\n")?;
    std::fs::write(catalog.join("pipeline.yaml"), "steps: []\n")?;
    Ok(catalog.join("images.toml").display().to_string())
}

/// `publish-all` on `nodes` stand-in VMs; its `timeline.json`.
fn run_once(
    dir: &Path,
    run: &Path,
    catalog: &str,
    registry: &TestRegistry,
    nodes: usize,
    order: &str,
    args: &BenchPoolArgs,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(run.join("home"))?;
    let vms: Vec<String> = (1..=nodes).map(|i| format!("bench-vm-{i}")).collect();
    let path = format!("{}:{}", dir.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let logs = run.join("logs");
    let log = std::fs::File::create(run.join("xtask.log"))?;
    let status = Command::new(crate::xtask_binary())
        .args([
            "publish-all",
            "--logs",
            &logs.display().to_string(),
            "--vm-interval",
            "0.2",
            "--vm-tries",
            "200",
        ])
        .env("PATH", path)
        .env("HOME", run.join("home"))
        .env("STANDIN", dir.join("standin"))
        .env("VM_START", args.vm_start.to_string())
        .env("CATALOG", catalog)
        .env("DOCKER_REPO", format!("{}/{}", registry.host(), run.file_name().unwrap().to_string_lossy()))
        .env("CARGO_TARGET_DIR", run.join("work"))
        .envs([("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1"), ("PLATFORMS", "linux/arm64"), ("SBOM", "0")])
        .envs([("BUILDS_PER_NODE", "1"), ("BUILD_ORDER", order), ("BUILD_ID", "bench")])
        .env("ARM64_VMS", vms.join(","))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("cannot run the xtask")?;
    if !status.success() {
        let text = std::fs::read_to_string(run.join("xtask.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        bail!(
            "publish-all on {nodes} node(s) failed ({status}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let json =
        std::fs::read_to_string(logs.join("timeline.json")).context("the run wrote no timeline.json")?;
    Ok(serde_json::from_str(&json)?)
}

/// A run's makespan (from the first VM's start to the last build's end), the lower bound of its
/// graph on its slots, and each VM's seconds.
fn measure(
    timeline: &serde_json::Value,
    nodes: usize,
    order: &'static str,
    units: &BTreeMap<String, f64>,
) -> Result<Measured> {
    let builds = timeline["builds"].as_array().context("no builds")?;
    let vms = timeline["vms"].as_array().context("no vms")?;
    if builds.len() != units.len() {
        bail!("{} builds in the timeline, {} images in the graph", builds.len(), units.len());
    }
    let number = |v: &serde_json::Value| v.as_f64().unwrap_or_default();
    let first = vms.iter().map(|vm| number(&vm["started"])).fold(f64::INFINITY, f64::min);
    let last = builds.iter().map(|b| number(&b["end"])).fold(0.0, f64::max);
    // The lower bound: the longest chain of the graph, or all the work spread evenly.
    let mut path: BTreeMap<String, f64> = BTreeMap::new();
    for (name, parent, _) in graph() {
        let own = units[&name] + parent.and_then(|p| path.get(&p).copied()).unwrap_or(0.0);
        path.insert(name, own);
    }
    let critical = path.values().copied().fold(0.0, f64::max);
    let bound = critical.max(units.values().sum::<f64>() / nodes as f64);
    let vms = vms
        .iter()
        .map(|vm| {
            let node = vm["node"].as_str().unwrap_or_default();
            let started = number(&vm["started"]);
            // Its first build after this start (a VM may be started again).
            let first_build = builds
                .iter()
                .filter(|b| b["node"] == node && number(&b["start"]) >= started)
                .map(|b| number(&b["start"]))
                .fold(f64::INFINITY, f64::min);
            (number(&vm["up"]), number(&vm["busy"]), first_build - number(&vm["started"]))
        })
        .collect();
    Ok(Measured { nodes, order, makespan: last - first, bound, vms })
}

/// The table, the ratios and the targets; an error when one is missed.
fn report(runs: &[Measured], args: &BenchPoolArgs) -> Result<()> {
    println!(
        "\nbench-pool: 18 images (12 independent ones listed first, a chain of 6 last), 2 units each, 1 unit = {} s, \
         a VM starts in {} s, one build per node at a time, linux/arm64 on stand-in VMs:",
        args.scale, args.vm_start
    );
    println!(
        "{:<6} {:<14} {:>10} {:>12} {:>7} {:>9} {:>10} {:>9}",
        "nodes", "order", "makespan", "lower bound", "ratio", "VM up", "VM busy", "up/busy"
    );
    for run in runs {
        let (up, busy): (f64, f64) = run.vms.iter().fold((0.0, 0.0), |(u, b), vm| (u + vm.0, b + vm.1));
        println!(
            "{:<6} {:<14} {:>8.1} s {:>10.1} s {:>6.2}x {:>7.1} s {:>8.1} s {:>8.2}x",
            run.nodes,
            run.order,
            run.makespan,
            run.bound,
            run.makespan / run.bound,
            up,
            busy,
            up / busy
        );
    }
    let find = |nodes: usize, order: &str| {
        runs.iter().find(|r| r.nodes == nodes && r.order == order).expect("measured")
    };
    let (one, three, catalog) = (find(1, "critical-path"), find(3, "critical-path"), find(3, "catalog"));
    // Up against busy, each VM's start (until its first build) allowed on top.
    let worst_up =
        runs.iter().flat_map(|run| &run.vms).map(|(up, busy, start)| (up - start) / busy).fold(0.0, f64::max);
    let targets = [
        ("3 nodes against the lower bound", three.makespan / three.bound, 1.15, false),
        ("1 node against 3 nodes", one.makespan / three.makespan, 2.5, true),
        ("catalog order against critical path, 3 nodes", catalog.makespan / three.makespan, 1.3, true),
        ("VM seconds up (less its start) against busy, worst VM", worst_up, 1.2, false),
    ];
    let mut missed = Vec::new();
    println!();
    for (what, ratio, target, at_least) in targets {
        let met = if at_least { ratio >= target } else { ratio <= target };
        let bound = if at_least { "at least" } else { "at most" };
        println!("{what}: {ratio:.2}x ({bound} {target}x: {})", if met { "met" } else { "MISSED" });
        if !met {
            missed.push(what);
        }
    }
    if !missed.is_empty() {
        bail!("bench-pool missed {} target(s): {}", missed.len(), missed.join("; "));
    }
    Ok(())
}
