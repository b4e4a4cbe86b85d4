//! The settings: the original Makefile's variables, each read from the environment variable of
//! the same name with the same default, and from a flag that wins over the environment; and
//! the variables the environment sets for some tasks (`BUILD_ID`, `BUILDER_OUTPUT`, `DRYRUN`,
//! the catalog's versions). The environment is read here, once, into one `Settings` value.
//!
//! Around it: `declared` (each setting's flag, variable and default, for clap), `choices` (the
//! settings that take one of a few words), `problems` (the rules values must keep), `references`
//! (the image names the settings make), `builder_id` (the default read from the machine) and
//! `argv` (what is read from the command line before clap).

mod argv;
mod builder_id;
mod choices;
mod declared;
mod problems;
mod references;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};

pub use argv::{catalog_source, catalog_source_of_this_run, refuse_step_variables_given_as_env};
pub use choices::{BuildOrder, ProvenanceMode, Release};
pub use declared::{DEFAULT_ENV, LOCAL_DOCKER_REPO, LOCAL_ENV, Setting, SettingsArgs, Uses};
pub use problems::Problem;
pub use references::build_arg_flags;

use crate::catalog::Catalog;
use crate::platform::Platforms;

/// Every setting resolved: the flags and environment, the derived paths and the image versions.
#[derive(Debug, Clone)]
pub struct Settings {
    pub env: String,
    /// Whether `ENV` was given (flag or environment) rather than defaulted.
    pub env_given: bool,
    /// `ENV=local`: everything on this machine, with a registry on localhost.
    pub local: bool,
    pub gcp_project: String,
    pub zone: String,
    pub docker_repo: String,
    /// Empty when `PLATFORMS` breaks a rule (see `problems`).
    pub platforms: Platforms,
    pub builder: String,
    pub arm64_vm: String,
    /// The arm64 VMs (`ARM64_VMS`, else `ARM64_VM` alone): never empty.
    pub arm64_vms: Vec<String>,
    /// amd64 VMs beside this engine.
    pub amd64_vms: Vec<String>,
    /// The VM named on the command line (`--vm`), which the VM tasks act on alone.
    pub vm_named: Option<String>,
    /// At most this many builds at once on a node (`None`: no limit).
    pub builds_per_node: Option<usize>,
    pub build_order: BuildOrder,
    pub release: Release,
    pub arm64_user: String,
    /// The tunnel's private key, `$HOME/.ssh/google_compute_engine` unless given.
    pub arm64_ssh_key: PathBuf,
    pub auto_start_stop: bool,
    pub multi_context: bool,
    pub tag_modifier: String,
    /// `REFRESH`, `now` turned into the time: a value for the `REFRESH` build argument that
    /// differs from the one an image was built with rebuilds its package steps.
    pub refresh: Option<String>,
    /// The provenance attestation of each platform's build.
    pub provenance: ProvenanceMode,
    /// The builder's id the provenance records: the same for every build of a run.
    pub builder_id: String,
    pub sbom: bool,
    /// How published images are signed, if they are.
    pub sign_key: Option<String>,
    /// `--dry-run`, or `DRYRUN` non-empty: the runner prints each command instead of running
    /// it. Read it there (`Runner::is_dry_run`), where every command passes.
    pub dry_run: bool,
    /// Registries that take a gcloud access token besides Google's own.
    pub gcloud_auth_registries: Vec<String>,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Cloud Build's `BUILD_ID`: the lease on the arm64 VM is named after it.
    pub build_id: Option<String>,
    /// Cloud Build sets `BUILDER_OUTPUT`; builds there get a registry token that dies after an hour.
    pub in_cloud_build: bool,
    /// The image catalog's path, as given (`CATALOG`, `--catalog`).
    pub catalog: PathBuf,
    /// The bake file's group (`BAKE_GROUP`), and the list and pipeline given instead of the
    /// catalog's (`THIRDPARTY`, `PIPELINE`), as given: the catalog was read with them.
    pub bake_group: String,
    pub thirdparty: Option<PathBuf>,
    pub pipeline: Option<PathBuf>,
    /// The catalog's version variables (`ALPINE_VERSION`, …), each overridable from the environment.
    pub versions: BTreeMap<String, String>,
    /// The run's own values for the templates and the default labels (the commit, the day);
    /// read when the run starts (`main`), default in tests.
    pub run: crate::run_values::RunValues,
    /// The settings that break a rule. Every task but `info` refuses to run with any (`check`);
    /// `info` shows them beside the values.
    pub problems: Vec<Problem>,
    /// Settings that look right and may not be: said, never refused.
    pub warnings: Vec<String>,
}

