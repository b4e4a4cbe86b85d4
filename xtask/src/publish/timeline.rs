//! Where a run's time went, as a picture: one row per node, one bar per platform build of an
//! image, told apart as built, all cached, moved (its node died under it) or failed, a spilled
//! build dashed, each bar's time shown when pointed at, and the critical path (the chain of
//! images that ended last) marked. publish-all writes it beside the logs, `timeline.svg`, and
//! the same facts with each VM's seconds up and busy as `timeline.json`, for scripts (the pool's
//! tests and bench-pool read it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::graph::Graph;

/// What became of one platform build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarOutcome {
    /// Built, some steps run.
    Built,
    /// Built from the cache: every step was a cache hit.
    Cached,
    /// Its node died under it: the build ran again on another node.
    Moved,
    Failed,
    /// A platform's test, after its build, on the same node: passed.
    Tested,
    /// A platform's test that failed.
    TestFailed,
}

impl BarOutcome {
    /// A test's bar, not a build's.
    pub fn is_test(self) -> bool {
        matches!(self, BarOutcome::Tested | BarOutcome::TestFailed)
    }

    fn name(self) -> &'static str {
        match self {
            BarOutcome::Built => "built",
            BarOutcome::Cached => "cached",
            BarOutcome::Moved => "moved",
            BarOutcome::Failed => "failed",
            BarOutcome::Tested => "tested",
            BarOutcome::TestFailed => "test failed",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            BarOutcome::Built => "#4c78a8",
            BarOutcome::Cached => "#9ecae9",
            BarOutcome::Moved => "#f58518",
            BarOutcome::Failed => "#e45756",
            BarOutcome::Tested => "#54a24b",
            BarOutcome::TestFailed => "#b279a2",
        }
    }
}

/// Where a build ran, against where its image hashes to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Placement {
    /// The node it ran on.
    pub node: String,
    /// Its image's home node among the platform's nodes then.
    pub home: String,
    /// Its home was full and this node idle.
    pub spilled: bool,
    /// It ran here because it died on this node before (and why).
    pub moved_from: Option<(String, String)>,
}

/// One platform build of an image on a node: when it started and ended, from the run's start.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub image: String,
    pub platform: String,
    pub node: String,
    pub start: Duration,
    pub end: Duration,
    pub outcome: BarOutcome,
    pub placement: Placement,
}

/// A VM's time in a run: from the run's start, when it was asked up and taken down, and the
/// seconds it ran a build.
#[derive(Debug, Clone, PartialEq)]
pub struct VmTime {
    pub vm: String,
    pub node: String,
    pub started: Duration,
    pub stopped: Duration,
    pub busy: Duration,
}

/// The bars of a run, recorded by the builds as they end, and the VMs' times.
pub struct Timeline {
    started: Instant,
    bars: Mutex<Vec<Bar>>,
    vms: Mutex<Vec<VmTime>>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline { started: Instant::now(), bars: Mutex::new(Vec::new()), vms: Mutex::new(Vec::new()) }
    }
}

impl Timeline {
    /// A build of `image` for `platform`, placed as `placement`, that started at `started` and
    /// ends now.
    pub fn record(
        &self,
        image: &str,
        platform: &str,
        placement: Placement,
        started: Instant,
        outcome: BarOutcome,
    ) {
        let bar = Bar {
            image: image.to_string(),
            platform: platform.to_string(),
            node: placement.node.clone(),
            start: started.saturating_duration_since(self.started),
            end: self.started.elapsed(),
            outcome,
            placement,
        };
        self.bars.lock().expect("not poisoned").push(bar);
    }

    /// A VM asked up at `since`, taken down now, that ran builds for `busy`.
    pub fn record_vm(&self, vm: &str, node: &str, since: Instant, busy: Duration) {
        let time = VmTime {
            vm: vm.to_string(),
            node: node.to_string(),
            started: since.saturating_duration_since(self.started),
            stopped: self.started.elapsed(),
            busy,
        };
        self.vms.lock().expect("not poisoned").push(time);
    }

    pub fn bars(&self) -> Vec<Bar> {
        self.bars.lock().expect("not poisoned").clone()
    }

