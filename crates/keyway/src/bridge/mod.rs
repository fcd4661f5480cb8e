//! The stdio bridge: a local MCP client on newline-delimited JSON-RPC (stdin/stdout)
//! to one remote server, message for message, as raw JSON (unknown fields survive).
//!
//! It keeps the remote side working: a 401 asks the owner to authorize (once, however
//! many requests hit it), a 403 insufficient_scope asks for a step-up, a dropped
//! connection or an expired session is re-initialized once with the client's own
//! `initialize` (its answer is swallowed: the client already has one) and the failed
//! message is sent again. A request that cannot be delivered gets a JSON-RPC error, so
//! the client never hangs. Only MCP frames go to stdout.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncRead, AsyncWrite, BufReader},
    sync::{Notify, mpsc, oneshot},
};

mod modern;
mod reverse;

pub use modern::{MAX_REQUEST_STATE, MAX_ROUNDS};

use crate::{
    auth::challenge,
    client::{ClientError, Policy},
    mcp::wire::{Backpressure, Inbound, Message, Protocol, Wire, WireConfig, WireError, WireKind},
    merge::ToolFilter,
    stdio::Line,
};

/// What the bridge asks of its owner when the server wants (more) authorization.
/// [`crate::client::Policy`] is keyway's; a test may bring its own.
#[async_trait::async_trait]
pub trait Authorize: Send + Sync {
    /// The server answered 401. `Ok` once new credentials are in place (the token
    /// source picks them up); `Err` with what the person should do.
    async fn unauthorized(&self, challenge: Option<String>) -> Result<(), ClientError>;
    /// The server answered 403 for `operation` (a step-up when it says
    /// `insufficient_scope`).
    async fn insufficient_scope(&self, challenge: &str, operation: &str)
    -> Result<(), ClientError>;
    /// Asked before reconnecting: `false` when the server was removed or disabled
    /// meanwhile (then nothing is reconnected).
    async fn still_wanted(&self) -> bool {
        true
    }
    /// A message reached the server after an authorization or step-up: the session
    /// works again (a cap on sign-ins may start over).
    fn delivered_after_authorizing(&self) {}
    /// `operation` got through after an authorization: its step-up count starts
    /// again (the cap is per attempt, not per session).
    async fn operation_done(&self, _operation: &str) {}
    /// The server was found to speak `revision` (`None`: what it speaks is in doubt,
    /// so the next start asks); a saved server remembers it.
    async fn spoke(&self, _revision: Option<&str>) {}
}

#[async_trait::async_trait]
impl Authorize for Policy {
    async fn unauthorized(&self, challenge: Option<String>) -> Result<(), ClientError> {
        // The proxy's flows are capped by the sign-in limit (a message getting through
        // resets it), not per operation.
        Policy::unauthorized(self, challenge, None).await
    }

    async fn insufficient_scope(
        &self,
        challenge: &str,
        operation: &str,
    ) -> Result<(), ClientError> {
        Policy::insufficient_scope(self, challenge, operation).await
    }

    async fn still_wanted(&self) -> bool {
        Policy::still_wanted(self).await
    }

    async fn operation_done(&self, operation: &str) {
        Policy::operation_done(self, operation).await
    }

    fn delivered_after_authorizing(&self) {
        self.delivered();
    }

    async fn spoke(&self, revision: Option<&str>) {
        Policy::spoke(self, revision).await;
    }
}

/// JSON-RPC error code for "the bridge could not deliver this request".
pub const DELIVERY_FAILED: i64 = -32000;

/// Why the bridge could not deliver a client's message (the client hears it as a
/// [`DELIVERY_FAILED`] error whose message is this one's text).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// A 403 that is not a step-up.
    #[error("the server refused {operation} (403 Forbidden)")]
    Forbidden {
        /// The method, or `tools/call TOOL`.
        operation: String,
    },
    /// The connection broke after the request was sent, and sending it again could
    /// make the server act twice.
    #[error("{0} (not sent again: the server may have acted on it)")]
    NotResent(WireError),
    /// The request failed.
    #[error(transparent)]
    Wire(WireError),
    /// Authorizing (or stepping up) for the server failed.
    #[error(transparent)]
    Authorization(ClientError),
    /// The server was removed or disabled meanwhile.
    #[error("the server was removed or disabled; not reconnecting")]
    Unwanted,
    /// A new connection could not be made.
    #[error("reconnecting failed: {0}")]
    Reconnect(WireError),
    /// The client's `initialize` could not be sent again on the new connection.
    #[error("re-initializing failed: {0}")]
    Reinitialize(WireError),
    /// No answer to the replayed `initialize` in time.
    #[error("the server did not answer the re-initialize")]
    ReinitializeTimedOut,
    /// The connection closed before the replayed `initialize` was answered.
    #[error("the connection closed during the re-initialize")]
    ReinitializeClosed,
    /// The server answered the replayed `initialize` with this JSON-RPC error.
    #[error("the server refused the re-initialize: {0}")]
    ReinitializeRefused(Value),
}

