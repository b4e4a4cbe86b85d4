//! bench-graph: what the image graph's up-to-date check buys. A six-image graph (`base`; `left`
//! and `right` on it; `top` on both; `leaf` on `top`; `solo` on its own) is published by
//! `publish-all` in four situations: cold, up to date, after a change to the leaf, after a change
//! to the root. Each is put beside the same work done the way it was done before the graph:
//! every image rebuilt from the registry caches (`publish-all --force`). Every measured run
//! starts with the engine's build cache emptied, as on a fresh Cloud Build machine, and both
//! run this very binary with ENV=local on this machine's engine.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use xtask::runner::Runner;

use crate::rebuild::{Bed, median, run_xtask};

#[derive(Args, Debug, Clone)]
pub struct BenchGraphArgs {
    /// Iterations of the shell loop in each image's own build step (its cost per platform;
    /// linux/arm64 runs it under QEMU on an amd64 machine)
    #[arg(long, default_value_t = 100_000)]
    pub work: u64,
    /// Rounds, each into fresh repositories; the medians are shown
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub runs: u32,
}

/// The graph's images and what each builds on (none: the vendored busybox).
const GRAPH: [(&str, &[&str]); 6] = [
    ("base", &[]),
    ("left", &["base"]),
    ("right", &["base"]),
    ("top", &["left", "right"]),
    ("leaf", &["top"]),
    ("solo", &[]),
];

/// The situations measured, in the order a round takes them.
const SITUATIONS: [&str; 4] = ["cold", "up to date", "leaf change", "root change"];

/// One round's times: the graph's, then today's way, for each situation; and the leaf's own
/// build within the graph's leaf-change run.
#[derive(Default)]
struct Round {
    graph: Vec<Duration>,
    today: Vec<Duration>,
    leaf_alone: Duration,
}

/// bench-graph
pub fn bench_graph(runner: &Runner, args: &BenchGraphArgs) -> Result<()> {
    let bed = Bed::start(runner, "bench-graph")?;
    let (dir, upstream, destination, log) = (&bed.dir, &bed.upstream, &bed.destination, &bed.log);
    let catalog = write_catalog(dir.path(), &upstream.host(), args.work)?;

    let mut rounds = Vec::new();
    for round in 1..=args.runs {
        let touch = |image: &str, change: &str| {
            std::fs::write(
                dir.path().join(format!("catalog/{image}/file.txt")),
                format!("round {round}: {change}\n"),
            )
        };
        let (graph_repo, today_repo) =
            (format!("{}/graph{round}", destination.host()), format!("{}/today{round}", destination.host()));
        // Each measured run: the engine's build cache emptied first, not timed.
        let measured = |repo: &str, force: bool| -> Result<Duration> {
            run_xtask(&["prune"], &catalog, repo, log)?;
            let args: &[&str] = if force { &["publish-all", "--force"] } else { &["publish-all"] };
            run_xtask(args, &catalog, repo, log)
        };
        let mut times = Round::default();
        // Cold: nothing published, no registry cache, in two repositories.
        times.graph.push(measured(&graph_repo, false)?);
        times.today.push(measured(&today_repo, true)?);
        // Up to date: nothing changed.
        times.graph.push(measured(&graph_repo, false)?);
        times.today.push(measured(&today_repo, true)?);
        // A change to the leaf, then to the root: each way gets a change of its own to build.
        for (image, situation) in [("leaf", "leaf change"), ("base", "root change")] {
            touch(image, &format!("{situation}, graph"))?;
            times.graph.push(measured(&graph_repo, false)?);
            if image == "leaf" {
                times.leaf_alone = last_time_of(log, "leaf")?;
            }
            touch(image, &format!("{situation}, today"))?;
            times.today.push(measured(&today_repo, true)?);
        }
        let line: Vec<String> = SITUATIONS
            .iter()
            .zip(times.graph.iter().zip(&times.today))
            .map(|(situation, (graph, today))| {
                format!("{situation} {:.1} s / {:.1} s", graph.as_secs_f64(), today.as_secs_f64())
            })
            .collect();
        println!("round {round} (graph / every image from the caches): {}", line.join(", "));
        rounds.push(times);
    }

    println!(
        "\nbench-graph: six images in four levels, linux/amd64 + linux/arm64, each run after `prune`, medians of {}:",
        args.runs
    );
    println!(
        "{:<12}  {:>10}  {:>28}  {:>7}",
        "situation", "the graph", "every image from the caches", "ratio"
    );
    for (at, situation) in SITUATIONS.iter().enumerate() {
        let graph = median(&mut rounds.iter().map(|r| r.graph[at]).collect::<Vec<_>>());
        let today = median(&mut rounds.iter().map(|r| r.today[at]).collect::<Vec<_>>());
        println!(
            "{situation:<12}  {:>8.2} s  {:>26.2} s  {:>6.1}x",
            graph.as_secs_f64(),
            today.as_secs_f64(),
            today.as_secs_f64() / graph.as_secs_f64()
        );
    }
    let leaf_change = median(&mut rounds.iter().map(|r| r.graph[2]).collect::<Vec<_>>());
    let leaf_alone = median(&mut rounds.iter().map(|r| r.leaf_alone).collect::<Vec<_>>());
    println!(
        "leaf change: the whole run {:.2} s, the leaf's own build in it {:.2} s ({:.2}x)",
        leaf_change.as_secs_f64(),
        leaf_alone.as_secs_f64(),
        leaf_change.as_secs_f64() / leaf_alone.as_secs_f64()
    );
    Ok(())
}

