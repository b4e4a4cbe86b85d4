//! `cloudbuild/pr.yaml`, read as data: its substitutions and steps, and the `cargo xtask`
//! commands each step runs. seed-arm64 takes its builds from here, so the pipeline stays the one
//! source of truth.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Pipeline {
    #[serde(default)]
    pub substitutions: BTreeMap<String, String>,
    #[serde(default)]
    pub options: Options,
    pub steps: Vec<Step>,
    /// The build's timeout, as Cloud Build writes durations (`3600s`).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// The options every step shares.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// `NAME=VALUE` entries, in every step's environment.
    #[serde(default)]
    pub env: Vec<String>,
    /// Every substitution is also an environment variable of every step.
    #[serde(default, rename = "automapSubstitutions")]
    pub automap_substitutions: bool,
}

impl Options {
    /// The environment as (name, value) pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        env_pairs(&self.env)
    }
}

/// `NAME=VALUE` entries as (name, value) pairs.
fn env_pairs(env: &[String]) -> Vec<(String, String)> {
    env.iter().filter_map(|e| e.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

#[derive(Debug, Deserialize)]
pub struct Step {
    #[serde(default)]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub entrypoint: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// `NAME=VALUE` entries.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, rename = "waitFor")]
    pub wait_for: Option<Vec<String>>,
    /// A script run instead of `entrypoint` and `args` (`#!/bin/sh` unless it starts with a
    /// shebang of its own). Cloud Build substitutes nothing in it.
    #[serde(default)]
    pub script: Option<String>,
    /// The step's own timeout (`600s`).
    #[serde(default)]
    pub timeout: Option<String>,
    /// The working directory, relative to `/workspace` unless absolute.
    #[serde(default)]
    pub dir: Option<String>,
    /// Every substitution is also an environment variable of this step.
    #[serde(default, rename = "automapSubstitutions")]
    pub automap_substitutions: Option<bool>,
}

impl Pipeline {
    /// The pipeline at `path` (relative to `root` unless absolute): the catalog's `pipeline`.
    pub fn load(root: &Path, path: &Path) -> Result<Pipeline> {
        let path = root.join(path);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("cannot parse {}", path.display()))
    }
}

impl Step {
    /// Every `cargo xtask …` this step runs, each as the words after `cargo xtask`: the step's
    /// own command (`entrypoint: cargo`) or the commands of its `bash -c` script.
    pub fn xtask_commands(&self) -> Vec<Vec<String>> {
        match (self.entrypoint.as_deref(), self.args.as_slice()) {
            (Some("cargo"), [xtask, rest @ ..]) if xtask == "xtask" => vec![rest.to_vec()],
            (Some("bash" | "sh"), [flag, script, ..]) if flag == "-c" => script_commands(script),
            _ => Vec::new(),
        }
    }

    /// The step's environment as (name, value) pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        env_pairs(&self.env)
    }
}

/// The `cargo xtask` commands of a shell script: each line split at `&&`, `||` and `;`.
fn script_commands(script: &str) -> Vec<Vec<String>> {
    let joined = script.replace("\\\n", " ");
    joined
        .lines()
        .flat_map(|line| line.split("&&").flat_map(|part| part.split("||")).flat_map(|part| part.split(';')))
        .filter_map(|command| {
            let words = shlex::split(command.trim())?;
            let start = words.windows(2).position(|pair| pair[0] == "cargo" && pair[1] == "xtask")?;
            Some(words[start + 2..].to_vec())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_xtask_commands_in_scripts() {
        let script = "set -e\nif [ x ]; then\n  cargo xtask start-vm --wait\nfi\ncargo xtask ssh-tunnel --wait && cargo xtask buildx-publish-odb\n";
        assert_eq!(
            script_commands(script),
            [vec!["start-vm", "--wait"], vec!["ssh-tunnel", "--wait"], vec!["buildx-publish-odb"]]
        );
    }
}
