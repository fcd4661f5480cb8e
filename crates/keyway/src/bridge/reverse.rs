//! A 2026-07-28 client (per-request metadata, no session) in front of a server that
//! speaks only the handshake revisions. keyway runs the handshake upstream with the
//! client's name from its first request, answers `server/discover` from the server's
//! `initialize` result, and sends the client's requests on the session without the
//! 2026-07-28 metadata; the answers come back as they are (a result with no
//! `resultType` is complete).
//!
//! The server's own requests become multi round-trip answers. The server is offered
//! the client capabilities (elicitation, sampling, roots) the client's first request
//! declared. A request the server sends in the course of one of the client's (on that
//! request's event stream) answers the client's request `input_required`, asking the
//! same question, with a `requestState` that names the server's request left waiting.
//! The client's retry carries its answers and that state back: keyway answers the
//! server's questions with them and goes on waiting for the server's answer (or its
//! next question, a round of its own, [`MAX_ROUNDS`] at most). The state is a random
//! handle to what keyway keeps, so one tampered with, used twice, or for another
//! request names nothing and is refused; a round the client never comes back to is
//! given up after [`PARK_TIMEOUT`] and the server's request cancelled.
//!
//! `subscriptions/listen` is served here: acknowledged with what the server offers,
//! then the server's list changes and the updates of the resources named (keyway
//! subscribes to them on the session, once per URI), tagged with the subscription's
//! id, until the client cancels it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{DELIVERY_FAILED, Era, MAX_ROUNDS, Shared, deliver, recovering};
use crate::mcp::{
    modern::{
        LIST_CHANGES, MAX_LISTEN_RESOURCES, MAX_QUEUED_QUESTIONS, MAX_WAITING_ROUNDS,
        META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_SUBSCRIPTION_ID, MODERN_VERSION,
        PARK_TIMEOUT, ROUND_STATE, add_caching_hints, input_capability, input_request, is_modern,
        request_subject, strip_request_metadata, tag_subscription, takes_caching_hints,
        unknown_round,
    },
    wire::{Message, Protocol, WireKind},
};

/// The client capabilities the server's requests need, by method (what the session
/// offers the server).
const ASKS: &[(&str, &str)] = &[
    ("elicitation/create", "elicitation"),
    ("sampling/createMessage", "sampling"),
    ("roots/list", "roots"),
];

/// Listen streams a client may hold open at once.
const MAX_LISTENS: usize = 64;

/// How long a request of keyway's own on the session (subscribing to a resource for
/// a listen stream) may take.
const OWN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the bridge keeps to serve a 2026-07-28 client from a handshake server.
pub(super) struct Reverse {
    /// The `server/discover` result the client gets.
    discover: Value,
    /// The client's requests now at the server, by the id keyway sent them under (its
    /// JSON text).
    open: Mutex<HashMap<String, Open>>,
    /// Requests waiting for the client's retry, by the `requestState` it was given.
    parked: Mutex<HashMap<String, Parked>>,
    next: AtomicU64,
    /// The client is gone: nobody waits for answers any more.
    closing: CancellationToken,
    /// The server's capabilities (what a listen stream may carry).
    capabilities: Value,
    /// The client's open `subscriptions/listen` streams.
    listens: Mutex<Vec<Listen>>,
    /// The resources keyway subscribed to on the session, with how many streams want
    /// each.
    subscribed: Mutex<HashMap<String, usize>>,
}

/// One `subscriptions/listen` of the client.
struct Listen {
    id: Value,
    methods: Vec<&'static str>,
    uris: Vec<String>,
}

/// Whether a server message is a change notification, which reaches a 2026-07-28
/// client only on its listen streams.
pub(super) fn is_change(method: Option<&str>) -> bool {
    method.is_some_and(|m| {
        m == "notifications/resources/updated" || LIST_CHANGES.iter().any(|(_, n, _)| *n == m)
    })
}

/// A client request at the server.
struct Open {
    /// The id of the client's request waiting for it now (a retry has its own; none
    /// while the client has been asked for input and not come back).
    client_id: Option<Value>,
    /// The server's questions asked in its course.
    asks: mpsc::Sender<Message>,
    /// The client cancelled it.
    cancelled: CancellationToken,
}

