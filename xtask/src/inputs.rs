//! What an image is built from, as one digest: every file of its build context that is sent
//! (`.dockerignore` honoured), its Dockerfile, its build arguments, its platforms, the digest of
//! every image it starts from, and the options of the build command that change its output.
//! The digest and the record behind it travel on the published index as annotations, so that
//! the next run can tell, with one request, that an image is up to date, or say which input
//! changed.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dockerignore::Patterns;
use crate::platform::Platforms;
use crate::registry::manifest::{hex, sha256_digest, short_digest};

/// The annotation on a published index that holds the digest of its inputs.
pub const DIGEST_ANNOTATION: &str = "dev.multi-arch-docker.inputs";
/// The annotation that holds the inputs themselves (JSON), to say what changed.
pub const RECORD_ANNOTATION: &str = "dev.multi-arch-docker.inputs.record";
/// The annotation that holds how long each platform's build took (JSON, `linux/arm64` → seconds):
/// the next run's weights for the critical path. Not an input: it changes no decision.
pub const BUILD_SECONDS_ANNOTATION: &str = "dev.multi-arch-docker.build-seconds";

/// How inputs are reckoned: a record made another way is never taken for a match.
const VERSION: u32 = 1;

/// Up to this many files, the record names each (for "late.txt changed"); above it, only their
/// digest as a whole is kept, so that the index stays small.
const MAX_FILES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    pub version: u32,
    /// Every file and folder sent to the builder: path, kind, mode and contents.
    pub context: String,
    /// Each file's own digest (short), by path; empty above `MAX_FILES` files.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// The Dockerfile, also counted apart: it may live outside the context.
    pub dockerfile: String,
    /// `--build-arg` names and values.
    pub args: BTreeMap<String, String>,
    pub platforms: String,
    /// Each image the Dockerfile starts from (as it names it), and the digest built from.
    pub bases: BTreeMap<String, String>,
    /// The options of the build command that change what it produces.
    pub options: Vec<String>,
}

/// The parts of `Inputs` besides the files: what the plan decides.
pub struct Given {
    pub args: BTreeMap<String, String>,
    pub platforms: Platforms,
    pub bases: BTreeMap<String, String>,
    pub options: Vec<String>,
}

/// A build's files as the builder receives them, hashed: its context (what `.dockerignore`
/// leaves) and its Dockerfile. A run hashes each image's files once, when it plans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    context: String,
    files: BTreeMap<String, String>,
    dockerfile: String,
}

impl Files {
    pub fn hash(context: &Path, dockerfile: &Path) -> Result<Files> {
        let hashed = hash_context(context, dockerfile)?;
        let text =
            std::fs::read(dockerfile).with_context(|| format!("cannot read {}", dockerfile.display()))?;
        Ok(Files { context: hashed.digest, files: hashed.files, dockerfile: sha256_digest(&text) })
    }
}

impl Inputs {
    /// The inputs of a build of `files` with what the plan decided.
    pub fn of(files: &Files, given: Given) -> Inputs {
        Inputs {
            version: VERSION,
            context: files.context.clone(),
            files: files.files.clone(),
            dockerfile: files.dockerfile.clone(),
            args: given.args,
            platforms: given.platforms.to_string(),
            bases: given.bases,
            options: given.options,
        }
    }

