//! The settings as the command line and the environment declare them: each setting once, in the
//! `settings!` list (its flag, variable, default, help and the kinds of task that use it), from
//! which clap's `SettingsArgs` and the task help's `Setting`s and `Uses` come. Nothing here
//! judges a value: `problems` does, once they are read.

use std::path::PathBuf;

use clap::{ArgAction, Args, builder::BoolishValueParser};

use super::choices::{BuildOrder, ProvenanceMode, Release};
use crate::catalog::CATALOG_PATH;
use crate::catalog_source::DEFAULT_BAKE_GROUP;

/// Declares the settings, each once: its field, flag, environment variable, default and help
/// (clap's attributes), its `Setting`, and the kinds of task that use it (`Uses`). From that one
/// list come `SettingsArgs`, `Setting`, `Setting::ALL`, `Setting::id`, `Uses::settings` and
/// `SettingsArgs::merge`.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        #[arg($($arg:tt)*)]
        $variant:ident $field:ident: $ty:ty, used by [$($uses:ident),*];
    )*) => {
        // The settings every task shares. Each task has them (its help lists those it uses),
        // and so has `cargo xtask` itself, so that a flag may come before or after the task.
        #[derive(Args, Debug, Clone)]
        #[command(next_help_heading = "Settings (flag, or the environment variable named)")]
        pub struct SettingsArgs {
            $(
                $(#[doc = $doc])*
                #[arg($($arg)*)]
                pub $field: $ty,
            )*
            /// Print each command as `[dry-run] <command>` instead of running it (also: DRYRUN non-empty)
            #[arg(long)]
            pub dry_run: bool,
            /// The VM named by `--vm` on the command line (not by ARM64_VM): set by `merge`.
            #[arg(skip)]
            pub vm_named: Option<String>,
        }

        /// A setting of `SettingsArgs`, by which each task declares those it uses (`--dry-run`
        /// goes with every task). Its help lists these; the others are still accepted.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Setting {
            $($variant,)*
        }

        impl Setting {
            /// Every setting, in the order of `SettingsArgs`.
            pub const ALL: &[Setting] = &[$(Setting::$variant,)*];

            /// The id of its argument: the name of its field in `SettingsArgs`.
            pub fn id(self) -> &'static str {
                match self {
                    $(Setting::$variant => stringify!($field),)*
                }
            }

            /// The kinds of task that use it.
            fn uses(self) -> &'static [Uses] {
                match self {
                    $(Setting::$variant => &[$(Uses::$uses),*],)*
                }
            }
        }

        impl SettingsArgs {
            /// The settings of a run: those given after the task, else those given before it
            /// (on `cargo xtask` itself), else the environment's or the defaults (the same in
            /// both).
            pub fn merge(root: &clap::ArgMatches, task: &clap::ArgMatches) -> Result<SettingsArgs, clap::Error> {
                use clap::FromArgMatches;
                use clap::parser::ValueSource::CommandLine;
                let before = SettingsArgs::from_arg_matches(root)?;
                let mut merged = SettingsArgs::from_arg_matches(task)?;
                let from_root = |id: &str| {
                    task.value_source(id) != Some(CommandLine) && root.value_source(id) == Some(CommandLine)
                };
                $(
                    if from_root(stringify!($field)) {
                        merged.$field = before.$field;
                    }
                )*
                merged.dry_run |= before.dry_run;
                if [task, root].iter().any(|m| m.value_source("arm64_vm") == Some(CommandLine)) {
                    merged.vm_named = Some(merged.arm64_vm.clone());
                }
                Ok(merged)
            }
        }
    };
}

/// The kinds of task, by the settings they use: a task's help lists the settings of its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uses {
    /// Every setting: what `info` shows.
    Everything,
    /// None: the task reads no setting.
    Nothing,
    /// Where images live: the repository and the catalog (thirdparty).
    Repo,
    /// One image's tags.
    Image,
    /// The builders of each node.
    Builder,
    /// Builds and what they publish; with MULTI_CONTEXT=1 they start the arm64 VM and open its
    /// tunnel when needed.
    Build,
    /// The arm64 VM.
    Vm,
    /// The VMs made: where they are, and the registry they push to.
    Pool,
    /// The Cloud Build's submission.
    CloudBuild,
    /// A published image's signature and provenance.
    Verify,
}

impl Uses {
    /// The settings of this kind of task, in the order of `SettingsArgs`.
    pub fn settings(self) -> Vec<Setting> {
        match self {
            Uses::Everything => Setting::ALL.to_vec(),
            Uses::Nothing => Vec::new(),
            kind => Setting::ALL.iter().copied().filter(|s| s.uses().contains(&kind)).collect(),
        }
    }
}

