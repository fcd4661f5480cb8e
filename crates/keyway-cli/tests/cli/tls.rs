//! keyway against a server over TLS, as remote servers are: HTTP/2 by ALPN, several
//! calls in flight on one connection. The testbed serves a certificate from a test
//! CA; keyway trusts that CA only because `SSL_CERT_FILE` names it, which the
//! platform verifier honours on Linux (nothing in keyway is told to trust it).

use std::{ffi::OsStr, path::Path};

use serde_json::json;

use crate::{
    harness::{Keyway, http_proxy, testbed},
    proxy::{Client, text},
};

/// A CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`: (CA, chain,
/// key).
fn test_pki(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keyway test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca_file, chain, key) = (
        dir.join("ca.pem"),
        dir.join("chain.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::fs::write(&chain, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca_file, chain, key)
}

/// The testbed over TLS with a certificate from a new test CA: the directory holding
/// the PEM files (kept while the test runs), the CA's file, the testbed.
async fn tls_testbed() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    keyway_testbed::Testbed,
) {
    let pki = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_pki(pki.path());
    let tb = testbed(|k| {
        k.tls_cert = Some(chain);
        k.tls_key = Some(key);
    })
    .await;
    (pki, ca, tb)
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_share_one_http2_connection() {
    let (_pki, ca, tb) = tls_testbed().await;
    assert!(tb.mcp_url().starts_with("https://127.0.0.1:"));
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    let mut c = Client::spawn_with(
        &k,
        &["proxy", tb.mcp_url(), "--token", &token],
        &[
            ("SSL_CERT_FILE", ca.as_os_str()),
            ("SSL_CERT_DIR", OsStr::new("")),
        ],
    );
    let init = c.initialize().await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "keyway-testbed",
        "{init}"
    );

    // Eight slow calls sent at once, then their answers read: they run side by side.
    const CALLS: i64 = 8;
    for id in 100..100 + CALLS {
        c.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "slow", "arguments": {"ms": 400}}}))
            .await;
    }
    let mut answered = std::collections::BTreeSet::new();
    while answered.len() < CALLS as usize {
        let m = c.next().await;
        if let Some(id) = m["id"].as_i64().filter(|_| m.get("method").is_none()) {
            assert_eq!(text(&m), "waited 400 ms", "{m}");
            answered.insert(id);
        }
    }
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "h2"}}),
        )
        .await;
    assert_eq!(text(&r), "h2");
    c.finish().await;

    let stats = tb.stats();
    assert_eq!(
        stats.most_slow_calls_at_once, CALLS as u64,
        "the calls were in flight together"
    );
    assert_eq!(
        stats.mcp_connections, 1,
        "every request on one connection: {stats:?}"
    );
    let mcp_requests: u64 = stats
        .paths
        .iter()
        .filter(|(p, _)| p.ends_with(" /mcp"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(stats.http2_requests, mcp_requests, "all over HTTP/2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_from_an_unknown_ca_is_named_in_the_error() {
    let (_pki, _ca, tb) = tls_testbed().await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    // No SSL_CERT_FILE: the test CA is trusted by nobody.
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--token", &token]);
    let (r, err) = initialize_error(&mut c).await;
    assert!(
        err.contains("could not reach https://127.0.0.1:")
            && err.contains("certificate")
            && err.contains("UnknownIssuer"),
        "{r}"
    );
    assert!(!err.contains(&token), "{err}");
    c.finish().await;
    assert_eq!(tb.stats().http2_requests, 0, "no request got through");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connection_reset_mid_request_is_retried_only_when_safe() {
    // The testbed drops the connection under the 6th and 9th MCP requests (and forgets
    // its sessions, as a restarted server would): over HTTP/2 that resets every stream
    // on the connection.
    let (_pki, ca, tb) = tls_testbed().await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    let mut c = Client::spawn_with(
        &k,
        &["proxy", tb.mcp_url(), "--token", &token],
        &[
            ("SSL_CERT_FILE", ca.as_os_str()),
            ("SSL_CERT_DIR", OsStr::new("")),
        ],
    );
    c.initialize().await;
    // A list: repeating it changes nothing, so it is sent again on a new connection.
    tb.drop_next_request();
    let r = c.request("tools/list", json!({})).await;
    assert_eq!(
        r["result"]["tools"].as_array().map(Vec::len),
        Some(9),
        "{r}"
    );
    // A call: the server may have run it, so it is reported, not run twice.
    tb.drop_next_request();
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "once"}}),
        )
        .await;
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("broke") && message.contains("not sent again"),
        "{r}"
    );
    // And the session goes on.
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "after"}}),
        )
        .await;
    assert_eq!(text(&r), "after");
    c.finish().await;
    assert_eq!(tb.stats().dropped_connections, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_server_behind_a_proxy_is_reached_through_its_tunnel_over_http2() {
    let (_pki, ca, tb) = tls_testbed().await;
    let (proxy, heads) = http_proxy(None).await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    let mut c = Client::spawn_with(
        &k,
        &["proxy", tb.mcp_url(), "--token", &token],
        &[
            ("SSL_CERT_FILE", ca.as_os_str()),
            ("SSL_CERT_DIR", OsStr::new("")),
            ("HTTPS_PROXY", OsStr::new(&proxy)),
        ],
    );
    c.initialize().await;
    for n in 0..3 {
        let r = c
            .request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": format!("tunnelled {n}")}}),
            )
            .await;
        assert_eq!(text(&r), format!("tunnelled {n}"), "{r}");
    }
    c.finish().await;

    let heads = heads.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        1,
        "one tunnel for the whole session: {heads:?}"
    );
    let port = tb
        .mcp_url()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert!(
        heads[0].starts_with(&format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n")),
        "{heads:?}"
    );
    // The proxy's credentials from the URL, as Basic; the server's token never.
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic chjvehl1c2vyonbyb3h5lxbhc3m="),
        "{heads:?}"
    );
    assert!(!heads[0].contains(&token), "{heads:?}");
    let stats = tb.stats();
    assert_eq!(stats.mcp_connections, 1, "{stats:?}");
    let mcp_requests: u64 = stats
        .paths
        .iter()
        .filter(|(p, _)| p.ends_with(" /mcp"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        stats.http2_requests, mcp_requests,
        "HTTP/2 inside the tunnel"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_that_refuses_the_tunnel_is_named_with_its_reason() {
    let (proxy, heads) = http_proxy(Some(403)).await;
    let k = Keyway::new();
    let mut c = Client::spawn_with(
        &k,
        &[
            "proxy",
            "https://mcp.example.com/mcp",
            "--token",
            "tok-never-sent",
        ],
        &[("HTTPS_PROXY", OsStr::new(&proxy))],
    );
    let (r, err) = initialize_error(&mut c).await;
    let shown = proxy.replace("proxyuser:proxy-pass@", "");
    assert!(
        err.contains("could not reach https://mcp.example.com")
            && err.contains(&format!("the proxy {shown} refused the tunnel"))
            && err.contains("does not let keyway reach mcp.example.com:443 (403)"),
        "{r}"
    );
    assert!(
        !err.contains("proxy-pass") && !err.contains("tok-never-sent"),
        "{err}"
    );
    assert!(heads.lock().unwrap()[0].starts_with("CONNECT mcp.example.com:443 HTTP/1.1\r\n"));
    c.finish().await;
}

/// An `initialize` that is expected to fail: the answer, and its error's message.
async fn initialize_error(c: &mut Client) -> (serde_json::Value, String) {
    let r = c
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}),
        )
        .await;
    let err = r["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (r, err)
}

