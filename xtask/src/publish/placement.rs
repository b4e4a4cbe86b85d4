//! Where a platform's build of an image goes when the platform has several nodes, and which
//! ready build starts first. An image's home node is chosen by rendezvous hashing on its name,
//! so that it builds on the same node run after run (whose local cache is warm) and adding or
//! removing a node moves only the images that hash to it. A build whose home is full spills to
//! an idle node (its registry cache makes that cheap). Of the builds that are ready, the one with
//! the longest remaining path to the end of the graph starts first.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::graph::Graph;

/// The node an image hashes to among `nodes`: the one with the highest score for the pair. The
/// same answer for the same names, on every machine and in every run.
pub fn home<'a>(image: &str, nodes: &'a [String]) -> Option<&'a String> {
    nodes.iter().max_by_key(|node| (score(image, node), node.as_str()))
}

/// A stable hash of the pair: the first eight bytes of SHA-256 over `node NUL image`.
fn score(image: &str, node: &str) -> u64 {
    let digest = Sha256::digest(format!("{node}\0{image}").as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"))
}

/// How busy a node is: the builds it runs and how many it may run at once (`None`: no limit),
/// and whether it is up (a VM not started is no place to spill to: starting it costs more than
/// waiting for a slot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub node: String,
    pub running: usize,
    pub limit: Option<usize>,
    pub up: bool,
}

impl Load {
    fn has_room(&self) -> bool {
        self.limit.is_none_or(|limit| self.running < limit)
    }
}

/// Where a build starts now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// On its home node.
    Home(String),
    /// Its home is full and this node is idle.
    Spilled { home: String, to: String },
    /// Its home is full and no node is idle: it waits for a slot.
    Waits,
}

/// Where the build of `image` goes among `loads` (the nodes of its platform still in the run).
pub fn place(image: &str, loads: &[Load]) -> Placed {
    let names: Vec<String> = loads.iter().map(|load| load.node.clone()).collect();
    let Some(home) = home(image, &names) else { return Placed::Waits };
    let load = loads.iter().find(|load| &load.node == home).expect("home is one of the nodes");
    if load.has_room() {
        return Placed::Home(home.clone());
    }
    match loads.iter().find(|load| load.up && load.running == 0 && load.has_room()) {
        Some(idle) => Placed::Spilled { home: home.clone(), to: idle.node.clone() },
        None => Placed::Waits,
    }
}

/// Each image's remaining path to the end of the graph: its own weight (its last build time,
/// 1 when none is recorded) plus the longest remaining path of the images built on it.
pub fn remaining_paths(graph: &Graph, weights: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut remaining: BTreeMap<String, f64> = BTreeMap::new();
    // Children come after their parents in the graph's order: walk it backwards.
    for vertex in graph.vertices.iter().rev() {
        let below = graph
            .vertices
            .iter()
            .filter(|child| child.parents.iter().any(|p| p.name == vertex.name))
            .filter_map(|child| remaining.get(&child.name))
            .fold(0.0_f64, |longest, path| longest.max(*path));
        let own = weights.get(&vertex.name).copied().unwrap_or(1.0);
        remaining.insert(vertex.name.clone(), own + below);
    }
    remaining
}

/// `ready` ordered to start: the longest remaining path first; ties keep the order given.
pub fn by_priority(ready: &mut [&str], remaining: &BTreeMap<String, f64>) {
    let path = |name: &str| remaining.get(name).copied().unwrap_or(0.0);
    ready.sort_by(|a, b| path(b).total_cmp(&path(a)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Graph;

    fn nodes(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("builder-arm64-{i}")).collect()
    }

    #[test]
    fn adding_a_fourth_node_moves_a_quarter_of_the_images_and_only_to_it() {
        let images: Vec<String> = (0..1000).map(|i| format!("image-{i:04}")).collect();
        let (three, four) = (nodes(3), nodes(4));
        let moved: Vec<&String> =
            images.iter().filter(|image| home(image, &three) != home(image, &four)).collect();
        let share = moved.len() as f64 / images.len() as f64;
        assert!((0.20..=0.30).contains(&share), "{} of 1000 moved", moved.len());
        assert!(moved.iter().all(|image| home(image, &four) == Some(&four[3])), "only to the new node");
        // Each node gets about a third of them.
        for node in &three {
            let homed = images.iter().filter(|image| home(image, &three) == Some(node)).count();
            assert!((280..=390).contains(&homed), "{node}: {homed}");
        }
        // Removing a node moves only its own images.
        let two = nodes(2);
        for image in &images {
            let before = home(image, &three).unwrap();
            if before != &three[2] {
                assert_eq!(home(image, &two), Some(before), "{image}");
            }
        }
    }

    #[test]
    fn a_full_home_spills_to_an_idle_node_and_waits_when_none_is_idle() {
        let names = nodes(3);
        let image = "runtime";
        let home = home(image, &names).unwrap().clone();
        let load = |node: &String, running| Load { node: node.clone(), running, limit: Some(2), up: true };
        let all_free: Vec<Load> = names.iter().map(|n| load(n, 0)).collect();
        assert_eq!(place(image, &all_free), Placed::Home(home.clone()));
        let other = names.iter().find(|n| **n != home).unwrap();
        let home_full: Vec<Load> = names
            .iter()
            .map(|n| {
                load(
                    n,
                    if *n == home {
                        2
                    } else if n == other {
                        0
                    } else {
                        1
                    },
                )
            })
            .collect();
        assert_eq!(place(image, &home_full), Placed::Spilled { home: home.clone(), to: other.clone() });
        let busy: Vec<Load> = names.iter().map(|n| load(n, if *n == home { 2 } else { 1 })).collect();
        assert_eq!(place(image, &busy), Placed::Waits);
        // An idle node that is down is no place to spill to.
        let other_down: Vec<Load> =
            home_full.iter().map(|l| Load { up: &l.node != other, ..l.clone() }).collect();
        assert_eq!(place(image, &other_down), Placed::Waits);
        let unlimited = vec![Load { node: home.clone(), running: 50, limit: None, up: false }];
        assert_eq!(place(image, &unlimited), Placed::Home(home));
        assert_eq!(place(image, &[]), Placed::Waits);
    }

    #[test]
    fn the_longest_remaining_path_starts_first() {
        // a → b → c is the long chain; d and e stand alone, e heavier than a alone.
        let graph = Graph::of_parents(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[]), ("e", &[])]);
        let weights =
            BTreeMap::from([("a".to_string(), 2.0), ("c".to_string(), 3.0), ("e".to_string(), 5.5)]);
        let remaining = remaining_paths(&graph, &weights);
        assert_eq!(remaining["a"], 6.0);
        assert_eq!(remaining["b"], 4.0);
        assert_eq!(remaining["e"], 5.5);
        let mut ready = vec!["d", "e", "a"];
        by_priority(&mut ready, &remaining);
        assert_eq!(ready, ["a", "e", "d"]);
        // Without a record, every weight is 1: the chain still comes first.
        let mut ready = vec!["d", "e", "a"];
        by_priority(&mut ready, &remaining_paths(&graph, &BTreeMap::new()));
        assert_eq!(ready, ["a", "d", "e"]);
    }
}
