//! Publishing a set of the catalog's images as a graph, as the Cloud Build does. The run's plan
//! is made once, before anything builds (`plan`): which images are up to date, why each other
//! builds, whether the arm64 node is needed. Then each image starts as soon as every image it
//! builds on is published, from the exact digest each just got (`scheduler`); it is built per
//! platform and merged (`image`, `merge`), signed, and shown in the closing table (`table`).
//! publish-all, buildx-publish-<image> and seed-arm64 all publish through `publish_images`.

mod image;
mod merge;
pub mod placement;
pub mod plan;
mod scheduler;
pub mod table;
pub mod timeline;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::build::node;
use crate::ctx::Ctx;
use crate::graph::Graph;
use crate::published::Destination;
use crate::vendor::{self, VendorOptions};
use crate::vm::{self, Wait};
use image::ImagePublisher;
use plan::{Plan, Planner};
use table::{ImageOutcome, Row};
use timeline::Timeline;

/// How a set of images is published.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Build even what is up to date.
    pub force: bool,
    /// One log per image in this folder; a failed image's tail is shown from it.
    pub logs: Option<PathBuf>,
    /// How long to wait for the arm64 VM and its tunnel, when the builds need them.
    pub vm_wait: Wait,
    /// How publish-all vendors: the arm64 node's builder may need the BuildKit image, which
    /// only the node can say once it is up. None: nothing is vendored (buildx-publish-<image>).
    pub vendoring: Option<Vendoring>,
}

/// The vendoring of a run that vendors what it builds from.
#[derive(Debug, Clone)]
pub struct Vendoring {
    pub options: VendorOptions,
    /// Exactly the lock's digests.
    pub locked: bool,
}

/// Publish `selected` images of `graph`, each as soon as every selected image it builds on is
/// published; a parent outside `selected` must be published already. A dry run goes through
/// the same steps, one image after another, printing each image's plan.
pub fn publish_images(ctx: &Ctx, graph: &Graph, selected: &[&str], options: &PublishOptions) -> Result<()> {
    // Before any thread of ours starts (see `Session::new`).
    let destination = Destination::open(ctx)?;
    let planner = Planner { ctx, registry: &destination, force: options.force };
    let timeline = Timeline::default();
    let plan = Plan::make(&planner, graph, selected);
    let longest_arch = ctx.settings.platforms.iter().map(|p| p.suffix().len()).max().unwrap_or(0);
    let width = selected.iter().map(|name| name.len() + 1 + longest_arch).max().unwrap_or(0);
    let publisher = ImagePublisher {
        ctx,
        planner,
        plan: &plan,
        destination: &destination,
        logs: options.logs.as_deref(),
        several: selected.len() > 1,
        width,
        timeline: &timeline,
    };
    let run = Run { ctx, graph, selected, options, publisher };
    // The arm64 VM only when an image has an arm64 build to do on it.
    let arm_builds = plan.needs_arm_node(&ctx.settings);
    vm::with_arm_node(ctx, arm_builds, &options.vm_wait, || {
        // The arm64 node is up now, and can say which builder it needs.
        if arm_builds && let Some(vendoring) = &options.vendoring {
            let nodes = node::nodes(ctx)?;
            vendor::vendor_buildkit_for(ctx, &vendoring.options, vendoring.locked, &nodes)?;
        }
        run.all()
    })
}

/// One run over the selected images.
struct Run<'a> {
    ctx: &'a Ctx,
    graph: &'a Graph,
    selected: &'a [&'a str],
    options: &'a PublishOptions,
    publisher: ImagePublisher<'a>,
}

impl Run<'_> {
    /// The timeline of the builds beside the logs, `timeline.svg`, when any image was built.
    fn write_timeline(&self) -> Result<()> {
        let (Some(logs), bars) = (&self.options.logs, self.publisher.timeline.bars()) else { return Ok(()) };
        if bars.is_empty() {
            return Ok(());
        }
        let critical = timeline::critical_path(&bars, self.graph);
        let path = logs.join("timeline.svg");
        std::fs::write(self.ctx.root.join(&path), timeline::svg(&bars, &critical))?;
        println!("timeline of the builds: {} (critical path: {})", path.display(), critical.join(" → "));
        Ok(())
    }

    /// Every selected image, then the table; fails when any failed.
    fn all(&self) -> Result<()> {
        let (ctx, selected, options) = (self.ctx, self.selected, self.options);
        if let Some(logs) = &options.logs
            && !ctx.runner.is_dry_run()
        {
            let dir = ctx.root.join(logs);
            std::fs::create_dir_all(&dir)?;
            // A timeline is of one run: an earlier run's goes.
            let _ = std::fs::remove_file(dir.join("timeline.svg"));
            println!(
                "publishing {} images as they become ready; their logs are in {}/",
                selected.len(),
                logs.display()
            );
        }
        let started = Instant::now();
        let rows = scheduler::in_parallel(self.graph, selected, ctx.runner.is_dry_run(), |node, parents| {
            self.publisher.one_image(node, parents)
        });
        if ctx.runner.is_dry_run() {
            return Ok(());
        }
        table::report(&rows, &ctx.settings.platforms, started.elapsed());
        self.write_timeline()?;
        let failed = rows.iter().filter(|row| matches!(row.outcome, ImageOutcome::Failed { .. })).count();
        let skipped = rows.iter().filter(|row| matches!(row.outcome, ImageOutcome::Skipped { .. })).count();
        if failed + skipped == 0 {
            return Ok(());
        }
        let total = rows.len();
        // One image asked for: its own error, with the failing command's exit status.
        if total == 1
            && let Some(Row { outcome: ImageOutcome::Failed { error }, .. }) = rows.into_iter().next()
        {
            return Err(error);
        }
        let skipped = if skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
        bail!("{failed} of {total} images failed{skipped} (see above)")
    }
}
