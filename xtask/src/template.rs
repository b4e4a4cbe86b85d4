//! The templates of a catalog entry (its tags, build arguments, labels and annotations):
//! `{NAME}` placeholders filled from the catalog's versions and the run's own values
//! (`{GIT_SHA}`, `{GIT_SHA_SHORT}`, `{DATE}`). A value of the run changes from run to run, so a
//! template that uses one is *volatile*: it does not make an unchanged image out of date.
//! `{{` is a literal `{` (a `}` is always literal): a text taken as it is, such as a value of a
//! bake file, whose variables bake resolved already, becomes a template with `Template::literal`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::invalid::Invalid;

/// The values a run gives every template, beside the versions.
pub const RUN_VALUES: [&str; 3] = ["GIT_SHA", "GIT_SHA_SHORT", "DATE"];

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Template(String);

impl Template {
    pub fn new(text: impl Into<String>) -> Template {
        Template(text.into())
    }

    /// A template of `text` as it is, with no placeholder: every `{` escaped.
    pub fn literal(text: &str) -> Template {
        Template(text.replace('{', "{{"))
    }

    /// The text with every placeholder filled from `values`, and each `{{` a `{`; one without a
    /// value is an error naming it (the catalog's check allows only versions and run values, so
    /// it is a run value this run does not know).
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, Invalid> {
        let mut out = String::with_capacity(self.0.len());
        for piece in self.pieces() {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Placeholder(name) => out.push_str(values.get(name).ok_or_else(|| {
                    let fix = match RUN_VALUES.contains(&name) {
                        true => ": set GIT_SHA (in Cloud Build, pass a trigger's COMMIT_SHA on), or run in a git checkout",
                        false => "",
                    };
                    Invalid::new(format!("`{}` uses {{{name}}}, which this run has no value for{fix}", self.0))
                })?),
            }
        }
        Ok(out)
    }

    /// The names of its placeholders, as written.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.pieces().into_iter().filter_map(|piece| match piece {
            Piece::Placeholder(name) => Some(name),
            Piece::Text(_) => None,
        })
    }

    /// The text cut into literal text and placeholders: `{NAME}` (no `{` inside) is one, `{{` a
    /// literal `{`, and a `{` that no `}` closes before the next `{` is literal.
    fn pieces(&self) -> Vec<Piece<'_>> {
        let mut pieces = Vec::new();
        let mut rest = self.0.as_str();
        while let Some(at) = rest.find('{') {
            pieces.push(Piece::Text(&rest[..at]));
            let after = &rest[at + 1..];
            if let Some(escaped) = after.strip_prefix('{') {
                pieces.push(Piece::Text("{"));
                rest = escaped;
                continue;
            }
            match after.find(['{', '}']) {
                Some(end) if after[end..].starts_with('}') => {
                    pieces.push(Piece::Placeholder(&after[..end]));
                    rest = &after[end + 1..];
                }
                _ => {
                    pieces.push(Piece::Text("{"));
                    rest = after;
                }
            }
        }
        pieces.push(Piece::Text(rest));
        pieces
    }

    /// Whether it uses a value that changes from run to run.
    pub fn is_volatile(&self) -> bool {
        self.placeholders().any(|name| RUN_VALUES.contains(&name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A part of a template's text.
enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_placeholder_and_names_one_without_a_value() {
        let values: BTreeMap<String, String> = [("A", "1.2"), ("B", "x"), ("GIT_SHA_SHORT", "abc1234")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert_eq!(Template::new("a{A}-b{B}-{A}").render(&values).unwrap(), "a1.2-bx-1.2");
        assert_eq!(Template::new("sha-{GIT_SHA_SHORT}").render(&values).unwrap(), "sha-abc1234");
        let err = Template::new("{DATE}").render(&values).unwrap_err();
        assert!(err.to_string().contains("{DATE}"), "{err}");
        assert!(Template::new("{DATE}-{A}").is_volatile());
        assert!(!Template::new("{A}").is_volatile());
    }

    /// A text taken as it is keeps its braces: none is a placeholder, even one that names a
    /// version or a value of the run.
    #[test]
    fn a_literal_has_no_placeholder_and_renders_as_it_was() {
        let values: BTreeMap<String, String> = [("A", "1")].map(|(k, v)| (k.into(), v.into())).into();
        for text in ["{\"debug\": false}", "{A}", "{{A}}", "{DATE}-{", "}{", "a{b{c}d"] {
            let literal = Template::literal(text);
            assert_eq!(literal.placeholders().count(), 0, "{text}");
            assert!(!literal.is_volatile(), "{text}");
            assert_eq!(literal.render(&BTreeMap::new()).unwrap(), text);
        }
        // As written in a catalog: `{{` is a `{`; an unclosed `{` stays, as before.
        assert_eq!(Template::new("{{A}-{A}").render(&values).unwrap(), "{A}-1");
        assert_eq!(Template::new("a{b{A}c{").render(&values).unwrap(), "a{b1c{");
        let template = Template::new("{{x}{A}{b{A}");
        let names: Vec<&str> = template.placeholders().collect();
        assert_eq!(names, ["A", "A"]);
    }
}
