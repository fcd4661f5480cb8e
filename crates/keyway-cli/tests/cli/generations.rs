//! `keyway proxy` between MCP generations: a stdio client of a handshake revision
//! (this test) in front of a testbed that speaks only 2026-07-28, and the bad input
//! that crossing brings.

use keyway_testbed::McpRevision;
use serde_json::{Value, json};

use crate::{
    harness::{Keyway, stderr, testbed},
    proxy::{Client, text},
};

/// Client capabilities of a 2025-era client that can answer everything.
fn capable() -> Value {
    json!({"elicitation": {}, "sampling": {}, "roots": {"listChanged": true}})
}

impl Client {
    /// `initialize` at `version` with `capabilities`, then `initialized`.
    async fn initialize_as(&mut self, version: &str, capabilities: Value) -> Value {
        let r = self
            .request(
                "initialize",
                json!({"protocolVersion": version, "capabilities": capabilities,
                       "clientInfo": {"name": "old-client", "version": "1"}}),
            )
            .await;
        self.notify("notifications/initialized").await;
        r
    }

    /// Send a request and answer what the server asks meanwhile (an elicitation with
    /// the name "Ada", a sampling request with "hello Ada", roots with one file root)
    /// until its answer comes; the answer and the methods asked, in order.
    async fn request_answering(&mut self, method: &str, params: Value) -> (Value, Vec<String>) {
        let id = json!(format!("q-{method}-{}", self.seen.len()));
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let mut asked = Vec::new();
        loop {
            let m = self.next().await;
            if m.get("id") == Some(&id) && m.get("method").is_none() {
                return (m, asked);
            }
            let (Some(ask), Some(ask_id)) = (m["method"].as_str(), m.get("id")) else {
                self.seen.push(m);
                continue;
            };
            let result = match ask {
                "elicitation/create" => json!({"action": "accept", "content": {"name": "Ada"}}),
                "sampling/createMessage" => json!({"role": "assistant",
                    "content": {"type": "text", "text": "hello Ada"}, "model": "test-model"}),
                "roots/list" => json!({"roots": [{"uri": "file:///work/ada", "name": "ada"}]}),
                other => panic!("the client was asked {other}"),
            };
            asked.push(ask.to_owned());
            self.send(&json!({"jsonrpc": "2.0", "id": ask_id, "result": result}))
                .await;
        }
    }
}

async fn modern_testbed(f: impl FnOnce(&mut keyway_testbed::Knobs)) -> keyway_testbed::Testbed {
    testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Modern;
        f(k);
    })
    .await
}

/// A 2025-11-25 client through the proxy to a server that knows only 2026-07-28:
/// keyway answers `initialize` from `server/discover`, answers `ping` itself, and the
/// server's `input_required` rounds reach the client as the server requests its
/// revision knows, each answered tool call coming back whole. No session, no
/// DELETE, no GET stream: one POST per request the server has to see.
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_client_reaches_a_2026_server_through_the_proxy() {
    let tb = modern_testbed(|_| {}).await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    let init = c.initialize_as("2025-11-25", capable()).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    assert_eq!(init["result"]["serverInfo"]["name"], "keyway-testbed");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    assert!(init["result"]["instructions"].is_string(), "{init}");
    let ping = c.request("ping", json!({})).await;
    assert_eq!(ping["result"], json!({}));
    let set_level = c
        .request("logging/setLevel", json!({"level": "debug"}))
        .await;
    assert_eq!(set_level["result"], json!({}));
    assert_eq!(
        tb.stats().path("POST /mcp"),
        1,
        "only server/discover so far: {:?}",
        tb.stats().paths
    );
    let tools = c.request("tools/list", json!({})).await;
    let names: Vec<&str> = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for wanted in ["echo", "ask_name", "sample", "list_roots", "two_rounds"] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    let echo = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "hi"}}),
        )
        .await;
    assert_eq!(text(&echo), "hi");

    for (tool, want, asked) in [
        ("ask_name", "name Ada", vec!["elicitation/create"]),
        (
            "sample",
            "sampled hello Ada",
            vec!["sampling/createMessage"],
        ),
        ("list_roots", "roots [file:///work/ada]", vec!["roots/list"]),
        (
            "two_rounds",
            "name Ada; sampled hello Ada",
            vec!["elicitation/create", "sampling/createMessage"],
        ),
    ] {
        let (r, seen) = c
            .request_answering("tools/call", json!({"name": tool, "arguments": {}}))
            .await;
        assert_eq!(text(&r), want, "{tool}: {r}");
        assert_eq!(seen, asked, "{tool}");
    }
    let prompt = c
        .request(
            "prompts/get",
            json!({"name": "greet", "arguments": {"name": "Ada"}}),
        )
        .await;
    assert_eq!(
        prompt["result"]["messages"][0]["content"]["text"],
        "Say hello to Ada."
    );
    let read = c
        .request("resources/read", json!({"uri": "testbed://readme"}))
        .await;
    assert!(read["result"]["contents"][0]["text"].is_string(), "{read}");
    let out = c.finish().await;
    assert!(
        out.stdout.is_empty(),
        "nothing but frames, all read already"
    );
    let stats = tb.stats();
    // discover, tools/list, echo; each interactive call and its retries (one per
    // round: 2, 2, 2, 3); the prompt and the resource. Nothing else.
    assert_eq!(
        stats.path("POST /mcp"),
        1 + 1 + 1 + (2 + 2 + 2 + 3) + 1 + 1,
        "{:?}",
        stats.paths
    );
    assert_eq!(stats.path("DELETE /mcp"), 0);
    assert_eq!(stats.path("GET /mcp"), 0);
}

