//! What is read from this process's arguments before clap parses them: the catalog, whose images
//! make the task list that clap then parses the line with; and `--env NAME=VALUE`, refused here
//! with a word for the `--step-env` meant, where clap would take it for ENV (or refuse a second
//! `--env`) without one.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::catalog::CATALOG_PATH;
use crate::catalog_source::CatalogSource;

/// The catalog of this run, before the command line is parsed (its images make the task list):
/// from this process's arguments and the environment.
pub fn catalog_source_of_this_run() -> CatalogSource {
    catalog_source(std::env::args_os().skip(1), |name| std::env::var_os(name))
}

/// The catalog `args` and `env` name, each part as a flag (`--catalog PATH` or
/// `--catalog=PATH`) among `args`, else its variable (`CATALOG`) when not empty, else its
/// default: the repository's own catalog, the group `default`, the catalog's list and pipeline.
pub fn catalog_source(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> CatalogSource {
    let args: Vec<OsString> = args.into_iter().collect();
    let given = |flag: &str, variable: &str| {
        flag_value(&args, flag).or_else(|| env(variable).filter(|v| !v.is_empty()))
    };
    CatalogSource {
        path: given("--catalog", "CATALOG").map_or_else(|| CATALOG_PATH.into(), PathBuf::from),
        bake_group: given("--bake-group", "BAKE_GROUP").map(|g| g.to_string_lossy().into_owned()),
        thirdparty: given("--thirdparty-list", "THIRDPARTY").map(PathBuf::from),
        pipeline: given("--pipeline", "PIPELINE").map(PathBuf::from),
    }
}

/// The value of `flag` (`--flag VALUE` or `--flag=VALUE`) among `args`: the first one given.
fn flag_value(args: &[OsString], flag: &str) -> Option<OsString> {
    let mut args = args.iter();
    let with_equals = format!("{flag}=");
    while let Some(arg) = args.next() {
        if arg == flag {
            if let Some(value) = args.next() {
                return Some(value.clone());
            }
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix(&with_equals)) {
            return Some(value.into());
        }
    }
    None
}

/// `--env NAME=VALUE` (or `--env=NAME=VALUE`) among `args`, before any `--`: `--env` is the
/// deployment (`ENV`, a repository's name, never with `=`), and a variable for the steps of
/// `cloud-build --local` is `--step-env NAME=VALUE`, which the error names.
pub fn refuse_step_variables_given_as_env(args: &[OsString]) -> Result<()> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let value = if arg == "--env" {
            args.next().map(|value| value.to_string_lossy())
        } else {
            arg.to_str().and_then(|a| a.strip_prefix("--env=")).map(Into::into)
        };
        if let Some(value) = value.filter(|value| value.contains('=')) {
            bail!(
                "`--env {value}`: --env is the deployment setting (ENV, e.g. --env docker-dev), never NAME=VALUE; \
                 a variable for the steps of cloud-build --local is `--step-env {value}`"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_catalog_flag_wins_over_catalog_which_wins_over_the_default() {
        let env = |name: &str| (name == "CATALOG").then(|| OsString::from("from-env.toml"));
        let path = |words: &[&str]| catalog_source(line(words), env).path;
        assert_eq!(path(&["info", "--catalog", "a.toml"]), PathBuf::from("a.toml"));
        assert_eq!(path(&["--catalog=b.toml", "info"]), PathBuf::from("b.toml"));
        assert_eq!(path(&["info"]), PathBuf::from("from-env.toml"));
        assert_eq!(catalog_source(line(&["info"]), |_| Some(OsString::new())), CatalogSource::default());
    }

    #[test]
    fn the_bake_group_list_and_pipeline_are_read_as_the_catalog_is() {
        let env = |name: &str| match name {
            "CATALOG" => Some(OsString::from("docker-bake.hcl")),
            "BAKE_GROUP" => Some(OsString::from("release")),
            "THIRDPARTY" => Some(OsString::from("ci/thirdparty.txt")),
            _ => None,
        };
        let source = catalog_source(line(&["publish-all", "--pipeline=ci/cloudbuild.yaml"]), env);
        assert_eq!(source.path, PathBuf::from("docker-bake.hcl"));
        assert_eq!(source.bake_group(), "release");
        assert_eq!(source.thirdparty, Some(PathBuf::from("ci/thirdparty.txt")));
        assert_eq!(source.pipeline, Some(PathBuf::from("ci/cloudbuild.yaml")));
        let source = catalog_source(line(&["x", "--bake-group", "all", "--thirdparty-list", "l.txt"]), env);
        assert_eq!((source.bake_group(), source.thirdparty.as_deref()), ("all", Some(Path::new("l.txt"))));
        assert_eq!(catalog_source(line(&["x"]), |_| None).bake_group(), "default");
    }

    #[test]
    fn env_with_an_equals_sign_is_refused_with_step_env_named() {
        let refused =
            |words: &[&str]| refuse_step_variables_given_as_env(&line(words)).unwrap_err().to_string();
        let message = refused(&["x", "cloud-build", "--local", "--env", "A=1"]);
        assert_eq!(
            message,
            "`--env A=1`: --env is the deployment setting (ENV, e.g. --env docker-dev), never NAME=VALUE; \
             a variable for the steps of cloud-build --local is `--step-env A=1`"
        );
        assert!(refused(&["x", "--env=B=2=3", "cloud-build"]).ends_with("`--step-env B=2=3`"));
        assert!(refused(&["x", "publish-all", "--env", "A=1"]).contains("--step-env A=1"), "every task");
        for fine in [
            &["x", "--env", "docker-prod", "cloud-build", "--local", "--step-env", "A=1"][..],
            &["x", "--env=local", "info"],
            &["x", "cloud-build", "--", "--env", "A=1"],
            &["x", "info", "--env"],
        ] {
            assert!(refuse_step_variables_given_as_env(&line(fine)).is_ok(), "{fine:?}");
        }
    }
}
