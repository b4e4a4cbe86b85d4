//! The settings: the original Makefile's variables, each read from the environment variable of
//! the same name with the same default, and from a flag that wins over the environment; and
//! the variables the environment sets for some tasks (`BUILD_ID`, `BUILDER_OUTPUT`, `DRYRUN`,
//! the catalog's versions). The environment is read here, once.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{ArgAction, Args, builder::BoolishValueParser};

use crate::catalog::{CATALOG_PATH, Catalog, Image};
use crate::platform::{Platform, Platforms};

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

    /// The user the tunnel to the arm64 VM logs in as (its sessions can only reach the engine)
    #[arg(long = "vm-user", env = "ARM64_USER", default_value = "buildx")]
    Arm64User arm64_user: String, used by [Build, Vm];

    /// The private key of the tunnel to the arm64 VM [default: $HOME/.ssh/google_compute_engine]
    #[arg(long = "vm-key", env = "ARM64_SSH_KEY")]
    Arm64SshKey arm64_ssh_key: Option<PathBuf>, used by [Build, Vm, Pool];

    /// 1: the builds start each VM of the pool when its first build comes, and stop it after its
    /// last (unless another pipeline holds a lease on it)
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

    /// The provenance attestation of each platform's build: `max` (build arguments, bases'
    /// digests, the build's steps), `min`, or `false` for none
    #[arg(long, env = "PROVENANCE", default_value = "max", value_enum)]
    Provenance provenance: Provenance, used by [Build];

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

/// Which ready build takes a free slot first (`BUILD_ORDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildOrder {
    // The longest remaining path to the end of the graph first.
    CriticalPath,
    // The catalog's order.
    Catalog,
}

/// The builder's id when `BUILDER_ID` is not given: a Cloud Build's page (its `BUILD_ID`, in the
/// project, in the global region `cloud-build` submits to), else this machine, by its name.
fn default_builder_id(
    build_id: Option<String>,
    project: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> String {
    if let Some(id) = build_id {
        return format!(
            "https://console.cloud.google.com/cloud-build/builds;region=global/{id}?project={project}"
        );
    }
    let name = lookup("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("host:{name}")
}

/// The provenance attestation of each platform's build (`PROVENANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provenance {
    // Build arguments, bases' digests and the build's steps (plain comments: clap would show
    // doc comments as a long list in every task's help).
    Max,
    // The minimum: no build arguments, no steps.
    Min,
    // No provenance attestation.
    #[value(name = "false")]
    None,
}

impl Provenance {
    /// As `PROVENANCE` and buildx name it.
    pub fn name(self) -> &'static str {
        match self {
            Provenance::Max => "max",
            Provenance::Min => "min",
            Provenance::None => "false",
        }
    }
}

/// The catalog to load before the command line is parsed (its images make the task list):
/// The catalog of this run, before the command line is parsed (its images make the task list):
/// from this process's arguments and `CATALOG`.
pub fn catalog_path_of_this_run() -> PathBuf {
    catalog_path(std::env::args_os().skip(1), std::env::var_os("CATALOG"))
}

/// `--catalog PATH` or `--catalog=PATH` among `args`, else `CATALOG`, else the repository's own.
pub fn catalog_path(args: impl IntoIterator<Item = OsString>, env: Option<OsString>) -> PathBuf {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--catalog" {
            if let Some(path) = args.next() {
                return path.into();
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--catalog=")) {
            return path.into();
        }
    }
    env.filter(|v| !v.is_empty()).map_or_else(|| CATALOG_PATH.into(), PathBuf::from)
}

/// What is wrong with a `DOCKER_REPO` given as is: a scheme, or a path that is not lowercase.
fn docker_repo_problem(repo: &str) -> Option<String> {
    if repo.contains("://") {
        return Some(format!(
            "DOCKER_REPO `{repo}` has a scheme: give a registry path such as `localhost:5000/dev`, \
             without `http://` or `https://`"
        ));
    }
    let path = crate::registry::reference::path_without_host(repo);
    let bad = path.split('/').find(|component| !is_path_component(component))?;
    Some(format!(
        "DOCKER_REPO `{repo}`: `{bad}` is not a valid path component: {LOWERCASE} (e.g. `{}`)",
        repo.to_ascii_lowercase()
    ))
}

/// The repositories the README names: ENV is one of them, or someone's own `<name>-test`.
const KNOWN_ENVS: [&str; 3] = [DEFAULT_ENV, "docker-prod", LOCAL_ENV];

/// A warning for an `ENV` that names none of the documented repositories (`prod` for
/// `docker-prod`, say), with the `DOCKER_REPO` it leads to.
fn unusual_env(env: &str, docker_repo: &str) -> Option<String> {
    if KNOWN_ENVS.contains(&env) || env.ends_with("-test") {
        return None;
    }
    let guess = KNOWN_ENVS.iter().find(|known| known.ends_with(&format!("-{env}")));
    let hint = guess.map_or(String::new(), |known| format!(" Did you mean ENV={known}?"));
    Some(format!(
        "ENV={env} is none of {}, or <name>-test: it makes DOCKER_REPO {docker_repo}.{hint}",
        KNOWN_ENVS.join(", ")
    ))
}