/// The standalone stream for server-initiated messages is opened once the client's
/// start-up burst (initialize, initialized, tools/list, a first call...) has settled:
/// this long without a message from the client, or at the latest [`SETTLE_MAX`] after
/// `initialized`. Start-up then costs the server only the client's own requests, and
/// the stream's connection does not compete with them.
const SETTLE_QUIET: std::time::Duration = std::time::Duration::from_millis(50);
const SETTLE_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Counts, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages from the client delivered to the server.
    pub to_server: u64,
    /// Messages from the server passed on to the client (not keyway's own answers).
    pub to_client: u64,
    /// Sessions re-initialized after a dropped connection or an expired session.
    pub reconnects: u64,
    /// Authorizations and step-ups that succeeded.
    pub authorizations: u64,
}

struct Shared {
    wire: Wire,
    authorize: Arc<dyn Authorize>,
    route: Arc<Route>,
    /// The client's `initialize` request, replayed on reconnect.
    initialize: Mutex<Option<Message>>,
    /// Bumped by every reconnect and authorization, so concurrent failures share one.
    generation: AtomicU64,
    recover: tokio::sync::Mutex<()>,
    initialized: std::sync::atomic::AtomicBool,
    /// When the client last sent something, until the standalone stream is opened.
    last_activity: Mutex<tokio::time::Instant>,
    settled: std::sync::atomic::AtomicBool,
    /// An authorization or step-up succeeded, and no message got through since.
    authorized_unproven: std::sync::atomic::AtomicBool,
    /// How the two sides speak to each other, once the client's first request decided
    /// it.
    era: std::sync::OnceLock<Era>,
    /// What `--protocol` asked for.
    protocol: Protocol,
    /// The revision the server spoke last time (a saved server's record).
    last_protocol: Option<String>,
}

/// How the client and the server speak to each other.
#[derive(Clone)]
enum Era {
    /// The same generation on both sides: messages pass as they are.
    Same,
    /// A handshake-era client, a 2026-07-28 server: translated ([`modern`]).
    Translated(Arc<modern::Translator>),
    /// A 2026-07-28 client, a handshake-era server: translated ([`reverse`]).
    Reverse(Arc<reverse::Reverse>),
}

impl Shared {
    fn stats(&self) -> std::sync::MutexGuard<'_, BridgeStats> {
        self.route.stats()
    }

    /// A batch refused (-32600, Invalid Request) for `why`.
    fn refuse_batch(&self, why: &str) {
        self.out(Message::from_value(&json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": -32600, "message": format!("{why}; send the messages one by one")}
        })));
    }

    /// A message of the bridge's own to the client (held back, if need be, by the
    /// main loop, which reads no more of stdin while stdout is behind).
    fn out(&self, message: Message) {
        let _ = self.route.out.send(&message);
    }
}

/// Where the server's messages go, decided on the task that read them (no hand-off
/// per message): answers to keyway's own requests to their waiters, the rest to the
/// client; the end of the server's standalone stream to [`reopen_streams`].
struct Route {
    out: Arc<Out>,
    /// Answers to keyway's own requests (the replayed initialize), by id.
    internal: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The tools left out ([`BridgeOptions::ignore_tools`]), and the ids of the
    /// client's `tools/list` requests whose answers are to be filtered. Empty (and
    /// never locked) without a filter.
    filter: ToolFilter,
    filtered: Mutex<std::collections::HashSet<String>>,
    stats: Mutex<BridgeStats>,
    /// At most one end waits here: a second one while a reopen is pending adds nothing.
    stream_ended: mpsc::Sender<String>,
    /// For a client that cannot take the server's own requests and change
    /// notifications as they are (a 2026-07-28 client of a handshake server): where
    /// they go instead ([`reverse`]).
    server_requests: std::sync::OnceLock<mpsc::UnboundedSender<Message>>,
}

impl Route {
    fn stats(&self) -> std::sync::MutexGuard<'_, BridgeStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn internal(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.internal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Route one message; backpressure while the client's stdout is behind.
    fn take(&self, item: Inbound) -> Option<Backpressure> {
        match item {
            // The end of a `subscriptions/listen` handshake: nothing for a client of
            // a handshake revision.
            Inbound::Message(v)
                if v.method() == Some("notifications/subscriptions/acknowledged") => {}
            Inbound::Message(v)
                if (v.is_request() || reverse::is_change(v.method()))
                    && let Some(server_requests) = self.server_requests.get() =>
            {
                let _ = server_requests.send(v);
            }
            Inbound::Message(mut v) => {
                // Only an answer: the server's own requests carry ids of their own
                // counter, which may equal a client's.
                if !self.filter.is_empty()
                    && v.is_answer()
                    && let Some(id) = v.id()
                    && self
                        .filtered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(id)
                {
                    v = self.without_ignored_tools(&v);
                }
                // keyway's own ids are JSON strings: `"keyway-..."`.
                let internal = v
                    .id()
                    .filter(|id| id.starts_with("\"keyway-"))
                    .and_then(|id| self.internal().remove(id.trim_matches('"')));
                match internal {
                    Some(tx) => {
                        let _ = tx.send(v.value());
                    }
                    None => {
                        self.stats().to_client += 1;
                        if self.out.send(&v) {
                            return self.out.room();
                        }
                    }
                }
            }
            Inbound::StreamEnded(why) => {
                let _ = self.stream_ended.try_send(why);
            }
        }
        None
    }
}

