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

use super::attestations::is_attestation;
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

/// Resolve `source` (a tag); `None` when the tag does not exist. `known`: what the tag resolved
/// to before (digest, manifests); when it still points there, its index is not read again (a
/// pull, on Docker Hub). `with_artifacts`: also look for the artifacts of the tag's manifests
/// (a HEAD per candidate tag, free against pull quotas, and a referrers query).
pub async fn resolve(
    session: &Session,
    source: &Reference,
    known: Option<(&str, &[(String, String)])>,
    with_artifacts: bool,
) -> Result<Option<Resolved>> {
    let Some(digest) = session.manifest_digest(source, false).await? else {
        return Ok(None);
    };
    let (manifests, in_index) = match known {
        Some((known_digest, manifests)) if known_digest == digest => (manifests.to_vec(), Vec::new()),
        _ => manifests_of(session, source, &digest).await?,
    };
    let artifacts = if with_artifacts {
        let subjects = std::iter::once(digest.as_str()).chain(manifests.iter().map(|(d, _)| d.as_str()));
        let mut artifacts = artifacts_of(session, source, subjects).await?;
        artifacts.extend(in_index);
        artifacts.sort();
        artifacts.dedup();
        artifacts
    } else {
        Vec::new()
    };
    Ok(Some(Resolved { digest, manifests, artifacts }))
}

/// (digest, platform) of each manifest the index at `digest` lists (none for an image
/// manifest), and those of its entries that refer to another manifest (a `subject`). Only the
/// entries that may (attestations, artifacts) are read: each read is a pull on Docker Hub.
async fn manifests_of(
    session: &Session,
    source: &Reference,
    digest: &str,
) -> Result<(Vec<(String, String)>, Vec<Artifact>)> {
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
    let maybe_referrers =
        parsed.children.iter().filter(|child| is_attestation(child) || child.artifact_type.is_some());
    let read = join_all(maybe_referrers.map(|child| async move {
        let at = source.clone_with_digest(child.digest.clone());
        let parsed = manifest::parse(&session.manifest(&at).await?).with_context(|| format!("{at}"))?;
        let media_type =
            if child.media_type.is_empty() { parsed.media_type.clone() } else { child.media_type.clone() };
        Ok::<_, anyhow::Error>(parsed.subject.map(|subject| Artifact::Referrer {
            subject: subject.digest,
            descriptor: Referrer {
                digest: child.digest.clone(),
                media_type,
                size: child.size,
                artifact_type: parsed.artifact_type,
            },
        }))
    }))
    .await;
    let mut artifacts = Vec::new();
    for answer in read {
        artifacts.extend(answer?);
    }
    Ok((manifests, artifacts))
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
