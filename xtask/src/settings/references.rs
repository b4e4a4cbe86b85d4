//! The names the settings give to what a run makes: where each image is published, its build
//! caches, the vendored bases, and the build arguments that hand `DOCKER_REPO` and the versions
//! to Dockerfiles. Every reference a task uses is made here, from `DOCKER_REPO`, the tags and
//! `TAG_MODIFIER`, so that a plan and a build cannot name an image two ways.

use super::Settings;
use std::collections::BTreeMap;

use crate::catalog::{Catalog, Image};
use crate::invalid::Invalid;
use crate::platform::Platform;

impl Settings {
    /// The first image reference these settings make that is not valid, if any.
    pub(super) fn invalid_reference(&self, catalog: &Catalog) -> Option<String> {
        for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
            for reference in [self.image_ref(image), self.cache_ref(image, &Platform::new("linux", "amd64"))]
            {
                if let Err(err) = crate::registry::reference::parse(&reference) {
                    return Some(format!(
                        "the settings make the invalid image reference `{reference}` ({err}): check DOCKER_REPO \
                         (or REGISTRY, GCP_PROJECT, ENV), TAG_MODIFIER and the version settings"
                    ));
                }
            }
        }
        None
    }

    /// Where thirdparty vendors the image at `path` (`moby/buildkit:v0.18.0`, say).
    pub fn vendored(&self, path: &str) -> String {
        format!("{}/thirdparty/{path}", self.docker_repo)
    }

    /// Root of the buildx registry caches.
    pub fn cache_root(&self) -> String {
        format!("{}/cache", self.docker_repo)
    }

    /// The reference a Dockerfile names a catalog image by (`FROM ${DOCKER_REPO}/runtime:…`): as
    /// published, without the tag modifier, which a Dockerfile cannot know.
    pub fn named_ref(&self, image: &Image) -> String {
        format!("{}/{}:{}", self.docker_repo, image.repository(), self.tag(image))
    }

    /// Where an image is published: `$DOCKER_REPO/<name>:<tag>[-$TAG_MODIFIER]`.
    pub fn image_ref(&self, image: &Image) -> String {
        let mut reference = self.named_ref(image);
        if !self.tag_modifier.is_empty() {
            reference.push('-');
            reference.push_str(&self.tag_modifier);
        }
        reference
    }

    /// The buildx registry cache of one platform of an image, `…/cache/<name>:<tag>-<arch>`:
    /// each platform builds on its own node with a cache of its own. The tag modifier is left out
    /// on purpose: a seeding run (`TAG_MODIFIER=arm64-seed`) must fill the very cache the real
    /// build's arm64 half reads.
    pub fn cache_ref(&self, image: &Image, platform: &Platform) -> String {
        let arch = platform.suffix();
        format!("{}/{}:{}-{arch}", self.cache_root(), image.name, self.tag(image))
    }

    /// What the catalog's templates are filled from: the versions and the run's values.
    pub fn template_values(&self) -> BTreeMap<String, String> {
        let mut values = self.run.template_values();
        values.extend(self.versions.clone());
        values
    }

    /// Where RELEASE=together merges an image until every image of the run has passed:
    /// `<image_ref>-candidate`, a working name like the platforms' `<tag>-<arch>`, no release.
    pub fn candidate_ref(&self, image: &Image) -> String {
        format!("{}-candidate", self.image_ref(image))
    }

    /// Every reference the image is published under, `image_ref` first: each of its tags, with
    /// `TAG_MODIFIER`. Err: a tag uses a value this run does not know.
    pub fn image_refs(&self, image: &Image) -> Result<Vec<String>, Invalid> {
        let values = self.template_values();
        let mut refs = vec![self.image_ref(image)];
        for template in &image.tags()[1..] {
            let mut reference =
                format!("{}/{}:{}", self.docker_repo, image.repository(), template.render(&values)?);
            if !self.tag_modifier.is_empty() {
                reference.push('-');
                reference.push_str(&self.tag_modifier);
            }
            // Before anything is built: the merge would refuse it after every platform's build.
            if let Err(err) = crate::registry::reference::parse(&reference) {
                return Err(Invalid::new(format!(
                    "its tag `{}` makes `{reference}`, which is no image reference ({err})",
                    template.as_str()
                )));
            }
            if !refs.contains(&reference) {
                refs.push(reference);
            }
        }
        Ok(refs)
    }

    /// The image's tag, its versions filled in; without `TAG_MODIFIER`.
    pub fn tag(&self, image: &Image) -> String {
        // The first tag is made of versions alone: the catalog's check refuses another.
        image.tags()[0].render(&self.versions).expect("the first tag uses only versions")
    }

    /// The build arguments of an image: `DOCKER_REPO` first, then the image's own versions.
    pub fn build_arg_values(&self, image: &Image) -> Vec<(String, String)> {
        let own = image.build_args.iter().map(|name| (name.clone(), self.versions[name].clone()));
        [("DOCKER_REPO".to_string(), self.docker_repo.clone())].into_iter().chain(own).collect()
    }

    /// `--build-arg NAME=VALUE` pairs, as `build_arg_values` orders them.
    pub fn build_args(&self, image: &Image) -> Vec<String> {
        build_arg_flags(&self.build_arg_values(image))
    }
}

/// `--build-arg NAME=VALUE` for each pair, in order.
pub fn build_arg_flags(args: &[(String, String)]) -> Vec<String> {
    args.iter().flat_map(|(name, value)| ["--build-arg".to_string(), format!("{name}={value}")]).collect()
}
