//! `keyway serve`: the gateway on stdio and on HTTP.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{
    harness::{Keyway, dead_mcp_url, stderr, stdout, testbed},
    proxy::{Client, text},
};

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_merges_routes_and_says_what_needs_authorization() {
    let open = testbed(|k| k.open = true).await;
    let oauth = testbed(|_| {}).await;
    let locked = testbed(|_| {}).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", open.mcp_url(), "--name", "alpha"])
            .await
            .status
            .success()
    );
    assert!(
        k.run_async(&[
            "add",
            oauth.mcp_url(),
            "--name",
            "beta",
            "--browser",
            "follow"
        ])
        .await
        .status
        .success()
    );
    assert!(
        k.run_async(&[
            "add",
            locked.mcp_url(),
            "--name",
            "locked",
            "--no-authorize"
        ])
        .await
        .status
        .success()
    );
    let dead = dead_mcp_url();
    assert!(
        k.run_async(&["add", &dead, "--name", "gone", "--force"])
            .await
            .status
            .success()
    );

    let deletes = open.stats().path("DELETE /mcp");
    let mut c = Client::spawn(&k, &["serve"]);
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "keyway-gateway");
    let list = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "alpha__echo",
        "alpha__add",
        "beta__echo",
        "beta__admin_only",
        "locked__keyway_authorize",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(!names.iter().any(|n| n.starts_with("gone__")));
    let schema = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "alpha__add")
        .unwrap();
    assert!(
        schema["inputSchema"]["properties"]["a"].is_object(),
        "tool objects pass through whole"
    );

    let r = c
        .request(
            "tools/call",
            json!({"name": "alpha__add", "arguments": {"a": 1, "b": 2}}),
        )
        .await;
    assert_eq!(text(&r), "3");
    let r = c
        .request(
            "tools/call",
            json!({"name": "beta__echo", "arguments": {"text": "routed"}}),
        )
        .await;
    assert_eq!(text(&r), "routed");
    let r = c
        .request(
            "tools/call",
            json!({"name": "locked__keyway_authorize", "arguments": {}}),
        )
        .await;
    assert_eq!(r["result"]["isError"], true);
    assert!(text(&r).contains("keyway authorize locked"), "{r}");
    let r = c
        .request("tools/call", json!({"name": "gone__echo", "arguments": {}}))
        .await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    let r = c
        .request(
            "tools/call",
            json!({"name": "nobody__echo", "arguments": {}}),
        )
        .await;
    assert!(r.get("error").is_some(), "{r}");
    let r = c.request("no/such/method", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
    assert_eq!(c.request("ping", json!({})).await["result"], json!({}));
    c.finish().await;
    assert_eq!(
        locked.stats().endpoint(keyway_testbed::Endpoint::Authorize),
        0,
        "the gateway never opens a browser"
    );
    assert_eq!(
        open.stats().path("DELETE /mcp"),
        deletes + 1,
        "upstream sessions are closed on exit"
    );
}

/// A gateway listening over HTTP: its URL and the token clients send.
#[derive(Clone)]
pub struct Gw {
    pub url: String,
    pub token: String,
}

/// Start `keyway serve --listen`, return it, its URL and its token (from the file it
/// names).
pub async fn listen(k: &Keyway, extra: &[&str]) -> (tokio::process::Child, Gw) {
    listen_with(k, extra, &[]).await
}

/// [`listen`] with these environment variables set.
pub async fn listen_with(
    k: &Keyway,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, Gw) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut cmd = tokio::process::Command::from(k.cmd(&args));
    cmd.envs(env.iter().copied());
    cmd.stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = None;
    while let Some(line) = lines.next_line().await.unwrap() {
        if let Some(rest) = line.strip_prefix("keyway gateway on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        // The last line of the start, in both modes: where the gateway's token is.
        if let Some((_, rest)) = line.split_once("Authorization: Bearer <the token in ") {
            let path = rest.trim_end_matches('>');
            let token = std::fs::read_to_string(path).unwrap().trim().to_owned();
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let url = url.expect("the address comes first");
            return (child, Gw { url, token });
        }
    }
    panic!("the gateway did not start");
}

/// A POST to the gateway with its token.
pub async fn post_as(gw: &Gw, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let bearer = format!("Bearer {}", gw.token);
    let mut all = vec![("authorization", bearer.as_str())];
    all.extend_from_slice(headers);
    post(&gw.url, body, &all).await
}

