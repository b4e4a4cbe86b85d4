//! `.dockerignore`: which files of a build context are sent to the builder. The rules are
//! Docker's (moby's patternmatcher): one pattern a line, `#` comments, `!` re-includes, the last
//! pattern that matches a path decides, and a pattern that matches a folder matches everything
//! in it. In a pattern, `*` is any run of characters but `/`, `?` one such character, `[…]` a
//! class, `**` any number of folders, and `\` escapes the next character.

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Default, Clone)]
pub struct Patterns {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// The pattern's characters, cleaned (`./a//b/` → `a/b`).
    glob: Vec<char>,
    /// `!pattern`: matching paths are sent after all.
    include: bool,
}

impl Patterns {
    pub fn parse(text: &str) -> Patterns {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (include, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let glob = clean(pattern);
                (!glob.is_empty()).then(|| Pattern { glob: glob.chars().collect(), include })
            })
            .collect();
        Patterns { patterns }
    }

    /// Whether the file or folder at `path` (relative to the context, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for pattern in &self.patterns {
            if pattern.include == excluded && matches_or_parent_matches(&pattern.glob, path) {
                excluded = !pattern.include;
            }
        }
        excluded
    }

    /// Whether a `!` pattern could bring back something inside a left-out folder: without one,
    /// a left-out folder need not be walked at all.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.include)
    }
}

/// `filepath.Clean` of the pattern, and no leading `/`: the context's root is the pattern's.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts.join("/")
}

/// The path, or one of the folders it is in, matches.
fn matches_or_parent_matches(glob: &[char], path: &str) -> bool {
    let path: Vec<char> = path.chars().collect();
    if matches(glob, &path) {
        return true;
    }
    path.iter().enumerate().any(|(at, c)| *c == '/' && matches(glob, &path[..at]))
}

/// The whole of `path` matches the pattern `glob`, with the rules above (`*` stops at `/`,
/// `**/` is any number of folders): for `.gcloudignore` too, whose globs are gitignore's.
pub fn glob_matches(glob: &str, path: &str) -> bool {
    let (glob, path): (Vec<char>, Vec<char>) = (glob.chars().collect(), path.chars().collect());
    matches(&glob, &path)
}

/// The whole of `text` matches `glob`.
fn matches(glob: &[char], text: &[char]) -> bool {
    match glob {
        [] => text.is_empty(),
        // `**/`: no folder, or any number of them.
        ['*', '*', '/', rest @ ..] => {
            matches(rest, text)
                || text.iter().enumerate().any(|(at, c)| *c == '/' && matches(rest, &text[at + 1..]))
        }
        // `**` elsewhere: anything, `/` included.
        ['*', '*', rest @ ..] => (0..=text.len()).any(|at| matches(rest, &text[at..])),
        ['*', rest @ ..] => {
            let run = text.iter().take_while(|c| **c != '/').count();
            (0..=run).any(|at| matches(rest, &text[at..]))
        }
        ['?', rest @ ..] => matches!(text, [c, more @ ..] if *c != '/' && matches(rest, more)),
        ['[', rest @ ..] => match (class(rest), text) {
            (Some((accepts, after)), [c, more @ ..]) => *c != '/' && accepts(*c) && matches(after, more),
            // An unclosed `[` is a literal, as `\[` would be.
            (None, [c, more @ ..]) => *c == '[' && matches(rest, more),
            _ => false,
        },
        ['\\', escaped, rest @ ..] => matches!(text, [c, more @ ..] if c == escaped && matches(rest, more)),
        [literal, rest @ ..] => matches!(text, [c, more @ ..] if c == literal && matches(rest, more)),
    }
}

type Accepts = Box<dyn Fn(char) -> bool>;

/// A character class after its `[`: what it accepts, and the pattern after its `]`.
fn class(glob: &[char]) -> Option<(Accepts, &[char])> {
    let (negated, mut rest) = match glob {
        ['^' | '!', rest @ ..] => (true, rest),
        _ => (false, glob),
    };
    let mut ranges: Vec<(char, char)> = Vec::new();
    let mut first = true;
    loop {
        let (low, after) = match rest {
            [']', after @ ..] if !first => {
                let accepts =
                    move |c: char| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != negated;
                return Some((Box::new(accepts), after));
            }
            ['\\', c, after @ ..] => (*c, after),
            [c, after @ ..] => (*c, after),
            [] => return None,
        };
        first = false;
        rest = after;
        match rest {
            ['-', high, after @ ..] if *high != ']' => {
                ranges.push((low, *high));
                rest = after;
            }
            _ => ranges.push((low, low)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(patterns: &str, path: &str) -> bool {
        Patterns::parse(patterns).excludes(path)
    }

    #[test]
    fn stars_stay_within_a_folder_and_double_stars_cross_them() {
        assert!(excluded("*.md", "README.md"));
        assert!(!excluded("*.md", "docs/README.md"));
        assert!(excluded("**/*.md", "docs/a/README.md"));
        assert!(excluded("**/*.md", "README.md"));
        assert!(excluded("docs/**", "docs/a/b"));
        assert!(excluded("**.go", "a/b/c.go"));
        assert!(excluded("a/**/b", "a/b"));
        assert!(excluded("a/**/b", "a/x/y/b"));
        assert!(!excluded("a/**/b", "a/x/y/c"));
        assert!(excluded("te?t", "test"));
        assert!(!excluded("te?t", "te/t"));
    }

    #[test]
    fn a_folder_pattern_covers_what_is_in_it() {
        assert!(excluded("target", "target/debug/x"));
        assert!(excluded("/target/", "target/debug/x"));
        assert!(excluded("./a/../target", "target/x"));
        assert!(!excluded("target", "src/target.rs"));
    }

    #[test]
    fn the_last_matching_pattern_wins_and_exceptions_bring_files_back() {
        let patterns = "# comment\n*.log\n!keep.log\n";
        assert!(excluded(patterns, "build.log"));
        assert!(!excluded(patterns, "keep.log"));
        assert!(!excluded(patterns, "main.c"));
        assert!(excluded("!keep.log\n*.log\n", "keep.log"), "the later pattern decides");
        assert!(Patterns::parse(patterns).has_exceptions());
        assert!(!Patterns::parse("*.log").has_exceptions());
    }

    #[test]
    fn classes_and_escapes() {
        assert!(excluded("file[0-9].txt", "file7.txt"));
        assert!(!excluded("file[0-9].txt", "filex.txt"));
        assert!(excluded("file[^0-9].txt", "filex.txt"));
        assert!(excluded("[]a]", "]"));
        assert!(excluded("\\*star", "*star"));
        assert!(!excluded("\\*star", "xstar"));
        assert!(excluded("a[", "a["), "an unclosed class is literal");
    }
}
