//! cloudbuild/pr.yaml against the CLI and the catalog: every `cargo xtask …` it runs exists with
//! those flags, its substitutions are declared, its order and parallelism are the original's.

mod common;

use std::collections::{BTreeSet, HashMap};

use xtask::pipeline::{Pipeline, Step};

fn pipeline() -> Pipeline {
    Pipeline::load(&xtask::project_root(), std::path::Path::new("cloudbuild/pr.yaml")).unwrap()
}

#[test]
fn every_xtask_command_is_a_real_task_with_real_flags() {
    let mut seen = 0;
    for step in pipeline().steps {
        for command in step.xtask_commands() {
            seen += 1;
            let mut args: Vec<&str> = command.iter().map(String::as_str).collect();
            args.push("--help");
            let output = common::xtask(&args, &[]);
            assert!(
                output.status.success(),
                "step {:?} runs `cargo xtask {}`, which the CLI rejects: {}",
                step.id,
                command.join(" "),
                common::stderr(&output)
            );
        }
    }
    assert!(seen >= 3, "found only {seen} xtask commands");
}

#[test]
fn substitutions_used_are_declared_and_declared_ones_used() {
    let text = std::fs::read_to_string(xtask::project_root().join("cloudbuild/pr.yaml")).unwrap();
    let values: String =
        text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    // `$${…}` is a shell variable, escaped from Cloud Build.
    let values = values.replace("$${", "$$");
    let used: BTreeSet<String> = values
        .split("${")
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_string()))
        .collect();
    let declared: BTreeSet<String> = pipeline().substitutions.keys().cloned().collect();
    let builtin = ["PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"];
    // A trigger's (empty in a manual build): the commit, passed on as GIT_SHA.
    let from_triggers = ["COMMIT_SHA"];
    for name in &used {
        assert!(
            declared.contains(name)
                || builtin.contains(&name.as_str())
                || from_triggers.contains(&name.as_str()),
            "${{{name}}} is not declared"
        );
    }
    for name in &declared {
        assert!(used.contains(name), "substitution {name} is declared but never used");
    }
    assert_eq!(
        declared,
        BTreeSet::from([
            "_ARM64_VMS".into(),
            "_AUTO_START_STOP".into(),
            "_BUILDS_PER_NODE".into(),
            "_CLOUDBUILD_IMAGE".into(),
            "_ENV".into(),
            "_REFRESH".into(),
            "_RELEASE".into(),
            "_RUN_LOGS_BUCKET".into(),
            "_SCAN_FAIL_ON".into(),
            "_SIGN_KEY".into()
        ])
    );
}

/// Every step each step waits for, directly or not. No `waitFor`: all steps before it.
fn ancestors(steps: &[Step]) -> HashMap<String, BTreeSet<String>> {
    let mut result: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (index, step) in steps.iter().enumerate() {
        let direct: Vec<String> = match &step.wait_for {
            None => steps[..index].iter().filter_map(|s| s.id.clone()).collect(),
            Some(list) => list.iter().filter(|id| *id != "-").cloned().collect(),
        };
        let mut all = BTreeSet::new();
        for id in direct {
            all.extend(result.get(&id).cloned().unwrap_or_default());
            all.insert(id);
        }
        result.insert(step.id.clone().expect("every step has an id"), all);
    }
    result
}

/// The original's steps in the original's order, with every image in one step: publish-all
/// builds the catalog as a graph, so adding an image needs no pipeline edit; and the arm64 VM's
/// start and stop are that step's too, so that a failing build never leaves the VM running.
#[test]
fn order_and_one_step_for_every_image() {
    let steps = pipeline().steps;
    let ids: Vec<&str> = steps.iter().filter_map(|s| s.id.as_deref()).collect();
    assert_eq!(ids, ["setup-ssh", "xtask", "thirdparty", "setup", "images", "scan"]);
    let ancestors = ancestors(&steps);
    // The xtask is compiled once, before any step runs it, and never by two steps at once.
    for step in &steps {
        if !step.xtask_commands().is_empty() {
            assert!(
                ancestors[step.id.as_deref().unwrap()].contains("xtask"),
                "{:?} may run before the xtask is built",
                step.id
            );
        }
    }
    let images = steps.iter().find(|s| s.id.as_deref() == Some("images")).unwrap();
    assert_eq!(images.wait_for.as_deref(), Some(&["setup".to_string()][..]));
    let commands = images.xtask_commands();
    assert_eq!(commands, [["publish-all", "--locked"]], "the reviewed digests of thirdparty.lock");
    let env: HashMap<String, String> = images.env_pairs().into_iter().collect();
    assert_eq!(env["MULTI_CONTEXT"], "1");
    assert_eq!(env["AUTO_START_STOP"], "${_AUTO_START_STOP}", "the step starts and stops the VM");
    assert_eq!(env["BUILD_ID"], "${BUILD_ID}", "the lease on the VM is named after the build");
    assert_eq!(env["REFRESH"], "${_REFRESH}", "the scheduled trigger's refresh reaches the builds");
    assert_eq!(env["RELEASE"], "${_RELEASE}", "main's trigger releases the catalog together");
    // No step builds one image: the catalog's images are publish-all's.
    for step in &steps {
        for command in step.xtask_commands() {
            assert!(!command[0].starts_with("buildx-publish-"), "step {:?} runs {command:?}", step.id);
        }
    }
    assert_eq!(env["SIGN_KEY"], "${_SIGN_KEY}", "what is published is signed");
    // After it only the scan of what it published: Cloud Build runs no later step once a step
    // fails, so the VM's stop is the images step's own.
    let scan = steps.last().unwrap();
    assert_eq!(scan.xtask_commands(), [["scan"]]);
    assert_eq!(scan.wait_for.as_deref(), Some(&["images".to_string()][..]));
}

