//! A lean HTTP/1.1 client for the Streamable HTTP POSTs that carry every message of the
//! bridge and the gateway. reqwest wraps each request in redirect, retry, cookie and
//! timeout layers and parses the URL of every answer again, and hyper (under it) drives
//! each connection from a task of its own, so every message crossed tasks four times.
//! Here the task that POSTs writes the request and reads the answer on the connection
//! itself ([`super::h1`] does the HTTP/1.1), and the body is read where it is consumed.
//! It keeps what a POST to one MCP endpoint needs: kept-alive connections used one
//! request at a time, TLS from the one setup keyway's reqwest clients are given too
//! (http/1.1 by ALPN), the same connect timeout and user agent, and no redirects.
//! Everything else (event streams, DELETE, metadata, OAuth) stays on reqwest, and so do
//! the POSTs when a proxy is configured in the environment, which reqwest honours and
//! this path does not.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, OnceLock},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::either::Either;
use url::Url;

use super::h1::{self, Framing};
use crate::auth::fetch_describe as describe;

/// Connections opened to one server at the same time; more requests at once wait
/// their turn (or an idle connection), never for another request to finish.
const MAX_CONNECTING: usize = 32;

/// Idle connections kept per server (as many as requests were in flight at once).
const MAX_IDLE: usize = 64;

/// Why reading a body failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// An answer's body, as it arrives.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// A request's headers, in the order given; a name given again replaces its value.
/// A few per request: a list, with none of a map's hashing and allocations.
#[derive(Debug, Default)]
pub struct Headers(Vec<(HeaderName, HeaderValue)>);

impl Headers {
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    pub fn put(&mut self, name: HeaderName, value: HeaderValue) {
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn as_slice(&self) -> &[(HeaderName, HeaderValue)] {
        &self.0
    }

    /// For reqwest.
    pub fn into_map(self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.0.len());
        for (name, value) in self.0 {
            map.insert(name, value);
        }
        map
    }
}

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

impl Target {
    fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Bytes read from a connection at a time (at least).
const READ_CHUNK: usize = 16 * 1024;

/// A connection's socket, plain or TLS.
type Io = Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// One kept-alive connection and what was read from it but not yet used.
struct Conn {
    io: Io,
    buf: BytesMut,
}

impl Conn {
    /// Whether an idle connection can carry a request: the server has not closed it
    /// and sent nothing unasked. Looks without waiting.
    fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.make_room();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        matches!(
            tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf),
            Poll::Pending
        )
    }

    async fn send(&mut self, request: &[u8]) -> std::io::Result<()> {
        self.io.write_all(request).await?;
        self.io.flush().await
    }

    async fn read_more(&mut self) -> std::io::Result<usize> {
        self.make_room();
        self.io.read_buf(&mut self.buf).await
    }

    /// Room to read into. The buffer is only ever copied out of, so once what it holds
    /// is used up this reuses its allocation.
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
    }
}

/// POSTs to one URL over kept-alive HTTP/1.1 connections.
pub struct Poster {
    target: Target,
    /// The request target (path and query) and the `Host` header.
    path: String,
    host: HeaderValue,
    idle: Mutex<Vec<Conn>>,
    /// Connections being opened at once, at most [`MAX_CONNECTING`].
    connecting: tokio::sync::Semaphore,
    /// When the last attempt to connect failed, and why.
    last_failure: Mutex<Option<(tokio::time::Instant, String)>>,
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
        // A parsed URL's path and query hold no spaces or control characters.
        let path = url[url::Position::BeforePath..url::Position::AfterQuery].to_owned();
        let host_header =
            HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
                .ok()?;
        Some(Arc::new(Self {
            target: Target { host, port, tls },
            path,
            host: host_header,
            idle: Mutex::default(),
            connecting: tokio::sync::Semaphore::new(MAX_CONNECTING),
            last_failure: Mutex::default(),
        }))
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn failed(&self) -> std::sync::MutexGuard<'_, Option<(tokio::time::Instant, String)>> {
        self.last_failure.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// POST `body` with `headers` (`Host` and `Content-Length` are added). A kept-alive
    /// connection is used when one is idle; one the server closed meanwhile, or that
    /// would not take the whole request, is dropped and the next (or a new connection)
    /// takes it: the server cannot act on a request it did not get whole. An error
    /// after the request went out is returned, not retried: the server may have acted
    /// on it.
    pub async fn post(self: &Arc<Self>, headers: &Headers, body: &[u8]) -> Result<Reply, String> {
        let mut request = Vec::with_capacity(512 + body.len());
        h1::request_head(
            &self.path,
            &self.host,
            headers.as_slice(),
            body.len(),
            &mut request,
        );
        request.extend_from_slice(body);
        if let Some(conn) = self.reuse(&request).await {
            return self.answer(conn).await;
        }
        // A burst of requests would open a burst of connections; a server's accept
        // queue can drop part of one, and each dropped one waits out a SYN
        // retransmission (a second). Connections are opened a few at a time, and a
        // request that waited for its turn takes one that came free meanwhile, or
        // shares the failure of an attempt that ended while it waited (a server that
        // does not answer would otherwise cost each turn its own connect timeout).
        let asked = tokio::time::Instant::now();
        let turn = self.connecting.acquire().await;
        if let Some(conn) = self.reuse(&request).await {
            return self.answer(conn).await;
        }
        if let Some((when, why)) = &*self.failed()
            && *when >= asked
        {
            return Err(why.clone());
        }
        let connected = self.connect().await;
        if let Err(why) = &connected {
            *self.failed() = Some((tokio::time::Instant::now(), why.clone()));
        }
        drop(turn);
        let mut conn = connected?;
        conn.send(&request)
            .await
            .map_err(|e| format!("sending to {} failed: {e}", self.target.name()))?;
        self.answer(conn).await
    }

