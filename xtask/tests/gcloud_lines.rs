//! Every gcloud command line the tool plans, handed to Google's real gcloud: with an empty
//! configuration it parses the whole line offline and stops at "no active account"; a flag it
//! does not know stops it at "unrecognized arguments" instead. The lines are those of the
//! recorded plans (every task's dry run), and the Secret Manager read a catalog's `gcp_secret`
//! plans; each shape of line (its command and its flags) is asked once.

mod common;

use std::collections::BTreeSet;

use common::{FakeTools, stdout};

/// The gcloud lines of the recorded dry runs, and the one a `gcp_secret` adds.
fn planned_lines() -> Vec<String> {
    let records = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans");
    let mut lines: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&records).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        lines.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("[dry-run] "))
                .filter(|l| l.starts_with("gcloud "))
                .map(String::from),
        );
    }
    // A catalog whose image reads a Secret Manager secret.
    let dir = tempfile::tempdir().unwrap();
    let catalog = "thirdparty = \"thirdparty.txt\"\n[[image]]\nname = \"app\"\ndescription = \"d\"\ntag = \"1\"\n\
                   secrets = { key = { gcp_secret = \"deploy-key\" } }\n";
    std::fs::write(dir.path().join("images.toml"), catalog).unwrap();
    std::fs::write(dir.path().join("thirdparty.txt"), "docker.io/library/busybox: 1.35\n").unwrap();
    std::fs::create_dir(dir.path().join("app")).unwrap();
    std::fs::write(dir.path().join("app/Dockerfile"), "FROM busybox:1.35\n").unwrap();
    let fakes = FakeTools::new();
    // An engine with the containerd image store: no BuildKit image to vendor.
    fakes.print("docker info", r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
    let path = dir.path().join("images.toml").display().to_string();
    let output = fakes.xtask(&["publish-all", "--dry-run"], &[("CATALOG", path.as_str())]);
    let out = stdout(&output);
    let secret = out
        .lines()
        .filter_map(|l| l.strip_prefix("[dry-run] "))
        .find(|l| l.starts_with("gcloud secrets versions access"))
        .unwrap_or_else(|| panic!("no Secret Manager read planned:\n{out}\n{}", common::stderr(&output)));
    lines.push(secret.to_string());
    lines
}

/// A line's shape: its command words and the names of its flags.
fn shape(words: &[String]) -> (Vec<String>, BTreeSet<String>) {
    let command = words.iter().take_while(|w| !w.starts_with('-')).take(4).cloned().collect();
    let flags = words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap().to_string())
        .collect();
    (command, flags)
}

#[test]
fn every_planned_gcloud_line_parses_with_the_real_gcloud() {
    if std::process::Command::new("gcloud").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI must have Google's gcloud (Cloud CLI) installed");
        eprintln!("SKIPPED every_planned_gcloud_line_parses_with_the_real_gcloud: no gcloud on PATH");
        return;
    }
    let mut seen = BTreeSet::new();
    let mut asked = 0;
    for line in planned_lines() {
        let words = shlex::split(&line).unwrap_or_else(|| panic!("not a shell line: {line}"));
        if !seen.insert(shape(&words)) {
            continue;
        }
        let config = tempfile::tempdir().unwrap();
        let output = std::process::Command::new(&words[0])
            .args(&words[1..])
            .current_dir(xtask::project_root())
            .env("CLOUDSDK_CONFIG", config.path())
            .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&output.stderr);
        assert!(
            err.contains("You do not currently have an active account selected"),
            "gcloud did not parse `{line}` to its end:\n{err}"
        );
        asked += 1;
    }
    assert!(asked >= 10, "only {asked} shapes of gcloud line were planned");
}
