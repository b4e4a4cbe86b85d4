//! A small blob read whole into memory: an attestation's statement, an image's config. Checked
//! against its digest and refused beyond a bound, since what is read here is parsed, not copied.

use anyhow::{Result, anyhow};
use bytes::Bytes;
use oci_client::Reference;

use super::manifest::{Descriptor, sha256_digest};
use super::retry::Request;
use super::session::{Session, Target, within};

/// The most a blob read into memory may weigh: BuildKit's provenance of a large build is a few
/// hundred KiB.
pub const SMALL_BLOB_LIMIT: u64 = 16 << 20;

impl Session {
    /// The bytes of the blob `descriptor` names, in `repository`'s repository.
    pub async fn small_blob(&self, repository: &Reference, descriptor: &Descriptor) -> Result<Bytes> {
        let digest = &descriptor.digest;
        if descriptor.size > SMALL_BLOB_LIMIT {
            return Err(anyhow!(
                "blob {digest} of {repository} is {} bytes, more than the {SMALL_BLOB_LIMIT} read into memory",
                descriptor.size
            ));
        }
        let target = Target::pull(repository);
        let url = self.url(repository, &format!("blobs/{digest}")).map_err(|f| anyhow!(f.describe()))?;
        let what = format!("GET blob {digest} from {}", repository.repository());
        let answer = self
            .with_retry(&what, Request::Any, || async {
                let response = self.send(&what, &target, self.http.get(&url)).await?;
                let bytes = within(self.options.stall_timeout, &what, response.bytes())
                    .await?
                    .map_err(|e| super::http::Failure::from_reqwest(&what, &e))?;
                if sha256_digest(&bytes) != *digest {
                    return Err(super::http::Failure::in_flight(format!(
                        "{what}: the bytes do not match the digest"
                    )));
                }
                Ok(bytes)
            })
            .await;
        answer.map_err(|failure| anyhow!("cannot read blob {digest} of {repository}: {}", failure.describe()))
    }
}
