//! A fault-injecting HTTP/1.1 proxy for the tests and the benchmark, put in front of a real
//! registry. It forwards requests one by one and, on the requests its rules pick, answers 5xx or
//! 429 (with `Retry-After`), resets the connection before or during the body, ends a body early,
//! flips bytes in it, or stalls. It can also play a registry with a pull quota, adding
//! Docker Hub's `RateLimit-*` headers to manifest answers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (500, 503, …) without asking the registry.
    Status(u16),
    /// Answer 429 with `Retry-After: <seconds>`.
    TooManyRequests(u64),
    /// Reset the connection instead of answering.
    ResetBeforeResponse,
    /// Send the head and half of the body, then reset the connection.
    ResetMidBody,
    /// Send the head (with the full length) and half of the body, then close cleanly.
    TruncateBody,
    /// Send everything, with one byte of the body changed.
    FlipByte,
    /// Send the head and half of the body, then go silent for this long.
    Stall(Duration),
    /// Read the request, then say nothing for this long (and close).
    Silent(Duration),
    /// Send the body in 16 pieces with this pause before each: slow, but never silent for long.
    Trickle(Duration),
}

#[derive(Debug, Clone, Copy)]
pub enum Schedule {
    /// Every n-th matching request (the n-th, 2n-th, …).
    EveryNth(usize),
    /// The first n matching requests.
    FirstN(usize),
    Always,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Option<&'static str>,
    pub path_contains: &'static str,
    pub fault: Fault,
    pub schedule: Schedule,
}

/// The mix of faults measured in issue 12, to put at a source: a reset on every 4th blob GET, a
/// 503 on every 5th request, a 429 (`Retry-After: 1`) on every 7th. The faults test and the
/// benchmark both run it, so that what is asserted is what is measured.
pub fn measured_mix() -> Vec<Rule> {
    vec![
        Rule::new(Some("GET"), "/blobs/", Fault::ResetMidBody, Schedule::EveryNth(4)),
        Rule::new(None, "/v2/", Fault::Status(503), Schedule::EveryNth(5)),
        Rule::new(None, "/v2/", Fault::TooManyRequests(1), Schedule::EveryNth(7)),
    ]
}

impl Rule {
    pub fn new(
        method: Option<&'static str>,
        path_contains: &'static str,
        fault: Fault,
        schedule: Schedule,
    ) -> Rule {
        Rule { method, path_contains, fault, schedule }
    }
}

struct State {
    rules: Vec<Rule>,
    seen: Vec<AtomicUsize>,
    injected: AtomicUsize,
    log: Mutex<Vec<Logged>>,
    quota: Option<Quota>,
    /// Once set, the proxy answers the OCI referrers API itself: subject digest → index bytes.
    referrers: Mutex<Option<std::collections::HashMap<String, Vec<u8>>>>,
}

/// A pull quota: `limit` manifest GETs per window, counted down as they pass.
struct Quota {
    limit: usize,
    window: u64,
    pulls: AtomicUsize,
}

/// One request through the proxy.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    /// The `Range` header, when the client sent one.
    pub range: Option<String>,
    pub fault: Option<Fault>,
    /// When the request arrived, since the proxy started.
    pub at: Duration,
}

impl std::fmt::Display for Logged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} {} {} range={:?} -> {:?}",
            self.at.as_secs_f64(),
            self.method,
            self.path,
            self.range,
            self.fault
        )
    }
}

/// The proxy; it runs on its own thread until the test process ends.
pub struct FaultProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr, rules: Vec<Rule>) -> FaultProxy {
        Self::start_with_quota(upstream, rules, None)
    }

    /// A proxy that also reports a pull quota of `limit` manifest GETs per `window` seconds in
    /// `RateLimit-Limit` and `RateLimit-Remaining`, as Docker Hub does (it does not refuse
    /// pulls past it: the client is to hold back).
    pub fn start_with_quota(
        upstream: SocketAddr,
        rules: Vec<Rule>,
        quota: Option<(usize, u64)>,
    ) -> FaultProxy {
        let seen = rules.iter().map(|_| AtomicUsize::new(0)).collect();
        let quota = quota.map(|(limit, window)| Quota { limit, window, pulls: AtomicUsize::new(0) });
        let state = Arc::new(State {
            rules,
            seen,
            injected: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            quota,
            referrers: Mutex::new(None),
        });
        let (sender, receiver) = std::sync::mpsc::channel();
        let thread_state = Arc::clone(&state);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let started = std::time::Instant::now();
                sender.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = Arc::clone(&thread_state);
                    tokio::spawn(async move {
                        let _ = serve(client, upstream, state, started).await;
                    });
                }
            });
        });
        let addr = receiver.recv().unwrap();
        FaultProxy { addr, state }
    }

    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> usize {
        self.state.injected.load(Ordering::SeqCst)
    }

    /// From now on, answer `GET /v2/<name>/referrers/<digest>` as a registry with the OCI 1.1
    /// referrers API does: `index` (an image index of referrers) for `subject`, an empty index
    /// for any other manifest. (Debian's registry has no such API: this plays one.)
    pub fn serve_referrers(&self, subject: &str, index: Vec<u8>) {
        self.state
            .referrers
            .lock()
            .unwrap()
            .get_or_insert_with(Default::default)
            .insert(subject.to_string(), index);
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }
}

