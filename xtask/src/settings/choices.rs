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

/// The provenance attestation of each platform's build (`PROVENANCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Provenance {
    // Build arguments, bases' digests and the build's steps (plain comments: clap would show
    // doc comments as a long list in every task's help).
    Max,
    // The minimum: no build arguments, no steps.
    Min,
    // No provenance attestation.
    #[value(name = "false")]
    None,
}

impl Provenance {
    /// As `PROVENANCE` and buildx name it.
    pub fn name(self) -> &'static str {
        match self {
            Provenance::Max => "max",
            Provenance::Min => "min",
            Provenance::None => "false",
        }
    }
}
