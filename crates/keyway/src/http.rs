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

/// The TLS setup every connection keyway makes shares, built once per process so the
/// platform's root certificates are loaded once: what reqwest builds with its `rustls`
/// feature (the process's crypto provider, else aws-lc-rs; the platform verifier; TLS
/// 1.2 and 1.3), without ALPN (each client sets its own). `None` when the platform
/// verifier cannot be set up.
pub(crate) fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let verifier = match rustls_platform_verifier::Verifier::new(provider.clone()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!(error = %e, "no platform verifier of keyway's own");
                    return None;
                }
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
