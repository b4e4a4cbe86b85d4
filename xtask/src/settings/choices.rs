//! The settings whose value is one of a few words, as clap's value enums: their names on the
//! command line and, for `PROVENANCE`, as buildx takes them.

/// Which ready build takes a free slot first (`BUILD_ORDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildOrder {
    // The longest remaining path to the end of the graph first.
    CriticalPath,
    // The catalog's order.
    Catalog,
}

/// When the tags of a run's images move (`RELEASE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Release {
    // Each image's tags as soon as it has passed: what failed leaves the others moved.
    Each,
    // No tag of any image until every build and test of the run has passed, then all of them.
    Together,
}

/// How much provenance each platform's build attests (`PROVENANCE`: BuildKit's `mode`); what
/// is read back of one is `crate::provenance::Provenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProvenanceMode {
    // Build arguments, bases' digests and the build's steps (plain comments: clap would show
    // doc comments as a long list in every task's help).
    Max,
    // The minimum: no build arguments, no steps.
    Min,
    // No provenance attestation.
    #[value(name = "false")]
    None,
}

impl ProvenanceMode {
    /// As `PROVENANCE` and buildx name it.
    pub fn name(self) -> &'static str {
        match self {
            ProvenanceMode::Max => "max",
            ProvenanceMode::Min => "min",
            ProvenanceMode::None => "false",
        }
    }
}
