//! The test harness of the xtask, apart from the tool: real registries and generated images for
//! the tests and the benchmarks: Debian's `docker-registry` started on 127.0.0.1, multi-arch
//! fixture images written as OCI layouts and pushed with `skopeo` (an independent client), a
//! proxy that adds latency, and the fault-injecting proxy (`fault_proxy`). The xtask's tests
//! take it as a dev-dependency; `cargo xtask` itself compiles none of it.

pub mod buildkit;
pub mod fault_proxy;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

pub use xtask::registry::manifest::{hex, sha256_digest};
use xtask::registry_server::{config_yaml, wait_until_up};

/// A `docker-registry` process on a free 127.0.0.1 port, stopped when dropped.
pub struct TestRegistry {
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

/// One line of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Bytes of body the registry wrote.
    pub bytes: u64,
}

impl TestRegistry {
    pub fn start() -> Result<TestRegistry> {
        Self::start_with(None)
    }

    /// A registry that wants HTTP basic auth from `user` with `password`.
    pub fn start_with_auth(user: &str, password: &str) -> Result<TestRegistry> {
        Self::start_with(Some((user, password)))
    }

    /// A registry that wants bearer tokens (`auth: token`), as Docker Hub, gcr.io, Artifact
    /// Registry and GHCR do: issued at `token.realm` for `token.service` by `token.issuer`, and
    /// signed by the key of the certificate `token.root_certificate` (PEM).
    pub fn start_with_tokens(token: &TokenAuth) -> Result<TestRegistry> {
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
            token.realm,
            token.service,
            token.issuer,
            token.root_certificate.display()
        );
        Self::start_with_config(|_| Ok(auth.clone()), tempfile::tempdir()?)
    }

    fn start_with(credentials: Option<(&str, &str)>) -> Result<TestRegistry> {
        let dir = tempfile::tempdir()?;
        let auth = |dir: &Path| -> Result<String> {
            let Some((user, password)) = credentials else {
                return Ok(String::new());
            };
            require("htpasswd", "apt-get install apache2-utils")?;
            let path = dir.join("htpasswd");
            let output = Command::new("htpasswd").args(["-Bbn", user, password]).output()?;
            ensure!(output.status.success(), "htpasswd failed");
            std::fs::write(&path, output.stdout)?;
            Ok(format!("auth:\n  htpasswd:\n    realm: local\n    path: {}\n", path.display()))
        };
        Self::start_with_config(auth, dir)
    }

    fn start_with_config(
        auth: impl Fn(&Path) -> Result<String>,
        dir: tempfile::TempDir,
    ) -> Result<TestRegistry> {
        require("docker-registry", "apt-get install docker-registry")?;
        let auth = auth(dir.path())?;
        // A free port can be taken by another process between our probe and the registry's
        // bind, and whatever then answers there is not our registry: wait for our registry's own
        // word that it listens, and on a lost race try another port.
        for _ in 0..5 {
            let addr = free_port()?;
            let config = dir.path().join("config.yml");
            std::fs::write(&config, config_yaml(addr, &dir.path().join("storage"), &auth))?;
            let log = dir.path().join("registry.log");
            let mut child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.path().join("access.log"))?)
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("cannot start docker-registry")?;
            let listening = format!("listening on {addr}");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while std::time::Instant::now() < deadline {
                if std::fs::read_to_string(&log).unwrap_or_default().contains(&listening) {
                    let registry = TestRegistry { addr, dir, child };
                    wait_until_up(addr, Duration::from_secs(20))?;
                    return Ok(registry);
                }
                if child.try_wait()?.is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        bail!("docker-registry did not start listening on 127.0.0.1 in five tries")
    }

    /// `127.0.0.1:<port>`, as it goes into image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Every request the registry answered so far, from its access log.
    pub fn requests(&self) -> Vec<Request> {
        // The log line is written just after the response; give the last one a moment.
        std::thread::sleep(Duration::from_millis(150));
        self.requests_now()
    }

    /// The access log as it is this instant, for polling while a run goes on.
    pub fn requests_now(&self) -> Vec<Request> {
        let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
        text.lines().filter_map(parse_access_line).collect()
    }

    /// The registry's own log lines at level error and above (why it answered 5xx, say).
    pub fn errors(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("level=error") || l.contains("level=panic"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// CPU seconds (user + system) the registry process has used so far.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
        let ticks: f64 =
            fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum());
        ticks / 100.0
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `127.0.0.1 - - [date] "HEAD /v2/x/manifests/1 HTTP/1.1" 404 91 "" "agent"`
fn parse_access_line(line: &str) -> Option<Request> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut words = request.split(' ');
    let method = words.next()?.to_string();
    let path = words.next()?.to_string();
    let mut fields = rest.split_whitespace();
    let status = fields.next()?.parse().ok()?;
    let bytes = fields.next().and_then(|b| b.parse().ok()).unwrap_or(0);
    Some(Request { method, path, status, bytes })
}

