//! Mirror tags from one registry to another, keeping every byte and digest: the index, every
//! manifest it lists, and each manifest's config and layers.
//!
//! A tag's critical path, in round trips: HEAD source and destination tag (in parallel; equal
//! digests end it here), GET the index, GET its manifests (in parallel), HEAD each blob at the
//! destination (in parallel), stream the missing blobs (in parallel, bounded), PUT the manifests
//! by digest (in parallel), PUT the tag. Tags do not wait for each other; a blob that several
//! tags share is sent once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use futures_util::future::{BoxFuture, FutureExt, try_join_all};
use oci_client::Reference;
use tokio::sync::{Mutex, OnceCell, Semaphore};

use super::manifest::{self, Descriptor};
use super::session::{HeldBack, Session};
use crate::failure::Failure;

/// One tag to mirror.
#[derive(Debug, Clone)]
pub struct Pair {
    pub source: Reference,
    pub destination: Reference,
}

#[derive(Debug, Clone)]
pub struct MirrorOptions {
    /// Blobs streamed at once, across all tags.
    pub jobs: usize,
    /// Only compare digests (HEAD requests); copy nothing.
    pub check_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    UpToDate {
        digest: String,
    },
    /// `check_only`: the destination is missing (`None`) or points elsewhere.
    OutOfDate {
        source: String,
        destination: Option<String>,
    },
    Copied {
        digest: String,
        blobs_sent: usize,
        bytes_sent: u64,
        blobs_present: usize,
    },
    /// Not started: the source registry's pull quota is below the run's threshold.
    HeldBack(HeldBack),
    /// The source was pinned to a digest (by a lock) that its registry no longer has.
    PinGone {
        digest: String,
    },
    Failed {
        failure: Failure,
    },
}

#[derive(Debug, Clone)]
pub struct Report {
    pub pair: Pair,
    pub outcome: CopyOutcome,
    pub elapsed: Duration,
}

/// What a run tells as it goes: bytes as they are sent, each tag when it is done.
pub trait CopyProgress: Send + Sync {
    fn bytes_sent(&self, _bytes: u64) {}
    fn tag_done(&self, _report: &Report) {}
}

/// What became of one blob in one destination repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlobFate {
    /// Streamed from the source, this many bytes.
    Sent(u64),
    /// Already there, or mounted from another repository of the same registry.
    Present,
}

/// Work done once and awaited by everyone who needs it, with its outcome (a `Failure` is
/// `Clone`, so that each waiter gets a copy).
type Ledger<K, T> = Mutex<HashMap<K, Arc<OnceCell<Result<T, Failure>>>>>;

struct Shared {
    session: Arc<Session>,
    options: MirrorOptions,
    progress: Arc<dyn CopyProgress>,
    transfers: Semaphore,
    /// Each blob's fate per destination repository, so that tags sharing a blob wait for one copy.
    /// Key: destination registry, repository, digest.
    blobs: Ledger<(String, String, String), BlobFate>,
    /// Per destination registry and blob digest: the repository the blob was streamed into,
    /// once that is done. Others mount from it.
    /// Key: destination registry, digest.
    uploads: Ledger<(String, String), String>,
}

/// What a whole run did.
#[derive(Debug)]
pub struct Mirrored {
    /// One report per pair, in the order given.
    pub reports: Vec<Report>,
    /// Requests that were tried again after a transient failure (a resumed download counts).
    pub retries: u64,
    /// Requests made in all, token requests included.
    pub requests: u64,
    /// Each registry's pull quota as it last reported it (`RateLimit-*`).
    pub rate_limits: Vec<(String, super::http::RateLimit)>,
}

