//! A build's builders made ready: on each node the engine's own builder, or a BuildKit
//! container created unless it exists; with ENV=local, checked to build every platform here.

use anyhow::{Context, Result, bail};
use xshell::cmd;

use super::node::{Node, nodes};
use crate::ctx::Ctx;
use crate::runner::{Runner, sh};

/// On each node, the engine's own builder, or `$BUILDER` (see `choose_builder`) created unless
/// `docker buildx inspect` finds it. With ENV=local the builder must also be able to build every
/// platform of `$PLATFORMS` here. Returns the nodes.
pub fn set_up(ctx: &Ctx) -> Result<Vec<Node>> {
    let nodes = nodes(ctx)?;
    for node in &nodes {
        set_up_node(ctx, node)?;
    }
    Ok(nodes)
}

/// One node's builder made ready, as `set_up` does for each.
pub fn set_up_node(ctx: &Ctx, node: &Node) -> Result<()> {
    let s = &ctx.settings;
    let runner = &ctx.runner;
    let builder = &node.builder;
    runner.say(&format!(
        "{} on {}: builder {}, {}",
        node.engine.platforms,
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
        check_local_platforms(ctx, node)?;
    }
    Ok(())
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
fn check_local_platforms(ctx: &Ctx, node: &Node) -> Result<()> {
    let (builder, platforms) = (&node.builder.name, &node.engine.platforms);
    let sh = sh();
    let Some(answer) = ctx.runner.capture(cmd!(sh, "docker buildx inspect --bootstrap {builder}"))? else {
        ctx.runner.say(&format!("then check that builder {builder} lists every platform of {platforms}"));
        return Ok(());
    };
    let supported = builder_platforms(&answer);
    let missing: Vec<String> =
        platforms.iter().map(|p| p.to_string()).filter(|p| !supported.contains(p)).collect();
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
