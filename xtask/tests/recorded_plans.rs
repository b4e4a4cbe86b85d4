//! Every task's whole `--dry-run` output, under the settings the plan tests use, compared with
//! its record in `tests/fixtures/plans/`: what a user reads and pastes, kept the same through a
//! change of the code's structure. Only what differs from run to run is masked (the lease's
//! time, the temporary folders, the text of a network error). `RECORD_PLANS=1` writes the
//! records anew; the diff then shows what changed.

mod common;

use std::path::{Path, PathBuf};

use common::FakeTools;

/// The settings of the plan tests, each with a fixed `BUILD_ID` (the lease on the VM is named
/// after it).
const SETTINGS: &[(&str, &[(&str, &str)])] = &[
    ("default", &[("BUILD_ID", "plan")]),
    ("seed", common::SEED),
    (
        "multi-context",
        &[("MULTI_CONTEXT", "1"), ("AUTO_START_STOP", "1"), ("SIGN_KEY", "cosign.key"), ("BUILD_ID", "plan")],
    ),
    ("local", &[("ENV", "local"), ("BUILD_ID", "plan")]),
];

/// A pool of VMs: three arm64 and one amd64, two builds at once on each node.
const POOL: (&str, &[(&str, &str)]) = (
    "pool",
    &[
        ("MULTI_CONTEXT", "1"),
        ("AUTO_START_STOP", "1"),
        ("ARM64_VMS", "arm-a,arm-b,arm-c"),
        ("AMD64_VMS", "amd-a"),
        ("BUILDS_PER_NODE", "2"),
        ("BUILD_ID", "plan"),
    ],
);

/// The tasks a pool changes, recorded under `POOL`.
const POOL_TASKS: &[&[&str]] = &[
    &["buildx-setup"],
    &["create-vms"],
    &["start-vm"],
    &["start-vm", "--vm", "arm-b"],
    &["stop-vm"],
    &["ssh-tunnel"],
    &["publish-all"],
    &["buildx-publish-odb"],
];

/// Every task of the test catalog, with the options that change its plan.
const TASKS: &[&[&str]] = &[
    &["buildx-setup"],
    &["buildx-ls"],
    &["prune"],
    &["clean"],
    &["build-publish-cloud-builder"],
    &["build-publish-cloud-builder", "--locked"],
    &["create-vms"],
    &["create-vms", "--delete-unlisted", "--pool", "p"],
    &["start-vm"],
    &["start-vm", "--wait"],
    &["stop-vm"],
    &["ssh-vm"],
    &["ssh-tunnel"],
    &["ssh-tunnel", "--wait"],
    &["cloud-build"],
    &["cloud-build", "--local"],
    &["cloud-build", "--local", "--on-host"],
    &["seed-arm64"],
    &["seed-arm64-dry-run"],
    &["thirdparty"],
    &["thirdparty", "--bases"],
    &["thirdparty", "--locked"],
    &["publish-all"],
    &["publish-all", "--locked", "--force"],
    &["local-registry"],
    &["verify"],
    &["verify", "--key", "cosign.pub"],
    &["scan"],
    &["build-runtime"],
    &["build-build"],
    &["build-odb"],
    &["buildx-publish-runtime"],
    &["buildx-publish-build"],
    &["buildx-publish-odb"],
    &["buildx-publish-odb", "--force"],
    &["pull-runtime"],
    &["pull-build"],
    &["pull-odb"],
    &["bench-thirdparty"],
    &["bench-rebuild"],
    &["bench-graph"],
    &["bench-pool"],
    &["bench-compile"],
];

/// The tasks of a catalog written as a public repository writes it (`common::docker_stacks`),
/// recorded under the default settings: what each Dockerfile's names are substituted with.
const AS_WRITTEN_TASKS: &[&[&str]] = &[
    &["publish-all"],
    &["thirdparty", "--bases"],
    &["build-docker-stacks-foundation"],
    &["build-scipy-notebook"],
    &["buildx-publish-pytorch-notebook-cuda12"],
    &["pull-pytorch-notebook-cuda12"],
];