impl Route {
    /// A `tools/list` answer without the tools left out.
    fn without_ignored_tools(&self, answer: &Message) -> Message {
        let mut value = answer.value();
        if let Some(tools) = value
            .pointer_mut("/result/tools")
            .and_then(Value::as_array_mut)
        {
            tools.retain(|t| {
                !t.get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|n| self.filter.ignores(n))
            });
            return Message::from_value(&value);
        }
        answer.clone()
    }
}

/// How a bridge treats what passes through.
#[derive(Clone, Debug, Default)]
pub struct BridgeOptions {
    /// Tools the client never sees (`--ignore-tool`): left out of `tools/list`
    /// answers, and a `tools/call` of one is answered "unknown tool" without reaching
    /// the server.
    pub ignore_tools: ToolFilter,
}

/// Run the bridge until the client closes stdin (or stdout breaks).
pub async fn run<R, W>(
    config: WireConfig,
    authorize: Arc<dyn Authorize>,
    input: R,
    output: W,
) -> Result<BridgeStats, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    run_with(config, authorize, input, output, BridgeOptions::default()).await
}

/// [`run`], with [`BridgeOptions`].
pub async fn run_with<R, W>(
    config: WireConfig,
    authorize: Arc<dyn Authorize>,
    input: R,
    output: W,
    options: BridgeOptions,
) -> Result<BridgeStats, WireError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let out = Arc::new(Out::new(Box::new(output)));
    let (ended_tx, ended_rx) = mpsc::channel(1);
    let route = Arc::new(Route {
        out: out.clone(),
        internal: Mutex::new(HashMap::new()),
        filter: options.ignore_tools,
        filtered: Mutex::new(Default::default()),
        stats: Mutex::new(BridgeStats::default()),
        stream_ended: ended_tx,
        server_requests: std::sync::OnceLock::new(),
    });
    let sink = route.clone();
    let protocol = config.protocol.clone();
    let last_protocol = config.last_protocol.clone();
    let wire = Wire::connect_to(config, Arc::new(move |item| sink.take(item))).await?;
    let shared = Arc::new(Shared {
        wire,
        authorize,
        route,
        initialize: Mutex::new(None),
        generation: AtomicU64::new(0),
        recover: tokio::sync::Mutex::new(()),
        initialized: Default::default(),
        last_activity: Mutex::new(tokio::time::Instant::now()),
        settled: Default::default(),
        authorized_unproven: Default::default(),
        era: Default::default(),
        protocol,
        last_protocol,
    });
    let (finish, finished) = oneshot::channel();
    let writer = tokio::spawn(write_out(out, finished));
    let reopener = tokio::spawn(reopen_streams(shared.clone(), ended_rx));

    let mut input = BufReader::new(input);
    let mut lines = crate::stdio::LineSplitter::new(crate::mcp::MAX_MESSAGE);
    let tasks = tokio_util::task::TaskTracker::new();
    // The latest request, run on this task while the client waits for it: a client
    // that sends one request at a time costs no task per request. Should the client
    // send something else meanwhile, the request moves to a task of its own (it is
    // boxed, so moving it moves a pointer) and runs on beside the rest.
    let mut current: Option<BoxFuture<'static, ()>> = None;
    // Whether `current` is the client's `initialize`: until its answer there is no
    // session upstream, so what the client sends meanwhile (an eager
    // `notifications/initialized`, a first `tools/list`) waits for it rather than
    // reach the server without a session and be refused.
    let mut current_initializes = false;
    loop {
        // The client does not read its stdout: read no more from it either until it
        // does (its own requests keep running meanwhile).
        if let Some(full) = shared.route.out.room() {
            match current.as_mut() {
                None => full.await,
                Some(request) => {
                    tokio::select! {
                        () = full => {}
                        () = request => current = None,
                    }
                    continue;
                }
            }
        }
        let read = match current.as_mut() {
            None => crate::stdio::next_line(&mut input, &mut lines).await,
            Some(request) => tokio::select! {
                // `next_line` is cancel-safe: a line half read stays in the buffer.
                read = crate::stdio::next_line(&mut input, &mut lines) => read,
                () = request => {
                    current = None;
                    continue;
                }
            },
        };
        if let Some(request) = current.take() {
            if std::mem::take(&mut current_initializes) {
                request.await;
            } else {
                tasks.spawn(request);
            }
        }
        let line = match read {
            Ok(Some(Line::Text(l))) => l,
            Ok(Some(unusable)) => {
                shared.out(Message::from_value(&unreadable_line(&unusable)));
                continue;
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed");
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if !shared.settled.load(Ordering::Relaxed) {
            *shared
                .last_activity
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        }
        let message = match Message::parse(line) {
            Ok(m) => m,
            Err(e) => {
                shared.out(Message::from_value(&json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": format!("parse error: {e}")}})));
                continue;
            }
        };
        let (translator, reversed) = match shared.era.get() {
            Some(Era::Translated(t)) => (Some(t.clone()), None),
            Some(Era::Reverse(r)) => (None, Some(r.clone())),
            _ => (None, None),
        };
        if message.method() == Some("initialize") && translator.is_none() {
            *shared.initialize.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        }
        if translator.is_some() && message.text().trim_start().starts_with('[') {
            // 2026-07-28 has no batches, and keyway does not take one apart.
            shared.refuse_batch("the server speaks MCP 2026-07-28, which has no batches");
            continue;
        }
        if let Some(t) = &translator
            && !message.is_request()
        {
            if !t.answered(&message) {
                t.notification(&shared, &message);
            }
            continue;
        }
        if !shared.route.filter.is_empty() && message.text().trim_start().starts_with('[') {
            // A batch would carry its tools/list and tools/call past the filter (and
            // MCP dropped batches in 2025-06-18): refused while tools are hidden.
            shared.refuse_batch("keyway does not pass batches while --ignore-tool hides tools");
            continue;
        }
        if !shared.route.filter.is_empty() && message.is_request() {
            match message.method() {
                Some("tools/list") => {
                    if let Some(id) = message.id().filter(|_| translator.is_none()) {
                        shared
                            .route
                            .filtered
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.to_owned());
                    }
                }
                Some("tools/call") => {
                    let value = message.value();
                    let name = value
                        .pointer("/params/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if shared.route.filter.ignores(name) {
                        shared.out(Message::from_value(&json!({
                            "jsonrpc": "2.0",
                            "id": value.get("id").cloned().unwrap_or(Value::Null),
                            "error": {"code": -32602, "message": format!("unknown tool: {name}")}
                        })));
                        continue;
                    }
                }
                _ => {}
            }
        }
        if let Some(r) = &reversed
            && !message.is_request()
        {
            reverse::notification(&shared, r, message).await;
            continue;
        }
        if message.is_request() {
            // Requests run side by side; a slow one does not hold up the others.
            let s = shared.clone();
            current_initializes = false;
            current = Some(match (translator, reversed) {
                (Some(t), _) => Box::pin(modern::request(s, t, message)),
                (None, Some(r)) => Box::pin(reverse::request(s, r, message)),
                (None, None) if message.method() == Some("initialize") && s.era.get().is_none() => {
                    current_initializes = true;
                    Box::pin(start(s, message))
                }
                // A 2026-07-28 client's first request: which generation the server
                // speaks decides whether it passes as it is.
                (None, None)
                    if s.era.get().is_none() && crate::mcp::modern::may_be_modern(&message) =>
                {
                    current_initializes = true;
                    Box::pin(reverse::start(s, message))
                }
                (None, None) => Box::pin(async move { deliver(&s, message).await }),
            });
        } else {
            // Notifications and answers keep their order (initialized before the rest).
            deliver(&shared, message).await;
        }
    }
    // The client is gone: nobody will answer keyway's questions on its behalf.
    match shared.era.get() {
        Some(Era::Translated(t)) => t.stop(),
        Some(Era::Reverse(r)) => r.stop(),
        _ => {}
    }
    if let Some(request) = current.take() {
        request.await;
    }
    tasks.close();
    tasks.wait().await;
    shared.wire.close().await;
    reopener.abort();
    let stats = *shared.stats();
    drop(shared);
    // A task still reading a server stream holds the wire, and through its sink a
    // sender of client messages: the writer is told to finish with what is queued.
    let _ = finish.send(());
    let _ = writer.await;
    Ok(stats)
}

/// The JSON-RPC parse error (`id` null: it cannot be read) answering a line of the
/// client's that is not a message at all.
pub(crate) fn unreadable_line(line: &Line) -> Value {
    let why = match line {
        Line::TooLong { bytes } => format!(
            "parse error: a line of {bytes} bytes; keyway takes messages of at most {} MiB",
            crate::mcp::MAX_MESSAGE >> 20
        ),
        Line::NotUtf8 => "parse error: the line is not UTF-8".to_owned(),
        Line::Text(_) => "parse error".to_owned(),
    };
    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": why}})
}

/// The client's first `initialize`: which revision to speak upstream. A 2026-07-28
/// server (told by `server/discover`) is translated for, and the client answered here;
/// any other server gets the client's own `initialize`. A saved server that spoke a
/// handshake revision last time gets the `initialize` at once, and is asked only if
/// it refuses that.
async fn start(s: Arc<Shared>, message: Message) {
    let id = message.value().get("id").cloned().unwrap_or(Value::Null);
    let refuse = |why: String| {
        s.out(Message::from_value(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": {"code": DELIVERY_FAILED, "message": why}
        })));
    };
    let streamable = s.wire.kind() == WireKind::StreamableHttp;
    let mut refused_handshake = None;
    if s.protocol == Protocol::Auto
        && streamable
        && s.last_protocol
            .as_deref()
            .is_some_and(|v| !crate::mcp::modern::is_modern(v))
    {
        match handshake(&s, &message).await {
            Ok(()) => return,
            Err(answer) => {
                tracing::info!(
                    "{} refused the handshake it took last time; asking what it speaks",
                    s.wire.url()
                );
                s.authorize.spoke(None).await;
                refused_handshake = Some(answer);
            }
        }
    }
    let wants_modern = match &s.protocol {
        Protocol::Auto => streamable,
        Protocol::Exactly(v) => crate::mcp::modern::is_modern(v),
    };
    if wants_modern {
        if !streamable {
            return refuse("--protocol 2026-07-28 needs Streamable HTTP, not legacy SSE".into());
        }
        match modern::discover(&s, &message).await {
            Ok(modern::Discovered::Modern(t)) => {
                let t: Arc<modern::Translator> = Arc::from(t);
                let _ = s.era.set(Era::Translated(t.clone()));
                tracing::info!(
                    "{} speaks 2026-07-28: translating for the client",
                    s.wire.url()
                );
                s.authorize
                    .spoke(Some(crate::mcp::modern::MODERN_VERSION))
                    .await;
                s.out(t.initialize_answer(&id));
                return;
            }
            Ok(modern::Discovered::Legacy(why)) if s.protocol == Protocol::Auto => {
                if let Some(answer) = refused_handshake {
                    // Neither generation: the handshake's refusal says what is wrong.
                    let _ = s.era.set(Era::Same);
                    return s.out(answer);
                }
                tracing::info!("{}: {why}; passing the handshake through", s.wire.url());
            }
            Ok(modern::Discovered::Legacy(why)) => {
                return refuse(format!(
                    "--protocol 2026-07-28 was asked for, but {why}; use --protocol auto"
                ));
            }
            Err(why) => {
                return refuse(format!("keyway could not deliver initialize: {why}"));
            }
        }
    }
    if let Err(answer) = handshake(&s, &message).await {
        let _ = s.era.set(Era::Same);
        s.out(answer);
    }
}

