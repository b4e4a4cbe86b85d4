//! Every external command passes through here: it is an argument vector (never a string for a
//! shell), it is logged before it runs or printed instead of run for `--dry-run`, and a failure
//! names the command and keeps its exit status.

use std::fmt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};

/// A program, its arguments and the environment variables it gets on top of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    env: Vec<(String, String)>,
    program: String,
    args: Vec<String>,
}

impl Cmd {
    pub fn new(program: &str) -> Cmd {
        Cmd { env: Vec::new(), program: program.to_string(), args: Vec::new() }
    }

    /// `docker`, with BuildKit on as every docker command of the Makefile had it.
    pub fn docker() -> Cmd {
        Cmd::new("docker").env("DOCKER_BUILDKIT", "1")
    }

    pub fn gcloud() -> Cmd {
        Cmd::new("gcloud")
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Cmd {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Cmd {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn program(&self) -> &str {
        &self.program
    }

    #[cfg(test)]
    pub fn arguments(&self) -> &[String] {
        &self.args
    }

    /// The same command without `flag` and, when `takes_value`, the argument after it.
    pub fn without(mut self, flag: &str, takes_value: bool) -> Cmd {
        let mut args = Vec::with_capacity(self.args.len());
        let mut iter = std::mem::take(&mut self.args).into_iter();
        while let Some(arg) = iter.next() {
            if arg == flag {
                if takes_value {
                    iter.next();
                }
            } else {
                args.push(arg);
            }
        }
        self.args = args;
        self
    }
}

/// The command as one line for a POSIX shell: environment assignments first, each word quoted
/// where it needs to be, so that pasting the line runs exactly this argument vector.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::with_capacity(self.env.len() + 1 + self.args.len());
        for (name, value) in &self.env {
            words.push(format!("{name}={}", quote(value)));
        }
        words.push(quote(&self.program));
        words.extend(self.args.iter().map(|arg| quote(arg)));
        f.write_str(&words.join(" "))
    }
}

fn quote(word: &str) -> String {
    // A NUL byte cannot be in an argument of a real process; show it rather than fail.
    shlex::try_quote(word).map(|q| q.into_owned()).unwrap_or_else(|_| format!("{word:?}"))
}

/// A command that ran and failed. `main` exits with its status, as `make` would.
#[derive(Debug)]
pub struct CommandFailed {
    pub command: String,
    pub exit_code: i32,
}

impl fmt::Display for CommandFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "command failed with exit status {}: {}", self.exit_code, self.command)
    }
}

impl std::error::Error for CommandFailed {}

/// Runs commands from the repository root, or prints them for a dry run.
#[derive(Clone)]
pub struct Runner {
    dry_run: bool,
    root: PathBuf,
    /// Where commands' output and the command log go instead of the terminal (parallel work).
    log: Option<PathBuf>,
}

impl Runner {
    pub fn new(dry_run: bool, root: PathBuf) -> Runner {
        Runner { dry_run, root, log: None }
    }