/// That repository, written once for this process, its foundation pinning ubuntu to a digest of
/// its own.
fn as_written_repository() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let pinned = format!("sha256:{}", "5616".repeat(16));
        // With the BuildKit image a builder container on a classic engine (Cloud Build's) needs.
        let list = format!(
            "docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n\
             docker.io/moby/buildkit: v0.18.0\n"
        );
        common::docker_stacks::write_repository(dir.path(), &pinned, &list);
        dir
    })
    .path()
}

/// The tasks of a catalog that is a bake file (`common::bake`), recorded under the default
/// settings: what bake's reading makes of each target, the aliases and `target:` contexts
/// handed to the builds.
const BAKE_TASKS: &[&[&str]] = &[
    &["publish-all"],
    &["thirdparty", "--bases"],
    &["build-app"],
    &["buildx-publish-tools-full"],
    &["pull-tools-small"],
];

/// That repository, written once for this process, with the BuildKit image in its list.
fn bake_repository() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::bake::write_repository(
            dir.path(),
            "docker.io/library/busybox: 1.35\ndocker.io/moby/buildkit: v0.18.0\n",
        );
        dir
    })
    .path()
}

fn records() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/plans")
}

/// The output of one dry run, as recorded: the exit status, then stdout, then stderr. `docker`:
/// the real one, which reads a bake file (`docker buildx bake`) where the fakes answer the rest.
fn dry_run(task: &[&str], settings: &[(&str, &str)], docker: Option<&Path>) -> String {
    let fakes = FakeTools::new();
    if let Some(docker) = docker {
        fakes.pass_to("docker buildx bake", docker);
    }
    let work = tempfile::tempdir().unwrap();
    let work_dir = work.path().display().to_string();
    let mut args = task.to_vec();
    // A benchmark passes what follows its name on to itself.
    if task[0].starts_with("bench-") {
        args.insert(0, "--dry-run");
    } else {
        args.push("--dry-run");
    }
    let mut env = settings.to_vec();
    env.push(("CARGO_TARGET_DIR", &work_dir));
    let output = fakes.xtask(&args, &env);
    let text = format!(
        "exit: {}\n--- stdout\n{}--- stderr\n{}",
        output.status.code().map_or("signal".to_string(), |c| c.to_string()),
        common::stdout(&output),
        common::stderr(&output),
    );
    let repository = as_written_repository().display().to_string();
    let bake = bake_repository().display().to_string();
    mask(
        &text,
        &[
            (&work_dir, "$TARGET"),
            (&fakes.dir.path().display().to_string(), "$FAKES"),
            (&repository, "$REPOSITORY"),
            (&bake, "$BAKE_REPOSITORY"),
        ],
    )
}

/// What differs from run to run, replaced by a name.
fn mask(text: &str, folders: &[(&str, &str)]) -> String {
    let mut text = text.to_string();
    for (folder, name) in folders {
        text = text.replace(folder, name);
    }
    let project = xtask::project_root().display().to_string();
    text = text.replace(&project, "$PROJECT");
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        text = text.replace(&home.to_string_lossy().into_owned(), "$ACCOUNT_HOME");
    }
    let lines: Vec<String> = text.lines().map(mask_line).collect();
    lines.join("\n") + "\n"
}

