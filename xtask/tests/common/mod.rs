//! Helpers shared by the integration tests: run the real `xtask` binary with a clean
//! environment, read its dry-run plan, and put fake `docker`/`gcloud` programs on `PATH`.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod bake;
pub mod docker_stacks;
pub mod engine;
pub mod token;
pub mod vendoring;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// The folder of the catalog that the tests about behaviour run against (plans, fake tools):
/// frozen, so that the repository's own catalog can gain images and versions without a test
/// edit. Tests about this repository's images pass `CATALOG` = `REPOSITORY_CATALOG`.
pub const TEST_CATALOG_DIR: &str = "xtask/tests/fixtures/catalog";
pub const TEST_CATALOG: &str = "xtask/tests/fixtures/catalog/images.toml";
pub const REPOSITORY_CATALOG: &str = "images/images.toml";

/// The tasks with a plan of commands, besides the catalog's per-image ones.
pub const TASKS_WITH_A_PLAN: [&str; 13] = [
    "buildx-setup",
    "buildx-ls",
    "prune",
    "clean",
    "build-publish-cloud-builder",
    "start-vm",
    "stop-vm",
    "ssh-vm",
    "ssh-tunnel",
    "cloud-build",
    "seed-arm64",
    "publish-all",
    "local-registry",
];

/// ENV=docker-prod MULTI_CONTEXT=1 BUILDER=odb TAG_MODIFIER=arm64-seed PLATFORMS=linux/arm64
/// (and the build id Cloud Build would name the lease on the VM after)
pub const SEED: &[(&str, &str)] = &[
    ("ENV", "docker-prod"),
    ("MULTI_CONTEXT", "1"),
    ("BUILDER", "odb"),
    ("TAG_MODIFIER", "arm64-seed"),
    ("PLATFORMS", "linux/arm64"),
    ("BUILD_ID", "plan"),
];

/// oci-client's client over plain HTTP: a reader of the registries independent of the xtask's.
/// Its reqwest has rustls without a crypto provider of its own (as the xtask builds it), so it
/// takes the process's default, installed here first (ring: see `xtask::registry::tls`).
pub fn oci_client_over_http() -> oci_client::Client {
    #[allow(deprecated)]
    let ring = rustls::crypto::ring::default_provider();
    // Err: another test of this binary installed it already.
    let _ = ring.install_default();
    let config = oci_client::client::ClientConfig {
        protocol: oci_client::client::ClientProtocol::Http,
        ..Default::default()
    };
    oci_client::Client::new(config)
}

/// `xtask` with none of the caller's settings: only `PATH` and `HOME`, the test catalog
/// (`CATALOG`), the machine's name fixed (`HOSTNAME`: outside Cloud Build the provenance's
/// builder id names the host), plus `env`.
pub fn xtask_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(XTASK);
    cmd.args(args).env_clear();
    for name in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.env("CATALOG", TEST_CATALOG);
    cmd.env("HOSTNAME", TEST_HOST);
    // The commit and the source of the default OCI labels, the same on every machine.
    cmd.env("GIT_SHA", TEST_COMMIT);
    cmd.env("GIT_SOURCE", TEST_SOURCE);
    cmd.envs(env.iter().copied());
    cmd
}

