//! What is read from this process's arguments before clap parses them: the catalog, whose images
//! make the task list that clap then parses the line with.

use std::ffi::OsString;
use std::path::PathBuf;

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
}
