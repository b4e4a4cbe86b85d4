//! The benchmarks of the xtask, apart from the tool: `cargo xtask bench-thirdparty`,
//! `bench-rebuild`, `bench-graph`, `bench-pool` and `bench-compile` run this binary (`cargo run --package xtask-bench`), so that
//! a user's `cargo xtask` compiles none of it. Each one measures against a named peer, in the
//! same run, and prints the ratios: the xtask binary named by `XTASK_BIN` (the one that started
//! it: the dev profile, as users run it), or for bench-compile the cargo builds of the xtask.
//! The processes it measures (the xtask under test, skopeo) it starts itself, for their exit
//! status, CPU time and peak memory (`wait4`); what it sets up goes through the xtask's runner.

mod compile;
mod graph;
mod pool;
mod rebuild;
mod thirdparty;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask bench-…", about = "The benchmarks of the xtask")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// thirdparty against skopeo on local registries
    Thirdparty(thirdparty::BenchArgs),
    /// A rebuild from the registry caches (late change, empty local caches) against a cold build
    Rebuild(rebuild::BenchRebuildArgs),
    /// publish-all on a six-image graph (cold, up to date, leaf and root changes) against
    /// rebuilding every image from the caches
    Graph(graph::BenchGraphArgs),
    /// The pool's scheduler, with stand-in builds and VMs, on 1, 2 and 3 nodes and in catalog
    /// order, against the lower bound
    Pool(pool::BenchPoolArgs),
    /// The pipeline's xtask step, its dependencies prebuilt as in the cloud builder image,
    /// against a cold `cargo build -p xtask`
    Compile(compile::BenchCompileArgs),
}

/// The xtask binary to measure: `XTASK_BIN`, which `cargo xtask bench-…` sets to itself.
pub fn xtask_binary() -> PathBuf {
    std::env::var_os("XTASK_BIN").filter(|p| !p.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        // Run by hand: the workspace's dev-profile binary.
        xtask::project_root().join(xtask::work_dir()).join("debug/xtask")
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runner = xtask::runner::Runner::new(false, xtask::project_root());
    let result = match &cli.bench {
        Bench::Thirdparty(args) => thirdparty::bench_thirdparty(args),
        Bench::Rebuild(args) => rebuild::bench_rebuild(&runner, args),
        Bench::Graph(args) => graph::bench_graph(&runner, args),
        Bench::Pool(args) => pool::bench_pool(args),
        Bench::Compile(args) => compile::bench_compile(&runner, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
