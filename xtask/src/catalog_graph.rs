//! The image graph of the catalog, read from its Dockerfiles as they are written. Every image a
//! Dockerfile names is decided here, once: a build stage (the reader leaves those out), an image
//! of the catalog (`$DOCKER_REPO/<repository>:<tag>`, or a name its `aliases` give it), or an
//! external base, which must be in the vendoring list. Anything else is an error naming the
//! Dockerfile, the line, the image and the line to add to the list, before anything runs.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::dockerfile::{self, Mention, Names};
use crate::graph::{Base, Graph, Parent, Vertex};
use crate::invalid::Invalid;
use crate::mirroring::list;
use crate::platform::Platforms;
use crate::registry::reference::{self, Written};

/// The catalog's images and which builds on which. An image none of whose platforms this run
/// builds (`PLATFORMS`) is left out, and so are its children.
pub fn of_catalog(ctx: &Ctx) -> Result<Graph> {
    let images: Vec<&Image> = ctx.catalog.task_images().map(|(_, image)| image).collect();
    graph_of(ctx, &images, &images)
}

/// The images `image` (the cloud builder) starts from, each of which must be vendored.
pub fn vendored_bases(ctx: &Ctx, image: &Image) -> Result<Vec<String>> {
    let graph = graph_of(ctx, &[image], &[])?;
    Ok(graph.vertices.into_iter().flat_map(|vertex| vertex.bases).map(|base| base.vendored).collect())
}

/// `images`' vertices, with `catalog` the images a Dockerfile may build on.
fn graph_of(ctx: &Ctx, images: &[&Image], catalog: &[&Image]) -> Result<Graph> {
    let names = CatalogNames::of(ctx, catalog);
    let listed = Listed::read(ctx)?;
    let mut vertices = Vec::new();
    for image in images {
        let platforms = platforms_of(ctx, image)?;
        if platforms.is_empty() {
            continue;
        }
        let path = ctx.root.join(image.dockerfile());
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        // The arguments the build gets: the versions it names, and the entry's own `args`
        // (which may choose a `FROM`, `ARG BASE_IMAGE`).
        let mut given: BTreeMap<String, String> = ctx.settings.build_arg_values(image).into_iter().collect();
        let values = ctx.settings.template_values();
        for (name, template) in &image.args {
            let value =
                template.render(&values).map_err(|e| anyhow!("image `{}`: its args: {e}", image.name))?;
            given.insert(name.clone(), value);
        }
        let platform_list: Vec<_> = platforms.iter().cloned().collect();
        let read = dockerfile::read(&text, &given, &platform_list).map_err(|problem| match problem.line {
            0 => anyhow!("{}: {}", image.dockerfile(), problem.message),
            line => anyhow!("{}:{line}: {}", image.dockerfile(), problem.message),
        })?;
        if let Some(target) = &image.target
            && !read.stages.contains(&target.to_ascii_lowercase())
        {
            let stages = if read.stages.is_empty() { "none".to_string() } else { read.stages.join(", ") };
            bail!(
                "image `{}`: its target `{target}` is no stage of {} (its stages: {stages})",
                image.name,
                image.dockerfile()
            );
        }
        vertices.push(vertex(ctx, image, platforms, &read, &names, &listed)?);
    }
    // A parent left out (none of its platforms built) takes its children with it.
    let kept: Vec<String> = vertices.iter().map(|v| v.name.clone()).collect();
    let left_out: Vec<String> = catalog
        .iter()
        .map(|i| i.name.clone())
        .filter(|name| !kept.contains(name) && images.iter().any(|i| i.name == *name))
        .collect();
    vertices.retain(|v| !v.parents.iter().any(|p| left_out.contains(&p.name)));
    Graph::new(vertices).map_err(anyhow::Error::from)
}

/// The platforms `image` is built for in this run: those it asks for that `PLATFORMS` has.
fn platforms_of(ctx: &Ctx, image: &Image) -> Result<Platforms> {
    let run = &ctx.settings.platforms;
    let Some(asked) = image.platforms()? else { return Ok(run.clone()) };
    Ok(run.iter().filter(|p| asked.iter().any(|a| a == *p)).cloned().collect())
}

