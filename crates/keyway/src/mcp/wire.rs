//! keyway's one MCP client transport: every command, the bridge and the gateway talk
//! to servers through a [`Wire`]. It carries raw JSON-RPC text, so a field rmcp's types
//! do not know still reaches the other side; [`WireTransport`] puts rmcp's typed client
//! on top where keyway itself speaks (handshakes, tool lists).
//!
//! Streamable HTTP (a POST per message, JSON or event-stream answers, the standalone
//! GET stream, session ids, streams resumed with `Last-Event-ID`, DELETE on close) and
//! the legacy HTTP+SSE transport (a GET event stream that names the POST endpoint).
//! The HTTP itself is hyper-util's pooled client ([`crate::http::WireClient`]): HTTP/2
//! by ALPN, keep-alive, Happy Eyeballs, pooled connections closed when idle, proxies
//! from the environment.
//! The event-stream parser is keyway's own ([`super::sse`]): small, tested, and it
//! bounds what a hostile server can make it hold.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use url::Url;

pub use super::message::Message;
use super::{
    TokenSource,
    sse::{Sse, SseError, SseStream},
};
pub use crate::http::Deadlines;
use crate::{
    Secret,
    http::reply::{BodyError, Reply, describe, snippet},
    http::{ConnectCause, WireClient},
};

/// Largest single JSON answer or event keyway reads.
const MAX_MESSAGE: usize = super::sse::MAX_EVENT;

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// The DPoP proof header (RFC 9449 §4.1) and the header a nonce comes in (§9).
const DPOP: HeaderName = HeaderName::from_static("dpop");
const DPOP_NONCE: HeaderName = HeaderName::from_static("dpop-nonce");

/// What a DPoP proof was made for: the URL it names, and the nonce it carried.
struct Proved {
    url: Url,
    nonce: Option<String>,
}

/// Why a server refused a DPoP proof, read from a 401's `DPoP` challenge.
#[derive(Debug, PartialEq, Eq)]
enum DpopRefusal {
    /// `use_dpop_nonce`: the proof lacks the server's (latest) nonce.
    Nonce,
    /// `invalid_dpop_proof`, with the server's description.
    Proof(Option<String>),
}

/// The DPoP refusal a 401 answer carries, if that is what it is.
fn dpop_refusal(resp: &Reply) -> Option<DpopRefusal> {
    if resp.status != StatusCode::UNAUTHORIZED {
        return None;
    }
    let values = resp
        .headers
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let c = crate::auth::challenge::dpop(values)?;
    match c.error.as_deref() {
        Some("use_dpop_nonce") => Some(DpopRefusal::Nonce),
        Some("invalid_dpop_proof") => Some(DpopRefusal::Proof(
            c.error_description
                .as_deref()
                .map(crate::auth::callback::printable),
        )),
        _ => None,
    }
}

/// Headers every request may carry besides its own: session id, protocol version,
/// `Authorization`, `User-Agent`, `Proxy-Authorization`. Room for them is made up front
/// (a map that grows rehashes what it holds).
const EXTRA_HEADERS: usize = 5;

/// How long closing a session may take before keyway gives up on the `DELETE`.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the legacy SSE stream may take to name its POST endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(10);

/// Times in a row a response stream is resumed without bringing a new event.
const MAX_RESUMES: u32 = 3;

/// The longest a server's `retry` makes keyway wait before resuming a stream.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// Which time limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Opening the connection.
    Connect(Duration),
    /// Waiting for the answer's head.
    FirstByte(Duration),
    /// Waiting for the next piece of an answer.
    Idle(Duration),
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Connect(d) => write!(f, "could not connect within {} s", d.as_secs()),
            Self::FirstByte(d) => write!(f, "sent no answer within {} s", d.as_secs()),
            Self::Idle(d) => write!(
                f,
                "went silent for {} s in the middle of an answer",
                d.as_secs()
            ),
        }
    }
}

/// Why a message could not be delivered. Decisions (authorize, reconnect, retry, fall
/// back to legacy SSE) match on these variants, never on message text.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// 401: the server needs (new) authorization.
    #[error("the server needs authorization")]
    Unauthorized {
        /// The `WWW-Authenticate` challenge, if any.
        challenge: Option<String>,
    },
    /// 403, with the challenge (step-up when it says `insufficient_scope`).
    #[error("the server refused: 403 {challenge}")]
    Forbidden {
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// 404 for a session id the server no longer knows.
    #[error("the session expired (404)")]
    SessionExpired,
    /// No connection (DNS, refused, TLS, a proxy's refusal): the request was not sent.
    #[error("could not reach {server}: {reason}")]
    Connect {
        /// Where keyway tried to go (scheme, host, port).
        server: String,
        /// What went wrong, with the certificate problem for TLS failures.
        reason: String,
        /// Its kind, which decides the next step ([`ConnectCause::next_step`]).
        cause: ConnectCause,
    },
    /// A deadline was hit ([`Deadlines`]).
    #[error("{server} {limit} (raise it with --{} if the server is just slow)", limit_flag(.limit))]
    Deadline {
        /// The server.
        server: String,
        /// Which limit, and how long it is.
        limit: Limit,
    },
    /// The connection broke after the request went out (reset, closed early, an
    /// HTTP/2 GOAWAY or stream reset): the server may have acted on it.
    #[error("the connection to {server} broke: {reason}")]
    Dropped {
        /// The server.
        server: String,
        /// What broke.
        reason: String,
    },
    /// An HTTP status MCP does not expect.
    #[error("the server answered HTTP {status}: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body, printable.
        body: String,
    },
    /// An answer that is not what MCP says (not JSON, too large).
    #[error("{server} sent an answer keyway cannot use: {reason}")]
    Protocol {
        /// The server.
        server: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The credentials for the request could not be had.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The connection was closed (by [`Wire::close`], or the session's stream ended).
    #[error("the connection is closed")]
    Closed,
}

fn limit_flag(limit: &Limit) -> &'static str {
    match limit {
        Limit::Connect(_) => "connect-timeout",
        Limit::FirstByte(_) => "answer-timeout",
        Limit::Idle(_) => "idle-timeout",
    }
}

impl WireError {
    /// A connection problem a reconnect may fix.
    pub fn is_dropped(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Deadline { .. }
                | Self::Dropped { .. }
                | Self::SessionExpired
                | Self::Closed
        )
    }

    /// Whether `method` may be sent again after this failure: always when the server
    /// cannot have acted on it (nothing was sent, or the session it went to is gone);
    /// after a broken connection or a deadline only when repeating it changes nothing
    /// (lists, reads, pings) or it is a notification.
    pub fn may_retry(&self, method: &str, is_request: bool) -> bool {
        match self {
            Self::Connect { .. }
            | Self::Deadline {
                limit: Limit::Connect(_),
                ..
            }
            | Self::SessionExpired
            | Self::Closed => true,
            Self::Dropped { .. } | Self::Deadline { .. } => !is_request || read_only(method),
            _ => false,
        }
    }

    /// The HTTP status of a refusal, if the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Unauthorized { .. } => Some(401),
            Self::Forbidden { .. } => Some(403),
            Self::SessionExpired => Some(404),
            Self::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Requests that change nothing on the server: safe to send again.
pub fn read_only(method: &str) -> bool {
    matches!(
        method,
        "ping"
            | "tools/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
            | "prompts/list"
            | "prompts/get"
            | "completion/complete"
    )
}

