//! A real Docker Engine for the end-to-end tests: whether one runs, and a multi-arch base image
//! made from Debian's `busybox-static` (amd64 and arm64) without any registry but ours.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xtask::testbed::{TestRegistry, skopeo_raw};

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
    let debs = xtask::testbed::busybox_debs();
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

/// Build the multi-arch busybox base (see `xtask::testbed::push_busybox_base`), or panic.
pub fn push_busybox_base(dir: &Path, reference: &str) {
    xtask::testbed::push_busybox_base(dir, reference).unwrap();
}

/// Run a command to success, with its output in the panic message otherwise.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    xtask::testbed::run_to_success(program, args).unwrap()
}

/// A second Docker engine on this machine, standing in for the arm64 VM's: its own data, exec
/// root and bridge, the containerd image store, listening on `127.0.0.1:<port>` only. Stopped,
/// and its bridge removed, when dropped.
pub struct SecondEngine {
    dir: tempfile::TempDir,
    child: std::process::Child,
    bridge: String,
}

impl SecondEngine {
    pub fn start(port: u16) -> SecondEngine {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(dir.path().join("daemon.json"), r#"{"features":{"containerd-snapshotter":true}}"#)
            .unwrap();
        // `--bridge=none` breaks every RUN, so it gets a bridge of its own, with a link-local
        // address nothing is ever sent to.
        let bridge = format!("xtask{port}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        run("ip", &["link", "add", &bridge, "type", "bridge"]);
        run("ip", &["addr", "add", "169.254.77.1/24", "dev", &bridge]);
        run("ip", &["link", "set", &bridge, "up"]);
        let child = Command::new("dockerd")
            .args(["--config-file", &path("daemon.json"), "--data-root", &path("data")])
            .args(["--exec-root", &path("exec"), "--pidfile", &path("pid")])
            .args(["-H", &format!("tcp://127.0.0.1:{port}"), "--iptables=false", "--bridge", &bridge])
            .stdout(std::fs::File::create(dir.path().join("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("dockerd.err")).unwrap())
            .spawn()
            .expect("dockerd starts");
        let engine = SecondEngine { dir, child, bridge };
        let host = format!("tcp://127.0.0.1:{port}");
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
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        // SIGTERM: dockerd stops its containers and its containerd, then exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

/// Debian's sshd on `127.0.0.1:<port>` that lets root in with a test key, and the ssh options
/// that reach it. Stopped when dropped.
pub struct TestSshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: std::process::Child,
}

impl TestSshd {
    pub fn start() -> TestSshd {
        assert!(Path::new("/usr/sbin/sshd").is_file(), "sshd is missing: apt-get install openssh-server");
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).display().to_string();
        for key in ["host_key", "key"] {
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &path(key)]);
        }
        std::fs::copy(dir.path().join("key.pub"), dir.path().join("authorized_keys")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nUsePAM no\n",
            path("host_key"),
            path("authorized_keys"),
            path("sshd.pid")
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
        panic!(
            "sshd did not listen: {}",
            std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default()
        );
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key")
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stand-in for `gcloud` on `PATH`: `compute instances start|stop|describe` keep a VM state in
/// `$FAKE_VM` (STAGING once after a start, then RUNNING), and `compute ssh` becomes a real ssh to
/// the test's sshd, its `-- <flags>` passed on as ssh's own flags (as gcloud does).
pub const FAKE_GCLOUD: &str = r#"#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_VM/calls"
case "$1 $2 $3" in
  "compute instances start") echo STAGING > "$FAKE_VM/state"; exit 0 ;;
  "compute instances stop") echo TERMINATED > "$FAKE_VM/state"; exit 0 ;;
  "compute instances describe")
    state=$(cat "$FAKE_VM/state" 2>/dev/null || echo TERMINATED)
    echo "$state"
    [ "$state" = STAGING ] && echo RUNNING > "$FAKE_VM/state"
    exit 0 ;;
esac
if [ "$1 $2" = "compute ssh" ]; then
  shift 2
  command=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --) shift; break ;;
      --command=*) command=${1#--command=} ;;
    esac
    shift
  done
  exec ssh -p "$FAKE_VM_SSH_PORT" -i "$FAKE_VM/key" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -o ExitOnForwardFailure=yes \
    "$@" root@127.0.0.1 $command
fi
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
            "{args:?} failed:\n{}\n{}\nthe destination registry's errors:\n{}",
            stdout(&output),
            stderr(&output),
            self.destination.errors()
        );
        output
    }

    pub fn logs(&self) -> String {
        self.dir.path().join("logs").display().to_string()
    }
}

/// What the test tagged in the engine goes with it.
impl Drop for Setup {
    fn drop(&mut self) {
        xtask::testbed::remove_engine_images(&[self.upstream.host(), self.destination.host()]);
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
    xtask::testbed::sha256_digest(&skopeo_raw(reference).unwrap())
}

/// A file of the image at `reference`, for `platform`.
pub fn file_in(reference: &str, platform: &str, path: &str) -> String {
    run("docker", &["run", "--rm", "--pull", "always", "--platform", platform, reference, "cat", path])
        .trim()
        .to_string()
}

/// What `RUN` steps of the image at `reference` recorded as the machine they ran on.
pub fn built_on(reference: &str, platform: &str) -> String {
    file_in(reference, platform, "/built-on")
}
