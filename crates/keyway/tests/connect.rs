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

fn http() -> keyway::http::WireClient {
    keyway::http::WireClient::new(&Default::default()).unwrap()
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
async fn list_call_and_close_with_a_bearer_token_in_every_generation() {
    use keyway_testbed::McpRevision;
    // (what the server speaks, the revision chosen, requests before the first answer
    // that is not the handshake's, DELETEs on close)
    for (revision, chosen, startup, deletes) in [
        // server/discover only: no handshake, no session to end.
        (McpRevision::Both, "2026-07-28", 1, 0),
        (McpRevision::Modern, "2026-07-28", 1, 0),
        // server/discover refused as an unsupported version, then
        // initialize + initialized on a new wire; the session ends with a DELETE.
        (McpRevision::Legacy, "2025-11-25", 3, 1),
    ] {
        let mut knobs = Knobs::default();
        knobs.mcp_revision = revision;
        let tb = Testbed::start(knobs).await.unwrap();
        let conn = Connection::open(
            tb.mcp_url(),
            http(),
            token(&tb.mint_access_token("mcp:tools")),
        )
        .await
        .unwrap();
        let server = conn.server();
        assert_eq!(
            server.name.as_deref(),
            Some("keyway-testbed"),
            "{revision:?}"
        );
        assert_eq!(server.protocol_version, chosen, "{revision:?}");
        assert_eq!(tb.stats().path("POST /mcp"), startup, "{revision:?}");
        let mut names: Vec<_> = conn
            .list_tools()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names, keyway_testbed::TOOL_NAMES);
        let r = conn
            .call_tool("add", json!({"a": 40, "b": 2}).as_object().cloned())
            .await
            .unwrap();
        assert_eq!(result_text(&r), "42");
        conn.close().await;
        let stats = tb.stats();
        assert_eq!(stats.path("DELETE /mcp"), deletes, "{revision:?}");
        assert_eq!(stats.unauthorized, 0);
    }
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
        deadlines: Default::default(),
        protocol: Default::default(),
        last_protocol: None,
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
        let m = m.value();
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
        deadlines: Default::default(),
        protocol: Default::default(),
        last_protocol: None,
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

#[tokio::test]
async fn posts_reuse_one_connection_and_open_another_when_the_server_closes_it() {
    // Answer 5 says `Connection: close`, and the server closes the connection.
    fn answer(n: usize, id: &serde_json::Value) -> Vec<Vec<u8>> {
        let body = json!({"jsonrpc": "2.0", "id": id, "result": {"n": n}}).to_string();
        let close = n == 5;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let mut pieces = vec![[head.into_bytes(), body.into_bytes()].concat()];
        if close {
            pieces.push(Vec::new());
        }
        pieces
    }
    let (url, accepted) = scripted_server(answer);
    let wire = raw_wire(&url).await;
    for i in 1..=12 {
        let answer = wire
            .call(&json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
            .await
            .unwrap();
        assert_eq!(answer["id"], i);
        assert_eq!(answer["result"]["n"], i);
    }
    // Calls 1-5 on the first connection (closed by the server after the 5th answer),
    // 6-12 on a second one.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A bare HTTP/1.1 server on loopback that answers the POST numbered n (from 1) with
/// the pieces `answer(n, id)` gives, each written (and sent, no delay) on its own, and
/// counts the connections it accepts (each served by a thread of its own). An empty
/// piece closes the connection. Raw
/// sockets: only a raw server can split an answer at exact points or send framing no
/// well-behaved server library would.
fn scripted_server(
    answer: fn(usize, &serde_json::Value) -> Vec<Vec<u8>>,
) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let answered = answered.clone();
            std::thread::spawn(move || serve(conn, answer, &answered));
        }
    });
    fn serve(
        conn: std::net::TcpStream,
        answer: fn(usize, &serde_json::Value) -> Vec<Vec<u8>>,
        answered: &std::sync::atomic::AtomicUsize,
    ) {
        conn.set_nodelay(true).unwrap();
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        'requests: loop {
            let mut length = 0;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break 'requests;
                }
                if line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            r.read_exact(&mut body).unwrap();
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let n = answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            for piece in answer(n, &request["id"]) {
                if piece.is_empty() || w.write_all(&piece).is_err() {
                    break 'requests;
                }
            }
        }
    }
    (url, accepted)
}

