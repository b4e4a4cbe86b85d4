//! start-vm, stop-vm, ssh-vm, ssh-tunnel: the arm64 VM that joins buildx as a native node.

use std::net::SocketAddr;

use anyhow::{Result, bail};
use clap::Args;

use super::Ctx;
use crate::probe::http_answers;
use crate::runner::{Cmd, Wait};

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until it is ready (see the task's description), checking at most --tries times
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub bounds: Wait,
}

/// Local end of the tunnel to the VM's docker daemon.
pub const TUNNEL_LOCAL: &str = "127.0.0.1:8375";
/// Where the VM's docker daemon listens, as seen from the VM's sshd.
pub const TUNNEL_REMOTE: &str = "127.0.0.1:2375";

fn instances(ctx: &Ctx, action: &str) -> Cmd {
    let s = &ctx.settings;
    Cmd::gcloud().args(["compute", "instances", action, &s.arm64_vm]).args([
        "--project",
        &s.gcp_project,
        "--zone",
        &s.zone,
    ])
}

/// start-vm; with `--wait`, until the VM reports RUNNING and an IAP ssh command succeeds (right
/// after a start the tunnel fails with "4047: Failed to lookup instance" for a while).
pub fn start_vm(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    let s = &ctx.settings;
    ctx.runner.run(&instances(ctx, "start"))?;
    if !args.wait {
        return Ok(());
    }
    let describe = instances(ctx, "describe").arg("--format=value(status)");
    ctx.runner.poll(&format!("{} reports RUNNING", s.arm64_vm), &describe, &args.bounds, |status| {
        status == "RUNNING"
    })?;
    let ssh = Cmd::gcloud()
        .args(["compute", "ssh", "--project", &s.gcp_project, "--zone", &s.zone, &s.arm64_vm])
        .args(["--tunnel-through-iap", "--quiet", "--command=true"]);
    ctx.runner.poll(&format!("ssh to {} through IAP works", s.arm64_vm), &ssh, &args.bounds, |_| true)?;
    ctx.runner.say(&format!("{} is running and answers ssh", s.arm64_vm));
    Ok(())
}

/// stop-vm
pub fn stop_vm(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&instances(ctx, "stop"))
}

/// ssh-vm: an interactive root shell on the VM, through IAP.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let cmd = Cmd::gcloud()
        .args(["compute", "ssh", "--zone", &s.zone, &format!("root@{}", s.arm64_vm)])
        .args(["--project", &s.gcp_project, "--tunnel-through-iap"]);
    ctx.runner.run(&cmd)
}

/// The ssh command that forwards `TUNNEL_LOCAL` to the VM's docker daemon, in the background.
pub fn tunnel_cmd(ctx: &Ctx) -> Cmd {
    let s = &ctx.settings;
    Cmd::gcloud()
        .args(["compute", "ssh", "--project", &s.gcp_project, "--zone", &s.zone, &s.arm64_vm])
        .args(["--tunnel-through-iap", "--", "-L", &format!("{TUNNEL_LOCAL}:{TUNNEL_REMOTE}")])
        .args(["-N", "-f"])
}

/// ssh-tunnel; with `--wait`, until the VM's docker daemon answers through it.
pub fn ssh_tunnel(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    ctx.runner.run(&tunnel_cmd(ctx))?;
    if !args.wait {
        return Ok(());
    }
    let what = format!("the docker daemon answers at http://{TUNNEL_LOCAL}/_ping");
    let bounds = &args.bounds;
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
