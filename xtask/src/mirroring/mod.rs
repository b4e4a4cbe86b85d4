//! Vendoring: the base images of the list (`thirdparty.txt`) copied into
//! `$DOCKER_REPO/thirdparty/` at the digests of its lock, in-process (`registry`), with the
//! lock kept (`locking`) and the list read (`list`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_client::secrets::RegistryAuth;

use crate::ctx::Ctx;
use crate::graph::Graph;
use crate::lock::{self, Lock};
use crate::platform_build::node::{Node, builds_here, choose_builder};
use crate::registry::auth::CredentialSource;
use crate::registry::credentials::registry_credentials;
use crate::registry::retry::{DEFAULT_ATTEMPTS, RetryPolicy};
use crate::registry::session::{DEFAULT_STALL_TIMEOUT, SessionOptions};
use crate::registry::{self, CopyOutcome, MirrorOptions, Pair, RegistryAccess, Report, Session};

pub mod list;
mod locking;
mod mode;
mod report;
use locking::{
    check_drift, check_named_images, check_pins, lock_key, lock_tags, pinned_pairs, report_drift,
    write_fallback_tags,
};
pub use mode::Mode;
use report::{Summary, TagLines, tag_line};

/// How to vendor (see `flags::VendorArgs`, which reads them from the command line).
#[derive(Debug, Clone, PartialEq)]
pub struct VendorOptions {
    /// The list of images to vendor [default: the catalog's].
    pub file: Option<PathBuf>,
    /// Blobs copied at once, across all tags.
    pub jobs: u16,
    /// Seconds a registry may stall mid-request.
    pub timeout: f64,
    /// Tries per request, the first included.
    pub tries: u32,
    /// Start no new pull from a registry that reports fewer pulls left.
    pub min_pulls_left: u64,
    pub verbose: bool,
    /// Leave out signatures, attestations, SBOMs and referrers.
    pub no_referrers: bool,
}

impl Default for VendorOptions {
    fn default() -> Self {
        VendorOptions {
            file: None,
            jobs: 16,
            timeout: DEFAULT_STALL_TIMEOUT.as_secs_f64(),
            tries: DEFAULT_ATTEMPTS,
            min_pulls_left: 1,
            verbose: false,
            no_referrers: false,
        }
    }
}

/// The lock beside the list.
pub fn lock_path(ctx: &Ctx, args: &VendorOptions) -> PathBuf {
    ctx.root.join(lock::path_for(&list_path(ctx, args)))
}

/// The list `--file` names, else the catalog's.
pub fn list_path(ctx: &Ctx, args: &VendorOptions) -> PathBuf {
    args.file.clone().unwrap_or_else(|| ctx.catalog.thirdparty.clone())
}

/// Every tag of the list, with where it is vendored to. The whole list is checked first.
pub fn list_pairs(ctx: &Ctx, args: &VendorOptions) -> Result<Vec<Pair>> {
    let file = list_path(ctx, args);
    let entries = list::read(&ctx.root, &file)?;
    list::pairs(&entries, &ctx.settings.docker_repo)
        .map_err(|errors| list::refused(&ctx.root.join(&file), &errors))
}

/// thirdparty --bases: vendor what the catalog's builds start from (not the cloud builder's
/// bases): each image's vendored bases, and the BuildKit image when this engine builds in a
/// builder container. `locked`: exactly the lock's digests.
pub fn vendor_build_bases(ctx: &Ctx, graph: &Graph, args: &VendorOptions, locked: bool) -> Result<()> {
    let mut needed: Vec<(String, String)> = Vec::new();
    for (_, image) in ctx.catalog.task_images() {
        // An image this run builds for none of its platforms is not in the graph: nothing to vendor.
        let Some(vertex) = graph.vertex(&image.name) else { continue };
        needed.extend(vertex.bases.iter().map(|base| (base.vendored.clone(), image.dockerfile())));
    }
    // Only this engine can say now which builder it needs. The arm64 node (MULTI_CONTEXT=1) is
    // up only once the builds start it: they ask it then, and vendor BuildKit for it only if its
    // engine reports the classic image store (see `vendor_buildkit_for`).
    if builds_here(&ctx.settings) {
        let here = choose_builder(ctx, None)?;
        if !here.engine {
            needed.push(buildkit_need(ctx));
        }
    }
    if ctx.settings.multi_context {
        ctx.runner.say(
            "the arm64 node's builder is known once the node is up: the builds ask its engine then, and \
             vendor the BuildKit image only if it reports the classic image store",
        );
    }
    needed.extend(sbom_need(ctx));
    let mode = if locked { Mode::Locked } else { Mode::Default { whole_list: false } };
    vendor_bases(ctx, args, needed, mode)
}

