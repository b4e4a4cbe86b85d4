//! A catalog of the shape public multi-image repositories have (docker-stacks' layout: images/
//! <name>/Dockerfile, parents named through argument defaults as `quay.io/acme/<parent>`, the
//! root on `ubuntu:24.04@sha256:…` chosen by `ARG ROOT_IMAGE`, a variant in a subfolder for one
//! platform), built for real on the engine with only a catalog file and a vendoring list
//! written (the pipeline and the cloud builder are this repository's own): no Dockerfile
//! mentions `DOCKER_REPO` and none is edited. quay.io and Docker Hub
//! hold none of it (acme's images do not exist, and the ubuntu digest is the test's own), so a
//! build that reached them would fail: every parent and base comes from `$DOCKER_REPO` by
//! digest. Each form the Dockerfiles use leaves a mark in the image that the test reads back.
//! Then: a second run builds nothing; an unlisted base, a wrong pin and an unknown stage are
//! each an error before anything is built.

mod common;

use common::docker_stacks::{
    CATALOG, FOUNDATION, IMAGES, MINIMAL_NOTEBOOK, PYTORCH_CUDA12, PYTORCH_NOTEBOOK, files, write_repository,
};

use common::engine::{
    Setup, digest, distinct_builds, engine_or_skip, file_in, layers, line_of, outcomes, platform_manifests,
    platforms, run,
};
use common::{stderr, stdout};

