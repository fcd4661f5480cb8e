//! Crash safety: keyway killed with SIGKILL at random points of add, authorize and
//! refresh, a hundred times. The store always opens, no server is lost, no credential
//! is half written.

use std::process::Stdio;

use keyway::store::{Credential, OpenOptions, SqliteStore, Store};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::harness::{Keyway, stderr, testbed};

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

/// Run keyway to the end; how many log lines it wrote.
async fn log_length(k: &Keyway, args: &[&str]) -> u64 {
    let mut cmd = tokio::process::Command::from(k.cmd(args));
    cmd.env("KEYWAY_LOG", "trace");
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out.stderr.iter().filter(|b| **b == b'\n').count() as u64
}

/// Run keyway, and kill it after `lines` lines of its -vvv log (a point somewhere in
/// its work). Returns whether it was killed (it may finish first).
async fn run_and_kill(k: &Keyway, args: &[&str], lines: u64) -> bool {
    let mut cmd = tokio::process::Command::from(k.cmd(args));
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("KEYWAY_LOG", "trace");
    let mut child = cmd.spawn().unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = 0;
    while seen < lines {
        match err.next_line().await {
            Ok(Some(_)) => seen += 1,
            _ => break,
        }
    }
    let killed = child.start_kill().is_ok();
    let _ = child.wait().await;
    killed && seen == lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_never_breaks_the_store() {
    let tb = testbed(|k| k.token_lifetime = 2).await;
    let k = Keyway::new();
    let out = k
        .run_async(&["add", tb.mcp_url(), "--name", "base", "--browser", "follow"])
        .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // How long a full run of each operation logs, to pick kill points inside it.
    let mut rng = Lcg(0x6b65_7977_6179);
    let ops: [&[&str]; 3] = [
        &["add", tb.mcp_url(), "--browser", "follow", "--name"],
        &["authorize", "base", "--browser", "follow"],
        &["call", "base", "echo", "--args", r#"{"text":"x"}"#],
    ];
    let mut lengths = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let name = format!("measure{i}");
        let mut args: Vec<&str> = op.to_vec();
        if args[0] == "add" {
            args.push(&name);
        }
        lengths.push(log_length(&k, &args).await);
    }
    let mut killed = 0;
    for run in 0..100 {
        let which = rng.next(3) as usize;
        let op = ops[which];
        let name = format!("s{run}");
        let mut args: Vec<&str> = op.to_vec();
        if args[0] == "add" {
            args.push(&name);
        }
        let lines = rng.next(lengths[which]);
        if run_and_kill(&k, &args, lines).await {
            killed += 1;
        }
        // Whatever happened, the store opens, every server's credential reads back
        // whole, and the first server is still there.
        let store = SqliteStore::open(
            k.home.path(),
            OpenOptions {
                use_keychain: false,
            },
        )
        .unwrap_or_else(|e| panic!("run {run} ({args:?} killed after {lines} lines): {e}"));
        let servers = store.servers().await.unwrap();
        assert!(
            servers.iter().any(|s| s.name == "base"),
            "run {run}: the first server was lost"
        );
        for s in &servers {
            let stored = store.credential(&s.id).await;
            let stored = stored.unwrap_or_else(|e| panic!("run {run}: {e}"));
            if let Some(Credential::OAuth(o)) = stored.map(|c| c.credential) {
                assert!(
                    !o.issuer.is_empty() && !o.client_id.is_empty() && !o.resource.is_empty(),
                    "run {run}"
                );
            }
        }
    }
    assert!(killed >= 50, "most runs were killed mid-way ({killed})");
}