/// What a round waits on: the server's answer and its questions.
struct Flight {
    /// keyway's id for the request at the server (JSON text).
    upstream: String,
    answer: oneshot::Receiver<Value>,
    /// Why the request could not be delivered, should it fail; closed once it was.
    undelivered: Option<oneshot::Receiver<String>>,
    asks: mpsc::Receiver<Message>,
    /// Keeps `asks` open whatever becomes of the request's [`Open`] entry.
    _asks_open: mpsc::Sender<Message>,
    cancelled: CancellationToken,
    rounds: usize,
    /// The client's capabilities, from the request's metadata.
    capabilities: Value,
}

/// A round the client was asked to come back to.
struct Parked {
    method: String,
    /// The tool, prompt or resource it is about.
    name: Option<String>,
    flight: Flight,
    /// The server's requests waiting for the client's answers, by input key.
    asked: Vec<(String, Value)>,
    /// The task that gives the round up after [`PARK_TIMEOUT`].
    expiry: tokio::task::AbortHandle,
}

impl Reverse {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Open>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, HashMap<String, Parked>> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client is gone: requests stop waiting for their answers.
    pub(super) fn stop(&self) {
        self.closing.cancel();
    }
}

fn error(id: &Value, code: i64, message: impl Into<String>) -> Message {
    Message::from_value(
        &json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}}),
    )
}

