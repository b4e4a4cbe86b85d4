//! The plan of a run, made once before anything builds and read by everything that needs it:
//! the VM's start, the builds and the dry run. For each image it holds what is published, its
//! files hashed, and the decision: up to date, built (and why), or settled once the parents this
//! run builds are published (their new digests are its pins and inputs). What its Dockerfile
//! names and declares comes from the graph, which read it once.

use std::collections::BTreeMap;

use anyhow::{Result, anyhow, bail};

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::dockerfile::Place;
use crate::entry::EntryOptions;
use crate::failure::Failure;
use crate::graph::{Base, Graph, Vertex};
use crate::inputs::{Files, Given, Inputs};
use crate::platform_build::command::{Recipe, output_options};
use crate::published::{Published, RegistryView};
use crate::registry::reference::{self, Written};
use crate::secrets::Secrets;

/// The `REFRESH` build argument: a Dockerfile that declares it has its package steps run again
/// whenever its value changes.
const REFRESH_ARG: &str = "REFRESH";

/// What a parent of an image is, as its child is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentState {
    /// Published at this digest: up to date, or just built.
    Published(String),
    /// This run builds it and has not yet (a dry run never does): its digest is not known.
    ToBeBuilt,
    /// Built and pushed, but the digest it got cannot be read back.
    DigestUnreadable,
    /// Failed, or skipped: its children are skipped, for this reason.
    Failed(String),
}

impl ParentState {
    /// A parent that failed: its children are skipped.
    pub fn failed(name: &str) -> ParentState {
        ParentState::Failed(format!("{name} failed"))
    }
}

/// The parents of an image that this run builds (or found up to date), by name. A parent
/// outside the run is not here: it must be published already.
pub type ParentStates = BTreeMap<String, ParentState>;

/// What the inputs and what is published say of an image.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Published with these inputs, at this digest.
    UpToDate(String),
    /// To be built as the recipe says.
    Build(Box<Build>),
    /// A parent is built by this run first: decided when it is published.
    AfterParents,
    /// Cannot be decided, and so not built: why.
    Fails(String),
}

/// An image to build: its recipe, why it is built, and (for a dry run's plan) what a parent's
/// build will decide.
#[derive(Debug, Clone)]
pub struct Build {
    pub recipe: Recipe,
    pub why: String,
    pub notes: Vec<String>,
}

/// What is read of one image before anything builds, once.
struct Known {
    /// What is published at its reference; `Err`: why that cannot be told.
    published: Result<Option<Published>, Failure>,
    /// Its files, hashed once; `Err`: why they cannot be read.
    files: Result<Files, Failure>,
}

/// One image of the plan: what was read of it, and the decision.
struct Planned {
    known: Known,
    decision: Decision,
}

/// The run's plan: every selected image's decision, in the graph's order.
pub struct Plan {
    images: BTreeMap<String, Planned>,
    order: Vec<String>,
}

/// What the decisions read: the settings, the catalog and the registry.
pub struct Planner<'a> {
    pub ctx: &'a Ctx,
    pub registry: &'a dyn RegistryView,
    /// The secrets of the run's images, found before anything is planned.
    pub secrets: &'a Secrets,
    /// Build even what is up to date.
    pub force: bool,
}

impl Plan {
    /// The decision of each selected image of `graph`. A selected parent that builds leaves its
    /// children to be settled once it is published; a dry run decides them now, with the
    /// parent's digest unknown.
    pub fn make(planner: &Planner, graph: &Graph, selected: &[&str]) -> Plan {
        let dry_run = planner.ctx.runner.is_dry_run();
        let mut plan = Plan { images: BTreeMap::new(), order: Vec::new() };
        for vertex in graph.vertices.iter().filter(|v| selected.contains(&v.name.as_str())) {
            let parents: ParentStates = vertex
                .parents
                .iter()
                .filter_map(|p| Some((p.name.clone(), plan.state_of(&p.name)?)))
                .collect();
            let image = planner.image(&vertex.name);
            let reference = planner.ctx.settings.image_ref(image);
            let published = planner
                .registry
                .published(&reference)
                .map_err(|err| Failure::from(err).context("cannot tell whether it is up to date"));
            let files = Files::hash(
                &planner.ctx.root.join(image.context()),
                &planner.ctx.root.join(image.dockerfile()),
            )
            .map_err(Failure::from);
            let known = Known { published, files };
            let waits = parents.values().any(|p| *p == ParentState::ToBeBuilt);
            let decision = if waits && !dry_run {
                Decision::AfterParents
            } else {
                planner.decide(vertex, image, &parents, &known)
            };
            plan.order.push(vertex.name.clone());
            plan.images.insert(vertex.name.clone(), Planned { known, decision });
        }
        plan
    }

