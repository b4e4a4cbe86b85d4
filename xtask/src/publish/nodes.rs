//! The run's nodes, shared by its builds. Each platform build asks for a slot: it goes to its
//! image's home node (`placement`), or to an idle node when its home is full; of the builds
//! waiting, the one with the longest remaining path goes first (or the catalog's first, with
//! BUILD_ORDER=catalog). A VM is brought up when the first build is placed on it and taken down
//! as soon as nothing is placed on it and no build near in the graph hashes to it; one that
//! cannot be brought up, or whose engine goes away, is out for the rest of the run, and its
//! builds go to the platform's other nodes.
//! A build that is ready but has not asked yet (its parent's merge is under way, its thread is
//! settling its decision) counts as waiting: a free slot is held for it rather than given to a
//! shorter build that asked first, which would make the critical path wait a whole build.
//! `finish` takes down whatever is still up, on every way out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::Vendoring;
use super::placement::{self, Load, Placed};
use super::timeline::{Placement, Timeline};
use crate::ctx::Ctx;
use crate::failure::NodeLost;
use crate::mirroring;
use crate::platform::Platform;
use crate::platform_build::node::{Engine, Node, Store, ask_store};
use crate::vm::{self, Held, Wait};

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

/// The nodes of a run and the builds they have left.
pub struct Nodes<'a> {
    ctx: &'a Ctx,
    wait: &'a Wait,
    vendoring: Option<&'a Vendoring>,
    timeline: &'a Timeline,
    /// `BUILDS_PER_NODE`.
    limit: Option<usize>,
    /// Which waiting build goes first: the higher.
    priority: BTreeMap<BuildKey, f64>,
    /// Each image's parents in the run.
    parents: BTreeMap<String, Vec<String>>,
    state: Mutex<State>,
    changed: Condvar,
    /// Each node's image store, once asked: by index, as `State::nodes`. Asked once a run, by
    /// the first build placed there or the VM's bring-up, and the same for every image.
    stores: Vec<Mutex<Option<Store>>>,
    /// The BuildKit image was vendored for a VM's builder container.
    buildkit_vendored: Mutex<bool>,
    /// What went wrong taking a VM down: the run's error, after its builds' own.
    way_out: Mutex<Vec<anyhow::Error>>,
    /// With VMs to take down, a Ctrl-C or SIGTERM fails the builds instead of ending the process.
    _deferred: Option<crate::interrupt::Deferred>,
}

struct State {
    nodes: Vec<NodeState>,
    waiting: Vec<Waiter>,
    /// The builds the graph may still do: a VM with none of them near and homed on it is taken
    /// down.
    left: BTreeSet<BuildKey>,
    /// The builds given a slot and not yet released.
    started: BTreeSet<BuildKey>,
    next_id: u64,
}

struct NodeState {
    engine: Engine,
    life: Life,
    held: Option<Held>,
    /// Builds placed on it (running, or waiting for it to come up).
    placed: usize,
    /// Builds running on it, and since when it has had one.
    building: usize,
    busy_since: Option<Instant>,
    busy: Duration,
    /// Images whose first platform it built and whose merge, which runs there, is not done.
    unmerged: BTreeSet<String>,
    /// Slots held, at the last dispatch, for ready builds that have not asked yet.
    held_for_ready: usize,
}

/// Where a node is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Life {
    Up,
    /// A VM not started by this run, or taken down since.
    Down,
    /// A VM on its way up or down, by another build's hand.
    Changing,
    /// Out of the run, and why.
    Out(String),
}

struct Waiter {
    id: u64,
    key: BuildKey,
    grant: Option<Result<Grant, String>>,
}

struct Grant {
    node: usize,
    home: String,
    spilled: bool,
}

/// A build's slot on a node, until it is released.
pub struct Slot {
    node: usize,
    key: BuildKey,
    pub engine: Engine,
    pub placement: Placement,
}

