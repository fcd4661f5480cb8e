//! A stdio client of a handshake revision (2025-11-25 and older) in front of a server
//! that speaks MCP 2026-07-28: what the bridge does in between.
//!
//! - `initialize` is answered by keyway from the server's `server/discover`;
//!   `notifications/initialized` stays here.
//! - `ping` is answered here; `logging/setLevel` is kept and sent as every later
//!   request's `io.modelcontextprotocol/logLevel`.
//! - Every other request gets the client's revision, capabilities and name in `_meta`
//!   (and so the request metadata headers on the wire).
//! - An `input_required` answer to `tools/call`, `prompts/get` or `resources/read`
//!   becomes the server's own requests to the client (`elicitation/create`,
//!   `sampling/createMessage`, `roots/list`), as the client's revision has them; the
//!   request is then retried with the client's answers and the `requestState` exactly
//!   as the server gave it, at most [`MAX_ROUNDS`] times.
//! - `notifications/cancelled` closes the cancelled request's stream (how a 2026-07-28
//!   server over HTTP learns of it).
//! - The list-changed notifications the server's capabilities offer and the resources
//!   the client subscribes to (`resources/subscribe`) come from one
//!   `subscriptions/listen` stream, opened again when the set changes or it drops.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures::future::{AbortHandle, Abortable};
use serde_json::{Map, Value, json, value::RawValue};
use tokio::sync::oneshot;

use super::{DELIVERY_FAILED, DeliveryError, Shared, recovering};
use crate::mcp::{
    modern::{
        META_CLIENT_CAPABILITIES, META_CLIENT_INFO, META_LOG_LEVEL, META_PROTOCOL_VERSION,
        MODERN_VERSION, UNSUPPORTED_VERSION,
    },
    wire::Message,
};

/// `input_required` rounds a request may take before the client is told it failed
/// (as rmcp's default).
pub const MAX_ROUNDS: usize = 10;

/// The largest `requestState` carried back to the server: a server that wants more is
/// refused rather than let to grow the bridge's memory round after round.
pub const MAX_REQUEST_STATE: usize = 256 * 1024;

/// `_meta` key of the server's name and version on a 2026-07-28 result.
const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// The handshake revisions a client may be answered with, newest first.
const HANDSHAKE_REVISIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// What the bridge keeps to speak 2026-07-28 for a handshake-era client.
pub(super) struct Translator {
    /// The `_meta` every request carries: revision, client capabilities and name.
    meta: Map<String, Value>,
    /// [`Translator::meta`]'s members as JSON text (no braces), spliced into the
    /// client's requests.
    meta_text: String,
    /// The `initialize` result the client gets (any number of times).
    initialize: Value,
    /// The server's capabilities, from `server/discover`.
    capabilities: Value,
    /// The client's `logging/setLevel`, if it set one.
    log_level: Mutex<Option<Value>>,
    next_id: AtomicU64,
    /// keyway's questions to the client, by id (JSON text), awaiting its answers.
    asks: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// The client's requests in flight, by id (JSON text), so they can be cancelled.
    running: Mutex<HashMap<String, AbortHandle>>,
    /// The resources the client subscribed to.
    subscribed: Mutex<BTreeSet<String>>,
    /// The open `subscriptions/listen`, if any.
    listen: Mutex<Option<AbortHandle>>,
}

impl std::fmt::Debug for Translator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Translator").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A JSON object's members in their order, each value as raw text.
struct Members<'a>(Vec<(std::borrow::Cow<'a, str>, &'a RawValue)>);

/// A member name, borrowed from the text when it has no escapes.
#[derive(serde::Deserialize)]
struct Key<'a>(#[serde(borrow)] std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some(Key(key)) = map.next_key()? {
                    members.push((key, map.next_value()?));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `"key":` (escaped as JSON needs).
fn push_key(out: &mut String, key: &str) {
    if key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(key);
        out.push('"');
    } else {
        out.push_str(&Value::from(key).to_string());
    }
    out.push(':');
}

