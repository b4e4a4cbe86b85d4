//! The arm64 VM that joins buildx as a native node: its start and stop, the tunnel to its
//! engine, and `with_arm_node`, the VM's life around a run's arm64 builds (started when needed, a lease taken
//! so that an overlapping pipeline does not stop it, stopped when the builds end).
//!
//! The VM's engine has no TCP listener. The docker context `arm_node` is `ssh://xtask-<vm>`: every
//! docker connection is an ssh session, as `ARM64_USER`, whose command the VM's sshd forces to
//! `docker system dial-stdio` (ARM64_BUILDER.md), all of them sharing one master connection
//! through IAP, which `ssh-tunnel` opens.

mod lease;
mod tunnel;
mod wait;

use anyhow::{Result, anyhow};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::runner::{AlsoFailed, sh};
pub use lease::LEASE_LABEL;
use lease::{give_back, take_lease};
use tunnel::{Included, close_tunnel, connect, remove_include, write_ssh_config};
pub use tunnel::{open_tunnel, ssh_host};
pub use wait::Wait;

/// Start the VM; with `wait`, until it reports RUNNING and an IAP ssh command succeeds (right
/// after a start the tunnel fails with "4047: Failed to lookup instance" for a while).
pub fn start(ctx: &Ctx, wait: Option<&Wait>) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances start {vm} --project {project} --zone {zone}"))?;
    let Some(wait) = wait else { return Ok(()) };
    let describe = cmd!(
        sh,
        "gcloud compute instances describe {vm} --project {project} --zone {zone} --format=value(status)"
    );
    ctx.runner
        .poll(&format!("{vm} reports RUNNING"), describe, wait.bounds(), |status| status == "RUNNING")?;
    let ssh = cmd!(
        sh,
        "gcloud compute ssh --project {project} --zone {zone} {vm} --tunnel-through-iap --quiet --command=true"
    );
    ctx.runner.poll(&format!("ssh to {vm} through IAP works"), ssh, wait.bounds(), |_| true)?;
    ctx.runner.say(&format!("{vm} is running and answers ssh"));
    Ok(())
}

/// Stop the VM.
pub fn stop(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute instances stop {vm} --project {project} --zone {zone}"))
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
fn found(ctx: &Ctx) -> Found {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    let describe = cmd!(
        sh,
        "gcloud compute instances describe {vm} --project {project} --zone {zone} --format=value(status)"
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

/// With MULTI_CONTEXT=1 and arm64 builds to do (`needed`), the VM's engine for the length of
/// `work`: with AUTO_START_STOP=1 the VM is started first; the tunnel is opened and a lease is
/// taken on the VM's engine. On every way out (the builds done or failed, the VM or the tunnel
/// not coming up, the lease not taken) the lease is given back, the tunnel closed, and
/// (AUTO_START_STOP=1) the VM stopped, unless another pipeline holds a lease: then that one
/// stops it, or the VM's idle timer does. When the leases cannot be read, a run that found the
/// VM stopped and started it stops it all the same. The first failure stays the error; a
/// failed stop is added to it.
pub fn with_arm_node<T>(ctx: &Ctx, needed: bool, wait: &Wait, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let s = &ctx.settings;
    if !s.multi_context || !needed {
        if s.multi_context && s.auto_start_stop {
            ctx.runner.say(&format!("no arm64 build to do: {} is not started", s.arm64_vm));
        }
        return work();
    }
    // From here on a Ctrl-C or SIGTERM fails the work instead of ending the process, so that
    // the way out below runs.
    let _deferred = crate::interrupt::Deferred::start();
    let found = if s.auto_start_stop { found(ctx) } else { Found::Unknown };
    let mut included = Included::Already;
    let lease = (|| {
        if s.auto_start_stop {
            start(ctx, Some(wait))?;
        }
        included = write_ssh_config(ctx)?;
        connect(ctx, Some(wait))?;
        take_lease(ctx)
    })();
    let (result, others) = match lease {
        Ok(lease) => {
            let result = work();
            (result, give_back(ctx, &lease))
        }
        Err(err) => (Err(err), Err(anyhow!("no lease was taken"))),
    };
    close_tunnel(ctx)?;
    // The account's ssh config as this run found it: an Include it added goes again (a
    // rehearsal's or a test's home must not stay in a developer's config).
    if let Included::Added { config, line } = included
        && let Err(err) = remove_include(&config, &line)
    {
        ctx.runner.say(&format!("the Include this run added to {} stays: {err:#}", config.display()));
    }
    if !s.auto_start_stop {
        return result;
    }
    let vm = &s.arm64_vm;
    let stopping = match others {
        Ok(others) if others.is_empty() => true,
        Ok(others) => {
            ctx.runner.say(&format!(
                "{vm} stays up: {} other pipeline(s) hold a lease on it ({}), the last one stops it",
                others.len(),
                others.join(" ")
            ));
            false
        }
        Err(err) if found == Found::Stopped => {
            ctx.runner.say(&format!(
                "the leases on {vm} cannot be read ({err:#}); this run found it stopped and started it, so it stops it"
            ));
            true
        }
        Err(err) => {
            ctx.runner.say(&format!(
                "{vm} stays up, since its leases cannot be read ({err:#}) and it was not this run that started it: its idle timer stops it"
            ));
            false
        }
    };
    if !stopping {
        return result;
    }
    match (result, stop(ctx)) {
        (result, Ok(())) => result,
        (Ok(_), Err(stop)) => {
            Err(stop.context(format!("the builds succeeded, but {vm} could not be stopped")))
        }
        (Err(first), Err(stop)) => {
            Err(AlsoFailed { first, then: stop.context(format!("{vm} could not be stopped")) }.into())
        }
    }
}