fn vertex(
    ctx: &Ctx,
    image: &Image,
    platforms: Platforms,
    read: &Names,
    names: &CatalogNames,
    listed: &Listed,
) -> Result<Vertex> {
    let mut vertex = Vertex {
        name: image.name.clone(),
        parents: Vec::new(),
        bases: Vec::new(),
        args: read.args.clone(),
        platforms,
    };
    let at = |mention: &Mention| format!("{}:{}", image.dockerfile(), mention.line);
    for mention in read.frontend.iter().chain(&read.images) {
        let written = &mention.written;
        let parsed = reference::parse(written).map_err(|err| {
            anyhow!("{}: {}: not an image name ({err})", at(mention), mention.place.naming(written))
        })?;
        if let Some(parent) = names.find(&parsed, written) {
            vertex.parents.push(Parent { name: parent.to_string(), written: written.clone() });
            continue;
        }
        let base = listed.base(ctx, mention, &parsed).map_err(|why| {
            // A word such as `builder` is most likely a stage misspelt: say so first.
            let stage_hint = looks_like_a_stage(written).then(|| match read.stages.as_slice() {
                [] => " (this Dockerfile has no named stage)".to_string(),
                stages => format!(" (its stages: {})", stages.join(", ")),
            });
            let near = names.near_miss(written).unwrap_or_default();
            let why = match &stage_hint {
                Some(_) => format!("{why}, or name one of its stages"),
                None => why.to_string(),
            };
            anyhow!(
                "{}: {}: {written} is no stage of this Dockerfile{} nor an image of the catalog{near}, and \
                 {why}",
                at(mention),
                mention.place.naming(written),
                stage_hint.unwrap_or_default()
            )
        })?;
        vertex.bases.push(base);
    }
    Ok(vertex)
}

/// `builder`, `Build-Stage`: a word that would name a stage, not an image on a registry.
fn looks_like_a_stage(written: &str) -> bool {
    !written.contains(['/', ':', '@', '.'])
}

/// The names the catalog's images go by: `(registry, repository)`, with the tag they must carry
/// (`None`: any tag, or none).
struct CatalogNames {
    names: Vec<(String, String, Option<String>, String)>,
    /// For a near miss's hint: each image's published name.
    published: BTreeMap<String, String>,
    docker_repo: String,
}

impl CatalogNames {
    fn of(ctx: &Ctx, images: &[&Image]) -> CatalogNames {
        let s = &ctx.settings;
        let mut names = Vec::new();
        let mut published = BTreeMap::new();
        for image in images {
            let own = s.named_ref(image);
            published.insert(image.repository().to_string(), own.clone());
            let shares = images.iter().filter(|i| i.repository() == image.repository()).count() > 1;
            let mut add = |name: &str, exact_tag: bool| {
                let Ok(parsed) = reference::parse(name) else { return };
                let written = Written::split(name);
                let tag = match (exact_tag, written.tag) {
                    (true, _) => Some(parsed.tag().unwrap_or("latest").to_string()),
                    (false, Some(tag)) => Some(tag.to_string()),
                    (false, None) => None,
                };
                names.push((
                    parsed.registry().to_string(),
                    parsed.repository().to_string(),
                    tag,
                    image.name.clone(),
                ));
            };
            add(&own, true);
            // Any of its other tags names it too (`$DOCKER_REPO/app:latest`).
            let values = s.template_values();
            for template in &image.tags()[1..] {
                if let Ok(tag) = template.render(&values) {
                    add(&format!("{}/{}:{tag}", s.docker_repo, image.repository()), true);
                }
            }
            if !shares {
                // The only image of its repository: `$DOCKER_REPO/<repository>` untagged names it too.
                add(&format!("{}/{}", s.docker_repo, image.repository()), false);
            }
            for alias in image.aliases(&ctx.catalog.aliases) {
                add(&alias, false);
            }
        }
        CatalogNames { names, published, docker_repo: s.docker_repo.clone() }
    }

    /// The catalog image `parsed` names; none for one with a digest (an exact external image).
    fn find(&self, parsed: &oci_client::Reference, written: &str) -> Option<&str> {
        if parsed.digest().is_some() {
            return None;
        }
        let tag = Written::split(written).tag;
        let matches = |(registry, repository, want, _): &&(String, String, Option<String>, String)| {
            registry == parsed.registry()
                && repository == parsed.repository()
                && want.as_deref().is_none_or(|want| Some(want) == tag.or(Some("latest")))
        };
        self.names.iter().find(matches).map(|(.., name)| name.as_str())
    }

