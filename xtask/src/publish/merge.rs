//! The merge of an image's platforms: `docker buildx imagetools create` makes the index of the
//! per-platform tags, attestations kept, with the image's inputs recorded as annotations of it.

use anyhow::Result;
use xshell::cmd;

use crate::build::failure::transient_cause;
use crate::build::node::Node;
use crate::ctx::Ctx;
use crate::inputs::{DIGEST_ANNOTATION, Inputs, RECORD_ANNOTATION};
use crate::runner::sh;

/// Merge `tags` into `reference` on `node`'s builder, its inputs (when known) recorded.
pub fn merge(
    ctx: &Ctx,
    node: &Node,
    reference: &str,
    tags: &[String],
    inputs: Option<&Inputs>,
) -> Result<()> {
    ctx.runner.say(&format!("when every platform succeeded, merge them into {reference}:"));
    let annotations: Vec<String> = inputs
        .iter()
        .flat_map(|inputs| {
            [
                "--annotation".to_string(),
                format!("index:{DIGEST_ANNOTATION}={}", inputs.digest()),
                "--annotation".to_string(),
                format!("index:{RECORD_ANNOTATION}={}", inputs.to_json()),
            ]
        })
        .collect();
    let (sh, on, builder) = (sh(), &node.context_flag(), &node.builder.name);
    ctx.runner.run_retrying(
        cmd!(
            sh,
            "docker {on...} buildx imagetools create --builder {builder} {annotations...} --tag {reference} {tags...}"
        ),
        transient_cause,
    )
}
