//! A bake file as the catalog (`CATALOG=docker-bake.hcl`, `docker-bake.json`, or any `.hcl` or
//! `.json`): a repository that describes its images for `docker buildx bake` need not describe
//! them a second time, and they get this tool's graph, pools and up-to-date decision, which bake
//! lacks. The file is read by bake itself, `docker buildx bake --file <f> --print <group>`: the
//! engine's own reading of HCL (variables, with the environment's values for them, `inherits`,
//! matrices, functions), never a parser of ours. What it prints, every value resolved, is mapped
//! here onto catalog entries; everything downstream (tasks, graph, skip, verify) takes them as
//! any images.toml's.
//!
//! - Each target of the group (`BAKE_GROUP`, else `default`; groups in it expanded) and each
//!   target they build on (`target:` contexts, which bake prints too) is an image named after
//!   the target. `context`, `dockerfile`, `target`, `args`, `platforms`, `labels`,
//!   `annotations` and `secret` are the entry's fields of the same meaning (a target without
//!   `platforms` is built for all of `PLATFORMS`).
//! - Its tags name its repository, the last path part of their names (one for all of them),
//!   and its tags, first one first (no tags: `latest`, with a warning). The tags as written are
//!   the image's aliases, so that a child's `FROM acme.example/base:1.0` builds on it.
//! - A context `base = "target:base"` is an edge: its name is an alias of that target, which
//!   every Dockerfile of the catalog may write (so one name cannot name two targets), handed to
//!   the child's build under that name as the parent's new digest, as any parent is. Another
//!   context value is a warning naming it.
//! - Every value is literal: bake resolved its variables, so each becomes a template with no
//!   placeholder (`Template::literal`: a `{` in a label stays a `{`).
//! - An attribute the tool does not carry out (`output`, `cache-from`, `pull`, …) is a warning
//!   naming the target and the attribute; what it cannot build from (an inline Dockerfile, a
//!   remote context, a secret without a source) is an error.
//!
//! The runner: the catalog is read before the settings, so before the run's `Ctx` and its
//! runner exist (its images make the task list the command line is parsed with). The query needs
//! no setting: it only reads, so it runs in a dry run as in any other run (`Runner::query`), and
//! it is logged as every command is (`+ … docker buildx bake …` on stderr). The runner made
//! here runs it in the bake file's folder, where bake resolves the file's relative paths (the
//! contexts, a secret's `src`) as `docker buildx bake` run beside the file does; the catalog's
//! paths are relative to that folder too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use xshell::cmd;

use crate::catalog::Image;
use crate::registry::reference::{self, Written};
use crate::runner::{Runner, sh};
use crate::secrets::Secret;
use crate::template::Template;

/// The attributes of a printed target that map onto an entry's fields.
const MAPPED: [&str; 11] = [
    "description",
    "context",
    "dockerfile",
    "contexts",
    "args",
    "labels",
    "tags",
    "target",
    "annotations",
    "platforms",
    "secret",
];

/// The images a bake file's group makes, and what its reading warns of.
#[derive(Debug)]
pub struct Bake {
    pub images: Vec<Image>,
    /// Each attribute not carried out, by target, as a sentence.
    pub warnings: Vec<String>,
}

/// Whether the catalog at `path` is a bake file (by its name: an images.toml is TOML).
pub fn is_bake_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "hcl" || ext == "json")
}

/// The images of `group` in the bake file `file`, as bake reads it.
pub fn read(file: &Path, group: &str) -> Result<Bake> {
    if !file.is_file() {
        bail!("no such file");
    }
    let folder = file.parent().filter(|f| !f.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let runner = Runner::new(false, folder.to_path_buf());
    let (sh, path) = (sh(), file.display().to_string());
    let printed = runner
        .query(cmd!(sh, "docker buildx bake --file {path} --progress quiet --print {group}"), None)
        .with_context(|| format!("bake cannot read its group `{group}` (BAKE_GROUP)"))?;
    let name = file.file_name().map_or(path.clone(), |name| name.to_string_lossy().into_owned());
    images_of(&printed, group, &name)
}

/// What `docker buildx bake --print` prints.
#[derive(Deserialize)]
struct Printed {
    #[serde(default)]
    group: BTreeMap<String, Group>,
    #[serde(default)]
    target: BTreeMap<String, Map<String, Value>>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    targets: Vec<String>,
}

/// The attributes of a printed target that map onto an entry's fields.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Target {
    description: Option<String>,
    context: Option<String>,
    dockerfile: Option<String>,
    contexts: BTreeMap<String, String>,
    /// A null value is bake's unset.
    args: BTreeMap<String, Option<String>>,
    labels: BTreeMap<String, Option<String>>,
    tags: Vec<String>,
    target: Option<String>,
    /// `key=value`, the key after a level: `index:`, `manifest:`.
    annotations: Vec<String>,
    platforms: Vec<String>,
    secret: Vec<SecretEntry>,
}