struct Head {
    method: String,
    path: String,
    range: Option<String>,
    raw: Vec<u8>,
    content_length: Option<usize>,
    chunked: bool,
}

async fn read_head<R: AsyncReadExt + Unpin>(reader: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if reader.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        // Not HTTP (a TLS ClientHello from a client trying HTTPS first): close at once, as a
        // plain-HTTP registry's port effectively does, so that the client falls back promptly.
        if raw.is_empty() && !byte[0].is_ascii_uppercase() {
            return Ok(None);
        }
        raw.push(byte[0]);
    }
    Ok(Some(raw))
}

fn parse_head(raw: Vec<u8>) -> Head {
    let text = String::from_utf8_lossy(&raw).to_string();
    let mut lines = text.split("\r\n");
    let first: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let mut content_length = None;
    let mut chunked = false;
    let mut range = None;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("range:") {
            range = Some(line["range:".len()..].trim().to_string());
        }
        if let Some(value) = lower.strip_prefix("content-length:") {
            content_length = value.trim().parse().ok();
        }
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    Head {
        method: first.first().unwrap_or(&"").to_string(),
        path: first.get(1).unwrap_or(&"").to_string(),
        range,
        raw,
        content_length,
        chunked,
    }
}

/// Read a whole body (by length, or chunked to its end) and return it as received.
async fn read_body<R: AsyncReadExt + Unpin>(reader: &mut R, head: &Head) -> std::io::Result<Vec<u8>> {
    if head.chunked {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                let mut byte = [0u8; 1];
                reader.read_exact(&mut byte).await?;
                line.push(byte[0]);
            }
            body.extend_from_slice(&line);
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&line).trim().split(';').next().unwrap_or("0"),
                16,
            )
            .unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                return Ok(body);
            }
        }
    }
    let mut body = vec![0u8; head.content_length.unwrap_or(0)];
    reader.read_exact(&mut body).await?;
    Ok(body)
}

fn pick(state: &State, head: &Head) -> Option<Fault> {
    for (rule, seen) in state.rules.iter().zip(&state.seen) {
        if rule.method.is_some_and(|m| m != head.method) || !head.path.contains(rule.path_contains) {
            continue;
        }
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let hit = match rule.schedule {
            Schedule::EveryNth(every) => n % every == 0,
            Schedule::FirstN(first) => n <= first,
            Schedule::Always => true,
        };
        if hit {
            state.injected.fetch_add(1, Ordering::SeqCst);
            return Some(rule.fault);
        }
    }
    None
}

/// Linger 0: closing the socket then sends RST, not FIN.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// The referrers index to answer with, when the proxy plays the referrers API and this asks it.
fn referrers_answer(state: &State, head: &Head) -> Option<Vec<u8>> {
    let subject = head.path.split("/referrers/").nth(1).filter(|_| head.method == "GET")?;
    let known = state.referrers.lock().unwrap();
    let empty =
        br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
    Some(known.as_ref()?.get(subject).cloned().unwrap_or_else(|| empty.to_vec()))
}

/// The quota headers to add to this answer, counting the pull when it is a manifest GET.
fn quota_headers(state: &State, head: &Head) -> String {
    let Some(quota) = &state.quota else {
        return String::new();
    };
    if !head.path.contains("/manifests/") {
        return String::new();
    }
    let used = if head.method == "GET" {
        quota.pulls.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        quota.pulls.load(Ordering::SeqCst)
    };
    let (limit, window) = (quota.limit, quota.window);
    let remaining = limit.saturating_sub(used);
    format!("RateLimit-Limit: {limit};w={window}\r\nRateLimit-Remaining: {remaining};w={window}\r\n")
}

