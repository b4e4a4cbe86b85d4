//! Images as BuildKit pushes them, attestations included, made here from BuildKit's own
//! documentation of its formats (docs/attestations/attestation-storage.md, slsa-provenance.md,
//! slsa-definitions.md; exporter/containerimage/writer.go at v0.32): each platform's provenance
//! in SLSA v0.2 (BuildKit's default up to 0.27) or v1 (since 0.28), its attestation manifest
//! stored the way before 0.32 (an image manifest with a config, no subject) or as 0.32's OCI
//! artifact (the empty config, `artifactType`, the platform manifest as `subject`). Either way
//! it is an entry of the index: platform `unknown/unknown`, annotated with the platform
//! manifest it belongs to.

use anyhow::Result;

use super::{Fixture, Noise, OCI_CONFIG, OCI_INDEX, OCI_LAYER, OCI_MANIFEST};

pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const ATTESTATION_ARTIFACT: &str = "application/vnd.docker.attestation.manifest.v1+json";
const IN_TOTO: &str = "application/vnd.in-toto+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// How the attestation manifests are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Before BuildKit 0.32 (or `oci-artifact=false`): an image manifest with an image config.
    Image,
    /// BuildKit 0.32's default: an OCI artifact with the platform manifest as its `subject`.
    Artifact,
}

/// What one platform's provenance says.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// `SLSA_V02`, `SLSA_V1`, or any other type (one a reader does not know).
    pub predicate_type: String,
    /// Empty: not recorded (v1's default without the `builder-id` parameter).
    pub builder_id: String,
    /// Build arguments, without BuildKit's `build-arg:` prefix.
    pub args: Vec<(String, String)>,
    /// The base: its purl and sha256 (hex).
    pub base: (String, String),
}

/// One image: its platforms, each with its provenance (`None`: no attestation at all).
#[derive(Debug, Clone)]
pub struct BuildkitImage {
    pub seed: u64,
    pub platforms: Vec<((&'static str, &'static str), Option<Provenance>)>,
    pub storage: Storage,
}

impl Fixture {
    /// The image `spec` describes, as an OCI layout (push it with `push_raw`: skopeo converts
    /// an index of artifacts). Each attestation manifest also holds an SPDX statement, as
    /// BuildKit's SBOM attestation adds, which a provenance reader must pass over.
    pub fn buildkit(spec: &BuildkitImage) -> Result<Fixture> {
        let (dir, mut writer) = Self::layout()?;
        let mut images = Vec::new();
        let mut attestations = Vec::new();
        for (number, ((os, arch), provenance)) in spec.platforms.iter().enumerate() {
            let mut noise = Noise::new(spec.seed.wrapping_mul(1000).wrapping_add(number as u64));
            let layer = writer.blob(OCI_LAYER, &noise.bytes(2048))?;
            let config = serde_json::json!({
                "architecture": arch, "os": os, "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer["digest"].clone()]},
            });
            let config = writer.blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
            let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
            let mut entry = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
            let subject = entry.clone();
            entry["platform"] = serde_json::json!({"os": os, "architecture": arch});
            images.push(entry);
            let Some(provenance) = provenance else { continue };
            let platform = format!("{os}/{arch}");
            let hex =
                subject["digest"].as_str().unwrap_or_default().trim_start_matches("sha256:").to_string();
            let statement = statement(provenance, &platform, &hex);
            let mut provenance_layer = writer.blob(IN_TOTO, &serde_json::to_vec(&statement)?)?;
            provenance_layer["annotations"] =
                serde_json::json!({"in-toto.io/predicate-type": provenance.predicate_type});
            let sbom = serde_json::json!({
                "_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://spdx.dev/Document",
                "subject": [{"name": "pkg:docker/fixture", "digest": {"sha256": hex}}],
                "predicate": {"spdxVersion": "SPDX-2.3", "name": platform},
            });
            let mut sbom_layer = writer.blob(IN_TOTO, &serde_json::to_vec(&sbom)?)?;
            sbom_layer["annotations"] =
                serde_json::json!({"in-toto.io/predicate-type": "https://spdx.dev/Document"});
            let layers = vec![provenance_layer, sbom_layer];
            let manifest = match spec.storage {
                Storage::Image => {
                    let diff_ids: Vec<serde_json::Value> =
                        layers.iter().map(|l| l["digest"].clone()).collect();
                    let config = serde_json::json!({
                        "architecture": "unknown", "os": "unknown", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": diff_ids},
                    });
                    let config = writer.blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
                    serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers})
                }
                Storage::Artifact => {
                    let mut config = writer.blob(EMPTY, b"{}")?;
                    config["data"] = serde_json::json!("e30=");
                    serde_json::json!({
                        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ATTESTATION_ARTIFACT,
                        "config": config, "layers": layers, "subject": subject,
                    })
                }
            };
            let mut entry = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
            entry["annotations"] = serde_json::json!({
                "vnd.docker.reference.digest": subject["digest"], "vnd.docker.reference.type": "attestation-manifest",
            });
            entry["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
            attestations.push(entry);
        }
        images.extend(attestations);
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": images});
        let descriptor = writer.manifest(OCI_INDEX, &serde_json::to_vec(&index)?)?;
        Self::finish(dir, writer, descriptor)
    }
}