    /// The record as the annotation holds it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("inputs serialize")
    }

    pub fn from_json(text: &str) -> Option<Inputs> {
        serde_json::from_str(text).ok()
    }

    /// The digest of the record: equal digests, equal inputs.
    pub fn digest(&self) -> String {
        sha256_digest(self.to_json().as_bytes())
    }

    /// What changed from `old` to `self`, one phrase each ("late.txt changed", "build argument
    /// ALPINE_VERSION 3.15 → 3.16").
    pub fn changes_since(&self, old: &Inputs) -> Vec<String> {
        let mut changes = Vec::new();
        if old.version != self.version {
            changes.push("its inputs were recorded by another version of the xtask".to_string());
            return changes;
        }
        if old.dockerfile != self.dockerfile {
            changes.push("the Dockerfile changed".to_string());
        }
        if old.context != self.context {
            if old.files.is_empty() || self.files.is_empty() {
                changes.push("the build context changed".to_string());
            } else {
                // The Dockerfile, named above already when it changed.
                let files = map_changes(&old.files, &self.files, |path, _, _| format!("{path} changed"));
                changes.extend(files.into_iter().filter(|f| f != "Dockerfile changed"));
            }
        }
        let shown = |value: &str| if value.is_empty() { "\"\"".to_string() } else { value.to_string() };
        changes.extend(map_changes(&old.args, &self.args, |name, old, new| {
            format!("build argument {name} {} → {}", shown(old), shown(new))
        }));
        if old.platforms != self.platforms {
            changes.push(format!("platforms {} → {}", old.platforms, self.platforms));
        }
        changes.extend(map_changes(&old.bases, &self.bases, |base, old, new| {
            format!("base {base} {} → {}", short_digest(old), short_digest(new))
        }));
        if old.options != self.options {
            changes.push(format!("build options {} → {}", old.options.join(" "), self.options.join(" ")));
        }
        if changes.is_empty() && old != self {
            changes.push("its inputs changed".to_string());
        }
        changes
    }
}

/// The keys added, removed and changed between two maps, in key order.
fn map_changes(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    changed: impl Fn(&str, &str, &str) -> String,
) -> Vec<String> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (old.get(key), new.get(key)) {
            (Some(a), Some(b)) if a != b => Some(changed(key, a, b)),
            (None, Some(_)) => Some(format!("{key} added")),
            (Some(_), None) => Some(format!("{key} removed")),
            _ => None,
        })
        .collect()
}

/// The build context as sent: its digest, and each file's when there are few.
struct ContextDigest {
    digest: String,
    files: BTreeMap<String, String>,
}

/// Walk the context as the builder receives it: `<Dockerfile>.dockerignore` beside the
/// Dockerfile, else the context's `.dockerignore`, decides what is left out.
fn hash_context(dir: &Path, dockerfile: &Path) -> Result<ContextDigest> {
    let own = dockerfile.with_file_name(format!(
        "{}.dockerignore",
        dockerfile.file_name().map_or("Dockerfile".into(), |n| n.to_string_lossy())
    ));
    let ignore = [own, dir.join(".dockerignore")].into_iter().find(|p| p.is_file());
    let patterns = match ignore {
        Some(path) => Patterns::parse(
            &std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => Patterns::default(),
    };
    let mut entries = Vec::new();
    walk(dir, "", &patterns, &mut entries)?;
    entries.sort();
    let mut whole = Sha256::new();
    for (path, entry) in &entries {
        whole.update(format!("{path}\0{entry}\n"));
    }
    let files = if entries.len() <= MAX_FILES {
        entries
            .into_iter()
            .map(|(path, entry)| (path, hex(&Sha256::digest(entry.as_bytes()))[..12].to_string()))
            .collect()
    } else {
        BTreeMap::new()
    };
    Ok(ContextDigest { digest: format!("sha256:{}", hex(&whole.finalize())), files })
}

/// Every entry under `dir` that is sent, as (path, "kind mode digest").
fn walk(dir: &Path, prefix: &str, patterns: &Patterns, out: &mut Vec<(String, String)>) -> Result<()> {
    let reading = || format!("cannot read the build context folder {}", dir.display());
    for entry in std::fs::read_dir(dir).with_context(reading)? {
        let entry = entry.with_context(reading)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let meta = entry.path().symlink_metadata().with_context(reading)?;
        let excluded = patterns.excludes(&path);
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            // A left-out folder is walked only when an exception may bring something back.
            if excluded && !patterns.has_exceptions() {
                continue;
            }
            if !excluded {
                out.push((path.clone(), format!("dir {mode:o}")));
            }
            walk(&entry.path(), &path, patterns, out)?;
        } else if !excluded {
            let what = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(entry.path()).with_context(reading)?;
                format!("link {mode:o} {}", target.display())
            } else {
                format!("file {mode:o} {}", file_digest(&entry.path())?)
            };
            out.push((path, what));
        }
    }
    Ok(())
}

