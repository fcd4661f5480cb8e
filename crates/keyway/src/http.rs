//! The one HTTP client keyway builds: rustls, bounded timeouts, no redirects followed
//! by default (an MCP endpoint that redirects is reported, not silently followed with
//! a token attached), and a recognizable user agent.

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use crate::auth::urls::{HostClass, UrlPolicy, ip_class};

pub mod reply;
mod wire_client;

pub(crate) use wire_client::connect_timed_out;
pub use wire_client::{ConnectCause, ConnectFailure, WireClient, WireClientError};

/// Connection timeout for every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The time limits on every request to an MCP server. Each one that is hit ends the
/// request with an error naming the server and the limit. The HTTP client enforces
/// `connect` ([`WireClient::new`]); the wire enforces the other two
/// ([`WireConfig::deadlines`](crate::mcp::wire::WireConfig::deadlines)).
///
/// ```rust
/// use std::time::Duration;
///
/// use keyway::http::{Deadlines, WireClient};
///
/// let deadlines = Deadlines {
///     connect: Duration::from_secs(3),
///     ..Deadlines::default()
/// };
/// assert_eq!(deadlines.first_byte, Duration::from_secs(120));
/// let http = WireClient::new(&deadlines)?; // gives up connecting after 3 s
/// # drop(http);
/// # Ok::<(), keyway::http::WireClientError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadlines {
    /// To open a connection (TCP and TLS), over all the addresses a name has.
    pub connect: Duration,
    /// From sending a request to the first byte of its answer's head.
    pub first_byte: Duration,
    /// Between two pieces of an answer that is still arriving (an event stream's
    /// events, a slow body). A server streaming a long tool call sends progress or
    /// keep-alive comments well within it.
    pub idle: Duration,
}

impl Default for Deadlines {
    /// 10 s to connect, 2 min to the first byte (a tool answering with plain JSON after
    /// working for a while), 5 min of silence inside an answer.
    fn default() -> Self {
        Self {
            connect: CONNECT_TIMEOUT,
            first_byte: Duration::from_secs(120),
            idle: Duration::from_secs(300),
        }
    }
}

/// TCP keep-alive on every connection: a connection a NAT dropped silently is noticed
/// within about a minute (30 s idle, then 3 probes 10 s apart), not the ~15 minutes the
/// operating system's retransmissions take. HTTP/2 connections are pinged as well.
fn keepalive(b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    b.tcp_keepalive(Duration::from_secs(30))
        .tcp_keepalive_interval(Duration::from_secs(10))
        .tcp_keepalive_retries(3)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .http2_keep_alive_timeout(Duration::from_secs(20))
}

/// The `User-Agent` keyway sends.
pub const USER_AGENT: &str = concat!("keyway/", env!("CARGO_PKG_VERSION"));

/// keyway's reqwest client, with the default [`Deadlines`]: for HTTP that is not an
/// MCP server's traffic (which goes through [`WireClient`]).
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    client_with(&Deadlines::default())
}

/// keyway's reqwest client connecting within `deadlines.connect`: HTTP/2 to https
/// servers that offer it (by ALPN), HTTP/1.1 keep-alive otherwise, both address
/// families tried side by side (Happy Eyeballs), idle pooled connections closed after
/// 90 s, TCP keep-alive, no redirects followed, and the proxies of `HTTP(S)_PROXY` /
/// `NO_PROXY`. MCP servers are reached through [`WireClient`] instead, which has the
/// same properties without reqwest's per-request layers.
pub fn client_with(deadlines: &Deadlines) -> Result<reqwest::Client, reqwest::Error> {
    keepalive(builder())
        .connect_timeout(deadlines.connect)
        .redirect(reqwest::redirect::Policy::none())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

/// The client for every request an authorization flow makes on a server's behalf
/// (metadata, registration, token, device, revocation, the redirects `--browser
/// follow` walks): like [`client`], plus a resolver that refuses addresses
/// `policy` does not allow. A public server's metadata can name any host; this makes
/// sure the name does not lead to a loopback, private or link-local address (DNS
/// rebinding included: the addresses checked are the ones connected to). Literal
/// addresses never reach a resolver; [`UrlPolicy::check_url`] judges those. One
/// client per server class, made once per process.
///
/// Through a proxy (`HTTPS_PROXY`), the proxy resolves the name: the literal check
/// still applies, the address check is the proxy's.
pub fn guarded(policy: &UrlPolicy) -> Result<reqwest::Client, GuardedClientError> {
    static CLIENTS: [OnceLock<Result<reqwest::Client, GuardedClientError>>; 4] =
        [const { OnceLock::new() }; 4];
    let slot = match policy.server {
        HostClass::Loopback => 0,
        HostClass::Private => 1,
        HostClass::LinkLocal => 2,
        HostClass::Public => 3,
    };
    let server = policy.server;
    CLIENTS[slot]
        .get_or_init(|| {
            keepalive(builder())
                .connect_timeout(CONNECT_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(90))
                .dns_resolver(GuardedResolver::new(server))
                .build()
                .map_err(|e| GuardedClientError(e.to_string()))
        })
        .clone()
}

/// The hosts of the proxies set in the environment (`HTTP_PROXY`, `HTTPS_PROXY`,
/// `ALL_PROXY`, in either case): reqwest resolves them through the same resolver, and
/// a proxy the user configured may well be on their network.
fn proxy_hosts() -> Vec<String> {
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        .iter()
        .flat_map(|v| [v.to_string(), v.to_ascii_lowercase()])
        .filter_map(|v| std::env::var(v).ok())
        .filter_map(|raw| {
            let raw = raw.trim();
            let with_scheme = if raw.contains("://") {
                raw.to_owned()
            } else {
                format!("http://{raw}")
            };
            url::Url::parse(&with_scheme)
                .ok()?
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase())
        })
        .collect()
}

