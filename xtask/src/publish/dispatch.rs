//! Which build goes to which node next, and when a VM may come up or go down: the rules of the
//! run's nodes, apart from what carries them out (`nodes`: the lock, the waiting, the VMs, the
//! engines). It is plain data in and decisions out, with no I/O, no lock and no clock (the times
//! a node is counted busy from are passed in), so that the rules are tested with plain values.
//!
//! Each platform build asks for a slot: it goes to its image's home node (`placement`), or to an
//! idle node that is up when its home is full; of the builds waiting, the one with the longest
//! remaining path goes first (or the catalog's first, with BUILD_ORDER=catalog). A VM comes up
//! when the first build placed on it is answered, and may go down as soon as nothing is placed
//! on it and no build near in the graph hashes to it; one that cannot be brought up, or whose
//! engine goes away, is out for the rest of the run, and its builds go to the platform's other
//! nodes. A build that is ready but has not asked yet (its parent's merge is under way, its
//! thread is settling its decision) counts as waiting: a free slot is reserved for it rather than
//! given to a shorter build that asked first, which would make the critical path wait a whole
//! build.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::placement::{self, Load, Placed};
use crate::platform::Platform;

/// A platform build of an image: the key of priorities and of the builds left.
pub type BuildKey = (String, Platform);

/// What a run's graph asks of its nodes, decided before anything builds.
pub struct Work {
    /// The builds the graph may do (what is up to date or cannot be built needs no node).
    pub left: BTreeSet<BuildKey>,
    /// Which waiting build goes first: the higher.
    pub priority: BTreeMap<BuildKey, f64>,
    /// Each image's parents in the run.
    pub parents: BTreeMap<String, Vec<String>>,
}

/// What the dispatch knows of a node: its name (which the home of an image is hashed with), the
/// platforms it builds, and whether it is a VM (down until a build brings it up) or up all run.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub label: String,
    pub platforms: Vec<Platform>,
    pub vm: bool,
}

/// A build's request for a slot, until it is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The node a build is given, by index (as the nodes were given to `Dispatch::new`), and where
/// its image's home is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub node: usize,
    pub home: String,
    /// Its home was full and this node idle.
    pub spilled: bool,
}

/// What a build that asked is to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Its node is up: it builds there, counted busy from the time given.
    Run(Grant),
    /// Its node is a VM that is down: this build brings it up (the others placed there wait),
    /// then says `came_up` or `not_up`, and asks for its answer again.
    BringUp(Grant),
    /// No node of its platform is left, and why.
    NoNodeLeft(String),
}

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Life {
    Up,
    /// A VM not brought up by this run, or taken down since.
    Down,
    /// A VM on its way up or down, by a build's hand.
    Changing,
    /// Out of the run, and why.
    Out(String),
}

struct NodeState {
    spec: NodeSpec,
    life: Life,
    /// Builds placed on it (running, or waiting for it to come up).
    placed: usize,
    /// Builds running on it, and since when it has had one.
    building: usize,
    busy_since: Option<Instant>,
    busy: Duration,
    /// Images whose first platform it built and whose merge, which runs there, is not done.
    unmerged: BTreeSet<String>,
    /// Slots reserved, at the last dispatch, for ready builds that have not asked yet.
    reserved: usize,
}

struct Waiter {
    ticket: Ticket,
    /// When it asked, among the others: the first of equal priority goes first. A build placed
    /// again asks anew.
    asked: u64,
    key: BuildKey,
    state: Asking,
}

enum Asking {
    Waiting,
    Granted(Grant),
    Refused(String),
}

