//! `thirdparty.lock`: the digests `thirdparty` vendors, committed beside `thirdparty.txt` so that
//! two builds of one commit start from the same bytes, and a base image that changes shows in
//! review as a small diff, the way a dependency bump does.
//!
//! TOML, one table per source tag (sorted), each with the digest the tag pointed at, when that
//! digest was first seen, the manifests it lists with their platforms (index order), and the
//! signatures and other artifacts attached to it (sorted by tag).
//!
//! A tag the list pins (`<tag>@sha256:…`) is keyed by its tag as any other, and its digest is the
//! pin: `mirroring::locking` keeps the two in agreement.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::registry::manifest::short_digest as short;

const HEADER: &str = "\
# thirdparty.lock: what `cargo xtask thirdparty` vendors, by digest. Written by
# `cargo xtask thirdparty --update [image…]`; `--locked` copies exactly these digests.
# Commit it: a refresh of the base images is then a diff a reviewer can read.
";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Key: the source tag as `thirdparty.txt` names it, `<image>:<tag>`.
    #[serde(default, rename = "tag")]
    pub tags: BTreeMap<String, LockedTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedTag {
    /// What the tag pointed at: an index, or a single image manifest.
    pub digest: String,
    /// When this digest was first seen for the tag (UTC, RFC 3339).
    pub first_seen: String,
    /// The manifests of an index, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<LockedManifest>,
    /// Signatures, attestations, SBOMs and referrers attached to the tag's manifests, by tag.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<LockedArtifact>,
    /// Whether the index's attached entries (attestations) were read for a `subject`, so that
    /// those that refer to a platform are among `artifacts`. A lock written before they were
    /// read lacks it: the tag's next `--update` reads them, once.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub entries_read: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockedManifest {
    pub digest: String,
    /// `os/architecture[/variant]`; `unknown/unknown` for an attestation.
    pub platform: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LockedArtifact {
    /// `sha256-<hex>.sig` (cosign), `.att`, `.sbom`, or `sha256-<hex>` (the OCI referrers
    /// fallback tag); empty for a referrer found through the registry's referrers API.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tag: String,
    pub digest: String,
    /// A referrer (found through the referrers API, or an entry of the tag's index with a
    /// `subject`): the manifest it refers to, and its descriptor's fields, to list it in the
    /// destination's fallback tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// The lock of a list: `thirdparty.txt` → `thirdparty.lock`, beside it.
pub fn path_for(list: &Path) -> PathBuf {
    list.with_extension("lock")
}

impl Lock {
    /// The lock at `path`; none yet is an empty lock.
    pub fn load(path: &Path) -> Result<Lock> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| {
                format!(
                    "cannot parse {}: fix it, or delete it and run `cargo xtask thirdparty --update`",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn to_text(&self) -> String {
        let mut sorted = self.clone();
        for tag in sorted.tags.values_mut() {
            tag.artifacts.sort();
        }
        let body = toml::to_string(&sorted).expect("a lock always serializes");
        format!("{HEADER}\n{body}")
    }

    /// Write the lock, unless the file already says exactly this; whether it was written.
    pub fn save(&self, path: &Path) -> Result<bool> {
        let text = self.to_text();
        if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(true)
    }
}

impl LockedTag {
    /// Whether the tag's index lists the manifest `digest` (an entry is copied with it).
    pub fn lists(&self, digest: &str) -> bool {
        self.manifests.iter().any(|m| m.digest == digest)
    }

    fn platforms(&self) -> String {
        if self.manifests.is_empty() {
            return "one manifest".to_string();
        }
        let platforms: Vec<&str> = self.manifests.iter().map(|m| m.platform.as_str()).collect();
        platforms.join(" ")
    }
}

/// One difference between two locks, as `cargo update` tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added { tag: String, new: LockedTag },
    Updated { tag: String, old: LockedTag, new: LockedTag },
    Removed { tag: String, old: LockedTag },
}

/// What changed from `old` to `new`, tag by tag in order; a tag whose digest and artifacts are
/// the same is no change.
pub fn changes(old: &Lock, new: &Lock) -> Vec<Change> {
    let mut changes = Vec::new();
    for (tag, locked) in &new.tags {
        match old.tags.get(tag) {
            None => changes.push(Change::Added { tag: tag.clone(), new: locked.clone() }),
            Some(before)
                if before.digest != locked.digest
                    || sorted(&before.artifacts) != sorted(&locked.artifacts) =>
            {
                changes.push(Change::Updated { tag: tag.clone(), old: before.clone(), new: locked.clone() })
            }
            Some(_) => {}
        }
    }
    for (tag, locked) in &old.tags {
        if !new.tags.contains_key(tag) {
            changes.push(Change::Removed { tag: tag.clone(), old: locked.clone() });
        }
    }
    changes
}

fn sorted(artifacts: &[LockedArtifact]) -> Vec<LockedArtifact> {
    let mut artifacts = artifacts.to_vec();
    artifacts.sort();
    artifacts
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Added { tag, new } => {
                write!(f, "      Adding {tag} {} ({})", short(&new.digest), new.platforms())?;
            }
            Change::Updated { tag, old, new } if old.digest == new.digest => {
                // Only what is attached changed: a signature added upstream, say.
                let (before, after) = (old.artifacts.len(), new.artifacts.len());
                return write!(
                    f,
                    "    Updating {tag} {}: signature(s)/artifact(s) {before} → {after}",
                    short(&new.digest)
                );
            }
            Change::Updated { tag, old, new } => {
                write!(f, "    Updating {tag} {} → {}", short(&old.digest), short(&new.digest))?;
                let (before, after) = (old.platforms(), new.platforms());
                if before == after {
                    write!(f, " ({after})")?;
                } else {
                    write!(f, " ({before} → {after})")?;
                }
            }
            Change::Removed { tag, old } => write!(f, "    Removing {tag} {}", short(&old.digest))?,
        }
        if let Change::Added { new, .. } | Change::Updated { new, .. } = self
            && !new.artifacts.is_empty()
        {
            write!(f, ", {} signature(s)/artifact(s)", new.artifacts.len())?;
        }
        Ok(())
    }
}

/// Now, as RFC 3339 in UTC to the second: `2026-11-29T11:20:00Z`.
pub fn utc_now() -> String {
    let seconds =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(seconds)
}

/// `unix_seconds` as RFC 3339, UTC, to the second.
pub fn rfc3339(unix_seconds: u64) -> String {
    let (days, rest) = (unix_seconds / 86_400, unix_seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(digest: &str, platforms: &[&str]) -> LockedTag {
        LockedTag {
            digest: digest.into(),
            first_seen: "2026-11-29T00:00:00Z".into(),
            manifests: platforms
                .iter()
                .enumerate()
                .map(|(n, p)| LockedManifest { digest: format!("sha256:{n}"), platform: p.to_string() })
                .collect(),
            artifacts: Vec::new(),
            entries_read: false,
        }
    }

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_951_230), "2026-11-29T11:20:30Z");
    }

    #[test]
    fn round_trips_sorted_and_stable() {
        let mut lock = Lock::default();
        lock.tags.insert("docker.io/b:1".into(), tag("sha256:bb", &["linux/amd64"]));
        let mut a = tag("sha256:aa", &["linux/amd64", "linux/arm64"]);
        a.artifacts = vec![
            LockedArtifact { tag: "sha256-aa.sig".into(), digest: "sha256:s2".into(), ..Default::default() },
            LockedArtifact { tag: "sha256-0.att".into(), digest: "sha256:s1".into(), ..Default::default() },
        ];
        lock.tags.insert("docker.io/a:1".into(), a);
        let text = lock.to_text();
        assert!(text.find("docker.io/a:1").unwrap() < text.find("docker.io/b:1").unwrap(), "{text}");
        assert!(text.find("sha256-0.att").unwrap() < text.find("sha256-aa.sig").unwrap(), "{text}");
        let back: Lock = toml::from_str(&text).unwrap();
        assert_eq!(back.to_text(), text);
    }

    #[test]
    fn changes_read_like_cargo_update() {
        let mut old = Lock::default();
        old.tags.insert("docker.io/alpine:3".into(), tag("sha256:aaaaaaaaaaaa1111", &["linux/amd64"]));
        old.tags.insert("docker.io/gone:1".into(), tag("sha256:dddddddddddd", &[]));
        old.tags.insert("docker.io/same:1".into(), tag("sha256:eeeeeeeeeeee", &[]));
        let mut new = Lock::default();
        new.tags.insert(
            "docker.io/alpine:3".into(),
            tag("sha256:bbbbbbbbbbbb2222", &["linux/amd64", "linux/arm64"]),
        );
        new.tags.insert("docker.io/new:1".into(), tag("sha256:cccccccccccc", &["linux/amd64"]));
        new.tags.insert("docker.io/same:1".into(), tag("sha256:eeeeeeeeeeee", &[]));
        let mut signed = tag("sha256:eeeeeeeeeeee", &[]);
        signed.artifacts.push(LockedArtifact {
            tag: "sha256-ee.sig".into(),
            digest: "sha256:5".into(),
            ..Default::default()
        });
        new.tags.insert("docker.io/signed:1".into(), signed);
        old.tags.insert("docker.io/signed:1".into(), tag("sha256:eeeeeeeeeeee", &[]));
        let lines: Vec<String> = changes(&old, &new).iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "    Updating docker.io/alpine:3 sha256:aaaaaaaaaaaa → sha256:bbbbbbbbbbbb (linux/amd64 → linux/amd64 linux/arm64)",
                "      Adding docker.io/new:1 sha256:cccccccccccc (linux/amd64)",
                "    Updating docker.io/signed:1 sha256:eeeeeeeeeeee: signature(s)/artifact(s) 0 → 1",
                "    Removing docker.io/gone:1 sha256:dddddddddddd",
            ]
        );
    }
}
