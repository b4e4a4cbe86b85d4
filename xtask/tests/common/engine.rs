//! A real Docker Engine for the end-to-end tests: whether one runs, and a multi-arch base image
//! made from Debian's `busybox-static` (amd64 and arm64) without any registry but ours.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xtask_testbed::{TestRegistry, skopeo_raw};

use super::{stderr, stdout};

/// Whether what these tests need is here: an engine that answers `docker info`, uses the
/// containerd image store and lists linux/arm64 (QEMU) for its builder, and the busybox packages
/// the base image is made of. Under CI (`CI` set) anything missing fails the test; elsewhere the
/// test says why it skips and returns early.
pub fn engine_or_skip(test: &str) -> bool {
    let problem = engine_problem();
    let Some(problem) = problem else { return true };
    let fix = "`sudo bash .ci/engine` installs and starts what is missing (Debian 12), see the README";
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} needs a Docker engine and CI must have one: {problem}. {fix}");
    }
    eprintln!("SKIPPED {test}: {problem}. {fix}");
    false
}

fn engine_problem() -> Option<String> {
    let info = Command::new("docker").args(["info", "--format", "{{json .DriverStatus}}"]).output();
    let info = match info {
        Err(e) => return Some(format!("`docker` cannot run ({e})")),
        Ok(out) if !out.status.success() => {
            return Some(format!(
                "no Docker engine answers: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
    };
    if !info.contains("io.containerd.snapshotter.v1") {
        return Some(format!("the engine does not use the containerd image store ({})", info.trim()));
    }
    let builder = Command::new("docker").args(["buildx", "inspect", "default"]).output().ok()?;
    if !String::from_utf8_lossy(&builder.stdout).contains("linux/arm64") {
        return Some("the engine's builder cannot build linux/arm64: QEMU is not registered".into());
    }
    let debs = xtask_testbed::busybox_debs();
    if let Some(arch) =
        ["amd64", "arm64"].into_iter().find(|arch| !debs.join(format!("{arch}.deb")).is_file())
    {
        return Some(format!(
            "Debian's busybox-static for {arch} is not in {} (BUSYBOX_DEBS)",
            debs.display()
        ));
    }
    None
}

/// Build the multi-arch busybox base (see `xtask_testbed::push_busybox_base`), or panic.
pub fn push_busybox_base(dir: &Path, reference: &str) {
    xtask_testbed::push_busybox_base(dir, reference).unwrap();
}

/// Run a command to success, with its output in the panic message otherwise.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    xtask_testbed::run_to_success(program, args).unwrap()
}

/// A second Docker engine on this machine, standing in for the arm64 VM's: its own data, exec
/// root and bridge, the containerd image store, and one unix socket (no TCP listener), at
/// `socket()`, the group `docker`'s as on the VM. Stopped, and its bridge removed, when dropped.
pub struct SecondEngine {
    dir: tempfile::TempDir,
    child: std::process::Child,
    bridge: String,
}

impl SecondEngine {
    /// `bridge`: a name for the engine's own bridge, unique on this machine.
    pub fn start(bridge: &str) -> SecondEngine {
        SecondEngine::start_with(bridge, "169.254.77.1/24")
    }

    /// `start`, the bridge at `address` (engines at once each need a subnet of their own).
    pub fn start_with(bridge: &str, address: &str) -> SecondEngine {
        let dir = tempfile::tempdir().unwrap();
        // The tunnel user reaches the socket: the folders on its way must be open to it.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("daemon.json"), r#"{"features":{"containerd-snapshotter":true}}"#)
            .unwrap();
        // `--bridge=none` breaks every RUN, so it gets a bridge of its own, with a link-local
        // address nothing is ever sent to.
        let bridge = bridge.to_string();
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", address, "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        let child = Command::new("dockerd")
            .args(["--config-file", &path("daemon.json"), "--data-root", &path("data")])
            .args(["--exec-root", &path("exec"), "--pidfile", &path("pid")])
            .args(["-H", &format!("unix://{}", path("docker.sock")), "--group", "docker"])
            .args(["--iptables=false", "--bridge", &bridge])
            .stdout(std::fs::File::create(dir.path().join("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("dockerd.err")).unwrap())
            .spawn()
            .expect("dockerd starts");
        let engine = SecondEngine { dir, child, bridge };
        let host = format!("unix://{}", engine.socket().display());
        for _ in 0..120 {
            if Command::new("docker")
                .args(["-H", &host, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return engine;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        panic!(
            "the second dockerd did not answer: {}",
            std::fs::read_to_string(engine.dir.path().join("dockerd.err")).unwrap_or_default()
        );
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("docker.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `docker` on this engine, straight at its socket (not through the tunnel).
    pub fn docker(&self, args: &[&str]) -> std::process::Output {
        let host = format!("unix://{}", self.socket().display());
        Command::new("docker").arg("-H").arg(host).args(args).output().unwrap()
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and its containerd, then exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        unmount_under(self.dir.path());
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// Unmount whatever is still mounted under `dir`, deepest first: a dockerd that was killed (the
/// pool test kills one under a build) leaves its data root's mounts and its builds' overlays
/// behind, and its folder could not be removed.
fn unmount_under(dir: &Path) {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let Ok(point) = std::ffi::CString::new(point) else { continue };
        // SAFETY: a valid C string; a lazy unmount of a mount this engine made.
        unsafe { libc::umount2(point.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The tests that make the tunnel user and run sshd need root, as CI has (`.ci/run`); elsewhere
/// they say why they skip.
pub fn root_or_skip(test: &str) -> bool {
    if unsafe { libc::getuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} makes a system user and runs sshd: CI runs the tests as root");
    }
    eprintln!("SKIPPED {test}: it makes a system user and runs sshd, which needs root");
    false
}

/// The tunnel user of the tests' VM stand-in: as ARM64_BUILDER.md makes `buildx`, under a name
/// of its own (a system user, in the group `docker`, a shell, no password and not locked).
pub const TUNNEL_USER: &str = "xtask-tunnel";

/// Make `TUNNEL_USER` unless it exists (the tests run as root, as on the VM).
pub fn ensure_tunnel_user() {
    let exists = Command::new("id").arg(TUNNEL_USER).output().is_ok_and(|o| o.status.success());
    if !exists {
        run(
            "useradd",
            &["--system", "--create-home", "--shell", "/bin/sh", "--groups", "docker", TUNNEL_USER],
        );
    }
    run("usermod", &["--password", "*", TUNNEL_USER]);
}

/// A file the builder VM's startup script (`builder-vm/startup.sh`, the one source of the VM's
/// files) writes: the text of its `<<'END_OF_<name>'` here-document, as the VM gets it.
pub fn startup_script_file(name: &str) -> String {
    let script = std::fs::read_to_string(xtask::project_root().join("builder-vm/startup.sh")).unwrap();
    let start = format!("<<'END_OF_{name}'\n");
    let after =
        &script[script.find(&start).unwrap_or_else(|| panic!("startup.sh writes no {name}")) + start.len()..];
    after[..after.find(&format!("END_OF_{name}\n")).unwrap()].to_string()
}

/// Debian's sshd on `127.0.0.1:<port>`, with the startup script's `buildx-tunnel.conf` as is but
/// for the user, its key file and the engine's socket (the tests' own): root may not log in,
/// and `TUNNEL_USER`'s sessions all run `docker system dial-stdio` on `socket`. The key that
/// logs in as `TUNNEL_USER` is `key()`. Stopped when dropped.
pub struct TestSshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl TestSshd {
    pub fn start(socket: &Path) -> TestSshd {
        assert!(Path::new("/usr/sbin/sshd").is_file(), "sshd is missing: apt-get install openssh-server");
        ensure_tunnel_user();
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for key in ["host_key", "key"] {
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &path(key)]);
        }
        std::fs::copy(dir.path().join("key.pub"), dir.path().join("authorized_keys")).unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let tunnel = startup_script_file("buildx-tunnel.conf")
            .replace("Match User buildx", &format!("Match User {TUNNEL_USER}"))
            .replace("/etc/ssh/buildx_authorized_keys", &path("authorized_keys"))
            .replace("/var/run/docker.sock", &socket.display().to_string());
        assert!(tunnel.contains(&format!("unix://{}", socket.display())), "{tunnel}");
        // What a test sshd needs of its own, then the startup script's file (its Match block last).
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nStrictModes no\nUsePAM no\n\
             PasswordAuthentication no\nAuthorizedKeysFile {}\nLogLevel VERBOSE\n{tunnel}",
            path("host_key"),
            path("sshd.pid"),
            path("authorized_keys"),
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f", &path("sshd_config")])
            .stderr(std::fs::File::create(dir.path().join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        let sshd = TestSshd { dir, port, child };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                return sshd;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("sshd did not listen: {}", sshd.log());
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// `ssh` to this sshd as `user` with the test key, no ssh config of this account's.
    pub fn ssh(&self, user: &str, args: &[&str]) -> Command {
        let mut ssh = Command::new("ssh");
        ssh.args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(self.key())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
            ])
            .args(["-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5"])
            .args(args)
            .arg(format!("{user}@127.0.0.1"))
            .stdin(std::process::Stdio::null());
        ssh
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for `gcloud` on `PATH`, the cloud's side of each contract and nothing more:
/// `compute instances start|stop|describe` keep a VM state in `$FAKE_VM/state` (STAGING once
/// after a start, then RUNNING); `compute ssh` (the operator's login, which start-vm --wait
/// tries) succeeds once the VM runs and the test's sshd answers; `compute start-iap-tunnel <vm>
/// 22 --listen-on-stdin` joins its standard input and output to the test's sshd, as IAP does to
/// the VM's port 22, only while the VM runs and unless `$FAKE_VM/iap-down` exists (IAP refusing).
/// A VM with a folder `$FAKE_VM/vms/<vm>/` (a pool's) keeps its state, `iap-down` and sshd
/// port (`port`) there instead of `$FAKE_VM/state`, `$FAKE_VM/iap-down` and `$FAKE_VM_SSH_PORT`;
/// `secrets versions access … --out-file=F` writes the tunnel's key (`$FAKE_VM_KEY`, `.pub` for a
/// secret named `…-pub`) into F; `storage cp --recursive DIR gs://B/P/` copies DIR into
/// `$FAKE_VM/buckets/B/P/`; `artifacts docker images scan` names a scan and
/// `list-vulnerabilities` reports one LOW finding. Every call is appended to `$FAKE_VM/calls`.
pub const FAKE_GCLOUD: &str = r#"#!/bin/bash
printf '%s\n' "$*" >> "$FAKE_VM/calls"
# The VM named: `compute instances <action> <vm>`, `compute start-iap-tunnel <vm>`, or the first
# word of `compute ssh` that is neither a flag nor a flag's value.
vm=
case "$1 $2" in
  "compute instances") vm=$4 ;;
  "compute start-iap-tunnel") vm=$3 ;;
  "compute ssh")
    skip=
    for arg in "${@:3}"; do
      if [ -n "$skip" ]; then skip=; continue; fi
      case "$arg" in --project|--zone) skip=1 ;; --*) ;; *) vm=$arg; break ;; esac
    done ;;
esac
vm_dir=$FAKE_VM
port=$FAKE_VM_SSH_PORT
if [ -n "$vm" ] && [ -d "$FAKE_VM/vms/$vm" ]; then
  vm_dir="$FAKE_VM/vms/$vm"
  port=$(cat "$vm_dir/port")
fi
state=$(cat "$vm_dir/state" 2>/dev/null || echo TERMINATED)
case "$1 $2 $3" in
  "compute instances start") echo STAGING > "$vm_dir/state"; exit 0 ;;
  "compute instances stop") echo TERMINATED > "$vm_dir/state"; exit 0 ;;
  "compute instances describe")
    echo "$state"
    [ "$state" = STAGING ] && echo RUNNING > "$vm_dir/state"
    exit 0 ;;
  "secrets versions access")
    for arg in "$@"; do
      case "$arg" in --secret=*) secret=${arg#--secret=} ;; --out-file=*) out=${arg#--out-file=} ;; esac
    done
    case "$secret" in *-pub) cp "$FAKE_VM_KEY.pub" "$out" ;; *) cp "$FAKE_VM_KEY" "$out" ;; esac
    exit $? ;;
  "storage cp --recursive")
    # A bucket, as folders: gs://<bucket>/<path>/ is $FAKE_VM/buckets/<bucket>/<path>/.
    dest="$FAKE_VM/buckets/${5#gs://}"
    mkdir -p "$dest" && cp -r "$4" "$dest"; exit $? ;;
  "artifacts docker images")
    case "$4" in
      scan) echo "projects/p/locations/us/operations/scan-$RANDOM"; exit 0 ;;
      list-vulnerabilities) echo '[{"vulnerability":{"effectiveSeverity":"LOW"}}]'; exit 0 ;;
    esac ;;
