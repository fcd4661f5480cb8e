//! A server that only speaks the legacy HTTP+SSE transport, through every command.

use serde_json::json;

use crate::{
    harness::{Keyway, json, stderr, stdout, testbed},
    proxy::{Client, text},
};

#[tokio::test(flavor = "multi_thread")]
async fn an_old_sse_server_works_everywhere() {
    let tb = testbed(|k| k.legacy_sse_only = true).await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    // `add` defaults to auto: Streamable HTTP is refused, the legacy transport answers.
    let out = k
        .run_async(&[
            "--json",
            "add",
            &tb.sse_url(),
            "--name",
            "old",
            "--token",
            &token,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["tools"], 9);
    let show = json(&k.run_async(&["--json", "show", "old"]).await);
    assert_eq!(show["transport"], "sse");

    let out = k
        .run_async(&["call", "old", "echo", "--args", r#"{"text":"via sse"}"#])
        .await;
    assert_eq!(stdout(&out), "via sse\n", "{}", stderr(&out));
    let v = json(&k.run_async(&["--json", "tools"]).await);
    assert_eq!(v["tools"].as_array().unwrap().len(), 9);

    let mut c = Client::spawn(&k, &["proxy", "old"]);
    c.initialize().await;
    let r = c
        .request(
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 2}}),
        )
        .await;
    assert_eq!(text(&r), "4");
    c.finish().await;

    let mut g = Client::spawn(&k, &["serve"]);
    g.initialize().await;
    let r = g
        .request(
            "tools/call",
            json!({"name": "old__echo", "arguments": {"text": "gw"}}),
        )
        .await;
    assert_eq!(text(&r), "gw");
    g.finish().await;

    // An explicit --transport http is refused by such a server.
    let out = k
        .run_async(&[
            "add",
            &tb.sse_url(),
            "--name",
            "old2",
            "--token",
            &token,
            "--transport",
            "http",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}
