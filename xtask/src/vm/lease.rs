//! Leases on the VM's engine: a volume per pipeline that uses the VM, so that an overlapping
//! pipeline does not stop it under another's builds; the last one out stops it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use xshell::cmd;

use super::Vm;
use crate::ctx::Ctx;
use crate::runner::sh;

/// The label of a lease on the VM's engine, and of the time it was taken.
pub const LEASE_LABEL: &str = "dev.multi-arch-docker.lease";
const LEASE_SINCE_LABEL: &str = "dev.multi-arch-docker.lease.since";
/// A lease older than this belongs to a pipeline that was cancelled (twice the pipeline's
/// timeout): it is not counted.
const LEASE_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// A lease on the VM's engine: a volume of this run's own, labelled with when it was taken.
pub fn take_lease(ctx: &Ctx, vm: &Vm) -> Result<String> {
    let id = ctx.settings.build_id.clone().unwrap_or_else(|| {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    });
    let name = format!("xtask-lease-{id}");
    let since = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (sh, context) = (sh(), &vm.context);
    let (label, since_label) = (format!("{LEASE_LABEL}={id}"), format!("{LEASE_SINCE_LABEL}={since}"));
    ctx.runner.say(&format!(
        "a lease on {}, so that no other pipeline stops it under these builds: {name}",
        vm.name
    ));
    ctx.runner.run(cmd!(
        sh,
        "docker --context {context} volume create --label {label} --label {since_label} {name}"
    ))?;
    Ok(name)
}

/// Give `lease` back; the leases other pipelines still hold (those not older than
/// `LEASE_LIFETIME`).
pub fn give_back(ctx: &Ctx, vm: &Vm, lease: &str) -> Result<Vec<String>> {
    let (sh, context) = (sh(), &vm.context);
    ctx.runner.run(cmd!(sh, "docker --context {context} volume rm {lease}"))?;
    let (filter, format) =
        (format!("label={LEASE_LABEL}"), format!("{{{{.Name}}}} {{{{.Label \"{LEASE_SINCE_LABEL}\"}}}}"));
    let listing = cmd!(sh, "docker --context {context} volume ls --filter {filter} --format {format}");
    if ctx.runner.is_dry_run() {
        ctx.runner.say("then, unless another lease (younger than 2 h) is there:");
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
