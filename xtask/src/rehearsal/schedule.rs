//! The order of the steps, as Cloud Build decides it, and the run of them: a step without
//! `waitFor` waits for every step before it, `waitFor: ['-']` starts at once, and otherwise a
//! step waits for the steps it names. A step that fails, or runs past its `timeout`, stops the
//! build: steps not started never start, running ones are stopped (a signal first, so that they
//! can clean up; after a grace, killed), as are all of them at the build's timeout or on Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use xshell::cmd;

use crate::pipeline::Step;
use crate::runner::{Cmd, Runner, Started, sh};

/// How long a stopped step has, after its signal, before it is killed: a `publish-all` inside
/// gives its lease back, closes its tunnel and stops the VM it started, each through IAP, and a
/// `gcloud compute instances stop` alone may take a minute.
pub const GRACE: Duration = Duration::from_secs(90);

/// A step's status, named as Cloud Build names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Queued,
    Working,
    Success,
    Failure,
    Timeout,
    Cancelled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "QUEUED",
            Status::Working => "WORKING",
            Status::Success => "SUCCESS",
            Status::Failure => "FAILURE",
            Status::Timeout => "TIMEOUT",
            Status::Cancelled => "CANCELLED",
        }
    }
}

/// The steps each step waits for, by index.
pub fn dependencies(steps: &[Step]) -> Result<Vec<Vec<usize>>> {
    let mut all = Vec::with_capacity(steps.len());
    for (index, step) in steps.iter().enumerate() {
        let waits = match step.wait_for.as_deref() {
            None => (0..index).collect(),
            Some(ids) if ids.iter().any(|id| id == "-") => Vec::new(),
            Some(ids) => {
                let mut waits = Vec::new();
                for id in ids {
                    let Some(found) =
                        steps[..index].iter().position(|s| s.id.as_deref() == Some(id.as_str()))
                    else {
                        bail!(
                            "step #{index} waits for {id:?}, which is no id of a step before it \
                             (waitFor names earlier steps' ids, or '-')"
                        );
                    };
                    waits.push(found);
                }
                waits
            }
        };
        all.push(waits);
    }
    Ok(all)
}

/// What runs one step.
pub struct Job {
    /// How messages name it: `Step #1 - "xtask"`.
    pub label: String,
    pub cmd: Cmd,
    pub log: PathBuf,
    /// Its container (`docker run` mode), which is stopped through docker.
    pub container: Option<String>,
    pub timeout: Option<Duration>,
}

/// How a step ended, and how long it ran.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub status: Status,
    pub duration: Option<Duration>,
}

/// Why the build stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Failed(usize),
    TimedOut(usize),
    BuildTimedOut,
    Interrupted,
}

/// The plan of a dry run: each step's command in order, with what it waits for.
pub fn plan(runner: &Runner, jobs: &[Job], waits: &[Vec<usize>]) -> Result<()> {
    for (job, waits) in jobs.iter().zip(waits) {
        let after = if waits.is_empty() {
            "starts at once".to_string()
        } else {
            let names: Vec<&str> = waits.iter().map(|w| jobs[*w].label.as_str()).collect();
            format!("starts once these succeed: {}", names.join(", "))
        };
        let timeout = job.timeout.map_or(String::new(), |t| format!(", stopped after {} s", t.as_secs_f64()));
        runner.say(&format!("{}: {after}{timeout}; its output into {}", job.label, job.log.display()));
        runner.spawn_logged(&job.cmd, &job.log)?;
    }
    Ok(())
}

struct Running {
    started: Started,
    since: Instant,
    /// When it was told to stop, and the status it ends with.
    stopping: Option<(Instant, Status)>,
}

