//! The VMs that join buildx as native nodes: the pool (`pool`), each VM's start and stop, the
//! tunnel to its engine, and its life around a run's builds (`bring_up`: started when
//! AUTO_START_STOP=1, the tunnel opened, a lease taken so that an overlapping pipeline does not
//! stop it; `take_down` again on every way out).
//!
//! A VM's engine has no TCP listener. Its docker context is `ssh://xtask-<vm>`: every docker
//! connection is an ssh session, as `ARM64_USER`, whose command the VM's sshd forces to
//! `docker system dial-stdio` (ARM64_BUILDER.md), all of them sharing one master connection
//! through IAP, which `ssh-tunnel` opens.

mod lease;
mod tunnel;
mod wait;

use std::time::Instant;

use anyhow::{Result, anyhow};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::failure::Failure;
use crate::platform::Platform;
use crate::runner::sh;
use crate::settings::Settings;
pub use lease::LEASE_LABEL;
use lease::{give_back, take_lease};
use tunnel::{Included, close_tunnel, connect, remove_include, write_ssh_config};
pub use tunnel::{open_tunnel, ssh_host};
pub use wait::Wait;

/// The docker context of the arm64 VM of a pool of one (the pipeline's `setup` step creates it).
pub const ARM_CONTEXT: &str = "arm_node";

/// A VM of the pool: its name, the platform it builds and the docker context of its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    pub name: String,
    pub platform: Platform,
    pub context: String,
}

/// The VMs of the pool: `ARM64_VMS` (by default `ARM64_VM` alone), then `AMD64_VMS`. The arm64
/// VM of a pool of one is reached as `arm_node`, as it always was; in a pool of several each is
/// `arm_node-<vm>`, and each amd64 VM `amd_node-<vm>`.
pub fn pool(s: &Settings) -> Vec<Vm> {
    let arm = s.arm64_vms.iter().map(|name| Vm {
        name: name.clone(),
        platform: Platform::new("linux", "arm64"),
        context: if s.arm64_vms.len() == 1 { ARM_CONTEXT.to_string() } else { format!("arm_node-{name}") },
    });
    let amd = s.amd64_vms.iter().map(|name| Vm {
        name: name.clone(),
        platform: Platform::new("linux", "amd64"),
        context: format!("amd_node-{name}"),
    });
    arm.chain(amd).collect()
}

/// The VMs a VM task acts on: the one named with `--vm`, else every VM of the pool.
pub fn chosen(s: &Settings) -> Vec<Vm> {
    let pool = pool(s);
    let Some(named) = &s.vm_named else { return pool };
    match pool.iter().find(|vm| &vm.name == named) {
        Some(vm) => vec![vm.clone()],
        // Not in ARM64_VMS: an arm64 VM of its own, as `--vm` always named one.
        None => vec![Vm {
            name: named.clone(),
            platform: Platform::new("linux", "arm64"),
            context: ARM_CONTEXT.to_string(),
        }],
    }
}

