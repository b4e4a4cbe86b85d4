//! A repository that describes its images in a bake file, written the way public repositories
//! write theirs: variables with defaults, a `_common` target the others inherit, a `target:`
//! context, a matrix, groups, and attributes bake has and the tool does not carry out
//! (`cache-from`, `output`). Its Dockerfiles name their parents as they would for bake: by the
//! context's name (`FROM base`) and by the parents' tags as written (`FROM
//! acme.example/acme/base:1.0`). Beside it, `images.toml` describes the same images as
//! `[[image]]` entries, for the test that the two make the same plan.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const BAKE_FILE: &str = r#"# Acme's images.
variable "REGISTRY" {
  default = "acme.example"
}

variable "VERSION" {
  default = "1.0"
}

variable "BUSYBOX_VERSION" {
  default = "1.35"
}

group "default" {
  targets = ["base", "app", "tools"]
}

group "app-only" {
  targets = ["app"]
}

target "_common" {
  platforms = ["linux/amd64", "linux/arm64"]
  args = {
    BUSYBOX_VERSION = BUSYBOX_VERSION
  }
  labels = {
    "org.opencontainers.image.vendor" = "Acme"
    "com.acme.config" = "{\"debug\": false}"
  }
  annotations = ["index:org.opencontainers.image.description=Acme's images"]
}

target "base" {
  inherits = ["_common"]
  context = "base"
  tags = ["${REGISTRY}/acme/base:${VERSION}", "${REGISTRY}/acme/base:latest"]
}

target "app" {
  inherits = ["_common"]
  context = "app"
  contexts = {
    base = "target:base"
  }
  tags = ["${REGISTRY}/acme/app:${VERSION}"]
  cache-from = ["type=registry,ref=${REGISTRY}/acme/app:cache"]
  output = ["type=registry"]
}

target "tools" {
  inherits = ["_common"]
  name = "tools-${flavor}"
  matrix = {
    flavor = ["small", "full"]
  }
  context = "tools"
  dockerfile = "${flavor}.Dockerfile"
  args = {
    FLAVOR = flavor
  }
  tags = ["${REGISTRY}/acme/tools:${VERSION}-${flavor}"]
}
"#;

/// The same images as `[[image]]` entries: what `bake.rs` maps the bake file onto.
pub const CATALOG: &str = r#"
[[image]]
name = "base"
description = "a target of docker-bake.hcl"
context = "base"
dockerfile = "Dockerfile"
platforms = ["linux/amd64", "linux/arm64"]
tags = ["1.0", "latest"]
aliases = ["acme.example/acme/base:1.0", "acme.example/acme/base:latest", "base"]
args = { BUSYBOX_VERSION = "1.35" }
labels = { "com.acme.config" = "{{\"debug\": false}", "org.opencontainers.image.vendor" = "Acme" }
annotations = { "index:org.opencontainers.image.description" = "Acme's images" }

[[image]]
name = "app"
description = "a target of docker-bake.hcl"
context = "app"
dockerfile = "Dockerfile"
platforms = ["linux/amd64", "linux/arm64"]
tags = ["1.0"]
aliases = ["acme.example/acme/app:1.0"]
args = { BUSYBOX_VERSION = "1.35" }
labels = { "com.acme.config" = "{{\"debug\": false}", "org.opencontainers.image.vendor" = "Acme" }
annotations = { "index:org.opencontainers.image.description" = "Acme's images" }

[[image]]
name = "tools-small"
description = "a target of docker-bake.hcl"
repository = "tools"
context = "tools"
dockerfile = "small.Dockerfile"
platforms = ["linux/amd64", "linux/arm64"]
tags = ["1.0-small"]
aliases = ["acme.example/acme/tools:1.0-small"]
args = { BUSYBOX_VERSION = "1.35", FLAVOR = "small" }
labels = { "com.acme.config" = "{{\"debug\": false}", "org.opencontainers.image.vendor" = "Acme" }
annotations = { "index:org.opencontainers.image.description" = "Acme's images" }

[[image]]
name = "tools-full"
description = "a target of docker-bake.hcl"
repository = "tools"
context = "tools"
dockerfile = "full.Dockerfile"
platforms = ["linux/amd64", "linux/arm64"]
tags = ["1.0-full"]
aliases = ["acme.example/acme/tools:1.0-full"]
args = { BUSYBOX_VERSION = "1.35", FLAVOR = "full" }
labels = { "com.acme.config" = "{{\"debug\": false}", "org.opencontainers.image.vendor" = "Acme" }
annotations = { "index:org.opencontainers.image.description" = "Acme's images" }
"#;

pub const BASE: &str = "ARG BUSYBOX_VERSION=1.35\nFROM busybox:${BUSYBOX_VERSION}\n\
    RUN echo base > /base && uname -m > /built-on\nCOPY motd /etc/motd\n";
/// On the context `base = "target:base"`.
pub const APP: &str = "FROM base\nRUN echo app > /app\n";
/// On the base, by its tag as written.
pub const TOOLS_SMALL: &str = "ARG REGISTRY=acme.example\nFROM ${REGISTRY}/acme/base:1.0\nARG FLAVOR\n\
    RUN echo \"small $FLAVOR\" > /tools\n";
/// On the app, by its tag as written.
pub const TOOLS_FULL: &str = "ARG REGISTRY=acme.example\nFROM ${REGISTRY}/acme/app:1.0\nARG FLAVOR\n\
    RUN echo \"full $FLAVOR\" > /tools\n";

/// The images, in the order the bake file's group makes them.
pub const IMAGES: [&str; 4] = ["base", "app", "tools-small", "tools-full"];

/// The bake file, the Dockerfiles and their files, by path.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("docker-bake.hcl", BAKE_FILE.into()),
        ("base/Dockerfile", BASE.into()),
        ("base/motd", "Acme\n".into()),
        ("app/Dockerfile", APP.into()),
        ("tools/small.Dockerfile", TOOLS_SMALL.into()),
        ("tools/full.Dockerfile", TOOLS_FULL.into()),
    ]
}

/// The repository in `dir`: the bake file, `images.toml` and the vendoring list `list`.
pub fn write_repository(dir: &Path, list: &str) {
    let files = files();
    let files = files.iter().map(|(path, text)| (*path, text.as_str()));
    super::write_files(dir, files.chain([("images.toml", CATALOG), ("thirdparty.txt", list)]));
}

/// The real `docker` whose `buildx bake` reads a bake file (no engine needed), for the fakes to
/// hand `docker buildx bake` to (`FakeTools::pass_to`). Under CI its absence fails the test;
/// elsewhere the test says why it skips.
pub fn real_docker_or_skip(test: &str) -> Option<PathBuf> {
    let docker = which::which("docker").ok();
    let answers = docker.as_ref().is_some_and(|docker| {
        Command::new(docker).args(["buildx", "version"]).output().is_ok_and(|o| o.status.success())
    });
    if answers {
        return docker;
    }
    let problem = "`docker buildx version` does not answer (docker and its buildx plugin read bake files)";
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test} needs docker buildx and CI must have it: {problem}");
    }
    eprintln!("SKIPPED {test}: {problem}");
    None
}
