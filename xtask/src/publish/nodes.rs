//! The run's nodes, shared by its builds: what carries out the decisions of `dispatch` (which
//! build goes where, when a VM comes up or goes down). Each build's thread asks for a slot and
//! waits here for its answer; the build told to bring a VM up does so (`vm::bring_up`, and the
//! vendored BuildKit image its builder may need), and a VM with nothing left near goes down
//! (`vm::take_down`, its time in the timeline); each node's engine is asked for its image store
//! once a run; a node that is lost is said to be out. `finish` takes down whatever is still up,
//! on every way out.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::{Result, bail};

use super::Vendoring;
use super::dispatch::{Answer, BuildKey, Dispatch, Grant, NodeSpec, Work};
use super::timeline::{Placement, Timeline};
use crate::ctx::Ctx;
use crate::failure::NodeLost;
use crate::mirroring;
use crate::platform::Platform;
use crate::platform_build::node::{Engine, Node, Store, ask_store};
use crate::vm::{self, BroughtUp, Wait};

/// The nodes of a run and the builds they have left.
pub struct Nodes<'a> {
    ctx: &'a Ctx,
    wait: &'a Wait,
    vendoring: Option<&'a Vendoring>,
    timeline: &'a Timeline,
    /// The nodes' engines, by index, as the dispatch's.
    engines: Vec<Engine>,
    state: Mutex<State>,
    changed: Condvar,
    /// Each node's image store, once asked: by index, as `engines`. Asked once a run, by the
    /// first build placed there or the VM's bring-up, and the same for every image.
    stores: Vec<Mutex<Option<Store>>>,
    /// The BuildKit image was vendored for a VM's builder container.
    buildkit_vendored: Mutex<bool>,
    /// What went wrong taking a VM down: the run's error, after its builds' own.
    way_out: Mutex<Vec<anyhow::Error>>,
    /// With VMs to take down, a Ctrl-C or SIGTERM fails the builds instead of ending the process.
    _deferred: Option<crate::interrupt::Deferred>,
}

struct State {
    dispatch: Dispatch,
    /// Each node's VM, while this run has it up: by index, as `engines`.
    up: Vec<Option<BroughtUp>>,
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
        let specs = engines
            .iter()
            .map(|engine| NodeSpec {
                label: engine.label().to_string(),
                platforms: engine.platforms.iter().cloned().collect(),
                vm: engine.vm.is_some(),
            })
            .collect();
        let dispatch = Dispatch::new(specs, work, ctx.settings.builds_per_node, !ctx.runner.is_dry_run());
        Nodes {
            ctx,
            wait,
            vendoring,
            timeline,
            stores: engines.iter().map(|_| Mutex::new(None)).collect(),
            state: Mutex::new(State { dispatch, up: engines.iter().map(|_| None).collect() }),
            engines,
            changed: Condvar::new(),
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
        let mut state = self.lock();
        let ticket = state.dispatch.ask(key.clone());
        self.changed.notify_all();
        loop {
            let answer = loop {
                match state.dispatch.answer(ticket, Instant::now()) {
                    Some(answer) => break answer,
                    None => state = self.changed.wait(state).expect("not poisoned"),
                }
            };
            let grant = match answer {
                Answer::Run(grant) => return Ok(self.slot(grant, key)),
                Answer::NoNodeLeft(why) => bail!("{why}"),
                Answer::BringUp(grant) => grant,
            };
            // This build brings the VM up; the others placed on it wait.
            let n = grant.node;
            let engine = self.engines[n].clone();
            drop(state);
            let vm = engine.vm.clone().expect("only a VM is down");
            let (up, result) = vm::bring_up(self.ctx, &vm, self.wait);
            let result = result.and_then(|()| self.vendor_buildkit(n, &engine));
            state = self.lock();
            match result {
                Ok(()) => {
                    state.up[n] = Some(up);
                    state.dispatch.came_up(n);
                    self.changed.notify_all();
                }
                Err(err) => {
                    // Out, and this build placed again.
                    let why = format!("{} could not be brought up: {err:#}", vm.name);
                    state.dispatch.not_up(n, why.clone());
                    self.changed.notify_all();
                    drop(state);
                    self.tell_out(engine.label(), &why);
                    self.take_down(n, up);
                    state = self.lock();
                }
            }
        }
    }

