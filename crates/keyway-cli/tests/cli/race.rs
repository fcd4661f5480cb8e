//! The refresh race: 8 keyway processes calling tools on one server for 20 s with a
//! 2 s access token, rotation, and reuse detection that revokes the whole grant. One
//! refresh per expiry: no invalid_grant, no revoked family.

use std::time::{Duration, Instant};

use crate::harness::{Keyway, stderr, testbed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_processes_refresh_once_per_expiry() {
    const LIFETIME: u64 = 2;
    const RUN: Duration = Duration::from_secs(20);
    let tb = testbed(|k| k.token_lifetime = LIFETIME).await;
    let k = Keyway::new();
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "tb", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..8 {
        let cmd_args = ["call", "tb", "echo", "--args", r#"{"text":"race"}"#];
        let home = k.home.path().to_owned();
        workers.push(tokio::spawn(async move {
            let mut calls = 0u32;
            let mut failures = Vec::new();
            while started.elapsed() < RUN {
                let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyway"))
                    .args(cmd_args)
                    .env("KEYWAY_HOME", &home)
                    .env("KEYWAY_NO_KEYCHAIN", "1")
                    .env_remove("KEYWAY_STORE_KEY")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .await
                    .unwrap();
                calls += 1;
                if !out.status.success() {
                    failures.push(format!(
                        "worker {w}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
            }
            (calls, failures)
        }));
    }
    let mut calls = 0;
    for w in workers {
        let (n, failures) = w.await.unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        calls += n;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = tb.stats();
    let invalid_grants = stats
        .token_log
        .iter()
        .filter(|t| t.outcome == "invalid_grant")
        .count();
    assert_eq!(
        stats.reuse_revocations, 0,
        "a rotated refresh token was spent twice"
    );
    assert_eq!(invalid_grants, 0);
    // A new access token every half lifetime at most (refresh when half of a short
    // lifetime is left), however many processes: never one per process.
    let most = (elapsed / (LIFETIME as f64 / 2.0)).ceil() as u64 + 2;
    assert!(
        stats.refreshes >= 3,
        "refreshes happened: {}",
        stats.refreshes
    );
    assert!(
        stats.refreshes <= most,
        "{} refreshes in {elapsed:.1} s (at most {most}) over {calls} calls",
        stats.refreshes
    );
    eprintln!(
        "race: {calls} calls by 8 processes in {elapsed:.1} s, {} refreshes",
        stats.refreshes
    );
}
