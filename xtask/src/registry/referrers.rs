//! The manifests attached to a manifest (its referrers: signatures, attestations, SBOMs), listed
//! the two ways the distribution spec allows: the registry's referrers API, or, where a registry
//! has none (Distribution 2.8), the index tagged `sha256-<hex of the subject>` that clients keep
//! up to date themselves. A client pushing a manifest with a `subject` to such a registry must
//! add it to that tag, merged with what the tag lists already.

use anyhow::{Context, Result};
use oci_client::Reference;

use super::manifest::{self, Descriptor};
use super::session::Session;

/// The fields of a referrers index entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub artifact_type: Option<String>,
}

impl From<Descriptor> for Referrer {
    /// An entry without a media type (the spec requires one) is taken for what referrers
    /// almost always are, an image manifest, so that no entry written from it lacks one.
    fn from(descriptor: Descriptor) -> Referrer {
        let media_type = if descriptor.media_type.is_empty() {
            manifest::OCI_MANIFEST.to_string()
        } else {
            descriptor.media_type
        };
        Referrer {
            digest: descriptor.digest,
            media_type,
            size: descriptor.size,
            artifact_type: descriptor.artifact_type,
        }
    }
}

/// The OCI referrers fallback tag of the manifest `digest`: `sha256:ab…` → `sha256-ab…`; cosign's
/// tags add `.sig`, `.att` or `.sbom` to it.
pub fn referrers_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// Where `subject`'s fallback tag is, in `repository`'s repository.
pub fn fallback_reference(repository: &Reference, subject: &str) -> Reference {
    Reference::with_tag(
        repository.registry().to_string(),
        repository.repository().to_string(),
        referrers_tag(subject),
    )
}

/// The referrers of `subject` in `repository`'s repository: what the referrers API lists, or,
/// without one, what the fallback tag lists (nothing when there is no such tag).
pub async fn referrers_of(
    session: &Session,
    repository: &Reference,
    subject: &str,
) -> Result<Vec<Descriptor>> {
    if let Some(listed) = session.referrers(repository, subject).await? {
        return Ok(listed);
    }
    let tag = fallback_reference(repository, subject);
    match session.manifest_if_any(&tag).await? {
        Some(bytes) => Ok(manifest::parse(&bytes).with_context(|| format!("{tag}: not an index"))?.children),
        None => Ok(Vec::new()),
    }
}

/// The fallback index `existing` (the tag's bytes, if it is there) with `adding` merged in: its
/// entries kept as they are, byte for byte in meaning (annotations and all), and each referrer it
/// lacks appended, by digest. `None` when it lists every one already: nothing to write.
pub fn merged_fallback_index(existing: Option<&[u8]>, adding: &[Referrer]) -> Result<Option<Vec<u8>>> {
    let mut index: serde_json::Value = match existing {
        Some(bytes) => serde_json::from_slice(bytes).context("the referrers tag is not JSON")?,
        None => serde_json::json!({"schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": []}),
    };
    if !index["manifests"].is_array() {
        index["manifests"] = serde_json::json!([]);
    }
    let entries = index["manifests"].as_array_mut().expect("made an array above");
    let mut missing: Vec<&Referrer> = adding
        .iter()
        .filter(|referrer| !entries.iter().any(|entry| entry["digest"] == referrer.digest.as_str()))
        .collect();
    if missing.is_empty() && existing.is_some() {
        return Ok(None);
    }
    missing.sort_by(|a, b| a.digest.cmp(&b.digest));
    missing.dedup_by(|a, b| a.digest == b.digest);
    for referrer in missing {
        let mut entry = serde_json::json!({
            "mediaType": referrer.media_type, "digest": referrer.digest, "size": referrer.size,
        });
        if let Some(artifact_type) = &referrer.artifact_type {
            entry["artifactType"] = serde_json::json!(artifact_type);
        }
        entries.push(entry);
    }
    Ok(Some(serde_json::to_vec(&index).expect("JSON always serializes")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn referrer(digest: &str) -> Referrer {
        Referrer {
            digest: digest.into(),
            media_type: manifest::OCI_MANIFEST.into(),
            size: 10,
            artifact_type: Some("application/vnd.docker.attestation.manifest.v1+json".into()),
        }
    }

    #[test]
    fn merging_keeps_what_the_tag_lists_and_adds_what_it_lacks() {
        let existing = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","size":3,
             "artifactType":"application/spdx+json","annotations":{"org.opencontainers.image.created":"2026"}}]}"#;
        let merged = merged_fallback_index(Some(existing), &[referrer("sha256:a"), referrer("sha256:b")])
            .unwrap()
            .expect("one entry is new");
        let index: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{index}");
        assert_eq!(entries[0]["annotations"]["org.opencontainers.image.created"], "2026", "kept as it was");
        assert_eq!(entries[1]["digest"], "sha256:a");
        assert_eq!(entries[1]["artifactType"], "application/vnd.docker.attestation.manifest.v1+json");
        // Listed already: nothing to write.
        assert_eq!(merged_fallback_index(Some(&merged), &[referrer("sha256:a")]).unwrap(), None);
        // No tag yet: an index of the referrers alone.
        let new = merged_fallback_index(None, &[referrer("sha256:c")]).unwrap().unwrap();
        assert_eq!(manifest::parse(&new).unwrap().children[0].digest, "sha256:c");
    }
}
