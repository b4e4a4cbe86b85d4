//! `images/images.toml`: the images this repository builds, as data. Adding an image takes an
//! entry there and a `images/<name>/Dockerfile`, no Rust code. The catalog also names the
//! vendoring list and the pipeline that go with its images, so that another catalog (`CATALOG`,
//! e.g. the end-to-end tests' own) brings its own. Another repository's catalog may also be its
//! bake file (`CATALOG=docker-bake.hcl`): `bake` reads it into the same entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bake;
use crate::catalog_source::CatalogSource;
use crate::invalid::Invalid;
use crate::normalize;
use crate::platform::{Platform, Platforms};
use crate::registry::reference;
use crate::secrets::Secret;
use crate::template::{RUN_VALUES, Template};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

pub const CATALOG_PATH: &str = "images/images.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// The base images to vendor; in the file, relative to the catalog (`thirdparty.txt` beside
    /// it when not given), and here relative to the repository root when it is inside it.
    #[serde(default = "default_list")]
    pub thirdparty: PathBuf,
    /// The Cloud Build pipeline that builds these images; relative as `thirdparty`. Not given:
    /// the repository's own (as `buildkit` and `cloud_builder`, see `lend_what_is_not_given`).
    #[serde(default)]
    pub pipeline: PathBuf,
    /// The BuildKit image of every `docker-container` builder, under `$DOCKER_REPO/thirdparty/`
    /// (vendored like any base image, so that no builder boots from Docker Hub).
    #[serde(default)]
    pub buildkit: String,
    /// The SBOM generator image BuildKit runs for each platform's SBOM attestation, under
    /// `$DOCKER_REPO/thirdparty/` (BuildKit's default comes from Docker Hub); none: no SBOMs.
    #[serde(default)]
    pub sbom_generator: Option<String>,
    /// Version variables and their defaults; the environment overrides each by its name.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Other names a Dockerfile may give every image of the catalog, `{name}` (and
    /// `{repository}`) filled in: `quay.io/acme/{name}`, the registry its upstream publishes to.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The test of every image that has none of its own (see `Image::test`).
    #[serde(default)]
    pub test: Option<String>,
    #[serde(rename = "image")]
    pub images: Vec<Image>,
    /// The image the Cloud Build steps run in. Built for amd64 only: it only runs in Cloud Build.
    #[serde(default)]
    pub cloud_builder: Image,
    /// What reading it warns of (a bake attribute not carried out), each a sentence.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn default_list() -> PathBuf {
    PathBuf::from("thirdparty.txt")
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// What the catalog calls it: its tasks, its cache, its folder unless `context` says.
    pub name: String,
    /// Where under `$DOCKER_REPO` it is published; the name when not given. Variants share
    /// their image's repository under tags of their own.
    #[serde(default)]
    pub repository: Option<String>,
    /// Its build context, a folder relative to the catalog's file; `<name>` when not given.
    #[serde(default)]
    pub context: Option<PathBuf>,
    /// Its Dockerfile, relative to the context; `Dockerfile` when not given.
    #[serde(default)]
    pub dockerfile: Option<PathBuf>,
    /// The platforms it is built for, among `PLATFORMS`; all of them when not given.
    #[serde(default)]
    pub platforms: Option<Vec<String>>,
    /// More names a Dockerfile may give it, beside the catalog's `aliases`.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The suffix of its tasks: `build-<task>`, `buildx-publish-<task>`, `pull-<task>`; the
    /// image's name when not given (set when the catalog is loaded).
    #[serde(default)]
    pub task: Option<String>,
    /// One line for the task list.
    pub description: String,
    /// The tag, with `{VERSION_NAME}` placeholders filled from the versions; or `tags`.
    #[serde(default)]
    pub tag: Option<Template>,
    /// Several tags (bake's `tags`), each a template like `tag`: the first is the one the
    /// up-to-date decision reads (and may use no run value); every one points at the same index.
    #[serde(default)]
    pub tags: Vec<Template>,
    /// Version variables passed as `--build-arg NAME=VALUE` (after `DOCKER_REPO`, always passed).
    #[serde(default)]
    pub build_args: Vec<String>,
    /// Build arguments with values of their own (bake's `args`): `NAME = "template"`, with
    /// versions and the run's values (`{GIT_SHA}`, `{GIT_SHA_SHORT}`, `{DATE}`).
    #[serde(default)]
    pub args: BTreeMap<String, Template>,
    /// The stage to build (bake's `target`); the last one when not given.
    #[serde(default)]
    pub target: Option<String>,
    /// Image labels (bake's `labels`), templates as `args`; the OCI labels `source`, `revision`
    /// and `created` are set by default.
    #[serde(default)]
    pub labels: BTreeMap<String, Template>,
    /// Annotations (bake's `annotations`): `index:<key>` on the index, `manifest:<key>` (or no
    /// prefix) on each platform's manifest; templates as `args`.
    #[serde(default)]
    pub annotations: BTreeMap<String, Template>,
    /// The secrets its `RUN --mount=type=secret` steps read, by id.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// A command line run on each platform's node once that platform is pushed, before any tag
    /// of the image moves: `tests/run.sh {image}`; `{image}` (the platform's image by digest),
    /// `{name}` and `{platform}` filled in; IMAGE, PLATFORM and the node's DOCKER_CONTEXT in its
    /// environment.
    #[serde(default)]
    pub test: Option<String>,
    /// Build once without pushing, stop the builder, then build and push with a fresh registry
    /// token: for builds that may outlive Cloud Build's one-hour token.
    #[serde(default)]
    pub split_build: bool,
    /// The catalog's folder, which holds the image's folder (set when the catalog is loaded).
    #[serde(skip)]
    dir: PathBuf,
}