/// The client's `initialize`, sent upstream as it is. `Ok`: the server took it (the
/// client has its answer, and the handshake era is set); `Err`: its refusal or why
/// it could not be delivered, as the answer for the client.
async fn handshake(s: &Arc<Shared>, initialize: &Message) -> Result<(), Message> {
    match recovering(s, initialize, || s.wire.call_message(initialize.clone())).await {
        Ok(answer) => {
            let version = answer
                .value()
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match version {
                Some(v) => {
                    let _ = s.era.set(Era::Same);
                    s.authorize.spoke(Some(&v)).await;
                    s.stats().to_client += 1;
                    s.out(answer);
                    Ok(())
                }
                None => Err(answer),
            }
        }
        Err(why) => {
            tracing::warn!("could not deliver initialize: {why}");
            let id = initialize.value().get("id").cloned();
            Err(Message::from_value(&json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {"code": DELIVERY_FAILED, "message": format!("keyway could not deliver initialize: {why}")}
            })))
        }
    }
}

/// Send one client message, recovering from what can be recovered.
async fn deliver(s: &Arc<Shared>, message: Message) {
    let is_request = message.is_request();
    let method = message.method().unwrap_or("");
    // Answers come back through the inbound stream, in order with whatever the server
    // sent before them (progress, its own requests).
    let result = recovering(s, &message, || s.wire.send_message(&message)).await;
    match result {
        Ok(()) => {
            if method == "notifications/initialized" {
                s.initialized.store(true, Ordering::SeqCst);
                tokio::spawn(open_when_settled(s.clone()));
            }
        }
        Err(why) => {
            tracing::warn!(method, "could not deliver: {why}");
            if is_request {
                let id = message.value().get("id").cloned();
                s.out(Message::from_value(&json!({
                    "jsonrpc": "2.0",
                    "id": id,
                    "error": {"code": DELIVERY_FAILED, "message": format!("keyway could not deliver {method}: {why}")}
                })));
            }
        }
    }
}