/// The engine is one: the tests of this binary take turns.
static ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A run without an engine or a cloud: docker and gcloud faked (an engine with the containerd
/// image store), a real registry for `DOCKER_REPO`.
struct Dry {
    fakes: common::FakeTools,
    destination: xtask_testbed::TestRegistry,
    catalog: String,
}

impl Dry {
    fn new(dir: &std::path::Path) -> Dry {
        let fakes = common::FakeTools::new();
        fakes.print("docker info", r#"[["driver-type","io.containerd.snapshotter.v1"]]"#);
        let destination = xtask_testbed::TestRegistry::start().unwrap();
        Dry { fakes, destination, catalog: dir.join("images.toml").display().to_string() }
    }

    fn repo(&self) -> String {
        format!("{}/acme", self.destination.host())
    }

    fn xtask(&self, args: &[&str], more_env: &[(&str, &str)]) -> std::process::Output {
        let repo = self.repo();
        let mut env =
            vec![("ENV", "local"), ("DOCKER_REPO", repo.as_str()), ("CATALOG", self.catalog.as_str())];
        env.extend_from_slice(more_env);
        self.fakes.xtask(args, &env)
    }
}

/// The repository as it is, the catalog and the vendoring list beside it, and the stand-ins
/// for the upstream images on the upstream registry, which the test vendors from as from a
/// mirror (`mirror.txt`): `library/ubuntu:24.04` (busybox with an os-release of its own, so that
/// it is not the busybox image, and a root user) and `library/busybox:1.35`. The ubuntu stand-in's digest is the
/// one the foundation's Dockerfile pins.
fn setup() -> (Setup, String) {
    // The list is written once the stand-in's digest is known.
    let setup = Setup::new(CATALOG, &files(), |_| String::new());
    let up = setup.upstream.host();
    let standin = setup.dir.path().join("ubuntu");
    std::fs::create_dir(&standin).unwrap();
    std::fs::write(standin.join("os-release"), "NAME=\"the test's ubuntu\"\n").unwrap();
    std::fs::write(standin.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(standin.join("group"), "root:x:0:\n").unwrap();
    std::fs::write(
        standin.join("Dockerfile"),
        format!("FROM {up}/busybox:1.35\nCOPY os-release passwd group /etc/\n"),
    )
    .unwrap();
    let ubuntu = format!("{up}/library/ubuntu:24.04");
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
            &ubuntu,
            "--push",
            &standin.display().to_string(),
        ],
    );
    setup.busybox_as("library/busybox:1.35");
    let pinned = digest(&ubuntu);
    std::fs::write(
        setup.path("images/docker-stacks-foundation/Dockerfile"),
        FOUNDATION.replace("{UBUNTU_DIGEST}", &pinned),
    )
    .unwrap();
    std::fs::write(
        setup.path("thirdparty.txt"),
        format!(
            "# What Acme's images start from, as their Dockerfiles name it.\n\
             docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n"
        ),
    )
    .unwrap();
    std::fs::write(
        setup.path("mirror.txt"),
        format!("{up}/library/ubuntu: 24.04@{pinned}\n{up}/library/busybox: 1.35\n"),
    )
    .unwrap();
    (setup, pinned)
}

#[test]
fn a_public_repositorys_catalog_builds_as_written_parents_first_bases_by_digest() {
    if !engine_or_skip("a_public_repositorys_catalog_builds_as_written_parents_first_bases_by_digest") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let (setup, pinned) = setup();
    let (repo, logs) = (setup.repo(), setup.logs());
    let mirror = setup.path("mirror.txt").display().to_string();
    // Signed, as a release is: verify checks the variant's signature below.
    let (key, _) = xtask_testbed::cosign_key_pair(&setup.dir.path().join("keys")).unwrap();
    let signing = [("SIGN_KEY", key.as_str()), ("COSIGN_PASSWORD", "")];
    let publish = || setup.xtask_ok(&["publish-all", "--logs", &logs, "--file", &mirror], &signing);
    let dockerfiles_before: Vec<(String, String)> = IMAGES
        .iter()
        .map(|image| {
            let folder = match *image {
                "pytorch-notebook-cuda12" => "pytorch-notebook/cuda12",
                other => other,
            };
            let path = setup.path(&format!("images/{folder}/Dockerfile"));
            (path.display().to_string(), std::fs::read_to_string(&path).unwrap())
        })
        .collect();

    // The plan shows every substitution, the pinned base's digest known from the Dockerfile.
    let dry = stdout(&setup.xtask_ok(&["publish-all", "--dry-run", "--file", &mirror], &[]));
    let vendored_ubuntu = format!("{repo}/thirdparty/library/ubuntu:24.04@{pinned}");
    assert!(
        dry.contains(&format!("--build-context 'ubuntu:24.04@{pinned}=docker-image://{vendored_ubuntu}'")),
        "{dry}"
    );
    assert!(!dry.contains("DOCKER_REPO="), "no Dockerfile declares DOCKER_REPO: {dry}");

    // 1. Cold: in order, each child on its parent's new digest, under the name it writes.
    let output = publish();
    let out = stdout(&output);
    assert_eq!(outcomes(&out, &IMAGES), (IMAGES.to_vec(), vec![]), "{out}");
    let chain = [
        ("base-notebook", "docker-stacks-foundation", "latest"),
        ("minimal-notebook", "base-notebook", "latest"),
        ("scipy-notebook", "minimal-notebook", "latest"),
        ("scipy-notebook", "base-notebook", "latest"),
        ("pytorch-notebook", "scipy-notebook", "latest"),
        ("pytorch-notebook-cuda12", "scipy-notebook", "latest"),
    ];
    for (child, parent, tag) in chain {
        let (started, parent_done) = (
            line_of(&out, &format!("building    {child}:")),
            line_of(&out, &format!("published   {parent} -> ")),
        );
        assert!(started > parent_done, "{child} started before {parent} was published:\n{out}");
        let published = format!("{repo}/{parent}:{tag}");
        let pinned_parent =
            format!("quay.io/acme/{parent}=docker-image://{published}@{}", digest(&published));
        let log = std::fs::read_to_string(std::path::Path::new(&logs).join(format!("{child}.log"))).unwrap();
        let builds = distinct_builds(&log);
        let platforms_built = if child == "pytorch-notebook-cuda12" { 1 } else { 2 };
        assert!(
            builds.len() == platforms_built && builds.iter().all(|build| build.contains(&pinned_parent)),
            "{child} builds each platform from {pinned_parent}:\n{log}"
        );
    }
    // FROM: each image's layers are its parent's and then its own; the root's, the pinned
    // base's (the vendored copy has its layers, by digest).
    let ubuntu = format!("{}/library/ubuntu:24.04", setup.upstream.host());
    for platform in ["linux/amd64", "linux/arm64"] {
        let mut below = layers(&ubuntu, platform);
        for image in [
            "docker-stacks-foundation",
            "base-notebook",
            "minimal-notebook",
            "scipy-notebook",
            "pytorch-notebook",
        ] {
            let above = layers(&format!("{repo}/{image}:latest"), platform);
            assert!(above.len() > below.len() && above.starts_with(&below), "{image} {platform}: {above:?}");
            below = above;
        }
    }
    let image = |name: &str| format!("{repo}/{name}:latest");
    // ARG ROOT_IMAGE=default_root_image: the stage, the pinned ubuntu.
    assert_eq!(
        file_in(&image("docker-stacks-foundation"), "linux/arm64", "/etc/os-release"),
        "NAME=\"the test's ubuntu\""
    );
    // Quoted ARG values, a comment inside a continuation, and the arm64 build on arm64.
    assert_eq!(file_in(&image("pytorch-notebook"), "linux/arm64", "/etc/acme-user"), "user jovyan:1000");
    assert_eq!(file_in(&image("pytorch-notebook"), "linux/arm64", "/foundation-built-on"), "aarch64");
    // The heredoc, and the JSON form of COPY.
    assert_eq!(file_in(&image("base-notebook"), "linux/amd64", "/base-notebook"), "base-notebook");
    assert_eq!(
        file_in(&image("base-notebook"), "linux/amd64", "/etc/jupyter/jupyter_server_config.py"),
        "c = get_config()"
    );
    // FROM --platform=$BUILDPLATFORM: the stage ran on amd64 for the arm64 image too; COPY
    // --from and RUN --mount from= that stage, and RUN --mount from= an external image.
    assert_eq!(file_in(&image("minimal-notebook"), "linux/arm64", "/fetched-on"), "x86_64");
    assert_eq!(file_in(&image("minimal-notebook"), "linux/arm64", "/mounted-stage"), "x86_64");
    assert_eq!(file_in(&image("minimal-notebook"), "linux/arm64", "/mounted-image"), "/mnt/bin/busybox");
    // ${A:-b} and ${A:+b} made the parent's name; COPY --from another catalog image.
    assert_eq!(
        file_in(&image("scipy-notebook"), "linux/arm64", "/copied-from-base-notebook"),
        "base-notebook"
    );
    // The escape directive.
    assert_eq!(file_in(&image("pytorch-notebook"), "linux/arm64", "/pytorch-built-on"), "aarch64");
    // The variant: its one platform, in the same repository under its own tag; the image's
    // tag keeps both.
    let variant = format!("{repo}/pytorch-notebook:cuda12-latest");
    assert_eq!(platforms(&variant), vec!["linux/amd64"]);
    assert_eq!(file_in(&variant, "linux/amd64", "/variant"), "cuda12");
    assert_eq!(platforms(&image("pytorch-notebook")), vec!["linux/amd64", "linux/arm64"]);
    for (path, text) in &dockerfiles_before {
        assert_eq!(&std::fs::read_to_string(path).unwrap(), text, "{path} is as it was written");
    }

    // verify, scan and pull find the variant where it is published, in its image's repository
    // under its own tag, with its one platform.
    let out =
        stdout(&setup.xtask_ok(&["verify", "pytorch-notebook-cuda12", "--insecure-ignore-tlog"], &signing));
    assert!(out.contains(&format!("pytorch-notebook-cuda12: {variant}, signature verified")), "{out}");
    assert!(out.contains("\n  linux/amd64: built by ") && !out.contains("linux/arm64"), "{out}");
    let [(_, variant_amd64)] = platform_manifests(&variant).try_into().unwrap();
    let dry = stdout(&setup.xtask_ok(&["scan", "pytorch-notebook-cuda12", "--dry-run"], &[]));
    let scans: Vec<&str> =
        dry.lines().filter(|l| l.contains("gcloud artifacts docker images scan")).collect();
    assert!(
        scans.len() == 1 && scans[0].contains(&format!("{repo}/pytorch-notebook@{variant_amd64}")),
        "{dry}"
    );
    setup.xtask_ok(&["pull-pytorch-notebook-cuda12"], &[]);
    let pulled = run("docker", &["image", "inspect", "--format", "{{.Id}}", &variant]);
    assert_eq!(pulled.trim(), digest(&variant), "pull-<task> pulled the variant");

    // build-<task>, the local build: its parents and bases from $DOCKER_REPO too, by the names
    // its Dockerfile writes.
    let dry = stdout(&setup.xtask_ok(&["build-docker-stacks-foundation", "--dry-run"], &[]));
    assert!(
        dry.contains(&format!("--build-context 'ubuntu:24.04@{pinned}=docker-image://{vendored_ubuntu}'")),
        "{dry}"
    );
    let output = setup.xtask_ok(&["build-scipy-notebook"], &[]);
    for parent in ["minimal-notebook", "base-notebook"] {
        let context =
            format!("--build-context 'quay.io/acme/{parent}=docker-image://{repo}/{parent}:latest'");
        assert!(stderr(&output).contains(&context), "{}", stderr(&output));
    }
    let built =
        run("docker", &["run", "--rm", &image("scipy-notebook"), "cat", "/copied-from-base-notebook"]);
    assert_eq!(built.trim(), "base-notebook");

    // 2. Nothing changed: nothing is built.
    let output = publish();
    assert!(!stderr(&output).contains("docker buildx build"), "{}", stderr(&output));
    assert_eq!(outcomes(&stdout(&output), &IMAGES), (vec![], IMAGES.to_vec()), "{}", stdout(&output));

    // 3. Each image's inputs are the files of its own context, as BuildKit is sent them: the
    //    variant's folder is inside pytorch-notebook's, so a change to it rebuilds both; a
    //    change to pytorch-notebook's Dockerfile rebuilds it alone (the variant is on scipy).
    let variant_dockerfile = setup.path("images/pytorch-notebook/cuda12/Dockerfile");
    std::fs::write(&variant_dockerfile, format!("{PYTORCH_CUDA12}# CUDA 12.4\n")).unwrap();
    let dry = stdout(&setup.xtask_ok(&["publish-all", "--dry-run", "--file", &mirror], &[]));
    assert!(
        dry.contains("[dry-run] # pytorch-notebook-cuda12: would build: the Dockerfile changed"),
        "{dry}"
    );
    assert!(dry.contains("[dry-run] # pytorch-notebook: would build: cuda12/Dockerfile changed"), "{dry}");
    let out = stdout(&publish());
    let rebuilt = vec!["pytorch-notebook", "pytorch-notebook-cuda12"];
    let others: Vec<&str> = IMAGES.into_iter().filter(|i| !rebuilt.contains(i)).collect();
    assert_eq!(outcomes(&out, &IMAGES), (rebuilt, others.clone()), "{out}");
    let pytorch_dockerfile = setup.path("images/pytorch-notebook/Dockerfile");
    std::fs::write(&pytorch_dockerfile, format!("{PYTORCH_NOTEBOOK}# CPU only\n")).unwrap();
    let out = stdout(&publish());
    let others: Vec<&str> = IMAGES.into_iter().filter(|i| *i != "pytorch-notebook").collect();
    assert_eq!(outcomes(&out, &IMAGES), (vec!["pytorch-notebook"], others), "{out}");
}

/// The same repository with one mistake at a time: each is an error naming the Dockerfile, its
/// line, the image and what to do, in the dry run and in a real run alike, before anything
/// runs: no docker or gcloud command, nothing read from the destination registry but whether
/// it answers.
#[test]
fn an_unlisted_base_a_wrong_pin_and_an_unknown_stage_stop_the_run_before_anything_starts() {
    let pinned = format!("sha256:{}", "5616".repeat(16));
    let other = format!("sha256:{}", "0bad".repeat(16));
    let list = format!("docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n");
    let minimal = "images/minimal-notebook/Dockerfile";
    let cases: [(&str, &str, String, String); 3] = [
        (
            "busybox is not listed",
            minimal,
            MINIMAL_NOTEBOOK.into(),
            format!(
                "{minimal}:5: FROM busybox:1.35: busybox:1.35 is no stage of this Dockerfile nor an image of \
                 the catalog, and it is not in the vendoring list thirdparty.txt: add the line \
                 `docker.io/library/busybox: 1.35` and run `cargo xtask thirdparty`"
            ),
        ),
        (
            "the list pins ubuntu to another digest",
            "images/docker-stacks-foundation/Dockerfile",
            FOUNDATION.replace("{UBUNTU_DIGEST}", &pinned),
            format!(
                "images/docker-stacks-foundation/Dockerfile:8: FROM ubuntu:24.04@{pinned}: ubuntu:24.04@{pinned} \
                 is no stage of this Dockerfile nor an image of the catalog, and the Dockerfile pins 24.04 to \
                 {pinned}, but thirdparty.txt:1 pins it to {other}: make them agree"
            ),
        ),
        (
            "a stage's name misspelt",
            minimal,
            MINIMAL_NOTEBOOK.replace("COPY --from=fetcher", "COPY --from=fetchr"),
            format!(
                "{minimal}:9: COPY --from=fetchr: fetchr is no stage of this Dockerfile (its stages: fetcher) nor \
                 an image of the catalog, and it is not in the vendoring list thirdparty.txt: add the line \
                 `docker.io/library/fetchr: latest` and run `cargo xtask thirdparty`, or name one of its stages"
            ),
        ),
    ];
    for (case, path, dockerfile, error) in cases {
        let dir = tempfile::tempdir().unwrap();
        let list = match case {
            "busybox is not listed" => list.replace("docker.io/library/busybox: 1.35\n", ""),
            "the list pins ubuntu to another digest" => list.replace(&pinned, &other),
            _ => list.clone(),
        };
        write_repository(dir.path(), &pinned, &list);
        std::fs::write(dir.path().join(path), &dockerfile).unwrap();
        let run = Dry::new(dir.path());
        for args in [&["publish-all", "--dry-run"][..], &["publish-all"]] {
            let output = run.xtask(args, &[]);
            assert_eq!(output.status.code(), Some(1), "{case}, {args:?}: {}", stdout(&output));
            // The catalog is outside the repository: its paths are written whole.
            // (The warning that the catalog names no SBOM generator is bake.rs's to check.)
            let err: String = stderr(&output)
                .replace(&format!("{}/", dir.path().display()), "")
                .lines()
                .filter(|line| !line.contains("names no sbom_generator"))
                .map(|line| format!("{line}\n"))
                .collect();
            assert_eq!(err, format!("error: {error}\n"), "{case}, {args:?}");
            assert!(!stdout(&output).contains("[dry-run] docker"), "{case}: {}", stdout(&output));
        }
        assert_eq!(run.fakes.calls(), Vec::<Vec<String>>::new(), "{case}: nothing ran");
        let requests = run.destination.requests();
        assert!(
            requests.iter().all(|r| r.path == "/v2/"),
            "{case}: nothing was read or written: {requests:?}"
        );
    }
}

/// `# syntax=docker/dockerfile:1`: the engine fetches the frontend from its vendored copy, by
/// digest (`BUILDKIT_SYNTAX`, which BuildKit prefers to the directive), never from Docker Hub.
/// No frontend image can be had offline, so the vendored copy is a stand-in that cannot run as
/// one (busybox): the build fails once BuildKit has resolved it, and the build's log says which
/// image that was.
#[test]
fn the_syntax_directives_frontend_is_fetched_from_its_vendored_copy_by_digest() {
    if !engine_or_skip("the_syntax_directives_frontend_is_fetched_from_its_vendored_copy_by_digest") {
        return;
    }
    let _turn = ENGINE.lock().unwrap_or_else(|e| e.into_inner());
    let catalog = r#"
[[image]]
name = "app"
description = "an app on busybox"
tag = "1.0"
"#;
    let files: Vec<(&str, String)> = vec![(
        "app/Dockerfile",
        "# syntax=docker/dockerfile:1\nFROM busybox:1.35\nRUN echo app > /app\n".into(),
    )];
    let list = "docker.io/docker/dockerfile: 1\ndocker.io/library/busybox: 1.35\n";
    let setup = Setup::new(catalog, &files, |_| list.to_string());
    let up = setup.upstream.host();
    for copy in ["docker/dockerfile:1", "library/busybox:1.35"] {
        setup.busybox_as(copy);
    }
    std::fs::write(
        setup.path("mirror.txt"),
        format!("{up}/docker/dockerfile: 1\n{up}/library/busybox: 1.35\n"),
    )
    .unwrap();
    let (repo, logs, mirror) = (setup.repo(), setup.logs(), setup.path("mirror.txt").display().to_string());
    let frontend = digest(&format!("{up}/docker/dockerfile:1"));
    let output = setup.xtask(&["publish-all", "--logs", &logs, "--file", &mirror], &[]);
    assert_eq!(output.status.code(), Some(1), "the stand-in is no frontend: {}", stdout(&output));
    let syntax = format!("BUILDKIT_SYNTAX={repo}/thirdparty/docker/dockerfile@{frontend}");
    let log = std::fs::read_to_string(std::path::Path::new(&logs).join("app.log")).unwrap();
    let builds = distinct_builds(&log);
    assert!(builds.len() == 2 && builds.iter().all(|build| build.contains(&syntax)), "{log}");
    // The engine's own account of the frontend it resolved: the vendored copy, by digest.
    let resolved =
        format!("resolve image config for docker-image://{repo}/thirdparty/docker/dockerfile@{frontend}");
    assert!(log.contains(&resolved), "{log}");
    assert!(!log.contains("docker.io/docker/dockerfile"), "{log}");
}

/// A run for arm64 alone leaves the amd64-only variant out, and plans the rest for arm64.
#[test]
fn a_variant_for_another_platform_is_left_out_of_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = format!("sha256:{}", "5616".repeat(16));
    write_repository(
        dir.path(),
        &pinned,
        &format!("docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n"),
    );
    let run = Dry::new(dir.path());
    let output = run.xtask(&["publish-all", "--dry-run"], &[("PLATFORMS", "linux/arm64")]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", stderr(&output));
    let planned: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("[dry-run] # "))
        .filter_map(|l| l.split_once(": would build").map(|(image, _)| image))
        .collect();
    assert_eq!(
        planned,
        [
            "docker-stacks-foundation",
            "base-notebook",
            "minimal-notebook",
            "scipy-notebook",
            "pytorch-notebook"
        ],
        "{out}"
    );
    assert!(!out.contains("cuda12") && !out.contains("--platform linux/amd64"), "{out}");
}

