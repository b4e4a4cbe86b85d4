//! publish-all: the whole pipeline on this machine: vendor the base images, then build and
//! publish the catalog's images as a graph, as the Cloud Build does. An image starts as soon
//! as every catalog image it builds on is published, from the exact digest each just got;
//! images that do not depend on each other build at once; an image whose inputs match what is
//! published is up to date and not built at all. With ENV=local that needs nothing but Docker.
//!
//! `publish_images` is that graph run for any set of the catalog's images: buildx-publish-<image>
//! and seed-arm64 use it too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use clap::Args;

use super::images::{self, BuildArgs, ImageOutput, Recipe, Steps};
use super::published::{Destination, Published};
use super::signing;
use super::thirdparty::{self, VendorArgs};
use super::vm::{self, WaitArgs};
use super::{Ctx, local_registry};
use crate::catalog::Image;
use crate::graph::{Graph, Node};
use crate::inputs::{Given, Inputs};
use crate::registry::manifest::short_digest;

#[derive(Args, Debug, Clone)]
pub struct PublishAllArgs {
    #[command(flatten)]
    pub vendor: VendorArgs,
    /// Vendor exactly the digests of thirdparty.lock, as `thirdparty --locked` (for pipelines)
    #[arg(long)]
    pub locked: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Where each image's build log goes while the builds run in parallel (a relative path
    /// starts at the repository root) [default: target/publish-all, or
    /// $CARGO_TARGET_DIR/publish-all]
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// How a set of images is published.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Build even what is up to date.
    pub force: bool,
    /// One log per image in this folder; a failed image's tail is shown from it.
    pub logs: Option<PathBuf>,
    /// How long to wait for the arm64 VM and its tunnel, when the builds need them.
    pub vm_wait: WaitArgs,
    /// How publish-all vendors: the arm64 node's builder may need the BuildKit image, which
    /// only the node can say once it is up. None: nothing is vendored (buildx-publish-<image>).
    pub vendoring: Option<Vendoring>,
}

/// The vendoring of a run that vendors what it builds from.
#[derive(Debug, Clone)]
pub struct Vendoring {
    pub args: VendorArgs,
    /// Exactly the lock's digests.
    pub locked: bool,
}

/// The `REFRESH` build argument: a Dockerfile that declares it has its package steps run again
/// whenever its value changes.
const REFRESH_ARG: &str = "REFRESH";

/// publish-all
pub fn publish_all(ctx: &Ctx, args: &PublishAllArgs) -> Result<()> {
    local_registry::with_local_registry(ctx, || {
        let graph = images::catalog_graph(ctx)?;
        // The catalog's images, not the cloud builder: publish-all does not build it.
        thirdparty::vendor_build_bases(ctx, &args.vendor, args.locked)?;
        if ctx.runner.is_dry_run() {
            // The step as a task of its own, so that the plan can be pasted whole.
            let (sh, flags) = (crate::runner::sh(), bases_flags(ctx, args));
            ctx.runner.run(xshell::cmd!(sh, "cargo xtask thirdparty --bases {flags...}"))?;
        }
        let logs = args.logs.clone().unwrap_or_else(|| crate::work_dir().join("publish-all"));
        let names: Vec<&str> = graph.nodes.iter().map(|node| node.name.as_str()).collect();
        let mut options = args.build.options(Some(logs));
        options.vendoring = Some(Vendoring { args: args.vendor.clone(), locked: args.locked });
        publish_images(ctx, &graph, &names, &options)
    })
}

/// The flags of `thirdparty --bases` that vendor as this run does: its settings, explicitly.
fn bases_flags(ctx: &Ctx, args: &PublishAllArgs) -> Vec<String> {
    let s = &ctx.settings;
    let mut flags = vec!["--env".to_string(), s.env.clone(), "--docker-repo".into(), s.docker_repo.clone()];
    if s.catalog != Path::new(crate::catalog::CATALOG_PATH) {
        flags.extend(["--catalog".to_string(), s.catalog.display().to_string()]);
    }
    if s.multi_context {
        flags.extend(["--multi-context".to_string(), "1".into(), "--platforms".into(), s.platforms.clone()]);
    }
    if args.locked {
        flags.push("--locked".into());
    }
    flags.extend(args.vendor.flags());
    flags
}

