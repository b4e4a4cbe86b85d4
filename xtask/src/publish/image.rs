//! One image of a run: skipped when a parent failed, else its decision settled and, unless it is
//! up to date, built per platform at once (each on the node the run's nodes give it, with its
//! own registry cache and its own tag `<tag>-<arch>`; moved to another node when its node dies
//! under it), merged into `<tag>`, signed by digest, and told.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::merge::{merge, retag};
use super::nodes::Nodes;
use super::plan::{Decision, ParentState, ParentStates, Plan, Planner};
use super::platform_test::test_platform;
use super::table::{ImageOutcome, Row};
use super::timeline::{BarOutcome, Timeline};
use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::failure::Failure;
use crate::graph::Vertex;
use crate::platform::Platform;
use crate::platform_build::command::{PlatformBuild, Recipe, answers, build_platform};
use crate::platform_build::node::Node;
use crate::platform_build::output::ImageOutput;
use crate::platform_build::setup;
use crate::platform_build::steps::Steps;
use crate::published::Destination;
use crate::registry::manifest::short_digest;
use crate::registry::reference::repository_of;
use crate::settings::Release;
use crate::signing;

/// What publishing one image of a run reads: the run's settings, plan and registry.
pub struct ImagePublisher<'a> {
    pub ctx: &'a Ctx,
    pub planner: Planner<'a>,
    pub plan: &'a Plan,
    pub destination: &'a Destination,
    /// One log per image in this folder.
    pub logs: Option<&'a Path>,
    /// Several images at once: each gets a builder of its own.
    pub several: bool,
    /// The width of the longest `<image>/<arch>` prefix.
    pub width: usize,
    /// Where each platform build's time goes.
    pub timeline: &'a Timeline,
    /// The run's nodes, which give each platform build a slot.
    pub nodes: &'a Nodes<'a>,
}

