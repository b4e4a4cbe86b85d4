//! What a catalog entry asks of its build beyond its Dockerfile and versions, with bake's
//! meanings: build arguments with values (`args`), the stage (`target`), labels (the OCI
//! `source`, `revision` and `created` by default), annotations on each manifest and on the
//! index, and the secrets its steps read. Decided once per image and run, then handed to every
//! platform's build, the merge and the inputs. A value that changes from run to run (a
//! template with `{GIT_SHA}` or `{DATE}`, the default `revision` and `created` labels) is left
//! out of the inputs: it alone does not make an unchanged image out of date; a build made for
//! another reason gets the run's values.

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::secrets::Secrets;

const SOURCE: &str = "org.opencontainers.image.source";
const REVISION: &str = "org.opencontainers.image.revision";
const CREATED: &str = "org.opencontainers.image.created";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    /// The entry's `args`, filled in, by name.
    pub args: Vec<(String, String)>,
    pub target: Option<String>,
    /// By name: the defaults the entry does not set, then its own.
    pub labels: Vec<(String, String)>,
    /// On each platform's manifest (`manifest:` or no level written), by key.
    pub manifest_annotations: Vec<(String, String)>,
    /// On the index the merge makes (`index:`), by key.
    pub index_annotations: Vec<(String, String)>,
    /// `--secret` and its value, for each secret, in id order.
    pub secret_flags: Vec<String>,
    /// The arguments, `label:<key>`s and `annotation:<key>`s whose values change from run to run.
    volatile: BTreeSet<String>,
}

impl EntryOptions {
    /// The entry's options for this run; `secrets` found already (before anything is built).
    pub fn of(ctx: &Ctx, image: &Image, secrets: &Secrets) -> Result<EntryOptions> {
        let s = &ctx.settings;
        let values = s.template_values();
        let mut options = EntryOptions { target: image.target.clone(), ..EntryOptions::default() };
        let context = |what: &str| format!("image `{}`: its {what}", image.name);
        for (name, template) in &image.args {
            options.args.push((name.clone(), template.render(&values).with_context(|| context("args"))?));
            if template.is_volatile() {
                options.volatile.insert(name.clone());
            }
        }
        let defaults = [
            (SOURCE, s.run.source.clone()),
            (REVISION, s.run.git_sha.clone()),
            (CREATED, Some(s.run.created.clone()).filter(|created| !created.is_empty())),
        ];
        for (key, value) in defaults {
            if let Some(value) = value
                && !image.labels.contains_key(key)
            {
                options.labels.push((key.to_string(), value));
                // Where the checkout came from, which commit, when: none of them is what is built.
                options.volatile.insert(format!("label:{key}"));
            }
        }
        for (key, template) in &image.labels {
            options.labels.push((key.clone(), template.render(&values).with_context(|| context("labels"))?));
            // The commit and the moment change from run to run however they are written (a bake
            // file's `timestamp()` is a literal by the time it is read).
            if template.is_volatile() || [REVISION, CREATED].contains(&key.as_str()) {
                options.volatile.insert(format!("label:{key}"));
            }
        }
        options.labels.sort();
        for (written, template) in &image.annotations {
            let value = template.render(&values).with_context(|| context("annotations"))?;
            let (index, key) = match written.split_once(':') {
                Some(("index", key)) => (true, key),
                Some(("manifest", key)) => (false, key),
                _ => (false, written.as_str()),
            };
            let level =
                if index { &mut options.index_annotations } else { &mut options.manifest_annotations };
            level.push((key.to_string(), value));
            if template.is_volatile() || [REVISION, CREATED].contains(&key) {
                options.volatile.insert(format!("annotation:{written}"));
            }
        }
        options.secret_flags = secrets.flags(&image.name);
        Ok(options)
    }

    /// The flags of each platform's `docker buildx build`, after the build arguments.
    pub fn build_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(target) = &self.target {
            flags.extend(["--target".to_string(), target.clone()]);
        }
        for (key, value) in &self.labels {
            flags.extend(["--label".to_string(), format!("{key}={value}")]);
        }
        for (key, value) in &self.manifest_annotations {
            flags.extend(["--annotation".to_string(), format!("manifest:{key}={value}")]);
        }
        flags.extend(self.secret_flags.iter().cloned());
        flags
    }

    /// The flags of the merge: the index's annotations.
    pub fn merge_flags(&self) -> Vec<String> {
        self.index_annotations
            .iter()
            .flat_map(|(key, value)| ["--annotation".to_string(), format!("index:{key}={value}")])
            .collect()
    }

    /// Whether the argument `name` of the entry changes from run to run: no input then.
    pub fn is_volatile_arg(&self, name: &str) -> bool {
        self.volatile.contains(name)
    }

    /// The options the inputs record, besides the build's own: what changes what is built, the
    /// volatile values and the secrets (their ids and sources, never a value) left out.
    pub fn input_options(&self) -> Vec<String> {
        let mut options = Vec::new();
        if let Some(target) = &self.target {
            options.push(format!("--target={target}"));
        }
        for (key, value) in &self.labels {
            if !self.volatile.contains(&format!("label:{key}")) {
                options.push(format!("--label={key}={value}"));
            }
        }
        for (level, annotations) in
            [("manifest", &self.manifest_annotations), ("index", &self.index_annotations)]
        {
            for (key, value) in annotations {
                let volatile = [format!("annotation:{level}:{key}"), format!("annotation:{key}")];
                if !volatile.iter().any(|name| self.volatile.contains(name)) {
                    options.push(format!("--annotation={level}:{key}={value}"));
                }
            }
        }
        options
    }
}
