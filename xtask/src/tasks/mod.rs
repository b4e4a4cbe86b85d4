//! One module per group of tasks; each task is a function named after it.

pub mod bench;
pub mod buildx;
pub mod cloud;
pub mod images;
pub mod info;
pub mod local_registry;
pub mod publish_all;
pub mod published;
pub mod scan;
pub mod seed;
pub mod signing;
pub mod thirdparty;
pub mod vm;

use std::path::PathBuf;

use crate::catalog::Catalog;
use crate::runner::Runner;
use crate::settings::Settings;

/// What every task gets: the settings, the image catalog and the runner of its commands.
pub struct Ctx {
    pub settings: Settings,
    pub catalog: Catalog,
    pub runner: Runner,
    /// The repository root: commands run here, relative paths start here.
    pub root: PathBuf,
}

impl Ctx {
    /// The same context with other settings and runner: for a task that runs others its way.
    pub fn derive(&self, settings: Settings, runner: Runner) -> Ctx {
        Ctx { settings, catalog: self.catalog.clone(), runner, root: self.root.clone() }
    }
}
