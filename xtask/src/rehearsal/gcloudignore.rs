//! `.gcloudignore`: which files of the working tree `gcloud builds submit` leaves out of the
//! upload, so that the rehearsal's workspace holds what Cloud Build's would. The syntax is
//! gitignore's: one pattern a line, `#` comments, `!` re-includes, the last matching pattern
//! decides, a trailing `/` matches folders only, a pattern with a `/` before its end is anchored at
//! the root while one without matches a name at any depth, and a left-out folder's files stay out.
//! `#!include:FILE` reads FILE's patterns there (gcloud's `#!include:.gitignore`). Without a
//! `.gcloudignore`, gcloud's default applies: `.gcloudignore`, `.git`, `.gitignore`, and the
//! `.gitignore`'s patterns.

use std::path::Path;

use anyhow::{Context, Result};

use crate::dockerignore::glob_matches;

#[derive(Debug, Default, Clone)]
pub struct GcloudIgnore {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    glob: String,
    negated: bool,
    dir_only: bool,
    /// Matched against the whole path, not only the name.
    anchored: bool,
}

impl GcloudIgnore {
    /// The rules of the tree at `root`: its `.gcloudignore`, else gcloud's default.
    pub fn for_tree(root: &Path) -> Result<GcloudIgnore> {
        let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
        let path = root.join(".gcloudignore");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                ".gcloudignore\n.git\n.gitignore\n#!include:.gitignore\n".to_string()
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        Ok(GcloudIgnore::parse(&text, &read))
    }

    /// `include` reads the file an `#!include:` line names (`None`: no such file).
    pub fn parse(text: &str, include: &dyn Fn(&str) -> Option<String>) -> GcloudIgnore {
        let mut rules = Vec::new();
        for line in text.lines() {
            if let Some(file) = line.strip_prefix("#!include:") {
                if let Some(included) = include(file.trim()) {
                    rules.extend(GcloudIgnore::parse(&included, &|_| None).rules);
                }
                continue;
            }
            rules.extend(Rule::parse(line));
        }
        GcloudIgnore { rules }
    }

    /// Whether `path` (relative to the root, `/`-separated) is left out, its folders being in.
    pub fn excludes(&self, path: &str, is_dir: bool) -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        let mut excluded = false;
        for rule in &self.rules {
            if rule.negated != excluded || (rule.dir_only && !is_dir) {
                continue;
            }
            let matched =
                if rule.anchored { glob_matches(&rule.glob, path) } else { glob_matches(&rule.glob, name) };
            if matched {
                excluded = !rule.negated;
            }
        }
        excluded
    }

    /// The patterns, as written (for messages).
    pub fn describe(&self) -> String {
        let shown: Vec<String> = self
            .rules
            .iter()
            .map(|r| {
                format!("{}{}{}", if r.negated { "!" } else { "" }, r.glob, if r.dir_only { "/" } else { "" })
            })
            .collect();
        shown.join(", ")
    }
}

impl Rule {
    fn parse(line: &str) -> Option<Rule> {
        let line = line.trim_end_matches([' ', '\t', '\r']);
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (negated, pattern) = match line.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, line.strip_prefix('\\').filter(|r| r.starts_with(['#', '!'])).unwrap_or(line)),
        };
        let (dir_only, pattern) = match pattern.strip_suffix('/') {
            Some(rest) => (true, rest),
            None => (false, pattern),
        };
        let anchored = pattern.contains('/');
        let glob = pattern.strip_prefix('/').unwrap_or(pattern).to_string();
        (!glob.is_empty()).then_some(Rule { glob, negated, dir_only, anchored })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> GcloudIgnore {
        GcloudIgnore::parse(text, &|file| (file == ".gitignore").then(|| "*.log\n/build/\n".to_string()))
    }

    #[test]
    fn gitignore_rules() {
        let rules =
            ignore("# comment\n.git\ntarget/\n/top.txt\ndocs/*.md\n!docs/keep.md\n**/deep\n\\#hash\n");
        let out = |path: &str, dir: bool| rules.excludes(path, dir);
        assert!(out(".git", true) && out("sub/.git", false), "a name matches at any depth");
        assert!(out("target", true) && out("a/target", true) && !out("target", false), "folders only");
        assert!(out("top.txt", false) && !out("a/top.txt", false), "anchored at the root");
        assert!(out("docs/a.md", false) && !out("docs/sub/a.md", false), "`*` stops at `/`");
        assert!(!out("docs/keep.md", false), "`!` brings it back");
        assert!(out("deep", true) && out("a/b/deep", false));
        assert!(out("#hash", false));
        assert!(!out(".gitignore", false) && !out("targets", true) && !out("src/main.rs", false));
    }

    #[test]
    fn includes_and_the_default() {
        let rules = ignore(".git\n#!include:.gitignore\n");
        assert!(rules.excludes("x/y.log", false) && rules.excludes("build", true));
        assert!(!rules.excludes("a/build", true));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "secret\n").unwrap();
        let default = GcloudIgnore::for_tree(dir.path()).unwrap();
        for path in [".gcloudignore", ".git", ".gitignore", "a/secret"] {
            assert!(default.excludes(path, false), "{path}");
        }
        assert!(!default.excludes("src", true));
    }
}
