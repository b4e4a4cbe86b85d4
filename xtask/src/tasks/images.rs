//! build-<image>, buildx-publish-<image>, pull-<image>, clean: the catalog's images, one at a
//! time.

use anyhow::Result;
use xshell::cmd;

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::local_registry::with_local_registry;
use crate::publish::{self, PublishOptions};
use crate::runner::sh;

/// build-<image>: a single-platform build on this machine's docker, not pushed.
pub fn build(ctx: &Ctx, image: &Image) -> Result<()> {
    let s = &ctx.settings;
    let (sh, dockerfile, build_args, tag, context) =
        (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
    ctx.runner.run(cmd!(sh, "docker build --file {dockerfile} {build_args...} --pull --tag {tag} {context}"))
}

/// buildx-publish-<image>: that image alone, unless it is up to date (`--force` builds it
/// anyway). The catalog images it builds on must be published already.
pub fn buildx_publish(ctx: &Ctx, image: &Image, options: &PublishOptions) -> Result<()> {
    with_local_registry(ctx, || {
        let graph = crate::catalog_graph::of_catalog(ctx)?;
        publish::publish_images(ctx, &graph, &[image.name.as_str()], options)
    })
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