fn file_digest(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 256 * 1024];
    loop {
        let read = file.read(&mut buffer).with_context(|| format!("cannot read {}", path.display()))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(format!("sha256:{}", hex(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reckon(dir: &Path, dockerfile: &Path) -> Result<Inputs> {
        Ok(Inputs::of(&Files::hash(dir, dockerfile)?, given()))
    }

    fn given() -> Given {
        Given {
            args: BTreeMap::from([("V".into(), "1".into())]),
            platforms: Platforms::parse("linux/amd64,linux/arm64").unwrap(),
            bases: BTreeMap::from([("r/base:1".into(), "sha256:aaaa".into())]),
            options: vec!["--pull".into()],
        }
    }

    fn context() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Dockerfile"), "FROM r/base:1\nCOPY . /\n").unwrap();
        std::fs::write(dir.path().join("late.txt"), "one\n").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.sh"), "echo\n").unwrap();
        let dockerfile = dir.path().join("Dockerfile");
        (dir, dockerfile)
    }

    #[test]
    fn the_same_inputs_give_the_same_digest_and_a_changed_file_is_named() {
        let (dir, dockerfile) = context();
        let first = reckon(dir.path(), &dockerfile).unwrap();
        assert_eq!(first.digest(), reckon(dir.path(), &dockerfile).unwrap().digest());
        assert_eq!(first.files.len(), 4, "{:?}", first.files);

        std::fs::write(dir.path().join("late.txt"), "two\n").unwrap();
        let second = reckon(dir.path(), &dockerfile).unwrap();
        assert_ne!(first.digest(), second.digest());
        assert_eq!(second.changes_since(&first), ["late.txt changed"]);

        // The mode counts: COPY keeps it.
        let script = dir.path().join("sub/a.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let third = reckon(dir.path(), &dockerfile).unwrap();
        assert_eq!(third.changes_since(&second), ["sub/a.sh changed"]);

        std::fs::write(dir.path().join("Dockerfile"), "FROM r/base:1\n").unwrap();
        let fourth = reckon(dir.path(), &dockerfile).unwrap();
        assert_eq!(fourth.changes_since(&third), ["the Dockerfile changed"]);
    }

    #[test]
    fn ignored_files_do_not_count() {
        let (dir, dockerfile) = context();
        std::fs::write(dir.path().join(".dockerignore"), "*.log\nbuild/\n").unwrap();
        let before = reckon(dir.path(), &dockerfile).unwrap();
        std::fs::write(dir.path().join("debug.log"), "noise").unwrap();
        std::fs::create_dir(dir.path().join("build")).unwrap();
        std::fs::write(dir.path().join("build/out"), "noise").unwrap();
        let after = reckon(dir.path(), &dockerfile).unwrap();
        assert_eq!(before.digest(), after.digest());
        std::fs::write(dir.path().join("new.txt"), "sent").unwrap();
        let added = reckon(dir.path(), &dockerfile).unwrap();
        assert_eq!(added.changes_since(&after), ["new.txt added"]);
        // The Dockerfile's own ignore file wins over the context's.
        std::fs::write(dir.path().join("Dockerfile.dockerignore"), "new.txt\n").unwrap();
        let own = reckon(dir.path(), &dockerfile).unwrap();
        assert!(own.files.contains_key("debug.log") && !own.files.contains_key("new.txt"), "{:?}", own.files);
    }

    #[test]
    fn every_other_input_is_named_when_it_changes() {
        let (dir, dockerfile) = context();
        let old = reckon(dir.path(), &dockerfile).unwrap();
        let mut new = old.clone();
        new.args.insert("V".into(), "2".into());
        new.args.insert("REFRESH".into(), "2026-12-01".into());
        new.platforms = "linux/arm64".into();
        new.bases.insert("r/base:1".into(), "sha256:bbbbbbbbbbbbbbbbbbbb".into());
        new.options.push("--provenance=mode=max".into());
        assert_eq!(
            new.changes_since(&old),
            [
                "REFRESH added",
                "build argument V 1 → 2",
                "platforms linux/amd64,linux/arm64 → linux/arm64",
                "base r/base:1 sha256:aaaa → sha256:bbbbbbbbbbbb",
                "build options --pull → --pull --provenance=mode=max",
            ]
        );
        let mut other = old.clone();
        other.version = 0;
        assert_eq!(old.changes_since(&other), ["its inputs were recorded by another version of the xtask"]);
        assert_eq!(Inputs::from_json(&old.to_json()), Some(old));
    }
}
