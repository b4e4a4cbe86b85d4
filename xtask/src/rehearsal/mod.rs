//! `cloud-build --local`: the pipeline rehearsed on this machine the way Cloud Build runs it,
//! since Google's own local builder is retired (GoogleCloudPlatform/cloud-sdk-docker#285). The
//! workspace is what `gcloud builds submit` would upload; the substitutions are the build's,
//! checked before anything runs; the steps run in `waitFor` order, each in its image through
//! `docker run` (or, `--on-host`, on this machine), with the shared `/workspace`,
//! `/builder/home` and `/builder/outputs`, their timeouts, and the build's; the run ends with
//! Cloud Build's table of steps.

pub mod duration;
pub mod gcloudignore;
pub mod host_paths;
pub mod report;
pub mod schedule;
pub mod step;
pub mod substitution;
pub mod workspace;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::pipeline::Pipeline;
use crate::runner::sh;
use gcloudignore::GcloudIgnore;
use host_paths::HostPaths;
use schedule::{Job, Status, Stop};
use step::ResolvedStep;
use substitution::Substitutions;
use workspace::Folders;

/// How to rehearse.
#[derive(Debug, Clone, Default)]
pub struct Rehearsal {
    /// Run the steps on this machine instead of in their images.
    pub on_host: bool,
    /// The task's substitutions, then `--substitutions`: later ones win over the pipeline's.
    pub substitutions: Vec<(String, String)>,
    /// `--step-env NAME=VALUE`: in every step, last (Cloud Build has no such option).
    pub step_env: Vec<(String, String)>,
}

/// What `PROJECT_NUMBER` is here: a rehearsal asks GCP nothing.
pub const PROJECT_NUMBER: &str = "000000000000";

/// How many lines of a failed step's log are shown.
const TAIL_LINES: usize = 20;

