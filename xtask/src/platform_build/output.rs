//! Where one image's output goes while images build at once: each line behind its
//! `<image>/<arch> |` prefix on stderr, and into the image's log.

use std::path::Path;
use std::sync::Arc;

use super::steps::Steps;
use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::runner::{Lines, Watch};

/// Where one image's output goes: every line behind `<image>/<arch> |` (padded to `width`)
/// on stderr, and into `log` when given.
pub struct ImageOutput<'a> {
    pub log: Option<&'a Path>,
    pub width: usize,
    pub steps: Arc<Steps>,
}

impl ImageOutput<'_> {
    /// The lines of `prefix` (an image, or an image's platform), seen by `watch`.
    pub fn lines(&self, prefix: &str, watch: Option<Watch>) -> Lines {
        Lines {
            prefix: format!("{prefix:<width$}", width = self.width),
            log: self.log.map(Path::to_path_buf),
            watch,
        }
    }

    /// `ctx` with the image's commands and their output behind its prefix.
    pub fn image_ctx(&self, ctx: &Ctx, image: &Image) -> Ctx {
        ctx.derive(ctx.settings.clone(), ctx.runner.with_lines(self.lines(&image.name, None)))
    }
}