/// A message's id as a value (`null` when it has none).
fn id_of(message: &Message) -> Value {
    message
        .id()
        .and_then(|id| serde_json::from_str(id).ok())
        .unwrap_or(Value::Null)
}

/// A JSON-RPC error answer to `id`.
fn error(id: &Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// What `server/discover` told about a server.
pub(super) enum Discovered {
    /// It speaks 2026-07-28: translate.
    Modern(Box<Translator>),
    /// It does not (it refused the request, or lists only other revisions).
    Legacy(String),
}

/// Ask the server what it speaks, with the client's own `initialize` as the request
/// metadata. `Err`: the request could not be delivered at all.
pub(super) async fn discover(
    s: &Arc<Shared>,
    initialize: &Message,
) -> Result<Discovered, DeliveryError> {
    let init = initialize.value();
    let params = init.get("params").cloned().unwrap_or(Value::Null);
    let mut capabilities = params.get("capabilities").cloned().unwrap_or(json!({}));
    // `roots.listChanged` has no meaning without a session.
    if let Some(roots) = capabilities.get_mut("roots").and_then(Value::as_object_mut) {
        roots.remove("listChanged");
    }
    let client_info = params
        .get("clientInfo")
        .cloned()
        .unwrap_or_else(|| json!({"name": "unknown", "version": "0"}));
    let mut meta = Map::new();
    meta.insert(META_PROTOCOL_VERSION.into(), json!(MODERN_VERSION));
    meta.insert(META_CLIENT_CAPABILITIES.into(), capabilities);
    meta.insert(META_CLIENT_INFO.into(), client_info);
    let request = Message::from_value(&json!({
        "jsonrpc": "2.0",
        "id": "keyway-discover",
        "method": "server/discover",
        "params": {"_meta": meta},
    }));
    let mut answer = recovering(s, &request, || s.wire.call_message(request.clone()))
        .await?
        .value();
    if rejected_but_supported(&answer) {
        // UnsupportedProtocolVersion, yet 2026-07-28 is among the versions it lists
        // (a server that changed its mind, or tests its clients): once more.
        answer = recovering(s, &request, || s.wire.call_message(request.clone()))
            .await?
            .value();
    }
    let Some(result) = answer.get("result") else {
        let why = answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no result");
        return Ok(Discovered::Legacy(format!(
            "server/discover was refused ({why})"
        )));
    };
    let versions: Vec<&str> = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .map(|v| v.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !versions.contains(&MODERN_VERSION) {
        return Ok(Discovered::Legacy(format!(
            "the server speaks {}",
            if versions.is_empty() {
                "no revision it names".to_owned()
            } else {
                versions.join(", ")
            }
        )));
    }
    let asked = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = HANDSHAKE_REVISIONS
        .iter()
        .find(|v| **v == asked)
        .unwrap_or(&HANDSHAKE_REVISIONS[0]);
    let capabilities = result.get("capabilities").cloned().unwrap_or(json!({}));
    let server_info = result
        .pointer(&format!("/_meta/{}", META_SERVER_INFO.replace('/', "~1")))
        .cloned()
        .unwrap_or_else(
            || json!({"name": s.wire.url().host_str().unwrap_or("server"), "version": "unknown"}),
        );
    let mut initialize = json!({
        "protocolVersion": version,
        "capabilities": capabilities,
        "serverInfo": server_info,
    });
    if let Some(instructions) = result.get("instructions") {
        initialize["instructions"] = instructions.clone();
    }
    let meta_text = Value::Object(meta.clone()).to_string();
    let meta_text = meta_text[1..meta_text.len() - 1].to_owned();
    Ok(Discovered::Modern(Box::new(Translator {
        meta,
        meta_text,
        initialize,
        capabilities,
        log_level: Mutex::new(None),
        next_id: AtomicU64::new(0),
        asks: Mutex::default(),
        running: Mutex::default(),
        subscribed: Mutex::default(),
        listen: Mutex::default(),
    })))
}

/// An `UnsupportedProtocolVersion` error whose `data.supported` lists 2026-07-28.
fn rejected_but_supported(answer: &Value) -> bool {
    answer.pointer("/error/code").and_then(Value::as_i64) == Some(UNSUPPORTED_VERSION)
        && answer
            .pointer("/error/data/supported")
            .and_then(Value::as_array)
            .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN_VERSION)))
}

