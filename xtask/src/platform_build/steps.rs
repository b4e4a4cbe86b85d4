//! The steps of each platform's build and which were cache hits, read from buildx's output as it
//! comes: the closing table's CACHED column.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::platform::Platform;
use crate::runner::Watch;

/// The steps of each platform's build and which were cached, counted from its `--progress
/// plain` output (`#7 [2/3] RUN …`, then `#7 CACHED` for a cache hit).
#[derive(Default)]
pub struct Steps {
    by_platform: Mutex<BTreeMap<String, PlatformSteps>>,
}

/// The ids of a build's steps, and of those that were cache hits.
#[derive(Default)]
struct PlatformSteps {
    steps: BTreeSet<u32>,
    cached: BTreeSet<u32>,
}

impl Steps {
    pub fn watcher(self: &Arc<Steps>, platform: &Platform) -> Watch {
        let (steps, platform) = (Arc::clone(self), platform.to_string());
        Arc::new(move |line| steps.see(&platform, line))
    }

    fn see(&self, platform: &str, line: &str) {
        let Some((id, rest)) = line.strip_prefix('#').and_then(|l| l.split_once(' ')) else { return };
        let Ok(id) = id.parse::<u32>() else { return };
        let mut by_platform = self.by_platform.lock().expect("not poisoned");
        let seen = by_platform.entry(platform.to_string()).or_default();
        if rest == "CACHED" {
            seen.cached.insert(id);
        } else if let Some(header) = rest.strip_prefix('[').and_then(|r| r.split_once(']')).map(|(h, _)| h)
            && header.rsplit(' ').next().and_then(|n| n.split_once('/')).is_some_and(|(a, b)| {
                !a.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            })
        {
            seen.steps.insert(id);
        }
    }

    /// Cached steps and steps of one platform's build.
    pub fn counts_of(&self, platform: &Platform) -> (usize, usize) {
        let by_platform = self.by_platform.lock().expect("not poisoned");
        by_platform
            .get(&platform.to_string())
            .map_or((0, 0), |seen| (seen.steps.intersection(&seen.cached).count(), seen.steps.len()))
    }

    /// Cached steps and steps, over every platform.
    pub fn counts(&self) -> (usize, usize) {
        let by_platform = self.by_platform.lock().expect("not poisoned");
        by_platform.values().fold((0, 0), |(cached, total), seen| {
            (cached + seen.steps.intersection(&seen.cached).count(), total + seen.steps.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_numbered_steps_and_their_cache_hits_per_platform() {
        let steps = Arc::new(Steps::default());
        let (amd64, arm64) = (
            steps.watcher(&Platform::new("linux", "amd64")),
            steps.watcher(&Platform::new("linux", "arm64")),
        );
        for line in [
            "#2 [internal] load metadata for r/base:1",
            "#4 [context r/base:1] r/base:1@sha256:aa",
            "#7 [1/3] RUN uname -m",
            "#7 CACHED",
            "#8 [stage-1 2/3] COPY late.txt /late.txt",
            "#8 DONE 0.1s",
            "+ DOCKER_BUILDKIT=1 docker buildx build",
        ] {
            amd64(line);
        }
        // The same ids on the other platform are other steps.
        arm64("#7 [linux/arm64 1/3] RUN uname -m");
        assert_eq!(steps.counts(), (1, 3));
    }
}