async fn raw_wire(url: &str) -> keyway::mcp::wire::Wire {
    use keyway::mcp::wire::{Wire, WireConfig, WireKind};
    let config = WireConfig {
        url: url::Url::parse(url).unwrap(),
        http: http(),
        tokens: Arc::new(StaticToken::default()),
        headers: vec![],
        kind: WireKind::StreamableHttp,
        deadlines: Default::default(),
        protocol: Default::default(),
        last_protocol: None,
    };
    let (wire, _inbound) = Wire::connect(config).await.unwrap();
    wire
}

#[tokio::test]
async fn chunked_event_streams_are_read_however_they_are_cut() {
    // An early hint first, then the answer as an event stream, chunked, with the head
    // cut mid-name and the event cut mid-line and mid-chunk, a chunk extension and a
    // trailer; every piece a TCP segment of its own. The event's last bytes come with
    // the end of the body, so the body is complete once the answer is read and the
    // connection is free for the next call.
    fn answer(n: usize, id: &serde_json::Value) -> Vec<Vec<u8>> {
        let event = format!(
            "event: message\ndata: {}\n\n",
            json!({"jsonrpc": "2.0", "id": id, "result": {"n": n}})
        );
        let (a, b) = event.split_at(event.len() / 2);
        vec![
            b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n".to_vec(),
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-en".to_vec(),
            b"coding: chunked\r\n\r\n".to_vec(),
            format!("{:x};note=1\r\n{a}", a.len()).into_bytes(),
            format!("\r\n{:X}\r\n", b.len()).into_bytes(),
            format!("{b}\r\n0\r\nx-done: yes\r\n\r\n").into_bytes(),
        ]
    }
    let (url, accepted) = scripted_server(answer);
    let wire = raw_wire(&url).await;
    for i in 1..=5 {
        let a = wire
            .call(&json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
            .await
            .unwrap();
        assert_eq!(
            (a["id"].as_i64(), a["result"]["n"].as_i64()),
            (Some(i), Some(i))
        );
    }
    // Each answer was read to its end and its connection pooled again: one connection,
    // or two when the next call came before hyper had seen the end of the body (the
    // pool then opens a second beside waiting for the first, and keeps both).
    let opened = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (1..=2).contains(&opened),
        "{opened} connections for 5 calls"
    );
}

