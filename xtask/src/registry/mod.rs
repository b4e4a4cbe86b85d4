//! Registry code: copying images between OCI registries over the distribution API (reqwest,
//! with oci-client's references and credentials). Nothing here knows
//! about the command line; the `thirdparty` task drives it.

pub mod attestations;
pub mod auth;
pub mod blob;
pub mod copy;
pub mod credentials;
pub mod http;
pub mod manifest;
pub mod reference;
pub mod referrers;
pub mod resolve;
pub mod retry;
pub mod session;
pub mod small_blob;
pub mod tls;
pub mod token;

pub use copy::{CopyOutcome, CopyProgress, MirrorOptions, Mirrored, Pair, Report, mirror};
pub use session::{HeldBack, RegistryAccess, Session, uses_plain_http};