/// What became of one image.
#[derive(Debug)]
enum Outcome {
    /// Its inputs match what is published at this digest: nothing was built.
    UpToDate {
        digest: String,
    },
    /// Built and published; the digest when it could be read back.
    Built {
        digest: Option<String>,
    },
    /// A dry run: it would be built.
    WouldBuild,
    Failed {
        error: anyhow::Error,
    },
    /// Not built because an image it builds on was not (the reason).
    Skipped {
        reason: String,
    },
}

impl Outcome {
    /// The digest its children build from, if it has one.
    fn digest(&self) -> Option<&str> {
        match self {
            Outcome::UpToDate { digest } | Outcome::Built { digest: Some(digest) } => Some(digest),
            _ => None,
        }
    }
}

/// One image's row of the closing table.
struct Row {
    name: String,
    outcome: Outcome,
    elapsed: Duration,
    /// Cached steps and steps of its builds.
    steps: Option<(usize, usize)>,
}

/// Publish `selected` images of `graph`, each as soon as every selected image it builds on is
/// published; a parent outside `selected` must be published already. A dry run goes through
/// the same steps, one image after another, printing each image's plan.
pub fn publish_images(ctx: &Ctx, graph: &Graph, selected: &[&str], options: &PublishOptions) -> Result<()> {
    // Before any thread of ours starts (see `Session::new`).
    let destination = Destination::open(ctx)?;
    let width =
        selected.iter().map(|name| name.len() + 1 + longest_arch(&ctx.settings.platforms)).max().unwrap_or(0);
    let run = Run { ctx, graph, selected, options, destination: &destination, width };
    // The arm64 VM only when an image has an arm64 build to do on it.
    let arm_builds = ctx.settings.multi_context
        && ctx.settings.platforms.split(',').any(|p| p.starts_with("linux/arm64"))
        && run.any_build();
    vm::with_arm_node(ctx, arm_builds, &options.vm_wait, || {
        // The arm64 node is up now, and can say which builder it needs.
        if arm_builds && let Some(vendoring) = &options.vendoring {
            let nodes = super::buildx::nodes(ctx)?;
            thirdparty::vendor_buildkit_for(ctx, &vendoring.args, vendoring.locked, &nodes)?;
        }
        run.all()
    })
}

impl Run<'_> {
    /// Every selected image, then the table; fails when any failed.
    fn all(&self) -> Result<()> {
        let (ctx, selected, options) = (self.ctx, self.selected, self.options);
        let run = self;
        if let Some(logs) = &options.logs
            && !ctx.runner.is_dry_run()
        {
            let dir = ctx.root.join(logs);
            std::fs::create_dir_all(&dir)?;
            println!(
                "publishing {} images as they become ready; their logs are in {}/",
                selected.len(),
                logs.display()
            );
        }
        let started = Instant::now();
        let rows = run.in_parallel();
        if ctx.runner.is_dry_run() {
            return Ok(());
        }
        report(&rows, &ctx.settings.platforms, started.elapsed());
        let failed = rows.iter().filter(|row| matches!(row.outcome, Outcome::Failed { .. })).count();
        let skipped = rows.iter().filter(|row| matches!(row.outcome, Outcome::Skipped { .. })).count();
        if failed + skipped == 0 {
            return Ok(());
        }
        let total = rows.len();
        // One image asked for: its own error, with the failing command's exit status.
        if total == 1
            && let Some(Row { outcome: Outcome::Failed { error }, .. }) = rows.into_iter().next()
        {
            return Err(error);
        }
        let skipped = if skipped > 0 { format!(", {skipped} skipped") } else { String::new() };
        bail!("{failed} of {total} images failed{skipped} (see above)")
    }
}

/// `host/path/name:tag` without its tag.
fn repository_of(reference: &str) -> &str {
    reference.rsplit_once(':').map_or(reference, |(repository, _)| repository)
}

fn order(graph: &Graph, mut done: BTreeMap<String, Row>) -> Vec<Row> {
    graph.nodes.iter().filter_map(|node| done.remove(&node.name)).collect()
}

fn longest_arch(platforms: &str) -> usize {
    platforms.split(',').map(|p| crate::settings::platform_suffix(p).len()).max().unwrap_or(0)
}

fn image_named<'a>(ctx: &'a Ctx, name: &str) -> &'a Image {
    ctx.catalog.images.iter().find(|image| image.name == name).expect("the graph's images are the catalog's")
}

/// Each parent built in this run: the digest it was published at (none in a dry run where it
/// would be built), or why it was not (`Err`: its children are skipped).
type Parents = BTreeMap<String, Result<Option<String>, String>>;

