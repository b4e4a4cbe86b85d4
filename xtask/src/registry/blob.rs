//! One blob from a source registry to a destination: downloaded with its sha256 checked on the
//! way, resumed from the byte reached when cut off, and streamed into one upload at the
//! destination as it arrives, so that memory stays flat whatever the blob's size.

use anyhow::Result;
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::Either;
use oci_client::Reference;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Response, StatusCode};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::http::Failure;
use super::manifest::hex;
use super::retry::{ProgressMade, Request, Retrying};
use super::session::{Session, Target, within};

/// Where a blob download stands: the bytes that arrived, hashed as they came, and the last
/// chunk, kept from the upload until the whole blob is known to be right.
struct Received {
    bytes: u64,
    hasher: Sha256,
    last_chunk: Option<Bytes>,
}

/// How the download of one blob ended, short of an error.
enum Fed {
    Complete,
    /// The upload stopped reading: it failed, and its own error says why.
    UploadGone,
    /// The destination took no bytes for the stall timeout.
    UploadStalled,
}

type Chunks = mpsc::Sender<Result<Bytes, std::io::Error>>;

impl Session {
    /// Stream one blob from `source` to `destination`. Its sha256 is checked while it streams:
    /// on a mismatch the upload is abandoned before it completes, so the destination never
    /// holds a wrong blob. A download cut short resumes from the bytes it has (`Range`), for as
    /// long as tries keep bringing bytes. `on_bytes` sees every chunk as it arrives.
    pub async fn copy_blob(
        &self,
        source: &Reference,
        destination: &Reference,
        digest: &str,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        let what = format!(
            "copy blob {digest} ({size} bytes) {} -> {}",
            source.repository(),
            destination.repository()
        );
        self.trace(&what);
        // A blob that arrived wrong, or an upload that failed, sends the whole blob again. A
        // download that gave up (it resumes by itself while bytes come) ends the copy.
        let on_retry = |retry: &Retrying<'_>| {
            self.trace(&format!(
                "retrying {what} from its start in {:.1} s (try {}/{} failed: {})",
                retry.wait.as_secs_f64(),
                retry.tries,
                retry.attempts,
                retry.failure
            ));
        };
        let copied = self
            .options
            .retry
            .run(Request::Any, &self.retries, &on_retry, &ProgressMade::default(), || async {
                self.copy_blob_once(source, destination, digest, size, on_bytes).await
            })
            .await;
        copied.map_err(|failure| failure.into_failure().context(format!("blob {digest}")).into())
    }

    /// One try: open an upload at the destination, then download into it as the bytes come.
    async fn copy_blob_once(
        &self,
        source: &Reference,
        destination: &Reference,
        digest: &str,
        size: u64,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), Failure> {
        let location = self.start_upload(destination).await?;
        let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let chunks = futures_util::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|item| (item, receiver))
        });
        let upload =
            self.finish_upload(destination, location, digest, size, reqwest::Body::wrap_stream(chunks));
        let download = self.download(source, digest, size, sender, on_bytes);
        let (download, upload) = (std::pin::pin!(download), std::pin::pin!(upload));
        match futures_util::future::select(download, upload).await {
            // Every byte is on its way: the registry answers once it has them all and checked
            // the digest. (A failed download drops the upload, which aborts it.)
            Either::Left((downloaded, upload)) => {
                downloaded?;
                let what = format!("PUT blob {digest} to {}", destination.repository());
                within(self.options.stall_timeout, &what, upload).await.and_then(|r| r)
            }
            // The upload ended first: the registry refused it or the connection broke.
            Either::Right((uploaded, _download)) => uploaded,
        }
    }

    /// `POST /v2/<repository>/blobs/uploads/`: where to send the blob.
    async fn start_upload(&self, destination: &Reference) -> Result<reqwest::Url, Failure> {
        let target = Target::push(destination);
        let url = self.url(destination, "blobs/uploads/")?;
        let what = format!("POST upload to {}", destination.repository());
        self.with_retry(&what, Request::Any, || async {
            let response = self.send(&what, &target, self.http.post(&url).header(CONTENT_LENGTH, 0)).await?;
            let location =
                response.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(|| {
                    Failure::permanent(format!("{what}: the registry named no upload location"))
                })?;
            reqwest::Url::parse(&url)
                .and_then(|base| base.join(location))
                .map_err(|e| Failure::permanent(format!("{what}: bad upload location {location:?}: {e}")))
        })
        .await
    }

    /// One streamed `PUT` of the whole blob to its upload location. Not retried here: its body
    /// is spent; the caller starts the copy over.
    async fn finish_upload(
        &self,
        destination: &Reference,
        mut location: reqwest::Url,
        digest: &str,
        size: u64,
        body: reqwest::Body,
    ) -> Result<(), Failure> {
        let target = Target::push(destination);
        location.query_pairs_mut().append_pair("digest", digest);
        let what = format!("PUT blob {digest} to {}", destination.repository());
        let request = self
            .http
            .put(location.clone())
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, size)
            .body(body);
        // Credentials go to the registry only, never to a host its upload location points at.
        let same_host = location.host_str().map(|h| match location.port() {
            Some(port) => format!("{h}:{port}"),
            None => h.to_string(),
        }) == Some(target.host.clone());
        self.send_with(&what, &target, request, same_host, None).await.map(drop)
    }

    /// Download a blob into `sender`, resuming after failures from the bytes already received:
    /// a failed try that brought bytes does not count against the tries (it reports progress),
    /// and the policy's bound on time still ends a hopeless one. The last chunk goes only once
    /// the whole blob's sha256 matched; an error instead cuts the upload short, so a bad blob
    /// never lands. A download given up comes back `gave_up`: the copy does not start over.
    async fn download(
        &self,
        source: &Reference,
        digest: &str,
        size: u64,
        sender: Chunks,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(), Failure> {
        // Each try takes up where the last stopped; one try at a time holds it.
        let received =
            tokio::sync::Mutex::new(Received { bytes: 0, hasher: Sha256::new(), last_chunk: None });
        let what = format!("GET blob {digest} from {}", source.repository());
        let on_retry = |retry: &Retrying<'_>| {
            self.trace(&format!("resuming {what} in {:.1} s ({})", retry.wait.as_secs_f64(), retry.failure));
        };
        let progress = ProgressMade::default();
        // New bytes are progress: the try that brought them is not counted as fruitless.
        let on_bytes = |count: u64| {
            progress.made();
            on_bytes(count);
        };
        let fed = self
            .options
            .retry
            .run(Request::Any, &self.retries, &on_retry, &progress, || async {
                let mut received = received.lock().await;
                self.download_from(source, digest, size, &mut received, &sender, &on_bytes).await
            })
            .await;
        match fed {
            Ok(Fed::Complete) => {}
            Ok(Fed::UploadGone) => return Ok(()),
            Ok(Fed::UploadStalled) => {
                let stalled = self.options.stall_timeout.as_secs_f64();
                return Err(Failure::in_flight(format!(
                    "PUT blob {digest}: the destination took no bytes for {stalled} s"
                )));
            }
            Err(mut failure) => {
                let _ = sender.send(Err(std::io::Error::other(failure.message.clone()))).await;
                // Retried as far as it goes: the copy around it must not start over.
                failure.gave_up |= super::retry::is_transient(&failure, Request::Any);
                return Err(failure);
            }
        }
        let mut received = received.into_inner();
        let actual = format!("sha256:{}", hex(&received.hasher.finalize()));
        if received.bytes != size || actual != digest {
            let message =
                format!("blob {digest}: {} bytes with digest {actual} arrived instead", received.bytes);
            let _ = sender.send(Err(std::io::Error::other(message.clone()))).await;
            return Err(Failure::in_flight(message));
        }
        if let Some(last) = received.last_chunk.take() {
            let _ = sender.send(Ok(last)).await;
        }
        Ok(())
    }

    /// One `GET` of the blob from where `received` stands (`Range: bytes=N-` after the first).
    /// A registry that ignores `Range` answers 200 with the whole blob: what we have is skipped.
    async fn download_from(
        &self,
        source: &Reference,
        digest: &str,
        size: u64,
        received: &mut Received,
        sender: &Chunks,
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<Fed, Failure> {
        let target = Target::pull(source);
        let url = self.url(source, &format!("blobs/{digest}"))?;
        let what = format!("GET blob {digest} from {}", source.repository());
        let mut request = self.http.get(&url);
        if received.bytes > 0 {
            self.trace(&format!("{what}: from byte {} of {size}", received.bytes));
            request = request.header(RANGE, format!("bytes={}-", received.bytes));
        }
        let response = self.send(&what, &target, request).await?;
        let starts_at = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                content_range_start(&response).filter(|start| *start <= received.bytes).ok_or_else(|| {
                    Failure::in_flight(format!("{what}: the registry sent a range we did not ask for"))
                })?
            }
            _ => 0,
        };
        let mut skip = received.bytes - starts_at;
        let mut body = response.bytes_stream();
        while let Some(chunk) = within(self.options.stall_timeout, &what, body.next()).await? {
            let mut chunk = chunk.map_err(|e| Failure::from_reqwest(&what, &e))?;
            if skip > 0 {
                let dropped = skip.min(chunk.len() as u64);
                chunk = chunk.slice(dropped as usize..);
                skip -= dropped;
                if chunk.is_empty() {
                    continue;
                }
            }
            received.bytes += chunk.len() as u64;
            if received.bytes > size {
                return Err(Failure::permanent(format!(
                    "{what}: more than the {size} bytes its manifest says"
                )));
            }
            received.hasher.update(&chunk);
            on_bytes(chunk.len() as u64);
            if let Some(previous) = received.last_chunk.replace(chunk) {
                match tokio::time::timeout(self.options.stall_timeout, sender.send(Ok(previous))).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_closed)) => return Ok(Fed::UploadGone),
                    Err(_elapsed) => return Ok(Fed::UploadStalled),
                }
            }
        }
        if received.bytes < size {
            return Err(Failure::in_flight(format!(
                "{what}: the body ended at byte {} of {size}",
                received.bytes
            )));
        }
        Ok(Fed::Complete)
    }
}

/// `Content-Range: bytes 100-999/1000` → 100.
fn content_range_start(response: &Response) -> Option<u64> {
    let value = response.headers().get(CONTENT_RANGE)?.to_str().ok()?;
    let range = value.trim().strip_prefix("bytes")?.trim();
    range.split('-').next()?.trim().parse().ok()
}