/// The run's nodes and builds, as the dispatch decides on them.
pub struct Dispatch {
    nodes: Vec<NodeState>,
    waiting: Vec<Waiter>,
    /// The builds the graph may still do: a VM with none of them near and homed on it goes down.
    left: BTreeSet<BuildKey>,
    /// The builds given a slot and not yet released.
    started: BTreeSet<BuildKey>,
    next: u64,
    /// `BUILDS_PER_NODE`.
    limit: Option<usize>,
    priority: BTreeMap<BuildKey, f64>,
    parents: BTreeMap<String, Vec<String>>,
    /// Whether slots are reserved for ready builds that have not asked. A dry run asks one build
    /// at a time, in the graph's order: it reserves nothing, or a build would wait for one that
    /// comes after it.
    reserve_for_ready: bool,
}

impl Dispatch {
    /// `nodes` (the VMs down, the others up) for `work`, at most `limit` builds a node.
    pub fn new(nodes: Vec<NodeSpec>, work: Work, limit: Option<usize>, reserve_for_ready: bool) -> Dispatch {
        let nodes = nodes
            .into_iter()
            .map(|spec| NodeState {
                life: if spec.vm { Life::Down } else { Life::Up },
                spec,
                placed: 0,
                building: 0,
                busy_since: None,
                busy: Duration::ZERO,
                unmerged: BTreeSet::new(),
                reserved: 0,
            })
            .collect();
        Dispatch {
            nodes,
            waiting: Vec::new(),
            left: work.left,
            started: BTreeSet::new(),
            next: 0,
            limit,
            priority: work.priority,
            parents: work.parents,
            reserve_for_ready,
        }
    }

    /// The build `key` asks for a slot: its answer comes from `answer`, once it has one.
    pub fn ask(&mut self, key: BuildKey) -> Ticket {
        let ticket = Ticket(self.next);
        self.next += 1;
        self.waiting.push(Waiter { ticket, asked: ticket.0, key, state: Asking::Waiting });
        self.dispatch();
        ticket
    }

    /// What the build of `ticket` is to do, or `None` while it waits (for a slot, or for its
    /// node to come up or go down by another build's hand). `Run` counts it busy from `now`;
    /// `BringUp` marks the VM on its way up. Once answered `Run` or `NoNodeLeft`, the ticket is
    /// done.
    pub fn answer(&mut self, ticket: Ticket, now: Instant) -> Option<Answer> {
        let at = self.waiting.iter().position(|w| w.ticket == ticket).expect("a ticket asked");
        let grant = match &self.waiting[at].state {
            Asking::Waiting => return None,
            Asking::Refused(why) => {
                let why = why.clone();
                self.waiting.remove(at);
                return Some(Answer::NoNodeLeft(why));
            }
            Asking::Granted(grant) => grant.clone(),
        };
        let node = &mut self.nodes[grant.node];
        match node.life {
            Life::Changing => None,
            Life::Up => {
                start_building(node, now);
                self.waiting.remove(at);
                Some(Answer::Run(grant))
            }
            Life::Down => {
                node.life = Life::Changing;
                Some(Answer::BringUp(grant))
            }
            Life::Out(_) => unreachable!("the builds placed on a node that goes out are placed again"),
        }
    }

    /// The VM of node `n`, which a build was told to bring up, is up: its seconds busy are
    /// counted from now on.
    pub fn came_up(&mut self, n: usize) {
        let node = &mut self.nodes[n];
        node.life = Life::Up;
        node.busy = Duration::ZERO;
    }

    /// The VM of node `n` could not be brought up (`why`): it is out, and the builds placed on it
    /// are placed again.
    pub fn not_up(&mut self, n: usize, why: String) {
        self.go_out(n, why);
        self.dispatch();
    }

    /// The build `key` on node `n` is over, whatever became of it: its slot is free and it is no
    /// longer left. When the image's merge runs on its node (`merges_there`), the node stays up
    /// until the image is forgotten.
    pub fn release(&mut self, key: &BuildKey, n: usize, merges_there: bool, now: Instant) {
        self.left.remove(key);
        self.started.remove(key);
        let node = &mut self.nodes[n];
        stop_building(node, now);
        node.placed -= 1;
        if merges_there {
            node.unmerged.insert(key.0.clone());
        }
        self.dispatch();
    }

