//! Every external command passes through here: it is an argument vector (never a string for a
//! shell), built by the tasks with `xshell::cmd!` so that it reads like the original Makefile's line it
//! replaces, logged before it runs or printed instead of run for `--dry-run`, and run with duct
//! (output inherited, or appended to a log, or in the background); a failure names the command
//! and keeps its exit status (`Failure`: `main` exits with it, as `make` would).

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};

use crate::failure::{Failure, Kind};

mod cmd;
mod installed;
mod lines;
pub use cmd::{Cmd, sh};
pub use installed::{ensure_installed, is_installed};
pub use lines::{Lines, Watch};

/// How long `run_retrying` waits before each try after the first: a registry's 5xx and an
/// engine's internal race pass within seconds, and a build that runs again is mostly cache hits.
pub const RETRY_WAITS: [std::time::Duration; 2] =
    [std::time::Duration::from_secs(1), std::time::Duration::from_secs(4)];

/// Runs commands from the repository root, or prints them for a dry run.
#[derive(Clone)]
pub struct Runner {
    dry_run: bool,
    root: PathBuf,
    /// Where commands' output and the command log go instead of straight to the terminal
    /// (parallel work).
    lines: Option<Lines>,
}

impl Runner {
    pub fn new(dry_run: bool, root: PathBuf) -> Runner {
        Runner { dry_run, root, lines: None }
    }

    /// The same runner, with everything its commands print, and the command log, sent through
    /// `lines`: for work that runs in parallel with other work.
    pub fn with_lines(&self, lines: Lines) -> Runner {
        Runner { lines: Some(lines), ..self.clone() }
    }