/// Mirror every pair concurrently; one tag's failure does not stop the others.
pub async fn mirror(
    session: Arc<Session>,
    pairs: Vec<Pair>,
    options: MirrorOptions,
    progress: Arc<dyn CopyProgress>,
) -> Mirrored {
    let jobs = options.jobs.max(1);
    let shared = Arc::new(Shared {
        session,
        options,
        progress,
        transfers: Semaphore::new(jobs),
        blobs: Mutex::new(HashMap::new()),
        uploads: Mutex::new(HashMap::new()),
    });
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|pair| {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = match mirror_tag(&shared, &pair).await {
                    Ok(outcome) => outcome,
                    Err(err) => CopyOutcome::Failed { failure: Failure::from(err) },
                };
                let report = Report { pair, outcome, elapsed: started.elapsed() };
                shared.progress.tag_done(&report);
                report
            })
        })
        .collect();
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        reports.push(task.await.expect("a mirror task panicked"));
    }
    let session = &shared.session;
    Mirrored {
        reports,
        retries: session.retries(),
        requests: session.requests(),
        rate_limits: session.rate_limits(),
    }
}

async fn mirror_tag(shared: &Shared, pair: &Pair) -> Result<CopyOutcome> {
    let session = &shared.session;
    let will_push = !shared.options.check_only;
    // A source pinned by digest (from the lock) needs no request to know what it is.
    let pinned = pair.source.digest().map(str::to_string);
    let source_head = async {
        match &pinned {
            Some(digest) => Ok(Some(digest.clone())),
            None => session.manifest_digest(&pair.source, false).await,
        }
    };
    let (source_digest, destination_digest) =
        tokio::join!(source_head, session.manifest_digest(&pair.destination, will_push));
    let source_digest = source_digest
        .with_context(|| format!("source {}", pair.source))?
        .ok_or_else(|| anyhow!("source {} not found", pair.source))?;
    let destination_digest =
        destination_digest.with_context(|| format!("destination {}", pair.destination))?;
    if destination_digest.as_deref() == Some(source_digest.as_str()) {
        return Ok(CopyOutcome::UpToDate { digest: source_digest });
    }
    if shared.options.check_only {
        return Ok(CopyOutcome::OutOfDate { source: source_digest, destination: destination_digest });
    }
    if pinned.is_some() && session.manifest_digest(&pair.source, false).await?.is_none() {
        return Ok(CopyOutcome::PinGone { digest: source_digest });
    }

    // Read by digest, not by tag: a tag moved meanwhile cannot mix two versions.
    let manifests = match fetch_all(session, &pair.source, source_digest.clone(), 0).await {
        Ok(manifests) => manifests,
        // Docker Hub counts manifest GETs against its pull quota (HEADs are free): below the
        // run's threshold, `Session::manifest` starts none, and the tag is held back.
        Err(err) => match session.pulls_held_back(&pair.source) {
            Some(held) => return Ok(CopyOutcome::HeldBack(held)),
            None => return Err(err),
        },
    };

    let mut blobs: Vec<&Descriptor> = manifests.iter().flat_map(|m| m.parsed.blobs.iter()).collect();
    blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
    blobs.dedup_by(|a, b| a.digest == b.digest);
    let fates = try_join_all(blobs.iter().map(|blob| ensure_blob(shared, pair, blob))).await?;

    // Manifests by digest, children before the index that lists them; the tag goes last, so
    // it never points at anything incomplete.
    let (children, root_manifest) = manifests.split_at(manifests.len() - 1);
    for depth in (1..=children.iter().map(|m| m.depth).max().unwrap_or(0)).rev() {
        let level = children.iter().filter(|m| m.depth == depth);
        try_join_all(level.map(|m| {
            let at = pair.destination.clone_with_digest(m.digest.clone());
            async move { session.push_manifest(&at, &m.bytes, &m.parsed.media_type).await }
        }))
        .await?;
    }
    let root_manifest = &root_manifest[0];
    session.push_manifest(&pair.destination, &root_manifest.bytes, &root_manifest.parsed.media_type).await?;

    let sent: Vec<u64> =
        fates.iter().filter_map(|fate| if let BlobFate::Sent(n) = fate { Some(*n) } else { None }).collect();
    Ok(CopyOutcome::Copied {
        digest: source_digest,
        blobs_sent: sent.len(),
        bytes_sent: sent.iter().sum(),
        blobs_present: fates.len() - sent.len(),
    })
}

