//! What a source tag points at now, for the lock: its digest, the manifests it lists with their
//! platforms, and the artifacts attached to any of them. Artifacts are found the ways signers
//! attach them without a registry's help: cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`) and
//! the OCI 1.1 referrers tag (`sha256-<hex>`, an index of the artifacts whose `subject` is that
//! manifest), and, where the registry has one, the OCI referrers API. An index may list
//! referrers of its own platform manifests among its entries (BuildKit's attestations since
//! 0.32): those are read with the index and recorded like the API's.

use anyhow::{Context, Result};
use futures_util::future::join_all;
use oci_client::Reference;

use super::attestations::is_attached;
use super::manifest;
use super::referrers::{Referrer, referrers_tag};
use super::session::Session;

/// A tag, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: String,
    /// (digest, platform) of each manifest an index lists, in its order.
    pub manifests: Vec<(String, String)>,
    /// The artifacts attached to the tag's manifests, sorted.
    pub artifacts: Vec<Artifact>,
    /// Whether the index's attached entries were read for a `subject` (now, or before).
    pub entries_read: bool,
}

/// Something attached to a manifest: a signature, an attestation, an SBOM.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Artifact {
    /// Found under a tag: cosign's, or the referrers fallback tag (an index of referrers).
    Tagged { tag: String, digest: String },
    /// Listed by the registry's referrers API as referring to `subject`, or an entry of the
    /// tag's index whose manifest has that `subject`.
    Referrer { subject: String, descriptor: Referrer },
}

/// The tags under which signers attach artifacts to the manifest `digest`.
pub fn artifact_tags(digest: &str) -> Vec<String> {
    let base = referrers_tag(digest);
    vec![format!("{base}.sig"), format!("{base}.att"), format!("{base}.sbom"), base]
}

/// What a tag resolved to before, from the lock.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    pub digest: &'a str,
    /// (digest, platform) of each manifest its index lists.
    pub manifests: &'a [(String, String)],
    /// Whether the lock says the index's attached entries were read for a `subject`. A lock
    /// written before they were says not: they are read once more to find the referrers.
    pub entries_read: bool,
}

/// Resolve `source` (a tag); `None` when the tag does not exist. `known`: what the tag resolved
/// to before; when it still points there, its index is not read again (a pull, on Docker Hub).
/// `with_artifacts`: also look for the artifacts of the tag's manifests (a HEAD per candidate
/// tag, free against pull quotas, a referrers query, and a GET of each attestation entry of the
/// index, a pull, to read its `subject`).
pub async fn resolve(
    session: &Session,
    source: &Reference,
    known: Option<Known<'_>>,
    with_artifacts: bool,
) -> Result<Option<Resolved>> {
    let Some(digest) = session.manifest_digest(source, false).await? else {
        return Ok(None);
    };
    let (manifests, attached, read_before) = match known {
        Some(known) if known.digest == digest => {
            // The lock's platforms: only `unknown/unknown` entries can be attached ones.
            let unread = if known.entries_read { Vec::new() } else { attached_in_lock(known.manifests) };
            (known.manifests.to_vec(), unread, known.entries_read)
        }
        _ => {
            let (manifests, attached) = manifests_of(session, source, &digest).await?;
            (manifests, attached, false)
        }
    };
    let artifacts = if with_artifacts {
        let subjects = std::iter::once(digest.as_str()).chain(manifests.iter().map(|(d, _)| d.as_str()));
        let mut artifacts = artifacts_of(session, source, subjects).await?;
        artifacts.extend(referrers_among(session, source, &attached).await?);
        artifacts.sort();
        artifacts.dedup();
        artifacts
    } else {
        Vec::new()
    };
    Ok(Some(Resolved { digest, manifests, artifacts, entries_read: read_before || with_artifacts }))
}

