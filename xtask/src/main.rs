//! `cargo xtask <task>`: the build tasks of this repository, one subcommand each, with the names
//! of the Makefile they replace. This file only parses the command line and dispatches.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Command, FromArgMatches, Subcommand};

use xtask::catalog::Catalog;
use xtask::runner::{CommandFailed, Runner};
use xtask::settings::{self, Settings, SettingsArgs};
use xtask::tasks::bench::{self, Bench, BenchArgs};
use xtask::tasks::images::BuildArgs;
use xtask::tasks::local_registry::{self, LocalRegistryArgs};
use xtask::tasks::publish_all::{self, PublishAllArgs};
use xtask::tasks::scan::{self, ScanArgs};
use xtask::tasks::seed::{self, SeedArgs};
use xtask::tasks::signing::{self, VerifyArgs};
use xtask::tasks::thirdparty::{self, ThirdpartyArgs, VendorArgs};
use xtask::tasks::vm::WaitArgs;
use xtask::tasks::{Ctx, buildx, cloud, images, info, vm};

// The tasks with fixed names. The per-image tasks (`build-<image>`, `buildx-publish-<image>`,
// `pull-<image>`) come from the catalog, see `image_tasks`.
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
    /// Start the arm64 VM (--wait: until it runs and answers ssh through IAP)
    StartVm(WaitArgs),
    /// Stop the arm64 VM
    StopVm,
    /// Open a root shell on the arm64 VM through IAP
    SshVm,
    /// Forward 127.0.0.1:8375 to the arm64 VM's docker daemon, in the background (--wait: until it answers)
    SshTunnel(WaitArgs),
    /// Submit cloudbuild/pr.yaml to Cloud Build (vendoring, then the images on amd64 + the arm64 VM)
    CloudBuild,
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
}

/// What an image task does with its image.
#[derive(Clone, Copy)]
enum ImageAction {
    Build,
    BuildxPublish,
    Pull,
}

const IMAGE_ACTIONS: [(&str, ImageAction); 3] = [
    ("build", ImageAction::Build),
    ("buildx-publish", ImageAction::BuildxPublish),
    ("pull", ImageAction::Pull),
];

fn image_tasks(catalog: &Catalog) -> Vec<Command> {
    let mut commands = Vec::new();
    for (task, image) in catalog.task_images() {
        let (name, what) = (&image.name, &image.description);
        // `buildx-publish-golang-build` for `buildx-publish-build`: the image's name works too.
        let named = |command: Command, action: &str| {
            if name == task { command } else { command.alias(format!("{action}-{name}")) }
        };
        commands.extend([
            named(
                Command::new(format!("build-{task}"))
                    .about(format!("Build {name} ({what}) for this machine only, without pushing")),
                "build",
            ),
            named(
                BuildArgs::augment_args(Command::new(format!("buildx-publish-{task}")).about(format!(
                    "Build {name} ({what}) for $PLATFORMS and push it, unless it is up to date"
                ))),
                "buildx-publish",
            ),
            named(
                Command::new(format!("pull-{task}")).about(format!("Pull {name} ({what}) for this machine")),
                "pull",
            ),
        ]);
    }
    commands
}

fn cli(catalog: &Catalog) -> Command {
    let cli = Command::new("xtask")
        .bin_name("cargo xtask")
        .about("Build multi-architecture Docker images with docker buildx and a native arm64 node")
        .after_help("Run `cargo xtask <task> --help` for a task's own options.");
    let cli = SettingsArgs::augment_args(cli);
    let cli = Task::augment_subcommands(cli);
    let cli = cli.subcommands(image_tasks(catalog));
    // Sort the task list by name, as `make help` did.
    let mut names: Vec<String> = cli.get_subcommands().map(|c| c.get_name().to_string()).collect();
    names.sort();
    names.iter().enumerate().fold(cli, |cli, (order, name)| {
        cli.mut_subcommand(name, |task| with_settings(task, name).display_order(order))
    })
}

