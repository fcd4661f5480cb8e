//! `keyway proxy`: a stdio MCP client (this test) through keyway to a testbed.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

use crate::harness::{Keyway, stderr, testbed};

/// A minimal MCP client on a proxy's stdio.
pub struct Client {
    child: Child,
    pub stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: i64,
    /// Notifications and requests from the server, in arrival order.
    pub seen: Vec<Value>,
}

impl Client {
    pub fn spawn(k: &Keyway, args: &[&str]) -> Self {
        Self::spawn_with(k, args, &[])
    }

    /// [`Client::spawn`] with extra environment variables.
    pub fn spawn_with(k: &Keyway, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Self {
        let mut cmd = k.cmd(args);
        for (name, value) in env {
            cmd.env(name, value);
        }
        Self::spawn_cmd(cmd)
    }

    /// A client on the stdio of `cmd` (a `keyway proxy` command).
    pub fn spawn_cmd(cmd: std::process::Command) -> Self {
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Self {
            child,
            stdin,
            lines,
            next_id: 1,
            seen: Vec::new(),
        }
    }

    pub async fn send(&mut self, v: &Value) {
        let mut line = serde_json::to_vec(v).unwrap();
        line.push(b'\n');
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(&line).await.unwrap();
        stdin.flush().await.unwrap();
    }

    pub async fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        loop {
            let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
                .await
                .expect("an answer within 60 s")
                .unwrap()
                .expect("the proxy's stdout stays open");
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"));
            if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                return v;
            }
            self.seen.push(v);
        }
    }

    /// The next message on stdout, whatever it is.
    pub async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .expect("a message within 60 s")
            .unwrap()
            .expect("the proxy's stdout stays open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON on stdout ({e}): {line}"))
    }

    /// The proxy's stderr, to read as it runs.
    pub fn take_stderr(&mut self) -> tokio::process::ChildStderr {
        self.child.stderr.take().unwrap()
    }

    pub async fn notify(&mut self, method: &str) {
        self.send(&json!({"jsonrpc": "2.0", "method": method}))
            .await;
    }

    pub async fn initialize(&mut self) -> Value {
        let r = self
            .request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test-client", "version": "1"}}),
            )
            .await;
        self.notify("notifications/initialized").await;
        r
    }

    /// Close stdin and wait for a clean exit.
    pub async fn finish(mut self) -> std::process::Output {
        drop(self.stdin.take());
        let out = self.child.wait_with_output().await.unwrap();
        assert!(out.status.success(), "the proxy failed: {}", stderr(&out));
        out
    }
}

pub fn text(r: &Value) -> &str {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {r}"))
}

/// A keyway home with `tb` saved as "tb", authorized.
async fn saved_tb(tb: &keyway_testbed::Testbed) -> Keyway {
    let k = Keyway::new();
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "tb", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    k
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_through_the_proxy() {
    // The handshake generation (sessions, DELETE); `generations.rs` has 2026-07-28.
    let tb = testbed(|k| k.mcp_revision = keyway_testbed::McpRevision::Legacy).await;
    let k = saved_tb(&tb).await;
    let before = tb.stats();
    let deletes_before = before.path("DELETE /mcp");
    let mut c = Client::spawn(&k, &["proxy", "tb"]);
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "keyway-testbed");
    let tools = c.request("tools/list", json!({})).await;
    assert_eq!(tools["result"]["tools"].as_array().unwrap().len(), 9);
    // With a stored, valid token the proxy adds nothing of its own to start-up: the
    // client's three messages, no discovery (the add found the server speaks the
    // handshake, and the store remembers), no token request; the server-message
    // stream comes once start-up settles (at most one GET by now, on a slow machine).
    let after = tb.stats();
    for (path, n) in &after.paths {
        let new = n - before.paths.get(path).copied().unwrap_or(0);
        match path.as_str() {
            "POST /mcp" => assert_eq!(new, 3, "initialize, initialized, tools/list"),
            "GET /mcp" => assert!(new <= 1),
            _ => assert_eq!(new, 0, "{path} during start-up"),
        }
    }
    // A field keyway does not know about travels untouched.
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}, "x-vendor": {"keep": true}}),
        )
        .await;
    assert_eq!(text(&r), "hi");
    let bad = c
        .request("tools/call", json!({"name": "nope", "arguments": {}}))
        .await;
    assert!(
        bad.get("error").is_some() || bad["result"]["isError"] == true,
        "{bad}"
    );
    let out = c.finish().await;
    assert!(
        out.stdout.is_empty(),
        "nothing but frames, all read already"
    );
    assert_eq!(
        tb.stats().path("DELETE /mcp"),
        deletes_before + 1,
        "the session is closed on exit"
    );
    assert_eq!(
        tb.stats().authorizations,
        1,
        "the add's authorization was reused"
    );
}