/// (digest, platform) of each manifest the index at `digest` lists (none for an image
/// manifest), and the digests of the entries attached to the platforms (attestations,
/// artifacts), which may be referrers.
async fn manifests_of(
    session: &Session,
    source: &Reference,
    digest: &str,
) -> Result<(Vec<(String, String)>, Vec<String>)> {
    let bytes = session.manifest(&source.clone_with_digest(digest.to_string())).await?;
    let parsed = manifest::parse(&bytes).with_context(|| format!("manifest {digest} of {source}"))?;
    let manifests = parsed
        .children
        .iter()
        .map(|child| {
            let platform = child.platform.as_ref().map_or("unknown".to_string(), ToString::to_string);
            (child.digest.clone(), platform)
        })
        .collect();
    let attached = parsed.children.iter().filter(|c| is_attached(c)).map(|c| c.digest.clone()).collect();
    Ok((manifests, attached))
}

/// The entries of a locked index that may be attached ones: those of platform `unknown/unknown`.
fn attached_in_lock(manifests: &[(String, String)]) -> Vec<String> {
    manifests.iter().filter(|(_, platform)| platform == "unknown/unknown").map(|(d, _)| d.clone()).collect()
}

/// Which of the manifests `digests` have a `subject`, as referrers of it. Each is read (a pull
/// on Docker Hub); its media type and size are the manifest's own.
async fn referrers_among(session: &Session, source: &Reference, digests: &[String]) -> Result<Vec<Artifact>> {
    let read = join_all(digests.iter().map(|digest| async move {
        let at = source.clone_with_digest(digest.clone());
        let bytes = session.manifest(&at).await?;
        let parsed = manifest::parse(&bytes).with_context(|| format!("{at}"))?;
        Ok::<_, anyhow::Error>(parsed.subject.map(|subject| Artifact::Referrer {
            subject: subject.digest,
            descriptor: Referrer {
                digest: digest.clone(),
                media_type: parsed.media_type,
                size: bytes.len() as u64,
                artifact_type: parsed.artifact_type,
            },
        }))
    }))
    .await;
    let mut artifacts = Vec::new();
    for answer in read {
        artifacts.extend(answer?);
    }
    Ok(artifacts)
}

/// The artifacts in `source`'s repository for any of `subjects`: the artifact tags present, and
/// what the referrers API lists, where the registry has one.
async fn artifacts_of(
    session: &Session,
    source: &Reference,
    subjects: impl Iterator<Item = &str>,
) -> Result<Vec<Artifact>> {
    let subjects: Vec<&str> = subjects.collect();
    let candidates: Vec<String> = subjects.iter().flat_map(|s| artifact_tags(s)).collect();
    let heads = candidates.iter().map(|tag| {
        let at =
            Reference::with_tag(source.registry().to_string(), source.repository().to_string(), tag.clone());
        async move {
            let found = session.manifest_digest(&at, false).await?;
            Ok::<_, anyhow::Error>(found.map(|digest| Artifact::Tagged { tag: tag.clone(), digest }))
        }
    });
    let listed = subjects.iter().map(|subject| async move {
        let referrers = session.referrers(source, subject).await?.unwrap_or_default();
        let artifacts = referrers
            .into_iter()
            .map(|d| Artifact::Referrer { subject: subject.to_string(), descriptor: d.into() });
        Ok::<_, anyhow::Error>(artifacts.collect::<Vec<_>>())
    });
    let (tagged, listed) = futures_util::join!(join_all(heads), join_all(listed));
    let mut found = Vec::new();
    for answer in tagged {
        found.extend(answer?);
    }
    for answer in listed {
        found.extend(answer?);
    }
    found.sort();
    found.dedup();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_tags_follow_cosign_and_the_oci_fallback() {
        assert_eq!(
            artifact_tags("sha256:ab12"),
            ["sha256-ab12.sig", "sha256-ab12.att", "sha256-ab12.sbom", "sha256-ab12"]
        );
    }
}
