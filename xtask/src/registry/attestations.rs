//! The in-toto statements attached to each platform of a published image, as BuildKit stores
//! them, read from the registry: each platform's attestation manifest is an entry of the index
//! (platform `unknown/unknown`, annotated `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest=<the platform manifest>`), since BuildKit 0.32 an OCI artifact
//! whose `subject` is that manifest; one attached only as a referrer (API or fallback tag) is
//! found too. Each layer of it is one statement, annotated with its predicate type, which is
//! what names the format: `imagetools inspect` drops it.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::future::try_join_all;
use oci_client::Reference;

use super::manifest::{self, Descriptor, Manifest};
use super::referrers::referrers_of;
use super::session::Session;

pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The `artifactType` of BuildKit's attestation manifests stored as OCI artifacts.
pub const ATTESTATION_ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";

/// One in-toto statement, with the predicate type its layer is annotated with (or, without the
/// annotation, the one it declares).
#[derive(Debug, Clone)]
pub struct Statement {
    pub predicate_type: String,
    pub bytes: Bytes,
}

/// What is attached to one platform of an image.
#[derive(Debug, Clone)]
pub struct PlatformStatements {
    /// `linux/arm64`, as the index names it (or the image's config, for a lone manifest).
    pub platform: String,
    /// The platform manifest's digest.
    pub digest: String,
    /// The statements of the predicate types asked for.
    pub statements: Vec<Statement>,
}

/// Whether an index entry is an attestation rather than a platform's image.
pub fn is_attestation(entry: &Descriptor) -> bool {
    entry.annotation(REFERENCE_TYPE) == Some(ATTESTATION_MANIFEST)
        || entry.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
}

/// Each platform of the image at `reference` and the statements attached to it whose predicate
/// type `wanted` accepts (only those are downloaded), platforms in the index's order.
pub async fn platform_statements(
    session: &Session,
    reference: &Reference,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<PlatformStatements>> {
    let digest = match reference.digest() {
        Some(digest) => digest.to_string(),
        None => session
            .manifest_digest(reference, false)
            .await?
            .with_context(|| format!("{reference} is not in the registry"))?,
    };
    let top = reference.clone_with_digest(digest.clone());
    let parsed = manifest::parse(&session.manifest(&top).await?).with_context(|| format!("{top}"))?;
    if parsed.children.is_empty() {
        // A lone image manifest: its platform is in its config, its attestations are referrers.
        let platform = platform_of_config(session, reference, &parsed).await;
        let statements = attached(session, reference, &digest, &[], wanted).await?;
        return Ok(vec![PlatformStatements { platform, digest, statements }]);
    }
    let (attestations, images): (Vec<&Descriptor>, Vec<&Descriptor>) =
        parsed.children.iter().partition(|entry| is_attestation(entry));
    // Every attestation manifest of the index, read once: which platform it belongs to is in
    // its subject, or in the entry's annotation (the older layout has no subject).
    let read = try_join_all(attestations.iter().map(|entry| async {
        let at = reference.clone_with_digest(entry.digest.clone());
        let parsed = manifest::parse(&session.manifest(&at).await?).with_context(|| format!("{at}"))?;
        let subject = parsed
            .subject
            .as_ref()
            .map(|s| s.digest.clone())
            .or_else(|| entry.annotation(REFERENCE_DIGEST).map(str::to_string));
        Ok::<_, anyhow::Error>((subject, parsed))
    }))
    .await?;
    try_join_all(images.iter().map(|image| {
        let own: Vec<&Manifest> = read
            .iter()
            .filter(|(subject, _)| subject.as_deref() == Some(image.digest.as_str()))
            .map(|(_, parsed)| parsed)
            .collect();
        async move {
            let platform = image.platform.as_ref().map_or("unknown".to_string(), ToString::to_string);
            let statements = attached(session, reference, &image.digest, &own, wanted).await?;
            Ok(PlatformStatements { platform, digest: image.digest.clone(), statements })
        }
    }))
    .await
}

/// The wanted statements of `subject`: from its attestation manifests in the index (`in_index`),
/// or, with none there, from its referrers.
async fn attached(
    session: &Session,
    reference: &Reference,
    subject: &str,
    in_index: &[&Manifest],
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Statement>> {
    let mut manifests: Vec<Manifest> = in_index.iter().map(|m| (*m).clone()).collect();
    if manifests.is_empty() {
        let referrers = referrers_of(session, reference, subject).await?;
        for referrer in referrers.iter().filter(|r| r.artifact_type.as_deref() == Some(ATTESTATION_ARTIFACT))
        {
            let at = reference.clone_with_digest(referrer.digest.clone());
            manifests.push(manifest::parse(&session.manifest(&at).await?).with_context(|| format!("{at}"))?);
        }
    }
    let layers: Vec<&Descriptor> =
        manifests.iter().flat_map(|m| m.layers.iter()).filter(|layer| layer.media_type == IN_TOTO).collect();
    let fetched = try_join_all(layers.into_iter().map(|layer| async move {
        let annotated = layer.annotation(PREDICATE_TYPE);
        if annotated.is_some_and(|t| !wanted(t)) {
            return Ok(None);
        }
        let bytes = session.small_blob(reference, layer).await?;
        let predicate_type = match annotated {
            Some(t) => t.to_string(),
            None => declared_predicate_type(&bytes),
        };
        Ok::<_, anyhow::Error>(wanted(&predicate_type).then_some(Statement { predicate_type, bytes }))
    }))
    .await?;
    Ok(fetched.into_iter().flatten().collect())
}

/// The `predicateType` a statement declares; empty when it is not one.
fn declared_predicate_type(bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v["predicateType"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `os/architecture` from a lone manifest's config; `unknown` when it cannot be read.
async fn platform_of_config(session: &Session, reference: &Reference, parsed: &Manifest) -> String {
    let Some(config) = parsed.blobs.first() else {
        return "unknown".into();
    };
    let Ok(bytes) = session.small_blob(reference, config).await else {
        return "unknown".into();
    };
    let config: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    match (config["os"].as_str(), config["architecture"].as_str()) {
        (Some(os), Some(arch)) if !os.is_empty() => format!("{os}/{arch}"),
        _ => "unknown".into(),
    }
}