impl Image {
    pub fn dockerfile(&self) -> String {
        let file = self.dockerfile.as_deref().unwrap_or(Path::new("Dockerfile"));
        normalize(&Path::new(&self.context()).join(file)).display().to_string()
    }

    /// The build context is the image's own folder, never the repository root, whose `target/`
    /// would be sent to the remote arm64 node.
    pub fn context(&self) -> String {
        let folder = self.context.as_deref().unwrap_or(Path::new(&self.name));
        normalize(&self.dir.join(folder)).display().to_string()
    }

    /// Its tags' templates, the one the up-to-date decision reads first.
    pub fn tags(&self) -> Vec<&Template> {
        self.tag.iter().chain(&self.tags).collect()
    }

    /// The catalog's folder, where its paths (a secret's file) start.
    pub fn folder(&self) -> &Path {
        &self.dir
    }

    /// Its test's words, its own or the catalog's (`catalog_test`), as a POSIX shell splits
    /// the command line (the checks made it splittable); none: nothing is tested.
    pub fn test(&self, catalog_test: Option<&str>) -> Option<Vec<String>> {
        let line = self.test.as_deref().or(catalog_test)?;
        shlex::split(line).filter(|words| !words.is_empty())
    }

    /// Its repository under `$DOCKER_REPO`.
    pub fn repository(&self) -> &str {
        self.repository.as_deref().unwrap_or(&self.name)
    }

    /// The platforms it asks for, as written; none: every platform of the run.
    pub fn platforms(&self) -> Result<Option<Platforms>, Invalid> {
        let Some(written) = &self.platforms else { return Ok(None) };
        let platforms: Vec<Platform> =
            written.iter().map(|p| Platform::parse(p)).collect::<Result<_, _>>()?;
        Ok(Some(Platforms::from(platforms)))
    }

    /// Every name a Dockerfile may give it besides `$DOCKER_REPO/<repository>`: the catalog's
    /// aliases for it, then its own.
    pub fn aliases(&self, catalog_aliases: &[String]) -> Vec<String> {
        let fill =
            |alias: &String| alias.replace("{name}", &self.name).replace("{repository}", self.repository());
        catalog_aliases.iter().chain(&self.aliases).map(fill).collect()
    }
}

