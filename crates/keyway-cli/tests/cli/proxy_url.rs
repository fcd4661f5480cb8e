//! `keyway proxy URL`: the transport found as add finds it, the tokens kept for the
//! URL, and authorization without a browser here.

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    everyday::row,
    harness::{Keyway, json, stderr, testbed},
    proxy::{Client, text},
};

#[tokio::test(flavor = "multi_thread")]
async fn a_url_falls_back_to_legacy_sse_and_keeps_its_tokens() {
    let sse_only = testbed(|k| {
        k.open = true;
        k.legacy_sse_only = true;
    })
    .await;
    let k = Keyway::new();
    let url = sse_only.sse_url();
    let mut c = Client::spawn(&k, &["proxy", &url]);
    c.initialize().await;
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "legacy"}}),
        )
        .await;
    assert_eq!(text(&r), "legacy");
    c.finish().await;

    let oauth = testbed(|_| {}).await;
    for _ in 0..2 {
        let mut c = Client::spawn(&k, &["proxy", oauth.mcp_url(), "--browser", "follow"]);
        c.initialize().await;
        c.finish().await;
    }
    assert_eq!(
        oauth.stats().authorizations,
        1,
        "the second start uses the tokens the first obtained"
    );
    let out = k.run_async(&["list", "--json"]).await;
    let servers = json(&out);
    assert_eq!(servers.as_array().unwrap().len(), 2, "{servers}");
    assert!(
        servers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["url"] == url.as_str() && s["transport"] == "sse"),
        "{servers}"
    );

    // --save names the entry.
    let other = testbed(|k| k.open = true).await;
    let mut c = Client::spawn(&k, &["proxy", other.mcp_url(), "--save", "work"]);
    c.initialize().await;
    c.finish().await;
    assert_eq!(row(&k, "work").await.unwrap()["url"], other.mcp_url());
    // A name saved for another URL is not taken over.
    let out = k
        .run_async(&["proxy", oauth.mcp_url(), "--save", "work"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("work is saved for"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_browser_the_proxy_waits_for_one_and_prints_one_url() {
    let tb = testbed(|k| k.no_device = true).await;
    let k = Keyway::new();
    let mut cmd = k.cmd(&["proxy", tb.mcp_url(), "--auth-timeout", "60"]);
    for var in ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"] {
        cmd.env_remove(var);
    }
    let mut c = Client::spawn_cmd(cmd);
    let mut errors = BufReader::new(c.take_stderr()).lines();
    // Two requests while it is not authorized: one flow, one URL.
    let init = tokio::spawn(async move {
        c.initialize().await;
        let r = c
            .request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "in"}}),
            )
            .await;
        (c, r)
    });
    let mut printed = Vec::new();
    let url = loop {
        let line = errors.next_line().await.unwrap().expect("stderr open");
        printed.push(line.clone());
        if let Some(u) = line
            .trim()
            .strip_prefix("http://")
            .filter(|u| u.contains("/authorize"))
        {
            break format!("http://{u}");
        }
    };
    // It says how to reach it from another machine, and keeps waiting.
    loop {
        let line = errors.next_line().await.unwrap().expect("stderr open");
        printed.push(line.clone());
        if line.contains("ssh -L") {
            break;
        }
    }
    // The person opens it in a browser on this machine: the testbed approves
    // without a person, and its redirect goes to keyway's listener.
    let page = reqwest::get(&url).await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    let (c, r) = init.await.unwrap();
    assert_eq!(text(&r), "in");
    c.finish().await;
    while let Ok(Some(line)) = errors.next_line().await {
        printed.push(line);
    }
    let all = printed.join("\n");
    assert_eq!(all.matches("/authorize?").count(), 1, "{all}");
    assert_eq!(tb.stats().authorizations, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_tools_are_neither_listed_nor_called_through_proxy_and_serve() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "bed"])
            .await
            .status
            .success()
    );
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{r}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };

    let mut c = Client::spawn(
        &k,
        &[
            "proxy",
            "bed",
            "--ignore-tool",
            "add",
            "--ignore-tool",
            "*admin*",
        ],
    );
    c.initialize().await;
    let listed = names(&c.request("tools/list", json!({})).await);
    assert_eq!(
        listed,
        [
            "ask_name",
            "echo",
            "list_roots",
            "sample",
            "slow",
            "touch",
            "two_rounds"
        ],
        "{listed:?}"
    );
    let refused = c
        .request(
            "tools/call",
            json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "kept"}}),
        )
        .await;
    assert_eq!(text(&r), "kept");
    let r = refused;
    // A batch would carry calls past the filter: refused while tools are hidden.
    c.send(&json!([{"jsonrpc": "2.0", "id": 90, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}]))
        .await;
    let batch = c.next().await;
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    // (the testbed would have answered 3: the refusal is keyway's)
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown tool: add"),
        "{r}"
    );
    c.finish().await;

    let mut c = Client::spawn(
        &k,
        &[
            "serve",
            "--ignore-tool",
            "bed__echo",
            "--ignore-tool",
            "slow",
        ],
    );
    c.initialize().await;
    let listed = names(&c.request("tools/list", json!({})).await);
    assert_eq!(
        listed,
        [
            "bed__add",
            "bed__admin_only",
            "bed__ask_name",
            "bed__list_roots",
            "bed__sample",
            "bed__touch",
            "bed__two_rounds"
        ],
        "{listed:?}"
    );
    let r = c
        .request(
            "tools/call",
            json!({"name": "bed__echo", "arguments": {"text": "x"}}),
        )
        .await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn flags_for_a_url_are_refused_with_a_name_and_tokens_come_from_variables() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let token = tb.mint_access_token("mcp:tools");
    // `${VAR}` in --token, as a client config would write it.
    let out = k
        .cmd(&[
            "add",
            "tok",
            tb.mcp_url(),
            "--token",
            "${KEYWAY_TEST_TOKEN}",
        ])
        .env("KEYWAY_TEST_TOKEN", &token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "tok").await.unwrap()["state"], "token");
    let out = k
        .run_async(&["add", "x", tb.mcp_url(), "--token", "${KEYWAY_UNSET_VAR}"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("KEYWAY_UNSET_VAR is not set"),
        "{}",
        stderr(&out)
    );

    for extra in [
        ["--transport", "sse"],
        ["--save", "other"],
        ["-H", "X-A: b"],
    ] {
        let mut args = vec!["proxy", "tok"];
        args.extend(extra);
        let out = k.run_async(&args).await;
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        assert!(
            stderr(&out).contains("for a URL's server"),
            "{}",
            stderr(&out)
        );
    }
}
