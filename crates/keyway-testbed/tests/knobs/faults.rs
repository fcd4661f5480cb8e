//! --drop-after, --fail-nth, --fail-percent, --hang-percent, --delay, --oversize,
//! --h2-goaway-after.

use std::time::{Duration, Instant};

use keyway_testbed::{Endpoint, EndpointFault};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::bed;

#[tokio::test]
async fn drop_after_closes_the_connection_and_forgets_sessions() {
    let b = bed(|k| k.drop_after = vec![EndpointFault::new(Endpoint::Mcp, 3)]).await;
    let at = b.tb.mint_access_token("mcp:tools");
    let s = b.mcp_session(&at).await; // requests 1 and 2
    let ok = b.call_tool(&at, &s, "echo", json!({"text": "a"})).await; // 3
    assert_eq!(ok.status(), StatusCode::OK);
    let _ = ok.text().await;
    // 4: no answer at all.
    let err = b
        .http
        .post(b.tb.mcp_url())
        .bearer_auth(&at)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", &s)
        .json(&json!({"jsonrpc":"2.0","id":9,"method":"tools/list"}))
        .send()
        .await
        .expect_err("the connection is dropped without an answer");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(b.tb.stats().dropped_connections, 1);
    // The session is gone, as after a restart; new ones work.
    let r = b.call_tool(&at, &s, "echo", json!({"text": "b"})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    b.mcp_session(&at).await;
}

#[tokio::test]
async fn fail_nth_answers_one_request_with_a_5xx() {
    let b = bed(|k| {
        k.fail_nth = vec![
            EndpointFault::new(Endpoint::AsMetadata, 2).with_status(502),
            EndpointFault::new(Endpoint::Prm, 1),
        ]
    })
    .await;
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        b.tb.as_origin()
    );
    assert_eq!(b.get(&url).await.status(), StatusCode::OK);
    assert_eq!(b.get(&url).await.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(b.get(&url).await.status(), StatusCode::OK);
    assert_eq!(
        b.get(&b.tb.prm_url().unwrap()).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(b.tb.stats().injected_failures, 2);
}

#[tokio::test]
async fn delay_holds_every_answer_of_one_endpoint() {
    let b = bed(|k| k.delay = vec![EndpointFault::new(Endpoint::Prm, 150)]).await;
    let t = Instant::now();
    assert_eq!(
        b.get(&b.tb.prm_url().unwrap()).await.status(),
        StatusCode::OK
    );
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn oversize_pads_json_and_event_streams() {
    let b = bed(|k| {
        k.oversize = vec![
            EndpointFault::new(Endpoint::Prm, 200_000),
            EndpointFault::new(Endpoint::Mcp, 100_000),
        ]
    })
    .await;
    let body = b.get(&b.tb.prm_url().unwrap()).await.bytes().await.unwrap();
    assert!(body.len() >= 200_000);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["resource"], b.tb.mcp_url(), "still the same document");

    let at = b.tb.mint_access_token("mcp:tools");
    let r = b
        .mcp_post(
            Some(&at),
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h","version":"0"}}}),
        )
        .await;
    let text = r.text().await.unwrap();
    assert!(text.len() >= 100_000);
    assert!(text.starts_with(": xxx"), "an SSE comment first");
    assert!(text.contains("\"serverInfo\""));
}

#[tokio::test]
async fn a_hung_endpoint_never_answers_until_released() {
    let b = bed(|k| k.open = true).await;
    b.tb.set_hung(true);
    let quick = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = quick
        .post(b.tb.mcp_url())
        .body("{}")
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    b.tb.set_hung(false);
    assert_ne!(
        quick
            .post(b.tb.mcp_url())
            .body("{}")
            .send()
            .await
            .unwrap()
            .status(),
        0
    );
}

#[tokio::test]
async fn drop_next_request_drops_exactly_one() {
    let b = bed(|k| k.open = true).await;
    b.tb.drop_next_request();
    assert!(b.http.post(b.tb.mcp_url()).body("{}").send().await.is_err());
    assert!(b.http.post(b.tb.mcp_url()).body("{}").send().await.is_ok());
    assert_eq!(b.tb.stats().dropped_connections, 1);
}

/// A CA and a certificate it issued for 127.0.0.1, as PEM files in `dir`: (CA, chain,
/// key).
fn test_pki(dir: &std::path::Path) -> (Vec<u8>, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "keyway-testbed test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
    std::fs::write(&chain, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    (ca_cert.pem().into_bytes(), chain, key)
}

#[tokio::test]
async fn h2_goaway_after_moves_the_client_to_a_new_connection() {
    const AFTER: u64 = 2;
    let pki = tempfile::tempdir().unwrap();
    let (ca, chain, key) = test_pki(pki.path());
    let b = bed(|k| {
        k.tls_cert = Some(chain);
        k.tls_key = Some(key);
        k.h2_goaway_after = Some(AFTER);
    })
    .await;
    // One client, so one connection until the server says go away.
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let prm = b.tb.prm_url().unwrap();
    assert!(prm.starts_with("https://127.0.0.1:"), "{prm}");
    for n in 1..=AFTER + 2 {
        let r = http.get(&prm).send().await.unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "request {n}");
        assert_eq!(r.status(), StatusCode::OK, "request {n}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["resource"], b.tb.mcp_url(), "request {n}");
    }
    let stats = b.tb.stats();
    assert!(stats.goaways_sent >= 1, "{stats:?}");
    assert!(stats.connections_accepted >= 2, "{stats:?}");
    assert_eq!(stats.http2_requests, AFTER + 2);
}

#[tokio::test]
async fn connections_are_counted_and_http1_is_never_told_to_go_away() {
    let b = bed(|k| k.h2_goaway_after = Some(0)).await;
    for _ in 0..3 {
        assert_eq!(
            b.get(&b.tb.prm_url().unwrap()).await.status(),
            StatusCode::OK
        );
    }
    let stats = b.tb.stats();
    assert_eq!(stats.goaways_sent, 0);
    // Kept alive: one connection for the three requests.
    assert_eq!(stats.connections_accepted, 1);
}

#[tokio::test]
async fn fail_and_hang_percent_fail_or_hold_that_share_of_requests() {
    // 100%: every request to the endpoint; other endpoints untouched.
    let b = bed(|k| k.fail_percent = vec![EndpointFault::new(Endpoint::Mcp, 100)]).await;
    let at = b.tb.mint_access_token("mcp:tools");
    let r = b
        .http
        .post(b.tb.mcp_url())
        .bearer_auth(&at)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(b.tb.stats().random_failures, 1);
    let prm = b.http.get(b.tb.prm_url().unwrap()).send().await.unwrap();
    assert_eq!(prm.status(), StatusCode::OK);

    let b = bed(|k| k.hang_percent = vec![EndpointFault::new(Endpoint::Mcp, 100)]).await;
    let at = b.tb.mint_access_token("mcp:tools");
    let held = b
        .http
        .post(b.tb.mcp_url())
        .bearer_auth(&at)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("never answered");
    assert!(held.is_timeout(), "{held:?}");
    assert_eq!(b.tb.stats().random_hangs, 1);

    // 0% does nothing, and more than 100 is refused.
    let b = bed(|k| k.fail_percent = vec![EndpointFault::new(Endpoint::Mcp, 0)]).await;
    let at = b.tb.mint_access_token("mcp:tools");
    b.mcp_session(&at).await;
    assert_eq!(b.tb.stats().random_failures, 0);
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        knobs: keyway_testbed::Knobs,
    }
    for bad in ["mcp:101", "mcp:5:503", "nowhere:5"] {
        let refused = <Cli as clap::Parser>::try_parse_from(["testbed", "--hang-percent", bad]);
        assert!(refused.is_err(), "{bad}");
    }
    let taken = <Cli as clap::Parser>::try_parse_from(["testbed", "--hang-percent", "mcp:1"]);
    assert_eq!(taken.ok().map(|c| c.knobs.hang_percent.len()), Some(1));
}