esac
case "$1 $2" in
  "compute ssh")
    [ "$state" = RUNNING ] || exit 255
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || exit 255; exit 0 ;;
  "compute start-iap-tunnel")
    if [ "$state" != RUNNING ] || [ -e "$vm_dir/iap-down" ]; then
      echo "ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting [4003: 'failed to connect to backend']." >&2
      exit 1
    fi
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    cat <&3 &
    cat >&3
    exit 0 ;;
esac
echo "fake gcloud: unexpected call: $*" >&2
exit 2
"#;

/// A test catalog in a folder of its own, its base image (busybox, both platforms) served by an
/// "upstream" registry on 127.0.0.1, and a destination registry for `DOCKER_REPO`: the main
/// job, offline.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub upstream: TestRegistry,
    pub destination: TestRegistry,
}

impl Setup {
    /// `catalog`: the text of `images.toml`; `files`: more files by path under the catalog's
    /// folder (Dockerfiles, the pipeline); `list`: the vendoring list, given the upstream host,
    /// which serves `busybox:1.35`.
    pub fn new(catalog: &str, files: &[(&str, String)], list: impl Fn(&str) -> String) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let upstream = TestRegistry::start().unwrap();
        let destination = TestRegistry::start().unwrap();
        let up = upstream.host();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        push_busybox_base(&dir.path().join("base"), &format!("{up}/busybox:1.35"));
        let folder = dir.path().join("catalog");
        for (path, text) in files {
            let path = folder.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        std::fs::write(folder.join("images.toml"), catalog).unwrap();
        std::fs::write(folder.join("thirdparty.txt"), list(&up)).unwrap();
        Setup { dir, upstream, destination }
    }

