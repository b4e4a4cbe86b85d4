//! Running a registry server on 127.0.0.1 (for `local-registry`, ENV=local and the tests):
//! the CNCF Distribution registry's config, and whether it answers.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// A Distribution config: storage under `storage`, listening on `addr`, access log on, and
/// `auth` (an `auth:` section, or nothing for an open registry).
pub fn config_yaml(addr: SocketAddr, storage: &Path, auth: &str) -> String {
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
