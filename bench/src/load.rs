//! `keyway-bench load` (run through `bench/load`): keyway's gateway under many
//! callers for minutes, in front of an upstream that fails and hangs a share of
//! calls (the testbed's `--fail-percent` and `--hang-percent`). Every second it
//! samples the gateway's resident memory, open descriptors and sockets, and the
//! calls answered; at the end it prints a small table and checks that no call went
//! unanswered, every failure said why, no stretch of the request timeout and a
//! second more passed without answers, and memory and sockets stayed flat.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::direct::{self, Direct};

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    /// Concurrent callers, each with a session of its own.
    #[arg(long, default_value_t = 200)]
    callers: usize,
    /// How long the callers call.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// Share of upstream calls answered 503.
    #[arg(long, default_value_t = 5)]
    fail_percent: u8,
    /// Share of upstream calls never answered.
    #[arg(long, default_value_t = 1)]
    hang_percent: u8,
    /// The gateway's upstream request timeout (`keyway serve --request-timeout`): a
    /// hung call is answered with an error after this long.
    #[arg(long, default_value_t = 5)]
    request_timeout: u64,
}

/// How long a caller waits for any answer before it counts the call as hung.
const CALLER_DEADLINE: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    hung: AtomicU64,
    /// Failures by what they said (the message, numbers and ids taken out).
    reasons: Mutex<BTreeMap<String, u64>>,
}

struct Sample {
    second: u64,
    rss_kib: u64,
    fds: u64,
    sockets: u64,
    answered: u64,
}