/// The original Makefile's default repository.
pub const DEFAULT_ENV: &str = "docker-dev";
/// `ENV=local` runs the whole pipeline on this machine ...
pub const LOCAL_ENV: &str = "local";
/// ... publishing to the registry that `local-registry` starts.
pub const LOCAL_DOCKER_REPO: &str = "localhost:5000/local";

/// A component of a repository path (`docker-dev`, `multi-arch-docker`): the reference grammar's
/// lowercase letters and digits, separated by `.`, `_`, `__` or `-`s.
fn is_path_component(text: &str) -> bool {
    let mut previous_separator = true;
    for c in text.chars() {
        let separator = matches!(c, '.' | '_' | '-');
        if !(c.is_ascii_lowercase() || c.is_ascii_digit() || separator)
            || (separator && previous_separator && c == '.')
        {
            return false;
        }
        previous_separator = separator;
    }
    !text.is_empty() && !previous_separator && !text.starts_with(['.', '_', '-'])
}

/// A tag or a tag's part: letters, digits, `_ . -`, not starting with `.` or `-`, 128 at most.
fn is_tag(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && text.len() <= 128
}

const LOWERCASE: &str = "image paths take lowercase letters, digits and . _ - only";

/// `--build-arg NAME=VALUE` for each pair, in order.
pub fn build_arg_flags(args: &[(String, String)]) -> Vec<String> {
    args.iter().flat_map(|(name, value)| ["--build-arg".to_string(), format!("{name}={value}")]).collect()
}

/// A list setting without its empty entries (`INSECURE_REGISTRIES=` is none).
fn nonempty(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(|entry| entry.trim().to_string()).filter(|entry| !entry.is_empty()).collect()
}

