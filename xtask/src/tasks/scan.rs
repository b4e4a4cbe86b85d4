//! scan: every platform of every published image through Artifact Registry's on-demand
//! scanning, one scan per platform digest (the automatic scan covers only the first linux/amd64
//! image of a multi-arch index, so every arm64 half would go unscanned), a table per image and
//! platform, and a failure above a severity.

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::published::Destination;
use crate::registry::manifest::short_digest;
use crate::registry::reference::repository_of;
use crate::runner::sh;

/// Severities, the worst first, as Container Analysis names them.
const SEVERITIES: [&str; 5] = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "MINIMAL"];

#[derive(Args, Debug, Clone)]
pub struct ScanArgs {
    /// The images to scan, by name or task (all of the catalog's when none is named)
    pub images: Vec<String>,
    /// Fail when any platform of any image has a finding of this severity or worse
    #[arg(long, env = "SCAN_FAIL_ON", default_value = "CRITICAL", value_parser = SEVERITIES)]
    pub fail_on: String,
}

/// What one platform's scan found: how many of each severity (and of none given).
struct Findings {
    image: String,
    platform: String,
    digest: String,
    counts: [usize; SEVERITIES.len() + 1],
}

/// scan
pub fn scan(ctx: &Ctx, args: &ScanArgs) -> Result<()> {
    let images = ctx.catalog.named_images(&args.images)?;
    let destination = Destination::open(ctx)?;
    let (sh, project) = (sh(), &ctx.settings.gcp_project);
    let mut all = Vec::new();
    for image in images {
        let reference = ctx.settings.image_ref(image);
        let Some(published) = destination.published(&reference)? else {
            bail!("{reference} is not published: `cargo xtask publish-all` first");
        };
        let repository = repository_of(&reference);
        for (platform, digest) in &published.platforms {
            let target = format!("{repository}@{digest}");
            let format = "--format=value(response.scan)";
            let scan = cmd!(
                sh,
                "gcloud artifacts docker images scan {target} --remote --project {project} {format}"
            );
            ctx.runner.say(&format!("{}: {platform}, {}", image.name, short_digest(digest)));
            if ctx.runner.is_dry_run() {
                ctx.runner.run(scan)?;
                ctx.runner.say(&format!(
                    "then `gcloud artifacts docker images list-vulnerabilities <that scan> --project {project} --format=json`"
                ));
                continue;
            }
            let name = ctx.runner.query(scan, None)?.trim().to_string();
            if name.is_empty() {
                bail!("the scan of {target} gave no scan to read its findings from");
            }
            let list = cmd!(
                sh,
                "gcloud artifacts docker images list-vulnerabilities {name} --project {project} --format=json"
            );
            let json = ctx.runner.query(list, None)?;
            let counts = count(&json).with_context(|| format!("the findings of {target}"))?;
            all.push(Findings {
                image: image.name.clone(),
                platform: platform.clone(),
                digest: digest.clone(),
                counts,
            });
        }
    }
    if ctx.runner.is_dry_run() {
        return Ok(());
    }
    println!("{}", table(&all));
    let worst = SEVERITIES.iter().position(|s| *s == args.fail_on).expect("a severity");
    let failing: Vec<String> = all
        .iter()
        .filter(|f| f.counts[..=worst].iter().any(|n| *n > 0))
        .map(|f| format!("{} {}", f.image, f.platform))
        .collect();
    if !failing.is_empty() {
        bail!("findings of {} or worse in {} (see above)", args.fail_on, failing.join(", "));
    }
    Ok(())
}

/// The findings of `list-vulnerabilities --format=json`, counted by severity.
fn count(json: &str) -> Result<[usize; SEVERITIES.len() + 1]> {
    let occurrences: serde_json::Value = serde_json::from_str(json).context("not JSON")?;
    let mut counts = [0; SEVERITIES.len() + 1];
    for occurrence in occurrences.as_array().context("not a list of findings")? {
        let vulnerability = &occurrence["vulnerability"];
        let severity = vulnerability["effectiveSeverity"].as_str().or(vulnerability["severity"].as_str());
        let at = severity
            .and_then(|s| SEVERITIES.iter().position(|known| *known == s))
            .unwrap_or(SEVERITIES.len());
        counts[at] += 1;
    }
    Ok(counts)
}

fn table(all: &[Findings]) -> String {
    let mut rows: Vec<Vec<String>> = vec![
        ["IMAGE", "PLATFORM", "DIGEST"]
            .iter()
            .chain(SEVERITIES.iter())
            .chain(["OTHER"].iter())
            .map(|s| s.to_string())
            .collect(),
    ];
    for f in all {
        let mut row = vec![f.image.clone(), f.platform.clone(), short_digest(&f.digest).to_string()];
        row.extend(f.counts.iter().map(usize::to_string));
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_findings_by_severity() {
        let json = r#"[{"vulnerability": {"effectiveSeverity": "HIGH"}}, {"vulnerability": {"severity": "CRITICAL"}},
                       {"vulnerability": {"effectiveSeverity": "HIGH"}}, {"vulnerability": {}}]"#;
        assert_eq!(super::count(json).unwrap(), [1, 2, 0, 0, 0, 1]);
        assert_eq!(super::count("[]").unwrap(), [0; 6]);
    }
}