    /// The same runner, its commands run from `folder` instead of the repository root.
    pub fn in_folder(&self, folder: PathBuf) -> Runner {
        Runner { root: folder, ..self.clone() }
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Run `cmd`, streaming its output (to the log, if any); a non-zero exit is an error naming it.
    pub fn run(&self, cmd: impl Into<Cmd>) -> Result<()> {
        let cmd = cmd.into();
        if self.print_if_dry(&cmd) {
            return Ok(());
        }
        if self.lines.is_none() {
            // Straight to the terminal: progress bars and prompts work.
            return Ok(check(&cmd, self.finished(&cmd, self.start(&cmd)?.run())?.status)?);
        }
        Ok(self.stream(&cmd, &mut |_| {})?)
    }

    /// Run `cmd` as `run` does, and when it fails for a cause that passes (`transient` names
    /// one in a line of its output: a registry's 503, say), run it again: at most
    /// `RETRY_WAITS.len()` more times, waiting that long first. Any other failure is final at
    /// once. Only for commands that may run twice: a build that pushes, a merge.
    pub fn run_retrying(
        &self,
        cmd: impl Into<Cmd>,
        transient: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Failure> {
        self.run_retrying_while(cmd, transient, || Ok(()))
    }

    /// `run_retrying` of a command that needs something else to stay there (a build, its node's
    /// engine): after each failure `there` is asked first, and when it fails its failure is
    /// returned at once, instead of a retry or the command's own failure. A failure whose cause
    /// passes is `Kind::Transient` once the tries are spent.
    pub fn run_retrying_while(
        &self,
        cmd: impl Into<Cmd>,
        transient: impl Fn(&str) -> Option<String>,
        there: impl Fn() -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        let cmd = cmd.into();
        if self.print_if_dry(&cmd) {
            return Ok(());
        }
        let mut tries = 1;
        loop {
            // A build or merge that has not started by a Ctrl-C does not start after it (the
            // way out's own commands run through `run`).
            if crate::interrupt::requested() {
                return Err(Failure::interrupted(format!(
                    "interrupted (Ctrl-C or SIGTERM) before `{cmd}` started"
                )));
            }
            let mut cause = None;
            let result = self.stream(&cmd, &mut |line| {
                if cause.is_none() {
                    cause = transient(line);
                }
            });
            let Err(err) = result else { return Ok(()) };
            if !crate::interrupt::requested() {
                there()?;
            }
            let cause = cause.filter(|_| !crate::interrupt::requested());
            let tried = |failure: Failure| match tries {
                1 => failure,
                _ => failure.context(format!("tried {tries} times")),
            };
            let Some(cause) = cause else { return Err(tried(err)) };
            let Some(wait) = RETRY_WAITS.get(tries - 1) else {
                let kind = Kind::Transient { cause, exit_code: err.exit_code() };
                return Err(tried(Failure::new(kind, err.to_string())));
            };
            self.log_line(&format!(
                "a failure that passes ({cause}): trying again in {} s, try {} of {}",
                wait.as_secs_f64(),
                tries + 1,
                RETRY_WAITS.len() + 1
            ));
            std::thread::sleep(*wait);
            tries += 1;
        }
    }

    /// Run `cmd`, each line of its output through `lines` (or to stderr) and `see`.
    fn stream(&self, cmd: &Cmd, see: &mut dyn FnMut(&str)) -> Result<(), Failure> {
        let reader = self
            .start(cmd)?
            .stdin_null()
            .stderr_to_stdout()
            .reader()
            .with_context(|| format!("cannot start `{cmd}`"))?;
        let mut buffered = std::io::BufReader::new(&reader);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = buffered
                .read_until(b'\n', &mut line)
                .with_context(|| format!("reading the output of `{cmd}`"))?;
            if read == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            match &self.lines {
                Some(lines) => lines.line(text),
                None => eprintln!("{text}"),
            }
            see(text);
        }
        let output = reader.try_wait().with_context(|| format!("waiting for `{cmd}`"))?;
        check(cmd, output.expect("the output ended, so the command did").status)
    }

    /// Run `cmd` and return its standard output (none in a dry run, which only shows it).
    pub fn capture(&self, cmd: impl Into<Cmd>) -> Result<Option<String>> {
        let cmd = cmd.into();
        if self.print_if_dry(&cmd) {
            return Ok(None);
        }
        let expression = self.stderr_to_log(self.start(&cmd)?)?.stdin_null().stdout_capture();
        let output = self.finished(&cmd, expression.run())?;
        check(&cmd, output.status)?;
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    /// Run `cmd` whose failure does not matter (it only shows something to the user).
    pub fn run_ignoring_failure(&self, cmd: impl Into<Cmd>) -> Result<()> {
        let cmd = cmd.into();
        if let Err(err) = self.run(&cmd) {
            self.log_line(&format!("(ignored) {err:#}"));
        }
        Ok(())
    }

    /// Run the probe `cmd` quietly and go on with `then` when it succeeds, `otherwise` when it
    /// fails. A dry run cannot know the answer, so it prints the probe and both branches.
    pub fn branch(
        &self,
        probe: impl Into<Cmd>,
        then: impl FnOnce(&Runner) -> Result<()>,
        otherwise: impl FnOnce(&Runner) -> Result<()>,
    ) -> Result<()> {
        let probe = probe.into();
        if self.print_if_dry(&probe) {
            self.say("if that succeeds:");
            then(self)?;
            self.say("if that fails:");
            return otherwise(self);
        }
        let output = self.start(&probe)?.stdout_null().stderr_null().run();
        if self.finished(&probe, output)?.status.success() { then(self) } else { otherwise(self) }
    }

    /// Run a read-only query and return its standard output, even in a dry run (a dry run still
    /// checks, it only changes nothing). The output is never logged: it may be a secret.
    pub fn query(&self, cmd: impl Into<Cmd>, stdin: Option<&str>) -> Result<String> {
        let cmd = cmd.into();
        let expression = self.start(&cmd)?.stdout_capture().stderr_capture();
        let expression = match stdin {
            Some(input) => expression.stdin_bytes(input),
            None => expression.stdin_null(),
        };
        let output = self.finished(&cmd, expression.run())?;
        check(&cmd, output.status)
            .with_context(|| String::from_utf8_lossy(&output.stderr).trim().to_string())?;
        String::from_utf8(output.stdout).with_context(|| format!("`{cmd}` printed non-UTF-8 output"))
    }

    /// Start `cmd` in the background, detached from us, its output going to `log`. Returns its
    /// process id (none in a dry run).
    pub fn spawn_background(&self, cmd: impl Into<Cmd>, log: &Path) -> Result<Option<u32>> {
        let cmd = cmd.into();
        if self.print_if_dry(&cmd) {
            return Ok(None);
        }
        self.log_line(&format!("+ {cmd} >{} 2>&1 &", log.display()));
        Ok(self.start_in_group(&cmd, log)?.pids().first().copied())
    }

    /// Start `cmd` in a process group of its own (a signal to the group reaches all of it; a
    /// Ctrl-C meant for us does not), its output (stdout and stderr) written to `log`, and
    /// return it to be waited on or signalled (none in a dry run, which prints it).
    pub fn spawn_logged(&self, cmd: impl Into<Cmd>, log: &Path) -> Result<Option<Started>> {
        let cmd = cmd.into();
        if self.print_if_dry(&cmd) {
            return Ok(None);
        }
        self.log_line(&format!("+ {cmd} >{} 2>&1", log.display()));
        let handle = self.start_in_group(&cmd, log)?;
        let pid = *handle.pids().first().expect("a started command has a process");
        Ok(Some(Started { handle, pid, command: cmd.to_string() }))
    }

    /// `cmd` started in a process group of its own, its output into `log`.
    fn start_in_group(&self, cmd: &Cmd, log: &Path) -> Result<duct::Handle> {
        ensure_installed(&cmd.program)?;
        self.expression(cmd)
            .stdin_null()
            // Inner redirections apply last: stderr joins stdout once stdout is the log.
            .stderr_to_stdout()
            .stdout_path(log)
            .before_spawn(|command| {
                command.process_group(0);
                Ok(())
            })
            .start()
            .with_context(|| format!("cannot start `{cmd}`"))
    }

    /// Run the probe `cmd` until its standard output satisfies `accept` (exit status 0 and
    /// `accept(stdout)`), at most `tries` times, `interval` apart. A dry run shows the probe
    /// once, with the bound.
    pub fn poll(
        &self,
        what: &str,
        cmd: impl Into<Cmd>,
        (tries, interval): (u32, std::time::Duration),
        accept: impl Fn(&str) -> bool,
    ) -> Result<()> {
        let cmd = cmd.into();
        if self.dry_run {
            self.say(&format!(
                "repeated until {what}, at most {} tries {} s apart:",
                tries,
                interval.as_secs_f64()
            ));
            println!("[dry-run] {cmd}");
            return Ok(());
        }
        ensure_installed(&cmd.program)?;
        let mut last = String::new();
        for attempt in 1..=tries {
            if crate::interrupt::requested() {
                bail!("interrupted while waiting until {what}");
            }
            self.log_line(&format!("+ {cmd}  (waiting until {what}: try {attempt}/{})", tries));
            let output = self
                .expression(&cmd)
                .stdin_null()
                .stdout_capture()
                .stderr_null()
                .run()
                .with_context(|| format!("cannot start `{cmd}`"))?;
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && accept(&stdout) {
                return Ok(());
            }
            last = if output.status.success() {
                format!("it said {stdout:?}")
            } else {
                format!("it failed ({})", output.status)
            };
            if attempt < tries {
                std::thread::sleep(interval);
            }
        }
        Err(anyhow!(
            "gave up waiting until {what} after {} tries over {:.0} s; the last time {last}: `{cmd}`",
            tries,
            interval.as_secs_f64() * f64::from(tries.saturating_sub(1))
        ))
    }

    /// `job` for each of `jobs`, all at once, each on a thread of its own; a dry run does them
    /// one after another, in order, so that its plan reads top to bottom. Either way the jobs
    /// and the code that does them are the same: the plan is the run's. The results come in
    /// the order of `jobs`.
    pub fn at_once<J: Sync, T: Send>(&self, jobs: &[J], job: impl Fn(&J) -> T + Sync) -> Vec<T> {
        if self.dry_run {
            return jobs.iter().map(&job).collect();
        }
        let job = &job;
        std::thread::scope(|scope| {
            let running: Vec<_> = jobs.iter().map(|each| scope.spawn(move || job(each))).collect();
            running.into_iter().map(|thread| thread.join().expect("a job panicked")).collect()
        })
    }

    /// A message for the user: a shell comment in a dry run, so the plan stays pasteable.
    pub fn say(&self, message: &str) {
        if self.dry_run {
            println!("[dry-run] # {message}");
        } else if self.lines.is_some() {
            self.log_line(message);
        } else {
            println!("{message}");
        }
    }

    fn print_if_dry(&self, cmd: &Cmd) -> bool {
        if self.dry_run {
            println!("[dry-run] {cmd}");
        }
        self.dry_run
    }

    /// `+ <command>` on stderr (or in the log), then the command, ready to run from the
    /// repository root, its exit status unchecked (`check` names the command).
    fn start(&self, cmd: &Cmd) -> Result<duct::Expression> {
        ensure_installed(&cmd.program)?;
        self.log_line(&format!("+ {cmd}"));
        Ok(self.expression(cmd))
    }

    /// The stderr of a command whose stdout the caller captures, appended to the log when
    /// there is one (not prefixed: a captured command's stderr is seldom more than an error).
    fn stderr_to_log(&self, expression: duct::Expression) -> Result<duct::Expression> {
        let Some(log) = self.lines.as_ref().and_then(|lines| lines.log.as_ref()) else {
            return Ok(expression);
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the log {}", log.display()))?;
        Ok(expression.stderr_file(file))
    }

    fn expression(&self, cmd: &Cmd) -> duct::Expression {
        let expression = duct::cmd(&cmd.program, &cmd.args).dir(&self.root).unchecked();
        cmd.env.iter().fold(expression, |expression, (name, value)| expression.env(name, value))
    }

    fn finished(
        &self,
        cmd: &Cmd,
        output: std::io::Result<std::process::Output>,
    ) -> Result<std::process::Output> {
        output.with_context(|| format!("cannot start `{cmd}`"))
    }

    fn log_line(&self, line: &str) {
        match &self.lines {
            Some(lines) => lines.line(line),
            None => eprintln!("{line}"),
        }
    }
}

/// A command started by `Runner::spawn_logged`, the leader of its own process group.
pub struct Started {
    handle: duct::Handle,
    pid: u32,
    command: String,
}

impl Started {
    /// Send `signal` (`libc::SIGINT`, say) to its whole process group.
    pub fn signal_group(&self, signal: i32) {
        let group = libc::pid_t::try_from(self.pid).expect("a process id fits a pid_t");
        // SAFETY: killpg takes two integers and touches no memory of ours; a group that is gone
        // already is an ESRCH.
        unsafe {
            libc::killpg(group, signal);
        }
    }

    /// Its exit status, once it ended (without blocking).
    pub fn try_wait(&self) -> Result<Option<std::process::ExitStatus>> {
        let output = self.handle.try_wait().with_context(|| format!("waiting for `{}`", self.command))?;
        Ok(output.map(|output| output.status))
    }
}

fn check(cmd: &Cmd, status: std::process::ExitStatus) -> Result<(), Failure> {
    if status.success() {
        return Ok(());
    }
    let exit_code = status.code().unwrap_or_else(|| {
        // Killed by a signal: report it the way a shell does.
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Err(Failure::command(&cmd.to_string(), exit_code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_runner(dir: &Path) -> Runner {
        let lines = Lines { prefix: "test".into(), log: Some(dir.join("log")), watch: None };
        Runner::new(false, dir.to_path_buf()).with_lines(lines)
    }

    fn shell(script: &str) -> Cmd {
        let sh = sh();
        Cmd::from(xshell::cmd!(sh, "sh -c {script}"))
    }

    #[test]
    fn a_failure_that_does_not_pass_is_permanent_with_the_commands_exit_status_and_runs_once() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!(
            "echo x >> {}; echo 'ERROR: process \"/bin/sh -c false\" did not complete successfully'; exit 3",
            count.display()
        );
        let failure = quiet_runner(dir.path())
            .run_retrying(shell(&script), crate::platform_build::failure::transient_cause)
            .unwrap_err();
        assert_eq!(failure.kind, Kind::Permanent { exit_code: Some(3) });
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "run once");
    }

    #[test]
    fn a_node_that_stops_answering_is_the_failure_instead_of_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let count = dir.path().join("count");
        let script = format!(
            "echo x >> {}; echo 'ERROR: failed to push: unexpected status: 503 Service Unavailable'; exit 1",
            count.display()
        );
        let lost = crate::failure::NodeLost { node: "arm_node".into(), why: "connection refused".into() };
        let failure = quiet_runner(dir.path())
            .run_retrying_while(shell(&script), crate::platform_build::failure::transient_cause, || {
                Err(Failure::node_lost(lost.clone()))
            })
            .unwrap_err();
        assert_eq!(failure.lost_node(), Some(&lost));
        assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "not tried again");
    }
}
