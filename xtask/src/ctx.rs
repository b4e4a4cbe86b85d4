//! What every task and every service below the tasks gets: the settings, the catalog, the
//! runner of its commands and the repository root. It lives below the tasks so that the
//! services that take it import nothing from `tasks/`.

use std::path::PathBuf;

use crate::catalog::Catalog;
use crate::runner::Runner;
use crate::settings::Settings;

/// The settings, the image catalog and the runner of one run's commands.
pub struct Ctx {
    pub settings: Settings,
    pub catalog: Catalog,
    pub runner: Runner,
    /// The repository root: commands run here, relative paths start here.
    pub root: PathBuf,
}

impl Ctx {
    /// The same context with other settings and runner: for work that runs its commands its way
    /// (an image's output behind its prefix, a seeding run's settings).
    pub fn derive(&self, settings: Settings, runner: Runner) -> Ctx {
        Ctx { settings, catalog: self.catalog.clone(), runner, root: self.root.clone() }
    }
}
