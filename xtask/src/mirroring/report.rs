//! What a vendoring run shows as it goes: a line per tag as its copy finishes (under a
//! progress bar on a terminal), and the summary line that closes the run. Apart from the copy
//! itself, so that what the user reads is in one place.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::list;
use crate::registry::manifest::short_digest as short;
use crate::registry::{self, CopyOutcome, Pair, Report};

/// One line per tag as it finishes, under a progress bar when stderr is a terminal.
pub(super) struct TagLines {
    bar: ProgressBar,
    sent: std::sync::atomic::AtomicU64,
    dry_run: bool,
}

impl TagLines {
    pub(super) fn new(tags: usize, dry_run: bool) -> TagLines {
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(tags as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed}] {pos}/{len} tags {msg}")
                    .expect("a valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            ProgressBar::hidden()
        };
        TagLines { bar, sent: 0.into(), dry_run }
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl registry::CopyProgress for TagLines {
    fn bytes_sent(&self, bytes: u64) {
        let total = self.sent.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed) + bytes;
        self.bar.set_message(format!("{} sent", HumanBytes(total)));
    }

    fn tag_done(&self, report: &Report) {
        let line = tag_line(report, self.dry_run);
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
        self.bar.inc(1);
    }
}

pub(super) fn tag_line(report: &Report, dry_run: bool) -> String {
    let pair = format!("{} -> {}", shown_source(&report.pair), report.pair.destination);
    match &report.outcome {
        CopyOutcome::UpToDate { digest } => format!("up to date  {pair} ({})", short(digest)),
        CopyOutcome::OutOfDate { source, destination } => {
            let word = if dry_run { "would copy" } else { "out of date" };
            let now = destination.as_deref().map_or("missing".to_string(), |d| format!("now {}", short(d)));
            format!("{word:<11} {pair} ({} -> {now})", short(source))
        }
        CopyOutcome::Copied { digest, blobs_sent, bytes_sent, blobs_present } => format!(
            "copied      {pair} ({}: {blobs_sent} blobs, {} sent, {blobs_present} already there, {:.1} s)",
            short(digest),
            HumanBytes(*bytes_sent),
            report.elapsed.as_secs_f64()
        ),
        CopyOutcome::HeldBack(held) => format!(
            "held back   {pair}: {} reports {} (RateLimit-Remaining), fewer than --min-pulls-left {}; \
             run again once its window has passed, or log in for a larger quota",
            held.host, held.limit, held.min_pulls_left
        ),
        CopyOutcome::PinGone { digest } if list::pin(&report.pair.source).is_some() => format!(
            "FAILED      {pair}: {digest}, which the list pins, is gone from {}/{} upstream: \
             pin a digest that is there",
            report.pair.source.registry(),
            report.pair.source.repository()
        ),
        CopyOutcome::PinGone { digest } => format!(
            "FAILED      {pair}: {digest}, which the lock names, is gone from {}/{} upstream: \
             run `cargo xtask thirdparty --update` to lock what the tag points at now",
            report.pair.source.registry(),
            report.pair.source.repository()
        ),
        CopyOutcome::Failed { failure } => format!("FAILED      {pair}: {failure}"),
    }
}

/// The source as the list names it: a source pinned by the lock shows the tag it was locked
/// for (the destination keeps the tag's name), its digest is on the line anyway; a tag the list
/// pins shows where it comes from, `<image>@<digest>`, never its tag upstream.
fn shown_source(pair: &Pair) -> String {
    if let Some(pin) = list::pin(&pair.source) {
        return format!("{}/{}@{pin}", pair.source.registry(), pair.source.repository());
    }
    match (pair.source.digest(), pair.destination.tag()) {
        (Some(_), Some(tag)) => format!("{}/{}:{tag}", pair.source.registry(), pair.source.repository()),
        _ => pair.source.to_string(),
    }
}

#[derive(Default)]
pub(super) struct Summary {
    pub(super) copied: usize,
    pub(super) up_to_date: usize,
    pub(super) out_of_date: usize,
    pub(super) failed: usize,
    pub(super) held_back: usize,
    pub(super) bytes: u64,
}

impl Summary {
    pub(super) fn of(reports: &[Report]) -> Summary {
        let mut summary = Summary::default();
        for report in reports {
            match &report.outcome {
                CopyOutcome::UpToDate { .. } => summary.up_to_date += 1,
                CopyOutcome::OutOfDate { .. } => summary.out_of_date += 1,
                CopyOutcome::Copied { bytes_sent, .. } => {
                    summary.copied += 1;
                    summary.bytes += bytes_sent;
                }
                CopyOutcome::HeldBack(_) => summary.held_back += 1,
                CopyOutcome::Failed { .. } | CopyOutcome::PinGone { .. } => summary.failed += 1,
            }
        }
        summary
    }

    pub(super) fn line(&self, retries: u64, elapsed: Duration, dry_run: bool) -> String {
        let total = self.copied + self.up_to_date + self.out_of_date + self.failed + self.held_back;
        let held_back =
            if self.held_back > 0 { format!(", {} held back", self.held_back) } else { String::new() };
        let stale = if dry_run { "to copy" } else { "out of date" };
        format!(
            "thirdparty: {total} tags: {} copied ({} sent), {} up to date, {} {stale}, {} failed{held_back}; {retries} retries; {:.1} s",
            self.copied,
            HumanBytes(self.bytes),
            self.up_to_date,
            self.out_of_date,
            self.failed,
            elapsed.as_secs_f64()
        )
    }
}
