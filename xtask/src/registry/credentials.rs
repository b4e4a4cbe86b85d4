//! How each registry of a run is reached and with which credentials, found before any request
//! (credential helpers and gcloud are external commands, run through the runner).

use anyhow::Result;
use oci_client::secrets::RegistryAuth;

use super::auth::{CredentialSource, DockerConfig, credentials_for};
use super::session::{RegistryAccess, uses_plain_http};
use crate::runner::{Runner, sh};

/// How to reach each of `hosts` (`(host, read_only)`: nothing is pushed there) and the
/// credentials found for it: a credential helper, the Docker config, or a gcloud token.
/// `gcloud_hosts` take a gcloud token besides Google's own; `insecure` speak plain HTTP.
pub fn registry_credentials(
    runner: &Runner,
    hosts: &[(String, bool)],
    gcloud_hosts: &[String],
    insecure: &[String],
) -> Result<Vec<(RegistryAccess, RegistryAuth, CredentialSource)>> {
    let config = DockerConfig::load()?;
    let run = |program: &str, args: &[&str], stdin: Option<&str>| {
        let sh = sh();
        runner.query(xshell::cmd!(sh, "{program} {args...}"), stdin)
    };
    let mut registries = Vec::new();
    for (host, read_only) in hosts {
        let (auth, source) = credentials_for(host, &config, gcloud_hosts, *read_only, &run)?;
        let access = RegistryAccess { plain_http: uses_plain_http(host, insecure), host: host.clone() };
        registries.push((access, auth, source));
    }
    Ok(registries)
}