fn mask_line(line: &str) -> String {
    let mut line = line.to_string();
    // A rehearsal's build id, `local-<seconds>-<process id>`.
    while let Some(at) = line.find("local-1") {
        let end = line[at + 6..]
            .find(|c: char| !(c.is_ascii_digit() || c == '-'))
            .map_or(line.len(), |e| at + 6 + e);
        line.replace_range(at..end, "local-BUILD");
    }
    if let Some(at) = line.find("lease.since=") {
        let start = at + "lease.since=".len();
        let end = line[start..].find([' ', '\'', '"']).map_or(line.len(), |e| start + e);
        line.replace_range(start..end, "NOW");
    }
    // A network error's text depends on the machine's resolver: keep which registry could
    // not be reached, not why.
    if let Some(at) = line.find("cannot reach registry ") {
        let host_start = at + "cannot reach registry ".len();
        let host_end = line[host_start..].find(' ').map_or(line.len(), |e| host_start + e);
        line.replace_range(host_end.., ": <network error>");
    }
    // A summary's retries and time.
    if let Some(at) = line.find(" retries; ") {
        let start = line[..at].rfind("; ").map_or(at, |s| s + 2);
        line.replace_range(start.., "<retries and time>");
    }
    line
}

fn file_name(name: &str, task: &[&str]) -> String {
    format!("{name}--{}.txt", task.join(" ").replace("--", "").replace(' ', "_"))
}

#[test]
fn every_plan_is_as_recorded() {
    let record = std::env::var_os("RECORD_PLANS").is_some_and(|v| !v.is_empty());
    let dir = records();
    std::fs::create_dir_all(&dir).unwrap();
    let mut differ = Vec::new();
    let catalog = as_written_repository().join("images.toml").display().to_string();
    let as_written: (&str, &[(&str, &str)]) =
        ("as-written", &[("CATALOG", catalog.as_str()), ("BUILD_ID", "plan")]);
    let bake_file = bake_repository().join("docker-bake.hcl").display().to_string();
    let bake: (&str, &[(&str, &str)]) = ("bake", &[("CATALOG", bake_file.as_str()), ("BUILD_ID", "plan")]);
    // The bake file's plans need bake itself to read it.
    let docker = common::bake::real_docker_or_skip("every_plan_is_as_recorded, the bake file's plans");
    let bake_tasks: &[&[&str]] = if docker.is_some() { BAKE_TASKS } else { &[] };
    let all = SETTINGS.iter().map(|settings| (settings, TASKS)).chain([
        (&POOL, POOL_TASKS),
        (&as_written, AS_WRITTEN_TASKS),
        (&bake, bake_tasks),
    ]);
    for ((name, settings), tasks) in all {
        for task in tasks {
            let actual = dry_run(task, settings, docker.as_deref());
            let path = dir.join(file_name(name, task));
            if record {
                std::fs::write(&path, &actual).unwrap();
                continue;
            }
            let expected = std::fs::read_to_string(&path)
                .unwrap_or_else(|_| panic!("no record {}: run with RECORD_PLANS=1", path.display()));
            if expected != actual {
                differ.push(format!("{} differs:\n{}", path.display(), line_diff(&expected, &actual)));
            }
        }
    }
    assert!(differ.is_empty(), "{} plans differ from their records:\n{}", differ.len(), differ.join("\n"));
}

/// Every task the command line lists is recorded, so that a new task gets a record too.
#[test]
fn every_task_has_a_recorded_plan() {
    let output = common::xtask(&[], &[]);
    let help = common::stdout(&output);
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        // `info` runs nothing: it shows the settings and this machine's tools.
        .filter(|name| !["help", "info"].contains(name))
        .collect();
    assert!(listed.len() > 20, "{help}");
    for task in listed {
        assert!(TASKS.iter().any(|t| t[0] == task), "task {task} has no recorded plan: add it to TASKS");
    }
}

/// The lines of `expected` missing from `actual` (`-`) and the lines added (`+`), in order.
fn line_diff(expected: &str, actual: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    // The longest common subsequence, by dynamic programming: plans are short.
    let mut lcs = vec![vec![0usize; new.len() + 1]; old.len() + 1];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i][j] =
                if old[i] == new[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            (i, j) = (i + 1, j + 1);
        } else if j < new.len() && (i == old.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", new[j]));
            j += 1;
        } else {
            out.push(format!("- {}", old[i]));
            i += 1;
        }
    }
    out.join("\n")
}
