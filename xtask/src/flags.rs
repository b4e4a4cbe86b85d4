//! The option groups that several tasks share, as clap reads them from the command line, each
//! turned into the plain options of the code below the tasks (`BuildArgs::options`,
//! `WaitArgs::wait`, `VendorArgs::options`). A task's own options stay in its module.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::mirroring::VendorOptions;
use crate::publish::PublishOptions;
use crate::vm::Wait;

// How images are built, for every task that publishes them (a plain comment: clap shows a doc
// comment of a flattened struct as the task's help).
#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Build even the images whose inputs match what is published
    #[arg(long)]
    pub force: bool,
    /// With MULTI_CONTEXT=1: how many times to check that the arm64 VM (AUTO_START_STOP=1) and
    /// its tunnel are up before giving up
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub vm_tries: u32,
    /// Seconds between two of those checks
    #[arg(long, default_value_t = 5.0)]
    pub vm_interval: f64,
}

impl BuildArgs {
    /// How the images are published; `logs`: one log per image in this folder.
    pub fn options(&self, logs: Option<PathBuf>) -> PublishOptions {
        let vm_wait = Wait { tries: self.vm_tries, interval: seconds(self.vm_interval) };
        PublishOptions { force: self.force, logs, vm_wait, vendoring: None }
    }
}

#[derive(Args, Debug, Clone)]
pub struct WaitArgs {
    /// Wait until it is ready (see the task's description), checking at most --tries times
    #[arg(long)]
    pub wait: bool,
    /// How many times to check before giving up
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub tries: u32,
    /// Seconds between two checks
    #[arg(long = "interval", default_value_t = 5.0)]
    pub interval_secs: f64,
}

impl WaitArgs {
    /// How long to wait, with `--wait`; none without it.
    pub fn wait(&self) -> Option<Wait> {
        self.wait.then(|| Wait { tries: self.tries, interval: seconds(self.interval_secs) })
    }
}

/// How to vendor: shared by `thirdparty` and the tasks that vendor what they build from.
#[derive(Args, Debug, Clone)]
pub struct VendorArgs {
    /// The list of images to vendor (a relative path starts at the repository root)
    /// [default: the catalog's, thirdparty.txt]
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Blobs copied at once, across all tags
    #[arg(long, default_value_t = VendorOptions::default().jobs, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Seconds a registry may stall mid-request before the request is given up (and retried)
    #[arg(long, default_value_t = VendorOptions::default().timeout)]
    pub timeout: f64,
    /// Tries per request, the first included, on connection errors, timeouts, 408, 429 and 5xx
    #[arg(long, default_value_t = VendorOptions::default().tries, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub tries: u32,
    /// Start no new pull from a registry that reports fewer pulls left than this
    /// (`RateLimit-Remaining`, as Docker Hub sends): the rest of its tags are held back
    #[arg(long, default_value_t = VendorOptions::default().min_pulls_left)]
    pub min_pulls_left: u64,
    /// Tell every registry request and every retry on stderr
    #[arg(long, short)]
    pub verbose: bool,
    /// Leave out the signatures, attestations, SBOMs and referrers attached to the images
    #[arg(long)]
    pub no_referrers: bool,
}

impl VendorArgs {
    pub fn options(&self) -> VendorOptions {
        VendorOptions {
            file: self.file.clone(),
            jobs: self.jobs,
            timeout: self.timeout,
            tries: self.tries,
            min_pulls_left: self.min_pulls_left,
            verbose: self.verbose,
            no_referrers: self.no_referrers,
        }
    }
}

fn seconds(value: f64) -> Duration {
    Duration::from_secs_f64(value.max(0.0))
}
