//! The MCP wire as raw JSON-RPC values, for the bridge and the gateway: a field
//! rmcp's types do not know must still reach the other side, so nothing here parses
//! messages into types. Streamable HTTP (POST per message, JSON or event-stream
//! answers, a standalone GET stream, session ids, DELETE on close) and the legacy
//! HTTP+SSE transport (a GET event stream that names the POST endpoint).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use http::HeaderName;
use reqwest::{StatusCode, header};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use url::Url;

pub use super::message::Message;
use super::{
    TokenSource,
    post::{Headers, Poster, Reply},
    sse::{Sse, SseError, SseStream},
};
use crate::Secret;

/// Largest single JSON answer or event keyway reads.
const MAX_MESSAGE: usize = super::sse::MAX_EVENT;

const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");

/// Why a message could not be delivered.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("the server needs authorization")]
    Unauthorized { challenge: Option<String> },
    #[error("the server refused: 403 {challenge}")]
    Forbidden { challenge: String },
    #[error("the session expired (404)")]
    SessionExpired,
    #[error("the connection failed: {0}")]
    Transport(String),
    #[error("the server answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("the connection is closed")]
    Closed,
}

impl WireError {
    /// A connection problem a reconnect may fix.
    pub fn is_dropped(&self) -> bool {
        matches!(
            self,
            Self::Transport(_) | Self::SessionExpired | Self::Closed
        )
    }
}

/// What arrives from the server.
#[derive(Debug)]
pub enum Inbound {
    Message(Message),
    /// The standalone stream (or the legacy SSE stream) ended or failed.
    StreamEnded(String),
}

/// Which transport to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireKind {
    StreamableHttp,
    LegacySse,
}

/// Everything needed to reach one server.
#[derive(Clone)]
pub struct WireConfig {
    pub url: Url,
    pub http: reqwest::Client,
    pub tokens: Arc<dyn TokenSource>,
    pub headers: Vec<(HeaderName, Secret)>,
    pub kind: WireKind,
}

impl std::fmt::Debug for WireConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WireConfig")
            .field("url", &self.url.as_str())
            .field("kind", &self.kind)
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
    inbound: Sink,
    state: Mutex<State>,
    /// Legacy SSE: signalled once the `endpoint` event arrived.
    endpoint_known: tokio::sync::Notify,
    /// Answers awaited by [`Wire::call`] that did not come on their own POST's stream,
    /// by the request id's JSON text.
    waiters: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The lean path for Streamable HTTP POSTs (`None`: they go through reqwest).
    poster: Option<Arc<Poster>>,
    /// The last `Authorization` value sent (marked sensitive: Debug does not show it),
    /// reused while the token stays the same.
    bearer: Mutex<Option<header::HeaderValue>>,
    /// The configured headers as header values (marked sensitive), made once.
    configured: Vec<(HeaderName, header::HeaderValue)>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("config", &self.config)
            .field("state", &self.state)
            .field("poster", &self.poster)
            .finish_non_exhaustive()
    }
}

/// A header value kept in [`State`] as text (they are all visible ASCII).
fn header_text(v: Option<&header::HeaderValue>) -> Option<String> {
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
    End(String),
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
    session: Option<header::HeaderValue>,
    protocol: Option<header::HeaderValue>,
    /// The id (JSON text) of an `initialize` request in flight (its answer names the
    /// version).
    initialize_id: Option<String>,
    /// Legacy SSE: where to POST, learned from the `endpoint` event.
    post_url: Option<Url>,
    closed: bool,
}