/// `resources/subscribe` from a handshake-era client becomes a
/// `subscriptions/listen` stream: a change reaches the client as
/// `notifications/resources/updated`, and nothing of the stream's own handshake does.
#[tokio::test(flavor = "multi_thread")]
async fn a_resource_subscription_is_carried_by_subscriptions_listen() {
    let tb = modern_testbed(|_| {}).await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    c.initialize_as("2025-06-18", json!({})).await;
    let r = c
        .request("resources/subscribe", json!({"uri": "testbed://readme"}))
        .await;
    assert_eq!(r["result"], json!({}), "{r}");
    // The stream is open once the server counts a subscriber: touch until it does.
    loop {
        let touched = c.request("tools/call", json!({"name": "touch"})).await;
        if !text(&touched).contains("(0 subscribers)") {
            break;
        }
    }
    // On the listen stream, so before or after the touch's own answer.
    let updated = match c
        .seen
        .iter()
        .position(|m| m["method"] == "notifications/resources/updated")
    {
        Some(at) => c.seen.remove(at),
        None => c.next().await,
    };
    assert_eq!(
        updated["method"], "notifications/resources/updated",
        "{updated}"
    );
    assert_eq!(updated["params"]["uri"], "testbed://readme");
    assert!(
        c.seen
            .iter()
            .all(|m| m["method"] != "notifications/subscriptions/acknowledged"),
        "{:?}",
        c.seen
    );
    c.finish().await;
}

