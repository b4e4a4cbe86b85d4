//! The build tasks of this repository, behind `cargo xtask`. The binary (`main.rs`) parses the
//! command line; everything else lives here so that tests and the benchmark can use it too.

// The tasks, on top: each uses the floor below, never another task.
pub mod tasks;

// What several tasks share: the shared option groups, and the services.
pub mod catalog_graph;
pub mod ctx;
pub mod flags;
pub mod local_registry;
pub mod mirroring;
pub mod platform_build;
pub mod publish;
pub mod published;
pub mod rehearsal;
pub mod signing;
pub mod vm;

// Below them: the catalog and its files, the settings, the runner of commands, the registry
// client.
pub mod bake;
pub mod cargo_recipe;
pub mod catalog;
pub mod catalog_source;
pub mod dockerfile;
pub mod dockerignore;
pub mod entry;
pub mod failure;
pub mod graph;
pub mod inputs;
pub mod interrupt;
pub mod invalid;
pub mod lock;
pub mod pipeline;
pub mod platform;
pub mod probe;
pub mod provenance;
pub mod registry;
pub mod registry_server;
pub mod run_values;
pub mod runner;
pub mod secrets;
pub mod settings;
pub mod template;

use std::path::{Component, Path, PathBuf};

/// Where the xtask keeps what it writes (BuildKit and registry configs, logs, the local
/// registry's data): `$CARGO_TARGET_DIR` when set, as for cargo's own output, else `target`.
/// Relative paths start at the repository root, where every command runs.
pub fn work_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
}

/// The repository root, where `cargo xtask` runs every command.
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the repository root").to_path_buf()
}

/// `a/b/../c` → `a/c`, without asking the file system (the path may not exist yet).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// This account's home in the password database, not `$HOME`: ssh reads its user config from
/// there, and a Cloud Build step's `HOME` (`/builder/home`) is another folder.
pub fn account_home() -> Option<PathBuf> {
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero `passwd` (integers, null pointers) is a valid value to be overwritten.
    // getpwuid_r writes only into `entry` and `buffer`, whose sizes it is given; when it found
    // the account (0, `found` not null) `pw_dir` points at a NUL-terminated string inside
    // `buffer`, which is read here while `buffer` lives.
    unsafe {
        let mut entry: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let code =
            libc::getpwuid_r(libc::getuid(), &mut entry, buffer.as_mut_ptr(), buffer.len(), &mut found);
        if code != 0 || found.is_null() || entry.pw_dir.is_null() {
            return None;
        }
        let dir = std::ffi::CStr::from_ptr(entry.pw_dir).to_string_lossy().into_owned();
        Some(PathBuf::from(dir))
    }
}
