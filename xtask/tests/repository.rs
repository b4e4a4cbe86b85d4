//! The repository's data agrees with itself, and nothing a build or a builder needs comes from
//! outside `$DOCKER_REPO`: every Dockerfile starts FROM an image that thirdparty.txt vendors or
//! another catalog image, no Dockerfile names a frontend image, and no task's plan names an
//! image from elsewhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use xtask::catalog::Catalog;

const REPO: &str = "registry.test/project/env";

fn vendored(catalog: &Catalog) -> BTreeSet<String> {
    let list = std::fs::read(xtask::project_root().join(&catalog.thirdparty)).unwrap();
    let entries = xtask::mirroring::list::parse(&list).unwrap();
    xtask::mirroring::list::pairs(&entries, REPO)
        .unwrap()
        .into_iter()
        .map(|pair| pair.destination.to_string())
        .collect()
}

#[test]
fn every_base_image_is_vendored_or_a_catalog_image_and_no_dockerfile_names_a_frontend() {
    let root = xtask::project_root();
    let catalog = Catalog::load(&root).unwrap();
    let vendored = vendored(&catalog);
    let versions = &catalog.versions;
    let published: BTreeSet<String> = catalog
        .images
        .iter()
        .map(|image| format!("{REPO}/{}:{}", image.repository(), image.tags()[0].render(versions).unwrap()))
        .collect();
    for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
        let dockerfile = std::fs::read_to_string(root.join(image.dockerfile())).unwrap();
        let mut args = BTreeMap::from([("DOCKER_REPO".to_string(), REPO.to_string())]);
        for name in &image.build_args {
            args.insert(name.clone(), catalog.versions[name].clone());
        }
        let sources = xtask::dockerfile::read(&dockerfile, &args, &[]).unwrap();
        assert_eq!(
            sources.frontend,
            None,
            "{} names a frontend image: BuildKit would fetch it",
            image.dockerfile()
        );
        assert!(!sources.images.is_empty(), "{} has no FROM", image.dockerfile());
        for base in sources.images.iter().map(|mention| &mention.written) {
            assert!(
                vendored.contains(base) || published.contains(base),
                "{} starts FROM {base}, which thirdparty.txt does not vendor and no catalog image is",
                image.dockerfile()
            );
        }
    }
}

#[test]
fn the_buildkit_image_of_container_builders_is_vendored() {
    let catalog = Catalog::load(&xtask::project_root()).unwrap();
    let buildkit = format!("{REPO}/thirdparty/{}", catalog.buildkit);
    assert!(vendored(&catalog).contains(&buildkit), "thirdparty.txt does not vendor {buildkit}");
}

/// The image references of a plan line: where docker and buildx take an image.
fn references(line: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    let words: Vec<&str> = line.iter().map(String::as_str).collect();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).copied();
        match *word {
            "--tag" => found.extend(next),
            "--driver-opt" => found.extend(next.and_then(|o| o.strip_prefix("image="))),
            "--attest" => found.extend(
                next.into_iter()
                    .flat_map(|spec| spec.split(','))
                    .filter_map(|part| part.strip_prefix("generator=")),
            ),
            // `<reference as named>=docker-image://<reference>@<digest>`: both sides. A context
            // from a local folder (the cloud builder's xtask recipe) names no image.
            "--build-context" => {
                if let Some((named, pinned)) = next.and_then(|c| c.split_once('='))
                    && let Some(pinned) = pinned.strip_prefix("docker-image://")
                {
                    found.extend([named, pinned]);
                }
            }
            "--cache-from" | "--cache-to" => found.extend(
                next.into_iter()
                    .flat_map(|spec| spec.split(','))
                    .filter_map(|part| part.strip_prefix("ref=")),
            ),
            _ => {}
        }
        for part in word.split(',') {
            if let Some(image) = part.strip_prefix("_CLOUDBUILD_IMAGE=") {
                found.push(image);
            }
        }
    }
    // The image operands of `docker pull|push|rmi|run`.
    if let Some(at) = words.iter().position(|w| *w == "docker") {
        match words.get(at + 1).copied() {
            Some("pull" | "push" | "rmi") => {
                found.extend(words[at + 2..].iter().filter(|w| !w.starts_with('-')))
            }
            Some("run") => found.extend(words.last()),
            _ => {}
        }
    }
    found.into_iter().map(str::to_string).collect()
}

