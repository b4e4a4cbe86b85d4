//! What became of each image of a run, and the closing table that shows it.

use std::time::Duration;

use super::plan::ParentState;
use super::timeline::{Bar, BarOutcome};
use crate::platform::Platforms;

/// What became of one image.
#[derive(Debug)]
pub enum ImageOutcome {
    /// Its inputs match what is published at this digest: nothing was built.
    UpToDate {
        digest: String,
    },
    /// Built and published; the digest when it could be read back.
    Built {
        digest: Option<String>,
    },
    /// A dry run: it would be built.
    WouldBuild,
    Failed {
        failure: crate::failure::Failure,
    },
    /// Not built because an image it builds on was not (the reason).
    Skipped {
        reason: String,
    },
}

impl ImageOutcome {
    /// What its children see of it, `name`.
    pub fn parent_state(&self, name: &str) -> ParentState {
        match self {
            ImageOutcome::UpToDate { digest } | ImageOutcome::Built { digest: Some(digest) } => {
                ParentState::Published(digest.clone())
            }
            ImageOutcome::Built { digest: None } => ParentState::DigestUnreadable,
            ImageOutcome::WouldBuild => ParentState::ToBeBuilt,
            ImageOutcome::Failed { .. } => ParentState::failed(name),
            ImageOutcome::Skipped { .. } => ParentState::Failed(format!("{name} was skipped")),
        }
    }
}

/// One image's row of the closing table.
pub struct Row {
    pub name: String,
    /// The platforms it is built for in this run.
    pub platforms: Platforms,
    pub outcome: ImageOutcome,
    pub elapsed: Duration,
    /// Cached steps and steps of its builds.
    pub steps: Option<(usize, usize)>,
}

/// Where an image's platforms were built, from the timeline's bars: `arm64 arm_node-b`, marked
/// when a build spilled off its home or moved off a node that died, and why (the dead one's bar
/// is left out); `-` when nothing was built.
fn nodes_of(image: &str, bars: &[Bar]) -> String {
    let mut built: Vec<&Bar> = bars
        .iter()
        .filter(|bar| bar.image == image && bar.outcome != BarOutcome::Moved && !bar.outcome.is_test())
        .collect();
    built.sort_by(|a, b| a.platform.cmp(&b.platform));
    let cells: Vec<String> = built
        .iter()
        .map(|bar| {
            let arch = bar.platform.rsplit('/').next().unwrap_or_default();
            let p = &bar.placement;
            let mark = match (&p.moved_from, p.spilled) {
                (Some((from, why)), _) => format!(" (moved from {from}: {why})"),
                (None, true) => format!(" (spilled from {})", p.home),
                (None, false) => String::new(),
            };
            format!("{arch} {}{mark}", bar.node)
        })
        .collect();
    if cells.is_empty() { "-".to_string() } else { cells.join(", ") }
}

/// What its platforms' tests said: `passed`, `failed on linux/arm64`; `-` when none ran.
fn tests_of(image: &str, bars: &[Bar]) -> String {
    let tests: Vec<&Bar> = bars.iter().filter(|bar| bar.image == image && bar.outcome.is_test()).collect();
    let mut failed: Vec<&str> = tests
        .iter()
        .filter(|bar| bar.outcome == BarOutcome::TestFailed)
        .map(|bar| bar.platform.as_str())
        .collect();
    failed.sort();
    match (tests.is_empty(), failed.is_empty()) {
        (true, _) => "-".to_string(),
        (false, true) => "passed".to_string(),
        (false, false) => format!("failed on {}", failed.join(", ")),
    }
}

/// The closing table: each image, its platforms, what became of it, its time, its cached steps
/// out of its steps (a failed image's log tail was shown when it failed), and the node of each
/// platform's build (last: it has spaces).
pub fn report(rows: &[Row], bars: &[Bar], elapsed: Duration) {
    let outcome = |row: &Row| match &row.outcome {
        ImageOutcome::UpToDate { .. } => "up to date".to_string(),
        ImageOutcome::Built { .. } => "built".to_string(),
        ImageOutcome::WouldBuild => "would build".to_string(),
        ImageOutcome::Failed { .. } => {
            let failed_test =
                bars.iter().find(|bar| bar.image == row.name && bar.outcome == BarOutcome::TestFailed);
            match failed_test {
                Some(bar) => format!("failed: test on {}", bar.platform),
                None => "failed".to_string(),
            }
        }
        ImageOutcome::Skipped { reason } => format!("skipped: {reason}"),
    };
    let mut table: Vec<[String; 7]> =
        vec![["IMAGE", "PLATFORMS", "OUTCOME", "TIME", "CACHED", "TESTS", "NODES"].map(String::from)];
    for row in rows {
        let time = match row.outcome {
            ImageOutcome::Skipped { .. } => "-".to_string(),
            _ => format!("{:.1} s", row.elapsed.as_secs_f64()),
        };
        let cached = row.steps.map_or("-".to_string(), |(cached, total)| format!("{cached}/{total}"));
        table.push([
            row.name.clone(),
            row.platforms.to_string(),
            outcome(row),
            time,
            cached,
            tests_of(&row.name, bars),
            nodes_of(&row.name, bars),
        ]);
    }
    let widths: Vec<usize> =
        (0..7).map(|col| table.iter().map(|r| r[col].len()).max().unwrap_or(0)).collect();
    println!();
    for row in &table {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", cells.join("  ").trim_end());
    }
    println!("{} images in {:.1} s", rows.len(), elapsed.as_secs_f64());
}
