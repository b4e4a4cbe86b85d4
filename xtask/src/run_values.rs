//! What a run knows of itself for the catalog's templates and the default OCI labels: the
//! commit it builds (`{GIT_SHA}`, `{GIT_SHA_SHORT}`), the day (`{DATE}`, UTC), the moment
//! (`org.opencontainers.image.created`) and where the source lives (`…image.source`). Read once,
//! when the run starts, from the environment (`GIT_SHA`, or Cloud Build's `COMMIT_SHA` that a
//! step passes on; `GIT_SOURCE`; `SOURCE_DATE_EPOCH` for the moment) or else from the catalog's git checkout, read as files: a Cloud Build upload
//! may have no `.git` at all, and then the commit is simply unknown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunValues {
    /// The full commit id, when known.
    pub git_sha: Option<String>,
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// RFC 3339, UTC, to the second.
    pub created: String,
    /// The repository's URL, credentials left out, when its checkout names an `origin`.
    pub source: Option<String>,
}

impl RunValues {
    /// The values for a catalog in `folder`; `lookup` reads the environment.
    pub fn read(folder: &Path, lookup: impl Fn(&str) -> Option<String>) -> RunValues {
        // SOURCE_DATE_EPOCH, the reproducible-builds convention, fixes the moment.
        let created = match lookup("SOURCE_DATE_EPOCH").and_then(|epoch| epoch.trim().parse::<u64>().ok()) {
            Some(epoch) => crate::lock::rfc3339(epoch),
            None => crate::lock::utc_now(),
        };
        let given =
            ["GIT_SHA", "COMMIT_SHA"].into_iter().find_map(|name| lookup(name).filter(|v| !v.is_empty()));
        let git = git_dir(folder);
        let git_sha = given.or_else(|| git.as_deref().and_then(head_commit));
        // Given (GIT_SOURCE; empty: none), or the checkout's origin.
        let source = match lookup("GIT_SOURCE") {
            // Through the same cleaning as origin's: a token in it never reaches an image.
            Some(given) => Some(given).filter(|url| !url.is_empty()).and_then(|url| public_url(&url)),
            None => git.as_deref().and_then(origin_url),
        };
        RunValues { git_sha, date: created[..10].to_string(), created, source }
    }

    /// The placeholders these values fill: `DATE` always, the commit's when it is known.
    pub fn template_values(&self) -> BTreeMap<String, String> {
        let mut values = BTreeMap::from([("DATE".to_string(), self.date.clone())]);
        if let Some(sha) = &self.git_sha {
            values.insert("GIT_SHA".into(), sha.clone());
            values.insert("GIT_SHA_SHORT".into(), sha.chars().take(7).collect());
        }
        values
    }
}

/// The root of the checkout `folder` is in (where a catalog's test runs from); `folder` itself
/// when it is in none.
pub fn repository_root(folder: &Path) -> PathBuf {
    folder.ancestors().find(|dir| dir.join(".git").exists()).unwrap_or(folder).to_path_buf()
}

/// The `.git` folder of the checkout `folder` is in: a folder, or a file `gitdir: <path>` (a
/// worktree).
fn git_dir(folder: &Path) -> Option<PathBuf> {
    for dir in folder.ancestors() {
        let dot_git = dir.join(".git");
        if dot_git.is_dir() {
            return Some(dot_git);
        }
        if let Ok(text) = std::fs::read_to_string(&dot_git) {
            let path = text.trim().strip_prefix("gitdir:")?.trim();
            return Some(dir.join(path));
        }
    }
    None
}

/// The commit `HEAD` names: detached, a loose ref, or a packed one. A worktree's refs live in
/// the main checkout's folder (`commondir`).
fn head_commit(git: &Path) -> Option<String> {
    let head = std::fs::read_to_string(git.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref:").map(str::trim) else {
        return is_commit(head).then(|| head.to_string());
    };
    let common = common_dir(git);
    for dir in [git, common.as_path()] {
        if let Ok(loose) = std::fs::read_to_string(dir.join(name))
            && is_commit(loose.trim())
        {
            return Some(loose.trim().to_string());
        }
        let packed = std::fs::read_to_string(dir.join("packed-refs")).unwrap_or_default();
        if let Some(sha) = packed.lines().find_map(|line| line.strip_suffix(name)?.trim().split(' ').next())
            && is_commit(sha)
        {
            return Some(sha.to_string());
        }
    }
    None
}