/// A setting that breaks a rule: which one, and the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

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
    pub provenance: Provenance,
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
    /// The catalog's version variables (`ALPINE_VERSION`, …), each overridable from the environment.
    pub versions: BTreeMap<String, String>,
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
    /// kept as given and listed in `problems`.
    pub fn resolve_with(
        args: SettingsArgs,
        catalog: &Catalog,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Settings {
        let mut problems = Vec::new();
        let mut problem = |setting: &str, message: String| {
            problems.push(Problem { setting: setting.to_string(), message });
        };
        if lookup("ENV").is_some_and(|v| v.is_empty()) || args.env.is_empty() {
            problem(
                "ENV",
                "ENV is set but empty: name the Artifact Registry repository, e.g. ENV=docker-dev, or unset it".into(),
            );
        } else if !is_path_component(&args.env) {
            problem(
                "ENV",
                format!(
                    "ENV `{}` names a repository and goes into image paths: {LOWERCASE} (e.g. docker-dev, local)",
                    args.env
                ),
            );
        }
        if !is_path_component(&args.gcp_project) {
            problem(
                "GCP_PROJECT",
                format!(
                    "GCP_PROJECT `{}` goes into image paths: {LOWERCASE}, as project ids are",
                    args.gcp_project
                ),
            );
        }
        let platforms = Platforms::parse(&args.platforms).unwrap_or_else(|message| {
            problem("PLATFORMS", message);
            Platforms::default()
        });
        if !args.tag_modifier.is_empty() && !is_tag(&args.tag_modifier) {
            problem(
                "TAG_MODIFIER",
                format!(
                    "TAG_MODIFIER `{}` is appended to tags as `-<modifier>`: give letters, digits and _ . - \
                     not starting with - or . (e.g. arm64-seed)",
                    args.tag_modifier
                ),
            );
        }
        let refresh = args
            .refresh
            .filter(|r| !r.is_empty())
            .map(|r| if r == "now" { crate::lock::utc_now() } else { r });
        if let Some(value) = &refresh
            && (value.len() > 128 || !value.chars().all(|c| c.is_ascii_graphic()))
        {
            problem(
                "REFRESH",
                format!(
                    "REFRESH `{value}` becomes a build argument: give up to 128 printable characters \
                     without spaces (e.g. `now`, 2026-12-01 or a build id)"
                ),
            );
        }
        let local = args.env == LOCAL_ENV;
        let repo_given = args.docker_repo.as_ref().is_some_and(|repo| !repo.is_empty());
        let docker_repo = match args.docker_repo {
            Some(repo) if !repo.is_empty() => {
                let repo = repo.trim_end_matches('/').to_string();
                if let Some(message) = docker_repo_problem(&repo) {
                    problem("DOCKER_REPO", message);
                }
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
            if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
                problem(name, format!("{name} `{value}` goes into tags: letters, digits and _ . - only"));
            }
        }
        let dry_run = args.dry_run || lookup("DRYRUN").is_some_and(|v| !v.is_empty());
        let builds_per_node = match args.builds_per_node.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problem(
                        "BUILDS_PER_NODE",
                        format!(
                            "BUILDS_PER_NODE `{text}`: give a number of builds, 1 or more (unset: no limit)"
                        ),
                    );
                    None
                }
            },
        };
        let arm64_vms = match nonempty(args.arm64_vms) {
            vms if vms.is_empty() => vec![args.arm64_vm.clone()],
            vms => vms,
        };
        let amd64_vms = nonempty(args.amd64_vms);
        let mut seen = std::collections::BTreeSet::new();
        for vm in arm64_vms.iter().chain(&amd64_vms) {
            if !seen.insert(vm) {
                problem(
                    "ARM64_VMS",
                    format!("the VM {vm} is named twice in ARM64_VMS and AMD64_VMS: each VM is one node"),
                );
            }
            if !is_path_component(vm) {
                problem(
                    "ARM64_VMS",
                    format!(
                        "the VM name `{vm}` is not a Compute Engine name: lowercase letters, digits and -"
                    ),
                );
            }
        }
        let builder_id = args.builder_id.clone().filter(|id| !id.is_empty()).unwrap_or_else(|| {
            default_builder_id(lookup("BUILD_ID").filter(|id| !id.is_empty()), &args.gcp_project, &lookup)
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
            dry_run,
            gcloud_auth_registries: nonempty(args.gcloud_auth_registries),
            insecure_registries: nonempty(args.insecure_registries),
            build_id: lookup("BUILD_ID").filter(|id| !id.is_empty()),
            in_cloud_build: lookup("BUILDER_OUTPUT").is_some_and(|v| !v.is_empty()),
            versions,
            problems,
            warnings: Vec::new(),
        };
        if !repo_given
            && settings.problem_of("ENV").is_none()
            && let Some(warning) = unusual_env(&settings.env, &settings.docker_repo)
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

    /// The first image reference these settings make that is not valid, if any.
    fn invalid_reference(&self, catalog: &Catalog) -> Option<String> {
        for image in catalog.images.iter().chain([&catalog.cloud_builder]) {
            for reference in [self.image_ref(image), self.cache_ref(image, &Platform::new("linux", "amd64"))]
            {
                if let Err(err) = crate::registry::reference::parse(&reference) {
                    return Some(format!(
                        "the settings make the invalid image reference `{reference}` ({err}): check DOCKER_REPO \
                         (or REGISTRY, GCP_PROJECT, ENV), TAG_MODIFIER and the version settings"
                    ));
                }
            }
        }
        None
    }

    /// Where thirdparty vendors the image at `path` (`moby/buildkit:v0.18.0`, say).
    pub fn vendored(&self, path: &str) -> String {
        format!("{}/thirdparty/{path}", self.docker_repo)
    }

    /// Root of the buildx registry caches.
    pub fn cache_root(&self) -> String {
        format!("{}/cache", self.docker_repo)
    }

    /// The reference a Dockerfile names a catalog image by (`FROM ${DOCKER_REPO}/runtime:…`): as
    /// published, without the tag modifier, which a Dockerfile cannot know.
    pub fn named_ref(&self, image: &Image) -> String {
        format!("{}/{}:{}", self.docker_repo, image.name, self.tag(image))
    }

    /// Where an image is published: `$DOCKER_REPO/<name>:<tag>[-$TAG_MODIFIER]`.
    pub fn image_ref(&self, image: &Image) -> String {
        let mut reference = self.named_ref(image);
        if !self.tag_modifier.is_empty() {
            reference.push('-');
            reference.push_str(&self.tag_modifier);
        }
        reference
    }

    /// The buildx registry cache of one platform of an image, `…/cache/<name>:<tag>-<arch>`:
    /// each platform builds on its own node with a cache of its own. The tag modifier is left out
    /// on purpose: a seeding run (`TAG_MODIFIER=arm64-seed`) must fill the very cache the real
    /// build's arm64 half reads.
    pub fn cache_ref(&self, image: &Image, platform: &Platform) -> String {
        let arch = platform.suffix();
        format!("{}/{}:{}-{arch}", self.cache_root(), image.name, self.tag(image))
    }

    pub fn tag(&self, image: &Image) -> String {
        image.tag.render(&self.versions)
    }

    /// The build arguments of an image: `DOCKER_REPO` first, then the image's own versions.
    pub fn build_arg_values(&self, image: &Image) -> Vec<(String, String)> {
        let own = image.build_args.iter().map(|name| (name.clone(), self.versions[name].clone()));
        [("DOCKER_REPO".to_string(), self.docker_repo.clone())].into_iter().chain(own).collect()
    }

    /// `--build-arg NAME=VALUE` pairs, as `build_arg_values` orders them.
    pub fn build_args(&self, image: &Image) -> Vec<String> {
        build_arg_flags(&self.build_arg_values(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn merged(args: &[&str]) -> SettingsArgs {
        let matches = Cli::command().get_matches_from(args);
        let (_, task) = matches.subcommand().unwrap();
        let merged = SettingsArgs::merge(&matches, task).unwrap();
        assert!(Cli::from_arg_matches(&matches).is_ok());
        merged
    }

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
        assert_eq!((s.platforms.as_str(), s.provenance), ("linux/arm64", Provenance::Min));
        let s = merged(&["x", "--insecure-registries", "a:1,b", "task", "--provenance=false"]);
        assert_eq!(s.insecure_registries, ["a:1", "b"]);
        assert_eq!(s.provenance, Provenance::None);
    }

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