/// The in-toto statement of `provenance` for the platform manifest `hex`, in its format.
fn statement(provenance: &Provenance, platform: &str, hex: &str) -> serde_json::Value {
    let mut args = serde_json::Map::new();
    for (name, value) in &provenance.args {
        args.insert(format!("build-arg:{name}"), serde_json::json!(value));
    }
    // BuildKit records other options beside the build arguments.
    args.insert("label:org.opencontainers.image.title".into(), serde_json::json!("fixture"));
    let (base, base_hex) = &provenance.base;
    let dependency = serde_json::json!({"uri": base, "digest": {"sha256": base_hex}});
    let locals = serde_json::json!([{"name": "context"}, {"name": "dockerfile"}]);
    let subject = serde_json::json!([{
        "name": format!("pkg:docker/fixture@1?platform={}", platform.replace('/', "%2F")),
        "digest": {"sha256": hex},
    }]);
    let predicate = if provenance.predicate_type == SLSA_V02 {
        serde_json::json!({
            "builder": {"id": provenance.builder_id},
            "buildType": "https://mobyproject.org/buildkit@v1",
            "materials": [dependency],
            "invocation": {
                "configSource": {"entryPoint": "Dockerfile"},
                "parameters": {"frontend": "dockerfile.v0", "args": args, "locals": locals},
                "environment": {"platform": platform},
            },
            "metadata": {"buildInvocationID": "fixture", "reproducible": false,
                         "completeness": {"parameters": true, "environment": true, "materials": false}},
        })
    } else {
        serde_json::json!({
            "buildDefinition": {
                "buildType": "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md",
                "externalParameters": {
                    "configSource": {"path": "Dockerfile"},
                    "request": {"frontend": "dockerfile.v0", "args": args, "locals": locals},
                },
                "internalParameters": {"builderPlatform": platform},
                "resolvedDependencies": [dependency],
            },
            "runDetails": {"builder": {"id": provenance.builder_id},
                           "metadata": {"invocationID": "fixture", "buildkit_reproducible": false}},
        })
    };
    let statement_type = if provenance.predicate_type == SLSA_V02 {
        "https://in-toto.io/Statement/v0.1"
    } else {
        "https://in-toto.io/Statement/v1"
    };
    serde_json::json!({
        "_type": statement_type, "predicateType": provenance.predicate_type, "subject": subject, "predicate": predicate,
    })
}

impl Fixture {
    /// Push a one-platform image made by `buildkit` (stored as an artifact) the other way its
    /// attestation can be found: the platform manifest alone under `tag`, no index, and the
    /// attestation manifest attached as its referrer by the fallback tag `sha256-<hex>`, as a
    /// client writes it on a registry without the referrers API.
    pub fn push_as_referrer(
        &self,
        registry: std::net::SocketAddr,
        repository: &str,
        tag: &str,
    ) -> Result<()> {
        let children = self.children();
        anyhow::ensure!(children.len() == 2, "one platform and its attestation, not {children:?}");
        self.push_raw(registry, repository, None)?;
        let (platform, attestation) = (&children[0], &children[1]);
        let put = |reference: &str, media_type: &str, bytes: Vec<u8>| -> Result<()> {
            let url = format!("http://{registry}/v2/{repository}/manifests/{reference}");
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let status = runtime.block_on(async {
                crate::http_client().put(url).header("content-type", media_type).body(bytes).send().await
            })?;
            anyhow::ensure!(status.status().as_u16() == 201, "manifest {reference}: {}", status.status());
            Ok(())
        };
        put(tag, OCI_MANIFEST, std::fs::read(self.blob_path(platform))?)?;
        let referrers = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": attestation, "size": self.manifest_size(attestation),
                           "artifactType": ATTESTATION_ARTIFACT}],
        });
        put(&platform.replacen(':', "-", 1), OCI_INDEX, serde_json::to_vec(&referrers)?)
    }
}
