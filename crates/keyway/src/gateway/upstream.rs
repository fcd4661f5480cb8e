//! One upstream server of the gateway: a raw JSON-RPC client on a [`Wire`], with
//! request/answer correlation, the start (MCP 2026-07-28's `server/discover` where the
//! server speaks it, else the `initialize` handshake), one reconnect when the
//! connection drops, and the server's own requests and notifications handed to the
//! gateway.
//!
//! A server that speaks both generations gets the handshake, so a handshake-era client
//! keeps its server requests (elicitation, sampling, roots) relayed as before, and the
//! requests of a 2026-07-28 client go to it as 2026-07-28 requests (no session) with
//! that client's own request metadata: the server judges what it may ask of the client
//! that is really there, and its `input_required` results pass back untouched. A
//! server that speaks only 2026-07-28 gets the gateway's own metadata on the requests
//! of a handshake-era client; it offers no client capabilities, so the server answers a
//! request that needs the client's input with `MissingRequiredClientCapability` rather
//! than asking for what the gateway cannot relay yet. A handshake-only server never
//! sees 2026-07-28 metadata, whoever sent it.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Deserialize;
use serde_json::{Value, json, value::RawValue};
use tokio::sync::mpsc;

use crate::mcp::{
    modern::{
        META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL, META_PROTOCOL_VERSION,
        MODERN_VERSION, is_modern, strip_request_metadata,
    },
    wire::{Inbound, Message, Protocol, Wire, WireConfig, WireError, WireKind},
};

