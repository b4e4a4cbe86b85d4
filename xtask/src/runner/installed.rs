//! Whether a program the runner is to start is there: a missing one is named with how to
//! install it, before anything starts.

use anyhow::{Result, anyhow};

/// Fail early, naming the program and how to install it, when it is not on `PATH`.
pub fn ensure_installed(program: &str) -> Result<()> {
    which::which(program)
        .map(drop)
        .map_err(|_| anyhow!("`{program}` is not installed or not on PATH. {}", install_hint(program)))
}

pub fn is_installed(program: &str) -> bool {
    which::which(program).is_ok()
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "docker" => {
            "Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop, \
             which includes the buildx plugin."
        }
        "gcloud" => "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install",
        "docker-registry" => "On Debian or Ubuntu: `apt-get install docker-registry`.",
        "skopeo" => "On Debian or Ubuntu: `apt-get install skopeo`.",
        _ => "Install it and make sure it is on PATH.",
    }
}
