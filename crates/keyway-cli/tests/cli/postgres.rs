//! `--store` / `KEYWAY_STORE`: servers and credentials in Postgres (a throwaway cluster
//! from `scripts/postgres`, a database per test), shared by keyway processes with
//! different homes, as a team's gateway replicas are.

use crate::harness::{Keyway, json, stderr, stdout, testbed};

/// `keyway ARGS` with the store in the database at `url` (the URL, password and all,
/// in the environment, where other users cannot read it).
async fn run(k: &Keyway, url: &str, key: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut cmd = k.cmd(args);
    cmd.env("KEYWAY_STORE", url);
    if let Some(key) = key {
        cmd.env("KEYWAY_STORE_KEY", key);
    }
    tokio::process::Command::from(cmd).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_homes_share_servers_and_tokens_through_one_postgres_store() {
    let url = keyway_testbed::postgres::cluster().fresh_database().await;
    let tb = testbed(|_| {}).await;
    let first = Keyway::new();
    let out = run(
        &first,
        &url,
        None,
        &["add", tb.mcp_url(), "--name", "work", "--browser", "follow"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing went to the home's SQLite file; the key did go to the home (0600).
    assert!(!first.home.path().join("keyway.db").exists());
    let key = std::fs::read_to_string(first.home.path().join("store.key")).unwrap();

    // Another home (another machine of the team) with the same key sees the server
    // and uses its tokens: no second authorization.
    let second = Keyway::new();
    let out = run(&second, &url, Some(key.trim()), &["list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    assert_eq!(rows[0]["name"], "work");
    assert_eq!(rows[0]["state"], "authorized", "{rows}");
    let out = run(
        &second,
        &url,
        Some(key.trim()),
        &[
            "call",
            "work",
            "echo",
            "--args",
            r#"{"text":"from the team store"}"#,
        ],
    )
    .await;
    assert_eq!(stdout(&out), "from the team store\n", "{}", stderr(&out));
    let out = run(&second, &url, Some(key.trim()), &["doctor", "--offline"]).await;
    let text = stdout(&out);
    assert!(
        text.contains("store       postgres://keyway:***@"),
        "{text}"
    );
    assert!(text.contains("key         KEYWAY_STORE_KEY"), "{text}");

    // Without the key, the database is refused and nothing in it changes.
    let third = Keyway::new();
    let out = run(&third, &url, None, &["list"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("encrypted with a key keyway cannot find"),
        "{}",
        stderr(&out)
    );
    let out = run(&second, &url, Some(key.trim()), &["list", "--json"]).await;
    assert_eq!(json(&out).as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_store_flag_with_a_password_or_of_another_kind_is_refused() {
    let k = Keyway::new();
    let out = k
        .run_async(&[
            "--store",
            "postgres://keyway:hunter2@127.0.0.1:1/keyway",
            "list",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("KEYWAY_STORE") && !err.contains("hunter2"),
        "{err}"
    );
    let out = k.run_async(&["--store", "/var/lib/keyway", "list"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("postgres://"), "{}", stderr(&out));
    // A database that does not answer: what failed and what to check, no password.
    let mut cmd = k.cmd(&["list"]);
    cmd.env(
        "KEYWAY_STORE",
        "postgres://keyway:hunter2@127.0.0.1:1/keyway",
    );
    let out = tokio::process::Command::from(cmd).output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot reach the database"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!k.home.path().join("keyway.db").exists());
}