    /// ` (catalog image x is published as …)` for a name under `$DOCKER_REPO` that misses only
    /// by its tag.
    fn near_miss(&self, written: &str) -> Option<String> {
        let path = written.strip_prefix(&format!("{}/", self.docker_repo))?;
        let published = self.published.get(reference::repository_of(path))?;
        Some(format!(" ({} is published as {published})", reference::repository_of(path)))
    }
}

/// The vendoring list, as the graph asks it: is this image listed, with this tag, pinned to what.
struct Listed {
    /// `thirdparty.txt`, as the catalog names it.
    file: String,
    entries: Vec<list::ListEntry>,
}

impl Listed {
    fn read(ctx: &Ctx) -> Result<Listed> {
        let entries = list::read(&ctx.root, &ctx.catalog.thirdparty)?;
        Ok(Listed { file: ctx.catalog.thirdparty.display().to_string(), entries })
    }

    /// The vendored copy of the external image `mention` names; Err: why it has none, with the
    /// line to add to the list.
    fn base(&self, ctx: &Ctx, mention: &Mention, parsed: &oci_client::Reference) -> Result<Base, Invalid> {
        let written = Written::split(&mention.written);
        let digest = parsed.digest().map(str::to_string);
        let vendored_root = ctx.settings.vendored("");
        // The project's own idiom: `${DOCKER_REPO}/thirdparty/<path>:<tag>`, the copy itself.
        if let Some(path) = mention.written.strip_prefix(&vendored_root) {
            let path = reference::repository_of(path);
            let entry = self.entries.iter().find(|e| reference::path_without_host(&e.image) == path);
            let tag = written.tag.unwrap_or("latest");
            let pin = digest.clone().or_else(|| entry.and_then(|e| pin_of(e, tag)));
            let vendored = format!("{vendored_root}{path}:{tag}");
            return Ok(Base { written: mention.written.clone(), vendored, pin, place: mention.place });
        }
        let canonical = format!("{}/{}", parsed.registry(), parsed.repository());
        let entry = self.entries.iter().find(|e| {
            reference::parse(&format!("{}:latest", e.image))
                .is_ok_and(|r| r.registry() == parsed.registry() && r.repository() == parsed.repository())
        });
        let suggested = |tag: &str| match &digest {
            Some(digest) => format!("{tag}@{digest}"),
            None => tag.to_string(),
        };
        let Some(entry) = entry else {
            let tag = written.tag.unwrap_or(if digest.is_some() { "<tag>" } else { "latest" });
            return Err(Invalid::new(format!(
                "it is not in the vendoring list {}: add the line `{canonical}: {}` and run `cargo xtask \
                 thirdparty`",
                self.file,
                suggested(tag)
            )));
        };
        let line = format!("{}:{}", self.file, entry.line);
        let tag = match (written.tag, &digest) {
            (Some(tag), _) => tag.to_string(),
            // Pinned by digest alone: the list's tag pinned to that digest.
            (None, Some(digest)) => {
                match entry.tags.iter().find(|t| pin_of(entry, t).as_deref() == Some(digest)) {
                    Some(tag) => tag.clone(),
                    None => {
                        return Err(Invalid::new(format!(
                            "no tag of `{}` on {line} is pinned to {digest}: add `<tag>@{digest}` to that line",
                            entry.image
                        )));
                    }
                }
            }
            (None, None) => "latest".to_string(),
        };
        if !entry.tags.contains(&tag) {
            return Err(Invalid::new(format!(
                "{line} lists `{}` without the tag {tag}: add `{}` to that line",
                entry.image,
                suggested(&tag)
            )));
        }
        let listed_pin = pin_of(entry, &tag);
        if let (Some(wanted), Some(listed)) = (&digest, &listed_pin)
            && wanted != listed
        {
            return Err(Invalid::new(format!(
                "the Dockerfile pins {tag} to {wanted}, but {line} pins it to {listed}: make them agree"
            )));
        }
        let vendored = format!("{vendored_root}{}:{tag}", reference::path_without_host(&entry.image));
        Ok(Base {
            written: mention.written.clone(),
            vendored,
            pin: digest.or(listed_pin),
            place: mention.place,
        })
    }
}

/// The digest the list pins `tag` of `entry` to.
fn pin_of(entry: &list::ListEntry, tag: &str) -> Option<String> {
    entry.pins.get(tag).cloned()
}
