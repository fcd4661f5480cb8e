//! The gateway: many upstream servers behind one MCP endpoint. Tools and prompts are
//! exposed as `prefix__name` (see [`crate::merge`]), resources by their own URIs;
//! each call is routed to its server as raw JSON (unknown fields survive). A server
//! that fails never takes the gateway down; one that needs authorization shows up as
//! a tool whose call says what to run.
//!
//! Clients of both generations are served: one that sends `initialize` gets the
//! handshake revisions, one whose requests carry MCP 2026-07-28 metadata gets
//! `server/discover` and per-request answers with no session ([`modern`]).

pub mod connect;
pub mod edge;
pub mod health;
pub mod http;
pub mod inbound;
mod listen;
pub mod metrics;
pub mod modern;
pub mod people;
mod reverse;
mod rounds;
pub mod upstream;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::join_all;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

pub(crate) use upstream::{Carrier, ClientSide, Event, Upstream, UpstreamError};

use crate::{mcp::wire::WireConfig, merge};

/// Upstream events (notifications, server requests) waiting for the gateway to pass
/// them on; when full, the upstreams' streams are read no further until there is room.
pub const EVENTS_QUEUE: usize = 256;

/// Messages waiting for a stdio client's stdout, and requests of it served at once:
/// beyond these, the gateway reads no more of its stdin until the client catches up.
pub const STDIO_QUEUE: usize = 256;

/// How long listing one upstream may take before it is left out of a merged list.
pub const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// Protocol revisions the gateway speaks downstream (the classic handshake).
const PROTOCOLS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// The synthetic tool of a server that needs authorization.
const AUTHORIZE_TOOL: &str = "keyway_authorize";

/// The key of the gateway's own question in a 2026-07-28 `input_required` answer
/// (a link where the person authorizes a server).
const CONNECT_INPUT: &str = "keyway-connect";

/// Whether the client of a call takes URL elicitations: a 2026-07-28 one says so in
/// the request's metadata, a handshake-era one said so at `initialize`.
fn takes_url_elicitation(params: &Value, carrier: &Carrier, modern: bool) -> bool {
    if modern {
        params
            .pointer("/_meta/io.modelcontextprotocol~1clientCapabilities/elicitation/url")
            .is_some()
    } else {
        carrier
            .client()
            .is_some_and(|c| c.capabilities.pointer("/elicitation/url").is_some())
    }
}

/// MCP's URLElicitationRequiredError (2025-11-25).
const URL_ELICITATION_REQUIRED: i64 = -32042;

/// How the tools and prompts of the upstreams are named downstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrefixMode {
    /// `prefix__name` always (names never clash).
    #[default]
    Always,
    /// No prefix when there is one upstream, `prefix__name` with more.
    Conditional,
    /// The servers' own names; where two servers use one name, the first configured
    /// wins (see [`Gateway::clashes`]).
    Never,
}

/// A `--prefix` that is none of the [`PrefixMode`]s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown prefix mode `{0}`: use always, conditional or never")]
pub struct UnknownPrefixMode(pub String);

impl std::str::FromStr for PrefixMode {
    type Err = UnknownPrefixMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "conditional" => Ok(Self::Conditional),
            "never" => Ok(Self::Never),
            other => Err(UnknownPrefixMode(other.to_owned())),
        }
    }
}

/// Whether an upstream is still wanted (not removed or disabled since the start).
pub trait Liveness: Send + Sync {
    /// `false` once the upstream was removed or disabled: it is then not reconnected
    /// (nor connected again after it was down).
    fn alive(&self) -> futures::future::BoxFuture<'_, bool>;
}

/// One configured upstream.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// The server's name: its tools and prompts are exposed under the prefix made
    /// from it ([`merge::prefixes`]), and errors name it.
    pub name: String,
    /// How to reach the server.
    pub wire: WireConfig,
    /// Asked before reconnecting; absent means always.
    pub liveness: Option<Arc<dyn Liveness>>,
    /// How long a request may go without its answer or a progress report
    /// ([`upstream::REQUEST_TIMEOUT`] is the usual).
    pub request_timeout: std::time::Duration,
    /// Its tools left out: not listed, and not callable. Matched against the tool's
    /// own name and its exposed `prefix__name`.
    pub ignore_tools: merge::ToolFilter,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

enum Slot {
    Ready(Arc<Upstream>),
    Down(UpstreamError),
}

/// The gateway's state, shared by every downstream connection.
pub struct Gateway {
    names: Vec<String>,
    prefixes: Vec<String>,
    /// Whether tools and prompts are exposed as `prefix__name` ([`PrefixMode`]).
    prefixed: bool,
    /// Without prefixes: which server a tool or prompt name belongs to (first wins),
    /// by `tools:NAME` or `prompts:NAME`, learned from the lists.
    owners: Mutex<HashMap<String, usize>>,
    slots: Vec<Mutex<Slot>>,
    configs: Vec<UpstreamConfig>,
    events_tx: mpsc::Sender<Event>,
    /// Messages for the downstream client(s): notifications and server requests.
    downstream: broadcast::Sender<Notice>,
    /// Which server owns a resource URI (first wins), learned from the lists.
    resources: Mutex<HashMap<String, usize>>,
    /// Downstream requests being served, by session and id (its JSON text).
    in_flight: Mutex<HashMap<(String, String), Arc<InFlight>>>,
    progress: Mutex<ProgressRoutes>,
    /// The servers' requests passed to one session, by forwarded id: only that
    /// session's answer goes back, and its end refuses what it left unanswered.
    asked: Mutex<HashMap<String, (String, Option<String>)>>,
    /// The sessions subscribed to each resource URI: the server hears of the first
    /// subscription and the last one ending, and its updates go to these sessions.
    subscribers: Mutex<HashMap<String, HashSet<String>>>,
    /// What each handshake-era session's client declared (capabilities, log level).
    clients: Mutex<HashMap<String, Arc<ClientSide>>>,
    /// The gateway's own questions to clients ([`rounds`]), by id: the session asked,
    /// and the round waiting for the answer.
    questions: Mutex<HashMap<String, (String, tokio::sync::oneshot::Sender<Value>)>>,
    next_question: std::sync::atomic::AtomicU64,
    /// 2026-07-28 requests waiting for their clients' retries ([`reverse`]), by the
    /// `requestState` given.
    parked: Mutex<HashMap<String, reverse::Parked>>,
    /// The gateway itself, for tasks that outlive a call.
    me: std::sync::Weak<Gateway>,
    /// The streams open to each session (its client can be asked something).
    listeners: Arc<Mutex<HashMap<String, usize>>>,
    /// For one person's gateway ([`people`]): links where they authorize a server
    /// that needs it, answered to their calls as URL elicitations.
    links: Option<Arc<dyn people::ConnectLinks>>,
}

/// A stream open to a session's client, counted while it lives
/// ([`Gateway::listener`]).
#[derive(Debug)]
pub struct Listener {
    listeners: Arc<Mutex<HashMap<String, usize>>>,
    session: String,
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = listeners.get_mut(&self.session) {
            *n -= 1;
            if *n == 0 {
                listeners.remove(&self.session);
            }
        }
    }
}

/// Server requests remembered for [`Gateway::asked`] at once; beyond, a request's
/// answer is taken from whichever session sends it.
const MAX_ASKED: usize = 4096;