#[test]
fn secrets_go_to_files_never_to_output() {
    let text = std::fs::read_to_string(xtask::project_root().join("cloudbuild/pr.yaml")).unwrap();
    for line in text.lines() {
        if line.contains("secrets versions access") {
            assert!(line.contains("--out-file=") || text.contains("--out-file="), "{line}");
        }
        assert!(!(line.contains("echo") && line.to_lowercase().contains("secret")), "{line}");
        assert!(!line.contains("set -x"), "tracing would print what the script handles: {line}");
    }
}

/// Every step runs in the cloud builder image, which comes from `$DOCKER_REPO`: no step image
/// from Docker Hub or anywhere else.
#[test]
fn every_step_runs_in_the_cloud_builder_image() {
    let pipeline = pipeline();
    for step in &pipeline.steps {
        assert_eq!(step.name, "${_CLOUDBUILD_IMAGE}", "step {:?}", step.id);
    }
    let default = &pipeline.substitutions["_CLOUDBUILD_IMAGE"];
    assert!(default.starts_with("us-docker.pkg.dev/${PROJECT_ID}/docker-dev/cloud-builder:"), "{default}");
}

/// The xtask step starts from the dependencies the cloud builder image compiled: it copies the
/// target folder the catalog's cloud builder Dockerfile fills, then builds, with the image's own
/// CARGO_HOME (where those crates' sources are), so that only the xtask crate compiles.
#[test]
fn the_xtask_step_starts_from_the_cloud_builders_prebuilt_dependencies() {
    let root = xtask::project_root();
    let catalog = xtask::catalog::Catalog::load(&root).unwrap();
    let dockerfile = std::fs::read_to_string(root.join(catalog.cloud_builder.dockerfile())).unwrap();
    let prebuilt = dockerfile
        .split_whitespace()
        .find_map(|word| word.strip_prefix("CARGO_TARGET_DIR="))
        .expect("the cloud builder compiles the xtask's dependencies into a target folder");
    assert!(
        dockerfile.contains("FROM scratch AS xtask-recipe"),
        "the recipe's stage, which the task's context fills"
    );
    // The recipe's commands, in order: the dependencies compiled, then the stub forgotten.
    let mut rest = dockerfile.as_str();
    for words in xtask::cargo_recipe::PREBUILD {
        let command = format!("cargo {}", words.join(" "));
        let at = rest.find(&command).unwrap_or_else(|| panic!("the cloud builder runs `{command}` next"));
        rest = &rest[at + command.len()..];
    }

    let steps = pipeline().steps;
    let step = steps.iter().find(|s| s.id.as_deref() == Some("xtask")).unwrap();
    assert_eq!(step.entrypoint.as_deref(), Some("bash"));
    let script = &step.args[1];
    assert!(script.contains(&format!("cp -a {prebuilt}/. /workspace/target/")), "{script}");
    assert!(script.trim_end().ends_with("cargo build --locked --package xtask"), "{script}");

    let options = pipeline().options;
    let env: Vec<&str> = options.env.iter().map(String::as_str).collect();
    assert!(env.contains(&"CARGO_TARGET_DIR=/workspace/target"), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("CARGO_HOME=")), "the image's CARGO_HOME: {env:?}");
    assert!(
        env.contains(&"CARGO_INCREMENTAL=0"),
        "one compile from scratch needs no incremental cache: {env:?}"
    );
}
