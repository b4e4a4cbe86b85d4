//! `images/images.toml`: the images this repository builds, as data. Adding an image takes an
//! entry there and a `images/<name>/Dockerfile`, no Rust code.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub const CATALOG_PATH: &str = "images/images.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Version variables and their defaults; the environment overrides each by its name.
    pub versions: BTreeMap<String, String>,
    #[serde(rename = "image")]
    pub images: Vec<Image>,
    /// The image the Cloud Build steps run in. Built for amd64 only: it only runs in Cloud Build.
    pub cloud_builder: Image,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Its folder under `images/` and its name under `$DOCKER_REPO`.
    pub name: String,
    /// The suffix of its tasks: `build-<task>`, `buildx-publish-<task>`, `pull-<task>`.
    #[serde(default)]
    pub task: Option<String>,
    /// One line for the task list.
    pub description: String,
    /// The tag, with `{VERSION_NAME}` placeholders filled from the versions.
    pub tag: TagTemplate,
    /// Version variables passed as `--build-arg NAME=VALUE` (after `DOCKER_REPO`, always passed).
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Build once without pushing, stop the builder, then build and push with a fresh registry
    /// token: for builds that may outlive Cloud Build's one-hour token.
    #[serde(default)]
    pub split_build: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct TagTemplate(String);

impl TagTemplate {
    pub fn render(&self, versions: &BTreeMap<String, String>) -> String {
        let mut out = self.0.clone();
        for (name, value) in versions {
            out = out.replace(&format!("{{{name}}}"), value);
        }
        out
    }

    fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.0.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
    }
}

impl Image {
    pub fn dockerfile(&self) -> String {
        format!("{}/Dockerfile", self.context())
    }

    /// The build context is the image's own folder, never the repository root, whose `target/`
    /// would be sent to the remote arm64 node.
    pub fn context(&self) -> String {
        format!("images/{}", self.name)
    }
}

impl Catalog {
    pub fn load(root: &Path) -> Result<Catalog> {
        let path = root.join(CATALOG_PATH);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the image catalog {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid image catalog {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Catalog> {
        let catalog: Catalog = toml::from_str(text)?;
        catalog.validate()?;
        Ok(catalog)
    }

    fn validate(&self) -> Result<()> {
        let mut tasks = BTreeMap::new();
        for image in self.images.iter().chain([&self.cloud_builder]) {
            for name in image.build_args.iter().map(String::as_str).chain(image.tag.placeholders()) {
                if !self.versions.contains_key(name) {
                    bail!("image `{}` uses `{name}`, which is not in [versions]", image.name);
                }
            }
            if let Some(task) = &image.task
                && let Some(other) = tasks.insert(task.as_str(), image.name.as_str())
            {
                bail!("images `{other}` and `{}` both have task `{task}`", image.name);
            }
        }
        Ok(())
    }

    /// The images that have `build-*`, `buildx-publish-*` and `pull-*` tasks.
    pub fn task_images(&self) -> impl Iterator<Item = (&str, &Image)> {
        self.images.iter().filter_map(|image| Some((image.task.as_deref()?, image)))
    }

    pub fn image_for_task(&self, task: &str) -> Option<&Image> {
        self.task_images().find(|(name, _)| *name == task).map(|(_, image)| image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_an_unknown_version_in_a_tag() {
        let text = r#"
            [versions]
            A = "1"
            [[image]]
            name = "x"
            description = "x"
            tag = "{B}"
            [cloud_builder]
            name = "cb"
            description = "cb"
            tag = "{A}"
        "#;
        let err = Catalog::parse(text).unwrap_err().to_string();
        assert!(err.contains("uses `B`"), "{err}");
    }

    #[test]
    fn renders_every_placeholder() {
        let versions = BTreeMap::from([("A".into(), "1.2".into()), ("B".into(), "x".into())]);
        let tag = TagTemplate("a{A}-b{B}-{A}".into());
        assert_eq!(tag.render(&versions), "a1.2-bx-1.2");
    }

    #[test]
    fn the_repository_catalog_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let catalog = Catalog::load(root).unwrap();
        let tasks: Vec<_> = catalog.task_images().map(|(task, _)| task).collect();
        assert_eq!(tasks, ["runtime", "build", "odb"]);
        for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
            assert!(root.join(image.dockerfile()).is_file(), "{} has no Dockerfile", image.name);
        }
    }
}
