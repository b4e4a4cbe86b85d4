//! A registry on 127.0.0.1 for local work and tests, started and stopped. With ENV=local,
//! every task that reads or writes `$DOCKER_REPO` starts one when none answers
//! (`with_local_registry`); a run that started it and then failed stops it again, so that a
//! failed run leaves nothing running.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::ctx::Ctx;
use crate::registry_server::{answers, config_yaml, wait_until_up};
use xshell::cmd;

use crate::runner::{is_installed, sh};

/// A registry on 127.0.0.1: its port, and where it keeps its data, config and log
/// [default: `target/local-registry`, or `$CARGO_TARGET_DIR/local-registry`].
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    pub port: u16,
    pub data: Option<PathBuf>,
}

/// What was started, so that it can be stopped.
#[derive(Debug)]
pub enum StartedRegistry {
    /// Debian's `docker-registry`, by its process id (kept in a file beside its data).
    Process(u32),
    /// The `registry:2` container, by name.
    Container(String),
}

/// Run `work`; with ENV=local, first make sure the registry behind DOCKER_REPO runs (it must be
/// on this machine), starting one when none answers. One started here is stopped again when
/// `work` fails, and kept when it succeeds (its images are what the run made).
pub fn with_local_registry<T>(ctx: &Ctx, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let Some(port) = local_port(ctx)? else { return work() };
    let args = LocalRegistry { port, data: None };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    if ctx.runner.is_dry_run() {
        // The task itself, not the registry's command: pasted, it starts the registry in the
        // background as the real run does.
        ctx.runner.say(&format!("ENV=local: if no registry answers at {addr}, start one:"));
        let (sh, port) = (sh(), port.to_string());
        ctx.runner.run(cmd!(sh, "cargo xtask local-registry --port {port}"))?;
        return work();
    }
    if answers(addr) {
        return work();
    }
    eprintln!("ENV=local: no registry answers at {addr}, starting one");
    let started = start(ctx, &args)?;
    eprintln!(
        "ENV=local: the registry keeps running after this run; `cargo xtask local-registry --stop` stops it"
    );
    let result = work();
    if result.is_err()
        && let Some(started) = started
    {
        eprintln!("ENV=local: this run failed, so the registry it started at {addr} is stopped again");
        if let Err(err) = stop_started(ctx, &args, &started) {
            eprintln!("warning: {err:#}");
        }
    }
    result
}

/// The port of `$DOCKER_REPO` on this machine, with ENV=local.
fn local_port(ctx: &Ctx) -> Result<Option<u16>> {
    if !ctx.settings.local {
        return Ok(None);
    }
    let host = ctx.settings.docker_repo.split('/').next().unwrap_or_default();
    let port = match host.rsplit_once(':') {
        Some((name, port)) if name == "localhost" || name.starts_with("127.") => port.parse().ok(),
        _ => None,
    };
    match port {
        Some(port) => Ok(Some(port)),
        None => bail!(
            "ENV=local publishes to a registry on this machine: DOCKER_REPO must be localhost:<port>/<path>, not {host}"
        ),
    }
}

fn data_dir(ctx: &Ctx, args: &LocalRegistry) -> PathBuf {
    args.data.clone().unwrap_or_else(|| ctx.root.join(crate::work_dir()).join("local-registry"))
}

fn pid_file(data: &Path, port: u16) -> PathBuf {
    data.join(format!("registry-{port}.pid"))
}

fn container_name(port: u16) -> String {
    format!("xtask-registry-{port}")
}

