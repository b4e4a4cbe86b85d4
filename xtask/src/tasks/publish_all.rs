//! publish-all: the whole pipeline on this machine: vendor the base images, then build and
//! publish the catalog's images as a graph, as the Cloud Build does (see `publish`). With
//! ENV=local that needs nothing but Docker.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::flags::{BuildArgs, VendorArgs};
use crate::local_registry::with_local_registry;
use crate::mirroring;
use crate::publish::{self, Vendoring};
use crate::runner::sh;
use crate::secrets::Secrets;

#[derive(Args, Debug, Clone)]
pub struct PublishAllArgs {
    #[command(flatten)]
    pub vendor: VendorArgs,
    /// Vendor exactly the digests of thirdparty.lock, as `thirdparty --locked` (for pipelines)
    #[arg(long)]
    pub locked: bool,
    #[command(flatten)]
    pub build: BuildArgs,
    /// Where each image's build log goes while the builds run in parallel (a relative path
    /// starts at the repository root) [default: target/publish-all, or
    /// $CARGO_TARGET_DIR/publish-all]
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

/// publish-all
pub fn publish_all(ctx: &Ctx, args: &PublishAllArgs) -> Result<()> {
    let vendoring = Vendoring { options: args.vendor.options(), locked: args.locked };
    with_local_registry(ctx, || {
        let graph = crate::catalog_graph::of_catalog(ctx)?;
        let names: Vec<&str> = graph.vertices.iter().map(|vertex| vertex.name.as_str()).collect();
        // Every secret found before anything is done: a missing one vendors nothing.
        let secrets = Secrets::of_images(ctx, &names)?;
        // The catalog's images, not the cloud builder: publish-all does not build it.
        mirroring::vendor_build_bases(ctx, &graph, &vendoring.options, vendoring.locked)?;
        if ctx.runner.is_dry_run() {
            // The step as a task of its own, so that the plan can be pasted whole.
            let (sh, flags) = (sh(), bases_flags(ctx, &vendoring));
            ctx.runner.run(cmd!(sh, "cargo xtask thirdparty --bases {flags...}"))?;
        }
        let logs = args.logs.clone().unwrap_or_else(|| crate::work_dir().join("publish-all"));
        let mut options = args.build.options(Some(logs));
        options.vendoring = Some(vendoring.clone());
        publish::publish_images(ctx, &graph, &names, &options, &secrets)
    })
}

/// The flags of `thirdparty --bases` that vendor as this run does: its settings, explicitly.
fn bases_flags(ctx: &Ctx, vendoring: &Vendoring) -> Vec<String> {
    let s = &ctx.settings;
    let mut flags = vec!["--env".to_string(), s.env.clone(), "--docker-repo".into(), s.docker_repo.clone()];
    if s.catalog != Path::new(crate::catalog::CATALOG_PATH) {
        flags.extend(["--catalog".to_string(), s.catalog.display().to_string()]);
    }
    if s.bake_group != crate::catalog_source::DEFAULT_BAKE_GROUP {
        flags.extend(["--bake-group".to_string(), s.bake_group.clone()]);
    }
    if let Some(list) = &s.thirdparty {
        flags.extend(["--thirdparty-list".to_string(), list.display().to_string()]);
    }
    if s.multi_context {
        flags.extend([
            "--multi-context".to_string(),
            "1".into(),
            "--platforms".into(),
            s.platforms.to_string(),
        ]);
    }
    if vendoring.locked {
        flags.push("--locked".into());
    }
    flags.extend(vendoring.options.flags());
    for (flag, hosts) in [
        ("--gcloud-auth-registries", &s.gcloud_auth_registries),
        ("--insecure-registries", &s.insecure_registries),
    ] {
        if !hosts.is_empty() {
            flags.extend([flag.to_string(), hosts.join(",")]);
        }
    }
    flags
}
