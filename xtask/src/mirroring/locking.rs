//! The lock side of `thirdparty`: which tags to resolve anew, the lock they make, the pairs that
//! copy exactly what it names (artifacts included), the referrers fallback tags a destination
//! without the referrers API needs, and `--check`'s three-way comparison.
//!
//! A fallback tag is never copied over: the source's is copied by digest, and the destination's
//! tag is then written as what it lists already merged with every referrer of the lock (the
//! source's tag's, the API's, the index's own entries with a `subject`), after everything else,
//! so that it never lists a manifest that is not there yet. Distribution 2.8 has no conditional
//! PUT: two runs that merge into one tag at the same moment may each write it without the
//! other's entries (a lost update). The next run that vendors the tag merges them back.
//!
//! A tag the list pins (`list::pin`) is locked at its pin and copied from it: the runs that write
//! the lock (a plain run, `--update`) resolve the pin where the lock says otherwise, and those that
//! do not (`--locked`, `--check`) call a lock that disagrees with a pin an error.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Result, bail};
use oci_client::Reference;

use super::list;
use super::mode::Mode;
use crate::failure::Failure;
use crate::lock::{self, Lock, LockedArtifact, LockedManifest, LockedTag};
use crate::registry::manifest::{self, short_digest as short};
use crate::registry::referrers::{Referrer, fallback_reference, merged_fallback_index, referrers_of};
use crate::registry::resolve::{Artifact, Known, Resolved, resolve};
use crate::registry::{self, CopyOutcome, Pair, Report, Session};

/// A tag's key in the lock: its source, in full (`docker.io/library/alpine:3.15`), without the
/// list's pin: a pinned tag is locked under its tag, as before it was pinned.
pub(super) fn lock_key(pair: &Pair) -> String {
    match pair.source.tag() {
        Some(tag) => format!("{}/{}:{tag}", pair.source.registry(), pair.source.repository()),
        None => pair.source.whole(),
    }
}

/// The image of a pair's source, as `--update` takes it.
fn image_of(pair: &Pair) -> String {
    format!("{}/{}", pair.source.registry(), pair.source.repository())
}

/// The list's pin of `pair` and the lock's other digest for it, when the two disagree.
fn disagreement<'a>(pair: &'a Pair, lock: &'a Lock) -> Option<(&'a str, &'a str)> {
    let pin = list::pin(&pair.source)?;
    let locked = lock.tags.get(&lock_key(pair))?;
    (locked.digest != pin).then_some((pin, locked.digest.as_str()))
}

/// What to do about a lock that disagrees with the pin of `pair`.
fn pin_advice(pair: &Pair) -> String {
    format!(
        "run `cargo xtask thirdparty --update {}` to lock the pin, or change the pin in the list",
        image_of(pair)
    )
}

/// `--locked` copies the lock, which must agree with every pin of the list.
pub(super) fn check_pins(pairs: &[Pair], lock: &Lock, lock_name: &str) -> Result<()> {
    let disagreeing: Vec<String> = pairs
        .iter()
        .filter_map(|pair| {
            let (pin, locked) = disagreement(pair, lock)?;
            Some(format!(
                "  {}: the list pins {pin}, {lock_name} has {locked}: {}",
                lock_key(pair),
                pin_advice(pair)
            ))
        })
        .collect();
    if !disagreeing.is_empty() {
        bail!(
            "{lock_name} disagrees with the list's pin of {} tag(s), nothing was copied:\n{}",
            disagreeing.len(),
            disagreeing.join("\n")
        );
    }
    Ok(())
}

/// Every image `--update` names must be in the list (a typo would otherwise update nothing).
pub(super) fn check_named_images(images: &[String], pairs: &[Pair]) -> Result<()> {
    for image in images {
        if !pairs.iter().any(|pair| names(image, pair)) {
            bail!("`--update {image}`: no tag of the list is that image (name it as thirdparty.txt does)");
        }
    }
    Ok(())
}