#[tokio::test]
async fn answers_framed_ambiguously_are_not_trusted_with_the_next_request() {
    // Answer 1 has Transfer-Encoding beside Content-Length (a request-smuggling shape):
    // read by its chunks, then its connection is closed. Answer 2 is fine. Answer 3 has
    // a bad chunk size: an error, not a guess.
    fn answer(n: usize, id: &serde_json::Value) -> Vec<Vec<u8>> {
        let body = json!({"jsonrpc": "2.0", "id": id, "result": {"n": n}}).to_string();
        let chunked = |size: String| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n{size}\r\n{body}\r\n0\r\n\r\n"
            )
        };
        let text = match n {
            1 => chunked(format!("{:x}", body.len())),
            3 => chunked("zz".into()),
            _ => format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
        };
        vec![text.into_bytes()]
    }
    let (url, accepted) = scripted_server(answer);
    let wire = raw_wire(&url).await;
    let call = |i: i64| {
        let wire = wire.clone();
        async move {
            wire.call(&json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
                .await
        }
    };
    // Whether hyper keeps that connection is hyper's policy (it reads by the chunks,
    // as RFC 9112 §6.3 says); keyway only needs each answer read right.
    assert_eq!(call(1).await.unwrap()["result"]["n"], 1);
    assert_eq!(call(2).await.unwrap()["result"]["n"], 2);
    let err = call(3).await.unwrap_err();
    assert!(
        matches!(err, keyway::mcp::wire::WireError::Dropped { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("chunk size"), "{err}");
    drop(accepted);
}

// The clock is paused (tokio moves it on whenever nothing else can run), so the
// connect timeouts pass at once and the elapsed time counts the turns taken.
#[tokio::test(start_paused = true)]
async fn requests_to_a_server_that_never_finishes_the_handshake_fail_at_the_connect_deadline() {
    use keyway::mcp::wire::{Wire, WireConfig, WireKind};
    // A server that accepts TCP and never says a word: every TLS handshake times out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut silent = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            silent.push(s);
        }
    });
    let (wire, _inbound) = Wire::connect(WireConfig {
        url: url::Url::parse(&format!("https://{addr}/mcp")).unwrap(),
        http: http(),
        tokens: Arc::new(StaticToken::default()),
        headers: vec![],
        kind: WireKind::StreamableHttp,
        deadlines: Default::default(),
        protocol: Default::default(),
        last_protocol: None,
    })
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    // Many at once: each fails with the connect deadline, named, and together they take
    // one deadline, not one each.
    let calls = (0..70).map(|i| {
        let wire = wire.clone();
        async move {
            wire.call(&json!({"jsonrpc": "2.0", "id": i, "method": "ping"}))
                .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let took = started.elapsed();
    for r in &results {
        let err = r.as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                keyway::mcp::wire::WireError::Deadline {
                    limit: keyway::mcp::wire::Limit::Connect(_),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--connect-timeout"), "{err}");
    }
    // One connect timeout (10 s), not one per request.
    assert!(took < std::time::Duration::from_secs(15), "{took:?}");
}

#[tokio::test]
async fn a_certificate_nobody_vouches_for_is_refused_and_named() {
    use keyway::mcp::wire::{Wire, WireConfig, WireError, WireKind};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    // A TLS server on loopback with a self-signed certificate for 127.0.0.1: the
    // handshake must fail on the client's side, before any request is written.
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = key.cert.der().clone();
    let pkcs8 = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], pkcs8)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        // The wire, then a plain request: both give up during the handshake.
        let mut completed = 0;
        for _ in 0..2 {
            let (tcp, _) = listener.accept().await.unwrap();
            completed += usize::from(acceptor.accept(tcp).await.is_ok());
        }
        completed
    });
    let (wire, _inbound) = Wire::connect(WireConfig {
        url: url::Url::parse(&format!("https://{addr}/mcp")).unwrap(),
        http: http(),
        tokens: token("a-token-that-must-not-leave"),
        headers: vec![],
        kind: WireKind::StreamableHttp,
        deadlines: Default::default(),
        protocol: Default::default(),
        last_protocol: None,
    })
    .await
    .unwrap();
    let err = wire
        .call(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await
        .unwrap_err();
    let WireError::Connect { reason: why, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(why.contains("certificate"), "{why}");
    assert!(!why.contains("a-token-that-must-not-leave"), "{why}");
    // The Authorization value kept for reuse is marked sensitive: Debug hides it.
    let debug = format!("{wire:?}");
    assert!(!debug.contains("a-token-that-must-not-leave"), "{debug}");
    // keyway's reqwest clients are given the same TLS setup.
    let err = keyway::http::client()
        .unwrap()
        .get(format!("https://{addr}/mcp"))
        .send()
        .await
        .unwrap_err();
    let mut why = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        why.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert_eq!(server.await.unwrap(), 0, "no handshake may complete");
}

/// A server written for one case with axum on loopback: what `app` serves at /mcp.
async fn serve_case(app: axum::Router) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}/mcp", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn case_wire_config(url: url::Url) -> keyway::mcp::wire::WireConfig {
    keyway::mcp::wire::WireConfig::new(url, http(), Arc::new(StaticToken::default()))
}

#[tokio::test]
async fn a_stream_that_goes_silent_hits_the_idle_deadline() {
    use axum::{response::IntoResponse, routing::post};
    use keyway::mcp::wire::{Limit, Wire, WireError};
    // The answer's stream starts (a progress notification) and then nothing more ever
    // comes, the connection left open: what a connection a NAT dropped looks like.
    let app = axum::Router::new().route(
        "/mcp",
        post(|| async {
            let first = futures::stream::once(async {
                Ok::<_, std::convert::Infallible>(
                    "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":0}}\n\n",
                )
            });
            (
                [(http::header::CONTENT_TYPE, "text/event-stream")],
                axum::body::Body::from_stream(futures::StreamExt::chain(
                    first,
                    futures::stream::pending(),
                )),
            )
                .into_response()
        }),
    );
    let url = serve_case(app).await;
    let mut config = case_wire_config(url.clone());
    config.deadlines.idle = std::time::Duration::from_millis(300);
    let (wire, mut inbound) = Wire::connect(config).await.unwrap();
    let err = wire
        .call(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "x"}}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Deadline {
                limit: Limit::Idle(d),
                ..
            } if d == std::time::Duration::from_millis(300)
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(url.origin().ascii_serialization().as_str())
            && text.contains("--idle-timeout"),
        "{text}"
    );
    // What came before the silence was passed on.
    assert!(matches!(
        inbound.try_recv(),
        Ok(keyway::mcp::wire::Inbound::Message(_))
    ));
    // A tools/call may have run: the bridge would report it, not send it again.
    assert!(!err.may_retry("tools/call", true));
    assert!(err.may_retry("tools/list", true));
}

