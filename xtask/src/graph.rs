//! The image graph: which catalog images build on which. Each image a Dockerfile names is a
//! stage (not here), another image of the catalog (a parent), or an external base from the
//! vendoring list; `catalog_graph` decides which, once, and this orders the images, parents
//! first, and holds what each build starts from for everything downstream.

use crate::dockerfile::Place;
use crate::invalid::Invalid;
use crate::platform::Platforms;

/// One catalog image and what it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    pub name: String,
    /// The catalog images it builds on, each with the name its Dockerfile writes.
    pub parents: Vec<Parent>,
    /// The external images it starts from, each vendored.
    pub bases: Vec<Base>,
    /// The build arguments its Dockerfile declares (`ARG`), read with its names.
    pub args: Vec<String>,
    /// The platforms it is built for in this run: those it asks for that `PLATFORMS` has.
    pub platforms: Platforms,
}

/// A parent, as its child's Dockerfile names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub name: String,
    /// After expansion: `quay.io/acme/base-notebook`, `$DOCKER_REPO/base:1`. The build gets the
    /// parent's new digest under this name.
    pub written: String,
}

/// An external image a Dockerfile names, and its vendored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// As the Dockerfile writes it, after expansion: the name of its build context.
    pub written: String,
    /// Its vendored copy, by tag: `$DOCKER_REPO/thirdparty/library/ubuntu:24.04`.
    pub vendored: String,
    /// The digest it must have, when the Dockerfile or the vendoring list pins one.
    pub pin: Option<String>,
    /// `FROM`, `COPY --from`, … or the `# syntax=` frontend (handed over as `BUILDKIT_SYNTAX`).
    pub place: Place,
}

/// The images in an order where every image comes after its parents; among images that could
/// go next, the catalog's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub vertices: Vec<Vertex>,
}

impl Graph {
    /// `vertices` in the catalog's order, ordered parents first. A child built for a platform
    /// its parent is not built for cannot start from it: an error.
    pub fn new(vertices: Vec<Vertex>) -> Result<Graph, Invalid> {
        for vertex in &vertices {
            for parent in &vertex.parents {
                let Some(of_parent) = vertices.iter().find(|v| v.name == parent.name) else { continue };
                let lacking: Vec<String> = vertex
                    .platforms
                    .iter()
                    .filter(|p| !of_parent.platforms.iter().any(|q| q == *p))
                    .map(ToString::to_string)
                    .collect();
                if !lacking.is_empty() {
                    return Err(Invalid::new(format!(
                        "{} is built for {}, which its parent {} is not built for ({}): list only \
                         its parent's platforms in its `platforms`",
                        vertex.name,
                        lacking.join(", "),
                        parent.name,
                        of_parent.platforms
                    )));
                }
            }
        }
        order(vertices)
    }

    /// For tests elsewhere: images by name with their parents, on one platform, no bases.
    #[cfg(test)]
    pub fn of_parents(images: &[(&str, &[&str])]) -> Graph {
        let platforms: Platforms = [crate::platform::Platform::new("linux", "amd64")].into_iter().collect();
        let vertices = images
            .iter()
            .map(|(name, parents)| Vertex {
                name: name.to_string(),
                parents: parents
                    .iter()
                    .map(|p| Parent { name: p.to_string(), written: format!("r/{p}:1") })
                    .collect(),
                bases: Vec::new(),
                args: Vec::new(),
                platforms: platforms.clone(),
            })
            .collect();
        Graph::new(vertices).expect("a graph without cycles")
    }

    pub fn vertex(&self, name: &str) -> Option<&Vertex> {
        self.vertices.iter().find(|vertex| vertex.name == name)
    }

    /// The images that build on `name`, directly or not, in build order.
    pub fn descendants(&self, name: &str) -> Vec<&str> {
        let mut below: Vec<&str> = Vec::new();
        for vertex in &self.vertices {
            if vertex.parents.iter().any(|p| p.name == name || below.contains(&p.name.as_str())) {
                below.push(&vertex.name);
            }
        }
        below
    }
}

