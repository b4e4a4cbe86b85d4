//! build-publish-cloud-builder and cloud-build: the Cloud Build and the image its steps run in.

use std::path::PathBuf;

use anyhow::Result;

use xshell::cmd;

use crate::cargo_recipe;
use crate::ctx::Ctx;
use crate::flags::VendorArgs;
use crate::local_registry::with_local_registry;
use crate::rehearsal::{self, Rehearsal};
use crate::runner::sh;
use crate::vendor::{self, Mode};

/// build-publish-cloud-builder: vendor what it is built from, then build it for amd64 only,
/// since it only ever runs inside Cloud Build, and push it. The xtask's dependency recipe goes
/// in as a build context of its own: the image compiles the dependencies of `Cargo.lock`, so
/// that the pipeline's xtask step compiles only the xtask crate.
pub fn build_publish_cloud_builder(ctx: &Ctx, args: &VendorArgs) -> Result<()> {
    let s = &ctx.settings;
    let image = &ctx.catalog.cloud_builder;
    let options = args.options();
    with_local_registry(ctx, || {
        let needed = crate::catalog_graph::vendored_bases(ctx, image)?
            .into_iter()
            .map(|base| (base, image.dockerfile()))
            .collect();
        vendor::vendor_bases(ctx, &options, needed, Mode::Default { whole_list: false })?;
        let recipe = xtask_recipe(ctx)?;
        let recipe = format!("{}={}", cargo_recipe::CONTEXT, recipe.display());
        let (sh, dockerfile, build_args, reference, context) =
            (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
        ctx.runner
            .run(cmd!(sh, "docker build --file {dockerfile} --pull --platform linux/amd64 {build_args...} --build-context {recipe} --tag {reference} {context}"))?;
        ctx.runner.run(cmd!(sh, "docker push {reference}"))
    })
}

/// Write the xtask's dependency recipe (its manifests and `Cargo.lock`, stub sources) where the
/// build takes it from; a dry run says what it would write.
fn xtask_recipe(ctx: &Ctx) -> Result<PathBuf> {
    let dir = crate::work_dir().join("cloud-builder").join(cargo_recipe::CONTEXT);
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "the xtask's dependency recipe: the Cargo manifests and Cargo.lock of {}, with stub sources, into {}",
            ctx.root.display(),
            dir.display()
        ));
    } else {
        let files = cargo_recipe::write(&ctx.root, &ctx.root.join(&dir))?;
        ctx.runner.say(&format!("the xtask's dependency recipe: {} files in {}", files.len(), dir.display()));
    }
    Ok(dir)
}

/// cloud-build's own options.
#[derive(clap::Args, Debug, Default)]
pub struct CloudBuildArgs {
    /// Rehearse the pipeline on this machine as Cloud Build runs it (each step in its image
    /// through `docker run`) instead of submitting it
    #[arg(long)]
    pub local: bool,
    /// With --local: run each step on this machine instead of in its image
    #[arg(long, requires = "local")]
    pub on_host: bool,
    /// Substitutions over the pipeline's and the task's, as gcloud takes them: K=V,K2=V2
    /// (repeatable); passed on to `gcloud builds submit`
    #[arg(long, value_name = "K=V,K2=V2")]
    pub substitutions: Vec<String>,
    /// With --local: NAME=VALUE added to every step's environment (repeatable); also
    /// `--env NAME=VALUE`, which a value with `=` tells apart from the ENV setting
    #[arg(long, value_name = "NAME=VALUE", requires = "local")]
    pub step_env: Vec<String>,
}

/// cloud-build: submit the catalog's pipeline (`cloudbuild/pr.yaml`) with this repository (less
/// `.gcloudignore`); `--local`: rehearse it on this machine instead.
pub fn cloud_build(ctx: &Ctx, args: &CloudBuildArgs) -> Result<()> {
    let s = &ctx.settings;
    let builder_image = s.image_ref(&ctx.catalog.cloud_builder);
    let auto = if s.auto_start_stop { "1" } else { "0" };
    let mut substitutions: Vec<(String, String)> = vec![
        ("_ENV".into(), s.env.clone()),
        ("_CLOUDBUILD_IMAGE".into(), builder_image),
        ("_AUTO_START_STOP".into(), auto.into()),
    ];
    if let Some(refresh) = &s.refresh {
        substitutions.push(("_REFRESH".into(), refresh.clone()));
    }
    for given in args.substitutions.iter().flat_map(|list| list.split(',')).filter(|kv| !kv.is_empty()) {
        let (name, value) = rehearsal::step::pair(given, "--substitutions entry")?;
        rehearsal::step::set(&mut substitutions, &name, &value);
    }
    if args.local {
        let step_env =
            args.step_env.iter().map(|entry| rehearsal::step::pair(entry, "--env")).collect::<Result<_>>()?;
        let how = Rehearsal { on_host: args.on_host, substitutions, step_env };
        return rehearsal::rehearse(ctx, &how);
    }
    let (sh, pipeline) = (sh(), &ctx.catalog.pipeline);
    let project = format!("--project={}", s.gcp_project);
    let list: Vec<String> = substitutions.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let substitutions = format!("--substitutions={}", list.join(","));
    ctx.runner
        .run(cmd!(sh, "gcloud builds submit {project} --region=global --config {pipeline} {substitutions} ."))
}
