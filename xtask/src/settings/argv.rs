//! What is read from this process's arguments before clap parses them: the catalog, whose images
//! make the task list that clap then parses the line with; and `--env NAME=VALUE`, refused here
//! with a word for the `--step-env` meant, where clap would take it for ENV (or refuse a second
//! `--env`) without one.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::catalog::CATALOG_PATH;

/// The catalog of this run, before the command line is parsed (its images make the task list):
/// from this process's arguments and `CATALOG`.
pub fn catalog_path_of_this_run() -> PathBuf {
    catalog_path(std::env::args_os().skip(1), std::env::var_os("CATALOG"))
}

/// `--catalog PATH` or `--catalog=PATH` among `args`, else `CATALOG`, else the repository's own.
pub fn catalog_path(args: impl IntoIterator<Item = OsString>, env: Option<OsString>) -> PathBuf {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--catalog" {
            if let Some(path) = args.next() {
                return path.into();
            }
        } else if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--catalog=")) {
            return path.into();
        }
    }
    env.filter(|v| !v.is_empty()).map_or_else(|| CATALOG_PATH.into(), PathBuf::from)
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

    fn line(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_catalog_flag_wins_over_catalog_which_wins_over_the_default() {
        let env = Some(OsString::from("from-env.toml"));
        assert_eq!(
            catalog_path(line(&["info", "--catalog", "a.toml"]), env.clone()),
            PathBuf::from("a.toml")
        );
        assert_eq!(catalog_path(line(&["--catalog=b.toml", "info"]), env.clone()), PathBuf::from("b.toml"));
        assert_eq!(catalog_path(line(&["info"]), env), PathBuf::from("from-env.toml"));
        assert_eq!(catalog_path(line(&["info"]), Some(OsString::new())), PathBuf::from(CATALOG_PATH));
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