/// A secret as bake prints it: `id=token,env=NPM_TOKEN` (buildx before 0.20), or its fields.
#[derive(Deserialize)]
#[serde(untagged)]
enum SecretEntry {
    Text(String),
    Fields(BTreeMap<String, String>),
}

/// The images of `group` in what bake printed for it; `file` names the file in messages.
pub fn images_of(printed: &str, group: &str, file: &str) -> Result<Bake> {
    let printed: Printed = serde_json::from_str(printed)
        .context("`docker buildx bake --print` printed no bake definition this tool can read")?;
    let mut names = Vec::new();
    expand(&printed, group, &mut names, 0)?;
    // The targets the group builds on through `target:` contexts: bake prints them too.
    for name in printed.target.keys() {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let mut warnings = Vec::new();
    let mut edges = Edges::default();
    let mut images = Vec::new();
    for name in &names {
        images.push(image_of(name, &printed.target[name], file, &mut warnings, &mut edges)?);
    }
    for (alias, (parent, child)) in edges.0 {
        let image = images.iter_mut().find(|image| image.name == parent).ok_or_else(|| {
            anyhow!("{file}: target `{child}`: its context `{alias}` names target `{parent}`, which bake did not print")
        })?;
        if !image.aliases.contains(&alias) {
            image.aliases.push(alias);
        }
    }
    Ok(Bake { images, warnings })
}

/// The targets of `name`, a group (its groups expanded in place) or a target, in order.
fn expand(printed: &Printed, name: &str, out: &mut Vec<String>, depth: usize) -> Result<()> {
    if depth > 64 {
        bail!("the group `{name}` is nested more than 64 deep: a group that contains itself?");
    }
    if let Some(group) = printed.group.get(name) {
        for member in &group.targets {
            expand(printed, member, out, depth + 1)?;
        }
    } else if printed.target.contains_key(name) {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_string());
        }
    } else {
        bail!("bake printed no group or target `{name}`");
    }
    Ok(())
}

/// The `target:` contexts: each context name, the target it names and the first child naming
/// it that way.
#[derive(Default)]
struct Edges(BTreeMap<String, (String, String)>);

impl Edges {
    fn add(&mut self, name: &str, parent: &str, child: &str, file: &str) -> Result<()> {
        match self.0.get(name) {
            Some((other, first)) if other != parent => bail!(
                "{file}: the context `{name}` is target `{other}` in `{first}` but target `{parent}` in \
                 `{child}`: a context name is a name of one image in the whole catalog (its alias), so give \
                 each its own"
            ),
            Some(_) => Ok(()),
            None => {
                self.0.insert(name.to_string(), (parent.to_string(), child.to_string()));
                Ok(())
            }
        }
    }
}

