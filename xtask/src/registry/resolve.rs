//! What a source tag points at now, for the lock: its digest, the manifests it lists with their
//! platforms, and the artifacts attached to any of them. Artifacts are found the ways signers
//! attach them without a registry's help: cosign's tags (`sha256-<hex>.sig`, `.att`, `.sbom`) and
//! the OCI 1.1 referrers tag (`sha256-<hex>`, an index of the artifacts whose `subject` is that
//! manifest), and, where the registry has one, the OCI referrers API.

use anyhow::{Context, Result};
use futures_util::future::join_all;
use oci_client::Reference;

use super::manifest;
use super::session::Session;

/// A tag, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub digest: String,
    /// (digest, platform) of each manifest an index lists, in its order.
    pub manifests: Vec<(String, String)>,
    /// (tag, digest) of each artifact tag found.
    pub artifacts: Vec<(String, String)>,
}

/// The tags under which signers attach artifacts to the manifest `digest`.
pub fn artifact_tags(digest: &str) -> Vec<String> {
    let base = digest.replacen(':', "-", 1);
    vec![format!("{base}.sig"), format!("{base}.att"), format!("{base}.sbom"), base]
}

/// Resolve `source` (a tag); `None` when the tag does not exist. `with_artifacts`: also look
/// for the artifacts of the tag's manifests (a HEAD per candidate tag, free against pull quotas).
pub async fn resolve(
    session: &Session,
    source: &Reference,
    with_artifacts: bool,
) -> Result<Option<Resolved>> {
    let Some(digest) = session.manifest_digest(source, false).await? else {
        return Ok(None);
    };
    let bytes = session.manifest(&source.clone_with_digest(digest.clone())).await?;
    let parsed = manifest::parse(&bytes).with_context(|| format!("manifest {digest} of {source}"))?;
    let manifests: Vec<(String, String)> = parsed
        .children
        .iter()
        .map(|child| {
            let platform = child.platform.as_ref().map_or("unknown".to_string(), ToString::to_string);
            (child.digest.clone(), platform)
        })
        .collect();
    let artifacts = if with_artifacts {
        let subjects = std::iter::once(digest.as_str()).chain(manifests.iter().map(|(d, _)| d.as_str()));
        artifacts_of(session, source, subjects).await?
    } else {
        Vec::new()
    };
    Ok(Some(Resolved { digest, manifests, artifacts }))
}

/// The artifact tags present in `source`'s repository for any of `subjects`.
async fn artifacts_of(
    session: &Session,
    source: &Reference,
    subjects: impl Iterator<Item = &str>,
) -> Result<Vec<(String, String)>> {
    let candidates: Vec<String> = subjects.flat_map(artifact_tags).collect();
    let heads = candidates.iter().map(|tag| {
        let at =
            Reference::with_tag(source.registry().to_string(), source.repository().to_string(), tag.clone());
        async move { session.manifest_digest(&at, false).await.map(|found| found.map(|d| (tag.clone(), d))) }
    });
    let mut found = Vec::new();
    for answer in join_all(heads).await {
        found.extend(answer?);
    }
    found.sort();
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