impl ImagePublisher<'_> {
    /// One image, from the states of its parents in the run.
    pub fn one_image(&self, vertex: &Vertex, parents: ParentStates) -> Row {
        let started = Instant::now();
        let name = vertex.name.as_str();
        let image = self.planner.image(name);
        let log = self.logs.map(|dir| self.ctx.root.join(dir).join(format!("{name}.log")));
        if let Some(log) = &log {
            let _ = std::fs::remove_file(log);
        }
        let steps = Arc::new(Steps::default());
        let failed_parent = parents.values().find_map(|p| match p {
            ParentState::Failed(reason) => Some(reason.clone()),
            _ => None,
        });
        let outcome = match failed_parent {
            Some(reason) => ImageOutcome::Skipped { reason },
            None if crate::interrupt::requested() => ImageOutcome::Failed {
                failure: Failure::interrupted("interrupted before it started (Ctrl-C or SIGTERM)"),
            },
            None => match self.publish(vertex, image, &parents, log.as_deref(), &steps) {
                Ok(outcome) => outcome,
                Err(failure) => ImageOutcome::Failed { failure },
            },
        };
        // What it did not build needs no node: a VM kept up for it alone goes down.
        self.nodes.forget(name);
        self.tell(image, &outcome, started.elapsed(), log.as_deref());
        let built = matches!(outcome, ImageOutcome::Built { .. } | ImageOutcome::Failed { .. });
        Row {
            name: name.to_string(),
            platforms: vertex.platforms.clone(),
            outcome,
            elapsed: started.elapsed(),
            steps: built.then(|| steps.counts()),
        }
    }

    /// The plan's decision, settled; then built unless up to date, and signed.
    fn publish(
        &self,
        vertex: &Vertex,
        image: &Image,
        parents: &ParentStates,
        log: Option<&Path>,
        steps: &Arc<Steps>,
    ) -> Result<ImageOutcome, Failure> {
        let ctx = self.ctx;
        let output = ImageOutput { log, width: self.width, steps: Arc::clone(steps) };
        // The image's commands, and their output behind its prefix: its builds and its signing.
        let image_ctx = output.image_ctx(&self.image_ctx(image), image);
        let build = match self.plan.settle(&self.planner, vertex, parents) {
            Decision::UpToDate(digest) => {
                // Up to date keeps its signature; one that was never signed gets one.
                self.sign(&image_ctx, image, &digest, true)?;
                // With RELEASE=together a missing tag is written with all the others, at the end.
                if ctx.settings.release == Release::Each {
                    self.add_missing_tags(&image_ctx, image, &digest)?;
                }
                return Ok(ImageOutcome::UpToDate { digest });
            }
            Decision::Build(build) => build,
            Decision::Fails(why) => return Err(Failure::permanent(why)),
            Decision::AfterParents => {
                return Err(Failure::permanent(format!("{} was not settled after its parents", image.name)));
            }
        };
        let verb = if ctx.runner.is_dry_run() { "would build" } else { "building" };
        let why = &build.why;
        self.status(
            &format!("{:<11} {}: {why}", verb, image.name),
            &format!("{}: {verb}: {why}", image.name),
        );
        for note in &build.notes {
            ctx.runner.say(&format!("{}: {note}", image.name));
        }
        let builds = Builds {
            ctx: &image_ctx,
            destination: self.destination,
            image,
            recipe: &build.recipe,
            output: &output,
            timeline: self.timeline,
            nodes: self.nodes,
            failed_tests: Mutex::new(Vec::new()),
        };
        builds.build_and_merge()?;
        // Where the merge put it: its tags, or with RELEASE=together its candidate until the end.
        let reference = match ctx.settings.release {
            Release::Each => ctx.settings.image_ref(image),
            Release::Together => ctx.settings.candidate_ref(image),
        };
        if ctx.runner.is_dry_run() {
            if let Some(key) = &ctx.settings.sign_key {
                ctx.runner.say(&format!(
                    "{}: then signed by the digest the merge gives (`cosign sign` of {}@<that digest>, SIGN_KEY {key})",
                    image.name,
                    repository_of(&reference)
                ));
            }
            return Ok(ImageOutcome::WouldBuild);
        }
        self.destination.forget(&reference);
        let digest = self.destination.digest(&reference).ok().flatten();
        if ctx.settings.sign_key.is_some() {
            let Some(digest) = &digest else {
                return Err(Failure::permanent(format!(
                    "{reference} was published, but its digest cannot be read back to sign it"
                )));
            };
            self.sign(&image_ctx, image, digest, false)?;
        }
        Ok(ImageOutcome::Built { digest })
    }

    /// An image up to date under its first tag gets each of its other tags that is missing
    /// (a tag added to the entry, a tag that was deleted), pointing at the same index: one
    /// source and no annotation, so `imagetools create` pushes its bytes unchanged. A tag that
    /// points elsewhere is left where it is.
    pub fn add_missing_tags(&self, image_ctx: &Ctx, image: &Image, digest: &str) -> Result<(), Failure> {
        let references =
            self.ctx.settings.image_refs(image).map_err(|e| Failure::permanent(format!("{e}")))?;
        let source = format!("{}@{digest}", repository_of(&references[0]));
        for reference in &references[1..] {
            match self.destination.digest(reference) {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(err) if self.ctx.runner.is_dry_run() => {
                    image_ctx
                        .runner
                        .say(&format!("{}: then {reference} if it is missing ({err:#})", image.name));
                    continue;
                }
                Err(err) => {
                    return Err(
                        Failure::from(err).context(format!("cannot tell whether {reference} is there"))
                    );
                }
            }
            retag(&image_ctx.runner, reference, &source)?;
        }
        Ok(())
    }

    /// Sign the image published at `digest` as SIGN_KEY says: by digest, never by tag (what the
    /// tag points at may move, the digest does not). `unless_signed`: an image signed already
    /// keeps its signature.
    fn sign(&self, image_ctx: &Ctx, image: &Image, digest: &str, unless_signed: bool) -> Result<()> {
        let Some(key) = &self.ctx.settings.sign_key else { return Ok(()) };
        let reference = self.ctx.settings.image_ref(image);
        let repository = repository_of(&reference);
        if unless_signed {
            let signature = format!("{repository}:{}", signing::signature_tag(digest));
            if self.destination.digest(&signature).ok().flatten().is_some() {
                return Ok(());
            }
        }
        signing::sign(image_ctx, key, &format!("{repository}@{digest}"))
    }

    /// An image's settings: with several images at once, a builder of its own named after its
    /// task (two builds cannot share a builder container's name).
    fn image_ctx(&self, image: &Image) -> Ctx {
        let mut settings = self.ctx.settings.clone();
        if self.several {
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

    fn tell(&self, image: &Image, outcome: &ImageOutcome, elapsed: Duration, log: Option<&Path>) {
        let (name, reference, seconds) =
            (&image.name, self.ctx.settings.image_ref(image), elapsed.as_secs_f64());
        match outcome {
            ImageOutcome::UpToDate { digest } => self.status(
                &format!("up to date  {name} -> {reference} ({})", short_digest(digest)),
                &format!("{name}: up to date: {reference} ({})", short_digest(digest)),
            ),
            ImageOutcome::Built { digest } => {
                let digest = digest.as_deref().map_or(String::new(), |d| format!("{}, ", short_digest(d)));
                match self.ctx.settings.release {
                    Release::Each => println!("published   {name} -> {reference} ({digest}{seconds:.1} s)"),
                    Release::Together => println!(
                        "held        {name} -> {} ({digest}{seconds:.1} s; its tags move once the run has passed)",
                        self.ctx.settings.candidate_ref(image)
                    ),
                }
            }
            ImageOutcome::WouldBuild => {}
            ImageOutcome::Skipped { reason } => self.status(
                &format!("skipped     {name}: {reason}"),
                &format!("{name}: would be skipped: {reason}"),
            ),
            ImageOutcome::Failed { failure } => {
                if self.ctx.runner.is_dry_run() {
                    self.ctx.runner.say(&format!("{name}: cannot be planned: {failure}"));
                    return;
                }
                let log_note = log.map_or(String::new(), |l| format!(", log: {}", l.display()));
                println!("FAILED      {name}: {failure} ({seconds:.1} s{log_note})");
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

/// One image's platform builds and their merge.
struct Builds<'a> {
    ctx: &'a Ctx,
    /// Where a platform's test reads the digest it was pushed at.
    destination: &'a Destination,
    /// The platforms whose test failed (their build did not).
    failed_tests: Mutex<Vec<Platform>>,
    image: &'a Image,
    recipe: &'a Recipe,
    output: &'a ImageOutput<'a>,
    timeline: &'a Timeline,
    nodes: &'a Nodes<'a>,
}

impl Builds<'_> {
    /// One build per platform of the image (those of `$PLATFORMS` it asks for), all at once, each on the node it is given, with
    /// its own registry cache and pushing its own tag `<tag>-<arch>`; when every one succeeded,
    /// the merge into `<tag>`. (One registry cache for a build of several platforms on several
    /// nodes keeps only the platform that finished last: docker/buildx#1044.)
    fn build_and_merge(&self) -> Result<(), Failure> {
        let (ctx, image) = (self.ctx, self.image);
        let reference = ctx.settings.image_ref(image);
        let platforms: Vec<Platform> = self.recipe.platforms.iter().cloned().collect();
        // Each node's builder is set up once for the image (its engine asked once in the run),
        // by whichever of its builds comes to it first.
        let set_up: Mutex<Vec<Node>> = Mutex::new(Vec::new());
        // The merge runs on the node of the first platform: that node stays up for it.
        let merging = &platforms[0];
        let results =
            ctx.runner.at_once(&platforms, |platform| self.build_one(platform, platform == merging, &set_up));
        let mut built = Vec::new();
        for (platform, result) in platforms.iter().zip(results) {
            match result {
                Ok(done) => built.push(done),
                Err(first) => {
                    // A failed test: the platform was pushed to its working tag, and nothing of
                    // the image was tagged.
                    let tested = self.failed_tests.lock().expect("not poisoned").contains(platform);
                    let (what, undone) = if tested { ("test", "tagged") } else { ("build", "pushed") };
                    return Err(first.context(format!(
                        "the {platform} {what} of {} failed, so {reference} was not {undone}",
                        image.name
                    )));
                }
            }
        }
        let tags: Vec<String> = platforms.iter().map(|platform| self.tag(platform)).collect();
        let seconds: BTreeMap<String, f64> = if ctx.runner.is_dry_run() {
            BTreeMap::new()
        } else {
            platforms
                .iter()
                .zip(&built)
                .map(|(p, (_, time))| (p.to_string(), (time.as_secs_f64() * 10.0).round() / 10.0))
                .collect()
        };
        let (merging_node, _) = &built[0];
        let entry = self.recipe.entry.merge_flags();
        // RELEASE=together: under the candidate's name only; the tags move at the run's end.
        let references = match ctx.settings.release {
            Release::Each => self.recipe.references.clone(),
            Release::Together => vec![ctx.settings.candidate_ref(image)],
        };
        merge(ctx, merging_node, &references, &tags, self.recipe.inputs.as_ref(), &seconds, &entry)
    }

    fn tag(&self, platform: &Platform) -> String {
        format!("{}-{}", self.ctx.settings.image_ref(self.image), platform.suffix())
    }

    /// One platform's build on the node it is given, until it succeeds or fails of itself: when
    /// its node dies under it, the node is out and the build is placed again. `merges_there`:
    /// the image's merge runs on the node this build ends on.
    fn build_one(
        &self,
        platform: &Platform,
        merges_there: bool,
        set_up: &Mutex<Vec<Node>>,
    ) -> Result<(Node, Duration), Failure> {
        let (ctx, image) = (self.ctx, self.image);
        let prefix = format!("{}/{}", image.name, platform.suffix());
        let watch = self.output.steps.watcher(platform);
        let build_ctx =
            ctx.derive(ctx.settings.clone(), ctx.runner.with_lines(self.output.lines(&prefix, Some(watch))));
        let mut moved_from: Option<(String, String)> = None;
        loop {
            let mut slot = self.nodes.acquire(&image.name, platform)?;
            slot.placement.moved_from = moved_from.clone();
            if let Some((from, why)) = &moved_from {
                let line = format!("moved       {prefix}: {from} -> {} ({why})", slot.placement.node);
                if ctx.runner.is_dry_run() { ctx.runner.say(&line) } else { println!("{line}") }
            }
            let started = Instant::now();
            // Where it failed: before its build command (the node's builder), or in it.
            let mut building = false;
            let result: Result<Node, Failure> = (|| {
                let node = {
                    let mut done = set_up.lock().expect("not poisoned");
                    match done.iter().find(|node| node.engine == slot.engine) {
                        Some(node) => node.clone(),
                        None => {
                            let node = self.nodes.node_of(&slot, ctx)?;
                            setup::set_up_node(&build_ctx, &node)?;
                            done.push(node.clone());
                            node
                        }
                    }
                };
                build_ctx.runner.say(&format!("{platform} on {}:", node.place()));
                building = true;
                build_platform(
                    &build_ctx,
                    image,
                    self.recipe,
                    &PlatformBuild { node: &node, platform },
                    &self.tag(platform),
                )?;
                Ok(node)
            })();
            let lost = match &result {
                Ok(_) => None,
                Err(failure) => match failure.lost_node() {
                    Some(lost) => Some(lost.clone()),
                    // A node whose builder could not be asked for or set up may be gone too.
                    None if !building && !ctx.runner.is_dry_run() => {
                        answers(ctx, &slot.engine).err().and_then(|failure| failure.lost_node().cloned())
                    }
                    None => None,
                },
            };
            let outcome = match (&result, &lost, self.output.steps.counts_of(platform)) {
                (_, Some(_), _) => BarOutcome::Moved,
                (Err(_), None, _) => BarOutcome::Failed,
                (Ok(_), None, (cached, total)) if total > 0 && cached == total => BarOutcome::Cached,
                (Ok(_), None, _) => BarOutcome::Built,
            };
            self.timeline.record(
                &image.name,
                &platform.to_string(),
                slot.placement.clone(),
                started,
                outcome,
            );
            if let Some(lost) = lost {
                self.nodes.lost(slot, &lost);
                moved_from = Some((lost.node, lost.why));
                continue;
            }
            // Its test, on the node that built it, in the slot the build had: nothing of the
            // image is tagged before every platform has passed (the merge waits for them all).
            let result = match (result, &self.recipe.test) {
                (Ok(node), Some(words)) => {
                    let test_started = Instant::now();
                    let destination = (!ctx.runner.is_dry_run()).then_some(self.destination);
                    let pushed = self.tag(platform);
                    let tested =
                        test_platform(&build_ctx, destination, words, image, platform, &node, &pushed);
                    let outcome = if tested.is_ok() { BarOutcome::Tested } else { BarOutcome::TestFailed };
                    if tested.is_err() {
                        self.failed_tests.lock().expect("not poisoned").push(platform.clone());
                    }
                    let (name, placement) = (&image.name, slot.placement.clone());
                    self.timeline.record(name, &platform.to_string(), placement, test_started, outcome);
                    tested.map(|()| node)
                }
                (result, _) => result,
            };
            self.nodes.release(slot, merges_there);
            return result.map(|node| (node, started.elapsed()));
        }
    }
}
