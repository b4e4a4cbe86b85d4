//! buildx-setup, buildx-ls, prune: the buildx builder itself.

use anyhow::Result;

use super::Ctx;
use crate::runner::{Cmd, Runner};

/// buildx-setup: create the builder `$BUILDER` unless `docker buildx inspect` finds it.
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
        |r| create_builder(r, &s.builder, s.multi_context),
    )
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

/// buildx-ls
pub fn buildx_ls(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&Cmd::docker().args(["buildx", "ls"]))
}

/// prune: empty the builder's local cache.
pub fn prune(ctx: &Ctx) -> Result<()> {
    let builder = &ctx.settings.builder;
    ctx.runner.run(&Cmd::docker().args([
        "buildx",
        "prune",
        "--builder",
        builder,
        "--all",
        "--force",
    ]))
}
