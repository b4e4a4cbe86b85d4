//! A token service for the token-auth tests: it issues JWTs signed (ES256) with a test key whose
//! certificate the registry trusts (`rootcertbundle`), as Docker Hub's auth.docker.io does for
//! its registry. Its policy: anonymous callers may pull repositories under `public/`; the user
//! `pusher` (password `secret`) may pull and push anything; any other login is refused. Each
//! grant is the part of the asked scopes the caller may have, like Docker's token servers.
//! It speaks plain HTTP, or HTTPS with a certificate for 127.0.0.1 from a CA made for it (then a
//! client must be told to trust that CA, as a user does through `SSL_CERT_FILE`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
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
    /// The P-256 key the tokens are signed with (JWT's ES256: r and s, 32 bytes each).
    key: EcdsaKeyPair,
    key_id: String,
    issued: Mutex<Vec<Issued>>,
    /// How long a token is good for at the registry.
    lifetime: Mutex<Duration>,
    /// What `expires_in` tells the client (by default, the truth).
    claimed: Mutex<Option<Duration>>,
}

pub struct TokenService {
    pub addr: SocketAddr,
    pub certificate: PathBuf,
    /// Over HTTPS: the CA its server certificate comes from, as a PEM bundle.
    pub https_ca: Option<PathBuf>,
    state: Arc<State>,
    _dir: tempfile::TempDir,
}

impl TokenService {
    /// The service over plain HTTP.
    pub fn start() -> TokenService {
        TokenService::start_with(false)
    }

    /// The service over HTTPS, with a certificate for 127.0.0.1 from a CA of its own
    /// (`https_ca`).
    pub fn start_over_https() -> TokenService {
        TokenService::start_with(true)
    }

    fn start_with(https: bool) -> TokenService {
        let signing = KeyPair::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certificate = dir.path().join("token-issuer.pem");
        std::fs::write(&certificate, self_signed(&signing)).unwrap();
        let key_id = libtrust_key_id(&signing.subject_public_key_info());
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &signing.serialize_der(),
            &SystemRandom::new(),
        )
        .unwrap();
        let state = Arc::new(State {
            key,
            key_id,
            issued: Mutex::new(Vec::new()),
            lifetime: Mutex::new(Duration::from_secs(300)),
            claimed: Mutex::new(None),
        });
        let https_ca = https.then(|| dir.path().join("https-ca.pem"));
        let tls = https_ca.as_deref().map(server_config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Arc::clone(&state);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (state, tls) = (Arc::clone(&serving), tls.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, tls, &state);
                });
            }
        });
        TokenService { addr, certificate, https_ca, state, _dir: dir }
    }

    /// The registry's side of it, for `service`.
    pub fn auth_for(&self, service: &str) -> TokenAuth {
        TokenAuth {
            realm: format!(
                "{}://{}/token",
                if self.https_ca.is_some() { "https" } else { "http" },
                self.addr
            ),
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

/// A self-signed certificate for `key`, in PEM: what the registry's `rootcertbundle` holds.
fn self_signed(key: &KeyPair) -> String {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, ISSUER);
    params.self_signed(key).unwrap().pem()
}

/// A CA of its own, written to `ca_pem`, and a server certificate for 127.0.0.1 that it issued.
fn server_config(ca_pem: &Path) -> Arc<rustls::ServerConfig> {
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params("token service test CA");
    std::fs::write(ca_pem, ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    server.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = server.signed_by(&server_key, &Issuer::from_params(&ca, &ca_key)).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
    #[allow(deprecated)] // ring, as the xtask's client has it (xtask::registry::tls)
    let ring = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(ring)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.der().clone()], key)
        .unwrap();
    Arc::new(config)
}

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A CA that issued nothing the service shows, as a PEM bundle at `path`: trusting it alone,
/// a client must refuse the service over HTTPS.
pub fn write_unrelated_ca(path: &Path) {
    let key = KeyPair::generate().unwrap();
    std::fs::write(path, ca_params("unrelated test CA").self_signed(&key).unwrap().pem()).unwrap();
}

/// The key ID Distribution's registry gives a trusted key (libtrust's): the SHA-256 of the
/// public key's DER, cut to 240 bits, in base32, in groups of four joined by `:`.
fn libtrust_key_id(public_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, public_der);
    let encoded = base32(&digest.as_ref()[..30]);
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

/// One connection: over TLS when `tls` is given, which then ends with TLS's own close.
fn serve(stream: TcpStream, tls: Option<Arc<rustls::ServerConfig>>, state: &State) -> std::io::Result<()> {
    let Some(config) = tls else {
        return answer(&mut &stream, state);
    };
    let connection = rustls::ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, stream);
    answer(&mut stream, state)?;
    stream.conn.send_close_notify();
    stream.flush()
}

fn answer(stream: &mut (impl Read + Write), state: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut *stream);
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
    // A GET: nothing follows the head that the reader could have taken.
    drop(reader);
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
    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "kid": state.key_id});
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
    let signature = state.key.sign(&SystemRandom::new(), signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
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

fn respond(stream: &mut impl Write, status: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}
