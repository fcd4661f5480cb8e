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
            connect::{Connected, Connection, HttpConnector},
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
        let mut tcp = HttpConnector::new();
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
    direct: HttpsConnector<HttpConnector>,
    to_proxy: HttpsConnector<HttpConnector>,
    tls: tokio_rustls::TlsConnector,
    proxies: Option<Arc<Matcher>>,
    deadline: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
}