impl Catalog {
    /// The images `names` names (by task or name; the cloud builder by its name too), or every
    /// image of the catalog when none is named.
    pub fn named_images(&self, names: &[String]) -> Result<Vec<&Image>> {
        if names.is_empty() {
            return Ok(self.task_images().map(|(_, image)| image).collect());
        }
        names
            .iter()
            .map(|name| {
                let by_task = self.image_for_task(name);
                by_task
                    .or_else(|| self.images.iter().find(|i| &i.name == name))
                    .or_else(|| (self.cloud_builder.name == *name).then_some(&self.cloud_builder))
                    .with_context(|| {
                        format!(
                            "`{name}` is no image of the catalog (name one by its name or its task, or `{}`, \
                             the image the pipeline runs in)",
                            self.cloud_builder.name
                        )
                    })
            })
            .collect()
    }

    /// The repository's own catalog.
    pub fn load(root: &Path) -> Result<Catalog> {
        Self::load_from(root, Path::new(CATALOG_PATH))
    }

    /// The catalog at `path` (relative to `root` unless absolute).
    pub fn load_from(root: &Path, path: &Path) -> Result<Catalog> {
        Self::load_source(root, &CatalogSource::file(path))
    }

    /// The catalog `source` names: an images.toml, or a bake file's group; with the vendoring
    /// list and the pipeline it gives instead of the catalog's.
    pub fn load_source(root: &Path, source: &CatalogSource) -> Result<Catalog> {
        let full = root.join(&source.path);
        let mut catalog = if bake::is_bake_file(&full) {
            let read = bake::read(&full, source.bake_group())
                .with_context(|| format!("cannot read the bake file {} (CATALOG)", full.display()))?;
            Self::of_bake(read).with_context(|| format!("invalid image catalog {}", full.display()))?
        } else {
            let text = std::fs::read_to_string(&full)
                .with_context(|| format!("cannot read the image catalog {} (CATALOG)", full.display()))?;
            let mut catalog =
                Self::parse(&text).with_context(|| format!("invalid image catalog {}", full.display()))?;
            if let Some(group) = &source.bake_group {
                catalog.warnings.push(format!(
                    "BAKE_GROUP={group} is read only from a bake file, and the catalog {} is none",
                    full.display()
                ));
            }
            catalog
        };
        let dir = relative_to(root, full.parent().unwrap_or(root));
        catalog.thirdparty = normalize(&dir.join(&catalog.thirdparty));
        if !catalog.pipeline.as_os_str().is_empty() {
            catalog.pipeline = normalize(&dir.join(&catalog.pipeline));
        }
        // Given paths start at the repository root, as CATALOG's does.
        if let Some(list) = &source.thirdparty {
            catalog.thirdparty = relative_to(root, &root.join(list));
        }
        if let Some(pipeline) = &source.pipeline {
            catalog.pipeline = relative_to(root, &root.join(pipeline));
        }
        for image in catalog.images.iter_mut().chain([&mut catalog.cloud_builder]) {
            image.dir = dir.clone();
        }
        if normalize(&full) != normalize(&root.join(CATALOG_PATH)) {
            catalog.lend_what_is_not_given(root, &full)?;
        }
        // The repository's own catalog lends to the others: it must have all of it.
        let lacking = catalog.lacking();
        if !lacking.is_empty() {
            bail!(
                "the image catalog {} names no {}: add {}",
                full.display(),
                lacking.join(", "),
                lacking.join(", ")
            );
        }
        Ok(catalog)
    }

