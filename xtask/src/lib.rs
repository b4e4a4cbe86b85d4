//! The build tasks of this repository, behind `cargo xtask`. The binary (`main.rs`) parses the
//! command line; everything else lives here so that tests and the benchmark can use it too.

pub mod catalog;
pub mod dockerfile;
pub mod pipeline;
pub mod probe;
pub mod registry;
pub mod registry_server;
pub mod runner;
pub mod settings;
pub mod tasks;
pub mod testbed;
pub mod thirdparty;

use std::path::{Path, PathBuf};

/// The repository root, where `cargo xtask` runs every command.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the repository root").to_path_buf()
}