/// The guarded client could not be built (the TLS setup failed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("building the HTTP client failed: {0}")]
pub struct GuardedClientError(String);

/// Resolves names with the system resolver and keeps only the addresses a server of
/// class `server` may reach. The proxies configured in the environment are resolved
/// without a check (the user chose them).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    server: HostClass,
    exempt: Arc<[String]>,
}

/// A name that resolved only to addresses the policy refuses.
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} resolves only to {classes} addresses, which keyway does not reach for a server that is not there itself"
)]
pub struct RefusedAddresses {
    /// The host name that was resolved.
    pub name: String,
    /// The classes of the addresses refused, joined by "and" (`loopback and private`).
    pub classes: String,
}

impl GuardedResolver {
    /// A resolver for a server of class `server`, exempting the environment's proxies.
    pub fn new(server: HostClass) -> Self {
        Self {
            server,
            exempt: proxy_hosts().into(),
        }
    }

    /// The addresses of `addrs` that may be used; an error naming what was refused
    /// when none may.
    pub fn keep(
        &self,
        name: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, RefusedAddresses> {
        let policy = UrlPolicy {
            server: self.server,
            allow_http: false,
        };
        if self
            .exempt
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name.trim_end_matches('.')))
        {
            return Ok(addrs.into_iter().collect());
        }
        let mut refused = std::collections::BTreeSet::new();
        let kept: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| {
                let class = ip_class(a.ip());
                let ok = policy.allows(class);
                if !ok {
                    refused.insert(class);
                }
                ok
            })
            .collect();
        if kept.is_empty() && !refused.is_empty() {
            let classes: Vec<&str> = refused.iter().map(|c| c.as_str()).collect();
            return Err(RefusedAddresses {
                name: name.to_owned(),
                classes: classes.join(" and "),
            });
        }
        if !refused.is_empty() {
            tracing::warn!(
                name,
                "some addresses of this name are not public; using only the public ones"
            );
        }
        Ok(kept)
    }
}

/// The refusal of [`GuardedResolver`] behind a failed request, if that is why it failed.
pub fn refused_addresses(e: &reqwest::Error) -> Option<&RefusedAddresses> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<RefusedAddresses>() {
            return Some(r);
        }
        source = s.source();
    }
    None
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept = guard.keep(&host, found)?;
            let addrs: reqwest::dns::Addrs = Box::new(kept.into_iter());
            Ok(addrs)
        })
    }
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

    fn at(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 443)
    }

    /// What a name resolves to is judged like a literal address: a public server's
    /// metadata cannot reach the machine or its network by naming a host whose DNS
    /// answers with such addresses (rebinding included). Mixed answers keep the
    /// public addresses only.
    #[test]
    fn resolved_addresses_obey_the_server_class() {
        let public = GuardedResolver::new(HostClass::Public);
        for inside in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "100.64.1.1",
            "::1",
            "fd00::1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            let e = public.keep("evil.example", [at(inside)]).unwrap_err();
            assert!(e.to_string().contains("evil.example"), "{e}");
        }
        let mixed = public
            .keep("split.example", [at("10.0.0.1"), at("93.184.216.34")])
            .unwrap();
        assert_eq!(mixed, [at("93.184.216.34")]);
        // A server in a private network may use its neighbours, not the machine.
        let private = GuardedResolver::new(HostClass::Private);
        assert!(private.keep("as.corp", [at("10.0.0.2")]).is_ok());
        assert!(private.keep("as.corp", [at("127.0.0.1")]).is_err());
        assert!(private.keep("as.corp", [at("169.254.169.254")]).is_err());
        // A loopback server (the testbed, a local proxy) reaches loopback.
        let local = GuardedResolver::new(HostClass::Loopback);
        assert!(local.keep("localhost", [at("127.0.0.1")]).is_ok());
        assert!(local.keep("localhost", [at("169.254.169.254")]).is_err());
    }

    /// The proxies the user set are theirs to choose: resolved without the check (a
    /// corporate proxy on the private network keeps working for public servers).
    #[test]
    fn configured_proxies_are_exempt() {
        let public = GuardedResolver {
            server: HostClass::Public,
            exempt: vec!["proxy.corp".to_owned()].into(),
        };
        assert!(public.keep("proxy.corp", [at("10.0.0.3")]).is_ok());
        assert!(public.keep("PROXY.corp.", [at("10.0.0.3")]).is_ok());
        assert!(public.keep("other.corp", [at("10.0.0.3")]).is_err());
    }

    /// The guarded client refuses a name that resolves to loopback for a public
    /// server, before any connection: a real request, through the real resolver.
    #[tokio::test]
    async fn the_guarded_client_does_not_connect_where_its_server_may_not_reach() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let public = UrlPolicy {
            server: HostClass::Public,
            allow_http: true,
        };
        let err = guarded(&public)
            .unwrap()
            .get(format!("http://localhost:{port}/x"))
            .send()
            .await
            .unwrap_err();
        assert!(
            reply::describe(&err).contains("resolves only to loopback"),
            "{err:?}"
        );
        // Nobody connected.
        let accepted = tokio::time::timeout(Duration::from_millis(0), listener.accept()).await;
        assert!(accepted.is_err(), "a connection reached the listener");
        // The same name for a loopback server goes through.
        let local = UrlPolicy {
            server: HostClass::Loopback,
            allow_http: false,
        };
        let app = axum::Router::new().route(
            "/x",
            axum::routing::get(|| async { axum::http::StatusCode::NO_CONTENT }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sent = guarded(&local)
            .unwrap()
            .get(format!("http://localhost:{port}/x"))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 204);
    }

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