    /// Node `n` no longer answers the build `key` (`why`): it is out for the rest of the run, and
    /// the build is to ask again. Whether the node went out now (not with an earlier build).
    pub fn lost(&mut self, key: &BuildKey, n: usize, why: &str, now: Instant) -> bool {
        self.started.remove(key);
        let node = &mut self.nodes[n];
        stop_building(node, now);
        node.placed -= 1;
        let first = !matches!(node.life, Life::Out(_));
        if first {
            self.go_out(n, why.to_string());
        }
        self.dispatch();
        first
    }

    /// `image` is done (merged, up to date, skipped or failed): none of its builds is left.
    pub fn forget(&mut self, image: &str) {
        self.left.retain(|(name, _)| name != image);
        self.started.retain(|(name, _)| name != image);
        for node in &mut self.nodes {
            node.unmerged.remove(image);
        }
        self.dispatch();
    }

    /// The next VM to take down, now marked on its way down: one that is up with nothing placed
    /// on it, no slot reserved there, no merge to run there and no build near that hashes to it.
    /// `went_down` once it is down.
    pub fn take_down_next(&mut self) -> Option<usize> {
        let n = (0..self.nodes.len()).find(|&n| {
            let node = &self.nodes[n];
            node.spec.vm
                && node.life == Life::Up
                && node.placed == 0
                && node.reserved == 0
                && node.unmerged.is_empty()
                && !self.has_work_near(n)
        })?;
        self.nodes[n].life = Life::Changing;
        Some(n)
    }

    /// The VM of node `n`, marked on its way down, is down.
    pub fn went_down(&mut self, n: usize) {
        self.nodes[n].life = Life::Down;
    }

    /// The run is over: every VM is taken down.
    pub fn finish(&mut self) {
        for node in &mut self.nodes {
            node.life = Life::Down;
        }
    }

    /// How long node `n` has had a build since it last came up.
    pub fn busy(&self, n: usize) -> Duration {
        self.nodes[n].busy
    }

    /// How many builds have asked and not been answered.
    #[cfg(test)]
    pub fn asking(&self) -> usize {
        self.waiting.len()
    }

    /// The builds left.
    #[cfg(test)]
    pub fn left(&self) -> &BTreeSet<BuildKey> {
        &self.left
    }

    /// Give each waiting build whose node has room a slot, the highest priority first. With
    /// `reserve_for_ready`, a build that is ready but has not asked yet competes too: the slot
    /// it would get is reserved for it.
    fn dispatch(&mut self) {
        let priority = |key: &BuildKey| self.priority.get(key).copied().unwrap_or(0.0);
        // (key, its waiter when it asked), the highest priority first; those that asked first
        // among equals.
        let mut competing: Vec<(BuildKey, Option<usize>)> = (0..self.waiting.len())
            .filter(|&w| matches!(self.waiting[w].state, Asking::Waiting))
            .map(|w| (self.waiting[w].key.clone(), Some(w)))
            .collect();
        if self.reserve_for_ready {
            let ready = self
                .left
                .iter()
                .filter(|key| !self.started.contains(*key) && self.is_ready(key))
                .filter(|key| !self.waiting.iter().any(|w| &w.key == *key));
            competing.extend(ready.map(|key| (key.clone(), None)).collect::<Vec<_>>());
        }
        let asked = |w: &Option<usize>| w.map_or(u64::MAX, |w| self.waiting[w].asked);
        competing
            .sort_by(|(a, wa), (b, wb)| priority(b).total_cmp(&priority(a)).then(asked(wa).cmp(&asked(wb))));
        let mut reserved = vec![0; self.nodes.len()];
        for (key, waiter) in competing {
            let (image, platform) = &key;
            let in_run = self.in_run(platform);
            if in_run.is_empty() {
                if let Some(w) = waiter {
                    self.waiting[w].state = Asking::Refused(self.none_left(platform));
                }
                continue;
            }
            let loads: Vec<Load> = in_run
                .iter()
                .map(|&n| Load {
                    node: self.nodes[n].spec.label.clone(),
                    running: self.nodes[n].placed + reserved[n],
                    limit: self.limit,
                    up: self.nodes[n].life == Life::Up,
                })
                .collect();
            let (to, home, spilled) = match placement::place(image, &loads) {
                Placed::Home(home) => (home.clone(), home, false),
                Placed::Spilled { home, to } => (to, home, true),
                Placed::Waits => continue,
            };
            let n =
                in_run.iter().copied().find(|&n| self.nodes[n].spec.label == to).expect("placed on a node");
            match waiter {
                Some(w) => {
                    self.nodes[n].placed += 1;
                    self.started.insert(key.clone());
                    self.waiting[w].state = Asking::Granted(Grant { node: n, home, spilled });
                }
                None => reserved[n] += 1,
            }
        }
        for (node, reserved) in self.nodes.iter_mut().zip(reserved) {
            node.reserved = reserved;
        }
    }

