//! publish-all: the whole pipeline on this machine: vendor the base images, then build and
//! publish every image of the catalog in parallel, each with its own builder, as the Cloud Build
//! does. With ENV=local that needs nothing but Docker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;

use super::thirdparty::{self, VendorArgs};
use super::{Ctx, buildx, images, local_registry};
use crate::catalog::Image;

#[derive(Args, Debug, Clone)]
pub struct PublishAllArgs {
    #[command(flatten)]
    pub vendor: VendorArgs,
    /// Where each image's build log goes while the builds run in parallel (a relative path
    /// starts at the repository root) [default: target/publish-all, or
    /// $CARGO_TARGET_DIR/publish-all]
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// publish-all
pub fn publish_all(ctx: &Ctx, args: &PublishAllArgs) -> Result<()> {
    local_registry::ensure_for_local_env(ctx)?;
    // The catalog's images, not the cloud builder: publish-all does not build it.
    let with_buildkit = buildx::nodes(ctx)?.iter().any(|node| !node.builder.engine);
    thirdparty::vendor_bases(ctx, &args.vendor, ctx.catalog.task_images().map(|(_, i)| i), with_buildkit)?;

    let images: Vec<(&str, &Image)> = ctx.catalog.task_images().collect();
    if ctx.runner.is_dry_run() {
        ctx.runner.say("then, in parallel, each image (a builder container is each image's own):");
        for (task, image) in &images {
            let image_ctx = image_context(ctx, task, None);
            ctx.runner.say(&format!("{}:", image.name));
            images::publish(&image_ctx, image)?;
        }
        return Ok(());
    }

    let logs = args.logs.clone().unwrap_or_else(|| crate::work_dir().join("publish-all"));
    let log_dir = ctx.root.join(&logs);
    std::fs::create_dir_all(&log_dir)?;
    println!("building {} images in parallel; their logs are in {}/", images.len(), logs.display());
    let results: Vec<Built> = std::thread::scope(|scope| {
        let builds: Vec<_> = images
            .iter()
            .map(|(task, image)| {
                let log = log_dir.join(format!("{}.log", image.name));
                let _ = std::fs::remove_file(&log);
                let image_ctx = image_context(ctx, task, Some(log.clone()));
                scope.spawn(move || {
                    let started = Instant::now();
                    let result = images::publish(&image_ctx, image).map_err(|e| format!("{e:#}"));
                    let reference = image_ctx.settings.image_ref(image);
                    Built { name: image.name.clone(), reference, result, elapsed: started.elapsed(), log }
                })
            })
            .collect();
        builds.into_iter().map(|b| b.join().expect("a build thread panicked")).collect()
    });
    report(&results)
}

/// One image's settings: a builder of its own (named after the image's task), and its output
/// into its log.
fn image_context(ctx: &Ctx, task: &str, log: Option<PathBuf>) -> Ctx {
    let mut settings = ctx.settings.clone();
    settings.builder = format!("{}-{task}", ctx.settings.builder);
    let runner = match log {
        Some(log) => ctx.runner.with_log(log),
        None => ctx.runner.clone(),
    };
    ctx.derive(settings, runner)
}

struct Built {
    name: String,
    reference: String,
    result: Result<(), String>,
    elapsed: Duration,
    log: PathBuf,
}

/// Every image's outcome; a failed one with the end of its log. Fails when any failed.
fn report(results: &[Built]) -> Result<()> {
    for built in results {
        let seconds = built.elapsed.as_secs_f64();
        match &built.result {
            Ok(()) => println!("published   {} -> {} ({seconds:.1} s)", built.name, built.reference),
            Err(error) => {
                println!(
                    "FAILED      {}: {error} ({seconds:.1} s, log: {})",
                    built.name,
                    built.log.display()
                );
                let log = std::fs::read_to_string(&built.log).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                for line in &lines[lines.len().saturating_sub(15)..] {
                    println!("  | {line}");
                }
            }
        }
    }
    let failed = results.iter().filter(|b| b.result.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} images failed (see above)", results.len());
    }
    Ok(())
}
