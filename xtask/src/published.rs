//! What `$DOCKER_REPO` holds, read in-process before anything is built: the digest a tag points
//! at (one HEAD), and the inputs a published index records (one GET). These decide which
//! images are up to date. `verify` reads each platform's attestations through the same client.
//! The reads are synchronous, for the build threads of the tasks.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use oci_client::Reference;

use crate::ctx::Ctx;
use crate::inputs::{BUILD_SECONDS_ANNOTATION, DIGEST_ANNOTATION, Inputs, RECORD_ANNOTATION};
use crate::registry::Session;
use crate::registry::attestations::{PlatformStatements, is_attached, platform_statements};
use crate::registry::credentials::registry_credentials;
use crate::registry::manifest::{self, sha256_digest};
use crate::registry::retry::RetryPolicy;
use crate::registry::session::SessionOptions;

/// An image as published: its digest, and the inputs recorded on it (none when it was
/// published some other way).
#[derive(Debug, Clone)]
pub struct Published {
    pub digest: String,
    /// The digest of its inputs, as recorded.
    pub inputs_digest: Option<String>,
    pub inputs: Option<Inputs>,
    /// Each platform's manifest digest (`linux/arm64`, …), attestations left out; a single
    /// manifest is the one entry, of no platform.
    pub platforms: Vec<(String, String)>,
    /// How long each platform's build took, as recorded (`linux/arm64` → seconds).
    pub build_seconds: BTreeMap<String, f64>,
}

/// What the plan reads of a registry: `Destination` over the network, a map in the plan's tests.
pub trait RegistryView: Sync {
    /// The digest `reference` points at; `None` when nothing is there.
    fn digest(&self, reference: &str) -> Result<Option<String>>;
    /// The image published at `reference`, with the inputs recorded on it; `None` when nothing
    /// is there.
    fn published(&self, reference: &str) -> Result<Option<Published>>;
}

impl RegistryView for Destination {
    fn digest(&self, reference: &str) -> Result<Option<String>> {
        Destination::digest(self, reference)
    }

    fn published(&self, reference: &str) -> Result<Option<Published>> {
        Destination::published(self, reference)
    }
}

/// The registry of `$DOCKER_REPO`, with a memo of the tags read (a vendored base shared by many
/// images is asked for once).
pub struct Destination {
    runtime: tokio::runtime::Runtime,
    session: Session,
    digests: Mutex<BTreeMap<String, Option<String>>>,
}

impl Destination {
    /// A check that fails is not worth waiting for (the image is then built), so each request
    /// gets two tries.
    pub fn open(ctx: &Ctx) -> Result<Destination> {
        let host = parse(&format!("{}/probe:1", ctx.settings.docker_repo))?.resolve_registry().to_string();
        let (gcloud_hosts, insecure) =
            (&ctx.settings.gcloud_auth_registries, &ctx.settings.insecure_registries);
        // Read only: without a gcloud token, anonymously (a failed read then says why).
        let registries: Vec<_> = registry_credentials(&ctx.runner, &[(host, true)], gcloud_hosts, insecure)?
            .into_iter()
            .map(|(access, auth, _)| (access, auth))
            .collect();
        let accesses: Vec<_> = registries.iter().map(|(access, _)| access.clone()).collect();
        let options = SessionOptions {
            retry: RetryPolicy { attempts: 2, ..RetryPolicy::default() },
            stall_timeout: Duration::from_secs(20),
            ..SessionOptions::default()
        };
        let session = Session::new(&accesses, options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let session = runtime.block_on(session.authenticate(registries));
        Ok(Destination { runtime, session, digests: Mutex::new(BTreeMap::new()) })
    }

    /// The digest `reference` points at; `None` when nothing is there.
    pub fn digest(&self, reference: &str) -> Result<Option<String>> {
        if let Some(known) = self.digests.lock().expect("not poisoned").get(reference) {
            return Ok(known.clone());
        }
        let parsed = parse(reference)?;
        let digest = self
            .runtime
            .block_on(self.session.manifest_digest(&parsed, false))
            .with_context(|| format!("cannot read {reference}"))?;
        self.digests.lock().expect("not poisoned").insert(reference.to_string(), digest.clone());
        Ok(digest)
    }

    /// The image published at `reference`, with the inputs recorded on it; `None` when nothing
    /// is there.
    pub fn published(&self, reference: &str) -> Result<Option<Published>> {
        let parsed = parse(reference)?;
        let Some(bytes) = self.runtime.block_on(self.session.manifest_if_any(&parsed))? else {
            return Ok(None);
        };
        let index: serde_json::Value =
            serde_json::from_slice(&bytes).with_context(|| format!("{reference} is not a manifest"))?;
        let annotation = |key: &str| index["annotations"][key].as_str().map(str::to_string);
        let digest = sha256_digest(&bytes);
        // The platforms: the entries of an index that are not attached to the others.
        let platforms = match manifest::parse(&bytes) {
            Ok(parsed) if !parsed.children.is_empty() => parsed
                .children
                .iter()
                .filter(|entry| !is_attached(entry))
                .filter_map(|entry| Some((entry.platform.as_ref()?.to_string(), entry.digest.clone())))
                .collect(),
            _ => vec![(String::new(), digest.clone())],
        };
        Ok(Some(Published {
            platforms,
            digest,
            inputs_digest: annotation(DIGEST_ANNOTATION),
            inputs: annotation(RECORD_ANNOTATION).and_then(|record| Inputs::from_json(&record)),
            build_seconds: annotation(BUILD_SECONDS_ANNOTATION)
                .and_then(|record| serde_json::from_str(&record).ok())
                .unwrap_or_default(),
        }))
    }

    /// Forget what `reference` pointed at: it was just pushed.
    pub fn forget(&self, reference: &str) {
        self.digests.lock().expect("not poisoned").remove(reference);
    }

    /// Each platform of the image at `reference` with its attached statements whose predicate
    /// type `wanted` accepts (see `registry::attestations`).
    pub fn platform_statements(
        &self,
        reference: &str,
        wanted: &(dyn Fn(&str) -> bool + Sync),
    ) -> Result<Vec<PlatformStatements>> {
        let parsed = parse(reference)?;
        self.runtime
            .block_on(platform_statements(&self.session, &parsed, wanted))
            .with_context(|| format!("cannot read the attestations of {reference}"))
    }
}

fn parse(reference: &str) -> Result<Reference> {
    crate::registry::reference::parse(reference)
        .map_err(|e| anyhow!("`{reference}` is not an image reference: {e}"))
}
