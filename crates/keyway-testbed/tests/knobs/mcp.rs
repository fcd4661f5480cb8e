//! The protected MCP endpoint: bearer checks, tools, step-up, refusals.

use keyway_testbed::ScopeList;
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{bearer_params, bed, rpc_result};

#[tokio::test]
async fn the_tools_answer_with_a_valid_token() {
    let b = bed(|_| {}).await;
    let at = b.tb.mint_access_token("mcp:tools");
    let s = b.mcp_session(&at).await;
    let r = rpc_result(b.call_tool(&at, &s, "echo", json!({"text": "hi"})).await).await;
    assert_eq!(r["result"]["content"][0]["text"], "hi");
    let r = rpc_result(b.call_tool(&at, &s, "add", json!({"a": 2, "b": 3})).await).await;
    assert_eq!(r["result"]["content"][0]["text"], "5");
    let r = rpc_result(b.call_tool(&at, &s, "slow", json!({"ms": 5})).await).await;
    assert_eq!(r["result"]["content"][0]["text"], "waited 5 ms");
    let list = rpc_result(
        b.mcp_post(
            Some(&at),
            Some(&s),
            json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}),
        )
        .await,
    )
    .await;
    let mut names: Vec<_> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, keyway_testbed::TOOL_NAMES);
    assert!(b.tb.stats().authorized_mcp_requests >= 5);
}

#[tokio::test]
async fn bad_tokens_get_invalid_token() {
    let b = bed(|_| {}).await;
    for auth in ["Bearer nope", "Basic Zm9vOmJhcg=="] {
        let r = b
            .http
            .post(b.tb.mcp_url())
            .header("authorization", auth)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{auth}");
        let p = bearer_params(&r);
        assert_eq!(
            p.get("error").map(String::as_str),
            auth.starts_with("Bearer").then_some("invalid_token")
        );
    }
}

#[tokio::test]
async fn admin_only_needs_the_step_up_scope() {
    let b = bed(|_| {}).await;
    let at = b.tb.mint_access_token("mcp:tools");
    let s = b.mcp_session(&at).await;
    let r = b.call_tool(&at, &s, "admin_only", json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let p = bearer_params(&r);
    assert_eq!(p["error"], "insufficient_scope");
    assert_eq!(p["scope"], "mcp:admin");
    assert_eq!(p["resource_metadata"], b.tb.prm_url().unwrap());
    assert_eq!(b.tb.stats().insufficient_scope, 1);

    let admin = b.tb.mint_access_token("mcp:tools mcp:admin");
    let s = b.mcp_session(&admin).await;
    let r = rpc_result(b.call_tool(&admin, &s, "admin_only", json!({})).await).await;
    assert_eq!(r["result"]["content"][0]["text"], "admin access granted");
}

#[tokio::test]
async fn step_up_tools_and_scope_are_knobs() {
    let b = bed(|k| {
        k.step_up_tools = vec!["echo".into()];
        k.step_up_scope = "files:write".into();
        k.as_scopes = ScopeList::default();
    })
    .await;
    let at = b.tb.mint_access_token("mcp:tools");
    let s = b.mcp_session(&at).await;
    let r = b.call_tool(&at, &s, "echo", json!({"text": "x"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(bearer_params(&r)["scope"], "files:write");
    assert_eq!(
        b.call_tool(&at, &s, "add", json!({"a": 1, "b": 1}))
            .await
            .status(),
        StatusCode::OK
    );
    let w = b.tb.mint_access_token("files:write");
    let s = b.mcp_session(&w).await;
    assert_eq!(
        b.call_tool(&w, &s, "echo", json!({"text": "x"}))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn step_up_never_satisfied_refuses_even_with_the_scope() {
    let b = bed(|k| k.step_up_never_satisfied = true).await;
    let at = b.tb.mint_access_token("mcp:tools mcp:admin");
    let s = b.mcp_session(&at).await;
    for _ in 0..3 {
        assert_eq!(
            b.call_tool(&at, &s, "admin_only", json!({})).await.status(),
            StatusCode::FORBIDDEN
        );
    }
}

#[tokio::test]
async fn forbidden_tools_get_a_plain_403() {
    let b = bed(|k| k.forbidden_tools = vec!["echo".into()]).await;
    let at = b.tb.mint_access_token("mcp:tools mcp:admin");
    let s = b.mcp_session(&at).await;
    let r = b.call_tool(&at, &s, "echo", json!({"text": "x"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get("www-authenticate").is_none());
    assert_eq!(b.tb.stats().insufficient_scope, 0);
}

#[tokio::test]
async fn always_401_refuses_every_token() {
    let b = bed(|k| k.always_401 = true).await;
    let at = b.tb.mint_access_token("mcp:tools");
    for _ in 0..3 {
        let r = b.mcp_post(Some(&at), None, json!({})).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(bearer_params(&r)["error"], "invalid_token");
    }
    assert_eq!(b.tb.stats().unauthorized, 3);
}

#[tokio::test]
async fn open_serves_without_a_token() {
    let b = bed(|k| k.open = true).await;
    let r = b
        .mcp_post(
            None,
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"h","version":"0"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(b.tb.stats().unauthorized, 0);
}