/// Where a server's request goes.
#[derive(Debug)]
enum Asker {
    /// To the session whose request (its id's JSON text, when known) it came in the
    /// course of.
    Session(String, Option<String>),
    /// Into the `input_required` answer of the 2026-07-28 client's request it came
    /// in the course of ([`reverse`]).
    Round(mpsc::Sender<reverse::Question>),
    /// Nowhere: it came in the course of a 2026-07-28 client's request that cannot
    /// be answered `input_required`.
    Nobody,
    /// To every client (the server did not say what it is about).
    Everyone,
}

/// A message for the downstream side: for one session (a progress report, a
/// server's request), or for every client (list changes, logging).
#[derive(Debug, Clone)]
pub struct Notice {
    /// The session it is for; `None`: every session.
    pub session: Option<String>,
    /// The session's request it came in the course of (the id's JSON text), if
    /// known: a request answered on an event stream of its own carries it there.
    pub request: Option<String>,
    /// The JSON-RPC message to send the client.
    pub message: Value,
}

impl Notice {
    fn everyone(message: Value) -> Self {
        Self {
            session: None,
            request: None,
            message,
        }
    }

    fn to(session: String, request: Option<String>, message: Value) -> Self {
        Self {
            session: Some(session),
            request,
            message,
        }
    }

    /// Whether it belongs to request `id` (JSON text) of `session`.
    pub fn is_during(&self, session: &str, id: &str) -> bool {
        self.session.as_deref() == Some(session) && self.request.as_deref() == Some(id)
    }

    /// Whether a client of `session` ("" on stdio) gets it.
    pub fn is_for(&self, session: &str) -> bool {
        self.session.as_deref().is_none_or(|s| s == session)
    }
}

/// How many finished requests keep their progress route: a report the server sent
/// just before its answer can reach the event pump after the answer reached the
/// caller, and must still find its client.
const KEEP_FINISHED_ROUTES: usize = 1024;

/// Progress tokens the gateway put on the requests it forwards, to the session and
/// token of the client's request. A progress token must be unique among the sender's
/// active requests, and upstream the gateway is the one sender for all its clients,
/// whose own tokens may well be the same.
#[derive(Debug, Default)]
struct ProgressRoutes {
    next: u64,
    routes: HashMap<String, ProgressRoute>,
    finished: VecDeque<String>,
}

/// Where the progress of one forwarded request goes.
#[derive(Debug, Clone)]
struct ProgressRoute {
    session: String,
    /// The client's request (its id's JSON text).
    request: String,
    token: Value,
    /// The request, while it is served (its progress restarts its timeout).
    flight: std::sync::Weak<InFlight>,
}

impl ProgressRoutes {
    /// A token of the gateway's own for `token` of `flight`, request `request` from
    /// `session`.
    fn open(
        &mut self,
        session: &str,
        request: &str,
        token: Value,
        flight: &Arc<InFlight>,
    ) -> String {
        self.next += 1;
        let ours = format!("keyway-progress-{}", self.next);
        self.routes.insert(
            ours.clone(),
            ProgressRoute {
                session: session.to_owned(),
                request: request.to_owned(),
                token,
                flight: Arc::downgrade(flight),
            },
        );
        ours
    }

    /// The request that carried `ours` got its answer.
    fn finish(&mut self, ours: String) {
        self.finished.push_back(ours);
        while self.finished.len() > KEEP_FINISHED_ROUTES {
            if let Some(old) = self.finished.pop_front() {
                self.routes.remove(&old);
            }
        }
    }

    fn route(&self, ours: &str) -> Option<ProgressRoute> {
        self.routes.get(ours).cloned()
    }
}

/// A downstream request's result: built by the gateway, or the server's as it wrote it.
pub(crate) enum Outcome {
    Built(Value),
    Raw(Box<serde_json::value::RawValue>),
}

/// A downstream request being served: cancelled by the client's
/// `notifications/cancelled`, and carried upstream under an id of the gateway's own.
#[derive(Debug, Default)]
struct InFlight {
    cancelled: tokio_util::sync::CancellationToken,
    carrier: Carrier,
    /// Whether the client is a 2026-07-28 one, which takes no requests from servers.
    modern: bool,
    /// For a 2026-07-28 client's request carried by a task of its own: where the
    /// server's questions in its course go ([`reverse`]).
    questions: Option<mpsc::Sender<reverse::Question>>,
}

/// Takes a request out of [`Gateway::in_flight`] when it is done (or dropped), unless
/// a later request with the same id took its place, and retires its progress token.
struct Landing<'a> {
    gw: &'a Gateway,
    key: (String, String),
    flight: Arc<InFlight>,
    progress: Option<String>,
}