    /// Node `n` is out (`why`): the builds placed on it and not yet running there ask again,
    /// after those waiting already.
    fn go_out(&mut self, n: usize, why: String) {
        self.nodes[n].life = Life::Out(why);
        for w in 0..self.waiting.len() {
            if matches!(&self.waiting[w].state, Asking::Granted(grant) if grant.node == n) {
                self.nodes[n].placed -= 1;
                self.waiting[w].state = Asking::Waiting;
                self.waiting[w].asked = self.next;
                self.next += 1;
            }
        }
    }

    /// Why `platform` has no node left: each of its nodes out, and why.
    fn none_left(&self, platform: &Platform) -> String {
        let why: Vec<String> = self
            .nodes
            .iter()
            .filter(|node| node.spec.platforms.contains(platform))
            .filter_map(|node| match &node.life {
                Life::Out(why) => Some(format!("{}: {why}", node.spec.label)),
                _ => None,
            })
            .collect();
        format!("no {platform} node is left ({})", why.join("; "))
    }

    /// Whether a build left is ready, or becomes ready once its parents' merges are done: no
    /// build of its parents is left.
    fn is_ready(&self, (image, _): &BuildKey) -> bool {
        self.parents.get(image).is_none_or(|parents| {
            parents.iter().all(|parent| self.left.iter().all(|(name, _)| name != parent))
        })
    }

    /// Whether a build left that is near hashes to node `n`: ready, or to be ready once the
    /// builds of its parents now running end (every build of its parents left has started). A
    /// VM is not kept idle for a build further down the graph: when that build comes it goes to
    /// an idle node, or brings its home up again.
    fn has_work_near(&self, n: usize) -> bool {
        let label = &self.nodes[n].spec.label;
        let near = |(image, _): &BuildKey| {
            self.parents.get(image).is_none_or(|parents| {
                parents.iter().all(|parent| {
                    self.left.iter().filter(|(name, _)| name == parent).all(|key| self.started.contains(key))
                })
            })
        };
        self.left
            .iter()
            .filter(|key| !self.started.contains(*key) && near(key))
            .any(|key| self.home_of(key).is_some_and(|home| &home == label))
    }

    /// The home of a build among its platform's nodes still in the run.
    fn home_of(&self, (image, platform): &BuildKey) -> Option<String> {
        let names: Vec<String> =
            self.in_run(platform).iter().map(|&n| self.nodes[n].spec.label.clone()).collect();
        placement::home(image, &names).cloned()
    }

    /// The nodes of `platform` still in the run (not out), by index.
    fn in_run(&self, platform: &Platform) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| {
                let node = &self.nodes[n];
                node.spec.platforms.contains(platform) && !matches!(node.life, Life::Out(_))
            })
            .collect()
    }
}

fn start_building(node: &mut NodeState, now: Instant) {
    if node.building == 0 {
        node.busy_since = Some(now);
    }
    node.building += 1;
}