settings! {
    /// Artifact Registry repository to publish into (docker-prod, docker-dev, yourname-test;
    /// `local`: everything on this machine, into a registry on localhost:5000)
    #[arg(long = "env", env = "ENV", default_value = DEFAULT_ENV)]
    Env env: String, used by [Repo, Image, Builder, Build, CloudBuild, Verify, Pool];

    /// GCP project
    #[arg(long = "project", env = "GCP_PROJECT", default_value = "multi-arch-docker")]
    GcpProject gcp_project: String, used by [Repo, Image, Builder, Build, Vm, CloudBuild, Verify, Pool];

    /// Zone of the arm64 VM
    #[arg(long, env = "ZONE", default_value = "us-central1-a")]
    Zone zone: String, used by [Build, Vm, Pool];

    /// Registry host that holds $GCP_PROJECT/$ENV
    #[arg(long, env = "REGISTRY", default_value = "us-docker.pkg.dev")]
    Registry registry: String, used by [Repo, Image, Builder, Build, CloudBuild, Verify, Pool];

    /// Root of every image path, used as is [default: $REGISTRY/$GCP_PROJECT/$ENV]
    #[arg(long, env = "DOCKER_REPO")]
    DockerRepo docker_repo: Option<String>, used by [Repo, Image, Builder, Build, CloudBuild, Verify, Pool];

    /// Platforms of buildx builds, comma separated
    #[arg(long, env = "PLATFORMS", default_value = "linux/amd64,linux/arm64")]
    Platforms platforms: String, used by [Builder, Build];

    /// Name of the buildx builder
    #[arg(long, env = "BUILDER", default_value = "builder-local")]
    Builder builder: String, used by [Builder, Build];

    /// Name of the arm64 VM
    #[arg(long = "vm", env = "ARM64_VM", default_value = "builder-arm64-2cpu")]
    Arm64Vm arm64_vm: String, used by [Build, Vm, Pool];

    /// The arm64 VMs of the pool, comma separated: each a node of linux/arm64 builds
    /// [default: $ARM64_VM]
    #[arg(long, env = "ARM64_VMS", value_delimiter = ',', value_name = "VMS")]
    Arm64Vms arm64_vms: Vec<String>, used by [Builder, Build, Vm, Pool];

    /// amd64 VMs that build linux/amd64 beside this engine, comma separated
    #[arg(long, env = "AMD64_VMS", value_delimiter = ',', value_name = "VMS")]
    Amd64Vms amd64_vms: Vec<String>, used by [Builder, Build, Vm, Pool];

    /// At most this many builds at once on each node [default: no limit]
    #[arg(long, env = "BUILDS_PER_NODE", value_name = "N")]
    BuildsPerNode builds_per_node: Option<String>, used by [Build];

    /// Which ready build takes a free slot first: `critical-path` (the longest remaining path
    /// to the end of the graph, weighted by the last build times) or `catalog` (the catalog's order)
    #[arg(long, env = "BUILD_ORDER", default_value = "critical-path", value_enum)]
    BuildOrder build_order: BuildOrder, used by [Build];

    /// When the tags move: `each` image's once it has passed, or all of them `together`, once
    /// every build and test of the run has (on any failure none moves)
    #[arg(long, env = "RELEASE", default_value = "each", value_enum)]
    Release release: Release, used by [Build];

    /// The user the tunnel to the arm64 VM logs in as (its sessions can only reach the engine)
    #[arg(long = "vm-user", env = "ARM64_USER", default_value = "buildx")]
    Arm64User arm64_user: String, used by [Build, Vm];

    /// The private key of the tunnel to the arm64 VM [default: $HOME/.ssh/google_compute_engine]
    #[arg(long = "vm-key", env = "ARM64_SSH_KEY")]
    Arm64SshKey arm64_ssh_key: Option<PathBuf>, used by [Build, Vm, Pool];

    /// 1: the builds start each VM of the pool when its first build comes, and stop it after its
    /// last (unless another pipeline has a lease on it)
    #[arg(long, env = "AUTO_START_STOP", default_value = "0",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "1", value_name = "0|1",
          hide_possible_values = true)]
    AutoStartStop auto_start_stop: bool, used by [Build, CloudBuild];

    /// 1: the builder is two docker contexts, `default` (amd64) and `arm_node` (arm64)
    #[arg(long, env = "MULTI_CONTEXT", default_value = "0",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "1", value_name = "0|1",
          hide_possible_values = true)]
    MultiContext multi_context: bool, used by [Builder, Build];

    /// Appended as `-X` to published tags (not to cache refs)
    #[arg(long, env = "TAG_MODIFIER", default_value = "")]
    TagModifier tag_modifier: String, used by [Image, Build, CloudBuild, Verify];

    /// A new value rebuilds the package steps of the images whose Dockerfile declares
    /// `ARG REFRESH` (`now`: the current time); unset, each image keeps the value it was last
    /// built with, so that its package steps stay cached
    #[arg(long, env = "REFRESH")]
    Refresh refresh: Option<String>, used by [Build, CloudBuild];

    /// The image catalog, which also names the vendoring list and the pipeline (a relative path
    /// starts at the repository root)
    #[arg(long, env = "CATALOG", default_value = CATALOG_PATH)]
    Catalog catalog: PathBuf, used by [Repo, Image, Build, CloudBuild, Verify];

    /// The group of a bake file CATALOG whose targets (and the targets they build on) are the
    /// images
    #[arg(long, env = "BAKE_GROUP", default_value = DEFAULT_BAKE_GROUP)]
    BakeGroup bake_group: String, used by [Repo, Image, Build, CloudBuild, Verify];

    /// The vendoring list instead of the one the catalog names (a relative path starts at the
    /// repository root) [default: the catalog's; a bake file's: thirdparty.txt beside it]
    #[arg(long = "thirdparty-list", env = "THIRDPARTY", value_name = "FILE")]
    Thirdparty thirdparty: Option<PathBuf>, used by [Repo, Image, Build, CloudBuild];

    /// The Cloud Build pipeline instead of the one the catalog names (a relative path starts at
    /// the repository root) [default: the catalog's, else this repository's]
    #[arg(long, env = "PIPELINE", value_name = "FILE")]
    Pipeline pipeline: Option<PathBuf>, used by [Build, CloudBuild];

    /// The provenance attestation of each platform's build: `max` (build arguments, bases'
    /// digests, the build's steps), `min`, or `false` for none
    #[arg(long, env = "PROVENANCE", default_value = "max", value_enum)]
    Provenance provenance: ProvenanceMode, used by [Build];

    /// Who built the images, as each platform's provenance records it (BuildKit's `builder-id`)
    /// [default: the Cloud Build's URL (from BUILD_ID), else `host:<this machine's name>`]
    #[arg(long, env = "BUILDER_ID")]
    BuilderId builder_id: Option<String>, used by [Build];

    /// 1: each platform's build gets an SBOM attestation, from the catalog's vendored generator
    #[arg(long, env = "SBOM", default_value = "1",
          value_parser = BoolishValueParser::new(), action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "1", value_name = "0|1",
          hide_possible_values = true)]
    Sbom sbom: bool, used by [Build];

    /// Sign every image published, by digest, with cosign: a key file (cosign.key, its password
    /// in COSIGN_PASSWORD), a KMS key (gcpkms://…), or `keyless` (the gcloud account's identity
    /// token); unset: no signature
    #[arg(long, env = "SIGN_KEY")]
    SignKey sign_key: Option<String>, used by [Build, Verify];

    /// More registries (host or host:port) to log in to with a gcloud access token, besides
    /// *.pkg.dev and gcr.io
    #[arg(long, env = "GCLOUD_AUTH_REGISTRIES", value_delimiter = ',', value_name = "HOSTS")]
    GcloudAuthRegistries gcloud_auth_registries: Vec<String>, used by [Repo, Image, Build, Verify];

    /// Registries (host or host:port) spoken to over plain HTTP; loopback ones always are
    #[arg(long, env = "INSECURE_REGISTRIES", value_delimiter = ',', value_name = "HOSTS")]
    InsecureRegistries insecure_registries: Vec<String>, used by [Repo, Image, Build, Verify];
}