/// Whether `image` (`docker.io/alpine`, `alpine`, `alpine:3.15`) names the source of `pair`.
fn names(image: &str, pair: &Pair) -> bool {
    let Ok(named) = registry::reference::parse(image) else {
        return false;
    };
    let same_image =
        named.registry() == pair.source.registry() && named.repository() == pair.source.repository();
    let written = registry::reference::Written::split(image);
    let image_alone = written.tag.is_none() && written.digest.is_none();
    same_image && (image_alone || named.tag() == pair.source.tag())
}

/// The lock this run copies from: the old one, with the tags that need it resolved anew (all
/// named by `--update`; those the lock lacks). Tags that cannot be resolved are reported.
pub(super) async fn lock_tags(
    session: &Session,
    pairs: &[Pair],
    old: &Lock,
    mode: &Mode,
    with_artifacts: bool,
    dry_run: bool,
) -> (Lock, Vec<Report>) {
    // A pinned tag whose lock says another digest is resolved at its pin by every run that
    // writes the lock: its pin is what it is vendored as.
    let needs_resolving = |pair: &Pair| match mode {
        Mode::Update(images) => {
            images.is_empty()
                || images.iter().any(|image| names(image, pair))
                || disagreement(pair, old).is_some()
        }
        Mode::Default { .. } => !old.tags.contains_key(&lock_key(pair)) || disagreement(pair, old).is_some(),
        Mode::Locked | Mode::Check => false,
    };
    let mut new = old.clone();
    let keep_only_listed = matches!(mode, Mode::Default { whole_list: true } | Mode::Update(_));
    if keep_only_listed {
        let listed: Vec<String> = pairs.iter().map(lock_key).collect();
        new.tags.retain(|key, _| listed.contains(key));
    }
    let resolving: Vec<&Pair> = pairs.iter().filter(|pair| needs_resolving(pair)).collect();
    let answers = futures_util::future::join_all(resolving.iter().map(|pair| async {
        let started = Instant::now();
        // A dry run asks only for the digest (a HEAD), never a manifest: no pull is spent.
        let resolved = if dry_run {
            session.manifest_digest(&pair.source, false).await.map(|digest| {
                digest.map(|digest| Resolved {
                    digest,
                    manifests: Vec::new(),
                    artifacts: Vec::new(),
                    entries_read: false,
                })
            })
        } else {
            let locked = old.tags.get(&lock_key(pair));
            let manifests: Vec<(String, String)> = locked
                .map(|locked| {
                    locked.manifests.iter().map(|m| (m.digest.clone(), m.platform.clone())).collect()
                })
                .unwrap_or_default();
            let known = locked.map(|locked| Known {
                digest: &locked.digest,
                manifests: &manifests,
                entries_read: locked.entries_read,
            });
            resolve(session, &pair.source, known, with_artifacts).await
        };
        (*pair, resolved, started.elapsed())
    }))
    .await;
    let mut unresolved = Vec::new();
    for (pair, resolved, elapsed) in answers {
        let key = lock_key(pair);
        let outcome = match resolved {
            Ok(Some(resolved)) => {
                let locked = locked_tag(old.tags.get(&key), resolved);
                new.tags.insert(key, locked);
                continue;
            }
            Ok(None) => {
                let missing = match list::pin(&pair.source) {
                    Some(pin) => format!(
                        "{pin}, which the list pins, is not in {} upstream: pin a digest that is there",
                        image_of(pair)
                    ),
                    None => format!("source {} not found", pair.source),
                };
                CopyOutcome::Failed { failure: Failure::permanent(missing) }
            }
            Err(_) if let Some(held) = session.pulls_held_back(&pair.source) => CopyOutcome::HeldBack(held),
            Err(err) => {
                CopyOutcome::Failed { failure: Failure::from(err).context(format!("source {}", pair.source)) }
            }
        };
        unresolved.push(Report { pair: pair.clone(), outcome, elapsed });
    }
    (new, unresolved)
}