/// One run over the selected images.
struct Run<'a> {
    ctx: &'a Ctx,
    graph: &'a Graph,
    selected: &'a [&'a str],
    options: &'a PublishOptions,
    destination: &'a Destination,
    width: usize,
}

/// What the inputs and what is published say of an image.
enum Decision {
    /// Published with these inputs, at this digest.
    UpToDate(String),
    /// To be built, as `recipe` says, for the reason `why` (and `notes` for a dry run's plan).
    Build { recipe: Box<Recipe>, why: String, notes: Vec<String> },
}

/// What an image's build starts from: a digest for each image it names, or why one is unknown.
struct Bases {
    digests: BTreeMap<String, String>,
    pins: Vec<(String, String)>,
    /// Why some digests are unknown (then nothing can be up to date).
    unknown: Vec<String>,
    /// For a dry run's plan: the pins a parent's build will decide.
    notes: Vec<String>,
}

impl Run<'_> {
    /// Every selected image on a thread of its own, each waiting for its selected parents. A
    /// dry run is the same run, one image at a time: each waits for every image before it in
    /// the graph's order, so that the plan reads top to bottom.
    fn in_parallel(&self) -> Vec<Row> {
        let done: Mutex<BTreeMap<String, Row>> = Mutex::new(BTreeMap::new());
        let changed = Condvar::new();
        let in_order: Vec<&str> =
            self.graph.nodes.iter().map(|n| n.name.as_str()).filter(|n| self.selected.contains(n)).collect();
        let dry_run = self.ctx.runner.is_dry_run();
        std::thread::scope(|scope| {
            for &name in self.selected {
                let (done, changed, in_order) = (&done, &changed, &in_order);
                scope.spawn(move || {
                    let node = self.graph.node(name).expect("a selected image is in the graph");
                    let waiting = |done: &mut BTreeMap<String, Row>| {
                        if dry_run {
                            return in_order
                                .iter()
                                .take_while(|n| **n != name)
                                .any(|n| !done.contains_key(*n));
                        }
                        node.parents
                            .iter()
                            .any(|p| self.selected.contains(&p.name.as_str()) && !done.contains_key(&p.name))
                    };
                    let guard = changed
                        .wait_while(done.lock().expect("not poisoned"), waiting)
                        .expect("not poisoned");
                    // The parents' rows are read, then the lock is let go for the build.
                    let parents = self.parent_outcomes(node, &guard);
                    drop(guard);
                    let row = self.one_image(node, parents);
                    done.lock().expect("not poisoned").insert(name.to_string(), row);
                    changed.notify_all();
                });
            }
        });
        order(self.graph, done.into_inner().expect("not poisoned"))
    }

    /// The outcomes of the parents of `node` that this run built (or skipped, or failed).
    fn parent_outcomes(&self, node: &Node, done: &BTreeMap<String, Row>) -> Parents {
        let mut parents = BTreeMap::new();
        for parent in &node.parents {
            let Some(row) = done.get(&parent.name) else { continue };
            let outcome = match &row.outcome {
                Outcome::Failed { .. } => Err(format!("{} failed", parent.name)),
                Outcome::Skipped { .. } => Err(format!("{} was skipped", parent.name)),
                outcome => Ok(outcome.digest().map(str::to_string)),
            };
            parents.insert(parent.name.clone(), outcome);
        }
        parents
    }

    /// One image: skipped when a parent failed, else decided and, unless up to date, built.
    fn one_image(&self, node: &Node, parents: Parents) -> Row {
        let started = Instant::now();
        let name = node.name.as_str();
        let image = image_named(self.ctx, name);
        let log = self.options.logs.as_ref().map(|dir| self.ctx.root.join(dir).join(format!("{name}.log")));
        if let Some(log) = &log {
            let _ = std::fs::remove_file(log);
        }
        let steps = Arc::new(Steps::default());
        let outcome = match parents.values().find_map(|p| p.as_ref().err()) {
            Some(reason) => Outcome::Skipped { reason: reason.clone() },
            None if crate::interrupt::requested() => {
                Outcome::Failed { error: anyhow!("interrupted before it started (Ctrl-C or SIGTERM)") }
            }
            None => match self.publish(node, image, &parents, log.as_deref(), &steps) {
                Ok(outcome) => outcome,
                Err(error) => Outcome::Failed { error },
            },
        };
        self.tell(image, &outcome, started.elapsed(), log.as_deref());
        let built = matches!(outcome, Outcome::Built { .. } | Outcome::Failed { .. });
        Row {
            name: name.to_string(),
            outcome,
            elapsed: started.elapsed(),
            steps: built.then(|| steps.counts()),
        }
    }

    /// Whether any selected image has a build to do: the same decisions as the run's, made
    /// before it (a parent that would build makes its children build too). What cannot be
    /// decided counts as a build.
    fn any_build(&self) -> bool {
        let mut decided = Parents::new();
        for node in self.graph.nodes.iter().filter(|n| self.selected.contains(&n.name.as_str())) {
            let parents: Parents = node
                .parents
                .iter()
                .filter_map(|p| Some((p.name.clone(), decided.get(&p.name)?.clone())))
                .collect();
            match self.decide(node, image_named(self.ctx, &node.name), &parents) {
                Ok(Decision::UpToDate(digest)) => decided.insert(node.name.clone(), Ok(Some(digest))),
                Ok(Decision::Build { .. }) | Err(_) => return true,
            };
        }
        false
    }

    /// Decide, then build unless up to date.
    fn publish(
        &self,
        node: &Node,
        image: &Image,
        parents: &Parents,
        log: Option<&Path>,
        steps: &Arc<Steps>,
    ) -> Result<Outcome> {
        let (ctx, destination) = (self.ctx, self.destination);
        let output = ImageOutput { log, width: self.width, steps: Arc::clone(steps) };
        let (recipe, why, notes) = match self.decide(node, image, parents)? {
            Decision::UpToDate(digest) => {
                // Up to date keeps its signature; one that was never signed gets one.
                if let Some(key) = &ctx.settings.sign_key {
                    let reference = ctx.settings.image_ref(image);
                    let repository = repository_of(&reference);
                    let signature = format!("{repository}:{}", signing::signature_tag(&digest));
                    if destination.digest(&signature).ok().flatten().is_none() {
                        signing::sign(
                            &output.image_ctx(&self.image_ctx(image), image),
                            key,
                            &format!("{repository}@{digest}"),
                        )?;
                    }
                }
                return Ok(Outcome::UpToDate { digest });
            }
            Decision::Build { recipe, why, notes } => (recipe, why, notes),
        };
        let verb = if ctx.runner.is_dry_run() { "would build" } else { "building" };
        self.status(
            &format!("{:<11} {}: {why}", verb, image.name),
            &format!("{}: {verb}: {why}", image.name),
        );
        for note in &notes {
            ctx.runner.say(&format!("{}: {note}", image.name));
        }
        let image_ctx = self.image_ctx(image);
        images::publish(&image_ctx, image, &recipe, &output)?;
        let reference = ctx.settings.image_ref(image);
        if ctx.runner.is_dry_run() {
            if let Some(key) = &ctx.settings.sign_key {
                ctx.runner.say(&format!(
                    "{}: then signed by the digest the merge gives (`cosign sign` of {}@<that digest>, SIGN_KEY {key})",
                    image.name,
                    repository_of(&reference)
                ));
            }
            return Ok(Outcome::WouldBuild);
        }
        destination.forget(&reference);
        let digest = destination.digest(&reference).ok().flatten();
        // Signed by digest, never by tag: what the tag points at may move, the digest does not.
        if let Some(key) = &ctx.settings.sign_key {
            let Some(digest) = &digest else {
                bail!("{reference} was published, but its digest cannot be read back to sign it");
            };
            signing::sign(
                &output.image_ctx(&image_ctx, image),
                key,
                &format!("{}@{digest}", repository_of(&reference)),
            )?;
        }
        Ok(Outcome::Built { digest })
    }

    /// Whether the image is up to date, else what its build is made of and why it is built.
    fn decide(&self, node: &Node, image: &Image, parents: &Parents) -> Result<Decision> {
        let (ctx, destination) = (self.ctx, self.destination);
        let s = &ctx.settings;
        let reference = s.image_ref(image);
        let (published, unreadable) = match destination.published(&reference) {
            Ok(published) => (published, None),
            Err(err) => (None, Some(format!("cannot tell whether it is up to date: {err:#}"))),
        };
        let bases = self.bases(node, parents)?;
        let args = build_args(ctx, image, published.as_ref())?;
        let inputs = match bases.unknown.is_empty() {
            false => None,
            true => Some(Inputs::reckon(Given {
                context: &ctx.root.join(image.context()),
                dockerfile: &ctx.root.join(image.dockerfile()),
                args: args.iter().cloned().collect(),
                platforms: s.platforms.clone(),
                bases: bases.digests.clone(),
                options: images::output_options(ctx),
            })?),
        };
        if let (Some(published), Some(inputs)) = (&published, &inputs)
            && published.inputs_digest.as_deref() == Some(inputs.digest().as_str())
            && !self.options.force
        {
            return Ok(Decision::UpToDate(published.digest.clone()));
        }
        let unknown = unreadable.or_else(|| (!bases.unknown.is_empty()).then(|| bases.unknown.join(", ")));
        let why = why_build(self.options.force, published.as_ref(), inputs.as_ref(), unknown.as_deref());
        Ok(Decision::Build {
            recipe: Box::new(Recipe { args, pins: bases.pins, inputs }),
            why,
            notes: bases.notes,
        })
    }

    /// Each image the Dockerfile names, pinned to a digest: a vendored base as vendored now, a
    /// parent as it was just published (or, outside the run, as published before).
    fn bases(&self, node: &Node, parents: &Parents) -> Result<Bases> {
        let (ctx, destination) = (self.ctx, self.destination);
        let dry_run = ctx.runner.is_dry_run();
        let mut bases =
            Bases { digests: BTreeMap::new(), pins: Vec::new(), unknown: Vec::new(), notes: Vec::new() };
        let mut named: Vec<(String, String, Option<String>)> = Vec::new();
        for reference in &node.vendored {
            let digest = match destination.digest(reference) {
                Ok(Some(digest)) => Some(digest),
                Ok(None) if dry_run => {
                    bases.unknown.push(format!("{reference} is not vendored yet"));
                    None
                }
                Ok(None) => bail!("{reference} is not vendored: run `cargo xtask thirdparty` first"),
                Err(err) => {
                    bases.unknown.push(format!("cannot read {reference} ({err:#})"));
                    None
                }
            };
            named.push((reference.clone(), reference.clone(), digest));
        }
        for parent in &node.parents {
            let image = image_named(ctx, &parent.name);
            let published = ctx.settings.image_ref(image);
            let digest = match parents.get(&parent.name) {
                Some(Ok(Some(digest))) => Some(digest.clone()),
                Some(Ok(None)) if dry_run => {
                    bases.unknown.push(format!("{} would be rebuilt", parent.name));
                    bases.notes.push(format!(
                        "then built from the digest {} gets: --build-context {}=docker-image://{published}@<that digest>",
                        parent.name, parent.reference
                    ));
                    None
                }
                Some(Ok(None)) => {
                    bases.unknown.push(format!("the digest {} was published at cannot be read", parent.name));
                    None
                }
                Some(Err(reason)) => return Err(anyhow!("{reason}")),
                None => self.published_parent(&parent.name, &published, &mut bases.unknown)?,
            };
            named.push((parent.reference.clone(), published, digest));
        }
        for (named, reference, digest) in named {
            if let Some(digest) = digest {
                bases.pins.push((named.clone(), format!("{reference}@{digest}")));
                bases.digests.insert(named, digest);
            }
        }
        Ok(bases)
    }

    /// A parent outside this run: it must be published already.
    fn published_parent(
        &self,
        name: &str,
        reference: &str,
        unknown: &mut Vec<String>,
    ) -> Result<Option<String>> {
        let task =
            self.ctx.catalog.task_images().find(|(_, i)| i.name == name).map_or(name, |(task, _)| task);
        let hint = format!(
            "`cargo xtask buildx-publish-{task}` builds it (or `cargo xtask publish-all`, all in order)"
        );
        match self.destination.digest(reference) {
            Ok(Some(digest)) => Ok(Some(digest)),
            Ok(None) if self.ctx.runner.is_dry_run() => {
                unknown.push(format!("{name} is not published yet: {hint}"));
                Ok(None)
            }
            Ok(None) => bail!("it builds on {name}, which is not published yet ({reference}): {hint}"),
            Err(err) => {
                unknown.push(format!("cannot read {reference} ({err:#})"));
                Ok(None)
            }
        }
    }

    /// An image's settings: with several images at once, a builder of its own named after its
    /// task (two builds cannot share a builder container's name).
    fn image_ctx(&self, image: &Image) -> Ctx {
        let mut settings = self.ctx.settings.clone();
        if self.selected.len() > 1 {
            let task = image.task.as_deref().unwrap_or(&image.name);
            settings.builder = format!("{}-{task}", self.ctx.settings.builder);
        }
        self.ctx.derive(settings, self.ctx.runner.clone())
    }

    /// A line of the run: printed as it happens (a shell comment in a dry run).
    fn status(&self, line: &str, dry: &str) {
        if self.ctx.runner.is_dry_run() {
            self.ctx.runner.say(dry);
        } else {
            println!("{line}");
        }
    }

    fn tell(&self, image: &Image, outcome: &Outcome, elapsed: Duration, log: Option<&Path>) {
        let (name, reference, seconds) =
            (&image.name, self.ctx.settings.image_ref(image), elapsed.as_secs_f64());
        match outcome {
            Outcome::UpToDate { digest } => self.status(
                &format!("up to date  {name} -> {reference} ({})", short_digest(digest)),
                &format!("{name}: up to date: {reference} ({})", short_digest(digest)),
            ),
            Outcome::Built { digest } => {
                let digest = digest.as_deref().map_or(String::new(), |d| format!("{}, ", short_digest(d)));
                println!("published   {name} -> {reference} ({digest}{seconds:.1} s)");
            }
            Outcome::WouldBuild => {}
            Outcome::Skipped { reason } => self.status(
                &format!("skipped     {name}: {reason}"),
                &format!("{name}: would be skipped: {reason}"),
            ),
            Outcome::Failed { error } => {
                if self.ctx.runner.is_dry_run() {
                    self.ctx.runner.say(&format!("{name}: cannot be planned: {error:#}"));
                    return;
                }
                let log_note = log.map_or(String::new(), |l| format!(", log: {}", l.display()));
                println!("FAILED      {name}: {error:#} ({seconds:.1} s{log_note})");
                if let Some(log) = log {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    for line in &lines[lines.len().saturating_sub(15)..] {
                        println!("  | {line}");
                    }
                }
            }
        }
    }
}

