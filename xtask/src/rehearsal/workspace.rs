//! The folders of one rehearsal, under `$CARGO_TARGET_DIR/cloud-build-local/<build id>/` (or
//! `target/…`): `workspace`, what `gcloud builds submit` would upload (the working tree, its
//! uncommitted files too, less `.gcloudignore`), copied with its modes and symlinks, which is
//! `/workspace`; `home`, `/builder/home`, and `outputs`, `/builder/outputs`, fresh and shared by
//! every step; `logs`, one file per step; `scripts`, the steps' `script`s as files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::gcloudignore::GcloudIgnore;

#[derive(Debug, Clone)]
pub struct Folders {
    /// `<base>/<build id>`.
    pub run: PathBuf,
    pub workspace: PathBuf,
    pub home: PathBuf,
    pub outputs: PathBuf,
    pub logs: PathBuf,
    pub scripts: PathBuf,
}

impl Folders {
    /// The folders of build `build_id` under `base` (absolute).
    pub fn new(base: &Path, build_id: &str) -> Folders {
        let run = base.join(build_id);
        Folders {
            workspace: run.join("workspace"),
            home: run.join("home"),
            outputs: run.join("outputs"),
            logs: run.join("logs"),
            scripts: run.join("scripts"),
            run,
        }
    }

    /// Make the folders, empty, and fill the workspace from `root`; returns how many files it
    /// copied. `skip` (the rehearsals' own base) is never copied into itself.
    pub fn create(&self, root: &Path, ignore: &GcloudIgnore, skip: &Path) -> Result<usize> {
        for dir in [&self.home, &self.outputs, &self.logs, &self.scripts] {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::create_dir_all(&self.workspace)
            .with_context(|| format!("cannot create {}", self.workspace.display()))?;
        copy_tree(root, &self.workspace, "", ignore, skip)
    }
}

/// Copy the folder `from` (at `relative` in the tree) into the existing folder `to`: files with
/// their modes, symlinks as symlinks, folders with their modes; nothing `ignore` excludes.
fn copy_tree(from: &Path, to: &Path, relative: &str, ignore: &GcloudIgnore, skip: &Path) -> Result<usize> {
    let mut entries: Vec<_> = std::fs::read_dir(from)
        .with_context(|| format!("cannot read {}", from.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot read {}", from.display()))?;
    entries.sort_by_key(|entry| entry.file_name());
    let mut copied = 0;
    for entry in entries {
        let source = entry.path();
        let name = entry.file_name();
        let path = if relative.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{relative}/{}", name.to_string_lossy())
        };
        let meta = std::fs::symlink_metadata(&source)
            .with_context(|| format!("cannot read {}", source.display()))?;
        if source == skip || ignore.excludes(&path, meta.is_dir()) {
            continue;
        }
        let target = to.join(&name);
        let failed = || format!("cannot copy {} to {}", source.display(), target.display());
        if meta.file_type().is_symlink() {
            let link = std::fs::read_link(&source).with_context(failed)?;
            std::os::unix::fs::symlink(link, &target).with_context(failed)?;
            copied += 1;
        } else if meta.is_dir() {
            std::fs::create_dir(&target).with_context(failed)?;
            copied += copy_tree(&source, &target, &path, ignore, skip)?;
            // Last, so that a read-only folder was still writable while it was filled.
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(meta.permissions().mode()))
                .with_context(failed)?;
        } else if meta.is_file() {
            // Copies the mode too.
            std::fs::copy(&source, &target).with_context(failed)?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_what_is_uploaded_with_modes_and_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::write(r.join(".gcloudignore"), "target/\n.git\n").unwrap();
        for dir in ["src", "target", ".git", "work"] {
            std::fs::create_dir(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("src/run.sh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("src/run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
        std::fs::write(r.join("target/big"), "x").unwrap();
        std::fs::write(r.join(".git/HEAD"), "x").unwrap();
        std::os::unix::fs::symlink("src/run.sh", r.join("link")).unwrap();
        let folders = Folders::new(&r.join("work"), "b1");
        let ignore = GcloudIgnore::for_tree(r).unwrap();
        let copied = folders.create(r, &ignore, &r.join("work")).unwrap();
        let ws = &folders.workspace;
        assert_eq!(copied, 3, ".gcloudignore, src/run.sh, link");
        let mode = std::fs::metadata(ws.join("src/run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750);
        assert_eq!(std::fs::read_link(ws.join("link")).unwrap(), Path::new("src/run.sh"));
        assert!(!ws.join("target").exists() && !ws.join(".git").exists() && !ws.join("work").exists());
        assert!(folders.home.is_dir() && folders.outputs.is_dir() && folders.logs.is_dir());
    }
}
