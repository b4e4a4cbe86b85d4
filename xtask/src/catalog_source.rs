//! Which catalog a run reads, as the settings give it before the command line is parsed (the
//! catalog's images make the task list it is parsed with): the file (`CATALOG`, an images.toml
//! or a bake file), the bake file's group (`BAKE_GROUP`), and the vendoring list and pipeline
//! when given (`THIRDPARTY`, `PIPELINE`), which win over those the catalog names or lends.

use std::path::{Path, PathBuf};

use crate::catalog::CATALOG_PATH;

/// The group of a bake file whose targets are the images when `BAKE_GROUP` names none: bake's
/// own default.
pub const DEFAULT_BAKE_GROUP: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSource {
    /// The catalog's file; a relative path starts at the repository root.
    pub path: PathBuf,
    /// The group of a bake file whose targets (and the targets they build on) are the images;
    /// `None`: `default`.
    pub bake_group: Option<String>,
    /// The vendoring list instead of the catalog's; relative as `path`.
    pub thirdparty: Option<PathBuf>,
    /// The Cloud Build pipeline instead of the catalog's; relative as `path`.
    pub pipeline: Option<PathBuf>,
}

impl CatalogSource {
    /// The catalog at `path`, as it names (or lends) its list and pipeline.
    pub fn file(path: &Path) -> CatalogSource {
        CatalogSource { path: path.to_path_buf(), bake_group: None, thirdparty: None, pipeline: None }
    }

    /// The bake group to read.
    pub fn bake_group(&self) -> &str {
        self.bake_group.as_deref().unwrap_or(DEFAULT_BAKE_GROUP)
    }
}

impl Default for CatalogSource {
    /// The repository's own catalog.
    fn default() -> CatalogSource {
        CatalogSource::file(Path::new(CATALOG_PATH))
    }
}
