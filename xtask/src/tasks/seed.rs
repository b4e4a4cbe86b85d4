//! seed-arm64: fill the registry build caches with arm64 results from an arm64 machine (an Apple
//! Silicon Mac or an arm64 Linux VM), so that a later Cloud Build's arm64 half is quick. The
//! builds are those of `cloudbuild/pr.yaml` (its `publish-all`: the whole catalog as a graph,
//! or its `buildx-publish-*` steps), run for linux/arm64 with tags ending `-arm64-seed`; the
//! cache refs stay those of the real builds.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Result, bail};
use clap::Args;

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::flags::BuildArgs;
use crate::local_registry::with_local_registry;
use crate::pipeline::Pipeline;
use crate::platform::{Platform, Platforms};
use crate::publish;
use crate::secrets::Secrets;

#[derive(Args, Debug, Clone)]
pub struct SeedArgs {
    /// Answer yes to the confirmation (for cron and scripts)
    #[arg(long, short)]
    pub yes: bool,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// What a seeding run builds for.
fn seed_platform() -> Platform {
    Platform::new("linux", "arm64")
}
const SEED_TAG_MODIFIER: &str = "arm64-seed";
/// Step settings that belong to the Cloud Build, not to a seeding run (which takes REFRESH and
/// SIGN_KEY from its caller, and builds on this machine: no VM or pool to start, no lease; it
/// releases nothing, so RELEASE is not its either).
const DROPPED: [&str; 9] = [
    "BUILDER",
    "MULTI_CONTEXT",
    "REFRESH",
    "AUTO_START_STOP",
    "ARM64_VMS",
    "BUILDS_PER_NODE",
    "BUILD_ID",
    "SIGN_KEY",
    // A seeding run's images are tagged -arm64-seed: nothing of the catalog is released.
    "RELEASE",
];

/// seed-arm64 (and seed-arm64-dry-run, which is this with --dry-run)
pub fn seed_arm64(ctx: &Ctx, args: &SeedArgs) -> Result<()> {
    if !ctx.settings.env_given {
        bail!(
            "seed-arm64 publishes into a real repository: say which with ENV (or --env), e.g. ENV=docker-prod"
        );
    }
    let arch = std::env::consts::ARCH;
    if arch != "aarch64" {
        eprintln!(
            "warning: this machine is {arch}, not arm64/aarch64: the arm64 builds will run under QEMU \
             emulation, which takes hours. Seed from an Apple Silicon Mac or an arm64 Linux machine."
        );
    }
    let images = seed_images(ctx)?;
    let seed = seeding_context(ctx);
    describe_plan(&seed, &images);
    if !seed.runner.is_dry_run() && !args.yes {
        confirm()?;
    }
    with_local_registry(&seed, || {
        let graph = crate::catalog_graph::of_catalog(&seed)?;
        let names: Vec<&str> = images.iter().map(|image| image.name.as_str()).collect();
        let logs = (names.len() > 1).then(|| crate::work_dir().join("seed-arm64"));
        let secrets = Secrets::of_images(&seed, &names)?;
        publish::publish_images(&seed, &graph, &names, &args.build.options(logs), &secrets)
    })
}

/// The images the pipeline builds: every catalog image for a `publish-all` step, the image of
/// each `buildx-publish-*` step.
fn seed_images(ctx: &Ctx) -> Result<Vec<Image>> {
    let pipeline = Pipeline::load(&ctx.root, &ctx.catalog.pipeline)?;
    let pipeline_path = ctx.catalog.pipeline.display();
    let mut images = Vec::new();
    for step in &pipeline.steps {
        for command in step.xtask_commands() {
            let step_images: Vec<&Image> = match command.first().map(String::as_str) {
                Some("publish-all") => ctx.catalog.task_images().map(|(_, image)| image).collect(),
                Some(task) if task.starts_with("buildx-publish-") => {
                    let task = &task["buildx-publish-".len()..];
                    let Some(image) = ctx.catalog.image_for_task(task) else {
                        bail!(
                            "{pipeline_path} runs buildx-publish-{task}, which is not in the image catalog"
                        );
                    };
                    vec![image]
                }
                _ => continue,
            };
            let other_env: Vec<String> = step
                .env_pairs()
                .into_iter()
                .filter(|(name, _)| !DROPPED.contains(&name.as_str()))
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            if !other_env.is_empty() {
                bail!(
                    "step {} of {pipeline_path} sets {}: seed-arm64 only knows to drop {DROPPED:?}",
                    step.id.as_deref().unwrap_or("?"),
                    other_env.join(" ")
                );
            }
            for image in step_images {
                if !images.iter().any(|i: &Image| i.name == image.name) {
                    images.push(image.clone());
                }
            }
        }
    }
    if images.is_empty() {
        bail!("{pipeline_path} has no publish-all or buildx-publish-* step to seed");
    }
    Ok(images)
}

/// The caller's settings for an arm64-only build under seed tags, with the builder the caller
/// chose (the pipeline's per-step BUILDER and MULTI_CONTEXT are dropped).
fn seeding_context(ctx: &Ctx) -> Ctx {
    let mut settings = ctx.settings.clone();
    settings.platforms = Platforms::from(vec![seed_platform()]);
    settings.tag_modifier = SEED_TAG_MODIFIER.to_string();
    settings.multi_context = false;
    ctx.derive(settings, ctx.runner.clone())
}

fn describe_plan(seed: &Ctx, images: &[Image]) {
    let s = &seed.settings;
    let say = |line: String| seed.runner.say(&line);
    say(format!(
        "seed-arm64: the builds of {}, for {} only:",
        seed.catalog.pipeline.display(),
        seed_platform()
    ));
    for image in images {
        say(format!(
            "  {} -> {} (cache {})",
            image.name,
            s.image_ref(image),
            s.cache_ref(image, &seed_platform())
        ));
    }
    say(format!(
        "settings: ENV={} DOCKER_REPO={} PLATFORMS={} TAG_MODIFIER={} BUILDER={}",
        s.env, s.docker_repo, s.platforms, s.tag_modifier, s.builder
    ));
}

/// Ask on the terminal; without one, stop at once rather than wait for an answer that cannot come.
fn confirm() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "seed-arm64 asks for confirmation and standard input is not a terminal: pass --yes to run it unattended"
        );
    }
    print!("Run these builds? [y/n] ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not confirmed: nothing was run");
    }
    Ok(())
}
