//! The rules settings must keep, each with the message that names the setting and the rule: a
//! value that breaks one is kept as given and listed (`info` shows it beside the others; every
//! other task refuses to run). Each check takes plain values and returns its message, so that
//! `Settings::resolve` only gathers them.

use super::declared::{DEFAULT_ENV, LOCAL_ENV};
use crate::invalid::Invalid;
use crate::registry::reference::{
    PATH_COMPONENT_RULE, TAG_RULE, is_path_component, is_tag, is_tag_char, path_without_host,
};

/// A setting that breaks a rule: which one, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What is wrong with `ENV`: empty (`set_but_empty`: the variable is set to nothing), or not a
/// path component.
pub(super) fn env(env: &str, set_but_empty: bool) -> Option<String> {
    if set_but_empty || env.is_empty() {
        return Some(
            "ENV is set but empty: name the Artifact Registry repository, e.g. ENV=docker-dev, or unset it"
                .into(),
        );
    }
    (!is_path_component(env)).then(|| {
        format!(
            "ENV `{env}` names a repository and goes into image paths: {PATH_COMPONENT_RULE} (e.g. docker-dev, local)"
        )
    })
}

/// What is wrong with `GCP_PROJECT`: it goes into image paths.
pub(super) fn gcp_project(project: &str) -> Option<String> {
    (!is_path_component(project)).then(|| {
        format!("GCP_PROJECT `{project}` goes into image paths: {PATH_COMPONENT_RULE}, as project ids are")
    })
}

/// What is wrong with `TAG_MODIFIER`, appended to tags after a `-`; empty is none.
pub(super) fn tag_modifier(modifier: &str) -> Option<String> {
    (!modifier.is_empty() && !is_tag(modifier)).then(|| {
        format!(
            "TAG_MODIFIER `{modifier}` is appended to tags as `-<modifier>`: give {TAG_RULE} (e.g. arm64-seed)"
        )
    })
}

/// What is wrong with a `REFRESH` value (`now` already turned into the time): it becomes a build
/// argument.
pub(super) fn refresh(value: &str) -> Option<String> {
    (value.len() > 128 || !value.chars().all(|c| c.is_ascii_graphic())).then(|| {
        format!(
            "REFRESH `{value}` becomes a build argument: give up to 128 printable characters \
             without spaces (e.g. `now`, 2026-12-01 or a build id)"
        )
    })
}

/// What is wrong with a `DOCKER_REPO` given as is: a scheme, or a path that is not lowercase.
pub(super) fn docker_repo(repo: &str) -> Option<String> {
    if repo.contains("://") {
        return Some(format!(
            "DOCKER_REPO `{repo}` has a scheme: give a registry path such as `localhost:5000/dev`, \
             without `http://` or `https://`"
        ));
    }
    let path = path_without_host(repo);
    let bad = path.split('/').find(|component| !is_path_component(component))?;
    Some(format!(
        "DOCKER_REPO `{repo}`: `{bad}` is not a valid path component: {PATH_COMPONENT_RULE} (e.g. `{}`)",
        repo.to_ascii_lowercase()
    ))
}

/// What is wrong with the value of the catalog's version variable `name`: it goes into tags.
pub(super) fn version(name: &str, value: &str) -> Option<String> {
    (!value.chars().all(is_tag_char))
        .then(|| format!("{name} `{value}` goes into tags: letters, digits and _ . - only"))
}

/// `BUILDS_PER_NODE` as a number, 1 or more; unset or empty: no limit.
pub(super) fn builds_per_node(text: Option<&str>) -> Result<Option<usize>, Invalid> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(Invalid::new(format!(
                "BUILDS_PER_NODE `{text}`: give a number of builds, 1 or more (unset: no limit)"
            ))),
        },
    }
}

/// What is wrong with the VMs of the pool, in order: a VM named twice, a name Compute Engine
/// would refuse.
pub(super) fn vms(arm64_vms: &[String], amd64_vms: &[String]) -> Vec<String> {
    let mut messages = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for vm in arm64_vms.iter().chain(amd64_vms) {
        if !seen.insert(vm) {
            messages
                .push(format!("the VM {vm} is named twice in ARM64_VMS and AMD64_VMS: each VM is one node"));
        }
        if !is_path_component(vm) {
            messages.push(format!(
                "the VM name `{vm}` is not a Compute Engine name: lowercase letters, digits and -"
            ));
        }
    }
    messages
}

/// The repositories the README names: ENV is one of them, or someone's own `<name>-test`.
const KNOWN_ENVS: [&str; 3] = [DEFAULT_ENV, "docker-prod", LOCAL_ENV];

/// A warning for an `ENV` that names none of the documented repositories (`prod` for
/// `docker-prod`, say), with the `DOCKER_REPO` it leads to.
pub(super) fn unusual_env(env: &str, docker_repo: &str) -> Option<String> {
    if KNOWN_ENVS.contains(&env) || env.ends_with("-test") {
        return None;
    }
    let guess = KNOWN_ENVS.iter().find(|known| known.ends_with(&format!("-{env}")));
    let hint = guess.map_or(String::new(), |known| format!(" Did you mean ENV={known}?"));
    Some(format!(
        "ENV={env} is none of {}, or <name>-test: it makes DOCKER_REPO {docker_repo}.{hint}",
        KNOWN_ENVS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules are the reference grammar's: what it refuses is named by the setting's own rule,
    /// not later as an invalid reference (`a_-b` and `a._b` passed the settings' old rule).
    #[test]
    fn paths_and_tags_keep_the_reference_grammar() {
        for env_value in ["a_-b", "a._b", "a___b", "Local"] {
            let message = env(env_value, false).unwrap_or_else(|| panic!("{env_value} passed"));
            assert!(
                message.ends_with(&format!("{PATH_COMPONENT_RULE} (e.g. docker-dev, local)")),
                "{message}"
            );
        }
        assert_eq!(env("docker__dev", false), None);
        assert_eq!(
            docker_repo("localhost:5000/a._b/c").as_deref(),
            Some(
                "DOCKER_REPO `localhost:5000/a._b/c`: `a._b` is not a valid path component: image paths take \
                 lowercase letters and digits, joined by one `.`, one or two `_`, or `-`s (e.g. \
                 `localhost:5000/a._b/c`)"
            )
        );
        assert_eq!(docker_repo("Registry.Example:5000/team"), None, "the registry is no path component");
        assert_eq!(tag_modifier(""), None);
        assert_eq!(tag_modifier(&"m".repeat(128)), None);
        assert!(tag_modifier(&"m".repeat(129)).is_some());
        assert!(tag_modifier(".seed").unwrap().contains(TAG_RULE));
        assert_eq!(version("V", "3.15-rc_1"), None);
        assert!(version("V", "3.15:1").is_some());
    }
}
