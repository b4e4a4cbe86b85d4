//! thirdparty: vendor the base images of `thirdparty.txt` into `$DOCKER_REPO/thirdparty/`.

use anyhow::Result;
use clap::Args;

use crate::ctx::Ctx;
use crate::flags::VendorArgs;
use crate::local_registry::with_local_registry;
use crate::mirroring::{self, Mode};

#[derive(Args, Debug, Clone)]
pub struct ThirdpartyArgs {
    #[command(flatten)]
    pub vendor: VendorArgs,
    /// Copy exactly the digests of thirdparty.lock, never what a tag points at now; a tag the
    /// lock lacks is an error (for pull requests)
    #[arg(long, conflicts_with_all = ["update", "check"])]
    pub locked: bool,
    /// Lock what the tags of these images (all, when none is named) point at now, copy that and
    /// rewrite thirdparty.lock, printing every change (for the scheduled refresh)
    #[arg(long, num_args = 0.., value_name = "IMAGE", conflicts_with = "check")]
    pub update: Option<Vec<String>>,
    /// Compare upstream, thirdparty.lock and the destination, print each drift, copy nothing;
    /// exit 1 when any exists
    #[arg(long)]
    pub check: bool,
    /// Only what the catalog's builds start from (their bases, and the BuildKit image when this
    /// engine needs a builder container; the arm64 node's need is known once it is up, and
    /// publish-all vendors it then), as publish-all vendors it
    #[arg(long, conflicts_with_all = ["update", "check"])]
    pub bases: bool,
}

/// thirdparty (with ENV=local, into the local registry, started when it is not running)
pub fn thirdparty(ctx: &Ctx, args: &ThirdpartyArgs) -> Result<()> {
    let options = args.vendor.options();
    with_local_registry(ctx, || {
        if args.bases {
            let graph = crate::catalog_graph::of_catalog(ctx)?;
            return mirroring::vendor_build_bases(ctx, &graph, &options, args.locked);
        }
        let pairs = mirroring::list_pairs(ctx, &options)?;
        let mode = match (&args.update, args.locked, args.check) {
            (Some(images), _, _) => Mode::Update(images.clone()),
            (None, true, _) => Mode::Locked,
            (None, false, true) => Mode::Check,
            (None, false, false) => Mode::Default { whole_list: true },
        };
        mirroring::vendor(ctx, &options, pairs, mode)
    })
}
