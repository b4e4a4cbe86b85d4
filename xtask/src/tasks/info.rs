//! info: the settings in effect and the tools this machine has, as a sanity check.

use std::path::PathBuf;

use anyhow::Result;

use super::{Ctx, buildx};
use crate::runner::is_installed;

/// info
pub fn info(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let flag = |on: bool| if on { "1" } else { "0" };
    println!("Environment is {}", s.env);
    println!("GCP_PROJECT:     {}", s.gcp_project);
    println!("DOCKER_REPO:     {}", s.docker_repo);
    println!("PLATFORMS:       {}", s.platforms);
    println!("BUILDER:         {}", s.builder);
    match buildx::nodes(ctx) {
        Ok(nodes) => {
            for node in nodes {
                let platforms = node.platforms.join(",");
                let (place, builder) = (node.place(), &node.builder);
                println!("Builds of {platforms}: on {place}, builder {} ({})", builder.name, builder.why);
            }
        }
        Err(err) => println!("Builds:          cannot tell where: {err:#}"),
    }
    println!("MULTI_CONTEXT:   {}", flag(s.multi_context));
    println!("TAG_MODIFIER:    {}", s.tag_modifier);
    println!("AUTO_START_STOP: {}", flag(s.auto_start_stop));
    println!("ARM64_VM:        {} ({})", s.arm64_vm, s.zone);
    for (name, value) in &s.versions {
        println!("{:<17}{value}", format!("{name}:"));
    }
    let found = |yes: bool| if yes { "installed" } else { "not found" };
    println!("docker:          {}", found(is_installed("docker")));
    println!("docker buildx:   {}", found(buildx_plugin().is_some()));
    println!("gcloud:          {}", found(is_installed("gcloud")));
    Ok(())
}

/// The buildx CLI plugin, looked up where docker looks for it, without running docker.
fn buildx_plugin() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(config) = std::env::var_os("DOCKER_CONFIG") {
        dirs.push(PathBuf::from(config).join("cli-plugins"));
    } else if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".docker/cli-plugins"));
    }
    for system in ["/usr/local/lib", "/usr/local/libexec", "/usr/lib", "/usr/libexec"] {
        dirs.push(PathBuf::from(system).join("docker/cli-plugins"));
    }
    let plugin = dirs.into_iter().map(|dir| dir.join("docker-buildx")).find(|p| p.is_file());
    // A `docker-buildx` on PATH is what a test's fake docker provides, and some distributions too.
    plugin.or_else(|| which::which("docker-buildx").ok())
}
