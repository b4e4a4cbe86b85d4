//! `cargo xtask <task>`: the build tasks of this repository, one subcommand each, with the names
//! of the original Makefile's targets. This file only parses the command line and dispatches.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Command, FromArgMatches, Subcommand};

use xtask::catalog::Catalog;
use xtask::catalog::Image;
use xtask::ctx::Ctx;
use xtask::failure::Failure;
use xtask::flags::{BuildArgs, VendorArgs, WaitArgs};
use xtask::runner::Runner;
use xtask::settings::{self, Setting, Settings, SettingsArgs, Uses};
use xtask::tasks::bench::{self, Bench, BenchArgs};
use xtask::tasks::cloud::CloudBuildArgs;
use xtask::tasks::local_registry::{self, LocalRegistryArgs};
use xtask::tasks::publish_all::{self, PublishAllArgs};
use xtask::tasks::scan::{self, ScanArgs};
use xtask::tasks::seed::{self, SeedArgs};
use xtask::tasks::thirdparty::{self, ThirdpartyArgs};
use xtask::tasks::verify::{self, VerifyArgs};
use xtask::tasks::vm::CreateVmsArgs;
use xtask::tasks::{buildx, cloud, images, info, vm};

// The tasks with fixed names. The per-image tasks (`build-<image>`, `buildx-publish-<image>`,
// `pull-<image>`) come from the catalog, see `ImageAction` and `cli`.
#[derive(Subcommand, Debug)]
enum Task {
    /// Show the settings in effect and which tools are installed
    Info,
    /// Create the buildx builder $BUILDER unless it exists (MULTI_CONTEXT=1: amd64 + arm64 nodes)
    BuildxSetup,
    /// List the buildx builders
    BuildxLs,
    /// Empty the local cache of the buildx builder $BUILDER
    Prune,
    /// Remove the catalog's images from this machine's docker
    Clean,
    /// Vendor the cloud builder's bases, then build and push it (amd64 only: it runs inside Cloud Build)
    BuildPublishCloudBuilder(VendorArgs),
    /// Create the arm64 VM and the IAP firewall rule unless they exist, from builder-vm/startup.sh (what ARM64_BUILDER.md does by hand)
    CreateVms(CreateVmsArgs),
    /// Start the arm64 VM (--wait: until it runs and answers ssh through IAP)
    StartVm(WaitArgs),
    /// Stop the arm64 VM
    StopVm,
    /// Open a shell on the arm64 VM through IAP, as yourself (your gcloud account, through OS Login)
    SshVm,
    /// Open the ssh connection to the arm64 VM's engine (docker context arm_node), in the background (--wait: until it answers)
    SshTunnel(WaitArgs),
    /// Submit cloudbuild/pr.yaml to Cloud Build (vendoring, then the images on amd64 + the arm64 VM); --local: rehearse it here
    CloudBuild(CloudBuildArgs),
    /// Seed the registry caches with arm64 builds from an arm64 machine (the pipeline's builds, arm64 only)
    SeedArm64(SeedArgs),
    /// seed-arm64 --dry-run: show what seed-arm64 would run
    SeedArm64DryRun(SeedArgs),
    /// Vendor the base images of thirdparty.txt into $DOCKER_REPO/thirdparty/
    Thirdparty(ThirdpartyArgs),
    /// Vendor, then build and publish every image in parallel (ENV=local: all on this machine)
    PublishAll(PublishAllArgs),
    /// Start a registry on 127.0.0.1 for local work (docker-registry, else the registry:2 image)
    LocalRegistry(LocalRegistryArgs),
    /// Check the signature of published images and show their provenance, per platform
    Verify(VerifyArgs),
    /// Scan every platform of every published image (Artifact Registry's on-demand scanning); fail above a severity
    Scan(ScanArgs),
    /// Benchmark thirdparty against skopeo on local registries and print the ratios
    #[command(disable_help_flag = true)]
    BenchThirdparty(BenchArgs),
    /// Benchmark a rebuild from the registry caches (late change, empty local caches) against a cold build
    #[command(disable_help_flag = true)]
    BenchRebuild(BenchArgs),
    /// Benchmark publish-all on a six-image graph (cold, up to date, leaf and root changes) against rebuilding every image from the caches
    #[command(disable_help_flag = true)]
    BenchGraph(BenchArgs),
    /// Benchmark the pool's scheduler (stand-in builds and VMs) on 1, 2 and 3 nodes and in catalog order against the lower bound
    #[command(disable_help_flag = true)]
    BenchPool(BenchArgs),
    /// Benchmark the pipeline's xtask step (dependencies prebuilt as in the cloud builder) against a cold cargo build
    #[command(disable_help_flag = true)]
    BenchCompile(BenchArgs),
}