impl Settings {
    pub fn resolve(args: SettingsArgs, catalog: &Catalog) -> Settings {
        Self::resolve_with(args, catalog, |name| std::env::var(name).ok())
    }

    /// `lookup` reads the environment; tests hand in their own. Settings that break a rule are
    /// kept as given and listed in `problems`, in the order of `SettingsArgs`.
    pub fn resolve_with(
        args: SettingsArgs,
        catalog: &Catalog,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Settings {
        let mut found = Vec::new();
        let mut problem = |setting: &str, message: Option<String>| {
            found.extend(message.map(|message| Problem { setting: setting.to_string(), message }));
        };
        problem("ENV", problems::env(&args.env, lookup("ENV").is_some_and(|v| v.is_empty())));
        problem("GCP_PROJECT", problems::gcp_project(&args.gcp_project));
        let platforms = Platforms::parse(&args.platforms).unwrap_or_else(|message| {
            problem("PLATFORMS", Some(message.to_string()));
            Platforms::default()
        });
        problem("TAG_MODIFIER", problems::tag_modifier(&args.tag_modifier));
        let refresh = args
            .refresh
            .filter(|r| !r.is_empty())
            .map(|r| if r == "now" { crate::lock::utc_now() } else { r });
        if let Some(value) = &refresh {
            problem("REFRESH", problems::refresh(value));
        }
        let local = args.env == LOCAL_ENV;
        let repo_given = args.docker_repo.as_ref().is_some_and(|repo| !repo.is_empty());
        let docker_repo = match args.docker_repo {
            Some(repo) if !repo.is_empty() => {
                let repo = repo.trim_end_matches('/').to_string();
                problem("DOCKER_REPO", problems::docker_repo(&repo));
                repo
            }
            _ if local => LOCAL_DOCKER_REPO.to_string(),
            _ => format!("{}/{}/{}", args.registry, args.gcp_project, args.env),
        };
        let versions: BTreeMap<String, String> = catalog
            .versions
            .iter()
            .map(|(name, default)| {
                let value = lookup(name).filter(|v| !v.is_empty()).unwrap_or_else(|| default.clone());
                (name.clone(), value)
            })
            .collect();
        for (name, value) in &versions {
            problem(name, problems::version(name, value));
        }
        let dry_run = args.dry_run || lookup("DRYRUN").is_some_and(|v| !v.is_empty());
        let builds_per_node =
            problems::builds_per_node(args.builds_per_node.as_deref()).unwrap_or_else(|message| {
                problem("BUILDS_PER_NODE", Some(message.to_string()));
                None
            });
        let arm64_vms = match nonempty(args.arm64_vms) {
            vms if vms.is_empty() => vec![args.arm64_vm.clone()],
            vms => vms,
        };
        let amd64_vms = nonempty(args.amd64_vms);
        for message in problems::vms(&arm64_vms, &amd64_vms) {
            problem("ARM64_VMS", Some(message));
        }
        let builder_id = args.builder_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| {
            builder_id::default_builder_id(
                lookup("BUILD_ID").filter(|id| !id.is_empty()),
                &args.gcp_project,
                &lookup,
            )
        });
        let mut settings = Settings {
            env_given: lookup("ENV").is_some() || args.env != DEFAULT_ENV,
            local,
            env: args.env,
            gcp_project: args.gcp_project,
            zone: args.zone,
            docker_repo,
            platforms,
            builder: args.builder,
            arm64_vm: args.arm64_vm,
            arm64_vms,
            amd64_vms,
            vm_named: args.vm_named,
            builds_per_node,
            build_order: args.build_order,
            release: args.release,
            arm64_user: args.arm64_user,
            arm64_ssh_key: args.arm64_ssh_key.filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| {
                let home = lookup("HOME").unwrap_or_default();
                PathBuf::from(home).join(".ssh/google_compute_engine")
            }),
            auto_start_stop: args.auto_start_stop,
            multi_context: args.multi_context,
            tag_modifier: args.tag_modifier,
            refresh,
            provenance: args.provenance,
            builder_id,
            sbom: args.sbom,
            sign_key: args.sign_key.filter(|k| !k.is_empty()),
            catalog: args.catalog,
            bake_group: args.bake_group,
            thirdparty: args.thirdparty.filter(|p| !p.as_os_str().is_empty()),
            pipeline: args.pipeline.filter(|p| !p.as_os_str().is_empty()),
            dry_run,
            gcloud_auth_registries: nonempty(args.gcloud_auth_registries),
            insecure_registries: nonempty(args.insecure_registries),
            build_id: lookup("BUILD_ID").filter(|id| !id.is_empty()),
            in_cloud_build: lookup("BUILDER_OUTPUT").is_some_and(|v| !v.is_empty()),
            versions,
            run: Default::default(),
            problems: found,
            warnings: Vec::new(),
        };
        if !repo_given
            && settings.problem_of("ENV").is_none()
            && let Some(warning) = problems::unusual_env(&settings.env, &settings.docker_repo)
        {
            settings.warnings.push(warning);
        }
        // What the rules above miss still cannot make a valid image reference.
        if settings.problems.is_empty()
            && let Some(message) = settings.invalid_reference(catalog)
        {
            settings.problems.push(Problem { setting: "DOCKER_REPO".into(), message });
        }
        settings
    }

    /// Refuse settings that break a rule, naming each.
    pub fn check(&self) -> Result<()> {
        match self.problems.as_slice() {
            [] => Ok(()),
            [one] => bail!("{one}"),
            many => bail!(
                "{} settings break a rule:\n  {}",
                many.len(),
                many.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("\n  ")
            ),
        }
    }

    /// The problem of `setting`, if it has one (for `info`).
    pub fn problem_of(&self, setting: &str) -> Option<&Problem> {
        self.problems.iter().find(|p| p.setting == setting)
    }
}