    /// The same runner, with everything its commands print (and the command log) appended to
    /// `log` instead of shown: for work that runs in parallel with other work.
    pub fn with_log(&self, log: PathBuf) -> Runner {
        Runner { log: Some(log), ..self.clone() }
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Run `cmd`, streaming its output; a non-zero exit is an error naming it.
    pub fn run(&self, cmd: &Cmd) -> Result<()> {
        if self.print_if_dry(cmd) {
            return Ok(());
        }
        let (stdout, stderr) = self.outputs()?;
        let status = self.spawn(cmd, stdout, stderr)?;
        check(cmd, status)
    }

    /// Run `cmd` and return its standard output (none in a dry run, which only shows it).
    pub fn capture(&self, cmd: &Cmd) -> Result<Option<String>> {
        if self.print_if_dry(cmd) {
            return Ok(None);
        }
        ensure_installed(cmd.program())?;
        self.log_command(cmd);
        let (_, stderr) = self.outputs()?;
        let output = self
            .command(cmd)
            .stdin(Stdio::null())
            .stderr(stderr)
            .output()
            .with_context(|| format!("cannot start `{cmd}`"))?;
        check(cmd, output.status)?;
        Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()))
    }

    fn outputs(&self) -> Result<(Stdio, Stdio)> {
        let Some(log) = &self.log else { return Ok((Stdio::inherit(), Stdio::inherit())) };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open the log {}", log.display()))?;
        Ok((file.try_clone()?.into(), file.into()))
    }

    /// `+ <command>` before it runs: on stderr, or in the log.
    fn log_command(&self, cmd: &Cmd) {
        self.log_line(&format!("+ {cmd}"));
    }

    fn log_line(&self, line: &str) {
        match &self.log {
            Some(log) => {
                use std::io::Write;
                if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log) {
                    let _ = writeln!(file, "{line}");
                }
            }
            None => eprintln!("{line}"),
        }
    }

    /// Run `cmd` whose failure does not matter (it only shows something to the user).
    pub fn run_ignoring_failure(&self, cmd: &Cmd) -> Result<()> {
        if self.print_if_dry(cmd) {
            return Ok(());
        }
        let (stdout, stderr) = self.outputs()?;
        if let Err(err) = self.spawn(cmd, stdout, stderr).and_then(|s| check(cmd, s)) {
            self.log_line(&format!("(ignored) {err:#}"));
        }
        Ok(())
    }

    /// Run the probe `cmd` quietly and go on with `then` when it succeeds, `otherwise` when it
    /// fails. A dry run cannot know the answer, so it prints the probe and both branches.
    pub fn branch(
        &self,
        probe: &Cmd,
        then: impl FnOnce(&Runner) -> Result<()>,
        otherwise: impl FnOnce(&Runner) -> Result<()>,
    ) -> Result<()> {
        if self.print_if_dry(probe) {
            self.say("if that succeeds:");
            then(self)?;
            self.say("if that fails:");
            return otherwise(self);
        }
        let status = self.spawn(probe, Stdio::null(), Stdio::null())?;
        if status.success() { then(self) } else { otherwise(self) }
    }

    /// Run a read-only query and return its standard output, even in a dry run (a dry run still
    /// checks, it only changes nothing). The output is never logged: it may be a secret.
    pub fn query(&self, cmd: &Cmd, stdin: Option<&str>) -> Result<String> {
        ensure_installed(cmd.program())?;
        self.log_command(cmd);
        let mut child = self
            .command(cmd)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start `{cmd}`"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            pipe.write_all(input.as_bytes()).with_context(|| format!("cannot write to `{cmd}`"))?;
        }
        let output = child.wait_with_output().with_context(|| format!("cannot run `{cmd}`"))?;
        check(cmd, output.status)
            .with_context(|| String::from_utf8_lossy(&output.stderr).trim().to_string())?;
        String::from_utf8(output.stdout).with_context(|| format!("`{cmd}` printed non-UTF-8 output"))
    }

    /// Start `cmd` in the background, detached from us, its output going to `log`. Returns its
    /// process id (none in a dry run).
    pub fn spawn_background(&self, cmd: &Cmd, log: &Path) -> Result<Option<u32>> {
        if self.print_if_dry(cmd) {
            return Ok(None);
        }
        ensure_installed(cmd.program())?;
        self.log_line(&format!("+ {cmd} >{} 2>&1 &", log.display()));
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = self
            .command(cmd)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0) // not killed by a Ctrl-C meant for us
            .spawn()
            .with_context(|| format!("cannot start `{cmd}`"))?;
        Ok(Some(child.id()))
    }

    /// Run the probe `cmd` until its standard output satisfies `accept` (exit status 0 and
    /// `accept(stdout)`), at most `wait.tries` times, `wait.interval` apart. A dry run shows the
    /// probe once, with the bound.
    pub fn poll(&self, what: &str, cmd: &Cmd, wait: &Wait, accept: impl Fn(&str) -> bool) -> Result<()> {
        if self.dry_run {
            self.say(&format!(
                "repeated until {what}, at most {} tries {} s apart:",
                wait.tries, wait.interval_secs
            ));
            println!("[dry-run] {cmd}");
            return Ok(());
        }
        ensure_installed(cmd.program())?;
        let mut last = String::new();
        for attempt in 1..=wait.tries {
            self.log_line(&format!("+ {cmd}  (waiting until {what}: try {attempt}/{})", wait.tries));
            let output = self
                .command(cmd)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
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
            if attempt < wait.tries {
                std::thread::sleep(wait.interval());
            }
        }
        Err(anyhow!(
            "gave up waiting until {what} after {} tries over {:.0} s; the last time {last}: `{cmd}`",
            wait.tries,
            wait.interval().as_secs_f64() * f64::from(wait.tries.saturating_sub(1))
        ))
    }

    /// A message for the user: a shell comment in a dry run, so the plan stays pasteable.
    pub fn say(&self, message: &str) {
        if self.dry_run {
            println!("[dry-run] # {message}");
        } else if self.log.is_some() {
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

    fn spawn(&self, cmd: &Cmd, stdout: Stdio, stderr: Stdio) -> Result<std::process::ExitStatus> {
        ensure_installed(cmd.program())?;
        self.log_command(cmd);
        self.command(cmd)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .with_context(|| format!("cannot start `{cmd}`"))
    }

    fn command(&self, cmd: &Cmd) -> Command {
        let mut command = Command::new(&cmd.program);
        command.args(&cmd.args).current_dir(&self.root);
        for (name, value) in &cmd.env {
            command.env(name, value);
        }
        command
    }
}

/// How long to wait for something: tries and the pause between them.
#[derive(clap::Args, Debug, Clone)]
pub struct Wait {
    /// How many times to check before giving up
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..))]
    pub tries: u32,
    /// Seconds between two checks
    #[arg(long = "interval", default_value_t = 5.0)]
    pub interval_secs: f64,
}

