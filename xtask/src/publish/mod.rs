//! Publishing a set of the catalog's images as a graph, as the Cloud Build does. The run's plan
//! is made once, before anything builds (`plan`): which images are up to date, why each other
//! builds. Then each image starts as soon as every image it builds on is published, from the
//! exact digest each just got (`scheduler`); each of its platforms is built on a node the run's
//! nodes give it (`dispatch` decides, `nodes` carries it out, `placement` hashes: its home node,
//! the longest path first, VMs up only while they have builds), merged (`image`, `merge`), signed, and shown in the closing table
//! (`table`) and the timeline (`timeline`). publish-all, buildx-publish-<image> and seed-arm64
//! all publish through `publish_images`.

mod dispatch;
mod image;
mod merge;
mod nodes;
pub mod placement;
pub mod plan;
mod platform_test;
mod scheduler;
pub mod table;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::ctx::Ctx;
use crate::graph::Graph;
use crate::mirroring::VendorOptions;
use crate::platform_build::node;
use crate::published::Destination;
use crate::secrets::Secrets;
use crate::settings::BuildOrder;
use crate::settings::Release;
use crate::vm::{self, Wait};
use dispatch::{BuildKey, Work};
use image::ImagePublisher;
use nodes::Nodes;
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

/// Publish `selected` images of `graph` (their `secrets` found by the task before it did
/// anything), each as soon as every selected image it builds on is
/// published; a parent outside `selected` must be published already. A dry run goes through
/// the same steps, one image after another, printing each image's plan.
pub fn publish_images(
    ctx: &Ctx,
    graph: &Graph,
    selected: &[&str],
    options: &PublishOptions,
    secrets: &Secrets,
) -> Result<()> {
    let destination = Destination::open(ctx)?;
    let planner = Planner { ctx, registry: &destination, secrets, force: options.force };
    let timeline = Timeline::default();
    let plan = Plan::make(&planner, graph, selected);
    let s = &ctx.settings;
    let work = work_of(graph, selected, &plan, s);
    if s.multi_context && s.auto_start_stop && !work.left.iter().any(|(_, platform)| platform.is_arm64()) {
        ctx.runner.say(&format!("no arm64 build to do: {} is not started", s.arm64_vms.join(", ")));
    }
    let nodes =
        Nodes::new(ctx, node::engines(s), work, &options.vm_wait, options.vendoring.as_ref(), &timeline);
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
        nodes: &nodes,
    };
    let run = Run { ctx, graph, selected, options, publisher };
    let result = run.all();
    // Every VM still up is taken down, whatever became of the builds.
    let way_out = nodes.finish();
    if !ctx.runner.is_dry_run() {
        run.report_vms();
        if let Err(err) = run.write_timeline() {
            eprintln!("warning: the timeline was not written: {err:#}");
        }
    }
    vm::with_way_out(result, way_out)
}

/// What the run asks of its nodes, from its plan: the builds it may do (what is up to date or
/// cannot be built needs no node), their priorities, each image's parents in the run.
fn work_of(graph: &Graph, selected: &[&str], plan: &Plan, s: &crate::settings::Settings) -> Work {
    let left: BTreeSet<BuildKey> = selected
        .iter()
        .filter(|name| plan.may_build(name))
        .filter_map(|name| graph.vertex(name))
        .flat_map(|vertex| vertex.platforms.iter().map(|platform| (vertex.name.clone(), platform.clone())))
        .collect();
    let priority = priorities(graph, selected, plan, s.build_order, s.platforms.iter());
    let parents: BTreeMap<String, Vec<String>> = selected
        .iter()
        .filter_map(|name| graph.vertex(name))
        .map(|vertex| {
            let in_run =
                vertex.parents.iter().map(|p| p.name.clone()).filter(|p| selected.contains(&p.as_str()));
            (vertex.name.clone(), in_run.collect())
        })
        .collect();
    Work { left, priority, parents }
}