/// Start a registry on the port: Debian's `docker-registry` in the background when installed,
/// else the `registry:2` image. What was started (none in a dry run).
pub fn start(ctx: &Ctx, args: &LocalRegistry) -> Result<Option<StartedRegistry>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let data = data_dir(ctx, args);
    if is_installed("docker-registry") {
        // Written in a dry run too: the plan names the config, and pasting the plan must work.
        let config = data.join("config.yml");
        std::fs::create_dir_all(data.join("storage"))
            .with_context(|| format!("cannot create {}", data.display()))?;
        std::fs::write(&config, config_yaml(addr, &data.join("storage"), ""))
            .with_context(|| format!("cannot write {}", config.display()))?;
        let (sh, log) = (sh(), data.join("registry.log"));
        ctx.runner.say(&format!("in the background, its output in {}:", log.display()));
        let Some(pid) = ctx.runner.spawn_background(cmd!(sh, "docker-registry serve {config}"), &log)? else {
            return Ok(None);
        };
        let pid_file = pid_file(&data, args.port);
        std::fs::write(&pid_file, format!("{pid}\n"))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
        wait_until_up(addr, Duration::from_secs(15)).with_context(|| format!("see {}", log.display()))?;
        println!("Registry running at {addr} (pid {pid}; data and log in {})", data.display());
        println!("Stop it with `cargo xtask local-registry --stop{}`", port_flag(args.port));
        return Ok(Some(StartedRegistry::Process(pid)));
    }
    // No Debian binary: the registry image, on loopback only.
    let (sh, name, publish) = (sh(), container_name(args.port), format!("{addr}:5000"));
    ctx.runner.run(cmd!(
        sh,
        "docker run --detach --restart unless-stopped --name {name} --publish {publish} registry:2"
    ))?;
    if ctx.runner.is_dry_run() {
        return Ok(None);
    }
    wait_until_up(addr, Duration::from_secs(30))?;
    println!("Registry running at {addr} (container {name})");
    println!("Stop it with `cargo xtask local-registry --stop{}`", port_flag(args.port));
    Ok(Some(StartedRegistry::Container(name)))
}

fn port_flag(port: u16) -> String {
    if port == 5000 { String::new() } else { format!(" --port {port}") }
}

/// local-registry --stop: the `docker-registry` whose process id local-registry kept, or its
/// `registry:2` container.
pub fn stop(ctx: &Ctx, args: &LocalRegistry) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let pid_file = pid_file(&data_dir(ctx, args), args.port);
    let pid = std::fs::read_to_string(&pid_file).ok().and_then(|text| text.trim().parse::<u32>().ok());
    // Only a process that is still that registry: a pid may have been reused since.
    if let Some(pid) = pid.filter(|pid| is_registry_process(*pid)) {
        return stop_started(ctx, args, &StartedRegistry::Process(pid));
    }
    let name = container_name(args.port);
    if is_installed("docker") {
        let (sh, format) = (sh(), "{{.Name}}");
        if ctx.runner.query(cmd!(sh, "docker container inspect --format {format} {name}"), None).is_ok() {
            return stop_started(ctx, args, &StartedRegistry::Container(name));
        }
    }
    if answers(addr) {
        bail!(
            "a registry answers at {addr}, but local-registry did not start it (no {} and no container {name}): stop it where it was started",
            pid_file.display()
        );
    }
    println!("No registry runs at {addr}: nothing to stop");
    Ok(())
}

fn stop_started(ctx: &Ctx, args: &LocalRegistry, started: &StartedRegistry) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let sh = sh();
    match started {
        StartedRegistry::Process(pid) => {
            let pid = pid.to_string();
            ctx.runner.run(cmd!(sh, "kill {pid}"))?;
            let _ = std::fs::remove_file(pid_file(&data_dir(ctx, args), args.port));
        }
        StartedRegistry::Container(name) => ctx.runner.run(cmd!(sh, "docker rm --force {name}"))?,
    }
    if ctx.runner.is_dry_run() {
        return Ok(());
    }
    for _ in 0..100 {
        if !answers(addr) {
            println!("Stopped the registry at {addr}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the registry at {addr} still answers 5 s after it was told to stop")
}

fn is_registry_process(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline.split(|b| *b == 0).next().is_some_and(|program| program.ends_with(b"docker-registry"))
    })
}