/// The vendored BuildKit image, which a builder container on this engine boots from, and who
/// needs it (for `vendor_bases`).
pub fn buildkit_need(ctx: &Ctx) -> (String, String) {
    (ctx.settings.vendored(&ctx.catalog.buildkit), "the docker-container builder".into())
}

/// The vendored SBOM generator, when builds attach SBOMs (`SBOM`) and the catalog names one.
pub fn sbom_need(ctx: &Ctx) -> Option<(String, String)> {
    let generator = ctx.catalog.sbom_generator.as_ref().filter(|_| ctx.settings.sbom)?;
    Some((ctx.settings.vendored(generator), "the SBOM attestations".into()))
}

/// Once `nodes` are up: the vendored BuildKit image for those of them that build in a builder
/// container (an engine with the classic image store), unless this engine's need vendored it
/// already (`vendor_build_bases`). `locked`: the lock's digest.
pub fn vendor_buildkit_for(ctx: &Ctx, args: &VendorOptions, locked: bool, nodes: &[Node]) -> Result<()> {
    let Some(node) = nodes.iter().find(|node| node.engine.context.is_some() && !node.builder.engine) else {
        return Ok(());
    };
    let needed = vec![(
        ctx.settings.vendored(&ctx.catalog.buildkit),
        format!("the docker-container builder on {}", node.place()),
    )];
    let mode = if locked { Mode::Locked } else { Mode::Default { whole_list: false } };
    vendor_bases(ctx, args, needed, mode)
}

