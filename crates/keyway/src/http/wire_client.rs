//! The HTTP client under keyway's MCP wire ([`crate::mcp::wire`]): hyper-util's pooled
//! client with hyper-rustls, and nothing between it and the wire.
//!
//! The authorization code keeps reqwest ([`super::client`]): it wants redirects,
//! cookies, forms and JSON. The wire wants none of that, and reqwest's layers for them
//! cost a bridge more CPU per message than the rest of its work together: its cookie
//! and redirect layers each parse the request URL again (callgrind, 2026-12-05: about
//! 17k of the 100k instructions a bridged message took went to parsing one URL three
//! times). reqwest 0.13 offers no way to build a client without those layers, so the
//! wire uses the hyper-util client reqwest itself is built on, with the same parts:
//! the same TLS setup ([`super::tls_config`]), Happy Eyeballs from hyper-util's
//! connector, HTTP/2 by ALPN, pooled connections closed when idle, TCP and HTTP/2
//! keep-alive, and `HTTP(S)_PROXY` / `NO_PROXY` read by hyper-util's matcher (the one
//! reqwest uses), with a CONNECT tunnel (hyper's client and upgrade) for https servers.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, uri::Scheme};
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::{
    client::{
        legacy::{
            self,
            connect::{
                Connected, Connection, HttpConnector,
                dns::{GaiAddrs, GaiFuture, GaiResolver, Name},
            },
        },
        proxy::matcher::Matcher,
    },
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tower::Service;

use super::Deadlines;

/// How long a pooled connection may sit unused before it is closed.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// The HTTP client of keyway's MCP wire, made once and shared (a clone shares its
/// connection pool): HTTP/2 to https servers that offer it (by ALPN; concurrent
/// requests share one connection), HTTP/1.1 keep-alive otherwise, both address
/// families tried side by side (Happy Eyeballs), idle pooled connections closed after
/// 90 s, TCP keep-alive (a connection a NAT dropped is noticed within about a minute)
/// and HTTP/2 pings, and the proxies of `HTTP(S)_PROXY` / `NO_PROXY`. A connection
/// (DNS, TCP, a proxy's tunnel and TLS together) is given `deadlines.connect`.
///
/// ```rust
/// use keyway::http::{Deadlines, WireClient};
///
/// let http = WireClient::new(&Deadlines::default())?;
/// # drop(http);
/// # Ok::<(), keyway::http::WireClientError>(())
/// ```
#[derive(Clone)]
pub struct WireClient {
    client: legacy::Client<Connector, Full<Bytes>>,
    proxies: Option<Arc<Matcher>>,
}

impl std::fmt::Debug for WireClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireClient")
            .field("proxies", &self.proxies.is_some())
            .finish_non_exhaustive()
    }
}

/// The wire's HTTP client could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "cannot set up TLS: the crypto provider offers no safe protocol version (is a FIPS-only provider installed?)"
)]
pub struct WireClientError;

/// Why a connection could not be opened, beyond what the parts below say themselves.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    /// The connect deadline passed.
    #[error("no connection within {} s", .0.as_secs())]
    TimedOut(Duration),
    /// The proxy refused to open a tunnel.
    #[error("the proxy {proxy} refused the tunnel: {why}")]
    ProxyRefused {
        /// The proxy (scheme, host and port; never its credentials).
        proxy: String,
        /// What it said.
        why: String,
    },
    /// The server's name is not one TLS can check.
    #[error("{0} is not a name a certificate can be checked against")]
    BadServerName(String),
    /// The URL names no host.
    #[error("the URL names no host")]
    NoHost,
    /// The host name has no address (or the resolver could not be asked).
    #[error("{host} has no address ({cause})")]
    NoSuchHost {
        /// The name looked up.
        host: String,
        /// What the resolver said.
        #[source]
        cause: std::io::Error,
    },
}

