//! buildx-setup, buildx-ls, prune: the buildx builder itself.

use anyhow::Result;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::platform_build::{node, setup};
use crate::runner::sh;

/// buildx-setup: each node's builder, made unless it exists (see `platform_build::setup`).
pub fn buildx_setup(ctx: &Ctx) -> Result<()> {
    setup::set_up(ctx).map(drop)
}

/// buildx-ls
pub fn buildx_ls(ctx: &Ctx) -> Result<()> {
    let sh = sh();
    ctx.runner.run(cmd!(sh, "docker buildx ls"))
}

/// prune: empty the local cache of the builder of every node.
pub fn prune(ctx: &Ctx) -> Result<()> {
    for node in node::nodes(ctx)? {
        let (sh, on, name) = (sh(), &node.context_flag(), &node.builder.name);
        ctx.runner.run(cmd!(sh, "docker {on...} buildx prune --builder {name} --all --force"))?;
    }
    Ok(())
}