pub async fn post(url: &str, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_http_listener_guards_host_origin_and_token() {
    let (_open, k) = alpha().await;
    let token_file = k.home.path().join("gateway.token");
    std::fs::write(&token_file, "a-long-enough-gateway-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_child, gw) = listen(&k, &["--token-file", token_file.to_str().unwrap()]).await;
    let url = gw.url;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let auth = ("authorization", "Bearer a-long-enough-gateway-token");

    assert_eq!(post(&url, init.clone(), &[]).await.status(), 401);
    assert_eq!(
        post(&url, init.clone(), &[("authorization", "Bearer wrong")])
            .await
            .status(),
        401
    );
    assert_eq!(
        post(&url, init.clone(), &[auth, ("host", "evil.example")])
            .await
            .status(),
        403
    );
    assert_eq!(
        post(
            &url,
            init.clone(),
            &[auth, ("origin", "https://evil.example")]
        )
        .await
        .status(),
        403
    );
    let r = post(&url, init.clone(), &[auth]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("mcp-session-id").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18");
    let r = post(
        &url,
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        &[auth],
    )
    .await;
    assert_eq!(r.status(), 202);
    let r = post(&url, json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {"text": "over http"}}}), &[auth]).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "over http");
    // A batch of what is not a message: each gets its Invalid Request (JSON-RPC 2.0).
    let r = post(&url, json!([1, 2]), &[auth]).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v[0]["error"]["code"], -32600, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn listening_beyond_loopback_needs_a_token() {
    let k = Keyway::new();
    let out = k.run_async(&["serve", "--listen", "0.0.0.0:0"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file"));
}

/// An open testbed behind the gateway as `alpha`, and the keyway home that has it.
async fn alpha() -> (keyway_testbed::Testbed, Keyway) {
    let open = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", open.mcp_url(), "--name", "alpha"])
            .await
            .status
            .success()
    );
    (open, k)
}

/// A call of alpha's `slow` tool (`ms` long) with a progress token; the cancellation of
/// one.
fn slow_call(id: Value, ms: u64, token: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "alpha__slow", "arguments": {"ms": ms}, "_meta": {"progressToken": token}}})
}

fn cancel(id: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id, "reason": "not needed any more"}})
}

fn is_progress_of(m: &Value, token: &str) -> bool {
    m["method"] == "notifications/progress" && m["params"]["progressToken"] == token
}

/// The upstream stops a call the client cancelled: the gateway passes the cancellation
/// on under the id it gave the call there.
async fn upstream_cancels(tb: &keyway_testbed::Testbed) {
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tb.cancelled_calls_reach(1),
    )
    .await
    .expect("the server carrying the call heard of the cancellation");
}

