//! --hostile: each kind of hostile answer, checked byte by byte with a plain client.

use std::time::Duration;

use keyway_testbed::{Endpoint, HostileAnswer, HostileKind};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{Bed, REDIRECT, VERIFIER, bed};

/// A bound for waits that end on a readiness signal: a regression fails the test
/// instead of hanging it.
const PATIENCE: Duration = Duration::from_secs(30);

fn hostile(endpoint: Endpoint, kind: HostileKind) -> HostileAnswer {
    HostileAnswer::new(endpoint, kind)
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h","version":"0"}}})
}

fn hostile_count(b: &Bed, kind: &str) -> u64 {
    b.tb.stats().hostile_answers.get(kind).copied().unwrap_or(0)
}

fn content_length(r: &reqwest::Response) -> usize {
    r.headers()[header::CONTENT_LENGTH]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Read `r` until more than `cap` bytes came; the body must not end before.
async fn read_past(mut r: reqwest::Response, cap: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() <= cap {
        let chunk = r.chunk().await.unwrap().expect("the body never ends");
        got.extend_from_slice(&chunk);
    }
    // Dropping `r` here hangs up mid-body.
    got
}

#[tokio::test]
async fn endless_never_ends_and_stops_when_the_client_hangs_up() {
    let b = bed(|k| {
        k.open = true;
        k.hostile = vec![
            hostile(Endpoint::Prm, HostileKind::Endless),
            hostile(Endpoint::Mcp, HostileKind::Endless),
        ];
    })
    .await;

    // A JSON endpoint: an object that never closes.
    let r = b.get(&b.tb.prm_url().unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    assert!(r.headers().get(header::CONTENT_LENGTH).is_none());
    let got = read_past(r, 4 << 20).await;
    assert!(got.starts_with(b"{\"x\":\"xxxxxxxx"));
    assert!(got[6..].iter().all(|&c| c == b'x'));
    tokio::time::timeout(PATIENCE, b.tb.endless_answers_stop(1))
        .await
        .expect("the endless answer stops when its client hangs up");

    // An event stream: one data line that never ends.
    let r = b.mcp_post(None, None, initialize()).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let got = read_past(r, 1 << 20).await;
    assert!(got.starts_with(b"data: xxxxxxxx"));
    assert!(!got.contains(&b'\n'));
    tokio::time::timeout(PATIENCE, b.tb.endless_answers_stop(2))
        .await
        .expect("the endless event stream stops when its client hangs up");

    // The server is free for the next client.
    let (status, metadata) = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(metadata["issuer"], b.tb.issuer());
    let stats = b.tb.stats();
    assert_eq!(stats.hostile_answers.get("endless"), Some(&2));
    assert_eq!(stats.endless_answers_stopped, 2);
}

#[tokio::test]
async fn deep_is_100000_nested_arrays_with_the_real_status() {
    let b = bed(|k| k.hostile = vec![hostile(Endpoint::Token, HostileKind::Deep)]).await;
    let plain = bed(|_| {}).await;
    let refuse = |b: &Bed| {
        b.http
            .post(b.tb.endpoint_url("token"))
            .form(&[("grant_type", "nonsense")])
            .send()
    };
    let real = refuse(&plain).await.unwrap().status();
    assert!(real.is_client_error(), "{real}");
    let r = refuse(&b).await.unwrap();
    // Only the body is replaced.
    assert_eq!(r.status(), real);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(content_length(&r), 200_000);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 200_000);
    assert!(body[..100_000].iter().all(|&c| c == b'['));
    assert!(body[100_000..].iter().all(|&c| c == b']'));
    // What it is for: a parser without a depth limit would overflow its stack.
    let refused = serde_json::from_slice::<Value>(&body).unwrap_err();
    assert!(refused.to_string().contains("recursion limit"), "{refused}");
    assert_eq!(hostile_count(&b, "deep"), 1);
}

#[tokio::test]
async fn not_utf8_puts_ff_fe_in_the_first_string_value() {
    let b = bed(|k| {
        k.open = true;
        k.hostile = vec![
            hostile(Endpoint::Prm, HostileKind::NotUtf8),
            hostile(Endpoint::Mcp, HostileKind::NotUtf8),
        ];
    })
    .await;
    let r = b.get(&b.tb.prm_url().unwrap()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let length = content_length(&r);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), length);
    assert!(std::str::from_utf8(&body).is_err());
    let at = body.windows(2).position(|w| w == b"\xFF\xFE").unwrap();
    assert_eq!(body[at - 1], b'"', "just inside a string");
    assert_eq!(
        body.windows(2).filter(|w| *w == b"\xFF\xFE").count(),
        1,
        "only the first string"
    );
    // Without the two bytes it is the real document again.
    let mut repaired = body.to_vec();
    repaired.drain(at..at + 2);
    let v: Value = serde_json::from_slice(&repaired).unwrap();
    assert_eq!(v["resource"], b.tb.mcp_url());

    // In an event stream, the first data line with a string.
    let r = b.mcp_post(None, None, initialize()).await;
    assert_eq!(r.headers()[header::CONTENT_TYPE], "text/event-stream");
    let body = r.bytes().await.unwrap();
    assert!(std::str::from_utf8(&body).is_err());
    let at = body.windows(2).position(|w| w == b"\xFF\xFE").unwrap();
    assert!(
        body[..at].ends_with(b"data: {\"jsonrpc\":\""),
        "{:?}",
        &body[..at]
    );
    assert_eq!(hostile_count(&b, "not-utf8"), 2);
}

