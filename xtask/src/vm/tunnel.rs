//! The tunnel to the VM's engine: the ssh config of the VM's host (written under `$HOME/.ssh`
//! and included from the account's `~/.ssh/config`), the master connection every docker
//! connection shares, and the docker context `arm_node` on it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use super::Vm;
use super::wait::Wait;
use crate::ctx::Ctx;
use crate::runner::sh;
use crate::settings::Settings;

/// The ssh host the tunnel's config names the VM: docker's `ssh://` context and the master
/// connection both go by it.
pub fn ssh_host(vm: &Vm) -> String {
    format!("xtask-{}", vm.name)
}

/// The tunnel: the ssh config of the VM's host, the master connection every docker connection
/// shares (in the background), and the VM's docker context on it; with `wait`, until the
/// VM's engine answers through it.
pub fn open_tunnel(ctx: &Ctx, vm: &Vm, wait: Option<&Wait>) -> Result<()> {
    write_ssh_config(ctx, vm)?;
    connect(ctx, vm, wait)
}

/// The master connection to the VM's host, from the ssh config written already, the docker
/// context on it, and (`wait`) the engine answering through it.
pub fn connect(ctx: &Ctx, vm: &Vm, wait: Option<&Wait>) -> Result<()> {
    let s = &ctx.settings;
    let host = ssh_host(vm);
    let sh = sh();
    // ssh forks into the background itself (`-f`) once it is connected and authenticated.
    ctx.runner.run(cmd!(sh, "ssh -f -N {host}"))?;
    let endpoint = format!("host=ssh://{host}");
    let context = &vm.context;
    ctx.runner.branch(
        cmd!(sh, "docker context inspect {context}"),
        |r| r.run(cmd!(sh, "docker context update {context} --docker {endpoint}")),
        |r| r.run(cmd!(sh, "docker context create {context} --docker {endpoint}")),
    )?;
    let Some(wait) = wait else { return Ok(()) };
    let format = "{{.Server.Version}}";
    let version = cmd!(sh, "docker --context {context} version --format {format}");
    let what = format!("the engine of {} answers through docker context {context}", vm.name);
    ctx.runner.poll(&what, version, wait.bounds(), |answer| !answer.is_empty()).with_context(|| {
        format!("is the VM running, and its sshd set up for {} as ARM64_BUILDER.md says?", s.arm64_user)
    })
}

/// Close the master connection: the VM's idle timer counts it as a build in progress.
pub fn close_tunnel(ctx: &Ctx, vm: &Vm) -> Result<()> {
    let (sh, host) = (sh(), ssh_host(vm));
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
fn control_path(vm: &Vm, tunnel_dir: &Path) -> PathBuf {
    // FNV-1a: a short, stable name for the folder.
    let hash = tunnel_dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    // SAFETY: getuid takes no arguments, touches no memory of ours and cannot fail.
    let uid = unsafe { libc::getuid() };
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
    runtime
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("xtask-ssh-{uid}"))
        .join(format!("{}-{:08x}", vm.name, hash as u32))
}

/// The ssh config of the VM's host: through IAP, as the tunnel's user with its key, every
/// connection sharing one master connection.
fn ssh_config_text(s: &Settings, vm: &Vm, control: &Path) -> String {
    let (host, context, project, zone) = (ssh_host(vm), &vm.context, &s.gcp_project, &s.zone);
    let (vm, arch) = (&vm.name, vm.platform.suffix());
    let known_hosts = s.arm64_ssh_key.with_file_name("multi-arch-docker_known_hosts");
    format!(
        "# Written by `cargo xtask ssh-tunnel`: the {arch} VM {vm}, whose engine the docker context\n\
         # {context} reaches as ssh://{host}. Its sshd lets {user} reach the engine and nothing else.\n\
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
pub enum Included {
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
pub fn write_ssh_config(ctx: &Ctx, vm: &Vm) -> Result<Included> {
    let dir = tunnel_dir()?;
    let name = format!("multi-arch-docker-{}.conf", vm.name);
    let file = dir.join(&name);
    let config = account_home()?.join(".ssh").join("config");
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "write {} (the host {}: through IAP, as {}, one shared connection) and include it from {}",
            file.display(),
            ssh_host(vm),
            ctx.settings.arm64_user,
            config.display()
        ));
        return Ok(Included::Already);
    }
    let control = control_path(vm, &dir);
    for folder in [&dir, config.parent().expect("a folder")] {
        create_private_dir(folder)?;
    }
    create_socket_dir(control.parent().expect("a folder"))?;
    write_replacing(&file, &ssh_config_text(&ctx.settings, vm, &control))?;
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
pub fn remove_include(config: &Path, line: &str) -> Result<()> {
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
    // SAFETY: getuid takes no arguments, touches no memory of ours and cannot fail.
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
        // SAFETY: flock takes no pointer, and `file`'s descriptor is open: `file` was just
        // opened and lives on in the lock returned. The lock goes when the file is closed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        Ok(ConfigLock { _file: file })
    }
}