    /// The state a child sees of `name` before the run: none when it is not in the plan.
    fn state_of(&self, name: &str) -> Option<ParentState> {
        Some(match &self.images.get(name)?.decision {
            Decision::UpToDate(digest) => ParentState::Published(digest.clone()),
            Decision::Build(_) | Decision::AfterParents => ParentState::ToBeBuilt,
            Decision::Fails(_) => ParentState::failed(name),
        })
    }

    /// The images planned, in the graph's order.
    #[cfg(test)]
    pub fn images(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// The decision made for `name` before the run.
    #[cfg(test)]
    pub fn decision(&self, name: &str) -> Option<&Decision> {
        self.images.get(name).map(|planned| &planned.decision)
    }

    /// Whether `name` may build: not up to date, and not failing before it builds.
    pub fn may_build(&self, name: &str) -> bool {
        self.images
            .get(name)
            .is_some_and(|planned| !matches!(planned.decision, Decision::UpToDate(_) | Decision::Fails(_)))
    }

    /// How long the last build of `name` for `platform` took, as recorded on what is published.
    pub fn last_build_seconds(&self, name: &str, platform: &crate::platform::Platform) -> Option<f64> {
        let published = self.images.get(name)?.known.published.as_ref().ok()?.as_ref()?;
        published.build_seconds.get(&platform.to_string()).copied()
    }

    /// An image's decision for the run: the plan's, or, for one that waited for its parents,
    /// made now from their states (its files and what is published were read when planning).
    pub fn settle(&self, planner: &Planner, vertex: &Vertex, parents: &ParentStates) -> Decision {
        let Some(planned) = self.images.get(&vertex.name) else {
            return Decision::Fails(format!("{} is not in the plan", vertex.name));
        };
        match &planned.decision {
            Decision::AfterParents => {
                let image = planner.image(&vertex.name);
                planner.decide(vertex, image, parents, &planned.known)
            }
            decided => decided.clone(),
        }
    }
}

/// What an image's build starts from: a digest for each image it names, or why one is unknown.
struct Bases {
    digests: BTreeMap<String, String>,
    pins: Vec<(String, String)>,
    /// The vendored frontend of a `# syntax=` directive, for `BUILDKIT_SYNTAX`.
    frontend: Option<String>,
    /// Why some digests are unknown (then nothing can be up to date).
    unknown: Vec<String>,
    /// For a dry run's plan: the pins a parent's build will decide.
    notes: Vec<String>,
}

impl Planner<'_> {
    pub fn image(&self, name: &str) -> &Image {
        let images = &self.ctx.catalog.images;
        images.iter().find(|image| image.name == name).expect("the graph's images are the catalog's")
    }

    /// Whether the image is up to date, else what its build is made of and why it is built;
    /// what cannot be decided fails the image.
    fn decide(&self, vertex: &Vertex, image: &Image, parents: &ParentStates, known: &Known) -> Decision {
        self.try_decide(vertex, image, parents, known)
            .unwrap_or_else(|err| Decision::Fails(format!("{err:#}")))
    }

    fn try_decide(
        &self,
        vertex: &Vertex,
        image: &Image,
        parents: &ParentStates,
        known: &Known,
    ) -> Result<Decision> {
        let (published, unreadable) = match &known.published {
            Ok(published) => (published.as_ref(), None),
            Err(why) => (None, Some(why.to_string())),
        };
        let bases = self.bases(vertex, parents)?;
        let entry = EntryOptions::of(self.ctx, image, self.secrets)?;
        let references = self.ctx.settings.image_refs(image).map_err(|e| anyhow!("its tags: {e}"))?;
        let mut args = self.build_args(image, published, &vertex.args);
        args.extend(entry.args.iter().cloned());
        if let Some(frontend) = &bases.frontend {
            args.push(("BUILDKIT_SYNTAX".to_string(), frontend.clone()));
        }
        let mut options = output_options(self.ctx);
        options.extend(entry.input_options());
        // A new test makes the image untested: it is built (from the cache) and tested again.
        let test = image.test(self.ctx.catalog.test.as_deref());
        if let Some(words) = &test {
            options.push(format!("--test={}", words.join(" ")));
        }
        // The files count only where every base's digest is known: else nothing is up to date.
        let inputs = match bases.unknown.is_empty() {
            false => None,
            true => Some(Inputs::of(
                known.files.as_ref().map_err(Failure::clone)?,
                Given {
                    // What changes from run to run is not an input (see `entry`).
                    args: args.iter().filter(|(name, _)| !entry.is_volatile_arg(name)).cloned().collect(),
                    platforms: vertex.platforms.clone(),
                    bases: bases.digests.clone(),
                    options,
                },
            )),
        };
        if let (Some(published), Some(inputs)) = (published, &inputs)
            && published.inputs_digest.as_deref() == Some(inputs.digest().as_str())
            && !self.force
        {
            return Ok(Decision::UpToDate(published.digest.clone()));
        }
        let unknown = unreadable.or_else(|| (!bases.unknown.is_empty()).then(|| bases.unknown.join(", ")));
        let why = why_build(self.force, published, inputs.as_ref(), unknown.as_deref());
        Ok(Decision::Build(Box::new(Build {
            recipe: Recipe {
                args,
                pins: bases.pins,
                inputs,
                platforms: vertex.platforms.clone(),
                entry,
                references,
                test,
            },
            why,
            notes: bases.notes,
        })))
    }