/// The first key of a JSON object as written, and the raw text of its value.
fn first_member(text: &str) -> (String, Value) {
    let members = text.trim().strip_prefix('{').unwrap();
    let mut keys = serde_json::Deserializer::from_str(members).into_iter::<String>();
    let key = keys.next().unwrap().unwrap();
    let rest = members[keys.byte_offset()..].trim_start();
    let value = serde_json::Deserializer::from_str(rest.strip_prefix(':').unwrap())
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    (key, value)
}

#[tokio::test]
async fn duplicate_keys_repeat_the_first_member_with_another_value() {
    let b = bed(|k| {
        k.open = true;
        k.hostile = vec![
            hostile(Endpoint::Token, HostileKind::DuplicateKeys),
            hostile(Endpoint::Mcp, HostileKind::DuplicateKeys),
        ];
    })
    .await;
    let reg = b.register(json!({})).await;
    let id = reg["client_id"].as_str().unwrap();
    let q = b.authorize(id, &[]).await;
    let resource = b.tb.resource().to_owned();
    let r = b
        .http
        .post(b.tb.endpoint_url("token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", q["code"].as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", id),
            ("resource", &resource),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let length = content_length(&r);
    let text = r.text().await.unwrap();
    assert_eq!(text.len(), length);
    let (key, value) = first_member(&text);
    let other = match &value {
        Value::String(s) => format!("duplicate-{s}"),
        _ => "duplicate".to_owned(),
    };
    assert_eq!(text.matches(&format!("\"{key}\":")).count(), 2, "{text}");
    assert!(
        text.ends_with(&format!(",\"{key}\":{}}}", json!(other))),
        "{text}"
    );
    // A parser that keeps the last one sees the other value.
    let last: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(last[&key], other);
    assert!(last["access_token"].is_string());

    // In an event stream, every data line's object.
    let r = b.mcp_post(None, None, initialize()).await;
    let text = r.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("data: {"))
        .expect("the answer's data line");
    assert!(
        line.starts_with(r#"data: {"jsonrpc":"2.0","id":1,"#),
        "{line}"
    );
    assert!(line.ends_with(r#","jsonrpc":"duplicate-2.0"}"#), "{line}");
    assert!(
        text.starts_with("data: \n"),
        "the empty priming event stays"
    );
    assert_eq!(hostile_count(&b, "duplicate-keys"), 2);
}

#[tokio::test]
async fn close_mid_body_sends_half_the_body_then_closes() {
    let b = bed(|k| {
        k.open = true;
        k.hostile = vec![
            hostile(Endpoint::Prm, HostileKind::CloseMidBody),
            hostile(Endpoint::Mcp, HostileKind::CloseMidBody),
        ];
    })
    .await;
    // Through reqwest: the head, then the body's chunks until the connection ends.
    let mut r = b.http.get(b.tb.prm_url().unwrap()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let length = usize::try_from(r.content_length().unwrap()).unwrap();
    let mut got = Vec::new();
    let cut = loop {
        match tokio::time::timeout(PATIENCE, r.chunk())
            .await
            .expect("the server closes the connection")
        {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the body ended early, as an error");
    let body = &got[..];
    assert!(length > 100, "the real document's length: {length}");
    assert_eq!(body.len(), length / 2, "half the body, then the end");
    assert!(body.starts_with(b"{\""));

    // An event stream: the priming event, then half the answer's event.
    let mut r = b.mcp_post(None, None, initialize()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut got = Vec::new();
    let cut = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "the body ends in an error, not cleanly");
    let text = String::from_utf8(got).unwrap();
    let answer = text.strip_prefix("data: \nid: 0\nretry: 3000\n\n").unwrap();
    assert!(answer.starts_with("data: {\"jsonrpc\":\"2.0\""), "{answer}");
    assert!(!answer.contains('\n'), "cut inside the data line: {answer}");
    assert_eq!(hostile_count(&b, "close-mid-body"), 2);
}

#[tokio::test]
async fn redirect_loop_sends_the_client_back_where_it_was() {
    let b = bed(|k| {
        k.hostile = vec![
            hostile(Endpoint::Prm, HostileKind::RedirectLoop),
            hostile(Endpoint::Other, HostileKind::RedirectLoop),
        ]
    })
    .await;
    let url = format!("{}?a=1&b=2", b.tb.prm_url().unwrap());
    let r = b.get(&url).await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()[header::LOCATION],
        "/.well-known/oauth-protected-resource/mcp?a=1&b=2"
    );
    let r = b.get(&format!("{}/nowhere", b.tb.rs_origin())).await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers()[header::LOCATION], "/nowhere");

    // The stats path is never hostile, even to an `other` rule.
    let (status, stats) = b.get_json(&b.tb.stats_url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["hostile_answers"], json!({"redirect-loop": 2}));
}

#[tokio::test]
async fn redirect_sends_the_client_to_the_given_url() {
    let rule: HostileAnswer = "prm:redirect=http://169.254.169.254/latest/meta-data"
        .parse()
        .unwrap();
    let b = bed(|k| k.hostile = vec![rule]).await;
    let r = b.get(&b.tb.prm_url().unwrap()).await;
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(
        r.headers()[header::LOCATION],
        "http://169.254.169.254/latest/meta-data"
    );
    // Other endpoints answer as ever.
    let (status, _) = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, stats) = b.get_json(&b.tb.stats_url()).await;
    assert_eq!(stats["hostile_answers"], json!({"redirect": 1}));
}
