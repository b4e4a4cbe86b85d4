//! The xtask's dependency recipe: the workspace's manifests and `Cargo.lock`, with a stub for
//! each source file a manifest names. `cargo build --package xtask` in it compiles every
//! dependency and none of the xtask's own code, so the cloud builder image can hold the compiled
//! dependencies (they change only with `Cargo.lock`) and the pipeline's xtask step, given a copy
//! of them, compiles just the xtask crate. Cargo's fingerprints of registry crates depend on
//! neither the workspace's path nor the target directory's, so the copy may live anywhere.
//!
//! The recipe holds no source code: a change to the xtask leaves it byte for byte the same, and
//! the image's compile step stays a cache hit.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The name of the build context that carries the recipe into the cloud builder's Dockerfile
/// (`--build-context xtask-recipe=<dir>`, which overrides its empty stage of that name).
pub const CONTEXT: &str = "xtask-recipe";

/// What the cloud builder's Dockerfile runs in the recipe (`cargo <words> --manifest-path
/// <recipe>/Cargo.toml`, its target folder set): compile the dependencies, then forget the
/// stub's own artifacts. Cargo judges a workspace crate fresh by the times of its sources, so a
/// stub compiled after the real sources were last touched (a checkout older than the image)
/// would pass for the real crate, and the step would run a binary that does nothing.
pub const PREBUILD: [[&str; 4]; 2] =
    [["build", "--locked", "--package", "xtask"], ["clean", "--locked", "--package", "xtask"]];

/// A library target's stub.
const LIB_STUB: &str = "// A stub of the dependency recipe: only the manifests are real.\n";
/// Every other target's stub.
const MAIN_STUB: &str = "// A stub of the dependency recipe: only the manifests are real.\nfn main() {}\n";

/// Write the recipe of the workspace at `root` into `into` (emptied first). Returns the files
/// written, relative to `into`, sorted.
pub fn write(root: &Path, into: &Path) -> Result<Vec<PathBuf>> {
    let lock = root.join("Cargo.lock");
    if !lock.is_file() {
        bail!("{} is missing: run `cargo generate-lockfile` in {}", lock.display(), root.display());
    }
    let mut files: Vec<(PathBuf, Contents)> = vec![
        ("Cargo.toml".into(), Contents::Copy(root.join("Cargo.toml"))),
        ("Cargo.lock".into(), Contents::Copy(lock)),
    ];
    for package in packages(root)? {
        let manifest = package.join("Cargo.toml");
        files.push((package.join("Cargo.toml"), Contents::Copy(root.join(&manifest))));
        let table = read_manifest(&root.join(&manifest))?;
        for (source, kind) in targets(&root.join(&package), &table) {
            let contents = match kind {
                Kind::Lib => Contents::Stub(LIB_STUB),
                Kind::Main => Contents::Stub(MAIN_STUB),
                // A build script may generate code the crate needs: it is kept as it is.
                Kind::BuildScript => Contents::Copy(root.join(&package).join(&source)),
            };
            files.push((package.join(source), contents));
        }
    }
    if into.exists() {
        std::fs::remove_dir_all(into).with_context(|| format!("cannot empty {}", into.display()))?;
    }
    let mut written = Vec::new();
    for (path, contents) in files {
        let target = into.join(&path);
        std::fs::create_dir_all(target.parent().expect("a file in the recipe"))?;
        match contents {
            Contents::Copy(from) => std::fs::copy(&from, &target).map(drop),
            Contents::Stub(text) => std::fs::write(&target, text),
        }
        .with_context(|| format!("cannot write {}", target.display()))?;
        written.push(path);
    }
    written.sort();
    written.dedup();
    Ok(written)
}