/// A manifest read from the source, and how deep it sits under the tag (0: the tag's own).
struct Fetched {
    digest: String,
    bytes: Bytes,
    parsed: manifest::Manifest,
    depth: usize,
}

/// The manifest at `digest` and, for an index, every manifest it lists (in parallel), each
/// after the ones it lists.
fn fetch_all<'a>(
    session: &'a Session,
    source: &'a Reference,
    digest: String,
    depth: usize,
) -> BoxFuture<'a, Result<Vec<Fetched>>> {
    async move {
        let bytes = session.manifest(&source.clone_with_digest(digest.clone())).await?;
        let parsed = manifest::parse(&bytes).with_context(|| format!("manifest {digest} of {source}"))?;
        let listed = try_join_all(
            parsed.children.iter().map(|child| fetch_all(session, source, child.digest.clone(), depth + 1)),
        )
        .await?;
        let mut all: Vec<Fetched> = listed.into_iter().flatten().collect();
        all.push(Fetched { digest, bytes, parsed, depth });
        Ok(all)
    }
    .boxed()
}

/// Make sure the destination repository has `blob`; each blob is handled once per repository
/// even when several tags need it at the same time.
async fn ensure_blob(shared: &Shared, pair: &Pair, blob: &Descriptor) -> Result<BlobFate> {
    let destination = &pair.destination;
    let key = (
        destination.resolve_registry().to_string(),
        destination.repository().to_string(),
        blob.digest.clone(),
    );
    let cell = Arc::clone(shared.blobs.lock().await.entry(key).or_default());
    let fate =
        cell.get_or_init(|| async { transfer_blob(shared, pair, blob).await.map_err(Failure::from) }).await;
    Ok(fate.clone()?)
}

async fn transfer_blob(shared: &Shared, pair: &Pair, blob: &Descriptor) -> Result<BlobFate> {
    let session = &shared.session;
    let (source, destination) = (&pair.source, &pair.destination);
    if session.blob_exists(destination, &blob.digest).await? {
        return Ok(BlobFate::Present);
    }
    // Within one registry a mount links a blob without sending it: from the source itself when
    // source and destination share a registry.
    let registry = destination.resolve_registry().to_string();
    if source.resolve_registry() == registry
        && mount(shared, destination, source.repository(), &blob.digest).await
    {
        return Ok(BlobFate::Present);
    }
    // One upload per blob and destination registry: the first repository to need it streams
    // it, the others wait for that and mount from there.
    let upload = Arc::clone(shared.uploads.lock().await.entry((registry, blob.digest.clone())).or_default());
    let mut sent_here = false;
    let holder = upload
        .get_or_init(|| async {
            sent_here = true;
            stream_blob(shared, pair, blob)
                .await
                .map(|()| destination.repository().to_string())
                .map_err(Failure::from)
        })
        .await
        .clone();
    if sent_here {
        return Ok(holder.map(|_| BlobFate::Sent(blob.size))?);
    }
    if let Ok(holder) = &holder
        && mount(shared, destination, holder, &blob.digest).await
    {
        return Ok(BlobFate::Present);
    }
    // The first upload failed (its source repository may be the broken one) or the mount was
    // refused: this tag streams the blob from its own source.
    stream_blob(shared, pair, blob).await?;
    Ok(BlobFate::Sent(blob.size))
}

async fn mount(shared: &Shared, destination: &Reference, from_repository: &str, digest: &str) -> bool {
    shared.session.mount_blob(destination, from_repository, digest).await
}

/// Stream the blob from the source, at most `jobs` at a time.
async fn stream_blob(shared: &Shared, pair: &Pair, blob: &Descriptor) -> Result<()> {
    let _permit = shared.transfers.acquire().await.expect("the semaphore is never closed");
    let on_bytes = |n: u64| shared.progress.bytes_sent(n);
    shared.session.copy_blob(&pair.source, &pair.destination, &blob.digest, blob.size, &on_bytes).await
}
