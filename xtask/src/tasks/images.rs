//! build-<image>, buildx-publish-<image>, pull-<image>, clean: the catalog's images.

use anyhow::Result;

use super::{Ctx, buildx, local_registry};
use crate::catalog::Image;
use crate::runner::Cmd;

/// build-<image>: a single-platform build on this machine's docker, not pushed.
pub fn build(ctx: &Ctx, image: &Image) -> Result<()> {
    let s = &ctx.settings;
    let cmd = Cmd::docker().args(["build", "--file", &image.dockerfile()]).args(s.build_args(image)).args([
        "--pull",
        "--tag",
        &s.image_ref(image),
        &image.context(),
    ]);
    ctx.runner.run(&cmd)
}

/// buildx-publish-<image>: build every platform of `$PLATFORMS` and push, through the registry
/// cache (with ENV=local, into the local registry, started when it is not running).
pub fn buildx_publish(ctx: &Ctx, image: &Image) -> Result<()> {
    local_registry::ensure_for_local_env(ctx)?;
    publish(ctx, image)
}

/// buildx-setup, then the build and push. An image marked `split_build` is built in three
/// steps inside Cloud Build.
pub fn publish(ctx: &Ctx, image: &Image) -> Result<()> {
    buildx::buildx_setup(ctx)?;
    let full = buildx_build_cmd(ctx, image);
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
    ctx.runner.run(&Cmd::docker().args(["buildx", "stop", &ctx.settings.builder]))?;
    ctx.runner.run(&full)
}

pub fn buildx_build_cmd(ctx: &Ctx, image: &Image) -> Cmd {
    let s = &ctx.settings;
    let cache = s.cache_ref(image);
    Cmd::docker()
        .args(["buildx", "build", "--file", &image.dockerfile()])
        .args(["--platform", &s.platforms, "--builder", &s.builder, "--progress", "plain"])
        .args(s.build_args(image))
        .args(["--cache-from", &format!("type=registry,ref={cache}")])
        .args(["--cache-to", &format!("type=registry,ref={cache},mode=max")])
        .args(["--pull", "--push", "--tag", &s.image_ref(image), &image.context()])
}

/// pull-<image>: this machine's platform variant of the published image.
pub fn pull(ctx: &Ctx, image: &Image) -> Result<()> {
    ctx.runner.run(&Cmd::docker().args(["pull", &ctx.settings.image_ref(image)]))
}

/// clean: remove the catalog's images from this machine's docker.
pub fn clean(ctx: &Ctx) -> Result<()> {
    let refs = ctx.catalog.task_images().map(|(_, image)| ctx.settings.image_ref(image));
    ctx.runner.run(&Cmd::docker().arg("rmi").args(refs))
}
