//! start-vm, stop-vm, ssh-vm, ssh-tunnel: the arm64 VM that joins buildx as a native node.

use anyhow::Result;

use super::Ctx;
use crate::runner::Cmd;

/// Local end of the tunnel to the VM's docker daemon.
pub const TUNNEL_LOCAL: &str = "127.0.0.1:8375";
/// Where the VM's docker daemon listens, as seen from the VM's sshd.
pub const TUNNEL_REMOTE: &str = "127.0.0.1:2375";

fn instances(ctx: &Ctx, action: &str) -> Cmd {
    let s = &ctx.settings;
    Cmd::gcloud()
        .args(["compute", "instances", action, &s.arm64_vm])
        .args(["--project", &s.gcp_project, "--zone", &s.zone])
}

/// start-vm
pub fn start_vm(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&instances(ctx, "start"))
}

/// stop-vm
pub fn stop_vm(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&instances(ctx, "stop"))
}

/// ssh-vm: an interactive root shell on the VM, through IAP.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let cmd = Cmd::gcloud()
        .args([
            "compute",
            "ssh",
            "--zone",
            &s.zone,
            &format!("root@{}", s.arm64_vm),
        ])
        .args(["--project", &s.gcp_project, "--tunnel-through-iap"]);
    ctx.runner.run(&cmd)
}

/// The ssh command that forwards `TUNNEL_LOCAL` to the VM's docker daemon, in the background.
pub fn tunnel_cmd(ctx: &Ctx) -> Cmd {
    let s = &ctx.settings;
    Cmd::gcloud()
        .args([
            "compute",
            "ssh",
            "--project",
            &s.gcp_project,
            "--zone",
            &s.zone,
            &s.arm64_vm,
        ])
        .args([
            "--tunnel-through-iap",
            "--",
            "-L",
            &format!("{TUNNEL_LOCAL}:{TUNNEL_REMOTE}"),
        ])
        .args(["-N", "-f"])
}

/// ssh-tunnel
pub fn ssh_tunnel(ctx: &Ctx) -> Result<()> {
    ctx.runner.run(&tunnel_cmd(ctx))
}