/// What arrives from the server.
#[derive(Debug)]
pub enum Inbound {
    /// A message no [`Wire::call`] waits for.
    Message(Message),
    /// The standalone stream (or the legacy SSE stream) ended or failed.
    StreamEnded(String),
}

/// Which transport to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    /// Streamable HTTP (MCP 2025-03-26 and later).
    StreamableHttp,
    /// The HTTP+SSE transport of MCP 2024-11-05.
    LegacySse,
}

/// Everything needed to reach one server.
#[derive(Clone)]
pub struct WireConfig {
    /// The MCP endpoint.
    pub url: Url,
    /// The HTTP client ([`WireClient::new`]: its connect limit should be
    /// `deadlines.connect`).
    pub http: WireClient,
    /// Where the bearer token of each request comes from.
    pub tokens: Arc<dyn TokenSource>,
    /// Extra headers on every request (API keys); their values are secrets.
    pub headers: Vec<(HeaderName, Secret)>,
    /// The transport.
    pub kind: WireKind,
    /// The time limits of every request.
    pub deadlines: Deadlines,
    /// The protocol revision to speak ([`Protocol::Auto`]: what the server does).
    pub protocol: Protocol,
    /// The revision the server spoke last time (a saved server's record). With
    /// [`Protocol::Auto`], a handshake revision here skips `server/discover`: the
    /// server gets `initialize` at once, and is asked only if that fails.
    pub last_protocol: Option<String>,
}

/// Which MCP revision a connection speaks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    /// 2026-07-28 when the server speaks it (a `server/discover` tells), else the
    /// `initialize` handshake at 2025-11-25 (the server may answer an older one).
    #[default]
    Auto,
    /// This revision only: 2026-07-28 (no fallback), or a handshake revision
    /// (`initialize` offers it; the server may still answer with an older one).
    Exactly(String),
}

impl Protocol {
    /// The revisions keyway speaks, newest first.
    pub const KNOWN: [&'static str; 5] = [
        "2026-07-28",
        "2025-11-25",
        "2025-06-18",
        "2025-03-26",
        "2024-11-05",
    ];
}

/// A `--protocol` that is neither `auto` nor a revision keyway speaks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown protocol revision `{0}`: use auto or one of 2026-07-28, 2025-11-25, 2025-06-18, 2025-03-26, 2024-11-05"
)]
pub struct UnknownProtocol(pub String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    /// `auto` or one of [`Protocol::KNOWN`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "auto" => Ok(Self::Auto),
            v if Self::KNOWN.contains(&v) => Ok(Self::Exactly(v.to_owned())),
            v => Err(UnknownProtocol(v.to_owned())),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Exactly(v) => f.write_str(v),
        }
    }
}

impl WireConfig {
    /// Streamable HTTP to `url` with no extra headers and the default deadlines; set
    /// the public fields to change them (an example is at [`Wire::connect`]).
    pub fn new(url: Url, http: WireClient, tokens: Arc<dyn TokenSource>) -> Self {
        Self {
            url,
            http,
            tokens,
            headers: Vec::new(),
            kind: WireKind::StreamableHttp,
            deadlines: Deadlines::default(),
            protocol: Protocol::Auto,
            last_protocol: None,
        }
    }
}

impl std::fmt::Debug for WireConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConfig")
            .field("url", &self.url.as_str())
            .field("kind", &self.kind)
            .field("deadlines", &self.deadlines)
            .field("protocol", &self.protocol)
            .field("last_protocol", &self.last_protocol)
            .finish_non_exhaustive()
    }
}

/// A raw connection to one MCP server. Messages from the server (answers, requests,
/// notifications) come out of the receiver returned by [`Wire::connect`].
#[derive(Debug, Clone)]
pub struct Wire {
    inner: Arc<Inner>,
}

struct Inner {
    config: WireConfig,
    /// `config.url` as requests carry it.
    uri: Uri,
    /// `Proxy-Authorization` for a plain-http server behind a proxy with credentials.
    proxy_auth: Option<HeaderValue>,
    /// The server as errors name it: scheme, host and port.
    server: String,
    inbound: Sink,
    state: Mutex<State>,
    /// Legacy SSE: signalled once the `endpoint` event arrived.
    endpoint_known: tokio::sync::Notify,
    /// Answers awaited by [`Wire::call`] that did not come on their own POST's stream,
    /// by the request id's JSON text.
    waiters: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The last `Authorization` value sent (marked sensitive: Debug does not show it),
    /// reused while the token stays the same.
    bearer: Mutex<Option<HeaderValue>>,
    /// The configured headers as header values (marked sensitive), made once.
    configured: Vec<(HeaderName, HeaderValue)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// `url` as an HTTP request's target: without its fragment, which is never sent.
fn request_uri(url: &Url) -> Option<Uri> {
    Uri::try_from(&url[..url::Position::AfterQuery]).ok()
}

/// A header value kept in [`State`] as text (they are all visible ASCII).
fn header_text(v: Option<&HeaderValue>) -> Option<String> {
    v.and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Where a wire hands what the server sends that no [`Wire::call`] waits for. It is
/// called on the task that read the message, so it must not block: when whoever takes
/// the messages is behind (its queue is full), it returns a [`Backpressure`] future,
/// and the reader stops reading from the server until that resolves. A server that
/// floods a client that does not read is held back by TCP, not by keyway's memory.
pub type Sink = Arc<dyn Fn(Inbound) -> Option<Backpressure> + Send + Sync>;

/// Resolves once the receiver of a [`Sink`] can take more.
pub type Backpressure = futures::future::BoxFuture<'static, ()>;

/// Messages [`Wire::connect`]'s receiver holds before the wire stops reading.
pub const INBOUND_QUEUE: usize = 32;

/// What one event of a stream amounts to.
enum Event {
    Message(Message),
    Skip,
    End(WireError),
}

/// Takes an awaited answer's waiter out of the table when the caller is done with it
/// (or gave up).
struct Waiting<'a> {
    wire: &'a Wire,
    key: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.wire.waiters().remove(&self.key);
    }
}

#[derive(Debug, Default)]
struct State {
    /// Kept as header values (visible ASCII), sent with every request: a clone is a
    /// reference count, not a copy.
    session: Option<HeaderValue>,
    protocol: Option<HeaderValue>,
    /// The id (JSON text) of an `initialize` request in flight (its answer names the
    /// version).
    initialize_id: Option<String>,
    /// Legacy SSE: where to POST, learned from the `endpoint` event.
    post_url: Option<Uri>,
    /// The standalone stream's last event ID, sent when it is opened again.
    standalone_last_id: Option<String>,
    /// Requests the client cancelled (their ids' JSON text), most recent last: their
    /// streams are not resumed, as no answer will come.
    cancelled: std::collections::VecDeque<String>,
    /// MCP 2026-07-28: the `x-mcp-header` annotations of the tools the server listed.
    tools: super::modern::ToolHeaders,
    /// MCP 2026-07-28: ids of `tools/list` requests in flight (their answers are
    /// checked for invalid annotations).
    tools_lists: std::collections::VecDeque<String>,
    closed: bool,
}

/// Cancelled request ids remembered at most.
const CANCELLED_KEPT: usize = 64;

/// What a POST's event stream is read for.
#[derive(Clone, Copy)]
enum Reading<'a> {
    /// A notification's or an answer's stream: everything is delivered.
    Deliver,
    /// A request's: everything is delivered, its answer included; the stream is
    /// resumed if it ends before the answer.
    Request(&'a str),
    /// [`Wire::call`]'s: the answer is returned, the rest delivered.
    Call(&'a str),
}

impl Reading<'_> {
    fn request(&self) -> Option<&str> {
        match self {
            Self::Deliver => None,
            Self::Request(k) | Self::Call(k) => Some(k),
        }
    }
}

