//! start-vm, stop-vm, ssh-vm, ssh-tunnel: the arm64 VM that joins buildx as a native node; and
//! `with_arm_node`, the VM's life around a run's arm64 builds (started when needed, a lease taken
//! so that an overlapping pipeline does not stop it, stopped when the builds end).
//!
//! The VM's engine has no TCP listener. The docker context `arm_node` is `ssh://xtask-<vm>`: every
//! docker connection is an ssh session, as `ARM64_USER`, whose command the VM's sshd forces to
//! `docker system dial-stdio` (ARM64_BUILDER.md), all of them sharing one master connection
//! through IAP, which `ssh-tunnel` opens.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;

use xshell::cmd;

use super::Ctx;
use super::buildx::ARM_CONTEXT;
use crate::runner::sh;
use crate::settings::Settings;

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until it is ready (see the task's description), checking at most --tries times
    #[arg(long)]
    pub wait: bool,
    /// How many times to check before giving up
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub tries: u32,
    /// Seconds between two checks
    #[arg(long = "interval", default_value_t = 5.0)]
    pub interval_secs: f64,
}

impl WaitArgs {
    /// Waiting, with these bounds: how the builds wait for the VM they start.
    pub fn waiting(tries: u32, interval_secs: f64) -> WaitArgs {
        WaitArgs { wait: true, tries, interval_secs }
    }

    fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.interval_secs.max(0.0))
    }

    fn bounds(&self) -> (u32, Duration) {
        (self.tries, self.interval())
    }
}

/// The label of a lease on the VM's engine, and of the time it was taken.
pub const LEASE_LABEL: &str = "dev.multi-arch-docker.lease";
const LEASE_SINCE_LABEL: &str = "dev.multi-arch-docker.lease.since";
/// A lease older than this belongs to a pipeline that was cancelled (twice the pipeline's
/// timeout): it is not counted.
const LEASE_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// start-vm; with `--wait`, until the VM reports RUNNING and an IAP ssh command succeeds (right
/// after a start the tunnel fails with "4047: Failed to lookup instance" for a while).
pub fn start_vm(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances start {vm} --project {project} --zone {zone}"))?;
    if !args.wait {
        return Ok(());
    }
    let describe = cmd!(
        sh,
        "gcloud compute instances describe {vm} --project {project} --zone {zone} --format=value(status)"
    );
    ctx.runner
        .poll(&format!("{vm} reports RUNNING"), describe, args.bounds(), |status| status == "RUNNING")?;
    let ssh = cmd!(
        sh,
        "gcloud compute ssh --project {project} --zone {zone} {vm} --tunnel-through-iap --quiet --command=true"
    );
    ctx.runner.poll(&format!("ssh to {vm} through IAP works"), ssh, args.bounds(), |_| true)?;
    ctx.runner.say(&format!("{vm} is running and answers ssh"));
    Ok(())
}

/// stop-vm
pub fn stop_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances stop {vm} --project {project} --zone {zone}"))
}

/// ssh-vm: an interactive shell on the VM, as you (your gcloud account, through OS Login), not
/// as the tunnel's user: its key can only reach the engine.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute ssh --zone {zone} {vm} --project {project} --tunnel-through-iap"))
}

/// The ssh host the tunnel's config names the VM: docker's `ssh://` context and the master
/// connection both go by it.
pub fn ssh_host(s: &Settings) -> String {
    format!("xtask-{}", s.arm64_vm)
}

/// ssh-tunnel: the ssh config of the VM's host, the master connection every docker connection
/// shares (in the background), and the docker context `arm_node` on it; with `--wait`, until the
/// VM's engine answers through it.
pub fn ssh_tunnel(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    let s = &ctx.settings;
    let host = ssh_host(s);
    write_ssh_config(ctx)?;
    let sh = sh();
    // ssh forks into the background itself (`-f`) once it is connected and authenticated.
    ctx.runner.run(cmd!(sh, "ssh -f -N {host}"))?;
    let endpoint = format!("host=ssh://{host}");
    let context = ARM_CONTEXT;
    ctx.runner.branch(
        cmd!(sh, "docker context inspect {context}"),
        |r| r.run(cmd!(sh, "docker context update {context} --docker {endpoint}")),
        |r| r.run(cmd!(sh, "docker context create {context} --docker {endpoint}")),
    )?;
    if !args.wait {
        return Ok(());
    }
    let format = "{{.Server.Version}}";
    let version = cmd!(sh, "docker --context {context} version --format {format}");
    let what = format!("the engine of {} answers through docker context {context}", s.arm64_vm);
    ctx.runner.poll(&what, version, args.bounds(), |answer| !answer.is_empty()).with_context(|| {
        format!("is the VM running, and its sshd set up for {} as ARM64_BUILDER.md says?", s.arm64_user)
    })
}