fn stop_building(node: &mut NodeState, now: Instant) {
    node.building = node.building.saturating_sub(1);
    if node.building == 0
        && let Some(since) = node.busy_since.take()
    {
        node.busy += now.saturating_duration_since(since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(image: &str) -> BuildKey {
        (image.to_string(), Platform::new("linux", "arm64"))
    }

    /// arm64 nodes named `labels`: VMs, or up all run.
    fn arm_nodes(labels: &[&str], vm: bool) -> Vec<NodeSpec> {
        let platforms = vec![Platform::new("linux", "arm64")];
        labels
            .iter()
            .map(|label| NodeSpec { label: label.to_string(), platforms: platforms.clone(), vm })
            .collect()
    }

    /// `count` images named so that each hashes to `node` among `nodes`, none of `taken`.
    fn homed_on(node: &str, nodes: &[&str], count: usize) -> Vec<String> {
        let names: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
        (0..)
            .map(|i| format!("image-{i}"))
            .filter(|image| placement::home(image, &names).unwrap() == node)
            .take(count)
            .collect()
    }

    /// Work of `images` (image, parents, priority).
    fn work(images: &[(&str, &[&str], f64)]) -> Work {
        Work {
            left: images.iter().map(|(image, _, _)| arm(image)).collect(),
            priority: images.iter().map(|(image, _, priority)| (arm(image), *priority)).collect(),
            parents: images
                .iter()
                .map(|(image, parents, _)| {
                    (image.to_string(), parents.iter().map(|p| p.to_string()).collect())
                })
                .collect(),
        }
    }

    fn grant(node: usize, home: &str, spilled: bool) -> Grant {
        Grant { node, home: home.to_string(), spilled }
    }

    #[test]
    fn builds_go_home_wait_for_a_slot_by_priority_and_a_vm_goes_down_when_nothing_is_left() {
        let labels = ["arm_node-a", "arm_node-b", "arm_node-c"];
        let on_a = homed_on("arm_node-a", &labels, 3);
        let (first, low, high) = (on_a[0].as_str(), on_a[1].as_str(), on_a[2].as_str());
        let other = &homed_on("arm_node-b", &labels, 1)[0];
        let work = work(&[(first, &[], 3.0), (low, &[], 1.0), (high, &[], 2.0), (other, &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&labels, true), work, Some(1), false);
        let t0 = Instant::now();
        let at = |seconds| t0 + Duration::from_secs(seconds);

        let asked = dispatch.ask(arm(first));
        assert_eq!(dispatch.answer(asked, t0), Some(Answer::BringUp(grant(0, "arm_node-a", false))));
        // Until it is up, it waits.
        assert_eq!(dispatch.answer(asked, t0), None);
        dispatch.came_up(0);
        assert_eq!(dispatch.answer(asked, t0), Some(Answer::Run(grant(0, "arm_node-a", false))));
        // a is full (one build a node) and no other VM is up to spill to: both wait, and the one
        // with the longer path gets the slot first, though it asked last.
        let (low_asked, high_asked) = (dispatch.ask(arm(low)), dispatch.ask(arm(high)));
        assert_eq!((dispatch.answer(low_asked, t0), dispatch.answer(high_asked, t0)), (None, None));
        dispatch.release(&arm(first), 0, false, at(3));
        dispatch.forget(first);
        assert_eq!(dispatch.answer(low_asked, at(3)), None);
        assert_eq!(dispatch.answer(high_asked, at(3)), Some(Answer::Run(grant(0, "arm_node-a", false))));
        assert_eq!(dispatch.take_down_next(), None, "a runs a build");
        dispatch.release(&arm(high), 0, false, at(5));
        assert_eq!(dispatch.take_down_next(), None, "low is placed on a");
        dispatch.forget(high);
        assert_eq!(dispatch.answer(low_asked, at(5)), Some(Answer::Run(grant(0, "arm_node-a", false))));
        dispatch.release(&arm(low), 0, false, at(6));
        dispatch.forget(low);
        // Nothing is left for a: it goes down; b, whose image is still left, was never brought
        // up, and is not taken down.
        assert_eq!(dispatch.take_down_next(), Some(0));
        assert_eq!(dispatch.take_down_next(), None, "on its way down");
        dispatch.went_down(0);
        assert_eq!(dispatch.busy(0), Duration::from_secs(6), "busy from the first start to the last end");
        assert_eq!(*dispatch.left(), BTreeSet::from([arm(other)]));
        dispatch.forget(other);
        assert_eq!(dispatch.take_down_next(), None);
    }

    #[test]
    fn a_lost_node_is_out_and_its_builds_go_to_the_others_until_none_is_left() {
        let labels = ["arm_node-a", "arm_node-b"];
        let image = &homed_on("arm_node-a", &labels, 1)[0];
        let mut dispatch = Dispatch::new(arm_nodes(&labels, true), work(&[(image, &[], 1.0)]), None, true);
        let now = Instant::now();
        let asked = dispatch.ask(arm(image));
        assert_eq!(dispatch.answer(asked, now), Some(Answer::BringUp(grant(0, "arm_node-a", false))));
        dispatch.came_up(0);
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::Run(_))));
        assert!(dispatch.lost(&arm(image), 0, "connection refused", now), "out now");
        // The build asks again: b is now its home among the nodes left.
        let asked = dispatch.ask(arm(image));
        assert_eq!(dispatch.answer(asked, now), Some(Answer::BringUp(grant(1, "arm_node-b", false))));
        dispatch.came_up(1);
        assert_eq!(dispatch.answer(asked, now), Some(Answer::Run(grant(1, "arm_node-b", false))));
        assert!(dispatch.lost(&arm(image), 1, "ssh exited 255", now));
        let asked = dispatch.ask(arm(image));
        assert_eq!(
            dispatch.answer(asked, now),
            Some(Answer::NoNodeLeft(
                "no linux/arm64 node is left (arm_node-a: connection refused; arm_node-b: ssh exited 255)"
                    .to_string()
            ))
        );
        assert_eq!(dispatch.take_down_next(), None, "a node out is not taken down again");
    }

    #[test]
    fn a_node_lost_by_a_second_build_is_out_once_with_its_first_reason() {
        let labels = ["arm_node-a", "arm_node-b"];
        let images = homed_on("arm_node-a", &labels, 2);
        let work = work(&[(&images[0], &[], 1.0), (&images[1], &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&labels, false), work, None, true);
        let now = Instant::now();
        for image in &images {
            let asked = dispatch.ask(arm(image));
            assert_eq!(dispatch.answer(asked, now), Some(Answer::Run(grant(0, "arm_node-a", false))));
        }
        assert!(dispatch.lost(&arm(&images[0]), 0, "connection refused", now));
        assert!(!dispatch.lost(&arm(&images[1]), 0, "connection reset", now), "already out");
        let again = dispatch.ask(arm(&images[0]));
        assert_eq!(dispatch.answer(again, now), Some(Answer::Run(grant(1, "arm_node-b", false))));
        assert!(dispatch.lost(&arm(&images[0]), 1, "gone", now));
        let asked = dispatch.ask(arm(&images[1]));
        assert_eq!(
            dispatch.answer(asked, now),
            Some(Answer::NoNodeLeft(
                "no linux/arm64 node is left (arm_node-a: connection refused; arm_node-b: gone)".into()
            ))
        );
    }

    #[test]
    fn the_builds_placed_on_a_vm_that_cannot_come_up_go_to_another() {
        let labels = ["arm_node-a", "arm_node-b"];
        let images = homed_on("arm_node-a", &labels, 2);
        let work = work(&[(&images[0], &[], 2.0), (&images[1], &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&labels, true), work, None, true);
        let now = Instant::now();
        let (first, second) = (dispatch.ask(arm(&images[0])), dispatch.ask(arm(&images[1])));
        assert_eq!(dispatch.answer(first, now), Some(Answer::BringUp(grant(0, "arm_node-a", false))));
        assert_eq!(dispatch.answer(second, now), None, "placed on a, which is on its way up");
        dispatch.not_up(0, "a could not be brought up: no quota".into());
        // Both placed again on b: the first brings it up, the second waits for it.
        assert_eq!(dispatch.answer(first, now), Some(Answer::BringUp(grant(1, "arm_node-b", false))));
        assert_eq!(dispatch.answer(second, now), None);
        dispatch.came_up(1);
        assert_eq!(dispatch.answer(second, now), Some(Answer::Run(grant(1, "arm_node-b", false))));
        assert_eq!(dispatch.answer(first, now), Some(Answer::Run(grant(1, "arm_node-b", false))));
    }

    #[test]
    fn a_slot_is_reserved_for_a_ready_build_with_a_longer_path_that_has_not_asked_yet() {
        let work = work(&[("parent", &[], 2.0), ("child", &["parent"], 1.5), ("leaf", &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&["this engine"], false), work, Some(1), true);
        let now = Instant::now();
        let parent = dispatch.ask(arm("parent"));
        assert_eq!(dispatch.answer(parent, now), Some(Answer::Run(grant(0, "this engine", false))));
        let leaf = dispatch.ask(arm("leaf"));
        // The parent ends while the leaf waits: the child is ready, with a longer path, and the
        // slot is reserved for it, though it asks only once the parent is merged.
        dispatch.release(&arm("parent"), 0, true, now);
        assert_eq!(dispatch.answer(leaf, now), None, "the leaf took the child's slot");
        dispatch.forget("parent");
        assert_eq!(dispatch.answer(leaf, now), None);
        let child = dispatch.ask(arm("child"));
        assert_eq!(dispatch.answer(child, now), Some(Answer::Run(grant(0, "this engine", false))));
        dispatch.release(&arm("child"), 0, false, now);
        assert_eq!(dispatch.answer(leaf, now), Some(Answer::Run(grant(0, "this engine", false))));
    }

    #[test]
    fn without_reserving_the_first_to_ask_takes_the_free_slot() {
        // A dry run asks one build at a time: nothing waits for one that has not asked.
        let work = work(&[("parent", &[], 2.0), ("child", &["parent"], 1.5), ("leaf", &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&["this engine"], false), work, Some(1), false);
        let now = Instant::now();
        let parent = dispatch.ask(arm("parent"));
        assert!(matches!(dispatch.answer(parent, now), Some(Answer::Run(_))));
        dispatch.release(&arm("parent"), 0, false, now);
        dispatch.forget("parent");
        let leaf = dispatch.ask(arm("leaf"));
        assert!(matches!(dispatch.answer(leaf, now), Some(Answer::Run(_))));
    }

    #[test]
    fn a_build_whose_home_is_full_spills_to_an_idle_node_that_is_up_never_to_a_vm_that_is_down() {
        let labels = ["arm_node-a", "arm_node-b"];
        let on_a = homed_on("arm_node-a", &labels, 2);
        let on_b = &homed_on("arm_node-b", &labels, 1)[0];
        let work = work(&[(&on_a[0], &[], 3.0), (&on_a[1], &[], 2.0), (on_b, &[], 1.0)]);
        let mut dispatch = Dispatch::new(arm_nodes(&labels, true), work, Some(1), false);
        let now = Instant::now();
        let first = dispatch.ask(arm(&on_a[0]));
        assert!(matches!(dispatch.answer(first, now), Some(Answer::BringUp(_))));
        dispatch.came_up(0);
        assert!(matches!(dispatch.answer(first, now), Some(Answer::Run(_))));
        // a is full and b is down: the second waits rather than bring b up.
        let second = dispatch.ask(arm(&on_a[1]));
        assert_eq!(dispatch.answer(second, now), None);
        // b's own build brings it up; once it ends, b is idle and the second spills there.
        let own = dispatch.ask(arm(on_b));
        assert_eq!(dispatch.answer(own, now), Some(Answer::BringUp(grant(1, "arm_node-b", false))));
        dispatch.came_up(1);
        assert_eq!(dispatch.answer(own, now), Some(Answer::Run(grant(1, "arm_node-b", false))));
        assert_eq!(dispatch.answer(second, now), None, "b is not idle");
        dispatch.release(&arm(on_b), 1, false, now);
        assert_eq!(dispatch.answer(second, now), Some(Answer::Run(grant(1, "arm_node-a", true))));
    }

    #[test]
    fn builds_per_node_bounds_the_builds_a_node_runs_at_once() {
        let images = ["a", "b", "c"];
        let work_of = || work(&images.map(|image| (image, &[][..], 1.0)));
        let now = Instant::now();
        let mut two = Dispatch::new(arm_nodes(&["this engine"], false), work_of(), Some(2), true);
        let asked = images.map(|image| two.ask(arm(image)));
        let answers = asked.map(|ticket| two.answer(ticket, now));
        assert!(matches!(answers[0], Some(Answer::Run(_))) && matches!(answers[1], Some(Answer::Run(_))));
        assert_eq!(answers[2], None, "the third waits");
        two.release(&arm("a"), 0, false, now);
        assert!(matches!(two.answer(asked[2], now), Some(Answer::Run(_))));
        // No limit: all at once.
        let mut unlimited = Dispatch::new(arm_nodes(&["this engine"], false), work_of(), None, true);
        let asked = images.map(|image| unlimited.ask(arm(image)));
        assert!(asked.iter().all(|&ticket| matches!(unlimited.answer(ticket, now), Some(Answer::Run(_)))));
    }

    #[test]
    fn a_vm_stays_up_for_a_near_build_or_a_merge_but_not_for_one_further_down() {
        let labels = ["arm_node-a", "arm_node-b"];
        let parent = &homed_on("arm_node-a", &labels, 1)[0];
        let on_b = homed_on("arm_node-b", &labels, 3);
        let (alone, child, grandchild) = (&on_b[0], &on_b[1], &on_b[2]);
        let work = work(&[
            (parent, &[], 3.0),
            (child, &[parent.as_str()], 2.0),
            (grandchild, &[child.as_str()], 1.0),
            (alone, &[], 1.0),
        ]);
        let mut dispatch = Dispatch::new(arm_nodes(&labels, true), work, None, false);
        let now = Instant::now();
        let asked = dispatch.ask(arm(alone));
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::BringUp(_))));
        dispatch.came_up(1);
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::Run(_))));
        dispatch.release(&arm(alone), 1, false, now);
        dispatch.forget(alone);
        // The child hashes to b, but its parent has not started: b is not kept idle for it.
        assert_eq!(dispatch.take_down_next(), Some(1));
        dispatch.went_down(1);
        let asked = dispatch.ask(arm(parent));
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::BringUp(_))));
        dispatch.came_up(0);
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::Run(_))));
        // Its merge runs on a: a stays up until the parent is forgotten.
        dispatch.release(&arm(parent), 0, true, now);
        assert_eq!(dispatch.take_down_next(), None);
        dispatch.forget(parent);
        assert_eq!(dispatch.take_down_next(), Some(0));
        dispatch.went_down(0);
        // The child brings b up again; while it runs, the grandchild is near and homed on b.
        let asked = dispatch.ask(arm(child));
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::BringUp(_))));
        dispatch.came_up(1);
        assert!(matches!(dispatch.answer(asked, now), Some(Answer::Run(_))));
        dispatch.release(&arm(child), 1, false, now);
        assert_eq!(dispatch.take_down_next(), None, "the grandchild is near: b stays up for it");
        dispatch.forget(child);
        let asked = dispatch.ask(arm(grandchild));
        assert_eq!(dispatch.answer(asked, now), Some(Answer::Run(grant(1, "arm_node-b", false))), "b is up");
        dispatch.release(&arm(grandchild), 1, false, now);
        dispatch.forget(grandchild);
        assert_eq!(dispatch.take_down_next(), Some(1));
    }
}