#[tokio::test]
async fn a_server_with_no_answer_in_time_hits_the_first_byte_deadline() {
    use axum::routing::post;
    use keyway::mcp::wire::{Limit, Wire, WireError};
    let app = axum::Router::new().route("/mcp", post(std::future::pending::<String>));
    let mut config = case_wire_config(serve_case(app).await);
    config.deadlines.first_byte = std::time::Duration::from_millis(300);
    let (wire, _inbound) = Wire::connect(config).await.unwrap();
    let err = wire
        .call(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            WireError::Deadline {
                limit: Limit::FirstByte(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("--answer-timeout"), "{err}");
}

/// What the priming server saw: the Last-Event-ID of each GET.
#[derive(Default)]
struct Resumes(std::sync::Mutex<Vec<Option<String>>>);

/// A server in the 2025-11-25 pattern: a request's stream carries a priming event (an
/// ID, empty data, a retry time) and is closed before the answer; a GET naming that
/// ID with Last-Event-ID gets the rest of the stream, the answer included.
async fn priming_server() -> (url::Url, Arc<Resumes>) {
    use axum::{extract::State, http::HeaderMap, response::IntoResponse, routing::post};
    let seen = Arc::new(Resumes::default());
    let sse =
        |body: String| ([(http::header::CONTENT_TYPE, "text/event-stream")], body).into_response();
    let app = axum::Router::new()
        .route(
            "/mcp",
            post(move |body: String| async move {
                let request: serde_json::Value = serde_json::from_str(&body).unwrap();
                let id = request["id"].to_string();
                // The stream ends here, before the answer.
                sse(format!("id: {id}-prime\nretry: 5\ndata:\n\n"))
            })
            .get(
                move |State(seen): State<Arc<Resumes>>, headers: HeaderMap| async move {
                    let last = headers
                        .get("last-event-id")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    seen.0.lock().unwrap().push(last.clone());
                    let Some(id) = last.as_deref().and_then(|l| l.strip_suffix("-prime")) else {
                        return axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
                    };
                    sse(format!(
                        "id: {id}-answer\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"resumed\":true}}}}\n\n"
                    ))
                },
            ),
        )
        .with_state(seen.clone());
    (serve_case(app).await, seen)
}

#[tokio::test]
async fn a_stream_closed_before_its_answer_resumes_with_last_event_id() {
    use keyway::mcp::wire::{Inbound, Wire};
    let (url, seen) = priming_server().await;
    let (wire, mut inbound) = Wire::connect(case_wire_config(url)).await.unwrap();
    // A call: the answer is returned.
    // Without resumption the answer would never come: a bounded wait, so that fails
    // rather than hangs.
    let guard = std::time::Duration::from_secs(30);
    let a = tokio::time::timeout(
        guard,
        wire.call(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "x"}}),
        ),
    )
    .await
    .expect("the answer within 30 s")
    .unwrap();
    assert_eq!(a["result"]["resumed"], true, "{a}");
    assert_eq!(*seen.0.lock().unwrap(), vec![Some("7-prime".to_owned())]);
    // A request sent as the bridge sends it: the answer arrives on the inbound side.
    wire.send(&json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "x"}}))
        .await
        .unwrap();
    let Some(Inbound::Message(m)) = tokio::time::timeout(guard, inbound.recv())
        .await
        .expect("the answer within 30 s")
    else {
        panic!("no answer")
    };
    assert_eq!(m.value()["id"], 8);
    assert_eq!(m.value()["result"]["resumed"], true);
    assert_eq!(seen.0.lock().unwrap().len(), 2);
}
