//! The arm64 VM that joins buildx as a native node: its start and stop, the tunnel to its
//! engine, and `with_arm_node`, the VM's life around a run's arm64 builds (started when needed, a lease taken
//! so that an overlapping pipeline does not stop it, stopped when the builds end).
//!
//! The VM's engine has no TCP listener. The docker context `arm_node` is `ssh://xtask-<vm>`: every
//! docker connection is an ssh session, as `ARM64_USER`, whose command the VM's sshd forces to
//! `docker system dial-stdio` (ARM64_BUILDER.md), all of them sharing one master connection
//! through IAP, which `ssh-tunnel` opens.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use xshell::cmd;

use crate::build::node::ARM_CONTEXT;
use crate::ctx::Ctx;
use crate::runner::{AlsoFailed, sh};
use crate::settings::Settings;

/// How long to wait for the VM, its ssh or its engine: at most `tries` checks, `interval` apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub tries: u32,
    pub interval: Duration,
}

impl Wait {
    fn bounds(&self) -> (u32, Duration) {
        (self.tries, self.interval)
    }
}

/// The label of a lease on the VM's engine, and of the time it was taken.
pub const LEASE_LABEL: &str = "dev.multi-arch-docker.lease";
const LEASE_SINCE_LABEL: &str = "dev.multi-arch-docker.lease.since";
/// A lease older than this belongs to a pipeline that was cancelled (twice the pipeline's
/// timeout): it is not counted.
const LEASE_LIFETIME: Duration = Duration::from_secs(2 * 3600);

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

/// The ssh host the tunnel's config names the VM: docker's `ssh://` context and the master
/// connection both go by it.
pub fn ssh_host(s: &Settings) -> String {
    format!("xtask-{}", s.arm64_vm)
}

/// The tunnel: the ssh config of the VM's host, the master connection every docker connection
/// shares (in the background), and the docker context `arm_node` on it; with `wait`, until the
/// VM's engine answers through it.
pub fn open_tunnel(ctx: &Ctx, wait: Option<&Wait>) -> Result<()> {
    write_ssh_config(ctx)?;
    connect(ctx, wait)
}

/// The master connection to the VM's host, from the ssh config written already, the docker
/// context on it, and (`wait`) the engine answering through it.
fn connect(ctx: &Ctx, wait: Option<&Wait>) -> Result<()> {
    let s = &ctx.settings;
    let host = ssh_host(s);
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
    let Some(wait) = wait else { return Ok(()) };
    let format = "{{.Server.Version}}";
    let version = cmd!(sh, "docker --context {context} version --format {format}");
    let what = format!("the engine of {} answers through docker context {context}", s.arm64_vm);
    ctx.runner.poll(&what, version, wait.bounds(), |answer| !answer.is_empty()).with_context(|| {
        format!("is the VM running, and its sshd set up for {} as ARM64_BUILDER.md says?", s.arm64_user)
    })
}

/// Close the master connection: the VM's idle timer counts it as a build in progress.
fn close_tunnel(ctx: &Ctx) -> Result<()> {
    let (sh, host) = (sh(), ssh_host(&ctx.settings));
    ctx.runner.run_ignoring_failure(cmd!(sh, "ssh -O exit {host}"))
}

/// Where the tunnel's own ssh files go: `$HOME/.ssh`, beside its key. In Cloud Build that is
/// `/builder/home/.ssh`, which survives from step to step; the account's home does not.
fn tunnel_dir() -> Result<PathBuf> {
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".ssh")),
        None => Ok(account_home()?.join(".ssh")),
    }
}

/// The home of this account in the password database. ssh reads its user config from there
/// (`~/.ssh/config`), whatever `$HOME` says: in a Cloud Build step `/root`, fresh in each step's
/// container, while `HOME` is `/builder/home`.
fn account_home() -> Result<PathBuf> {
    crate::account_home().context("cannot find this account's home in the password database")
}

/// The master connection's socket: in `$XDG_RUNTIME_DIR` or the temporary folder, which last
/// as long as the step that opened the connection (a socket path has at most 107 bytes, which a deep `$HOME` would
/// pass), one per tunnel folder, so that two homes never share a connection.
fn control_path(s: &Settings, tunnel_dir: &Path) -> PathBuf {
    // FNV-1a: a short, stable name for the folder.
    let hash = tunnel_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    runtime
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("xtask-ssh-{uid}"))
        .join(format!("{}-{:08x}", s.arm64_vm, hash as u32))
}

/// The ssh config of the VM's host: through IAP, as the tunnel's user with its key, every
/// connection sharing one master connection.
fn ssh_config_text(s: &Settings, control: &Path) -> String {
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
        control = control.display(),
    )
}