/// The build arguments: DOCKER_REPO, the image's versions, and REFRESH where the Dockerfile
/// declares it: `$REFRESH` when set, else the value the published image was built with, so
/// that a run without it keeps the package steps cached.
fn build_args(ctx: &Ctx, image: &Image, published: Option<&Published>) -> Result<Vec<(String, String)>> {
    let mut args = ctx.settings.build_arg_values(image);
    if images::dockerfile_sources(ctx, image)?.args.iter().any(|a| a == REFRESH_ARG) {
        let kept = published.and_then(|p| p.inputs.as_ref()).and_then(|i| i.args.get(REFRESH_ARG)).cloned();
        let value = ctx.settings.refresh.clone().or(kept).unwrap_or_default();
        args.push((REFRESH_ARG.to_string(), value));
    }
    Ok(args)
}

/// Why an image is built, for the log and the dry run.
fn why_build(
    force: bool,
    published: Option<&Published>,
    inputs: Option<&Inputs>,
    unknown: Option<&str>,
) -> String {
    if force {
        return "--force".to_string();
    }
    if let Some(unknown) = unknown {
        return unknown.to_string();
    }
    let Some(published) = published else { return "not published yet".to_string() };
    match (&published.inputs, inputs) {
        (Some(old), Some(new)) => new.changes_since(old).join(", "),
        _ => "published without a record of its inputs".to_string(),
    }
}

