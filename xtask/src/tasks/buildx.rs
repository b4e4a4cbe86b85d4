//! buildx-setup, buildx-ls, prune: the buildx builder itself.

use anyhow::{Context, Result, bail};

use super::Ctx;
use crate::runner::{Cmd, Runner};

/// buildx-setup: create the builder `$BUILDER` unless `docker buildx inspect` finds it. With
/// ENV=local the builder must also be able to build every platform of `$PLATFORMS` here.
pub fn buildx_setup(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let runner = &ctx.runner;
    runner.run_ignoring_failure(&Cmd::docker().args(["buildx", "ls"]))?;
    let inspect = Cmd::docker().args(["buildx", "inspect", "--builder", &s.builder]);
    runner.branch(
        &inspect,
        |r| {
            r.say(&format!("Using existing builder {}", s.builder));
            Ok(())
        },
        |r| {
            if s.local {
                create_local_builder(ctx, r)
            } else {
                create_builder(r, &s.builder, s.multi_context)
            }
        },
    )?;
    if s.local { check_local_platforms(ctx) } else { Ok(()) }
}

/// With MULTI_CONTEXT the builder has two nodes: this machine's docker (`default`) for amd64 and
/// the arm64 VM's docker behind the ssh tunnel (`arm_node`).
fn create_builder(runner: &Runner, builder: &str, multi_context: bool) -> Result<()> {
    if !multi_context {
        return runner.run(&Cmd::docker().args(["buildx", "create", "--name", builder]));
    }
    runner.run(&Cmd::docker().args([
        "buildx",
        "create",
        "--use",
        "--name",
        builder,
        "--platform",
        "linux/amd64",
        "default",
    ]))?;
    runner.run(&Cmd::docker().args([
        "buildx",
        "create",
        "--append",
        "--name",
        builder,
        "--platform",
        "linux/arm64",
        "arm_node",
    ]))?;
    runner.run(&Cmd::docker().args(["buildx", "ls"]))
}

/// Where the local builder's BuildKit configuration is written (relative to the repository).
pub const LOCAL_BUILDKITD_CONFIG: &str = "target/xtask/buildkitd.toml";

/// ENV=local: a BuildKit container on the host's network, so that `localhost:<port>` inside it
/// is the host's registry, and told that registry speaks plain HTTP.
fn create_local_builder(ctx: &Ctx, runner: &Runner) -> Result<()> {
    let registry = ctx.settings.docker_repo.split('/').next().unwrap_or_default();
    if !runner.is_dry_run() {
        let path = ctx.root.join(LOCAL_BUILDKITD_CONFIG);
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        let config = format!("[registry.\"{registry}\"]\n  http = true\n  insecure = true\n");
        std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    }
    runner.run(&Cmd::docker().args(["buildx", "create", "--name", &ctx.settings.builder]).args([
        "--driver",
        "docker-container",
        "--driver-opt",
        "network=host",
        "--buildkitd-config",
        LOCAL_BUILDKITD_CONFIG,
        "--bootstrap",
    ]))
}

/// The builder runs where we are: an arm64 build on an amd64 machine needs QEMU emulation,
/// which Docker Desktop has and a Linux Docker Engine gets once from `tonistiigi/binfmt`.
fn check_local_platforms(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let inspect = Cmd::docker().args(["buildx", "inspect", "--bootstrap", &s.builder]);
    let Some(answer) = ctx.runner.capture(&inspect)? else {
        ctx.runner
            .say(&format!("then check that builder {} lists every platform of {}", s.builder, s.platforms));
        return Ok(());
    };
    let supported = builder_platforms(&answer);
    let missing: Vec<&str> =
        s.platforms.split(',').map(str::trim).filter(|p| !supported.iter().any(|have| have == p)).collect();
    if !missing.is_empty() {
        bail!(
            "builder {} cannot build {} on this machine (it has {}). Install QEMU emulation once with \
             `docker run --privileged --rm tonistiigi/binfmt --install all` (Docker Desktop has it \
             already), then `docker buildx rm {}` so that the builder is created anew",
            s.builder,
            missing.join(", "),
            supported.join(", "),
            s.builder
        );
    }
    Ok(())
}

/// The platforms of `docker buildx inspect` output (`Platforms: linux/amd64*, linux/arm64`).
fn builder_platforms(inspect: &str) -> Vec<String> {
    inspect
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Platforms:"))
        .flat_map(|list| list.split(','))
        .map(|p| p.trim().trim_end_matches('*').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// buildx-ls
pub fn buildx_ls(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&Cmd::docker().args(["buildx", "ls"]))
}

/// prune: empty the builder's local cache.
pub fn prune(ctx: &Ctx) -> Result<()> {
    let builder = &ctx.settings.builder;
    ctx.runner.run(&Cmd::docker().args(["buildx", "prune", "--builder", builder, "--all", "--force"]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_platforms_of_every_node() {
        let inspect = "Name: b\nNodes:\nName: b0\nPlatforms: linux/amd64*, linux/amd64/v2, linux/386\n\
                       Name: b1\nPlatforms: linux/arm64*\n";
        assert_eq!(
            super::builder_platforms(inspect),
            ["linux/amd64", "linux/amd64/v2", "linux/386", "linux/arm64"]
        );
    }
}