pub async fn run(keyway: PathBuf, work: PathBuf, args: LoadArgs) -> Result<()> {
    std::fs::create_dir_all(&work)?;
    let home = work.join("home");
    let _ = std::fs::remove_dir_all(&home);
    // The upstream: the testbed, open, failing and hanging its share of MCP calls.
    let mut testbed = tokio::process::Command::new(&keyway)
        .args(["testbed", "--open"])
        .arg(format!("--fail-percent=mcp:{}", args.fail_percent))
        .arg(format!("--hang-percent=mcp:{}", args.hang_percent))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting keyway testbed")?;
    let mut lines = BufReader::new(testbed.stdout.take().context("no stdout")?).lines();
    let line = lines
        .next_line()
        .await?
        .context("the testbed said nothing")?;
    let announced: serde_json::Value = serde_json::from_str(&line)?;
    let upstream = announced["mcp_url"]
        .as_str()
        .context("no mcp_url")?
        .to_owned();
    let keyway_at = |args: &[&str]| {
        let mut c = tokio::process::Command::new(&keyway);
        c.arg("--home")
            .arg(&home)
            .args(args)
            .env("KEYWAY_NO_KEYCHAIN", "1");
        c
    };
    let added = keyway_at(&["add", &upstream, "--name", "up"])
        .output()
        .await?;
    if !added.status.success() {
        bail!("keyway add: {}", String::from_utf8_lossy(&added.stderr));
    }
    let mut gateway = keyway_at(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--request-timeout",
        &args.request_timeout.to_string(),
        "--max-connections",
        &(args.callers * 2).to_string(),
    ])
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .kill_on_drop(true)
    .spawn()
    .context("starting keyway serve")?;
    let url = gateway_url(&mut gateway).await?;
    let pid = gateway.id().context("keyway serve exited")?;
    let token = std::fs::read_to_string(home.join("gateway.token"))?
        .trim()
        .to_owned();

    eprintln!(
        "load: {} callers for {} s through {url}; upstream fails {}% and hangs {}% of calls",
        args.callers, args.seconds, args.fail_percent, args.hang_percent
    );
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let http = direct::http_client()?;
    let mut callers = Vec::new();
    for _ in 0..args.callers {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        let (tally, stop) = (tally.clone(), stop.clone());
        callers.push(tokio::spawn(async move {
            let c = Direct::connect(http, &url, Some(token)).await?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let called = tokio::time::timeout(
                    CALLER_DEADLINE,
                    c.request(
                        "tools/call",
                        json!({"name": "up__echo", "arguments": {"text": format!("call {n}")}}),
                    ),
                )
                .await;
                // A failure is a JSON-RPC error or a tool result marked isError; either
                // way its text says why.
                let failure = match called {
                    Err(_) => {
                        tally.hung.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Err(e)) => Some(format!("{e:#}")),
                    Ok(Ok(r)) if r["isError"] == true => Some(format!(
                        "tool error: {}",
                        r.pointer("/content/0/text")
                            .and_then(|t| t.as_str())
                            .unwrap_or_default()
                    )),
                    Ok(Ok(_)) => None,
                };
                match failure {
                    None => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Some(why) => {
                        *tally
                            .reasons
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(reason(&why))
                            .or_default() += 1;
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
            c.close().await;
            anyhow::Ok(())
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for second in 1..=args.seconds {
        tick.tick().await;
        let done = tally.ok.load(Ordering::Relaxed)
            + tally.failed.load(Ordering::Relaxed)
            + tally.hung.load(Ordering::Relaxed);
        let (fds, sockets) = descriptors(pid);
        samples.push(Sample {
            second,
            rss_kib: rss_kib(pid),
            fds,
            sockets,
            answered: done - last,
        });
        last = done;
    }
    stop.store(true, Ordering::Relaxed);
    // Callers finish their call in flight (a hung one within the gateway's timeout).
    for c in callers {
        c.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = gateway.start_kill();
    let _ = testbed.start_kill();

    report(&samples, &tally, elapsed, &args)
}

/// A failure's message as a class: each run of digits folded into one `N`.
/// The URL `keyway serve --listen` (started with its stderr piped) says it listens
/// on; the rest of what it writes is read and dropped.
pub async fn gateway_url(gateway: &mut tokio::process::Child) -> Result<String> {
    let mut err = BufReader::new(gateway.stderr.take().context("no stderr")?).lines();
    let url = loop {
        let line = err.next_line().await?.context("keyway serve ended")?;
        if let Some(rest) = line.strip_prefix("keyway gateway on ") {
            break rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    Ok(url)
}

fn reason(message: &str) -> String {
    let mut out = String::new();
    for c in message.chars().take(160) {
        if c.is_ascii_digit() {
            if !out.ends_with('N') {
                out.push('N');
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Open descriptors, and how many of them are sockets.
fn descriptors(pid: u32) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut fds = 0;
    let mut sockets = 0;
    for e in entries.flatten() {
        fds += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (fds, sockets)
}

fn mean(v: impl Iterator<Item = u64>) -> f64 {
    let (sum, n) = v.fold((0u64, 0u64), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum as f64 / n as f64 }
}

fn report(samples: &[Sample], tally: &Tally, elapsed: f64, args: &LoadArgs) -> Result<()> {
    println!("\n| second | RSS MiB | descriptors | sockets | calls answered that second |");
    println!("|---:|---:|---:|---:|---:|");
    let every = (samples.len() / 12).max(1);
    for (i, s) in samples.iter().enumerate() {
        if i % every == 0 || i + 1 == samples.len() {
            println!(
                "| {} | {:.1} | {} | {} | {} |",
                s.second,
                s.rss_kib as f64 / 1024.0,
                s.fds,
                s.sockets,
                s.answered
            );
        }
    }
    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let hung = tally.hung.load(Ordering::Relaxed);
    println!(
        "\ncalls: {} in {elapsed:.0} s ({:.0}/s): {ok} answered, {failed} failed with an error, {hung} never answered",
        ok + failed + hung,
        (ok + failed + hung) as f64 / elapsed
    );
    let reasons = tally.reasons.lock().unwrap_or_else(|p| p.into_inner());
    for (why, n) in reasons.iter() {
        println!("  {n:>7} x {why}");
    }
    // Flat: the last third against the middle third (the first is warm-up).
    let third = samples.len() / 3;
    let middle = &samples[third..2 * third];
    let end = &samples[2 * third..];
    let rss = (
        mean(middle.iter().map(|s| s.rss_kib)),
        mean(end.iter().map(|s| s.rss_kib)),
    );
    let sockets = (
        mean(middle.iter().map(|s| s.sockets)),
        mean(end.iter().map(|s| s.sockets)),
    );
    let peak_sockets = samples.iter().map(|s| s.sockets).max().unwrap_or(0);
    println!(
        "RSS: {:.1} MiB in the middle third, {:.1} MiB in the last; sockets {:.0} and {:.0} (peak {peak_sockets})",
        rss.0 / 1024.0,
        rss.1 / 1024.0,
        sockets.0,
        sockets.1
    );

    let mut broken = Vec::new();
    if hung > 0 {
        broken.push(format!(
            "{hung} calls never answered within {CALLER_DEADLINE:?}"
        ));
    }
    if reasons.keys().any(|r| r.trim().is_empty()) {
        broken.push("a failure said nothing".to_owned());
    }
    // A caller whose call hangs waits out the gateway's timeout, so a second may
    // pass without answers when every caller is waiting at once (few callers); a
    // whole timeout and a second more without one is a gateway stuck.
    let window = usize::try_from(args.request_timeout)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    if let Some(w) = samples
        .windows(window.min(samples.len()).max(1))
        .find(|w| w.iter().all(|s| s.answered == 0))
    {
        broken.push(format!(
            "no call answered in seconds {} to {} (stuck?)",
            w[0].second,
            w[w.len() - 1].second
        ));
    }
    if rss.1 > rss.0 * 1.10 + 1024.0 {
        broken.push(format!(
            "memory grew: {:.1} -> {:.1} MiB",
            rss.0 / 1024.0,
            rss.1 / 1024.0
        ));
    }
    if sockets.1 > sockets.0 * 1.10 + 8.0 {
        broken.push(format!(
            "sockets grew: {:.0} -> {:.0}",
            sockets.0, sockets.1
        ));
    }
    if peak_sockets as usize > args.callers * 3 + 64 {
        broken.push(format!(
            "{peak_sockets} sockets for {} callers",
            args.callers
        ));
    }
    if failed == 0 && args.fail_percent > 0 {
        broken.push("no call failed: the upstream's failures were not seen".to_owned());
    }
    if !broken.is_empty() {
        bail!("{}", broken.join("; "));
    }
    println!("load: passed");
    Ok(())
}
