//! The in-toto statements attached to each platform of a published image, as BuildKit stores
//! them, read from the registry: each platform's attestation manifest is an entry of the index
//! (platform `unknown/unknown`, annotated `vnd.docker.reference.type=attestation-manifest` and
//! `vnd.docker.reference.digest=<the platform manifest>`), since BuildKit 0.32 an OCI artifact
//! whose `subject` is that manifest; one attached only as a referrer (API or fallback tag) is
//! found too. Each layer of it is one statement, annotated with its predicate type, which is
//! what names the format: `imagetools inspect` drops it.

use anyhow::{Context, Result};
use bytes::Bytes;
use futures_util::future::join_all;
use oci_client::Reference;

use super::manifest::{self, Descriptor, Manifest};
use super::referrers::referrers_of;
use super::session::Session;
use crate::failure::Failure;

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

/// An attestation that could not be read, and why: the reader warns of it and goes on.
#[derive(Debug, Clone)]
pub struct Unreadable {
    /// The predicate type its layer is annotated with, where that much is known.
    pub predicate_type: Option<String>,
    pub why: String,
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
    /// The attestations of this platform that could not be read.
    pub unreadable: Vec<Unreadable>,
}

/// Whether an index entry is attached to the platforms rather than one of them: BuildKit's
/// attestation manifests (annotated so, platform `unknown/unknown`; BuildKit sets no
/// `artifactType` on the entry even for an artifact) and any other artifact.
pub fn is_attached(entry: &Descriptor) -> bool {
    entry.annotation(REFERENCE_TYPE) == Some(ATTESTATION_MANIFEST)
        || entry.platform.as_ref().is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
        || entry.artifact_type.is_some()
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
        return Ok(vec![attached(session, reference, platform, digest, Vec::new(), wanted).await]);
    }
    let (attestations, images): (Vec<&Descriptor>, Vec<&Descriptor>) =
        parsed.children.iter().partition(|entry| is_attached(entry));
    // Every attestation manifest of the index, read once: which platform it belongs to is in
    // its subject, or in the entry's annotation (the older layout has no subject). One that
    // cannot be read is known by the annotation alone.
    let read = join_all(attestations.iter().map(|entry| async {
        let at = reference.clone_with_digest(entry.digest.clone());
        let parsed = async { anyhow::Ok(manifest::parse(&session.manifest(&at).await?)?) }.await;
        let subject = parsed
            .as_ref()
            .ok()
            .and_then(|parsed| parsed.subject.as_ref().map(|s| s.digest.clone()))
            .or_else(|| entry.annotation(REFERENCE_DIGEST).map(str::to_string));
        (
            subject,
            parsed
                .map_err(|err| Failure::from(err).context(format!("attestation manifest {}", entry.digest))),
        )
    }))
    .await;
    let mut platforms = join_all(images.iter().map(|image| {
        let own: Vec<Result<Manifest, Failure>> = read
            .iter()
            .filter(|(subject, _)| subject.as_deref() == Some(image.digest.as_str()))
            .map(|(_, parsed)| parsed.clone())
            .collect();
        let platform = image.platform.as_ref().map_or("unknown".to_string(), ToString::to_string);
        attached(session, reference, platform, image.digest.clone(), own, wanted)
    }))
    .await;
    // One that could not be read and names no platform belongs to none: still said.
    let orphans: Vec<Unreadable> = read
        .iter()
        .filter_map(|(subject, parsed)| match (subject, parsed) {
            (None, Err(why)) => Some(Unreadable { predicate_type: None, why: why.to_string() }),
            _ => None,
        })
        .collect();
    if !orphans.is_empty() {
        platforms.push(PlatformStatements {
            platform: "unknown".into(),
            digest: digest.clone(),
            statements: Vec::new(),
            unreadable: orphans,
        });
    }
    Ok(platforms)
}

/// The wanted statements of the platform manifest `subject`: from its attestation manifests in
/// the index (`in_index`, each read or why not), or, with none there, from its referrers.
/// Whatever cannot be read is listed as such, never dropped.
async fn attached(
    session: &Session,
    reference: &Reference,
    platform: String,
    subject: String,
    in_index: Vec<Result<Manifest, Failure>>,
    wanted: &(dyn Fn(&str) -> bool + Sync),
) -> PlatformStatements {
    let mut manifests = in_index;
    let mut unreadable = Vec::new();
    if manifests.is_empty() {
        match referrers_of(session, reference, &subject).await {
            Ok(referrers) => {
                let attestations =
                    referrers.iter().filter(|r| r.artifact_type.as_deref() == Some(ATTESTATION_ARTIFACT));
                for referrer in attestations {
                    let at = reference.clone_with_digest(referrer.digest.clone());
                    let parsed = async { anyhow::Ok(manifest::parse(&session.manifest(&at).await?)?) }.await;
                    manifests.push(parsed.map_err(|err| {
                        Failure::from(err).context(format!("attestation manifest {}", referrer.digest))
                    }));
                }
            }
            Err(err) => {
                unreadable.push(Unreadable { predicate_type: None, why: format!("its referrers: {err:#}") })
            }
        }
    }
    let mut layers: Vec<&Descriptor> = Vec::new();
    for manifest in &manifests {
        match manifest {
            Ok(manifest) => layers.extend(manifest.layers.iter().filter(|layer| layer.media_type == IN_TOTO)),
            Err(why) => unreadable.push(Unreadable { predicate_type: None, why: why.to_string() }),
        }
    }
    let fetched = join_all(layers.into_iter().map(|layer| async move {
        let annotated = layer.annotation(PREDICATE_TYPE);
        if annotated.is_some_and(|t| !wanted(t)) {
            return None;
        }
        let bytes = match session.small_blob(reference, layer).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let predicate_type = annotated.map(str::to_string);
                return Some(Err(Unreadable { predicate_type, why: format!("{err:#}") }));
            }
        };
        let predicate_type = match annotated {
            Some(t) => t.to_string(),
            None => declared_predicate_type(&bytes),
        };
        wanted(&predicate_type).then_some(Ok(Statement { predicate_type, bytes }))
    }))
    .await;
    let mut statements = Vec::new();
    for answer in fetched.into_iter().flatten() {
        match answer {
            Ok(statement) => statements.push(statement),
            Err(failed) => unreadable.push(failed),
        }
    }
    PlatformStatements { platform, digest: subject, statements, unreadable }
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
