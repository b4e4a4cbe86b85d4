//! bench-compile: what the cloud builder's prebuilt dependencies buy the pipeline's xtask step.
//! A cold `cargo build --locked --package xtask` (a fresh target folder) against the step as the
//! pipeline runs it: the dependencies compiled from the recipe first (`xtask::cargo_recipe`, as
//! the cloud builder's Dockerfile does, once per Cargo.lock), copied into a fresh target folder
//! (`cp -a`, as the step does), then the same build. It counts the crates each build compiles
//! (from cargo's JSON messages) and prints the ratio; the target is 4x, with the xtask crate the
//! only one the step compiles. The builds run one after the other, on this machine, in one run,
//! each with the cargo settings of the pipeline's `options.env` (`CARGO_INCREMENTAL=0`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use xshell::cmd;
use xtask::runner::{Runner, sh};

#[derive(Args, Debug, Clone)]
pub struct BenchCompileArgs {
    /// Where the target folders go, emptied first (a temporary folder by default)
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Environment variables for cargo.
type Env = Vec<(String, String)>;

/// What one `cargo build` took and which packages it compiled.
struct Build {
    took: Duration,
    compiled: BTreeSet<String>,
}

impl Build {
    fn summary(&self) -> String {
        format!("{:.1} s, {} crates compiled", self.took.as_secs_f64(), self.compiled.len())
    }
}

/// bench-compile
pub fn bench_compile(runner: &Runner, args: &BenchCompileArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    if dir.exists() && args.dir.is_some() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let root = xtask::project_root();
    let workspace = root.join("Cargo.toml");
    let env = &pipeline_cargo_settings(&root)?;
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("bench-compile: every build with the pipeline's cargo settings: {}", shown.join(" "));

    println!("bench-compile: a cold build of the xtask");
    let cold = build(runner, env, &workspace, &dir.join("cold"))?;
    println!("cold: {}", cold.summary());

    println!("bench-compile: the cloud builder's part, once per Cargo.lock: the dependency recipe, compiled");
    let recipe = dir.join(xtask::cargo_recipe::CONTEXT);
    xtask::cargo_recipe::write(&root, &recipe)?;
    let prebuilt = dir.join("prebuilt");
    let image = prebuild(runner, env, &recipe.join("Cargo.toml"), &prebuilt)?;
    println!("prebuild: {}", image.summary());

    println!(
        "bench-compile: the pipeline's xtask step: the prebuilt target folder copied in, then the build"
    );
    let step_target = dir.join("step");
    let sh = sh();
    let copy_started = Instant::now();
    runner.run(cmd!(sh, "cp -a {prebuilt} {step_target}"))?;
    let copy = copy_started.elapsed();
    let step = build(runner, env, &workspace, &step_target)?;
    let step_total = copy + step.took;
    println!("step: copy {:.1} s, build {}", copy.as_secs_f64(), step.summary());

    let ratio = cold.took.as_secs_f64() / step_total.as_secs_f64();
    // Nothing compiled would be as wrong as more: the step would run the recipe's stub.
    let only_xtask = step.compiled.iter().eq(["xtask"].iter());
    println!(
        "bench-compile: cold `cargo build -p xtask` {:.1} s ({} crates), the pipeline's step with the \
         prebuilt dependencies {:.1} s ({}): {ratio:.1}x faster; target 4x with the xtask crate alone: {}",
        cold.took.as_secs_f64(),
        cold.compiled.len(),
        step_total.as_secs_f64(),
        step.compiled.iter().cloned().collect::<Vec<_>>().join(", "),
        if ratio >= 4.0 && only_xtask { "met" } else { "missed" }
    );
    Ok(())
}

/// The cargo settings every step of the pipeline has (`options.env`), but for where things go.
fn pipeline_cargo_settings(root: &Path) -> Result<Env> {
    let pipeline = xtask::pipeline::Pipeline::load(root, Path::new("cloudbuild/pr.yaml"))?;
    Ok(pipeline
        .options
        .env_pairs()
        .into_iter()
        .filter(|(name, _)| {
            name.starts_with("CARGO_") && !matches!(name.as_str(), "CARGO_TARGET_DIR" | "CARGO_HOME")
        })
        .collect())
}

/// `cargo build --locked --package xtask` (the first of `PREBUILD`, which the pipeline's step
/// runs too) of the workspace at `manifest`, into `target`.
fn build(runner: &Runner, env: &Env, manifest: &Path, target: &Path) -> Result<Build> {
    let [compile, _] = xtask::cargo_recipe::PREBUILD;
    let sh = sh();
    let started = Instant::now();
    let messages = runner.query(
        cmd!(sh, "cargo {compile...} --message-format json --manifest-path {manifest} --target-dir {target}")
            .envs(env.iter().cloned()),
        None,
    )?;
    Ok(Build { took: started.elapsed(), compiled: compiled_packages(&messages) })
}

/// The cloud builder's part: `xtask::cargo_recipe::PREBUILD` in the recipe at `manifest`: the
/// build, then the stub forgotten.
fn prebuild(runner: &Runner, env: &Env, manifest: &Path, target: &Path) -> Result<Build> {
    let [_, forget_the_stub] = xtask::cargo_recipe::PREBUILD;
    let started = Instant::now();
    let compiled = build(runner, env, manifest, target)?.compiled;
    let sh = sh();
    runner.run(
        cmd!(sh, "cargo {forget_the_stub...} --manifest-path {manifest} --target-dir {target}")
            .envs(env.iter().cloned()),
    )?;
    Ok(Build { took: started.elapsed(), compiled })
}

/// The packages cargo compiled (not found fresh), from its JSON messages.
fn compiled_packages(messages: &str) -> BTreeSet<String> {
    messages
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["fresh"] == false)
        .filter_map(|m| m["package_id"].as_str().map(package_name))
        .collect()
}

/// `serde` of `registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228`, or of the
/// older `serde 1.0.228 (registry+…)`; `xtask` of `path+file:///w/xtask#0.1.0`.
fn package_name(id: &str) -> String {
    match id.rsplit_once('#') {
        Some((source, spec)) => match spec.split_once('@') {
            Some((name, _)) => name.to_string(),
            // A path package whose folder is its name: `…/xtask#0.1.0`.
            None => source.rsplit('/').next().unwrap_or(source).to_string(),
        },
        None => id.split_whitespace().next().unwrap_or(id).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_compiled_packages_in_every_id_form() {
        let messages = [
            r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#serde@1.0.228","fresh":false}"#,
            r#"{"reason":"compiler-artifact","package_id":"registry+https://github.com/rust-lang/crates.io-index#libc@0.2.1","fresh":true}"#,
            r#"{"reason":"compiler-artifact","package_id":"path+file:///w/xtask#0.1.0","fresh":false}"#,
            r#"{"reason":"build-script-executed","package_id":"path+file:///w/other#0.1.0"}"#,
            r#"{"reason":"compiler-artifact","package_id":"anyhow 1.0.0 (registry+https://x)","fresh":false}"#,
            "not json",
        ]
        .join("\n");
        let names: Vec<String> = compiled_packages(&messages).into_iter().collect();
        assert_eq!(names, ["anyhow", "serde", "xtask"]);
        assert_eq!(package_name("path+file:///w/bench#xtask-bench@0.1.0"), "xtask-bench");
    }
}
