//! Running a registry server on 127.0.0.1 (for `local-registry`, ENV=local and the tests):
//! the CNCF Distribution registry's config, and whether it answers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A Distribution config: storage under `storage`, listening on `addr`, access log on, and
/// basic auth from an htpasswd file when given.
pub fn config_yaml(addr: SocketAddr, storage: &Path, htpasswd: Option<&Path>) -> String {
    let auth = htpasswd.map_or(String::new(), |path| {
        format!("auth:\n  htpasswd:\n    realm: local\n    path: {}\n", path.display())
    });
    format!(
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n{auth}",
        storage.display()
    )
}

/// Whether a registry answers `GET /v2/` at `addr` (with any status: 401 is an answer).
pub fn answers(addr: SocketAddr) -> bool {
    crate::probe::http_answers(addr, "/v2/")
}

/// Wait until the registry at `addr` answers, at most `timeout`.
pub fn wait_until_up(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if answers(addr) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the registry at {addr} did not answer within {} s", timeout.as_secs())
}
