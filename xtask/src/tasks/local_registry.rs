//! local-registry: a registry on 127.0.0.1 for local work and tests.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;

use super::Ctx;
use crate::registry_server::{answers, config_yaml, wait_until_up};
use xshell::cmd;

use crate::runner::{is_installed, sh};

#[derive(Args, Debug, Clone)]
pub struct LocalRegistryArgs {
    /// Port on 127.0.0.1
    #[arg(long, default_value_t = 5000)]
    pub port: u16,
    /// Where the registry keeps its data, config and log [default: target/local-registry, or
    /// $CARGO_TARGET_DIR/local-registry]
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// local-registry: start it unless one already answers on the port.
pub fn local_registry(ctx: &Ctx, args: &LocalRegistryArgs) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    if !ctx.runner.is_dry_run() && answers(addr) {
        println!("A registry is already running at {addr}: use DOCKER_REPO={addr}/<name>");
        return Ok(());
    }
    start(ctx, args)
}

/// With ENV=local, make sure the registry behind DOCKER_REPO runs, starting one when none
/// answers. It must be on this machine.
pub fn ensure_for_local_env(ctx: &Ctx) -> Result<()> {
    if !ctx.settings.local {
        return Ok(());
    }
    let host = ctx.settings.docker_repo.split('/').next().unwrap_or_default();
    let port = match host.rsplit_once(':') {
        Some((name, port)) if name == "localhost" || name.starts_with("127.") => port.parse().ok(),
        _ => None,
    };
    let Some(port) = port else {
        bail!(
            "ENV=local publishes to a registry on this machine: DOCKER_REPO must be localhost:<port>/<path>, not {host}"
        );
    };
    let args = LocalRegistryArgs { port, data: None };
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!("ENV=local: if no registry answers at 127.0.0.1:{port}, start one:"));
        return start(ctx, &args);
    }
    if answers(SocketAddr::from(([127, 0, 0, 1], port))) {
        return Ok(());
    }
    eprintln!("ENV=local: no registry answers on port {port}, starting one");
    start(ctx, &args)
}

fn start(ctx: &Ctx, args: &LocalRegistryArgs) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let data = args.data.clone().unwrap_or_else(|| ctx.root.join(crate::work_dir()).join("local-registry"));
    if is_installed("docker-registry") {
        // Written in a dry run too: the plan names the config, and pasting the plan must work.
        let config = data.join("config.yml");
        std::fs::create_dir_all(data.join("storage"))
            .with_context(|| format!("cannot create {}", data.display()))?;
        std::fs::write(&config, config_yaml(addr, &data.join("storage"), ""))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let (sh, log) = (sh(), data.join("registry.log"));
        let pid = ctx.runner.spawn_background(cmd!(sh, "docker-registry serve {config}"), &log)?;
        if let Some(pid) = pid {
            wait_until_up(addr, Duration::from_secs(15)).with_context(|| format!("see {}", log.display()))?;
            println!("Registry running at {addr} (pid {pid}; data and log in {})", data.display());
            println!(
                "Use it with DOCKER_REPO={addr}/<name>, e.g. DOCKER_REPO={addr}/dev cargo xtask thirdparty"
            );
        }
        return Ok(());
    }
    // No Debian binary: the registry image, on loopback only.
    let (sh, name, publish) = (sh(), format!("xtask-registry-{}", args.port), format!("{addr}:5000"));
    ctx.runner.run(cmd!(
        sh,
        "docker run --detach --restart unless-stopped --name {name} --publish {publish} registry:2"
    ))?;
    if !ctx.runner.is_dry_run() {
        wait_until_up(addr, Duration::from_secs(30))?;
        println!("Registry running at {addr}: use DOCKER_REPO={addr}/<name>");
    }
    Ok(())
}
