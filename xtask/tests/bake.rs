//! A bake file as the catalog (`CATALOG=docker-bake.hcl`), read by the real `docker buildx
//! bake --print` (no engine needed for that): its group makes a graph of several images
//! (variables, `inherits`, a matrix, a `target:` context, parents named by their tags as
//! written); each attribute not carried out is a warning naming it; the same images written as
//! an images.toml make the same plan; and publish-all builds it for real on the engine, each
//! child on its parent's new digest, and a second run builds nothing.

mod common;

use std::path::Path;
use std::process::Output;

use common::bake::{BAKE_FILE, IMAGES, files, real_docker_or_skip, write_repository};
use common::engine::{Setup, digest, distinct_builds, engine_or_skip, file_in, layers, line_of, outcomes};
use common::{stderr, stdout};

/// A run with docker and gcloud faked (an engine with the containerd image store) but for
/// `docker buildx bake`, which the real docker answers; a real registry for `DOCKER_REPO`.
struct Dry {
    fakes: common::FakeTools,
    destination: xtask_testbed::TestRegistry,
    dir: tempfile::TempDir,
}

impl Dry {
    fn new(docker: &Path) -> Dry {
        let fakes = common::FakeTools::new();
        fakes.print("docker info", r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
        fakes.pass_to("docker buildx bake", docker);
        let destination = xtask_testbed::TestRegistry::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_repository(dir.path(), "docker.io/library/busybox: 1.35\n");
        Dry { fakes, destination, dir }
    }

    fn repo(&self) -> String {
        format!("{}/acme", self.destination.host())
    }

    fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// xtask on the catalog `file` of the repository (`docker-bake.hcl`, `images.toml`).
    fn xtask(&self, file: &str, args: &[&str], more_env: &[(&str, &str)]) -> Output {
        let (repo, catalog) = (self.repo(), self.path(file));
        let mut env = vec![("ENV", "local"), ("DOCKER_REPO", repo.as_str()), ("CATALOG", catalog.as_str())];
        env.extend_from_slice(more_env);
        self.fakes.xtask(args, &env)
    }

    #[track_caller]
    fn xtask_ok(&self, file: &str, args: &[&str], more_env: &[(&str, &str)]) -> Output {
        let output = self.xtask(file, args, more_env);
        assert!(output.status.success(), "{args:?} failed:\n{}\n{}", stdout(&output), stderr(&output));
        output
    }
}

/// The tasks `cargo xtask` lists.
fn tasks(output: &Output) -> Vec<String> {
    stdout(output)
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The warnings the bake file's reading gives, as `main` prints them.
const WARNINGS: [&str; 2] = [
    "warning: docker-bake.hcl: target `app`: `cache-from` is not carried out: each platform reads and writes a \
     registry cache of its own, $DOCKER_REPO/cache/<image>:<tag>-<arch>",
    "warning: docker-bake.hcl: target `app`: `output` is not carried out: each image is pushed to $DOCKER_REPO, \
     its platforms merged into one index",
];

#[test]
fn a_bake_files_group_makes_the_graph_of_its_targets_with_a_warning_for_each_attribute_not_carried_out() {
    let Some(docker) = real_docker_or_skip("a_bake_files_group_makes_the_graph") else { return };
    let run = Dry::new(&docker);
    let repo = run.repo();

    // The task list: each target of the group, the matrix's two among them.
    let output = run.xtask_ok("docker-bake.hcl", &[], &[]);
    let listed = tasks(&output);
    for image in IMAGES {
        for prefix in ["build", "buildx-publish", "pull"] {
            assert!(listed.contains(&format!("{prefix}-{image}")), "{prefix}-{image}: {listed:?}");
        }
    }
    assert!(!listed.iter().any(|t| t.starts_with("build-_common") || t == "build-tools"), "{listed:?}");
    // bake read the file, through the runner (logged as every command is), and the attributes
    // it has that the tool does not carry out are named, each once.
    let err = stderr(&output);
    let bake = format!(
        "+ DOCKER_BUILDKIT=1 docker buildx bake --file {} --progress quiet --print default",
        run.path("docker-bake.hcl")
    );
    let lines: Vec<&str> = err.lines().collect();
    // And that it names no SBOM generator (none is lent: its list would have to vendor it).
    let sbom = format!(
        "warning: {} names no sbom_generator, so its images get no SBOM attestation: name one, as \
         images/images.toml does, and list it in its vendoring list",
        run.path("docker-bake.hcl")
    );
    assert_eq!(lines, [&bake as &str, WARNINGS[0], WARNINGS[1], &sbom], "{err}");

    // The dry run reads it too (it only reads), and plans the graph: each child after its
    // parent, on the parent's new digest under the name its Dockerfile writes.
    let output = run.xtask_ok("docker-bake.hcl", &["publish-all", "--dry-run"], &[]);
    assert!(
        stderr(&output).starts_with(&format!("{bake}\n{}\n", WARNINGS.join("\n"))),
        "{}",
        stderr(&output)
    );
    let plan = stdout(&output);
    let position = |line: &str| {
        plan.lines().position(|l| l == line).unwrap_or_else(|| panic!("no line {line:?} in\n{plan}"))
    };
    let parent = |child: &str, parent: &str, written: &str, tag: &str| {
        position(&format!(
            "[dry-run] # {child}: then built from the digest {parent} gets: --build-context \
             {written}=docker-image://{repo}/{parent}:{tag}@<that digest>"
        ))
    };
    let would_build = |image: &str| {
        plan.lines()
            .position(|l| l.starts_with(&format!("[dry-run] # {image}: would build: ")))
            .unwrap_or_else(|| panic!("{image} is not planned:\n{plan}"))
    };
    let app = parent("app", "base", "base", "1.0");
    let small = parent("tools-small", "base", "acme.example/acme/base:1.0", "1.0");
    let full = parent("tools-full", "app", "acme.example/acme/app:1.0", "1.0");
    assert!(would_build("base") < app && app < full && would_build("base") < small, "{plan}");
    // The matrix's variants share the repository of their tags, each under its own tag.
    for (image, tag) in [("tools-small", "1.0-small"), ("tools-full", "1.0-full")] {
        let merge = format!("--tag {repo}/tools:{tag} {repo}/tools:{tag}-amd64 {repo}/tools:{tag}-arm64");
        assert!(
            plan.lines().any(|l| l.contains("imagetools create") && l.ends_with(&merge)),
            "{image}: {plan}"
        );
    }
    assert!(
        plan.contains(&format!("--file {}", run.path("tools/full.Dockerfile"))),
        "the matrix's dockerfile: {plan}"
    );

    // Another group: its target and the one it builds on through its `target:` context.
    let output = run.xtask_ok("docker-bake.hcl", &[], &[("BAKE_GROUP", "app-only")]);
    let images: Vec<String> =
        tasks(&output).into_iter().filter_map(|t| t.strip_prefix("pull-").map(str::to_string)).collect();
    assert_eq!(images, ["app", "base"]);
    assert!(stderr(&output).contains("--print app-only\n"), "{}", stderr(&output));
    let output = run.xtask_ok("docker-bake.hcl", &["--bake-group", "app-only"], &[]);
    assert!(stderr(&output).contains("--print app-only\n"), "the flag: {}", stderr(&output));

    // bake's variables take their values from the environment, as for `docker buildx bake`.
    let output = run.xtask_ok("docker-bake.hcl", &["pull-base", "--dry-run"], &[("VERSION", "2.0")]);
    assert!(stdout(&output).contains(&format!("docker pull {repo}/base:2.0")), "{}", stdout(&output));

    // A JSON bake file too, and a group bake cannot find is bake's own error, named.
    let json = r#"{"group": {"default": {"targets": ["base"]}},
      "target": {"base": {"context": "base", "tags": ["acme.example/acme/base:1.0"]}}}"#;
    std::fs::write(run.dir.path().join("docker-bake.json"), json).unwrap();
    let images: Vec<String> = tasks(&run.xtask_ok("docker-bake.json", &[], &[]))
        .into_iter()
        .filter_map(|t| t.strip_prefix("pull-").map(str::to_string))
        .collect();
    assert_eq!(images, ["base"]);
    let output = run.xtask("docker-bake.hcl", &["publish-all", "--dry-run"], &[("BAKE_GROUP", "nope")]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let err = stderr(&output);
    assert!(
        err.contains(&format!("error: cannot read the bake file {}", run.path("docker-bake.hcl")))
            && err.contains("bake cannot read its group `nope` (BAKE_GROUP)")
            && err.contains("failed to find target nope"),
        "{err}"
    );
}

/// The bake file and the images.toml that writes its images out as entries: the same plan, to
/// the word, but for the catalog's own path; the bake file's run has only bake's reading and
/// its warnings more on stderr.
#[test]
fn a_bake_file_and_the_images_toml_of_its_images_make_the_same_plan() {
    let Some(docker) =
        real_docker_or_skip("a_bake_file_and_the_images_toml_of_its_images_make_the_same_plan")
    else {
        return;
    };
    let run = Dry::new(&docker);
    let mask = |output: &Output, file: &str| {
        let catalog = run.path(file);
        (stdout(output).replace(&catalog, "$CATALOG"), stderr(output).replace(&catalog, "$CATALOG"))
    };
    for task in [
        &["publish-all", "--dry-run"][..],
        &["buildx-publish-tools-full", "--dry-run"],
        &["clean", "--dry-run"],
    ] {
        let (bake_out, bake_err) = mask(&run.xtask_ok("docker-bake.hcl", task, &[]), "docker-bake.hcl");
        let (toml_out, toml_err) = mask(&run.xtask_ok("images.toml", task, &[]), "images.toml");
        assert!(bake_out.contains("[dry-run] DOCKER_BUILDKIT=1 docker "), "{task:?}: {bake_out}");
        assert_eq!(bake_out, toml_out, "{task:?}");
        let read = "+ DOCKER_BUILDKIT=1 docker buildx bake --file $CATALOG --progress quiet --print default";
        assert_eq!(bake_err, format!("{read}\n{}\n{toml_err}", WARNINGS.join("\n")), "{task:?}");
    }
}

/// The engine is one: the tests of this binary that use it take turns.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// publish-all on the bake file, for real: busybox (Docker Hub's name, as the Dockerfile writes
/// it) vendored from the test's upstream registry as from a mirror; each image built for both
/// platforms in the graph's order, each child from its parent's new digest under the name its
/// Dockerfile writes; then nothing to build.
#[test]
fn publish_all_builds_a_bake_file_parents_first_and_then_nothing() {
    if !engine_or_skip("publish_all_builds_a_bake_file_parents_first_and_then_nothing") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let setup = Setup::new(common::bake::CATALOG, &files(), |_| "docker.io/library/busybox: 1.35\n".into());
    let up = setup.upstream.host();
    setup.busybox_as("library/busybox:1.35");
    std::fs::write(setup.path("mirror.txt"), format!("{up}/library/busybox: 1.35\n")).unwrap();
    let (repo, logs) = (setup.repo(), setup.logs());
    let (catalog, mirror) =
        (setup.path("docker-bake.hcl").display().to_string(), setup.path("mirror.txt").display().to_string());
    let publish = || {
        setup.xtask_ok(&["publish-all", "--logs", &logs, "--file", &mirror], &[("CATALOG", catalog.as_str())])
    };
    assert_eq!(std::fs::read_to_string(&catalog).unwrap(), BAKE_FILE);

    // 1. Cold: every target, parents first, each child on its parent's new digest.
    let output = publish();
    let out = stdout(&output);
    let mut all = IMAGES.to_vec();
    all.sort();
    assert_eq!(outcomes(&out, &IMAGES), (all.clone(), vec![]), "{out}");
    assert!(stderr(&output).contains(WARNINGS[0].trim_start_matches("warning: ")), "{}", stderr(&output));
    let published = |image: &str| match image {
        "tools-small" => format!("{repo}/tools:1.0-small"),
        "tools-full" => format!("{repo}/tools:1.0-full"),
        other => format!("{repo}/{other}:1.0"),
    };
    for (child, parent, written) in [
        ("app", "base", "base"),
        ("tools-small", "base", "acme.example/acme/base:1.0"),
        ("tools-full", "app", "acme.example/acme/app:1.0"),
    ] {
        let (started, parent_done) = (
            line_of(&out, &format!("building    {child}:")),
            line_of(&out, &format!("published   {parent} -> ")),
        );
        assert!(started > parent_done, "{child} started before {parent} was published:\n{out}");
        let parent_ref = published(parent);
        let pinned = format!("{written}=docker-image://{parent_ref}@{}", digest(&parent_ref));
        let log = std::fs::read_to_string(Path::new(&logs).join(format!("{child}.log"))).unwrap();
        let builds = distinct_builds(&log);
        assert!(
            builds.len() == 2 && builds.iter().all(|build| build.contains(&pinned)),
            "{child} builds each platform from {pinned}:\n{log}"
        );
        for platform in ["linux/amd64", "linux/arm64"] {
            let (below, above) = (layers(&parent_ref, platform), layers(&published(child), platform));
            assert!(above.len() > below.len() && above.starts_with(&below), "{child} {platform}: {above:?}");
        }
    }
    assert_eq!(file_in(&published("tools-full"), "linux/arm64", "/app"), "app", "full is on app");
    assert_eq!(file_in(&published("tools-full"), "linux/arm64", "/built-on"), "aarch64", "app is on base");
    assert_eq!(file_in(&published("tools-small"), "linux/amd64", "/etc/motd"), "Acme");

    // 2. Nothing changed: nothing is built.
    let output = publish();
    assert!(!stderr(&output).contains("docker buildx build"), "{}", stderr(&output));
    assert_eq!(outcomes(&stdout(&output), &IMAGES), (vec![], all), "{}", stdout(&output));
}