/// Parents first (Kahn's algorithm, taking the catalog's order among the ready); a cycle is an
/// error naming its images.
fn order(mut pending: Vec<Vertex>) -> Result<Graph, Invalid> {
    let names: Vec<String> = pending.iter().map(|vertex| vertex.name.clone()).collect();
    let mut ordered: Vec<Vertex> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|vertex| {
            vertex
                .parents
                .iter()
                .all(|p| ordered.iter().any(|done| done.name == p.name) || !names.contains(&p.name))
        });
        match ready {
            Some(at) => ordered.push(pending.remove(at)),
            None => {
                return Err(Invalid::new(format!(
                    "the catalog's images build on each other in a cycle: {}",
                    cycle(&pending)
                )));
            }
        }
    }
    Ok(Graph { vertices: ordered })
}

/// One cycle among `pending`, none of which is ready: `a → b → a`.
fn cycle(pending: &[Vertex]) -> String {
    let mut path: Vec<&str> = vec![&pending[0].name];
    loop {
        let current =
            pending.iter().find(|v| v.name == *path.last().expect("not empty")).expect("in the set");
        let next = current
            .parents
            .iter()
            .find(|p| pending.iter().any(|v| v.name == p.name))
            .expect("an image that is not ready has a pending parent");
        if let Some(start) = path.iter().position(|name| *name == next.name) {
            let mut cycle: Vec<&str> = path[start..].to_vec();
            cycle.push(&next.name);
            return cycle.join(" → ");
        }
        path.push(&next.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Platform;

    fn vertex(name: &str, parents: &[&str], platforms: &[&str]) -> Vertex {
        Vertex {
            name: name.to_string(),
            parents: parents
                .iter()
                .map(|p| Parent { name: p.to_string(), written: format!("r.test/p/{p}:1") })
                .collect(),
            bases: Vec::new(),
            args: Vec::new(),
            platforms: platforms.iter().map(|p| Platform::parse(p).unwrap()).collect(),
        }
    }

    fn graph(images: &[(&str, &[&str])]) -> Result<Graph, Invalid> {
        Graph::new(images.iter().map(|(name, parents)| vertex(name, parents, &["linux/amd64"])).collect())
    }

    fn order_of(graph: &Graph) -> Vec<&str> {
        graph.vertices.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn parents_come_first_and_the_catalog_order_otherwise() {
        let graph = graph(&[
            ("top", &["left", "right"]),
            ("left", &["base"]),
            ("solo", &[]),
            ("right", &["base"]),
            ("base", &[]),
        ])
        .unwrap();
        assert_eq!(order_of(&graph), ["solo", "base", "left", "right", "top"]);
        let top = graph.vertex("top").unwrap();
        assert_eq!(top.parents.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["left", "right"]);
        assert_eq!(graph.descendants("base"), ["left", "right", "top"]);
        assert_eq!(graph.descendants("right"), ["top"]);
        assert!(graph.descendants("solo").is_empty());
    }

    #[test]
    fn a_cycle_is_named() {
        let err = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]).unwrap_err().to_string();
        assert_eq!(err, "the catalog's images build on each other in a cycle: a → b → c → a");
        let err = graph(&[("a", &["a"])]).unwrap_err().to_string();
        assert!(err.ends_with("a → a"), "{err}");
    }

    #[test]
    fn a_child_cannot_ask_for_a_platform_its_parent_lacks() {
        let both = ["linux/amd64", "linux/arm64"];
        let ok = Graph::new(vec![vertex("base", &[], &both), vertex("cuda", &["base"], &["linux/amd64"])]);
        assert!(ok.is_ok(), "fewer platforms than the parent is fine");
        let err = Graph::new(vec![vertex("base", &[], &["linux/amd64"]), vertex("app", &["base"], &both)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "app is built for linux/arm64, which its parent base is not built for (linux/amd64): list only \
             its parent's platforms in its `platforms`"
        );
    }
}
