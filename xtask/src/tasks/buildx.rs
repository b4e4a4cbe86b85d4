//! buildx-setup, buildx-ls, prune: the buildx builder itself.

use anyhow::{Context, Result, bail};

use super::Ctx;
use xshell::cmd;

use crate::runner::{Runner, sh};

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
    pub platforms: Vec<String>,
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

    /// Where the node is, for messages.
    pub fn place(&self) -> String {
        match &self.context {
            Some(context) => format!("the engine of docker context {context}"),
            None => "this engine".to_string(),
        }
    }
}

/// `--context <name>` for a docker command on the engine of `context` (`None`: the current one).
fn context_flag(context: Option<&str>) -> Vec<String> {
    context.map_or_else(Vec::new, |context| vec!["--context".to_string(), context.to_string()])
}

/// Whether some platform of `$PLATFORMS` builds on this engine (with MULTI_CONTEXT=1 and only
/// linux/arm64, none does).
pub fn builds_here(s: &crate::settings::Settings) -> bool {
    s.platforms.split(',').any(|p| !(s.multi_context && p.trim().starts_with("linux/arm64")))
}

/// Where each platform of `$PLATFORMS` builds. With MULTI_CONTEXT, linux/arm64 on the arm64
/// VM's engine (`arm_node`) and every other platform on this engine; otherwise (ENV=local too)
/// all on this engine.
pub fn nodes(ctx: &Ctx) -> Result<Vec<Node>> {
    let s = &ctx.settings;
    let platforms: Vec<String> = s.platforms.split(',').map(|p| p.trim().to_string()).collect();
    let (arm, here): (Vec<String>, Vec<String>) =
        platforms.into_iter().partition(|p| s.multi_context && p.starts_with("linux/arm64"));
    let mut nodes = Vec::new();
    for (context, platforms) in [(None, here), (Some(ARM_CONTEXT.to_string()), arm)] {
        if platforms.is_empty() {
            continue;
        }
        let builder = choose_builder(ctx, context.as_deref())?;
        nodes.push(Node { context, platforms, builder });
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

/// buildx-setup: on each node, the engine's own builder, or `$BUILDER` (see `choose_builder`)
/// created unless `docker buildx inspect` finds it. With ENV=local the builder must also be able
/// to build every platform of `$PLATFORMS` here. Returns the nodes.
pub fn buildx_setup(ctx: &Ctx) -> Result<Vec<Node>> {
    let s = &ctx.settings;
    let runner = &ctx.runner;
    let nodes = nodes(ctx)?;
    for node in &nodes {
        let builder = &node.builder;
        runner.say(&format!(
            "{} on {}: builder {}, {}",
            node.platforms.join(","),
            node.place(),
            builder.name,
            builder.why
        ));
        if !builder.engine {
            let (sh, on, name) = (sh(), &node.context_flag(), &builder.name);
            runner.run_ignoring_failure(cmd!(sh, "docker {on...} buildx ls"))?;
            let inspect = cmd!(sh, "docker {on...} buildx inspect --builder {name}");
            runner.branch(
                inspect,
                |r| {
                    r.say(&format!("Using existing builder {}", builder.name));
                    Ok(())
                },
                |r| {
                    if s.local {
                        create_local_builder(ctx, r, &builder.name)
                    } else {
                        create_builder(ctx, r, node)
                    }
                },
            )?;
        }
        if s.local {
            check_local_platforms(ctx, &node.builder.name)?;
        }
    }
    Ok(nodes)
}

/// A builder whose BuildKit runs in a container on the node's engine, booted from the vendored
/// image.
fn create_builder(ctx: &Ctx, runner: &Runner, node: &Node) -> Result<()> {
    let (sh, on, name) = (sh(), &node.context_flag(), &node.builder.name);
    let image = format!("image={}", ctx.settings.vendored(&ctx.catalog.buildkit));
    runner.run(cmd!(
        sh,
        "docker {on...} buildx create --name {name} --driver docker-container --driver-opt {image}"
    ))
}

/// ENV=local on a classic engine: a BuildKit container on the host's network, so that
/// `localhost:<port>` inside it is the host's registry, and told that registry speaks plain HTTP.
fn create_local_builder(ctx: &Ctx, runner: &Runner, name: &str) -> Result<()> {
    let s = &ctx.settings;
    let registry = s.docker_repo.split('/').next().unwrap_or_default();
    // Written in a dry run too: the plan names it, and pasting the plan must work.
    let config_path = crate::work_dir().join("xtask/buildkitd.toml");
    let path = ctx.root.join(&config_path);
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    let config = format!("[registry.\"{registry}\"]\n  http = true\n  insecure = true\n");
    std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    let sh = sh();
    let image = format!("image={}", s.vendored(&ctx.catalog.buildkit));
    runner.run(cmd!(
        sh,
        "docker buildx create --name {name} --driver docker-container --driver-opt network=host
            --driver-opt {image} --buildkitd-config {config_path} --bootstrap"
    ))
}

/// The builder runs where we are: an arm64 build on an amd64 machine needs QEMU emulation,
/// which Docker Desktop has and a Linux Docker Engine gets once from `tonistiigi/binfmt`.
fn check_local_platforms(ctx: &Ctx, builder: &str) -> Result<()> {
    let s = &ctx.settings;
    let sh = sh();
    let Some(answer) = ctx.runner.capture(cmd!(sh, "docker buildx inspect --bootstrap {builder}"))? else {
        ctx.runner.say(&format!("then check that builder {builder} lists every platform of {}", s.platforms));
        return Ok(());
    };
    let supported = builder_platforms(&answer);
    let missing: Vec<&str> =
        s.platforms.split(',').map(str::trim).filter(|p| !supported.iter().any(|have| have == p)).collect();
    if !missing.is_empty() {
        bail!(
            "builder {builder} cannot build {} on this machine (it has {}). Install QEMU emulation once: \
             on Debian or Ubuntu `apt-get install qemu-user-static binfmt-support` (Docker Desktop has \
             it already; elsewhere `docker run --privileged --rm tonistiigi/binfmt --install all`), \
             then restart the engine, or `docker buildx rm {builder}` for a builder container, so \
             that the builder sees the new platforms",
            missing.join(", "),
            supported.join(", "),
        );
    }
    Ok(())
}

/// The platforms of `docker buildx inspect` output (`Platforms: linux/amd64*, linux/arm64`).
fn builder_platforms(inspect: &str) -> Vec<String> {
    inspect
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Platforms:"))
        .flat_map(|list| list.split(','))
        .map(|p| p.trim().trim_end_matches('*').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// buildx-ls
pub fn buildx_ls(ctx: &Ctx) -> Result<()> {
    let sh = sh();
    ctx.runner.run(cmd!(sh, "docker buildx ls"))
}

/// prune: empty the local cache of the builder of every node.
pub fn prune(ctx: &Ctx) -> Result<()> {
    for node in nodes(ctx)? {
        let (sh, on, name) = (sh(), &node.context_flag(), &node.builder.name);
        ctx.runner.run(cmd!(sh, "docker {on...} buildx prune --builder {name} --all --force"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_platforms_of_every_node() {
        let inspect = "Name: b\nNodes:\nName: b0\nPlatforms: linux/amd64*, linux/amd64/v2, linux/386\n\
                       Name: b1\nPlatforms: linux/arm64*\n";
        assert_eq!(
            super::builder_platforms(inspect),
            ["linux/amd64", "linux/amd64/v2", "linux/386", "linux/arm64"]
        );
    }
}