/// Whether a `server/discover` answer names 2026-07-28.
fn speaks_modern(answer: &Value) -> bool {
    answer
        .pointer("/result/supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN_VERSION)))
}

/// The client's first request (its `server/discover`, or any other): a server that
/// speaks 2026-07-28 gets it as it is, and everything after; one that does not gets
/// the handshake, and the request translated.
pub(super) async fn start(s: Arc<Shared>, message: Message) {
    let value = message.value();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let method = message.method().unwrap_or_default().to_owned();
    let meta = value
        .pointer("/params/_meta")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let remembered_handshake = s.last_protocol.as_deref().is_some_and(|v| !is_modern(v));
    let ask = s.wire.kind() == WireKind::StreamableHttp
        && match &s.protocol {
            Protocol::Auto => !remembered_handshake,
            Protocol::Exactly(v) => is_modern(v),
        };
    if ask {
        let discover = if method == "server/discover" {
            message.clone()
        } else {
            Message::from_value(&json!({
                "jsonrpc": "2.0", "id": "keyway-discover", "method": "server/discover",
                "params": {"_meta": meta},
            }))
        };
        match recovering(&s, &discover, || s.wire.call_message(discover.clone())).await {
            Ok(answer) if speaks_modern(&answer.value()) => {
                let _ = s.era.set(Era::Same);
                s.authorize.spoke(Some(MODERN_VERSION)).await;
                if method == "server/discover" {
                    s.stats().to_client += 1;
                    s.out(answer);
                } else {
                    deliver(&s, message).await;
                }
                return;
            }
            Ok(_) => {}
            Err(why) => {
                tracing::info!(
                    "server/discover could not be delivered ({why}); trying the handshake"
                );
            }
        }
        if matches!(&s.protocol, Protocol::Exactly(_)) {
            return s.out(error(
                &id,
                DELIVERY_FAILED,
                "--protocol 2026-07-28 was asked for, but the server does not speak it; use --protocol auto",
            ));
        }
    }
    let version = match &s.protocol {
        Protocol::Exactly(v) if !is_modern(v) => v.as_str(),
        _ => "2025-11-25",
    };
    let client_info = meta
        .get(META_CLIENT_INFO)
        .cloned()
        .unwrap_or_else(|| json!({"name": "keyway", "version": env!("CARGO_PKG_VERSION")}));
    let initialize = Message::from_value(&json!({
        "jsonrpc": "2.0", "id": "keyway-initialize", "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": offered(&meta), "clientInfo": client_info},
    }));
    let answer = match recovering(&s, &initialize, || s.wire.call_message(initialize.clone())).await
    {
        Ok(a) => a.value(),
        Err(why) => {
            return s.out(error(
                &id,
                DELIVERY_FAILED,
                format!("keyway could not start a session with the server: {why}"),
            ));
        }
    };
    let Some(result) = answer.get("result") else {
        let why = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no result");
        return s.out(error(
            &id,
            DELIVERY_FAILED,
            format!(
                "the server speaks neither 2026-07-28 nor the handshake keyway offered ({why})"
            ),
        ));
    };
    tracing::info!(
        "{} speaks the handshake revisions only: translating for a 2026-07-28 client",
        s.wire.url()
    );
    *s.initialize.lock().unwrap_or_else(|p| p.into_inner()) = Some(initialize);
    let spoken = result.get("protocolVersion").and_then(Value::as_str);
    s.authorize.spoke(spoken).await;
    let reverse = Arc::new(Reverse {
        discover: discover_result(result),
        open: Mutex::default(),
        parked: Mutex::default(),
        next: AtomicU64::new(1),
        closing: CancellationToken::new(),
        capabilities: result.get("capabilities").cloned().unwrap_or_default(),
        listens: Mutex::default(),
        subscribed: Mutex::default(),
    });
    route_server_requests(&s, &reverse);
    let _ = s.era.set(Era::Reverse(reverse.clone()));
    deliver(
        &s,
        Message::from_value(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    request(s, reverse, message).await;
}

/// The capabilities a 2026-07-28 client's request metadata declares, as the
/// handshake offers them: those of the server's requests keyway turns into rounds.
fn offered(meta: &Value) -> Value {
    let declared = meta.get(META_CLIENT_CAPABILITIES);
    let mut out = Map::new();
    for (_, capability) in ASKS {
        if let Some(c) = declared.and_then(|d| d.get(*capability)) {
            let mut c = c.clone();
            // The client cannot tell of changes to its roots: it has no session.
            if let Some(o) = c.as_object_mut() {
                o.remove("listChanged");
            }
            out.insert((*capability).to_owned(), c);
        }
    }
    Value::Object(out)
}

/// The server's own requests go to the client request they came in the course of
/// (the one whose stream carried them, or the only one open); one that belongs to none
/// is refused at once, as the client could not take it.
fn route_server_requests(s: &Arc<Shared>, r: &Arc<Reverse>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    if s.route.server_requests.set(tx).is_err() {
        return;
    }
    // Weak: the channel's sender lives in the route, which the bridge holds, so the
    // task ends with the bridge rather than keep it alive.
    let bridge = Arc::downgrade(s);
    let r = r.clone();
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let Some(s) = bridge.upgrade() else { break };
            if !request.is_request() {
                r.relay_change(&s, &request);
                continue;
            }
            let unrouted = {
                let open = r.open();
                let target = match request.during() {
                    Some(during) => open.get(during),
                    None if open.len() == 1 => open.values().next(),
                    None => None,
                };
                match target {
                    // Too many queued for it: refused like any other.
                    Some(o) => o.asks.try_send(request).err().map(|e| match e {
                        mpsc::error::TrySendError::Full(m)
                        | mpsc::error::TrySendError::Closed(m) => m,
                    }),
                    None => Some(request),
                }
            };
            if let Some(request) = unrouted {
                let method = request.method().unwrap_or_default().to_owned();
                tracing::info!(
                    method,
                    "refused a server request made outside any request of the 2026-07-28 client"
                );
                answer_server(
                    &s,
                    &request.value()["id"],
                    Err(format!(
                        "the client speaks MCP 2026-07-28 and takes {method} only in the course of one of its requests"
                    )),
                )
                .await;
            }
        }
    });
}

/// Answer the server's request `id`: with a result, or with an error saying why not.
async fn answer_server(s: &Shared, id: &Value, answer: Result<Value, String>) {
    let message = match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(why) => json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": why}}),
    };
    if let Err(e) = s.wire.send(&message).await {
        tracing::debug!("answering a server request failed: {e}");
    }
}

/// A `server/discover` result from a handshake server's `initialize` result: its
/// capabilities (keyway serves its list changes and resource updates on
/// `subscriptions/listen`), its instructions and name.
fn discover_result(initialize: &Value) -> Value {
    let capabilities = initialize
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut result = json!({
        "resultType": "complete",
        "supportedVersions": [MODERN_VERSION],
        "capabilities": capabilities,
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {"io.modelcontextprotocol/serverInfo": initialize.get("serverInfo").cloned()
            .unwrap_or_else(|| json!({"name": "server", "version": "unknown"}))},
    });
    if let Some(i) = initialize.get("instructions") {
        result["instructions"] = i.clone();
    }
    result
}