fn image_of(
    name: &str,
    raw: &Map<String, Value>,
    file: &str,
    warnings: &mut Vec<String>,
    edges: &mut Edges,
) -> Result<Image> {
    let at = &format!("{file}: target `{name}`");
    if raw.contains_key("dockerfile-inline") {
        bail!(
            "{at}: `dockerfile-inline` is not carried out: the graph reads a Dockerfile file, so write it to one"
        );
    }
    let mut keys: Vec<(&String, &Value)> = raw.iter().collect();
    keys.sort_by_key(|(key, _)| *key);
    for (key, value) in keys {
        let plain_build = key == "call" && value.as_str() == Some("build");
        if !MAPPED.contains(&key.as_str()) && !plain_build {
            warnings.push(format!("{at}: `{key}` is not carried out: {}", not_carried_out(key)));
        }
    }
    let target: Target = serde_json::from_value(Value::Object(raw.clone()))
        .with_context(|| format!("{at}: bake printed attributes this tool cannot read"))?;
    let mut image = Image::default();
    image.name = name.to_string();
    image.description = target.description.clone().unwrap_or_else(|| format!("a target of {file}"));
    let context = target.context.as_deref().unwrap_or(".");
    let context = context.strip_prefix("cwd://").unwrap_or(context);
    if context.contains("://") || context.starts_with("git@") || context.starts_with("target:") {
        bail!(
            "{at}: its context `{context}` is no folder: the tool builds folders beside the bake file, whose \
             files decide whether an image is up to date"
        );
    }
    image.context = Some(PathBuf::from(context));
    let dockerfile = target.dockerfile.as_deref().unwrap_or("Dockerfile");
    if dockerfile.contains("://") {
        bail!("{at}: its dockerfile `{dockerfile}` is not carried out: name a file relative to its context");
    }
    image.dockerfile = Some(PathBuf::from(dockerfile));
    let (repository, tags, aliases) = repository_and_tags(name, &target.tags, at, warnings)?;
    image.repository = (repository != name).then_some(repository);
    image.tags = tags;
    image.aliases = aliases;
    for (context_name, value) in &target.contexts {
        match value.strip_prefix("target:") {
            Some(parent) => edges.add(context_name, parent, name, file)?,
            None => warnings.push(format!(
                "{at}: its context `{context_name}` = `{value}` is not carried out (only `target:` contexts are): \
                 its Dockerfile's `{context_name}` is an image of that name"
            )),
        }
    }
    let literal = |values: &BTreeMap<String, Option<String>>| -> BTreeMap<String, Template> {
        values.iter().filter_map(|(k, v)| Some((k.clone(), Template::literal(v.as_deref()?)))).collect()
    };
    image.args = literal(&target.args);
    // bake adds SOURCE_DATE_EPOCH from the environment to every target's args, as `buildx
    // build` itself does: each build gets it from there, so it is no argument of the entry.
    image.args.remove("SOURCE_DATE_EPOCH");
    image.labels = literal(&target.labels);
    // A bake target has no attribute for a test, and bake refuses unknown ones: its test is the
    // label TEST_LABEL, which is taken out of its labels (it is no label of the image).
    if let Some(test) = image.labels.remove(TEST_LABEL) {
        image.test = Some(test.render(&BTreeMap::new()).expect("a literal renders"));
    }
    for annotation in &target.annotations {
        let (key, value) = annotation
            .split_once('=')
            .ok_or_else(|| anyhow!("{at}: the annotation `{annotation}` is no `key=value`"))?;
        match key.split_once(':') {
            Some((level, _)) if !["index", "manifest"].contains(&level) => warnings.push(format!(
                "{at}: the annotation `{key}` is not carried out: annotations go on the index (`index:`) or on \
                 each platform's manifest (`manifest:`, the default)"
            )),
            _ => {
                image.annotations.insert(key.to_string(), Template::literal(value));
            }
        }
    }
    image.target = target.target.clone();
    image.platforms = Some(target.platforms.clone()).filter(|platforms| !platforms.is_empty());
    for entry in &target.secret {
        let (id, secret) = secret_of(entry, at)?;
        image.secrets.insert(id, secret);
    }
    Ok(image)
}

/// The repository the tags name (the last part of their names), their tags (first one first,
/// each once) and the tags as written (the image's aliases).
fn repository_and_tags(
    name: &str,
    tags: &[String],
    at: &str,
    warnings: &mut Vec<String>,
) -> Result<(String, Vec<Template>, Vec<String>)> {
    if tags.is_empty() {
        warnings.push(format!("{at}: it has no tags: it is published as $DOCKER_REPO/{name}:latest"));
        return Ok((name.to_string(), vec![Template::literal("latest")], Vec::new()));
    }
    let mut repository: Option<(&str, &str)> = None;
    let (mut own, mut aliases) = (Vec::new(), Vec::new());
    for written in tags {
        reference::parse(written)
            .map_err(|err| anyhow!("{at}: the tag `{written}` is no image name ({err})"))?;
        let split = Written::split(written);
        if split.digest.is_some() {
            bail!("{at}: the tag `{written}` has a digest: a tag names a repository and a tag");
        }
        let last = split.name.rsplit('/').next().unwrap_or(split.name);
        match repository {
            Some((first, first_written)) if first != last => bail!(
                "{at}: its tags name two repositories, `{first}` (`{first_written}`) and `{last}` (`{written}`): \
                 an image is published to one, $DOCKER_REPO/<repository>"
            ),
            Some(_) => {}
            None => repository = Some((last, written)),
        }
        let tag = split.tag.unwrap_or("latest");
        if !own.contains(&tag) {
            own.push(tag);
        }
        if !aliases.contains(written) {
            aliases.push(written.clone());
        }
    }
    let repository = repository.map(|(last, _)| last.to_string()).unwrap_or_default();
    Ok((repository, own.into_iter().map(Template::literal).collect(), aliases))
}