/// A long call that reports progress outlives the request timeout (each report starts
/// the wait again); one that reports nothing is given up on with a clear error. The
/// testbed's `slow` reports at its start and half-way, so a 3 s call with a token goes
/// 1.5 s at a time without a word, against a 2 s timeout.
#[tokio::test(flavor = "multi_thread")]
async fn progress_keeps_a_long_call_alive_and_silence_times_it_out() {
    let (_open, k) = alpha().await;
    let bad = k.run_async(&["serve", "--request-timeout", "1.5"]).await;
    assert_eq!(bad.status.code(), Some(2), "whole seconds only");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--request-timeout"));

    let mut c = Client::spawn(&k, &["serve", "--request-timeout", "2"]);
    c.initialize().await;
    let talks = slow_call(json!(0), 3_000, "talks")["params"].clone();
    let r = c.request("tools/call", talks).await;
    assert_eq!(text(&r), "waited 3000 ms", "{r}");
    let silent = json!({"name": "alpha__slow", "arguments": {"ms": 5_000}});
    let r = c.request("tools/call", silent).await;
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(
        text(&r).contains("no progress for 2 s"),
        "the error says what happened: {r}"
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_cancelled_on_stdio_is_cancelled_upstream_and_not_answered() {
    let (open, k) = alpha().await;
    let mut c = Client::spawn(&k, &["serve"]);
    c.initialize().await;
    c.send(&slow_call(json!("long"), 60_000, "long")).await;
    // Its first progress report: the call is running upstream.
    loop {
        let m = c.next().await;
        assert_ne!(m.get("id"), Some(&json!("long")), "answered early: {m}");
        if is_progress_of(&m, "long") {
            break;
        }
    }
    c.send(&cancel("long")).await;
    upstream_cancels(&open).await;
    assert_eq!(c.request("ping", json!({})).await["result"], json!({}));
    assert!(
        !c.seen.iter().any(|m| m.get("id") == Some(&json!("long"))),
        "a cancelled call is not answered: {:?}",
        c.seen
    );
    c.finish().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_cancelled_over_http_is_cancelled_upstream() {
    let (open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let session = http_session(&gw).await;
    let with_session = [("mcp-session-id", session.as_str())];
    // Progress comes on the event stream.
    let mut events = Events::open(&gw, &session).await;
    let call = tokio::spawn({
        let (gw, session) = (gw.clone(), session.clone());
        let body = slow_call(json!("long"), 60_000, "long");
        async move { post_as(&gw, body, &[("mcp-session-id", session.as_str())]).await }
    });
    while !is_progress_of(&events.next().await, "long") {}
    assert_eq!(
        post_as(&gw, cancel("long"), &with_session).await.status(),
        202
    );
    upstream_cancels(&open).await;
    // The call's POST still gets an answer over HTTP: a cancellation error.
    let answer: Value = call.await.unwrap().json().await.unwrap();
    assert_eq!(answer["id"], "long");
    assert_eq!(answer["error"]["code"], -32800, "{answer}");
}

/// An event stream of the HTTP gateway, read a message at a time.
pub struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    pub async fn open(gw: &Gw, session: &str) -> Self {
        let resp = reqwest::Client::new()
            .get(&gw.url)
            .header("authorization", format!("Bearer {}", gw.token))
            .header("mcp-session-id", session)
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The messages of a POST answered with an event stream.
    pub fn of(resp: reqwest::Response) -> Self {
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped).
    pub async fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let event: String = self.buf.drain(..end + 2).collect();
                if let Some(data) = event.lines().find_map(|l| l.strip_prefix("data:")) {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), self.resp.chunk())
                .await
                .expect("an event within 30 s")
                .unwrap()
                .expect("the event stream stays open");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Start an HTTP session: its id.
pub async fn http_session(gw: &Gw) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let r = post_as(gw, init, &[]).await;
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    assert_eq!(
        post_as(gw, initialized, &[("mcp-session-id", session.as_str())])
            .await
            .status(),
        202
    );
    session
}

/// Two clients of one HTTP gateway use the same progress token for calls to the same
/// server at once. Upstream the gateway is the one sender, so it gives each call a
/// token of its own; each client gets only its own call's progress, under its token.
#[tokio::test(flavor = "multi_thread")]
async fn progress_goes_to_the_session_that_asked_under_its_own_token() {
    let (_open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let (a, b) = (http_session(&gw).await, http_session(&gw).await);
    let (mut a_events, mut b_events) = (Events::open(&gw, &a).await, Events::open(&gw, &b).await);
    let call = |session: &str, body: Value| {
        let (gw, session) = (gw.clone(), session.to_owned());
        tokio::spawn(
            async move { post_as(&gw, body, &[("mcp-session-id", session.as_str())]).await },
        )
    };
    // A's call reports at once and again after a second; B's starts in between.
    let a_call = call(&a, slow_call(json!(10), 2000, "same"));
    let first = a_events.next().await;
    assert_eq!(first["params"]["progressToken"], "same", "{first}");
    assert_eq!(first["params"]["total"], 2000.0, "{first}");
    let b_call = call(&b, slow_call(json!(10), 2500, "same"));
    let b_first = b_events.next().await;
    assert_eq!(b_first["params"]["progressToken"], "same", "{b_first}");
    assert_eq!(b_first["params"]["total"], 2500.0, "{b_first}");
    // B's report went to B alone: A's next one is its own half-way report.
    let second = a_events.next().await;
    assert_eq!(
        second["params"]["total"], 2000.0,
        "B's progress reached A: {second}"
    );
    assert_eq!(second["params"]["progress"], 1000.0, "{second}");
    for c in [a_call, b_call] {
        let answer: Value = c.await.unwrap().json().await.unwrap();
        assert!(
            answer["result"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("waited"),
            "{answer}"
        );
    }
}

/// A server's request goes to the session whose call it came in the course of (the
/// server sends it on that call's stream), not to every client; only that session's
/// answer is passed back.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_request_goes_to_the_session_that_caused_it() {
    let (_open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let (a, b) = (http_session(&gw).await, http_session(&gw).await);
    let (mut a_events, mut b_events) = (Events::open(&gw, &a).await, Events::open(&gw, &b).await);
    let ask = |session: &str, id: u64| {
        let (gw, session) = (gw.clone(), session.to_owned());
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "alpha__ask_name", "arguments": {}}});
        tokio::spawn(async move {
            let r = post_as(&gw, body, &[("mcp-session-id", session.as_str())]).await;
            r.json::<Value>().await.unwrap()
        })
    };
    let answer = |id: &Value, name: &str| json!({"jsonrpc": "2.0", "id": id, "result": {"action": "accept", "content": {"name": name}}});
    let a_call = ask(&a, 1);
    let asked_a = a_events.next().await;
    assert_eq!(asked_a["method"], "elicitation/create", "{asked_a}");
    // B answering A's question is not taken for A's answer.
    let b_answers = post_as(
        &gw,
        answer(&asked_a["id"], "Mallory"),
        &[("mcp-session-id", b.as_str())],
    )
    .await;
    assert_eq!(b_answers.status(), 202);
    let a_answers = post_as(
        &gw,
        answer(&asked_a["id"], "Alice"),
        &[("mcp-session-id", a.as_str())],
    )
    .await;
    assert_eq!(a_answers.status(), 202);
    let done = a_call.await.unwrap();
    assert_eq!(done["result"]["content"][0]["text"], "name Alice", "{done}");
    // B's first event is its own question: A's never reached it.
    let b_call = ask(&b, 2);
    let asked_b = b_events.next().await;
    assert_eq!(asked_b["method"], "elicitation/create", "{asked_b}");
    assert_ne!(asked_b["id"], asked_a["id"], "A's question reached B");
    let b_answers = post_as(
        &gw,
        answer(&asked_b["id"], "Bob"),
        &[("mcp-session-id", b.as_str())],
    )
    .await;
    assert_eq!(b_answers.status(), 202);
    let done = b_call.await.unwrap();
    assert_eq!(done["result"]["content"][0]["text"], "name Bob", "{done}");
}

/// DELETE ends a session and what it holds upstream: its calls still running are
/// cancelled there, and its resource subscriptions end. The gateway holds one
/// subscription per URI at the server for all its clients: the server hears of the
/// first session subscribing and of the last one leaving, and each update reaches
/// the sessions subscribed.
#[tokio::test(flavor = "multi_thread")]
async fn ending_a_session_ends_its_upstream_state() {
    let (open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let (a, b) = (http_session(&gw).await, http_session(&gw).await);
    let (mut a_events, mut b_events) = (Events::open(&gw, &a).await, Events::open(&gw, &b).await);
    let rpc = |session: &str, id: u64, method: &str, params: Value| {
        let (gw, session, method) = (gw.clone(), session.to_owned(), method.to_owned());
        async move {
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
            let r = post_as(&gw, body, &[("mcp-session-id", session.as_str())]).await;
            r.json::<Value>().await.unwrap()
        }
    };
    let readme = json!({"uri": "testbed://readme"});
    for s in [&a, &b] {
        let r = rpc(s, 1, "resources/subscribe", readme.clone()).await;
        assert_eq!(r["result"], json!({}), "{r}");
    }
    assert_eq!(
        open.stats().resource_subscribes,
        1,
        "one subscription upstream"
    );
    let touch = json!({"name": "alpha__touch", "arguments": {}});
    let r = rpc(&a, 2, "tools/call", touch.clone()).await;
    assert!(
        r["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("touched")
    );
    for events in [&mut a_events, &mut b_events] {
        let updated = events.next().await;
        assert_eq!(
            updated["method"], "notifications/resources/updated",
            "{updated}"
        );
    }
    // A leaves with a call running: it is cancelled upstream; B keeps the subscription.
    let long = tokio::spawn(rpc(
        &a,
        3,
        "tools/call",
        slow_call(json!(3), 60_000, "long")["params"].clone(),
    ));
    while !is_progress_of(&a_events.next().await, "long") {}
    let delete = reqwest::Client::new()
        .delete(&gw.url)
        .header("authorization", format!("Bearer {}", gw.token))
        .header("mcp-session-id", &a)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    upstream_cancels(&open).await;
    assert_eq!(long.await.unwrap()["error"]["code"], -32800);
    assert_eq!(open.stats().resource_unsubscribes, 0, "B still subscribed");
    let r = rpc(&b, 4, "tools/call", touch.clone()).await;
    assert!(r["result"].is_object(), "{r}");
    let updated = b_events.next().await;
    assert_eq!(
        updated["method"], "notifications/resources/updated",
        "{updated}"
    );
    // The last subscriber leaving ends the server's subscription.
    let r = rpc(&b, 5, "resources/unsubscribe", readme.clone()).await;
    assert_eq!(r["result"], json!({}), "{r}");
    assert_eq!(open.stats().resource_unsubscribes, 1);
}

/// A handshake client's call with a progress token, from a client that takes an event
/// stream for its POST: its progress comes on that stream, before the answer (on the
/// session's GET stream it could arrive after the answer), and not on the GET stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_call_gets_its_progress_before_its_answer() {
    let (_open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let session = http_session(&gw).await;
    let mut get = Events::open(&gw, &session).await;
    let accept = [
        ("mcp-session-id", session.as_str()),
        ("accept", "application/json, text/event-stream"),
    ];
    let mut call = Events::of(post_as(&gw, slow_call(json!(5), 200, "mine"), &accept).await);
    let first = call.next().await;
    assert!(is_progress_of(&first, "mine"), "{first}");
    let answer = loop {
        let m = call.next().await;
        if m.get("id").is_some() {
            break m;
        }
        assert!(is_progress_of(&m, "mine"), "{m}");
    };
    assert_eq!(answer["id"], 5);
    assert_eq!(text(&answer), "waited 200 ms");
    // The GET stream's next message is the next thing for the session, not the
    // call's progress: a server request from a call that was not streamed.
    let ask = json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": "alpha__ask_name", "arguments": {}}});
    let asking = tokio::spawn({
        let (gw, session) = (gw.clone(), session.clone());
        async move { post_as(&gw, ask, &[("mcp-session-id", session.as_str())]).await }
    });
    let next = get.next().await;
    assert_eq!(next["method"], "elicitation/create", "{next}");
    let decline = json!({"jsonrpc": "2.0", "id": next["id"], "result": {"action": "decline"}});
    post_as(&gw, decline, &[("mcp-session-id", session.as_str())]).await;
    let done: Value = asking.await.unwrap().json().await.unwrap();
    assert_eq!(text(&done), "elicitation decline", "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn check_config_says_what_would_start_and_what_would_fail() {
    let k = Keyway::new();
    // An empty home: fine, nothing made, a warning that there is nothing to serve.
    let out = k
        .run_async(&["serve", "--listen", "127.0.0.1:0", "--check-config"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("would offer nothing"),
        "{}",
        stdout(&out)
    );
    assert!(!k.home.path().join("keyway.db").exists());
    assert!(!k.home.path().join("gateway.token").exists());

    // An OAuth server not yet authorized: a warning; a token file others can change: a
    // problem, exit 1, and no listener was opened.
    let tb = crate::harness::testbed(|_| {}).await;
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "later", "--no-authorize"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let token_file = k.home.path().join("token");
    std::fs::write(&token_file, "a-long-enough-gateway-token\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = k
        .run_async(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token_file.to_str().unwrap(),
            "--check-config",
            "--json",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let v = crate::harness::json(&out);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].to_string();
    assert!(problems.contains("chmod 600"), "{v}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("keyway authorize later"), "{v}");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = k
        .run_async(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--token-file",
            token_file.to_str().unwrap(),
            "--check-config",
        ])
        .await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("config      ok"), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn pages_of_an_allowed_origin_call_the_gateway_through_cors_and_others_do_not() {
    let (_open, k) = alpha().await;
    let (_child, gw) = listen(&k, &["--cors-origin", "https://chat.example"]).await;
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &gw.url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, mcp-protocol-version",
            )
            .send()
    };
    // The allowed origin's preflight is answered without a token.
    let r = preflight("https://chat.example").await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "https://chat.example");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        allowed.contains("authorization") && allowed.contains("mcp-protocol-version"),
        "{allowed}"
    );
    assert!(h.get("access-control-allow-credentials").is_none());
    // Another origin's is not: no header lets its page read anything.
    let r = preflight("https://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // Without the token, the page reads the 401 and its challenge.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "page", "version": "1"}}});
    let r = post(&gw.url, init.clone(), &[("origin", "https://chat.example")]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("www-authenticate") && exposed.contains("mcp-session-id"),
        "{exposed}"
    );
    // With it, the call goes through and the session header is readable.
    let r = post_as(&gw, init.clone(), &[("origin", "https://chat.example")]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("mcp-session-id").is_some());
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    // Another origin, even with the token: refused.
    let r = post_as(&gw, init, &[("origin", "https://evil.example")]).await;
    assert_eq!(r.status(), 403);
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // What is not an origin is a usage error.
    for bad in ["*", "https://chat.example/app", "chat.example"] {
        let out = k
            .run_async(&["serve", "--listen", "127.0.0.1:0", "--cors-origin", bad])
            .await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_and_time_each_servers_calls_behind_the_token() {
    let (_open, k) = alpha().await;
    let (_child, gw) = listen(&k, &[]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    assert_eq!(post_as(&gw, init, &[]).await.status(), 200);
    for id in 2..5 {
        let call = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {"text": "counted"}}});
        assert_eq!(post_as(&gw, call, &[]).await.status(), 200);
    }
    let metrics = gw.url.replace("/mcp", "/metrics");
    let http = reqwest::Client::new();
    assert_eq!(http.get(&metrics).send().await.unwrap().status(), 401);
    let r = http
        .get(&metrics)
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    // The three calls, and whatever the gateway itself asked at the start.
    let ok = text
        .lines()
        .find(|l| l.starts_with(r#"keyway_upstream_requests_total{server="alpha",outcome="ok"}"#))
        .unwrap_or_else(|| panic!("{text}"));
    let n: u64 = ok.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3, "{ok}");
    assert!(
        text.contains(
            r#"keyway_upstream_request_duration_seconds_bucket{le="0.005",server="alpha"}"#
        ) || text.contains(
            r#"keyway_upstream_request_duration_seconds_bucket{server="alpha",le="0.005"}"#
        ),
        "{text}"
    );
}

/// Start `keyway serve --listen` signing people in at `issuer`; its URL.
async fn listen_signed_in(
    k: &Keyway,
    issuer: &str,
    extra: &[&str],
) -> (tokio::process::Child, String) {
    let mut args = vec!["--authorization-server", issuer];
    args.extend_from_slice(extra);
    let (child, gw) = listen(k, &args).await;
    (child, gw.url)
}

#[tokio::test(flavor = "multi_thread")]
async fn people_sign_in_at_the_organisations_server_and_keyway_itself_gets_them_in() {
    let org = testbed(|k| k.jwt_access_tokens = true).await;
    let (_upstream, operator) = alpha().await;
    let (_gw, url) = listen_signed_in(&operator, org.issuer(), &[]).await;

    // A person with keyway as their MCP client: the gateway's challenge leads to the
    // organisation's server, where keyway registers and signs in, then calls through.
    let person = Keyway::new();
    let out = person
        .run_async(&["add", &url, "--name", "team", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(org.stats().authorizations, 1);
    let out = person
        .run_async(&[
            "call",
            "team",
            "alpha__echo",
            "--args",
            r#"{"text":"through"}"#,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "through\n");

    // /metrics takes the gateway's own token (a scraper's), never a person's.
    let metrics = url.replace("/mcp", "/metrics");
    let alice = org.mint_access_token_for("alice", "", Some(&url));
    let http = reqwest::Client::new();
    let r = http.get(&metrics).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let own = std::fs::read_to_string(operator.home.path().join("gateway.token")).unwrap();
    let r = http
        .get(&metrics)
        .bearer_auth(own.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(r#"keyway_inbound_requests_total{outcome="accepted"}"#),
        "{text}"
    );

    // Without a token, with the gateway's own token, with a token for another
    // resource: 401 and the challenge.
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let other = org.mint_access_token_for("mallory", "", Some("http://127.0.0.1:1/mcp"));
    for auth in [
        None,
        Some("Bearer a-token-of-sixteen-chars"),
        Some(&*format!("Bearer {}", own.trim())),
        Some(&*format!("Bearer {other}")),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let r = post(&url, init.clone(), &headers).await;
        assert_eq!(r.status(), 401, "{auth:?}");
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert!(challenge.contains("resource_metadata=\""), "{challenge}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_in_flags_are_checked_before_anything_starts() {
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--authorization-server",
            "https://id.example",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--public-url"), "{}", stderr(&out));
    let out = k
        .run_async(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--authorization-server",
            "http://127.0.0.1:1",
            "--introspection-client",
            "gw",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("KEYWAY_INTROSPECTION_SECRET"),
        "{}",
        stderr(&out)
    );
    let out = k
        .run_async(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--authorization-server",
            "http://127.0.0.1:1",
        ])
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("http://127.0.0.1:1"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_is_logged_under_its_id_as_json_without_the_token() {
    let (_upstream, k) = alpha().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("gateway.log");
    let log_arg = log.to_str().unwrap().to_owned();
    let (_gw, gw) = listen(&k, &["-v", "--log-format", "json", "--log-file", &log_arg]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let r = post_as(&gw, init.clone(), &[("x-request-id", "from-the-proxy-42")]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "from-the-proxy-42");
    // Not an id (too long): the gateway makes its own.
    let long = "x".repeat(65);
    let r = post_as(&gw, init, &[("x-request-id", long.as_str())]).await;
    let made = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 16, "{made}");

    // The log is written as the requests are answered; read it until both are in.
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let answered = lines.iter().filter(|l| l["message"] == "answered").count();
        if answered >= 2 {
            assert!(!text.contains(&gw.token), "the token reached the log");
            break lines;
        }
        tokio::task::yield_now().await;
    };
    let answered: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "answered")
        .collect();
    assert_eq!(answered[0]["span"]["request_id"], "from-the-proxy-42");
    assert_eq!(answered[0]["span"]["subject"], "operator");
    assert_eq!(answered[0]["status"], 200);
    assert_eq!(answered[1]["span"]["request_id"], made.as_str());
}

/// A browser that signs in as `person` wherever it is asked to: it follows `url`'s
/// redirects with its cookies, presses the link page's button, and adds
/// `login_hint` to authorization requests (the testbed approves whoever that names,
/// as a person would sign in). The last page's status and text.
pub async fn browse_as(person: &str, url: &str) -> (u16, String) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The browser's cookies, by host (a jar of its own: one browser).
    let mut jar: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    let mut at = url::Url::parse(url).unwrap();
    let mut post = false;
    for _ in 0..12 {
        if at
            .query_pairs()
            .any(|(k, v)| k == "response_type" && v == "code")
            && !at.query_pairs().any(|(k, _)| k == "login_hint")
        {
            at.query_pairs_mut().append_pair("login_hint", person);
        }
        let host = at.host_str().unwrap_or_default().to_owned();
        let mut req = if post {
            http.post(at.clone())
        } else {
            http.get(at.clone())
        };
        post = false;
        let cookies = jar.entry(host).or_default();
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", header.join("; "));
        }
        let r = req.send().await.unwrap();
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            cookies.retain(|(n, _)| n != k);
            cookies.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if r.status().is_redirection() {
            let next = r.headers()["location"].to_str().unwrap().to_owned();
            at = at.join(&next).unwrap();
            continue;
        }
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        // The page a link shows first: its button posts to it.
        if status == 200 && text.contains("<form method=\"post\">") {
            post = true;
            continue;
        }
        return (status, text);
    }
    panic!("too many redirects from {url}");
}

/// Start a handshake session at the gateway as the holder of `token`, declaring URL
/// elicitations; its id.
async fn session_as(url: &str, token: &str) -> String {
    let bearer = format!("Bearer {token}");
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {"url": {}}},
        "clientInfo": {"name": "t", "version": "1"}}});
    let r = post(url, init, &[("authorization", &bearer)]).await;
    assert_eq!(r.status(), 200);
    r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
}

/// `alpha__echo` called as the holder of `token` in `session`: the answer.
async fn echo_as(url: &str, token: &str, session: &str, text: &str) -> Value {
    let bearer = format!("Bearer {token}");
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "alpha__echo", "arguments": {"text": text}}});
    let r = post(
        url,
        call,
        &[
            ("authorization", &bearer),
            ("mcp-session-id", session),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    )
    .await;
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_person_connects_a_per_person_server_through_a_link_and_calls_it_as_themselves() {
    let org = testbed(|k| k.jwt_access_tokens = true).await;
    let upstream = testbed(|_| {}).await;
    let operator = Keyway::new();
    let out = operator
        .run_async(&[
            "add",
            upstream.mcp_url(),
            "--name",
            "alpha",
            "--no-authorize",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = operator.run_async(&["edit", "alpha", "--per-person"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_gw, url) = listen_signed_in(&operator, org.issuer(), &[]).await;
    let alice = org.mint_access_token_for("alice", "", Some(&url));
    let bob = org.mint_access_token_for("bob", "", Some(&url));

    // Alice's first call: a URL elicitation, pointing at the gateway's own page.
    let session = session_as(&url, &alice).await;
    let answer = echo_as(&url, &alice, &session, "hi").await;
    assert_eq!(answer["error"]["code"], -32042, "{answer}");
    let link = answer["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        link.starts_with(&url.replace("/mcp", "/connect/")),
        "{link}"
    );

    // Bob opens Alice's link: refused at the sign-in, and the link is spent.
    let (status, page) = browse_as("bob", &link).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("someone else"), "{page}");
    let (status, _) = browse_as("alice", &link).await;
    assert_eq!(status, 410);

    // A new link, opened by Alice: she signs in, authorizes alpha, and her call goes
    // through with her own token.
    let answer = echo_as(&url, &alice, &session, "hi").await;
    let link = answer["error"]["data"]["elicitations"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, page) = browse_as("alice", &link).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("alpha is connected"), "{page}");
    // Her list shows alpha's own tools now, in the authorize tool's place.
    let bearer = format!("Bearer {alice}");
    let list = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}});
    let headers = [
        ("authorization", bearer.as_str()),
        ("mcp-session-id", session.as_str()),
        ("mcp-protocol-version", "2025-11-25"),
    ];
    let tools: Value = post(&url, list, &headers).await.json().await.unwrap();
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"alpha__echo"), "{names:?}");
    assert!(!names.contains(&"alpha__keyway_authorize"), "{names:?}");
    let answer = echo_as(&url, &alice, &session, "hi").await;
    assert_eq!(answer["result"]["content"][0]["text"], "hi", "{answer}");
    let stats = upstream.stats();
    assert_eq!(stats.tokens_by_subject.get("alice"), Some(&1), "{stats:?}");
    assert_eq!(stats.tokens_by_subject.get("bob"), None);

    // Bob is not Alice: his call asks him to connect his own account.
    let bobs = session_as(&url, &bob).await;
    let answer = echo_as(&url, &bob, &bobs, "hi").await;
    assert_eq!(answer["error"]["code"], -32042, "{answer}");

    // As a 2026-07-28 client: the link comes `input_required`.
    let call = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "alpha__echo", "arguments": {"text": "hi"},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}});
    let bearer = format!("Bearer {bob}");
    let r = post(
        &url,
        call,
        &[
            ("authorization", &bearer),
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "alpha__echo"),
        ],
    )
    .await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
    let asked = &answer["result"]["inputRequests"]["keyway-connect"];
    assert_eq!(asked["method"], "elicitation/create");
    assert_eq!(asked["params"]["mode"], "url");
    assert!(
        asked["params"]["url"]
            .as_str()
            .unwrap()
            .contains("/connect/")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_half_done_connect_flow_goes_nowhere_in_another_browser_or_at_the_other_callback() {
    let org = testbed(|k| k.jwt_access_tokens = true).await;
    let upstream = testbed(|_| {}).await;
    let operator = Keyway::new();
    for args in [
        vec![
            "add",
            upstream.mcp_url(),
            "--name",
            "alpha",
            "--no-authorize",
        ],
        vec!["edit", "alpha", "--per-person"],
    ] {
        let out = operator.run_async(&args).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (_gw, url) = listen_signed_in(&operator, org.issuer(), &[]).await;
    let alice = org.mint_access_token_for("alice", "", Some(&url));
    let session = session_as(&url, &alice).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let location = |r: &reqwest::Response| r.headers()["location"].to_str().unwrap().to_owned();
    // Alice's browser takes the link (a GET alone spends nothing) and is sent to
    // sign in; the org signs her in and sends her back with a code.
    let started = || async {
        let answer = echo_as(&url, &alice, &session, "hi").await;
        let link = answer["error"]["data"]["elicitations"][0]["url"]
            .as_str()
            .unwrap()
            .to_owned();
        let page = http.get(&link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let r = http.post(&link).send().await.unwrap();
        assert_eq!(r.status(), 303);
        let cookie = r.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let mut authorize = url::Url::parse(&location(&r)).unwrap();
        authorize
            .query_pairs_mut()
            .append_pair("login_hint", "alice");
        let back = http.get(authorize).send().await.unwrap();
        (cookie, location(&back))
    };

    // Sent on to another browser (without Alice's cookie): refused.
    let (_, callback) = started().await;
    assert!(callback.contains("/oauth/callback/sign-in?"), "{callback}");
    let r = http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("another browser"));

    // Brought to the other kind's callback, even in her browser: refused.
    let (cookie, callback) = started().await;
    let elsewhere = callback.replace("/oauth/callback/sign-in?", "/oauth/callback/server?");
    let r = http
        .get(&elsewhere)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("wrong place"));
    assert_eq!(upstream.stats().authorizations, 0);
}