    /// The upstream's busybox, its index copied whole (digests kept) under `path:tag` of the
    /// upstream too: the stand-in for another name of an upstream image (`library/busybox`).
    pub fn busybox_as(&self, path_and_tag: &str) {
        let up = self.upstream.host();
        let (from, to) = (format!("docker://{up}/busybox:1.35"), format!("docker://{up}/{path_and_tag}"));
        run("skopeo", &["copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false", &from, &to]);
    }

    pub fn repo(&self) -> String {
        format!("{}/local", self.destination.host())
    }

    pub fn catalog(&self) -> String {
        self.dir.path().join("catalog/images.toml").display().to_string()
    }

    /// A file of the catalog's folder.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join("catalog").join(path)
    }

    /// xtask with ENV=local into the destination, on the test catalog; `more_env` wins.
    pub fn xtask(&self, args: &[&str], more_env: &[(&str, &str)]) -> Output {
        let (repo, catalog) = (self.repo(), self.catalog());
        let mut env = vec![("ENV", "local"), ("DOCKER_REPO", repo.as_str()), ("CATALOG", catalog.as_str())];
        env.extend_from_slice(more_env);
        super::xtask(args, &env)
    }

    #[track_caller]
    pub fn xtask_ok(&self, args: &[&str], more_env: &[(&str, &str)]) -> Output {
        let output = self.xtask(args, more_env);
        assert!(
            output.status.success(),
            "{args:?} failed:\n{}\n{}\nthe destination registry's errors:\n{}\n{}",
            stdout(&output),
            stderr(&output),
            self.destination.errors(),
            self.log_tails()
        );
        output
    }

    /// The last lines of every build log under `logs()`: a failed build's cause is there, and the
    /// folder goes with the test.
    fn log_tails(&self) -> String {
        let Ok(entries) = std::fs::read_dir(self.logs()) else { return String::new() };
        let mut paths: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        paths.sort();
        let mut tails = String::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            tails +=
                &format!("--- the last {} lines of {}:\n{}\n", tail.len(), path.display(), tail.join("\n"));
        }
        tails
    }

    pub fn logs(&self) -> String {
        self.dir.path().join("logs").display().to_string()
    }
}

