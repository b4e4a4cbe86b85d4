//! A repository of the shape public multi-image repositories have (docker-stacks' layout:
//! images/<name>/Dockerfile, parents named through argument defaults as `quay.io/acme/<parent>`,
//! the root on `ubuntu:24.04@sha256:…` chosen by `ARG ROOT_IMAGE`, a variant in a subfolder for
//! one platform), and its catalog: what `as_written.rs` builds on the engine and
//! `recorded_plans.rs` plans. Every form of a Dockerfile the tool reads is in one of them.
#![allow(dead_code)] // each test binary uses its own part of this module

/// The catalog: an entry per image, its folder as the repository has it.
pub const CATALOG: &str = r#"
# Acme's notebook images. Their Dockerfiles name each other as quay.io/acme/<name>.
aliases = ["quay.io/acme/{name}"]

[versions]
PARENT_TAG = "latest"

[[image]]
name = "docker-stacks-foundation"
context = "images/docker-stacks-foundation"
description = "the foundation: ubuntu and the user"
tag = "latest"

[[image]]
name = "base-notebook"
context = "images/base-notebook"
description = "the notebook server"
tag = "latest"

[[image]]
name = "minimal-notebook"
context = "images/minimal-notebook"
description = "command line tools"
tag = "latest"

[[image]]
name = "scipy-notebook"
context = "images/scipy-notebook"
description = "the scientific stack"
tag = "latest"
build_args = ["PARENT_TAG"]

[[image]]
name = "pytorch-notebook"
context = "images/pytorch-notebook"
description = "pytorch, for the CPU"
tag = "latest"

[[image]]
name = "pytorch-notebook-cuda12"
repository = "pytorch-notebook"
context = "images/pytorch-notebook/cuda12"
platforms = ["linux/amd64"]
description = "pytorch with CUDA 12"
tag = "cuda12-latest"
"#;

/// The root: the base pinned by digest under a stage name, the stage chosen by an argument;
/// quoted argument values, a comment inside a continuation, JSON forms.
pub const FOUNDATION: &str = r#"# Copyright (c) Acme Development Team.
# Distributed under the terms of the Modified BSD License.

# Ubuntu 24.04 (noble)
# https://hub.docker.com/_/ubuntu/tags?page=1&name=noble
ARG ROOT_IMAGE=default_root_image

FROM ubuntu:24.04@{UBUNTU_DIGEST} AS default_root_image

FROM $ROOT_IMAGE

LABEL maintainer="Acme Project <acme@example.org>"
ARG NB_USER="jovyan"
ARG NB_UID='1000'

SHELL ["/bin/sh", "-o", "pipefail", "-c"]

USER root
RUN echo "user ${NB_USER}:${NB_UID}" > /etc/acme-user && \
    # The arm64 build runs here under QEMU.
    uname -m > /foundation-built-on

COPY --chmod=0755 start.sh /usr/local/bin/
ENV NB_USER="${NB_USER}"
CMD ["start.sh"]
"#;

/// The parent through global arguments; a heredoc.
pub const BASE_NOTEBOOK: &str = r#"# Copyright (c) Acme Development Team.
# Distributed under the terms of the Modified BSD License.
ARG REGISTRY=quay.io
ARG OWNER=acme
ARG BASE_IMAGE=$REGISTRY/$OWNER/docker-stacks-foundation
FROM $BASE_IMAGE

RUN <<EOF
set -e
echo base-notebook > /base-notebook
EOF

COPY ["jupyter_server_config.py", "/etc/jupyter/"]
"#;

/// A stage on the build platform from an external base, `COPY --from` that stage, and
/// `RUN --mount` from an external image and from the stage.
pub const MINIMAL_NOTEBOOK: &str = r#"ARG REGISTRY=quay.io
ARG OWNER=acme
ARG BASE_IMAGE=$REGISTRY/$OWNER/base-notebook

FROM --platform=$BUILDPLATFORM busybox:1.35 AS fetcher
RUN uname -m > /fetched-on

FROM $BASE_IMAGE
COPY --from=fetcher /fetched-on /fetched-on
RUN --mount=type=bind,from=busybox:1.35,source=/bin,target=/mnt/bin \
    --mount=type=bind,from=fetcher,source=/fetched-on,target=/mnt/fetched-on \
    ls /mnt/bin/busybox > /mounted-image && cat /mnt/fetched-on > /mounted-stage
"#;

/// `${A:-b}` (REGISTRY is not given) and `${A:+b}` (PARENT_TAG is, by the catalog), and
/// `COPY --from` an image of the catalog that is not its parent.
pub const SCIPY_NOTEBOOK: &str = r#"ARG REGISTRY
ARG OWNER=acme
ARG PARENT_TAG
ARG BASE_IMAGE="${REGISTRY:-quay.io}/${OWNER}/minimal-notebook${PARENT_TAG:+:$PARENT_TAG}"
FROM ${BASE_IMAGE}

COPY --from=quay.io/acme/base-notebook /base-notebook /copied-from-base-notebook
RUN echo scipy > /scipy
"#;

/// The `escape` directive: a backtick continues the line.
pub const PYTORCH_NOTEBOOK: &str = "# escape=`
ARG REGISTRY=quay.io
ARG OWNER=acme
ARG BASE_IMAGE=$REGISTRY/$OWNER/scipy-notebook
FROM $BASE_IMAGE

RUN echo pytorch > /pytorch && `
    uname -m > /pytorch-built-on
";

/// The variant: its own folder and context, one platform, the same repository.
pub const PYTORCH_CUDA12: &str = r#"ARG REGISTRY=quay.io
ARG OWNER=acme
ARG BASE_IMAGE=$REGISTRY/$OWNER/scipy-notebook
FROM $BASE_IMAGE

RUN echo cuda12 > /variant
"#;

pub const IMAGES: [&str; 6] = [
    "base-notebook",
    "docker-stacks-foundation",
    "minimal-notebook",
    "pytorch-notebook",
    "pytorch-notebook-cuda12",
    "scipy-notebook",
];

/// The repository's files but the foundation's Dockerfile, which pins a digest, and the list.
pub fn files() -> Vec<(&'static str, String)> {
    vec![
        ("images/docker-stacks-foundation/start.sh", "#!/bin/sh\nexec \"$@\"\n".into()),
        ("images/base-notebook/jupyter_server_config.py", "c = get_config()\n".into()),
        ("images/base-notebook/Dockerfile", BASE_NOTEBOOK.into()),
        ("images/minimal-notebook/Dockerfile", MINIMAL_NOTEBOOK.into()),
        ("images/scipy-notebook/Dockerfile", SCIPY_NOTEBOOK.into()),
        ("images/pytorch-notebook/Dockerfile", PYTORCH_NOTEBOOK.into()),
        ("images/pytorch-notebook/cuda12/Dockerfile", PYTORCH_CUDA12.into()),
    ]
}

/// The repository written into `dir` as it is, the foundation pinning ubuntu to `pinned`, with
/// `list` as its vendoring list.
pub fn write_repository(dir: &std::path::Path, pinned: &str, list: &str) {
    let (files, foundation) = (files(), FOUNDATION.replace("{UBUNTU_DIGEST}", pinned));
    let files = files.iter().map(|(path, text)| (*path, text.as_str()));
    let more = [
        ("images.toml", CATALOG),
        ("images/docker-stacks-foundation/Dockerfile", foundation.as_str()),
        ("thirdparty.txt", list),
    ];
    super::write_files(dir, files.chain(more));
}
