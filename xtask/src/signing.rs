//! Signatures of what is published: cosign, by digest, never by tag, as `SIGN_KEY` says.

use anyhow::{Context, Result};
use xshell::cmd;

use crate::ctx::Ctx;
use crate::registry::uses_plain_http;
use crate::runner::sh;

/// `SIGN_KEY=keyless`: a certificate for the gcloud account's identity token (in Cloud Build,
/// the build's service account), no key to keep.
pub const KEYLESS: &str = "keyless";

/// cosign's tag for the signature of `digest` (`sha256-<hex>.sig`), which `thirdparty` copies
/// with the image.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", crate::registry::referrers::referrers_tag(digest))
}

/// cosign's flags for a registry spoken to over plain HTTP (loopback ones always are).
pub fn registry_flags(ctx: &Ctx, reference: &str) -> Vec<String> {
    let host = crate::registry::reference::registry_of(reference);
    if uses_plain_http(host, &ctx.settings.insecure_registries) {
        vec!["--allow-http-registry".into(), "--allow-insecure-registry".into()]
    } else {
        Vec::new()
    }
}

/// Sign `reference` (`<repo>@<digest>`) as `SIGN_KEY` says. A key file signs without the
/// transparency log (offline; verify with `--insecure-ignore-tlog`); a KMS key and keyless
/// signing record the signature in it.
pub fn sign(ctx: &Ctx, key: &str, reference: &str) -> Result<()> {
    let sh = sh();
    let registry = registry_flags(ctx, reference);
    if key == KEYLESS {
        return sign_keyless(ctx, reference, &registry);
    }
    let local = !key.contains("://");
    let tlog: Vec<&str> = if local { vec!["--tlog-upload=false"] } else { Vec::new() };
    ctx.runner.run(cmd!(sh, "cosign sign --yes --key {key} {tlog...} {registry...} {reference}"))
}

/// Keyless: the identity token, for the audience `sigstore`, goes to cosign in a file of its
/// own, never on a command line (which is logged).
fn sign_keyless(ctx: &Ctx, reference: &str, registry: &[String]) -> Result<()> {
    let sh = sh();
    let token_file = ctx.root.join(crate::work_dir()).join("xtask/identity-token");
    if ctx.runner.is_dry_run() {
        ctx.runner.say(&format!(
            "an identity token for sigstore (`gcloud auth print-identity-token --audiences=sigstore`) into {}:",
            token_file.display()
        ));
    } else {
        let token =
            ctx.runner.query(cmd!(sh, "gcloud auth print-identity-token --audiences=sigstore"), None)?;
        write_secret(&token_file, token.trim())?;
    }
    let result =
        ctx.runner.run(cmd!(sh, "cosign sign --yes --identity-token {token_file} {registry...} {reference}"));
    let _ = std::fs::remove_file(&token_file);
    result
}

fn write_secret(path: &std::path::Path, secret: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(path.parent().expect("a folder"))?;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(secret.as_bytes())?;
    Ok(())
}
