//! The TLS of every HTTP client the xtask builds: rustls, with ring for its crypto, checking
//! servers against the system's trust store. One `rustls::ClientConfig` serves the whole process,
//! and the trust store is read once, when a first server certificate is to be checked.
//!
//! Why it is built this way:
//! - The CA bundle is a few hundred certificates to read and parse. OpenSSL (native-tls) did that
//!   for every client built, which was most of the CPU of a run whose registries all speak plain
//!   HTTP (loopback ones always do). Here it is done at most once a process, and never by a run
//!   that makes no TLS connection: not when a registry is configured, but at the first handshake.
//!   So a plain-HTTP registry whose token service speaks HTTPS gets its roots too.
//! - The trust store is read by rustls-native-certs: `SSL_CERT_FILE` and `SSL_CERT_DIR` replace
//!   the platform's store when set, as with OpenSSL. Nothing here writes the environment.
//! - reqwest is handed this config ready-made (`tls_backend_preconfigured`): left to itself,
//!   its rustls build reads the whole store for each client built.
//! - Each `Session` still builds its own `reqwest::Client` on top (cheap once the TLS config is
//!   shared), rather than one client for the process: sessions set different connect timeouts,
//!   which reqwest fixes per client, and they run on different tokio runtimes (the publish
//!   run's registry reads, each vendoring run's own). A pooled connection is a task of the
//!   runtime that opened it; a client shared past that runtime's end sends into a dead
//!   connection ("dispatch task is gone", reqwest issues 1148 and 2501).

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A client builder whose TLS is the process's one config; every HTTP client of the xtask (and
/// of its tests) starts here.
pub fn client_builder() -> reqwest::ClientBuilder {
    static CONFIG: OnceLock<rustls::ClientConfig> = OnceLock::new();
    let config = CONFIG.get_or_init(|| client_config(Arc::new(SystemTrust::new(provider()))));
    // A clone shares the verifier and the provider (both behind `Arc`).
    reqwest::Client::builder().tls_backend_preconfigured(config.clone())
}

/// ring: rustls deprecates it for want of post-quantum key exchange, which aws-lc-rs has, at the
/// price of a C library compiled with the xtask (see docs/cloud-build.md for the figures).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.2 and 1.3 with `verifier`; HTTP/1.1, the only HTTP the xtask's reqwest speaks.
fn client_config(verifier: Arc<SystemTrust>) -> rustls::ClientConfig {
    let mut config = rustls::ClientConfig::builder_with_provider(verifier.provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring offers TLS 1.2 and 1.3")
        // "dangerous" only in that rustls cannot vouch for a verifier it did not build: this one
        // hands every check to rustls's own WebPKI verifier.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// rustls's WebPKI verifier over the system's trust store, which it reads at the first
/// certificate it is asked to check and keeps (or the reason it could not) for the process.
#[derive(Debug)]
struct SystemTrust {
    provider: Arc<CryptoProvider>,
    loaded: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
}

impl SystemTrust {
    fn new(provider: Arc<CryptoProvider>) -> SystemTrust {
        SystemTrust { provider, loaded: OnceLock::new() }
    }

    fn verifier(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        match self.loaded.get_or_init(|| load(&self.provider)) {
            Ok(verifier) => Ok(verifier),
            Err(why) => Err(rustls::Error::General(why.clone())),
        }
    }

    /// Whether the trust store was read.
    #[cfg(test)]
    fn is_loaded(&self) -> bool {
        self.loaded.get().is_some()
    }
}

/// The trust store, read and parsed: what every earlier client paid for on being built.
fn load(provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _unparsable) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no CA certificate in the system's trust store (or where SSL_CERT_FILE / SSL_CERT_DIR \
             point){}",
            if errors.is_empty() { String::new() } else { format!(": {}", errors.join("; ")) }
        ));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("cannot use the system's trust store: {e}"))
}

impl ServerCertVerifier for SystemTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    // The handshake's signatures are checked against the certificate already verified: no
    // roots needed, so the store is not read for them.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn building_clients_reads_no_trust_store_and_the_first_check_does() {
        let trust = Arc::new(SystemTrust::new(provider()));
        let config = client_config(Arc::clone(&trust));
        for _ in 0..3 {
            reqwest::Client::builder().tls_backend_preconfigured(config.clone()).build().unwrap();
        }
        assert!(!trust.is_loaded());
        // Not a certificate: whatever the store holds, the check fails, after reading it.
        let name = ServerName::try_from("registry.example").unwrap();
        let checked =
            trust.verify_server_cert(&CertificateDer::from(vec![0u8; 8]), &[], &name, &[], UnixTime::now());
        assert!(checked.is_err());
        assert!(trust.is_loaded());
    }

    #[test]
    fn the_shared_builder_builds_clients() {
        client_builder().build().unwrap();
        client_builder().build().unwrap();
    }
}