    /// An idle connection that took the whole request.
    async fn reuse(&self, request: &[u8]) -> Option<Conn> {
        loop {
            let mut conn = self.idle().pop()?;
            if conn.still_open() && conn.send(request).await.is_ok() {
                return Some(conn);
            }
        }
    }

    /// Read the answer's head; its body is read as the reply is consumed.
    async fn answer(self: &Arc<Self>, mut conn: Conn) -> Result<Reply, String> {
        let head = loop {
            if let Some(head) = h1::parse_head(&mut conn.buf)? {
                break head;
            }
            let read = conn.read_more().await.map_err(|e| {
                format!("reading the answer from {} failed: {e}", self.target.name())
            })?;
            if read == 0 {
                return Err(format!(
                    "{} closed the connection before answering",
                    self.target.name()
                ));
            }
        };
        let left = match head.framing {
            Framing::Length(0) => Left::Done,
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(h1::Chunked::Size),
            Framing::Close => Left::UntilClose,
        };
        Ok(Reply {
            status: head.status,
            headers: head.headers,
            body: Box::pin(Body {
                conn: Some(conn),
                left,
                keep_alive: head.keep_alive,
                home: self.clone(),
            }),
        })
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Conn, String> {
        let t = &self.target;
        let timeout = crate::http::CONNECT_TIMEOUT;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| {
                format!(
                    "connecting to {} timed out after {} s",
                    t.name(),
                    timeout.as_secs()
                )
            })?
            .map_err(|e| format!("could not connect to {}: {e}", t.name()))?;
        // Small messages, one at a time: do not wait to fill a segment.
        let _ = tcp.set_nodelay(true);
        let io = match &t.tls {
            None => Either::Left(tcp),
            Some((connector, name)) => {
                let tls = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| format!("the TLS handshake with {} timed out", t.name()))?
                    .map_err(|e| format!("the TLS handshake with {} failed: {e}", t.name()))?;
                Either::Right(Box::new(tls))
            }
        };
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }
}

/// What is left of a body.
enum Left {
    Length(u64),
    Chunked(h1::Chunked),
    UntilClose,
    Done,
}

/// An answer's body, read from its connection as it is polled. The connection goes
/// back to the idle list once the body has been read to its end (or was empty) and the
/// server allows it; it is closed if the body is dropped halfway.
struct Body {
    conn: Option<Conn>,
    left: Left,
    keep_alive: bool,
    home: Arc<Poster>,
}

impl Body {
    /// The body is complete: the connection goes back if nothing past it was sent.
    fn finish(&mut self) {
        self.left = Left::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.buf.is_empty()
        {
            self.home.give_back(conn);
        }
    }

    fn fail(&mut self, why: String) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.conn = None;
        self.left = Left::Done;
        Poll::Ready(Some(Err(BodyError(why))))
    }
}

impl Stream for Body {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // What the bytes already read give.
            match &mut this.left {
                Left::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Left::Length(n) if !conn.buf.is_empty() => {
                    let take = usize::try_from(*n)
                        .unwrap_or(usize::MAX)
                        .min(conn.buf.len());
                    let data = h1::take(&mut conn.buf, take);
                    *n -= take as u64;
                    if *n == 0 {
                        this.left = Left::Done;
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Left::Chunked(state) => match state.step(&mut conn.buf) {
                    Ok(h1::Step::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(h1::Step::Progress) => continue,
                    Ok(h1::Step::Done) => {
                        this.left = Left::Done;
                        continue;
                    }
                    Ok(h1::Step::NeedMore) => {}
                    Err(why) => return this.fail(why),
                },
                Left::UntilClose if !conn.buf.is_empty() => {
                    let all = conn.buf.len();
                    return Poll::Ready(Some(Ok(h1::take(&mut conn.buf, all))));
                }
                Left::Length(_) | Left::UntilClose => {}
            }
            // More is needed.
            conn.make_room();
            match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    let why = format!("reading the answer failed: {e}");
                    return this.fail(why);
                }
                Poll::Ready(Ok(0)) => {
                    if matches!(this.left, Left::UntilClose) {
                        this.conn = None;
                        this.left = Left::Done;
                        return Poll::Ready(None);
                    }
                    return this.fail("the server closed the connection inside an answer".into());
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if matches!(self.left, Left::Done) {
            self.finish();
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
        assert_eq!(p.path, "/mcp?x=1");
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