impl Wire {
    /// Open a connection. For legacy SSE this opens the event stream and waits for
    /// the `endpoint` event; for Streamable HTTP nothing is sent yet. Returns the wire
    /// and the receiver of what the server sends that no [`Wire::call`] waits for
    /// (at most [`INBOUND_QUEUE`] held before the wire stops reading). Only legacy SSE
    /// can fail here: as its event stream's `GET` does (401, unreachable, a deadline),
    /// or with [`WireError::Protocol`] when the stream names no endpoint in time.
    ///
    /// ```no_run
    /// use std::{sync::Arc, time::Duration};
    ///
    /// use keyway::{
    ///     http::{Deadlines, WireClient},
    ///     mcp::{
    ///         StaticToken,
    ///         wire::{Inbound, Wire, WireConfig},
    ///     },
    /// };
    /// use serde_json::json;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let deadlines = Deadlines {
    ///     first_byte: Duration::from_secs(30),
    ///     ..Deadlines::default()
    /// };
    /// let mut config = WireConfig::new(
    ///     "https://mcp.example.com/mcp".parse()?,
    ///     WireClient::new(&deadlines)?,
    ///     Arc::new(StaticToken::new(None)),
    /// );
    /// config.deadlines = deadlines;
    /// let (wire, mut inbound) = Wire::connect(config).await?;
    ///
    /// let answer = wire
    ///     .call(&json!({
    ///         "jsonrpc": "2.0", "id": 1, "method": "initialize",
    ///         "params": {
    ///             "protocolVersion": "2025-11-25",
    ///             "capabilities": {},
    ///             "clientInfo": {"name": "example", "version": "0.1.0"}
    ///         }
    ///     }))
    ///     .await?;
    /// println!("protocol {}", answer["result"]["protocolVersion"]);
    /// wire.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    ///     .await?;
    ///
    /// // The server's own requests and notifications arrive here.
    /// tokio::spawn(async move {
    ///     while let Some(item) = inbound.recv().await {
    ///         if let Inbound::Message(m) = item {
    ///             println!("{:?}", m.method());
    ///         }
    ///     }
    /// });
    /// wire.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: WireConfig) -> Result<(Self, mpsc::Receiver<Inbound>), WireError> {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
        let sink: Sink = Arc::new(move |item| match tx.try_send(item) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => None,
            Err(mpsc::error::TrySendError::Full(item)) => {
                let tx = tx.clone();
                Some(Box::pin(async move {
                    let _ = tx.send(item).await;
                }))
            }
        });
        Ok((Self::connect_to(config, sink).await?, rx))
    }

    /// [`Wire::connect`] handing what the server sends to `sink` instead of a channel.
    pub async fn connect_to(config: WireConfig, sink: Sink) -> Result<Self, WireError> {
        // A value that is not a header value cannot be sent: it is left out, as
        // before, with a warning that names the header and not its value.
        let configured = config
            .headers
            .iter()
            .filter_map(|(k, v)| match HeaderValue::from_str(v.expose()) {
                Ok(mut hv) => {
                    hv.set_sensitive(true);
                    Some((k.clone(), hv))
                }
                Err(_) => {
                    tracing::warn!(header = %k, "a configured header is not a valid header value; not sent");
                    None
                }
            })
            .collect();
        let server = config.url.origin().ascii_serialization();
        let uri = request_uri(&config.url).ok_or_else(|| WireError::Connect {
            server: server.clone(),
            reason: "the URL cannot be sent in an HTTP request".into(),
            cause: ConnectCause::Other,
        })?;
        let proxy_auth = config.http.proxy_authorization(&uri);
        let wire = Self {
            inner: Arc::new(Inner {
                uri,
                proxy_auth,
                bearer: Mutex::default(),
                configured,
                server,
                config,
                inbound: sink,
                state: Mutex::default(),
                endpoint_known: tokio::sync::Notify::new(),
                waiters: Mutex::default(),
            }),
        };
        if wire.inner.config.kind == WireKind::LegacySse {
            wire.open_legacy_stream().await?;
        }
        Ok(wire)
    }

    /// The MCP endpoint.
    pub fn url(&self) -> &Url {
        &self.inner.config.url
    }

    /// The transport spoken.
    pub fn kind(&self) -> WireKind {
        self.inner.config.kind
    }

    /// The session id the server gave, if any.
    pub fn session_id(&self) -> Option<String> {
        header_text(self.state().session.as_ref())
    }

    /// MCP 2026-07-28: whether a `tools/list` answer has been seen, so a `tools/call`
    /// carries its tool's `Mcp-Param-*` headers; and why `tool` was left out of it
    /// (invalid `x-mcp-header` annotations), if it was.
    pub fn tools_known(&self, tool: &str) -> (bool, Option<super::modern::InvalidAnnotation>) {
        let st = self.state();
        (st.tools.listed(), st.tools.rejected(tool).cloned())
    }

    /// The protocol revision the server chose in `initialize`.
    pub fn protocol_version(&self) -> Option<String> {
        header_text(self.state().protocol.as_ref())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured headers and the access token, added to `headers` for a
    /// `method` request to `target`. A DPoP-bound token goes as `Authorization: DPoP`
    /// with a fresh proof for `method` and `target` (RFC 9449 §7); what the proof was
    /// made for is returned, so its answer can be read for the server's nonce.
    async fn add_credentials(
        &self,
        headers: &mut HeaderMap,
        method: &Method,
        target: &Uri,
    ) -> Result<Option<Proved>, WireError> {
        for (k, v) in &self.inner.configured {
            headers.insert(k.clone(), v.clone());
        }
        let presented = match self
            .inner
            .config
            .tokens
            .token(self.inner.config.url.as_str())
            .await
        {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => return Err(WireError::Credentials(e.to_string())),
        };
        let scheme: &[u8] = match presented.dpop {
            Some(_) => b"DPoP ",
            None => b"Bearer ",
        };
        let value = {
            let mut last = self.inner.bearer.lock().unwrap_or_else(|p| p.into_inner());
            match &*last {
                Some(v)
                    if v.as_bytes().strip_prefix(scheme)
                        == Some(presented.token.secret().as_bytes()) =>
                {
                    v.clone()
                }
                _ => {
                    let mut bytes = scheme.to_vec();
                    bytes.extend_from_slice(presented.token.secret().as_bytes());
                    let mut v = HeaderValue::from_bytes(&bytes).map_err(|_| {
                        WireError::Credentials("the token is not a header value".into())
                    })?;
                    v.set_sensitive(true);
                    *last = Some(v.clone());
                    v
                }
            }
        };
        headers.insert(header::AUTHORIZATION, value);
        let Some(key) = presented.dpop else {
            return Ok(None);
        };
        let url = if *target == self.inner.uri {
            self.inner.config.url.clone()
        } else {
            Url::parse(&target.to_string()).map_err(|_| {
                WireError::Credentials("the request URL cannot be named in a DPoP proof".into())
            })?
        };
        let nonce = crate::auth::dpop::nonce(&url);
        let token = crate::Secret::new(presented.token.secret().as_str());
        let proof = key
            .proof(
                method.as_str(),
                &url,
                Some(&token),
                nonce.as_deref(),
                std::time::SystemTime::now(),
            )
            .map_err(|e| WireError::Credentials(e.to_string()))?;
        let mut v = HeaderValue::from_str(proof.expose())
            .map_err(|_| WireError::Credentials("a DPoP proof is not a header value".into()))?;
        v.set_sensitive(true);
        headers.insert(DPOP, v);
        Ok(Some(Proved { url, nonce }))
    }

    /// Send a request with the credentials for it (see [`Wire::add_credentials`]) and
    /// read its answer's head (see [`Wire::exchange`]). A DPoP-bound request refused
    /// for want of the server's nonce (`use_dpop_nonce`, RFC 9449 §9) is sent again
    /// with the nonce, and one refused for a proof the server will not take
    /// (`invalid_dpop_proof`: one it believes replayed) again with a fresh proof: once
    /// each. Refused again for the same reason, it fails with
    /// [`WireError::Credentials`] rather than a 401 that would start an authorization
    /// no new token can satisfy.
    async fn authorized(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
        idle: bool,
    ) -> Result<Reply, WireError> {
        let Some(mut proved) = self.add_credentials(&mut headers, &method, &uri).await? else {
            let req = self.request(method, uri, headers, body);
            return self.exchange(req, idle).await;
        };
        let (mut nonce_retried, mut proof_retried) = (false, false);
        loop {
            let again = headers.clone();
            let req = self.request(method.clone(), uri.clone(), headers, body.clone());
            let resp = self.exchange(req, idle).await?;
            let fresh_nonce = self.note_nonce(&resp, &proved);
            match dpop_refusal(&resp) {
                None => return Ok(resp),
                Some(DpopRefusal::Nonce) if !fresh_nonce => {
                    return Err(WireError::Credentials(if nonce_retried {
                        format!(
                            "{} asked for a new DPoP nonce again after keyway used the one it gave",
                            self.inner.server
                        )
                    } else {
                        format!(
                            "{} asks for a DPoP nonce (use_dpop_nonce) without giving a usable one (DPoP-Nonce)",
                            self.inner.server
                        )
                    }));
                }
                Some(DpopRefusal::Nonce) if nonce_retried => {
                    return Err(WireError::Credentials(format!(
                        "{} asked for a new DPoP nonce again after keyway used the one it gave",
                        self.inner.server
                    )));
                }
                Some(DpopRefusal::Nonce) => nonce_retried = true,
                Some(DpopRefusal::Proof(why)) if proof_retried => {
                    return Err(WireError::Credentials(format!(
                        "{} refused keyway's DPoP proof twice{}",
                        self.inner.server,
                        why.map(|w| format!(": {w}")).unwrap_or_default()
                    )));
                }
                Some(DpopRefusal::Proof(_)) => proof_retried = true,
            }
            drop(resp);
            headers = again;
            headers.remove(header::AUTHORIZATION);
            headers.remove(DPOP);
            match self.add_credentials(&mut headers, &method, &uri).await? {
                Some(p) => proved = p,
                None => {
                    let req = self.request(method, uri, headers, body);
                    return self.exchange(req, idle).await;
                }
            }
        }
    }

    /// Remember the nonce an answer to a DPoP proof carries (RFC 9449 §9: any answer
    /// may bring one). True when it is new: not the one the proof used.
    fn note_nonce(&self, resp: &Reply, proved: &Proved) -> bool {
        match resp.headers.get(DPOP_NONCE) {
            Some(n) => {
                crate::auth::dpop::remember_nonce(&proved.url, n.as_bytes())
                    && proved.nonce.as_deref().map(str::as_bytes) != Some(n.as_bytes())
            }
            None => false,
        }
    }

    /// The headers of a request in the session: its id and the protocol revision
    /// (the credentials are added as it is sent, [`Wire::authorized`]).
    async fn session_headers(
        &self,
        capacity: usize,
    ) -> Result<(HeaderMap, Option<HeaderValue>), WireError> {
        let (session, protocol) = {
            let st = self.state();
            (st.session.clone(), st.protocol.clone())
        };
        let mut headers =
            HeaderMap::with_capacity(capacity + EXTRA_HEADERS + self.inner.configured.len());
        if let Some(s) = &session {
            headers.insert(SESSION_ID, s.clone());
        }
        if let Some(p) = protocol {
            headers.insert(PROTOCOL_VERSION, p);
        }
        Ok((headers, session))
    }

    /// Send a request and read its answer's head within the first-byte deadline; the
    /// body is then read within the idle deadline (`idle`: whether it applies).
    async fn exchange(&self, req: Request<Full<Bytes>>, idle: bool) -> Result<Reply, WireError> {
        let d = &self.inner.config.deadlines;
        match tokio::time::timeout(d.first_byte, self.inner.config.http.request(req)).await {
            Ok(Ok(resp)) => Ok(Reply::from_hyper(resp, idle.then_some(d.idle))),
            Ok(Err(e)) => Err(self.failed(&e)),
            Err(_) => Err(WireError::Deadline {
                server: self.inner.server.clone(),
                limit: Limit::FirstByte(d.first_byte),
            }),
        }
    }

    /// A request to the server: `uri` (the endpoint, or legacy SSE's POST endpoint
    /// on its origin), keyway's user agent, the proxy's credentials where one needs
    /// them.
    fn request(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(crate::http::USER_AGENT),
        );
        if let Some(auth) = &self.inner.proxy_auth {
            headers.insert(header::PROXY_AUTHORIZATION, auth.clone());
        }
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        req
    }

    /// A failed request in terms a person (and a retry decision) can act on.
    fn failed(&self, e: &hyper_util::client::legacy::Error) -> WireError {
        let server = self.inner.server.clone();
        if e.is_connect() {
            if let Some(limit) = crate::http::connect_timed_out(e) {
                return WireError::Deadline {
                    server,
                    limit: Limit::Connect(limit),
                };
            }
            // hyper-util's own line ("client error (Connect)") says nothing the
            // variant does not.
            let (cause, reason) = match std::error::Error::source(e) {
                Some(inner) => ConnectCause::of_failure(inner),
                None => ConnectCause::of_failure(e),
            };
            return WireError::Connect {
                server,
                reason,
                cause,
            };
        }
        let reason = match std::error::Error::source(e) {
            Some(cause) => describe(cause),
            None => describe(e),
        };
        WireError::Dropped { server, reason }
    }

    fn body_failed(&self, e: BodyError) -> WireError {
        let server = self.inner.server.clone();
        match e {
            BodyError::Idle(d) => WireError::Deadline {
                server,
                limit: Limit::Idle(d),
            },
            BodyError::Broken(reason) => WireError::Dropped { server, reason },
            BodyError::TooLarge(n) => WireError::Protocol {
                server,
                reason: format!("an answer larger than {} MiB", n / (1024 * 1024)),
            },
        }
    }

    /// Deliver one message (or batch); its JSON-RPC answers arrive on the inbound
    /// channel. For a request answered with an event stream (Streamable HTTP), this
    /// returns once the stream has ended, its messages delivered; otherwise once the
    /// server has answered the HTTP request.
    pub async fn send(&self, message: &Value) -> Result<(), WireError> {
        self.send_message(&Message::from_value(message)).await
    }

    /// [`Wire::send`] for a message already in text.
    pub async fn send_message(&self, message: &Message) -> Result<(), WireError> {
        if self.state().closed {
            return Err(WireError::Closed);
        }
        if message.method() == Some("notifications/cancelled")
            && let Some(id) = message.value().pointer("/params/requestId")
        {
            let mut st = self.state();
            if st.cancelled.len() == CANCELLED_KEPT {
                st.cancelled.pop_front();
            }
            st.cancelled.push_back(id.to_string());
        }
        match self.inner.config.kind {
            WireKind::StreamableHttp => {
                let reading = match message.id() {
                    Some(id) if message.is_request() => Reading::Request(id),
                    _ => Reading::Deliver,
                };
                self.send_streamable(message, reading).await.map(drop)
            }
            WireKind::LegacySse => self.send_legacy(message).await,
        }
    }

    /// Send a request and return its answer (a JSON-RPC result or error object). The
    /// answer is read on the caller's own task as it arrives on the POST's stream, with
    /// no hand-off to another task; what else the stream carries (progress, the
    /// server's own requests) goes to the inbound channel as usual.
    pub async fn call(&self, request: &Value) -> Result<Value, WireError> {
        self.call_message(Message::from_value(request))
            .await
            .map(|a| a.value())
    }

    /// [`Wire::call`] for a request already in text; the answer as it came.
    pub async fn call_message(&self, request: Message) -> Result<Message, WireError> {
        if self.state().closed {
            return Err(WireError::Closed);
        }
        let key = request
            .id()
            .ok_or_else(|| WireError::Protocol {
                server: self.inner.server.clone(),
                reason: "keyway was asked to call with a request that has no id".into(),
            })?
            .to_owned();
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(key.clone(), tx);
        let waiting = Waiting { wire: self, key };
        let answer = match self.inner.config.kind {
            WireKind::StreamableHttp => {
                self.send_streamable(&request, Reading::Call(&waiting.key))
                    .await?
            }
            WireKind::LegacySse => {
                self.send_legacy(&request).await?;
                None
            }
        };
        match answer {
            Some(a) => Ok(a),
            // On another stream (legacy SSE, or a server that answers elsewhere).
            None => rx
                .await
                .map(|v| Message::from_value(&v))
                .map_err(|_| WireError::Closed),
        }
    }

    async fn send_streamable(
        &self,
        message: &Message,
        reading: Reading<'_>,
    ) -> Result<Option<Message>, WireError> {
        if message.method() == Some("initialize") {
            let mut st = self.state();
            st.initialize_id = message.id().map(str::to_owned);
            st.session = None;
        }
        // A request that declares its revision in `_meta` is a 2026-07-28 one: no
        // session, and the request metadata headers instead.
        let modern = if super::modern::may_be_modern(message) {
            let mut st = self.state();
            let extra = super::modern::request_headers(message, &st.tools);
            if extra.is_some()
                && message.method() == Some("tools/list")
                && let Some(id) = message.id()
            {
                if st.tools_lists.len() == CANCELLED_KEPT {
                    st.tools_lists.pop_front();
                }
                st.tools_lists.push_back(id.to_owned());
            }
            extra
        } else {
            None
        };
        let (mut headers, session) = match &modern {
            Some(extra) => {
                let mut headers = HeaderMap::with_capacity(
                    2 + extra.len() + EXTRA_HEADERS + self.inner.configured.len(),
                );
                for (k, v) in extra {
                    headers.insert(k.clone(), v.clone());
                }
                (headers, None)
            }
            None => self.session_headers(2).await?,
        };
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::copy_from_slice(message.text().as_bytes());
        // A 2026-07-28 `subscriptions/listen` stream is quiet until something changes:
        // no idle deadline (TCP keepalive finds a dead peer), as the GET stream.
        let idle = message.method() != Some("subscriptions/listen");
        let resp = self
            .authorized(Method::POST, self.inner.uri.clone(), headers, body, idle)
            .await?;
        let status = resp.status;
        if modern.is_none()
            && let Some(id) = resp.headers.get(SESSION_ID)
            && id.to_str().is_ok()
        {
            let mut st = self.state();
            if st.session.as_ref() != Some(id) {
                st.session = Some(id.clone());
            }
        }
        match status {
            StatusCode::ACCEPTED | StatusCode::NO_CONTENT => Ok(None),
            s if s.is_success() => {
                let sse = resp
                    .header(header::CONTENT_TYPE)
                    .is_some_and(|t| t.starts_with("text/event-stream"));
                if sse {
                    let events = SseStream::new(resp.body);
                    if let Reading::Deliver = reading {
                        // An answer's or a notification's stream: read on by a task of
                        // its own, the sender does not wait for it.
                        let wire = self.clone();
                        tokio::spawn(async move { wire.read_events(events, false).await });
                        return Ok(None);
                    }
                    // A request's: its answer and what comes with it, read on the
                    // sender's own task (a task per stream would cost a spawn and a
                    // hand-off for every request).
                    return self.read_stream(events, reading, modern.is_none()).await;
                }
                let body = resp
                    .read_capped(MAX_MESSAGE)
                    .await
                    .map_err(|e| self.body_failed(e))?;
                if body.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let not_json = |e: String| WireError::Protocol {
                    server: self.inner.server.clone(),
                    reason: format!("HTTP {} with a body that is not JSON: {e}", s.as_u16()),
                };
                let text = String::from_utf8(body).map_err(|e| not_json(e.to_string()))?;
                let v = Message::parse(text).map_err(|e| not_json(e.to_string()))?;
                match reading {
                    Reading::Call(key) if v.answers(key) => Ok(Some(self.note_answer(v))),
                    _ => {
                        if let Some(full) = self.deliver(v) {
                            full.await;
                        }
                        Ok(None)
                    }
                }
            }
            _ if modern.is_some() && reading.request().is_some() => {
                let key = reading.request().unwrap_or_default();
                let answer = self.modern_refusal(resp, key).await?;
                match reading {
                    Reading::Call(_) => Ok(Some(answer)),
                    _ => {
                        if let Some(full) = self.deliver(answer) {
                            full.await;
                        }
                        Ok(None)
                    }
                }
            }
            _ => Err(self.http_error(resp, session.is_some()).await),
        }
    }

    /// A 2026-07-28 request refused with an HTTP error. 401 and 403 are what they
    /// always are. A JSON-RPC error in the body is the request's answer (a modern
    /// server answers an unsupported version, a header mismatch or an unknown method
    /// this way). A 400, 404 or 405 without one is a server that does not know
    /// 2026-07-28: answered with a JSON-RPC error (-32601) that says so, which is what
    /// tells a client to fall back to the `initialize` handshake. Anything else is the
    /// HTTP error.
    async fn modern_refusal(&self, resp: Reply, key: &str) -> Result<Message, WireError> {
        let status = resp.status;
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Err(self.http_error(resp, false).await);
        }
        let body = resp
            .read_capped(MAX_MESSAGE)
            .await
            .map_err(|e| self.body_failed(e))?;
        let id: Value = serde_json::from_str(key).unwrap_or(Value::Null);
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(mut v) = parsed.filter(|v| v.get("error").is_some_and(Value::is_object)) {
            // The error answers this request, whatever id (or none) it carries.
            v["id"] = id;
            return Ok(Message::from_value(&v));
        }
        if matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            let reason = format!(
                "HTTP {} without a JSON-RPC error: the server does not speak MCP {} ({})",
                status.as_u16(),
                super::modern::MODERN_VERSION,
                snippet(&body)
            );
            return Ok(Message::from_value(&serde_json::json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": -32601, "message": reason},
            })));
        }
        Err(WireError::Http {
            status: status.as_u16(),
            body: snippet(&body),
        })
    }

    async fn http_error(&self, resp: Reply, had_session: bool) -> WireError {
        let status = resp.status;
        let challenge: Vec<String> = resp
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        match status {
            StatusCode::UNAUTHORIZED => WireError::Unauthorized {
                challenge: (!challenge.is_empty()).then(|| challenge.join(", ")),
            },
            StatusCode::FORBIDDEN => WireError::Forbidden {
                challenge: challenge.join(", "),
            },
            StatusCode::NOT_FOUND if had_session => {
                self.state().session = None;
                WireError::SessionExpired
            }
            s => {
                let body = match resp.read_capped(MAX_MESSAGE).await {
                    Ok(body) => snippet(&body),
                    Err(e) => e.to_string(),
                };
                WireError::Http {
                    status: s.as_u16(),
                    body,
                }
            }
        }
    }

    /// Note the protocol version an `initialize` answer names; take the tools with
    /// invalid `x-mcp-header` annotations out of a 2026-07-28 `tools/list` answer (and
    /// learn the valid ones' annotations).
    fn note_answer(&self, v: Message) -> Message {
        let mut st = self.state();
        if let Some(id) = v.id()
            && let Some(at) = st.tools_lists.iter().position(|k| k == id)
        {
            st.tools_lists.remove(at);
            let mut value = v.value();
            if let Some(result) = value.get_mut("result") {
                let rejected = st.tools.learn(result);
                if !rejected.is_empty() {
                    for r in &rejected {
                        tracing::warn!(tool = %r.name, reason = %r.reason,
                            "left out a tool whose x-mcp-header annotations are invalid");
                    }
                    return Message::from_value(&value);
                }
            }
            return v;
        }
        if let Some(id) = &st.initialize_id
            && v.id() == Some(id.as_str())
        {
            st.protocol = v
                .value()
                .get("result")
                .and_then(|r| r.get("protocolVersion"))
                .and_then(Value::as_str)
                .and_then(|p| HeaderValue::from_str(p).ok());
            st.initialize_id = None;
        }
        v
    }

    /// One JSON-RPC message (or batch) from the server: to whoever [`Wire::call`]s for
    /// it, else to the inbound channel; what to wait for before reading more.
    #[must_use = "the reader waits on backpressure before reading more"]
    fn deliver(&self, v: Message) -> Option<Backpressure> {
        let v = self.note_answer(v);
        if v.method().is_none()
            && let Some(key) = v.id()
            && let Some(tx) = self.waiters().remove(key)
        {
            let _ = tx.send(v.value());
            return None;
        }
        (self.inner.inbound)(Inbound::Message(v))
    }

    /// What one event carries.
    fn event(&self, ev: Result<Sse, SseError>) -> Event {
        let ev = match ev {
            Ok(ev) => ev,
            Err(SseError::Body(e)) => return Event::End(self.body_failed(e)),
            Err(SseError::TooLarge) => {
                return Event::End(self.body_failed(BodyError::TooLarge(MAX_MESSAGE)));
            }
        };
        match ev.event.as_deref() {
            Some("endpoint") if self.inner.config.kind == WireKind::LegacySse => {
                self.set_endpoint(&ev.data);
                return Event::Skip;
            }
            None | Some("message") => {}
            Some(_) => return Event::Skip,
        }
        if ev.data.trim_ascii().is_empty() {
            return Event::Skip;
        }
        // No larger than MAX_MESSAGE: the event parser refuses longer ones.
        match Message::parse(ev.data) {
            Ok(v) => Event::Message(v),
            Err(e) => {
                tracing::warn!(error = %e, "an event that is not JSON-RPC; skipped");
                Event::Skip
            }
        }
    }

    /// Read an event stream to its end, delivering each message.
    async fn read_events(&self, mut events: SseStream, standalone: bool) {
        let mut reason = "the server closed the stream".to_owned();
        while let Some(ev) = events.next().await {
            match self.event(ev) {
                Event::Message(v) => {
                    if let Some(full) = self.deliver(v) {
                        full.await;
                    }
                }
                Event::Skip => {}
                Event::End(why) => {
                    reason = why.to_string();
                    break;
                }
            }
        }
        if standalone {
            if let Some(id) = events.last_event_id() {
                self.state().standalone_last_id = Some(id.to_owned());
            }
            // The server's reconnection time is honoured before whoever reopens the
            // stream hears that it ended.
            if let Some(wait) = events.retry() {
                tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
            }
            if let Some(full) = (self.inner.inbound)(Inbound::StreamEnded(reason)) {
                full.await;
            }
        }
    }

    /// Read a request's event stream until its answer. For [`Reading::Call`] the answer
    /// is returned (not delivered); what follows it is read here if it has already
    /// arrived (the usual end of the stream, so the connection goes back to the pool),
    /// else by a task of its own. For [`Reading::Request`] the answer is delivered and
    /// the stream read to its end.
    ///
    /// A stream that ends before the answer after the server gave its events IDs is
    /// resumed (MCP 2025-11-25): after the server's `retry` time, a GET with
    /// `Last-Event-ID` continues it, so the answer still arrives.
    async fn read_stream(
        &self,
        mut events: SseStream,
        reading: Reading<'_>,
        resumable: bool,
    ) -> Result<Option<Message>, WireError> {
        let mut answered = false;
        let mut resumes = 0;
        loop {
            let mut ended = None;
            let id_before = events.last_event_id().map(str::to_owned);
            while let Some(ev) = events.next().await {
                match self.event(ev) {
                    Event::Message(v) if reading.request().is_some_and(|k| v.answers(k)) => {
                        if let Reading::Call(_) = reading {
                            let v = self.note_answer(v);
                            self.read_rest(events);
                            return Ok(Some(v));
                        }
                        answered = true;
                        if let Some(full) = self.deliver(v) {
                            full.await;
                        }
                    }
                    Event::Message(v) => {
                        if let Some(full) = self.deliver(v.arrived_during(reading.request())) {
                            full.await;
                        }
                    }
                    Event::Skip => {}
                    Event::End(e) => {
                        ended = Some(e);
                        break;
                    }
                }
            }
            if answered {
                return Ok(None);
            }
            // Ended before the answer: none will come for a cancelled request.
            if let Some(key) = reading.request() {
                let mut st = self.state();
                if let Some(at) = st.cancelled.iter().position(|c| c == key) {
                    st.cancelled.remove(at);
                    return Ok(None);
                }
            }
            // MCP 2026-07-28 streams are not resumable: the request is lost.
            let last_id = events.last_event_id().filter(|_| resumable);
            let Some(last_id) = last_id.map(str::to_owned) else {
                return match ended {
                    Some(e) => Err(e),
                    // A clean end with no way to resume: the answer may still come on
                    // the standalone stream.
                    None => Ok(None),
                };
            };
            resumes = if id_before.as_deref() == Some(last_id.as_str()) {
                resumes + 1
            } else {
                1
            };
            if resumes > MAX_RESUMES {
                return Err(ended.unwrap_or_else(|| WireError::Dropped {
                    server: self.inner.server.clone(),
                    reason: format!(
                        "the answer's event stream ended {MAX_RESUMES} times in a row without a new event"
                    ),
                }));
            }
            if let Some(wait) = events.retry() {
                tokio::time::sleep(wait.min(MAX_RETRY_WAIT)).await;
            }
            tracing::debug!(last_event_id = %last_id, "resuming an answer's event stream");
            events = self.resume(last_id).await?;
        }
    }

    /// What follows a call's answer on its stream: read now if it has arrived, else
    /// by a task of its own.
    fn read_rest(&self, mut events: SseStream) {
        loop {
            match events.next().now_or_never() {
                Some(None) => break,
                Some(Some(ev)) => match self.event(ev) {
                    Event::Message(v) => {
                        // Behind a full receiver: the rest is read by a task of its own
                        // once there is room (the caller has its answer now).
                        if let Some(full) = self.deliver(v) {
                            let wire = self.clone();
                            tokio::spawn(async move {
                                full.await;
                                wire.read_events(events, false).await;
                            });
                            break;
                        }
                    }
                    Event::Skip => {}
                    Event::End(_) => break,
                },
                None => {
                    let wire = self.clone();
                    tokio::spawn(async move { wire.read_events(events, false).await });
                    break;
                }
            }
        }
    }

    /// A GET that continues the stream whose last event was `last_id`.
    async fn resume(&self, last_id: String) -> Result<SseStream, WireError> {
        let (mut headers, session) = self.session_headers(2).await?;
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let id = HeaderValue::from_str(&last_id).map_err(|_| WireError::Protocol {
            server: self.inner.server.clone(),
            reason: "an event ID that cannot be sent back in a header".into(),
        })?;
        headers.insert(LAST_EVENT_ID, id);
        let resp = self
            .authorized(
                Method::GET,
                self.inner.uri.clone(),
                headers,
                Bytes::new(),
                true,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(self.http_error(resp, session.is_some()).await);
        }
        Ok(SseStream::resuming(resp.body, Some(last_id)))
    }

    /// After `notifications/initialized`: the standalone stream for server-initiated
    /// messages (a 405 means the server has none). Opened again after it ended, it
    /// names the last event it carried (`Last-Event-ID`).
    pub async fn open_standalone_stream(&self) -> Result<(), WireError> {
        if self.inner.config.kind != WireKind::StreamableHttp {
            return Ok(());
        }
        let (mut headers, session) = self.session_headers(2).await?;
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let last_id = self.state().standalone_last_id.clone();
        if let Some(id) = last_id
            .as_deref()
            .and_then(|id| HeaderValue::from_str(id).ok())
        {
            headers.insert(LAST_EVENT_ID, id);
        }
        let resp = self
            .authorized(
                Method::GET,
                self.inner.uri.clone(),
                headers,
                Bytes::new(),
                true,
            )
            .await?;
        match resp.status {
            s if s.is_success() => {
                let wire = self.clone();
                let events = SseStream::resuming(resp.body, last_id);
                tokio::spawn(async move { wire.read_events(events, true).await });
                Ok(())
            }
            StatusCode::METHOD_NOT_ALLOWED => Ok(()),
            StatusCode::NOT_FOUND if session.is_none() => Ok(()),
            _ => Err(self.http_error(resp, session.is_some()).await),
        }
    }

    /// Forget the session (after it expired or the connection dropped), so the next
    /// `initialize` starts a new one; legacy SSE opens its event stream again.
    pub async fn reset(&self) -> Result<(), WireError> {
        {
            let mut st = self.state();
            st.session = None;
            st.post_url = None;
            st.standalone_last_id = None;
            st.cancelled.clear();
            st.closed = false;
        }
        // Answers the old session still owed will not come.
        self.waiters().clear();
        if self.inner.config.kind == WireKind::LegacySse {
            self.open_legacy_stream().await?;
        }
        Ok(())
    }

    /// End the session: DELETE with its id (Streamable HTTP), at most 5 s.
    pub async fn close(&self) {
        let session = {
            let mut st = self.state();
            st.closed = true;
            st.session.take()
        };
        self.waiters().clear();
        let Some(session) = session else { return };
        let c = &self.inner.config;
        let mut headers = HeaderMap::with_capacity(1 + EXTRA_HEADERS + self.inner.configured.len());
        headers.insert(SESSION_ID, session);
        if self
            .add_credentials(&mut headers, &Method::DELETE, &self.inner.uri)
            .await
            .is_err()
        {
            return;
        }
        let delete = self.request(
            Method::DELETE,
            self.inner.uri.clone(),
            headers,
            Bytes::new(),
        );
        match tokio::time::timeout(CLOSE_TIMEOUT, c.http.request(delete)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %describe(&e), "DELETE of the session failed"),
            Err(_) => tracing::debug!("DELETE of the session took too long; given up"),
        }
    }

    // ------------------------------------------------------------ legacy SSE

    async fn open_legacy_stream(&self) -> Result<(), WireError> {
        let mut headers = HeaderMap::with_capacity(2 + EXTRA_HEADERS + self.inner.configured.len());
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        // The stream is the session: no idle limit (TCP keep-alive notices a dead
        // connection); a quiet server is not a broken one.
        let resp = self
            .authorized(
                Method::GET,
                self.inner.uri.clone(),
                headers,
                Bytes::new(),
                false,
            )
            .await?;
        if !resp.status.is_success() {
            return Err(self.http_error(resp, false).await);
        }
        let wire = self.clone();
        let events = SseStream::new(resp.body);
        let endpoint = self.inner.endpoint_known.notified();
        tokio::spawn(async move { wire.read_events(events, true).await });
        match tokio::time::timeout(ENDPOINT_WAIT, endpoint).await {
            Ok(()) => Ok(()),
            Err(_) => Err(WireError::Protocol {
                server: self.inner.server.clone(),
                reason: format!(
                    "its SSE stream named no endpoint within {} s (is this a legacy HTTP+SSE server?)",
                    ENDPOINT_WAIT.as_secs()
                ),
            }),
        }
    }

    fn set_endpoint(&self, data: &str) {
        let base = &self.inner.config.url;
        match base.join(data.trim()) {
            // The endpoint must stay on the server's origin: a token is sent there.
            Ok(u) if u.origin() == base.origin() => match request_uri(&u) {
                Some(uri) => {
                    self.state().post_url = Some(uri);
                    self.inner.endpoint_known.notify_one();
                }
                None => {
                    tracing::warn!(endpoint = %u, "the SSE endpoint cannot be sent in a request")
                }
            },
            Ok(u) => {
                tracing::warn!(endpoint = %u, "the SSE endpoint is on another origin; refused")
            }
            Err(e) => tracing::warn!(error = %e, "the SSE endpoint is not a URL"),
        }
    }

    async fn send_legacy(&self, message: &Message) -> Result<(), WireError> {
        let Some(post_url) = self.state().post_url.clone() else {
            return Err(WireError::Closed);
        };
        let mut headers = HeaderMap::with_capacity(2 + EXTRA_HEADERS + self.inner.configured.len());
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let body = Bytes::copy_from_slice(message.text().as_bytes());
        let resp = self
            .authorized(Method::POST, post_url, headers, body, true)
            .await?;
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(self.http_error(resp, false).await)
        }
    }
}

