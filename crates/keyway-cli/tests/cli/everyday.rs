//! Everyday edges: replacing a saved server, importing and exporting client configs,
//! editing, the names and habits people bring from other tools.

use serde_json::Value;

use crate::harness::{Keyway, dead_mcp_url, json, stderr, stdout, testbed};

/// The saved server's row in `list --json`.
pub async fn row(k: &Keyway, name: &str) -> Option<Value> {
    let out = k.run_async(&["list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    json(&out)
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn add_force_replaces_a_saved_server_and_only_once_the_new_one_is_saved() {
    let first = testbed(|_| {}).await;
    let second = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "add",
            first.mcp_url(),
            "--name",
            "work",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // Without --force: refused, with what to do.
    let out = k
        .run_async(&["add", second.mcp_url(), "--name", "work"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--force replaces"),
        "{}",
        stderr(&out)
    );

    // A replacement that fails (an OAuth server whose authorization is declined)
    // leaves the old server as it was.
    let declining = testbed(|k| k.deny = true).await;
    let out = k
        .run_async(&[
            "add",
            declining.mcp_url(),
            "--name",
            "work",
            "--force",
            "--browser",
            "follow",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    let r = row(&k, "work").await.unwrap();
    assert_eq!(r["url"], first.mcp_url());
    assert_eq!(r["state"], "authorized");
    let out = k.run_async(&["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stdout(&out));

    // With --force: the new one takes the name, the old tokens are revoked.
    let out = k
        .run_async(&[
            "--json",
            "add",
            second.mcp_url(),
            "--name",
            "work",
            "--force",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let added = json(&out);
    assert_eq!(added["name"], "work");
    assert!(
        added["replaced"]
            .as_str()
            .unwrap()
            .contains(first.mcp_url()),
        "{added}"
    );
    let r = row(&k, "work").await.unwrap();
    assert_eq!(
        (r["url"].as_str(), r["state"].as_str()),
        (Some(second.mcp_url()), Some("ready"))
    );
    assert!(
        first.stats().endpoint(keyway_testbed::Endpoint::Revoke) >= 1,
        "the replaced server's tokens are revoked"
    );
    let out = k.run_async(&["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1, "{}", stdout(&out));

    // --force also saves a server that cannot be reached, over a saved one.
    let dead = dead_mcp_url();
    let out = k
        .run_async(&["add", &dead, "--name", "work", "--force"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "work").await.unwrap()["url"], dead.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn import_is_idempotent_detects_sse_never_saves_placeholders_and_reads_jsonc() {
    let sse_only = testbed(|k| {
        k.open = true;
        k.legacy_sse_only = true;
    })
    .await;
    let open = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let dead_sse = format!("{}/sse", dead_mcp_url().trim_end_matches("/mcp"));
    // VS Code's JSONC: comments and trailing commas.
    let config = format!(
        r#"{{
  // what a person keeps in .vscode/mcp.json
  "servers": {{
    "legacy": {{"command": "npx", "args": ["-y", "mcp-remote@latest", "{sse}"]}},
    "offline": {{"command": "npx", "args": ["mcp-remote", "{dead_sse}"]}},
    "github": {{
      "type": "http",
      "url": "{open}",
      "headers": {{"Authorization": "Bearer ${{input:github_token}}", "X-Team": "${{UNSET_KEYWAY_TEST_VAR}}"}},
    }},
  }},
}}"#,
        sse = sse_only.sse_url(),
        open = open.mcp_url(),
    );
    let file = k.home.path().join("mcp.json");
    std::fs::write(&file, config).unwrap();
    let out = k
        .run_async(&["--json", "import", file.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let of = |name: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {v}"))
            .clone()
    };
    for name in ["legacy", "offline", "github"] {
        assert_eq!(of(name)["outcome"], "added", "{v}");
    }
    // The SSE-only server is saved as SSE (it answers), and so is the one that does
    // not answer, by its /sse path; a call to the first works.
    let show = |name: &'static str| {
        let k = &k;
        async move { json(&k.run_async(&["show", name, "--json"]).await) }
    };
    assert_eq!(show("legacy").await["transport"], "sse");
    assert_eq!(show("offline").await["transport"], "sse");
    let out = k
        .run_async(&["call", "legacy", "echo", "--args", r#"{"text":"over sse"}"#])
        .await;
    assert_eq!(stdout(&out), "over sse\n", "{}", stderr(&out));

    // The placeholders are not saved: no token, no X-Team header; set-token is next.
    let gh = show("github").await;
    assert_eq!(gh["credential"], Value::Null, "{gh}");
    assert_eq!(gh["headers"], serde_json::json!([]), "{gh}");
    assert_eq!(
        of("github")["next"],
        "keyway set-token github; keyway edit github --header 'X-Team: VALUE'"
    );
    let detail = of("github")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("${input:github_token}"), "{detail}");
    assert!(detail.contains("${UNSET_KEYWAY_TEST_VAR}"), "{detail}");

    // Again: nothing new, each reported as there.
    let out = k
        .run_async(&["--json", "import", file.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let again = json(&out);
    assert!(
        again
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["outcome"] == "exists"),
        "{again}"
    );
    let out = k.run_async(&["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 3, "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_without_a_file_reads_the_clients_usual_places() {
    let open = testbed(|k| k.open = true).await;
    let other = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let home = tempfile::tempdir().unwrap();
    let cursor = home.path().join(".cursor");
    std::fs::create_dir_all(&cursor).unwrap();
    // A project file found in the current directory gets no variable from this
    // machine's environment (it could name any server), and no URL is filled in.
    std::fs::write(
        home.path().join(".mcp.json"),
        serde_json::json!({"mcpServers": {
            "project": {"url": other.mcp_url(), "headers": {"X-Key": "${KEYWAY_TEST_SECRET}"}},
            "leaky": {"url": format!("{}?key=${{KEYWAY_TEST_SECRET}}", open.mcp_url())}
        }})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        cursor.join("mcp.json"),
        serde_json::json!({"mcpServers": {"bed": {"url": open.mcp_url()}}}).to_string(),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let mut c = k.cmd(args);
        c.env("KEYWAY_TEST_SECRET", "s3cret-from-env")
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .current_dir(home.path());
        c.output().unwrap()
    };
    let out = run(&["import", "--from", "vscode"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no MCP client config found"),
        "{}",
        stderr(&out)
    );
    let out = run(&["import"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("added    bed"), "{text}");
    assert!(!text.contains("s3cret-from-env"), "{text}");
    assert!(
        text.contains("X-Key not saved: ${KEYWAY_TEST_SECRET}"),
        "{text}"
    );
    assert!(text.contains("skipped  leaky"), "{text}");
    let shown = json(&k.run_async(&["show", "project", "--json"]).await);
    assert_eq!(shown["headers"], serde_json::json!([]), "{shown}");
    assert!(row(&k, "bed").await.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn edit_changes_url_transport_headers_and_name() {
    let first = testbed(|_| {}).await;
    let second = testbed(|k| {
        k.open = true;
        k.legacy_sse = true;
    })
    .await;
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "add",
            first.mcp_url(),
            "--name",
            "work",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "work").await.unwrap()["state"], "authorized");

    // Nothing to change, an unknown header to remove: usage errors.
    assert_eq!(k.run_async(&["edit", "work"]).await.status.code(), Some(2));
    let out = k
        .run_async(&["edit", "work", "--remove-header", "X-Nope"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no header X-Nope"),
        "{}",
        stderr(&out)
    );

    // A new URL: the tokens for the old one are revoked and gone.
    let out = k
        .run_async(&[
            "edit",
            "work",
            "--url",
            second.mcp_url(),
            "-H",
            "X-Team: blue",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("credential was for the old URL"),
        "{}",
        stdout(&out)
    );
    assert!(first.stats().endpoint(keyway_testbed::Endpoint::Revoke) >= 1);
    let shown = json(&k.run_async(&["show", "work", "--json"]).await);
    assert_eq!(shown["url"], second.mcp_url());
    assert_eq!(shown["credential"], Value::Null);
    assert_eq!(shown["headers"], serde_json::json!(["x-team"]));
    let out = k
        .run_async(&["call", "work", "echo", "--args", r#"{"text":"moved"}"#])
        .await;
    assert_eq!(stdout(&out), "moved\n", "{}", stderr(&out));

    // Transport, header removal and a rename.
    let out = k
        .run_async(&[
            "edit",
            "work",
            "--url",
            &second.sse_url(),
            "--transport",
            "sse",
            "--remove-header",
            "x-team",
            "--rename",
            "team",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(row(&k, "work").await.is_none());
    let shown = json(&k.run_async(&["show", "team", "--json"]).await);
    assert_eq!(shown["transport"], "sse");
    assert_eq!(shown["headers"], serde_json::json!([]));
    let out = k
        .run_async(&["call", "team", "echo", "--args", r#"{"text":"renamed"}"#])
        .await;
    assert_eq!(stdout(&out), "renamed\n", "{}", stderr(&out));

    // A header added while moving to plain http elsewhere is refused.
    let out = k
        .run_async(&[
            "edit",
            "team",
            "--url",
            "http://example.com/mcp",
            "-H",
            "X-Key: s",
        ])
        .await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stderr(&out).contains("X-Key: s"), "{}", stderr(&out));
    assert_eq!(row(&k, "team").await.unwrap()["url"], second.sse_url());

    // A taken name is refused.
    let dead = dead_mcp_url();
    assert!(
        k.run_async(&["add", &dead, "--name", "other", "--force"])
            .await
            .status
            .success()
    );
    let out = k.run_async(&["edit", "team", "--rename", "other"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_authorization_header_is_taken_as_the_token() {
    let tb = testbed(|_| {}).await;
    let token = tb.mint_access_token("mcp:tools");
    let k = Keyway::new();
    let header = format!("Authorization: Bearer {token}");
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "keyed", "-H", &header])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = json(&k.run_async(&["show", "keyed", "--json"]).await);
    assert_eq!(shown["credential"]["kind"], "bearer", "{shown}");
    assert_eq!(shown["headers"], serde_json::json!([]), "{shown}");
    assert_eq!(shown["auth"], "token");
    let out = k
        .run_async(&["add", tb.mcp_url(), "-H", "Authorization: Basic abc"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("abc"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_creates_nothing_checks_each_server_and_says_when_something_is_wrong() {
    let k = Keyway::new();
    let home = k.home.path().join("fresh");
    let home_arg = home.to_str().unwrap();
    let out = k.run_async(&["--home", home_arg, "doctor"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("none yet"), "{}", stdout(&out));
    assert!(!home.exists(), "doctor made the home");

    let tb = testbed(|k| k.open = true).await;
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "bed"])
            .await
            .status
            .success()
    );
    let out = k.run_async(&["doctor"]).await;
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("all well"), "{}", stdout(&out));

    // A server that stopped answering since: doctor finds out (it checks again),
    // shows the last error, and exits 1.
    let dead = dead_mcp_url();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "moved"])
            .await
            .status
            .success()
    );
    assert!(
        k.run_async(&["edit", "moved", "--url", &dead])
            .await
            .status
            .success()
    );
    assert_eq!(
        row(&k, "moved").await.unwrap()["state"],
        "ready",
        "not checked yet"
    );
    let out = k.run_async(&["doctor"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("moved: ") && text.contains("connection refused"),
        "{text}"
    );
    assert!(text.contains("problem     moved: error"), "{text}");
    assert_eq!(row(&k, "moved").await.unwrap()["state"], "error");

    // check does the same for the named servers; the healthy one stays ok.
    let out = k.run_async(&["--json", "check", "bed"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json(&out)[0]["status"], "ok");
    assert_eq!(json(&out)[0]["tools"], 9);
    let out = k.run_async(&["check"]).await;
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn call_takes_the_names_tools_prints_and_arguments_from_a_file_or_stdin() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "bed"])
            .await
            .status
            .success()
    );
    let listed = stdout(&k.run_async(&["tools"]).await);
    assert!(listed.contains("bed__echo"), "{listed}");

    let out = k
        .run_async(&["call", "bed__echo", "--args", r#"{"text":"prefixed"}"#])
        .await;
    assert_eq!(stdout(&out), "prefixed\n", "{}", stderr(&out));

    let file = k.home.path().join("args.json");
    std::fs::write(&file, r#"{"text":"from a file"}"#).unwrap();
    let at = format!("@{}", file.display());
    let out = k.run_async(&["call", "bed", "echo", "--args", &at]).await;
    assert_eq!(stdout(&out), "from a file\n", "{}", stderr(&out));

    let mut cmd = tokio::process::Command::from(k.cmd(&["call", "bed", "echo", "--args", "-"]));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(br#"{"text":"from stdin"}"#).await.unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(stdout(&out), "from stdin\n", "{}", stderr(&out));

    let out = k.run_async(&["call", "nope__echo"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("keyway tools lists"),
        "{}",
        stderr(&out)
    );
    let out = k.run_async(&["call", "bed", "echo", "--args", "[1]"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn prompts_resources_and_tool_schemas_are_listed() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "bed"])
            .await
            .status
            .success()
    );
    let out = k.run_async(&["--json", "prompts"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(v["prompts"][0]["name"], "bed__greet", "{v}");
    assert_eq!(v["prompts"][0]["prompt"], "greet", "{v}");
    assert_eq!(v["servers"][0]["prompts"], 1, "{v}");
    let out = k.run_async(&["--json", "resources", "bed"]).await;
    let v = json(&out);
    assert_eq!(v["resources"][0]["uri"], "testbed://readme", "{v}");
    let text = stdout(&k.run_async(&["resources"]).await);
    assert!(
        text.contains("bed") && text.contains("testbed://readme"),
        "{text}"
    );

    let out = k.run_async(&["tools", "bed", "--schema"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("bed__echo") && text.contains("\"text\""),
        "{text}"
    );
    let v = json(&k.run_async(&["--json", "tools", "--schema"]).await);
    let echo = v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tool"] == "echo")
        .unwrap()
        .clone();
    assert_eq!(
        echo["input_schema"]["required"],
        serde_json::json!(["text"]),
        "{echo}"
    );
    let v = json(&k.run_async(&["--json", "tools"]).await);
    assert!(
        v["tools"][0].get("input_schema").is_none(),
        "only with --schema"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn add_takes_name_and_url_as_claude_mcp_add_does_and_completions_print() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = k.run_async(&["add", "bed", tb.mcp_url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "bed").await.unwrap()["url"], tb.mcp_url());
    let out = k
        .run_async(&["add", "twice", tb.mcp_url(), "--name", "other"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    let out = k.run_async(&["add", "bed2", "mcp.example.com/mcp"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("did you mean https://mcp.example.com/mcp"),
        "{}",
        stderr(&out)
    );

    for shell in ["bash", "zsh", "fish"] {
        let out = k.run_async(&["completions", shell]).await;
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(
            script.contains("set-token") && script.contains("keyway"),
            "{shell}"
        );
    }
    assert_eq!(
        k.run_async(&["completions", "tcsh"]).await.status.code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn export_writes_into_the_clients_config_keeping_the_rest() {
    let k = Keyway::new();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("claude_desktop_config.json");
    let dead = dead_mcp_url();
    let original = format!(
        r#"{{
  // kept: a comment, the local server, the other setting
  "mcpServers": {{
    "local": {{"command": "node", "args": ["x.js"]}},
    "linear": {{"command": "npx", "args": ["-y", "mcp-remote", "{dead}"]}},
    "two": {{"command": "python", "args": ["my_own_two.py"]}},
  }},
  "globalShortcut": "Ctrl+Space"
}}
"#
    );
    std::fs::write(&config, &original).unwrap();
    let cfg = config.to_str().unwrap();
    assert!(k.run_async(&["import", cfg]).await.status.success());
    assert!(
        k.run_async(&["add", "two", &dead_mcp_url(), "--force"])
            .await
            .status
            .success()
    );

    // --dry-run shows the change and writes nothing.
    let out = k
        .run_async(&[
            "export",
            "--format",
            "claude",
            "--write",
            "--config",
            cfg,
            "--dry-run",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("two: left as it is"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("+      \"args\""), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), original);

    let out = k
        .run_async(&["export", "--format", "claude", "--write", "--config", cfg])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("// kept: a comment"), "{text}");
    assert!(
        text.contains("\"globalShortcut\": \"Ctrl+Space\""),
        "{text}"
    );
    assert!(text.contains("\"local\""), "{text}");
    assert!(
        !text.contains("mcp-remote"),
        "the bridge entry is rewritten: {text}"
    );
    let v: Value = jsonc_parser::parse_to_serde_value(&text, &Default::default()).unwrap();
    let args = v["mcpServers"]["linear"]["args"].as_array().unwrap();
    assert_eq!(
        args[args.len() - 2..],
        [json_str("proxy"), json_str("linear")],
        "{v}"
    );
    assert_eq!(v["mcpServers"]["two"]["command"], "python", "{v}");
    let backup = dir.path().join("claude_desktop_config.json.keyway.bak");
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), original);

    // Again: nothing to change.
    let out = k
        .run_async(&["export", "--format", "claude", "--write", "--config", cfg])
        .await;
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("already has these entries"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);

    // One server, Claude Code's format, printed.
    let out = k
        .run_async(&["export", "two", "--format", "claude-code"])
        .await;
    let v = json(&out);
    assert_eq!(v["mcpServers"].as_object().unwrap().len(), 1, "{v}");
    assert_eq!(v["mcpServers"]["two"]["type"], "stdio");
}

fn json_str(s: &str) -> Value {
    Value::String(s.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_that_names_localhost_is_met_with_callback_host() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let registered = format!("http://localhost:{port}/callback");
    let tb = testbed(|k| {
        let mut client = keyway_testbed::ClientSpec::public("desktop-app");
        client.redirect_uris = vec![registered.clone()];
        k.clients = vec![client];
    })
    .await;
    let k = Keyway::new();
    let port = port.to_string();
    let base = [
        "add",
        tb.mcp_url(),
        "--name",
        "pre",
        "--browser",
        "follow",
        "--client-id",
        "desktop-app",
        "--callback-port",
        &port,
    ];
    // 127.0.0.1 is not what the registration says: the server refuses the request.
    let out = k.run_async(&base).await;
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(row(&k, "pre").await.is_none());
    let mut args = base.to_vec();
    args.extend(["--callback-host", "localhost"]);
    let out = k.run_async(&args).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(row(&k, "pre").await.unwrap()["state"], "authorized");
}

#[tokio::test(flavor = "multi_thread")]
async fn registration_metadata_describes_the_client_but_never_redirects() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let meta = r#"{"client_name": "Acme's keyway", "client_uri": "https://acme.example"}"#;
    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--browser",
            "follow",
            "--registration-metadata",
            meta,
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = tb.stats().last_registration.unwrap();
    assert_eq!(sent["client_name"], "Acme's keyway", "{sent}");
    assert_eq!(sent["client_uri"], "https://acme.example", "{sent}");

    let out = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--name",
            "x",
            "--registration-metadata",
            r#"{"redirect_uris": ["https://evil.example/cb"]}"#,
        ])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("redirect_uris is not a field"),
        "{}",
        stderr(&out)
    );
}

/// `keyway ARGS` on a terminal (util-linux `script` gives it a pseudo-terminal), with
/// `env`; what the terminal showed.
fn on_a_terminal(k: &Keyway, args: &str, env: &str) -> String {
    let line = format!(
        "{env} KEYWAY_HOME={} KEYWAY_NO_KEYCHAIN=1 {} {args}",
        k.home.path().display(),
        env!("CARGO_BIN_EXE_keyway")
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .output()
        .expect("script (util-linux) runs commands on a pseudo-terminal");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_waits_show_a_spinner_and_states_have_colour() {
    let tb = testbed(|k| {
        k.open = true;
        k.delay = vec![keyway_testbed::EndpointFault::new(
            keyway_testbed::Endpoint::Mcp,
            400,
        )];
    })
    .await;
    let k = Keyway::new();
    assert!(
        k.run_async(&["add", tb.mcp_url(), "--name", "bed"])
            .await
            .status
            .success()
    );
    let shown = tokio::task::block_in_place(|| on_a_terminal(&k, "tools", ""));
    assert!(shown.contains("waiting for 1 of 1 servers: bed"), "{shown}");
    assert!(shown.contains("bed__echo"), "{shown}");
    let listed = tokio::task::block_in_place(|| on_a_terminal(&k, "list", ""));
    assert!(listed.contains("\u{1b}[32mready"), "green: {listed:?}");
    let plain = tokio::task::block_in_place(|| on_a_terminal(&k, "list", "NO_COLOR=1"));
    assert!(!plain.contains('\u{1b}'), "NO_COLOR: {plain:?}");
    let quiet = tokio::task::block_in_place(|| on_a_terminal(&k, "-q tools", ""));
    assert!(!quiet.contains("waiting for"), "-q: {quiet}");
    // Piped (every other test): neither.
    let out = k.run_async(&["tools"]).await;
    assert!(!String::from_utf8_lossy(&out.stderr).contains("waiting for"));
    assert!(!stdout(&out).contains('\u{1b}'));
}
