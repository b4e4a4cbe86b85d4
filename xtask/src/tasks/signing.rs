//! Signatures of what is published (cosign, by digest, never by tag), and `verify`: an image's
//! signature checked and its provenance shown, per platform, as a consumer would.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::cmd;

use super::Ctx;
use crate::catalog::Image;
use crate::registry::uses_plain_http;
use crate::runner::sh;

/// `SIGN_KEY=keyless`: a certificate for the gcloud account's identity token (in Cloud Build,
/// the build's service account), no key to keep.
const KEYLESS: &str = "keyless";

/// cosign's tag for the signature of `digest` (`sha256-<hex>.sig`), which `thirdparty` copies
/// with the image.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// cosign's flags for a registry spoken to over plain HTTP (loopback ones always are).
fn registry_flags(reference: &str) -> Vec<String> {
    let host = reference.split('/').next().unwrap_or_default();
    let insecure: Vec<String> =
        std::env::var("INSECURE_REGISTRIES").unwrap_or_default().split(',').map(str::to_string).collect();
    if uses_plain_http(host, &insecure) {
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
    let registry = registry_flags(reference);
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

#[derive(Args, Debug, Clone)]
pub struct VerifyArgs {
    /// The images to verify, by name or task (all of the catalog's when none is named)
    pub images: Vec<String>,
    /// The public key the signatures are checked against (a file, or a KMS key) [default:
    /// SIGN_KEY's `.pub` beside its `.key`, or SIGN_KEY itself for a KMS key]
    #[arg(long)]
    pub key: Option<String>,
    /// For keyless signatures: the identity the certificate must name (the signer's service
    /// account's e-mail)
    #[arg(long)]
    pub certificate_identity: Option<String>,
    /// For keyless signatures: the issuer of that identity
    #[arg(long, default_value = "https://accounts.google.com")]
    pub certificate_oidc_issuer: String,
    /// Check the signature without the transparency log: for signatures made with a key file
    /// offline (`SIGN_KEY=<file>`, which signs without it)
    #[arg(long)]
    pub insecure_ignore_tlog: bool,
}

/// verify: for each image, its signature checked with cosign, then its provenance per
/// platform: who built it, from which build arguments and which bases' digests.
pub fn verify(ctx: &Ctx, args: &VerifyArgs) -> Result<()> {
    let images = named_images(ctx, &args.images)?;
    let sh = sh();
    for image in images {
        let reference = ctx.settings.image_ref(image);
        let registry = registry_flags(&reference);
        let check: Vec<String> = match (&args.certificate_identity, verify_key(ctx, args)?) {
            (Some(identity), _) => vec![
                "--certificate-identity".into(),
                identity.clone(),
                "--certificate-oidc-issuer".into(),
                args.certificate_oidc_issuer.clone(),
            ],
            (None, Some(key)) => vec!["--key".into(), key],
            (None, None) => bail!(
                "verify needs the public key (`--key cosign.pub`, or SIGN_KEY) or, for keyless signatures, \
                 `--certificate-identity <the signer's e-mail>`"
            ),
        };
        let tlog: Vec<&str> =
            if args.insecure_ignore_tlog { vec!["--insecure-ignore-tlog"] } else { Vec::new() };
        ctx.runner.say(&format!("{}: the signature of {reference}", image.name));
        ctx.runner.run(cmd!(sh, "cosign verify {check...} {tlog...} {registry...} {reference}"))?;
        let format = "{{json .Provenance}}";
        let inspect = cmd!(sh, "docker buildx imagetools inspect {reference} --format {format}");
        if ctx.runner.is_dry_run() {
            ctx.runner.say(&format!("{}: its provenance, per platform:", image.name));
            ctx.runner.run(inspect)?;
            continue;
        }
        let provenance = ctx.runner.query(inspect, None)?;
        println!("{}", provenance_summary(&image.name, &reference, &provenance)?);
    }
    Ok(())
}

/// The catalog's images named by their name or task; all of them when none is named.
pub fn named_images<'a>(ctx: &'a Ctx, names: &[String]) -> Result<Vec<&'a Image>> {
    if names.is_empty() {
        return Ok(ctx.catalog.task_images().map(|(_, image)| image).collect());
    }
    names
        .iter()
        .map(|name| {
            let by_task = ctx.catalog.image_for_task(name);
            by_task.or_else(|| ctx.catalog.images.iter().find(|i| &i.name == name)).with_context(|| {
                format!("`{name}` is no image of the catalog (name one by its name or its task)")
            })
        })
        .collect()
}

/// The key to verify with: `--key`, else SIGN_KEY's public half.
fn verify_key(ctx: &Ctx, args: &VerifyArgs) -> Result<Option<String>> {
    if let Some(key) = &args.key {
        return Ok(Some(key.clone()));
    }
    Ok(match ctx.settings.sign_key.as_deref() {
        None | Some(KEYLESS) => None,
        Some(kms) if kms.contains("://") => Some(kms.to_string()),
        Some(file) => Some(PathBuf::from(file).with_extension("pub").display().to_string()),
    })
}

/// Each platform's provenance, as `imagetools inspect --format '{{json .Provenance}}'` gives
/// it: the builder, the build arguments and the materials (bases) by digest.
pub fn provenance_summary(name: &str, reference: &str, json: &str) -> Result<String> {
    let by_platform: serde_json::Value =
        serde_json::from_str(json).with_context(|| format!("the provenance of {reference} is not JSON"))?;
    let Some(platforms) = by_platform.as_object().filter(|p| !p.is_empty()) else {
        bail!("{reference} carries no provenance attestation (built with PROVENANCE=false?)");
    };
    let mut out = format!("{name}: {reference}, signature verified");
    for (platform, provenance) in platforms {
        let slsa = &provenance["SLSA"];
        out.push_str(&format!("\n  {platform}: built by {}", slsa["builder"]["id"].as_str().unwrap_or("?")));
        if let Some(args) = slsa["invocation"]["parameters"]["args"].as_object() {
            for (name, value) in args {
                let name = name.strip_prefix("build-arg:").unwrap_or(name);
                out.push_str(&format!("\n    build argument {name}={}", value.as_str().unwrap_or_default()));
            }
        }
        for material in slsa["materials"].as_array().into_iter().flatten() {
            let digest = material["digest"]["sha256"].as_str().unwrap_or("?");
            out.push_str(&format!("\n    from {} sha256:{digest}", material["uri"].as_str().unwrap_or("?")));
        }
    }
    Ok(out)
}
