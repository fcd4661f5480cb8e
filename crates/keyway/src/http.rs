//! The one HTTP client keyway builds: rustls, bounded timeouts, no redirects followed
//! by default (an MCP endpoint that redirects is reported, not silently followed with
//! a token attached), and a recognizable user agent.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

/// Connection timeout for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `User-Agent` keyway sends.
pub const USER_AGENT: &str = concat!("keyway/", env!("CARGO_PKG_VERSION"));

/// Build keyway's HTTP client for MCP traffic.
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// A reqwest builder with keyway's user agent and its one TLS setup ([`tls_config`],
/// offering h2 and http/1.1).
pub(crate) fn builder() -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder().user_agent(USER_AGENT);
    match tls_config() {
        Some(base) => {
            let mut tls = (*base).clone();
            tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            b.tls_backend_preconfigured(tls)
        }
        // reqwest then builds the same setup itself (and reports what failed).
        None => b,
    }
}

/// The TLS setup every connection keyway makes shares, built once per process: what
/// reqwest builds with its `rustls` feature (the process's crypto provider, else
/// aws-lc-rs; the platform verifier; TLS 1.2 and 1.3), without ALPN (each client sets
/// its own). The platform's root certificates are loaded by the first certificate
/// check ([`LazyVerifier`]), not here. `None` when the provider offers no safe
/// protocol version.
pub(crate) fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let verifier = LazyVerifier {
                provider: provider.clone(),
                platform: OnceLock::new(),
            };
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                // The platform verifier checks chains and names in full; `dangerous`
                // is only the API's way to install a verifier of one's choosing.
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Some(Arc::new(config))
        })
        .clone()
}

/// The platform verifier, made when the first server certificate is to be checked.
/// Making it reads and parses every root certificate of the platform (about 6 ms and
/// 19M instructions here), which every start of a bridge or gateway paid before its
/// first message even when it only ever spoke plain HTTP to a local server.
/// Signatures in the handshake are checked with the provider's algorithms, as the
/// platform verifier itself does.
#[derive(Debug)]
struct LazyVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    platform: OnceLock<Result<rustls_platform_verifier::Verifier, String>>,
}

impl rustls::client::danger::ServerCertVerifier for LazyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let platform = self.platform.get_or_init(|| {
            rustls_platform_verifier::Verifier::new(self.provider.clone()).map_err(|e| {
                tracing::warn!(error = %e, "the platform's root certificates could not be loaded");
                e.to_string()
            })
        });
        match platform {
            Ok(v) => {
                v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Err(e) => Err(rustls::Error::General(format!(
                "no server certificate can be checked: the platform's root certificates could not be loaded ({e}); install the CA certificates package (Debian: ca-certificates)"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
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
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::client::danger::ServerCertVerifier;

    use super::*;

    #[test]
    fn root_certificates_wait_for_the_first_certificate_check() {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let lazy = LazyVerifier {
            provider: provider.clone(),
            platform: OnceLock::new(),
        };
        assert!(!lazy.supported_verify_schemes().is_empty());
        assert!(lazy.platform.get().is_none(), "nothing loaded yet");
        // A certificate that is not one: refused, and the platform verifier is made.
        let name = rustls::pki_types::ServerName::try_from("example.com").unwrap();
        let not_a_cert = rustls::pki_types::CertificateDer::from(vec![0u8; 8]);
        let refused = lazy.verify_server_cert(
            &not_a_cert,
            &[],
            &name,
            &[],
            rustls::pki_types::UnixTime::now(),
        );
        assert!(refused.is_err());
        assert!(lazy.platform.get().is_some(), "loaded on the first check");
        // The schemes are the platform verifier's own.
        let platform = rustls_platform_verifier::Verifier::new(provider).unwrap();
        assert_eq!(
            lazy.supported_verify_schemes(),
            platform.supported_verify_schemes()
        );
    }
}