/// Why a server could not be reached, in kinds a person acts on differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectCause {
    /// The host name has no address.
    NoSuchHost,
    /// Nothing listens on the port.
    Refused,
    /// The port answered, but not in TLS (an https URL for a plain-http port).
    NotTls,
    /// The server's certificate is not trusted (or not for this name).
    Certificate,
    /// The TLS handshake failed otherwise.
    Tls,
    /// No route to the host, or the network is down.
    Network,
    /// The connect deadline passed.
    TimedOut,
    /// A proxy refused the tunnel.
    Proxy,
    /// Anything else.
    Other,
}

impl ConnectCause {
    /// The cause of a failed connection (`e` and its sources).
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        use std::io::ErrorKind as K;
        let mut source = Some(e);
        while let Some(s) = source {
            if let Some(f) = s.downcast_ref::<ConnectFailure>() {
                return match f {
                    ConnectFailure::NoSuchHost { .. } => Self::NoSuchHost,
                    ConnectFailure::TimedOut(_) => Self::TimedOut,
                    ConnectFailure::ProxyRefused { .. } => Self::Proxy,
                    ConnectFailure::BadServerName(_) => Self::Certificate,
                    ConnectFailure::NoHost => Self::Other,
                };
            }
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    K::ConnectionRefused => return Self::Refused,
                    K::TimedOut => return Self::TimedOut,
                    K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => {
                        return Self::Network;
                    }
                    _ => {}
                }
                // What an io::Error wraps (rustls' error, for one) is not its source():
                // that skips to the wrapped error's own source.
                if let Some(inner) = io.get_ref() {
                    source = Some(inner as &(dyn std::error::Error + 'static));
                    continue;
                }
            }
            if let Some(tls) = s.downcast_ref::<rustls::Error>() {
                return Self::of_tls(tls);
            }
            source = s.source();
        }
        Self::Other
    }

    fn of_tls(e: &rustls::Error) -> Self {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_) | E::InappropriateMessage { .. } => Self::NotTls,
            E::InvalidCertificate(_) | E::General(_) => Self::Certificate,
            _ => Self::Tls,
        }
    }

    /// What the person can do about it, for a server at `url`.
    pub fn next_step(self, url: &str) -> String {
        let parsed = url::Url::parse(url).ok();
        let host = parsed
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| url.to_owned());
        let port = parsed
            .as_ref()
            .and_then(url::Url::port_or_known_default)
            .map(|p| p.to_string())
            .unwrap_or_default();
        match self {
            Self::NoSuchHost => format!(
                "check the host name in the URL ({host}); if it is right, check this machine's DNS and network"
            ),
            Self::Refused => format!(
                "nothing accepts connections on {host} port {port}: check the port in the URL, and that the server is running"
            ),
            Self::NotTls => match parsed.filter(|u| u.scheme() == "https") {
                Some(mut u) => {
                    let _ = u.set_scheme("http");
                    format!(
                        "port {port} does not speak TLS; if the server is plain http, use {u}"
                    )
                }
                None => format!("port {port} does not speak TLS: check the URL"),
            },
            Self::Certificate => format!(
                "the certificate of {host} is not trusted here: check the URL; if the server uses a private CA, add it to this machine's trusted certificates"
            ),
            Self::Tls => {
                "the TLS handshake failed: the server may need a newer TLS version, or something between rewrites the connection".into()
            }
            Self::Network => "check this machine's network connection (and VPN)".into(),
            Self::TimedOut => {
                "check the URL and the network (a firewall may drop the connection), or raise --connect-timeout".into()
            }
            Self::Proxy => "check HTTPS_PROXY / HTTP_PROXY / NO_PROXY".into(),
            Self::Other => {
                "check the URL, and that the server is up and reachable from here".into()
            }
        }
    }

    /// The cause of a failed connection and its reason in a few words: keyway's own
    /// where it has them ("connection refused", not "tcp connect error: Connection
    /// refused (os error 111)"), else the error and its sources on one line.
    pub(crate) fn of_failure(e: &(dyn std::error::Error + 'static)) -> (Self, String) {
        let cause = Self::of(e);
        let reason = match cause {
            Self::Refused => "connection refused".to_owned(),
            Self::NotTls => "the server did not answer in TLS".to_owned(),
            Self::Network => "no route to the host (network unreachable)".to_owned(),
            _ => {
                let mut source = Some(e);
                let mut own = None;
                while let Some(s) = source {
                    if let Some(f) = s.downcast_ref::<ConnectFailure>() {
                        own = Some(super::reply::describe(f));
                        break;
                    }
                    source = s.source();
                }
                own.unwrap_or_else(|| super::reply::describe(e))
            }
        };
        (cause, reason)
    }
}