/// rmcp's client `Transport` over a [`Wire`]: rmcp's typed client (handshakes, tool
/// lists and calls, resources, prompts) on keyway's one transport, with its
/// deadlines, resumption and credentials. Programs built on rmcp can use it as their
/// transport: `rmcp::ServiceExt::serve(client_info, transport)`.
#[derive(Debug)]
pub struct WireTransport {
    wire: Wire,
    inbound: mpsc::Receiver<Inbound>,
    /// When the standalone stream was last reopened, and how many times in a row it
    /// ended within [`QUICK_END`] of that.
    reopened: Option<tokio::time::Instant>,
    quick_ends: u32,
}

/// A standalone stream that ends sooner than this after being reopened counts as
/// ending at once; after three of those in a row it is not reopened again.
const QUICK_END: Duration = Duration::from_secs(10);

impl WireTransport {
    /// A transport over `wire`, reading what [`Wire::connect`] returned beside it.
    pub fn new(wire: Wire, inbound: mpsc::Receiver<Inbound>) -> Self {
        Self {
            wire,
            inbound,
            reopened: None,
            quick_ends: 0,
        }
    }

    /// The wire underneath.
    pub fn wire(&self) -> &Wire {
        &self.wire
    }
}

/// For a message that answers a request (an id, no method) but that rmcp cannot
/// read: a JSON-RPC error answering that id, saying why.
fn unreadable_answer(
    message: &Message,
    why: &serde_json::Error,
) -> Option<rmcp::service::RxJsonRpcMessage<rmcp::RoleClient>> {
    if message.method().is_some() {
        return None;
    }
    let id = message.value().get("id").cloned()?;
    // rmcp says only "unrecognized JSON-RPC message"; the strict parser names a
    // repeated key when that is what is wrong.
    let reason = match crate::json::parse_str(message.text()) {
        Err(e) => e.to_string(),
        Ok(_) => why.to_string(),
    };
    let reason = crate::auth::callback::printable(&reason);
    serde_json::from_value(serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {"code": -32603, "message": format!(
            "the server's answer is not valid JSON-RPC ({reason}); report it to the server's operator"
        )},
    }))
    .ok()
}

