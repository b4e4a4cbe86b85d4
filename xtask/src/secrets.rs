//! The secrets a build step reads (`RUN --mount=type=secret,id=…`): where each comes from, as
//! the catalog says (`secrets = { token = { env = "NAME" } }`). A secret's value is handed to
//! BuildKit with `--secret` and nothing else: never in a build argument, a log line, the dry run
//! (which names only its id and source), the inputs digest or a cache key.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, anyhow};
use serde::Deserialize;
use xshell::cmd;

use crate::catalog::Image;
use crate::ctx::Ctx;
use crate::runner::sh;

/// Where a secret's value is read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Secret {
    /// An environment variable of the run.
    Env { env: String },
    /// A file, relative to the catalog's folder.
    File { file: PathBuf },
    /// A Secret Manager secret of GCP_PROJECT, read through gcloud (as the VM's ssh key is).
    GcpSecret { gcp_secret: String },
}

/// The secrets of the images of a run, each found where its entry says before anything is
/// built; those of Secret Manager read through gcloud into a folder of this process's own,
/// removed with it (a file of the run, never of the workspace that outlives the step).
pub struct Secrets {
    /// `--secret` values by image and id: `id=token,env=NPM_TOKEN`, `id=key,src=/…/key.txt`.
    flags: BTreeMap<(String, String), String>,
    _read: Option<tempfile::TempDir>,
}

impl Secrets {
    /// Every secret `images` name, found: an environment variable set (its value is read by
    /// buildx, not here), a file there, a Secret Manager secret read. Err: the first that is
    /// not, naming its image, id and where it was looked for.
    pub fn find(ctx: &Ctx, images: &[&Image]) -> Result<Secrets> {
        let mut flags = BTreeMap::new();
        let mut read: Option<tempfile::TempDir> = None;
        for image in images {
            for (id, secret) in &image.secrets {
                let missing = |where_: String| {
                    anyhow!(
                        "image `{}` needs the secret `{id}`, {where_}: set it, or change `secrets` in the catalog",
                        image.name
                    )
                };
                let flag = match secret {
                    Secret::Env { env } => {
                        // A dry run too: its plan could not be carried out without it.
                        if std::env::var_os(env).is_none_or(|v| v.is_empty()) {
                            return Err(missing(format!(
                                "read from the environment variable {env}, which is not set"
                            )));
                        }
                        format!("id={id},env={env}")
                    }
                    Secret::File { file } => {
                        // From the catalog's folder, wherever the xtask was started.
                        let path = ctx.root.join(image.folder()).join(file);
                        if !path.is_file() {
                            return Err(missing(format!(
                                "read from the file {}, which is not there",
                                path.display()
                            )));
                        }
                        format!("id={id},src={}", path.display())
                    }
                    Secret::GcpSecret { gcp_secret } => {
                        if read.is_none() {
                            read = Some(tempfile::Builder::new().prefix("xtask-secrets-").tempdir()?);
                        }
                        let dir = read.as_ref().expect("made above").path();
                        let path = dir.join(format!("{}-{id}", image.name));
                        let (sh, project) = (sh(), &ctx.settings.gcp_project);
                        let out = format!("--out-file={}", path.display());
                        let secret_flag = format!("--secret={gcp_secret}");
                        ctx.runner
                            .run(cmd!(sh, "gcloud secrets versions access latest {secret_flag} --project {project} {out}"))
                            .map_err(|err| {
                                missing(format!("read from Secret Manager ({gcp_secret} of {project}), which failed: {err:#}"))
                            })?;
                        format!("id={id},src={}", path.display())
                    }
                };
                flags.insert((image.name.clone(), id.clone()), flag);
            }
        }
        Ok(Secrets { flags, _read: read })
    }

    /// The secrets of the catalog's images `names` (see `find`).
    pub fn of_images(ctx: &Ctx, names: &[&str]) -> Result<Secrets> {
        let images: Vec<&Image> =
            ctx.catalog.images.iter().filter(|image| names.contains(&image.name.as_str())).collect();
        Secrets::find(ctx, &images)
    }

    /// No secret at all: for a run whose images read none.
    pub fn none() -> Secrets {
        Secrets { flags: BTreeMap::new(), _read: None }
    }

    /// `--secret …` for each secret of `image`, in id order.
    pub fn flags(&self, image: &str) -> Vec<String> {
        self.flags
            .iter()
            .filter(|((name, _), _)| name == image)
            .flat_map(|(_, flag)| ["--secret".to_string(), flag.clone()])
            .collect()
    }
}