enum Contents {
    Copy(PathBuf),
    Stub(&'static str),
}

/// The packages of the workspace, as paths relative to `root`: its members and every package
/// one of them depends on by path (cargo needs their manifests to resolve the workspace).
fn packages(root: &Path) -> Result<BTreeSet<PathBuf>> {
    let workspace = read_manifest(&root.join("Cargo.toml"))?;
    let members = workspace
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .map(|members| members.iter().filter_map(|m| m.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut pending: Vec<PathBuf> = Vec::new();
    for member in members {
        if member.contains(['*', '?', '[']) {
            bail!("workspace member `{member}` is a glob: list the members of Cargo.toml one by one");
        }
        pending.push(PathBuf::from(member));
    }
    if workspace.contains_key("package") {
        pending.push(PathBuf::new());
    }
    let mut seen = BTreeSet::new();
    while let Some(package) = pending.pop() {
        if !seen.insert(package.clone()) {
            continue;
        }
        let table = read_manifest(&root.join(&package).join("Cargo.toml"))?;
        for path in path_dependencies(&table) {
            // `a/../b` as `b`: a package reached by two paths is one package.
            let dependency = crate::normalize(&package.join(path));
            if dependency.components().next() == Some(Component::ParentDir) {
                bail!(
                    "{} depends on {} by path, outside the workspace: the recipe cannot carry it",
                    package.join("Cargo.toml").display(),
                    dependency.display()
                );
            }
            pending.push(dependency);
        }
    }
    Ok(seen)
}

fn read_manifest(path: &Path) -> Result<toml::Table> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.parse().with_context(|| format!("{} is not valid TOML", path.display()))
}

/// The `path` of every dependency a manifest declares, in every dependency table.
fn path_dependencies(manifest: &toml::Table) -> Vec<String> {
    let tables = ["dependencies", "dev-dependencies", "build-dependencies"];
    let mut found: Vec<&toml::Value> = tables.iter().filter_map(|t| manifest.get(*t)).collect();
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values() {
            found.extend(tables.iter().filter_map(|t| target.get(*t)));
        }
    }
    found
        .into_iter()
        .filter_map(|table| table.as_table())
        .flat_map(|table| table.values())
        .filter_map(|dependency| dependency.get("path").and_then(|p| p.as_str()).map(str::to_string))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Lib,
    Main,
    BuildScript,
}

/// The source files of a package's targets that cargo needs to find to load its manifest
/// (relative to the package): the targets it infers (`src/lib.rs`, `src/main.rs`, `build.rs`)
/// where they exist, and every target the manifest declares.
fn targets(package: &Path, manifest: &toml::Table) -> Vec<(PathBuf, Kind)> {
    let mut found: Vec<(PathBuf, Kind)> = Vec::new();
    let build = manifest.get("package").and_then(|p| p.get("build"));
    match build {
        Some(toml::Value::String(path)) => found.push((path.into(), Kind::BuildScript)),
        Some(toml::Value::Boolean(false)) => {}
        _ if package.join("build.rs").is_file() => found.push(("build.rs".into(), Kind::BuildScript)),
        _ => {}
    }
    let lib = manifest.get("lib").and_then(|l| l.get("path")).and_then(|p| p.as_str());
    match lib {
        Some(path) => found.push((path.into(), Kind::Lib)),
        None if package.join("src/lib.rs").is_file() => found.push(("src/lib.rs".into(), Kind::Lib)),
        None => {}
    }
    if package.join("src/main.rs").is_file() {
        found.push(("src/main.rs".into(), Kind::Main));
    }
    for (section, folder) in
        [("bin", "src/bin"), ("example", "examples"), ("test", "tests"), ("bench", "benches")]
    {
        let declared = manifest.get(section).and_then(|s| s.as_array()).into_iter().flatten();
        for target in declared {
            let path = target.get("path").and_then(|p| p.as_str()).map(PathBuf::from);
            let inferred = || {
                let name = target.get("name")?.as_str()?;
                [format!("{folder}/{name}.rs"), format!("{folder}/{name}/main.rs")]
                    .into_iter()
                    .map(PathBuf::from)
                    .find(|candidate| package.join(candidate).is_file())
            };
            if let Some(path) = path.or_else(inferred) {
                found.push((path, Kind::Main));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.dedup_by(|a, b| a.0 == b.0);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A workspace: a root manifest with members, a lock, and `files` (path, contents).
    fn workspace(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        dir
    }

    fn read(dir: &Path, path: &str) -> String {
        std::fs::read_to_string(dir.join(path)).unwrap()
    }

    #[test]
    fn manifests_and_lock_as_they_are_and_a_stub_for_each_target() {
        let ws = workspace(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"tool\", \"bench\"]\n"),
            ("Cargo.lock", "version = 4\n"),
            (
                "tool/Cargo.toml",
                "[package]\nname = \"tool\"\n[dependencies]\nhelper = { path = \"../helper\" }\n",
            ),
            ("tool/src/lib.rs", "pub fn real() {}\n"),
            ("tool/src/main.rs", "fn main() { tool::real() }\n"),
            ("tool/build.rs", "fn main() { println!(\"cargo::rerun-if-changed=build.rs\"); }\n"),
            ("tool/tests/t.rs", "#[test] fn t() {}\n"),
            (
                "bench/Cargo.toml",
                "[package]\nname = \"bench\"\n[[bin]]\nname = \"b\"\npath = \"src/b.rs\"\n[[bench]]\nname = \"speed\"\n",
            ),
            ("bench/src/b.rs", "fn main() { println!(\"real\") }\n"),
            ("bench/benches/speed.rs", "fn main() {}\n"),
            ("helper/Cargo.toml", "[package]\nname = \"helper\"\n[lib]\npath = \"lib/helper.rs\"\n"),
            ("helper/lib/helper.rs", "pub fn helps() {}\n"),
        ]);
        let into = ws.path().join("out/recipe");
        let written = write(ws.path(), &into).unwrap();
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                "Cargo.lock",
                "Cargo.toml",
                "bench/Cargo.toml",
                "bench/benches/speed.rs",
                "bench/src/b.rs",
                "helper/Cargo.toml",
                "helper/lib/helper.rs",
                "tool/Cargo.toml",
                "tool/build.rs",
                "tool/src/lib.rs",
                "tool/src/main.rs",
            ]
        );
        for manifest in
            ["Cargo.toml", "Cargo.lock", "tool/Cargo.toml", "bench/Cargo.toml", "helper/Cargo.toml"]
        {
            assert_eq!(read(&into, manifest), read(ws.path(), manifest), "{manifest}");
        }
        assert_eq!(read(&into, "tool/build.rs"), read(ws.path(), "tool/build.rs"), "a build script is real");
        assert_eq!(read(&into, "tool/src/lib.rs"), LIB_STUB);
        assert_eq!(read(&into, "helper/lib/helper.rs"), LIB_STUB);
        for main in ["tool/src/main.rs", "bench/src/b.rs", "bench/benches/speed.rs"] {
            assert_eq!(read(&into, main), MAIN_STUB, "{main}");
        }
        // A tests/ file cargo would infer is not needed to build, and not written.
        assert!(!into.join("tool/tests/t.rs").exists());

        // A change to the code leaves the recipe the same; an old file goes.
        std::fs::write(ws.path().join("tool/src/lib.rs"), "pub fn real() { changed() }\n").unwrap();
        std::fs::write(into.join("stale.txt"), "old").unwrap();
        assert_eq!(write(ws.path(), &into).unwrap(), written);
        assert!(!into.join("stale.txt").exists());
        assert_eq!(read(&into, "tool/src/lib.rs"), LIB_STUB);
    }