/// Close the master connection: the VM's idle timer counts it as a build in progress.
fn close_tunnel(ctx: &Ctx) -> Result<()> {
    let (sh, host) = (sh(), ssh_host(&ctx.settings));
    ctx.runner.run_ignoring_failure(cmd!(sh, "ssh -O exit {host}"))
}

/// The folder of the ssh config ssh reads: the account's `~/.ssh`, from the password database,
/// not `$HOME` (which Cloud Build points elsewhere); `XTASK_SSH_DIR` when set (the tests keep
/// their own).
fn ssh_home() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XTASK_SSH_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; it is read at once, on
    // this thread, before any other call could overwrite it.
    let dir = unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            None
        } else {
            Some(std::ffi::CStr::from_ptr((*entry).pw_dir).to_string_lossy().into_owned())
        }
    };
    dir.map(|d| PathBuf::from(d).join(".ssh"))
        .context("cannot find this account's home in the password database (or set XTASK_SSH_DIR)")
}

/// The ssh config of the VM's host: through IAP, as the tunnel's user with its key, every
/// connection sharing one master connection.
fn ssh_config_text(s: &Settings, ssh_dir: &std::path::Path) -> String {
    let (host, vm, project, zone) = (ssh_host(s), &s.arm64_vm, &s.gcp_project, &s.zone);
    let known_hosts = s.arm64_ssh_key.with_file_name("multi-arch-docker_known_hosts");
    format!(
        "# Written by `cargo xtask ssh-tunnel`: the arm64 VM {vm}, whose engine the docker context\n\
         # {ARM_CONTEXT} reaches as ssh://{host}. Its sshd lets {user} reach the engine and nothing else.\n\
         Host {host}\n\
         \x20 HostName {vm}\n\
         \x20 User {user}\n\
         \x20 IdentityFile {key}\n\
         \x20 IdentitiesOnly yes\n\
         \x20 ProxyCommand gcloud compute start-iap-tunnel {vm} 22 --listen-on-stdin --project {project} --zone {zone} --verbosity=warning\n\
         \x20 HostKeyAlias {vm}\n\
         \x20 StrictHostKeyChecking accept-new\n\
         \x20 UserKnownHostsFile {known}\n\
         \x20 ControlMaster auto\n\
         \x20 ControlPath {control}\n\
         \x20 ControlPersist 60\n\
         \x20 ServerAliveInterval 30\n\
         \x20 LogLevel ERROR\n",
        user = s.arm64_user,
        key = s.arm64_ssh_key.display(),
        known = known_hosts.display(),
        control = ssh_dir.join(format!("xtask-{vm}.control")).display(),
    )
}

/// `~/.ssh/multi-arch-docker-<vm>.conf`, and its `Include` at the top of `~/.ssh/config` (docker
/// runs `ssh`, which reads only that file). A dry run says so and writes nothing: it is the
/// user's own ssh config.
fn write_ssh_config(ctx: &Ctx) -> Result<()> {
    let dir = ssh_home()?;
    let name = format!("multi-arch-docker-{}.conf", ctx.settings.arm64_vm);
    let (file, config) = (dir.join(&name), dir.join("config"));
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "write {} (the host {}: through IAP, as {}, one shared connection) and include it from {}",
            file.display(),
            ssh_host(&ctx.settings),
            ctx.settings.arm64_user,
            config.display()
        ));
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&file, ssh_config_text(&ctx.settings, &dir))
        .with_context(|| format!("cannot write {}", file.display()))?;
    let include = format!("Include {name}");
    let current = std::fs::read_to_string(&config).unwrap_or_default();
    if !current.lines().any(|line| line.trim() == include) {
        // At the top: an Include after a `Host` line would belong to that host.
        std::fs::write(&config, format!("{include}\n{current}"))
            .with_context(|| format!("cannot write {}", config.display()))?;
        eprintln!("ssh-tunnel: included {} from {}", file.display(), config.display());
    }
    Ok(())
}

