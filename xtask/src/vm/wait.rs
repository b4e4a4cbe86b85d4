//! How long to wait for the VM, its ssh or its engine, as the tasks and the builds ask.

use std::time::Duration;

/// How long to wait for the VM, its ssh or its engine: at most `tries` checks, `interval` apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Wait {
    pub tries: u32,
    pub interval: Duration,
}

impl Wait {
    pub fn bounds(&self) -> (u32, Duration) {
        (self.tries, self.interval)
    }
}
