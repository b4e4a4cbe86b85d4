//! Two real registries and a folder: what the `thirdparty` tests (`tests/thirdparty.rs`,
//! `tests/lock.rs`) vendor from and into, and the list, lock and docker config between them.

use std::path::PathBuf;
use std::process::Output;

use xtask_testbed::{TestRegistry, sha256_digest, skopeo_raw};

pub struct Vendoring {
    pub source: TestRegistry,
    pub destination: TestRegistry,
    pub dir: tempfile::TempDir,
}

impl Vendoring {
    pub fn new() -> Vendoring {
        Vendoring {
            source: TestRegistry::start().expect("source registry"),
            destination: TestRegistry::start().expect("destination registry"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// DOCKER_REPO: `mirror` at the destination.
    pub fn docker_repo(&self) -> String {
        format!("{}/mirror", self.destination.host())
    }

    /// The list (`thirdparty.txt` in the folder), written as given; its path.
    pub fn write_list(&self, text: &str) -> String {
        let path = self.list_path();
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    /// The list, one line per entry of `lines`, each at the source.
    pub fn list(&self, lines: &[&str]) {
        self.list_from(&self.source.host(), lines);
    }

    /// The list, with the source reached at `host` (a proxy in front of it, say).
    pub fn list_from(&self, host: &str, lines: &[&str]) {
        let text: Vec<String> = lines.iter().map(|l| format!("{host}/{l}")).collect();
        self.write_list(&(text.join("\n") + "\n"));
    }

    fn list_path(&self) -> PathBuf {
        self.dir.path().join("thirdparty.txt")
    }

    /// `thirdparty` on the folder's list, into the destination.
    pub fn run(&self, extra: &[&str]) -> Output {
        self.run_into(&self.destination, extra)
    }

    /// `thirdparty` on the folder's list, into `destination`.
    pub fn run_into(&self, destination: &TestRegistry, extra: &[&str]) -> Output {
        let repo = format!("{}/mirror", destination.host());
        self.run_list(&self.list_path().display().to_string(), &repo, extra, &[])
    }

    /// `thirdparty --file <list>` into DOCKER_REPO `repo`, the folder's `docker-config` as
    /// DOCKER_CONFIG, plus `env`.
    pub fn run_list(&self, list: &str, repo: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut args = vec!["thirdparty", "--file", list];
        args.extend_from_slice(extra);
        let config = self.dir.path().join("docker-config").display().to_string();
        let mut all = vec![("DOCKER_REPO", repo), ("DOCKER_CONFIG", config.as_str())];
        all.extend_from_slice(env);
        super::xtask(&args, &all)
    }

    /// The lock beside the list (empty when there is none).
    pub fn lock(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("thirdparty.lock")).unwrap_or_default()
    }

    pub fn locked(&self) -> toml::Value {
        toml::from_str(&self.lock()).unwrap()
    }

    /// The lock's key for `tag` at the source.
    pub fn key(&self, tag: &str) -> String {
        format!("{}/{tag}", self.source.host())
    }

    /// The digest `destination` serves for `mirror/thirdparty/<path>`, read by skopeo.
    pub fn at_destination(&self, destination: &TestRegistry, path: &str) -> Option<String> {
        skopeo_raw(&format!("{}/mirror/thirdparty/{path}", destination.host()))
            .ok()
            .map(|raw| sha256_digest(&raw))
    }
}