/// `raw` (a response head) with `extra` header lines added before its blank line.
fn with_headers(raw: &[u8], extra: &str) -> Vec<u8> {
    if extra.is_empty() {
        return raw.to_vec();
    }
    let mut head = raw[..raw.len() - 2].to_vec();
    head.extend_from_slice(extra.as_bytes());
    head.extend_from_slice(b"\r\n");
    head
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    state: Arc<State>,
    started: std::time::Instant,
) -> std::io::Result<()> {
    let mut client = BufReader::new(client);
    let server = TcpStream::connect(upstream).await?;
    let mut server = BufReader::new(server);
    loop {
        let Some(raw) = read_head(&mut client).await? else {
            return Ok(());
        };
        let head = parse_head(raw);
        let body = read_body(&mut client, &head).await?;
        let fault = pick(&state, &head);
        state.log.lock().unwrap().push(Logged {
            method: head.method.clone(),
            path: head.path.clone(),
            range: head.range.clone(),
            fault,
            at: started.elapsed(),
        });
        if let Some(body) = referrers_answer(&state, &head) {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            client.get_mut().write_all(head.as_bytes()).await?;
            client.get_mut().write_all(&body).await?;
            continue;
        }
        match fault {
            Some(Fault::Status(code)) => {
                let answer = format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\n\r\n");
                client.get_mut().write_all(answer.as_bytes()).await?;
                continue;
            }
            Some(Fault::TooManyRequests(seconds)) => {
                let answer = format!(
                    "HTTP/1.1 429 Too Many Requests\r\nRetry-After: {seconds}\r\nContent-Length: 0\r\n\r\n"
                );
                client.get_mut().write_all(answer.as_bytes()).await?;
                continue;
            }
            Some(Fault::Silent(pause)) => {
                tokio::time::sleep(pause).await;
                return Ok(());
            }
            Some(Fault::ResetBeforeResponse) => {
                reset(client.get_ref());
                return Ok(());
            }
            _ => {}
        }
        server.get_mut().write_all(&head.raw).await?;
        server.get_mut().write_all(&body).await?;
        let Some(raw) = read_head(&mut server).await? else {
            return Ok(());
        };
        let mut response = parse_head(with_headers(&raw, &quota_headers(&state, &head)));
        // A response head parses as (protocol, status): `path` holds the status code.
        let bodiless = head.method == "HEAD" || response.path == "204" || response.path == "304";
        let mut response_body = if bodiless { Vec::new() } else { read_body(&mut server, &response).await? };
        response.content_length = Some(response_body.len());
        let half = response_body.len() / 2;
        match fault {
            Some(Fault::ResetMidBody) if half > 0 => {
                client.get_mut().write_all(&response.raw).await?;
                client.get_mut().write_all(&response_body[..half]).await?;
                client.get_mut().flush().await?;
                // Let the half arrive before the reset, as on a real network where the bytes
                // sent before a connection breaks reach the client.
                tokio::time::sleep(Duration::from_millis(50)).await;
                reset(client.get_ref());
                return Ok(());
            }
            Some(Fault::TruncateBody) if half > 0 => {
                client.get_mut().write_all(&response.raw).await?;
                client.get_mut().write_all(&response_body[..half]).await?;
                client.get_mut().shutdown().await?;
                return Ok(());
            }
            Some(Fault::Stall(pause)) if half > 0 => {
                client.get_mut().write_all(&response.raw).await?;
                client.get_mut().write_all(&response_body[..half]).await?;
                client.get_mut().flush().await?;
                tokio::time::sleep(pause).await;
                return Ok(());
            }
            Some(Fault::Trickle(pause)) if half > 0 => {
                client.get_mut().write_all(&response.raw).await?;
                for piece in response_body.chunks(response_body.len().div_ceil(16)) {
                    tokio::time::sleep(pause).await;
                    client.get_mut().write_all(piece).await?;
                    client.get_mut().flush().await?;
                }
                continue;
            }
            Some(Fault::FlipByte) if half > 0 => {
                response_body[half] ^= 0xff;
            }
            _ => {}
        }
        client.get_mut().write_all(&response.raw).await?;
        client.get_mut().write_all(&response_body).await?;
    }
}
