//! Connections against a real testbed on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use keyway::{
    Secret,
    mcp::{ConnectError, Connection, RequestError, StaticToken, result_text},
};
use keyway_testbed::{Knobs, Testbed};
use serde_json::json;

fn token(t: &str) -> Arc<StaticToken> {
    Arc::new(StaticToken::new(Some(Secret::new(t))))
}

fn http() -> reqwest::Client {
    keyway::http::client().unwrap()
}

#[tokio::test]
async fn without_a_token_the_challenge_comes_back() {
    let tb = Testbed::start(Knobs::default()).await.unwrap();
    let err = Connection::open(tb.mcp_url(), http(), Arc::new(StaticToken::default()))
        .await
        .unwrap_err();
    let ConnectError::AuthorizationRequired { challenge, .. } = &err else {
        panic!("{err:?}")
    };
    let challenge = challenge.as_deref().unwrap();
    assert!(challenge.contains(&tb.prm_url().unwrap()), "{challenge}");
    assert!(err.needs_authorization());
}

#[tokio::test]
async fn a_rejected_token_needs_authorization_and_never_shows_in_the_error() {
    let tb = Testbed::start(Knobs::default()).await.unwrap();
    let err = Connection::open(tb.mcp_url(), http(), token("tb_at_not-a-real-token"))
        .await
        .unwrap_err();
    assert!(err.needs_authorization(), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains("invalid_token"), "{shown}");
    assert!(!shown.contains("not-a-real-token"), "{shown}");
}

#[tokio::test]
async fn list_call_and_close_with_a_bearer_token() {
    let tb = Testbed::start(Knobs::default()).await.unwrap();
    let conn = Connection::open(
        tb.mcp_url(),
        http(),
        token(&tb.mint_access_token("mcp:tools")),
    )
    .await
    .unwrap();
    let server = conn.server();
    assert_eq!(server.name.as_deref(), Some("keyway-testbed"));
    assert_eq!(server.protocol_version, "2025-11-25");
    let mut names: Vec<_> = conn
        .list_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["add", "admin_only", "echo", "slow"]);
    let r = conn
        .call_tool("add", json!({"a": 40, "b": 2}).as_object().cloned())
        .await
        .unwrap();
    assert_eq!(result_text(&r), "42");
    conn.close().await;
    let stats = tb.stats();
    assert_eq!(
        stats.path("DELETE /mcp"),
        1,
        "the session is closed with a DELETE"
    );
    assert_eq!(stats.unauthorized, 0);
}

#[tokio::test]
async fn insufficient_scope_on_a_call_is_reported_as_such() {
    let tb = Testbed::start(Knobs::default()).await.unwrap();
    let conn = Connection::open(
        tb.mcp_url(),
        http(),
        token(&tb.mint_access_token("mcp:tools")),
    )
    .await
    .unwrap();
    let err = conn.call_tool("admin_only", None).await.unwrap_err();
    let RequestError::InsufficientScope { challenge, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("mcp:admin"),
        "{challenge}"
    );
    conn.close().await;
}

