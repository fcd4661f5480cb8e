//! `keyway serve` for clients of both MCP generations: a 2026-07-28 client (per-request
//! metadata, no session) beside a handshake-era one, in front of servers that speak
//! both or only 2026-07-28, and the bad input that mixing them brings.

use keyway_testbed::McpRevision;
use serde_json::{Value, json};

use crate::{
    harness::{Keyway, stderr, testbed},
    proxy::{Client, text},
    serve::{Gw, http_session, listen, post_as},
};

/// A 2026-07-28 request: `params` with the request metadata (`capabilities` the
/// client's).
fn modern(id: u64, method: &str, mut params: Value, capabilities: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "new-client", "version": "1"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// POST a 2026-07-28 request with the headers its body calls for: the status, whether
/// a session id came back, and the answer.
async fn send_modern(gw: &Gw, request: &Value) -> (u16, bool, Value) {
    let method = request["method"].as_str().unwrap().to_owned();
    let name = request["params"]
        .get("name")
        .or_else(|| request["params"].get("uri"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut headers = vec![
        ("mcp-protocol-version", "2026-07-28".to_owned()),
        ("mcp-method", method),
    ];
    if let Some(n) = name {
        headers.push(("mcp-name", n));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post_as(gw, request.clone(), &headers).await;
    let status = r.status().as_u16();
    let session = r.headers().contains_key("mcp-session-id");
    (status, session, r.json().await.unwrap())
}

async fn saved(revision: McpRevision) -> (keyway_testbed::Testbed, Keyway) {
    let tb = testbed(|k| {
        k.open = true;
        k.mcp_revision = revision;
    })
    .await;
    let k = Keyway::new();
    let out = k.run_async(&["add", tb.mcp_url(), "--name", "alpha"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    (tb, k)
}

/// A 2026-07-28 client and a handshake client on one gateway in front of a server that
/// speaks both: the first gets `server/discover` and sessionless answers, its calls
/// reach the server as 2026-07-28 requests with its own capabilities (so the server's
/// `input_required` rounds pass back to it untouched, its `requestState` included);
/// the second keeps its session.
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_and_a_handshake_client_share_the_gateway() {
    let (_tb, k) = saved(McpRevision::Both).await;
    let (_gw, gw) = listen(&k, &[]).await;

    let (status, session, discover) =
        send_modern(&gw, &modern(1, "server/discover", json!({}), json!({}))).await;
    assert_eq!((status, session), (200, false), "{discover}");
    let versions = &discover["result"]["supportedVersions"];
    assert_eq!(versions[0], "2026-07-28", "{discover}");
    assert!(versions.as_array().unwrap().contains(&json!("2025-11-25")));
    assert_eq!(
        discover["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "keyway-gateway"
    );

    let (_, session, tools) =
        send_modern(&gw, &modern(2, "tools/list", json!({}), json!({}))).await;
    assert!(!session);
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"alpha__echo"), "{names:?}");
    assert_eq!(tools["result"]["ttlMs"], 0);
    assert_eq!(tools["result"]["cacheScope"], "private");

    let echo = modern(
        3,
        "tools/call",
        json!({"name": "alpha__echo", "arguments": {"text": "new"}}),
        json!({}),
    );
    let (status, _, r) = send_modern(&gw, &echo).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(text(&r), "new");

    // The server asks this client for a name: input_required, passed back as it is.
    let asks = json!({"elicitation": {}});
    let ask = modern(
        4,
        "tools/call",
        json!({"name": "alpha__ask_name", "arguments": {}}),
        asks.clone(),
    );
    let (_, _, first) = send_modern(&gw, &ask).await;
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let (key, question) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(question["method"], "elicitation/create");
    let state = result["requestState"].as_str().unwrap().to_owned();
    let answer = json!({key.clone(): {"action": "accept", "content": {"name": "Ada"}}});
    let retry = modern(
        5,
        "tools/call",
        json!({"name": "alpha__ask_name", "arguments": {}, "inputResponses": answer, "requestState": state}),
        asks.clone(),
    );
    let (_, _, done) = send_modern(&gw, &retry).await;
    assert_eq!(text(&done), "name Ada", "{done}");
    // A tampered state is the server's to refuse, and its refusal comes back.
    let mut tampered = retry.clone();
    tampered["params"]["requestState"] = json!(format!("{state}x"));
    let (_, _, refused) = send_modern(&gw, &tampered).await;
    assert_eq!(refused["error"]["code"], -32602, "{refused}");

    // The handshake client beside it keeps its session and its answers.
    let session = http_session(&gw).await;
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {"text": "old"}}});
    let r: Value = post_as(&gw, call, &[("mcp-session-id", session.as_str())])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(text(&r), "old");
    // Its DELETE ends it: a request naming it after, or naming one never started, gets
    // 404 (the client starts a new session).
    let deleted = reqwest::Client::new()
        .delete(&gw.url)
        .bearer_auth(&gw.token)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    for id in [session.as_str(), "never-started"] {
        let call = json!({"jsonrpc": "2.0", "id": 10, "method": "tools/list"});
        let r = post_as(&gw, call, &[("mcp-session-id", id)]).await;
        assert_eq!(r.status(), 404, "{id}");
    }
}

/// What a 2026-07-28 request gets wrong is refused with the error that says so, and
/// the HTTP status the revision gives it: headers that disagree with the body
/// (-32020, 400), a session id on a request that has no session, a revision the
/// gateway does not speak (-32022, 400, listing those it does), a method 2026-07-28
/// does not have (-32601, 404), metadata without the client's capabilities (-32602,
/// 400).
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_request_that_gets_it_wrong_is_told_what() {
    let (_tb, k) = saved(McpRevision::Both).await;
    let (_gw, gw) = listen(&k, &[]).await;
    let echo = modern(
        1,
        "tools/call",
        json!({"name": "alpha__echo", "arguments": {"text": "x"}}),
        json!({}),
    );
    for (headers, why) in [
        (
            vec![("mcp-method", "tools/call"), ("mcp-name", "alpha__echo")],
            "mcp-protocol-version",
        ),
        (
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-name", "alpha__echo"),
            ],
            "mcp-method",
        ),
        (
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/call"),
                ("mcp-name", "alpha_other"),
            ],
            "mcp-name",
        ),
        (
            vec![
                ("mcp-protocol-version", "2026-07-28"),
                ("mcp-method", "tools/list"),
                ("mcp-name", "alpha__echo"),
            ],
            "mcp-method",
        ),
    ] {
        let r = post_as(&gw, echo.clone(), &headers).await;
        assert_eq!(r.status(), 400, "{why}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32020, "{body}");
        assert_eq!(body["id"], 1);
        assert!(
            body["error"]["message"].as_str().unwrap().contains(why),
            "{body}"
        );
    }
    let session = http_session(&gw).await;
    let r = post_as(
        &gw,
        echo.clone(),
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "alpha__echo"),
            ("mcp-session-id", session.as_str()),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no session"),
        "{body}"
    );

    let mut future = modern(2, "tools/list", json!({}), json!({}));
    future["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let r = post_as(
        &gw,
        future,
        &[
            ("mcp-protocol-version", "2099-01-01"),
            ("mcp-method", "tools/list"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32022, "{body}");
    assert_eq!(body["error"]["data"]["supported"][0], "2026-07-28");

    // The revision's own statuses: a method it does not have is 404, a request
    // without the client's capabilities (or without any metadata) is 400.
    for method in ["ping", "initialize", "no/such/method"] {
        let (status, _, answer) = send_modern(&gw, &modern(3, method, json!({}), json!({}))).await;
        assert_eq!(
            (status, &answer["error"]["code"]),
            (404, &json!(-32601)),
            "{method}: {answer}"
        );
        assert_eq!(answer["id"], 3);
    }
    let mut bare = modern(4, "tools/list", json!({}), json!({}));
    bare["params"]["_meta"]
        .as_object_mut()
        .unwrap()
        .remove("io.modelcontextprotocol/clientCapabilities");
    let (status, _, answer) = send_modern(&gw, &bare).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!(-32602)),
        "{answer}"
    );
    let no_meta = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/list", "params": {}});
    let (status, _, answer) = send_modern(&gw, &no_meta).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!(-32602)),
        "{answer}"
    );
}

