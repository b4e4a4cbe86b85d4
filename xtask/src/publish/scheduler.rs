//! When each image of a run starts: as soon as every image it builds on that the run publishes
//! is done, on a thread of its own, so that images that do not depend on each other build at
//! once. A dry run is the same run, one image at a time in the graph's order, so that its plan
//! reads top to bottom.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use super::plan::ParentStates;
use super::table::Row;
use crate::graph::{Graph, Vertex};

/// Run `one_image` for each of `selected`, given the states of its parents in the run, and
/// return the rows in the graph's order.
pub fn in_parallel(
    graph: &Graph,
    selected: &[&str],
    dry_run: bool,
    one_image: impl Fn(&Vertex, ParentStates) -> Row + Sync,
) -> Vec<Row> {
    let done: Mutex<BTreeMap<String, Row>> = Mutex::new(BTreeMap::new());
    let changed = Condvar::new();
    let in_order: Vec<&str> =
        graph.vertices.iter().map(|v| v.name.as_str()).filter(|name| selected.contains(name)).collect();
    std::thread::scope(|scope| {
        for &name in selected {
            let (done, changed, in_order, one_image) = (&done, &changed, &in_order, &one_image);
            scope.spawn(move || {
                let vertex = graph.vertex(name).expect("a selected image is in the graph");
                let waiting = |done: &mut BTreeMap<String, Row>| {
                    if dry_run {
                        return in_order
                            .iter()
                            .take_while(|other| **other != name)
                            .any(|other| !done.contains_key(*other));
                    }
                    vertex
                        .parents
                        .iter()
                        .any(|p| selected.contains(&p.name.as_str()) && !done.contains_key(&p.name))
                };
                let guard =
                    changed.wait_while(done.lock().expect("not poisoned"), waiting).expect("not poisoned");
                // The parents' states are read, then the lock is let go for the build.
                let parents = vertex
                    .parents
                    .iter()
                    .filter_map(|p| Some((p.name.clone(), guard.get(&p.name)?.outcome.parent_state(&p.name))))
                    .collect();
                drop(guard);
                let row = one_image(vertex, parents);
                done.lock().expect("not poisoned").insert(name.to_string(), row);
                changed.notify_all();
            });
        }
    });
    let mut done = done.into_inner().expect("not poisoned");
    graph.vertices.iter().filter_map(|vertex| done.remove(&vertex.name)).collect()
}