/// Run `attempt` (a send of `message`) until it gets through, recovering from what
/// can be recovered: a 401 (authorize, twice at most), a 403 insufficient_scope (a
/// step-up), a dropped connection (reconnect once, when sending again cannot make the
/// server act twice). `Err`: why it could not be delivered.
async fn recovering<T, F, Fut>(
    s: &Arc<Shared>,
    message: &Message,
    mut attempt: F,
) -> Result<T, DeliveryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WireError>>,
{
    let is_request = message.is_request();
    let method = message.method().unwrap_or("");
    // What a step-up is for (only needed on a 403, so only worked out then).
    let operation = || match (
        method,
        message
            .value()
            .pointer("/params/name")
            .and_then(Value::as_str),
    ) {
        ("tools/call", Some(tool)) => format!("tools/call {tool}"),
        _ => method.to_owned(),
    };
    let mut reconnected = false;
    let mut authorizations = 0;
    loop {
        let generation = s.generation.load(Ordering::SeqCst);
        match attempt().await {
            Ok(answer) => {
                s.stats().to_server += 1;
                if s.authorized_unproven.load(Ordering::Relaxed)
                    && s.authorized_unproven.swap(false, Ordering::SeqCst)
                {
                    s.authorize.delivered_after_authorizing();
                }
                if authorizations > 0 {
                    s.authorize.operation_done(&operation()).await;
                }
                break Ok(answer);
            }
            Err(WireError::Unauthorized { challenge }) if authorizations < 2 => {
                authorizations += 1;
                if let Err(e) = recover(s, generation, Recovery::Authorize(challenge)).await {
                    break Err(e);
                }
            }
            Err(WireError::Forbidden { challenge }) if authorizations < 3 => {
                let step_up = challenge::bearer([challenge.as_str()])
                    .is_some_and(|c| c.is_insufficient_scope());
                if !step_up {
                    break Err(DeliveryError::Forbidden {
                        operation: operation(),
                    });
                }
                authorizations += 1;
                if let Err(e) =
                    recover(s, generation, Recovery::StepUp(challenge, operation())).await
                {
                    break Err(e);
                }
            }
            // Sent again on a new connection only when that cannot make the server act
            // twice (see WireError::may_retry); else the client hears what happened.
            Err(e) if e.may_retry(method, is_request) && !reconnected && method != "initialize" => {
                reconnected = true;
                if let Err(e) = recover(s, generation, Recovery::Reconnect).await {
                    break Err(e);
                }
            }
            Err(e) if e.is_dropped() && !e.may_retry(method, is_request) => {
                break Err(DeliveryError::NotResent(e));
            }
            Err(e) => break Err(DeliveryError::Wire(e)),
        }
    }
}