/// A server that never stops asking is stopped after [`keyway::bridge::MAX_ROUNDS`]
/// rounds, with an error that says so; one whose `requestState` is over the limit is
/// refused without carrying it back.
#[tokio::test(flavor = "multi_thread")]
async fn endless_and_oversized_input_required_end_with_clear_errors() {
    let tb = modern_testbed(|k| k.input_required_forever = true).await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    c.initialize_as("2025-11-25", capable()).await;
    let before = tb.stats().path("POST /mcp");
    let (r, asked) = c
        .request_answering("tools/call", json!({"name": "ask_name", "arguments": {}}))
        .await;
    let why = r["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(why.contains("after 10 rounds"), "{why}");
    assert_eq!(asked.len(), keyway::bridge::MAX_ROUNDS);
    assert_eq!(
        tb.stats().path("POST /mcp") - before,
        // tools/list (for the tool's headers) and the call plus its 10 retries.
        1 + 1 + keyway::bridge::MAX_ROUNDS as u64
    );
    c.finish().await;

    let tb =
        modern_testbed(|k| k.request_state_bytes = keyway::bridge::MAX_REQUEST_STATE + 1).await;
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    c.initialize_as("2025-11-25", capable()).await;
    let (r, asked) = c
        .request_answering("tools/call", json!({"name": "ask_name", "arguments": {}}))
        .await;
    let why = r["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert!(
        why.contains("requestState") && why.contains("limit"),
        "{why}"
    );
    assert!(
        asked.is_empty(),
        "nothing asked for a state keyway will not carry"
    );
    c.finish().await;
}

/// A client that refuses the server's question (or lacks the capability) gets its
/// call answered with the refusal, not a hang; a cancelled call's pending question
/// is dropped with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_question_fails_the_call_that_needed_it() {
    let tb = modern_testbed(|_| {}).await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    c.initialize_as("2025-11-25", capable()).await;
    c.send(
        &json!({"jsonrpc": "2.0", "id": "call", "method": "tools/call",
        "params": {"name": "ask_name", "arguments": {}}}),
    )
    .await;
    let asked = c.next().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    c.send(&json!({"jsonrpc": "2.0", "id": asked["id"], "error": {"code": -32601, "message": "no forms here"}}))
        .await;
    let answer = c.next().await;
    assert_eq!(answer["id"], "call", "{answer}");
    assert_eq!(answer["error"]["code"], -32601, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no forms here")),
        "{answer}"
    );
    // Cancelled while its question is open: no answer comes, and the proxy still
    // serves the next request.
    c.send(
        &json!({"jsonrpc": "2.0", "id": "gone", "method": "tools/call",
        "params": {"name": "ask_name", "arguments": {}}}),
    )
    .await;
    let asked = c.next().await;
    assert_eq!(asked["method"], "elicitation/create", "{asked}");
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "gone"}}))
        .await;
    let echo = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "after"}}),
        )
        .await;
    assert_eq!(text(&echo), "after");
    assert!(
        c.seen.iter().all(|m| m["id"] != "gone"),
        "a cancelled call is not answered: {:?}",
        c.seen
    );
    c.finish().await;
}

/// `--protocol` decides: a handshake revision passes the client's own `initialize`
/// through (no `server/discover`), and `2026-07-28` to a server that speaks only the
/// handshake is refused at `initialize` with what to do.
#[tokio::test(flavor = "multi_thread")]
async fn protocol_flag_pins_the_generation() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let mut c = Client::spawn(
        &k,
        &[
            "proxy",
            tb.mcp_url(),
            "--transport",
            "http",
            "--protocol",
            "2025-06-18",
        ],
    );
    let init = c.initialize_as("2025-06-18", json!({})).await;
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18", "{init}");
    c.finish().await;
    assert_eq!(
        tb.stats().path("POST /mcp"),
        2,
        "initialize and initialized, no discover"
    );

    let legacy = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
    })
    .await;
    let mut c = Client::spawn(
        &k,
        &[
            "proxy",
            legacy.mcp_url(),
            "--transport",
            "http",
            "--protocol",
            "2026-07-28",
        ],
    );
    let init = c
        .request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "old-client", "version": "1"}}),
        )
        .await;
    let why = init["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{init}"));
    assert!(why.contains("--protocol auto"), "{why}");
    c.finish().await;

    let out = k
        .run_async(&["proxy", tb.mcp_url(), "--protocol", "2027-01-01"])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown protocol revision `2027-01-01`"),
        "{}",
        stderr(&out)
    );
}

/// The same client to a server that speaks both: auto picks 2026-07-28 (and the
/// client cannot tell), to one that speaks only the handshake: the client's own
/// `initialize` goes through after one refused `server/discover`.
#[tokio::test(flavor = "multi_thread")]
async fn auto_speaks_what_the_server_speaks() {
    for (revision, posts, deletes) in [(McpRevision::Both, 2, 0), (McpRevision::Legacy, 4, 1)] {
        let tb = testbed(|k| {
            k.open = true;
            k.mcp_revision = revision;
        })
        .await;
        let k = Keyway::new();
        let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
        let init = c.initialize_as("2025-11-25", json!({})).await;
        assert_eq!(
            init["result"]["protocolVersion"], "2025-11-25",
            "{revision:?}"
        );
        let tools = c.request("tools/list", json!({})).await;
        assert!(tools["result"]["tools"].is_array(), "{revision:?}: {tools}");
        c.finish().await;
        let stats = tb.stats();
        // 2026: discover, tools/list. Handshake: discover (refused), initialize,
        // initialized, tools/list.
        assert_eq!(
            stats.path("POST /mcp"),
            posts,
            "{revision:?}: {:?}",
            stats.paths
        );
        assert_eq!(stats.path("DELETE /mcp"), deletes, "{revision:?}");
    }
}