    /// Each image the Dockerfile names, pinned to a digest: a vendored base as vendored now, a
    /// parent as it was just published (or, outside the run, as published before).
    fn bases(&self, vertex: &Vertex, parents: &ParentStates) -> Result<Bases> {
        let ctx = self.ctx;
        let dry_run = ctx.runner.is_dry_run();
        let mut bases = Bases {
            digests: BTreeMap::new(),
            pins: Vec::new(),
            frontend: None,
            unknown: Vec::new(),
            notes: Vec::new(),
        };
        let mut named: Vec<(String, String, Option<String>)> = Vec::new();
        for base in &vertex.bases {
            let digest = self.base_digest(base, &mut bases.unknown)?;
            if base.place == Place::Syntax {
                // BuildKit fetches the frontend `# syntax=` names unless BUILDKIT_SYNTAX names
                // another: its vendored copy, by digest.
                let vendored = Written::split(&base.vendored).name;
                let frontend = match &digest {
                    Some(digest) => format!("{vendored}@{digest}"),
                    None => base.vendored.clone(),
                };
                bases.frontend = Some(frontend);
                if let Some(digest) = &digest {
                    bases.digests.insert(base.written.clone(), digest.clone());
                }
                continue;
            }
            named.push((base.written.clone(), base.vendored.clone(), digest));
        }
        for parent in &vertex.parents {
            let image = self.image(&parent.name);
            let published = ctx.settings.image_ref(image);
            let digest = match parents.get(&parent.name) {
                Some(ParentState::Published(digest)) => Some(digest.clone()),
                Some(ParentState::ToBeBuilt) => {
                    bases.unknown.push(format!("{} would be rebuilt", parent.name));
                    bases.notes.push(format!(
                        "then built from the digest {} gets: --build-context {}=docker-image://{published}@<that digest>",
                        parent.name,
                        context_name(&parent.written)
                    ));
                    None
                }
                Some(ParentState::DigestUnreadable) => {
                    bases.unknown.push(format!("the digest {} was published at cannot be read", parent.name));
                    None
                }
                Some(ParentState::Failed(reason)) => return Err(anyhow!("{reason}")),
                None => {
                    // Outside the run: a dry run names it whether the registry answers or not.
                    if dry_run {
                        bases.notes.push(format!(
                            "builds on {}, which must be published first ({published}): {}",
                            parent.name,
                            self.publish_hint(&parent.name)
                        ));
                    }
                    self.published_parent(&parent.name, &published, &mut bases.unknown)?
                }
            };
            named.push((parent.written.clone(), published, digest));
        }
        for (written, reference, digest) in named {
            if let Some(digest) = digest {
                // Under the name BuildKit looks it up by; once, however many times it is named.
                let name = context_name(&written);
                if !bases.pins.iter().any(|(pinned, _)| *pinned == name) {
                    bases.pins.push((name, format!("{reference}@{digest}")));
                }
                bases.digests.insert(written, digest);
            }
        }
        Ok(bases)
    }