/// A server that speaks only 2026-07-28 serves handshake clients through the gateway
/// too (the gateway's request metadata on their calls, with the capabilities the
/// client declared), and 2026-07-28 clients on stdio. A call that needs input the
/// handshake client declared no capability for ends at once with an error that says
/// so; one it can answer becomes the server's own requests to it, round by round.
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_only_server_serves_both_generations() {
    let (tb, k) = saved(McpRevision::Modern).await;
    let mut c = Client::spawn(&k, &["serve"]);
    let init = c.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["name"], "keyway-gateway");
    let r = c
        .request(
            "tools/call",
            json!({"name": "alpha__echo", "arguments": {"text": "old"}}),
        )
        .await;
    assert_eq!(text(&r), "old");
    let asked = c
        .request(
            "tools/call",
            json!({"name": "alpha__ask_name", "arguments": {}}),
        )
        .await;
    let why = asked["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{asked}"));
    assert!(
        why.contains("elicitation/create") && why.contains("elicitation capability"),
        "{why}"
    );
    // A 2026-07-28 request on the same stdio: answered on its own.
    c.send(&modern(
        77,
        "tools/call",
        json!({"name": "alpha__echo", "arguments": {"text": "new"}}),
        json!({}),
    ))
    .await;
    let answer = loop {
        let m = c.next().await;
        if m["id"] == 77 {
            break m;
        }
    };
    assert_eq!(text(&answer), "new");
    // A listen stream on stdio: acknowledged, and it does not keep the gateway from
    // ending with its client.
    c.send(&modern(
        78,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
        json!({}),
    ))
    .await;
    let ack = loop {
        let m = c.next().await;
        if m["method"] == "notifications/subscriptions/acknowledged" {
            break m;
        }
    };
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        78
    );
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    c.finish().await;

    // A client that can answer: each round's question comes as the server's own
    // request, and the call completes with the answers.
    let mut c = Client::spawn(&k, &["serve"]);
    c.send(
        &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "clientInfo": {"name": "able", "version": "1"},
        "capabilities": {"elicitation": {}, "sampling": {}}}}),
    )
    .await;
    assert!(c.next().await["result"].is_object());
    c.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "alpha__two_rounds", "arguments": {}}}))
        .await;
    let elicit = c.next().await;
    assert_eq!(elicit["method"], "elicitation/create", "{elicit}");
    c.send(&json!({"jsonrpc": "2.0", "id": elicit["id"],
        "result": {"action": "accept", "content": {"name": "Ada"}}}))
        .await;
    let sample = c.next().await;
    assert_eq!(sample["method"], "sampling/createMessage", "{sample}");
    c.send(&json!({"jsonrpc": "2.0", "id": sample["id"], "result": {
        "role": "assistant", "model": "m", "content": {"type": "text", "text": "Hi Ada"}}}))
        .await;
    let done = c.next().await;
    assert_eq!(done["id"], 1, "{done}");
    assert_eq!(text(&done), "name Ada; sampled Hi Ada");
    // A refusal ends the call with the client's reason.
    c.send(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "alpha__ask_name", "arguments": {}}}))
        .await;
    let elicit = c.next().await;
    c.send(&json!({"jsonrpc": "2.0", "id": elicit["id"],
        "error": {"code": -32600, "message": "not now"}}))
        .await;
    let refused = c.next().await;
    assert_eq!(refused["id"], 2, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not now"),
        "{refused}"
    );
    // A resource subscription is followed on the server's subscriptions/listen.
    let sub = c
        .request("resources/subscribe", json!({"uri": "testbed://readme"}))
        .await;
    assert_eq!(sub["result"], json!({}), "{sub}");
    // Subscribed once the server acknowledged the stream: the next change is heard.
    c.send(&json!({"jsonrpc": "2.0", "id": 100, "method": "tools/call",
        "params": {"name": "alpha__touch", "arguments": {}}}))
        .await;
    let (mut updated, mut touched) = (false, false);
    while !(updated && touched) {
        let m = c.next().await;
        if m["method"] == "notifications/resources/updated" {
            assert_eq!(m["params"]["uri"], "testbed://readme", "{m}");
            updated = true;
        } else if m["id"] == 100 {
            touched = true;
        }
    }
    c.finish().await;
    assert_eq!(
        tb.stats().path("DELETE /mcp"),
        0,
        "no session with a 2026-07-28 server"
    );
}

