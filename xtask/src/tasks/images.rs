//! build-<image>, buildx-publish-<image>, pull-<image>, clean: the catalog's images.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::cmd;

use super::buildx::{self, Node};
use super::{Ctx, local_registry, publish_all};
use crate::catalog::Image;
use crate::dockerfile;
use crate::graph::{Graph, Named};
use crate::inputs::{DIGEST_ANNOTATION, Inputs, RECORD_ANNOTATION};
use crate::runner::{Cmd, Lines, Watch, sh};
use crate::settings::platform_suffix;

/// build-<image>: a single-platform build on this machine's docker, not pushed.
pub fn build(ctx: &Ctx, image: &Image) -> Result<()> {
    let s = &ctx.settings;
    let (sh, dockerfile, build_args, tag, context) =
        (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
    ctx.runner.run(cmd!(sh, "docker build --file {dockerfile} {build_args...} --pull --tag {tag} {context}"))
}

/// buildx-publish-<image>: that image alone, unless it is up to date (`--force` builds it
/// anyway). The catalog images it builds on must be published already.
pub fn buildx_publish(ctx: &Ctx, image: &Image, args: &BuildArgs) -> Result<()> {
    local_registry::with_local_registry(ctx, || {
        let graph = catalog_graph(ctx)?;
        publish_all::publish_images(ctx, &graph, &[image.name.as_str()], &args.options(None))
    })
}

/// How images are built, for every task that publishes them.
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build even the images whose inputs match what is published
    #[arg(long)]
    pub force: bool,
    /// With MULTI_CONTEXT=1: how many times to check that the arm64 VM (AUTO_START_STOP=1) and
    /// its tunnel are up before giving up
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub vm_tries: u32,
    /// Seconds between two of those checks
    #[arg(long, default_value_t = 5.0)]
    pub vm_interval: f64,
}

impl Default for BuildArgs {
    fn default() -> Self {
        BuildArgs { force: false, vm_tries: 30, vm_interval: 5.0 }
    }
}

impl BuildArgs {
    pub fn options(&self, logs: Option<PathBuf>) -> publish_all::PublishOptions {
        let vm_wait = super::vm::WaitArgs::waiting(self.vm_tries, self.vm_interval);
        publish_all::PublishOptions { force: self.force, logs, vm_wait, vendoring: None }
    }
}

/// The options of every build that change what it produces, part of every image's inputs: the
/// bases pulled anew, each platform's provenance attestation (`PROVENANCE`), and its SBOM
/// attestation from the catalog's vendored generator (`SBOM`), so that BuildKit does not fetch
/// its default generator from Docker Hub.
pub fn output_options(ctx: &Ctx) -> Vec<String> {
    let s = &ctx.settings;
    let mut options = vec!["--pull".to_string()];
    match s.provenance.as_str() {
        "false" => options.push("--provenance=false".into()),
        mode => options.extend(["--provenance".to_string(), format!("mode={mode}")]),
    }
    if s.sbom
        && let Some(generator) = &ctx.catalog.sbom_generator
    {
        options.extend(["--attest".to_string(), format!("type=sbom,generator={}", s.vendored(generator))]);
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
}

/// Where one image's output goes: every line behind `<image>/<arch> |` (padded to `width`)
/// on stderr, and into `log` when given.
pub struct ImageOutput<'a> {
    pub log: Option<&'a Path>,
    pub width: usize,
    pub steps: Arc<Steps>,
}

impl ImageOutput<'_> {
    /// The lines of `prefix` (an image, or an image's platform), seen by `watch`.
    fn lines(&self, prefix: &str, watch: Option<Watch>) -> Lines {
        Lines {
            prefix: format!("{prefix:<width$}", width = self.width),
            log: self.log.map(Path::to_path_buf),
            watch,
        }
    }

    /// `ctx` with the image's commands and their output behind its prefix.
    pub fn image_ctx(&self, ctx: &Ctx, image: &Image) -> Ctx {
        ctx.derive(ctx.settings.clone(), ctx.runner.with_lines(self.lines(&image.name, None)))
    }
}