/// Each `(path, text)` of `files` written under `dir`, its folders made.
pub fn write_files<'a>(dir: &Path, files: impl IntoIterator<Item = (&'a str, &'a str)>) {
    for (path, text) in files {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// The commit and the repository the tests give xtask, for the default OCI labels.
pub const TEST_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
pub const TEST_SOURCE: &str = "https://github.com/example/images";

/// The default OCI labels of every build of a fake-tool run, as a command line writes them.
pub const TEST_LABELS: &str = "--label org.opencontainers.image.created=2026-01-01T00:00:00Z \
    --label org.opencontainers.image.revision=0123456789abcdef0123456789abcdef01234567 \
    --label org.opencontainers.image.source=https://github.com/example/images";

/// The moment fake-tool runs start at (`SOURCE_DATE_EPOCH`): 2026-01-01T00:00:00Z.
pub const TEST_EPOCH: &str = "1767225600";

/// The machine's name the tests give xtask.
pub const TEST_HOST: &str = "xtask-test-host";

/// Run xtask to its end. What it writes (configs, logs) goes to a temporary folder of its own
/// (`CARGO_TARGET_DIR`), never into the repository, unless `env` names one. The tunnel's ssh
/// config is the exception: `ssh-tunnel` includes it from this account's `~/.ssh/config`, the
/// one file a real ssh reads, and the tests that run it clean up after themselves.
pub fn xtask(args: &[&str], env: &[(&str, &str)]) -> Output {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = xtask_command(args, env);
    if !env.iter().any(|(name, _)| *name == "CARGO_TARGET_DIR") {
        cmd.env("CARGO_TARGET_DIR", work.path());
    }
    cmd.output().expect("xtask runs")
}

/// This account's `~/.ssh/config`, from the password database: the one user config ssh reads,
/// whatever `HOME` is.
pub fn account_ssh_config() -> PathBuf {
    // SAFETY: read at once, on this thread.
    let home = unsafe { std::ffi::CStr::from_ptr((*libc::getpwuid(libc::getuid())).pw_dir) };
    PathBuf::from(home.to_string_lossy().into_owned()).join(".ssh/config")
}

/// The `Include` lines `ssh-tunnel` wrote into the account's ssh config for the files under
/// `dir`: removed when dropped, with nothing else of the file touched.
pub struct IncludedSshConfig {
    pub dir: PathBuf,
}

impl IncludedSshConfig {
    /// The `Include` lines of the account's config that name a file under `dir`.
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(account_ssh_config()).unwrap_or_default();
        let prefix = format!("Include {}/", self.dir.display());
        text.lines().filter(|line| line.starts_with(&prefix)).map(str::to_string).collect()
    }
}

impl Drop for IncludedSshConfig {
    fn drop(&mut self) {
        remove_included(&self.dir);
    }
}

/// Remove the account ssh config's `Include` lines of files under `dir`, under the lock the
/// xtask takes to rewrite it.
fn remove_included(dir: &Path) {
    let config = account_ssh_config();
    let Ok(lock) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(config.with_file_name(".config.multi-arch-docker.lock"))
    else {
        return;
    };
    // SAFETY: a valid open file descriptor; the lock goes with the file.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
    let Ok(text) = std::fs::read_to_string(&config) else { return };
    let prefix = format!("Include {}/", dir.display());
    let kept: String = text.lines().filter(|l| !l.starts_with(&prefix)).map(|l| format!("{l}\n")).collect();
    if kept != text {
        let _ = std::fs::write(&config, kept);
    }
}

/// What runs with the fakes included from the account's ssh config goes with them.
impl Drop for FakeTools {
    fn drop(&mut self) {
        remove_included(self.dir.path());
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("UTF-8 stdout")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("UTF-8 stderr")
}

/// The dry-run plan of a task: one entry per `[dry-run] ` line, each split back into its words
/// the way a POSIX shell would. Comment lines stay one word (`# …`). Panics on any other line.
///
/// A fake `docker` stands first on `PATH`: the plan asks engines which image store they use, and
/// the fake's empty answer is the classic store, on any machine.
pub fn plan(args: &[&str], env: &[(&str, &str)]) -> Vec<Vec<String>> {
    let mut args = args.to_vec();
    args.push("--dry-run");
    let output = FakeTools::new().xtask(&args, env);
    assert!(output.status.success(), "{args:?} failed: {}", stderr(&output));
    parse_plan(&stdout(&output))
}

/// The words of each plan line. The time a lease on the arm64 VM is taken, the one word that
/// changes from run to run, reads `NOW`.
pub fn parse_plan(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .map(|line| {
            let command =
                line.strip_prefix("[dry-run] ").unwrap_or_else(|| panic!("not a plan line: {line:?}"));
            if command.starts_with('#') {
                vec![command.to_string()]
            } else {
                let words = shlex::split(command).unwrap_or_else(|| panic!("not valid shell: {command:?}"));
                words
                    .into_iter()
                    .map(|word| match word.split_once("lease.since=") {
                        Some((label, _)) => format!("{label}lease.since=NOW"),
                        None => word,
                    })
                    .collect()
            }
        })
        .collect()
}

/// Expected plan lines, written as shell commands (comments as `# …`).
pub fn expected(lines: &[&str]) -> Vec<Vec<String>> {
    lines
        .iter()
        .map(|line| if line.starts_with('#') { vec![line.to_string()] } else { shlex::split(line).unwrap() })
        .collect()
}

/// Compare two plans line by line and argument by argument, with a readable failure. An
/// expected comment that ends with `…` stands for any comment that starts with what precedes
/// it (for what depends on the machine, such as why a registry did not answer).
#[track_caller]
pub fn assert_plan(actual: &[Vec<String>], expected: &[Vec<String>]) {
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        if let [comment] = e.as_slice()
            && let Some(prefix) = comment.strip_suffix('…')
        {
            assert!(
                a.len() == 1 && a[0].starts_with(prefix),
                "plan line {i} differs: {a:?} does not start {prefix:?}"
            );
            continue;
        }
        assert_eq!(a, e, "plan line {i} differs");
    }
    assert_eq!(actual.len(), expected.len(), "plan length differs: {actual:#?}");
}