/// The lock entry for what a tag resolved to: the old entry's `first_seen` when the digest is
/// the same (and its manifests, when a dry run did not read them).
fn locked_tag(old: Option<&LockedTag>, resolved: Resolved) -> LockedTag {
    let same = old.filter(|old| old.digest == resolved.digest);
    let manifests: Vec<LockedManifest> = resolved
        .manifests
        .into_iter()
        .map(|(digest, platform)| LockedManifest { digest, platform })
        .collect();
    let entries_read = resolved.entries_read;
    let mut artifacts: Vec<LockedArtifact> = resolved.artifacts.into_iter().map(locked_artifact).collect();
    let read_nothing = manifests.is_empty() && artifacts.is_empty();
    match same {
        Some(old) if read_nothing => old.clone(),
        Some(old) => {
            // The index was not read again (its digest is the same): the referrers among its
            // own entries are what the lock says.
            let listed = |a: &&LockedArtifact| a.subject.is_some() && old.lists(&a.digest);
            for kept in old.artifacts.iter().filter(listed) {
                if !artifacts.contains(kept) {
                    artifacts.push(kept.clone());
                }
            }
            LockedTag {
                first_seen: old.first_seen.clone(),
                manifests,
                artifacts,
                entries_read,
                ..old.clone()
            }
        }
        None => LockedTag {
            digest: resolved.digest,
            first_seen: lock::utc_now(),
            manifests,
            artifacts,
            entries_read,
        },
    }
}

fn locked_artifact(artifact: Artifact) -> LockedArtifact {
    match artifact {
        Artifact::Tagged { tag, digest } => LockedArtifact { tag, digest, ..LockedArtifact::default() },
        Artifact::Referrer { subject, descriptor } => LockedArtifact {
            tag: String::new(),
            digest: descriptor.digest,
            subject: Some(subject),
            media_type: Some(descriptor.media_type),
            size: Some(descriptor.size),
            artifact_type: descriptor.artifact_type,
        },
    }
}

/// Where a locked artifact goes: under its tag (cosign's), or by digest (a referrer, or a
/// source's fallback tag, whose entries are merged into the destination's tag instead).
fn artifact_destination(destination: &Reference, artifact: &LockedArtifact) -> Reference {
    let (registry, repository) = (destination.registry().to_string(), destination.repository().to_string());
    if artifact.tag.is_empty() || fallback_subject(artifact).is_some() {
        Reference::with_digest(registry, repository, artifact.digest.clone())
    } else {
        Reference::with_tag(registry, repository, artifact.tag.clone())
    }
}