/// buildx-setup, then one build per platform of `$PLATFORMS`, all at once, each on its node
/// with its own registry cache and pushing its own tag `<tag>-<arch>`; when every one succeeded,
/// `docker buildx imagetools create` merges them into `<tag>`, attestations kept, with the
/// inputs recorded as annotations of the index. (One registry cache for a build of several
/// platforms on several nodes keeps only the platform that finished last: docker/buildx#1044.)
pub fn publish(ctx: &Ctx, image: &Image, recipe: &Recipe, output: &ImageOutput) -> Result<()> {
    let image_ctx = output.image_ctx(ctx, image);
    let ctx = &image_ctx;
    let nodes = buildx::buildx_setup(ctx)?;
    let reference = ctx.settings.image_ref(image);
    let builds: Vec<PlatformBuild> = nodes
        .iter()
        .flat_map(|node| node.platforms.iter().map(move |platform| PlatformBuild { node, platform }))
        .collect();
    let tag = |build: &PlatformBuild| format!("{reference}-{}", platform_suffix(build.platform));
    let platform_ctx = |build: &PlatformBuild| {
        let arch = platform_suffix(build.platform);
        let watch = output.steps.watcher(build.platform);
        ctx.derive(
            ctx.settings.clone(),
            ctx.runner.with_lines(output.lines(&format!("{}/{arch}", image.name), Some(watch))),
        )
    };
    let results = ctx.runner.at_once(&builds, |build| {
        let build_ctx = platform_ctx(build);
        build_ctx.runner.say(&format!("{} on {}:", build.platform, build.node.place()));
        build_platform(&build_ctx, image, recipe, build, &tag(build))
    });
    let failed = builds.iter().zip(results).find_map(|(build, result)| result.err().map(|e| (build, e)));
    if let Some((build, first)) = failed {
        return Err(first.context(format!(
            "the {} build of {} failed, so {reference} was not pushed",
            build.platform, image.name
        )));
    }
    let tags: Vec<String> = builds.iter().map(tag).collect();
    ctx.runner.say(&format!("when every platform succeeded, merge them into {reference}:"));
    let annotations: Vec<String> = recipe
        .inputs
        .iter()
        .flat_map(|inputs| {
            [
                "--annotation".to_string(),
                format!("index:{DIGEST_ANNOTATION}={}", inputs.digest()),
                "--annotation".to_string(),
                format!("index:{RECORD_ANNOTATION}={}", inputs.to_json()),
            ]
        })
        .collect();
    let (sh, on, builder) = (sh(), &nodes[0].context_flag(), &nodes[0].builder.name);
    ctx.runner.run_retrying(
        cmd!(
            sh,
            "docker {on...} buildx imagetools create --builder {builder} {annotations...} --tag {reference} {tags...}"
        ),
        passing_failure,
    )
}

/// One platform of an image, on the node that builds it.
struct PlatformBuild<'a> {
    node: &'a Node,
    platform: &'a String,
}

/// The build of one platform. An image marked `split_build` is built in three steps inside Cloud
/// Build.
fn build_platform(ctx: &Ctx, image: &Image, recipe: &Recipe, build: &PlatformBuild, tag: &str) -> Result<()> {
    let full = buildx_build_cmd(ctx, image, recipe, build.node, build.platform, tag);
    if !(image.split_build && ctx.settings.in_cloud_build) {
        return ctx.runner.run_retrying(&full, passing_failure);
    }
    // Cloud Build mints the registry token when the builder starts and it expires after an hour,
    // so a long build fails at its push. Build first without pushing (the results stay in the
    // builder's cache), restart the builder for a fresh token, then build again: all cache hits,
    // quick, and the push gets the new token.
    ctx.runner.say("split build: build without pushing, restart the builder, then build and push");
    let build_only = full.clone().without("--push", false).without("--cache-to", true);
    ctx.runner.run_retrying(&build_only, passing_failure)?;
    let (sh, on, builder) = (sh(), &build.node.context_flag(), &build.node.builder.name);
    ctx.runner.run(cmd!(sh, "docker {on...} buildx stop {builder}"))?;
    ctx.runner.run_retrying(&full, passing_failure)
}