    pub fn vms(&self) -> Vec<VmTime> {
        self.vms.lock().expect("not poisoned").clone()
    }

    /// The facts of the picture and the VMs' times, as JSON (`timeline.json`).
    pub fn json(&self) -> String {
        let seconds = |d: Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        let builds: Vec<serde_json::Value> = self
            .bars()
            .iter()
            .map(|bar| {
                let p = &bar.placement;
                serde_json::json!({
                    "image": bar.image, "platform": bar.platform, "node": bar.node, "home": p.home,
                    "start": seconds(bar.start), "end": seconds(bar.end), "outcome": bar.outcome.name(),
                    "spilled": p.spilled,
                    "moved_from": p.moved_from.as_ref().map(|(from, _)| from),
                    "why": p.moved_from.as_ref().map(|(_, why)| why),
                })
            })
            .collect();
        let vms: Vec<serde_json::Value> = self
            .vms()
            .iter()
            .map(|vm| {
                serde_json::json!({
                    "vm": vm.vm, "node": vm.node, "started": seconds(vm.started), "stopped": seconds(vm.stopped),
                    "up": seconds(vm.stopped.saturating_sub(vm.started)), "busy": seconds(vm.busy),
                })
            })
            .collect();
        let all =
            serde_json::json!({ "seconds": seconds(self.started.elapsed()), "builds": builds, "vms": vms });
        serde_json::to_string_pretty(&all).expect("JSON of plain values") + "\n"
    }
}

/// The chain of images that ended the run: the image whose builds ended last, then, among the
/// images it builds on, the one that ended last, and so on up the graph.
pub fn critical_path(bars: &[Bar], graph: &Graph) -> Vec<String> {
    let mut ends: BTreeMap<&str, Duration> = BTreeMap::new();
    for bar in bars {
        let end = ends.entry(bar.image.as_str()).or_default();
        *end = (*end).max(bar.end);
    }
    // Of `names`, the image that ended last.
    let last = |names: Vec<String>| -> Option<String> {
        names.into_iter().filter_map(|name| Some((*ends.get(name.as_str())?, name))).max().map(|(_, n)| n)
    };
    let mut path = Vec::new();
    let mut current = last(ends.keys().map(|n| n.to_string()).collect());
    while let Some(image) = current {
        let parents = graph.vertex(&image).map(|v| v.parents.iter().map(|p| p.name.clone()).collect());
        path.push(image);
        current = last(parents.unwrap_or_default());
    }
    path.reverse();
    path
}

const ROW: f64 = 28.0;
const LABEL: f64 = 220.0;
const WIDTH: f64 = 900.0;

