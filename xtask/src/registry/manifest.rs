//! Just enough of a manifest to copy it: its media type, the manifests it lists (an index), the
//! blobs it refers to (an image manifest), and the manifest it is attached to (its `subject`),
//! which makes it a referrer of that manifest. The bytes themselves are copied untouched, so
//! every digest stays what it was.

use std::collections::BTreeMap;

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
    /// What BuildKit says of an index entry (`vnd.docker.reference.type`, `…digest`), and of an
    /// attestation's layer (`in-toto.io/predicate-type`).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn annotation(&self, name: &str) -> Option<&str> {
        self.annotations.get(name).map(String::as_str)
    }
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
    subject: Option<Descriptor>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub media_type: String,
    /// The manifests an index lists: platform images, attestations, anything.
    pub children: Vec<Descriptor>,
    /// Config and layers of an image manifest, in order; foreign layers left out.
    pub blobs: Vec<Descriptor>,
    /// The layers alone (an attestation's statements are its layers).
    pub layers: Vec<Descriptor>,
    /// The manifest this one is attached to: it is one of that manifest's referrers.
    pub subject: Option<Descriptor>,
    /// What it is as a referrer: its `artifactType`, else its config's media type (the
    /// distribution spec's rule for a referrers list's entries).
    pub artifact_type: Option<String>,
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
    let local = |blob: &Descriptor| blob.urls.as_ref().is_none_or(Vec::is_empty);
    let layers: Vec<Descriptor> = parsed.layers.unwrap_or_default().into_iter().filter(local).collect();
    let artifact_type = parsed.artifact_type.or_else(|| parsed.config.as_ref().map(|c| c.media_type.clone()));
    let blobs = parsed
        .config
        .into_iter()
        .chain(layers.iter().cloned())
        .chain(parsed.blobs.unwrap_or_default().into_iter().filter(local))
        .collect();
    Ok(Manifest { media_type, children, blobs, layers, subject: parsed.subject, artifact_type })
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
    fn a_manifest_with_a_subject_is_a_referrer_of_its_type() {
        let raw = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "artifactType":"application/vnd.docker.attestation.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:e","size":2},
            "layers":[{"mediaType":"application/vnd.in-toto+json","digest":"sha256:s","size":9,
                "annotations":{"in-toto.io/predicate-type":"https://slsa.dev/provenance/v1"}}],
            "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:p","size":5}}"#;
        let manifest = parse(raw).unwrap();
        assert_eq!(manifest.subject.as_ref().map(|s| s.digest.as_str()), Some("sha256:p"));
        assert_eq!(
            manifest.artifact_type.as_deref(),
            Some("application/vnd.docker.attestation.manifest.v1+json")
        );
        assert_eq!(
            manifest.layers[0].annotation("in-toto.io/predicate-type"),
            Some("https://slsa.dev/provenance/v1")
        );
        // Without an artifactType, the config's media type says what it is.
        let raw = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.dev.cosign.config","digest":"sha256:c","size":2},
            "layers":[],"subject":{"mediaType":"m","digest":"sha256:p","size":5}}"#;
        assert_eq!(parse(raw).unwrap().artifact_type.as_deref(), Some("application/vnd.dev.cosign.config"));
    }

    #[test]
    fn rejects_schema_1() {
        assert!(parse(br#"{"schemaVersion":1,"fsLayers":[]}"#).is_err());
    }
}
