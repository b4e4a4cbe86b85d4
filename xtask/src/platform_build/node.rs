//! The nodes of a build: which engine builds which platform of `$PLATFORMS`, and the builder
//! each engine needs (its own BuildKit, or a BuildKit container from the vendored image).

use anyhow::Result;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::platform::{Platform, Platforms};
use crate::runner::sh;
use crate::settings::Settings;
use crate::vm::{self, ARM_CONTEXT, Vm};

/// The builder of a node, and why it was chosen (for `info` and the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub name: String,
    /// The engine's own BuildKit (buildx's `docker` driver): nothing to create or boot.
    pub engine: bool,
    pub why: String,
}

/// An engine that builds some platforms of `$PLATFORMS`: this engine, or a VM's. Each platform
/// is a build of its own, on its node, with its own registry cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// The docker context of the engine: `None` is this engine (the current context), `Some`
    /// another one, reached as `docker --context <name> …` (buildx refuses `--builder <context>`
    /// from another context).
    pub context: Option<String>,
    pub platforms: Platforms,
    /// The VM the engine runs on, which a run starts and stops.
    pub vm: Option<Vm>,
}

/// An engine and its builder there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub engine: Engine,
    pub builder: Builder,
}

/// The containerd image store, as `docker info` names its snapshotter driver.
const CONTAINERD_STORE: &str = "io.containerd.snapshotter.v1";

impl Engine {
    /// `--context <name>` for a docker command on this engine (none for this engine).
    pub fn context_flag(&self) -> Vec<String> {
        context_flag(self.context.as_deref())
    }

    /// Its name in the table and the timeline, and the key its images hash on: its docker
    /// context, or `this engine`.
    pub fn label(&self) -> &str {
        self.context.as_deref().unwrap_or("this engine")
    }

    /// Where the engine is, for messages.
    pub fn place(&self) -> String {
        match &self.context {
            Some(context) => format!("the engine of docker context {context}"),
            None => "this engine".to_string(),
        }
    }

    /// Its builder, from the engine (see `choose_builder`).
    pub fn node(self, ctx: &Ctx) -> Result<Node> {
        let store = ask_store(ctx, self.context.as_deref())?;
        Ok(self.node_with(ctx, &store))
    }

    /// Its builder, for an engine whose store is known already.
    pub fn node_with(self, ctx: &Ctx, store: &Store) -> Node {
        let builder = store.builder(ctx, self.context.as_deref());
        Node { engine: self, builder }
    }
}

impl Node {
    pub fn context_flag(&self) -> Vec<String> {
        self.engine.context_flag()
    }

    pub fn place(&self) -> String {
        self.engine.place()
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

/// Every engine of a build and the platforms of `$PLATFORMS` it builds. With MULTI_CONTEXT,
/// linux/arm64 on each arm64 VM of the pool, linux/amd64 on this engine and each amd64 VM, and
/// any other platform on this engine; otherwise (ENV=local too) all on this engine.
pub fn engines(s: &Settings) -> Vec<Engine> {
    let (arm, here): (Vec<Platform>, Vec<Platform>) =
        s.platforms.iter().cloned().partition(|p| s.multi_context && p.is_arm64());
    let mut engines = Vec::new();
    if !here.is_empty() {
        engines.push(Engine { context: None, platforms: here.into(), vm: None });
    }
    if !s.multi_context {
        return engines;
    }
    for vm in vm::pool(s) {
        let builds = if vm.platform.is_arm64() {
            !arm.is_empty()
        } else {
            s.platforms.iter().any(|p| p == &vm.platform)
        };
        if builds {
            let platforms = vec![vm.platform.clone()].into();
            engines.push(Engine { context: Some(vm.context.clone()), platforms, vm: Some(vm) });
        }
    }
    engines
}

/// Every node of a build, each engine asked for its builder: they must all be up.
pub fn nodes(ctx: &Ctx) -> Result<Vec<Node>> {
    engines(&ctx.settings).into_iter().map(|engine| engine.node(ctx)).collect()
}

/// What an engine's image store means for its builds: asked once of the engine, and the same
/// for every image built there (each image may still have a builder of its own, see
/// `Store::builder`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// The containerd image store: the engine's own BuildKit builds, pushes and exports registry
    /// caches. Its builder is named after the engine's docker context.
    Containerd { context: String },
    /// The classic image store, whose own builder exports no registry cache (or, in a dry run,
    /// an engine that did not answer), and why it is taken to be.
    Classic { why: String },
}

impl Store {
    /// The builder of an engine with this store (`context`: the engine's, `None` for this one):
    /// the engine's own, or a BuildKit container booted from the vendored image, `$BUILDER` on
    /// this engine and `$BUILDER-<context>` on another.
    pub fn builder(&self, ctx: &Ctx, context: Option<&str>) -> Builder {
        match self {
            Store::Containerd { context } => Builder {
                name: context.clone(),
                engine: true,
                why: "the engine uses the containerd image store: its own BuildKit builds, pushes and \
                      exports registry caches, with no BuildKit container"
                    .to_string(),
            },
            Store::Classic { why } => {
                let s = &ctx.settings;
                Builder {
                    name: context.map_or_else(|| s.builder.clone(), |c| format!("{}-{c}", s.builder)),
                    engine: false,
                    why: format!(
                        "{why}: a docker-container builder, BuildKit from {}",
                        s.vendored(&ctx.catalog.buildkit)
                    ),
                }
            }
        }
    }
}

/// A node's builder, from its engine (see `ask_store` and `Store::builder`).
pub fn choose_builder(ctx: &Ctx, context: Option<&str>) -> Result<Builder> {
    Ok(ask_store(ctx, context)?.builder(ctx, context))
}

/// Which image store the engine of `context` uses (a read-only query, made in a dry run too):
/// with the containerd image store, the engine's own BuildKit builds, pushes and exports registry
/// caches, so no BuildKit container is needed; the classic store's own builder exports no
/// registry cache.
pub fn ask_store(ctx: &Ctx, context: Option<&str>) -> Result<Store> {
    let (sh, on, format) = (sh(), &context_flag(context), "{{json .DriverStatus}}");
    let store = cmd!(sh, "docker {on...} info --format {format}");
    let answer = match ctx.runner.query(store, None) {
        Ok(answer) => answer,
        // A dry run still shows a plan where an engine does not answer.
        Err(err) if ctx.runner.is_dry_run() => {
            return Ok(Store::Classic {
                why: format!(
                    "the engine did not answer ({err:#}), so this plan assumes the classic image store"
                ),
            });
        }
        Err(err) => {
            let hint = match context {
                Some(ARM_CONTEXT) => "is the tunnel to the arm64 VM up? (`cargo xtask ssh-tunnel --wait`)",
                Some(context) if context.starts_with("arm_node-") || context.starts_with("amd_node-") => {
                    "is the tunnel to its VM up? (`cargo xtask ssh-tunnel --wait`)"
                }
                Some(_) => "is that context's engine running?",
                None => "is it running?",
            };
            return Err(
                err.context(format!("cannot ask the Docker engine which image store it uses: {hint}"))
            );
        }
    };
    if !answer.contains(CONTAINERD_STORE) {
        return Ok(Store::Classic {
            why: "the engine uses the classic image store, whose own builder exports no registry cache"
                .to_string(),
        });
    }
    // The engine's builder is named after its docker context.
    let context = match context {
        Some(context) => context.to_string(),
        None => ctx.runner.query(cmd!(sh, "docker context show"), None)?.trim().to_string(),
    };
    Ok(Store::Containerd { context })
}
