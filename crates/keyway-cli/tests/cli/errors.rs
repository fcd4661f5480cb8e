//! What failures say, and what they leave in the store: the cause on one line with
//! the next step (not the types they travelled through), and states that only change
//! for what the server did.

use crate::{
    everyday::row,
    harness::{Keyway, dead_mcp_url, json, stable, stderr, stdout, testbed},
};

/// Not rmcp's or hyper's types, not an OS error number: words.
fn reads_as_words(text: &str) {
    for internal in [
        "rmcp",
        "Transport",
        "WorkerTransport",
        "os error",
        "tcp connect error",
        "InvalidContentType",
        "client error (Connect)",
    ] {
        assert!(!text.contains(internal), "{internal:?} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_port_says_so_and_what_to_check() {
    let k = Keyway::new();
    let dead = dead_mcp_url();
    let out = k
        .run_async(&["add", &dead, "--name", "down", "--force"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let last = row(&k, "down").await.unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!last.contains('\n'), "{last}");
    assert!(last.contains("connection refused"), "{last}");
    assert!(last.contains("next: nothing accepts connections"), "{last}");
    reads_as_words(&last);

    // The same from a call: the error, then the hint; and the same one line saved.
    let out = k.run_async(&["call", "down", "echo"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    reads_as_words(&err);
    stable().bind(|| insta::assert_snapshot!(err));
    let last = row(&k, "down").await.unwrap()["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(last.contains("connection refused"), "{last}");
    reads_as_words(&last);
}

#[tokio::test(flavor = "multi_thread")]
async fn https_to_a_plain_http_port_suggests_http() {
    let tb = testbed(|k| k.open = true).await;
    let https = tb.mcp_url().replacen("http://", "https://", 1);
    let k = Keyway::new();
    let out = k.run_async(&["probe", &https]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    reads_as_words(&err);
    reads_as_words(&stdout(&out));
    assert!(err.contains("did not answer in TLS"), "{err}");
    assert!(err.contains(&format!("use {}", tb.mcp_url())), "{err}");

    let out = k
        .run_async(&["call", "--url", &https, "echo", "--args", r#"{"text":"x"}"#])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    reads_as_words(&err);
    assert!(err.contains(&format!("use {}", tb.mcp_url())), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mistyped_tool_or_a_short_timeout_leave_the_state_alone() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = k.run_async(&["add", tb.mcp_url(), "--name", "bed"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "bed").await.unwrap()["state"], "ready");

    let out = k.run_async(&["call", "bed", "ecko"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no tool \"ecko\""),
        "{}",
        stderr(&out)
    );
    let r = row(&k, "bed").await.unwrap();
    assert_eq!(
        (r["state"].as_str(), r["last_error"].as_null()),
        (Some("ready"), Some(()))
    );

    // The same server behind a TCP relay that can be told to stop answering: it
    // accepts connections and then says nothing, and the caller's own short
    // --timeout runs out. Reported; the state it had stays.
    let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}/mcp", relay.local_addr().unwrap());
    let upstream = tb
        .mcp_url()
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let stall = stalled.clone();
    let held = tokio::spawn(async move {
        let mut silent = Vec::new();
        while let Ok((mut conn, _)) = relay.accept().await {
            if stall.load(std::sync::atomic::Ordering::SeqCst) {
                silent.push(conn);
                continue;
            }
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
            });
        }
    });
    let out = k.run_async(&["add", &relay_url, "--name", "slow"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "slow").await.unwrap()["state"], "ready");
    stalled.store(true, std::sync::atomic::Ordering::SeqCst);
    let out = k.run_async(&["tools", "slow", "--timeout", "0.3"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("slow: timeout"), "{}", stdout(&out));
    let r = row(&k, "slow").await.unwrap();
    assert_eq!(
        (r["state"].as_str(), r["last_error"].as_null()),
        (Some("ready"), Some(()))
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_tells_disabled_and_unauthorized_from_silence() {
    let k = Keyway::new();
    let open = testbed(|k| k.open = true).await;
    assert!(
        k.run_async(&["add", open.mcp_url(), "--name", "open"])
            .await
            .status
            .success()
    );
    assert!(k.run_async(&["disable", "open"]).await.status.success());
    let out = k.run_async(&["tools"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("all 1 saved servers are disabled"), "{err}");
    assert!(err.contains("keyway enable"), "{err}");

    let oauth = testbed(|_| {}).await;
    assert!(
        k.run_async(&["add", oauth.mcp_url(), "--name", "locked", "--no-authorize"])
            .await
            .status
            .success()
    );
    let out = k.run_async(&["tools"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("locked needs authorization"), "{err}");
    assert!(err.contains("keyway authorize locked"), "{err}");

    let dead = dead_mcp_url();
    assert!(
        k.run_async(&["add", &dead, "--name", "down", "--force"])
            .await
            .status
            .success()
    );
    let out = k.run_async(&["tools", "down"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("down did not answer"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_show_and_add_agree_on_auth_state_and_action() {
    let open = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    // An API key in a header: "headers", ready, nothing to do (it was "needs-token").
    let out = k
        .run_async(&[
            "--json",
            "add",
            open.mcp_url(),
            "--name",
            "keyed",
            "--header",
            "X-Api-Key: abc",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let added = json(&out);
    let listed = row(&k, "keyed").await.unwrap();
    let shown = json(&k.run_async(&["show", "keyed", "--json"]).await);
    for v in [&added, &listed, &shown] {
        assert_eq!(
            (
                v["auth"].as_str(),
                v["state"].as_str(),
                v["action"].as_str()
            ),
            (Some("headers"), Some("ready"), Some("none")),
            "{v}"
        );
    }
    let table = stdout(&k.run_async(&["list"]).await);
    let show = stdout(&k.run_async(&["show", "keyed"]).await);
    let line = table.lines().nth(1).unwrap();
    assert!(
        line.contains("  headers  ") && line.contains("  2026-07-28  ready  -"),
        "{table}"
    );
    assert!(show.contains("action       -\n"), "{show}");
    assert!(show.contains("auth         headers\n"), "{show}");
}

/// The errors people meet most, as they read (one snapshot, so a change to any shows
/// in review): each says what failed, and the next step.
#[tokio::test(flavor = "multi_thread")]
async fn the_main_error_messages_read_well() {
    let oauth = testbed(|_| {}).await;
    let no_dcr = testbed(|k| k.no_dcr = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", oauth.mcp_url(), "--name", "locked", "--no-authorize"])
            .await
            .status
            .success()
    );
    assert!(
        k.run_async(&[
            "add",
            no_dcr.mcp_url(),
            "--name",
            "tokenonly",
            "--no-authorize"
        ])
        .await
        .status
        .success()
    );
    let dead = dead_mcp_url();
    let https_to_http = oauth.mcp_url().replacen("http://", "https://", 1);
    let not_config = k.home.path().join("notes.json");
    std::fs::write(&not_config, r#"{"editor": "vim"}"#).unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["show".into(), "nope".into()],
        vec!["add".into(), "mcp.example.com/mcp".into()],
        vec![
            "add".into(),
            oauth.mcp_url().into(),
            "--name".into(),
            "locked".into(),
        ],
        vec!["add".into(), dead.clone()],
        vec!["probe".into(), https_to_http],
        vec!["call".into(), "tokenonly".into(), "echo".into()],
        vec!["authorize".into(), "tokenonly".into()],
        vec![
            "call".into(),
            "locked".into(),
            "echo".into(),
            "--args".into(),
            "{nope".into(),
        ],
        vec!["tools".into(), "locked".into()],
        vec!["import".into(), not_config.display().to_string()],
        vec!["edit".into(), "locked".into()],
        vec![
            "proxy".into(),
            "locked".into(),
            "--transport".into(),
            "sse".into(),
        ],
    ];
    let mut text = String::new();
    for args in &cases {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = k.run_async(&argv).await;
        text.push_str(&format!(
            "$ keyway {} (exit {})\n{}\n",
            args.join(" "),
            out.status.code().unwrap_or(-1),
            stderr(&out)
                .lines()
                .filter(|l| !l.contains("WARN") && !l.starts_with("keyway: "))
                .collect::<Vec<_>>()
                .join("\n")
        ));
        reads_as_words(&stderr(&out));
    }
    let mut settings = stable();
    settings.add_filter(r"/tmp/\.tmp[A-Za-z0-9]+", "[HOME]");
    settings.bind(|| insta::assert_snapshot!(text));
}
