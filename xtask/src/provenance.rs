//! What a SLSA provenance statement says, in either of the formats BuildKit writes: v0.2 (its
//! default up to 0.27) and v1 (since 0.28). `verify` shows the same three facts from both: who
//! built the image, from which build arguments, and from which bases, by digest.

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";

/// Whether a predicate type is SLSA provenance of any version (read or not).
pub fn is_provenance(predicate_type: &str) -> bool {
    predicate_type.starts_with("https://slsa.dev/provenance/")
}

/// One platform's provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub predicate_type: String,
    /// The builder's id; `None` when the statement leaves it empty (v1 does unless the build
    /// sets the `builder-id` attestation parameter).
    pub builder: Option<String>,
    /// `NAME=VALUE`, without BuildKit's `build-arg:` prefix, in the statement's order.
    pub build_args: Vec<(String, String)>,
    /// What the build started from: a URI (a base image as a purl) and its sha256.
    pub materials: Vec<Material>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub uri: String,
    pub sha256: Option<String>,
}

impl Provenance {
    /// Read an in-toto statement whose predicate is `predicate_type`. An error names what
    /// could not be read.
    pub fn read(predicate_type: &str, statement: &[u8]) -> Result<Provenance> {
        let statement: Value = serde_json::from_slice(statement).context("the statement is not JSON")?;
        let predicate = &statement["predicate"];
        if !predicate.is_object() {
            bail!("the statement has no predicate");
        }
        let (builder, args, materials) = match predicate_type {
            SLSA_V02 => (
                &predicate["builder"]["id"],
                &predicate["invocation"]["parameters"]["args"],
                &predicate["materials"],
            ),
            SLSA_V1 => (
                &predicate["runDetails"]["builder"]["id"],
                &predicate["buildDefinition"]["externalParameters"]["request"]["args"],
                &predicate["buildDefinition"]["resolvedDependencies"],
            ),
            other => bail!(
                "{other} is a provenance format this tool does not read (it reads {SLSA_V02} and {SLSA_V1})"
            ),
        };
        let build_args = args
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(name, value)| {
                let name = name.strip_prefix("build-arg:")?;
                Some((name.to_string(), value.as_str().unwrap_or_default().to_string()))
            })
            .collect();
        let materials = materials
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| Material {
                uri: m["uri"].as_str().unwrap_or_default().to_string(),
                sha256: m["digest"]["sha256"].as_str().map(str::to_string),
            })
            .collect();
        let builder = builder.as_str().filter(|id| !id.is_empty()).map(str::to_string);
        Ok(Provenance { predicate_type: predicate_type.to_string(), builder, build_args, materials })
    }

    /// `SLSA v1`, `SLSA v0.2`: the format, shortly.
    pub fn format(&self) -> &str {
        match self.predicate_type.as_str() {
            SLSA_V02 => "SLSA v0.2",
            SLSA_V1 => "SLSA v1",
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped as BuildKit's docs/attestations/slsa-definitions.md shows them.
    const V02: &str = r#"{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2",
      "subject":[{"name":"pkg:docker/app@1","digest":{"sha256":"aa"}}],
      "predicate":{"builder":{"id":"https://example.com/build/1"},"buildType":"https://mobyproject.org/buildkit@v1",
        "materials":[{"uri":"pkg:docker/docker.io/library/alpine@3.20?platform=linux%2Farm64","digest":{"sha256":"b1"}}],
        "invocation":{"configSource":{"entryPoint":"Dockerfile"},
          "parameters":{"frontend":"dockerfile.v0","args":{"build-arg:A":"1","label:x":"y","build-arg:B":"two"}}}}}"#;
    const V1: &str = r#"{"_type":"https://in-toto.io/Statement/v1","predicateType":"https://slsa.dev/provenance/v1",
      "subject":[{"name":"pkg:docker/app@1","digest":{"sha256":"aa"}}],
      "predicate":{"buildDefinition":{"buildType":"https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md",
          "externalParameters":{"configSource":{"path":"Dockerfile"},"request":{"frontend":"dockerfile.v0",
            "args":{"build-arg:A":"1","label:x":"y","build-arg:B":"two"}}},
          "resolvedDependencies":[{"uri":"pkg:docker/docker.io/library/alpine@3.20?platform=linux%2Farm64","digest":{"sha256":"b1"}}]},
        "runDetails":{"builder":{"id":""},"metadata":{"invocationID":"x"}}}}"#;

    #[test]
    fn both_formats_give_the_same_facts() {
        let old = Provenance::read(SLSA_V02, V02.as_bytes()).unwrap();
        let new = Provenance::read(SLSA_V1, V1.as_bytes()).unwrap();
        assert_eq!(old.builder.as_deref(), Some("https://example.com/build/1"));
        assert_eq!(new.builder, None, "v1 leaves the id empty unless builder-id is set");
        assert_eq!(
            old.build_args,
            [("A".to_string(), "1".to_string()), ("B".to_string(), "two".to_string())]
        );
        assert_eq!(new.build_args, old.build_args);
        assert_eq!(new.materials, old.materials);
        assert_eq!(new.materials[0].sha256.as_deref(), Some("b1"));
        assert_eq!((old.format(), new.format()), ("SLSA v0.2", "SLSA v1"));
    }

    #[test]
    fn an_unknown_format_is_named() {
        let err = Provenance::read("https://slsa.dev/provenance/v2", V1.as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("https://slsa.dev/provenance/v2"), "{err:#}");
        assert!(Provenance::read(SLSA_V1, b"{}").is_err());
    }
}
