//! Where the output of commands goes when several run at once: a line at a time, so that the
//! builds of one image, writing together, never share a line.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Sees each line of a command's output.
pub type Watch = Arc<dyn Fn(&str) + Send + Sync>;

/// Where the output of commands goes when several run at once, line by line: to stderr behind
/// a prefix (`runtime/arm64 | …`, as `docker compose` shows its services), appended to a log,
/// and shown to a watcher (which counts a build's cached steps, say).
#[derive(Clone)]
pub struct Lines {
    pub prefix: String,
    pub log: Option<PathBuf>,
    pub watch: Option<Watch>,
}

impl Lines {
    pub(super) fn line(&self, line: &str) {
        // One write per line, to the log (opened to append) and to stderr, so that the lines of
        // the builds of an image's platforms never mix: `writeln!` writes a line and its end
        // apart, and another build's line could land between them.
        let shown = format!("{} | {line}\n", self.prefix);
        if let Some(log) = &self.log
            && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(log)
        {
            let _ = file.write_all(shown.as_bytes());
        }
        // `eprint!` holds stderr's lock for the whole line.
        eprint!("{shown}");
        if let Some(watch) = &self.watch {
            watch(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builds of an image's platforms write its log at once: each line lands whole, none
    /// lost, none split (a build command is a line of a thousand characters and more).
    #[test]
    fn lines_written_at_once_to_one_log_stay_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("image.log");
        let (threads, each) = (4, 300);
        let line_of =
            |t: usize, i: usize| format!("+ docker buildx build {} {t}:{i}", "--arg value ".repeat(100));
        std::thread::scope(|scope| {
            for t in 0..threads {
                let (log, line_of) = (log.clone(), &line_of);
                scope.spawn(move || {
                    let lines = Lines { prefix: format!("image/{t}"), log: Some(log), watch: None };
                    for i in 0..each {
                        lines.line(&line_of(t, i));
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let mut written: Vec<&str> = text.lines().collect();
        let mut expected: Vec<String> = (0..threads)
            .flat_map(|t| (0..each).map(move |i| (t, i)))
            .map(|(t, i)| format!("image/{t} | {}", line_of(t, i)))
            .collect();
        written.sort_unstable();
        expected.sort_unstable();
        assert!(written == expected, "{} lines written, some split or lost", written.len());
    }
}
