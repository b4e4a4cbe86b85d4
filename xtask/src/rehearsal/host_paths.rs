//! `--on-host` runs steps on this machine, where `/workspace` and `/builder/home` are not: a
//! private mount namespace would put them there but needs root. So the paths are rewritten
//! instead, in a step's entrypoint, args, script, dir and environment values: `/workspace`,
//! `/builder/home` and `/builder/outputs` become the rehearsal's folders, only as whole path
//! starts (`/workspace`, `/workspace/x`, not `/workspaces` or `/a/workspace`).

use std::path::Path;

#[derive(Debug, Clone)]
pub struct HostPaths {
    /// (the path in Cloud Build, the folder on this machine), longest first.
    map: Vec<(&'static str, String)>,
}

/// A character that can be part of a path's name: a match must not be inside one.
fn in_name(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/')
}

impl HostPaths {
    pub fn new(workspace: &Path, home: &Path, outputs: &Path) -> HostPaths {
        let text = |p: &Path| p.display().to_string();
        HostPaths {
            map: vec![
                ("/builder/outputs", text(outputs)),
                ("/builder/home", text(home)),
                ("/workspace", text(workspace)),
            ],
        }
    }

    /// `text` with the Cloud Build paths replaced, in one pass (a replacement is not read again).
    pub fn rewrite(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        'scan: while at < text.len() {
            let before_ok = !text[..at].chars().next_back().is_some_and(in_name);
            if before_ok {
                for (from, to) in &self.map {
                    if text[at..].starts_with(from) {
                        let after = &text[at + from.len()..];
                        let after_ok = match after.chars().next() {
                            None | Some('/') => true,
                            Some(c) => !in_name(c),
                        };
                        if after_ok {
                            out.push_str(to);
                            at += from.len();
                            continue 'scan;
                        }
                    }
                }
            }
            let c = text[at..].chars().next().expect("inside the text");
            out.push(c);
            at += c.len_utf8();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_at_path_boundaries_only() {
        let paths = HostPaths::new(Path::new("/r/workspace"), Path::new("/r/home"), Path::new("/r/out"));
        let cases = [
            ("/workspace", "/r/workspace"),
            ("cd /workspace/target && ls", "cd /r/workspace/target && ls"),
            ("CARGO_TARGET_DIR=/workspace/target", "CARGO_TARGET_DIR=/r/workspace/target"),
            ("--out-file=/builder/home/.ssh/key", "--out-file=/r/home/.ssh/key"),
            ("\"/builder/outputs\"", "\"/r/out\""),
            (
                "/workspaces /a/workspace /workspace.tar x/workspace",
                "/workspaces /a/workspace /workspace.tar x/workspace",
            ),
            ("/builder/homer", "/builder/homer"),
            ("a:/workspace:b", "a:/r/workspace:b"),
        ];
        for (text, want) in cases {
            assert_eq!(paths.rewrite(text), want, "{text}");
        }
        // The replacement is not read again, though it ends in `workspace`.
        let nested = HostPaths::new(Path::new("/workspace/x"), Path::new("/h"), Path::new("/o"));
        assert_eq!(nested.rewrite("/workspace /builder/home"), "/workspace/x /h");
    }
}
