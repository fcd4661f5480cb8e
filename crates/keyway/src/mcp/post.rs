//! A lean HTTP/1.1 client for the Streamable HTTP POSTs that carry every message of the
//! bridge and the gateway. reqwest wraps each request in redirect, retry, cookie and
//! timeout layers and parses the URL of every answer again; in the benchmark's
//! parallel-bridges scenario that was a quarter of the bridge's CPU per call (a
//! reqwest relay cost 71 µs per call where the same relay on hyper's connection API
//! cost 45). This path keeps what a POST to one MCP endpoint needs: kept-alive
//! connections used one request at a time, TLS from the one setup keyway's reqwest
//! clients are given too (http/1.1 by ALPN), the same connect timeout and user agent,
//! and no redirects. Everything else (event streams, DELETE, metadata, OAuth) stays on
//! reqwest, and so do the POSTs when a proxy is configured in the environment, which
//! reqwest honours and this path does not.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper::{
    body::{Body as _, Incoming},
    client::conn::http1::SendRequest,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use url::Url;

use crate::auth::fetch_describe as describe;

/// Idle connections kept per server (as many as requests were in flight at once).
const MAX_IDLE: usize = 64;

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// An answer's body, as it arrives.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// An HTTP answer, from either client.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ByteStream,
}

impl Reply {
    pub fn from_reqwest(mut resp: reqwest::Response) -> Self {
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| BodyError(describe(&e))));
        Self {
            status,
            headers,
            body: Box::pin(body),
        }
    }

    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole body, refused past `limit` bytes.
    pub async fn read_capped(mut self, limit: usize) -> Result<Vec<u8>, String> {
        let too_big = || format!("answer larger than {limit} bytes");
        if self
            .header(header::CONTENT_LENGTH)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
        {
            return Err(too_big());
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk.map_err(|e| e.0)?;
            if body.len() + chunk.len() > limit {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Whether the environment configures a proxy (reqwest then takes the POSTs).
fn proxy_configured() -> bool {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// keyway's TLS setup ([`crate::http::tls_config`]) speaking http/1.1 by ALPN.
fn tls_config() -> Option<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut config = (*crate::http::tls_config()?).clone();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        })
        .clone()
}

/// Where the connections go.
struct Target {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// POSTs to one URL over kept-alive HTTP/1.1 connections.
pub struct Poster {
    target: Target,
    /// The request target (path and query) and the `Host` header.
    uri: Uri,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl std::fmt::Debug for Poster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poster")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("tls", &self.target.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Poster {
    /// A poster for `url`, or `None` where reqwest must take the POSTs (a proxy in the
    /// environment, a scheme other than http(s), credentials in the URL, no TLS setup).
    pub fn new(url: &Url) -> Option<Arc<Self>> {
        if proxy_configured() || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(a) => a.to_string(),
            url::Host::Ipv6(a) => a.to_string(),
        };
        let port = url.port_or_known_default()?;
        let tls = match url.scheme() {
            "http" => None,
            "https" => {
                let name = ServerName::try_from(host.clone()).ok()?;
                Some((tokio_rustls::TlsConnector::from(tls_config()?), name))
            }
            _ => return None,
        };
        let uri: Uri = url[url::Position::BeforePath..url::Position::AfterQuery]
            .parse()
            .ok()?;
        let host_header =
            HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
                .ok()?;
        Some(Arc::new(Self {
            target: Target { host, port, tls },
            uri,
            host: host_header,
            idle: Mutex::default(),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<Full<Bytes>>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// POST `body` with `headers` (`Host` is added). A kept-alive connection is used
    /// when one is idle; one the server closed meanwhile hands the request back unsent
    /// and the next (or a new connection) takes it. An error after the request went
    /// out is returned, not retried: the server may have acted on it.
    pub async fn post(self: &Arc<Self>, headers: HeaderMap, body: Bytes) -> Result<Reply, String> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = headers;
        req.headers_mut().insert(header::HOST, self.host.clone());
        loop {
            let taken = self.idle().pop();
            let Some(mut sender) = taken else { break };
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok(self.reply(resp, sender)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(describe(e.error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender.send_request(req).await.map_err(|e| describe(&e))?;
        Ok(self.reply(resp, sender))
    }

    fn reply(
        self: &Arc<Self>,
        resp: http::Response<Incoming>,
        sender: SendRequest<Full<Bytes>>,
    ) -> Reply {
        let (parts, body) = resp.into_parts();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: Box::pin(Pooled {
                body,
                sender: Some(sender),
                home: self.clone(),
            }),
        }
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let t = &self.target;
        let timeout = crate::http::CONNECT_TIMEOUT;
        let where_ = || format!("{}:{}", t.host, t.port);
        let tcp = tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((t.host.as_str(), t.port)),
        )
        .await
        .map_err(|_| {
            format!(
                "connecting to {} timed out after {} s",
                where_(),
                timeout.as_secs()
            )
        })?
        .map_err(|e| format!("could not connect to {}: {e}", where_()))?;
        // Small messages, one at a time: do not wait to fill a segment.
        let _ = tcp.set_nodelay(true);
        match &t.tls {
            None => handshake(tcp).await,
            Some((connector, name)) => {
                let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| format!("the TLS handshake with {} timed out", where_()))?
                    .map_err(|e| format!("the TLS handshake with {} failed: {e}", where_()))?;
                handshake(tls).await
            }
        }
    }
}

async fn handshake<T>(io: T) -> Result<SendRequest<Full<Bytes>>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| describe(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %describe(&e), "an HTTP connection ended");
        }
    });
    Ok(sender)
}

/// An answer's body; its connection goes back to the idle list once the body has been
/// read to its end (or was empty), and is closed if it is dropped halfway.
struct Pooled {
    body: Incoming,
    sender: Option<SendRequest<Full<Bytes>>>,
    home: Arc<Poster>,
}

impl Stream for Pooled {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if let Some(s) = self.sender.take() {
                        self.home.give_back(s);
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.sender = None;
                    return Poll::Ready(Some(Err(BodyError(describe(&e)))));
                }
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        return Poll::Ready(Some(Ok(data)));
                    }
                    // Trailers: nothing an MCP client reads.
                }
            }
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(s) = self.sender.take()
            && self.body.is_end_stream()
        {
            self.home.give_back(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poster_only_where_it_can_stand_in_for_reqwest() {
        if proxy_configured() {
            // This machine has a proxy set: reqwest must take every POST.
            assert!(Poster::new(&Url::parse("http://127.0.0.1:8080/mcp").unwrap()).is_none());
            return;
        }
        let p = Poster::new(&Url::parse("http://127.0.0.1:8080/mcp?x=1").unwrap()).unwrap();
        assert_eq!(p.uri, "/mcp?x=1");
        assert_eq!(p.host, "127.0.0.1:8080");
        assert!(p.target.tls.is_none());
        let p = Poster::new(&Url::parse("http://[::1]/mcp").unwrap()).unwrap();
        assert_eq!((p.host.to_str().unwrap(), p.target.port), ("[::1]", 80));
        assert_eq!(p.target.host, "::1");
        let p = Poster::new(&Url::parse("https://mcp.example.com/v1/mcp").unwrap()).unwrap();
        assert_eq!((p.target.port, p.target.tls.is_some()), (443, true));
        assert_eq!(p.host, "mcp.example.com");
        assert!(Poster::new(&Url::parse("http://user:pw@127.0.0.1/mcp").unwrap()).is_none());
        assert!(Poster::new(&Url::parse("ftp://127.0.0.1/mcp").unwrap()).is_none());
    }
}
