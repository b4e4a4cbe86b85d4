//! Just enough of a manifest to copy it: its media type, the manifests it lists (an index) and
//! the blobs it refers to (an image manifest). The bytes themselves are copied untouched, so
//! every digest stays what it was.

use anyhow::{Result, bail};
use serde::Deserialize;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every manifest type a copy accepts, for the `Accept` header.
pub const ACCEPTED: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    /// Set on non-distributable ("foreign") layers, which live outside the registry.
    #[serde(default)]
    pub urls: Option<Vec<String>>,
    /// What an index entry runs on.
    #[serde(default)]
    pub platform: Option<ManifestPlatform>,
    /// What an artifact is (an SBOM, a signature), on a referrers index's entries.
    #[serde(rename = "artifactType", default)]
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct ManifestPlatform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl std::fmt::Display for ManifestPlatform {
    /// `linux/arm64/v8`, `unknown/unknown` (an attestation).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<Vec<Descriptor>>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    /// Artifact manifests list their content here.
    blobs: Option<Vec<Descriptor>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    /// The manifests an index lists: platform images, attestations, anything.
    pub children: Vec<Descriptor>,
    /// Config and layers of an image manifest, in order; foreign layers left out.
    pub blobs: Vec<Descriptor>,
}

pub fn parse(raw: &[u8]) -> Result<Manifest> {
    let parsed: Raw = serde_json::from_slice(raw)?;
    if parsed.schema_version != Some(2) {
        bail!(
            "unsupported manifest schema version {:?} (only version 2 can be copied)",
            parsed.schema_version
        );
    }
    let children = parsed.manifests.unwrap_or_default();
    let media_type = match parsed.media_type {
        Some(media_type) => media_type,
        // The OCI formats may leave the media type out; what the manifest holds tells.
        None if !children.is_empty() => OCI_INDEX.to_string(),
        None => OCI_MANIFEST.to_string(),
    };
    let blobs = parsed
        .config
        .into_iter()
        .chain(parsed.layers.unwrap_or_default())
        .chain(parsed.blobs.unwrap_or_default())
        .filter(|blob| blob.urls.as_ref().is_none_or(Vec::is_empty))
        .collect();
    Ok(Manifest { media_type, children, blobs })
}

/// The digest of `bytes`, as registries name content: `sha256:<hex>`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest cut to a readable length for output: `sha256:` and 12 hex digits.
pub fn short_digest(digest: &str) -> &str {
    &digest[..digest.len().min("sha256:".len() + 12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_index() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":7,"platform":{"os":"linux","architecture":"arm64"}}]}"#;
        let manifest = parse(raw).unwrap();
        assert_eq!(manifest.media_type, OCI_INDEX);
        assert_eq!(manifest.children.len(), 1);
        assert_eq!(manifest.children[0].digest, "sha256:aa");
        assert_eq!(manifest.children[0].platform.as_ref().unwrap().to_string(), "linux/arm64");
        assert!(manifest.blobs.is_empty());
    }

    #[test]
    fn parses_an_image_and_skips_foreign_layers() {
        let raw = br#"{"schemaVersion":2,"config":{"mediaType":"c","digest":"sha256:c","size":1},"layers":[
            {"mediaType":"l","digest":"sha256:l1","size":2},
            {"mediaType":"f","digest":"sha256:f","size":3,"urls":["https://example.com/f"]}]}"#;
        let manifest = parse(raw).unwrap();
        assert_eq!(manifest.media_type, OCI_MANIFEST);
        let digests: Vec<_> = manifest.blobs.iter().map(|b| b.digest.as_str()).collect();
        assert_eq!(digests, ["sha256:c", "sha256:l1"]);
    }

    #[test]
    fn rejects_schema_1() {
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }
}