/// Run the jobs in the order `waits` allows; returns each one's outcome and why the build
/// stopped early, if it did: a Ctrl-C (SIGINT, SIGTERM) stops it (`crate::interrupt`).
pub fn run(
    runner: &Runner,
    jobs: &[Job],
    waits: &[Vec<usize>],
    build_timeout: Option<Duration>,
) -> Result<(Vec<StepOutcome>, Option<Stop>)> {
    let start = Instant::now();
    let mut outcomes = vec![StepOutcome { status: Status::Queued, duration: None }; jobs.len()];
    let mut running: Vec<Option<Running>> = jobs.iter().map(|_| None).collect();
    let mut stop: Option<Stop> = None;
    loop {
        if stop.is_none() && crate::interrupt::requested() {
            stop = Some(Stop::Interrupted);
        }
        if stop.is_none() && build_timeout.is_some_and(|t| start.elapsed() > t) {
            stop = Some(Stop::BuildTimedOut);
        }
        if stop.is_none() {
            for index in 0..jobs.len() {
                let ready = waits[index].iter().all(|w| outcomes[*w].status == Status::Success);
                if outcomes[index].status == Status::Queued && ready {
                    let job = &jobs[index];
                    println!("{}: started, its log: {}", job.label, job.log.display());
                    match runner.spawn_logged(&job.cmd, &job.log) {
                        Ok(Some(started)) => {
                            running[index] = Some(Running { started, since: Instant::now(), stopping: None });
                            outcomes[index].status = Status::Working;
                        }
                        Ok(None) => unreachable!("a dry run only plans"),
                        Err(err) => {
                            println!("{}: cannot start: {err:#}", job.label);
                            outcomes[index] =
                                StepOutcome { status: Status::Failure, duration: Some(Duration::ZERO) };
                            stop = Some(Stop::Failed(index));
                            break;
                        }
                    }
                }
            }
        }
        for index in 0..jobs.len() {
            let Some(step) = &mut running[index] else { continue };
            let job = &jobs[index];
            if let Some(status) = step.started.try_wait()? {
                let duration = step.since.elapsed();
                let ended = match step.stopping {
                    Some((_, status)) => status,
                    None if status.success() => Status::Success,
                    None => Status::Failure,
                };
                let how = if ended == Status::Failure { format!(" ({status})") } else { String::new() };
                println!("{}: {}{how} after {:.1} s", job.label, ended.as_str(), duration.as_secs_f64());
                outcomes[index] = StepOutcome { status: ended, duration: Some(duration) };
                running[index] = None;
                if ended == Status::Failure && stop.is_none() {
                    stop = Some(Stop::Failed(index));
                }
                continue;
            }
            if step.stopping.is_none() && job.timeout.is_some_and(|t| step.since.elapsed() > t) {
                println!(
                    "{}: past its timeout of {} s: stopping it",
                    job.label,
                    job.timeout.unwrap().as_secs_f64()
                );
                interrupt(runner, job, &step.started);
                step.stopping = Some((Instant::now(), Status::Timeout));
                stop.get_or_insert(Stop::TimedOut(index));
            }
            if step.stopping.is_none()
                && let Some(why) = stop
            {
                let status = if why == Stop::BuildTimedOut { Status::Timeout } else { Status::Cancelled };
                println!("{}: stopping it ({})", job.label, status.as_str());
                interrupt(runner, job, &step.started);
                step.stopping = Some((Instant::now(), status));
            }
            if let Some((since, _)) = step.stopping
                && since.elapsed() > GRACE
            {
                println!(
                    "{}: still running {} s after it was told to stop: killing it",
                    job.label,
                    GRACE.as_secs()
                );
                kill(runner, job, &step.started);
                step.stopping = Some((Instant::now(), step.stopping.unwrap().1));
            }
        }
        let any_running = running.iter().any(Option::is_some);
        let any_startable = outcomes.iter().enumerate().any(|(index, outcome)| {
            outcome.status == Status::Queued
                && waits[index].iter().all(|w| outcomes[*w].status == Status::Success)
        });
        if !any_running && (stop.is_some() || !any_startable) {
            return Ok((outcomes, stop));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stop a step as Cloud Build does: SIGTERM to the container's main process (as `docker stop`
/// sends it; an xtask there leads its group and passes it on as SIGINT to its builds), or, on
/// the host, SIGINT to the step's process group, as a Ctrl-C reaches a job.
fn interrupt(runner: &Runner, job: &Job, started: &Started) {
    match &job.container {
        Some(name) => {
            let sh = sh();
            let _ = runner.run_ignoring_failure(cmd!(sh, "docker kill --signal TERM {name}"));
        }
        None => started.signal_group(libc::SIGINT),
    }
}

/// The end: the container removed, the process group killed.
fn kill(runner: &Runner, job: &Job, started: &Started) {
    if let Some(name) = &job.container {
        let sh = sh();
        let _ = runner.run_ignoring_failure(cmd!(sh, "docker rm --force {name}"));
    }
    started.signal_group(libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_as_cloud_build_reads_it() {
        let steps: Vec<Step> = serde_yaml_ng::from_str(
            "[{id: a, name: i}, {id: b, name: i, waitFor: ['-']}, {id: c, name: i}, \
              {id: d, name: i, waitFor: [a]}, {name: i, waitFor: [b, d]}]",
        )
        .unwrap();
        let waits = dependencies(&steps).unwrap();
        assert_eq!(waits, vec![vec![], vec![], vec![0, 1], vec![0], vec![1, 3]]);
        let bad: Vec<Step> =
            serde_yaml_ng::from_str("[{id: a, name: i, waitFor: [b]}, {id: b, name: i}]").unwrap();
        let err = dependencies(&bad).unwrap_err().to_string();
        assert!(err.contains("step #0") && err.contains("\"b\""), "{err}");
    }
}