impl Wait {
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs.max(0.0))
    }
}

fn check(cmd: &Cmd, status: std::process::ExitStatus) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let exit_code = status.code().unwrap_or_else(|| {
        // Killed by a signal: report it the way a shell does.
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    Err(CommandFailed { command: cmd.to_string(), exit_code }.into())
}

/// Fail early, naming the program and how to install it, when it is not on `PATH`.
pub fn ensure_installed(program: &str) -> Result<()> {
    which::which(program)
        .map(drop)
        .map_err(|_| anyhow!("`{program}` is not installed or not on PATH. {}", install_hint(program)))
}

pub fn is_installed(program: &str) -> bool {
    which::which(program).is_ok()
}

fn install_hint(program: &str) -> &'static str {
    match program {
        "docker" => {
            "Install Docker Engine (https://docs.docker.com/engine/install/) or Docker Desktop, \
             which includes the buildx plugin."
        }
        "gcloud" => "Install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install",
        "docker-registry" => "On Debian or Ubuntu: `apt-get install docker-registry`.",
        "skopeo" => "On Debian or Ubuntu: `apt-get install skopeo`.",
        _ => "Install it and make sure it is on PATH.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_environment_first_and_quotes_words() {
        let cmd = Cmd::docker().args(["build", "--label", "a b", "it's"]);
        assert_eq!(cmd.to_string(), r#"DOCKER_BUILDKIT=1 docker build --label 'a b' "it's""#);
    }

    #[test]
    fn without_drops_a_flag_and_its_value() {
        let cmd = Cmd::new("x").args(["--push", "--cache-to", "ref", "--tag", "t", "--push"]);
        assert_eq!(cmd.clone().without("--push", false).arguments(), ["--cache-to", "ref", "--tag", "t"]);
        assert_eq!(cmd.without("--cache-to", true).arguments(), ["--push", "--tag", "t", "--push"]);
    }
}
