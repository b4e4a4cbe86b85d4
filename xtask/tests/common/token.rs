//! A token service for the token-auth tests: it issues JWTs signed (RS256) with a test key whose
//! certificate the registry trusts (`rootcertbundle`), as Docker Hub's auth.docker.io does for
//! its registry. Its policy: anonymous callers may pull repositories under `public/`; the user
//! `pusher` (password `secret`) may pull and push anything; any other login is refused. Each
//! grant is the part of the asked scopes the caller may have, like Docker's token servers.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509, X509NameBuilder};
use xtask_testbed::TokenAuth;

pub const USER: &str = "pusher";
pub const PASSWORD: &str = "secret";
pub const ISSUER: &str = "test-issuer";

/// One token request, as the service saw it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub service: String,
    /// The scopes asked for, in the order asked.
    pub scopes: Vec<String>,
    /// Who asked (`None`: anonymous).
    pub user: Option<String>,
    /// What the token allows: `repository:name:actions` for each scope granted in part or whole.
    pub granted: Vec<String>,
}

struct State {
    key: PKey<Private>,
    key_id: String,
    issued: Mutex<Vec<Issued>>,
    /// How long a token is good for at the registry.
    lifetime: Mutex<Duration>,
    /// What `expires_in` tells the client (by default, the truth).
    claimed: Mutex<Option<Duration>>,
}

pub struct TokenService {
    pub addr: SocketAddr,
    pub certificate: std::path::PathBuf,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl TokenService {
    pub fn start() -> TokenService {
        let rsa = Rsa::generate(2048).unwrap();
        let key = PKey::from_rsa(rsa).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certificate = dir.path().join("token-issuer.pem");
        std::fs::write(&certificate, self_signed(&key).to_pem().unwrap()).unwrap();
        let key_id = libtrust_key_id(&key.public_key_to_der().unwrap());
        let state = Arc::new(State {
            key,
            key_id,
            issued: Mutex::new(Vec::new()),
            lifetime: Mutex::new(Duration::from_secs(300)),
            claimed: Mutex::new(None),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = Arc::clone(&serving);
                std::thread::spawn(move || {
                    let _ = answer(stream, &state);
                });
            }
        });
        TokenService { addr, certificate, state, _dir: dir }
    }

    /// The registry's side of it, for `service`.
    pub fn auth_for(&self, service: &str) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: service.to_string(),
            issuer: ISSUER.to_string(),
            root_certificate: self.certificate.clone(),
        }
    }

    /// Tokens from now on are good at the registry for `lifetime`, while the service tells
    /// clients they last `claimed`: a token that dies before its time, as a revoked one does.
    pub fn set_lifetimes(&self, lifetime: Duration, claimed: Duration) {
        *self.state.lifetime.lock().unwrap() = lifetime;
        *self.state.claimed.lock().unwrap() = Some(claimed);
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.issued.lock().unwrap().clone()
    }
}

/// A self-signed certificate for `key`: what the registry's `rootcertbundle` holds.
fn self_signed(key: &PKey<Private>) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", ISSUER).unwrap();
    let name = name.build();
    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    builder.set_subject_name(&name).unwrap();
    builder.set_issuer_name(&name).unwrap();
    builder.set_pubkey(key).unwrap();
    builder.set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap()).unwrap();
    builder.set_not_after(&openssl::asn1::Asn1Time::days_from_now(2).unwrap()).unwrap();
    let serial = openssl::bn::BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap();
    builder.set_serial_number(&serial).unwrap();
    builder.sign(key, MessageDigest::sha256()).unwrap();
    builder.build()
}

/// The key ID Distribution's registry gives a trusted key (libtrust's): the SHA-256 of the
/// public key's DER, cut to 240 bits, in base32, in groups of four joined by `:`.
fn libtrust_key_id(public_der: &[u8]) -> String {
    let digest = openssl::sha::sha256(public_der);
    let encoded = base32(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32, no padding (30 bytes make 48 characters exactly).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0);
    for byte in bytes {
        buffer = (buffer << 8) | u32::from(*byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

fn answer(stream: TcpStream, state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut first = String::new();
    reader.read_line(&mut first)?;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
        {
            authorization = Some(value.trim().to_string());
        }
    }
    let target = first.split(' ').nth(1).unwrap_or("");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let mut service = String::new();
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match name {
            "service" => service = value,
            "scope" => scopes.push(value),
            _ => {}
        }
    }
    let user = match authorization.as_deref().and_then(|a| a.strip_prefix("Basic ")) {
        None => None,
        Some(encoded) => {
            let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap_or_default()).unwrap_or_default();
            if decoded != format!("{USER}:{PASSWORD}") {
                return respond(stream, "401 Unauthorized", r#"{"details":"wrong user name or password"}"#);
            }
            Some(USER.to_string())
        }
    };
    let granted: Vec<String> = scopes.iter().filter_map(|scope| grant(scope, user.is_some())).collect();
    let lifetime = *state.lifetime.lock().unwrap();
    let claimed = state.claimed.lock().unwrap().unwrap_or(lifetime);
    let token = sign(state, &service, user.as_deref(), &granted, lifetime);
    state.issued.lock().unwrap().push(Issued { service, scopes, user, granted });
    let body = serde_json::json!({"token": token, "expires_in": claimed.as_secs()}).to_string();
    respond(stream, "200 OK", &body)
}

/// The part of `scope` the caller may have: everything for the pusher, pull on `public/` for
/// anyone.
fn grant(scope: &str, logged_in: bool) -> Option<String> {
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
    let allowed: Vec<&str> = actions
        .split(',')
        .filter(|action| logged_in || (*action == "pull" && name.starts_with("public/")))
        .collect();
    (!allowed.is_empty()).then(|| format!("{kind}:{name}:{}", allowed.join(",")))
}

fn sign(state: &State, service: &str, user: Option<&str>, granted: &[String], lifetime: Duration) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    // Distribution allows 60 s of clock skew past `exp`: subtract it, so that a token is good
    // at the registry for `lifetime` and no longer.
    let expires = now + lifetime.as_secs();
    let exp = expires.saturating_sub(60);
    let access: Vec<serde_json::Value> = granted
        .iter()
        .map(|g| {
            let mut parts = g.splitn(3, ':');
            let (kind, name, actions) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()})
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": state.key_id});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user.unwrap_or(""), "aud": service,
        "exp": exp, "nbf": now - 1, "iat": now, "jti": format!("{now}-{}", rand_suffix()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), &state.key).unwrap();
    signer.update(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap()))
}

fn rand_suffix() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(mut stream: TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