/// Open the standalone stream once the client's start-up traffic has settled.
async fn open_when_settled(s: Arc<Shared>) {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    loop {
        let quiet_at = *s.last_activity.lock().unwrap_or_else(|p| p.into_inner()) + SETTLE_QUIET;
        let now = tokio::time::Instant::now();
        if now >= quiet_at || now >= deadline {
            break;
        }
        tokio::time::sleep_until(quiet_at.min(deadline)).await;
    }
    s.settled.store(true, Ordering::Relaxed);
    if let Err(e) = s.wire.open_standalone_stream().await {
        tracing::info!(error = %e, "no standalone stream for server messages");
    }
}

enum Recovery {
    Authorize(Option<String>),
    StepUp(String, String),
    Reconnect,
}

/// One recovery at a time; a failure that a concurrent recovery already fixed (the
/// generation moved on) just retries.
fn recover(s: &Arc<Shared>, seen: u64, what: Recovery) -> BoxFuture<'_, Result<(), DeliveryError>> {
    // Boxed: a rare path, kept out of the future of every message that might take it.
    Box::pin(async move {
        let _one = s.recover.lock().await;
        if s.generation.load(Ordering::SeqCst) != seen {
            return Ok(());
        }
        match what {
            Recovery::Authorize(challenge) => {
                s.authorize
                    .unauthorized(challenge)
                    .await
                    .map_err(DeliveryError::Authorization)?;
                s.stats().authorizations += 1;
                s.authorized_unproven.store(true, Ordering::SeqCst);
            }
            Recovery::StepUp(challenge, operation) => {
                s.authorize
                    .insufficient_scope(&challenge, &operation)
                    .await
                    .map_err(DeliveryError::Authorization)?;
                s.stats().authorizations += 1;
                s.authorized_unproven.store(true, Ordering::SeqCst);
            }
            Recovery::Reconnect => {
                if !s.authorize.still_wanted().await {
                    return Err(DeliveryError::Unwanted);
                }
                reinitialize(s).await?;
                s.stats().reconnects += 1;
            }
        }
        s.generation.fetch_add(1, Ordering::SeqCst);
        Ok(())
    })
}

/// A new session, initialized with the client's own `initialize` (a 2026-07-28
/// server has no sessions: a new connection is all).
async fn reinitialize(s: &Arc<Shared>) -> Result<(), DeliveryError> {
    s.wire.reset().await.map_err(DeliveryError::Reconnect)?;
    if let Some(Era::Translated(_)) = s.era.get() {
        return Ok(());
    }
    let Some(mut init) = s
        .initialize
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(Message::value)
    else {
        return Ok(());
    };
    let id = format!(
        "keyway-reinitialize-{}",
        s.generation.load(Ordering::SeqCst)
    );
    init["id"] = json!(id);
    let (tx, rx) = oneshot::channel();
    s.route.internal().insert(id.clone(), tx);
    let mut sent = s.wire.send(&init).await;
    if let Err(WireError::Unauthorized { challenge }) = &sent {
        s.authorize
            .unauthorized(challenge.clone())
            .await
            .map_err(DeliveryError::Authorization)?;
        sent = s.wire.send(&init).await;
    }
    sent.map_err(DeliveryError::Reinitialize)?;
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .map_err(|_| DeliveryError::ReinitializeTimedOut)?
        .map_err(|_| DeliveryError::ReinitializeClosed)?;
    if let Some(err) = answer.get("error") {
        return Err(DeliveryError::ReinitializeRefused(err.clone()));
    }
    if s.initialized.load(Ordering::SeqCst) {
        s.wire
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .map_err(DeliveryError::Reinitialize)?;
        if let Err(e) = s.wire.open_standalone_stream().await {
            tracing::info!(error = %e, "no standalone stream after reconnecting");
        }
    }
    tracing::info!("reconnected to {}", s.wire.url());
    Ok(())
}