/// A secret's id and where its value is read from, as buildx reads `--secret`.
fn secret_of(entry: &SecretEntry, at: &str) -> Result<(String, Secret)> {
    let (written, fields): (String, Vec<(String, String)>) = match entry {
        SecretEntry::Text(text) => {
            let fields = text
                .split(',')
                .map(|field| {
                    field
                        .split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("{at}: the secret `{text}`: `{field}` is no `key=value`"))
                })
                .collect::<Result<_>>()?;
            (text.clone(), fields)
        }
        SecretEntry::Fields(fields) => (
            fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
            fields.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
    };
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for (key, value) in fields {
        match key.to_ascii_lowercase().as_str() {
            "id" => id = Some(value),
            "type" => kind = Some(value),
            "src" | "source" => src = Some(value),
            "env" => env = Some(value),
            other => {
                bail!("{at}: the secret `{written}`: `{other}` is none of its fields (id, type, env, src)")
            }
        }
    }
    let id = id.ok_or_else(|| anyhow!("{at}: the secret `{written}` has no `id`"))?;
    let secret = match (kind.as_deref(), env, src) {
        (Some("env") | None, Some(env), _) => Secret::Env { env },
        // buildx: `type=env,src=NAME` reads the variable NAME, `type=env` alone the id's.
        (Some("env"), None, src) => Secret::Env { env: src.unwrap_or_else(|| id.clone()) },
        (Some("file") | None, None, Some(file)) => Secret::File { file: file.into() },
        (Some("file"), None, None) => Secret::File { file: id.clone().into() },
        (None, None, None) => bail!(
            "{at}: the secret `{written}` says not where its value is (bake takes the variable {id} when it is \
             set, else the file {id}): write `type=env`, `env=NAME` or `src=FILE`, so that a missing one is \
             known before anything is built"
        ),
        (Some(other), ..) => {
            bail!("{at}: the secret `{written}`: `type={other}` is neither `env` nor `file`")
        }
    };
    Ok((id, secret))
}

/// Why the tool does not carry out a bake attribute: what it does instead.
fn not_carried_out(attribute: &str) -> &'static str {
    match attribute {
        "output" => "each image is pushed to $DOCKER_REPO, its platforms merged into one index",
        "cache-from" | "cache-to" => {
            "each platform reads and writes a registry cache of its own, $DOCKER_REPO/cache/<image>:<tag>-<arch>"
        }
        "attest" => "the provenance and SBOM attestations follow PROVENANCE and SBOM",
        "pull" => "the bases are vendored and pinned by digest",
        "no-cache" | "no-cache-filter" => "an image is rebuilt when its inputs change, or with --force",
        "ssh" => "no ssh agent or key is handed to a build",
        "network" | "extra-hosts" | "shm-size" | "ulimits" | "entitlements" => {
            "the builds run with the builder's defaults"
        }
        _ => "this tool does not know it",
    }
}

/// The label of a bake target that is its test (see `Image::test`): bake has no field for one.
pub const TEST_LABEL: &str = "dev.multi-arch-docker.test";

#[cfg(test)]
mod tests {
    use super::*;