/// How long `server/discover` may take before the server is taken for one that knows
/// only the handshake (as rmcp's client waits).
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a resource subscription waits for the server to acknowledge the
/// `subscriptions/listen` stream that carries it.
const LISTEN_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an upstream request may go without its answer or a progress report (each
/// report starts the wait again, as MCP's lifecycle allows), unless configured.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an upstream request may take at most, whatever progress it reports (MCP:
/// a maximum should always be enforced); at least the request timeout.
pub const REQUEST_MAX: Duration = Duration::from_secs(30 * 60);

/// Why an upstream request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum UpstreamError {
    /// The server answered 401 or 403.
    #[error("{server} needs authorization: run `keyway authorize {server}`")]
    NeedsAuth {
        /// The server's name.
        server: String,
    },
    /// The request did not get its answer (unreachable, dropped, timed out,
    /// malformed).
    #[error("{server}: {message}")]
    Failed {
        /// The server's name.
        server: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered with a JSON-RPC error (passed on as it is).
    #[error("{server} answered with an error")]
    Rpc {
        /// The server's name.
        server: String,
        /// The answer's `error` object.
        error: Value,
    },
}

/// Something the upstream sent on its own.
#[derive(Debug)]
pub(crate) enum Event {
    /// A notification (list_changed, progress, logging...).
    Notification {
        /// The upstream's index.
        server: usize,
        /// The message.
        message: Value,
    },
    /// A request to the client (sampling, elicitation, roots...).
    Request {
        /// The upstream's index.
        server: usize,
        /// The message.
        message: Value,
        /// The id of the gateway's request on whose event stream it came: the
        /// request it was sent in the course of.
        during: Option<String>,
    },
}

/// Where a downstream request is upstream: the server and the id of the request that
/// carries it, so a cancellation can follow it there. A reconnect sends the request
/// again under a new id, and a resource read may try one server after another; the
/// carrier always names the latest.
/// It also hears of the request's progress reports, which restart its timeout, and
/// knows what the client declared.
#[derive(Debug, Default)]
pub(crate) struct Carrier {
    at: Mutex<Option<(usize, String)>>,
    progressed: tokio::sync::Notify,
    /// A handshake-era client's capabilities and log level, which a server that
    /// speaks only 2026-07-28 gets as the request's metadata (none: the gateway's
    /// own, which declare nothing).
    client: Option<Arc<ClientSide>>,
}

/// What a handshake-era client declared for its session: its capabilities at
/// `initialize`, and the level of `logging/setLevel`.
#[derive(Debug, Default, Clone)]
pub(crate) struct ClientSide {
    /// `capabilities` of its `initialize`.
    pub capabilities: Value,
    /// The level it asked for, if any.
    pub log_level: Option<Value>,
}

impl Carrier {
    /// A carrier for a request of a client that declared `client`.
    pub fn for_client(client: Option<Arc<ClientSide>>) -> Self {
        Self {
            client,
            ..Self::default()
        }
    }

    /// What the request's client declared, if it is a handshake-era one.
    pub fn client(&self) -> Option<&ClientSide> {
        self.client.as_deref()
    }

    /// The server and upstream request id, once the request was sent.
    pub fn get(&self) -> Option<(usize, String)> {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, server: usize, id: &str) {
        *self.at.lock().unwrap_or_else(|p| p.into_inner()) = Some((server, id.to_owned()));
    }

    /// The server reported progress on the request.
    pub fn progressed(&self) {
        self.progressed.notify_one();
    }
}

/// A connected upstream server.
pub(crate) struct Upstream {
    /// Its position among the gateway's upstreams.
    pub index: usize,
    /// Its configured name.
    pub name: String,
    wire: Wire,
    next_id: AtomicU64,
    /// The server's `initialize` result (for a 2026-07-28 server, one made from its
    /// `server/discover` result).
    pub server_info: Mutex<Option<Value>>,
    /// The revision to speak (`--protocol`).
    protocol: Protocol,
    /// The revision the server spoke last time (a saved server's record).
    last_protocol: Option<String>,
    /// Whether the server speaks 2026-07-28 (decided at each start).
    modern: AtomicBool,
    /// Whether the gateway has a handshake session with it (decided at each start).
    session: AtomicBool,
    /// Bumped by every reconnect; read on every request, so not behind the lock.
    generation: AtomicU64,
    /// Held while reconnecting, so concurrent failures share one reconnect.
    reconnect: tokio::sync::Mutex<()>,
    liveness: Option<Arc<dyn super::Liveness>>,
    /// How long a request may go without an answer or progress.
    timeout: Duration,
    /// For a server that speaks only 2026-07-28: the resources the gateway's clients
    /// subscribed to, and the `subscriptions/listen` stream that carries their
    /// updates and the list changes.
    listening: Mutex<Listening>,
    /// The latest `subscriptions/listen` the server acknowledged (by
    /// [`Listening::opened`]).
    acknowledged: tokio::sync::watch::Sender<u64>,
    /// Its requests' counts and times (`/metrics`).
    metrics: super::metrics::ServerMetrics,
}

/// An upstream's `subscriptions/listen`.
#[derive(Default)]
struct Listening {
    uris: std::collections::BTreeSet<String>,
    stream: Option<futures::future::AbortHandle>,
    opened: u64,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Connect and run the handshake. `events` receives the server's own messages.
    pub async fn connect(
        index: usize,
        name: &str,
        config: WireConfig,
        liveness: Option<Arc<dyn super::Liveness>>,
        timeout: Duration,
        events: mpsc::Sender<Event>,
    ) -> Result<Arc<Self>, UpstreamError> {
        let failed = |message: String| UpstreamError::Failed {
            server: name.to_owned(),
            message,
        };
        let protocol = config.protocol.clone();
        let last_protocol = config.last_protocol.clone();
        let (wire, inbound) = Wire::connect(config).await.map_err(|e| match e {
            WireError::Unauthorized { .. } => UpstreamError::NeedsAuth {
                server: name.to_owned(),
            },
            e => failed(e.to_string()),
        })?;
        let up = Arc::new(Self {
            index,
            name: name.to_owned(),
            wire,
            next_id: AtomicU64::new(1),
            server_info: Mutex::new(None),
            protocol,
            last_protocol,
            modern: AtomicBool::new(false),
            session: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            reconnect: tokio::sync::Mutex::new(()),
            liveness,
            timeout,
            listening: Mutex::default(),
            acknowledged: tokio::sync::watch::Sender::new(0),
            metrics: super::metrics::ServerMetrics::new(name),
        });
        tokio::spawn(route(up.clone(), inbound, events));
        up.handshake().await?;
        // A 2026-07-28 server tells of list changes on `subscriptions/listen` (a
        // server of both generations may tell only there, not on the session).
        if up.is_modern() {
            up.listen();
        }
        Ok(up)
    }

    /// Whether the server speaks 2026-07-28 (no session, metadata on each request).
    pub fn is_modern(&self) -> bool {
        self.modern.load(Ordering::SeqCst)
    }

    /// Whether the gateway has a handshake session with the server.
    pub fn has_session(&self) -> bool {
        self.session.load(Ordering::SeqCst)
    }

    /// Start speaking to the server: `server/discover` first where the revision may be
    /// 2026-07-28, then the handshake unless the server speaks only 2026-07-28 (or
    /// `--protocol 2026-07-28` asked for nothing else).
    async fn handshake(&self) -> Result<(), UpstreamError> {
        let remembered_handshake = self.protocol == Protocol::Auto
            && self.last_protocol.as_deref().is_some_and(|v| !is_modern(v));
        if remembered_handshake {
            // It spoke the handshake last time: no discovery first, unless the
            // handshake is refused now.
            match self.initialize().await {
                Ok(()) => {
                    self.modern.store(false, Ordering::SeqCst);
                    self.session.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e @ UpstreamError::NeedsAuth { .. }) => return Err(e),
                Err(e) => {
                    tracing::info!(server = %self.name, "the handshake it took last time failed ({e}); asking what it speaks")
                }
            }
        }
        let only_modern = matches!(&self.protocol, Protocol::Exactly(v) if is_modern(v));
        let try_modern = self.wire.kind() == WireKind::StreamableHttp
            && (only_modern || self.protocol == Protocol::Auto);
        let found = if try_modern {
            self.discover().await?
        } else {
            None
        };
        self.modern.store(found.is_some(), Ordering::SeqCst);
        match found {
            Some((info, handshake_too)) if only_modern || !handshake_too => {
                *self.server_info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
                self.session.store(false, Ordering::SeqCst);
                Ok(())
            }
            None if only_modern => Err(UpstreamError::Failed {
                server: self.name.clone(),
                message: "it does not speak 2026-07-28 (--protocol asked for it)".into(),
            }),
            _ => {
                self.initialize().await?;
                self.session.store(true, Ordering::SeqCst);
                Ok(())
            }
        }
    }

    /// `server/discover`: the server's capabilities, name and instructions as an
    /// `initialize` result would hold them when it speaks 2026-07-28, and whether it
    /// names a handshake revision too; `None` when it refuses the request, does not
    /// answer it in time, or names only other revisions.
    async fn discover(&self) -> Result<Option<(Value, bool)>, UpstreamError> {
        let params = json!({"_meta": gateway_meta(None)});
        let asked = self.request_once("server/discover", &params, None);
        let answer = match tokio::time::timeout(DISCOVER_TIMEOUT, asked).await {
            Err(_) => return Ok(None),
            Ok(Err(e @ UpstreamError::NeedsAuth { .. })) => return Err(e),
            Ok(Err(e)) => {
                tracing::debug!(server = %self.name, "server/discover refused: {e}");
                return Ok(None);
            }
            Ok(Ok(answer)) => answer,
        };
        let Ok(result) = self.result_of("server/discover", &answer) else {
            return Ok(None);
        };
        let result = self.value_of(&result)?;
        let versions: Vec<&str> = result
            .get("supportedVersions")
            .and_then(Value::as_array)
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !versions.contains(&MODERN_VERSION) {
            return Ok(None);
        }
        let handshake_too = versions.iter().any(|v| !is_modern(v));
        let server_info = result
            .pointer("/_meta/io.modelcontextprotocol~1serverInfo")
            .cloned()
            .unwrap_or_else(|| json!({"name": self.name, "version": "unknown"}));
        let mut info = json!({
            "protocolVersion": MODERN_VERSION,
            "capabilities": result.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "serverInfo": server_info,
        });
        if let Some(instructions) = result.get("instructions") {
            info["instructions"] = instructions.clone();
        }
        Ok(Some((info, handshake_too)))
    }

    async fn initialize(&self) -> Result<(), UpstreamError> {
        let result = self
            .request_once(
                "initialize",
                &json!({
                    "protocolVersion": crate::mcp::PROTOCOL_VERSION.to_string(),
                    "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
                    "clientInfo": {"name": "keyway-gateway", "version": env!("CARGO_PKG_VERSION")},
                }),
                None,
            )
            .await?;
        let result = self.value_of(&self.result_of("initialize", &result)?)?;
        *self.server_info.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.wire
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .map_err(|e| self.error(e))?;
        if let Err(e) = self.wire.open_standalone_stream().await {
            tracing::debug!(server = %self.name, error = %e, "no standalone stream");
        }
        Ok(())
    }

    fn error(&self, e: WireError) -> UpstreamError {
        match e {
            WireError::Unauthorized { .. } | WireError::Forbidden { .. } => {
                UpstreamError::NeedsAuth {
                    server: self.name.clone(),
                }
            }
            e => UpstreamError::Failed {
                server: self.name.clone(),
                message: e.to_string(),
            },
        }
    }

    /// A request; a dropped connection is re-initialized once and the request sent again.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, UpstreamError> {
        self.request_carrying(method, params, None).await
    }

    /// [`Upstream::request`] on behalf of a downstream request, noting in `carrier`
    /// the id it goes under.
    pub async fn request_carrying(
        &self,
        method: &str,
        params: Value,
        carrier: Option<&Carrier>,
    ) -> Result<Value, UpstreamError> {
        self.value_of(&self.request_raw(method, params, carrier).await?)
    }

    /// [`Upstream::request_carrying`] with the result as the server wrote it, for a
    /// gateway that passes it on: no tree of values is built and written out again.
    pub async fn request_raw(
        &self,
        method: &str,
        params: Value,
        carrier: Option<&Carrier>,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let started = std::time::Instant::now();
        let result = async {
            let answer = self.exchange(method, params, carrier).await?;
            self.result_of(method, &answer)
        }
        .await;
        self.observe(started, &result);
        result
    }

    /// Count and time a request in the gateway's metrics.
    fn observe<T>(&self, started: std::time::Instant, result: &Result<T, UpstreamError>) {
        use super::metrics::Outcome;
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(UpstreamError::Rpc { .. }) => Outcome::RpcError,
            Err(_) => Outcome::Failed,
        };
        self.metrics.record_since(outcome, started);
    }

    /// An answer's result as the server wrote it (`null` when it has none), or its
    /// error.
    fn result_of(&self, method: &str, answer: &Message) -> Result<Box<RawValue>, UpstreamError> {
        /// The two members of an answer keyway reads.
        #[derive(Deserialize)]
        struct Parts<'a> {
            #[serde(borrow, default)]
            result: Option<&'a RawValue>,
            #[serde(default)]
            error: Option<Value>,
        }
        let malformed = |e: serde_json::Error| UpstreamError::Failed {
            server: self.name.clone(),
            message: format!("a malformed answer to {method}: {e}"),
        };
        let parts: Parts<'_> = serde_json::from_str(answer.text()).map_err(malformed)?;
        if let Some(error) = parts.error {
            return Err(UpstreamError::Rpc {
                server: self.name.clone(),
                error,
            });
        }
        match parts.result {
            Some(r) => Ok(r.to_owned()),
            None => serde_json::value::to_raw_value(&Value::Null).map_err(malformed),
        }
    }

    /// A result as a value, for the gateway's own use of it.
    fn value_of(&self, result: &RawValue) -> Result<Value, UpstreamError> {
        // Parsed as JSON already: an error here is not expected.
        serde_json::from_str(result.get()).map_err(|e| UpstreamError::Failed {
            server: self.name.clone(),
            message: format!("a malformed result: {e}"),
        })
    }

    /// A request and its answer; a dropped connection is re-initialized once and the
    /// request sent again.
    async fn exchange(
        &self,
        method: &str,
        params: Value,
        carrier: Option<&Carrier>,
    ) -> Result<Message, UpstreamError> {
        let generation = self.generation.load(Ordering::SeqCst);
        match self.request_once(method, &params, carrier).await {
            Err(UpstreamError::Failed { message, .. }) if message.starts_with(DROPPED) => {
                {
                    let _one = self.reconnect.lock().await;
                    // Concurrent failures share one reconnect; a server removed or
                    // disabled meanwhile is not reconnected.
                    if let Some(l) = &self.liveness
                        && !l.alive().await
                    {
                        return Err(UpstreamError::Failed {
                            server: self.name.clone(),
                            message: "removed or disabled".into(),
                        });
                    }
                    if self.generation.load(Ordering::SeqCst) == generation {
                        self.wire.reset().await.map_err(|e| self.error(e))?;
                        self.handshake().await?;
                        self.generation.fetch_add(1, Ordering::SeqCst);
                    }
                }
                self.request_once(method, &params, carrier).await
            }
            other => other,
        }
    }

    /// Send `method` with `params` under a new id; the answer.
    async fn request_once(
        &self,
        method: &str,
        params: &Value,
        carrier: Option<&Carrier>,
    ) -> Result<Message, UpstreamError> {
        let id = format!("gw-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        if let Some(c) = carrier {
            c.set(self.index, &id);
        }
        // The start's own requests are as the gateway made them.
        let adjusted = match method {
            "server/discover" | "initialize" => None,
            _ => with_metadata(
                params,
                self.is_modern(),
                self.session.load(Ordering::SeqCst),
                carrier.and_then(Carrier::client),
            ),
        };
        let message = match adjusted {
            Some(params) => Message::request(&id, method, &params),
            None => Message::request(&id, method, params),
        };
        let call = self.wire.call_message(message);
        tokio::pin!(call);
        let started = tokio::time::Instant::now();
        let latest = started + REQUEST_MAX.max(self.timeout);
        let mut deadline = started + self.timeout;
        let answer = loop {
            let progressed = async {
                match carrier {
                    Some(c) => c.progressed.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                answer = &mut call => break Some(answer),
                () = tokio::time::sleep_until(deadline.min(latest)) => break None,
                () = progressed => deadline = tokio::time::Instant::now() + self.timeout,
            }
        };
        match answer {
            Some(Ok(a)) => Ok(a),
            Some(Err(e)) if e.is_dropped() => Err(UpstreamError::Failed {
                server: self.name.clone(),
                message: format!("{DROPPED}{e}"),
            }),
            Some(Err(e)) => Err(self.error(e)),
            None if deadline >= latest => Err(UpstreamError::Failed {
                server: self.name.clone(),
                message: format!(
                    "no answer to {method} within the longest a request may take ({} min), progress or not",
                    latest.duration_since(started).as_secs() / 60
                ),
            }),
            None => Err(UpstreamError::Failed {
                server: self.name.clone(),
                message: format!(
                    "no answer to {method} and no progress for {} s",
                    self.timeout.as_secs_f64()
                ),
            }),
        }
    }

    /// Whether the gateway follows resources of this server through
    /// `subscriptions/listen` (it speaks only 2026-07-28) rather than
    /// `resources/subscribe`.
    pub fn listens(&self) -> bool {
        self.is_modern() && !self.has_session()
    }

    /// Follow the updates of resource `uri` (`on`), or stop: the server's
    /// `subscriptions/listen` stream is opened again with the new set, and this
    /// returns once the server acknowledged it (or [`LISTEN_ACK_TIMEOUT`] passed).
    pub async fn watch(self: &Arc<Self>, uri: &str, on: bool) {
        {
            let mut l = self.listening.lock().unwrap_or_else(|p| p.into_inner());
            let changed = if on {
                l.uris.insert(uri.to_owned())
            } else {
                l.uris.remove(uri)
            };
            if !changed {
                return;
            }
        }
        let Some(round) = self.listen() else { return };
        let mut acked = self.acknowledged.subscribe();
        let waited = tokio::time::timeout(LISTEN_ACK_TIMEOUT, acked.wait_for(|r| *r >= round));
        if waited.await.is_err() {
            tracing::info!(server = %self.name, "subscriptions/listen was not acknowledged in time");
        }
    }

    /// (Re)open the `subscriptions/listen` stream for the list changes the server
    /// offers and the resources watched; nothing when that is nothing. Its
    /// notifications reach the gateway as the server's others do; a drop opens it
    /// again after a growing pause, a refusal ends it.
    fn listen(self: &Arc<Self>) -> Option<u64> {
        let capabilities = self
            .server_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|i| i.get("capabilities").cloned())
            .unwrap_or_default();
        let mut filter = serde_json::Map::new();
        for (kind, field) in [
            ("tools", "toolsListChanged"),
            ("prompts", "promptsListChanged"),
            ("resources", "resourcesListChanged"),
        ] {
            if capabilities
                .pointer(&format!("/{kind}/listChanged"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                filter.insert(field.into(), json!(true));
            }
        }
        let mut l = self.listening.lock().unwrap_or_else(|p| p.into_inner());
        if !l.uris.is_empty() {
            filter.insert("resourceSubscriptions".into(), json!(l.uris));
        }
        if let Some(old) = l.stream.take() {
            old.abort();
        }
        if filter.is_empty() {
            return None;
        }
        l.opened += 1;
        let round = l.opened;
        let (handle, registration) = futures::future::AbortHandle::new_pair();
        l.stream = Some(handle);
        let params = json!({"notifications": filter, "_meta": gateway_meta(None)});
        // Weak: the task ends with the upstream rather than keep it alive.
        let up = Arc::downgrade(self);
        tokio::spawn(futures::future::Abortable::new(
            async move {
                let mut pause = Duration::from_millis(250);
                for attempt in 1u64.. {
                    let Some(u) = up.upgrade() else { return };
                    let id = format!("gw-listen-{round}-{attempt}");
                    let opened_at = tokio::time::Instant::now();
                    let outcome = u
                        .wire
                        .call_message(Message::request(&id, "subscriptions/listen", &params))
                        .await;
                    if opened_at.elapsed() > Duration::from_secs(60) {
                        pause = Duration::from_millis(250);
                    }
                    match outcome {
                        Ok(answer) if answer.value().get("error").is_some() => {
                            tracing::info!(server = %u.name, "the server refused subscriptions/listen: {}", answer.value()["error"]);
                            return;
                        }
                        Ok(_) => {
                            tracing::debug!(server = %u.name, "the server ended subscriptions/listen")
                        }
                        Err(e) => {
                            tracing::debug!(server = %u.name, error = %e, "subscriptions/listen dropped")
                        }
                    }
                    drop(u);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(60));
                }
            },
            registration,
        ));
        Some(round)
    }

    /// Send a message as it is (answers to the server's own requests).
    pub async fn send_raw(&self, message: &Value) -> Result<(), UpstreamError> {
        self.wire.send(message).await.map_err(|e| self.error(e))
    }

    /// End the session ([`Wire::close`]) and the `subscriptions/listen` stream.
    pub async fn close(&self) {
        if let Some(stream) = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .stream
            .take()
        {
            stream.abort();
        }
        self.wire.close().await;
    }
}