impl<'a> Nodes<'a> {
    /// `engines` (this engine up, the VMs down) for `work`.
    pub fn new(
        ctx: &'a Ctx,
        engines: Vec<Engine>,
        work: Work,
        wait: &'a Wait,
        vendoring: Option<&'a Vendoring>,
        timeline: &'a Timeline,
    ) -> Nodes<'a> {
        let vms = engines.iter().any(|engine| engine.vm.is_some());
        let stores = engines.iter().map(|_| Mutex::new(None)).collect();
        let nodes = engines
            .into_iter()
            .map(|engine| NodeState {
                life: if engine.vm.is_some() { Life::Down } else { Life::Up },
                engine,
                held: None,
                placed: 0,
                building: 0,
                busy_since: None,
                busy: Duration::ZERO,
                unmerged: BTreeSet::new(),
                held_for_ready: 0,
            })
            .collect();
        Nodes {
            ctx,
            wait,
            vendoring,
            timeline,
            limit: ctx.settings.builds_per_node,
            priority: work.priority,
            parents: work.parents,
            state: Mutex::new(State {
                nodes,
                waiting: Vec::new(),
                left: work.left,
                started: BTreeSet::new(),
                next_id: 0,
            }),
            changed: Condvar::new(),
            stores,
            buildkit_vendored: Mutex::new(false),
            way_out: Mutex::new(Vec::new()),
            _deferred: vms.then(crate::interrupt::Deferred::start),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("not poisoned")
    }

    /// A slot for the `platform` build of `image`, once one is free for it (the VM brought up
    /// first when it is down). Fails when the platform has no node left.
    pub fn acquire(&self, image: &str, platform: &Platform) -> Result<Slot> {
        let key: BuildKey = (image.to_string(), platform.clone());
        loop {
            let mut state = self.lock();
            let id = state.next_id;
            state.next_id += 1;
            state.waiting.push(Waiter { id, key: key.clone(), grant: None });
            self.dispatch(&mut state);
            let mut state = self
                .changed
                .wait_while(state, |s| s.waiting.iter().any(|w| w.id == id && w.grant.is_none()))
                .expect("not poisoned");
            let at = state.waiting.iter().position(|w| w.id == id).expect("its waiter");
            let grant = match state.waiting.remove(at).grant.expect("granted") {
                Ok(grant) => grant,
                Err(why) => bail!("{why}"),
            };
            let n = grant.node;
            state =
                self.changed.wait_while(state, |s| s.nodes[n].life == Life::Changing).expect("not poisoned");
            let placement = Placement {
                node: state.nodes[n].engine.label().to_string(),
                home: grant.home,
                spilled: grant.spilled,
                moved_from: None,
            };
            match state.nodes[n].life.clone() {
                Life::Up => {
                    start_building(&mut state.nodes[n]);
                    let engine = state.nodes[n].engine.clone();
                    return Ok(Slot { node: n, key, engine, placement });
                }
                Life::Out(_) => {
                    // It went out while this build waited for it: placed again.
                    state.nodes[n].placed -= 1;
                    continue;
                }
                Life::Changing => unreachable!("waited for"),
                Life::Down => {}
            }
            // This build brings the VM up; the others placed on it wait.
            state.nodes[n].life = Life::Changing;
            let engine = state.nodes[n].engine.clone();
            drop(state);
            let vm = engine.vm.clone().expect("only a VM is down");
            let (held, result) = vm::hold(self.ctx, &vm, self.wait);
            let result = result.and_then(|()| self.vendor_buildkit(n, &engine));
            let mut state = self.lock();
            match result {
                Ok(()) => {
                    state.nodes[n].held = Some(held);
                    state.nodes[n].life = Life::Up;
                    // Its seconds busy are counted from each time it comes up.
                    state.nodes[n].busy = Duration::ZERO;
                    start_building(&mut state.nodes[n]);
                    self.changed.notify_all();
                    return Ok(Slot { node: n, key, engine, placement });
                }
                Err(err) => {
                    let why = format!("{} could not be brought up: {err:#}", vm.name);
                    state.nodes[n].placed -= 1;
                    state.nodes[n].life = Life::Out(why.clone());
                    self.dispatch(&mut state);
                    self.changed.notify_all();
                    drop(state);
                    self.tell_out(engine.label(), &why);
                    self.take_down(n, held);
                }
            }
        }
    }

