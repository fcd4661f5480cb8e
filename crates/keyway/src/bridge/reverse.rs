//! A 2026-07-28 client (per-request metadata, no session) in front of a server that
//! speaks only the handshake revisions. keyway runs the handshake upstream with the
//! client's name from its first request, answers `server/discover` from the server's
//! `initialize` result, and sends the client's requests on the session without the
//! 2026-07-28 metadata; the answers come back as they are (a result with no
//! `resultType` is complete).
//!
//! The server is offered no client capabilities: its own requests (elicitation,
//! sampling, roots) would have to become `input_required` results for this client,
//! which keyway does not do yet, so the server is not led to send them. Nor is
//! `subscriptions/listen` offered.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{DELIVERY_FAILED, Era, Shared, deliver, recovering};
use crate::mcp::{
    modern::{META_CLIENT_INFO, MODERN_VERSION, is_modern, strip_request_metadata},
    wire::{Message, Protocol, WireKind},
};

/// What the bridge keeps to serve a 2026-07-28 client from a handshake server.
pub(super) struct Reverse {
    /// The `server/discover` result the client gets.
    discover: Value,
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
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": client_info},
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
    refuse_server_requests(&s);
    let spoken = result.get("protocolVersion").and_then(Value::as_str);
    s.authorize.spoke(spoken).await;
    let reverse = Arc::new(Reverse {
        discover: discover_result(result),
    });
    let _ = s.era.set(Era::Reverse(reverse.clone()));
    deliver(
        &s,
        Message::from_value(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"})),
    )
    .await;
    request(s, reverse, message).await;
}

/// The server's own requests (elicitation, sampling, roots) are answered here with an
/// error: a 2026-07-28 client takes none, and keyway does not turn them into
/// `input_required` results yet. A server that asks anyway (it was offered no
/// capabilities) hears so at once instead of waiting.
fn refuse_server_requests(s: &Arc<Shared>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    if s.route.refuse_requests.set(tx).is_err() {
        return;
    }
    // Weak: the channel's sender lives in the route, which the bridge holds, so the
    // task ends with the bridge rather than keep it alive.
    let bridge = Arc::downgrade(s);
    tokio::spawn(async move {
        while let Some(request) = rx.recv().await {
            let Some(s) = bridge.upgrade() else { break };
            let method = request.get("method").and_then(Value::as_str).unwrap_or("");
            tracing::info!(
                method,
                "refused a server request the 2026-07-28 client cannot take"
            );
            let refusal = json!({"jsonrpc": "2.0", "id": request.get("id"), "error": {
                "code": -32601,
                "message": format!("the client speaks MCP 2026-07-28 and cannot take {method}; keyway does not translate it yet"),
            }});
            if let Err(e) = s.wire.send(&refusal).await {
                tracing::debug!("refusing a server request failed: {e}");
            }
        }
    });
}

/// A `server/discover` result from a handshake server's `initialize` result: its
/// capabilities less what needs `subscriptions/listen`, its instructions and name.
fn discover_result(initialize: &Value) -> Value {
    let mut capabilities = initialize
        .get("capabilities")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(c) = capabilities.as_object_mut() {
        for (_, v) in c.iter_mut() {
            if let Some(o) = v.as_object_mut() {
                o.remove("listChanged");
                o.remove("subscribe");
            }
        }
    }
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

/// A 2026-07-28 client's request: `server/discover` answered here, the rest sent on
/// the session without their 2026-07-28 metadata (the answer comes back as it is).
pub(super) async fn request(s: Arc<Shared>, r: Arc<Reverse>, message: Message) {
    let mut value = message.value();
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    match message.method().unwrap_or_default() {
        "server/discover" => {
            return s.out(Message::from_value(
                &json!({"jsonrpc": "2.0", "id": id, "result": r.discover}),
            ));
        }
        "subscriptions/listen" => {
            return s.out(error(
                &id,
                -32601,
                "the server speaks only the handshake revisions, and keyway does not offer subscriptions/listen for it yet",
            ));
        }
        _ => {}
    }
    if let Some(params) = value.get_mut("params") {
        strip_request_metadata(params);
    }
    deliver(&s, Message::from_value(&value)).await;
}