/// The revision a saved server speaks, as `keyway list --json` shows it.
async fn saved_protocol(k: &Keyway, name: &str) -> Value {
    let out = k.run_async(&["--json", "list"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {rows}"))["protocol"]
        .clone()
}

/// Edit the saved revision behind keyway's back (a server that moved on since).
fn pretend_spoken(k: &Keyway, name: &str, revision: &str) {
    rusqlite::Connection::open(k.home.path().join("keyway.db"))
        .unwrap()
        .execute(
            "UPDATE servers SET protocol = ?1 WHERE name = ?2",
            [revision, name],
        )
        .unwrap();
}

/// A saved server's revision is remembered: a handshake server gets its `initialize`
/// without a `server/discover` first, and a server that moved to 2026-07-28 since is
/// asked again when the remembered handshake is refused, by the proxy and by `tools`
/// alike, and the record follows.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_server_remembers_the_revision_it_speaks() {
    let old = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
    })
    .await;
    let new = modern_testbed(|_| {}).await;
    let k = Keyway::new();
    for (name, tb) in [("old", &old), ("new", &new)] {
        let out = k.run_async(&["add", tb.mcp_url(), "--name", name]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(saved_protocol(&k, "old").await, "2025-11-25");
    assert_eq!(saved_protocol(&k, "new").await, "2026-07-28");

    let before = old.stats().path("POST /mcp");
    let mut c = Client::spawn(&k, &["proxy", "old"]);
    c.initialize_as("2025-11-25", json!({})).await;
    let tools = c.request("tools/list", json!({})).await;
    assert!(tools["result"]["tools"].is_array(), "{tools}");
    c.finish().await;
    assert_eq!(
        old.stats().path("POST /mcp") - before,
        3,
        "initialize, initialized, tools/list: no server/discover"
    );

    // The server moved on: the handshake is refused, discover tells, the record
    // follows. Through the proxy...
    pretend_spoken(&k, "new", "2025-11-25");
    let mut c = Client::spawn(&k, &["proxy", "new"]);
    let init = c.initialize_as("2025-11-25", json!({})).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "keyway-testbed",
        "{init}"
    );
    let r = c
        .request(
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "moved"}}),
        )
        .await;
    assert_eq!(text(&r), "moved");
    c.finish().await;
    assert_eq!(saved_protocol(&k, "new").await, "2026-07-28");
    // ...and through a command of keyway's own.
    pretend_spoken(&k, "new", "2025-06-18");
    let out = k.run_async(&["tools", "new"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo"));
    assert_eq!(saved_protocol(&k, "new").await, "2026-07-28");
}

/// A 2026-07-28 request on stdio.
fn modern_request(id: &str, method: &str, mut params: Value) -> Value {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
        "io.modelcontextprotocol/clientInfo": {"name": "new-client", "version": "2"},
    });
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

impl Client {
    /// Send `request` and wait for its answer.
    async fn ask(&mut self, request: Value) -> Value {
        let id = request["id"].clone();
        self.send(&request).await;
        loop {
            let m = self.next().await;
            if m.get("id") == Some(&id) && m.get("method").is_none() {
                return m;
            }
            self.seen.push(m);
        }
    }
}

