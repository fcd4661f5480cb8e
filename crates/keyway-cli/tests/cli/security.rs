//! What the security review of issue 14 found, each as the user meets it: a store
//! row that does not open, endpoints a server aims elsewhere, secrets on plain http,
//! files others could read, core dumps, repeated sign-ins.

use crate::harness::{Keyway, json, stderr, stdout, testbed};

/// Two servers with static tokens, saved without connecting.
fn two_token_servers(k: &Keyway) {
    for (name, token) in [("good", "good-token-value"), ("bad", "bad-token-value")] {
        let out = k.run(&[
            "add",
            &format!("https://{name}.example/mcp"),
            "--name",
            name,
            "--token",
            token,
            "--force",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

fn sql(k: &Keyway, statement: &str) {
    rusqlite::Connection::open(k.home.path().join("keyway.db"))
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

/// One credential that does not open (damaged here; a row edited outside keyway is
/// the same) fails neither `list` nor `doctor`: the others are shown, the bad one is
/// named with what to do, and `logout` forgets it. Before, both commands failed for
/// the whole store.
#[test]
fn one_unreadable_row_does_not_hide_the_others() {
    let k = Keyway::new();
    two_token_servers(&k);
    let before = json(&k.run(&["--json", "list"]));
    let good_before = before
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "good")
        .unwrap()
        .clone();
    let db = rusqlite::Connection::open(k.home.path().join("keyway.db")).unwrap();
    let mut sealed: Vec<u8> = db
        .query_row(
            "SELECT c.secret FROM credentials c JOIN servers s ON s.id = c.server_id WHERE s.name = 'bad'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    *sealed.last_mut().unwrap() ^= 1;
    db.execute(
        "UPDATE credentials SET secret = ?1 WHERE server_id = (SELECT id FROM servers WHERE name = 'bad')",
        [sealed],
    )
    .unwrap();
    drop(db);

    let out = k.run(&["--json", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let bad = rows.iter().find(|r| r["name"] == "bad").unwrap();
    let good = rows.iter().find(|r| r["name"] == "good").unwrap();
    assert_eq!(*good, good_before, "the other server is shown as before");
    assert_eq!(bad["state"], "error");
    assert_eq!(bad["action"], "set-token");
    assert!(
        bad["unreadable"]
            .as_str()
            .unwrap()
            .contains("keyway logout bad"),
        "{bad}"
    );

    let out = k.run(&["list"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("good"));
    assert!(stderr(&out).contains("warning: bad:"), "{}", stderr(&out));

    let out = k.run(&["doctor"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("unreadable  1 server(s)") && text.contains("  bad: "),
        "{text}"
    );
    assert!(!text.contains("token-value"));

    let out = k.run(&["--json", "logout", "bad"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)["forgotten"], true);
    let rows = json(&k.run(&["--json", "list"]));
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("unreadable").is_none())
    );
}

/// Editing a saved server's URL outside keyway does not send its token to the new
/// address: the call is refused with what to do, and nothing reaches the server
/// the URL now names.
#[tokio::test(flavor = "multi_thread")]
async fn a_url_edited_outside_keyway_does_not_get_the_token() {
    let k = Keyway::new();
    let tb = testbed(|_| {}).await;
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "tb", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let evil = testbed(|_| {}).await;
    sql(
        &k,
        &format!(
            "UPDATE servers SET url = '{}' WHERE name = 'tb'",
            evil.mcp_url()
        ),
    );
    let out = k
        .run_async(&["call", "tb", "echo", "--args", r#"{"text":"x"}"#])
        .await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot be opened"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        evil.stats().mcp_requests_with_token,
        0,
        "the token went to the new URL"
    );
}

/// `keyway serve --listen` on loopback used to run without a token, accept any
/// localhost origin and parse any POST: a page the user visited could call tools with
/// the user's credentials by a text/plain POST (no CORS preflight). Now a token is
/// always needed (made in the home, 0600, and announced), only JSON POSTs are read,
/// and only the gateway's own origin is accepted.
#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_gateway_cannot_be_driven_by_a_web_page() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncBufReadExt;

    let open = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = k
        .run_async(&["add", open.mcp_url(), "--name", "alpha"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let mut child = tokio::process::Command::from(k.cmd(&["serve", "--listen", "127.0.0.1:0"]))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut url = String::new();
    let token_path = loop {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("the gateway starts");
        if let Some(rest) = line.strip_prefix("keyway gateway on ") {
            url = rest.split_whitespace().next().unwrap().to_owned();
        }
        if let Some(rest) = line.strip_prefix("clients send Authorization: Bearer <the token in ") {
            break std::path::PathBuf::from(rest.trim_end_matches('>'));
        }
    };
    assert_eq!(token_path, k.home.path().join("gateway.token"));
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    assert!(token.trim().len() >= 32);
    let bearer = format!("Bearer {}", token.trim());

    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"pwned"}}}"#;
    let send = |content_type: &'static str, auth: Option<String>, origin: Option<&'static str>| {
        let mut req = reqwest::Client::new()
            .post(&url)
            .header("content-type", content_type)
            .body(call);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let calls_before = open.stats().path("POST /mcp");
    // What a page can send without a preflight: text/plain, no Authorization.
    assert_eq!(
        send("text/plain", None, Some("http://localhost:3000")).await,
        403
    );
    assert_eq!(send("text/plain", None, None).await, 401);
    // Each hurdle on its own.
    assert_eq!(send("text/plain", Some(bearer.clone()), None).await, 415);
    assert_eq!(
        send(
            "application/json",
            Some(bearer.clone()),
            Some("http://localhost:3000")
        )
        .await,
        403
    );
    assert_eq!(
        send(
            "application/json",
            Some(bearer.clone()),
            Some("http://127.0.0.1:1")
        )
        .await,
        403
    );
    assert_eq!(
        open.stats().path("POST /mcp"),
        calls_before,
        "a refused call reached the server"
    );
    assert_eq!(
        send("application/json", Some(bearer.clone()), None).await,
        200
    );
    drop(child);
}
