//! The nodes of a build: which engine builds which platform of `$PLATFORMS`, and the builder
//! each engine needs (its own BuildKit, or a BuildKit container from the vendored image).

use anyhow::Result;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::platform::{Platform, Platforms};
use crate::runner::sh;

/// The builder of a node, and why it was chosen (for `info` and the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub name: String,
    /// The engine's own BuildKit (buildx's `docker` driver): nothing to create or boot.
    pub engine: bool,
    pub why: String,
}

/// An engine that builds some platforms of `$PLATFORMS`, and its builder there. Each platform is
/// a build of its own, on its node, with its own registry cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The docker context of the engine: `None` is this engine (the current context), `Some`
    /// another one, reached as `docker --context <name> …` (buildx refuses `--builder <context>`
    /// from another context).
    pub context: Option<String>,
    pub platforms: Platforms,
    pub builder: Builder,
}

/// The context of the arm64 VM's engine, behind the ssh tunnel (the pipeline's `setup` step
/// creates it).
pub const ARM_CONTEXT: &str = "arm_node";

/// The containerd image store, as `docker info` names its snapshotter driver.
const CONTAINERD_STORE: &str = "io.containerd.snapshotter.v1";

impl Node {
    /// `--context <name>` for a docker command on this node's engine (none for this engine).
    pub fn context_flag(&self) -> Vec<String> {
        context_flag(self.context.as_deref())
    }

    /// Its name in the timeline: its docker context, or `this engine`.
    pub fn label(&self) -> &str {
        self.context.as_deref().unwrap_or("this engine")
    }

    /// Where the node is, for messages.
    pub fn place(&self) -> String {
        match &self.context {
            Some(context) => format!("the engine of docker context {context}"),
            None => "this engine".to_string(),
        }
    }
}

/// `--context <name>` for a docker command on the engine of `context` (`None`: the current one).
pub fn context_flag(context: Option<&str>) -> Vec<String> {
    context.map_or_else(Vec::new, |context| vec!["--context".to_string(), context.to_string()])
}

/// Whether some platform of `$PLATFORMS` builds on this engine (with MULTI_CONTEXT=1 and only
/// linux/arm64, none does).
pub fn builds_here(s: &crate::settings::Settings) -> bool {
    s.platforms.iter().any(|p| !(s.multi_context && p.is_arm64()))
}

/// Where each platform of `$PLATFORMS` builds. With MULTI_CONTEXT, linux/arm64 on the arm64
/// VM's engine (`arm_node`) and every other platform on this engine; otherwise (ENV=local too)
/// all on this engine.
pub fn nodes(ctx: &Ctx) -> Result<Vec<Node>> {
    let s = &ctx.settings;
    let (arm, here): (Vec<Platform>, Vec<Platform>) =
        s.platforms.iter().cloned().partition(|p| s.multi_context && p.is_arm64());
    let mut nodes = Vec::new();
    for (context, platforms) in [(None, here), (Some(ARM_CONTEXT.to_string()), arm)] {
        if platforms.is_empty() {
            continue;
        }
        let builder = choose_builder(ctx, context.as_deref())?;
        nodes.push(Node { context, platforms: platforms.into(), builder });
    }
    Ok(nodes)
}

/// A node's builder, from its engine (a read-only query, made in a dry run too): with the
/// containerd image store, the engine's own BuildKit builds, pushes and exports registry caches,
/// so no BuildKit container is needed. With the classic store, whose own builder exports no
/// registry cache, a BuildKit container booted from the vendored image: `$BUILDER` on this
/// engine, `$BUILDER-<context>` on another.
pub fn choose_builder(ctx: &Ctx, context: Option<&str>) -> Result<Builder> {
    let s = &ctx.settings;
    let name = context.map_or_else(|| s.builder.clone(), |c| format!("{}-{c}", s.builder));
    let image = s.vendored(&ctx.catalog.buildkit);
    let container = |why: &str| Builder {
        name: name.clone(),
        engine: false,
        why: format!("{why}: a docker-container builder, BuildKit from {image}"),
    };
    let (sh, on, format) = (sh(), &context_flag(context), "{{json .DriverStatus}}");
    let store = cmd!(sh, "docker {on...} info --format {format}");
    let answer = match ctx.runner.query(store, None) {
        Ok(answer) => answer,
        // A dry run still shows a plan where an engine does not answer.
        Err(err) if ctx.runner.is_dry_run() => {
            return Ok(container(&format!(
                "the engine did not answer ({err:#}), so this plan assumes the classic image store"
            )));
        }
        Err(err) => {
            let hint = match context {
                Some(ARM_CONTEXT) => "is the tunnel to the arm64 VM up? (`cargo xtask ssh-tunnel --wait`)",
                Some(_) => "is that context's engine running?",
                None => "is it running?",
            };
            return Err(
                err.context(format!("cannot ask the Docker engine which image store it uses: {hint}"))
            );
        }
    };
    if !answer.contains(CONTAINERD_STORE) {
        return Ok(container(
            "the engine uses the classic image store, whose own builder exports no registry cache",
        ));
    }
    // The engine's builder is named after its docker context.
    let name = match context {
        Some(context) => context.to_string(),
        None => ctx.runner.query(cmd!(sh, "docker context show"), None)?.trim().to_string(),
    };
    Ok(Builder {
        name,
        engine: true,
        why: "the engine uses the containerd image store: its own BuildKit builds, pushes and exports \
              registry caches, with no BuildKit container"
            .to_string(),
    })
}
