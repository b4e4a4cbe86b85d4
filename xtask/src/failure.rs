//! The one failure model of a run: what the code that acts on a failure decides by (try it
//! again, move the build to another node, fail the image, exit with a command's status) is a
//! `Kind`, read from a `Failure`'s field, never by looking for a type inside an
//! `anyhow::Error`. anyhow stays the carrier of context everywhere else: a `Failure` converts
//! into one (it is an ordinary error) and back (`From<anyhow::Error>`, the one place that looks
//! inside an error's chain, so that a command's exit status survives the layers of context a
//! task adds on the way up).
//!
//! A `Failure` is its kind and its whole message, `{:#}` of what failed with every context, as
//! the user reads it. It is `Clone`, so that one failure can be told to the table, to the
//! image's children and to the run's exit status alike.

use std::fmt;

/// What a failure means to the code that decides what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Failed for a cause that passes (a registry's 5xx, a broken connection, the engine's
    /// snapshot race): another try may succeed. Still the kind once the tries are spent, with
    /// the exit status of the command's last try.
    Transient { cause: String, exit_code: Option<i32> },
    /// The work's own failure (a failing `RUN` step, a refused argument, a missing file):
    /// another try fails the same way. The exit status of the command that failed, if one did.
    Permanent { exit_code: Option<i32> },
    /// The node the work ran on no longer answers: not the work's own failure, so it moves to
    /// another node of its platform.
    NodeLost(NodeLost),
    /// A registry did not do what it was asked, after the registry code's own retries (which
    /// `registry::retry` decides on the transport's own record, `registry::http::Failure`);
    /// the HTTP status, when it answered at all.
    Registry { status: Option<u16> },
    /// Ctrl-C or SIGTERM came first: the work did not start or was cut short.
    Interrupted,
}

/// A node that no longer answers: its engine went away (connection refused or closed, ssh
/// exiting 255) or its VM did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLost {
    /// The node, as the table names it.
    pub node: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: Kind,
    /// What failed, with its context, on one line or several.
    message: String,
}

impl Failure {
    pub fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into() }
    }

    /// The work's own failure, not a command's.
    pub fn permanent(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Permanent { exit_code: None }, message)
    }

    /// A command that ran and exited with `exit_code`.
    pub fn command(command: &str, exit_code: i32) -> Failure {
        Failure::new(
            Kind::Permanent { exit_code: Some(exit_code) },
            format!("command failed with exit status {exit_code}: {command}"),
        )
    }

    pub fn node_lost(lost: NodeLost) -> Failure {
        let message = format!("{} no longer answers: {}", lost.node, lost.why);
        Failure::new(Kind::NodeLost(lost), message)
    }

    pub fn interrupted(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Interrupted, message)
    }

    /// The same failure, `context` in front of its message (as anyhow's `context` shows it).
    pub fn context(self, context: impl fmt::Display) -> Failure {
        Failure { message: format!("{context}: {}", self.message), ..self }
    }

    /// This failure, and a second one after it on the way out (a VM that could not be stopped
    /// after a failed build): the first stays the one decided on, with its exit status; the
    /// second is told after it.
    pub fn and_then(self, then: impl Into<Failure>) -> Failure {
        let then = then.into();
        Failure { message: format!("{}\nand then: {}", self.message, then.message), ..self }
    }

    /// The node that was lost, when that is what happened.
    pub fn lost_node(&self) -> Option<&NodeLost> {
        match &self.kind {
            Kind::NodeLost(lost) => Some(lost),
            _ => None,
        }
    }

    /// The exit status of the command that failed, if one did.
    pub fn exit_code(&self) -> Option<i32> {
        match self.kind {
            Kind::Permanent { exit_code } | Kind::Transient { exit_code, .. } => exit_code,
            Kind::NodeLost(_) | Kind::Registry { .. } | Kind::Interrupted => None,
        }
    }

    /// The status the process exits with: the failing command's, else 1.
    pub fn exit_status(&self) -> u8 {
        let code = self.exit_code().unwrap_or(1);
        u8::try_from(code).ok().filter(|code| *code != 0).unwrap_or(1)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// An error of code that carries its context with anyhow, made a `Failure` again: the kind of
/// the `Failure` it was made from, if it was (however much context was added to it since),
/// else the work's own; the message is the whole chain's.
impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Failure {
        let kind = err.chain().find_map(|cause| cause.downcast_ref::<Failure>()).map(|f| f.kind.clone());
        let message = format!("{err:#}");
        Failure { kind: kind.unwrap_or(Kind::Permanent { exit_code: None }), message }
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn a_commands_exit_status_survives_the_context_added_on_the_way_up() {
        let failed: anyhow::Result<()> = Err(Failure::command("docker buildx build .", 17).into());
        let err = failed.context("the linux/arm64 build failed").context("publishing runtime").unwrap_err();
        let failure = Failure::from(err);
        assert_eq!(failure.kind, Kind::Permanent { exit_code: Some(17) });
        assert_eq!(failure.exit_status(), 17);
        assert_eq!(
            failure.to_string(),
            "publishing runtime: the linux/arm64 build failed: command failed with exit status 17: docker buildx build ."
        );
    }

    #[test]
    fn an_error_that_never_was_a_failure_is_the_works_own_and_exits_1() {
        let failure = Failure::from(anyhow::anyhow!("no such file").context("reading images.toml"));
        assert_eq!(failure.kind, Kind::Permanent { exit_code: None });
        assert_eq!(failure.exit_status(), 1);
        assert_eq!(failure.to_string(), "reading images.toml: no such file");
    }

    #[test]
    fn a_second_failure_on_the_way_out_keeps_the_first_ones_kind() {
        let lost = NodeLost { node: "arm_node".into(), why: "connection refused".into() };
        let failure = Failure::node_lost(lost.clone())
            .and_then(anyhow::anyhow!("exit 1").context("builder-arm64 could not be stopped"));
        assert_eq!(failure.lost_node(), Some(&lost));
        assert_eq!(
            failure.to_string(),
            "arm_node no longer answers: connection refused\nand then: builder-arm64 could not be stopped: exit 1"
        );
        // An exit status above 255, or 0, is not a status a process can exit with: 1.
        assert_eq!(Failure::command("x", 256).exit_status(), 1);
        assert_eq!(Failure::command("x", 0).exit_status(), 1);
    }
}