impl Drop for Landing<'_> {
    fn drop(&mut self) {
        if let Some(ours) = self.progress.take() {
            self.gw.progress().finish(ours);
        }
        let mut table = self.gw.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if table
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            table.remove(&self.key);
        }
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("servers", &self.names)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Connect to every upstream (all at once; a failing one is recorded, not fatal),
    /// exposing their tools and prompts as `prefix__name`.
    pub async fn start(configs: Vec<UpstreamConfig>) -> Arc<Self> {
        Self::start_with(configs, PrefixMode::Always).await
    }

    /// [`Gateway::start`] naming the tools and prompts as `prefix` says.
    pub async fn start_with(configs: Vec<UpstreamConfig>, prefix: PrefixMode) -> Arc<Self> {
        Self::start_for(configs, prefix, None).await
    }

    /// [`Gateway::start_with`] for one person ([`people`]): a call to a server that
    /// needs their authorization is answered with a link from `links`, as a URL
    /// elicitation where the client takes one.
    pub async fn start_for(
        configs: Vec<UpstreamConfig>,
        prefix: PrefixMode,
        links: Option<Arc<dyn people::ConnectLinks>>,
    ) -> Arc<Self> {
        let prefixed = match prefix {
            PrefixMode::Always => true,
            PrefixMode::Conditional => configs.len() > 1,
            PrefixMode::Never => false,
        };
        let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUE);
        let (downstream, _) = broadcast::channel(256);
        let names: Vec<String> = configs.iter().map(|c| c.name.clone()).collect();
        let prefixes = merge::prefixes(names.iter().map(String::as_str));
        let connected = join_all(configs.iter().enumerate().map(|(i, c)| {
            let tx = events_tx.clone();
            async move {
                match tokio::time::timeout(
                    LIST_TIMEOUT,
                    Upstream::connect(
                        i,
                        &c.name,
                        c.wire.clone(),
                        c.liveness.clone(),
                        c.request_timeout,
                        tx,
                    ),
                )
                .await
                {
                    Ok(Ok(u)) => Slot::Ready(u),
                    Ok(Err(e)) => Slot::Down(e),
                    Err(_) => Slot::Down(UpstreamError::Failed {
                        server: c.name.clone(),
                        message: "no answer within 10 s".into(),
                    }),
                }
            }
        }))
        .await;
        for (name, slot) in names.iter().zip(&connected) {
            match slot {
                // A person's own server before they authorized it: their first call
                // gets its link.
                Slot::Down(UpstreamError::NeedsAuth { .. })
                    if links.as_ref().is_some_and(|l| l.covers(name)) =>
                {
                    tracing::debug!(server = %name, "not authorized by this person yet");
                }
                Slot::Down(e) => tracing::warn!(server = %name, "not available: {e}"),
                Slot::Ready(_) => {}
            }
        }
        let gw = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            links,
            parked: Mutex::default(),
            listeners: Arc::default(),
            names,
            prefixes,
            prefixed,
            owners: Mutex::new(HashMap::new()),
            slots: connected.into_iter().map(Mutex::new).collect(),
            configs,
            events_tx,
            downstream,
            resources: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashMap::new()),
            progress: Mutex::default(),
            asked: Mutex::default(),
            subscribers: Mutex::default(),
            clients: Mutex::default(),
            questions: Mutex::default(),
            next_question: std::sync::atomic::AtomicU64::new(1),
        });
        tokio::spawn(pump_events(gw.clone(), events_rx));
        gw
    }

    /// Messages for the downstream side (notifications, server requests); each
    /// client keeps those [`Notice::is_for`] it.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.downstream.subscribe()
    }

    /// Note a stream open to `session`'s client for as long as the guard lives: a
    /// server's question for that session is asked only while one is.
    pub fn listener(&self, session: &str) -> Listener {
        *self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(session.to_owned())
            .or_default() += 1;
        Listener {
            listeners: self.listeners.clone(),
            session: session.to_owned(),
        }
    }

    /// Whether a stream is open to `session`'s client.
    fn is_listening(&self, session: &str) -> bool {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(session)
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, ProgressRoutes> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, i: usize) -> Result<Arc<Upstream>, UpstreamError> {
        match &*self.slots[i].lock().unwrap_or_else(|p| p.into_inner()) {
            Slot::Ready(u) => Ok(u.clone()),
            Slot::Down(e) => Err(e.clone()),
        }
    }

    /// Try a server that was down once more (it may have been authorized since).
    async fn revive(&self, i: usize) -> Result<Arc<Upstream>, UpstreamError> {
        if let Ok(u) = self.slot(i) {
            return Ok(u);
        }
        let c = &self.configs[i];
        if let Some(l) = &c.liveness
            && !l.alive().await
        {
            return Err(UpstreamError::Failed {
                server: c.name.clone(),
                message: "removed or disabled".into(),
            });
        }
        let u = Upstream::connect(
            i,
            &c.name,
            c.wire.clone(),
            c.liveness.clone(),
            c.request_timeout,
            self.events_tx.clone(),
        )
        .await?;
        *self.slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Slot::Ready(u.clone());
        // A person who just authorized it sees its tools now.
        if self.links.is_some() {
            let _ = self.downstream.send(Notice::everyone(
                json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}),
            ));
        }
        Ok(u)
    }

    /// Handle one downstream message from `session` (the client's session id; empty
    /// on stdio). `Some` is the answer to send back, as JSON text; a request the client
    /// cancelled meanwhile gets none.
    pub async fn handle(&self, session: &str, mut message: Value) -> Option<String> {
        let id = message.get("id").cloned();
        let mut params = message
            .get_mut("params")
            .map(Value::take)
            .unwrap_or(Value::Null);
        let checked = match modern::revision(&params) {
            None => Ok(false),
            Some(crate::mcp::modern::MODERN_VERSION) => modern::check_meta(&params).map(|()| true),
            Some(other) => Err(modern::unsupported(other)),
        };
        let modern = match checked {
            Ok(modern) => modern,
            Err(error) => {
                return id
                    .map(|id| json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string());
            }
        };
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            // An answer to one of the gateway's questions, or to a server request it
            // passed on (it has no params).
            match id.as_ref().and_then(Value::as_str) {
                Some(q) if q.starts_with(rounds::QUESTION) => {
                    self.answered(session, q, message);
                }
                _ => self.answer_upstream(session, message).await,
            }
            return None;
        };
        let Some(id) = id else {
            if method == "notifications/cancelled" {
                self.cancel(session, &params).await;
            }
            return None; // notifications need no answer
        };
        // Registered before the first await: a cancellation handled after this
        // message finds it.
        let carried = modern && self.carries(method);
        let (questions, asked) = if carried {
            let (tx, rx) = mpsc::channel(crate::mcp::modern::MAX_QUEUED_QUESTIONS);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let flight = Arc::new(InFlight {
            modern,
            carrier: Carrier::for_client(if modern { None } else { self.client(session) }),
            questions,
            ..InFlight::default()
        });
        let key = (session.to_owned(), id.to_string());
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), flight.clone());
        let progress = params
            .get("_meta")
            .and_then(|m| m.get("progressToken"))
            .cloned()
            .map(|token| {
                let ours = self.progress().open(session, &key.1, token, &flight);
                params["_meta"]["progressToken"] = json!(ours);
                ours
            });
        let landing = Landing {
            gw: self,
            key,
            flight: flight.clone(),
            progress,
        };
        // A handshake-era client's request that a server speaking only 2026-07-28 may
        // answer `input_required`: kept for the retries.
        let retry =
            (!modern && rounds::may_ask(method) && self.may_want_input()).then(|| params.clone());
        let outcome = tokio::select! {
            biased;
            () = flight.cancelled.cancelled() => return None,
            outcome = async {
                if modern && let Some(round) = self.take_round(method, &params) {
                    return match round {
                        Ok(parked) => self.resume(parked, &params).await,
                        Err(e) => Err(e),
                    };
                }
                if let Some(asked) = asked {
                    let capabilities = params
                        .pointer(&format!("/_meta/{}", crate::mcp::modern::META_CLIENT_CAPABILITIES.replace('/', "~1")))
                        .cloned()
                        .unwrap_or_default();
                    let name = crate::mcp::modern::request_subject(&params);
                    let carried = self.carry(session, method, params, flight.clone(), asked)?;
                    return self.carry_on(carried, method.to_owned(), name, capabilities).await;
                }
                let outcome = self
                    .dispatch(session, method, params, &flight.carrier, modern)
                    .await;
                match (outcome, &retry) {
                    (Ok(first), Some(params)) => {
                        self.rounds(session, &landing.key.1, method, params, first, &flight.carrier).await
                    }
                    (outcome, _) => outcome,
                }
            } => outcome,
        };
        // A 2026-07-28 server's request for more input reaches a 2026-07-28 client as
        // it is; a handshake-era client could not make sense of it.
        let outcome = match outcome {
            Ok(result) if !modern => match modern::input_wanted(&result) {
                Some(asked) => Err(json!({"code": -32000, "message": format!(
                    "the server answered input_required ({asked}) on its handshake session, where it should have asked with its own requests"
                )})),
                None => Ok(result),
            },
            Ok(result) if modern => Ok(modern::with_result_type(result)),
            other => other,
        };
        Some(match outcome {
            Ok(Outcome::Built(result)) => {
                json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string()
            }
            // `id` displays as its JSON text.
            Ok(Outcome::Raw(result)) => {
                let mut text = String::with_capacity(result.get().len() + 64);
                text.push_str(r#"{"jsonrpc":"2.0","id":"#);
                text.push_str(&id.to_string());
                text.push_str(r#","result":"#);
                text.push_str(result.get());
                text.push('}');
                text
            }
            Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}).to_string(),
        })
    }

    /// The client's `notifications/cancelled`: the request stops waiting, and the
    /// server carrying it hears of it under the id the gateway gave it. A request
    /// that is unknown or already answered is ignored, as the spec says.
    async fn cancel(&self, session: &str, params: &Value) {
        let Some(request_id) = params.get("requestId") else {
            return;
        };
        let flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(session.to_owned(), request_id.to_string()))
            .cloned();
        let Some(flight) = flight else { return };
        self.stop(&flight, params.get("reason").cloned()).await;
    }

    /// Stop serving a request, and tell the server carrying it.
    async fn stop(&self, flight: &InFlight, reason: Option<Value>) {
        flight.cancelled.cancel();
        let Some((server, upstream_id)) = flight.carrier.get() else {
            return;
        };
        let mut note = json!({"requestId": upstream_id});
        if let Some(reason) = reason {
            note["reason"] = reason;
        }
        if let Ok(u) = self.slot(server) {
            let message =
                json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": note});
            if let Err(e) = u.send_raw(&message).await {
                tracing::debug!(server = %self.names[server], "passing a cancellation on failed: {e}");
            }
        }
    }

    /// A downstream request's result or JSON-RPC error.
    async fn dispatch(
        &self,
        session: &str,
        method: &str,
        params: Value,
        carrier: &Carrier,
        modern: bool,
    ) -> Result<Outcome, Value> {
        let built = |v: Value| Ok(Outcome::Built(v));
        if modern && modern::handshake_only(method) {
            return Err(json!({"code": -32601, "message": format!(
                "{method} is not a method of MCP 2026-07-28 (it has no handshake, ping, session log level or resources/subscribe)"
            )}));
        }
        let list = |mut v: Value| {
            if modern {
                modern::add_caching_hints(&mut v);
            }
            Ok(Outcome::Built(v))
        };
        match method {
            "server/discover" => built(self.discover()),
            // Served by `Gateway::listen` on a stream of its own.
            "subscriptions/listen" => Err(json!({"code": -32601, "message":
                "subscriptions/listen is served on a stream: over HTTP, send it with Accept: text/event-stream"})),
            "completion/complete" => self.complete(params, carrier).await.map(Outcome::Built),
            "tools/list" => list(self.list("tools/list", "tools", true).await),
            "prompts/list" => list(self.list("prompts/list", "prompts", false).await),
            "resources/list" => list(self.list_resources("resources/list", "resources").await),
            "resources/templates/list" => list(
                self.list_resources("resources/templates/list", "resourceTemplates")
                    .await,
            ),
            "initialize" => {
                let capabilities = params
                    .get("capabilities")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                self.clients().insert(
                    session.to_owned(),
                    Arc::new(ClientSide {
                        capabilities,
                        log_level: None,
                    }),
                );
                built(self.initialize(&params))
            }
            "ping" => built(json!({})),
            "tools/call" => self.call_tool(params, carrier, modern).await,
            "prompts/get" => self
                .by_prefix("prompts/get", params, carrier)
                .await
                .map(Outcome::Built),
            "resources/subscribe" | "resources/unsubscribe" => self
                .subscription(session, method, params, carrier)
                .await
                .map(Outcome::Built),
            // A read result carries caching hints in 2026-07-28 too (a handshake
            // server's has none).
            "resources/read" => self
                .by_uri(method, params, carrier, modern)
                .await
                .and_then(list),
            "logging/setLevel" => {
                // A server with a session hears it; one that speaks only 2026-07-28
                // gets it with each of this session's requests.
                {
                    let mut clients = self.clients();
                    let side = clients.entry(session.to_owned()).or_default();
                    let mut updated = ClientSide::clone(side);
                    updated.log_level = params.get("level").cloned();
                    *side = Arc::new(updated);
                }
                for i in 0..self.slots.len() {
                    if let Ok(u) = self.slot(i)
                        && u.has_session()
                    {
                        let _ = u.request("logging/setLevel", params.clone()).await;
                    }
                }
                built(json!({}))
            }
            other => Err(json!({"code": -32601, "message": format!("method not found: {other}")})),
        }
    }

    /// The answer to `server/discover`: the revisions the gateway speaks and what it
    /// offers a 2026-07-28 client (list changes and resource updates on
    /// `subscriptions/listen`).
    fn discover(&self) -> Value {
        let handshake = self.initialize(&json!({}));
        json!({
            "resultType": "complete",
            "supportedVersions": modern::SUPPORTED,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": true},
                "completions": {},
            },
            "instructions": handshake["instructions"],
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": {"io.modelcontextprotocol/serverInfo": handshake["serverInfo"]},
        })
    }

    /// `completion/complete`, routed by what it completes: a prompt by its prefixed
    /// name, a resource template by its URI.
    async fn complete(&self, mut params: Value, carrier: &Carrier) -> Result<Value, Value> {
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        match reference.get("type").and_then(Value::as_str) {
            Some("ref/prompt") => {
                let (i, name) = self.route_name("prompts", &reference).await?;
                let upstream = self
                    .slot(i)
                    .map_err(|e| json!({"code": -32603, "message": e.to_string()}))?;
                params["ref"]["name"] = json!(name);
                upstream
                    .request_carrying("completion/complete", params, Some(carrier))
                    .await
                    .map_err(rpc_error)
            }
            Some("ref/resource") => {
                let uri = reference.get("uri").cloned().unwrap_or(Value::Null);
                let mut routed = params.clone();
                routed["uri"] = uri;
                let owner = self.owner(&routed).await;
                let candidates: Vec<usize> = match owner {
                    Some(i) => vec![i],
                    None => (0..self.slots.len()).collect(),
                };
                let mut last =
                    json!({"code": -32602, "message": "no server has that resource template"});
                for i in candidates {
                    let Ok(u) = self.slot(i) else { continue };
                    match u
                        .request_carrying("completion/complete", params.clone(), Some(carrier))
                        .await
                    {
                        Ok(r) => return Ok(r),
                        Err(e) => last = rpc_error(e),
                    }
                }
                Err(last)
            }
            _ => Err(
                json!({"code": -32602, "message": "completion/complete needs a ref of type ref/prompt or ref/resource"}),
            ),
        }
    }

    fn initialize(&self, params: &Value) -> Value {
        let asked = params
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(PROTOCOLS[0]);
        let version = if PROTOCOLS.contains(&asked) {
            asked
        } else {
            PROTOCOLS[0]
        };
        let servers: Vec<String> = if self.prefixed {
            self.names
                .iter()
                .zip(&self.prefixes)
                .map(|(n, p)| format!("{p}__ tools come from {n}"))
                .collect()
        } else {
            self.names.clone()
        };
        json!({
            "protocolVersion": version,
            "capabilities": {
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": true},
                "logging": {},
            },
            "serverInfo": {"name": "keyway-gateway", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!("keyway gateway for {} servers: {}", self.names.len(), servers.join("; ")),
        })
    }

    /// Every upstream's list (all pages), names prefixed, merged first-wins. A server
    /// that needs authorization contributes one tool that says so.
    async fn list(&self, method: &str, key: &str, tools: bool) -> Value {
        let lists = join_all((0..self.slots.len()).map(|i| async move {
            let u = match self.slot(i) {
                Ok(u) => u,
                // A server the person authorizes may have been authorized since
                // (through its link, on any replica): tried again.
                Err(UpstreamError::NeedsAuth { .. })
                    if self
                        .links
                        .as_ref()
                        .is_some_and(|l| l.covers(&self.names[i])) =>
                {
                    match tokio::time::timeout(LIST_TIMEOUT, self.revive(i)).await {
                        Ok(Ok(u)) => u,
                        Ok(Err(e)) => return Err(e),
                        Err(_) => {
                            return Err(UpstreamError::Failed {
                                server: self.names[i].clone(),
                                message: "no answer within 10 s".into(),
                            });
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            tokio::time::timeout(LIST_TIMEOUT, all_pages(&u, method, key))
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::Failed {
                        server: u.name.clone(),
                        message: "listing timed out".into(),
                    })
                })
        }))
        .await;
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        for (i, list) in lists.into_iter().enumerate() {
            let prefix = &self.prefixes[i];
            match list {
                Ok(items) => {
                    for mut item in items {
                        let Some(name) =
                            item.get("name").and_then(Value::as_str).map(str::to_owned)
                        else {
                            continue;
                        };
                        if tools && self.ignored(i, &name) {
                            continue;
                        }
                        let exposed = if self.prefixed {
                            format!("{prefix}{}{name}", merge::SEPARATOR)
                        } else {
                            name
                        };
                        if seen.insert(exposed.clone()) {
                            if !self.prefixed {
                                owners.insert(format!("{key}:{exposed}"), i);
                            }
                            item["name"] = json!(exposed);
                            out.push(item);
                        }
                    }
                }
                Err(UpstreamError::NeedsAuth { server }) if tools => {
                    let description = match self.links {
                        Some(_) => format!(
                            "{server} needs you to connect your account: call this tool for the link, then list the tools again."
                        ),
                        None => format!(
                            "{server} needs authorization: run `keyway authorize {server}` in a terminal, then call its tools again."
                        ),
                    };
                    out.push(json!({
                        "name": format!("{prefix}{}{AUTHORIZE_TOOL}", merge::SEPARATOR),
                        "description": description,
                        "inputSchema": {"type": "object", "properties": {}},
                    }));
                }
                Err(e) => tracing::warn!("{method}: {e}"),
            }
        }
        json!({ key: out })
    }

    async fn list_resources(&self, method: &str, key: &str) -> Value {
        let lists = join_all((0..self.slots.len()).map(|i| async move {
            let u = self.slot(i)?;
            tokio::time::timeout(LIST_TIMEOUT, all_pages(&u, method, key))
                .await
                .unwrap_or_else(|_| {
                    Err(UpstreamError::Failed {
                        server: u.name.clone(),
                        message: "listing timed out".into(),
                    })
                })
        }))
        .await;
        let mut out = Vec::new();
        let mut owners = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        for (i, list) in lists.into_iter().enumerate() {
            match list {
                Ok(items) => {
                    for item in items {
                        let uri = item
                            .get("uri")
                            .or_else(|| item.get("uriTemplate"))
                            .and_then(Value::as_str)
                            .map(str::to_owned);
                        if let Some(uri) = uri {
                            if owners.get(&uri).is_some_and(|o| *o != i) {
                                continue;
                            }
                            owners.insert(uri, i);
                        }
                        out.push(item);
                    }
                }
                Err(e) => tracing::debug!("{method}: {e}"),
            }
        }
        json!({ key: out })
    }

    /// The server and its own name for the tool or prompt (`key`: `tools` or
    /// `prompts`) named in `params.name`: by its `prefix__`, or without prefixes by
    /// the lists (listed again when the name is not known yet). A server's
    /// authorization tool keeps its prefix in every mode.
    async fn route_name(&self, key: &str, params: &Value) -> Result<(usize, String), Value> {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let unknown = || json!({"code": -32602, "message": format!("unknown name: {name}")});
        let by_prefix = merge::split(name).and_then(|(prefix, rest)| {
            let i = self.prefixes.iter().position(|p| p == prefix)?;
            Some((i, rest.to_owned()))
        });
        if self.prefixed {
            return by_prefix.ok_or_else(unknown);
        }
        if let Some((i, rest)) = by_prefix.filter(|(_, rest)| rest == AUTHORIZE_TOOL) {
            return Ok((i, rest));
        }
        if self.slots.len() == 1 {
            return Ok((0, name.to_owned()));
        }
        let owner_key = format!("{key}:{name}");
        let known = |gw: &Self| {
            gw.owners
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&owner_key)
                .copied()
        };
        let owner = match known(self) {
            Some(i) => Some(i),
            None => {
                self.list(&format!("{key}/list"), key, key == "tools").await;
                known(self)
            }
        };
        owner.map(|i| (i, name.to_owned())).ok_or_else(unknown)
    }

    /// Tool and prompt names two servers both use, for [`PrefixMode::Never`]: each
    /// goes to the first server configured, and the other's is out of reach.
    pub async fn clashes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (method, key) in [("tools/list", "tools"), ("prompts/list", "prompts")] {
            let mut first: HashMap<String, usize> = HashMap::new();
            for i in 0..self.slots.len() {
                let Ok(u) = self.slot(i) else { continue };
                let Ok(Ok(items)) =
                    tokio::time::timeout(LIST_TIMEOUT, all_pages(&u, method, key)).await
                else {
                    continue;
                };
                for item in items {
                    let Some(name) = item.get("name").and_then(Value::as_str) else {
                        continue;
                    };
                    match first.get(name) {
                        Some(&owner) => out.push(format!(
                            "{} {name} of {} is hidden by {}'s",
                            &key[..key.len() - 1],
                            self.names[i],
                            self.names[owner]
                        )),
                        None => {
                            first.insert(name.to_owned(), i);
                        }
                    }
                }
            }
        }
        out
    }

    /// Whether upstream `i`'s tool `tool` is left out (`--ignore-tool`).
    fn ignored(&self, i: usize, tool: &str) -> bool {
        let filter = &self.configs[i].ignore_tools;
        !filter.is_empty()
            && (filter.ignores(tool)
                || filter.ignores(&format!("{}{}{tool}", self.prefixes[i], merge::SEPARATOR)))
    }

    async fn call_tool(
        &self,
        mut params: Value,
        carrier: &Carrier,
        modern: bool,
    ) -> Result<Outcome, Value> {
        let (i, tool) = self.route_name("tools", &params).await?;
        // The answer to the gateway's own question (a retried 2026-07-28 call) is the
        // gateway's: the server never asked it.
        if let Some(answers) = params
            .get_mut("inputResponses")
            .and_then(Value::as_object_mut)
        {
            answers.remove(CONNECT_INPUT);
            if answers.is_empty()
                && let Some(p) = params.as_object_mut()
            {
                p.remove("inputResponses");
            }
        }
        if self.ignored(i, &tool) {
            let name = params
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Err(json!({"code": -32602, "message": format!("unknown name: {name}")}));
        }
        let tool_error = |text: String| {
            Ok(Outcome::Built(
                json!({"content": [{"type": "text", "text": text}], "isError": true}),
            ))
        };
        let upstream = match self.slot(i) {
            Ok(u) => u,
            Err(_) => match self.revive(i).await {
                Ok(u) => u,
                Err(UpstreamError::NeedsAuth { .. }) if self.links.is_some() => {
                    let takes_urls = takes_url_elicitation(&params, carrier, modern);
                    return self.connect_answer(i, takes_urls, modern).await;
                }
                Err(e) => return tool_error(e.to_string()),
            },
        };
        if tool == AUTHORIZE_TOOL {
            return tool_error(format!(
                "{} is reachable now; list the tools again",
                self.names[i]
            ));
        }
        params["name"] = json!(tool);
        // The result goes back as the server wrote it (the hot path of a gateway).
        let takes_urls = self.links.is_some() && takes_url_elicitation(&params, carrier, modern);
        match upstream
            .request_raw("tools/call", params, Some(carrier))
            .await
        {
            Ok(result) => Ok(Outcome::Raw(result)),
            Err(UpstreamError::Rpc { error, .. }) => Err(error),
            // Their token was refused (revoked, or its refresh was): they authorize
            // again.
            Err(UpstreamError::NeedsAuth { .. }) if self.links.is_some() => {
                self.connect_answer(i, takes_urls, modern).await
            }
            Err(e) => tool_error(e.to_string()),
        }
    }

    /// A call to server `i`, which needs the person's authorization: a link where
    /// they give it, as the client can take it. A 2026-07-28 client that takes URL
    /// elicitations gets it `input_required`; a handshake-era one, the
    /// URLElicitationRequiredError (-32042); any other, a tool error with the link
    /// in its text, for the person to open.
    async fn connect_answer(
        &self,
        i: usize,
        takes_urls: bool,
        modern: bool,
    ) -> Result<Outcome, Value> {
        let server = &self.names[i];
        let tool_error = |text: String| {
            Ok(Outcome::Built(
                json!({"content": [{"type": "text", "text": text}], "isError": true}),
            ))
        };
        let link = match self.links.as_ref() {
            Some(links) => links.link(server).await,
            None => None,
        };
        let link = match link {
            None => {
                return tool_error(format!(
                    "{server} needs authorization, which the gateway's administrator gives"
                ));
            }
            Some(Err(why)) => {
                return tool_error(format!(
                    "{server} needs you to connect your account, and the gateway could not make the link for it: {why}"
                ));
            }
            Some(Ok(link)) => link,
        };
        metrics::record_flow(server, metrics::FlowStep::Offered);
        let message = format!(
            "Connect your {server} account: open the page, sign in, and allow access. Then call the tool again."
        );
        let elicitation = json!({
            "mode": "url",
            "elicitationId": link.elicitation_id,
            "url": link.url,
            "message": message,
        });
        match (takes_urls, modern) {
            (true, true) => Ok(Outcome::Built(json!({
                "resultType": "input_required",
                "inputRequests": {CONNECT_INPUT: {"method": "elicitation/create", "params": elicitation}},
            }))),
            (true, false) => Err(json!({
                "code": URL_ELICITATION_REQUIRED,
                "message": format!("{server} needs you to connect your account first"),
                "data": {"elicitations": [elicitation]},
            })),
            (false, _) => tool_error(format!("{message}\n{}", link.url)),
        }
    }

    async fn by_prefix(
        &self,
        method: &str,
        mut params: Value,
        carrier: &Carrier,
    ) -> Result<Value, Value> {
        let (i, name) = self.route_name("prompts", &params).await?;
        let upstream = self
            .slot(i)
            .map_err(|e| json!({"code": -32603, "message": e.to_string()}))?;
        params["name"] = json!(name);
        upstream
            .request_carrying(method, params, Some(carrier))
            .await
            .map_err(rpc_error)
    }

    /// The server that listed the resource (or template) at `params.uri`, listing
    /// again first when none did so far.
    async fn owner(&self, params: &Value) -> Option<usize> {
        let uri = params
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let known = |gw: &Self| {
            gw.resources
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(uri)
                .copied()
        };
        if let Some(i) = known(self) {
            return Some(i);
        }
        self.list_resources("resources/list", "resources").await;
        known(self)
    }

    async fn by_uri(
        &self,
        method: &str,
        params: Value,
        carrier: &Carrier,
        modern: bool,
    ) -> Result<Value, Value> {
        let uri = params
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let owner = self.owner(&params).await;
        // A templated or unlisted URI: ask each server until one knows it.
        let candidates: Vec<usize> = match owner {
            Some(i) => vec![i],
            None => (0..self.slots.len()).collect(),
        };
        // "Resource not found" is -32602 in 2026-07-28, -32002 before.
        let code = if modern { -32602 } else { -32002 };
        let mut last = json!({"code": code, "message": format!("resource not found: {uri}")});
        for i in candidates {
            let Ok(u) = self.slot(i) else { continue };
            match u
                .request_carrying(method, params.clone(), Some(carrier))
                .await
            {
                Ok(r) => return Ok(r),
                Err(e) => last = rpc_error(e),
            }
        }
        // A handshake server's "resource not found" in the code of the client's
        // revision.
        if modern && last.get("code") == Some(&json!(-32002)) {
            last["code"] = json!(-32602);
        }
        Err(last)
    }

    /// `resources/subscribe` or `resources/unsubscribe` of `session`. The server
    /// holds one subscription for all the gateway's clients: it hears of the first
    /// session subscribing to a URI and of the last one unsubscribing.
    async fn subscription(
        &self,
        session: &str,
        method: &str,
        params: Value,
        carrier: &Carrier,
    ) -> Result<Value, Value> {
        let uri = params
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let subscribe = method == "resources/subscribe";
        let pass_on = {
            let mut subs = self.subscribers();
            if subscribe {
                let sessions = subs.entry(uri.clone()).or_default();
                sessions.insert(session.to_owned()) && sessions.len() == 1
            } else {
                match subs.get_mut(&uri) {
                    Some(sessions) => {
                        let was = sessions.remove(session);
                        let last = sessions.is_empty();
                        if last {
                            subs.remove(&uri);
                        }
                        was && last
                    }
                    None => true,
                }
            }
        };
        if !pass_on {
            return Ok(json!({}));
        }
        let answer = self.subscribe_at(method, params, carrier).await;
        if subscribe && answer.is_err() {
            self.forget_subscriber(&uri, session);
        }
        answer
    }

    /// `resources/subscribe` or `resources/unsubscribe` at the server that has the
    /// resource: a server that speaks only 2026-07-28 has neither, and follows it on
    /// its `subscriptions/listen` stream instead.
    async fn subscribe_at(
        &self,
        method: &str,
        params: Value,
        carrier: &Carrier,
    ) -> Result<Value, Value> {
        if let Some(i) = self.owner(&params).await
            && let Ok(u) = self.slot(i)
            && u.listens()
        {
            let uri = params
                .get("uri")
                .and_then(Value::as_str)
                .unwrap_or_default();
            u.watch(uri, method == "resources/subscribe").await;
            return Ok(json!({}));
        }
        self.by_uri(method, params, carrier, false).await
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take `session` off `uri`'s subscribers; whether it was the last one.
    fn forget_subscriber(&self, uri: &str, session: &str) -> bool {
        let mut subs = self.subscribers();
        let Some(sessions) = subs.get_mut(uri) else {
            return false;
        };
        let was = sessions.remove(session);
        if sessions.is_empty() {
            subs.remove(uri);
            return was;
        }
        false
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ClientSide>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `session`'s client declared, if it started a handshake session.
    fn client(&self, session: &str) -> Option<Arc<ClientSide>> {
        self.clients().get(session).cloned()
    }

    #[allow(clippy::type_complexity)]
    fn questions(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (String, tokio::sync::oneshot::Sender<Value>)>>
    {
        self.questions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether some server speaks only 2026-07-28 (so may answer a handshake-era
    /// client's request `input_required`).
    fn may_want_input(&self) -> bool {
        (0..self.slots.len()).any(|i| {
            self.slot(i)
                .is_ok_and(|u| u.is_modern() && !u.has_session())
        })
    }

    fn asked(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Option<String>)>> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who a request server `server` sent should go to: the session whose request it
    /// came in the course of, by the stream it came on (`during`, the gateway's id of
    /// that request) or, without one (a stdio server, or a request on the standalone
    /// stream), the one session with requests at that server now.
    fn asker(&self, server: usize, during: Option<&str>) -> Asker {
        let table = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let at_server = |f: &InFlight| f.carrier.get().filter(|(s, _)| *s == server);
        let chosen = |session: &String, request: Option<&String>, f: &InFlight| match (
            f.modern,
            &f.questions,
        ) {
            (true, Some(questions)) => Asker::Round(questions.clone()),
            (true, None) => Asker::Nobody,
            (false, _) => Asker::Session(session.clone(), request.cloned()),
        };
        if let Some(during) = during {
            // On the stream of a request nobody is served by any more (or one of the
            // gateway's own): nobody to ask.
            return table
                .iter()
                .find(|(_, f)| at_server(f).is_some_and(|(_, id)| id == during))
                .map_or(Asker::Nobody, |((session, request), f)| {
                    chosen(session, Some(request), f)
                });
        }
        // No stream to tell: the requests at that server now, each once (a carried
        // one is also under a key of its own, the client's preferred).
        let mut open: Vec<(&(String, String), &Arc<InFlight>)> = Vec::new();
        for (key, f) in table.iter().filter(|(_, f)| at_server(f).is_some()) {
            match open.iter_mut().find(|(_, g)| Arc::ptr_eq(g, f)) {
                Some(seen) if seen.0.0 == reverse::CARRIED_SESSION => seen.0 = key,
                Some(_) => {}
                None => open.push((key, f)),
            }
        }
        let own_key = |key: &(String, String)| key.0 != reverse::CARRIED_SESSION;
        match open.as_slice() {
            [] => Asker::Everyone,
            [(key, f)] => chosen(&key.0, own_key(key).then_some(&key.1), f),
            several if several.iter().any(|(_, f)| f.modern) => Asker::Nobody,
            [(first, _), rest @ ..] if rest.iter().all(|(k, _)| k.0 == first.0) => {
                Asker::Session(first.0.clone(), None)
            }
            _ => Asker::Everyone,
        }
    }

    /// End `session` (its client sent DELETE, or it was forgotten to make room): its
    /// requests still being served are cancelled, the servers' requests it did not
    /// answer are refused, and its resource subscriptions end (the server's with the
    /// last one).
    pub async fn end_session(&self, session: &str) {
        self.clients().remove(session);
        // Dropping a round's sender ends its wait: the session is gone.
        self.questions().retain(|_, (s, _)| s != session);
        let flights: Vec<Arc<InFlight>> = self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|((s, _), _)| s == session)
            .map(|(_, f)| f.clone())
            .collect();
        for flight in flights {
            self.stop(&flight, Some(json!("the client's session ended")))
                .await;
        }
        let unanswered: Vec<String> = {
            let mut asked = self.asked();
            let ids: Vec<String> = asked
                .iter()
                .filter(|(_, (s, _))| s.as_str() == session)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                asked.remove(id);
            }
            ids
        };
        for id in unanswered {
            if let Some((server, original)) = parse_forwarded_id(&id) {
                self.refuse(
                    server,
                    original,
                    "the client's session ended before it answered",
                )
                .await;
            }
        }
        let uris: Vec<String> = self
            .subscribers()
            .iter()
            .filter(|(_, sessions)| sessions.contains(session))
            .map(|(uri, _)| uri.clone())
            .collect();
        for uri in uris {
            if self.forget_subscriber(&uri, session) {
                let params = json!({"uri": uri});
                if let Err(e) = self
                    .subscribe_at("resources/unsubscribe", params, &Carrier::default())
                    .await
                {
                    tracing::debug!(%uri, "unsubscribing for an ended session failed: {e}");
                }
            }
        }
    }

    /// Answer server `server`'s request `id` with an error: nobody will answer it.
    async fn refuse(&self, server: usize, id: Value, why: &str) {
        if let Ok(u) = self.slot(server) {
            let refusal =
                json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why}});
            if let Err(e) = u.send_raw(&refusal).await {
                tracing::debug!("refusing a server request failed: {e}");
            }
        }
    }

    /// `session`'s answer to a request a server made through us: passed back unless
    /// the request was another session's.
    async fn answer_upstream(&self, session: &str, mut message: Value) {
        let Some(id) = message.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        {
            let mut asked = self.asked();
            match asked.get(&id) {
                Some((owner, _)) if owner != session => {
                    tracing::debug!(
                        "an answer to a server request another session was asked; ignored"
                    );
                    return;
                }
                Some(_) => {
                    asked.remove(&id);
                }
                None => {}
            }
        }
        let Some((server, original)) = parse_forwarded_id(&id) else {
            return;
        };
        if let Ok(u) = self.slot(server) {
            message["id"] = original;
            if let Err(e) = u.send_raw(&message).await {
                tracing::warn!("passing an answer back failed: {e}");
            }
        }
    }

    /// Close every upstream session.
    pub async fn close(&self) {
        for i in 0..self.slots.len() {
            if let Ok(u) = self.slot(i) {
                u.close().await;
            }
        }
    }
}