/// Whether `write_ssh_config` added its `Include` to the account's ssh config.
enum Included {
    /// It was there already (or a dry run wrote nothing).
    Already,
    /// Added to `config`: the way out takes it away again.
    Added { config: PathBuf, line: String },
}

/// `$HOME/.ssh/multi-arch-docker-<vm>.conf`, and an `Include` of it by its absolute path at the
/// top of the account's `~/.ssh/config`, which is the one file ssh reads (docker starts `ssh`
/// itself for an `ssh://` context, with no flag of ours). A relative `Include` would be resolved
/// against `$HOME/.ssh`, which is not where ssh found the config in Cloud Build: an absolute one
/// resolves whatever `HOME` is. The account's config does not survive a Cloud Build step, so
/// every step that uses the tunnel writes it again (publish-all does). Another home's `Include`
/// of this VM stays (below ours) while its file exists; one whose file is gone, or the relative
/// form of older versions, goes. A dry run says so and writes nothing: it is the user's own
/// ssh config.
fn write_ssh_config(ctx: &Ctx) -> Result<Included> {
    let dir = tunnel_dir()?;
    let name = format!("multi-arch-docker-{}.conf", ctx.settings.arm64_vm);
    let file = dir.join(&name);
    let config = account_home()?.join(".ssh").join("config");
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "write {} (the host {}: through IAP, as {}, one shared connection) and include it from {}",
            file.display(),
            ssh_host(&ctx.settings),
            ctx.settings.arm64_user,
            config.display()
        ));
        return Ok(Included::Already);
    }
    let control = control_path(&ctx.settings, &dir);
    for folder in [&dir, config.parent().expect("a folder")] {
        create_private_dir(folder)?;
    }
    create_socket_dir(control.parent().expect("a folder"))?;
    write_replacing(&file, &ssh_config_text(&ctx.settings, &control))?;
    // A config that is a link (a dotfile manager's) is written where it points.
    let config = std::fs::canonicalize(&config).unwrap_or(config);
    let include = format!("Include {}", file.display());
    let _lock = ConfigLock::take(&config)?;
    let current = std::fs::read_to_string(&config).unwrap_or_default();
    let stale = |line: &str| {
        line.trim().strip_prefix("Include ").is_some_and(|path| {
            let path = path.trim();
            path == name || (path.ends_with(&format!("/{name}")) && !Path::new(path).is_file())
        })
    };
    let already = current.lines().any(|line| line.trim() == include);
    if current.lines().next() != Some(include.as_str()) || current.lines().any(stale) {
        // At the top: an Include after a `Host` line would belong to that host.
        let mut text = format!("{include}\n");
        for line in current.lines().filter(|line| line.trim() != include && !stale(line)) {
            text.push_str(line);
            text.push('\n');
        }
        write_replacing(&config, &text)?;
        eprintln!("ssh-tunnel: included {} from {}", file.display(), config.display());
    }
    Ok(if already { Included::Already } else { Included::Added { config, line: include } })
}

/// Take `line` out of the account's ssh config again.
fn remove_include(config: &Path, line: &str) -> Result<()> {
    let _lock = ConfigLock::take(config)?;
    let current =
        std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let kept: String = current.lines().filter(|l| l.trim() != line).map(|l| format!("{l}\n")).collect();
    if kept != current {
        write_replacing(config, &kept)?;
    }
    Ok(())
}

/// The folder of the master connection's socket: ours alone, since whoever controls it could
/// put a socket of theirs in our connection's place.
fn create_socket_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    create_private_dir(dir)?;
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    if meta.uid() != uid || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not this account's alone (owner {}, mode {:o}): remove it, and ssh-tunnel makes it anew",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// A folder only its owner can enter, as ssh wants its own.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Write `path` whole or not at all: a new file beside it, renamed over it (readable by its
/// owner only, as ssh requires of its config).
fn write_replacing(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let name = path.file_name().expect("a file").to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot write {}", path.display()))
}

/// An exclusive lock on the account's ssh config while it is read and rewritten: two runs at
/// once (two VMs, two pipelines on one machine) each keep their `Include`.
struct ConfigLock {
    _file: std::fs::File,
}

impl ConfigLock {
    fn take(config: &Path) -> Result<ConfigLock> {
        let path = config.with_file_name(".config.multi-arch-docker.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid open file descriptor; the lock goes when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(ConfigLock { _file: file })
    }
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

/// A lease on the VM's engine: a volume of this run's own, labelled with when it was taken.
fn take_lease(ctx: &Ctx) -> Result<String> {
    let id = ctx.settings.build_id.clone().unwrap_or_else(|| {
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