/// A 2026-07-28 client's request: `server/discover` answered here; a retry with a
/// `requestState` goes on with the round it names; the rest sent on the session
/// without their 2026-07-28 metadata, under an id of keyway's (the server's questions
/// in their course become `input_required` answers).
pub(super) async fn request(s: Arc<Shared>, r: Arc<Reverse>, message: Message) {
    let mut value = message.value();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    let method = message.method().unwrap_or_default().to_owned();
    match method.as_str() {
        "server/discover" => {
            return s.out(Message::from_value(
                &json!({"jsonrpc": "2.0", "id": id, "result": r.discover}),
            ));
        }
        "subscriptions/listen" => return listen(&s, &r, id, value.get("params")).await,
        _ => {}
    }
    let mut params = value
        .get_mut("params")
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    let capabilities = params
        .pointer(&format!(
            "/_meta/{}",
            META_CLIENT_CAPABILITIES.replace('/', "~1")
        ))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let name = request_subject(&params);
    let state = params.get("requestState").cloned();
    let responses = params.get("inputResponses").cloned();
    if let Some(p) = params.as_object_mut() {
        p.remove("requestState");
        p.remove("inputResponses");
    }
    let flight = match state {
        Some(state) => {
            // Sent with another request: refused, and the round kept for the right one.
            let parked = state.as_str().and_then(|st| {
                let mut parked = r.parked();
                let matches = parked
                    .get(st)
                    .is_some_and(|p| p.method == method && p.name == name);
                if matches { parked.remove(st) } else { None }
            });
            let Some(parked) = parked else {
                return s.out(Message::from_value(
                    &json!({"jsonrpc": "2.0", "id": id, "error": unknown_round()}),
                ));
            };
            parked.expiry.abort();
            let mut flight = parked.flight;
            flight.capabilities = capabilities;
            for (key, server_id) in parked.asked {
                let answer = responses
                    .as_ref()
                    .and_then(|r| r.get(&key))
                    .cloned()
                    .ok_or_else(|| format!("the client gave no answer to {key}"));
                answer_server(&s, &server_id, answer).await;
            }
            if let Some(o) = r.open().get_mut(&flight.upstream) {
                o.client_id = Some(id.clone());
            }
            flight
        }
        None => {
            strip_request_metadata(&mut params);
            send(&s, &r, &id, &method, params, capabilities)
        }
    };
    wait(s, r, id, method, name, flight).await;
}

/// A handshake server's answer to `method` as a 2026-07-28 client takes it: caching
/// hints on the results that carry them, and "resource not found" in its code.
fn as_modern_answer(method: &str, answer: &mut Value) {
    if let Some(result) = answer.get_mut("result") {
        if takes_caching_hints(method) {
            add_caching_hints(result);
        }
    } else if method == "resources/read"
        && let Some(code) = answer.pointer_mut("/error/code")
        && *code == json!(-32002)
    {
        *code = json!(-32602);
    }
}

/// Send the client's request to the server under an id of keyway's.
fn send(
    s: &Arc<Shared>,
    r: &Reverse,
    id: &Value,
    method: &str,
    params: Value,
    capabilities: Value,
) -> Flight {
    let n = r.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let ours = format!("keyway-r-{n}");
    let upstream = json!(ours).to_string();
    let (answer_tx, answer) = oneshot::channel();
    s.route.internal().insert(ours.clone(), answer_tx);
    let (asks_tx, asks) = mpsc::channel(MAX_QUEUED_QUESTIONS);
    let cancelled = CancellationToken::new();
    r.open().insert(
        upstream.clone(),
        Open {
            client_id: Some(id.clone()),
            asks: asks_tx.clone(),
            cancelled: cancelled.clone(),
        },
    );
    let message = Message::request(&ours, method, &params);
    // Sent on a task of its own: the request's stream is read to its end there, and the
    // server's questions on it need their answers before the request's answer comes.
    let (failed, undelivered) = oneshot::channel();
    let bridge = s.clone();
    let method_name = method.to_owned();
    tokio::spawn(async move {
        let s = bridge;
        if let Err(why) = recovering(&s, &message, || s.wire.send_message(&message)).await {
            tracing::warn!(method = method_name, "could not deliver: {why}");
            let _ = failed.send(format!("keyway could not deliver {method_name}: {why}"));
        }
    });
    Flight {
        upstream,
        answer,
        undelivered: Some(undelivered),
        asks,
        _asks_open: asks_tx,
        cancelled,
        rounds: 0,
        capabilities,
    }
}