/// The server's standalone stream ended: opened again once per session (a session
/// the server forgot is re-initialized).
async fn reopen_streams(s: Arc<Shared>, mut ended: mpsc::Receiver<String>) {
    while let Some(why) = ended.recv().await {
        tracing::debug!("the server's event stream ended: {why}");
        if s.initialized.load(Ordering::SeqCst) {
            let s2 = s.clone();
            tokio::spawn(async move {
                let generation = s2.generation.load(Ordering::SeqCst);
                if let Err(WireError::SessionExpired) = s2.wire.open_standalone_stream().await {
                    let _ = recover(&s2, generation, Recovery::Reconnect).await;
                }
            });
        }
    }
}

/// The client's stdout: one JSON message per line, in the order they are given. A
/// message is written by the task that has it when the pipe takes it at once (the usual
/// case: no hand-off to another task per message); what the pipe does not take is
/// queued for [`write_out`], which waits until it can. A broken stdout (the client went
/// away) ends the output quietly.
struct Out {
    state: Mutex<OutState>,
    /// Tells [`write_out`] there is something queued or left to flush.
    wake: Notify,
    /// Tells readers held back by [`Out::room`] that the queue went down.
    room: Arc<Notify>,
}

struct OutState {
    w: Box<dyn AsyncWrite + Unpin + Send>,
    /// Messages (each with its newline) not yet written, oldest first.
    queued: Vec<u8>,
    /// Written but not flushed (tokio's blocking stdout buffers; pipes do not).
    unflushed: bool,
    closed: bool,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out").finish_non_exhaustive()
    }
}

/// Kept by a queue between bursts; a larger one is given back once drained.
const KEPT_BUFFER: usize = 64 * 1024;

/// Bytes queued for stdout beyond which the server's streams are read no further
/// ([`Out::room`]): the queue holds at most this plus the message that crossed it.
pub const OUT_LIMIT: usize = 1024 * 1024;

impl Out {
    fn new(w: Box<dyn AsyncWrite + Unpin + Send>) -> Self {
        Self {
            state: Mutex::new(OutState {
                w,
                queued: Vec::with_capacity(4096),
                unflushed: false,
                closed: false,
            }),
            wake: Notify::new(),
            room: Arc::new(Notify::new()),
        }
    }

