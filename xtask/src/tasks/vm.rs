//! start-vm, stop-vm, ssh-vm, ssh-tunnel: the arm64 VM by hand (the builds start and stop it
//! themselves with AUTO_START_STOP=1, see `vm::with_arm_node`).

use anyhow::Result;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::flags::WaitArgs;
use crate::runner::sh;
use crate::vm;

/// start-vm; with `--wait`, until the VM reports RUNNING and answers ssh through IAP.
pub fn start_vm(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    vm::start(ctx, args.wait().as_ref())
}

/// stop-vm
pub fn stop_vm(ctx: &Ctx) -> Result<()> {
    vm::stop(ctx)
}

/// ssh-vm: an interactive shell on the VM, as you (your gcloud account, through OS Login), not
/// as the tunnel's user: its key can only reach the engine.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let (sh, vm, project, zone) = (sh(), &s.arm64_vm, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute ssh --zone {zone} {vm} --project {project} --tunnel-through-iap"))
}

/// ssh-tunnel: the master connection every docker connection to the VM's engine shares, in the
/// background, and the docker context `arm_node` on it; with `--wait`, until the engine answers.
pub fn ssh_tunnel(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    vm::open_tunnel(ctx, args.wait().as_ref())
}