/// A 2026-07-28 client through the proxy: to a server that speaks only the handshake,
/// keyway starts a session itself (named after the client), answers
/// `server/discover` from it, and sends the requests on it without the 2026-07-28
/// metadata; to a 2026-07-28 server, everything passes as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_reaches_a_handshake_server_through_the_proxy() {
    let old = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
    })
    .await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", old.mcp_url(), "--transport", "http"]);
    let discover = c
        .ask(modern_request("d", "server/discover", json!({})))
        .await;
    let result = &discover["result"];
    assert_eq!(
        result["supportedVersions"],
        json!(["2026-07-28"]),
        "{discover}"
    );
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "keyway-testbed"
    );
    assert!(result["capabilities"]["tools"].is_object(), "{discover}");
    // Resource updates and list changes are served on subscriptions/listen.
    assert_eq!(
        result["capabilities"]["resources"]["subscribe"], true,
        "{discover}"
    );
    let tools = c.ask(modern_request("l", "tools/list", json!({}))).await;
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        9,
        "{tools}"
    );
    // A 2026-07-28 list result carries caching hints; the old server's had none.
    assert_eq!(tools["result"]["ttlMs"], 0, "{tools}");
    assert_eq!(tools["result"]["cacheScope"], "private", "{tools}");
    let echo = c
        .ask(modern_request(
            "e",
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "to the old one"}}),
        ))
        .await;
    assert_eq!(text(&echo), "to the old one");
    // A tool that needs the client's input: the server's elicitation comes back as a
    // round (see the next test).
    let asked = c
        .ask(modern_request(
            "a",
            "tools/call",
            json!({"name": "ask_name", "arguments": {}}),
        ))
        .await;
    assert_eq!(asked["result"]["resultType"], "input_required", "{asked}");
    c.finish().await;
    let stats = old.stats();
    assert_eq!(
        stats.path("DELETE /mcp"),
        1,
        "keyway's session ends with the proxy"
    );

    let new = modern_testbed(|_| {}).await;
    let mut c = Client::spawn(&k, &["proxy", new.mcp_url(), "--transport", "http"]);
    let discover = c
        .ask(modern_request("d", "server/discover", json!({})))
        .await;
    assert!(
        discover["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    let echo = c
        .ask(modern_request(
            "e",
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "as it is"}}),
        ))
        .await;
    assert_eq!(text(&echo), "as it is");
    c.finish().await;
    assert_eq!(
        new.stats().path("POST /mcp"),
        2,
        "the client's own discover and call, nothing of keyway's"
    );
}

/// A server that names 2026-07-28 in `server/discover` but wants a session for
/// everything after it (it speaks the handshake): `keyway call` takes the handshake
/// once the first request is refused for want of a session; a handshake client through
/// the proxy gets a JSON-RPC error that says what the server said, never a hang.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_claims_2026_but_wants_a_session() {
    let tb = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
        k.claims_2026 = true;
    })
    .await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "call",
            "--url",
            tb.mcp_url(),
            "echo",
            "--args",
            r#"{"text":"after all"}"#,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("after all"));

    let mut c = Client::spawn(&k, &["proxy", tb.mcp_url(), "--transport", "http"]);
    let init = c.initialize_as("2025-11-25", json!({})).await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "claims-2026",
        "{init}"
    );
    let tools = c.request("tools/list", json!({})).await;
    let why = tools["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{tools}"));
    assert!(why.contains("No valid session"), "{why}");
    c.finish().await;
}

/// A retry of `request` (a 2026-07-28 request) under `id` with `answers` and `state`.
fn retry(request: &Value, id: &str, answers: Value, state: &Value) -> Value {
    let mut retry = request.clone();
    retry["id"] = json!(id);
    retry["params"]["inputResponses"] = answers;
    retry["params"]["requestState"] = state.clone();
    retry
}

/// The one question of an `input_required` answer: its key and the request.
fn only_question(answer: &Value) -> (String, Value) {
    assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
    let questions = answer["result"]["inputRequests"].as_object().unwrap();
    assert_eq!(questions.len(), 1, "{answer}");
    let (key, q) = questions.iter().next().unwrap();
    (key.clone(), q.clone())
}