/// A 2026-07-28 call with a progress token, from a client that takes an event stream:
/// the server's progress reports come on the call's own stream, under the client's
/// token, then its answer, and the stream ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_call_gets_its_progress_on_its_own_stream() {
    let (_tb, k) = saved(McpRevision::Both).await;
    let (_gw, gw) = listen(&k, &[]).await;
    let mut call = modern(
        1,
        "tools/call",
        json!({"name": "alpha__slow", "arguments": {"ms": 50}}),
        json!({}),
    );
    call["params"]["_meta"]["progressToken"] = json!("mine");
    let r = post_as(
        &gw,
        call,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "alpha__slow"),
            ("accept", "application/json, text/event-stream"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = r.text().await.unwrap();
    let messages: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    let (answer, progress) = messages.split_last().unwrap_or_else(|| panic!("{body}"));
    assert_eq!(answer["id"], 1, "{body}");
    assert_eq!(text(answer), "waited 50 ms");
    assert_eq!(progress.len(), 2, "{body}");
    for p in progress {
        assert_eq!(p["method"], "notifications/progress");
        assert_eq!(p["params"]["progressToken"], "mine");
    }
}

/// `--prefix`: `conditional` with one server names its tools and prompts as it does;
/// `never` with two does too, the first server winning a name both use, and the start
/// says which names are hidden.
#[tokio::test(flavor = "multi_thread")]
async fn prefix_modes_name_tools_as_asked() {
    let (_tb, k) = saved(McpRevision::Both).await;
    let mut c = Client::spawn(&k, &["serve", "--prefix", "conditional"]);
    c.initialize().await;
    let tools = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"echo") && !names.iter().any(|n| n.contains("__")),
        "{names:?}"
    );
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "plain"}}),
        )
        .await;
    assert_eq!(text(&r), "plain");
    let prompt = c
        .request(
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert!(prompt["result"]["messages"].is_array(), "{prompt}");
    c.finish().await;

    let other = testbed(|k| k.open = true).await;
    let out = k
        .run_async(&["add", other.mcp_url(), "--name", "beta"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let mut c = Client::spawn(&k, &["serve", "--prefix", "never"]);
    c.initialize().await;
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "first"}}),
        )
        .await;
    assert_eq!(text(&r), "first");
    let unknown = c
        .request("tools/call", json!({"name": "nope", "arguments": {}}))
        .await;
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let out = c.finish().await;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("tool echo of beta is hidden by alpha's"),
        "{said}"
    );
    assert!(other.stats().path("POST /mcp") > 0, "beta is served too");
}

