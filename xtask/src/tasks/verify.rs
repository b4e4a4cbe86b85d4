//! verify: an image's signature checked and its provenance shown, per platform, as a consumer
//! would.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::runner::sh;
use crate::signing::{KEYLESS, registry_flags};

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
    let images = ctx.catalog.named_images(&args.images)?;
    let sh = sh();
    for image in images {
        let reference = ctx.settings.image_ref(image);
        let registry = registry_flags(ctx, &reference);
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