const DROPPED: &str = "dropped: ";

/// The gateway's own request metadata for a 2026-07-28 server: the capabilities and
/// log level a handshake-era `client` declared (the gateway turns the server's
/// `input_required` rounds into requests to it), or none at all.
fn gateway_meta(client: Option<&ClientSide>) -> Value {
    let mut meta = json!({
        META_PROTOCOL_VERSION: MODERN_VERSION,
        META_CLIENT_CAPABILITIES: client.map_or_else(|| json!({}), |c| c.capabilities.clone()),
        META_CLIENT_INFO: {"name": "keyway-gateway", "version": env!("CARGO_PKG_VERSION")},
    });
    if let Some(level) = client.and_then(|c| c.log_level.clone()) {
        meta[META_LOG_LEVEL] = level;
    }
    meta
}

/// `params` as the server takes them, when they need changing (see the module's
/// notes): a 2026-07-28 client's request metadata kept for a server that speaks
/// 2026-07-28 (`modern`) and taken out for one that does not; a handshake-era client's
/// request given the gateway's metadata (with what the `client` declared) where there
/// is no `session` to carry it. `None`: as they are.
fn with_metadata(
    params: &Value,
    modern: bool,
    session: bool,
    client: Option<&ClientSide>,
) -> Option<Value> {
    let meta = params.get("_meta").and_then(Value::as_object);
    let has_version = meta.is_some_and(|m| m.contains_key(META_PROTOCOL_VERSION));
    if has_version {
        if modern {
            return None;
        }
        let mut params = params.clone();
        strip_request_metadata(&mut params);
        return Some(params);
    }
    if session || !modern {
        return None;
    }
    let mut params = match params {
        Value::Object(_) => params.clone(),
        _ => json!({}),
    };
    let ours = gateway_meta(client);
    match params.get_mut("_meta").and_then(Value::as_object_mut) {
        Some(m) => {
            if let Value::Object(ours) = ours {
                m.extend(ours);
            }
        }
        None => params["_meta"] = ours,
    }
    Some(params)
}