fn rpc_error(e: UpstreamError) -> Value {
    match e {
        UpstreamError::Rpc { error, .. } => error,
        e => json!({"code": -32603, "message": e.to_string()}),
    }
}

/// All pages of a list.
async fn all_pages(u: &Upstream, method: &str, key: &str) -> Result<Vec<Value>, UpstreamError> {
    let mut out = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..100 {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = u.request(method, params).await?;
        if let Some(items) = page.get(key).and_then(Value::as_array) {
            out.extend(items.iter().cloned());
        }
        cursor = page.get("nextCursor").filter(|c| !c.is_null()).cloned();
        if cursor.is_none() {
            break;
        }
    }
    Ok(out)
}

/// Server requests are passed down with ids that say where they came from.
fn forwarded_id(server: usize, id: &Value) -> String {
    format!("keyway-up-{server}-{id}")
}

fn parse_forwarded_id(id: &str) -> Option<(usize, Value)> {
    let rest = id.strip_prefix("keyway-up-")?;
    let (server, original) = rest.split_once('-')?;
    Some((server.parse().ok()?, serde_json::from_str(original).ok()?))
}

/// Upstream events to the downstream side: progress to the client whose request it is
/// about, under that client's token; server requests with forwarded ids; other
/// notifications as they are, to every client.
async fn pump_events(gw: Arc<Gateway>, mut events: mpsc::Receiver<Event>) {
    while let Some(ev) = events.recv().await {
        let message = match ev {
            Event::Notification { mut message, .. }
                if message.get("method").and_then(Value::as_str)
                    == Some("notifications/progress") =>
            {
                let route = message
                    .pointer("/params/progressToken")
                    .and_then(Value::as_str)
                    .and_then(|ours| gw.progress().route(ours));
                // A token the gateway did not give goes on as it came.
                if let Some(ProgressRoute {
                    session,
                    request,
                    token,
                    flight,
                }) = route
                {
                    if let Some(flight) = flight.upgrade() {
                        flight.carrier.progressed();
                    }
                    message["params"]["progressToken"] = token;
                    let _ = gw
                        .downstream
                        .send(Notice::to(session, Some(request), message));
                    continue;
                }
                message
            }
            // A server cancelling its own request: the client knows that request by
            // the id the gateway passed down.
            Event::Notification {
                server,
                mut message,
            } if message.get("method").and_then(Value::as_str)
                == Some("notifications/cancelled") =>
            {
                if let Some(id) = message.pointer_mut("/params/requestId") {
                    let forwarded = forwarded_id(server, id);
                    let owner = gw.asked().remove(&forwarded);
                    *id = json!(forwarded);
                    if let Some((session, request)) = owner {
                        let _ = gw.downstream.send(Notice::to(session, request, message));
                        continue;
                    }
                }
                message
            }
            // A resource's update goes to the sessions subscribed to it.
            Event::Notification { message, .. }
                if message.get("method").and_then(Value::as_str)
                    == Some("notifications/resources/updated") =>
            {
                let sessions: Vec<String> = message
                    .pointer("/params/uri")
                    .and_then(Value::as_str)
                    .and_then(|uri| gw.subscribers().get(uri).cloned())
                    .map(|s| s.into_iter().collect())
                    .unwrap_or_default();
                if sessions.is_empty() {
                    message
                } else {
                    for session in sessions {
                        let _ = gw
                            .downstream
                            .send(Notice::to(session, None, message.clone()));
                    }
                    continue;
                }
            }
            Event::Notification { message, .. } => message,
            Event::Request {
                server,
                mut message,
                during,
            } => {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let forwarded = forwarded_id(server, &id);
                message["id"] = json!(forwarded);
                let notice = match gw.asker(server, during.as_deref()) {
                    Asker::Session(session, request) => {
                        let mut asked = gw.asked();
                        // Beyond the limit it could not be told whose answer is whose:
                        // refused rather than open to any session's answer.
                        if asked.len() < MAX_ASKED {
                            asked.insert(forwarded.clone(), (session.clone(), request.clone()));
                            Some(Notice::to(session, request, message))
                        } else {
                            None
                        }
                    }
                    Asker::Everyone => Some(Notice::everyone(message)),
                    Asker::Round(questions) => {
                        message["id"] = id.clone();
                        match questions.try_send((server, message)) {
                            Ok(()) => continue,
                            // Too many queued, or the request just ended.
                            Err(_) => None,
                        }
                    }
                    Asker::Nobody => None,
                };
                // Nobody to ask (only 2026-07-28 clients, which take no requests from
                // servers): the server hears so at once instead of waiting.
                if notice.is_none_or(|n| gw.downstream.send(n).is_err()) {
                    gw.asked().remove(&forwarded);
                    gw.refuse(
                        server,
                        id,
                        "no client of keyway's gateway can answer this request now",
                    )
                    .await;
                }
                continue;
            }
        };
        let _ = gw.downstream.send(Notice::everyone(message));
    }
}