/// Which waiting build of each platform takes a free slot first: the longest remaining path to
/// the end of the graph, each image weighted by its last build time on that platform (as
/// recorded on its published index; an image without a record weighs what the recorded ones do
/// on average, 1 when none is); or, BUILD_ORDER=catalog, the catalog's order.
fn priorities<'p>(
    graph: &Graph,
    selected: &[&str],
    plan: &Plan,
    order: BuildOrder,
    platforms: impl Iterator<Item = &'p crate::platform::Platform>,
) -> BTreeMap<BuildKey, f64> {
    let mut priority = BTreeMap::new();
    let in_order: Vec<&str> =
        graph.vertices.iter().map(|v| v.name.as_str()).filter(|name| selected.contains(name)).collect();
    for platform in platforms {
        // Only the images built for this platform are on its paths.
        let in_order: Vec<&str> = in_order
            .iter()
            .copied()
            .filter(|name| graph.vertex(name).is_some_and(|v| v.platforms.iter().any(|p| p == platform)))
            .collect();
        let remaining = match order {
            BuildOrder::Catalog => {
                in_order.iter().enumerate().map(|(at, name)| (name.to_string(), -(at as f64))).collect()
            }
            BuildOrder::CriticalPath => {
                let recorded: BTreeMap<String, f64> = in_order
                    .iter()
                    .filter_map(|name| Some((name.to_string(), plan.last_build_seconds(name, platform)?)))
                    .collect();
                let average = match recorded.len() {
                    0 => 1.0,
                    n => recorded.values().sum::<f64>() / n as f64,
                };
                let weights: BTreeMap<String, f64> = in_order
                    .iter()
                    .map(|name| (name.to_string(), recorded.get(*name).copied().unwrap_or(average)))
                    .collect();
                placement::remaining_paths(graph, &weights)
            }
        };
        for (name, path) in remaining {
            priority.insert((name, platform.clone()), path);
        }
    }
    priority
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
        std::fs::write(self.ctx.root.join(logs).join("timeline.json"), self.publisher.timeline.json())?;
        println!("timeline of the builds: {} (critical path: {})", path.display(), critical.join(" → "));
        Ok(())
    }

    /// Each VM's seconds up against its seconds busy.
    fn report_vms(&self) {
        for vm in self.publisher.timeline.vms() {
            let up = vm.stopped.saturating_sub(vm.started).as_secs_f64();
            println!("VM {}: up {up:.1} s, busy {:.1} s", vm.vm, vm.busy.as_secs_f64());
        }
    }

    /// RELEASE=together, at the run's end: when every image built or found up to date has
    /// passed, every tag of every image is written, from its candidate's digest (one source, no
    /// annotation: the bytes unchanged), its signature written already; when one failed, none
    /// moves, and the images built but held back are named.
    fn release_together(&self, rows: &[Row]) -> Result<()> {
        let ctx = self.ctx;
        let failed = rows
            .iter()
            .filter(|row| matches!(row.outcome, ImageOutcome::Failed { .. } | ImageOutcome::Skipped { .. }))
            .count();
        if ctx.runner.is_dry_run() {
            ctx.runner.say(
                "RELEASE=together: once every image of the run has passed, each built image's tags are written \
                 from its candidate (`docker buildx imagetools create --tag <tag> <image>@<its digest>`)",
            );
            return Ok(());
        }
        if failed > 0 {
            let held: Vec<String> = rows
                .iter()
                .filter(|row| matches!(row.outcome, ImageOutcome::Built { .. }))
                .map(|row| {
                    format!(
                        "{} ({})",
                        row.name,
                        ctx.settings.candidate_ref(self.publisher.planner.image(&row.name))
                    )
                })
                .collect();
            println!(
                "RELEASE=together: no tag moved, as {failed} of {} images did not pass; built but held back: {}",
                rows.len(),
                if held.is_empty() { "none".to_string() } else { held.join(", ") }
            );
            return Ok(());
        }
        for row in rows {
            let image = self.publisher.planner.image(&row.name);
            match &row.outcome {
                ImageOutcome::Built { digest: Some(digest) } => {
                    let source = format!(
                        "{}@{digest}",
                        crate::registry::reference::repository_of(&ctx.settings.image_ref(image))
                    );
                    for reference in ctx
                        .settings
                        .image_refs(image)
                        .map_err(|e| anyhow::anyhow!("image `{}`: {e}", image.name))?
                    {
                        merge::retag(&ctx.runner, &reference, &source)?;
                    }
                    println!("released    {} -> {}", row.name, ctx.settings.image_ref(image));
                }
                ImageOutcome::Built { digest: None } => {
                    bail!(
                        "{} was built, but the digest of {} cannot be read to release it",
                        row.name,
                        ctx.settings.candidate_ref(image)
                    )
                }
                ImageOutcome::UpToDate { digest } => self.publisher.add_missing_tags(ctx, image, digest)?,
                _ => {}
            }
        }
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
            for file in ["timeline.svg", "timeline.json"] {
                let _ = std::fs::remove_file(dir.join(file));
            }
            println!(
                "publishing {} images as they become ready; their logs are in {}/",
                selected.len(),
                logs.display()
            );
        }
        let started = Instant::now();
        let rows =
            scheduler::in_parallel(self.graph, selected, ctx.runner.is_dry_run(), |vertex, parents| {
                self.publisher.one_image(vertex, parents)
            });
        if ctx.settings.release == Release::Together {
            self.release_together(&rows)?;
        }
        if ctx.runner.is_dry_run() {
            // A plan that cannot be carried out is a failure too: the real run would fail.
            let failed = rows.iter().filter(|row| matches!(row.outcome, ImageOutcome::Failed { .. })).count();
            if failed > 0 {
                bail!("{failed} of {} images cannot be planned (see above)", rows.len());
            }
            return Ok(());
        }
        table::report(&rows, &self.publisher.timeline.bars(), started.elapsed());
        let failed = rows.iter().filter(|row| matches!(row.outcome, ImageOutcome::Failed { .. })).count();
        let skipped = rows.iter().filter(|row| matches!(row.outcome, ImageOutcome::Skipped { .. })).count();
        if failed + skipped == 0 {
            return Ok(());
        }
        let total = rows.len();
        // One image asked for: its own error, with the failing command's exit status.
        if total == 1
            && let Some(Row { outcome: ImageOutcome::Failed { failure }, .. }) = rows.into_iter().next()
        {
            return Err(failure.into());
        }
        let skipped = if skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
        bail!("{failed} of {total} images failed{skipped} (see above)")
    }
}