/// Fake `docker` and `gcloud` in a temporary folder. Each call appends one line to a log: the
/// program's name, `DOCKER_BUILDKIT` when set, and its arguments, separated by 0x1f. Exit codes
/// come from rules: `fail(code, prefix)` makes every call whose `name args…` starts with `prefix`
/// exit with `code`.
pub struct FakeTools {
    pub dir: tempfile::TempDir,
}

const FAKE: &str = r#"#!/bin/sh
name=$(basename "$0")
log="$FAKE_TOOLS_DIR/calls.log"
# One write per call, so that calls made at the same time never interleave within a line.
us=$(printf '\037')
line=$name
[ -n "${DOCKER_BUILDKIT:-}" ] && line="$line${us}DOCKER_BUILDKIT=$DOCKER_BUILDKIT"
for arg in "$@"; do line="$line$us$arg"; done
# Which CA bundle the call was given, last, when one was (the xtask must not leak its own).
[ -n "${SSL_CERT_FILE:-}" ] && line="$line${us}SSL_CERT_FILE=$SSL_CERT_FILE"
printf '%s\n' "$line" >> "$log"
call="$name $*"
# Failure rules, `code prefix`: checked first, so that they reach the volumes below too.
if [ -f "$FAKE_TOOLS_DIR/rules" ]; then
  while IFS= read -r rule; do
    code=${rule%% *}
    prefix=${rule#* }
    case "$call" in
      "$prefix"*) echo "fake $name: failing with $code" >&2; exit "$code" ;;
    esac
  done < "$FAKE_TOOLS_DIR/rules"
fi
# Calls the real program answers, `prefix<TAB>program`: its output and exit status are the call's.
if [ -f "$FAKE_TOOLS_DIR/real" ]; then
  while IFS="$(printf '\t')" read -r prefix program <&3; do
    case "$call" in "$prefix"*) exec "$program" "$@" 3<&- ;; esac
  done 3< "$FAKE_TOOLS_DIR/real"