fn free_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Fail loudly, naming the package, when a program the tests need is missing.
pub fn require(program: &str, install: &str) -> Result<()> {
    if which::which(program).is_err() {
        bail!("`{program}` is needed and not installed: {install}");
    }
    Ok(())
}

/// A deterministic pseudo-random byte source (xorshift): fixtures differ by seed, and a layer
/// of random bytes does not compress, like a real one.
pub struct Noise(u64);

impl Noise {
    pub fn new(seed: u64) -> Noise {
        Noise(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A multi-platform image written as an OCI layout: an index with one image manifest per
/// platform (config and layers), and optionally an attestation manifest as buildx adds.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    /// Digest of the index.
    pub digest: String,
    /// Digests of every blob (configs and layers) of every platform.
    pub blobs: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct FixtureSpec {
    pub seed: u64,
    pub platforms: Vec<(&'static str, &'static str)>,
    pub layers: usize,
    pub layer_size: usize,
    /// Add an attestation manifest (platform unknown/unknown) to the index.
    pub attestation: bool,
    /// Layers shared by every platform, generated from this seed (a common base).
    pub shared_base: Option<(u64, usize)>,
    /// One more layer on the platform with this index: the same image, changed on one platform.
    pub extra_layer_on: Option<usize>,
}

impl FixtureSpec {
    pub fn small(seed: u64) -> FixtureSpec {
        FixtureSpec {
            seed,
            platforms: vec![("linux", "amd64"), ("linux", "arm64")],
            layers: 2,
            layer_size: 4096,
            attestation: true,
            shared_base: None,
            extra_layer_on: None,
        }
    }
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

impl Fixture {
    pub fn generate(spec: &FixtureSpec) -> Result<Fixture> {
        let (dir, mut writer) = Self::layout()?;
        let mut entries = Vec::new();
        // Each platform has its own noise, so that changing one leaves the others' bytes alone.
        for (number, (os, arch)) in spec.platforms.iter().enumerate() {
            let mut noise = Noise::new(spec.seed.wrapping_mul(1000).wrapping_add(number as u64));
            let mut layers = Vec::new();
            if let Some((seed, size)) = spec.shared_base {
                layers.push(writer.blob(OCI_LAYER, &Noise::new(seed).bytes(size))?);
            }
            for _ in 0..spec.layers {
                layers.push(writer.blob(OCI_LAYER, &noise.bytes(spec.layer_size))?);
            }
            if spec.extra_layer_on == Some(number) {
                let extra = Noise::new(spec.seed ^ 0xE47A).bytes(spec.layer_size);
                layers.push(writer.blob(OCI_LAYER, &extra)?);
            }
            // Random layers have no real uncompressed form; their own digests stand in.
            let diff_ids: Vec<serde_json::Value> =
                layers.iter().map(|layer| layer["digest"].clone()).collect();
            let config = serde_json::json!({
                "architecture": arch, "os": os,
                "config": {"Env": [format!("FIXTURE_SEED={}", spec.seed)]},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            });
            let config = writer.blob(OCI_CONFIG, &serde_json::to_vec(&config)?)?;
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers,
            });
            let mut entry = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
            entry["platform"] = serde_json::json!({"os": os, "architecture": arch});
            entries.push(entry);
        }
        if spec.attestation {
            let statement =
                writer.blob("application/vnd.in-toto+json", &Noise::new(spec.seed ^ 0xA77E).bytes(512))?;
            let config = writer.blob(OCI_CONFIG, b"{}")?;
            let manifest = serde_json::json!({
                "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [statement],
            });
            let mut entry = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
            entry["platform"] = serde_json::json!({"os": "unknown", "architecture": "unknown"});
            entry["annotations"] = serde_json::json!({"vnd.docker.reference.type": "attestation-manifest"});
            entries.push(entry);
        }
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        let index_descriptor = writer.manifest(OCI_INDEX, &serde_json::to_vec(&index)?)?;
        Self::finish(dir, writer, index_descriptor)
    }

    /// A cosign-style signature of the manifest `subject`: an image manifest whose one layer is
    /// a simple-signing payload naming it, as `cosign sign` pushes to `sha256-<hex>.sig`.
    pub fn signature(subject: &str, seed: u64) -> Result<Fixture> {
        let (dir, mut writer) = Self::layout()?;
        let payload = serde_json::json!({
            "critical": {"identity": {"docker-reference": "fixture"}, "image": {"docker-manifest-digest": subject},
                         "type": "cosign container image signature"},
            "optional": {"seed": seed},
        });
        let mut layer = writer
            .blob("application/vnd.dev.cosign.simplesigning.v1+json", &serde_json::to_vec(&payload)?)?;
        layer["annotations"] =
            serde_json::json!({"dev.cosignproject.cosign/signature": format!("MEUCIQ-test-{seed}")});
        let config = writer.blob(
            OCI_CONFIG,
            br#"{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )?;
        let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        let descriptor = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&manifest)?)?;
        Self::finish(dir, writer, descriptor)
    }

    /// An OCI 1.1 referrers index for the manifest `subject` (of `subject_size` bytes), as a
    /// registry without the referrers API keeps under the tag `sha256-<hex>`: it lists one SBOM
    /// artifact whose `subject` is that manifest.
    pub fn referrers(subject: &str, subject_size: u64, seed: u64) -> Result<Fixture> {
        let (dir, mut writer) = Self::layout()?;
        let sbom = writer.blob(
            "application/spdx+json",
            format!(r#"{{"spdxVersion":"SPDX-2.3","seed":{seed}}}"#).as_bytes(),
        )?;
        let config = writer.blob("application/vnd.oci.empty.v1+json", b"{}")?;
        let subject = serde_json::json!({"mediaType": OCI_INDEX, "digest": subject, "size": subject_size});
        let artifact = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
            "config": config, "layers": [sbom], "subject": subject,
        });
        let mut entry = writer.manifest(OCI_MANIFEST, &serde_json::to_vec(&artifact)?)?;
        entry["artifactType"] = serde_json::json!("application/spdx+json");
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]});
        let descriptor = writer.manifest(OCI_INDEX, &serde_json::to_vec(&index)?)?;
        Self::finish(dir, writer, descriptor)
    }

    fn layout() -> Result<(tempfile::TempDir, LayoutWriter)> {
        let dir = tempfile::tempdir()?;
        let blobs_dir = dir.path().join("blobs/sha256");
        std::fs::create_dir_all(&blobs_dir)?;
        Ok((dir, LayoutWriter { dir: blobs_dir, blobs: Vec::new() }))
    }

    /// Name `descriptor` `fixture` in the layout's index.
    fn finish(
        dir: tempfile::TempDir,
        writer: LayoutWriter,
        descriptor: serde_json::Value,
    ) -> Result<Fixture> {
        let digest = descriptor["digest"].as_str().expect("a digest").to_string();
        let mut layout_entry = descriptor;
        layout_entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "fixture"});
        let layout_index = serde_json::json!({"schemaVersion": 2, "manifests": [layout_entry]});
        std::fs::write(dir.path().join("index.json"), serde_json::to_vec(&layout_index)?)?;
        std::fs::write(dir.path().join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Fixture { dir, digest, blobs: writer.blobs })
    }

    /// The size of the manifest at `digest` (the top one, or any it lists).
    pub fn manifest_size(&self, digest: &str) -> u64 {
        std::fs::metadata(self.blob_path(digest)).map_or(0, |m| m.len())
    }

    /// The digests of the manifests the fixture's index lists, in order.
    pub fn children(&self) -> Vec<String> {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.blob_path(&self.digest)).unwrap_or_default())
                .unwrap_or_default();
        index["manifests"]
            .as_array()
            .map(|m| m.iter().filter_map(|e| e["digest"].as_str().map(str::to_string)).collect())
            .unwrap_or_default()
    }

    /// Push the whole index to `docker://<host>/<repository>:<tag>` with skopeo, digests kept.
    pub fn push(&self, host: &str, repository: &str, tag: &str) -> Result<()> {
        self.push_as(host, repository, tag, None)
    }

    /// `push`, logged in as `user:password` when given.
    pub fn push_as(&self, host: &str, repository: &str, tag: &str, credentials: Option<&str>) -> Result<()> {
        let source = format!("oci:{}:fixture", self.dir.path().display());
        let destination = format!("docker://{host}/{repository}:{tag}");
        let mut copy = vec!["copy", "--quiet", "--all", "--preserve-digests", "--dest-tls-verify=false"];
        let creds = credentials.map(|c| format!("--dest-creds={c}"));
        copy.extend(creds.as_deref());
        skopeo(&[&copy[..], &[&source, &destination]].concat()).map(drop)
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.path().join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
    }
}

