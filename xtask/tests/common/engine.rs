//! A real Docker Engine for the end-to-end tests: whether one runs, and a multi-arch base image
//! made from Debian's `busybox-static` (amd64 and arm64) without any registry but ours.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether the engine these tests need answers: `docker info` works, the engine uses the
/// containerd image store, and its builder lists linux/arm64 (QEMU). Under CI (`CI` set) a
/// missing engine fails the test; elsewhere the test says why it skips and returns early.
pub fn engine_or_skip(test: &str) -> bool {
    let problem = engine_problem();
    let Some(problem) = problem else { return true };
    let fix = "`sudo .ci/engine` installs and starts one (Debian 12), see the README";
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
    None
}

/// Where `.ci/engine` put the busybox-static packages: `amd64.deb` and `arm64.deb`.
fn busybox_debs() -> PathBuf {
    std::env::var_os("BUSYBOX_DEBS")
        .map_or_else(|| PathBuf::from("/var/cache/multi-arch-docker/busybox"), PathBuf::from)
}

/// Run a command to success, with its output in the panic message otherwise.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "`{program} {}` failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Build a linux/amd64 + linux/arm64 busybox image with the engine's own builder and push it to
/// `reference` (a registry on 127.0.0.1). Each platform is Debian's static busybox of that
/// architecture, with a link for every applet, so that `RUN` steps have a shell.
pub fn push_busybox_base(dir: &Path, reference: &str) {
    let debs = busybox_debs();
    for arch in ["amd64", "arm64"] {
        let deb = debs.join(format!("{arch}.deb"));
        assert!(deb.is_file(), "{} is missing: `sudo .ci/engine` downloads it", deb.display());
        let root = dir.join(format!("root-{arch}"));
        run("dpkg", &["-x", &deb.display().to_string(), &root.display().to_string()]);
    }
    // The amd64 busybox runs here and names the applets; both builds are the same version.
    let applets = run(&dir.join("root-amd64/bin/busybox").display().to_string(), &["--list"]);
    for arch in ["amd64", "arm64"] {
        let bin = dir.join(format!("root-{arch}/bin"));
        for applet in applets.lines().filter(|a| *a != "busybox") {
            if !bin.join(applet).exists() {
                symlink("busybox", bin.join(applet)).unwrap();
            }
        }
        std::fs::create_dir_all(dir.join(format!("root-{arch}/tmp"))).unwrap();
    }
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nARG TARGETARCH\nCOPY root-${TARGETARCH}/ /\n")
        .unwrap();
    let context = dir.display().to_string();
    run(
        "docker",
        &[
            "buildx",
            "build",
            "--builder",
            "default",
            "--platform",
            "linux/amd64,linux/arm64",
            "--provenance=false",
            "--tag",
            reference,
            "--push",
            &context,
        ],
    );
}