/// What the test tagged in the engine goes with it.
impl Drop for Setup {
    fn drop(&mut self) {
        xtask_testbed::remove_engine_images(&[self.upstream.host(), self.destination.host()]);
    }
}

/// The platforms of the index at `reference`, attestations left out, read with skopeo.
pub fn platforms(reference: &str) -> Vec<String> {
    let mut found: Vec<String> =
        platform_manifests(reference).into_iter().map(|(platform, _)| platform).collect();
    found.sort();
    found
}

/// Each platform of the index at `reference` and its manifest's digest, attestations left out.
pub fn platform_manifests(reference: &str) -> Vec<(String, String)> {
    let raw = skopeo_raw(reference).unwrap();
    let index: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert!(index["manifests"].is_array(), "{reference} is not an index: {index}");
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let platform = format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            );
            (platform, m["digest"].as_str().unwrap().to_string())
        })
        .filter(|(p, _)| p != "unknown/unknown")
        .collect()
}

pub fn digest(reference: &str) -> String {
    xtask_testbed::sha256_digest(&skopeo_raw(reference).unwrap())
}

/// A file of the image at `reference`, for `platform`.
pub fn file_in(reference: &str, platform: &str, path: &str) -> String {
    run("docker", &["run", "--rm", "--pull", "always", "--platform", platform, reference, "cat", path])
        .trim()
        .to_string()
}

