//! buildx-setup, buildx-ls, prune: the buildx builder itself.

use anyhow::{Context, Result, bail};

use super::Ctx;
use crate::runner::{Cmd, Runner};

/// The builder that builds run on, and why it was chosen (for `info` and the plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Builder {
    pub name: String,
    /// The engine's own BuildKit (buildx's `docker` driver): nothing to create or boot.
    pub engine: bool,
    pub why: String,
}

/// The containerd image store, as `docker info` names its snapshotter driver.
const CONTAINERD_STORE: &str = "io.containerd.snapshotter.v1";

/// Which builder the settings call for. ENV=local asks the engine (a read-only query, made in
/// a dry run too): with the containerd image store, the engine's own BuildKit builds several
/// platforms, pushes and exports registry caches, so no BuildKit container is needed. Without
/// it (the classic store), and everywhere else, builds run on `$BUILDER`, a BuildKit container
/// booted from the vendored image.
pub fn choose_builder(ctx: &Ctx) -> Result<Builder> {
    let s = &ctx.settings;
    let container = |why: String| Builder { name: s.builder.clone(), engine: false, why };
    let image = s.vendored(&ctx.catalog.buildkit);
    if !s.local {
        let nodes = if s.multi_context {
            "two nodes, this engine (`default`, amd64) and the arm64 VM (`arm_node`)"
        } else {
            "one node on this engine"
        };
        return Ok(container(format!("a docker-container builder with {nodes}, BuildKit from {image}")));
    }
    let store = Cmd::docker().args(["info", "--format", "{{json .DriverStatus}}"]);
    let answer = match ctx.runner.query(&store, None) {
        Ok(answer) => answer,
        // A dry run still shows a plan on a machine whose engine does not answer.
        Err(err) if ctx.runner.is_dry_run() => {
            return Ok(container(format!(
                "the engine did not answer ({err:#}), so this plan assumes the classic image store: \
                 a docker-container builder, BuildKit from {image}"
            )));
        }
        Err(err) => {
            return Err(err.context("cannot ask the Docker engine which image store it uses: is it running?"));
        }
    };
    if !answer.contains(CONTAINERD_STORE) {
        return Ok(container(format!(
            "the engine uses the classic image store, whose own builder builds one platform and exports no \
             registry cache: a docker-container builder, BuildKit from {image}"
        )));
    }
    // The engine's builder is named after the docker context it belongs to.
    let context = ctx.runner.query(&Cmd::docker().args(["context", "show"]), None)?;
    Ok(Builder {
        name: context.trim().to_string(),
        engine: true,
        why: "the engine uses the containerd image store: its own BuildKit builds every platform, pushes \
              and exports registry caches, with no BuildKit container"
            .to_string(),
    })
}

/// buildx-setup: create the builder `$BUILDER` unless `docker buildx inspect` finds it, or use
/// the engine's own (see `choose_builder`). With ENV=local the builder must also be able to
/// build every platform of `$PLATFORMS` here. Returns the builder's name.
pub fn buildx_setup(ctx: &Ctx) -> Result<String> {
    let s = &ctx.settings;
    let runner = &ctx.runner;
    let builder = choose_builder(ctx)?;
    if s.local {
        runner.say(&format!("builder {}: {}", builder.name, builder.why));
    }
    if !builder.engine {
        runner.run_ignoring_failure(&Cmd::docker().args(["buildx", "ls"]))?;
        let inspect = Cmd::docker().args(["buildx", "inspect", "--builder", &s.builder]);
        runner.branch(
            &inspect,
            |r| {
                r.say(&format!("Using existing builder {}", s.builder));
                Ok(())
            },
            |r| {
                if s.local { create_local_builder(ctx, r) } else { create_builder(ctx, r) }
            },
        )?;
    }
    if s.local {
        check_local_platforms(ctx, &builder.name)?;
    }
    Ok(builder.name)
}

/// A builder whose BuildKit runs in a container booted from the vendored image. With
/// MULTI_CONTEXT it has two nodes: this machine's docker (`default`) for amd64 and the arm64
/// VM's docker behind the ssh tunnel (`arm_node`).
fn create_builder(ctx: &Ctx, runner: &Runner) -> Result<()> {
    let s = &ctx.settings;
    let builder = s.builder.as_str();
    let image = format!("image={}", s.vendored(&ctx.catalog.buildkit));
    let container = ["--driver", "docker-container", "--driver-opt", &image];
    if !s.multi_context {
        return runner.run(&Cmd::docker().args(["buildx", "create", "--name", builder]).args(container));
    }
    runner.run(
        &Cmd::docker()
            .args(["buildx", "create", "--use", "--name", builder, "--platform", "linux/amd64"])
            .args(container)
            .arg("default"),
    )?;
    runner.run(
        &Cmd::docker()
            .args(["buildx", "create", "--append", "--name", builder, "--platform", "linux/arm64"])
            .args(["--driver-opt", &image, "arm_node"]),
    )?;
    runner.run(&Cmd::docker().args(["buildx", "ls"]))
}

/// Where the local builder's BuildKit configuration is written (relative to the repository).
pub const LOCAL_BUILDKITD_CONFIG: &str = "target/xtask/buildkitd.toml";

/// ENV=local on a classic engine: a BuildKit container on the host's network, so that
/// `localhost:<port>` inside it is the host's registry, and told that registry speaks plain HTTP.
fn create_local_builder(ctx: &Ctx, runner: &Runner) -> Result<()> {
    let s = &ctx.settings;
    let registry = s.docker_repo.split('/').next().unwrap_or_default();
    if !runner.is_dry_run() {
        let path = ctx.root.join(LOCAL_BUILDKITD_CONFIG);
        std::fs::create_dir_all(path.parent().expect("a folder"))?;
        let config = format!("[registry.\"{registry}\"]\n  http = true\n  insecure = true\n");
        std::fs::write(&path, config).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let image = format!("image={}", s.vendored(&ctx.catalog.buildkit));
    runner.run(&Cmd::docker().args(["buildx", "create", "--name", &s.builder]).args([
        "--driver",
        "docker-container",
        "--driver-opt",
        "network=host",
        "--driver-opt",
        &image,
        "--buildkitd-config",
        LOCAL_BUILDKITD_CONFIG,
        "--bootstrap",
    ]))
}

/// The builder runs where we are: an arm64 build on an amd64 machine needs QEMU emulation,
/// which Docker Desktop has and a Linux Docker Engine gets once from `tonistiigi/binfmt`.
fn check_local_platforms(ctx: &Ctx, builder: &str) -> Result<()> {
    let s = &ctx.settings;
    let inspect = Cmd::docker().args(["buildx", "inspect", "--bootstrap", builder]);
    let Some(answer) = ctx.runner.capture(&inspect)? else {
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
    ctx.runner.run(&Cmd::docker().args(["buildx", "ls"]))
}

/// prune: empty the local cache of the builder that builds run on.
pub fn prune(ctx: &Ctx) -> Result<()> {
    let builder = choose_builder(ctx)?.name;
    ctx.runner.run(&Cmd::docker().args(["buildx", "prune", "--builder", &builder, "--all", "--force"]))
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
