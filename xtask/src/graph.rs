//! The image graph: which catalog images build on which. An image whose Dockerfile starts
//! `FROM` (or copies `--from`) another catalog image's published reference builds on it; every
//! other image it names must be vendored under `$DOCKER_REPO/thirdparty/`. The graph is taken
//! from the Dockerfiles alone: the catalog says everything else.

use std::collections::BTreeMap;

use crate::invalid::Invalid;

/// One catalog image and what it starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vertex {
    pub name: String,
    /// The catalog images it builds on, each with the reference its Dockerfile names it by.
    pub parents: Vec<Parent>,
    /// The vendored images it starts from, as its Dockerfile names them.
    pub vendored: Vec<String>,
    /// The build arguments its Dockerfile declares (`ARG`), read with its references.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub name: String,
    pub reference: String,
}

/// The images in an order where every image comes after its parents; among images that could
/// go next, the catalog's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Graph {
    pub vertices: Vec<Vertex>,
}

/// What a Dockerfile of the catalog names, by image: `(name, dockerfile, references)`.
pub struct Named<'a> {
    pub name: &'a str,
    pub dockerfile: &'a str,
    pub references: &'a [String],
    /// The build arguments it declares.
    pub args: &'a [String],
}

impl Graph {
    /// `published`: each catalog image's reference as a Dockerfile names it, by image name.
    pub fn new(
        images: &[Named<'_>],
        published: &BTreeMap<String, String>,
        docker_repo: &str,
    ) -> Result<Graph, Invalid> {
        let by_reference: BTreeMap<&str, &str> =
            published.iter().map(|(name, reference)| (reference.as_str(), name.as_str())).collect();
        let vendored_root = format!("{docker_repo}/thirdparty/");
        let mut vertices = Vec::new();
        for image in images {
            let mut vertex = Vertex {
                name: image.name.to_string(),
                parents: Vec::new(),
                vendored: Vec::new(),
                args: image.args.to_vec(),
            };
            for reference in image.references {
                if let Some(parent) = by_reference.get(reference.as_str()) {
                    vertex.parents.push(Parent { name: parent.to_string(), reference: reference.clone() });
                } else if reference.starts_with(&vendored_root) {
                    vertex.vendored.push(reference.clone());
                } else {
                    return Err(Invalid::new(unknown_reference(image, reference, published, docker_repo)));
                }
            }
            vertices.push(vertex);
        }
        order(vertices)
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

fn unknown_reference(
    image: &Named<'_>,
    reference: &str,
    published: &BTreeMap<String, String>,
    docker_repo: &str,
) -> String {
    let Some(path) = reference.strip_prefix(&format!("{docker_repo}/")) else {
        return format!(
            "{} builds from {reference}, which is not under {docker_repo}/thirdparty/: start FROM \
             ${{DOCKER_REPO}}/thirdparty/<image> and list the image in the vendoring list, or FROM \
             another catalog image as it is published",
            image.dockerfile
        );
    };
    let repository = crate::registry::reference::repository_of(path);
    let hint = match published.get(repository) {
        Some(published) => format!(" (catalog image {repository} is published as {published})"),
        None => String::new(),
    };
    format!(
        "{} builds from {reference}, which is neither a catalog image{hint} nor vendored under \
         {docker_repo}/thirdparty/",
        image.dockerfile
    )
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

    const REPO: &str = "r.test/p";

    fn graph(images: &[(&str, &[&str])]) -> Result<Graph, Invalid> {
        let references: Vec<Vec<String>> =
            images.iter().map(|(_, refs)| refs.iter().map(|r| format!("{REPO}/{r}")).collect()).collect();
        let dockerfiles: Vec<String> =
            images.iter().map(|(name, _)| format!("images/{name}/Dockerfile")).collect();
        let named: Vec<Named> = images
            .iter()
            .zip(&references)
            .zip(&dockerfiles)
            .map(|(((name, _), references), dockerfile)| Named { name, dockerfile, references, args: &[] })
            .collect();
        let published =
            images.iter().map(|(name, _)| (name.to_string(), format!("{REPO}/{name}:1"))).collect();
        Graph::new(&named, &published, REPO)
    }

    fn order_of(graph: &Graph) -> Vec<&str> {
        graph.vertices.iter().map(|v| v.name.as_str()).collect()
    }

    #[test]
    fn parents_come_first_and_the_catalog_order_otherwise() {
        let graph = graph(&[
            ("top", &["left:1", "right:1"]),
            ("left", &["base:1"]),
            ("solo", &["thirdparty/busybox:1"]),
            ("right", &["base:1"]),
            ("base", &["thirdparty/busybox:1"]),
        ])
        .unwrap();
        assert_eq!(order_of(&graph), ["solo", "base", "left", "right", "top"]);
        let top = graph.vertex("top").unwrap();
        assert_eq!(top.parents.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["left", "right"]);
        assert_eq!(top.parents[0].reference, "r.test/p/left:1");
        assert_eq!(graph.vertex("base").unwrap().vendored, ["r.test/p/thirdparty/busybox:1"]);
        assert_eq!(graph.descendants("base"), ["left", "right", "top"]);
        assert_eq!(graph.descendants("right"), ["top"]);
        assert!(graph.descendants("solo").is_empty());
    }

    #[test]
    fn a_cycle_is_named() {
        let err = graph(&[("a", &["b:1"]), ("b", &["c:1"]), ("c", &["a:1"]), ("d", &["thirdparty/x:1"])])
            .unwrap_err()
            .to_string();
        assert_eq!(err, "the catalog's images build on each other in a cycle: a → b → c → a");
        let err = graph(&[("a", &["a:1"])]).unwrap_err().to_string();
        assert!(err.ends_with("a → a"), "{err}");
    }

    #[test]
    fn a_reference_that_is_neither_an_image_nor_vendored_is_an_error() {
        let err = graph(&[("a", &["thirdparty/x:1"]), ("b", &["a:2"])]).unwrap_err().to_string();
        assert_eq!(
            err,
            "images/b/Dockerfile builds from r.test/p/a:2, which is neither a catalog image (catalog \
             image a is published as r.test/p/a:1) nor vendored under r.test/p/thirdparty/"
        );
        let err = graph(&[("b", &["elsewhere:1"])]).unwrap_err().to_string();
        assert!(err.contains("r.test/p/elsewhere:1, which is neither a catalog image nor vendored"), "{err}");
    }
}
