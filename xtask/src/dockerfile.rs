//! What a Dockerfile pulls from outside: its parser directive (`# syntax=`, a frontend image
//! BuildKit would fetch) and the images its `FROM` and `COPY --from` lines name, with `${ARG}`s
//! filled in. Build stages and `scratch` are not images. Enough of the format for the images of
//! this repository, not a full parser: no line continuations inside these instructions.

use std::collections::{BTreeMap, BTreeSet};

/// The outside images of one Dockerfile.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// The `# syntax=` directive's image, if any: BuildKit fetches it before anything else.
    pub frontend: Option<String>,
    /// Every image named by `FROM` or `COPY --from`, resolved, in order of appearance.
    pub images: Vec<String>,
    /// The names of its `ARG` instructions, in order, each once.
    pub args: Vec<String>,
}

/// Read `text`, filling `${NAME}` and `$NAME` from `args` (build arguments given on the command
/// line), then from the defaults of the file's own `ARG NAME=default` lines.
pub fn sources(text: &str, args: &BTreeMap<String, String>) -> Sources {
    let mut values = args.clone();
    let mut stages = BTreeSet::new();
    let mut sources = Sources { frontend: frontend(text), ..Sources::default() };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((instruction, rest)) = words.split_first() else { continue };
        match instruction.to_ascii_uppercase().as_str() {
            "ARG" => {
                for definition in rest {
                    let name = definition.split_once('=').map_or(*definition, |(name, _)| name);
                    if !sources.args.iter().any(|a| a == name) {
                        sources.args.push(name.to_string());
                    }
                    if let Some((name, value)) = definition.split_once('=')
                        && !values.contains_key(name)
                    {
                        let value = substitute(value, &values);
                        values.insert(name.to_string(), value);
                    }
                }
            }
            "FROM" => {
                let Some(from) = rest.iter().find(|w| !w.starts_with("--")) else { continue };
                let image = substitute(from, &values);
                if let [.., as_word, stage] = rest
                    && as_word.eq_ignore_ascii_case("AS")
                {
                    stages.insert(stage.to_ascii_lowercase());
                }
                push_image(&mut sources.images, image, &stages);
            }
            "COPY" => {
                let from = rest.iter().find_map(|w| w.strip_prefix("--from="));
                if let Some(from) = from {
                    push_image(&mut sources.images, substitute(from, &values), &stages);
                }
            }
            _ => {}
        }
    }
    sources
}

fn push_image(images: &mut Vec<String>, image: String, stages: &BTreeSet<String>) {
    let is_stage = stages.contains(&image.to_ascii_lowercase());
    // `COPY --from=0` names a stage by its number.
    let is_stage_number = image.chars().all(|c| c.is_ascii_digit());
    if !(is_stage || is_stage_number || image == "scratch" || images.contains(&image)) {
        images.push(image);
    }
}

/// The `# syntax=` parser directive: only at the very top, before any other line.
fn frontend(text: &str) -> Option<String> {
    for line in text.lines() {
        let comment = line.trim().strip_prefix('#')?;
        let (key, value) = comment.split_once('=')?;
        match key.trim().to_ascii_lowercase().as_str() {
            "syntax" => return Some(value.trim().to_string()),
            "escape" | "check" => continue,
            _ => return None,
        }
    }
    None
}

/// `${NAME}` and `$NAME` replaced by their values; unknown names are left as written, so that a
/// missing build argument shows in the result.
fn substitute(word: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = word.to_string();
    // Longest names first, so that `$AB` is not read as `$A` followed by `B`.
    let mut names: Vec<&String> = values.keys().collect();
    names.sort_by_key(|name| std::cmp::Reverse(name.len()));
    for name in names {
        out = out.replace(&format!("${{{name}}}"), &values[name]).replace(&format!("${name}"), &values[name]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn resolves_bases_and_skips_stages_and_scratch() {
        let text = "# syntax=docker/dockerfile:1\nARG REPO\nARG V=1.2\nFROM ${REPO}/a:${V} AS build\n\
                    FROM --platform=$BUILDPLATFORM $REPO/b:$V\nCOPY --from=build /x /x\n\
                    COPY --from=${REPO}/c:3 /y /y\nCOPY --from=0 /z /z\nFROM scratch\nFROM build\n";
        let found = sources(text, &args(&[("REPO", "r.test/p")]));
        assert_eq!(found.frontend.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(found.images, ["r.test/p/a:1.2", "r.test/p/b:1.2", "r.test/p/c:3"]);
        assert_eq!(found.args, ["REPO", "V"]);
    }

    #[test]
    fn a_given_argument_wins_over_the_default() {
        let found = sources("ARG V=1\nFROM x:${V}\n", &args(&[("V", "2")]));
        assert_eq!(found.images, ["x:2"]);
        assert_eq!(found.frontend, None);
    }

    #[test]
    fn the_syntax_directive_counts_only_at_the_top() {
        assert_eq!(sources("FROM a\n# syntax=b\n", &BTreeMap::new()).frontend, None);
        assert_eq!(
            sources("# escape=`\n# syntax = c\nFROM a\n", &BTreeMap::new()).frontend.as_deref(),
            Some("c")
        );
        assert_eq!(sources("# a comment\n# syntax=c\n", &BTreeMap::new()).frontend, None);
    }
}
