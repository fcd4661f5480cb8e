//! `--fixture conformance`: the conformance suite's tools, prompts and resources, in
//! both generations.

use keyway_testbed::{Fixture, McpRevision};
use reqwest::header;
use serde_json::{Value, json};

use crate::harness::{Bed, bed, rpc_result};

/// One MCP 2026-07-28 request (no session; everything in `_meta`), its result or error.
async fn modern(b: &Bed, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}, "sampling": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "harness", "version": "0"}
    });
    // SEP-2243: the method and the name (or uri) it acts on, also as headers.
    let name = params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut req = b
        .http
        .post(b.tb.mcp_url())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = name {
        req = req.header("mcp-name", name);
    }
    let r = req
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap();
    rpc_result(r).await
}

async fn fixture(revision: McpRevision) -> Bed {
    bed(|k| {
        k.open = true;
        k.fixture = Fixture::Conformance;
        k.mcp_revision = revision;
    })
    .await
}

#[tokio::test]
async fn the_fixture_serves_the_suites_tools_resources_and_prompts() {
    let b = fixture(McpRevision::Modern).await;
    let list = modern(&b, "tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tool in [
        "test_simple_text",
        "test_image_content",
        "json_schema_2020_12_tool",
    ] {
        assert!(names.contains(&tool), "{tool} missing from {names:?}");
    }
    assert!(!names.contains(&"echo"), "the default tools are not served");
    assert!(list["result"]["ttlMs"].is_number(), "caching hints: {list}");

    let r = modern(
        &b,
        "tools/call",
        json!({"name": "test_simple_text", "arguments": {}}),
    )
    .await;
    assert_eq!(
        r["result"]["content"][0]["text"],
        "This is a simple text response for testing."
    );
    let r = modern(
        &b,
        "tools/call",
        json!({"name": "test_error_handling", "arguments": {}}),
    )
    .await;
    assert_eq!(r["result"]["isError"], true);

    let r = modern(
        &b,
        "resources/read",
        json!({"uri": "test://template/123/data"}),
    )
    .await;
    let text = r["result"]["contents"][0]["text"].as_str().unwrap();
    assert!(text.contains("Data for ID: 123"), "{r}");
    let r = modern(&b, "resources/read", json!({"uri": "test://nowhere"})).await;
    assert_eq!(r["error"]["code"], -32602, "SEP-2164: {r}");
    assert_eq!(r["error"]["data"]["uri"], "test://nowhere");

    let r = modern(
        &b,
        "prompts/get",
        json!({"name": "test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}}),
    )
    .await;
    assert_eq!(
        r["result"]["messages"][0]["content"]["text"],
        "Prompt with arguments: arg1='a', arg2='b'"
    );
}

#[tokio::test]
async fn multi_round_tools_carry_their_state_and_refuse_a_forged_one() {
    let b = fixture(McpRevision::Both).await;
    let call = |state: Option<&Value>, responses: Value| {
        let mut params = json!({"name": "test_input_required_result_multi_round", "arguments": {}});
        if let Some(s) = state {
            params["requestState"] = s.clone();
            params["inputResponses"] = responses;
        }
        modern(&b, "tools/call", params)
    };
    let r1 = call(None, json!({})).await;
    assert_eq!(r1["result"]["resultType"], "input_required", "{r1}");
    let s1 = &r1["result"]["requestState"];
    let answer = |c: Value| json!({"action": "accept", "content": c});
    let r2 = call(Some(s1), json!({"step1": answer(json!({"name": "Alice"}))})).await;
    let s2 = &r2["result"]["requestState"];
    assert!(r2["result"]["inputRequests"]["step2"].is_object(), "{r2}");
    assert_ne!(s1, s2);
    let r3 = call(Some(s2), json!({"step2": answer(json!({"color": "blue"}))})).await;
    assert_eq!(
        r3["result"]["content"][0]["text"],
        "Multi-round complete for Alice who likes blue"
    );
    // A state used once, or one the server never issued, is refused.
    let again = call(Some(s2), json!({"step2": answer(json!({"color": "red"}))})).await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
    let forged = call(Some(&json!("forged")), json!({})).await;
    assert_eq!(forged["error"]["code"], -32602, "{forged}");
}

#[tokio::test]
async fn a_handshake_session_completes_and_reads_the_same_fixture() {
    let b = fixture(McpRevision::Legacy).await;
    let s = b.mcp_session_with(None, "keyway-testbed-conformance").await;
    let r = rpc_result(
        b.mcp_post(
            None,
            Some(&s),
            json!({"jsonrpc":"2.0","id":2,"method":"completion/complete","params":{
                "ref":{"type":"ref/prompt","name":"test_prompt_with_arguments"},
                "argument":{"name":"arg1","value":"test"}}}),
        )
        .await,
    )
    .await;
    let values = r["result"]["completion"]["values"].as_array().unwrap();
    assert!(
        !values.is_empty()
            && values
                .iter()
                .all(|v| v.as_str().unwrap().starts_with("test"))
    );
    let r = rpc_result(
        b.mcp_post(
            None,
            Some(&s),
            json!({"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"test_audio_content"}}),
        )
        .await,
    )
    .await;
    assert_eq!(r["result"]["content"][0]["mimeType"], "audio/wav");
    let r = rpc_result(
        b.mcp_post(
            None,
            Some(&s),
            json!({"jsonrpc":"2.0","id":4,"method":"resources/read","params":{"uri":"test://nowhere"}}),
        )
        .await,
    )
    .await;
    assert_eq!(
        r["error"]["code"], -32002,
        "handshake revisions keep -32002: {r}"
    );
}