    /// What bake 0.13 prints for a file of three targets, a matrix's two and a `target:`
    /// context (`docker buildx bake --print`, trimmed to what each case needs).
    const PRINTED: &str = r#"{
      "group": {
        "default": { "targets": ["base", "app", "tools"] },
        "tools": { "targets": ["tools-small", "tools-full"] }
      },
      "target": {
        "app": {
          "context": "app",
          "contexts": { "base": "target:base", "assets": "docker-image://acme.example/assets:1" },
          "dockerfile": "Dockerfile",
          "args": { "A": "{\"debug\": false}", "UNSET": null },
          "labels": { "org.example.team": "{A}", "dev.multi-arch-docker.test": "sh tests/run.sh {image}" },
          "annotations": ["index:org.example.note=n", "org.example.m=m", "manifest[linux/amd64]:org.example.p=p"],
          "tags": ["acme.example/team/app:1.0", "ghcr.io/acme/app:1.0", "acme.example/team/app:latest"],
          "target": "runtime",
          "secret": ["id=token,env=NPM_TOKEN", "id=key,src=key.txt", "type=env,id=GITHUB_TOKEN"],
          "platforms": ["linux/amd64"],
          "cache-from": ["type=registry,ref=acme.example/team/app:cache"],
          "output": ["type=registry"],
          "call": "build"
        },
        "base": {
          "context": "base",
          "dockerfile": "Dockerfile",
          "tags": ["acme.example/team/base:1.0"]
        },
        "tools-full": { "context": "tools", "dockerfile": "full.Dockerfile", "tags": ["acme.example/tools:full"], "pull": true },
        "tools-small": { "context": "tools", "dockerfile": "small.Dockerfile", "tags": ["acme.example/tools:small"] }
      }
    }"#;

    fn image<'a>(bake: &'a Bake, name: &str) -> &'a Image {
        bake.images.iter().find(|i| i.name == name).unwrap_or_else(|| panic!("no image {name}"))
    }

    #[test]
    fn each_target_of_the_group_is_an_image_with_the_entry_fields() {
        let bake = images_of(PRINTED, "default", "docker-bake.hcl").unwrap();
        let names: Vec<&str> = bake.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["base", "app", "tools-small", "tools-full"],
            "the group's order, matrices expanded"
        );
        let app = image(&bake, "app");
        assert_eq!(
            (app.context.as_deref(), app.dockerfile.as_deref()),
            (Some(Path::new("app")), Some(Path::new("Dockerfile")))
        );
        assert_eq!(app.repository(), "app");
        let tags: Vec<&str> = app.tags().iter().map(|t| t.as_str()).collect();
        assert_eq!(tags, ["1.0", "latest"], "each tag once, first one first");
        assert_eq!(
            app.aliases,
            ["acme.example/team/app:1.0", "ghcr.io/acme/app:1.0", "acme.example/team/app:latest"],
            "the names as written"
        );
        assert_eq!(app.target.as_deref(), Some("runtime"));
        assert_eq!(app.platforms.as_deref(), Some(&["linux/amd64".to_string()][..]));
        let none = BTreeMap::new();
        assert_eq!(app.args["A"].render(&none).unwrap(), "{\"debug\": false}", "a literal brace");
        assert!(!app.args.contains_key("UNSET"), "bake's null is no argument");
        assert_eq!(
            app.labels["org.example.team"].placeholders().count(),
            0,
            "bake resolved it: no placeholder"
        );
        assert_eq!(app.labels["org.example.team"].render(&none).unwrap(), "{A}");
        assert_eq!(app.test.as_deref(), Some("sh tests/run.sh {image}"), "the test label is its test");
        assert!(!app.labels.contains_key(TEST_LABEL), "and no label of the image");
        let annotations: Vec<&str> = app.annotations.keys().map(String::as_str).collect();
        assert_eq!(annotations, ["index:org.example.note", "org.example.m"]);
        assert_eq!(app.secrets["token"], Secret::Env { env: "NPM_TOKEN".into() });
        assert_eq!(app.secrets["key"], Secret::File { file: "key.txt".into() });
        assert_eq!(app.secrets["GITHUB_TOKEN"], Secret::Env { env: "GITHUB_TOKEN".into() });
        // The matrix's variants share their repository under tags of their own.
        let small = image(&bake, "tools-small");
        assert_eq!((small.repository(), small.tags()[0].as_str()), ("tools", "small"));
        assert_eq!(small.dockerfile.as_deref(), Some(Path::new("small.Dockerfile")));
        assert_eq!(small.platforms, None, "no platforms: every platform of the run");
    }

    /// `contexts = { base = "target:base" }`: the context's name is the parent's alias, which
    /// the child's Dockerfile writes.
    #[test]
    fn a_target_context_is_an_alias_of_the_parent() {
        let bake = images_of(PRINTED, "default", "docker-bake.hcl").unwrap();
        assert_eq!(image(&bake, "base").aliases, ["acme.example/team/base:1.0", "base"]);
        assert!(!image(&bake, "app").aliases.contains(&"assets".to_string()));
    }

    #[test]
    fn each_attribute_not_carried_out_is_a_warning_naming_the_target_and_the_attribute() {
        let bake = images_of(PRINTED, "default", "docker-bake.hcl").unwrap();
        let expected = [
            "docker-bake.hcl: target `app`: `cache-from` is not carried out: each platform reads and writes a \
             registry cache of its own, $DOCKER_REPO/cache/<image>:<tag>-<arch>",
            "docker-bake.hcl: target `app`: `output` is not carried out: each image is pushed to $DOCKER_REPO, its \
             platforms merged into one index",
            "docker-bake.hcl: target `app`: its context `assets` = `docker-image://acme.example/assets:1` is not \
             carried out (only `target:` contexts are): its Dockerfile's `assets` is an image of that name",
            "docker-bake.hcl: target `app`: the annotation `manifest[linux/amd64]:org.example.p` is not carried \
             out: annotations go on the index (`index:`) or on each platform's manifest (`manifest:`, the default)",
            "docker-bake.hcl: target `tools-full`: `pull` is not carried out: the bases are vendored and pinned by \
             digest",
        ];
        assert_eq!(bake.warnings, expected, "`call = \"build\"` is what the tool does: no warning");
    }

    /// Another group takes its targets and the targets they build on, nothing else.
    #[test]
    fn a_group_takes_its_targets_and_those_they_build_on() {
        let printed = r#"{
          "group": { "default": { "targets": ["app-only"] }, "app-only": { "targets": ["app"] } },
          "target": {
            "app": { "context": "app", "contexts": { "base": "target:base" }, "tags": ["a/app:1"] },
            "base": { "context": "base", "tags": ["a/base:1"] }
          }
        }"#;
        let bake = images_of(printed, "app-only", "b.hcl").unwrap();
        let names: Vec<&str> = bake.images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["app", "base"]);
        let err = images_of(printed, "nope", "b.hcl").unwrap_err().to_string();
        assert_eq!(err, "bake printed no group or target `nope`");
    }

    #[test]
    fn what_the_tool_cannot_build_from_is_an_error_naming_it() {
        let printed = |target: &str| {
            format!(r#"{{"group": {{"default": {{"targets": ["t"]}}}}, "target": {{"t": {target}}}}}"#)
        };
        for (target, words) in [
            (
                r#"{"dockerfile-inline": "FROM scratch", "tags": ["a/t:1"]}"#,
                "`dockerfile-inline` is not carried out",
            ),
            (
                r#"{"context": "https://github.com/acme/t.git", "tags": ["a/t:1"]}"#,
                "its context `https://github.com/acme/t.git` is no folder",
            ),
            (
                r#"{"tags": ["a/t:1", "a/other:1"]}"#,
                "its tags name two repositories, `t` (`a/t:1`) and `other` (`a/other:1`)",
            ),
            (r#"{"tags": ["A/T:1"]}"#, "the tag `A/T:1` is no image name"),
            (
                r#"{"tags": ["a/t:1"], "secret": ["id=token"]}"#,
                "the secret `id=token` says not where its value is",
            ),
            (r#"{"tags": ["a/t:1"], "secret": ["id=token,mode=0400"]}"#, "`mode` is none of its fields"),
            (
                r#"{"tags": ["a/t:1"], "annotations": ["novalue"]}"#,
                "the annotation `novalue` is no `key=value`",
            ),
        ] {
            let err = format!("{:#}", images_of(&printed(target), "default", "b.hcl").unwrap_err());
            assert!(err.starts_with("b.hcl: target `t`: ") && err.contains(words), "{target}: {err}");
        }
    }

    #[test]
    fn one_context_name_for_two_targets_is_an_error() {
        let printed = r#"{
          "group": { "default": { "targets": ["a", "b"] } },
          "target": {
            "a": { "contexts": { "base": "target:one" }, "tags": ["x/a:1"] },
            "b": { "contexts": { "base": "target:two" }, "tags": ["x/b:1"] },
            "one": { "tags": ["x/one:1"] },
            "two": { "tags": ["x/two:1"] }
          }
        }"#;
        let err = images_of(printed, "default", "b.hcl").unwrap_err().to_string();
        assert!(err.contains("the context `base` is target `one` in `a` but target `two` in `b`"), "{err}");
    }

    /// buildx 0.20 and later print a secret as its fields; a target without tags is its name's.
    #[test]
    fn secrets_as_fields_and_a_target_without_tags() {
        let printed = r#"{
          "group": { "default": { "targets": ["t"] } },
          "target": { "t": { "secret": [{ "id": "token", "env": "NPM_TOKEN" }, { "id": "key", "src": "/run/key" }] } }
        }"#;
        let bake = images_of(printed, "default", "b.hcl").unwrap();
        let t = image(&bake, "t");
        assert_eq!(t.secrets["token"], Secret::Env { env: "NPM_TOKEN".into() });
        assert_eq!(t.secrets["key"], Secret::File { file: "/run/key".into() });
        assert_eq!((t.repository(), t.tags()[0].as_str()), ("t", "latest"));
        assert_eq!(
            bake.warnings,
            ["b.hcl: target `t`: it has no tags: it is published as $DOCKER_REPO/t:latest"]
        );
    }
}