impl Task {
    /// The kind of task, by the settings it uses: its help lists these (the others are
    /// accepted, hidden).
    fn uses(&self) -> Uses {
        match self {
            Task::Info => Uses::Everything,
            Task::BuildxSetup | Task::Prune => Uses::Builder,
            Task::BuildxLs | Task::LocalRegistry(_) => Uses::Nothing,
            Task::Clean | Task::Scan(_) => Uses::Image,
            Task::StartVm(_) | Task::StopVm | Task::SshVm | Task::SshTunnel(_) => Uses::Vm,
            Task::CreateVms(_) => Uses::Pool,
            Task::CloudBuild(_) => Uses::CloudBuild,
            // The cloud builder is built as the catalog's images are: a builder, provenance, a
            // signature.
            Task::SeedArm64(_)
            | Task::SeedArm64DryRun(_)
            | Task::PublishAll(_)
            | Task::BuildPublishCloudBuilder(_) => Uses::Build,
            Task::Thirdparty(_) => Uses::Repo,
            Task::Verify(_) => Uses::Verify,
            Task::BenchThirdparty(_)
            | Task::BenchRebuild(_)
            | Task::BenchGraph(_)
            | Task::BenchPool(_)
            | Task::BenchCompile(_) => Uses::Nothing,
        }
    }

    /// seed-arm64 requires ENV: a default shown there would mislead.
    fn requires_env(&self) -> bool {
        matches!(self, Task::SeedArm64(_) | Task::SeedArm64DryRun(_))
    }
}

/// Each fixed subcommand and its task, as parsed from its name alone (no task requires an
/// argument). The parse leaves the environment out, so that nothing in it can fail it; the
/// command returned keeps its options' environment variables.
fn fixed_tasks() -> Vec<(Command, Task)> {
    let commands = Task::augment_subcommands(Command::new("xtask"));
    let probe = commands.clone().mut_subcommands(|task| task.mut_args(|arg| arg.env(None::<&str>)));
    commands
        .get_subcommands()
        .zip(probe.get_subcommands())
        .map(|(command, without_env)| {
            let name = command.get_name();
            let alone = Command::new("probe").subcommand(without_env.clone());
            let matches = alone.try_get_matches_from(["probe", name]);
            let task = matches
                .and_then(|matches| Task::from_arg_matches(&matches))
                .unwrap_or_else(|err| panic!("task {name} does not parse from its name alone: {err}"));
            (command.clone(), task)
        })
        .collect()
}

/// What an image task does with its image.
#[derive(Clone, Copy)]
enum ImageAction {
    Build,
    BuildxPublish,
    Pull,
}

impl ImageAction {
    const ALL: [ImageAction; 3] = [ImageAction::Build, ImageAction::BuildxPublish, ImageAction::Pull];

    /// `build` in `build-<image>`.
    fn prefix(self) -> &'static str {
        match self {
            ImageAction::Build => "build",
            ImageAction::BuildxPublish => "buildx-publish",
            ImageAction::Pull => "pull",
        }
    }

    fn uses(self) -> Uses {
        match self {
            ImageAction::Build | ImageAction::Pull => Uses::Image,
            ImageAction::BuildxPublish => Uses::Build,
        }
    }

    fn command(self, task: &str, image: &Image) -> Command {
        let (name, what) = (&image.name, &image.description);
        let command = Command::new(format!("{}-{task}", self.prefix()));
        let command =
            match self {
                ImageAction::Build => {
                    command.about(format!("Build {name} ({what}) for this machine only, without pushing"))
                }
                ImageAction::BuildxPublish => BuildArgs::augment_args(command.about(format!(
                    "Build {name} ({what}) for $PLATFORMS and push it, unless it is up to date"
                ))),
                ImageAction::Pull => command.about(format!("Pull {name} ({what}) for this machine")),
            };
        // `buildx-publish-golang-build` for `buildx-publish-build`: the image's name works too.
        if *name == task { command } else { command.alias(format!("{}-{name}", self.prefix())) }
    }

    fn run(self, ctx: &Ctx, image: &Image, matches: &clap::ArgMatches) -> Result<()> {
        match self {
            ImageAction::Build => images::build(ctx, image),
            ImageAction::BuildxPublish => {
                images::buildx_publish(ctx, image, &BuildArgs::from_arg_matches(matches)?.options(None))
            }
            ImageAction::Pull => images::pull(ctx, image),
        }
    }
}

/// The task a command line names: one of an image (by its task name), or a fixed one.
enum Chosen {
    Image(ImageAction, String),
    Fixed(Task),
}

fn chosen(catalog: &Catalog, name: &str, matches: &clap::ArgMatches) -> Result<Chosen> {
    for action in ImageAction::ALL {
        let task = name.strip_prefix(action.prefix()).and_then(|rest| rest.strip_prefix('-'));
        if let Some(task) = task.filter(|task| catalog.image_for_task(task).is_some()) {
            return Ok(Chosen::Image(action, task.to_string()));
        }
    }
    Ok(Chosen::Fixed(Task::from_arg_matches(matches)?))
}

