//! build-publish-cloud-builder and cloud-build: the Cloud Build and the image its steps run in.

use std::path::PathBuf;

use anyhow::{Context, Result};

use xshell::cmd;

use crate::cargo_recipe;
use crate::ctx::Ctx;
use crate::flags::VendorArgs;
use crate::local_registry::with_local_registry;
use crate::mirroring::{self, Mode};
use crate::platform::Platforms;
use crate::platform_build::command::build_options;
use crate::platform_build::node::Engine;
use crate::platform_build::setup::set_up_node;
use crate::registry::reference::repository_of;
use crate::rehearsal::{self, Rehearsal};
use crate::runner::sh;
use crate::signing;

/// build-publish-cloud-builder: vendor what it is built from, then build it for amd64 only,
/// since it only ever runs inside Cloud Build, and push it, with its provenance (and SBOM) as
/// the catalog's images carry theirs; signed by digest when SIGN_KEY is set, so that `verify
/// cloud-builder` accepts it. The xtask's dependency recipe goes in as a build context of its
/// own: the image compiles the dependencies of `Cargo.lock`, so that the pipeline's xtask step
/// compiles only the xtask crate.
pub fn build_publish_cloud_builder(ctx: &Ctx, args: &VendorArgs) -> Result<()> {
    let s = &ctx.settings;
    let image = &ctx.catalog.cloud_builder;
    let options = args.options();
    with_local_registry(ctx, || {
        // This engine's builder: its own BuildKit (containerd store), or a BuildKit container.
        let platforms = Platforms::parse(AMD64).map_err(anyhow::Error::msg)?;
        let node = Engine { context: None, platforms, vm: None }.node(ctx)?;
        let mut needed: Vec<(String, String)> = crate::catalog_graph::vendored_bases(ctx, image)?
            .into_iter()
            .map(|base| (base, image.dockerfile()))
            .collect();
        if !node.builder.engine {
            needed.push(mirroring::buildkit_need(ctx));
        }
        needed.extend(mirroring::sbom_need(ctx));
        mirroring::vendor_bases(ctx, &options, needed, Mode::Default { whole_list: false })?;
        set_up_node(ctx, &node)?;
        let recipe = xtask_recipe(ctx)?;
        let recipe = format!("{}={}", cargo_recipe::CONTEXT, recipe.display());
        let metadata = ctx.root.join(crate::work_dir()).join("cloud-builder/metadata.json");
        let (sh, dockerfile, build_args, reference, context) =
            (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
        let (builder, attest, metadata_file) =
            (&node.builder.name, build_options(ctx), metadata.display().to_string());
        ctx.runner.run(cmd!(
            sh,
            "docker buildx build --file {dockerfile} --platform {AMD64} --builder {builder} --progress plain
                {build_args...} --build-context {recipe} {attest...} --metadata-file {metadata_file}
                --push --tag {reference} {context}"
        ))?;
        let Some(key) = &s.sign_key else { return Ok(()) };
        let repository = repository_of(&reference);
        if ctx.runner.is_dry_run() {
            ctx.runner.say(&format!(
                "then signed by the digest the build pushed (`cosign sign` of {repository}@<that digest>, SIGN_KEY {key})"
            ));
            return Ok(());
        }
        let digest = pushed_digest(&metadata)?;
        signing::sign(ctx, key, &format!("{repository}@{digest}"))
    })
}

/// The platform the cloud builder is built for: Cloud Build's workers.
const AMD64: &str = "linux/amd64";

/// The digest buildx pushed, from its `--metadata-file`.
fn pushed_digest(metadata: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(metadata)
        .with_context(|| format!("cannot read the build's metadata, {}", metadata.display()))?;
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("the build's metadata, {}, is not JSON", metadata.display()))?;
    parsed["containerimage.digest"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("the build's metadata, {}, names no pushed digest", metadata.display()))
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
    /// With --local: NAME=VALUE added to every step's environment (repeatable). Not `--env`,
    /// which is the deployment (ENV)
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
        let step_env = args
            .step_env
            .iter()
            .map(|entry| rehearsal::step::pair(entry, "--step-env"))
            .collect::<Result<_>>()?;
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