/// The subject whose fallback tag (`sha256-<hex>`, no suffix) a locked artifact is.
fn fallback_subject(artifact: &LockedArtifact) -> Option<String> {
    let hex = artifact.tag.strip_prefix("sha256-")?;
    (!hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

/// Every referrer the lock knows for `destination`'s tag, per subject: those with a `subject`
/// (the API's, the index's own entries), and the entries of the source's fallback tags, read
/// from the destination by digest (where the copy put them). A fallback index that cannot be
/// read there comes back as the error, beside the rest.
async fn locked_referrers(
    session: &Session,
    destination: &Reference,
    locked: &LockedTag,
) -> (BTreeMap<String, Vec<Referrer>>, Vec<anyhow::Error>) {
    let mut by_subject: BTreeMap<String, Vec<Referrer>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for artifact in &locked.artifacts {
        if let (Some(subject), Some(media_type), Some(size)) =
            (&artifact.subject, &artifact.media_type, artifact.size)
        {
            by_subject.entry(subject.clone()).or_default().push(Referrer {
                digest: artifact.digest.clone(),
                media_type: media_type.clone(),
                size,
                artifact_type: artifact.artifact_type.clone(),
            });
        }
        if let Some(subject) = fallback_subject(artifact) {
            let at = destination.clone_with_digest(artifact.digest.clone());
            let read = async { anyhow::Ok(manifest::parse(&session.manifest(&at).await?)?) };
            match read.await {
                Ok(index) => by_subject
                    .entry(subject)
                    .or_default()
                    .extend(index.children.into_iter().map(Referrer::from)),
                Err(err) => unreadable.push(err),
            }
        }
    }
    (by_subject, unreadable)
}

/// For each vendored tag whose copy did not fail, its referrers listed where the destination
/// lists them: nothing to do with the referrers API; without it, merged into each subject's
/// fallback tag. Runs after every copy. Failures come back as reports.
pub(super) async fn write_fallback_tags(
    session: &Session,
    pairs: &[Pair],
    lock: &Lock,
    copies: &[Report],
) -> Vec<Report> {
    let failed: Vec<String> = copies
        .iter()
        .filter(|report| !matches!(report.outcome, CopyOutcome::Copied { .. } | CopyOutcome::UpToDate { .. }))
        .map(|report| report.pair.destination.whole())
        .collect();
    let mut reports = Vec::new();
    for pair in pairs {
        let Some(locked) = lock.tags.get(&lock_key(pair)) else {
            continue;
        };
        if disagreement(pair, lock).is_some() {
            continue;
        }
        // Nothing is listed while something of the tag is missing there: the image, or any of
        // what is attached to it (a referrer, a source's fallback index).
        let destinations = std::iter::once(pair.destination.whole())
            .chain(locked.artifacts.iter().map(|a| artifact_destination(&pair.destination, a).whole()));
        if destinations.into_iter().any(|whole| failed.contains(&whole)) {
            continue;
        }
        let started = Instant::now();
        let fail = |error: String| Report {
            pair: pair.clone(),
            outcome: CopyOutcome::Failed { failure: Failure::permanent(error) },
            elapsed: started.elapsed(),
        };
        let (by_subject, unreadable) = locked_referrers(session, &pair.destination, locked).await;
        if let Some(err) = unreadable.first() {
            reports.push(fail(format!("the referrers the lock names: {err:#}")));
            continue;
        }
        for (subject, referrers) in by_subject {
            if let Err(err) = write_fallback_tag(session, &pair.destination, &subject, &referrers).await {
                reports.push(fail(format!("referrers of {subject}: {err:#}")));
            }
        }
    }
    reports
}

async fn write_fallback_tag(
    session: &Session,
    destination: &Reference,
    subject: &str,
    referrers: &[Referrer],
) -> Result<()> {
    if session.referrers(destination, subject).await?.is_some() {
        return Ok(());
    }
    let at = fallback_reference(destination, subject);
    let existing = session.manifest_if_any(&at).await?;
    let Some(merged) = merged_fallback_index(existing.as_deref(), referrers)? else {
        return Ok(());
    };
    session.push_manifest(&at, &bytes::Bytes::from(merged), manifest::OCI_INDEX).await
}

/// What to copy: each tag at its locked digest (a pinned tag from its pin, which the lock agrees
/// with by now: `lock_tags`, `check_pins`), and each locked artifact under its tag (or by digest,
/// for a referrer the source's API listed).
pub(super) fn pinned_pairs(pairs: &[Pair], lock: &Lock, with_artifacts: bool) -> Vec<Pair> {
    let mut copies = Vec::new();
    for pair in pairs {
        let Some(locked) = lock.tags.get(&lock_key(pair)) else {
            continue;
        };
        // A pin that could not be locked (`lock_tags` reported it): the lock's other digest is
        // not what the tag is vendored as.
        if disagreement(pair, lock).is_some() {
            continue;
        }
        let (source, destination) = (&pair.source, &pair.destination);
        let at = |digest: &str| {
            Reference::with_digest(
                source.registry().to_string(),
                source.repository().to_string(),
                digest.to_string(),
            )
        };
        let tag_source = match list::pin(source) {
            Some(_) => source.clone(),
            None => at(&locked.digest),
        };
        copies.push(Pair { source: tag_source, destination: destination.clone() });
        if with_artifacts {
            // An entry of the index is copied with it.
            for artifact in locked.artifacts.iter().filter(|a| !locked.lists(&a.digest)) {
                copies.push(Pair {
                    source: at(&artifact.digest),
                    destination: artifact_destination(destination, artifact),
                });
            }
        }
    }
    copies
}

/// One difference between upstream, the lock and the destination.
pub(super) struct Drift {
    tag: String,
    what: String,
}

/// Upstream, lock and destination for every tag (and every locked artifact at the destination).
pub(super) async fn check_drift(
    session: &Session,
    pairs: &[Pair],
    lock: &Lock,
    with_artifacts: bool,
) -> Vec<Drift> {
    let checks = pairs.iter().map(|pair| async move {
        let key = lock_key(pair);
        let (upstream, destination) = tokio::join!(
            session.manifest_digest(&pair.source, false),
            session.manifest_digest(&pair.destination, false)
        );
        let mut drifts = Vec::new();
        let mut drift = |what: String| drifts.push(Drift { tag: key.clone(), what });
        let describe = |answer: &Result<Option<String>>| match answer {
            Ok(Some(digest)) => short(digest).to_string(),
            Ok(None) => "missing".to_string(),
            Err(err) => format!("unreadable ({err:#})"),
        };
        let Some(locked) = lock.tags.get(&key) else {
            drift(format!(
                "not in the lock (upstream {}): run `cargo xtask thirdparty --update`",
                describe(&upstream)
            ));
            return drifts;
        };
        let is_locked = |answer: &Result<Option<String>>| {
            answer.as_ref().ok().and_then(Option::as_deref) == Some(locked.digest.as_str())
        };
        // A pinned tag: `upstream` is its pin, asked for by digest; where the tag points
        // upstream is no concern of it.
        match list::pin(&pair.source) {
            Some(pin) if pin != locked.digest => {
                // Until the lock agrees with the pin, the destination has nothing to agree with.
                drift(format!("the list pins {pin}, the lock has {}: {}", locked.digest, pin_advice(pair)));
                return drifts;
            }
            Some(pin) if !is_locked(&upstream) => drift(format!(
                "the pinned digest {} is {} upstream: pin a digest that is there",
                short(pin),
                describe(&upstream)
            )),
            None if !is_locked(&upstream) => drift(format!(
                "upstream moved: lock {}, upstream {}: `cargo xtask thirdparty --update` locks it",
                short(&locked.digest),
                describe(&upstream)
            )),
            Some(_) | None => {}
        }
        if !is_locked(&destination) {
            drift(format!(
                "destination differs: lock {}, destination {}: `cargo xtask thirdparty --locked` copies it",
                short(&locked.digest),
                describe(&destination)
            ));
        }
        if with_artifacts {
            for artifact in &locked.artifacts {
                let at = artifact_destination(&pair.destination, artifact);
                let found = session.manifest_digest(&at, false).await;
                if found.as_ref().ok().and_then(Option::as_deref) != Some(artifact.digest.as_str()) {
                    let name = if artifact.tag.is_empty() { "referrer" } else { artifact.tag.as_str() };
                    drift(format!(
                        "destination lacks {name} {}: found {}",
                        short(&artifact.digest),
                        describe(&found)
                    ));
                }
            }
            // Each referrer listed as one where it landed (the API, or the fallback tag). A
            // fallback index missing there is a drift of its own, above.
            let (by_subject, _) = locked_referrers(session, &pair.destination, locked).await;
            for (subject, referrers) in by_subject {
                let listed: Vec<String> = match referrers_of(session, &pair.destination, &subject).await {
                    Ok(listed) => listed.into_iter().map(|d| d.digest).collect(),
                    Err(err) => {
                        drift(format!("referrers of {} unreadable: {err:#}", short(&subject)));
                        continue;
                    }
                };
                for referrer in referrers.iter().filter(|r| !listed.contains(&r.digest)) {
                    drift(format!(
                        "the destination does not list {} as a referrer of {}: \
                         `cargo xtask thirdparty --locked` lists it",
                        short(&referrer.digest),
                        short(&subject)
                    ));
                }
            }
        }
        drifts
    });
    let mut drifts: Vec<Drift> = futures_util::future::join_all(checks).await.into_iter().flatten().collect();
    let listed: Vec<String> = pairs.iter().map(lock_key).collect();
    for key in lock.tags.keys().filter(|key| !listed.contains(key)) {
        let what = "in the lock but not in the list: `cargo xtask thirdparty` drops it".to_string();
        drifts.push(Drift { tag: key.clone(), what });
    }
    drifts
}

pub(super) fn report_drift(drifts: &[Drift], tags: usize, lock_name: &str) -> Result<()> {
    for drift in drifts {
        println!("drift       {}: {}", drift.tag, drift.what);
    }
    if drifts.is_empty() {
        println!("thirdparty: {tags} tags: upstream, {lock_name} and the destination agree");
        return Ok(());
    }
    bail!("{} drift(s) between upstream, {lock_name} and the destination (see above)", drifts.len())
}