/// A vendored copy whose digest is not the pin (vendored by hand, or before the pin was
/// written): the plan refuses to build from it, naming both digests, before any build.
#[test]
fn a_vendored_copy_with_another_digest_than_its_pin_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = format!("sha256:{}", "5616".repeat(16));
    write_repository(
        dir.path(),
        &pinned,
        &format!("docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n"),
    );
    let run = Dry::new(dir.path());
    let copy = xtask_testbed::Fixture::generate(&xtask_testbed::FixtureSpec::small(37)).unwrap();
    copy.push(&run.destination.host(), "acme/thirdparty/library/ubuntu", "24.04").unwrap();
    let vendored = format!("{}/thirdparty/library/ubuntu:24.04", run.repo());
    let error = format!(
        "ubuntu:24.04@{pinned} is pinned to {pinned}, but its vendored copy {vendored} is {}",
        digest(&vendored)
    );
    for args in [&["publish-all", "--dry-run"][..], &["buildx-publish-docker-stacks-foundation"]] {
        let output = run.xtask(args, &[]);
        let (out, err) = (stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(1), "{args:?}: {out}\n{err}");
        assert!(out.contains(&error) || err.contains(&error), "{args:?}: {out}\n{err}");
        assert!(!err.contains("buildx build") && !out.contains("buildx build"), "{args:?}: {out}\n{err}");
    }
    assert!(!run.fakes.calls().iter().any(|call| call.join(" ").contains("buildx build")));
}

