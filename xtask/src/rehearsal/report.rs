//! The end of a rehearsal, as Cloud Build lists a build's steps: a table of each step's ID (or
//! `Step #N`), STATUS and DURATION, and the last lines of a failed step's log.

use std::fmt::Write;
use std::path::Path;

use super::schedule::StepOutcome;

/// The table: one row per step, `names` and `outcomes` in the pipeline's order.
pub fn table(names: &[String], outcomes: &[StepOutcome]) -> String {
    let width = names.iter().map(String::len).chain([2]).max().unwrap_or(2);
    let mut out = format!("{:<width$}  {:<9}  DURATION\n", "ID", "STATUS");
    for (name, outcome) in names.iter().zip(outcomes) {
        let duration = outcome.duration.map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()));
        let _ = writeln!(out, "{name:<width$}  {:<9}  {duration}", outcome.status.as_str());
    }
    out
}

/// The last `lines` lines of the log at `path`.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::super::schedule::Status;
    use super::*;
    use std::time::Duration;

    #[test]
    fn rows_are_aligned() {
        let outcomes = [
            StepOutcome { status: Status::Success, duration: Some(Duration::from_millis(1500)) },
            StepOutcome { status: Status::Queued, duration: None },
        ];
        let table = table(&["setup-ssh".into(), "Step #1".into()], &outcomes);
        assert_eq!(
            table,
            "ID         STATUS     DURATION\nsetup-ssh  SUCCESS    1.5 s\nStep #1    QUEUED     -\n"
        );
    }
}