fn cli(catalog: &Catalog) -> Command {
    let cli = Command::new("xtask")
        .bin_name("cargo xtask")
        .about("Build multi-architecture Docker images with docker buildx and a native arm64 node")
        .after_help("Run `cargo xtask <task> --help` for a task's own options.");
    let mut tasks: Vec<Command> = fixed_tasks()
        .into_iter()
        .map(|(command, task)| {
            let command = with_settings(command, &task.uses().settings());
            if task.requires_env() {
                command.mut_arg("env", |arg| {
                    arg.hide_default_value(true)
                        .help("Artifact Registry repository to seed: required, no default")
                })
            } else {
                command
            }
        })
        .collect();
    for (task, image) in catalog.task_images() {
        tasks.extend(
            ImageAction::ALL
                .map(|action| with_settings(action.command(task, image), &action.uses().settings())),
        );
    }
    // Sorted by name, as `make help` listed them.
    tasks.sort_by(|a, b| a.get_name().cmp(b.get_name()));
    let tasks = tasks.into_iter().enumerate().map(|(order, task)| task.display_order(order));
    SettingsArgs::augment_args(cli).subcommands(tasks)
}

/// A task with the settings, its own options first; its help lists only the settings it uses.
fn with_settings(task: Command, used: &[Setting]) -> Command {
    let hidden: Vec<String> = SettingsArgs::augment_args(Command::new("settings"))
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| id != "dry_run" && !used.iter().any(|setting| setting.id() == id))
        .collect();
    hidden.iter().fold(SettingsArgs::augment_args(task), |task, id| task.mut_arg(id, |arg| arg.hide(true)))
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly when the reader goes, as for any command-line tool,
    // instead of a panic at the next print. (Sockets are not affected: Rust sends with
    // MSG_NOSIGNAL.)
    // SAFETY: signal takes no pointer of ours: SIG_DFL names the default action, not a handler
    // to be called.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let failure = Failure::from(err);
            eprintln!("error: {failure}");
            ExitCode::from(failure.exit_status())
        }
    }
}

