//! A command as the runner takes it: an argument vector made with `xshell::cmd!` (never a
//! string for a shell), and its one-line form for a POSIX shell, which is what the log and a
//! dry run print, so that a pasted plan runs exactly these vectors.

use std::fmt;

/// A fresh shell for `xshell::cmd!`. Only its command building is used: the runner runs every
/// command, from the repository root.
pub fn sh() -> xshell::Shell {
    xshell::Shell::new().expect("the current folder is readable")
}

/// A program, its arguments and the environment variables it gets on top of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub(super) env: Vec<(String, String)>,
    pub(super) program: String,
    pub(super) args: Vec<String>,
}

/// A command from `cmd!`. Every docker command gets `DOCKER_BUILDKIT=1`, as every docker command
/// of the original Makefile had it.
impl From<xshell::Cmd<'_>> for Cmd {
    fn from(cmd: xshell::Cmd<'_>) -> Cmd {
        let command: std::process::Command = cmd.into();
        let text = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
        let program = text(command.get_program());
        let args = command.get_args().map(text).collect();
        let mut env: Vec<(String, String)> =
            command.get_envs().filter_map(|(name, value)| Some((text(name), text(value?)))).collect();
        if program == "docker" && !env.iter().any(|(name, _)| name == "DOCKER_BUILDKIT") {
            env.insert(0, ("DOCKER_BUILDKIT".into(), "1".into()));
        }
        Cmd { env, program, args }
    }
}

impl From<&Cmd> for Cmd {
    fn from(cmd: &Cmd) -> Cmd {
        cmd.clone()
    }
}

impl Cmd {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_puts_environment_first_and_quotes_words() {
        let (sh, label, quote) = (sh(), "a b", "it's");
        let cmd = Cmd::from(xshell::cmd!(sh, "docker build --label {label} {quote}"));
        assert_eq!(cmd.to_string(), r#"DOCKER_BUILDKIT=1 docker build --label 'a b' "it's""#);
        let cmd = Cmd::from(xshell::cmd!(sh, "gcloud compute ssh").env("X", "1"));
        assert_eq!(cmd.to_string(), "X=1 gcloud compute ssh", "only docker gets DOCKER_BUILDKIT");
    }

    #[test]
    fn without_drops_a_flag_and_its_value() {
        let sh = sh();
        let cmd = Cmd::from(xshell::cmd!(sh, "x --push --cache-to ref --tag t --push"));
        assert_eq!(cmd.clone().without("--push", false).arguments(), ["--cache-to", "ref", "--tag", "t"]);
        assert_eq!(cmd.without("--cache-to", true).arguments(), ["--push", "--tag", "t", "--push"]);
    }
}