/// A list setting without its empty entries (`INSECURE_REGISTRIES=` is none).
fn nonempty(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(|entry| entry.trim().to_string()).filter(|entry| !entry.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::declared::command_line::merged;
    use super::*;
    use crate::catalog::CATALOG_PATH;

    #[test]
    fn a_pool_defaults_to_arm64_vm_and_its_rules_are_named() {
        let catalog = Catalog::load_from(&crate::project_root(), std::path::Path::new(CATALOG_PATH)).unwrap();
        let resolve = |args: &[&str]| Settings::resolve_with(merged(args), &catalog, |_| None);
        let s = resolve(&["x", "task", "--vm", "one"]);
        assert_eq!(
            (s.arm64_vms.as_slice(), s.amd64_vms.len(), s.builds_per_node),
            (&["one".to_string()][..], 0, None)
        );
        assert_eq!(s.vm_named.as_deref(), Some("one"), "--vm on the command line names the VM tasks' one");
        assert!(resolve(&["x", "task"]).vm_named.is_none(), "ARM64_VM alone names no VM to act on alone");
        let s = resolve(&[
            "x",
            "task",
            "--arm64-vms",
            "a, b",
            "--builds-per-node",
            "2",
            "--build-order",
            "catalog",
        ]);
        assert_eq!(
            (s.arm64_vms, s.builds_per_node, s.build_order),
            (vec!["a".to_string(), "b".into()], Some(2), BuildOrder::Catalog)
        );
        let problems =
            |args: &[&str]| resolve(args).problems.into_iter().map(|p| p.message).collect::<Vec<_>>();
        assert_eq!(
            problems(&["x", "task", "--builds-per-node", "0"]),
            ["BUILDS_PER_NODE `0`: give a number of builds, 1 or more (unset: no limit)"]
        );
        assert_eq!(
            problems(&["x", "task", "--arm64-vms", "a,b", "--amd64-vms", "b"]),
            ["the VM b is named twice in ARM64_VMS and AMD64_VMS: each VM is one node"]
        );
        assert_eq!(problems(&["x", "task", "--arm64-vms", "Big_VM"]).len(), 1);
    }
}
