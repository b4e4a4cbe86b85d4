//! Cloud Build's substitutions, applied as a build applies them, so that a rehearsal fails where
//! the real build would: `$NAME` and `${NAME}` are substitutions, `$$` is a literal `$`, and a
//! name that is neither built in nor defined is an error (hence pr.yaml's `$$` for shell
//! variables). A `$` before anything but a name, `{` or `$` stays as it is.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// What every build has (cloud.google.com/build/docs/configuring-builds/substitute-variable-values).
pub const BUILT_IN: [&str; 4] = ["PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"];

/// What a trigger provides. A manual build (`gcloud builds submit`) replaces them with an empty
/// string unless `--substitutions` gives them, as the same page says.
pub const FROM_TRIGGERS: [&str; 12] = [
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "REVISION_ID",
    "SHORT_SHA",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
];

/// The substitutions of one build: built-ins, then the pipeline's defaults overridden in order.
#[derive(Debug, Clone)]
pub struct Substitutions {
    values: BTreeMap<String, String>,
}

impl Substitutions {
    /// `built_ins`: the values of `BUILT_IN`; `defaults`: the pipeline's `substitutions`;
    /// `overrides`: the task's, then `--substitutions`, later ones winning. A user
    /// substitution's value may name built-ins (`${PROJECT_ID}`): they are expanded, one level.
    pub fn new(
        built_ins: &[(&str, String)],
        defaults: &BTreeMap<String, String>,
        overrides: &[(String, String)],
    ) -> Result<Substitutions> {
        let mut base: BTreeMap<String, String> =
            FROM_TRIGGERS.iter().map(|name| (name.to_string(), String::new())).collect();
        base.extend(built_ins.iter().map(|(name, value)| (name.to_string(), value.clone())));
        let mut user = defaults.clone();
        for (name, value) in overrides {
            if FROM_TRIGGERS.contains(&name.as_str()) || name == "PROJECT_NUMBER" {
                base.insert(name.clone(), value.clone());
            } else if name.starts_with('_') {
                user.insert(name.clone(), value.clone());
            } else {
                bail!(
                    "--substitutions {name}=…: a user substitution starts with `_` (Cloud Build's rule); \
                     of the built-ins only PROJECT_NUMBER and a trigger's ({}) can be given \
                     (PROJECT_ID is the GCP_PROJECT setting)",
                    FROM_TRIGGERS.join(", ")
                );
            }
        }
        let mut values = base.clone();
        for (name, value) in user {
            let expanded = expand(&value, &|wanted| base.get(wanted).map(String::as_str))
                .with_context(|| format!("in the value of the substitution {name}"))?;
            values.insert(name, expanded);
        }
        Ok(Substitutions { values })
    }

    /// `text` with every substitution replaced; an undefined name is an error naming it.
    pub fn apply(&self, text: &str) -> Result<String> {
        expand(text, &|name| self.values.get(name).map(String::as_str))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every substitution, as `automapSubstitutions` maps them to environment variables.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// One pass over `text`: what a substitution is replaced with is not read again.
fn expand<'a>(text: &str, lookup: &dyn Fn(&str) -> Option<&'a str>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = if let Some(more) = after.strip_prefix('$') {
            out.push('$');
            rest = more;
            continue;
        } else if let Some(braced) = after.strip_prefix('{') {
            let Some(end) = braced.find('}') else {
                bail!("`${{` without its `}}` in {text:?}: write `$${{` for a literal `${{`");
            };
            (&braced[..end], &braced[end + 1..])
        } else if after.starts_with(is_name_start) {
            let end = after.find(|c| !is_name_char(c)).unwrap_or(after.len());
            (&after[..end], &after[end..])
        } else {
            out.push('$');
            rest = after;
            continue;
        };
        match lookup(name) {
            Some(value) => out.push_str(value),
            None => bail!(
                "`${name}` is not a substitution: neither built in nor defined (the pipeline's \
                 `substitutions`, or --substitutions {name}=…); for a shell variable write `$${name}`"
            ),
        }
        rest = next;
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(overrides: &[(&str, &str)]) -> Substitutions {
        let defaults: BTreeMap<String, String> = [
            ("_IMAGE", "us-docker.pkg.dev/${PROJECT_ID}/dev/builder:1"),
            ("_ENV", "docker-dev"),
            ("_PRICE", "$$5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let overrides: Vec<(String, String)> =
            overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let built_ins = [("PROJECT_ID", "p1".to_string()), ("BUILD_ID", "b1".to_string())];
        Substitutions::new(&built_ins, &defaults, &overrides).unwrap()
    }

    #[test]
    fn names_braces_and_dollars() {
        let s = subs(&[]);
        assert_eq!(
            s.apply("$_ENV ${_ENV}-x $$HOME $${X} $$$_ENV").unwrap(),
            "docker-dev docker-dev-x $HOME ${X} $docker-dev"
        );
        assert_eq!(s.apply("a $ b $1 $(x) cost: 5$").unwrap(), "a $ b $1 $(x) cost: 5$");
        assert_eq!(s.apply("${BUILD_ID}/$PROJECT_ID.").unwrap(), "b1/p1.");
    }

    #[test]
    fn an_undefined_name_is_an_error_naming_it() {
        let s = subs(&[]);
        let err = s.apply("echo $HOME").unwrap_err().to_string();
        assert!(err.contains("`$HOME`") && err.contains("$$HOME"), "{err}");
        assert!(s.apply("${_NOPE}").unwrap_err().to_string().contains("_NOPE"));
        assert!(s.apply("${_OPEN").is_err());
    }

    #[test]
    fn values_may_name_built_ins_and_overrides_win() {
        let s = subs(&[("_ENV", "docker-prod"), ("COMMIT_SHA", "abc")]);
        assert_eq!(s.get("_IMAGE"), Some("us-docker.pkg.dev/p1/dev/builder:1"));
        assert_eq!(s.apply("$_ENV $COMMIT_SHA").unwrap(), "docker-prod abc");
        assert_eq!(s.apply("[$BRANCH_NAME]").unwrap(), "[]", "a trigger's substitution is empty");
        assert_eq!(s.get("_PRICE"), Some("$5"));
        // Expanded once: the `$5` from `$$5` is not read again.
        assert_eq!(s.apply("$_PRICE").unwrap(), "$5");
    }

    #[test]
    fn only_user_and_trigger_names_can_be_given() {
        let defaults = BTreeMap::new();
        let err = Substitutions::new(&[], &defaults, &[("PROJECT_ID".into(), "x".into())]).unwrap_err();
        assert!(err.to_string().contains("GCP_PROJECT"), "{err}");
        let undefined = Substitutions::new(&[], &[("_A".to_string(), "$_B".to_string())].into(), &[]);
        assert!(undefined.unwrap_err().to_string().contains("_A"));
    }
}