/// On an engine with the classic image store the builds need a BuildKit container, whose image
/// (this repository's, lent to a catalog that names none) must be in the catalog's list too:
/// the error gives the line, as this repository's list has it.
#[test]
fn a_catalog_without_the_buildkit_image_in_its_list_is_told_the_line_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = format!("sha256:{}", "5616".repeat(16));
    write_repository(
        dir.path(),
        &pinned,
        &format!("docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n"),
    );
    let fakes = common::FakeTools::new();
    let catalog = dir.path().join("images.toml").display().to_string();
    let output = fakes.xtask(&["publish-all", "--dry-run"], &[("CATALOG", catalog.as_str())]);
    assert_eq!(output.status.code(), Some(1));
    let own = xtask::catalog::Catalog::load(&xtask::project_root()).unwrap();
    let line = std::fs::read_to_string(xtask::project_root().join(&own.thirdparty))
        .unwrap()
        .lines()
        .find(|l| l.contains("/moby/buildkit:"))
        .map(|l| format!("`{}: {}`", l.split(':').next().unwrap(), own.buildkit.split(':').nth(1).unwrap()))
        .unwrap();
    let err = stderr(&output);
    assert!(err.contains(&format!("does not vendor: add its source image and tag there: {line}")), "{err}");
}

/// An entry's `args` reach the Dockerfile's reading as they reach its build: an `OWNER` of the
/// entry's own names another parent, which is no image of the catalog.
#[test]
fn an_entrys_args_choose_what_its_dockerfile_builds_from() {
    let dir = tempfile::tempdir().unwrap();
    let pinned = format!("sha256:{}", "5616".repeat(16));
    write_repository(
        dir.path(),
        &pinned,
        &format!("docker.io/library/ubuntu: 24.04@{pinned}\ndocker.io/library/busybox: 1.35\n"),
    );
    let catalog = CATALOG.replace(
        "context = \"images/base-notebook\"",
        "context = \"images/base-notebook\"\nargs = { OWNER = \"someone-else\" }",
    );
    std::fs::write(dir.path().join("images.toml"), catalog).unwrap();
    let run = Dry::new(dir.path());
    let output = run.xtask(&["publish-all", "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    let err = stderr(&output);
    assert!(
        err.contains(
            "images/base-notebook/Dockerfile:6: FROM quay.io/someone-else/docker-stacks-foundation: "
        ),
        "{err}"
    );
}