    /// The node of `slot`, with the builder of the image whose build holds it (`ctx`: the
    /// image's). Its engine is asked for its image store once in the run; a failed question is
    /// not kept, so the next build asks again (its engine may be lost: see `lost`).
    pub fn node_of(&self, slot: &Slot, ctx: &Ctx) -> Result<Node> {
        let store = self.store(slot.node, &slot.engine)?;
        Ok(slot.engine.clone().node_with(ctx, &store))
    }

    /// The image store of node `n`, whose engine is `engine`, asked once.
    fn store(&self, n: usize, engine: &Engine) -> Result<Store> {
        let mut known = self.stores[n].lock().expect("not poisoned");
        if let Some(store) = &*known {
            return Ok(store.clone());
        }
        let store = ask_store(self.ctx, engine.context.as_deref())?;
        *known = Some(store.clone());
        Ok(store)
    }

    /// The build of `slot` is over, whatever became of it: its slot is free and it is no longer
    /// left. When the image's merge runs on its node (`merges_there`), that node stays up until
    /// the image is forgotten (merged or failed).
    pub fn release(&self, slot: Slot, merges_there: bool) {
        let mut state = self.lock();
        state.left.remove(&slot.key);
        state.started.remove(&slot.key);
        let node = &mut state.nodes[slot.node];
        stop_building(node);
        node.placed -= 1;
        if merges_there {
            node.unmerged.insert(slot.key.0.clone());
        }
        self.dispatch(&mut state);
        self.changed.notify_all();
        self.take_down_idle(state);
    }

    /// The node of `slot` no longer answers: it is out for the rest of the run (its VM taken
    /// down), and the build goes back to be placed again.
    pub fn lost(&self, slot: Slot, lost: &NodeLost) {
        let mut state = self.lock();
        state.started.remove(&slot.key);
        let node = &mut state.nodes[slot.node];
        stop_building(node);
        node.placed -= 1;
        let first = !matches!(node.life, Life::Out(_));
        let held = if first {
            node.life = Life::Out(lost.why.clone());
            node.held.take()
        } else {
            None
        };
        self.dispatch(&mut state);
        self.changed.notify_all();
        drop(state);
        if first {
            self.tell_out(&lost.node, &lost.why);
        }
        if let Some(held) = held {
            self.take_down(slot.node, held);
        }
    }

    /// `image` is done (merged, up to date, skipped or failed): a VM kept up for it alone is
    /// taken down.
    pub fn forget(&self, image: &str) {
        let mut state = self.lock();
        state.left.retain(|(name, _)| name != image);
        state.started.retain(|(name, _)| name != image);
        for node in &mut state.nodes {
            node.unmerged.remove(image);
        }
        self.dispatch(&mut state);
        self.take_down_idle(state);
    }

    /// Every VM still up taken down; what went wrong doing so on the way out (the first failure
    /// stays the error, the others are said).
    pub fn finish(&self) -> Result<()> {
        let held: Vec<(usize, Held)> = {
            let mut state = self.lock();
            state
                .nodes
                .iter_mut()
                .enumerate()
                .filter_map(|(n, node)| {
                    node.life = Life::Down;
                    Some((n, node.held.take()?))
                })
                .collect()
        };
        for (n, held) in held {
            self.take_down(n, held);
        }
        let mut failures = std::mem::take(&mut *self.way_out.lock().expect("not poisoned"));
        if failures.is_empty() {
            return Ok(());
        }
        let first = failures.remove(0);
        for other in failures {
            eprintln!("error: {other:#}");
        }
        Err(first)
    }

