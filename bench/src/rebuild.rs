//! bench-rebuild: what the per-platform registry caches buy. A cold build of an image (no
//! registry cache yet) against a rebuild after a change late in its Dockerfile with the engine's
//! build cache emptied, as on a fresh Cloud Build machine: the rebuild takes its expensive early
//! step, on both platforms, from the registry caches. Both run `buildx-publish-<image>` of this
//! very binary with ENV=local, on this machine's engine, and the ratio is printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use xshell::cmd;
use xtask::runner::{Runner, sh};
use xtask_testbed::{TestRegistry, push_busybox_base, require};

#[derive(Args, Debug, Clone)]
pub struct BenchRebuildArgs {
    /// Iterations of the shell loop of the image's expensive early step (its cost per platform;
    /// linux/arm64 runs it under QEMU on an amd64 machine)
    #[arg(long, default_value_t = 200_000)]
    pub work: u64,
    /// Rounds, each into a fresh repository; the medians are shown
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
}

/// bench-rebuild
pub fn bench_rebuild(runner: &Runner, args: &BenchRebuildArgs) -> Result<()> {
    let bed = Bed::start(runner, "bench-rebuild")?;
    let (dir, upstream, destination, log) = (&bed.dir, &bed.upstream, &bed.destination, &bed.log);
    let catalog = write_catalog(dir.path(), &upstream.host(), args.work)?;

    let (mut colds, mut rebuilds) = (Vec::new(), Vec::new());
    for round in 1..=args.runs {
        let repo = format!("{}/round{round}", destination.host());
        let xtask = |task: &str| run_xtask(&[task], &catalog, &repo, log);
        xtask("thirdparty")?;
        xtask("prune")?;
        let cold = xtask("buildx-publish-bench")?;
        std::fs::write(dir.path().join("catalog/bench/late.txt"), format!("round {round}, changed\n"))?;
        xtask("prune")?;
        let rebuild = xtask("buildx-publish-bench")?;
        println!(
            "round {round}: cold {:.1} s, rebuild after a late change with empty local caches {:.1} s",
            cold.as_secs_f64(),
            rebuild.as_secs_f64()
        );
        colds.push(cold);
        rebuilds.push(rebuild);
    }
    let (cold, rebuild) = (median(&mut colds), median(&mut rebuilds));
    println!(
        "bench-rebuild: linux/amd64 + linux/arm64, medians of {}: cold build {:.1} s, rebuild from the \
         registry caches {:.1} s: {:.1}x faster",
        args.runs,
        cold.as_secs_f64(),
        rebuild.as_secs_f64(),
        cold.as_secs_f64() / rebuild.as_secs_f64()
    );
    Ok(())
}

/// What the build benchmarks run on: a folder, an "upstream" registry that serves the busybox
/// base as `busybox:bench`, a destination registry, and the log of every xtask run.
pub(crate) struct Bed {
    pub dir: tempfile::TempDir,
    pub upstream: TestRegistry,
    pub destination: TestRegistry,
    pub log: PathBuf,
}

/// What the benchmark tagged in the engine goes with it.
impl Drop for Bed {
    fn drop(&mut self) {
        xtask_testbed::remove_engine_images(&[self.upstream.host(), self.destination.host()]);
    }
}

impl Bed {
    /// It needs real registries and an engine whose own builder exports registry caches.
    pub fn start(runner: &Runner, bench: &str) -> Result<Bed> {
        require("docker-registry", "apt-get install docker-registry")?;
        let (sh, format) = (sh(), "{{json .DriverStatus}}");
        let store = runner.query(cmd!(sh, "docker info --format {format}"), None)?;
        if !store.contains("io.containerd.snapshotter.v1") {
            bail!(
                "{bench} needs an engine with the containerd image store (see the README's Testing section)"
            );
        }
        let dir = tempfile::tempdir()?;
        let upstream = TestRegistry::start()?;
        let destination = TestRegistry::start()?;
        std::fs::create_dir(dir.path().join("base"))?;
        push_busybox_base(&dir.path().join("base"), &format!("{}/busybox:bench", upstream.host()))?;
        let log = dir.path().join("xtask.log");
        Ok(Bed { dir, upstream, destination, log })
    }
}

/// A catalog of one image, `bench`, on the busybox base: an expensive loop early, a file late.
fn write_catalog(dir: &Path, upstream: &str, work: u64) -> Result<String> {
    let catalog = dir.join("catalog");
    std::fs::create_dir_all(catalog.join("bench"))?;
    std::fs::write(
        catalog.join("images.toml"),
        "thirdparty = \"thirdparty.txt\"\npipeline = \"pipeline.yaml\"\nbuildkit = \"moby/buildkit:v0.18.0\"\n\
         [versions]\nBENCH_VERSION = \"1\"\n\
         [[image]]\nname = \"bench\"\ntask = \"bench\"\ndescription = \"bench\"\ntag = \"{BENCH_VERSION}\"\n\
         [cloud_builder]\nname = \"bench\"\ndescription = \"unused\"\ntag = \"1\"\n",
    )?;
    std::fs::write(catalog.join("thirdparty.txt"), format!("{upstream}/busybox: bench\n"))?;
    std::fs::write(catalog.join("pipeline.yaml"), "steps: []\n")?;
    std::fs::write(
        catalog.join("bench/Dockerfile"),
        format!(
            "ARG DOCKER_REPO\nFROM ${{DOCKER_REPO}}/thirdparty/busybox:bench\n\
             RUN i=0; while [ $i -lt {work} ]; do i=$((i+1)); done; echo $i > /work\n\
             COPY late.txt /late.txt\n"
        ),
    )?;
    std::fs::write(catalog.join("bench/late.txt"), "first\n")?;
    Ok(catalog.join("images.toml").display().to_string())
}

/// Run `cargo xtask <args>` (this binary) with ENV=local into `repo`; its output goes to `log`,
/// its work files (run logs, buildkitd.toml) beside it rather than into the repository's `target`.
pub(crate) fn run_xtask(args: &[&str], catalog: &str, repo: &str, log: &Path) -> Result<Duration> {
    let task = args.join(" ");
    let work = log.with_file_name("work");
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    let started = Instant::now();
    let status = Command::new(crate::xtask_binary())
        .args(args)
        .envs([("ENV", "local"), ("DOCKER_REPO", repo), ("CATALOG", catalog)])
        .env("CARGO_TARGET_DIR", &work)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("cannot run {task}"))?;
    let elapsed = started.elapsed();
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        // The builds' lines interleave, so a failed build's cause is rarely among the last ones:
        // its errors and the report of what failed come first.
        let errors: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|line| ["ERROR", "FAILED", "error:"].iter().any(|mark| line.contains(mark)))
            .collect();
        bail!(
            "{task} failed ({status}); its errors:\n{}\nthe end of its output:\n{}",
            errors.join("\n"),
            lines[lines.len().saturating_sub(20)..].join("\n")
        );
    }
    Ok(elapsed)
}

pub(crate) fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