/// An HTTP/2 server that sends GOAWAY while calls are in flight (a server going
/// down for a deploy, a load balancer rotating connections): the calls it already
/// took are answered, and the next ones go on a new connection, none of them failed
/// or sent twice (the same requests reach the server as without the GOAWAYs).
#[tokio::test(flavor = "multi_thread")]
async fn a_goaway_mid_call_loses_no_call() {
    let (calm, _) = calls_over_h2(None).await;
    let (posts, stats) = calls_over_h2(Some(4)).await;
    assert!(stats.goaways_sent >= 2, "{stats:?}");
    assert!(
        stats.mcp_connections > stats.goaways_sent,
        "a new connection after each GOAWAY: {stats:?}"
    );
    assert_eq!(posts, calm, "requests sent again: {stats:?}");
}

/// Rounds of six slow calls at once through a bridge to a TLS testbed that sends
/// GOAWAY on each connection's request `goaway_after + 1`: the POSTs the testbed saw
/// after the handshake, and its counters. Each call is answered exactly once.
async fn calls_over_h2(goaway_after: Option<u64>) -> (u64, keyway_testbed::Stats) {
    let pki = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_pki(pki.path());
    let tb = testbed(|k| {
        k.tls_cert = Some(chain);
        k.tls_key = Some(key);
        k.h2_goaway_after = goaway_after;
    })
    .await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    let mut c = Client::spawn_with(
        &k,
        &["proxy", tb.mcp_url(), "--token", &token],
        &[
            ("SSL_CERT_FILE", ca.as_os_str()),
            ("SSL_CERT_DIR", OsStr::new("")),
        ],
    );
    c.initialize().await;
    let posts = |s: &keyway_testbed::Stats| -> u64 {
        s.paths
            .iter()
            .filter(|(p, _)| p.starts_with("POST ") && p.ends_with(" /mcp"))
            .map(|(_, n)| n)
            .sum()
    };
    let before = posts(&tb.stats());
    const ROUNDS: i64 = 4;
    const CALLS: i64 = 6;
    for round in 0..ROUNDS {
        let first = 100 + round * CALLS;
        for id in first..first + CALLS {
            c.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "slow", "arguments": {"ms": 50}}}))
                .await;
        }
        let mut answered = std::collections::BTreeSet::new();
        while answered.len() < CALLS as usize {
            let m = c.next().await;
            if let Some(id) = m["id"].as_i64().filter(|_| m.get("method").is_none()) {
                assert_eq!(text(&m), "waited 50 ms", "call {id}: {m}");
                assert!(answered.insert(id), "call {id} answered twice");
            }
        }
    }
    c.finish().await;
    let stats = tb.stats();
    (posts(&stats) - before, stats)
}