    /// What the build infrastructure needs that the catalog does not name.
    fn lacking(&self) -> Vec<&'static str> {
        [
            ("pipeline", self.pipeline.as_os_str().is_empty()),
            ("buildkit", self.buildkit.is_empty()),
            ("[cloud_builder]", self.cloud_builder.name.is_empty()),
        ]
        .into_iter()
        .filter_map(|(key, lacks)| lacks.then_some(key))
        .collect()
    }

    /// The catalog of a bake file's images: no versions and no aliases of its own, its list
    /// beside it, the rest lent (`lend_what_is_not_given`), as for another repository's
    /// images.toml that names only its images.
    fn of_bake(bake: bake::Bake) -> Result<Catalog> {
        let catalog = Catalog {
            thirdparty: default_list(),
            pipeline: PathBuf::new(),
            buildkit: String::new(),
            sbom_generator: None,
            versions: BTreeMap::new(),
            aliases: Vec::new(),
            test: None,
            images: bake.images,
            cloud_builder: Image::default(),
            warnings: bake.warnings,
        };
        catalog.completed()
    }

    /// A catalog of another repository's images names its images and their vendoring list; the
    /// pipeline, the BuildKit image and the cloud builder (with the versions its tag uses) are
    /// this repository's own unless it names its own: they are the build infrastructure, not
    /// the images.
    fn lend_what_is_not_given(&mut self, root: &Path, full: &Path) -> Result<()> {
        let lacking = self.lacking();
        if lacking.is_empty() {
            return Ok(());
        }
        let own = Self::load_from(root, Path::new(CATALOG_PATH)).with_context(|| {
            format!(
                "{} names no {}, so it takes the repository's own, which cannot be read",
                full.display(),
                lacking.join(", ")
            )
        })?;
        if self.pipeline.as_os_str().is_empty() {
            self.pipeline = own.pipeline;
        }
        if self.buildkit.is_empty() {
            self.buildkit = own.buildkit;
        }
        if self.sbom_generator.is_none() {
            // Not lent with BuildKit: the catalog's own list would have to vendor it.
            self.warnings.push(format!(
                "{} names no sbom_generator, so its images get no SBOM attestation: name one, as {CATALOG_PATH} \
                 does, and list it in its vendoring list",
                full.display()
            ));
        }
        if self.cloud_builder.name.is_empty() {
            let builder = own.cloud_builder;
            let tags = builder.tags();
            for name in tags
                .iter()
                .flat_map(|t| t.placeholders())
                .chain(builder.build_args.iter().map(String::as_str))
            {
                if let Some(value) = own.versions.get(name) {
                    self.versions.entry(name.to_string()).or_insert_with(|| value.clone());
                }
            }
            self.cloud_builder = builder;
        }
        Ok(())
    }

    pub fn parse(text: &str) -> Result<Catalog> {
        let catalog: Catalog = toml::from_str(text)?;
        catalog.completed()
    }

    /// Each image tasked (by its name unless it says), and the whole checked.
    fn completed(mut self) -> Result<Catalog> {
        for image in &mut self.images {
            image.task.get_or_insert_with(|| image.name.clone());
        }
        self.validate()?;
        Ok(self)
    }

    fn validate(&self) -> Result<()> {
        let mut tasks = BTreeMap::new();
        // A cloud builder not given is the repository's own, checked with its catalog.
        let cloud_builder = Some(&self.cloud_builder).filter(|image| !image.name.is_empty());
        for image in self.images.iter().chain(cloud_builder) {
            self.validate_templates(image)?;
            if let Some(task) = &image.task
                && let Some(other) = tasks.insert(task.as_str(), image.name.as_str())
            {
                bail!("images `{other}` and `{}` both have task `{task}`", image.name);
            }
            let repository = image.repository();
            if repository.is_empty() || !repository.split('/').all(reference::is_path_component) {
                bail!(
                    "image `{}`: `{repository}` is no repository name (lowercase letters, digits and . _ - \
                     between slashes)",
                    image.name
                );
            }
            image.platforms().map_err(|e| anyhow::anyhow!("image `{}`: {e}", image.name))?;
            for alias in image.aliases(&self.aliases) {
                if let Err(err) = reference::parse(&alias) {
                    bail!("image `{}`: the alias `{alias}` is no image name ({err})", image.name);
                }
            }
        }
        let mut names = BTreeMap::new();
        // Each tag (as written, versions not yet filled in) published by one image.
        let mut published: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for image in &self.images {
            if let Some(other) = names.insert(image.name.as_str(), image) {
                bail!("two images are named `{}`: give each its own name (variants too)", other.name);
            }
            for tag in image.tags() {
                if let Some(other) = published.insert((image.repository(), tag.as_str()), &image.name) {
                    bail!(
                        "images `{other}` and `{}` both publish {}:{}: whichever merged last would win; give \
                         each its own tags",
                        image.name,
                        image.repository(),
                        tag.as_str()
                    );
                }
            }
            for id in image.secrets.keys() {
                if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
                    bail!(
                        "image `{}`: the secret id `{id}` takes letters, digits and _ . - only",
                        image.name
                    );
                }
            }
        }
        // The cloud builder is built by a task of its own, with its tag and versions alone.
        let builder = &self.cloud_builder;
        let given = [
            ("tags", !builder.tags.is_empty()),
            ("args", !builder.args.is_empty()),
            ("target", builder.target.is_some()),
            ("labels", !builder.labels.is_empty()),
            ("annotations", !builder.annotations.is_empty()),
            ("secrets", !builder.secrets.is_empty()),
            ("test", builder.test.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, given)| *given) {
            bail!(
                "[cloud_builder] `{field}`: the cloud builder takes `tag`, `build_args` and `platforms` only"
            );
        }
        Ok(())
    }

    /// Its tags, build arguments, labels and annotations use only versions (and, but for the
    /// first tag, the run's values); it has one tag or more, and annotations at known levels.
    fn validate_templates(&self, image: &Image) -> Result<()> {
        let name = &image.name;
        for arg in &image.build_args {
            if !self.versions.contains_key(arg) {
                bail!("image `{name}` uses `{arg}`, which is not in [versions]");
            }
        }
        let tags = image.tags();
        match (&image.tag, image.tags.is_empty()) {
            (None, true) => bail!("image `{name}` has no tag: give it `tag = \"…\"` or `tags = [\"…\", …]`"),
            (Some(_), false) => bail!("image `{name}` has both `tag` and `tags`: keep one"),
            _ => {}
        }
        if tags[0].is_volatile() {
            bail!(
                "image `{name}`: its first tag `{}` changes from run to run ({}), but it is the one the \
                 up-to-date decision reads: put a tag made of versions first",
                tags[0].as_str(),
                RUN_VALUES.join(", ")
            );
        }
        let templates = tags
            .iter()
            .copied()
            .chain(image.args.values())
            .chain(image.labels.values())
            .chain(image.annotations.values());
        for template in templates {
            for used in template.placeholders() {
                if !self.versions.contains_key(used) && !RUN_VALUES.contains(&used) {
                    bail!(
                        "image `{name}` uses `{used}` in `{}`, which is not in [versions] nor a value of the run \
                         ({})",
                        template.as_str(),
                        RUN_VALUES.join(", ")
                    );
                }
            }
        }
        if let Some(line) = image.test.as_deref().or(self.test.as_deref())
            && shlex::split(line).is_none_or(|words| words.is_empty())
        {
            bail!("image `{name}`: its test `{line}` is no command line (an unclosed quote?)");
        }
        for key in image.annotations.keys() {
            if let Some((level, _)) = key.split_once(':')
                && !["index", "manifest"].contains(&level)
            {
                bail!(
                    "image `{name}`: annotation `{key}`: the level is `index:` or `manifest:` (the default)"
                );
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

/// `path` relative to `root` when it lies inside it (so that commands and messages show the
/// short form), else as it is.
fn relative_to(root: &Path, path: &Path) -> PathBuf {
    let path = normalize(path);
    path.strip_prefix(normalize(root)).map(Path::to_path_buf).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another repository's catalog names its images; the build infrastructure is this one's.
    #[test]
    fn a_catalog_that_names_only_its_images_takes_the_repositorys_pipeline_buildkit_and_cloud_builder() {
        let root = crate::project_root();
        let own = Catalog::load(&root).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let text =
            "[versions]\nV = \"1\"\n[[image]]\nname = \"app\"\ndescription = \"an app\"\ntag = \"{V}\"\n";
        std::fs::write(dir.path().join("images.toml"), text).unwrap();
        let catalog = Catalog::load_from(&root, &dir.path().join("images.toml")).unwrap();
        assert_eq!(catalog.thirdparty, dir.path().join("thirdparty.txt"), "the list beside it");
        assert_eq!(catalog.pipeline, own.pipeline);
        assert_eq!(catalog.buildkit, own.buildkit);
        assert_eq!(catalog.cloud_builder.name, own.cloud_builder.name);
        assert_eq!(catalog.cloud_builder.dockerfile(), own.cloud_builder.dockerfile());
        // With the versions its tag is made of, beside the catalog's own.
        for name in own.cloud_builder.tags().iter().flat_map(|t| t.placeholders()) {
            assert_eq!(catalog.versions.get(name), own.versions.get(name), "{name}");
        }
        assert_eq!(catalog.versions["V"], "1");
        // The SBOM generator is not lent: it is said.
        assert!(
            catalog.warnings.iter().any(|w| w.contains("names no sbom_generator")),
            "{:?}",
            catalog.warnings
        );
        // One it names is its own.
        let text = format!("pipeline = \"ci.yaml\"\n{text}");
        std::fs::write(dir.path().join("images.toml"), text).unwrap();
        let catalog = Catalog::load_from(&root, &dir.path().join("images.toml")).unwrap();
        assert_eq!(catalog.pipeline, dir.path().join("ci.yaml"));
    }

    /// THIRDPARTY and PIPELINE win over what a catalog names or is lent, from the repository
    /// root as CATALOG; BAKE_GROUP with a catalog that is no bake file is said, not ignored.
    #[test]
    fn a_given_list_and_pipeline_win_and_a_bake_group_without_a_bake_file_is_a_warning() {
        let root = crate::project_root();
        let dir = tempfile::tempdir().unwrap();
        let text = "thirdparty = \"mine.txt\"\nsbom_generator = \"s:1\"\n[[image]]\nname = \"app\"\n\
                    description = \"d\"\ntag = \"1\"\n";
        std::fs::write(dir.path().join("images.toml"), text).unwrap();
        let source = CatalogSource {
            path: dir.path().join("images.toml"),
            bake_group: Some("all".into()),
            thirdparty: Some("ci/../lists/thirdparty.txt".into()),
            pipeline: Some(dir.path().join("ci.yaml")),
        };
        let catalog = Catalog::load_source(&root, &source).unwrap();
        assert_eq!(catalog.thirdparty, Path::new("lists/thirdparty.txt"));
        assert_eq!(catalog.pipeline, dir.path().join("ci.yaml"));
        assert_eq!(
            catalog.warnings,
            [format!(
                "BAKE_GROUP=all is read only from a bake file, and the catalog {} is none",
                dir.path().join("images.toml").display()
            )]
        );
        let catalog = Catalog::load_from(&root, &dir.path().join("images.toml")).unwrap();
        assert_eq!(catalog.thirdparty, dir.path().join("mine.txt"));
        assert!(catalog.warnings.is_empty());
    }

    #[test]
    fn rejects_an_unknown_version_in_a_tag() {
        let text = r#"
            thirdparty = "t.txt"
            pipeline = "p.yaml"
            buildkit = "moby/buildkit:v1"
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
    fn an_image_without_a_task_is_tasked_by_its_name() {
        let text = r#"
            thirdparty = "t.txt"
            pipeline = "p.yaml"
            buildkit = "moby/buildkit:v1"
            [versions]
            A = "1"
            [[image]]
            name = "app"
            description = "x"
            tag = "{A}"
            [cloud_builder]
            name = "cb"
            description = "cb"
            tag = "{A}"
        "#;
        let catalog = Catalog::parse(text).unwrap();
        assert_eq!(catalog.image_for_task("app").map(|i| i.name.as_str()), Some("app"));
        assert_eq!(catalog.cloud_builder.task, None, "the cloud builder has tasks of its own");
    }

    /// The entry fields that carry bake's meanings parse, and each wrong use is named.
    #[test]
    fn tags_args_target_labels_annotations_and_secrets_parse_and_are_checked() {
        let catalog = |image: &str| {
            Catalog::parse(&format!(
                "thirdparty = \"t.txt\"\npipeline = \"p.yaml\"\nbuildkit = \"b:1\"\n[versions]\nV = \"1.2\"\n\
                 [[image]]\nname = \"app\"\ndescription = \"d\"\n{image}\n\
                 [cloud_builder]\nname = \"cb\"\ndescription = \"d\"\ntag = \"1\"\n"
            ))
        };
        let app = catalog(
            r#"tags = ["{V}", "latest", "sha-{GIT_SHA_SHORT}"]
target = "runtime"
args = { BUILT = "{DATE}", VERSION = "{V}" }
labels = { "org.example.team" = "platform" }
annotations = { "index:org.example.note" = "n", "manifest:org.example.m" = "m" }
secrets = { token = { env = "NPM_TOKEN" }, key = { file = "key.txt" }, gcp = { gcp_secret = "s" } }"#,
        )
        .unwrap();
        let image = &app.images[0];
        let tags: Vec<&str> = image.tags().iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, ["{V}", "latest", "sha-{GIT_SHA_SHORT}"]);
        assert_eq!(image.target.as_deref(), Some("runtime"));
        assert!(image.args["BUILT"].is_volatile() && !image.args["VERSION"].is_volatile());
        assert_eq!(image.secrets["token"], Secret::Env { env: "NPM_TOKEN".into() });
        assert_eq!(image.secrets["gcp"], Secret::GcpSecret { gcp_secret: "s".into() });
        for (entry, words) in [
            ("", "has no tag"),
            ("tag = \"1\"\ntags = [\"2\"]", "both `tag` and `tags`"),
            ("tags = [\"{DATE}\", \"1\"]", "put a tag made of versions first"),
            ("tag = \"1\"\nargs = { A = \"{NOPE}\" }", "uses `NOPE`"),
            ("tag = \"1\"\nannotations = { \"layer:x\" = \"y\" }", "`index:` or `manifest:`"),
        ] {
            let err = format!("{:#}", catalog(entry).unwrap_err());
            assert!(err.contains(words), "{entry}: {err}");
        }
    }

    /// Two images on one tag, a cloud builder with fields its task does not carry out, a secret
    /// id that would break `--secret`: each refused, naming it.
    #[test]
    fn a_tag_published_twice_a_cloud_builder_with_entry_fields_and_a_bad_secret_id_are_refused() {
        let head = "thirdparty = \"t.txt\"\npipeline = \"p.yaml\"\nbuildkit = \"b:1\"\n";
        let builder = "[cloud_builder]\nname = \"cb\"\ndescription = \"d\"\ntag = \"1\"\n";
        let image =
            |name: &str, rest: &str| format!("[[image]]\nname = \"{name}\"\ndescription = \"d\"\n{rest}\n");
        for (text, words) in [
            (
                format!(
                    "{head}{}{}{builder}",
                    image("small", "repository = \"tools\"\ntags = [\"1-small\", \"latest\"]"),
                    image("full", "repository = \"tools\"\ntags = [\"1-full\", \"latest\"]")
                ),
                "both publish tools:latest",
            ),
            (
                format!("{head}{}{builder}labels = {{ a = \"b\" }}\n", image("app", "tag = \"1\"")),
                "[cloud_builder] `labels`",
            ),
            (
                format!(
                    "{head}{}{builder}",
                    image("app", "tag = \"1\"\nsecrets = { \"a,src=/etc/passwd\" = { env = \"A\" } }")
                ),
                "the secret id `a,src=/etc/passwd`",
            ),
        ] {
            let err = format!("{:#}", Catalog::parse(&text).unwrap_err());
            assert!(err.contains(words), "{err}");
        }
        // The repository's own catalog must name all it lends.
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("images")).unwrap();
        std::fs::write(root.path().join(CATALOG_PATH), image("app", "tag = \"1\"")).unwrap();
        let err = format!("{:#}", Catalog::load(root.path()).unwrap_err());
        assert!(err.contains("names no pipeline, buildkit, [cloud_builder]"), "{err}");
    }

    #[test]
    fn the_repository_catalog_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let catalog = Catalog::load(root).unwrap();
        assert!(catalog.task_images().count() > 0);
        assert_eq!(catalog.thirdparty, Path::new("thirdparty.txt"));
        assert_eq!(catalog.pipeline, Path::new("cloudbuild/pr.yaml"));
        for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
            assert_eq!(image.context(), format!("images/{}", image.name));
            assert!(root.join(image.dockerfile()).is_file(), "{} has no Dockerfile", image.name);
        }
    }
}

#[cfg(test)]
mod path_tests {
    use super::*;

    #[test]
    fn paths_outside_the_root_stay_absolute_and_inside_become_relative() {
        assert_eq!(relative_to(Path::new("/r"), Path::new("/r/images/../x")), Path::new("x"));
        assert_eq!(relative_to(Path::new("/r"), Path::new("/tmp/c")), Path::new("/tmp/c"));
        assert_eq!(normalize(Path::new("images/../thirdparty.txt")), Path::new("thirdparty.txt"));
    }
}