/// Why a build or a merge failed, when that cause passes and another try may succeed: buildx's
/// last line (`ERROR: …`) names a registry's 408, 429 or 5xx, a broken connection, a manifest refused
/// for blobs the registry does not see yet, or the engine's snapshot race (concurrent builds on
/// the containerd image store lose a snapshot: moby/buildkit#6977). The registry of the tests
/// (Distribution 2.8) answers 500 now and then while the other platform pushes into the same
/// repository: it writes its link files in place, so a read between the truncate and the write
/// finds "invalid checksum digest format". A failing `RUN` step, or any other answer, is the
/// build's own and final.
pub fn passing_failure(line: &str) -> Option<String> {
    let error = line.strip_prefix("ERROR: ")?;
    if error.contains("did not complete successfully") {
        return None;
    }
    if let Some((code, status)) = answered_status(error) {
        if crate::registry::retry::is_busy_status(code) {
            return Some(format!("the registry answered {status}"));
        }
        // BuildKit sends a manifest only after its blobs; a 400 for it is a registry that does
        // not see them yet (Distribution's "manifest blob unknown" after the race above). buildx
        // does not show the error code that the registry code's own rule reads.
        let manifest_push = error.contains("PUT request to") && error.contains("/manifests/");
        return (code == 400 && manifest_push)
            .then(|| "the registry refused a manifest whose blobs it was just sent".to_string());
    }
    const BROKEN: [&str; 3] = ["connection reset by peer", "i/o timeout", "TLS handshake timeout"];
    if let Some(broken) = BROKEN.iter().find(|broken| error.contains(*broken)) {
        return Some(format!("the connection to the registry broke: {broken}"));
    }
    (error.contains("snapshot") && error.contains("does not exist: not found"))
        .then(|| "the engine lost a snapshot to a concurrent build".to_string())
}

/// The HTTP status in containerd's `unexpected status[ from <method> request to <url>]: <code>
/// <text>`, as its code and `<code> <text>`.
fn answered_status(error: &str) -> Option<(u16, &str)> {
    let (_, rest) = error.split_once("unexpected status")?;
    rest.match_indices(": ").find_map(|(at, _)| {
        let status = &rest[at + 2..];
        let code = status
            .get(..3)
            .filter(|code| code.bytes().all(|b| b.is_ascii_digit()) && status[3..].starts_with(' '))?;
        Some((code.parse().ok()?, status.trim_end()))
    })
}

fn buildx_build_cmd(
    ctx: &Ctx,
    image: &Image,
    recipe: &Recipe,
    node: &Node,
    platform: &str,
    tag: &str,
) -> Cmd {
    let s = &ctx.settings;
    let cache = s.cache_ref(image, platform);
    let (sh, on, builder, dockerfile, context) =
        (sh(), &node.context_flag(), &node.builder.name, image.dockerfile(), image.context());
    let build_args: Vec<String> = recipe
        .args
        .iter()
        .flat_map(|(name, value)| ["--build-arg".to_string(), format!("{name}={value}")])
        .collect();
    let pins: Vec<String> = recipe
        .pins
        .iter()
        .flat_map(|(named, pinned)| {
            ["--build-context".to_string(), format!("{named}=docker-image://{pinned}")]
        })
        .collect();
    let (cache_from, cache_to) =
        (format!("type=registry,ref={cache}"), format!("type=registry,ref={cache},mode=max"));
    let options = output_options(ctx);
    cmd!(
        sh,
        "docker {on...} buildx build --file {dockerfile} --platform {platform} --builder {builder} --progress plain
            {build_args...} {pins...} --cache-from {cache_from} --cache-to {cache_to} {options...} --push --tag {tag} {context}"
    )
    .into()
}

/// The steps of each platform's build and which were cached, counted from its `--progress
/// plain` output (`#7 [2/3] RUN …`, then `#7 CACHED` for a cache hit).
#[derive(Default)]
pub struct Steps {
    by_platform: Mutex<BTreeMap<String, PlatformSteps>>,
}