struct LayoutWriter {
    dir: PathBuf,
    blobs: Vec<String>,
}

impl LayoutWriter {
    /// Write a blob and return its descriptor.
    fn blob(&mut self, media_type: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        let descriptor = self.write(media_type, bytes)?;
        self.blobs.push(descriptor["digest"].as_str().unwrap_or_default().to_string());
        Ok(descriptor)
    }

    fn manifest(&mut self, media_type: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        self.write(media_type, bytes)
    }

    fn write(&self, media_type: &str, bytes: &[u8]) -> Result<serde_json::Value> {
        let hash = hex(&Sha256::digest(bytes));
        let mut file = std::fs::File::create(self.dir.join(&hash))?;
        file.write_all(bytes)?;
        Ok(
            serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hash}"), "size": bytes.len()}),
        )
    }
}

/// A cosign key pair of a test's own in `dir`, its password empty (`COSIGN_PASSWORD=""`): the
/// private key's path and the public one's.
pub fn cosign_key_pair(dir: &Path) -> Result<(String, String)> {
    require("cosign", "bash .ci/engine installs it (Debian 13's cosign)")?;
    std::fs::create_dir_all(dir)?;
    succeed(
        Command::new("cosign").args(["generate-key-pair"]).current_dir(dir).env("COSIGN_PASSWORD", ""),
        "cosign generate-key-pair",
    )?;
    let path = |name: &str| dir.join(name).display().to_string();
    Ok((path("cosign.key"), path("cosign.pub")))
}

