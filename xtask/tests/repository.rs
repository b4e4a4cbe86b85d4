//! The repository's data agrees with itself: every Dockerfile starts FROM an image that
//! thirdparty.txt vendors, with the tags the catalog's versions give.

use std::collections::{BTreeMap, BTreeSet};

use xtask::catalog::Catalog;

const REPO: &str = "registry.test/project/env";

#[test]
fn every_base_image_is_vendored() {
    let root = xtask::project_root();
    let catalog = Catalog::load(&root).unwrap();
    let list = std::fs::read(root.join("thirdparty.txt")).unwrap();
    let entries = xtask::thirdparty::parse(&list).unwrap();
    let vendored: BTreeSet<String> = xtask::thirdparty::pairs(&entries, REPO)
        .unwrap()
        .into_iter()
        .map(|pair| pair.destination.to_string())
        .collect();
    for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
        let dockerfile = std::fs::read_to_string(root.join(image.dockerfile())).unwrap();
        let mut values: BTreeMap<String, String> = BTreeMap::from([("DOCKER_REPO".into(), REPO.into())]);
        for name in &image.build_args {
            values.insert(name.clone(), catalog.versions[name].clone());
        }
        let mut stages = BTreeSet::new();
        let mut bases = 0;
        for line in dockerfile.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["ARG", definition] => {
                    if let Some((name, value)) = definition.split_once('=') {
                        values.entry(name.to_string()).or_insert_with(|| value.to_string());
                    }
                }
                ["FROM", from, rest @ ..] => {
                    if let ["AS", stage] | ["as", stage] = rest {
                        stages.insert(stage.to_string());
                    }
                    let mut reference = from.to_string();
                    for (name, value) in &values {
                        reference = reference.replace(&format!("${{{name}}}"), value);
                    }
                    if stages.contains(&reference) {
                        continue;
                    }
                    bases += 1;
                    assert!(
                        vendored.contains(&reference),
                        "{} starts FROM {reference}, which thirdparty.txt does not vendor",
                        image.dockerfile()
                    );
                }
                _ => {}
            }
        }
        assert!(bases > 0, "{} has no FROM", image.dockerfile());
    }
}