/// Wait for the server's answer to the client's request `id`, passing it on; a
/// question the server asks meanwhile ends this round `input_required`.
async fn wait(
    s: Arc<Shared>,
    r: Arc<Reverse>,
    id: Value,
    method: String,
    name: Option<String>,
    mut flight: Flight,
) {
    loop {
        let ask = tokio::select! {
            answer = &mut flight.answer => {
                r.open().remove(&flight.upstream);
                let Ok(mut answer) = answer else {
                    return s.out(error(&id, DELIVERY_FAILED, "the connection to the server closed before it answered"));
                };
                answer["id"] = id;
                as_modern_answer(&method, &mut answer);
                s.stats().to_client += 1;
                return s.out(Message::from_value(&answer));
            }
            // The client cancelled, or is gone: it wants no answer.
            () = flight.cancelled.cancelled() => {
                r.open().remove(&flight.upstream);
                s.route.internal().remove(flight.upstream.trim_matches('"'));
                return;
            }
            () = r.closing.cancelled() => return,
            failed = async {
                match flight.undelivered.as_mut() {
                    Some(u) => u.await,
                    None => std::future::pending().await,
                }
            } => match failed {
                Ok(why) => {
                    r.open().remove(&flight.upstream);
                    s.route.internal().remove(flight.upstream.trim_matches('"'));
                    return s.out(error(&id, DELIVERY_FAILED, why));
                }
                // Delivered: the answer comes as it comes.
                Err(_) => {
                    flight.undelivered = None;
                    continue;
                }
            },
            ask = flight.asks.recv() => ask,
        };
        // The sender lives in `flight`: the channel cannot have closed.
        let Some(ask) = ask else {
            return s.out(error(
                &id,
                DELIVERY_FAILED,
                "the request's questions channel closed",
            ));
        };
        let mut questions = Map::new();
        let mut asked = Vec::new();
        let mut next = Some(ask);
        while let Some(ask) = next.take() {
            let value = ask.value();
            let server_id = value.get("id").cloned().unwrap_or(Value::Null);
            let asked_for = value
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match question(asked_for, &flight.capabilities) {
                Question::Ping => answer_server(&s, &server_id, Ok(json!({}))).await,
                Question::Refused(why) => answer_server(&s, &server_id, Err(why)).await,
                Question::Ask => {
                    let key = format!("{}-{}", asked_for.replace('/', "-"), questions.len() + 1);
                    questions.insert(key.clone(), input_request(&value));
                    asked.push((key, server_id));
                }
            }
            // Questions the server sent together go in one round.
            next = flight.asks.try_recv().ok();
        }
        if asked.is_empty() {
            continue;
        }
        flight.rounds += 1;
        let full = r.parked().len() >= MAX_WAITING_ROUNDS;
        if flight.rounds > MAX_ROUNDS || full {
            let why = if full {
                "too many requests wait for the client's answers"
            } else {
                "the server asked more than keyway relays for one request"
            };
            for (_, server_id) in &asked {
                answer_server(&s, server_id, Err(why.to_owned())).await;
            }
            continue;
        }
        // Still open at the server (more questions may come meanwhile), but no
        // request of the client's waits for it until the retry.
        if let Some(o) = r.open().get_mut(&flight.upstream) {
            o.client_id = None;
        }
        let state = format!("{ROUND_STATE}{:032x}", rand::random::<u128>());
        let upstream = flight.upstream.clone();
        let expiry = tokio::spawn(expire(
            Arc::downgrade(&s),
            r.clone(),
            state.clone(),
            upstream,
        ))
        .abort_handle();
        r.parked().insert(
            state.clone(),
            Parked {
                method,
                name,
                flight,
                asked,
                expiry,
            },
        );
        return s.out(Message::from_value(&json!({
            "jsonrpc": "2.0",
            "id": id,
            "result": {
                "resultType": "input_required",
                "inputRequests": questions,
                "requestState": state,
            }
        })));
    }
}