fi
# docker volumes (the leases on a VM's engine) are kept, as files in `volumes/` (the engine of
# docker context `arm_node`, or none) or `volumes/<context>/` (each other engine's own):
# `volume create --label a=b … NAME`, `volume rm NAME`, and `volume ls` printing each name and the
# value of its `…lease.since` label (the one format the xtask asks for).
if [ "$name" = docker ]; then
  set -- "$@"
  volumes="$FAKE_TOOLS_DIR/volumes"
  if [ "$1" = --context ]; then
    [ "$2" = arm_node ] || volumes="$volumes/$2"
    shift 2
  fi
  if [ "$1" = volume ]; then
    mkdir -p "$volumes"
    case "$2" in
      create)
        since=""
        for arg in "$@"; do case "$arg" in *lease.since=*) since=${arg#*lease.since=} ;; esac; last=$arg; done
        echo "$since" > "$volumes/$last"; echo "$last"; exit 0 ;;
      rm) rm "$volumes/$3" || exit 1; echo "$3"; exit 0 ;;
      ls)
        for file in "$volumes"/*; do
          [ -f "$file" ] && echo "$(basename "$file") $(cat "$file")"
        done
        exit 0 ;;
    esac
  fi
fi
# Scripted answers, used once each in order: `prefix<TAB>code<TAB>stdout`.
answers="$FAKE_TOOLS_DIR/answers"
if [ -f "$answers" ]; then
  n=0
  while IFS="$(printf '\t')" read -r prefix code out; do
    n=$((n + 1))
    case "$call" in
      "$prefix"*)
        sed -i "${n}d" "$answers"
        [ -n "$out" ] && printf '%s\n' "$out"
        exit "$code" ;;
    esac
  done < "$answers"
fi
# Slow calls, `prefix<TAB>seconds`: while one sleeps, the number of such calls running at once
# is recorded in `concurrency`.
if [ -f "$FAKE_TOOLS_DIR/sleeps" ]; then
  while IFS="$(printf '\t')" read -r prefix seconds; do
    case "$call" in
      "$prefix"*)
        mkdir -p "$FAKE_TOOLS_DIR/running"
        touch "$FAKE_TOOLS_DIR/running/$$"
        ls "$FAKE_TOOLS_DIR/running" | wc -l >> "$FAKE_TOOLS_DIR/concurrency"
        sleep "$seconds"
        rm -f "$FAKE_TOOLS_DIR/running/$$" ;;
    esac
  done < "$FAKE_TOOLS_DIR/sleeps"
fi
# Output for every matching call, `prefix<TAB>stdout`.
if [ -f "$FAKE_TOOLS_DIR/prints" ]; then
  while IFS="$(printf '\t')" read -r prefix out; do
    case "$call" in "$prefix"*) printf '%s\n' "$out" ;; esac
  done < "$FAKE_TOOLS_DIR/prints"
fi
exit 0
"#;

impl FakeTools {
    pub fn new() -> FakeTools {
        let dir = tempfile::tempdir().unwrap();
        for name in ["docker", "gcloud", "ssh", "cosign"] {
            let path = dir.path().join("bin").join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, FAKE).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        FakeTools { dir }
    }

    /// One more faked program, `name`, on the fakes' `PATH`.
    pub fn add(&self, name: &str) {
        let path = self.dir.path().join("bin").join(name);
        std::fs::write(&path, FAKE).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    pub fn fail(&self, code: i32, prefix: &str) {
        self.append("rules", &format!("{code} {prefix}"));
    }

    /// The next call starting with `prefix` prints `stdout` and exits with `code`; each answer
    /// is used once, in the order given.
    pub fn answer(&self, prefix: &str, code: i32, stdout: &str) {
        self.append("answers", &format!("{prefix}\t{code}\t{stdout}"));
    }

    /// Every call starting with `prefix` is run by the real `program` instead (logged as a
    /// call first): for what the test needs a real answer to, such as bake's reading of a bake
    /// file, all else faked.
    pub fn pass_to(&self, prefix: &str, program: &Path) {
        self.append("real", &format!("{prefix}\t{}", program.display()));
    }

    /// Every call starting with `prefix` prints `stdout`.
    pub fn print(&self, prefix: &str, stdout: &str) {
        self.append("prints", &format!("{prefix}\t{stdout}"));
    }

    /// Every call starting with `prefix` takes `seconds`.
    pub fn slow(&self, prefix: &str, seconds: f64) {
        self.append("sleeps", &format!("{prefix}\t{seconds}"));
    }

    /// The most slow calls that ran at the same time.
    pub fn max_concurrency(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.path().join("concurrency")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).max().unwrap_or(0)
    }

    fn append(&self, file: &str, line: &str) {
        use std::io::Write;
        let mut out =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(file)).unwrap();
        writeln!(out, "{line}").unwrap();
    }

    pub fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// `PATH` with the fakes first, then only the system folders (no real docker or gcloud
    /// from elsewhere can answer).
    pub fn path(&self) -> String {
        format!("{}:/usr/bin:/bin", self.bin().display())
    }

    /// The `HOME` of runs with the fakes: a folder of their own (`ssh-tunnel` writes the
    /// tunnel's ssh files there, and includes them from the account's ssh config).
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Run xtask with the fakes on `PATH`, and `HOME` their own (unless `env` gives one).
    pub fn xtask(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = self.path();
        let dir = self.dir.path().display().to_string();
        let home = self.home().display().to_string();
        // The moment of the `created` label, fixed: a plan is the same from run to run.
        let mut all = vec![
            ("PATH", path.as_str()),
            ("FAKE_TOOLS_DIR", dir.as_str()),
            ("HOME", home.as_str()),
            ("SOURCE_DATE_EPOCH", TEST_EPOCH),
        ];
        all.extend_from_slice(env);
        xtask(args, &all)
    }

    /// Every recorded call, as its words.
    pub fn calls(&self) -> Vec<Vec<String>> {
        read_calls(&self.dir.path().join("calls.log"))
    }
}

fn read_calls(log: &Path) -> Vec<Vec<String>> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    text.lines().map(|line| line.split('\x1f').map(str::to_string).collect()).collect()
}

/// Words of a call as the fake records it: `docker DOCKER_BUILDKIT=1 buildx ls`.
pub fn call(words: &str) -> Vec<String> {
    shlex::split(words).unwrap()
}

pub fn has_arg(call: &[String], arg: impl AsRef<OsStr>) -> bool {
    call.iter().any(|a| OsStr::new(a) == arg.as_ref())
}
