//! `--store` / `KEYWAY_STORE`: servers and credentials in Postgres (a throwaway cluster
//! from `scripts/postgres`, a database per test), shared by keyway processes with
//! different homes, as a team's gateway replicas are.

use crate::harness::{Keyway, json, stderr, stdout, testbed};

/// A team's store key (32 bytes, base64).
const KEY: &str = "a2V5d2F5J3MgdGVhbSBzdG9yZSBrZXksIDMyIGJ5dGU=";

/// `keyway ARGS` with the store in the database at `url` (the URL, password and all,
/// in the environment, where other users cannot read it) and the store key `key`.
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
    // A new store without its key: refused, with how to make one.
    let out = run(&first, &url, None, &["list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("head -c 32 /dev/urandom"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &first,
        &url,
        Some(KEY),
        &["add", tb.mcp_url(), "--name", "work", "--browser", "follow"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // Nothing went to the home: no SQLite file, no key file.
    assert!(!first.home.path().join("keyway.db").exists());
    assert!(!first.home.path().join("store.key").exists());

    // Another home (another machine of the team) with the same key sees the server
    // and uses its tokens: no second authorization.
    let second = Keyway::new();
    let out = run(&second, &url, Some(KEY), &["list", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json(&out);
    assert_eq!(rows[0]["name"], "work");
    assert_eq!(rows[0]["state"], "authorized", "{rows}");
    let out = run(
        &second,
        &url,
        Some(KEY),
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
    let out = run(&second, &url, Some(KEY), &["doctor", "--offline"]).await;
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
    let out = run(&second, &url, Some(KEY), &["list", "--json"]).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_on_postgres_answers_its_probes_and_is_not_ready_without_its_store() {
    let url = keyway_testbed::postgres::cluster().fresh_database().await;
    let tb = testbed(|k| k.open = true).await;
    let k = Keyway::new();
    let out = run(
        &k,
        &url,
        Some(KEY),
        &["add", tb.mcp_url(), "--name", "open"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let (_child, gw) = crate::serve::listen_with(
        &k,
        &[],
        &[("KEYWAY_STORE", url.as_str()), ("KEYWAY_STORE_KEY", KEY)],
    )
    .await;
    let base = gw.url.trim_end_matches("/mcp").to_owned();
    let http = reqwest::Client::new();
    let get = |path: &str, host: &str| {
        http.get(format!("{base}{path}"))
            .header("host", host)
            .send()
    };
    // No token, and a Host the guard would refuse: probes come from anywhere.
    let r = get("/healthz", "10.1.2.3:8788").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let r = get("/readyz", "10.1.2.3:8788").await.unwrap();
    assert_eq!(r.status(), 200);
    // The MCP endpoint is still guarded.
    let r = http.post(&gw.url).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The database goes away (no new connections, the open ones ended): not ready,
    // and the answer says no more than that.
    let name = url.rsplit('/').next().unwrap().to_owned();
    let admin =
        keyway_testbed::postgres::connect(&url.replace(&format!("/{name}"), "/postgres")).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
        ))
        .await
        .unwrap();
    let r = get("/readyz", "localhost").await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "not ready\n");
    assert_eq!(get("/healthz", "localhost").await.unwrap().status(), 200);
    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    assert_eq!(get("/readyz", "localhost").await.unwrap().status(), 200);
}