/// The referrers of `reference` (`host/repo@digest`) as `oras discover` lists them, by the
/// distribution spec's tag scheme (what a registry without the referrers API offers): each
/// one's digest and artifactType, sorted. A client that is not ours.
pub fn oras_referrers(reference: &str) -> Result<Vec<(String, String)>> {
    require("oras", "bash .ci/engine installs it (Debian 13's oras)")?;
    let stdout = succeed(
        Command::new("oras")
            .args([
                "discover",
                "--plain-http",
                "--distribution-spec",
                "v1.1-referrers-tag",
                "--format",
                "json",
            ])
            .arg(reference),
        &format!("oras discover {reference}"),
    )?;
    let listed: serde_json::Value = serde_json::from_slice(&stdout)
        .with_context(|| format!("oras discover {reference}: {}", String::from_utf8_lossy(&stdout)))?;
    let mut referrers: Vec<(String, String)> = listed["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let field = |name: &str| m[name].as_str().unwrap_or_default().to_string();
            (field("digest"), field("artifactType"))
        })
        .collect();
    referrers.sort();
    Ok(referrers)
}

/// `skopeo inspect --raw`: the manifest bytes a registry serves for a reference, read by a
/// client that is not ours.
pub fn skopeo_raw(reference: &str) -> Result<Vec<u8>> {
    skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")])
}

/// `skopeo_raw`, logged in as `user:password`.
pub fn skopeo_raw_as(reference: &str, credentials: &str) -> Result<Vec<u8>> {
    let creds = format!("--creds={credentials}");
    skopeo(&["inspect", "--raw", "--tls-verify=false", &creds, &format!("docker://{reference}")])
}