/// A 2025-03-26 client may send a batch: each message is handled as if alone, the
/// answers come back together; a batch of nothing, with `initialize`, or of
/// 2026-07-28 requests (which has none) is refused.
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_client_may_batch() {
    let (_tb, k) = saved(McpRevision::Both).await;
    let (_gw, gw) = listen(&k, &[]).await;
    let session = http_session(&gw).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": "a", "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {"text": "one"}}},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "x", "progress": 1}},
        {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "alpha__echo", "arguments": {"text": "two"}}},
    ]);
    let r = post_as(&gw, batch, &[("mcp-session-id", session.as_str())]).await;
    assert_eq!(r.status(), 200);
    let answers: Value = r.json().await.unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 2, "{answers:?}");
    let by_id = |id: &str| answers.iter().find(|a| a["id"] == id).unwrap();
    assert_eq!(text(by_id("a")), "one");
    assert_eq!(text(by_id("b")), "two");

    let init = json!([{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}]);
    let modern_batch = json!([modern(2, "tools/list", json!({}), json!({}))]);
    for (body, why) in [
        (json!([]), "empty"),
        (init, "initialize"),
        (modern_batch, "2026-07-28"),
    ] {
        let r = post_as(&gw, body, &[("mcp-session-id", session.as_str())]).await;
        assert_eq!(r.status(), 400, "{why}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(answer["error"]["code"], -32600, "{why}: {answer}");
    }
}

