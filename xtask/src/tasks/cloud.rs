//! build-publish-cloud-builder and cloud-build: the Cloud Build and the image its steps run in.

use anyhow::Result;

use super::thirdparty::{self, VendorArgs};
use super::{Ctx, images, local_registry};
use xshell::cmd;

use crate::runner::sh;

/// build-publish-cloud-builder: vendor what it is built from, then build it for amd64 only,
/// since it only ever runs inside Cloud Build, and push it.
pub fn build_publish_cloud_builder(ctx: &Ctx, args: &VendorArgs) -> Result<()> {
    let s = &ctx.settings;
    let image = &ctx.catalog.cloud_builder;
    local_registry::with_local_registry(ctx, || {
        let needed =
            images::vendored_bases(ctx, image)?.into_iter().map(|base| (base, image.dockerfile())).collect();
        thirdparty::vendor_bases(ctx, args, needed, thirdparty::Mode::Default { whole_list: false })?;
        let (sh, dockerfile, build_args, reference, context) =
            (sh(), image.dockerfile(), s.build_args(image), s.image_ref(image), image.context());
        ctx.runner
            .run(cmd!(sh, "docker build --file {dockerfile} --pull --platform linux/amd64 {build_args...} --tag {reference} {context}"))?;
        ctx.runner.run(cmd!(sh, "docker push {reference}"))
    })
}

/// cloud-build: submit the catalog's pipeline (`cloudbuild/pr.yaml`) with this repository (less `.gcloudignore`).
pub fn cloud_build(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let builder_image = s.image_ref(&ctx.catalog.cloud_builder);
    let auto = if s.auto_start_stop { "1" } else { "0" };
    let (sh, pipeline) = (sh(), &ctx.catalog.pipeline);
    let project = format!("--project={}", s.gcp_project);
    let mut substitutions =
        format!("--substitutions=_ENV={},_CLOUDBUILD_IMAGE={builder_image},_AUTO_START_STOP={auto}", s.env);
    if let Some(refresh) = &s.refresh {
        substitutions.push_str(&format!(",_REFRESH={refresh}"));
    }
    ctx.runner
        .run(cmd!(sh, "gcloud builds submit {project} --region=global --config {pipeline} {substitutions} ."))
}
