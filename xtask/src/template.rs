//! The templates of a catalog entry (its tags, build arguments, labels and annotations):
//! `{NAME}` placeholders filled from the catalog's versions and the run's own values
//! (`{GIT_SHA}`, `{GIT_SHA_SHORT}`, `{DATE}`). A value of the run changes from run to run, so a
//! template that uses one is *volatile*: it does not make an unchanged image out of date.

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

    /// The text with every placeholder filled from `values`; one without a value is an error
    /// naming it (the catalog's check allows only versions and run values, so it is a run value
    /// this run does not know).
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, Invalid> {
        let mut out = self.0.clone();
        for name in self.placeholders() {
            let value = values.get(name).ok_or_else(|| {
                Invalid::new(format!("`{}` uses {{{name}}}, which this run has no value for", self.0))
            })?;
            out = out.replace(&format!("{{{name}}}"), value);
        }
        Ok(out)
    }

    /// The names of its placeholders, as written.
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.0.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
    }

    /// Whether it uses a value that changes from run to run.
    pub fn is_volatile(&self) -> bool {
        self.placeholders().any(|name| RUN_VALUES.contains(&name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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
}