/// The `docker buildx build` commands a build log shows, each once: a failure that passes (the
/// test registry's 500 while the other platform pushes) runs the same command again, which is
/// no other build.
pub fn distinct_builds(log: &str) -> std::collections::BTreeSet<&str> {
    log.lines().filter(|line| line.contains("+ DOCKER_BUILDKIT=1 docker buildx build ")).collect()
}

/// What `RUN` steps of the image at `reference` recorded as the machine they ran on.
pub fn built_on(reference: &str, platform: &str) -> String {
    file_in(reference, platform, "/built-on")
}

/// The images of `images` a run built and those it found up to date, from its status lines
/// (the vendoring's lines, which name registries, left out), each list sorted.
pub fn outcomes<'a>(out: &'a str, images: &[&str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let names = |prefix: &str| -> Vec<&'a str> {
        let mut names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .filter_map(|rest| rest.split([' ', ':']).next())
            .filter(|name| images.contains(name))
            .collect();
        names.sort();
        names
    };
    (names("published   "), names("up to date  "))
}

/// The index of the first stdout line that starts with `start`.
#[track_caller]
pub fn line_of(out: &str, start: &str) -> usize {
    out.lines().position(|l| l.starts_with(start)).unwrap_or_else(|| panic!("no line {start:?} in\n{out}"))
}

/// The layers of the `platform` manifest of the index at `reference`.
pub fn layers(reference: &str, platform: &str) -> Vec<String> {
    let (_, manifest) = platform_manifests(reference)
        .into_iter()
        .find(|(p, _)| p == platform)
        .unwrap_or_else(|| panic!("{reference} has no {platform}"));
    let repository = xtask::registry::reference::repository_of(reference);
    let raw = skopeo_raw(&format!("{repository}@{manifest}")).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}
