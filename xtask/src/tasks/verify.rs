//! verify: an image's signature checked and its provenance shown, per platform, as a consumer
//! would. The provenance is read from the attestation manifests themselves (the registry code),
//! since the predicate type names the format: SLSA v0.2 and v1 say the same facts in different
//! fields, and `imagetools inspect --format '{{json .Provenance}}'` drops the type.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use xshell::cmd;

use crate::ctx::Ctx;
use crate::provenance::{Provenance, is_provenance};
use crate::published::Destination;
use crate::registry::attestations::PlatformStatements;
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
/// platform, read from the registry: who built it, from which build arguments and which bases'
/// digests. A platform without provenance fails the check; one whose provenance cannot be read
/// is a warning that names its predicate type.
pub fn verify(ctx: &Ctx, args: &VerifyArgs) -> Result<()> {
    let images = ctx.catalog.named_images(&args.images)?;
    let references: Vec<(&str, String)> =
        images.iter().map(|image| (image.name.as_str(), ctx.settings.image_ref(image))).collect();
    let check = signature_check(ctx, args)?;
    // The images are all under DOCKER_REPO: the registry the builds read, read the same way.
    let destination = if ctx.runner.is_dry_run() { None } else { Some(Destination::open(ctx)?) };
    let sh = sh();
    let mut lacking = Vec::new();
    for (name, reference) in &references {
        let (registry, check) = (registry_flags(ctx, reference), &check);
        ctx.runner.say(&format!("{name}: the signature of {reference}"));
        ctx.runner.run(cmd!(sh, "cosign verify {check...} {registry...} {reference}"))?;
        let Some(destination) = &destination else {
            ctx.runner.say(&format!(
                "{name}: its provenance, per platform: read from the registry (the index of {reference}, each \
                 platform's attestation manifest, its SLSA statements)"
            ));
            continue;
        };
        let platforms = destination.platform_statements(reference, &is_provenance)?;
        let report = ProvenanceReport::of(name, reference, &platforms);
        println!("{}", report.text);
        for warning in &report.warnings {
            eprintln!("warning: {warning}");
        }
        lacking.extend(report.lacking.iter().map(|platform| format!("{name} {platform}")));
    }
    if !lacking.is_empty() {
        bail!(
            "no provenance attestation on {} (built with PROVENANCE=false, or by a builder that does not attest?)",
            lacking.join(", ")
        );
    }
    Ok(())
}

/// cosign's flags that say what a signature must match: the key, or the keyless identity; and
/// the transparency log left out when asked.
fn signature_check(ctx: &Ctx, args: &VerifyArgs) -> Result<Vec<String>> {
    let mut check: Vec<String> = match (&args.certificate_identity, verify_key(ctx, args)?) {
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
    if args.insecure_ignore_tlog {
        check.push("--insecure-ignore-tlog".into());
    }
    Ok(check)
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

/// What `verify` says of one image's provenance.
pub struct ProvenanceReport {
    /// The lines for stdout: the image, then each platform's builder, build arguments and bases.
    pub text: String,
    /// Provenance that could not be read, each naming its predicate type.
    pub warnings: Vec<String>,
    /// The platforms that carry no provenance at all.
    pub lacking: Vec<String>,
}

impl ProvenanceReport {
    pub fn of(name: &str, reference: &str, platforms: &[PlatformStatements]) -> ProvenanceReport {
        let mut text = format!("{name}: {reference}, signature verified");
        let (mut warnings, mut lacking) = (Vec::new(), Vec::new());
        for platform in platforms {
            let label = &platform.platform;
            for unreadable in &platform.unreadable {
                let what = match &unreadable.predicate_type {
                    Some(predicate_type) => format!("its attestation of predicate type {predicate_type}"),
                    None => "an attestation manifest".to_string(),
                };
                text.push_str(&format!("\n  {label}: {what} unreadable (see the warning)"));
                warnings.push(format!("{name} {label}: cannot read {what}: {}", unreadable.why));
            }
            if platform.statements.is_empty() {
                if platform.unreadable.is_empty() {
                    text.push_str(&format!("\n  {label}: no provenance attestation"));
                    lacking.push(label.clone());
                }
                continue;
            }
            for statement in &platform.statements {
                let predicate_type = &statement.predicate_type;
                let provenance = match Provenance::read(predicate_type, &statement.bytes) {
                    Ok(provenance) => provenance,
                    Err(err) => {
                        text.push_str(&format!(
                            "\n  {label}: provenance {predicate_type} unreadable (see the warning)"
                        ));
                        warnings.push(format!(
                            "{name} {label}: cannot read its provenance of predicate type {predicate_type}: {err:#}"
                        ));
                        continue;
                    }
                };
                let builder = provenance.builder.as_deref().unwrap_or("(builder not recorded)");
                text.push_str(&format!("\n  {label}: built by {builder} ({})", provenance.format()));
                for (arg, value) in &provenance.build_args {
                    text.push_str(&format!("\n    build argument {arg}={value}"));
                }
                for material in &provenance.materials {
                    let digest = material
                        .sha256
                        .as_deref()
                        .map_or("(no sha256)".to_string(), |d| format!("sha256:{d}"));
                    text.push_str(&format!("\n    from {} {digest}", material.uri));
                }
            }
        }
        ProvenanceReport { text, warnings, lacking }
    }
}