impl Wire {
    /// Open a connection. For legacy SSE this opens the event stream and waits for
    /// the `endpoint` event; for Streamable HTTP nothing is sent yet.
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
        let poster = match config.kind {
            WireKind::StreamableHttp => Poster::new(&config.url),
            WireKind::LegacySse => None,
        };
        // A value that is not a header value cannot be sent: it is left out, as
        // before, with a warning that names the header and not its value.
        let configured = config
            .headers
            .iter()
            .filter_map(|(k, v)| match header::HeaderValue::from_str(v.expose()) {
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
        let wire = Self {
            inner: Arc::new(Inner {
                poster,
                bearer: Mutex::default(),
                configured,
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

    pub fn url(&self) -> &Url {
        &self.inner.config.url
    }

    pub fn session_id(&self) -> Option<String> {
        header_text(self.state().session.as_ref())
    }

    pub fn protocol_version(&self) -> Option<String> {
        header_text(self.state().protocol.as_ref())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured headers and the bearer token for `uri`, added to `headers`.
    async fn add_credentials(&self, headers: &mut Headers, uri: &str) -> Result<(), WireError> {
        let c = &self.inner.config;
        for (k, v) in &self.inner.configured {
            headers.put(k.clone(), v.clone());
        }
        match c.tokens.bearer(uri).await {
            Ok(Some(t)) => {
                let mut last = self.inner.bearer.lock().unwrap_or_else(|p| p.into_inner());
                let value = match &*last {
                    Some(v)
                        if v.as_bytes().strip_prefix(b"Bearer ") == Some(t.secret().as_bytes()) =>
                    {
                        v.clone()
                    }
                    _ => {
                        let mut v =
                            header::HeaderValue::from_str(&format!("Bearer {}", t.secret()))
                                .map_err(|_| {
                                    WireError::Transport(
                                        "credentials: the token is not a header value".into(),
                                    )
                                })?;
                        v.set_sensitive(true);
                        *last = Some(v.clone());
                        v
                    }
                };
                headers.put(header::AUTHORIZATION, value);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) => Err(WireError::Transport(format!("credentials: {e}"))),
        }
    }

    async fn auth(
        &self,
        req: reqwest::RequestBuilder,
        uri: &str,
    ) -> Result<reqwest::RequestBuilder, WireError> {
        let mut headers = Headers::with_capacity(1 + self.inner.configured.len());
        self.add_credentials(&mut headers, uri).await?;
        Ok(req.headers(headers.into_map()))
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
        match self.inner.config.kind {
            WireKind::StreamableHttp => self.send_streamable(message, None).await.map(drop),
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
            .ok_or_else(|| WireError::Transport("a request without an id".into()))?
            .to_owned();
        let (tx, rx) = oneshot::channel();
        self.waiters().insert(key.clone(), tx);
        let waiting = Waiting { wire: self, key };
        let answer = match self.inner.config.kind {
            WireKind::StreamableHttp => self.send_streamable(&request, Some(&waiting.key)).await?,
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
        answer_to: Option<&str>,
    ) -> Result<Option<Message>, WireError> {
        let c = &self.inner.config;
        let is_initialize = message.method() == Some("initialize");
        let (session, protocol) = {
            let mut st = self.state();
            if is_initialize {
                st.initialize_id = message.id().map(str::to_owned);
                st.session = None;
            }
            (st.session.clone(), st.protocol.clone())
        };
        let mut headers = Headers::with_capacity(6 + self.inner.configured.len());
        headers.put(
            header::ACCEPT,
            header::HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.put(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if let Some(s) = &session {
            headers.put(SESSION_ID, s.clone());
        }
        if let Some(p) = protocol {
            headers.put(PROTOCOL_VERSION, p);
        }
        self.add_credentials(&mut headers, c.url.as_str()).await?;
        let body = message.text().as_bytes();
        let resp = match &self.inner.poster {
            Some(poster) => {
                headers.put(
                    header::USER_AGENT,
                    header::HeaderValue::from_static(crate::http::USER_AGENT),
                );
                poster
                    .post(&headers, body)
                    .await
                    .map_err(WireError::Transport)?
            }
            None => Reply::from_reqwest(
                c.http
                    .post(c.url.clone())
                    .headers(headers.into_map())
                    .body(bytes::Bytes::copy_from_slice(body))
                    .send()
                    .await
                    .map_err(|e| WireError::Transport(crate::auth::fetch_describe(&e)))?,
            ),
        };
        let status = resp.status;
        if let Some(id) = resp.headers.get(SESSION_ID)
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
                    let Some(key) = answer_to else {
                        let events = SseStream::new(resp.body);
                        if message.is_request() {
                            // Its answer and what comes with it, read on the sender's
                            // own task: a task per stream would cost a spawn and a
                            // hand-off for every request.
                            self.read_events(events, false).await;
                        } else {
                            let wire = self.clone();
                            tokio::spawn(async move { wire.read_events(events, false).await });
                        }
                        return Ok(None);
                    };
                    Ok(self.read_answer(SseStream::new(resp.body), key).await)
                } else {
                    let body = read_limited(resp).await?;
                    if body.iter().all(u8::is_ascii_whitespace) {
                        return Ok(None);
                    }
                    let not_json = |e: String| WireError::Http {
                        status: s.as_u16(),
                        body: format!("not JSON: {e}"),
                    };
                    let text = String::from_utf8(body).map_err(|e| not_json(e.to_string()))?;
                    let v = Message::parse(text).map_err(|e| not_json(e.to_string()))?;
                    match answer_to {
                        Some(key) if v.answers(key) => {
                            self.note_answer(&v);
                            Ok(Some(v))
                        }
                        _ => {
                            if let Some(full) = self.deliver(v) {
                                full.await;
                            }
                            Ok(None)
                        }
                    }
                }
            }
            _ => Err(self.http_error(resp, session.is_some()).await),
        }
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
                let body = read_limited(resp).await.unwrap_or_default();
                WireError::Http {
                    status: s.as_u16(),
                    body: crate::auth::fetch_snippet(&body),
                }
            }
        }
    }

    /// Note the protocol version an `initialize` answer names.
    fn note_answer(&self, v: &Message) {
        let mut st = self.state();
        if let Some(id) = &st.initialize_id
            && v.id() == Some(id.as_str())
        {
            st.protocol = v
                .value()
                .get("result")
                .and_then(|r| r.get("protocolVersion"))
                .and_then(Value::as_str)
                .and_then(|p| header::HeaderValue::from_str(p).ok());
            st.initialize_id = None;
        }
    }

    /// One JSON-RPC message (or batch) from the server: to whoever [`Wire::call`]s for
    /// it, else to the inbound channel; what to wait for before reading more.
    #[must_use = "the reader waits on backpressure before reading more"]
    fn deliver(&self, v: Message) -> Option<Backpressure> {
        self.note_answer(&v);
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
            Err(e) => return Event::End(format!("the stream broke: {e}")),
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
                    reason = why;
                    break;
                }
            }
        }
        if standalone && let Some(full) = (self.inner.inbound)(Inbound::StreamEnded(reason)) {
            full.await;
        }
    }

    /// Read a POST's stream until the answer with id `key` (returned, not delivered).
    /// What follows it is read here if it has already arrived (the usual end of the
    /// stream, so the connection goes back to the pool), else by a task of its own.
    async fn read_answer(&self, mut events: SseStream, key: &str) -> Option<Message> {
        let mut answer = None;
        while let Some(ev) = events.next().await {
            match self.event(ev) {
                Event::Message(v) if v.answers(key) => {
                    self.note_answer(&v);
                    answer = Some(v);
                    break;
                }
                Event::Message(v) => {
                    if let Some(full) = self.deliver(v) {
                        full.await;
                    }
                }
                Event::Skip => {}
                Event::End(_) => return None,
            }
        }
        answer.as_ref()?;
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
        answer
    }

    /// After `notifications/initialized`: the standalone stream for server-initiated
    /// messages (a 405 means the server has none).
    pub async fn open_standalone_stream(&self) -> Result<(), WireError> {
        if self.inner.config.kind != WireKind::StreamableHttp {
            return Ok(());
        }
        let c = &self.inner.config;
        let (session, protocol) = {
            let st = self.state();
            (st.session.clone(), st.protocol.clone())
        };
        let mut req = c
            .http
            .get(c.url.clone())
            .header(header::ACCEPT, "text/event-stream");
        if let Some(s) = &session {
            req = req.header(SESSION_ID, s);
        }
        if let Some(p) = &protocol {
            req = req.header(PROTOCOL_VERSION, p);
        }
        let req = self.auth(req, c.url.as_str()).await?;
        let resp = Reply::from_reqwest(
            req.send()
                .await
                .map_err(|e| WireError::Transport(crate::auth::fetch_describe(&e)))?,
        );
        match resp.status {
            s if s.is_success() => {
                let wire = self.clone();
                let events = SseStream::new(resp.body);
                tokio::spawn(async move { wire.read_events(events, true).await });
                Ok(())
            }
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND if session.is_none() => Ok(()),
            StatusCode::METHOD_NOT_ALLOWED => Ok(()),
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
        let req = c
            .http
            .delete(c.url.clone())
            .header(SESSION_ID, session)
            .timeout(Duration::from_secs(5));
        if let Ok(req) = self.auth(req, c.url.as_str()).await
            && let Err(e) = req.send().await
        {
            tracing::debug!(error = %e, "DELETE of the session failed");
        }
    }

    // ------------------------------------------------------------ legacy SSE

    async fn open_legacy_stream(&self) -> Result<(), WireError> {
        let c = &self.inner.config;
        let req = c
            .http
            .get(c.url.clone())
            .header(header::ACCEPT, "text/event-stream");
        let req = self.auth(req, c.url.as_str()).await?;
        let resp = Reply::from_reqwest(
            req.send()
                .await
                .map_err(|e| WireError::Transport(crate::auth::fetch_describe(&e)))?,
        );
        if !resp.status.is_success() {
            return Err(self.http_error(resp, false).await);
        }
        let wire = self.clone();
        let events = SseStream::new(resp.body);
        tokio::spawn(async move { wire.read_events(events, true).await });
        match tokio::time::timeout(
            Duration::from_secs(10),
            self.inner.endpoint_known.notified(),
        )
        .await
        {
            Ok(()) => Ok(()),
            Err(_) => Err(WireError::Transport(
                "the SSE stream named no endpoint within 10 s".into(),
            )),
        }
    }

    fn set_endpoint(&self, data: &str) {
        let base = &self.inner.config.url;
        match base.join(data.trim()) {
            // The endpoint must stay on the server's origin: a token is sent there.
            Ok(u) if u.origin() == base.origin() => {
                self.state().post_url = Some(u);
                self.inner.endpoint_known.notify_one();
            }
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
        let c = &self.inner.config;
        let req = c
            .http
            .post(post_url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(message.text().to_owned());
        let req = self.auth(req, c.url.as_str()).await?;
        let resp = Reply::from_reqwest(
            req.send()
                .await
                .map_err(|e| WireError::Transport(crate::auth::fetch_describe(&e)))?,
        );
        if resp.status.is_success() {
            Ok(())
        } else {
            Err(self.http_error(resp, false).await)
        }
    }
}

async fn read_limited(resp: Reply) -> Result<Vec<u8>, WireError> {
    let status = resp.status.as_u16();
    resp.read_capped(MAX_MESSAGE)
        .await
        .map_err(|body| WireError::Http { status, body })
}

/// rmcp's client `Transport` over a [`Wire`]: lets the typed client (handshakes, tool
/// lists) use the legacy SSE transport, which rmcp itself no longer has.
#[derive(Debug)]
pub struct WireTransport {
    wire: Wire,
    inbound: mpsc::Receiver<Inbound>,
}

impl WireTransport {
    pub fn new(wire: Wire, inbound: mpsc::Receiver<Inbound>) -> Self {
        Self { wire, inbound }
    }
}

impl rmcp::transport::Transport<rmcp::RoleClient> for WireTransport {
    type Error = WireError;

    fn send(
        &mut self,
        item: rmcp::service::TxJsonRpcMessage<rmcp::RoleClient>,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send + 'static {
        let wire = self.wire.clone();
        async move {
            let v = serde_json::to_value(&item).map_err(|e| WireError::Transport(e.to_string()))?;
            wire.send(&v).await?;
            if v.get("method").and_then(Value::as_str) == Some("notifications/initialized")
                && let Err(e) = wire.open_standalone_stream().await
            {
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
                    Err(e) => tracing::warn!(error = %e, "a message rmcp cannot read; skipped"),
                },
                // Legacy SSE: the stream is the connection.
                Inbound::StreamEnded(_) if self.wire.inner.config.kind == WireKind::LegacySse => {
                    return None;
                }
                Inbound::StreamEnded(_) => {}
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
                http: crate::http::client().unwrap(),
                tokens: Arc::new(crate::mcp::StaticToken::default()),
                headers: Vec::new(),
                kind: WireKind::StreamableHttp,
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