/// The server's own requests and notifications to the gateway (answers go straight
/// to their callers; one that comes here was given up on). A full event queue holds
/// this task, which fills the wire's queue, which stops the wire reading the server.
async fn route(
    up: Arc<Upstream>,
    mut inbound: mpsc::Receiver<Inbound>,
    events: mpsc::Sender<Event>,
) {
    while let Some(item) = inbound.recv().await {
        let Inbound::Message(m) = item else { continue };
        // The start of a `subscriptions/listen` stream: nothing for the clients.
        if m.method() == Some("notifications/subscriptions/acknowledged") {
            // On the stream of `"gw-listen-ROUND-ATTEMPT"`.
            let round = m
                .during()
                .and_then(|d| d.strip_prefix("\"gw-listen-"))
                .and_then(|d| d.split('-').next())
                .and_then(|r| r.parse::<u64>().ok());
            if let Some(round) = round {
                up.acknowledged.send_if_modified(|latest| {
                    let newer = round > *latest;
                    if newer {
                        *latest = round;
                    }
                    newer
                });
            }
            continue;
        }
        let event = if m.method().is_none() {
            tracing::debug!(server = %up.name, "an answer nobody waits for any more");
            continue;
        } else if m.id().is_some() {
            Event::Request {
                server: up.index,
                message: m.value(),
                // The id's JSON text: the gateway's ids are strings.
                during: m
                    .during()
                    .and_then(|d| serde_json::from_str::<String>(d).ok()),
            }
        } else {
            let mut message = m.value();
            // From the gateway's own listen stream: its subscription id is nothing to
            // the clients (a listen stream of theirs tags it with its own).
            if m.during().is_some_and(|d| d.starts_with("\"gw-listen-"))
                && let Some(meta) = message
                    .pointer_mut("/params/_meta")
                    .and_then(Value::as_object_mut)
            {
                meta.remove(crate::mcp::modern::META_SUBSCRIPTION_ID);
            }
            Event::Notification {
                server: up.index,
                message,
            }
        };
        if events.send(event).await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_server_gets_the_metadata_of_its_generation() {
        let modern_client = json!({"name": "t", "_meta": {
            META_PROTOCOL_VERSION: MODERN_VERSION,
            META_CLIENT_CAPABILITIES: {"elicitation": {}},
            "progressToken": "p"}});
        let old_client = json!({"name": "t", "_meta": {"progressToken": "p"}});
        // A server of both generations, with a session: each as it came.
        assert_eq!(with_metadata(&modern_client, true, true, None), None);
        assert_eq!(with_metadata(&old_client, true, true, None), None);
        // Only 2026-07-28: the handshake client's request gets the gateway's metadata.
        let given = with_metadata(&old_client, true, false, None).unwrap();
        assert_eq!(given["_meta"][META_PROTOCOL_VERSION], MODERN_VERSION);
        assert_eq!(given["_meta"][META_CLIENT_CAPABILITIES], json!({}));
        assert_eq!(given["_meta"]["progressToken"], "p");
        assert_eq!(
            with_metadata(&json!(null), true, false, None).unwrap()["_meta"][META_CLIENT_INFO]["name"],
            "keyway-gateway"
        );
        // Handshake only: a 2026-07-28 client's metadata is taken out, the rest stays.
        let stripped = with_metadata(&modern_client, false, true, None).unwrap();
        assert_eq!(stripped["_meta"], json!({"progressToken": "p"}));
        assert_eq!(with_metadata(&old_client, false, true, None), None);
        // What a handshake client declared goes with its requests.
        let declared = ClientSide {
            capabilities: json!({"elicitation": {}}),
            log_level: Some(json!("debug")),
        };
        let given = with_metadata(&old_client, true, false, Some(&declared)).unwrap();
        assert_eq!(
            given["_meta"][META_CLIENT_CAPABILITIES],
            json!({"elicitation": {}})
        );
        assert_eq!(given["_meta"][META_LOG_LEVEL], "debug");
    }
}