pub fn rehearse(ctx: &Ctx, how: &Rehearsal) -> Result<()> {
    let runner = &ctx.runner;
    let pipeline = Pipeline::load(&ctx.root, &ctx.catalog.pipeline)?;
    let build_id = format!(
        "local-{}-{}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        std::process::id()
    );
    let built_ins = [
        ("PROJECT_ID", ctx.settings.gcp_project.clone()),
        ("BUILD_ID", build_id.clone()),
        ("PROJECT_NUMBER", PROJECT_NUMBER.to_string()),
        ("LOCATION", "global".to_string()),
    ];
    let subs = Substitutions::new(&built_ins, &pipeline.substitutions, &how.substitutions)?;
    // Every step is resolved, and every substitution checked, before anything runs.
    let steps: Vec<ResolvedStep> = pipeline
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| ResolvedStep::new(index, step, &pipeline.options, &subs))
        .collect::<Result<_>>()
        .with_context(|| format!("in {}", ctx.catalog.pipeline.display()))?;
    let waits = schedule::dependencies(&pipeline.steps)?;
    let build_timeout =
        pipeline.timeout.as_deref().map(duration::parse).transpose().context("the build's timeout")?;

    let base = crate::normalize(&ctx.root.join(crate::work_dir())).join("cloud-build-local");
    let folders = Folders::new(&base, &build_id);
    let mode = if how.on_host { "on this machine (--on-host)" } else { "each in its image (docker run)" };
    runner
        .say(&format!("rehearsing {} as build {build_id}, its steps {mode}", ctx.catalog.pipeline.display()));
    for (name, value) in &how.step_env {
        runner.say(&format!(
            "note: --step-env {name}={value} is added to every step; Cloud Build has no such option"
        ));
    }
    let ignore = GcloudIgnore::for_tree(&ctx.root)?;
    if runner.is_dry_run() {
        runner.say(&format!(
            "the workspace: {} as `gcloud builds submit` uploads it (less .gcloudignore: {}), copied into {}; \
             fresh folders {} (/builder/home) and {} (/builder/outputs)",
            ctx.root.display(),
            ignore.describe(),
            folders.workspace.display(),
            folders.home.display(),
            folders.outputs.display(),
        ));
    } else {
        let copied = folders.create(&ctx.root, &ignore, &base)?;
        runner.say(&format!(
            "the workspace: {copied} files of {} (less .gcloudignore) in {}",
            ctx.root.display(),
            folders.workspace.display()
        ));
    }

    let paths = HostPaths::new(&folders.workspace, &folders.home, &folders.outputs);
    let host_env = if how.on_host { host_environment(&folders)? } else { Vec::new() };
    if !how.on_host {
        let sh = sh();
        runner.branch(
            cmd!(sh, "docker network inspect cloudbuild"),
            |_| Ok(()),
            |runner| runner.run(cmd!(sh, "docker network create cloudbuild")),
        )?;
    }
    let mut jobs = Vec::with_capacity(steps.len());
    for step in &steps {
        let script = match step.script_file(how.on_host.then_some(&paths)) {
            Some(text) => Some(write_script(runner, &folders.scripts, step, &text)?),
            None => None,
        };
        let container = format!("cloud-build-local-{build_id}-{}", step.index);
        let cmd = if how.on_host {
            step.host_command(&paths, &folders.workspace, &host_env, &how.step_env, script.as_deref())?
        } else {
            step.docker_command(&container, &folders, &how.step_env, script.as_deref())
        };
        let label = match &step.id {
            Some(id) => format!("Step #{} - {id:?}", step.index),
            None => format!("Step #{}", step.index),
        };
        jobs.push(Job {
            label,
            cmd,
            log: folders.logs.join(format!("{}.log", step.file_stem())),
            container: (!how.on_host).then_some(container),
            timeout: step.timeout,
        });
    }
    if runner.is_dry_run() {
        return schedule::plan(runner, &jobs, &waits);
    }

    // A Ctrl-C (or SIGTERM) stops the running steps as Cloud Build cancels a build, instead of
    // ending this process under them.
    let _deferred = crate::interrupt::Deferred::start();
    let (outcomes, stop) = schedule::run(runner, &jobs, &waits, build_timeout)?;
    let names: Vec<String> = steps.iter().map(ResolvedStep::name).collect();
    println!("\n{}", report::table(&names, &outcomes));
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        if matches!(outcome.status, Status::Failure | Status::Timeout) {
            println!("{} ({}), the last lines of {}:", job.label, outcome.status.as_str(), job.log.display());
            println!("{}\n", report::tail(&job.log, TAIL_LINES));
        }
    }
    println!("logs: {}", folders.logs.display());
    let name = |index: usize| &names[index];
    match stop {
        None => Ok(()),
        Some(Stop::Failed(index)) => {
            bail!("the rehearsal failed: step {} failed; its log: {}", name(index), jobs[index].log.display())
        }
        Some(Stop::TimedOut(index)) => bail!(
            "the rehearsal failed: step {} ran past its timeout; its log: {}",
            name(index),
            jobs[index].log.display()
        ),
        Some(Stop::BuildTimedOut) => bail!(
            "the rehearsal failed: the build ran past its timeout of {}",
            pipeline.timeout.as_deref().unwrap_or("?")
        ),
        Some(Stop::Interrupted) => {
            bail!("the rehearsal was interrupted (Ctrl-C): its running steps were stopped")
        }
    }
}

/// Write a step's script where it runs from; a dry run writes it too, and says so.
fn write_script(
    runner: &crate::runner::Runner,
    dir: &Path,
    step: &ResolvedStep,
    text: &str,
) -> Result<PathBuf> {
    let path = dir.join(format!("{}.sh", step.file_stem()));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))?;
    if runner.is_dry_run() {
        runner.say(&format!("wrote {}: the script of step #{}", path.display(), step.index));
    }
    Ok(path)
}

/// The environment every on-host step starts from, none of ours but `PATH`: `HOME` and
/// `BUILDER_OUTPUT` the rehearsal's folders, and rustup's and cargo's homes where the cloud
/// builder image sets them (ours, else the account's `~/.rustup`, `~/.cargo`): rustup's shims
/// fail when they look under a bare `HOME`.
fn host_environment(folders: &Folders) -> Result<Vec<(String, String)>> {
    let path = std::env::var("PATH").context("PATH is not set")?;
    let account = crate::account_home();
    let home_of = |name: &str, folder: &str| -> Option<String> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .or_else(|| account.as_ref().map(|home| home.join(folder).display().to_string()))
    };
    let mut env = vec![
        ("PATH".to_string(), path),
        ("HOME".to_string(), folders.home.display().to_string()),
        ("BUILDER_OUTPUT".to_string(), folders.outputs.display().to_string()),
    ];
    for (name, folder) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
        if let Some(value) = home_of(name, folder) {
            env.push((name.to_string(), value));
        }
    }
    Ok(env)
}