/// A failed connection's cause, for [`crate::mcp::wire`]'s error.
pub(crate) fn connect_timed_out(e: &(dyn std::error::Error + 'static)) -> Option<Duration> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(ConnectFailure::TimedOut(d)) = s.downcast_ref::<ConnectFailure>() {
            return Some(*d);
        }
        source = s.source();
    }
    None
}

impl WireClient {
    /// The client, its connections opened within `deadlines.connect` (the other limits
    /// are the wire's).
    pub fn new(deadlines: &Deadlines) -> Result<Self, WireClientError> {
        let base = super::tls_config().ok_or(WireClientError)?;
        let with_alpn = |alpn: &[&[u8]]| {
            let mut tls = (*base).clone();
            tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(tls)
        };
        let mut tcp = HttpConnector::new_with_resolver(Resolver::default());
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_keepalive(Some(Duration::from_secs(30)));
        tcp.set_keepalive_interval(Some(Duration::from_secs(10)));
        tcp.set_keepalive_retries(Some(3));
        // Happy Eyeballs: the other address family after 300 ms (hyper-util's default,
        // set here so it does not depend on one).
        tcp.set_happy_eyeballs_timeout(Some(Duration::from_millis(300)));
        // With no proxy variable set the matcher would intercept nothing: not asked.
        let proxies = proxy_configured().then(|| Arc::new(Matcher::from_env()));
        let connector = Connector {
            // To servers: h2 or http/1.1 by ALPN.
            direct: HttpsConnector::from((tcp.clone(), with_alpn(&[b"h2", b"http/1.1"]))),
            // To a proxy (plain, or TLS to an https:// proxy): HTTP/1.1 only, CONNECT
            // and absolute-form requests are HTTP/1.1 things.
            to_proxy: HttpsConnector::from((tcp, with_alpn(&[b"http/1.1"]))),
            tls: tokio_rustls::TlsConnector::from(with_alpn(&[b"h2", b"http/1.1"])),
            proxies: proxies.clone(),
            deadline: deadlines.connect,
        };
        let client = legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_timeout(Duration::from_secs(20))
            .build(connector);
        Ok(Self { client, proxies })
    }

    /// Send a request; the future resolves with the answer's head.
    pub(crate) fn request(&self, req: Request<Full<Bytes>>) -> legacy::ResponseFuture {
        self.client.request(req)
    }

    /// `Proxy-Authorization` for a plain-http server reached through a proxy with
    /// credentials (https servers are tunnelled; the tunnel carries it).
    pub(crate) fn proxy_authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        if uri.scheme() != Some(&Scheme::HTTP) {
            return None;
        }
        let mut auth = self.proxies.as_ref()?.intercept(uri)?.basic_auth()?.clone();
        auth.set_sensitive(true);
        Some(auth)
    }
}

