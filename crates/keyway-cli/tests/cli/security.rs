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
            "SELECT c.sealed FROM credentials c JOIN servers s ON s.id = c.server_id WHERE s.name = 'bad'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    *sealed.last_mut().unwrap() ^= 1;
    db.execute(
        "UPDATE credentials SET sealed = ?1 WHERE server_id = (SELECT id FROM servers WHERE name = 'bad')",
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

    // doctor names it as a problem (and so exits 1), and shows the other.
    let out = k.run(&["doctor", "--offline"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("problem     bad: ") && text.contains("good"),
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
        // Bounded: a gateway that never names its token (as before the fix) fails
        // the test instead of hanging it.
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the gateway names its token file when it starts")
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
    // A page the gateway itself served (its own origin) is fine.
    let own: &'static str = Box::leak(url.trim_end_matches("/mcp").to_owned().into_boxed_str());
    assert_eq!(
        send("application/json", Some(bearer.clone()), Some(own)).await,
        200
    );
    drop(child);
}

/// A static token or a configured header is not sent over plain http to another
/// machine unless --allow-http says so: `add`, `probe` and `proxy` refuse before
/// connecting, and nothing is saved. (Before, they were sent in the clear.)
#[test]
fn secrets_never_cross_the_network_in_the_clear() {
    let k = Keyway::new();
    for args in [
        &[
            "add",
            "http://mcp.example.com/mcp",
            "--token",
            "tok-secret",
            "--force",
        ][..],
        &[
            "add",
            "http://10.1.2.3/mcp",
            "--header",
            "X-Api-Key: key-secret",
            "--force",
        ],
        &[
            "probe",
            "http://mcp.example.com/mcp",
            "--token",
            "tok-secret",
        ],
        &[
            "proxy",
            "http://mcp.example.com/mcp",
            "--token",
            "tok-secret",
        ],
    ] {
        let out = k.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("plain http") && err.contains("--allow-http"),
            "{err}"
        );
        assert!(
            !err.contains("-secret"),
            "the error shows the secret: {err}"
        );
    }
    let listed = json(&k.run(&["--json", "list"]));
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(0),
        "nothing was saved"
    );
    // On purpose, for development: saved.
    let out = k.run(&[
        "add",
        "http://mcp.example.com/mcp",
        "--token",
        "tok-secret",
        "--force",
        "--allow-http",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Header values can come from a file (`@FILE`) or the environment (`${VAR}`), so they
/// need not be on the command line where other users see them; a malformed header is
/// reported without its text.
#[tokio::test(flavor = "multi_thread")]
async fn header_values_come_from_files_and_the_environment_and_errors_hide_them() {
    let k = Keyway::new();
    let file = k.home.path().join("api-key");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let out = k
        .cmd(&[
            "add",
            "https://mcp.example.com/mcp",
            "--name",
            "ex",
            "--header",
            &format!("X-Api-Key: @{}", file.display()),
            "--header",
            "X-Tenant: t-${KEYWAY_TEST_TENANT}-1",
            "--header",
            "X-Literal: @@at-$${not-a-var}",
            "--force",
        ])
        .env("KEYWAY_TEST_TENANT", "from-the-env")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let store = keyway::store::SqliteStore::open(
        k.home.path(),
        keyway::store::OpenOptions {
            use_keychain: false,
        },
    )
    .unwrap();
    use keyway::store::Store;
    let server = store.server("ex").await.unwrap().unwrap();
    let headers: Vec<(String, String)> = store
        .headers(&server.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.expose().to_owned()))
        .collect();
    assert_eq!(
        headers,
        [
            ("x-api-key".to_owned(), "from-a-file".to_owned()),
            ("x-tenant".to_owned(), "t-from-the-env-1".to_owned()),
            ("x-literal".to_owned(), "@at-${not-a-var}".to_owned()),
        ]
    );

    for (header, shown, hidden) in [
        (
            "no-colon-here-secret-value",
            "--header number 1",
            "secret-value",
        ),
        (
            "X-Key: ${KEYWAY_TEST_UNSET_VAR}",
            "KEYWAY_TEST_UNSET_VAR",
            "$$",
        ),
        (
            "X-Key: bad\u{1}secret-value",
            "--header x-key",
            "secret-value",
        ),
    ] {
        let out = k.run(&["probe", "https://mcp.example.com/mcp", "--header", header]);
        assert_eq!(out.status.code(), Some(2), "{header}");
        let err = stderr(&out);
        assert!(err.contains(shown), "{err}");
        assert!(!err.contains(hidden), "the value is shown: {err}");
    }
}

/// The browser (and whatever it starts, which outlives keyway) gets none of keyway's
/// environment variables: the store key and secrets stay with keyway.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_gets_none_of_keyways_variables() {
    use std::os::unix::fs::PermissionsExt;
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let script = k.home.path().join("browser.sh");
    let seen = k.home.path().join("browser.env");
    std::fs::write(&script, "#!/bin/sh\nenv > \"$BROWSER_ENV_OUT\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = tokio::process::Command::from(k.cmd(&[
        "call",
        "--url",
        tb.mcp_url(),
        "echo",
        "--auth-timeout",
        "1",
    ]))
    .env("BROWSER", &script)
    .env("BROWSER_ENV_OUT", &seen)
    .env(
        "KEYWAY_STORE_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .env("KEYWAY_SOMETHING_SECRET", "marker-value")
    .output()
    .await
    .unwrap();
    assert!(!out.status.success(), "nobody came back from the browser");
    let env = std::fs::read_to_string(&seen).expect("the browser ran");
    assert!(env.contains("BROWSER_ENV_OUT="), "{env}");
    assert!(
        !env.contains("KEYWAY_"),
        "keyway's variables reached the browser: {env}"
    );
    assert!(!env.contains("marker-value"));
}

