//! build-<image>, buildx-publish-<image>, pull-<image>, clean: the catalog's images.

use anyhow::{Context, Result, bail};
use xshell::cmd;

use super::buildx::{self, Node};
use super::{Ctx, local_registry};
use crate::catalog::Image;
use crate::dockerfile;
use crate::runner::{Cmd, sh};
use crate::settings::platform_suffix;

/// build-<image>: a single-platform build on this machine's docker, not pushed.
pub fn build(ctx: &Ctx, image: &Image) -> Result<()> {
    let s = &ctx.settings;
    let (sh, dockerfile, build_args, tag, context) =
        (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
    ctx.runner.run(cmd!(sh, "docker build --file {dockerfile} {build_args...} --pull --tag {tag} {context}"))
}

/// buildx-publish-<image>: build every platform of `$PLATFORMS` and push, through the registry
/// cache (with ENV=local, into the local registry, started when it is not running).
pub fn buildx_publish(ctx: &Ctx, image: &Image) -> Result<()> {
    local_registry::ensure_for_local_env(ctx)?;
    publish(ctx, image)
}

/// buildx-setup, then one build per platform of `$PLATFORMS`, all at once, each on its node
/// with its own registry cache and pushing its own tag `<tag>-<arch>`; when every one succeeded,
/// `docker buildx imagetools create` merges them into `<tag>`, attestations kept. (One registry
/// cache for a build of several platforms on several nodes keeps only the platform that finished
/// last: docker/buildx#1044.) A single platform pushes `<tag>` itself.
pub fn publish(ctx: &Ctx, image: &Image) -> Result<()> {
    let nodes = buildx::buildx_setup(ctx)?;
    let reference = ctx.settings.image_ref(image);
    let builds: Vec<PlatformBuild> = nodes
        .iter()
        .flat_map(|node| node.platforms.iter().map(move |platform| PlatformBuild { node, platform }))
        .collect();
    let single = builds.len() == 1;
    let tag = |build: &PlatformBuild| {
        if single { reference.clone() } else { format!("{reference}-{}", platform_suffix(build.platform)) }
    };
    if ctx.runner.is_dry_run() {
        for build in &builds {
            ctx.runner.say(&format!("{} on {}:", build.platform, build.node.place()));
            build_platform(ctx, image, build, &tag(build))?;
        }
    } else {
        let failures: Vec<(String, anyhow::Error)> = std::thread::scope(|scope| {
            let running: Vec<_> = builds
                .iter()
                .map(|build| {
                    let tag = tag(build);
                    scope.spawn(move || (build.platform.clone(), build_platform(ctx, image, build, &tag)))
                })
                .collect();
            running
                .into_iter()
                .map(|r| r.join().expect("a build thread panicked"))
                .filter_map(|(platform, result)| result.err().map(|e| (platform, e)))
                .collect()
        });
        if let Some((platform, first)) = failures.into_iter().next() {
            return Err(first.context(format!(
                "the {platform} build of {} failed, so {reference} was not pushed",
                image.name
            )));
        }
    }
    if single {
        return Ok(());
    }
    let tags: Vec<String> = builds.iter().map(tag).collect();
    ctx.runner.say(&format!("when every platform succeeded, merge them into {reference}:"));
    let (sh, on, builder) = (sh(), &nodes[0].context_flag(), &nodes[0].builder.name);
    ctx.runner.run(cmd!(
        sh,
        "docker {on...} buildx imagetools create --builder {builder} --tag {reference} {tags...}"
    ))
}

/// One platform of an image, on the node that builds it.
struct PlatformBuild<'a> {
    node: &'a Node,
    platform: &'a String,
}

/// The build of one platform. An image marked `split_build` is built in three steps inside Cloud
/// Build.
fn build_platform(ctx: &Ctx, image: &Image, build: &PlatformBuild, tag: &str) -> Result<()> {
    let full = buildx_build_cmd(ctx, image, build.node, build.platform, tag);
    if !(image.split_build && ctx.settings.in_cloud_build) {
        return ctx.runner.run(&full);
    }
    // Cloud Build mints the registry token when the builder starts and it expires after an hour,
    // so a long build fails at its push. Build first without pushing (the results stay in the
    // builder's cache), restart the builder for a fresh token, then build again: all cache hits,
    // quick, and the push gets the new token.
    ctx.runner.say("split build: build without pushing, restart the builder, then build and push");
    let build_only = full.clone().without("--push", false).without("--cache-to", true);
    ctx.runner.run(&build_only)?;
    let (sh, on, builder) = (sh(), &build.node.context_flag(), &build.node.builder.name);
    ctx.runner.run(cmd!(sh, "docker {on...} buildx stop {builder}"))?;
    ctx.runner.run(&full)
}

fn buildx_build_cmd(ctx: &Ctx, image: &Image, node: &Node, platform: &str, tag: &str) -> Cmd {
    let s = &ctx.settings;
    let cache = s.cache_ref(image, platform);
    let (sh, on, builder, dockerfile, context) =
        (sh(), &node.context_flag(), &node.builder.name, image.dockerfile(), image.context());
    let (build_args, cache_from, cache_to) = (
        s.build_args(image),
        format!("type=registry,ref={cache}"),
        format!("type=registry,ref={cache},mode=max"),
    );
    cmd!(
        sh,
        "docker {on...} buildx build --file {dockerfile} --platform {platform} --builder {builder} --progress plain
            {build_args...} --cache-from {cache_from} --cache-to {cache_to} --pull --push --tag {tag} {context}"
    )
    .into()
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

/// The images an image's Dockerfile starts from, with the settings' build arguments filled in.
/// Each must be vendored under `$DOCKER_REPO/thirdparty/`, and the Dockerfile must not name a
/// frontend image (`# syntax=`), which BuildKit would fetch from Docker Hub at every build.
pub fn base_images(ctx: &Ctx, image: &Image) -> Result<Vec<String>> {
    let path = ctx.root.join(image.dockerfile());
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let args = ctx.settings.build_arg_values(image).into_iter().collect();
    let sources = dockerfile::sources(&text, &args);
    if let Some(frontend) = sources.frontend {
        bail!(
            "{} starts with `# syntax={frontend}`, which makes BuildKit fetch that frontend image from \
             outside $DOCKER_REPO at every build: remove the line (BuildKit's own frontend serves)",
            image.dockerfile()
        );
    }
    let vendored = ctx.settings.vendored("");
    if let Some(outside) = sources.images.iter().find(|base| !base.starts_with(&vendored)) {
        bail!(
            "{} builds from {outside}, which is not under {vendored}: start FROM \
             ${{DOCKER_REPO}}/thirdparty/<image> and list the image in the vendoring list",
            image.dockerfile()
        );
    }
    Ok(sources.images)
}
