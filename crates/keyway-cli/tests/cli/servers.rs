//! probe, add, list, show, authorize, logout, remove, enable/disable, doctor,
//! import/export: every probe class and every list state, on testbed knobs.

use std::{sync::Arc, time::Duration};

use keyway_testbed::{Clock, Knobs, ManualClock, Testbed};
use serde_json::Value;

use crate::harness::{Keyway, dead_mcp_url, json, stable, stderr, stdout, testbed};

async fn probe_class(k: &Keyway, args: &[&str]) -> (Option<i32>, Value) {
    let mut v = vec!["--json", "probe"];
    v.extend_from_slice(args);
    let out = k.run_async(&v).await;
    (out.status.code(), json(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_probe_class() {
    let k = Keyway::new();
    let open = testbed(|k| k.open = true).await;
    let (code, v) = probe_class(&k, &[open.mcp_url()]).await;
    assert_eq!((code, v["class"].as_str()), (Some(0), Some("open")));
    assert_eq!(v["tools"].as_array().unwrap().len(), 9);

    let oauth = testbed(|_| {}).await;
    let (code, v) = probe_class(&k, &[oauth.mcp_url()]).await;
    assert_eq!((code, v["class"].as_str()), (Some(0), Some("oauth")));
    assert_eq!(v["registration"], serde_json::json!(["dcr"]));
    assert_eq!(v["device"], true);
    assert_eq!(v["client_credentials"], true);
    assert!(v["discovery"]["steps"].as_array().unwrap().len() >= 2);

    let token = oauth.mint_access_token("mcp:tools");
    let (_, v) = probe_class(&k, &[oauth.mcp_url(), "--token", &token]).await;
    assert_eq!(
        (v["class"].as_str(), v["authenticated"].as_bool()),
        (Some("open"), Some(true))
    );
    let (_, v) = probe_class(&k, &[oauth.mcp_url(), "--token", "tb_at_bogus"]).await;
    assert_eq!(v["class"], "token-rejected");
    assert_eq!(
        oauth.stats().endpoint(keyway_testbed::Endpoint::Register),
        0,
        "no OAuth for a rejected token"
    );

    let no_dcr = testbed(|k| k.no_dcr = true).await;
    let (_, v) = probe_class(&k, &[no_dcr.mcp_url()]).await;
    assert_eq!(v["class"], "token-only");
    assert!(v["next_step"].as_str().unwrap().contains("--token"));
    let (_, v) = probe_class(&k, &[no_dcr.mcp_url(), "--client-id", "mine"]).await;
    assert_eq!(
        v["class"], "oauth",
        "a pre-registered client makes it authorizable"
    );
    assert_eq!(v["registration"], serde_json::json!(["pre-registered"]));

    // A 401 with a Bearer challenge and no OAuth metadata at all.
    let bare = testbed(|k| {
        k.prm = keyway_testbed::PrmLocation::Absent;
        k.shared_origin = true;
        k.metadata = vec![keyway_testbed::MetadataDoc::None];
    })
    .await;
    let (_, v) = probe_class(&k, &[bare.mcp_url()]).await;
    assert_eq!(v["class"], "token-only");

    let hostile = testbed(|k| k.prm_resource = Some("https://evil.example.com/mcp".into())).await;
    let (code, v) = probe_class(&k, &[hostile.mcp_url()]).await;
    assert_eq!((code, v["class"].as_str()), (Some(1), Some("error")));
    assert!(
        v["discovery"]["problems"]
            .to_string()
            .contains("resource_mismatch")
    );

    let dead = dead_mcp_url();
    let (code, v) = probe_class(&k, &[&dead]).await;
    assert_eq!((code, v["class"].as_str()), (Some(1), Some("unreachable")));
}

#[tokio::test(flavor = "multi_thread")]
async fn probe_output_reads_well() {
    let tb = testbed(|k| k.prm = keyway_testbed::PrmLocation::Path).await;
    let out = Keyway::new().run_async(&["probe", tb.mcp_url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    stable().bind(|| insta::assert_snapshot!(stdout(&out)));
}

async fn state_of(k: &Keyway, name: &str) -> (String, String) {
    let v = json(&k.run_async(&["--json", "list"]).await);
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {v}"));
    (
        row["state"].as_str().unwrap().to_owned(),
        row["action"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_list_state() {
    let k = Keyway::new();
    let add = |args: Vec<String>| {
        let k = &k;
        async move {
            let v: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = k.run_async(&v).await;
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        }
    };
    let s = |x: &str| x.to_owned();

    let open = testbed(|k| k.open = true).await;
    add(vec![s("add"), s(open.mcp_url()), s("--name"), s("open")]).await;
    assert_eq!(state_of(&k, "open").await, (s("ready"), s("none")));

    let oauth = testbed(|_| {}).await;
    add(vec![
        s("add"),
        s(oauth.mcp_url()),
        s("--name"),
        s("oauth"),
        s("--browser"),
        s("follow"),
    ])
    .await;
    assert_eq!(state_of(&k, "oauth").await, (s("authorized"), s("none")));

    add(vec![
        s("add"),
        s(oauth.mcp_url()),
        s("--name"),
        s("later"),
        s("--no-authorize"),
    ])
    .await;
    assert_eq!(
        state_of(&k, "later").await,
        (s("needs-auth"), s("authorize"))
    );

    let no_dcr = testbed(|k| k.no_dcr = true).await;
    add(vec![
        s("add"),
        s(no_dcr.mcp_url()),
        s("--name"),
        s("tokenonly"),
        s("--no-authorize"),
    ])
    .await;
    assert_eq!(
        state_of(&k, "tokenonly").await,
        (s("needs-token"), s("set-token"))
    );

    // A static token that the server later stops accepting.
    let clock = ManualClock::new();
    let mut knobs = Knobs::default();
    knobs.token_lifetime = 60;
    let expiring = Testbed::start_with_clock(knobs, Arc::new(clock.clone()) as Arc<dyn Clock>)
        .await
        .unwrap();
    let token = expiring.mint_access_token("mcp:tools");
    add(vec![
        s("add"),
        s(expiring.mcp_url()),
        s("--name"),
        s("static"),
        s("--token"),
        token,
    ])
    .await;
    assert_eq!(state_of(&k, "static").await, (s("token"), s("none")));
    clock.advance(Duration::from_secs(61));
    let out = k
        .run_async(&["call", "static", "echo", "--args", r#"{"text":"x"}"#])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(
        state_of(&k, "static").await,
        (s("token-rejected"), s("set-token"))
    );
    assert_eq!(
        expiring
            .stats()
            .endpoint(keyway_testbed::Endpoint::Authorize),
        0,
        "a token server is never authorized"
    );

    let dead = dead_mcp_url();
    add(vec![
        s("add"),
        dead.clone(),
        s("--name"),
        s("down"),
        s("--force"),
    ])
    .await;
    assert_eq!(state_of(&k, "down").await, (s("error"), s("none")));

    assert!(k.run_async(&["disable", "open"]).await.status.success());
    assert_eq!(state_of(&k, "open").await, (s("disabled"), s("enable")));

    let out = k.run_async(&["list"]).await;
    stable().bind(|| insta::assert_snapshot!(stdout(&out)));
}

#[tokio::test(flavor = "multi_thread")]
async fn add_names_rolls_back_and_refuses_clearly() {
    let k = Keyway::new();
    let tb = testbed(|k| k.deny = true).await;
    // The flow fails: nothing is left behind.
    let out = k
        .run_async(&["add", tb.mcp_url(), "--browser", "follow"])
        .await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("declined"));
    assert_eq!(
        json(&k.run_async(&["--json", "list"]).await),
        serde_json::json!([])
    );

    let tb = testbed(|_| {}).await;
    let out = k
        .run_async(&[
            "--json",
            "add",
            tb.mcp_url(),
            "--browser",
            "follow",
            "--id",
            "fixed-id",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert!(
        v["name"].as_str().unwrap().starts_with("localhost-"),
        "the default name rule"
    );
    // The same id again is the same server, not a duplicate.
    let again = k
        .run_async(&[
            "add",
            tb.mcp_url(),
            "--browser",
            "follow",
            "--id",
            "fixed-id",
        ])
        .await;
    assert!(again.status.success());
    assert_eq!(
        json(&k.run_async(&["--json", "list"]).await)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A taken name is refused.
    let name = v["name"].as_str().unwrap().to_owned();
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", &name, "--no-authorize"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists"));
    // A rejected token is never saved.
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "x", "--token", "tb_at_nope"])
        .await;
    assert_eq!(out.status.code(), Some(3));
    // Unreachable without --force is refused.
    let dead = dead_mcp_url();
    let out = k.run_async(&["add", &dead]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"));
    assert_eq!(
        json(&k.run_async(&["--json", "list"]).await)
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Bad input.
    for bad in [
        vec!["add", "not a url"],
        vec!["add", "ftp://x/mcp"],
        vec!["add", tb.mcp_url(), "--header", "nocolon"],
    ] {
        assert_eq!(k.run_async(&bad).await.status.code(), Some(2), "{bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_show_call_logout_authorize_remove() {
    let k = Keyway::new();
    let tb = testbed(|_| {}).await;
    let out = k
        .run_async(&[
            "--json",
            "add",
            tb.mcp_url(),
            "--name",
            "tb",
            "--browser",
            "follow",
        ])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let out = k.run_async(&["--json", "show", "tb"]).await;
    let v = json(&out);
    assert_eq!(v["credential"]["kind"], "oauth");
    assert_eq!(v["credential"]["issuer"], tb.issuer());
    assert_eq!(v["credential"]["resource"], tb.resource());
    assert!(!stdout(&out).contains("tb_at_") && !stdout(&out).contains("tb_rt_"));

    let out = k
        .run_async(&["call", "tb", "add", "--args", r#"{"a":20,"b":22}"#])
        .await;
    assert_eq!(stdout(&out), "42\n", "{}", stderr(&out));
    assert_eq!(
        tb.stats().authorizations,
        1,
        "the saved credential was used"
    );

    let out = k.run_async(&["logout", "tb"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
    assert_eq!(tb.stats().revocations, 1);
    assert_eq!(state_of(&k, "tb").await.0, "needs-auth");

    let out = k
        .run_async(&["authorize", "tb", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(state_of(&k, "tb").await.0, "authorized");
    assert_eq!(
        tb.stats().registrations,
        1,
        "the registration for that issuer was reused"
    );

    let out = k.run_async(&["--json", "doctor"]).await;
    let v = json(&out);
    assert!(v["key_source"].as_str().unwrap().contains("key file"));
    assert_eq!(v["home_mode"], "700");
    assert_eq!(v["servers"].as_array().unwrap().len(), 1);

    // remove revokes like logout.
    let out = k.run_async(&["remove", "tb"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "removed tb (revoked at {0}; its registration deleted at {0})",
            tb.issuer()
        )),
        "{}",
        stdout(&out)
    );
    assert_eq!(tb.stats().revocations, 2);
    assert_eq!(k.run_async(&["show", "tb"]).await.status.code(), Some(1));
    assert_eq!(k.run_async(&["remove", "tb"]).await.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn import_and_export() {
    let k = Keyway::new();
    let open = testbed(|k| k.open = true).await;
    let oauth = testbed(|_| {}).await;
    let other = testbed(|_| {}).await;
    let token = oauth.mint_access_token("mcp:tools");
    let config = serde_json::json!({"mcpServers": {
        "local": {"command": "node", "args": ["x.js"]},
        "plain": {"url": open.mcp_url()},
        "keyed": {"url": oauth.mcp_url(), "headers": {"Authorization": format!("Bearer {token}")}},
        "bridged": {"command": "npx", "args": ["mcp-remote", other.mcp_url()]}
    }});
    let file = k.home.path().join("claude_desktop_config.json");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = k
        .run_async(&["--json", "import", file.to_str().unwrap()])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    assert_eq!(
        v.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "added")
            .count(),
        3
    );
    assert_eq!(state_of(&k, "plain").await.0, "ready");
    assert_eq!(state_of(&k, "keyed").await.0, "token");
    assert_eq!(
        state_of(&k, "bridged").await,
        ("needs-auth".into(), "authorize".into())
    );
    let out = k
        .run_async(&["call", "keyed", "echo", "--args", r#"{"text":"imported"}"#])
        .await;
    assert_eq!(stdout(&out), "imported\n", "{}", stderr(&out));

    for (format, key) in [
        ("claude", "mcpServers"),
        ("cursor", "mcpServers"),
        ("vscode", "servers"),
    ] {
        let out = k
            .run_async(&[
                "--home",
                k.home.path().to_str().unwrap(),
                "export",
                "--format",
                format,
            ])
            .await;
        let v = json(&out);
        let entry = &v[key]["plain"];
        assert!(
            entry["command"].as_str().unwrap().ends_with("keyway"),
            "{v}"
        );
        let args: Vec<&str> = entry["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args[args.len() - 2..], ["proxy", "plain"]);
        assert_eq!(args[0], "--home");
    }
    let out = k.run_async(&["import", "/nonexistent.json"]).await;
    assert_eq!(out.status.code(), Some(1));
    std::fs::write(&file, "{nope").unwrap();
    assert_eq!(
        k.run_async(&["import", file.to_str().unwrap()])
            .await
            .status
            .code(),
        Some(2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_foreign_store_is_a_clear_error() {
    let k = Keyway::new();
    std::fs::write(
        k.home.path().join("keyway.db"),
        b"definitely not sqlite, just some text",
    )
    .unwrap();
    let out = k.run_async(&["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not a keyway store") && err.contains("move it aside"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(k.home.path().join("keyway.db")).unwrap(),
        b"definitely not sqlite, just some text"
    );

    let k = Keyway::new();
    let tb = testbed(|k| k.open = true).await;
    assert!(k.run_async(&["add", tb.mcp_url()]).await.status.success());
    std::fs::write(
        k.home.path().join("store.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let out = k.run_async(&["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no store key opens"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("keyway doctor"), "{}", stderr(&out));
}

/// The credential's version and auth kind of server `name`, read from the store.
fn credential_version(k: &Keyway, name: &str) -> (i64, String) {
    let db = rusqlite::Connection::open(k.home.path().join("keyway.db")).unwrap();
    db.query_row(
        "SELECT c.version, s.auth FROM credentials c JOIN servers s ON s.id = c.server_id WHERE s.name = ?1",
        [name],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap()
}

/// Run keyway with `input` on stdin.
async fn run_with_stdin(k: &Keyway, args: &[&str], input: &str) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::from(k.cmd(args));
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    child.wait_with_output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_token_is_replaced_only_by_one_the_server_accepts() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let first = tb.mint_access_token("mcp:tools");
    let add = k
        .run_async(&["add", tb.mcp_url(), "--name", "tb", "--token", &first])
        .await;
    assert!(add.status.success(), "{}", stderr(&add));
    assert_eq!(credential_version(&k, "tb"), (1, "token".to_owned()));

    // Refused by the server: not saved, the old token stays and still works.
    let out = run_with_stdin(&k, &["set-token", "tb"], "not-a-token\n").await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("refused the new token; the one it had is kept"));
    assert!(!stderr(&out).contains("not-a-token"), "{}", stderr(&out));
    assert_eq!(credential_version(&k, "tb").0, 1);
    let call = k
        .run_async(&["call", "tb", "echo", "--args", r#"{"text":"still"}"#])
        .await;
    assert!(call.status.success(), "{}", stderr(&call));

    // From stdin, from a file, from KEYWAY_TOKEN: each accepted one replaces it.
    let out = run_with_stdin(
        &k,
        &["set-token", "tb"],
        &format!("{}\n", tb.mint_access_token("mcp:tools")),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("tb has a new token ("),
        "{}",
        stdout(&out)
    );
    assert_eq!(credential_version(&k, "tb").0, 2);
    let file = k.home.path().join("token.txt");
    std::fs::write(&file, tb.mint_access_token("mcp:tools")).unwrap();
    let from_file = format!("@{}", file.display());
    let out = k.run_async(&["set-token", "tb", &from_file]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(credential_version(&k, "tb").0, 3);
    let mut cmd = tokio::process::Command::from(k.cmd(&["set-token", "tb"]));
    cmd.env("KEYWAY_TOKEN", tb.mint_access_token("mcp:tools"));
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(credential_version(&k, "tb").0, 4);
    let call = k
        .run_async(&["call", "tb", "echo", "--args", r#"{"text":"new"}"#])
        .await;
    assert!(call.status.success(), "{}", stderr(&call));

    // Never from the command line itself.
    let out = k.run_async(&["set-token", "tb", "tok-on-argv"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("stdin, as @FILE, or in KEYWAY_TOKEN"),
        "{}",
        stderr(&out)
    );

    // logout forgets a static token and says what to do.
    let out = k.run_async(&["logout", "tb"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("forgot the static token of tb")
            && stdout(&out).contains("`keyway set-token tb`"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oauth_server_is_not_given_a_static_token() {
    let tb = testbed(|_| {}).await;
    let k = Keyway::new();
    let add = k
        .run_async(&["add", tb.mcp_url(), "--name", "oauth", "--no-authorize"])
        .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let out = run_with_stdin(&k, &["set-token", "oauth"], "whatever\n").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("signs in with OAuth"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn authorize_on_a_token_only_server_says_so() {
    let tb = testbed(|k| k.no_dcr = true).await;
    let k = Keyway::new();
    let token = tb.mint_access_token("mcp:tools");
    let add = k
        .run_async(&["add", tb.mcp_url(), "--name", "tok", "--token", &token])
        .await;
    assert!(add.status.success(), "{}", stderr(&add));
    let out = k
        .run_async(&["authorize", "tok", "--browser", "none"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("tok takes an access token only")
            && stderr(&out).contains("keyway set-token tok"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        tb.stats().path("POST /register"),
        0,
        "no registration was tried"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn export_names_keyway_as_found_on_path_and_an_absolute_home() {
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let add = k.run_async(&["add", tb.mcp_url(), "--name", "plain"]).await;
    assert!(add.status.success(), "{}", stderr(&add));
    // keyway reached through a symlink on PATH, as an installer leaves it; the home
    // given relative to the directory keyway runs in.
    let bin = tempfile::tempdir().unwrap();
    let link = bin.path().join("keyway");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_keyway"), &link).unwrap();
    let parent = k.home.path().parent().unwrap();
    let relative = k.home.path().file_name().unwrap().to_str().unwrap();
    let mut cmd = k.cmd(&["--home", relative, "export", "--format", "claude"]);
    cmd.current_dir(parent)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()));
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let entry = &v["mcpServers"]["plain"];
    assert_eq!(entry["command"], link.to_str().unwrap(), "{v}");
    assert_eq!(entry["args"][0], "--home");
    assert_eq!(entry["args"][1], k.home.path().to_str().unwrap(), "{v}");
}