/// The ids of a build's steps, and of those that were cache hits.
#[derive(Default)]
struct PlatformSteps {
    steps: BTreeSet<u32>,
    cached: BTreeSet<u32>,
}

impl Steps {
    fn watcher(self: &Arc<Steps>, platform: &str) -> Watch {
        let (steps, platform) = (Arc::clone(self), platform.to_string());
        Arc::new(move |line| steps.see(&platform, line))
    }

    fn see(&self, platform: &str, line: &str) {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else { return };
        let Ok(id) = id.parse::<u32>() else { return };
        let mut by_platform = self.by_platform.lock().expect("not poisoned");
        let seen = by_platform.entry(platform.to_string()).or_default();
        if rest == "CACHED" {
            seen.cached.insert(id);
        } else if let Some(header) = rest.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(h, _)| h)
            && header.rsplit(' ').next().and_then(|n| n.split_once('/')).is_some_and(|(a, b)| {
                !a.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
        {
            seen.steps.insert(id);
        }
    }

    /// Cached steps and steps, over every platform.
    pub fn counts(&self) -> (usize, usize) {
        let by_platform = self.by_platform.lock().expect("not poisoned");
        by_platform.values().fold((0, 0), |(cached, total), seen| {
            (cached + seen.steps.intersection(&seen.cached).count(), total + seen.steps.len())
        })
    }
}

/// pull-<image>: this machine's platform variant of the published image.
pub fn pull(ctx: &Ctx, image: &Image) -> Result<()> {
    let (sh, reference) = (sh(), ctx.settings.image_ref(image));
    ctx.runner.run(cmd!(sh, "docker pull {reference}"))
}

/// clean: remove the catalog's images from this machine's docker.
pub fn clean(ctx: &Ctx) -> Result<()> {
    let sh = sh();
    let references = ctx.catalog.task_images().map(|(_, image)| ctx.settings.image_ref(image));
    ctx.runner.run(cmd!(sh, "docker rmi {references...}"))
}

/// What an image's Dockerfile names, with the settings' build arguments filled in. It must not
/// name a frontend image (`# syntax=`), which BuildKit would fetch from Docker Hub at every build.
pub fn dockerfile_sources(ctx: &Ctx, image: &Image) -> Result<dockerfile::Sources> {
    let path = ctx.root.join(image.dockerfile());
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let args = ctx.settings.build_arg_values(image).into_iter().collect();
    let sources = dockerfile::sources(&text, &args);
    if let Some(frontend) = &sources.frontend {
        bail!(
            "{} starts with `# syntax={frontend}`, which makes BuildKit fetch that frontend image from \
             outside $DOCKER_REPO at every build: remove the line (BuildKit's own frontend serves)",
            image.dockerfile()
        );
    }
    Ok(sources)
}

/// The catalog's images and which builds on which, from their Dockerfiles: every image they
/// name is another catalog image as published, or vendored under `$DOCKER_REPO/thirdparty/`.
pub fn catalog_graph(ctx: &Ctx) -> Result<Graph> {
    let images: Vec<&Image> = ctx.catalog.task_images().map(|(_, image)| image).collect();
    let published = images.iter().map(|image| (image.name.clone(), ctx.settings.named_ref(image))).collect();
    graph_of(ctx, &images, &published)
}

/// The images `image` (the cloud builder) starts from, each of which must be vendored.
pub fn vendored_bases(ctx: &Ctx, image: &Image) -> Result<Vec<String>> {
    let graph = graph_of(ctx, &[image], &BTreeMap::new())?;
    Ok(graph.nodes.into_iter().flat_map(|node| node.vendored).collect())
}

fn graph_of(ctx: &Ctx, images: &[&Image], published: &BTreeMap<String, String>) -> Result<Graph> {
    let sources: Vec<(String, Vec<String>)> = images
        .iter()
        .map(|image| Ok((image.dockerfile(), dockerfile_sources(ctx, image)?.images)))
        .collect::<Result<_>>()?;
    let named: Vec<Named> = images
        .iter()
        .zip(&sources)
        .map(|(image, (dockerfile, references))| Named { name: &image.name, dockerfile, references })
        .collect();
    Graph::new(&named, published, &ctx.settings.docker_repo).map_err(anyhow::Error::msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_numbered_steps_and_their_cache_hits_per_platform() {
        let steps = Arc::new(Steps::default());
        let (amd64, arm64) = (steps.watcher("linux/amd64"), steps.watcher("linux/arm64"));
        for line in [
            "#2 [internal] load metadata for r/base:1",
            "#4 [context r/base:1] r/base:1@sha256:aa",
            "#7 [1/3] RUN uname -m",
            "#7 CACHED",
            "#8 [stage-1 2/3] COPY late.txt /late.txt",
            "#8 DONE 0.1s",
            "+ DOCKER_BUILDKIT=1 docker buildx build",
        ] {
            amd64(line);
        }
        // The same ids on the other platform are other steps.
        arm64("#7 [linux/arm64 1/3] RUN uname -m");
        assert_eq!(steps.counts(), (1, 3));
    }

    #[test]
    fn only_failures_that_pass_are_tried_again() {
        // Lines as buildx printed them here (the first from a failed graph test).
        let passing = [
            (
                "ERROR: unexpected status from HEAD request to http://127.0.0.1:35051/v2/local/top/manifests/1-amd64: 500 Internal Server Error",
                "the registry answered 500 Internal Server Error",
            ),
            (
                "ERROR: failed to push r/a:1: unexpected status from PUT request to https://r/v2/a/blobs/uploads/x: 503 Service Unavailable",
                "the registry answered 503 Service Unavailable",
            ),
            (
                "ERROR: failed to solve: r/base:1: failed to resolve source metadata for r/base:1: unexpected status code https://r/v2/base/manifests/1: 502 Bad Gateway",
                "the registry answered 502 Bad Gateway",
            ),
            (
                "ERROR: failed to solve: failed to copy: unexpected status: 408 Request Timeout",
                "the registry answered 408 Request Timeout",
            ),
            (
                "ERROR: failed to solve: failed to do request: Head \"https://r/v2/a/manifests/1\": read tcp 10.0.0.2:443: read: connection reset by peer",
                "the connection to the registry broke: connection reset by peer",
            ),
            (
                "ERROR: failed to solve: failed to push 127.0.0.1:40385/local/left:1-amd64: failed commit on ref \"manifest-sha256:d95b\": unexpected status from PUT request to http://127.0.0.1:40385/v2/local/left/manifests/sha256:d95b: 400 Bad Request",
                "the registry refused a manifest whose blobs it was just sent",
            ),
            (
                "ERROR: failed to solve: failed to prepare extraction snapshot \"extract-1\": parent snapshot sha256:ab does not exist: not found",
                "the engine lost a snapshot to a concurrent build",
            ),
        ];
        for (line, cause) in passing {
            assert_eq!(passing_failure(line).as_deref(), Some(cause), "{line}");
        }
        for line in [
            // The build's own failure, even when its output mentions a 500.
            "ERROR: failed to solve: process \"/bin/sh -c curl -f https://x # 500 Internal Server Error\" did not complete successfully: exit code: 22",
            "ERROR: failed to solve: r/base:1: not found",
            "ERROR: unexpected status from HEAD request to https://r/v2/a/manifests/1: 401 Unauthorized",
            "ERROR: failed to solve: unexpected status: 404 Not Found",
            "ERROR: failed to solve: failed to push r/a:1: unexpected status from PUT request to https://r/v2/a/blobs/uploads/x: 400 Bad Request",
            // A step's line, or the output of a RUN, is not buildx's verdict.
            "#13 ERROR: unexpected status from HEAD request to http://r/v2/a/manifests/1: 500 Internal Server Error",
            "#9 0.312 wget: server returned error: HTTP/1.1 503 Service Unavailable",
        ] {
            assert_eq!(passing_failure(line), None, "{line}");
        }
    }
}