/// Where a checkout's shared files (refs, config) are: a worktree's `.git` names the main
/// checkout's in `commondir`.
fn common_dir(git: &Path) -> PathBuf {
    std::fs::read_to_string(git.join("commondir"))
        .map(|dir| git.join(dir.trim()))
        .unwrap_or_else(|_| git.to_path_buf())
}

fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `origin`'s URL from the checkout's config, as a browser would open it: `git@host:path.git`
/// becomes `https://host/path`, and any `user:token@` is left out (it never reaches an image).
fn origin_url(git: &Path) -> Option<String> {
    let common = common_dir(git);
    let config = std::fs::read_to_string(common.join("config")).ok()?;
    let mut in_origin = false;
    for line in config.lines().map(str::trim) {
        if line.starts_with('[') {
            in_origin = line == "[remote \"origin\"]";
        } else if in_origin && let Some(url) = line.strip_prefix("url").map(str::trim_start) {
            let url = url.strip_prefix('=')?.trim();
            return public_url(url);
        }
    }
    None
}

/// None for a clone of a local folder (`/srv/git/images`, `file://…`): no place a reader of
/// the image could open, and a path of this machine.
fn public_url(url: &str) -> Option<String> {
    let url = url.strip_suffix(".git").unwrap_or(url);
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme == "file" {
            return None;
        }
        // `user:p@ss@host/…`: the user part runs to the last `@` before the path.
        let authority = rest.split('/').next().unwrap_or(rest);
        let rest = match authority.rfind('@') {
            Some(at) => &rest[at + 1..],
            None => rest,
        };
        // ssh:// and git:// name the same repository a browser opens over https.
        let scheme = if scheme == "http" { "http" } else { "https" };
        return Some(format!("{scheme}://{rest}"));
    }
    // scp-like: `git@github.com:acme/images`.
    let (user_host, path) = url.split_once(':').filter(|(host, _)| !host.contains('/'))?;
    let host = user_host.rsplit('@').next().unwrap_or(user_host);
    Some(format!("https://{host}/{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commit_comes_from_the_environment_first_then_from_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let git = dir.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(git.join("packed-refs"), format!("# pack-refs\n{sha} refs/heads/main\n")).unwrap();
        std::fs::write(
            git.join("config"),
            "[core]\n\tbare = false\n[remote \"origin\"]\n\turl = https://bot:s3cret@github.com/acme/images.git\n",
        )
        .unwrap();
        let folder = dir.path().join("images");
        std::fs::create_dir(&folder).unwrap();
        let values = RunValues::read(&folder, |_| None);
        assert_eq!(values.git_sha.as_deref(), Some(sha), "a packed ref");
        assert_eq!(values.source.as_deref(), Some("https://github.com/acme/images"), "no credentials");
        let filled = values.template_values();
        assert_eq!(filled["GIT_SHA_SHORT"], "0123456");
        assert_eq!(filled["DATE"].len(), 10);
        let loose = "fedcba9876543210fedcba9876543210fedcba98";
        std::fs::write(git.join("refs/heads/main"), format!("{loose}\n")).unwrap();
        assert_eq!(RunValues::read(&folder, |_| None).git_sha.as_deref(), Some(loose), "a loose ref wins");
        let given =
            RunValues::read(&folder, |name| (name == "COMMIT_SHA").then(|| "c0ffee".repeat(7)[..40].into()));
        assert_eq!(given.git_sha.as_deref(), Some(&"c0ffee".repeat(7)[..40]), "Cloud Build's COMMIT_SHA");
        assert_eq!(
            public_url("git@github.com:acme/images.git").as_deref(),
            Some("https://github.com/acme/images")
        );
        assert_eq!(
            public_url("ssh://git@github.com/acme/images").as_deref(),
            Some("https://github.com/acme/images")
        );
        assert_eq!(public_url("/srv/git/images"), None);
        assert_eq!(public_url("https://bot:p@ss@github.com/x").as_deref(), Some("https://github.com/x"));
        let given = RunValues::read(&folder, |name| {
            (name == "GIT_SOURCE").then(|| "https://x-access-token:ghs_secret@github.com/acme/images".into())
        });
        assert_eq!(
            given.source.as_deref(),
            Some("https://github.com/acme/images"),
            "a given URL is cleaned too"
        );
        assert_eq!(public_url("file:///srv/git/images"), None);
    }

    #[test]
    fn without_a_checkout_the_commit_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let values = RunValues::read(dir.path(), |_| None);
        // (a temp folder is in no checkout)
        assert_eq!(values.git_sha, None);
        assert!(!values.template_values().contains_key("GIT_SHA"));
    }
}