/// A task with the settings, its own options first; its help lists only the settings it uses.
fn with_settings(task: Command, name: &str) -> Command {
    let settings: Vec<String> = SettingsArgs::augment_args(Command::new("settings"))
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| id != "dry_run")
        .collect();
    let used = settings::settings_of(name);
    let task = settings
        .iter()
        .filter(|id| !used.contains(&id.as_str()))
        .fold(SettingsArgs::augment_args(task), |task, id| task.mut_arg(id, |arg| arg.hide(true)));
    if name.starts_with("seed-arm64") {
        // seed-arm64 requires ENV: a default shown there would mislead.
        return task.mut_arg("env", |arg| {
            arg.hide_default_value(true).help("Artifact Registry repository to seed: required, no default")
        });
    }
    task
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly when the reader goes, as for any command-line tool,
    // instead of a panic at the next print. (Sockets are not affected: Rust sends with
    // MSG_NOSIGNAL.)
    // SAFETY: restoring the default action of one signal, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            let code = err.downcast_ref::<CommandFailed>().map_or(1, |failed| failed.exit_code);
            ExitCode::from(u8::try_from(code).ok().filter(|c| *c != 0).unwrap_or(1))
        }
    }
}

fn try_main() -> Result<()> {
    let root = xtask::project_root();
    let catalog_path = settings::catalog_path(std::env::args_os().skip(1), std::env::var_os("CATALOG"));
    let catalog = Catalog::load_from(&root, &catalog_path)?;
    let mut cli = cli(&catalog);
    let matches = cli.clone().get_matches();
    let Some((name, task_matches)) = matches.subcommand() else {
        // `cargo xtask` alone lists the tasks, like `make` did.
        cli.print_help()?;
        return Ok(());
    };
    let name = name.to_string();
    let mut settings = Settings::resolve(SettingsArgs::merge(&matches, task_matches)?, &catalog);
    for warning in &settings.warnings {
        eprintln!("warning: {warning}");
    }
    // `info` is what a confused user runs: it shows every setting, the invalid ones marked.
    if name != "info" {
        settings.check()?;
    }
    // The Makefile's `seed-arm64-dry-run` target, kept as a task of its own.
    settings.dry_run |= name == "seed-arm64-dry-run";
    let runner = Runner::new(settings.dry_run, root.clone());
    let ctx = Ctx { settings, catalog, runner, root };

    for (prefix, action) in IMAGE_ACTIONS {
        let Some(task) = name.strip_prefix(prefix).and_then(|rest| rest.strip_prefix('-')) else {
            continue;
        };
        if let Some(image) = ctx.catalog.image_for_task(task) {
            return match action {
                ImageAction::Build => images::build(&ctx, image),
                ImageAction::BuildxPublish => {
                    images::buildx_publish(&ctx, image, &BuildArgs::from_arg_matches(task_matches)?)
                }
                ImageAction::Pull => images::pull(&ctx, image),
            };
        }
    }
    match Task::from_arg_matches(&matches)? {
        Task::Info => info::info(&ctx),
        Task::BuildxSetup => buildx::buildx_setup(&ctx).map(drop),
        Task::BuildxLs => buildx::buildx_ls(&ctx),
        Task::Prune => buildx::prune(&ctx),
        Task::Clean => images::clean(&ctx),
        Task::BuildPublishCloudBuilder(args) => cloud::build_publish_cloud_builder(&ctx, &args),
        Task::StartVm(args) => vm::start_vm(&ctx, &args),
        Task::StopVm => vm::stop_vm(&ctx),
        Task::SshVm => vm::ssh_vm(&ctx),
        Task::SshTunnel(args) => vm::ssh_tunnel(&ctx, &args),
        Task::CloudBuild => cloud::cloud_build(&ctx),
        Task::SeedArm64(args) | Task::SeedArm64DryRun(args) => seed::seed_arm64(&ctx, &args),
        Task::Thirdparty(args) => thirdparty::thirdparty(&ctx, &args),
        Task::PublishAll(args) => publish_all::publish_all(&ctx, &args),
        Task::LocalRegistry(args) => local_registry::local_registry(&ctx, &args),
        Task::BenchThirdparty(args) => bench::bench(&ctx, Bench::Thirdparty, &args),
        Task::BenchRebuild(args) => bench::bench(&ctx, Bench::Rebuild, &args),
        Task::BenchGraph(args) => bench::bench(&ctx, Bench::Graph, &args),
        Task::Verify(args) => signing::verify(&ctx, &args),
        Task::Scan(args) => scan::scan(&ctx, &args),
    }
}