    /// Give each waiting build whose node has room a slot, the highest priority first. In a
    /// real run, a build that is ready but has not asked yet competes too: the slot it would
    /// get is held for it. (A dry run asks one build at a time, in the graph's order: it holds
    /// nothing, or a build would wait for one that comes after it.)
    fn dispatch(&self, state: &mut State) {
        let priority = |key: &BuildKey| self.priority.get(key).copied().unwrap_or(0.0);
        // (key, its waiter when it asked), the highest priority first; those that asked first
        // among equals.
        let mut competing: Vec<(BuildKey, Option<usize>)> = (0..state.waiting.len())
            .filter(|&w| state.waiting[w].grant.is_none())
            .map(|w| (state.waiting[w].key.clone(), Some(w)))
            .collect();
        if !self.ctx.runner.is_dry_run() {
            let ready = state
                .left
                .iter()
                .filter(|key| !state.started.contains(*key) && self.is_ready(state, key))
                .filter(|key| !state.waiting.iter().any(|w| &w.key == *key));
            competing.extend(ready.map(|key| (key.clone(), None)).collect::<Vec<_>>());
        }
        let asked = |w: &Option<usize>| w.map_or(u64::MAX, |w| state.waiting[w].id);
        competing
            .sort_by(|(a, wa), (b, wb)| priority(b).total_cmp(&priority(a)).then(asked(wa).cmp(&asked(wb))));
        // Slots held for the ready builds that have not asked yet.
        let mut held = vec![0; state.nodes.len()];
        for (key, waiter) in competing {
            let (image, platform) = &key;
            let in_run = in_run(state, platform);
            if in_run.is_empty() {
                let why: Vec<String> = state
                    .nodes
                    .iter()
                    .filter(|node| node.engine.platforms.iter().any(|p| p == platform))
                    .filter_map(|node| match &node.life {
                        Life::Out(why) => Some(format!("{}: {why}", node.engine.label())),
                        _ => None,
                    })
                    .collect();
                if let Some(w) = waiter {
                    state.waiting[w].grant =
                        Some(Err(format!("no {platform} node is left ({})", why.join("; "))));
                }
                continue;
            }
            let loads: Vec<Load> = in_run
                .iter()
                .map(|&n| Load {
                    node: state.nodes[n].engine.label().to_string(),
                    running: state.nodes[n].placed + held[n],
                    limit: self.limit,
                    up: state.nodes[n].life == Life::Up,
                })
                .collect();
            let (to, home, spilled) = match placement::place(image, &loads) {
                Placed::Home(home) => (home.clone(), home, false),
                Placed::Spilled { home, to } => (to, home, true),
                Placed::Waits => continue,
            };
            let n = in_run
                .iter()
                .copied()
                .find(|&n| state.nodes[n].engine.label() == to)
                .expect("placed on a node");
            match waiter {
                Some(w) => {
                    state.nodes[n].placed += 1;
                    state.started.insert(key.clone());
                    state.waiting[w].grant = Some(Ok(Grant { node: n, home, spilled }));
                }
                None => held[n] += 1,
            }
        }
        for (node, held) in state.nodes.iter_mut().zip(held) {
            node.held_for_ready = held;
        }
        self.changed.notify_all();
    }

    /// Whether a build left is ready, or becomes ready once its parents' merges are done: no
    /// build of its parents is left.
    fn is_ready(&self, state: &State, (image, _): &BuildKey) -> bool {
        self.parents.get(image).is_none_or(|parents| {
            parents.iter().all(|parent| state.left.iter().all(|(name, _)| name != parent))
        })
    }

    /// Whether a build left that is near hashes to node `n`: ready, or to be ready once the
    /// builds of its parents now running end (every build of its parents left has started). A
    /// VM is not kept idle for a build further down the graph: when that build comes it goes to
    /// an idle node, or starts its home again.
    fn has_work_near(&self, state: &State, n: usize) -> bool {
        let label = state.nodes[n].engine.label();
        let near = |(image, _): &BuildKey| {
            self.parents.get(image).is_none_or(|parents| {
                parents.iter().all(|parent| {
                    state
                        .left
                        .iter()
                        .filter(|(name, _)| name == parent)
                        .all(|key| state.started.contains(key))
                })
            })
        };
        state
            .left
            .iter()
            .filter(|key| !state.started.contains(*key) && near(key))
            .any(|key| self.home_of(state, key).is_some_and(|home| home == label))
    }

    /// The home of a build among its platform's nodes still in the run.
    fn home_of(&self, state: &State, (image, platform): &BuildKey) -> Option<String> {
        let names: Vec<String> =
            in_run(state, platform).iter().map(|&n| state.nodes[n].engine.label().to_string()).collect();
        placement::home(image, &names).cloned()
    }