/// Serve the gateway on newline-delimited JSON-RPC (stdio).
pub async fn serve_stdio<R, W>(gw: Arc<Gateway>, input: R, output: W) -> std::io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tokio::io::{AsyncWriteExt, BufReader};
    // Messages for the client, as JSON text (on one line: serde_json writes no line
    // breaks, and answers passed on from a server were checked to be on one).
    let (tx, mut rx) = mpsc::channel::<String>(STDIO_QUEUE);
    let mut output = output;
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            let mut line = text.into_bytes();
            line.push(b'\n');
            if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let mut notices = gw.subscribe();
    // The client's stdout: it can always be asked.
    let listener = gw.listener("");
    let tx_notices = tx.clone();
    let relay = tokio::spawn(async move {
        loop {
            match notices.recv().await {
                // Behind a client that does not read, this waits; the notices it misses
                // meanwhile are dropped (and counted) rather than kept.
                Ok(notice) => {
                    if notice.is_for("")
                        && tx_notices.send(notice.message.to_string()).await.is_err()
                    {
                        break;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("dropped {n} server notifications")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
    let mut input = BufReader::new(input);
    let mut lines = crate::stdio::LineSplitter::new(crate::mcp::MAX_MESSAGE);
    let mut tasks = tokio::task::JoinSet::new();
    // The client is gone: its listen streams end (they would wait for it forever).
    let closing = tokio_util::sync::CancellationToken::new();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(STDIO_QUEUE));
    while let Some(line) = crate::stdio::next_line(&mut input, &mut lines).await? {
        let line = match line {
            crate::stdio::Line::Text(line) => line,
            unusable => {
                let _ = tx
                    .send(crate::bridge::unreadable_line(&unusable).to_string())
                    .await;
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        // Strict, as over HTTP: repeated keys could read otherwise at the server.
        let message: Value = match crate::json::parse_str(&line) {
            Ok(v @ Value::Object(_)) => v,
            parsed => {
                let why = match parsed {
                    Err(e) => format!("parse error: {e}"),
                    Ok(_) => "parse error: one JSON-RPC object per line".to_owned(),
                };
                let _ = tx.send(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": why}}).to_string()).await;
                continue;
            }
        };
        // At most STDIO_QUEUE requests at once: the next line waits for one to end.
        // Answers and notifications take no slot (a request may be waiting for one of
        // the client's answers).
        let is_request = message.get("method").is_some() && message.get("id").is_some();
        let permit = if is_request {
            match in_flight.clone().acquire_owned().await {
                Ok(p) => Some(p),
                Err(_) => break,
            }
        } else {
            None
        };
        let (gw, tx, closing) = (gw.clone(), tx.clone(), closing.clone());
        let listen = message.get("method").and_then(Value::as_str) == Some("subscriptions/listen")
            && message.get("params").and_then(modern::revision).is_some();
        tasks.spawn(async move {
            if listen {
                // Its stream is the client's stdout, until it cancels the request.
                drop(permit);
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                let params = message.get("params").cloned().unwrap_or(Value::Null);
                tokio::select! {
                    () = gw.listen("", id, params, tx) => {}
                    () = closing.cancelled() => {}
                }
                return;
            }
            if let Some(answer) = gw.handle("", message).await {
                let _ = tx.send(answer).await;
            }
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
    }
    closing.cancel();
    while tasks.join_next().await.is_some() {}
    relay.abort();
    drop(listener);
    gw.close().await;
    drop(tx);
    let _ = writer.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's request goes down under a forwarded id; when the server cancels it,
    /// the cancellation must name that same id, or the client cannot match it.
    #[tokio::test]
    async fn a_server_cancelling_its_request_names_the_forwarded_id() {
        let gw = Gateway::start(Vec::new()).await;
        let mut down = gw.subscribe();
        let from_server_3 = |message| Event::Notification { server: 3, message };
        let request =
            json!({"jsonrpc": "2.0", "id": 7, "method": "sampling/createMessage", "params": {}});
        gw.events_tx
            .send(Event::Request {
                server: 3,
                message: request,
                during: None,
            })
            .await
            .unwrap();
        let forwarded = down.recv().await.unwrap().message;
        let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7, "reason": "timed out"}});
        gw.events_tx.send(from_server_3(cancel)).await.unwrap();
        let cancelled = down.recv().await.unwrap().message;
        assert_eq!(cancelled["params"]["requestId"], forwarded["id"]);
        assert_eq!(cancelled["params"]["reason"], "timed out");
        // Other notifications pass as they are.
        let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 7, "progress": 1}});
        gw.events_tx
            .send(from_server_3(progress.clone()))
            .await
            .unwrap();
        assert_eq!(down.recv().await.unwrap().message, progress);
    }
}
