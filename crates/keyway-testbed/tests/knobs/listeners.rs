//! --port, --as-port, --shared-origin, --mcp-path, stats endpoint.

use keyway_testbed::{Knobs, Testbed, TestbedError};
use reqwest::StatusCode;

use crate::harness::bed;

#[tokio::test]
async fn a_busy_port_is_a_clear_bind_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let mut k = Knobs::default();
    k.port = port;
    let err = Testbed::start(k).await.unwrap_err();
    assert!(
        matches!(err, TestbedError::Bind { port: p, .. } if p == port),
        "{err}"
    );

    let mut k = Knobs::default();
    k.as_port = port;
    let err = Testbed::start(k).await.unwrap_err();
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn separate_origins_by_default_and_one_with_shared_origin() {
    let b = bed(|_| {}).await;
    assert_ne!(b.tb.rs_origin(), b.tb.as_origin());
    // The AS is not on the MCP origin.
    let r = b.get(&format!("{}/token", b.tb.rs_origin())).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    let b = bed(|k| k.shared_origin = true).await;
    assert_eq!(b.tb.rs_origin(), b.tb.as_origin());
    assert_eq!(b.tb.issuer(), b.tb.rs_origin());
    let (status, meta) = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.rs_origin()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        meta["token_endpoint"],
        format!("{}/token", b.tb.rs_origin())
    );
}

#[tokio::test]
async fn mcp_path_moves_the_endpoint() {
    let b = bed(|k| k.mcp_path = "/api/v1/mcp/".into()).await;
    assert!(b.tb.mcp_url().ends_with("/api/v1/mcp"));
    assert_eq!(
        b.get(b.tb.mcp_url()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, prm) = b.get_json(&b.tb.prm_url().unwrap()).await;
    assert_eq!(prm["resource"], b.tb.mcp_url());
    assert!(
        b.tb.prm_url()
            .unwrap()
            .ends_with("/.well-known/oauth-protected-resource/api/v1/mcp")
    );
}

#[tokio::test]
async fn pattern_paths_are_refused() {
    let mut k = Knobs::default();
    k.mcp_path = "/{x}".into();
    assert!(matches!(
        Testbed::start(k).await,
        Err(TestbedError::InvalidKnob(_))
    ));
    let mut k = Knobs::default();
    k.mcp_path = "/".into();
    assert!(matches!(
        Testbed::start(k).await,
        Err(TestbedError::InvalidKnob(_))
    ));
}

#[tokio::test]
async fn stats_are_served_as_json() {
    let b = bed(|_| {}).await;
    b.get(b.tb.mcp_url()).await;
    b.get(&format!("{}/nowhere", b.tb.rs_origin())).await;
    let (status, stats) = b.get_json(&b.tb.stats_url()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["endpoints"]["mcp"], 1);
    assert_eq!(stats["endpoints"]["other"], 1);
    assert_eq!(stats["paths"]["GET /nowhere"], 1);
    assert_eq!(stats["unauthorized"], 1);
    // Reading the stats is not counted.
    assert_eq!(b.tb.stats().path("GET /_testbed/stats"), 0);
}

#[tokio::test]
async fn legacy_sse_names_its_endpoint_and_answers_on_the_stream() {
    use futures::StreamExt;
    let b = bed(|k| k.legacy_sse = true).await;
    let at = b.tb.mint_access_token("mcp:tools");
    // Without a token: the same challenge as the Streamable HTTP endpoint.
    assert_eq!(
        b.get(&b.tb.sse_url()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let resp = b
        .http
        .get(b.tb.sse_url())
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    let mut posted = false;
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if !posted
            && let Some(line) = seen
                .lines()
                .find(|l| l.starts_with("data: /messages?sessionId="))
        {
            let endpoint = format!("{}{}", b.tb.rs_origin(), line.trim_start_matches("data: "));
            let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"h","version":"0"}}});
            let r = b
                .http
                .post(&endpoint)
                .bearer_auth(&at)
                .json(&init)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            posted = true;
        }
        if seen.contains("\"serverInfo\"") {
            break;
        }
    }
    assert!(
        seen.contains("event: endpoint") && seen.contains("keyway-testbed"),
        "{seen}"
    );
    // The Streamable HTTP endpoint is still there (only --legacy-sse-only removes it).
    assert_eq!(
        b.get(b.tb.mcp_url()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let only = bed(|k| k.legacy_sse_only = true).await;
    assert_eq!(
        only.get(only.tb.mcp_url()).await.status(),
        StatusCode::NOT_FOUND
    );
}
