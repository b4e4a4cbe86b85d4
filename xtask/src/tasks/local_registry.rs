//! local-registry: a registry on 127.0.0.1 for local work and tests, and `--stop`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::ctx::Ctx;
use crate::local_registry::{self, LocalRegistry};
use crate::registry_server::answers;

#[derive(Args, Debug, Clone)]
pub struct LocalRegistryArgs {
    /// Port on 127.0.0.1
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// Where the registry keeps its data, config and log [default: target/local-registry, or
    /// $CARGO_TARGET_DIR/local-registry]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Stop the registry that local-registry (or an ENV=local task) started on the port
    #[arg(long)]
    pub stop: bool,
}

/// local-registry: start it unless one already answers on the port; `--stop` stops it.
pub fn local_registry(ctx: &Ctx, args: &LocalRegistryArgs) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let registry = LocalRegistry { port: args.port, data: args.data.clone() };
    if args.stop {
        return local_registry::stop(ctx, &registry);
    }
    if !ctx.runner.is_dry_run() && answers(addr) {
        println!("A registry is already running at {addr}: use DOCKER_REPO={addr}/<name>");
        return Ok(());
    }
    if local_registry::start(ctx, &registry)?.is_some() {
        println!("Use it with DOCKER_REPO={addr}/<name>, e.g. DOCKER_REPO={addr}/dev cargo xtask thirdparty");
    }
    Ok(())
}