/// A request the server takes long over does not hold up the ones after it: the
/// bridge runs the first on its own task while it is alone, and moves it aside when the
/// next one comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_does_not_hold_up_the_next() {
    let tb = testbed(|_| {}).await;
    let k = saved_tb(&tb).await;
    let mut c = Client::spawn(&k, &["proxy", "tb"]);
    c.initialize().await;
    c.send(&json!({"jsonrpc": "2.0", "id": "slow", "method": "tools/call", "params": {"name": "slow", "arguments": {"ms": 600_000}}}))
        .await;
    let echo = tokio::time::timeout(
        Duration::from_secs(20),
        c.request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "next"}}),
        ),
    )
    .await
    .expect("the echo is answered while the slow call runs");
    assert_eq!(text(&echo), "next");
    assert!(
        c.seen.iter().all(|m| m.get("id") != Some(&json!("slow"))),
        "the slow call is still running"
    );
    // Ended by cancelling it, so the bridge has nothing left to wait for at exit. (The
    // echo may have overtaken it: a cancellation the server gets before the call
    // itself would cancel nothing.)
    tokio::time::timeout(Duration::from_secs(20), tb.slow_calls_start(1))
        .await
        .expect("the slow call reaches the server");
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow"}}))
        .await;
    tokio::time::timeout(Duration::from_secs(20), tb.cancelled_calls_reach(1))
        .await
        .expect("the cancellation reaches the server");
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_authorizes_when_the_server_asks() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "tb", "--no-authorize"])
            .await
            .status
            .success()
    );
    let mut c = Client::spawn(&k, &["proxy", "tb", "--browser", "follow"]);
    assert_eq!(
        c.initialize().await["result"]["serverInfo"]["name"],
        "keyway-testbed"
    );
    let r = c
        .request("tools/call", json!({"name": "admin_only", "arguments": {}}))
        .await;
    assert_eq!(
        text(&r),
        "admin access granted",
        "step-up through the proxy"
    );
    c.finish().await;
    assert_eq!(tb.stats().authorizations, 2);
    let list = k.run_async(&["--json", "list"]).await;
    assert!(String::from_utf8_lossy(&list.stdout).contains("\"authorized\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_proxies_started_together_authorize_once() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "tb", "--no-authorize"])
            .await
            .status
            .success()
    );
    let mut a = Client::spawn(&k, &["proxy", "tb", "--browser", "follow"]);
    let mut b = Client::spawn(&k, &["proxy", "tb", "--browser", "follow"]);
    let (ia, ib) = tokio::join!(a.initialize(), b.initialize());
    assert_eq!(ia["result"]["serverInfo"]["name"], "keyway-testbed");
    assert_eq!(ib["result"]["serverInfo"]["name"], "keyway-testbed");
    let (ra, rb) = tokio::join!(
        a.request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "a"}})
        ),
        b.request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "b"}})
        )
    );
    assert_eq!((text(&ra), text(&rb)), ("a", "b"));
    a.finish().await;
    b.finish().await;
    assert_eq!(tb.stats().authorizations, 1, "one browser for both proxies");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_connection_is_invisible_to_the_client() {
    // The 6th MCP request's connection drops, and the server forgets its sessions. The
    // requests are tools/list: repeating one changes nothing, so keyway reconnects
    // and sends it again.
    let tb = testbed(|k| {
        // A session to lose: the handshake generation.
        k.mcp_revision = keyway_testbed::McpRevision::Legacy;
        k.drop_after = vec![keyway_testbed::EndpointFault::new(
            keyway_testbed::Endpoint::Mcp,
            5,
        )]
    })
    .await;
    let k = Keyway::new();
    let token = tb.mint_access_token("mcp:tools");
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--token", &token]);
    c.initialize().await;
    for i in 0..6 {
        let r = c.request("tools/list", json!({})).await;
        assert_eq!(
            r["result"]["tools"].as_array().map(Vec::len),
            Some(9),
            "list {i}: {r}"
        );
    }
    c.finish().await;
    let stats = tb.stats();
    assert_eq!(stats.dropped_connections, 1);
    assert!(
        stats.path("POST /mcp") > 8,
        "a second initialize happened: {:?}",
        stats.paths
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_whose_connection_drops_is_reported_not_sent_twice() {
    // The same drop under tools/call: the server may have run the tool before the
    // connection broke, so keyway says so instead of running it again; the next call
    // reconnects and works.
    let tb = testbed(|k| {
        // A session to lose: the handshake generation.
        k.mcp_revision = keyway_testbed::McpRevision::Legacy;
        k.drop_after = vec![keyway_testbed::EndpointFault::new(
            keyway_testbed::Endpoint::Mcp,
            5,
        )]
    })
    .await;
    let k = Keyway::new();
    let token = tb.mint_access_token("mcp:tools");
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--token", &token]);
    c.initialize().await;
    let mut failed = Vec::new();
    for i in 0..7 {
        let r = c
            .request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": format!("n{i}")}}),
            )
            .await;
        match r["error"]["message"].as_str() {
            Some(m) => failed.push((i, m.to_owned())),
            None => assert_eq!(text(&r), format!("n{i}"), "call {i}: {r}"),
        }
    }
    c.finish().await;
    assert_eq!(failed.len(), 1, "{failed:?}");
    let (i, message) = &failed[0];
    assert!(*i < 6, "{failed:?}");
    assert!(
        message.contains("broke") && message.contains("not sent again"),
        "{message}"
    );
    assert_eq!(tb.stats().dropped_connections, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_an_error_frame_and_exit_is_clean() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url()]);
    c.send(&json!("not an object")).await;
    c.stdin
        .as_mut()
        .unwrap()
        .write_all(b"{broken json\n")
        .await
        .unwrap();
    let init = c.initialize().await;
    assert!(init.get("result").is_some());
    assert!(
        c.seen.iter().any(|v| v["error"]["code"] == -32700),
        "{:?}",
        c.seen
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_removed_meanwhile_is_not_reconnected() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "tb"])
            .await
            .status
            .success()
    );
    let posts = tb.stats().path("POST /mcp");
    let mut c = Client::spawn(&k, &["proxy", "tb"]);
    c.initialize().await;
    assert_eq!(
        text(
            &c.request(
                "tools/call",
                json!({"name": "echo", "arguments": {"text": "a"}})
            )
            .await
        ),
        "a"
    );
    assert!(k.run_async(&["disable", "tb"]).await.status.success());
    tb.drop_next_request();
    // A list, which keyway would send again on a new connection, were the server
    // still wanted.
    let r = c.request("tools/list", json!({})).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("removed or disabled"),
        "{r}"
    );
    c.finish().await;
    assert_eq!(tb.stats().dropped_connections, 1);
    // initialize, initialized, two calls: no second initialize.
    assert_eq!(
        tb.stats().path("POST /mcp") - posts,
        4,
        "{:?}",
        tb.stats().paths
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_set_in_the_environment_carries_the_posts() {
    // An HTTP proxy that refuses everything, keeping what reaches it: with HTTP_PROXY
    // set, the POSTs go through it (the same client and code path as without one),
    // never straight to the server, in absolute form with the proxy's credentials.
    let (proxy, heads) = crate::harness::http_proxy(None).await;
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let mut cmd = k.cmd(&["proxy", tb.mcp_url()]);
    cmd.env("HTTP_PROXY", &proxy)
        .env("http_proxy", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut c = Client {
        stdin: child.stdin.take(),
        lines: BufReader::new(child.stdout.take().unwrap()).lines(),
        child,
        next_id: 1,
        seen: Vec::new(),
    };
    let init = c.initialize().await;
    assert!(
        init["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("502")),
        "{init}"
    );
    let heads = heads.lock().unwrap().clone();
    assert!(!heads.is_empty());
    assert!(
        heads[0].starts_with(&format!("POST {} HTTP/1.1\r\n", tb.mcp_url())),
        "absolute form: {heads:?}"
    );
    assert!(
        heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization: basic chjvehl1c2vyonbyb3h5lxbhc3m="),
        "{heads:?}"
    );
    assert_eq!(
        tb.stats().path("POST /mcp"),
        0,
        "nothing went around the proxy"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_answer_is_refused_with_a_clear_error() {
    // Every MCP answer padded past the 16 MiB keyway reads for one message.
    let tb = testbed(|k| {
        k.open = true;
        k.oversize = vec![keyway_testbed::EndpointFault::new(
            keyway_testbed::Endpoint::Mcp,
            17 * 1024 * 1024,
        )];
    })
    .await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url()]);
    let r = c
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"}}),
        )
        .await;
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(tb.rs_origin()) && message.contains("larger than 16 MiB"),
        "{r}"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_sent_before_the_session_exists_wait_for_it() {
    // Every MCP answer takes 100 ms, so the client's eager messages arrive while the
    // upstream initialize (or 2026-07-28's server/discover) is still in flight: they
    // must wait for its session (or for the generation to be known) rather than
    // reach the server without one.
    for (revision, posts) in [
        (keyway_testbed::McpRevision::Legacy, 4),
        (keyway_testbed::McpRevision::Modern, 2),
    ] {
        let tb = testbed(|k| {
            k.open = true;
            k.mcp_revision = revision;
            k.delay = vec![keyway_testbed::EndpointFault::new(
                keyway_testbed::Endpoint::Mcp,
                100,
            )];
        })
        .await;
        let k = Keyway::new();
        let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
        c.send(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "eager", "version": "1"}}}),
        )
        .await;
        c.notify("notifications/initialized").await;
        c.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
            .await;
        let (mut init, mut list) = (None, None);
        while init.is_none() || list.is_none() {
            let m = c.next().await;
            match m["id"].as_i64() {
                Some(1) => init = Some(m),
                Some(2) => list = Some(m),
                _ => {}
            }
        }
        let (init, list) = (init.unwrap(), list.unwrap());
        assert!(init.get("result").is_some(), "{init}");
        assert!(
            list["result"]["tools"]
                .as_array()
                .is_some_and(|t| !t.is_empty()),
            "{list}"
        );
        let out = c.finish().await;
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            !log.lines()
                .any(|l| l.contains("WARN") && !l.contains("home was readable")),
            "nothing was refused or dropped: {log}"
        );
        assert_eq!(
            tb.stats().path("POST /mcp"),
            posts,
            "{revision:?}: (discover refused, initialize, initialized,) tools/list"
        );
    }
}