    /// Take down every VM that is up with nothing placed on it and no build left that hashes to
    /// it.
    fn take_down_idle<'s>(&'s self, mut state: MutexGuard<'s, State>) {
        loop {
            let idle = (0..state.nodes.len()).find(|&n| {
                let node = &state.nodes[n];
                node.held.is_some()
                    && node.life == Life::Up
                    && node.placed == 0
                    && node.held_for_ready == 0
                    && node.unmerged.is_empty()
                    && !self.has_work_near(&state, n)
            });
            let Some(n) = idle else { return };
            state.nodes[n].life = Life::Changing;
            let held = state.nodes[n].held.take().expect("a held VM");
            drop(state);
            self.take_down(n, held);
            state = self.lock();
            state.nodes[n].life = Life::Down;
            self.changed.notify_all();
        }
    }

    /// Release a held VM, its time recorded; a failure is kept for the end of the run.
    fn take_down(&self, n: usize, held: Held) {
        let (vm, since) = (held.vm.clone(), held.since);
        if let Err(err) = vm::release(self.ctx, held) {
            self.way_out.lock().expect("not poisoned").push(err);
        }
        let busy = self.lock().nodes[n].busy;
        self.timeline.record_vm(&vm.name, &vm.context, since, busy);
    }

    /// Once a VM is up: the vendored BuildKit image, when its builder is a container and no VM
    /// of the run needed it before.
    fn vendor_buildkit(&self, n: usize, engine: &Engine) -> Result<()> {
        let Some(vendoring) = self.vendoring else { return Ok(()) };
        let mut vendored = self.buildkit_vendored.lock().expect("not poisoned");
        if *vendored {
            return Ok(());
        }
        let node = engine.clone().node_with(self.ctx, &self.store(n, engine)?);
        mirroring::vendor_buildkit_for(
            self.ctx,
            &vendoring.options,
            vendoring.locked,
            std::slice::from_ref(&node),
        )?;
        *vendored = !node.builder.engine;
        Ok(())
    }

    fn tell_out(&self, node: &str, why: &str) {
        let line =
            format!("node {node} is out of the run: {why}; its builds go to the platform's other nodes");
        if self.ctx.runner.is_dry_run() {
            self.ctx.runner.say(&line);
        } else {
            println!("{line}");
        }
    }
}

/// The nodes of `platform` still in the run (not out), by index.
fn in_run(state: &State, platform: &Platform) -> Vec<usize> {
    (0..state.nodes.len())
        .filter(|&n| {
            let node = &state.nodes[n];
            node.engine.platforms.iter().any(|p| p == platform) && !matches!(node.life, Life::Out(_))
        })
        .collect()
}

fn start_building(node: &mut NodeState) {
    if node.building == 0 {
        node.busy_since = Some(Instant::now());
    }
    node.building += 1;
}