/// With MULTI_CONTEXT=1 and arm64 builds to do (`needed`), the VM's engine for the length of
/// `work`: with AUTO_START_STOP=1 the VM is started first; the tunnel is opened and a lease is
/// taken on the VM's engine. When `work` ends, failed or not, the lease is given back, the tunnel
/// closed, and (AUTO_START_STOP=1) the VM stopped, unless another pipeline holds a lease: then
/// that one stops it, or the VM's idle timer does.
pub fn with_arm_node<T>(
    ctx: &Ctx,
    needed: bool,
    wait: &WaitArgs,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let s = &ctx.settings;
    if !s.multi_context || !needed {
        if s.multi_context && s.auto_start_stop {
            ctx.runner.say(&format!("no arm64 build to do: {} is not started", s.arm64_vm));
        }
        return work();
    }
    if s.auto_start_stop {
        start_vm(ctx, wait)?;
    }
    ssh_tunnel(ctx, wait)?;
    let lease = take_lease(ctx)?;
    let result = work();
    let others = give_back(ctx, &lease);
    close_tunnel(ctx)?;
    if s.auto_start_stop {
        match others {
            Ok(others) if others.is_empty() => stop_vm(ctx)?,
            Ok(others) => ctx.runner.say(&format!(
                "{} stays up: {} other pipeline(s) hold a lease on it ({}), the last one stops it",
                s.arm64_vm,
                others.len(),
                others.join(" ")
            )),
            Err(err) => ctx.runner.say(&format!(
                "{} stays up, since its leases cannot be read ({err:#}): its idle timer stops it",
                s.arm64_vm
            )),
        }
    }
    result
}

/// A lease on the VM's engine: a volume of this run's own, labelled with when it was taken.
fn take_lease(ctx: &Ctx) -> Result<String> {
    let id = std::env::var("BUILD_ID").ok().filter(|id| !id.is_empty()).unwrap_or_else(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    });
    let name = format!("xtask-lease-{id}");
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (sh, context) = (sh(), ARM_CONTEXT);
    let (label, since_label) = (format!("{LEASE_LABEL}={id}"), format!("{LEASE_SINCE_LABEL}={since}"));
    ctx.runner
        .say(&format!("a lease on the VM, so that no other pipeline stops it under these builds: {name}"));
    ctx.runner.run(cmd!(
        sh,
        "docker --context {context} volume create --label {label} --label {since_label} {name}"
    ))?;
    Ok(name)
}

/// Give `lease` back; the leases other pipelines still hold (those not older than
/// `LEASE_LIFETIME`).
fn give_back(ctx: &Ctx, lease: &str) -> Result<Vec<String>> {
    let (sh, context) = (sh(), ARM_CONTEXT);
    ctx.runner.run(cmd!(sh, "docker --context {context} volume rm {lease}"))?;
    let (filter, format) =
        (format!("label={LEASE_LABEL}"), format!("{{{{.Name}}}} {{{{.Label \"{LEASE_SINCE_LABEL}\"}}}}"));
    let listing = cmd!(sh, "docker --context {context} volume ls --filter {filter} --format {format}");
    if ctx.runner.is_dry_run() {
        ctx.runner.say("then, unless another lease (younger than 2 h) is held:");
        ctx.runner.run(listing)?;
        return Ok(Vec::new());
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let listed = ctx.runner.query(listing, None)?;
    Ok(listed
        .lines()
        .filter_map(|line| {
            let (name, since) = line.split_once(' ').unwrap_or((line, ""));
            let since: u64 = since.trim().parse().ok()?;
            (now.saturating_sub(since) < LEASE_LIFETIME.as_secs() && name != lease).then(|| name.to_string())
        })
        .collect())
}