    /// `None` while the queue is under [`OUT_LIMIT`]; else a future that resolves once
    /// it is (or stdout is gone).
    fn room(self: &Arc<Self>) -> Option<Backpressure> {
        if !self.state().over_limit() {
            return None;
        }
        let out = self.clone();
        Some(Box::pin(async move {
            loop {
                let room = out.room.clone();
                let notified = room.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !out.state().over_limit() {
                    return;
                }
                notified.await;
            }
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write `message` now if the pipe takes it, else leave the rest for
    /// [`write_out`]. Never waits.
    /// Whether the queue is over [`OUT_LIMIT`] now (then [`Out::room`] is worth
    /// waiting on), told under the same lock.
    fn send(&self, message: &Message) -> bool {
        let mut st = self.state();
        if st.closed {
            return false;
        }
        // With something already waiting, the writer task is on it: behind that.
        let waiting = !st.queued.is_empty() || st.unflushed;
        st.queued.extend_from_slice(message.text().as_bytes());
        st.queued.push(b'\n');
        if !waiting
            // A waker that does nothing: what the pipe does not take now is the
            // writer task's, whose own poll registers its real waker.
            && drain(&mut st, &mut Context::from_waker(Waker::noop())).is_pending()
        {
            self.wake.notify_one();
        }
        st.over_limit()
    }

    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.state();
        let done = drain(&mut st, cx);
        if !st.over_limit() {
            self.room.notify_waiters();
        }
        done
    }
}

impl OutState {
    fn over_limit(&self) -> bool {
        !self.closed && self.queued.len() > OUT_LIMIT
    }
}

/// Write and flush what is queued; ready when nothing is left (or stdout broke).
fn drain(st: &mut OutState, cx: &mut Context<'_>) -> Poll<()> {
    let mut w = Pin::new(&mut st.w);
    while !st.closed && !st.queued.is_empty() {
        match w.as_mut().poll_write(cx, &st.queued) {
            Poll::Ready(Ok(n)) if n > 0 => {
                st.queued.drain(..n);
                st.unflushed = true;
            }
            Poll::Ready(_) => st.closed = true,
            Poll::Pending => return Poll::Pending,
        }
    }
    if st.queued.capacity() > KEPT_BUFFER {
        st.queued = Vec::new();
    }
    if !st.closed && st.unflushed {
        match w.poll_flush(cx) {
            Poll::Ready(Ok(())) => st.unflushed = false,
            Poll::Ready(Err(_)) => st.closed = true,
            Poll::Pending => return Poll::Pending,
        }
    }
    if st.closed {
        st.queued = Vec::new();
    }
    Poll::Ready(())
}

/// Writes what [`Out::send`] could not, until `finish`; then what is queued still goes
/// out, and later messages are dropped.
async fn write_out(out: Arc<Out>, mut finish: oneshot::Receiver<()>) {
    loop {
        let finishing = tokio::select! {
            biased;
            _ = &mut finish => true,
            _ = out.wake.notified() => false,
        };
        std::future::poll_fn(|cx| out.poll_drain(cx)).await;
        if finishing {
            out.state().closed = true;
            out.room.notify_waiters();
            return;
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use tokio::io::{AsyncBufReadExt, BufReader, BufWriter};

    use super::*;

    /// Messages reach stdout whole and in order, without waiting for the end, when the
    /// pipe fills up (what it refuses is left to the writer task) and when the writer
    /// buffers (a flush is owed): a real pipe, read only after the writes began, behind
    /// a small BufWriter. After `finish`, nothing more goes out.
    #[tokio::test]
    async fn output_keeps_order_through_a_full_pipe_and_a_buffering_writer() {
        let (tx, rx) = tokio::net::unix::pipe::pipe().expect("a pipe");
        let out = Arc::new(Out::new(Box::new(BufWriter::with_capacity(1000, tx))));
        let (finish, finished) = oneshot::channel();
        let writer = tokio::spawn(write_out(out.clone(), finished));
        let message = |i: usize| {
            // Small ones stay in the buffer; large ones fill the pipe (64 KiB).
            let pad = "x".repeat(if i.is_multiple_of(3) { 5000 } else { 50 });
            Message::from_value(
                &json!({"jsonrpc": "2.0", "method": "m", "params": {"i": i, "pad": pad}}),
            )
        };
        let count = 300;
        for i in 0..count {
            out.send(&message(i));
        }
        assert!(
            !out.state().queued.is_empty(),
            "the pipe was full: the test must reach the writer task"
        );
        let mut lines = BufReader::new(rx).lines();
        for i in 0..count {
            // The writer task carries on by itself as the pipe drains.
            let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
                .await
                .expect("the writer task keeps writing")
                .expect("reading the pipe")
                .expect("the pipe stays open");
            assert_eq!(line, message(i).text(), "message {i}");
        }
        let _ = finish.send(());
        writer.await.expect("the writer ends");
        out.send(&message(count));
        drop(out);
        assert_eq!(
            lines.next_line().await.expect("reading the pipe"),
            None,
            "nothing after finish"
        );
    }

    /// Messages from the server for a client that does not read its stdout are queued
    /// up to [`OUT_LIMIT`] (plus the one that crossed it); from then on the reader is
    /// held back until the client reads. Nothing is dropped.
    #[tokio::test]
    async fn the_output_queue_is_bounded_and_holds_back_the_server() {
        let (tx, rx) = tokio::net::unix::pipe::pipe().expect("a pipe");
        let out = Arc::new(Out::new(Box::new(tx)));
        let (finish, finished) = oneshot::channel();
        let writer = tokio::spawn(write_out(out.clone(), finished));
        let (ended, _ended) = mpsc::channel(1);
        let route = Route {
            out: out.clone(),
            internal: Mutex::new(HashMap::new()),
            filter: ToolFilter::default(),
            filtered: Mutex::new(Default::default()),
            stats: Mutex::new(BridgeStats::default()),
            stream_ended: ended,
            server_requests: std::sync::OnceLock::new(),
        };
        let message = |i: usize| {
            Message::from_value(
                &json!({"jsonrpc": "2.0", "method": "m", "params": {"i": i, "pad": "y".repeat(10_000)}}),
            )
        };
        let one = message(0).text().len() + 1;
        // As a wire does: take messages until told to wait.
        let mut sent = 0;
        let held = loop {
            let took = route.take(Inbound::Message(message(sent)));
            sent += 1;
            if let Some(wait) = took {
                break wait;
            }
            assert!(sent < 1_000, "never held back");
        };
        let queued = out.state().queued.len();
        assert!(queued <= OUT_LIMIT + one, "{queued} bytes queued");
        assert!(queued > OUT_LIMIT);
        // Still held while nobody reads.
        let mut held = held;
        assert!(futures::FutureExt::now_or_never(&mut held).is_none());
        // The client reads: the reader is let go, and every message came out in order.
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(rx).lines();
            let mut seen = 0;
            while seen < sent {
                let line = lines.next_line().await.unwrap().unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["params"]["i"], seen);
                seen += 1;
            }
            seen
        });
        tokio::time::timeout(std::time::Duration::from_secs(30), held)
            .await
            .expect("let go once the client reads");
        assert_eq!(reader.await.unwrap(), sent);
        let _ = finish.send(());
        writer.await.unwrap();
    }
}