fn stop_building(node: &mut NodeState) {
    node.building = node.building.saturating_sub(1);
    if node.building == 0
        && let Some(since) = node.busy_since.take()
    {
        node.busy += since.elapsed();
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::catalog::Catalog;
    use crate::platform_build::node::engines;
    use crate::runner::Runner;
    use crate::settings::{Settings, SettingsArgs};

    /// A context with `flags`: a dry run's (nothing runs: a VM's start and stop are printed), or
    /// a real run's, which must then start nothing (no VM).
    fn ctx(root: &Path, dry_run: bool, flags: &[&str]) -> Ctx {
        std::fs::write(
            root.join("images.toml"),
            "thirdparty = \"t.txt\"\npipeline = \"p.yaml\"\nbuildkit = \"moby/buildkit:v1\"\n[versions]\n\
             [[image]]\nname = \"i\"\ndescription = \"d\"\ntag = \"1\"\n\
             [cloud_builder]\nname = \"cloud-builder\"\ndescription = \"d\"\ntag = \"1\"\n",
        )
        .unwrap();
        let catalog = Catalog::load_from(root, Path::new("images.toml")).unwrap();
        let command = SettingsArgs::augment_args(clap::Command::new("t"));
        let mut argv = vec!["t", "--docker-repo", "r.example/p/dev"];
        argv.extend(flags);
        let args = SettingsArgs::from_arg_matches(&command.get_matches_from(argv)).unwrap();
        let settings = Settings::resolve_with(args, &catalog, |_| None);
        assert!(settings.problems.is_empty(), "{:?}", settings.problems);
        Ctx { settings, catalog, runner: Runner::new(dry_run, root.to_path_buf()), root: root.to_path_buf() }
    }

    const WAIT: Wait = Wait { tries: 1, interval: Duration::ZERO };

    /// The nodes of `ctx`'s settings for `work`, their times in `timeline`.
    fn nodes_of<'a>(ctx: &'a Ctx, work: Work, timeline: &'a Timeline) -> Nodes<'a> {
        Nodes::new(ctx, engines(&ctx.settings), work, &WAIT, None, timeline)
    }

    /// Images named so that `image-<n>` for n in `range` hashes to `node` among `nodes`.
    fn homed_on(node: &str, nodes: &[String], count: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("image-{i}"))
            .filter(|image| placement::home(image, nodes).unwrap() == node)
            .take(count)
            .collect()
    }

    fn arm(image: &str) -> BuildKey {
        (image.to_string(), Platform::new("linux", "arm64"))
    }

    #[test]
    fn builds_go_home_wait_for_a_slot_by_priority_and_a_vm_goes_down_when_nothing_is_left() {
        let root = tempfile::tempdir().unwrap();
        let flags = [
            "--multi-context",
            "1",
            "--arm64-vms",
            "a,b,c",
            "--builds-per-node",
            "1",
            "--platforms",
            "linux/arm64",
        ];
        let ctx = ctx(root.path(), true, &flags);
        let labels: Vec<String> = ["arm_node-a", "arm_node-b", "arm_node-c"].map(String::from).to_vec();
        let on_a = homed_on("arm_node-a", &labels, 3);
        let (first, low, high) = (&on_a[0], &on_a[1], &on_a[2]);
        let other = &homed_on("arm_node-b", &labels, 1)[0];
        let left: BTreeSet<BuildKey> = [first, low, high, other].iter().map(|i| arm(i)).collect();
        let priority =
            BTreeMap::from([(arm(first), 3.0), (arm(low), 1.0), (arm(high), 2.0), (arm(other), 1.0)]);
        let timeline = Timeline::default();
        let parents = [first, low, high, other].iter().map(|i| (i.to_string(), Vec::new())).collect();
        let nodes = nodes_of(&ctx, Work { left, priority, parents }, &timeline);
        let platform = Platform::new("linux", "arm64");

        let slot = nodes.acquire(first, &platform).unwrap();
        assert_eq!((slot.placement.node.as_str(), slot.placement.spilled), ("arm_node-a", false));
        assert_eq!(slot.engine.vm.as_ref().unwrap().name, "a", "its VM brought up");
        // a is full (one build per node) and no other VM is up to spill to: both wait, and the
        // one with the longer path gets the slot first, whatever the order they came in.
        let order = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for image in [low, high] {
                let (nodes, order, platform) = (&nodes, &order, &platform);
                scope.spawn(move || {
                    let slot = nodes.acquire(image, platform).unwrap();
                    order.lock().unwrap().push(image.clone());
                    std::thread::sleep(Duration::from_millis(20));
                    nodes.release(slot, false);
                    nodes.forget(image);
                });
            }
            // Both wait before the slot frees.
            while nodes.lock().waiting.len() < 2 {
                std::thread::sleep(Duration::from_millis(5));
            }
            nodes.release(slot, false);
            nodes.forget(first);
        });
        assert_eq!(*order.lock().unwrap(), [high.clone(), low.clone()]);
        // Nothing is left for a: it went down as soon as its last image was done; b was never
        // brought up, its image still being left.
        let vms = timeline.vms();
        assert_eq!(vms.iter().map(|vm| vm.vm.as_str()).collect::<Vec<_>>(), ["a"]);
        {
            let state = nodes.lock();
            assert!(state.nodes.iter().all(|node| node.held.is_none()));
            assert_eq!(state.left, BTreeSet::from([arm(other)]));
        }
        nodes.forget(other);
        nodes.finish().unwrap();
        assert_eq!(timeline.vms().len(), 1, "b was never started");
    }

    #[test]
    fn a_lost_node_is_out_and_its_builds_go_to_the_others_until_none_is_left() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(
            root.path(),
            true,
            &["--multi-context", "1", "--arm64-vms", "a,b", "--platforms", "linux/arm64"],
        );
        let labels: Vec<String> = ["arm_node-a", "arm_node-b"].map(String::from).to_vec();
        let image = &homed_on("arm_node-a", &labels, 1)[0];
        let timeline = Timeline::default();
        let left = BTreeSet::from([arm(image)]);
        let parents = BTreeMap::from([(image.clone(), Vec::new())]);
        let nodes = nodes_of(&ctx, Work { left, priority: BTreeMap::new(), parents }, &timeline);
        let platform = Platform::new("linux", "arm64");
        let slot = nodes.acquire(image, &platform).unwrap();
        assert_eq!(slot.placement.node, "arm_node-a");
        nodes.lost(slot, &NodeLost { node: "arm_node-a".into(), why: "connection refused".into() });
        // The build goes again: to b, now its home among the nodes left.
        let slot = nodes.acquire(image, &platform).unwrap();
        assert_eq!(
            (slot.placement.node.as_str(), slot.placement.home.as_str()),
            ("arm_node-b", "arm_node-b")
        );
        nodes.lost(slot, &NodeLost { node: "arm_node-b".into(), why: "ssh exited 255".into() });
        let err = nodes.acquire(image, &platform).err().unwrap();
        assert_eq!(
            format!("{err:#}"),
            "no linux/arm64 node is left (arm_node-a: connection refused; arm_node-b: ssh exited 255)"
        );
        nodes.finish().unwrap();
        // Both were taken down when they went out.
        assert_eq!(timeline.vms().iter().map(|vm| vm.vm.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn a_slot_is_held_for_a_ready_build_with_a_longer_path_that_has_not_asked_yet() {
        let root = tempfile::tempdir().unwrap();
        let ctx = ctx(root.path(), false, &["--builds-per-node", "1", "--platforms", "linux/arm64"]);
        let (parent, child, leaf) = ("parent".to_string(), "child".to_string(), "leaf".to_string());
        let left: BTreeSet<BuildKey> = [&parent, &child, &leaf].iter().map(|i| arm(i)).collect();
        let priority = BTreeMap::from([(arm(&parent), 2.0), (arm(&child), 1.5), (arm(&leaf), 1.0)]);
        let parents = BTreeMap::from([
            (parent.clone(), Vec::new()),
            (child.clone(), vec![parent.clone()]),
            (leaf.clone(), Vec::new()),
        ]);
        let timeline = Timeline::default();
        let nodes = nodes_of(&ctx, Work { left, priority, parents }, &timeline);
        let platform = Platform::new("linux", "arm64");
        let slot = nodes.acquire(&parent, &platform).unwrap();
        let order = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let (nodes, order, platform, leaf) = (&nodes, &order, &platform, &leaf);
            scope.spawn(move || {
                let slot = nodes.acquire(leaf, platform).unwrap();
                order.lock().unwrap().push(leaf.clone());
                nodes.release(slot, false);
                nodes.forget(leaf);
            });
            while nodes.lock().waiting.is_empty() {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The parent ends while the leaf waits: the child is ready, with a longer path, and
            // the slot is held for it, though it asks only once the parent is merged.
            nodes.release(slot, false);
            std::thread::sleep(Duration::from_millis(50));
            assert!(order.lock().unwrap().is_empty(), "the leaf took the child's slot");
            nodes.forget(&parent);
            let slot = nodes.acquire(&child, platform).unwrap();
            assert_eq!(slot.placement.node, "this engine");
            order.lock().unwrap().push(child.clone());
            nodes.release(slot, false);
            nodes.forget(&child);
        });
        assert_eq!(*order.lock().unwrap(), [child, leaf]);
        nodes.finish().unwrap();
    }
}
