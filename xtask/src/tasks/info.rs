//! info: the settings in effect and the tools this machine has, as a sanity check. It shows every
//! setting even when some break a rule, marking those, and then fails.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::ctx::Ctx;
use crate::platform_build::node;
use crate::runner::is_installed;

/// info
pub fn info(ctx: &Ctx) -> Result<()> {
    let s = &ctx.settings;
    let flag = |on: bool| if on { "1" } else { "0" }.to_string();
    let mut rows: Vec<(String, String)> = [
        ("GCP_PROJECT", s.gcp_project.clone()),
        ("DOCKER_REPO", s.docker_repo.clone()),
        ("PLATFORMS", s.platforms.to_string()),
        ("BUILDER", s.builder.clone()),
        ("MULTI_CONTEXT", flag(s.multi_context)),
        ("TAG_MODIFIER", s.tag_modifier.clone()),
        ("REFRESH", s.refresh.clone().unwrap_or_else(|| "(unset: each image keeps its last)".into())),
        ("AUTO_START_STOP", flag(s.auto_start_stop)),
        ("ARM64_VMS", format!("{} ({})", s.arm64_vms.join(","), s.zone)),
        ("AMD64_VMS", if s.amd64_vms.is_empty() { "(none)".to_string() } else { s.amd64_vms.join(",") }),
        ("BUILDS_PER_NODE", s.builds_per_node.map_or("(no limit)".to_string(), |n| n.to_string())),
        ("ARM64_USER", format!("{} (key {})", s.arm64_user, s.arm64_ssh_key.display())),
    ]
    .map(|(name, value)| (name.to_string(), value))
    .to_vec();
    rows.extend(s.versions.iter().map(|(name, value)| (name.clone(), value.clone())));
    let width = rows.iter().map(|(name, _)| name.len()).max().unwrap_or(0) + 2;
    let mark =
        |name: &str| s.problem_of(name).map_or(String::new(), |p| format!("  <- invalid: {}", p.message));
    println!("Environment is {}{}", s.env, mark("ENV"));
    for (name, value) in &rows {
        println!("{:<width$}{value}{}", format!("{name}:"), mark(name));
    }
    let found = |yes: bool| if yes { "installed" } else { "not found" };
    println!("{:<width$}{}", "docker:", found(is_installed("docker")));
    println!("{:<width$}{}", "docker buildx:", found(buildx_plugin().is_some()));
    println!("{:<width$}{}", "gcloud:", found(is_installed("gcloud")));
    if !s.problems.is_empty() {
        bail!("{} setting(s) break a rule, marked above", s.problems.len());
    }
    // Every node, each asked for its builder; a VM that is down cannot say yet.
    for engine in node::engines(s) {
        let (platforms, place, vm) = (engine.platforms.clone(), engine.place(), engine.vm.clone());
        let on = match &vm {
            Some(vm) => format!("{place}, VM {}", vm.name),
            None => place,
        };
        match (engine.node(ctx), vm) {
            (Ok(node), _) => {
                let builder = &node.builder;
                println!("Builds of {platforms}: on {on}, builder {} ({})", builder.name, builder.why);
            }
            (Err(_), Some(vm)) => println!(
                "Builds of {platforms}: on {on}, builder known once the VM is up (`cargo xtask start-vm --vm {0} --wait`, then `ssh-tunnel --vm {0} --wait`)",
                vm.name
            ),
            (Err(err), None) => println!("Builds of {platforms}: on {on}, builder not known: {err:#}"),
        }
    }
    Ok(())
}
/// The buildx CLI plugin, looked up where docker looks for it, without running docker.
fn buildx_plugin() -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(config) = crate::registry::auth::docker_config_dir() {
        dirs.push(config.join("cli-plugins"));
    }
    for system in ["/usr/local/lib", "/usr/local/libexec", "/usr/lib", "/usr/libexec"] {
        dirs.push(PathBuf::from(system).join("docker/cli-plugins"));
    }
    let plugin = dirs.into_iter().map(|dir| dir.join("docker-buildx")).find(|p| p.is_file());
    // A `docker-buildx` on PATH is what a test's fake docker provides, and some distributions too.
    plugin.or_else(|| which::which("docker-buildx").ok())
}