fn try_main() -> Result<()> {
    let root = xtask::project_root();
    let source = settings::catalog_source_of_this_run();
    let catalog = Catalog::load_source(&root, &source)?;
    for warning in &catalog.warnings {
        eprintln!("warning: {warning}");
    }
    let mut cli = cli(&catalog);
    let args: Vec<OsString> = std::env::args_os().collect();
    settings::refuse_step_variables_given_as_env(&args)?;
    let matches = cli.clone().get_matches_from(args);
    let Some((name, task_matches)) = matches.subcommand() else {
        // `cargo xtask` alone lists the tasks, like `make` did.
        cli.print_help()?;
        return Ok(());
    };
    let chosen = chosen(&catalog, name, &matches)?;
    let mut settings = Settings::resolve(SettingsArgs::merge(&matches, task_matches)?, &catalog);
    let catalog_folder = root.join(&source.path);
    let catalog_folder = catalog_folder.parent().unwrap_or(&root);
    settings.run = xtask::run_values::RunValues::read(catalog_folder, |name| std::env::var(name).ok());
    for warning in &settings.warnings {
        eprintln!("warning: {warning}");
    }
    // `info` is what a confused user runs: it shows every setting, the invalid ones marked.
    if !matches!(chosen, Chosen::Fixed(Task::Info)) {
        settings.check()?;
    }
    // The original Makefile's `seed-arm64-dry-run` target, kept as a task of its own.
    settings.dry_run |= matches!(chosen, Chosen::Fixed(Task::SeedArm64DryRun(_)));
    let runner = Runner::new(settings.dry_run, root.clone());
    let ctx = Ctx { settings, catalog, runner, root };

    let task = match chosen {
        Chosen::Image(action, task) => {
            let image = ctx.catalog.image_for_task(&task).expect("chosen from this catalog");
            return action.run(&ctx, image, task_matches);
        }
        Chosen::Fixed(task) => task,
    };
    match task {
        Task::Info => info::info(&ctx),
        Task::BuildxSetup => buildx::buildx_setup(&ctx),
        Task::BuildxLs => buildx::buildx_ls(&ctx),
        Task::Prune => buildx::prune(&ctx),
        Task::Clean => images::clean(&ctx),
        Task::BuildPublishCloudBuilder(args) => cloud::build_publish_cloud_builder(&ctx, &args),
        Task::CreateVms(args) => vm::create_vms(&ctx, &args),
        Task::StartVm(args) => vm::start_vm(&ctx, &args),
        Task::StopVm => vm::stop_vm(&ctx),
        Task::SshVm => vm::ssh_vm(&ctx),
        Task::SshTunnel(args) => vm::ssh_tunnel(&ctx, &args),
        Task::CloudBuild(args) => cloud::cloud_build(&ctx, &args),
        Task::SeedArm64(args) | Task::SeedArm64DryRun(args) => seed::seed_arm64(&ctx, &args),
        Task::Thirdparty(args) => thirdparty::thirdparty(&ctx, &args),
        Task::PublishAll(args) => publish_all::publish_all(&ctx, &args),
        Task::LocalRegistry(args) => local_registry::local_registry(&ctx, &args),
        Task::BenchThirdparty(args) => bench::bench(&ctx, Bench::Thirdparty, &args),
        Task::BenchRebuild(args) => bench::bench(&ctx, Bench::Rebuild, &args),
        Task::BenchGraph(args) => bench::bench(&ctx, Bench::Graph, &args),
        Task::BenchPool(args) => bench::bench(&ctx, Bench::Pool, &args),
        Task::BenchCompile(args) => bench::bench(&ctx, Bench::Compile, &args),
        Task::Verify(args) => verify::verify(&ctx, &args),
        Task::Scan(args) => scan::scan(&ctx, &args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let path = std::path::Path::new("xtask/tests/fixtures/catalog/images.toml");
        Catalog::load_from(&xtask::project_root(), path).unwrap()
    }

    #[test]
    fn a_step_variable_is_step_env_and_env_stays_the_deployment() {
        let matches = cli(&catalog())
            .try_get_matches_from([
                "x",
                "--env",
                "docker-prod",
                "cloud-build",
                "--local",
                "--env",
                "prod",
                "--step-env",
                "A=1",
                "--step-env=B=2=3",
            ])
            .unwrap();
        assert_eq!(matches.get_one::<String>("env").unwrap(), "docker-prod");
        let (_, task) = matches.subcommand().unwrap();
        assert_eq!(task.get_one::<String>("env").unwrap(), "prod");
        let step_env: Vec<&String> = task.get_many::<String>("step_env").unwrap().collect();
        assert_eq!(step_env, ["A=1", "B=2=3"]);
    }

    #[test]
    fn the_command_line_is_well_formed() {
        cli(&catalog()).debug_assert();
    }

    /// A task's own options read the environment as they declare: `GCLOUD_AUTH_REGISTRIES` for
    /// thirdparty, say, is not lost on the way into the command line.
    #[test]
    fn task_options_keep_their_environment_variables() {
        let cli = cli(&catalog());
        let declared = Task::augment_subcommands(Command::new("declared"));
        let mut seen = 0;
        for task in declared.get_subcommands() {
            let built = cli.find_subcommand(task.get_name()).expect("every task is on the command line");
            for arg in task.get_arguments().filter(|arg| arg.get_env().is_some()) {
                let same = built.get_arguments().find(|b| b.get_id() == arg.get_id()).expect("the option");
                assert_eq!(same.get_env(), arg.get_env(), "{} --{}", task.get_name(), arg.get_id());
                seen += 1;
            }
        }
        assert!(seen > 0, "some task options read the environment");
        let thirdparty = cli.find_subcommand("thirdparty").unwrap();
        let gcloud = thirdparty.get_arguments().find(|a| a.get_id() == "gcloud_auth_registries").unwrap();
        assert_eq!(gcloud.get_env(), Some(std::ffi::OsStr::new("GCLOUD_AUTH_REGISTRIES")));
    }

    /// Each task's help shows exactly the settings it declares, under every name it has.
    #[test]
    fn each_task_shows_the_settings_it_declares() {
        let cli = cli(&catalog());
        let shown = |name: &str| -> Vec<String> {
            let task = cli.find_subcommand(name).unwrap_or_else(|| panic!("no task {name}"));
            let mut ids: Vec<String> = task
                .get_arguments()
                .filter(|arg| {
                    !arg.is_hide_set() && arg.get_help_heading().is_some_and(|h| h.starts_with("Settings"))
                })
                .map(|arg| arg.get_id().to_string())
                .filter(|id| id != "dry_run")
                .collect();
            ids.sort();
            ids
        };
        let ids = |settings: &[Setting]| -> Vec<String> {
            let mut ids: Vec<String> = settings.iter().map(|s| s.id().to_string()).collect();
            ids.sort();
            ids
        };
        let fixed = fixed_tasks();
        assert!(fixed.len() >= 20, "{}", fixed.len());
        for (command, task) in &fixed {
            assert_eq!(shown(command.get_name()), ids(&task.uses().settings()), "{}", command.get_name());
        }
        for (task, _) in catalog().task_images() {
            for action in ImageAction::ALL {
                let name = format!("{}-{task}", action.prefix());
                assert_eq!(shown(&name), ids(&action.uses().settings()), "{name}");
            }
        }
    }
}