    #[test]
    fn what_the_recipe_cannot_carry_is_named() {
        let no_lock = workspace(&[("Cargo.toml", "[workspace]\nmembers = []\n")]);
        let err = write(no_lock.path(), &no_lock.path().join("r")).unwrap_err().to_string();
        assert!(err.contains("Cargo.lock is missing") && err.contains("cargo generate-lockfile"), "{err}");

        let glob =
            workspace(&[("Cargo.toml", "[workspace]\nmembers = [\"crates/*\"]\n"), ("Cargo.lock", "")]);
        let err = format!("{:#}", write(glob.path(), &glob.path().join("r")).unwrap_err());
        assert!(err.contains("`crates/*` is a glob"), "{err}");

        let outside = workspace(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"a\"]\n"),
            ("Cargo.lock", ""),
            ("a/Cargo.toml", "[package]\nname = \"a\"\n[dev-dependencies]\nx = { path = \"../../x\" }\n"),
        ]);
        let err = format!("{:#}", write(outside.path(), &outside.path().join("r")).unwrap_err());
        assert!(err.contains("a/Cargo.toml depends on ../x by path, outside the workspace"), "{err}");
    }

    fn cargo() -> std::process::Command {
        std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
    }

    fn run(command: &mut std::process::Command) -> String {
        let output = command.output().unwrap();
        assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    }

    /// The recipe's way, on a workspace with no dependencies (quick, offline): prebuilt as the
    /// cloud builder does, copied as the pipeline's step does, then built from sources older
    /// than the prebuild. The step compiles the real crate, and its binary is the real one.
    #[test]
    fn a_prebuilt_target_folder_leaves_the_real_crate_to_compile() {
        let ws = workspace(&[
            ("Cargo.toml", "[workspace]\nmembers = [\"xtask\"]\nresolver = \"3\"\n"),
            ("xtask/Cargo.toml", "[package]\nname = \"xtask\"\nversion = \"0.1.0\"\nedition = \"2024\"\n"),
            ("xtask/src/main.rs", "fn main() { println!(\"the real xtask\"); }\n"),
        ]);
        let root = ws.path().join("checkout");
        std::fs::create_dir(&root).unwrap();
        for path in ["Cargo.toml", "xtask/Cargo.toml", "xtask/src/main.rs"] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::rename(ws.path().join(path), root.join(path)).unwrap();
        }
        run(cargo().args(["generate-lockfile", "--offline", "--manifest-path"]).arg(root.join("Cargo.toml")));
        // The checkout is older than the image's prebuild, as a Cloud Build source archive may be.
        let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for path in ["Cargo.toml", "Cargo.lock", "xtask/Cargo.toml", "xtask/src/main.rs"] {
            std::fs::File::options()
                .write(true)
                .open(root.join(path))
                .unwrap()
                .set_modified(an_hour_ago)
                .unwrap();
        }

        let recipe = ws.path().join("recipe");
        write(&root, &recipe).unwrap();
        let prebuilt = ws.path().join("prebuilt");
        for words in PREBUILD {
            run(cargo()
                .args(words)
                .arg("--manifest-path")
                .arg(recipe.join("Cargo.toml"))
                .env("CARGO_TARGET_DIR", &prebuilt));
        }
        let step = ws.path().join("step");
        run(std::process::Command::new("cp").arg("-a").arg(&prebuilt).arg(&step));
        let messages = run(cargo()
            .args(["build", "--locked", "--package", "xtask", "--message-format", "json", "--manifest-path"])
            .arg(root.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &step));
        let compiled = messages.lines().any(|line| {
            line.contains("\"reason\":\"compiler-artifact\"")
                && line.contains("xtask")
                && line.contains("\"fresh\":false")
        });
        assert!(compiled, "the step compiled the real crate: {messages}");
        let said = run(&mut std::process::Command::new(step.join("debug/xtask")));
        assert_eq!(said, "the real xtask\n");
    }

    /// This repository's recipe resolves to exactly the packages of its own workspace.
    #[test]
    fn this_workspace_has_a_recipe_cargo_resolves_alike() {
        let root = crate::project_root();
        let dir = tempfile::tempdir().unwrap();
        let written = write(&root, dir.path()).unwrap();
        assert!(written.contains(&PathBuf::from("xtask/src/main.rs")), "{written:?}");
        // This machine's platform only: the others' crates were never downloaded here.
        let rustc = std::process::Command::new("rustc").arg("-vV").output().unwrap();
        let rustc = String::from_utf8(rustc.stdout).unwrap();
        let host = rustc.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc names its host");
        let packages = |manifest: &Path| -> Vec<String> {
            let output = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
                .args(["metadata", "--locked", "--offline", "--format-version", "1"])
                .args(["--filter-platform", host, "--manifest-path"])
                .arg(manifest)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
            let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            let mut names: Vec<String> = metadata["packages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{} {} {}", p["name"], p["version"], p["source"]))
                .collect();
            names.sort();
            names
        };
        let (real, recipe) = (packages(&root.join("Cargo.toml")), packages(&dir.path().join("Cargo.toml")));
        assert!(real.len() > 100, "{} packages", real.len());
        assert_eq!(recipe, real);
    }
}