/// `--log-file` is created readable by its owner only, and an existing one is made so.
#[test]
fn the_log_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let k = Keyway::new();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let new = k.home.path().join("new.log");
    assert!(
        k.run(&["-v", "--log-file", new.to_str().unwrap(), "list"])
            .status
            .success()
    );
    assert_eq!(mode(&new), 0o600);
    let old = k.home.path().join("old.log");
    std::fs::write(&old, "").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        k.run(&["--log-file", old.to_str().unwrap(), "list"])
            .status
            .success()
    );
    assert_eq!(mode(&old), 0o600);
}

/// A keyway process never leaves a core file with its secrets, even when started
/// with core dumps allowed.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread")]
async fn a_keyway_process_dumps_no_core() {
    use tokio::io::AsyncBufReadExt;
    let k = Keyway::new();
    let keyway = k.cmd(&[]).get_program().to_owned();
    let mut cmd = tokio::process::Command::from(k.cmd(&[]));
    // The same command, started by a shell that allows core dumps first (as far as
    // the machine's hard limit lets it).
    let mut sh = tokio::process::Command::new("/bin/sh");
    sh.args([
        "-c",
        "ulimit -S -c \"$(ulimit -H -c)\" 2>/dev/null; exec \"$0\" \"$@\"",
    ])
    .arg(&keyway)
    .args(["serve", "--listen", "127.0.0.1:0"]);
    for (key, value) in cmd.as_std().get_envs() {
        match value {
            Some(v) => sh.env(key, v),
            None => sh.env_remove(key),
        };
    }
    let _ = &mut cmd;
    let mut child = sh
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("keyway gateway on ") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    // "Max core file size  SOFT  HARD  bytes": the soft limit is keyway's to lower
    // (programs it starts keep the hard one). Where the machine's hard limit is 0
    // already, this cannot tell the fix from its absence; elsewhere the shell raised
    // the soft limit first.
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(fields[4], "0", "{core}");
}

/// A server that refuses every token does not get the person signed in again and
/// again for every message through one proxy: after a few sign-ins the proxy stops
/// asking and says what to do. (Before, each message started up to two.)
#[tokio::test(flavor = "multi_thread")]
async fn one_proxy_session_signs_in_a_bounded_number_of_times() {
    // No refresh tokens: every refusal can only be met by signing in again.
    let tb = testbed(|k| {
        k.always_401 = true;
        k.no_refresh_token = true;
    })
    .await;
    let k = Keyway::new();
    let mut c = crate::proxy::Client::spawn(&k, &["proxy", tb.mcp_url(), "--browser", "follow"]);
    let mut errors = Vec::new();
    for _ in 0..8 {
        let r = c.request("tools/list", serde_json::json!({})).await;
        errors.push(
            r["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert!(
        errors.iter().any(|e| e.contains("sign-ins in a row")),
        "{errors:?}"
    );
    assert!(
        tb.stats().authorizations <= 5,
        "{} sign-ins",
        tb.stats().authorizations
    );
    c.finish().await;
}