/// The picture: an SVG document, one band per node (in the order they first built), its builds
/// at once stacked in lanes, one `rect` of class `bar` per build with its image, platform, node,
/// outcome and critical mark as data attributes and its time as a tooltip.
pub fn svg(bars: &[Bar], critical: &[String]) -> String {
    let mut sorted: Vec<&Bar> = bars.iter().collect();
    sorted.sort_by_key(|bar| (bar.start, bar.end));
    // Each node's lanes, by when each lane is free again; a build takes the first free lane.
    let mut nodes: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut placed: Vec<(&Bar, usize, usize)> = Vec::new();
    for bar in &sorted {
        let node = match nodes.iter().position(|(name, _)| *name == bar.node) {
            Some(node) => node,
            None => {
                nodes.push((&bar.node, Vec::new()));
                nodes.len() - 1
            }
        };
        let lanes = &mut nodes[node].1;
        let lane = match lanes.iter().position(|free| *free <= bar.start) {
            Some(lane) => lane,
            None => {
                lanes.push(Duration::ZERO);
                lanes.len() - 1
            }
        };
        lanes[lane] = bar.end;
        placed.push((bar, node, lane));
    }
    let first_row: Vec<usize> =
        nodes.iter().scan(0, |row, (_, lanes)| Some(std::mem::replace(row, *row + lanes.len()))).collect();
    let rows: usize = nodes.iter().map(|(_, lanes)| lanes.len()).sum();
    let span = bars.iter().map(|bar| bar.end.as_secs_f64()).fold(0.0_f64, f64::max).max(0.001);
    let scale = (WIDTH - LABEL - 20.0) / span;
    let height = ROW * (rows as f64 + 2.0) + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let builds = bars.iter().filter(|bar| !bar.outcome.is_test()).count();
    let _ = writeln!(out, "<title>publish-all: {builds} builds in {span:.1} s</title>");
    // Seconds along the top, at a round step that gives at most ten ticks.
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0]
        .into_iter()
        .find(|step| span / step <= 10.0)
        .unwrap_or(3600.0);
    let mut tick = 0.0;
    while tick <= span {
        let x = LABEL + tick * scale;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="14" fill="#666">{tick} s</text>"##,
            ROW * 0.7,
            ROW * (rows as f64 + 1.0)
        );
        tick += step;
    }
    for ((node, lanes), first) in nodes.iter().zip(&first_row) {
        let y = ROW * (*first as f64 + 1.0);
        let _ = writeln!(out, r#"<text x="4" y="{:.1}">{}</text>"#, y + ROW * 0.6, escape(node));
        let bottom = y + ROW * lanes.len() as f64;
        let _ =
            writeln!(out, r##"<line x1="0" y1="{bottom:.1}" x2="{WIDTH}" y2="{bottom:.1}" stroke="#ccc"/>"##);
    }
    for (bar, node, lane) in &placed {
        let row = first_row[*node] + lane;
        let (x, y) = (LABEL + bar.start.as_secs_f64() * scale, ROW * (row as f64 + 1.0) + 3.0);
        let width = ((bar.end.saturating_sub(bar.start)).as_secs_f64() * scale).max(1.0);
        let on_path = critical.contains(&bar.image);
        let stroke = match (on_path, bar.placement.spilled) {
            (true, _) => r##" stroke="#222" stroke-width="2""##,
            (false, true) => r##" stroke="#222" stroke-dasharray="4 2""##,
            (false, false) => "",
        };
        let placed = match (&bar.placement.moved_from, bar.placement.spilled) {
            (Some((from, why)), _) => format!(", moved here from {from} ({why})"),
            (None, true) => format!(", spilled from {}", bar.placement.home),
            (None, false) => String::new(),
        };
        let seconds = bar.end.saturating_sub(bar.start).as_secs_f64();
        let _ = writeln!(
            out,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{width:.1}" height="{:.1}" fill="{}"{stroke} data-image="{}" data-platform="{}" data-node="{}" data-outcome="{}" data-critical="{on_path}" data-spilled="{}"><title>{} {}: {seconds:.1} s, {}{}{}</title></rect>"#,
            ROW - 6.0,
            bar.outcome.colour(),
            escape(&bar.image),
            escape(&bar.platform),
            escape(&bar.node),
            bar.outcome.name(),
            bar.placement.spilled,
            escape(&bar.image),
            escape(&bar.platform),
            bar.outcome.name(),
            escape(&placed),
            if on_path { ", on the critical path" } else { "" },
        );
        let label = format!("{} {}", bar.image, bar.platform.rsplit('/').next().unwrap_or_default());
        if width > 7.0 * label.len() as f64 {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" fill="white" pointer-events="none">{}</text>"#,
                x + 3.0,
                y + ROW * 0.5,
                escape(&label)
            );
        }
    }
    let legend_y = ROW * (rows as f64 + 1.0) + 20.0;
    let mut x = LABEL - 100.0;
    // The tests' colours only where tests ran.
    let tested = bars.iter().any(|bar| bar.outcome.is_test());
    let outcomes = [BarOutcome::Built, BarOutcome::Cached, BarOutcome::Moved, BarOutcome::Failed]
        .into_iter()
        .chain(tested.then_some([BarOutcome::Tested, BarOutcome::TestFailed]).into_iter().flatten());
    for outcome in outcomes {
        let _ = writeln!(
            out,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
            legend_y - 10.0,
            outcome.colour(),
            x + 16.0,
            outcome.name()
        );
        x += 72.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{legend_y:.1}">outlined: the critical path; dashed: spilled; {span:.1} s in all</text>"#
    );
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(image: &str, platform: &str, node: &str, start: u64, end: u64, outcome: BarOutcome) -> Bar {
        Bar {
            image: image.into(),
            platform: platform.into(),
            node: node.into(),
            start: Duration::from_secs(start),
            end: Duration::from_secs(end),
            outcome,
            placement: Placement { node: node.into(), home: node.into(), ..Placement::default() },
        }
    }

    #[test]
    fn one_bar_per_build_on_its_node_row_with_the_critical_path_marked() {
        let graph = Graph::of_parents(&[("base", &[]), ("app", &["base"]), ("tool", &[])]);
        let bars = vec![
            bar("base", "linux/amd64", "this engine", 0, 4, BarOutcome::Built),
            bar("base", "linux/arm64", "arm_node", 0, 6, BarOutcome::Built),
            bar("tool", "linux/amd64", "this engine", 0, 9, BarOutcome::Cached),
            bar("app", "linux/amd64", "this engine", 7, 10, BarOutcome::Built),
            bar("app", "linux/arm64", "arm_node", 7, 12, BarOutcome::Failed),
        ];
        let critical = critical_path(&bars, &graph);
        assert_eq!(critical, ["base", "app"]);
        let picture = svg(&bars, &critical);
        assert!(picture.starts_with("<svg ") && picture.trim_end().ends_with("</svg>"));
        let rects: Vec<&str> = picture.lines().filter(|l| l.starts_with(r#"<rect class="bar""#)).collect();
        assert_eq!(rects.len(), 5);
        let with = |attr: &str| rects.iter().filter(|r| r.contains(attr)).count();
        assert_eq!(with(r#"data-node="arm_node""#), 2);
        assert_eq!(with(r#"data-critical="true""#), 4);
        assert_eq!(with(r#"data-outcome="failed""#), 1);
        assert_eq!(with(r#"data-outcome="cached""#), 1);
        assert!(
            rects
                .iter()
                .any(|r| r.contains("<title>app linux/arm64: 5.0 s, failed, on the critical path</title>"))
        );
    }

    #[test]
    fn spilled_and_moved_builds_are_told_apart_in_the_picture_and_the_json() {
        let mut spilled = bar("tool", "linux/arm64", "arm_node-b", 0, 3, BarOutcome::Built);
        spilled.placement.home = "arm_node-a".into();
        spilled.placement.spilled = true;
        let dead = bar("base", "linux/arm64", "arm_node-c", 0, 2, BarOutcome::Moved);
        let mut again = bar("base", "linux/arm64", "arm_node-a", 2, 5, BarOutcome::Built);
        again.placement.moved_from = Some(("arm_node-c".into(), "connection refused".into()));
        let picture = svg(&[spilled.clone(), dead.clone(), again.clone()], &[]);
        let rects: Vec<&str> = picture.lines().filter(|l| l.starts_with(r#"<rect class="bar""#)).collect();
        assert_eq!(rects.iter().filter(|r| r.contains(r#"data-spilled="true""#)).count(), 1);
        assert!(
            rects
                .iter()
                .any(|r| r.contains("tool linux/arm64: 3.0 s, built, spilled from arm_node-a</title>"))
        );
        assert!(
            rects
                .iter()
                .any(|r| r.contains(r#"data-outcome="moved""#) && r.contains(r#"data-node="arm_node-c""#))
        );
        assert!(rects.iter().any(|r| r.contains("moved here from arm_node-c (connection refused)")));

        let timeline = Timeline::default();
        for b in [spilled, dead, again] {
            timeline.bars.lock().unwrap().push(b);
        }
        timeline.record_vm("c", "arm_node-c", timeline.started, Duration::from_secs(2));
        let json: serde_json::Value = serde_json::from_str(&timeline.json()).unwrap();
        let builds = json["builds"].as_array().unwrap();
        assert_eq!(builds.len(), 3);
        assert_eq!(builds[0]["spilled"], true);
        assert_eq!(builds[0]["home"], "arm_node-a");
        assert_eq!(builds[1]["outcome"], "moved");
        assert_eq!(builds[2]["moved_from"], "arm_node-c");
        assert_eq!(builds[2]["why"], "connection refused");
        assert_eq!(json["vms"][0]["vm"], "c");
        assert_eq!(json["vms"][0]["busy"], 2.0);
    }
}
