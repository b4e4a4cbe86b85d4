//! build-publish-cloud-builder: the image the Cloud Build steps run in.

use anyhow::Result;

use super::Ctx;
use crate::runner::Cmd;

/// build-publish-cloud-builder: amd64 only, since it only ever runs inside Cloud Build.
pub fn build_publish_cloud_builder(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let image = &ctx.catalog.cloud_builder;
    let reference = s.image_ref(image);
    let build = Cmd::docker()
        .args([
            "build",
            "--file",
            &image.dockerfile(),
            "--pull",
            "--platform",
            "linux/amd64",
        ])
        .args(s.build_args(image))
        .args(["--tag", &reference, &image.context()]);
    ctx.runner.run(&build)?;
    ctx.runner.run(&Cmd::docker().args(["push", &reference]))
}