/// The time publish-all's table gave `image` in the last run that built it.
fn last_time_of(log: &Path, image: &str) -> Result<Duration> {
    let text = std::fs::read_to_string(log)?;
    let row = text.lines().rev().find(|l| l.starts_with(&format!("{image} ")) && l.contains(" built "));
    let seconds = row
        .and_then(|row| row.split_whitespace().skip_while(|w| *w != "built").nth(1))
        .and_then(|s| s.parse::<f64>().ok());
    match seconds {
        Some(seconds) => Ok(Duration::from_secs_f64(seconds)),
        None => bail!("publish-all's table has no time for {image} (see {})", log.display()),
    }
}

/// The six-image catalog on the busybox base: each image a loop of `work` iterations, then a
/// file of its own.
fn write_catalog(dir: &Path, upstream: &str, work: u64) -> Result<String> {
    let catalog = dir.join("catalog");
    let mut toml = String::from(
        "thirdparty = \"thirdparty.txt\"\npipeline = \"pipeline.yaml\"\nbuildkit = \"moby/buildkit:v0.18.0\"\n\
         [versions]\nBENCH_VERSION = \"1\"\n",
    );
    for (name, parents) in GRAPH {
        toml.push_str(&format!(
            "[[image]]\nname = \"{name}\"\ntask = \"{name}\"\ndescription = \"bench\"\ntag = \"{{BENCH_VERSION}}\"\n"
        ));
        let mut dockerfile = String::from("ARG DOCKER_REPO\n");
        match parents {
            [] => dockerfile.push_str("FROM ${DOCKER_REPO}/thirdparty/busybox:bench\n"),
            [first, others @ ..] => {
                for other in others {
                    dockerfile.push_str(&format!("FROM ${{DOCKER_REPO}}/{other}:1 AS {other}\n"));
                }
                dockerfile.push_str(&format!("FROM ${{DOCKER_REPO}}/{first}:1\n"));
                for other in others {
                    dockerfile.push_str(&format!("COPY --from={other} /{other} /{other}\n"));
                }
            }
        }
        dockerfile.push_str(&format!(
            "RUN i=0; while [ $i -lt {work} ]; do i=$((i+1)); done; echo {name} > /{name}\nCOPY file.txt /{name}.txt\n"
        ));
        std::fs::create_dir_all(catalog.join(name))?;
        std::fs::write(catalog.join(name).join("Dockerfile"), dockerfile)?;
        std::fs::write(catalog.join(name).join("file.txt"), "first\n")?;
    }
    toml.push_str("[cloud_builder]\nname = \"base\"\ndescription = \"unused\"\ntag = \"1\"\n");
    std::fs::write(catalog.join("images.toml"), toml)?;
    std::fs::write(catalog.join("thirdparty.txt"), format!("{upstream}/busybox: bench\n"))?;
    std::fs::write(catalog.join("pipeline.yaml"), "steps: []\n")?;
    Ok(catalog.join("images.toml").display().to_string())
}