/// A handshake server's own requests reach a 2026-07-28 client through the proxy as
/// rounds: the call is answered `input_required` with the server's question, and the
/// retry with the client's answer completes it (two rounds for two questions). A
/// `requestState` tampered with or used twice is refused and leaves the server's
/// request waiting for the real one; a question the client declared no capability for
/// is refused to the server, whose tool says so.
#[tokio::test(flavor = "multi_thread")]
async fn a_handshake_servers_questions_become_rounds_for_a_2026_client() {
    let old = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
    })
    .await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", old.mcp_url(), "--transport", "http"]);
    let mut both = modern_request(
        "t1",
        "tools/call",
        json!({"name": "two_rounds", "arguments": {}}),
    );
    both["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"elicitation": {}, "sampling": {}});
    let first = c.ask(both.clone()).await;
    let (key, q) = only_question(&first);
    assert_eq!(q["method"], "elicitation/create", "{first}");
    assert_eq!(q["params"]["message"], "What is your name?");
    let state = first["result"]["requestState"].clone();
    // Tampered with: refused, and the round is still there for the real state.
    let mut tampered = state.as_str().unwrap().to_owned();
    tampered.push('0');
    let bad = c.ask(retry(&both, "t2", json!({}), &json!(tampered))).await;
    assert_eq!(bad["error"]["code"], -32602, "{bad}");
    let accept = json!({key: {"action": "accept", "content": {"name": "Ada"}}});
    let second = c.ask(retry(&both, "t3", accept.clone(), &state)).await;
    let (key2, q2) = only_question(&second);
    assert_eq!(q2["method"], "sampling/createMessage", "{second}");
    // Used twice: that round is over.
    let again = c.ask(retry(&both, "t4", accept, &state)).await;
    assert_eq!(again["error"]["code"], -32602, "{again}");
    let sampled = json!({key2: {"role": "assistant", "model": "m", "content": {"type": "text", "text": "Hello, Ada"}}});
    let done = c
        .ask(retry(
            &both,
            "t5",
            sampled,
            &second["result"]["requestState"],
        ))
        .await;
    assert_eq!(text(&done), "name Ada; sampled Hello, Ada", "{done}");

    // No sampling capability declared: the server hears so, and its tool says.
    let mut sample = modern_request(
        "s1",
        "tools/call",
        json!({"name": "sample", "arguments": {}}),
    );
    sample["params"]["_meta"]["io.modelcontextprotocol/clientCapabilities"] =
        json!({"elicitation": {}});
    let refused = c.ask(sample).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(text(&refused).contains("sampling capability"), "{refused}");

    // The client's cancellation reaches the server under keyway's id for the call.
    let slow = modern_request(
        "slow",
        "tools/call",
        json!({"name": "slow", "arguments": {"ms": 60_000}}),
    );
    c.send(&slow).await;
    old.slow_calls_start(1).await;
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "slow"}}))
        .await;
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        old.cancelled_calls_reach(1),
    )
    .await
    .expect("the server heard of the cancellation");
    // A round the client never comes back to does not keep the proxy from ending.
    let left = c
        .ask(modern_request(
            "n",
            "tools/call",
            json!({"name": "ask_name", "arguments": {}}),
        ))
        .await;
    assert_eq!(left["result"]["resultType"], "input_required", "{left}");
    c.finish().await;
}

/// A 2026-07-28 client's `subscriptions/listen` through the proxy to a handshake
/// server: acknowledged, then the updates of the resource it named (keyway subscribed
/// on the session), tagged with the subscription's id; cancelling it unsubscribes.
#[tokio::test(flavor = "multi_thread")]
async fn a_2026_client_listens_through_the_proxy_to_a_handshake_server() {
    let old = testbed(|k| {
        k.open = true;
        k.mcp_revision = McpRevision::Legacy;
    })
    .await;
    let k = Keyway::new();
    let mut c = Client::spawn(&k, &["proxy", old.mcp_url(), "--transport", "http"]);
    c.ask(modern_request("d", "server/discover", json!({})))
        .await;
    let listen = modern_request(
        "sub",
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true, "resourceSubscriptions": ["testbed://readme"]}}),
    );
    c.send(&listen).await;
    let ack = c.next().await;
    assert_eq!(
        ack["method"], "notifications/subscriptions/acknowledged",
        "{ack}"
    );
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub"
    );
    assert_eq!(
        ack["params"]["notifications"]["resourceSubscriptions"],
        json!(["testbed://readme"]),
        "{ack}"
    );
    assert_eq!(old.stats().resource_subscribes, 1);
    let touch = c
        .ask(modern_request(
            "t",
            "tools/call",
            json!({"name": "touch", "arguments": {}}),
        ))
        .await;
    assert!(text(&touch).starts_with("touched"), "{touch}");
    let updated = match c
        .seen
        .iter()
        .find(|m| m["method"] == "notifications/resources/updated")
    {
        Some(m) => m.clone(),
        None => c.next().await,
    };
    assert_eq!(
        updated["method"], "notifications/resources/updated",
        "{updated}"
    );
    assert_eq!(
        updated["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "sub"
    );
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "sub"}}))
        .await;
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        old.unsubscribes_reach(1),
    )
    .await
    .expect("the cancelled stream's resource was unsubscribed");
    c.finish().await;
}