/// The closing table: each image, its platforms, what became of it, its time and its cached
/// steps out of its steps (a failed image's log tail was shown when it failed).
fn report(rows: &[Row], platforms: &str, elapsed: Duration) {
    let outcome = |row: &Row| match &row.outcome {
        Outcome::UpToDate { .. } => "up to date".to_string(),
        Outcome::Built { .. } => "built".to_string(),
        Outcome::WouldBuild => "would build".to_string(),
        Outcome::Failed { .. } => "failed".to_string(),
        Outcome::Skipped { reason } => format!("skipped: {reason}"),
    };
    let mut table: Vec<[String; 5]> =
        vec![["IMAGE", "PLATFORMS", "OUTCOME", "TIME", "CACHED"].map(String::from)];
    for row in rows {
        let time = match row.outcome {
            Outcome::Skipped { .. } => "-".to_string(),
            _ => format!("{:.1} s", row.elapsed.as_secs_f64()),
        };
        let cached = row.steps.map_or("-".to_string(), |(cached, total)| format!("{cached}/{total}"));
        table.push([row.name.clone(), platforms.to_string(), outcome(row), time, cached]);
    }
    let widths: Vec<usize> =
        (0..5).map(|col| table.iter().map(|r| r[col].len()).max().unwrap_or(0)).collect();
    println!();
    for row in &table {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    println!("{} images in {:.1} s", rows.len(), elapsed.as_secs_f64());
}
