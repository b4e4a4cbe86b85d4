//! The secrets a build step reads (`RUN --mount=type=secret,id=…`): where each comes from, as
//! the catalog says (`secrets = { token = { env = "NAME" } }`). A secret's value is handed to
//! BuildKit with `--secret` and nothing else: never in a build argument, a log line, the dry run
//! (which names only its id and source), the inputs digest or a cache key.

use std::path::PathBuf;

use serde::Deserialize;

/// Where a secret's value is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    /// An environment variable of the run.
    Env { env: String },
    /// A file, relative to the catalog's folder.
    File { file: PathBuf },
    /// A Secret Manager secret of GCP_PROJECT, read through gcloud (as the VM's ssh key is).
    GcpSecret { gcp_secret: String },
}