/// Whether any proxy variable is set (hyper-util's matcher reads the same ones).
fn proxy_configured() -> bool {
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        .iter()
        .flat_map(|v| [v.to_string(), v.to_ascii_lowercase()])
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Opens the wire's connections: straight to the server, to a proxy that is sent
/// absolute-form requests (plain http), or through a proxy's CONNECT tunnel (https).
#[derive(Clone)]
struct Connector {
    direct: HttpsConnector<HttpConnector<Resolver>>,
    to_proxy: HttpsConnector<HttpConnector<Resolver>>,
    tls: tokio_rustls::TlsConnector,
    proxies: Option<Arc<Matcher>>,
    deadline: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// hyper-util's resolver (`getaddrinfo` on a blocking thread), with its failure typed:
/// hyper-util's own DNS error type is private, so "no such host" could not be told
/// from a refused connection otherwise.
#[derive(Clone)]
struct Resolver(GaiResolver);

impl Default for Resolver {
    fn default() -> Self {
        Self(GaiResolver::new())
    }
}

impl Service<Name> for Resolver {
    type Response = GaiAddrs;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<GaiAddrs, ConnectFailure>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectFailure>> {
        self.0
            .poll_ready(cx)
            .map_err(|cause| ConnectFailure::NoSuchHost {
                host: String::new(),
                cause,
            })
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let lookup: GaiFuture = self.0.call(name);
        Box::pin(async move {
            lookup
                .await
                .map_err(|cause| ConnectFailure::NoSuchHost { host, cause })
        })
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both HTTP connectors are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        let deadline = self.deadline;
        Box::pin(async move {
            match tokio::time::timeout(deadline, this.open(dst)).await {
                Ok(conn) => conn,
                Err(_) => Err(ConnectFailure::TimedOut(deadline).into()),
            }
        })
    }
}

impl Connector {
    async fn open(mut self, dst: Uri) -> Result<Conn, BoxError> {
        let proxy = self.proxies.as_ref().and_then(|m| m.intercept(&dst));
        let Some(proxy) = proxy else {
            let io = self.direct.call(dst).await?;
            return Ok(Conn::new(io, false));
        };
        if dst.scheme() != Some(&Scheme::HTTPS) {
            // Plain http: requests go to the proxy in absolute form.
            let io = self.to_proxy.call(proxy.uri().clone()).await?;
            return Ok(Conn::new(io, true));
        }
        let host = dst.host().ok_or(ConnectFailure::NoHost)?;
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|_| ConnectFailure::BadServerName(host.to_owned()))?;
        let to_proxy = self.to_proxy.call(proxy.uri().clone()).await?;
        let tunnel = connect_tunnel(to_proxy, &dst, proxy.basic_auth(), proxy.uri()).await?;
        let tls = self.tls.connect(name, TokioIo::new(tunnel)).await?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        Ok(Conn::Tunnel {
            io: TokioIo::new(tls),
            h2,
        })
    }
}

/// Ask the proxy on `io` for a tunnel to `dst` (HTTP/1.1 `CONNECT`, hyper's client
/// and its upgrade). hyper-util has a `Tunnel` connector too, but its error type is
/// private: a refusal could not be told from a broken connection, nor its status read.
async fn connect_tunnel(
    io: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
    dst: &Uri,
    auth: Option<&HeaderValue>,
    proxy: &Uri,
) -> Result<hyper::upgrade::Upgraded, BoxError> {
    let host = dst.host().ok_or(ConnectFailure::NoHost)?;
    let port = dst.port_u16().unwrap_or(443);
    let authority = format!("{host}:{port}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // Drives the proxy connection until it is handed over (or refused).
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "the connection to the proxy ended");
        }
    });
    let mut req = Request::new(http_body_util::Empty::<Bytes>::new());
    *req.method_mut() = http::Method::CONNECT;
    *req.uri_mut() = authority.parse()?;
    req.headers_mut()
        .insert(http::header::HOST, HeaderValue::from_str(&authority)?);
    req.headers_mut().insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(super::USER_AGENT),
    );
    if let Some(auth) = auth {
        let mut auth = auth.clone();
        auth.set_sensitive(true);
        req.headers_mut()
            .insert(http::header::PROXY_AUTHORIZATION, auth);
    }
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    if !status.is_success() {
        let why = match status.as_u16() {
            407 if auth.is_some() => "it did not accept the credentials in the proxy URL (407)".to_owned(),
            407 => "it wants credentials (407): put them in the proxy URL, http://user:password@host:port".to_owned(),
            403 => format!("it does not let keyway reach {authority} (403)"),
            s => format!("it answered CONNECT with HTTP {s}"),
        };
        return Err(ConnectFailure::ProxyRefused {
            proxy: shown_proxy(proxy),
            why,
        }
        .into());
    }
    Ok(hyper::upgrade::on(resp).await?)
}