#[test]
fn no_plan_names_an_image_outside_docker_repo() {
    let catalog = Catalog::load(&xtask::project_root()).unwrap();
    let mut tasks: Vec<String> = common::TASKS_WITH_A_PLAN.map(String::from).to_vec();
    for (task, _) in catalog.task_images() {
        tasks.extend(["build", "buildx-publish", "pull"].map(|action| format!("{action}-{task}")));
    }
    let fake = common::FakeTools::new();
    // A classic engine, so that ENV=local plans create their builder container too.
    fake.print("docker info --format", r#"[["Backing Filesystem","extfs"]]"#);
    // This repository's own catalog: its images, their bases and the pipeline.
    let catalog_env = ("CATALOG", common::REPOSITORY_CATALOG);
    let settings: [&[(&str, &str)]; 3] = [
        &[("ENV", "docker-prod"), ("DOCKER_REPO", REPO), catalog_env],
        &[
            ("ENV", "docker-prod"),
            ("DOCKER_REPO", REPO),
            ("MULTI_CONTEXT", "1"),
            ("BUILDER_OUTPUT", "/o"),
            catalog_env,
        ],
        &[("ENV", "local"), ("DOCKER_REPO", "localhost:5000/local"), catalog_env],
    ];
    let mut checked = BTreeSet::new();
    for env in settings {
        let repo = env[1].1;
        for task in &tasks {
            let output =
                fake.xtask(&[task, "--dry-run", "--yes"][..if task == "seed-arm64" { 3 } else { 2 }], env);
            assert!(output.status.success(), "{task}: {}", common::stderr(&output));
            for line in common::parse_plan(&common::stdout(&output)) {
                for reference in references(&line) {
                    assert!(
                        reference.starts_with(&format!("{repo}/")),
                        "{task} ({env:?}) names {reference}, which is not under DOCKER_REPO: {line:?}"
                    );
                    checked.insert(reference.split(':').next().unwrap().replace(repo, "$DOCKER_REPO"));
                }
            }
        }
    }
    // The check saw the kinds of reference it is there for.
    for kind in [
        "$DOCKER_REPO/thirdparty/moby/buildkit",
        "$DOCKER_REPO/thirdparty/docker/buildkit-syft-scanner",
        "$DOCKER_REPO/cache/odb",
        "$DOCKER_REPO/cloud-builder",
    ] {
        assert!(checked.contains(kind), "no plan named {kind}: {checked:#?}");
    }
}

/// An image added to this repository's catalog, on another of its images, needs no code: a copy
/// of the catalog with one more entry and one more Dockerfile plans it after its parent, in the
/// same one publish-all (and so in the pipeline's one step).
#[test]
fn an_added_image_needs_only_its_entry_and_dockerfile() {
    let root = xtask::project_root();
    let copy = tempfile::tempdir().unwrap();
    let images = copy.path().join("images");
    for entry in std::fs::read_dir(root.join("images")).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            let to = images.join(entry.file_name());
            std::fs::create_dir_all(&to).unwrap();
            std::fs::copy(entry.path().join("Dockerfile"), to.join("Dockerfile")).unwrap();
        }
    }
    std::fs::create_dir_all(copy.path().join("cloudbuild")).unwrap();
    std::fs::copy(root.join("thirdparty.txt"), copy.path().join("thirdparty.txt")).unwrap();
    std::fs::copy(root.join("cloudbuild/pr.yaml"), copy.path().join("cloudbuild/pr.yaml")).unwrap();
    let catalog = std::fs::read_to_string(root.join("images/images.toml")).unwrap()
        + "\n[[image]]\nname = \"added\"\ndescription = \"on the runtime\"\ntag = \"{ALPINE_VERSION}\"\nbuild_args = [\"ALPINE_VERSION\"]\n";
    std::fs::write(images.join("images.toml"), catalog).unwrap();
    std::fs::create_dir_all(images.join("added")).unwrap();
    std::fs::write(
        images.join("added/Dockerfile"),
        "ARG DOCKER_REPO\nARG ALPINE_VERSION\nFROM ${DOCKER_REPO}/runtime:${ALPINE_VERSION}\nRUN true\n",
    )
    .unwrap();

    let path = images.join("images.toml").display().to_string();
    let plan = common::plan(&["publish-all"], &[("CATALOG", &path), ("DOCKER_REPO", REPO)]);
    let lines: Vec<String> = plan.iter().map(|l| l.join(" ")).collect();
    let position = |start: &str| lines.iter().position(|l| l.starts_with(start));
    let runtime = position("# runtime: would build").expect("runtime is planned");
    let added = position("# added: would build").unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(added > runtime, "after the image it builds on");
    let pin = format!("--build-context {REPO}/runtime:3.15=docker-image://{REPO}/runtime:3.15@<that digest>");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("# added: then built from the digest runtime gets") && l.ends_with(&pin))
    );
    assert!(
        lines.iter().any(|l| l.contains("buildx build") && l.contains("/added/Dockerfile")),
        "{lines:#?}"
    );
}
