//! The build tasks of this repository, behind `cargo xtask`. The binary (`main.rs`) parses the
//! command line; everything else lives here so that tests and the benchmark can use it too.

pub mod cargo_recipe;
pub mod catalog;
pub mod dockerfile;
pub mod dockerignore;
pub mod graph;
pub mod inputs;
pub mod interrupt;
pub mod lock;
pub mod pipeline;
pub mod probe;
pub mod registry;
pub mod registry_server;
pub mod rehearsal;
pub mod runner;
pub mod settings;
pub mod tasks;
pub mod thirdparty;

use std::path::{Component, Path, PathBuf};

/// Where the xtask keeps what it writes (BuildKit and registry configs, logs, the local
/// registry's data): `$CARGO_TARGET_DIR` when set, as for cargo's own output, else `target`.
/// Relative paths start at the repository root, where every command runs.
pub fn work_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// The repository root, where `cargo xtask` runs every command.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the repository root").to_path_buf()
}

/// `a/b/../c` → `a/c`, without asking the file system (the path may not exist yet).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
