//! build-<image>, buildx-publish-<image>, pull-<image>, clean: the catalog's images, one at a
//! time.

use anyhow::{Result, anyhow};
use xshell::cmd;

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::dockerfile::Place;
use crate::entry::EntryOptions;
use crate::local_registry::with_local_registry;
use crate::publish::{self, PublishOptions};
use crate::registry::reference;
use crate::runner::sh;
use crate::secrets::Secrets;
use crate::settings::build_arg_flags;

/// build-<image>: a single-platform build on this machine's docker, not pushed. What its
/// Dockerfile names under another name than it is published or vendored under (`quay.io/acme/
/// base`, `ubuntu:24.04@sha256:…`) is handed over from `$DOCKER_REPO` as a named build context,
/// by tag (by its pin where it has one), so that nothing comes from the registry it names.
pub fn build(ctx: &Ctx, image: &Image) -> Result<()> {
    let s = &ctx.settings;
    let graph = crate::catalog_graph::of_catalog(ctx)?;
    let vertex = graph
        .vertex(&image.name)
        .ok_or_else(|| anyhow!("{} is built for none of PLATFORMS ({})", image.name, s.platforms))?;
    let secrets = Secrets::find(ctx, &[image])?;
    let entry = EntryOptions::of(ctx, image, &secrets)?;
    let mut args: Vec<(String, String)> = s.build_arg_values(image);
    args.retain(|(name, _)| name != "DOCKER_REPO" || vertex.args.contains(name));
    args.extend(entry.args.iter().cloned());
    let mut contexts: Vec<(String, String)> = Vec::new();
    for base in &vertex.bases {
        let vendored = match &base.pin {
            Some(pin) => format!("{}@{pin}", base.vendored),
            None => base.vendored.clone(),
        };
        match base.place {
            Place::Syntax => args.push(("BUILDKIT_SYNTAX".into(), vendored)),
            _ => contexts.push((base.written.clone(), vendored)),
        }
    }
    for parent in &vertex.parents {
        let published = ctx.catalog.images.iter().find(|i| i.name == parent.name).map(|i| s.named_ref(i));
        contexts.extend(published.map(|published| (parent.written.clone(), published)));
    }
    let mut build_contexts: Vec<String> = Vec::new();
    for (written, target) in contexts {
        let name = reference::context_name(&written).unwrap_or(written);
        // Named as it is published or vendored: the build reads it there already.
        let same = reference::context_name(&target).is_ok_and(|target| target == name);
        let flag = format!("{name}=docker-image://{target}");
        if !same && !build_contexts.contains(&flag) {
            build_contexts.extend(["--build-context".to_string(), flag]);
        }
    }
    let (sh, dockerfile, build_args, tag, context) =
        (sh(), image.dockerfile(), build_arg_flags(&args), s.image_ref(image), image.context());
    let entry = entry.build_flags();
    ctx.runner.run(cmd!(
        sh,
        "docker build --file {dockerfile} {build_args...} {build_contexts...} {entry...} --pull --tag {tag} {context}"
    ))
}

/// buildx-publish-<image>: that image alone, unless it is up to date (`--force` builds it
/// anyway). The catalog images it builds on must be published already.
pub fn buildx_publish(ctx: &Ctx, image: &Image, options: &PublishOptions) -> Result<()> {
    with_local_registry(ctx, || {
        let graph = crate::catalog_graph::of_catalog(ctx)?;
        let secrets = Secrets::of_images(ctx, &[image.name.as_str()])?;
        publish::publish_images(ctx, &graph, &[image.name.as_str()], options, &secrets)
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