/// Start the VM; with `wait`, until it reports RUNNING and an IAP ssh command succeeds (right
/// after a start the tunnel fails with "4047: Failed to lookup instance" for a while).
pub fn start(ctx: &Ctx, vm: &Vm, wait: Option<&Wait>) -> Result<()> {
    let s = &ctx.settings;
    let (sh, name, project, zone) = (sh(), &vm.name, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances start {name} --project {project} --zone {zone}"))?;
    let Some(wait) = wait else { return Ok(()) };
    let describe = cmd!(
        sh,
        "gcloud compute instances describe {name} --project {project} --zone {zone} --format=value(status)"
    );
    ctx.runner
        .poll(&format!("{name} reports RUNNING"), describe, wait.bounds(), |status| status == "RUNNING")?;
    let ssh = cmd!(
        sh,
        "gcloud compute ssh --project {project} --zone {zone} {name} --tunnel-through-iap --quiet --command=true"
    );
    ctx.runner.poll(&format!("ssh to {name} through IAP works"), ssh, wait.bounds(), |_| true)?;
    ctx.runner.say(&format!("{name} is running and answers ssh"));
    Ok(())
}

/// Stop the VM.
pub fn stop(ctx: &Ctx, vm: &Vm) -> Result<()> {
    let s = &ctx.settings;
    let (sh, name, project, zone) = (sh(), &vm.name, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances stop {name} --project {project} --zone {zone}"))
}

/// What the VM was before this run started it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Stopped (TERMINATED, STOPPED, SUSPENDED): this run started it, so it may stop it.
    Stopped,
    /// Up, or on its way up or down: another pipeline may be using it.
    Busy,
    /// Not known: a dry run, or gcloud did not say.
    Unknown,
}

/// The VM's status before a start, from gcloud (a read-only query; a dry run shows it).
fn found(ctx: &Ctx, vm: &Vm) -> Found {
    let s = &ctx.settings;
    let (sh, name, project, zone) = (sh(), &vm.name, &s.gcp_project, &s.zone);
    let describe = cmd!(
        sh,
        "gcloud compute instances describe {name} --project {project} --zone {zone} --format=value(status)"
    );
    match ctx.runner.capture(describe) {
        Ok(Some(status)) => match status.trim() {
            "TERMINATED" | "STOPPED" | "SUSPENDED" => Found::Stopped,
            "" => Found::Unknown,
            _ => Found::Busy,
        },
        Ok(None) | Err(_) => Found::Unknown,
    }
}

/// A VM this run brought up: what it found, what it changed, to be undone by `take_down`.
pub struct BroughtUp {
    pub vm: Vm,
    found: Found,
    included: Included,
    lease: Option<String>,
    /// When it was asked to start (or, AUTO_START_STOP=0, to be reached).
    pub since: Instant,
}

/// Bring `vm` up for a run's builds: with AUTO_START_STOP=1 it is started first; the tunnel is
/// opened and a lease is taken on its engine. The `BroughtUp` comes back whether that worked or
/// not: `take_down` it on every way out.
pub fn bring_up(ctx: &Ctx, vm: &Vm, wait: &Wait) -> (BroughtUp, Result<()>) {
    let s = &ctx.settings;
    let found = if s.auto_start_stop { found(ctx, vm) } else { Found::Unknown };
    let mut up =
        BroughtUp { vm: vm.clone(), found, included: Included::Already, lease: None, since: Instant::now() };
    let result = (|| {
        if s.auto_start_stop {
            start(ctx, vm, Some(wait))?;
        }
        up.included = write_ssh_config(ctx, vm)?;
        connect(ctx, vm, Some(wait))?;
        up.lease = Some(take_lease(ctx, vm)?);
        Ok(())
    })();
    (up, result)
}

/// Take a VM this run brought up down again: its lease given back, the tunnel closed, and (AUTO_START_STOP=1) the VM
/// stopped, unless another pipeline has a lease on it: then that one stops it, or the VM's idle
/// timer does. When the leases cannot be read, a run that found the VM stopped and started it
/// stops it all the same.
pub fn take_down(ctx: &Ctx, up: BroughtUp) -> Result<()> {
    let s = &ctx.settings;
    let BroughtUp { vm, found, included, lease, .. } = up;
    let others = match &lease {
        Some(lease) => give_back(ctx, &vm, lease),
        None => Err(anyhow!("no lease was taken")),
    };
    close_tunnel(ctx, &vm)?;
    // The account's ssh config as this run found it: an Include it added goes again (a
    // rehearsal's or a test's home must not stay in a developer's config).
    if let Included::Added { config, line } = included
        && let Err(err) = remove_include(&config, &line)
    {
        ctx.runner.say(&format!("the Include this run added to {} stays: {err:#}", config.display()));
    }
    if !s.auto_start_stop {
        return Ok(());
    }
    let name = &vm.name;
    let stopping = match others {
        Ok(others) if others.is_empty() => true,
        Ok(others) => {
            ctx.runner.say(&format!(
                "{name} stays up: {} other pipeline(s) have a lease on it ({}), the last one stops it",
                others.len(),
                others.join(" ")
            ));
            false
        }
        Err(err) if found == Found::Stopped => {
            ctx.runner.say(&format!(
                "the leases on {name} cannot be read ({err:#}); this run found it stopped and started it, so it stops it"
            ));
            true
        }
        Err(err) => {
            ctx.runner.say(&format!(
                "{name} stays up, since its leases cannot be read ({err:#}) and it was not this run that started it: its idle timer stops it"
            ));
            false
        }
    };
    if stopping {
        stop(ctx, &vm).map_err(|err| err.context(format!("{name} could not be stopped")))
    } else {
        Ok(())
    }
}

/// `result`, with a failure of the way out after it added (a failed stop is never put in the
/// place of the builds' own error, nor lost when they succeeded).
pub fn with_way_out<T>(result: Result<T>, way_out: Result<()>) -> Result<T> {
    match (result, way_out) {
        (result, Ok(())) => result,
        (Ok(_), Err(then)) => Err(then.context("the builds succeeded, but a VM was not taken down")),
        (Err(first), Err(then)) => Err(Failure::from(first).and_then(then).into()),
    }
}