    fn slot(&self, grant: Grant, key: BuildKey) -> Slot {
        let engine = self.engines[grant.node].clone();
        let placement = Placement {
            node: engine.label().to_string(),
            home: grant.home,
            spilled: grant.spilled,
            moved_from: None,
        };
        Slot { node: grant.node, key, engine, placement }
    }

    /// The node of `slot`, with the builder of the image whose build has it (`ctx`: the
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
        state.dispatch.release(&slot.key, slot.node, merges_there, Instant::now());
        self.changed.notify_all();
        self.take_down_idle(state);
    }

    /// The node of `slot` no longer answers: it is out for the rest of the run (its VM taken
    /// down), and the build goes back to be placed again.
    pub fn lost(&self, slot: Slot, lost: &NodeLost) {
        let mut state = self.lock();
        let first = state.dispatch.lost(&slot.key, slot.node, &lost.why, Instant::now());
        let up = if first { state.up[slot.node].take() } else { None };
        self.changed.notify_all();
        drop(state);
        if first {
            self.tell_out(&lost.node, &lost.why);
        }
        if let Some(up) = up {
            self.take_down(slot.node, up);
        }
    }

    /// `image` is done (merged, up to date, skipped or failed): a VM kept up for it alone is
    /// taken down.
    pub fn forget(&self, image: &str) {
        let mut state = self.lock();
        state.dispatch.forget(image);
        self.changed.notify_all();
        self.take_down_idle(state);
    }

    /// Every VM still up taken down; what went wrong doing so on the way out (the first failure
    /// stays the error, the others are said).
    pub fn finish(&self) -> Result<()> {
        let up: Vec<(usize, BroughtUp)> = {
            let mut state = self.lock();
            state.dispatch.finish();
            state.up.iter_mut().enumerate().filter_map(|(n, up)| Some((n, up.take()?))).collect()
        };
        for (n, up) in up {
            self.take_down(n, up);
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

    /// Take down every VM the dispatch finds idle.
    fn take_down_idle<'s>(&'s self, mut state: MutexGuard<'s, State>) {
        while let Some(n) = state.dispatch.take_down_next() {
            let up = state.up[n].take().expect("a VM that is up");
            drop(state);
            self.take_down(n, up);
            state = self.lock();
            state.dispatch.went_down(n);
            self.changed.notify_all();
        }
    }

    /// Take down a VM this run brought up, its time recorded; a failure is kept for the end of the run.
    fn take_down(&self, n: usize, up: BroughtUp) {
        let (vm, since) = (up.vm.clone(), up.since);
        if let Err(err) = vm::take_down(self.ctx, up) {
            self.way_out.lock().expect("not poisoned").push(err);
        }
        let busy = self.lock().dispatch.busy(n);
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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::time::Duration;

    use clap::{Args, FromArgMatches};

    use super::*;
    use crate::catalog::Catalog;
    use crate::platform_build::node::engines;
    use crate::publish::placement;
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
            while nodes.lock().dispatch.asking() < 2 {
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
            assert!(state.up.iter().all(Option::is_none));
            assert_eq!(*state.dispatch.left(), BTreeSet::from([arm(other)]));
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
    fn a_slot_is_reserved_for_a_ready_build_with_a_longer_path_that_has_not_asked_yet() {
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
            while nodes.lock().dispatch.asking() == 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
            // The parent ends while the leaf waits: the child is ready, with a longer path, and
            // the slot is reserved for it, though it asks only once the parent is merged.
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