impl rmcp::transport::Transport<rmcp::RoleClient> for WireTransport {
    type Error = WireError;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<rmcp::RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let wire = self.wire.clone();
        async move {
            let text = serde_json::to_string(&item).map_err(|e| WireError::Protocol {
                server: wire.inner.server.clone(),
                reason: format!("a message rmcp made does not serialize: {e}"),
            })?;
            let message = Message::parse(text).map_err(|e| WireError::Protocol {
                server: wire.inner.server.clone(),
                reason: format!("a message rmcp made is not JSON-RPC: {e}"),
            })?;
            let initialized = message.method() == Some("notifications/initialized");
            wire.send_message(&message).await?;
            if initialized && let Err(e) = wire.open_standalone_stream().await {
                tracing::debug!(error = %e, "no standalone stream");
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<rmcp::service::RxJsonRpcMessage<rmcp::RoleClient>> {
        loop {
            match self.inbound.recv().await? {
                Inbound::Message(v) => match serde_json::from_str(v.text()) {
                    Ok(m) => return Some(m),
                    Err(e) => {
                        // An answer rmcp cannot read still ends the request it answers,
                        // as an error; skipped, the request would wait forever.
                        if let Some(answer) = unreadable_answer(&v, &e) {
                            tracing::warn!(error = %e, "an answer rmcp cannot read");
                            return Some(answer);
                        }
                        tracing::warn!(error = %e, "a message rmcp cannot read; skipped");
                    }
                },
                // Legacy SSE: the stream is the connection.
                Inbound::StreamEnded(_) if self.wire.inner.config.kind == WireKind::LegacySse => {
                    return None;
                }
                Inbound::StreamEnded(_) => {
                    // The standalone stream ended: opened again, unless it keeps ending
                    // at once.
                    let quick = self.reopened.is_some_and(|t| t.elapsed() < QUICK_END);
                    self.quick_ends = if quick { self.quick_ends + 1 } else { 0 };
                    if self.quick_ends >= 3 {
                        tracing::info!("the server's standalone stream keeps ending; not reopened");
                        continue;
                    }
                    self.reopened = Some(tokio::time::Instant::now());
                    let wire = self.wire.clone();
                    tokio::spawn(async move {
                        if let Err(e) = wire.open_standalone_stream().await {
                            tracing::debug!(error = %e, "the standalone stream was not reopened");
                        }
                    });
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.wire.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::{Router, response::IntoResponse, routing::post};
    use serde_json::json;

    use super::*;

    /// Notifications a flooding server sends before its answer: ~40 MB, more than the
    /// sockets between the two can buffer (Linux lets a loopback connection grow to
    /// 32 MB received and 4 MB sent, unread).
    const FLOOD: usize = 40_000;

    /// Whether the flooding server got to its end.
    #[derive(Default)]
    struct Flood {
        done: AtomicBool,
    }

    /// A server that answers any POST with an event stream of [`FLOOD`] notifications
    /// of 1 KB, then the answer to id 1. It produces each event only when the socket
    /// takes the one before (hyper polls the body as it writes).
    async fn flooding_server() -> (Url, Arc<Flood>) {
        let flood = Arc::new(Flood::default());
        let f = flood.clone();
        let app = Router::new().route(
            "/mcp",
            post(move || {
                let f = f.clone();
                async move {
                    let pad = "x".repeat(1000);
                    let events = futures::stream::iter(0..=FLOOD).map(move |i| {
                        let data = if i < FLOOD {
                            json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"i": i, "pad": pad}})
                        } else {
                            f.done.store(true, Ordering::SeqCst);
                            json!({"jsonrpc": "2.0", "id": 1, "result": {}})
                        };
                        Ok::<_, std::convert::Infallible>(format!("event: message\ndata: {data}\n\n"))
                    });
                    (
                        [(header::CONTENT_TYPE, "text/event-stream")],
                        axum::body::Body::from_stream(events),
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, flood)
    }

    /// A server flooding a receiver that does not keep up is read no further until the
    /// receiver makes room: the server's own writes stall (TCP), keyway holds only its
    /// bounded queue, and once there is room every message arrives, in order.
    /// (Before, the reader delivered into an unbounded queue: a `keyway proxy` whose
    /// client did not read grew by gigabytes.)
    #[tokio::test]
    async fn a_flooding_server_is_held_back_while_the_receiver_is_behind() {
        let (url, flood) = flooding_server().await;
        let got = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Notify::new());
        let (held_tx, held) = oneshot::channel();
        let held_tx = Mutex::new(Some(held_tx));
        let sink: Sink = {
            let (got, release) = (got.clone(), release.clone());
            Arc::new(move |item| {
                let Inbound::Message(m) = item else {
                    return None;
                };
                let mut got = got.lock().unwrap();
                got.push(m.value()["params"]["i"].as_u64().unwrap());
                // Behind after 100 messages, once.
                if got.len() != 100 {
                    return None;
                }
                let tx = held_tx.lock().unwrap().take()?;
                let _ = tx.send(());
                let release = release.clone();
                Some(Box::pin(async move { release.notified().await }))
            })
        };
        let wire = Wire::connect_to(
            WireConfig {
                url,
                http: crate::http::WireClient::new(&Default::default()).unwrap(),
                tokens: Arc::new(crate::mcp::StaticToken::default()),
                headers: Vec::new(),
                kind: WireKind::StreamableHttp,
                deadlines: Deadlines::default(),
                protocol: Default::default(),
                last_protocol: None,
            },
            sink,
        )
        .await
        .unwrap();
        let call = tokio::spawn({
            let wire = wire.clone();
            async move {
                wire.call(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
                    .await
            }
        });
        let guard = std::time::Duration::from_secs(30);
        tokio::time::timeout(guard, held).await.unwrap().unwrap();
        // Held: the server cannot have got far past what the sockets buffer.
        assert!(
            !flood.done.load(Ordering::SeqCst),
            "the server was read to its end"
        );
        assert_eq!(got.lock().unwrap().len(), 100);

        release.notify_one();
        let answer = tokio::time::timeout(guard, call)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(answer["id"], 1);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), FLOOD, "every message arrived");
        assert!(
            got.iter().enumerate().all(|(i, n)| *n == i as u64),
            "in order"
        );
    }
}