/// A 2026-07-28 client of the gateway in front of a server that speaks only the
/// handshake: the server's requests in the course of the client's call come back as
/// rounds (`input_required`, answered by the retry), two rounds for two questions. A
/// state of the gateway's that names nothing is refused; a question the client
/// declared no capability for is refused to the server, whose tool says so; and a
/// handshake client beside it never sees these questions.
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_servers_questions_become_rounds_through_the_gateway() {
    let (_tb, k) = saved(McpRevision::Legacy).await;
    let (_gw, gw) = listen(&k, &[]).await;
    let session = http_session(&gw).await;
    let mut old_events = crate::serve::Events::open(&gw, &session).await;
    let able = json!({"elicitation": {}, "sampling": {}});
    let call = |id: u64, args: Value| {
        modern(
            id,
            "tools/call",
            json!({"name": "alpha__two_rounds", "arguments": args}),
            able.clone(),
        )
    };
    let (status, _, first) = send_modern(&gw, &call(1, json!({}))).await;
    assert_eq!(status, 200, "{first}");
    let result = &first["result"];
    assert_eq!(result["resultType"], "input_required", "{first}");
    let (key, q) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(q["method"], "elicitation/create", "{first}");
    let state = result["requestState"].clone();
    // A state of the gateway's that names nothing: refused, the round kept.
    let mut forged = call(2, json!({}));
    forged["params"]["requestState"] = json!("keyway-round-00000000000000000000000000000000");
    let (status, _, refused) = send_modern(&gw, &forged).await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (400, json!(-32602)),
        "{refused}"
    );
    let mut retry = call(3, json!({}));
    retry["params"]["inputResponses"] =
        json!({key.clone(): {"action": "accept", "content": {"name": "Ada"}}});
    retry["params"]["requestState"] = state;
    let (_, _, second) = send_modern(&gw, &retry).await;
    let result = &second["result"];
    assert_eq!(result["resultType"], "input_required", "{second}");
    let (key, q) = result["inputRequests"]
        .as_object()
        .unwrap()
        .iter()
        .next()
        .unwrap();
    assert_eq!(q["method"], "sampling/createMessage", "{second}");
    let mut last = call(4, json!({}));
    last["params"]["inputResponses"] = json!({key.clone(): {"role": "assistant", "model": "m", "content": {"type": "text", "text": "Hi"}}});
    last["params"]["requestState"] = result["requestState"].clone();
    let (_, _, done) = send_modern(&gw, &last).await;
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(text(&done), "name Ada; sampled Hi");

    // No sampling capability declared for this request: the server hears so.
    let sample = modern(
        5,
        "tools/call",
        json!({"name": "alpha__sample", "arguments": {}}),
        json!({"elicitation": {}}),
    );
    let (_, _, refused) = send_modern(&gw, &sample).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(text(&refused).contains("sampling capability"), "{refused}");

    // The handshake client's stream got none of it: its next message is its own.
    let ask = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "alpha__ask_name", "arguments": {}}});
    let asking = tokio::spawn({
        let (gw, session) = (gw.clone(), session.clone());
        async move { post_as(&gw, ask, &[("mcp-session-id", session.as_str())]).await }
    });
    let next = old_events.next().await;
    assert_eq!(next["method"], "elicitation/create", "{next}");
    let decline = json!({"jsonrpc": "2.0", "id": next["id"], "result": {"action": "decline"}});
    post_as(&gw, decline, &[("mcp-session-id", session.as_str())]).await;
    // Had the rounds' questions reached this stream, the decline would have answered
    // one of those, and this call would still wait.
    let answered = tokio::time::timeout(std::time::Duration::from_secs(30), asking)
        .await
        .expect("the handshake client's own question came first");
    let done: Value = answered.unwrap().json().await.unwrap();
    assert_eq!(text(&done), "elicitation decline", "{done}");
}