/// How a token-auth test registry is configured (`auth: token` in Distribution's config).
#[derive(Debug, Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub root_certificate: PathBuf,
}

/// Run skopeo to success and return what it printed.
fn skopeo(args: &[&str]) -> Result<Vec<u8>> {
    require("skopeo", "apt-get install skopeo")?;
    // The error names the command, credentials left out.
    let shown: Vec<&str> = args
        .iter()
        .map(|arg| if arg.starts_with("--creds=") { "--creds=<credentials>" } else { arg })
        .collect();
    succeed(Command::new("skopeo").args(args), &format!("skopeo {}", shown.join(" ")))
}

/// A TCP proxy in front of `upstream` that delays every byte by `one_way` in each direction,
/// so each request/response round trip costs `2 × one_way` more, as against a registry across
/// the internet. Bytes keep flowing at full speed behind the delay (a delay line, not a pause per
/// chunk). Runs until the runtime it was started on stops.
pub async fn start_delay_proxy(upstream: SocketAddr, one_way: Duration) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    delay_line(client_read, server_write, one_way),
                    delay_line(server_read, client_write, one_way)
                );
            });
        }
    });
    Ok(addr)
}

async fn delay_line(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sender.send((tokio::time::Instant::now() + delay, buffer[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = receiver.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// An HTTP client for the test registries, over the xtask's TLS config: reqwest is built with
/// rustls and no crypto provider (`xtask::registry::tls`), so a client of its own would have none.
pub fn http_client() -> reqwest::Client {
    xtask::registry::tls::client_builder().build().expect("the xtask's TLS config makes a client")
}

/// Push every blob of `fixtures` straight into `registry` under `repository`, `parallel` at a
/// time, with one POST and one monolithic PUT each: what the registry itself needs to take
/// them in, the floor of any copy.
pub async fn push_blobs_directly(
    registry: SocketAddr,
    repository: &str,
    fixtures: &[&Fixture],
    parallel: usize,
) -> Result<()> {
    use futures_util::StreamExt;
    let client = http_client();
    let mut blobs: Vec<(String, PathBuf)> = Vec::new();
    for fixture in fixtures {
        for digest in &fixture.blobs {
            if !blobs.iter().any(|(d, _)| d == digest) {
                blobs.push((digest.clone(), fixture.blob_path(digest)));
            }
        }
    }
    let pushes = futures_util::stream::iter(blobs.into_iter().map(|(digest, path)| {
        let client = client.clone();
        async move {
            let bytes = tokio::fs::read(&path).await?;
            let start =
                client.post(format!("http://{registry}/v2/{repository}/blobs/uploads/")).send().await?;
            ensure!(start.status().as_u16() == 202, "upload start: {}", start.status());
            let location = start.headers()["location"].to_str()?.to_string();
            let location =
                if location.starts_with("http") { location } else { format!("http://{registry}{location}") };
            let separator = if location.contains('?') { '&' } else { '?' };
            let done = client.put(format!("{location}{separator}digest={digest}")).body(bytes).send().await?;
            ensure!(done.status().as_u16() == 201, "upload of {digest}: {}", done.status());
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(parallel)
    .collect::<Vec<_>>()
    .await;
    pushes.into_iter().collect()
}

impl Fixture {
    /// Push the fixture byte for byte over the registry API, the way an OCI 1.1 client does
    /// (skopeo will not push an index of artifacts without converting it): its blobs, then the
    /// manifests its index lists, then the index under `tag` (with no tag, not the index:
    /// its manifests are then reachable by digest only). Plain HTTP, no credentials.
    pub fn push_raw(&self, registry: SocketAddr, repository: &str, tag: Option<&str>) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        runtime.block_on(async {
            push_blobs_directly(registry, repository, &[self], 4).await?;
            let client = http_client();
            let put = |reference: String, digest: &str| {
                let path = self.blob_path(digest);
                let client = client.clone();
                async move {
                    let bytes = tokio::fs::read(&path).await?;
                    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)?["mediaType"]
                        .as_str()
                        .unwrap_or(OCI_MANIFEST)
                        .to_string();
                    let url = format!("http://{registry}/v2/{repository}/manifests/{reference}");
                    let done = client.put(url).header("content-type", media_type).body(bytes).send().await?;
                    ensure!(done.status().as_u16() == 201, "manifest {reference}: {}", done.status());
                    anyhow::Ok(())
                }
            };
            for child in self.children() {
                put(child.clone(), &child).await?;
            }
            match tag {
                Some(tag) => put(tag.to_string(), &self.digest).await,
                None => Ok(()),
            }
        })
    }
}

/// Where `.ci/engine` put Debian's busybox-static packages: `amd64.deb` and `arm64.deb`.
/// Where `.ci/engine` downloads Debian's busybox-static for amd64 and arm64 (`BUSYBOX_DEBS`).
pub fn busybox_debs() -> PathBuf {
    std::env::var_os("BUSYBOX_DEBS")
        .map_or_else(|| PathBuf::from("/var/cache/multi-arch-docker/busybox"), PathBuf::from)
}

/// Run a command to success and return what it printed; its output is in the error otherwise.
pub fn run_to_success(program: &str, args: &[&str]) -> Result<String> {
    let stdout = succeed(Command::new(program).args(args), &format!("{program} {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Run `command` (`what`, as the error names it) to success and return its standard output;
/// what it printed is in the error otherwise. Not for a command whose arguments hold a secret.
fn succeed(command: &mut Command, what: &str) -> Result<Vec<u8>> {
    let program = command.get_program().to_string_lossy().into_owned();
    let output = command.output().with_context(|| format!("cannot run {program}"))?;
    ensure!(
        output.status.success(),
        "`{what}` failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(output.stdout)
}

/// Build a linux/amd64 + linux/arm64 busybox image in `dir` with the engine's own builder and
/// push it to `reference` (a registry on 127.0.0.1): a multi-arch base image without Docker Hub.
/// Each platform is Debian's static busybox of that architecture, with a link for every applet,
/// so that `RUN` steps have a shell.
pub fn push_busybox_base(dir: &std::path::Path, reference: &str) -> Result<()> {
    let debs = busybox_debs();
    for arch in ["amd64", "arm64"] {
        let deb = debs.join(format!("{arch}.deb"));
        ensure!(deb.is_file(), "{} is missing: `sudo bash .ci/engine` downloads it", deb.display());
        let root = dir.join(format!("root-{arch}"));
        run_to_success("dpkg", &["-x", &deb.display().to_string(), &root.display().to_string()])?;
    }
    // The amd64 busybox runs here and names the applets; both builds are the same version.
    let applets = run_to_success(&dir.join("root-amd64/bin/busybox").display().to_string(), &["--list"])?;
    for arch in ["amd64", "arm64"] {
        let bin = dir.join(format!("root-{arch}/bin"));
        for applet in applets.lines().filter(|a| *a != "busybox") {
            if !bin.join(applet).exists() {
                std::os::unix::fs::symlink("busybox", bin.join(applet))?;
            }
        }
        std::fs::create_dir_all(dir.join(format!("root-{arch}/tmp")))?;
    }
    std::fs::write(dir.join("Dockerfile"), "FROM scratch\nARG TARGETARCH\nCOPY root-${TARGETARCH}/ /\n")?;
    let context = dir.display().to_string();
    let build = ["buildx", "build", "--builder", "default", "--platform", "linux/amd64,linux/arm64"];
    let push = ["--provenance=false", "--tag", reference, "--push", &context];
    run_to_success("docker", &[&build[..], &push[..]].concat()).map(drop)
}

/// Remove from this machine's engine every image tagged under one of `hosts` (the registries
/// of a test or a benchmark, which end with it): builds on the engine's own builder keep a copy
/// of what they push, and `docker run --pull` keeps what it pulled. Best effort: an engine that
/// does not answer has nothing to remove.
pub fn remove_engine_images(hosts: &[String]) {
    let Ok(listed) = run_to_success("docker", &["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])
    else {
        return;
    };
    let tagged: Vec<&str> = listed
        .lines()
        .filter(|image| hosts.iter().any(|host| image.starts_with(&format!("{host}/"))))
        .collect();
    for chunk in tagged.chunks(100) {
        let _ = run_to_success("docker", &[&["rmi", "--force"][..], chunk].concat());
    }
}
