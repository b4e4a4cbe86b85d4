//! The merge of an image's platforms: `docker buildx imagetools create` makes the index of the
//! per-platform tags, attestations kept, with the image's inputs recorded as annotations of it.

use std::collections::BTreeMap;

use xshell::cmd;

use crate::ctx::Ctx;
use crate::failure::Failure;
use crate::inputs::{BUILD_SECONDS_ANNOTATION, DIGEST_ANNOTATION, Inputs, RECORD_ANNOTATION};
use crate::platform_build::failure::transient_cause;
use crate::platform_build::node::Node;
use crate::runner::{Runner, sh};

/// Merge `tags` into `references` (one index, every tag of the image) on `node`'s builder, its
/// inputs (when known), how long each platform's build took (`seconds`, none in a dry run) and
/// the entry's index annotations (`entry_flags`) recorded.
pub fn merge(
    ctx: &Ctx,
    node: &Node,
    references: &[String],
    tags: &[String],
    inputs: Option<&Inputs>,
    seconds: &BTreeMap<String, f64>,
    entry_flags: &[String],
) -> Result<(), Failure> {
    ctx.runner.say(&format!("when every platform succeeded, merge them into {}:", references.join(" ")));
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
        .chain(
            (!seconds.is_empty())
                .then(|| {
                    let record = serde_json::to_string(seconds).expect("JSON of numbers");
                    ["--annotation".to_string(), format!("index:{BUILD_SECONDS_ANNOTATION}={record}")]
                })
                .into_iter()
                .flatten(),
        )
        .chain(entry_flags.iter().cloned())
        .collect();
    let destinations: Vec<String> =
        references.iter().flat_map(|r| ["--tag".to_string(), r.clone()]).collect();
    let (sh, on, builder) = (sh(), &node.context_flag(), &node.builder.name);
    ctx.runner.run_retrying(
        cmd!(
            sh,
            "docker {on...} buildx imagetools create --builder {builder} {annotations...} {destinations...} {tags...}"
        ),
        transient_cause,
    )
}

/// Tag `reference` as the image at `source` (`<repository>@<digest>`): one source and no
/// annotation, so `imagetools create` pushes the source's bytes unchanged, the same digest.
pub fn retag(runner: &Runner, reference: &str, source: &str) -> anyhow::Result<()> {
    let sh = sh();
    runner.run(cmd!(sh, "docker buildx imagetools create --tag {reference} {source}"))
}