    /// The digest a base is built from: its pin (the Dockerfile's or the list's), which its
    /// vendored copy must have, else the vendored copy's. A pin is known without the registry,
    /// so a dry run shows it.
    fn base_digest(&self, base: &Base, unknown: &mut Vec<String>) -> Result<Option<String>> {
        let dry_run = self.ctx.runner.is_dry_run();
        let vendored = &base.vendored;
        match (self.registry.digest(vendored), &base.pin) {
            (Ok(Some(digest)), Some(pin)) if digest != *pin => bail!(
                "{} is pinned to {pin}, but its vendored copy {vendored} is {digest}: have the vendoring \
                 list pin the tag (`<image>: <tag>@{pin}`) and run `cargo xtask thirdparty`, which vendors that digest",
                base.written
            ),
            (Ok(Some(digest)), _) => Ok(Some(digest)),
            (Ok(None), Some(pin)) if dry_run => Ok(Some(pin.clone())),
            (Ok(None), None) if dry_run => {
                unknown.push(format!("{vendored} is not vendored yet"));
                Ok(None)
            }
            (Ok(None), _) => bail!("{vendored} is not vendored: run `cargo xtask thirdparty` first"),
            (Err(_), Some(pin)) => Ok(Some(pin.clone())),
            (Err(err), None) => {
                unknown.push(format!("cannot read {vendored} ({err:#})"));
                Ok(None)
            }
        }
    }

    /// How a catalog image gets published.
    fn publish_hint(&self, name: &str) -> String {
        let catalog = &self.ctx.catalog;
        let task = catalog.task_images().find(|(_, i)| i.name == name).map_or(name, |(task, _)| task);
        format!("`cargo xtask buildx-publish-{task}` builds it (or `cargo xtask publish-all`, all in order)")
    }

    /// A parent outside this run: it must be published already.
    fn published_parent(
        &self,
        name: &str,
        reference: &str,
        unknown: &mut Vec<String>,
    ) -> Result<Option<String>> {
        let ctx = self.ctx;
        let hint = self.publish_hint(name);
        match self.registry.digest(reference) {
            Ok(Some(digest)) => Ok(Some(digest)),
            // A dry run's note names it, with how to publish it (see `bases`).
            Ok(None) if ctx.runner.is_dry_run() => {
                unknown.push(format!("{name} is not published yet"));
                Ok(None)
            }
            Ok(None) => bail!("it builds on {name}, which is not published yet ({reference}): {hint}"),
            Err(err) => {
                unknown.push(format!("cannot read {reference} ({err:#})"));
                Ok(None)
            }
        }
    }

    /// The build arguments: DOCKER_REPO where the Dockerfile declares it (one written as its
    /// upstream writes it has no use for it), the image's versions, and REFRESH where the
    /// Dockerfile declares it: `$REFRESH` when set, else the value the published image was built
    /// with, so that a run without it keeps the package steps cached.
    fn build_args(
        &self,
        image: &Image,
        published: Option<&Published>,
        declared: &[String],
    ) -> Vec<(String, String)> {
        let ctx = self.ctx;
        let declares = |name: &str| declared.iter().any(|arg| arg == name);
        let mut args = ctx.settings.build_arg_values(image);
        args.retain(|(name, _)| name != "DOCKER_REPO" || declares(name));
        if declares(REFRESH_ARG) {
            let kept =
                published.and_then(|p| p.inputs.as_ref()).and_then(|i| i.args.get(REFRESH_ARG)).cloned();
            let value = ctx.settings.refresh.clone().or(kept).unwrap_or_default();
            args.push((REFRESH_ARG.to_string(), value));
        }
        args
    }
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

/// The build context name BuildKit reads `written` under: a name the graph has parsed already.
fn context_name(written: &str) -> String {
    reference::context_name(written).unwrap_or_else(|_| written.to_string())
}

#[cfg(test)]
mod tests {
    //! The plan's decisions against an in-memory registry: no server, no engine.

    use std::collections::BTreeMap;
    use std::path::Path;

    use anyhow::{Result, bail};
    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::catalog::Catalog;
    use crate::catalog_graph;
    use crate::runner::Runner;
    use crate::settings::{Settings, SettingsArgs};

    const REPO: &str = "r.test/dev";

    /// What the registry holds: digests by reference, and the images published with their
    /// inputs; `unreadable`: every read fails, as when no registry answers.
    #[derive(Default)]
    struct Memory {
        digests: BTreeMap<String, String>,
        published: BTreeMap<String, Published>,
        unreadable: bool,
    }

    impl RegistryView for Memory {
        fn digest(&self, reference: &str) -> Result<Option<String>> {
            if self.unreadable {
                bail!("cannot reach registry r.test");
            }
            Ok(self.digests.get(reference).cloned())
        }