/// A 2026-07-28 client's `subscriptions/listen` on the gateway: the stream opens with
/// the acknowledgement of what it will carry, then a resource's update when the
/// resource changes, each tagged with the subscription's id; in front of a server of
/// both generations (its handshake session's subscription) and of a 2026-07-28-only
/// one (its own listen stream).
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_listens_for_changes() {
    for revision in [McpRevision::Both, McpRevision::Modern] {
        let (_tb, k) = saved(revision).await;
        let (_gw, gw) = listen(&k, &[]).await;
        let (_, _, discover) =
            send_modern(&gw, &modern(1, "server/discover", json!({}), json!({}))).await;
        assert_eq!(
            discover["result"]["capabilities"]["resources"]["subscribe"], true,
            "{discover}"
        );
        let listen_request = modern(
            5,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["testbed://readme"]}}),
            json!({}),
        );
        let headers = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "subscriptions/listen"),
            ("accept", "application/json, text/event-stream"),
        ];
        let mut stream =
            crate::serve::Events::of(post_as(&gw, listen_request.clone(), &headers).await);
        let ack = stream.next().await;
        assert_eq!(
            ack["method"], "notifications/subscriptions/acknowledged",
            "{ack}"
        );
        let id = &listen_request["id"];
        assert_eq!(
            ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], *id,
            "{ack}"
        );
        assert_eq!(
            ack["params"]["notifications"]["resourceSubscriptions"],
            json!(["testbed://readme"]),
            "{ack}"
        );
        let touch = modern(
            7,
            "tools/call",
            json!({"name": "alpha__touch", "arguments": {}}),
            json!({}),
        );
        let (status, _, touched) = send_modern(&gw, &touch).await;
        assert_eq!(status, 200, "{touched}");
        let updated = stream.next().await;
        assert_eq!(
            updated["method"], "notifications/resources/updated",
            "{revision:?}: {updated}"
        );
        assert_eq!(updated["params"]["uri"], "testbed://readme");
        assert_eq!(
            updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"], *id,
            "{updated}"
        );
    }
}

/// A handshake client that declared it can answer elicitations, in front of a server
/// that speaks only 2026-07-28, but with no stream open to be asked on: the call ends
/// at once with an error that says what to open, rather than wait for an answer that
/// cannot come. With its GET stream open, it is asked there.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_needs_a_stream_to_be_asked_on() {
    let (_tb, k) = saved(McpRevision::Modern).await;
    let (_gw, gw) = listen(&k, &[]).await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"elicitation": {}},
        "clientInfo": {"name": "t", "version": "1"}}});
    let r = post_as(&gw, init, &[]).await;
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let with_session = [("mcp-session-id", session.as_str())];
    let ask = |id: u64| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "alpha__ask_name", "arguments": {}}});
    let r: Value = post_as(&gw, ask(2), &with_session)
        .await
        .json()
        .await
        .unwrap();
    let why = r["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(why.contains("no stream open"), "{why}");

    let mut events = crate::serve::Events::open(&gw, &session).await;
    let call = tokio::spawn({
        let (gw, session) = (gw.clone(), session.clone());
        async move { post_as(&gw, ask(3), &[("mcp-session-id", session.as_str())]).await }
    });
    let asked = events.next().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"name": "Ada"}}});
    assert_eq!(post_as(&gw, answer, &with_session).await.status(), 202);
    let done: Value = call.await.unwrap().json().await.unwrap();
    assert_eq!(text(&done), "name Ada", "{done}");
}