#[tokio::test]
async fn bad_urls_are_refused_before_any_request() {
    for url in ["not a url", "ftp://127.0.0.1/mcp", "file:///etc/passwd"] {
        let err = Connection::open(url, http(), Arc::new(StaticToken::default()))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ConnectError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_plain_failure() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Connection::open(
        &format!("http://127.0.0.1:{port}/mcp"),
        http(),
        Arc::new(StaticToken::default()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert!(!err.needs_authorization());
}

#[tokio::test]
async fn the_legacy_sse_transport_explicitly_and_by_fallback() {
    use keyway::mcp::TransportChoice;
    let mut knobs = Knobs::default();
    knobs.legacy_sse_only = true;
    let tb = Testbed::start(knobs).await.unwrap();
    let t = token(&tb.mint_access_token("mcp:tools"));
    for choice in [TransportChoice::LegacySse, TransportChoice::Auto] {
        let conn = Connection::open_transport(&tb.sse_url(), http(), t.clone(), vec![], choice)
            .await
            .unwrap();
        assert_eq!(conn.server().name.as_deref(), Some("keyway-testbed"));
        let r = conn
            .call_tool("echo", json!({"text": "old"}).as_object().cloned())
            .await
            .unwrap();
        assert_eq!(result_text(&r), "old", "{choice:?}");
        conn.close().await;
    }
    // Without a token the SSE stream itself is refused with the challenge.
    let err = Connection::open_transport(
        &tb.sse_url(),
        http(),
        Arc::new(StaticToken::default()),
        vec![],
        TransportChoice::LegacySse,
    )
    .await
    .unwrap_err();
    assert!(err.needs_authorization(), "{err:?}");
    // Streamable HTTP only is refused by a legacy-only server.
    let err = Connection::open(&tb.sse_url(), http(), t)
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Failed { .. }), "{err:?}");
}

#[tokio::test]
async fn a_call_returns_its_answer_and_passes_on_what_came_before_it() {
    use keyway::mcp::wire::{Inbound, Wire, WireConfig, WireKind};
    let tb = Testbed::start(Knobs::default()).await.unwrap();
    let config = WireConfig {
        url: url::Url::parse(tb.mcp_url()).unwrap(),
        http: http(),
        tokens: token(&tb.mint_access_token("mcp:tools")),
        headers: vec![],
        kind: WireKind::StreamableHttp,
    };
    let (wire, mut inbound) = Wire::connect(config).await.unwrap();
    let init = wire
        .call(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(init["id"], 1);
    assert_eq!(wire.protocol_version().as_deref(), Some("2025-11-25"));
    wire.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    // Progress comes on the call's own stream before its answer.
    let answer = wire
        .call(
            &json!({"jsonrpc": "2.0", "id": "p", "method": "tools/call", "params": {
            "name": "slow", "arguments": {"ms": 20}, "_meta": {"progressToken": "t1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(answer["id"], "p");
    assert_eq!(answer["result"]["content"][0]["text"], "waited 20 ms");
    let mut progress = Vec::new();
    while let Ok(Inbound::Message(m)) = inbound.try_recv() {
        assert_eq!(m["method"], "notifications/progress", "{m}");
        assert_eq!(m["params"]["progressToken"], "t1");
        progress.push(m["params"]["progress"].as_f64().unwrap());
    }
    assert_eq!(progress, [0.0, 10.0]);
    // Many calls at once each get their own answer.
    let calls = (0..20).map(|i| {
        let wire = wire.clone();
        async move {
            wire.call(&json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"text": format!("n{i}")}}}))
                .await
                .unwrap()
        }
    });
    for (i, a) in futures::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(a["result"]["content"][0]["text"], format!("n{i}"));
    }
    wire.close().await;
    let err = wire
        .call(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .await
        .unwrap_err();
    assert!(err.is_dropped(), "{err}");
}

#[tokio::test]
async fn a_call_over_legacy_sse_gets_its_answer_from_the_event_stream() {
    use keyway::mcp::wire::{Wire, WireConfig, WireKind};
    let mut knobs = Knobs::default();
    knobs.legacy_sse_only = true;
    let tb = Testbed::start(knobs).await.unwrap();
    let config = WireConfig {
        url: url::Url::parse(&tb.sse_url()).unwrap(),
        http: http(),
        tokens: token(&tb.mint_access_token("mcp:tools")),
        headers: vec![],
        kind: WireKind::LegacySse,
    };
    let (wire, _inbound) = Wire::connect(config).await.unwrap();
    let init = wire
        .call(
            &json!({"jsonrpc": "2.0", "id": "i", "method": "initialize", "params": {
            "protocolVersion": "2024-11-05", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}),
        )
        .await
        .unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], "keyway-testbed");
    wire.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .unwrap();
    let a = wire
        .call(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "old"}}}))
        .await
        .unwrap();
    assert_eq!(a["result"]["content"][0]["text"], "old");
    wire.close().await;
}
