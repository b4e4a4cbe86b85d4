//! start-vm, stop-vm, ssh-vm, ssh-tunnel: the arm64 VM that joins buildx as a native node.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::Args;

use xshell::cmd;

use super::Ctx;
use crate::probe::http_answers;
use crate::runner::sh;

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
    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs.max(0.0))
    }

    fn bounds(&self) -> (u32, std::time::Duration) {
        (self.tries, self.interval())
    }
}

/// Local end of the tunnel to the VM's docker daemon.
pub const TUNNEL_LOCAL: &str = "127.0.0.1:8375";
/// Where the VM's docker daemon listens, as seen from the VM's sshd.
pub const TUNNEL_REMOTE: &str = "127.0.0.1:2375";

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

/// ssh-vm: an interactive root shell on the VM, through IAP.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let (sh, root_at_vm, project, zone) = (sh(), format!("root@{}", s.arm64_vm), &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(
        sh,
        "gcloud compute ssh --zone {zone} {root_at_vm} --project {project} --tunnel-through-iap"
    ))
}

/// ssh-tunnel; with `--wait`, until the VM's docker daemon answers through it.
pub fn ssh_tunnel(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    // ssh forks into the background itself (`-f`) once the forward is up, so gcloud returns.
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    let forward = format!("{TUNNEL_LOCAL}:{TUNNEL_REMOTE}");
    ctx.runner.run(cmd!(
        sh,
        "gcloud compute ssh --project {project} --zone {zone} {vm} --tunnel-through-iap -- -L {forward} -N -f"
    ))?;
    if !args.wait {
        return Ok(());
    }
    let what = format!("the docker daemon answers at http://{TUNNEL_LOCAL}/_ping");
    let bounds = args;
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "then wait until {what}, at most {} tries {} s apart",
            bounds.tries, bounds.interval_secs
        ));
        return Ok(());
    }
    let local: SocketAddr = TUNNEL_LOCAL.parse().expect("a socket address");
    for attempt in 1..=bounds.tries {
        if http_answers(local, "/_ping") {
            eprintln!("the tunnel is up: {what}");
            return Ok(());
        }
        eprintln!("waiting until {what}: try {attempt}/{}", bounds.tries);
        std::thread::sleep(bounds.interval());
    }
    bail!(
        "gave up waiting until {what} after {} tries: is dockerd on the VM listening on {TUNNEL_REMOTE}? \
         (see ARM64_BUILDER.md)",
        bounds.tries
    )
}