/// What to do with a server's request of `method` for a client of `capabilities`.
enum Question {
    Ping,
    Ask,
    Refused(String),
}

fn question(method: &str, capabilities: &Value) -> Question {
    if method == "ping" {
        return Question::Ping;
    }
    match input_capability(method) {
        Some(capability) if capabilities.get(capability).is_some() => Question::Ask,
        Some(capability) => Question::Refused(format!(
            "the client did not declare the {capability} capability for this request"
        )),
        None => Question::Refused(format!(
            "keyway does not relay {method} to a client of MCP 2026-07-28"
        )),
    }
}

/// A round the client did not come back to within [`PARK_TIMEOUT`]: the server's
/// questions are refused and its request cancelled.
async fn expire(s: std::sync::Weak<Shared>, r: Arc<Reverse>, state: String, upstream: String) {
    tokio::select! {
        () = tokio::time::sleep(PARK_TIMEOUT) => {}
        () = r.closing.cancelled() => return,
    }
    let Some(mut parked) = r.parked().remove(&state) else {
        return;
    };
    let Some(s) = s.upgrade() else { return };
    r.open().remove(&upstream);
    // Its questions, and those the server asked meanwhile.
    let mut unanswered: Vec<Value> = parked.asked.drain(..).map(|(_, id)| id).collect();
    while let Ok(ask) = parked.flight.asks.try_recv() {
        unanswered.push(ask.value().get("id").cloned().unwrap_or(Value::Null));
    }
    for server_id in &unanswered {
        answer_server(
            &s,
            server_id,
            Err("the client did not come back with its answers".to_owned()),
        )
        .await;
    }
    s.route.internal().remove(upstream.trim_matches('"'));
    cancel_upstream(
        &s,
        &upstream,
        "the client did not come back with its answers",
    )
    .await;
}

async fn cancel_upstream(s: &Shared, upstream: &str, reason: &str) {
    let id: Value = serde_json::from_str(upstream).unwrap_or(Value::Null);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": id, "reason": reason}});
    if let Err(e) = s.wire.send(&note).await {
        tracing::debug!("cancelling at the server failed: {e}");
    }
}

/// A notification from the client: a cancellation names the client's request, which
/// the server knows under keyway's id (or one of its listen streams, which ends); the
/// rest pass as they are.
pub(super) async fn notification(s: &Arc<Shared>, r: &Arc<Reverse>, message: Message) {
    if message.method() != Some("notifications/cancelled") {
        return deliver(s, message).await;
    }
    let value = message.value();
    let Some(client_id) = value.pointer("/params/requestId") else {
        return;
    };
    let ended = {
        let mut listens = r.listens.lock().unwrap_or_else(|p| p.into_inner());
        listens
            .iter()
            .position(|l| &l.id == client_id)
            .map(|at| listens.remove(at))
    };
    if let Some(listen) = ended {
        // On a task of its own: the client's next messages do not wait for the
        // server's answers.
        let (s, r) = (s.clone(), r.clone());
        tokio::spawn(async move { unsubscribe(&s, &r, listen.uris).await });
        return;
    }
    let found = r
        .open()
        .iter()
        .find(|(_, o)| o.client_id.as_ref() == Some(client_id))
        .map(|(upstream, o)| (upstream.clone(), o.cancelled.clone()));
    // Not at the server now (answered, or waiting for the client's retry): nothing to
    // cancel there.
    let Some((upstream, cancelled)) = found else {
        return;
    };
    cancelled.cancel();
    let reason = value
        .pointer("/params/reason")
        .and_then(Value::as_str)
        .unwrap_or("cancelled by the client");
    cancel_upstream(s, &upstream, reason).await;
}

/// A request of keyway's own on the session; whether the server took it.
async fn ask_server(s: &Arc<Shared>, r: &Reverse, method: &str, params: Value) -> bool {
    let n = r.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let message = Message::request(&format!("keyway-own-{n}"), method, &params);
    let asked = recovering(s, &message, || s.wire.call_message(message.clone()));
    match tokio::time::timeout(OWN_REQUEST_TIMEOUT, asked).await {
        Ok(Ok(answer)) if answer.value().get("result").is_some() => true,
        Ok(Ok(answer)) => {
            tracing::info!(method, "the server refused: {}", answer.value()["error"]);
            false
        }
        Ok(Err(why)) => {
            tracing::info!(method, "could not deliver: {why}");
            false
        }
        Err(_) => {
            tracing::info!(method, "no answer in time");
            false
        }
    }
}