impl VendorOptions {
    /// The flags that give these options again, those that differ from the defaults only: a
    /// dry run's `cargo xtask thirdparty …` line.
    pub fn flags(&self) -> Vec<String> {
        let defaults = VendorOptions::default();
        let mut flags = Vec::new();
        let mut give = |flag: &str, value: String, default: String| {
            if value != default {
                flags.extend([flag.to_string(), value]);
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map_or(String::new(), |p| p.display().to_string());
        give("--file", path(&self.file), path(&defaults.file));
        give("--jobs", self.jobs.to_string(), defaults.jobs.to_string());
        give("--timeout", self.timeout.to_string(), defaults.timeout.to_string());
        give("--tries", self.tries.to_string(), defaults.tries.to_string());
        give("--min-pulls-left", self.min_pulls_left.to_string(), defaults.min_pulls_left.to_string());
        for (flag, on) in [("--verbose", self.verbose), ("--no-referrers", self.no_referrers)] {
            if on {
                flags.push(flag.to_string());
            }
        }
        flags
    }
}

/// Vendor what a build needs: `needed` (a reference under `$DOCKER_REPO/thirdparty/`, and who
/// needs it), each of which must be in the list; the rest of the list is left alone (another
/// image's bases may need a login this run lacks).
pub fn vendor_bases(
    ctx: &Ctx,
    args: &VendorOptions,
    needed: Vec<(String, String)>,
    mode: Mode,
) -> Result<()> {
    let list = list_path(ctx, args);
    let pairs = list_pairs(ctx, args)?;
    let mut chosen: Vec<Pair> = Vec::new();
    for (reference, user) in needed {
        let wanted = registry::reference::parse(&reference).map_err(|e| {
            anyhow::anyhow!("{user} needs `{reference}`, which is not a valid image reference ({e})")
        })?;
        let Some(pair) = pairs.iter().find(|p| p.destination.whole() == wanted.whole()) else {
            bail!(
                "{user} needs {reference}, which {} does not vendor: add its source image and tag there{}",
                list.display(),
                own_line(ctx, &list, &wanted.whole()).map_or(String::new(), |(line, own)| format!(
                    ": `{line}`, as {} lists it",
                    own.display()
                ))
            );
        };
        if !chosen.iter().any(|p| p.destination.whole() == wanted.whole()) {
            chosen.push(pair.clone());
        }
    }
    if ctx.runner.is_dry_run() {
        // A dry run of the vendoring would ask the registries; the plan only names the step.
        let names: Vec<String> = chosen.iter().map(|p| p.destination.to_string()).collect();
        ctx.runner.say(&format!(
            "thirdparty: vendor from {} what the builds need: {} (`cargo xtask thirdparty --dry-run` shows what is out of date)",
            list.display(),
            names.join(" ")
        ));
        return Ok(());
    }
    vendor(ctx, args, chosen, mode)
}

/// For a list other than this repository's own (another repository's catalog, which takes
/// this one's BuildKit image and cloud builder): the line of the own list that vendors
/// `reference`, and that list.
fn own_line(ctx: &Ctx, list: &std::path::Path, reference: &str) -> Option<(String, PathBuf)> {
    let own = crate::catalog::Catalog::load(&ctx.root).ok()?.thirdparty;
    if own == list {
        return None;
    }
    let entries = list::read(&ctx.root, &own).ok()?;
    let pairs = list::pairs(&entries, &ctx.settings.docker_repo).ok()?;
    let pair = pairs.iter().find(|p| p.destination.whole() == reference)?;
    let source = pair.source.whole();
    let written = registry::reference::Written::split(&source);
    let pin = written.digest.map_or(String::new(), |digest| format!("@{digest}"));
    Some((format!("{}: {}{pin}", written.name, written.tag.unwrap_or("latest")), own))
}

/// Vendor `pairs` (tags of the list) into `$DOCKER_REPO/thirdparty/` as `mode` says: each at
/// the digest thirdparty.lock names, resolving (and locking) the tags that need it.
pub fn vendor(ctx: &Ctx, args: &VendorOptions, pairs: Vec<Pair>, mode: Mode) -> Result<()> {
    if pairs.is_empty() {
        println!("{}: no images to vendor, nothing to do", list_path(ctx, args).display());
        return Ok(());
    }
    let lock_path = lock_path(ctx, args);
    let lock_name = lock_path.file_name().map_or("the lock".into(), |n| n.to_string_lossy().into_owned());
    let old_lock = Lock::load(&lock_path)?;
    if mode == Mode::Locked {
        let missing: Vec<String> =
            pairs.iter().map(lock_key).filter(|key| !old_lock.tags.contains_key(key)).collect();
        if !missing.is_empty() {
            bail!(
                "{lock_name} lacks {}: run `cargo xtask thirdparty --update` to lock {}",
                missing.join(", "),
                if missing.len() == 1 { "it" } else { "them" }
            );
        }
        check_pins(&pairs, &old_lock, &lock_name)?;
    }
    if let Mode::Update(images) = &mode {
        check_named_images(images, &pairs)?;
    }

    let registries = credentials(ctx, args, &pairs)?;
    let dry_run = ctx.runner.is_dry_run();
    let check_only = mode == Mode::Check || dry_run;
    let options = MirrorOptions { jobs: usize::from(args.jobs), check_only };
    let started = Instant::now();
    let accesses: Vec<RegistryAccess> = registries.iter().map(|(access, _)| access.clone()).collect();
    let session = Session::new(&accesses, session_options(args))?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    if mode == Mode::Check {
        let drifts = runtime.block_on(async {
            let session = session.authenticate(registries).await;
            check_drift(&session, &pairs, &old_lock, !args.no_referrers).await
        });
        return report_drift(&drifts, pairs.len(), &lock_name);
    }

    let (mirrored, mut new_lock, unresolved, unreachable) = runtime.block_on(async {
        let session = Arc::new(session.authenticate(registries).await);
        let (new_lock, mut unresolved) =
            lock_tags(&session, &pairs, &old_lock, &mode, !args.no_referrers, dry_run).await;
        let copies = pinned_pairs(&pairs, &new_lock, !args.no_referrers);
        for change in lock::changes(&old_lock, &new_lock) {
            println!("{change}");
        }
        let progress = Arc::new(TagLines::new(copies.len(), dry_run));
        let mirrored = registry::mirror(Arc::clone(&session), copies, options, progress.clone()).await;
        progress.finish();
        if !dry_run && !args.no_referrers {
            unresolved.extend(write_fallback_tags(&session, &pairs, &new_lock, &mirrored.reports).await);
        }
        (mirrored, new_lock, unresolved, session.unreachable())
    });
    for report in &unresolved {
        println!("{}", tag_line(report, dry_run));
    }

    let registry::Mirrored { mut reports, retries, rate_limits, .. } = mirrored;
    reports.extend(unresolved);
    keep_what_was_copied(&mut new_lock, &old_lock, &pairs, &reports);
    let summary = Summary::of(&reports);
    println!("{}", summary.line(retries, started.elapsed(), dry_run));
    for (host, limit) in &rate_limits {
        println!("thirdparty: {host} rate limit: {limit}");
    }
    if mode != Mode::Locked {
        if dry_run {
            if new_lock != old_lock {
                println!("thirdparty: {lock_name} would change as above (dry run: not written)");
            }
        } else if (lock_path.exists() || !new_lock.tags.is_empty()) && new_lock.save(&lock_path)? {
            println!("thirdparty: wrote {}", lock_path.display());
        }
    }
    if summary.held_back > 0 {
        bail!(
            "{} of {} tags were held back to spare {}'s pull quota (see above)",
            summary.held_back,
            reports.len(),
            rate_limits.iter().map(|(host, _)| host.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if summary.failed > 0 {
        let sources: Vec<String> = pairs
            .iter()
            .map(|p| p.source.resolve_registry().to_string())
            .filter(|h| unreachable.contains(h))
            .collect();
        if !sources.is_empty() {
            let mut sources = sources;
            sources.sort();
            sources.dedup();
            eprintln!(
                "thirdparty: {} could not be reached (offline?). Vendoring reads the upstream registries, \
                 at least the first time: run it where they answer, or vendor from a mirror with \
                 `--file <list>`, a list in the format of {} whose images name the mirror, or point \
                 DOCKER_REPO at a repository where the images are vendored already",
                sources.join(", "),
                list_path(ctx, args).display()
            );
        }
        bail!("{} of {} tags failed (see above)", summary.failed, reports.len());
    }
    Ok(())
}

/// A tag whose copy failed keeps what the lock said before (or stays out of it): a lock entry
/// is never written for a digest that nothing was copied for.
fn keep_what_was_copied(new: &mut Lock, old: &Lock, pairs: &[Pair], reports: &[Report]) {
    let failed = |pair: &Pair| {
        reports.iter().any(|report| {
            matches!(
                report.outcome,
                CopyOutcome::Failed { .. } | CopyOutcome::PinGone { .. } | CopyOutcome::HeldBack(_)
            ) && report.pair.destination.whole() == pair.destination.whole()
        })
    };
    for pair in pairs.iter().filter(|pair| failed(pair)) {
        let key = lock_key(pair);
        match old.tags.get(&key) {
            Some(entry) => new.tags.insert(key, entry.clone()),
            None => new.tags.remove(&key),
        };
    }
}

/// Credentials for every registry of `pairs`, found synchronously first: helpers and gcloud are
/// external commands.
fn credentials(
    ctx: &Ctx,
    args: &VendorOptions,
    pairs: &[Pair],
) -> Result<Vec<(RegistryAccess, RegistryAuth)>> {
    let destinations: Vec<String> =
        pairs.iter().map(|p| p.destination.resolve_registry().to_string()).collect();
    let hosts: Vec<(String, bool)> = distinct_registries(pairs)
        .into_iter()
        .map(|host| {
            let read_only = !destinations.contains(&host);
            (host, read_only)
        })
        .collect();
    let registries = registry_credentials(
        &ctx.runner,
        &hosts,
        &ctx.settings.gcloud_auth_registries,
        &ctx.settings.insecure_registries,
    )?;
    let mut found = Vec::new();
    let mut anonymous: Vec<String> = Vec::new();
    let mut why_anonymous = String::new();
    for (access, auth, source) in registries {
        if let CredentialSource::AnonymousWithoutGcloud(why) = &source {
            anonymous.push(access.host.clone());
            // gcloud's own advice runs over many lines: its first says what is wrong.
            why_anonymous = why.lines().next().unwrap_or_default().trim().to_string();
        }
        if args.verbose {
            eprintln!("registry: {}: credentials from {source}", access.host);
        }
        found.push((access, auth));
    }
    if !anonymous.is_empty() {
        eprintln!(
            "warning: no gcloud login found ({why_anonymous}): reading {} anonymously, as public images allow \
             (`gcloud auth login` for private ones)",
            anonymous.join(", ")
        );
    }
    Ok(found)
}

fn session_options(args: &VendorOptions) -> SessionOptions {
    SessionOptions {
        retry: RetryPolicy { attempts: args.tries, ..RetryPolicy::default() },
        stall_timeout: Duration::from_secs_f64(args.timeout.max(0.1)),
        verbose: args.verbose,
        min_pulls_left: args.min_pulls_left,
    }
}

fn distinct_registries(pairs: &[Pair]) -> Vec<String> {
    let mut hosts: Vec<String> = pairs
        .iter()
        .flat_map(|p| [p.source.resolve_registry().to_string(), p.destination.resolve_registry().to_string()])
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}