impl Translator {
    /// The answer to the client's `initialize` request `id`.
    pub(super) fn initialize_answer(&self, id: &Value) -> Message {
        Message::from_value(&json!({"jsonrpc": "2.0", "id": id, "result": self.initialize}))
    }

    fn next(&self, what: &str) -> String {
        format!(
            "keyway-{what}-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `request` with the request metadata in its `_meta` (the client's own `_meta`
    /// entries, a progress token say, stay).
    fn with_meta(&self, mut request: Value) -> Value {
        let level = lock(&self.log_level).clone();
        if !request.get("params").is_some_and(Value::is_object) {
            request["params"] = json!({});
        }
        let params = &mut request["params"];
        if !params.get("_meta").is_some_and(Value::is_object) {
            params["_meta"] = json!({});
        }
        if let Some(meta) = params["_meta"].as_object_mut() {
            for (k, v) in &self.meta {
                meta.insert(k.clone(), v.clone());
            }
            if let Some(level) = level {
                meta.insert(META_LOG_LEVEL.into(), level);
            }
        }
        request
    }

    /// The client's `request` with the request metadata in its `_meta`, as
    /// [`Translator::with_meta`] makes it, but on the text: only the top level,
    /// `params` and `_meta` are read (as raw text), and the rest, a tool's arguments
    /// say, is copied as it came instead of being parsed and written out again.
    /// `None` for a request shaped otherwise (a `params` that is not an object).
    fn with_meta_text(&self, request: &Message) -> Option<Message> {
        let top: Members<'_> = serde_json::from_str(request.text()).ok()?;
        let mut out = String::with_capacity(request.text().len() + self.meta_text.len() + 64);
        out.push('{');
        let mut has_params = false;
        for (i, (key, value)) in top.0.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_key(&mut out, key);
            if key == "params" {
                has_params = true;
                let params: Members<'_> = serde_json::from_str(value.get()).ok()?;
                self.push_params(&mut out, &params)?;
            } else {
                out.push_str(value.get());
            }
        }
        if !has_params {
            if !top.0.is_empty() {
                out.push(',');
            }
            push_key(&mut out, "params");
            self.push_params(&mut out, &Members(Vec::new()))?;
        }
        out.push('}');
        Message::parse(out).ok()
    }

    /// `params` as an object whose `_meta` has the request metadata.
    fn push_params(&self, out: &mut String, params: &Members<'_>) -> Option<()> {
        out.push('{');
        let mut client_meta = None;
        for (key, value) in &params.0 {
            if key == "_meta" {
                client_meta = Some(serde_json::from_str::<Members<'_>>(value.get()).ok()?);
                continue;
            }
            push_key(out, key);
            out.push_str(value.get());
            out.push(',');
        }
        push_key(out, "_meta");
        out.push('{');
        // The client's own entries (a progress token) stay, unless they are keyway's.
        let level = lock(&self.log_level).clone();
        for (key, value) in client_meta.iter().flat_map(|m| m.0.iter()) {
            if self.meta.contains_key(key.as_ref()) || (level.is_some() && key == META_LOG_LEVEL) {
                continue;
            }
            push_key(out, key);
            out.push_str(value.get());
            out.push(',');
        }
        out.push_str(&self.meta_text);
        if let Some(level) = level {
            out.push(',');
            push_key(out, META_LOG_LEVEL);
            out.push_str(&level.to_string());
        }
        out.push_str("}}");
        Some(())
    }

    /// The client answered one of keyway's questions: `true` when it was one.
    pub(super) fn answered(&self, message: &Message) -> bool {
        let Some(id) = message.id().filter(|id| id.starts_with("\"keyway-ask-")) else {
            return false;
        };
        if let Some(tx) = lock(&self.asks).remove(id) {
            let _ = tx.send(message.value());
        }
        true
    }

    /// The client went away: whoever waits for its answers stops waiting (those
    /// requests end with an error), and the listen stream closes. Requests that need
    /// nothing more of the client run to their end.
    pub(super) fn stop(&self) {
        lock(&self.asks).clear();
        if let Some(h) = lock(&self.listen).take() {
            h.abort();
        }
    }

    /// A notification from the client.
    pub(super) fn notification(&self, s: &Arc<Shared>, message: &Message) {
        match message.method() {
            Some("notifications/initialized") => open_listen(s, self),
            Some("notifications/cancelled") => {
                let id = message
                    .value()
                    .pointer("/params/requestId")
                    .map(Value::to_string);
                if let Some(h) = id.and_then(|id| lock(&self.running).remove(&id)) {
                    // Dropping the request closes its stream: the server's cancellation.
                    h.abort();
                }
            }
            // No session: nothing for the server in these.
            Some(method) => tracing::debug!(method, "not passed to a 2026-07-28 server"),
            None => {}
        }
    }
}

/// A request from the client: answered here, or sent on with the request metadata
/// (and its `input_required` rounds driven); the client gets one answer either way,
/// unless it cancels the request.
pub(super) async fn request(s: Arc<Shared>, t: Arc<Translator>, message: Message) {
    let id = id_of(&message);
    let method = message.method().unwrap_or_default().to_owned();
    let answer = match method.as_str() {
        "initialize" => Some(t.initialize_answer(&id).value()),
        "ping" => Some(json!({"jsonrpc": "2.0", "id": id, "result": {}})),
        "logging/setLevel" => match message.value().pointer("/params/level") {
            Some(level) if level.is_string() => {
                *lock(&t.log_level) = Some(level.clone());
                Some(json!({"jsonrpc": "2.0", "id": id, "result": {}}))
            }
            _ => Some(error(&id, -32602, "logging/setLevel needs a level")),
        },
        "resources/subscribe" | "resources/unsubscribe" => {
            match message
                .value()
                .pointer("/params/uri")
                .and_then(Value::as_str)
            {
                Some(uri) => {
                    let changed = if method == "resources/subscribe" {
                        lock(&t.subscribed).insert(uri.to_owned())
                    } else {
                        lock(&t.subscribed).remove(uri)
                    };
                    if changed {
                        open_listen(&s, &t);
                    }
                    Some(json!({"jsonrpc": "2.0", "id": id, "result": {}}))
                }
                None => Some(error(&id, -32602, format!("{method} needs a uri"))),
            }
        }
        _ => None,
    };
    if let Some(answer) = answer {
        s.out(Message::from_value(&answer));
        return;
    }
    let key = id.to_string();
    let (handle, registration) = AbortHandle::new_pair();
    lock(&t.running).insert(key.clone(), handle);
    let run = Abortable::new(forward(&s, &t, &message, &method), registration).await;
    lock(&t.running).remove(&key);
    if let Ok(answer) = run {
        if method == "tools/list" && !s.route.filter.is_empty() {
            s.out(s.route.without_ignored_tools(&answer));
        } else {
            s.out(answer);
        }
    }
}

/// The `params.name` of a request, read without building the rest.
fn tool_name(request: &Message) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Request {
        params: Option<Params>,
    }
    #[derive(serde::Deserialize)]
    struct Params {
        name: Option<String>,
    }
    serde_json::from_str::<Request>(request.text())
        .ok()?
        .params?
        .name
}

/// Whether an answer may be `input_required` (one scan, no parse).
fn may_ask_for_input(answer: &Message) -> bool {
    memchr::memmem::find(answer.text().as_bytes(), b"input_required").is_some()
}

/// [`error`] as a message.
fn reply(id: &Value, code: i64, message: impl Into<String>) -> Message {
    Message::from_value(&error(id, code, message))
}

/// Methods whose answer may be `input_required`.
fn may_ask(method: &str) -> bool {
    matches!(method, "tools/call" | "prompts/get" | "resources/read")
}

/// Send `request` on, driving its `input_required` rounds; the answer for the client.
async fn forward(s: &Arc<Shared>, t: &Translator, client: &Message, method: &str) -> Message {
    let id = id_of(client);
    let mut next = t
        .with_meta_text(client)
        .unwrap_or_else(|| Message::from_value(&t.with_meta(client.value())));
    if method == "tools/call"
        && let Some(name) = tool_name(client)
    {
        let name = name.as_str();
        let (listed, rejected) = s.wire.tools_known(name);
        if let Some(reason) = rejected {
            return reply(
                &id,
                -32602,
                format!("the server's tool {name} was left out: {reason}"),
            );
        }
        if !listed {
            // The tool's `Mcp-Param-*` headers come from its schema: list first.
            let list = Message::from_value(&t.with_meta(json!({
                "jsonrpc": "2.0", "id": t.next("list"), "method": "tools/list", "params": {}
            })));
            if let Err(why) = recovering(s, &list, || s.wire.call_message(list.clone())).await {
                tracing::info!("listing the tools before a call failed: {why}");
            }
        }
    }
    let mut state_only = 0u32;
    // The request as a value, made for the first retry (most requests need none).
    let mut request: Option<Value> = None;
    for round in 0..=MAX_ROUNDS {
        let message = next;
        let mut answer =
            match recovering(s, &message, || s.wire.call_message(message.clone())).await {
                // The usual answer, to the client's own id (a first round keeps it):
                // passed on as it came, unparsed.
                Ok(a) if round == 0 && !may_ask_for_input(&a) => return a,
                Ok(a) => a.value(),
                Err(why) => {
                    tracing::warn!(method, "could not deliver: {why}");
                    return reply(
                        &id,
                        DELIVERY_FAILED,
                        format!("keyway could not deliver {method}: {why}"),
                    );
                }
            };
        answer["id"] = id.clone();
        let input_required =
            answer.pointer("/result/resultType").and_then(Value::as_str) == Some("input_required");
        if !input_required {
            return Message::from_value(&answer);
        }
        if !may_ask(method) {
            return reply(
                &id,
                DELIVERY_FAILED,
                format!(
                    "the server answered {method} input_required, which only tools/call, prompts/get and resources/read may be"
                ),
            );
        }
        if round == MAX_ROUNDS {
            return reply(
                &id,
                DELIVERY_FAILED,
                format!(
                    "the server still wanted more input after {MAX_ROUNDS} rounds of {method}; keyway stopped asking"
                ),
            );
        }
        let result = answer
            .get_mut("result")
            .map(Value::take)
            .unwrap_or_default();
        let state = match result.get("requestState") {
            None => None,
            Some(Value::String(st)) if st.len() <= MAX_REQUEST_STATE => Some(st.clone()),
            Some(Value::String(st)) => {
                return reply(
                    &id,
                    DELIVERY_FAILED,
                    format!(
                        "the server's requestState is {} KiB, over keyway's limit of {} KiB",
                        st.len() / 1024,
                        MAX_REQUEST_STATE / 1024
                    ),
                );
            }
            Some(_) => {
                return reply(
                    &id,
                    DELIVERY_FAILED,
                    "the server's requestState is not a string",
                );
            }
        };
        let questions = match result.get("inputRequests") {
            None => Map::new(),
            Some(Value::Object(q)) => q.clone(),
            Some(_) => {
                return reply(
                    &id,
                    DELIVERY_FAILED,
                    "the server's inputRequests is not an object",
                );
            }
        };
        if questions.is_empty() && state.is_none() {
            return reply(
                &id,
                DELIVERY_FAILED,
                "the server answered input_required with neither inputRequests nor requestState",
            );
        }
        let responses = if questions.is_empty() {
            // Only state: the server wants the same request again, a little later.
            tokio::time::sleep(Duration::from_millis(50u64 << state_only.min(4))).await;
            state_only += 1;
            None
        } else {
            state_only = 0;
            match ask(s, t, questions).await {
                Ok(r) => Some(r),
                Err(why) => return reply(&id, why.0, why.1),
            }
        };
        let mut retry = request.take().unwrap_or_else(|| message.value());
        let params = &mut retry["params"];
        if let Some(p) = params.as_object_mut() {
            p.remove("inputResponses");
            p.remove("requestState");
            if let Some(r) = responses {
                p.insert("inputResponses".into(), Value::Object(r));
            }
            if let Some(st) = state {
                p.insert("requestState".into(), Value::String(st));
            }
        }
        // A retry is a request of its own, with an id of its own.
        retry["id"] = json!(t.next("retry"));
        next = Message::from_value(&retry);
        request = Some(retry);
    }
    reply(&id, DELIVERY_FAILED, "unreachable: the rounds loop returns")
}

/// Ask the client each of the server's questions (at once), as the server's own
/// requests; their results by key, or the error that ends the request.
async fn ask(
    s: &Arc<Shared>,
    t: &Translator,
    questions: Map<String, Value>,
) -> Result<Map<String, Value>, (i64, String)> {
    let mut waiting = Vec::with_capacity(questions.len());
    for (key, question) in questions {
        let method = question.get("method").and_then(Value::as_str).unwrap_or("");
        if !matches!(
            method,
            "elicitation/create" | "sampling/createMessage" | "roots/list"
        ) {
            return Err((
                DELIVERY_FAILED,
                format!(
                    "the server asked for input with {method:?}, which is not an input request"
                ),
            ));
        }
        let id = t.next("ask");
        let (tx, rx) = oneshot::channel();
        lock(&t.asks).insert(json!(id).to_string(), tx);
        let mut asked = json!({"jsonrpc": "2.0", "id": id, "method": method});
        if let Some(params) = question.get("params") {
            asked["params"] = params.clone();
        }
        s.out(Message::from_value(&asked));
        waiting.push((key, method.to_owned(), rx));
    }
    let mut responses = Map::new();
    for (key, method, rx) in waiting {
        let answer = rx.await.map_err(|_| {
            (
                DELIVERY_FAILED,
                format!("the client went away before answering {method}"),
            )
        })?;
        match (answer.get("result"), answer.get("error")) {
            (Some(result), _) => {
                responses.insert(key, result.clone());
            }
            (None, Some(e)) => {
                let code = e
                    .get("code")
                    .and_then(Value::as_i64)
                    .unwrap_or(DELIVERY_FAILED);
                let why = e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("no reason");
                return Err((
                    code,
                    format!("the client refused the server's {method}: {why}"),
                ));
            }
            (None, None) => {
                return Err((
                    DELIVERY_FAILED,
                    format!("the client answered {method} with neither result nor error"),
                ));
            }
        }
    }
    Ok(responses)
}

/// (Re)open the `subscriptions/listen` stream for what the client wants to hear:
/// the list changes the server offers and the resources subscribed to. Nothing is
/// opened when that is nothing.
fn open_listen(s: &Arc<Shared>, t: &Translator) {
    let offers = |kind: &str| {
        t.capabilities
            .pointer(&format!("/{kind}/listChanged"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let mut filter = Map::new();
    for (kind, field) in [
        ("tools", "toolsListChanged"),
        ("prompts", "promptsListChanged"),
        ("resources", "resourcesListChanged"),
    ] {
        if offers(kind) {
            filter.insert(field.into(), json!(true));
        }
    }
    let subscribed: Vec<String> = lock(&t.subscribed).iter().cloned().collect();
    if !subscribed.is_empty() {
        filter.insert("resourceSubscriptions".into(), json!(subscribed));
    }
    let mut slot = lock(&t.listen);
    if let Some(old) = slot.take() {
        old.abort();
    }
    if filter.is_empty() {
        return;
    }
    let request = t.with_meta(json!({
        "jsonrpc": "2.0", "id": t.next("listen"), "method": "subscriptions/listen",
        "params": {"notifications": filter},
    }));
    let (handle, registration) = AbortHandle::new_pair();
    *slot = Some(handle);
    let s = s.clone();
    tokio::spawn(Abortable::new(listen(s, request), registration));
}

/// Keep a `subscriptions/listen` stream open: its notifications reach the client
/// through the wire's inbound route; a drop opens it again after a growing pause, a
/// refusal ends it.
async fn listen(s: Arc<Shared>, mut request: Value) {
    let mut pause = Duration::from_millis(250);
    let mut opened = 0u64;
    loop {
        opened += 1;
        request["id"] = json!(format!("keyway-listen-r{opened}"));
        let message = Message::from_value(&request);
        let opened_at = tokio::time::Instant::now();
        let outcome = s.wire.call_message(message).await;
        if opened_at.elapsed() > Duration::from_secs(60) {
            // It worked for a while: whatever ended it, start the pauses over.
            pause = Duration::from_millis(250);
        }
        match outcome {
            Ok(answer) if answer.value().get("error").is_some() => {
                tracing::info!(
                    "the server refused subscriptions/listen: {}",
                    answer.value()["error"]
                );
                return;
            }
            Ok(_) => tracing::debug!("the server ended subscriptions/listen"),
            Err(e) => tracing::debug!(error = %e, "subscriptions/listen dropped"),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translator(level: Option<&str>) -> Translator {
        let mut meta = Map::new();
        meta.insert(META_PROTOCOL_VERSION.into(), json!(MODERN_VERSION));
        meta.insert(META_CLIENT_CAPABILITIES.into(), json!({"sampling": {}}));
        meta.insert(
            META_CLIENT_INFO.into(),
            json!({"name": "c", "version": "1"}),
        );
        let text = Value::Object(meta.clone()).to_string();
        Translator {
            meta_text: text[1..text.len() - 1].to_owned(),
            meta,
            initialize: json!({}),
            capabilities: json!({}),
            log_level: Mutex::new(level.map(|l| json!(l))),
            next_id: AtomicU64::new(0),
            asks: Mutex::default(),
            running: Mutex::default(),
            subscribed: Mutex::default(),
            listen: Mutex::default(),
        }
    }

    /// The request metadata spliced into the text is what putting it into the parsed
    /// request gives, whatever shape the client's request has.
    #[test]
    fn splicing_the_metadata_into_the_text_matches_the_parsed_way() {
        let requests = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":"a","method":"tools/list","params":{}}"#,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"text":"h\u00e9 \"q\"","n":[1,{"x":null}]}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"_meta":{"progressToken":"p","io.modelcontextprotocol/clientInfo":{"name":"spoof"}},"name":"echo"}}"#,
            r#"{"id":4,"params":{"a\"b":1,"\u0063":2,"_meta":{"io.modelcontextprotocol/logLevel":"debug"}},"method":"prompts/get","jsonrpc":"2.0","x-vendor":{"keep":true}}"#,
        ];
        for level in [None, Some("warning")] {
            let t = translator(level);
            for text in requests {
                let message = Message::parse(text.to_owned()).unwrap();
                let spliced = t.with_meta_text(&message).expect(text);
                assert_eq!(spliced.value(), t.with_meta(message.value()), "{text}");
                assert_eq!(spliced.id(), message.id());
                assert_eq!(spliced.method(), message.method());
            }
        }
        // A `params` that is not an object is left to the parsed way.
        let odd =
            Message::parse(r#"{"jsonrpc":"2.0","id":5,"method":"x","params":[1]}"#.into()).unwrap();
        assert!(translator(None).with_meta_text(&odd).is_none());
    }
}