        fn published(&self, reference: &str) -> Result<Option<Published>> {
            if self.unreadable {
                bail!("cannot reach registry r.test");
            }
            Ok(self.published.get(reference).cloned())
        }
    }

    impl Memory {
        fn vendored() -> Memory {
            let mut memory = Memory::default();
            memory.digests.insert(format!("{REPO}/thirdparty/alpine:3"), "sha256:a1".into());
            memory
        }

        /// `name` published with the inputs its build decision would record.
        fn publish(&mut self, name: &str, digest: &str, decision: &Decision) {
            let Decision::Build(build) = decision else { panic!("{name} does not build: {decision:?}") };
            let inputs = build.recipe.inputs.clone().expect("known inputs");
            let reference = format!("{REPO}/{name}:1");
            self.digests.insert(reference.clone(), digest.to_string());
            self.published.insert(
                reference,
                Published {
                    digest: digest.to_string(),
                    inputs_digest: Some(inputs.digest()),
                    inputs: Some(inputs),
                    platforms: Vec::new(),
                    build_seconds: BTreeMap::from([("linux/arm64".to_string(), 42.0)]),
                },
            );
        }
    }

    /// A catalog of three: `app` builds on `base`, `tool` stands alone; both bases vendored.
    fn catalog() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "cat/images.toml",
            r#"thirdparty = "thirdparty.txt"
pipeline = "pipeline.yaml"
buildkit = "moby/buildkit:v1"
[versions]
V = "1"
[[image]]
name = "base"
description = "the base"
tag = "{V}"
[[image]]
name = "app"
description = "built on base"
tag = "{V}"
[[image]]
name = "tool"
description = "alone"
tag = "{V}"
[cloud_builder]
name = "cloud-builder"
description = "not built here"
tag = "{V}"
"#,
        );
        write(
            "cat/base/Dockerfile",
            "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/thirdparty/alpine:3\nCOPY a.txt /\n",
        );
        write("cat/base/a.txt", "one\n");
        write("cat/thirdparty.txt", "docker.io/alpine: 3\n");
        write("cat/app/Dockerfile", "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/base:1\nRUN true\n");
        write("cat/tool/Dockerfile", "ARG DOCKER_REPO\nFROM ${DOCKER_REPO}/thirdparty/alpine:3\n");
        root
    }

    fn ctx(root: &Path, dry_run: bool) -> Ctx {
        let catalog = Catalog::load_from(root, Path::new("cat/images.toml")).unwrap();
        let command = SettingsArgs::augment_args(clap::Command::new("t"));
        let matches = command.get_matches_from(["t", "--docker-repo", REPO, "--sbom", "0"]);
        let args = SettingsArgs::from_arg_matches(&matches).unwrap();
        let settings = Settings::resolve_with(args, &catalog, |_| None);
        assert!(settings.problems.is_empty(), "{:?}", settings.problems);
        Ctx { settings, catalog, runner: Runner::new(dry_run, root.to_path_buf()), root: root.to_path_buf() }
    }

    fn plan_of(ctx: &Ctx, registry: &Memory, selected: &[&str]) -> (Plan, Graph) {
        let graph = catalog_graph::of_catalog(ctx).unwrap();
        let planner = Planner { ctx, registry, secrets: &Secrets::none(), force: false };
        (Plan::make(&planner, &graph, selected), graph)
    }

    fn why(decision: Option<&Decision>) -> String {
        match decision {
            Some(Decision::Build(build)) => build.why.clone(),
            other => panic!("not a build: {other:?}"),
        }
    }

    #[test]
    fn an_image_is_up_to_date_when_its_inputs_match_what_is_published() {
        let root = catalog();
        let ctx = ctx(root.path(), false);
        let mut registry = Memory::vendored();
        let (plan, _) = plan_of(&ctx, &registry, &["base", "app", "tool"]);
        assert_eq!(why(plan.decision("base")), "not published yet");
        assert_eq!(why(plan.decision("tool")), "not published yet");
        // The child of an image this run builds waits for its digest.
        assert!(matches!(plan.decision("app"), Some(Decision::AfterParents)));
        assert!(plan.may_build("app") && plan.may_build("base"));

        registry.publish("base", "sha256:b1", plan.decision("base").unwrap());
        registry.publish("tool", "sha256:t1", plan.decision("tool").unwrap());
        let (plan, _) = plan_of(&ctx, &registry, &["base", "tool"]);
        assert!(matches!(plan.decision("base"), Some(Decision::UpToDate(d)) if d == "sha256:b1"));
        assert!(matches!(plan.decision("tool"), Some(Decision::UpToDate(d)) if d == "sha256:t1"));
        assert!(!plan.may_build("base") && !plan.may_build("tool"));
        assert_eq!(plan.images().collect::<Vec<_>>(), ["base", "tool"]);
        // The time its last build took is read from what is published: the critical path's weight.
        let arm = crate::platform::Platform::new("linux", "arm64");
        assert_eq!(plan.last_build_seconds("base", &arm), Some(42.0));
        assert_eq!(plan.last_build_seconds("base", &crate::platform::Platform::new("linux", "amd64")), None);

        // A changed file of the context is why it builds again; only that image.
        std::fs::write(root.path().join("cat/base/a.txt"), "two\n").unwrap();
        let (plan, _) = plan_of(&ctx, &registry, &["base", "tool"]);
        assert_eq!(why(plan.decision("base")), "a.txt changed");
        assert!(matches!(plan.decision("tool"), Some(Decision::UpToDate(_))));
    }

    #[test]
    fn a_child_is_settled_from_the_digest_its_parent_was_published_at() {
        let root = catalog();
        let ctx = ctx(root.path(), false);
        let registry = Memory::vendored();
        let (plan, graph) = plan_of(&ctx, &registry, &["base", "app"]);
        let planner = Planner { ctx: &ctx, registry: &registry, secrets: &Secrets::none(), force: false };
        let app = graph.vertex("app").unwrap();
        let published = BTreeMap::from([("base".to_string(), ParentState::Published("sha256:new".into()))]);
        let Decision::Build(build) = plan.settle(&planner, app, &published) else { panic!("app builds") };
        assert_eq!(build.recipe.pins, [(format!("{REPO}/base:1"), format!("{REPO}/base:1@sha256:new"))]);
        let inputs = build.recipe.inputs.expect("every base's digest is known");
        assert_eq!(inputs.bases[&format!("{REPO}/base:1")], "sha256:new");
        let failed = BTreeMap::from([("base".to_string(), ParentState::Failed("base failed".into()))]);
        assert!(matches!(plan.settle(&planner, app, &failed), Decision::Fails(why) if why == "base failed"));
        let unreadable = BTreeMap::from([("base".to_string(), ParentState::DigestUnreadable)]);
        let why = match plan.settle(&planner, app, &unreadable) {
            Decision::Build(build) => build.why,
            other => panic!("{other:?}"),
        };
        assert_eq!(why, "the digest base was published at cannot be read");
    }

    #[test]
    fn a_dry_run_decides_children_now_and_names_the_parents_they_need() {
        let root = catalog();
        let ctx = ctx(root.path(), true);
        let registry = Memory::vendored();
        let (plan, _) = plan_of(&ctx, &registry, &["base", "app"]);
        let Some(Decision::Build(app)) = plan.decision("app") else { panic!("app would build") };
        assert_eq!(app.why, "base would be rebuilt");
        assert!(app.notes[0].starts_with("then built from the digest base gets"), "{:?}", app.notes);

        // Alone, app names base as a parent to publish first, whether the registry can be
        // read or not.
        for unreadable in [false, true] {
            let registry = Memory { unreadable, ..Memory::vendored() };
            let (plan, _) = plan_of(&ctx, &registry, &["app"]);
            let Some(Decision::Build(app)) = plan.decision("app") else { panic!("app would build") };
            let note = format!("builds on base, which must be published first ({REPO}/base:1)");
            assert!(
                app.notes.iter().any(|n| n.starts_with(&note)),
                "unreadable {unreadable}: {:?}",
                app.notes
            );
            assert!(
                app.notes.iter().any(|n| n.contains("cargo xtask buildx-publish-base")),
                "{:?}",
                app.notes
            );
        }
    }

    #[test]
    fn a_real_run_refuses_what_is_not_vendored_or_not_published() {
        let root = catalog();
        let ctx = ctx(root.path(), false);
        let (plan, _) = plan_of(&ctx, &Memory::default(), &["tool"]);
        let Some(Decision::Fails(why)) = plan.decision("tool") else { panic!("{:?}", plan.decision("tool")) };
        assert!(why.contains("is not vendored: run `cargo xtask thirdparty` first"), "{why}");
        let (plan, _) = plan_of(&ctx, &Memory::vendored(), &["app"]);
        let Some(Decision::Fails(why)) = plan.decision("app") else { panic!("{:?}", plan.decision("app")) };
        assert!(why.starts_with("it builds on base, which is not published yet"), "{why}");
    }
}
