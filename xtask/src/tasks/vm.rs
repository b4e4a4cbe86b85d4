//! start-vm, stop-vm, ssh-vm, ssh-tunnel, create-vms: the pool's VMs by hand, every one of them or
//! the one named with `--vm` (the builds start and stop them themselves with AUTO_START_STOP=1,
//! see `publish::nodes`).

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::flags::WaitArgs;
use crate::runner::sh;
use crate::vm;

/// start-vm; with `--wait`, until each VM reports RUNNING and answers ssh through IAP.
pub fn start_vm(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    for vm in vm::chosen(&ctx.settings) {
        vm::start(ctx, &vm, args.wait().as_ref())?;
    }
    Ok(())
}

/// stop-vm: every VM chosen, the others tried even when one fails (the first failure is the
/// error, the others are said).
pub fn stop_vm(ctx: &Ctx) -> Result<()> {
    let mut first = None;
    for vm in vm::chosen(&ctx.settings) {
        if let Err(err) = vm::stop(ctx, &vm) {
            match first {
                None => first = Some(err),
                Some(_) => eprintln!("error: {err:#}"),
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// ssh-vm: an interactive shell on the VM, as you (your gcloud account, through OS Login), not
/// as the tunnel's user: its key can only reach the engine.
pub fn ssh_vm(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let chosen = vm::chosen(s);
    let [one] = chosen.as_slice() else {
        let names: Vec<&str> = chosen.iter().map(|vm| vm.name.as_str()).collect();
        bail!(
            "the pool has {} VMs ({}): name the one to log in to with --vm NAME",
            names.len(),
            names.join(", ")
        );
    };
    let (sh, vm, project, zone) = (sh(), &one.name, &s.gcp_project, &s.zone);
    ctx.runner.run(cmd!(sh, "gcloud compute ssh --zone {zone} {vm} --project {project} --tunnel-through-iap"))
}

/// ssh-tunnel: for each VM, the master connection every docker connection to its engine
/// shares, in the background, and its docker context on it (`arm_node` for a pool of one); with
/// `--wait`, until the engine answers.
pub fn ssh_tunnel(ctx: &Ctx, args: &WaitArgs) -> Result<()> {
    for vm in vm::chosen(&ctx.settings) {
        vm::open_tunnel(ctx, &vm, args.wait().as_ref())?;
    }
    Ok(())
}

/// The label every VM create-vms makes carries, with the pool's name.
const POOL_LABEL: &str = "multi-arch-docker-pool";
/// The firewall rule that lets IAP, and only IAP, reach port 22.
const IAP_RULE: &str = "allow-ssh-from-iap";
/// IAP's TCP forwarding range.
const IAP_RANGE: &str = "35.235.240.0/20";
/// The builder VM's startup script, the one source of its files (ARM64_BUILDER.md section 5).
const STARTUP_SCRIPT: &str = "builder-vm/startup.sh";

/// create-vms' own options: the machine each VM of the pool is.
#[derive(Args, Debug, Clone)]
pub struct CreateVmsArgs {
    /// Machine type of each VM (C4A takes Hyperdisk Balanced; a T2A, t2a-standard-2, takes pd-ssd)
    #[arg(long, default_value = "c4a-standard-2")]
    pub machine_type: String,
    /// Boot disk size: it holds the build cache
    #[arg(long, default_value = "40GB")]
    pub disk_size: String,
    /// Boot disk type
    #[arg(long, default_value = "hyperdisk-balanced")]
    pub disk_type: String,
    /// Image family of the boot disk, from debian-cloud
    #[arg(long, default_value = "debian-12-arm64")]
    pub image_family: String,
    /// Machine type of each amd64 VM (AMD64_VMS)
    #[arg(long, default_value = "c4-standard-2")]
    pub amd64_machine_type: String,
    /// Image family of an amd64 VM's boot disk, from debian-cloud
    #[arg(long, default_value = "debian-12")]
    pub amd64_image_family: String,
    /// The service account the VMs run as [default: builder@$GCP_PROJECT.iam.gserviceaccount.com]
    #[arg(long)]
    pub service_account: Option<String>,
    /// The public key the tunnel user accepts (ARM64_BUILDER.md section 2) [default:
    /// $ARM64_SSH_KEY.pub, when it exists]
    #[arg(long)]
    pub tunnel_key: Option<PathBuf>,
    /// The pool's name, the value of the label its VMs carry
    #[arg(long, default_value = "builders")]
    pub pool: String,
    /// Delete the VMs labelled with the pool that the list no longer names (otherwise reported)
    #[arg(long)]
    pub delete_unlisted: bool,
}

/// create-vms: the IAP firewall rule, then every VM of the pool, made unless it exists (one that
/// exists gets the current startup script, which runs at its next boot); VMs labelled with the
/// pool that the list no longer names are reported, and deleted with `--delete-unlisted`.
pub fn create_vms(ctx: &Ctx, args: &CreateVmsArgs) -> Result<()> {
    let s = &ctx.settings;
    let (sh, project, zone) = (sh(), &s.gcp_project, &s.zone);
    let (rule, range) = (IAP_RULE, IAP_RANGE);
    ctx.runner.branch(
        cmd!(sh, "gcloud compute firewall-rules describe {rule} --project {project} --format=value(name)"),
        |r| {
            r.say(&format!("firewall rule {rule} exists"));
            Ok(())
        },
        |r| {
            r.run(cmd!(
                sh,
                "gcloud compute firewall-rules create {rule} --project {project} --direction INGRESS --action allow --rules tcp:22 --source-ranges {range}"
            ))
        },
    )?;
    let key = args.tunnel_key.clone().or_else(|| {
        let default = s.arm64_ssh_key.with_extension("pub");
        default.is_file().then_some(default)
    });
    let mut from_files = format!("startup-script={STARTUP_SCRIPT}");
    match &key {
        Some(key) => from_files.push_str(&format!(",tunnel-authorized-key={}", key.display())),
        None => ctx.runner.say(
            "no tunnel key given (--tunnel-key, or ARM64_SSH_KEY's .pub): the tunnel user accepts no key \
             until the VM's metadata tunnel-authorized-key is set",
        ),
    }
    let account =
        args.service_account.clone().unwrap_or_else(|| format!("builder@{project}.iam.gserviceaccount.com"));
    let metadata = format!("enable-oslogin=TRUE,registry={}", registry_host(&s.docker_repo));
    let label = format!("{POOL_LABEL}={}", args.pool);
    let pool = vm::chosen(s);
    for vm in &pool {
        let (vm, arm) = (&vm.name, vm.platform.is_arm64());
        ctx.runner.branch(
            cmd!(sh, "gcloud compute instances describe {vm} --project {project} --zone {zone} --format=value(name)"),
            |r| {
                r.say(&format!("{vm} exists: its startup script is brought up to date, for its next boot"));
                r.run(cmd!(
                    sh,
                    "gcloud compute instances add-metadata {vm} --project {project} --zone {zone} --metadata-from-file {from_files}"
                ))
            },
            |r| {
                let (machine, family) = if arm {
                    (&args.machine_type, &args.image_family)
                } else {
                    (&args.amd64_machine_type, &args.amd64_image_family)
                };
                let (size, disk) = (&args.disk_size, &args.disk_type);
                r.run(cmd!(
                    sh,
                    "gcloud compute instances create {vm} --project {project} --zone {zone} --machine-type {machine}
                        --image-family {family} --image-project debian-cloud --boot-disk-size {size} --boot-disk-type {disk}
                        --metadata {metadata} --metadata-from-file {from_files}
                        --service-account {account} --scopes cloud-platform --labels {label}"
                ))
            },
        )?;
    }
    let filter = format!("labels.{POOL_LABEL}={}", args.pool);
    let listing = cmd!(
        sh,
        "gcloud compute instances list --project {project} --filter {filter} --format=value(name,zone.basename())"
    );
    let Some(listed) = ctx.runner.capture(listing)? else {
        ctx.runner.say(&format!(
            "then the VMs labelled {label} that the list does not name are reported{}",
            if args.delete_unlisted { " and deleted" } else { " (--delete-unlisted deletes them)" }
        ));
        return Ok(());
    };
    for line in listed.lines() {
        let mut words = line.split_whitespace();
        let (Some(name), Some(zone)) = (words.next(), words.next()) else { continue };
        if pool.iter().any(|vm| vm.name == name) {
            continue;
        }
        if args.delete_unlisted {
            ctx.runner.run(cmd!(
                sh,
                "gcloud compute instances delete {name} --project {project} --zone {zone} --quiet"
            ))?;
        } else {
            println!(
                "{name} ({zone}) carries the label {label} but is not in the pool: kept (--delete-unlisted deletes it)"
            );
        }
    }
    Ok(())
}

/// The registry host of `$DOCKER_REPO`, which the VM's docker logs in to.
fn registry_host(docker_repo: &str) -> &str {
    crate::registry::reference::registry_of(docker_repo)
}