/// `subscriptions/listen` of the client (request `id`): acknowledged with what the
/// server offers of what it asked for, the resources it names subscribed to on the
/// session; the stream's notifications follow as the server sends them.
async fn listen(s: &Arc<Shared>, r: &Reverse, id: Value, params: Option<&Value>) {
    let Some(asked) = params
        .and_then(|p| p.get("notifications"))
        .and_then(Value::as_object)
    else {
        return s.out(error(
            &id,
            -32602,
            "subscriptions/listen needs params.notifications, the notifications wanted",
        ));
    };
    if r.listens.lock().unwrap_or_else(|p| p.into_inner()).len() >= MAX_LISTENS {
        return s.out(error(
            &id,
            -32602,
            format!("at most {MAX_LISTENS} subscriptions/listen streams at once: cancel one first"),
        ));
    }
    let wanted = asked
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if wanted > MAX_LISTEN_RESOURCES {
        return s.out(error(
            &id,
            -32602,
            format!("one subscriptions/listen may name at most {MAX_LISTEN_RESOURCES} resources; open more streams"),
        ));
    }
    let mut accepted = Map::new();
    let mut methods = Vec::new();
    for (field, method, capability) in LIST_CHANGES {
        let offered = r
            .capabilities
            .pointer(&format!("/{capability}/listChanged"))
            .and_then(Value::as_bool)
            == Some(true);
        if offered && asked.get(*field).and_then(Value::as_bool) == Some(true) {
            accepted.insert((*field).to_owned(), json!(true));
            methods.push(*method);
        }
    }
    let subscribes = r
        .capabilities
        .pointer("/resources/subscribe")
        .and_then(Value::as_bool)
        == Some(true);
    let mut uris = Vec::new();
    let wanted = asked
        .get("resourceSubscriptions")
        .and_then(Value::as_array)
        .filter(|_| subscribes);
    for uri in wanted.into_iter().flatten().filter_map(Value::as_str) {
        let first = {
            let mut subscribed = r.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            let n = subscribed.entry(uri.to_owned()).or_default();
            *n += 1;
            *n == 1
        };
        if first && !ask_server(s, r, "resources/subscribe", json!({"uri": uri})).await {
            r.subscribed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(uri);
            continue;
        }
        uris.push(uri.to_owned());
    }
    if !uris.is_empty() {
        accepted.insert("resourceSubscriptions".into(), json!(uris));
    }
    // Registered before the acknowledgement goes out: nothing after it is missed.
    r.listens
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Listen {
            id: id.clone(),
            methods,
            uris,
        });
    s.out(Message::from_value(&json!({
        "jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": accepted, "_meta": {META_SUBSCRIPTION_ID: id}},
    })));
}

impl Reverse {
    /// A change notification of the server: to each listen stream that wants it,
    /// tagged with that stream's id.
    fn relay_change(&self, s: &Shared, change: &Message) {
        let value = change.value();
        let method = change.method().unwrap_or_default();
        let uri = value.pointer("/params/uri").and_then(Value::as_str);
        for listen in self
            .listens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let wanted = match uri {
                Some(u) if method == "notifications/resources/updated" => {
                    listen.uris.iter().any(|w| w == u)
                }
                _ => listen.methods.contains(&method),
            };
            if !wanted {
                continue;
            }
            let mut tagged = value.clone();
            tag_subscription(&mut tagged, &listen.id);
            s.out(Message::from_value(&tagged));
        }
    }
}

/// A listen stream ended: the resources no other stream names are unsubscribed on
/// the session.
async fn unsubscribe(s: &Arc<Shared>, r: &Reverse, uris: Vec<String>) {
    for uri in uris {
        let last = {
            let mut subscribed = r.subscribed.lock().unwrap_or_else(|p| p.into_inner());
            match subscribed.get_mut(&uri) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    subscribed.remove(&uri);
                    true
                }
                None => false,
            }
        };
        if last {
            ask_server(s, r, "resources/unsubscribe", json!({"uri": uri})).await;
        }
    }
}
