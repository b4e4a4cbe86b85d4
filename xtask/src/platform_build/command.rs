//! The build command of one platform of one image, on the node that builds it: the `docker buildx build`
//! command made from the image's recipe, with its own registry cache, pushed to its own tag.

use anyhow::Result;
use xshell::cmd;

use super::failure::transient_cause;
use super::node::{Engine, Node};
use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::entry::EntryOptions;
use crate::failure::{Failure, NodeLost};
use crate::inputs::Inputs;
use crate::platform::{Platform, Platforms};
use crate::runner::{Cmd, sh};
use crate::settings::{ProvenanceMode, build_arg_flags};

/// The options of every build that change what it produces, part of every image's inputs: the
/// bases pulled anew, each platform's provenance attestation (`PROVENANCE`), and its SBOM
/// attestation from the catalog's vendored generator (`SBOM`), so that BuildKit does not fetch
/// its default generator from Docker Hub.
pub fn output_options(ctx: &Ctx) -> Vec<String> {
    let s = &ctx.settings;
    let mut options = vec!["--pull".to_string()];
    match s.provenance {
        ProvenanceMode::None => options.push("--provenance=false".into()),
        mode => options.extend(["--provenance".to_string(), format!("mode={}", mode.name())]),
    }
    if s.sbom
        && let Some(generator) = &ctx.catalog.sbom_generator
    {
        options.extend(["--attest".to_string(), format!("type=sbom,generator={}", s.vendored(generator))]);
    }
    options
}

/// The build's own options: `output_options` with the builder's id in the provenance
/// (`BUILDER_ID`). The id differs from run to run (a Cloud Build's page), so it is no input of
/// the image: an image built by another run is not rebuilt for it.
pub fn build_options(ctx: &Ctx) -> Vec<String> {
    let mut options = output_options(ctx);
    if let Some(at) = options.iter().position(|option| option == "--provenance") {
        options[at + 1] = format!("{},builder-id={}", options[at + 1], ctx.settings.builder_id);
    }
    options
}

/// What one image's build is made of, decided before it runs.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// `--build-arg` names and values, in order: DOCKER_REPO, the image's versions, REFRESH.
    pub args: Vec<(String, String)>,
    /// Each image the Dockerfile starts from, as it names it, and `<reference>@<digest>` to
    /// build from instead: the exact digest, never what the tag points at when it is read.
    pub pins: Vec<(String, String)>,
    /// Recorded on the published index; unknown where a base's digest is.
    pub inputs: Option<Inputs>,
    /// The platforms it is built for: those of `PLATFORMS` the image asks for.
    pub platforms: Platforms,
    /// What its catalog entry asks beyond that: target, labels, annotations, secrets.
    pub entry: EntryOptions,
    /// Every reference the merge tags, `image_ref` first.
    pub references: Vec<String>,
    /// Its test's words, run on each platform once it is pushed; none: it is not tested.
    pub test: Option<Vec<String>>,
}

/// One platform of an image, on the node that builds it.
pub struct PlatformBuild<'a> {
    pub node: &'a Node,
    pub platform: &'a Platform,
}

/// The build of one platform. An image marked `split_build` is built in three steps inside Cloud
/// Build.
pub fn build_platform(
    ctx: &Ctx,
    image: &Image,
    recipe: &Recipe,
    build: &PlatformBuild,
    tag: &str,
) -> Result<(), Failure> {
    let full = buildx_build_cmd(ctx, image, recipe, build.node, build.platform, tag);
    let there = || answers(ctx, &build.node.engine);
    if !(image.split_build && ctx.settings.in_cloud_build) {
        return ctx.runner.run_retrying_while(&full, transient_cause, there);
    }
    // Cloud Build mints the registry token when the builder starts and it expires after an hour,
    // so a long build fails at its push. Build first without pushing (the results stay in the
    // builder's cache), restart the builder for a fresh token, then build again: all cache hits,
    // quick, and the push gets the new token.
    ctx.runner.say("split build: build without pushing, restart the builder, then build and push");
    let build_only = full.clone().without("--push", false).without("--cache-to", true);
    ctx.runner.run_retrying_while(&build_only, transient_cause, there)?;
    let (sh, on, builder) = (sh(), &build.node.context_flag(), &build.node.builder.name);
    ctx.runner.run(cmd!(sh, "docker {on...} buildx stop {builder}"))?;
    ctx.runner.run_retrying_while(&full, transient_cause, there)
}

/// Whether a VM's engine still answers, asked after a failure: `Kind::NodeLost` when it does
/// not. This engine is the run's own: there is no other to move to, so its failure is the build's.
pub fn answers(ctx: &Ctx, engine: &Engine) -> Result<(), Failure> {
    if engine.vm.is_none() {
        return Ok(());
    }
    let (sh, on, format) = (sh(), &engine.context_flag(), "{{.Server.Version}}");
    ctx.runner.query(cmd!(sh, "docker {on...} version --format {format}"), None).map(drop).map_err(|err| {
        let why = format!("{err:#}").lines().next().unwrap_or_default().trim().to_string();
        Failure::node_lost(NodeLost { node: engine.label().to_string(), why })
    })
}

fn buildx_build_cmd(
    ctx: &Ctx,
    image: &Image,
    recipe: &Recipe,
    node: &Node,
    platform: &Platform,
    tag: &str,
) -> Cmd {
    let s = &ctx.settings;
    let cache = s.cache_ref(image, platform);
    let platform = platform.to_string();
    let (sh, on, builder, dockerfile, context) =
        (sh(), &node.context_flag(), &node.builder.name, image.dockerfile(), image.context());
    let build_args = build_arg_flags(&recipe.args);
    let pins: Vec<String> = recipe
        .pins
        .iter()
        .flat_map(|(named, pinned)| {
            ["--build-context".to_string(), format!("{named}=docker-image://{pinned}")]
        })
        .collect();
    let (cache_from, cache_to) =
        (format!("type=registry,ref={cache}"), format!("type=registry,ref={cache},mode=max"));
    let (options, entry) = (build_options(ctx), recipe.entry.build_flags());
    cmd!(
        sh,
        "docker {on...} buildx build --file {dockerfile} --platform {platform} --builder {builder} --progress plain
            {build_args...} {pins...} {entry...} --cache-from {cache_from} --cache-to {cache_to} {options...} --push --tag {tag} {context}"
    )
    .into()
}