/// The original Makefile's default repository.
pub const DEFAULT_ENV: &str = "docker-dev";
/// `ENV=local` runs the whole pipeline on this machine ...
pub const LOCAL_ENV: &str = "local";
/// ... publishing to the registry that `local-registry` starts.
pub const LOCAL_DOCKER_REPO: &str = "localhost:5000/local";

/// A command line with the settings before and after one task, as `cargo xtask` has them: for
/// the unit tests of the settings.
#[cfg(test)]
pub(super) mod command_line {
    use super::SettingsArgs;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        settings: SettingsArgs,
        #[command(subcommand)]
        task: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Task(SettingsArgs),
    }

    /// The settings of `args` (`x [settings] task [settings]`), merged as a run merges them.
    pub fn merged(args: &[&str]) -> SettingsArgs {
        let matches = Cli::command().get_matches_from(args);
        let (_, task) = matches.subcommand().unwrap();
        let merged = SettingsArgs::merge(&matches, task).unwrap();
        assert!(Cli::from_arg_matches(&matches).is_ok());
        merged
    }
}

#[cfg(test)]
mod tests {
    use super::command_line::merged;
    use super::*;

    #[test]
    fn flags_after_the_task_win_over_flags_before_it() {
        let s =
            merged(&["x", "--builder", "a", "--zone", "z", "task", "--builder", "b", "--auto-start-stop"]);
        assert_eq!((s.builder.as_str(), s.zone.as_str()), ("b", "z"));
        assert!(s.auto_start_stop);
        let s = merged(&[
            "x",
            "--dry-run",
            "--multi-context=0",
            "--vm-key",
            "/k",
            "task",
            "--sign-key",
            "keyless",
        ]);
        assert!(s.dry_run && !s.multi_context);
        assert_eq!(s.arm64_ssh_key, Some(PathBuf::from("/k")));
        assert_eq!(s.sign_key.as_deref(), Some("keyless"));
        let s = merged(&["x", "task", "--platforms", "linux/arm64", "--provenance", "min"]);
        assert_eq!((s.platforms.as_str(), s.provenance), ("linux/arm64", ProvenanceMode::Min));
        let s = merged(&["x", "--insecure-registries", "a:1,b", "task", "--provenance=false"]);
        assert_eq!(s.insecure_registries, ["a:1", "b"]);
        assert_eq!(s.provenance, ProvenanceMode::None);
    }
}
