//! bench-thirdparty, bench-rebuild, bench-graph, bench-pool, bench-compile: thin entries into the benchmarks, which live in
//! a crate of their own (`bench/`, the `xtask-bench` binary) with the test harness they stand
//! on, so that a user's `cargo xtask` compiles none of it. Each runs
//! `cargo run --package xtask-bench -- <bench> <its options>`, through the runner (a dry run
//! prints that and starts nothing), measuring this very binary (`XTASK_BIN`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::runner::sh;

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The benchmark's own options (`--help` shows them)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub options: Vec<String>,
}

/// Which benchmark of `xtask-bench`.
#[derive(Debug, Clone, Copy)]
pub enum Bench {
    Thirdparty,
    Rebuild,
    Graph,
    Pool,
    Compile,
}

impl Bench {
    fn name(self) -> &'static str {
        match self {
            Bench::Thirdparty => "thirdparty",
            Bench::Rebuild => "rebuild",
            Bench::Graph => "graph",
            Bench::Pool => "pool",
            Bench::Compile => "compile",
        }
    }
}

/// bench-<name>
pub fn bench(ctx: &Ctx, which: Bench, args: &BenchArgs) -> Result<()> {
    let xtask = std::env::current_exe().context("cannot tell which binary this is")?;
    let (sh, name, options) = (sh(), which.name(), &args.options);
    // The benchmark builds where this binary was built, so that it reuses the dependencies
    // compiled for it, whatever CARGO_TARGET_DIR says about where work files go.
    let target_dir: Vec<String> = cargo_target_dir_of(&xtask)
        .map(|dir| vec!["--target-dir".to_string(), dir.display().to_string()])
        .unwrap_or_default();
    let command = cmd!(sh, "cargo run --quiet {target_dir...} --package xtask-bench -- {name} {options...}");
    ctx.runner.run(command.env("XTASK_BIN", xtask.display().to_string()))
}

/// The target directory a binary of cargo's sits in (`<dir>/<profile>/xtask`), known by the
/// `CACHEDIR.TAG` cargo writes there; none for a binary installed elsewhere.
fn cargo_target_dir_of(binary: &Path) -> Option<PathBuf> {
    let dir = binary.parent()?.parent()?;
    dir.join("CACHEDIR.TAG").is_file().then(|| dir.to_path_buf())
}
