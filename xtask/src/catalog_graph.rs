//! The image graph of the catalog: which image builds on which, read from their Dockerfiles.
//! Every image a Dockerfile names is another catalog image as published, or vendored under
//! `$DOCKER_REPO/thirdparty/`.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::dockerfile;
use crate::graph::{Graph, Named};

/// What an image's Dockerfile names, with the settings' build arguments filled in. It must not
/// name a frontend image (`# syntax=`), which BuildKit would fetch from Docker Hub at every build.
fn dockerfile_sources(ctx: &Ctx, image: &Image) -> Result<dockerfile::Sources> {
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

/// The catalog's images and which builds on which.
pub fn of_catalog(ctx: &Ctx) -> Result<Graph> {
    let images: Vec<&Image> = ctx.catalog.task_images().map(|(_, image)| image).collect();
    let published = images.iter().map(|image| (image.name.clone(), ctx.settings.named_ref(image))).collect();
    graph_of(ctx, &images, &published)
}

/// The images `image` (the cloud builder) starts from, each of which must be vendored.
pub fn vendored_bases(ctx: &Ctx, image: &Image) -> Result<Vec<String>> {
    let graph = graph_of(ctx, &[image], &BTreeMap::new())?;
    Ok(graph.vertices.into_iter().flat_map(|vertex| vertex.vendored).collect())
}

fn graph_of(ctx: &Ctx, images: &[&Image], published: &BTreeMap<String, String>) -> Result<Graph> {
    let sources: Vec<(String, dockerfile::Sources)> = images
        .iter()
        .map(|image| Ok((image.dockerfile(), dockerfile_sources(ctx, image)?)))
        .collect::<Result<_>>()?;
    let named: Vec<Named> = images
        .iter()
        .zip(&sources)
        .map(|(image, (dockerfile, sources))| Named {
            name: &image.name,
            dockerfile,
            references: &sources.images,
            args: &sources.args,
        })
        .collect();
    Graph::new(&named, published, &ctx.settings.docker_repo).map_err(anyhow::Error::msg)
}