/// A proxy's URI without its credentials, for messages.
fn shown_proxy(uri: &Uri) -> String {
    let authority = uri
        .authority()
        .map(|a| a.as_str().rsplit('@').next().unwrap_or_default().to_owned())
        .unwrap_or_default();
    format!("{}://{authority}", uri.scheme_str().unwrap_or("http"))
}

/// One connection the client reads and writes.
enum Conn {
    /// To the server (TLS or not), or to a proxy that is sent absolute-form requests.
    Direct {
        io: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>,
        proxied: bool,
    },
    /// TLS to the server inside a proxy's tunnel.
    Tunnel {
        io: TokioIo<tokio_rustls::client::TlsStream<TokioIo<hyper::upgrade::Upgraded>>>,
        h2: bool,
    },
}

impl Conn {
    fn new(io: MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>, proxied: bool) -> Self {
        Self::Direct { io, proxied }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Self::Direct { io, proxied } => io.connected().proxy(*proxied),
            Self::Tunnel { h2: true, .. } => Connected::new().negotiated_h2(),
            Self::Tunnel { h2: false, .. } => Connected::new(),
        }
    }
}

/// Both kinds are `Unpin`: each call goes to the one inside.
macro_rules! each {
    ($self:ident, $io:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Direct { io: $io, .. } => $e,
            Conn::Tunnel { io: $io, .. } => $e,
        }
    };
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        each!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each!(self, io => Pin::new(io).poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Direct { io, .. } => io.is_write_vectored(),
            Conn::Tunnel { io, .. } => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write_vectored(cx, bufs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_is_shown_without_its_credentials() {
        let uri: Uri = "http://alice:s3cret@proxy.example:3128".parse().unwrap();
        assert_eq!(shown_proxy(&uri), "http://proxy.example:3128");
        let uri: Uri = "http://proxy.example:3128".parse().unwrap();
        assert_eq!(shown_proxy(&uri), "http://proxy.example:3128");
    }

    /// The kinds a person acts on differently are told apart through the wrappers
    /// they arrive in. Made by hand because the real failures need a DNS server that
    /// says "no such name" (CI has none to rely on); the refused and not-TLS cases
    /// are run for real by the CLI tests (`tests/cli/errors.rs`).
    #[test]
    fn causes_are_found_through_their_wrappers() {
        let dns: BoxError = Box::new(ConnectFailure::NoSuchHost {
            host: "nonexistent.invalid".into(),
            cause: std::io::Error::other("failed to lookup address information"),
        });
        let wrapped = std::io::Error::other(dns);
        assert_eq!(ConnectCause::of(&wrapped), ConnectCause::NoSuchHost);
        let (cause, why) = ConnectCause::of_failure(&wrapped);
        assert_eq!(cause, ConnectCause::NoSuchHost);
        assert!(
            why.starts_with("nonexistent.invalid has no address"),
            "{why}"
        );

        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(
            ConnectCause::of(&std::io::Error::other(tls)),
            ConnectCause::NotTls
        );

        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(ConnectCause::of(&refused), ConnectCause::Refused);
        assert_eq!(
            ConnectCause::of(&std::io::Error::other("something else")),
            ConnectCause::Other
        );

        assert!(
            ConnectCause::NotTls
                .next_step("https://example.com:8080/mcp")
                .ends_with("use http://example.com:8080/mcp")
        );
        assert!(
            ConnectCause::Refused
                .next_step("http://127.0.0.1:9/mcp")
                .contains("127.0.0.1 port 9")
        );
    }
}
