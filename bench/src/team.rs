//! `keyway-bench team` (run through `bench/team`): the team gateway as a team runs it.
//! One Postgres (a throwaway cluster), the organisation's server (the testbed, JWT
//! access tokens), a per-person upstream (the testbed, OAuth), and `keyway serve`
//! replicas behind a round-robin TCP front. Eight people each authorize the upstream
//! through the gateway's link, then 32 callers (four per person) call `echo` as
//! 2026-07-28 requests for a while; the same callers call the upstream directly
//! first, for the baseline. Run with 1 replica and with 3, it prints calls/s, p50
//! and p99, the latency the gateway adds over the direct calls, and the Postgres
//! operations per call (each a statement, one round trip, or a refresh's
//! transaction), read from the replicas' `/metrics`.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(clap::Args, Debug)]
pub struct TeamArgs {
    /// Concurrent callers (spread over the people).
    #[arg(long, default_value_t = 32)]
    callers: usize,
    /// People signed in, each authorizing the upstream as themselves.
    #[arg(long, default_value_t = 8)]
    people: usize,
    /// How long the callers call, per configuration.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The upstream's access-token lifetime: the gateway refreshes each person's
    /// token at half of it, so the run shows what a refresh costs too.
    #[arg(long, default_value_t = 4)]
    token_lifetime: u64,
}

/// Calls each caller makes before the clock starts.
const WARM_UP_CALLS: usize = 5;

/// The upstream's echo, as the gateway names it.
const GATEWAY_TOOL: &str = "up__echo";

/// The store key of the bench's team store (32 bytes, base64).
const KEY: &str = "a2V5d2F5J3MgdGVhbSBzdG9yZSBrZXksIDMyIGJ5dGU=";

struct Measured {
    calls: usize,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    store_ops: u64,
    refreshes: u64,
}

pub async fn run(keyway: PathBuf, work: PathBuf, args: TeamArgs) -> Result<()> {
    if args.callers == 0 || args.people == 0 || args.people > args.callers {
        bail!("--callers and --people must be at least 1, with no more people than callers");
    }
    std::fs::create_dir_all(&work)?;
    eprintln!("team: starting Postgres, the organisation's server and the upstream");
    let db = keyway_testbed::postgres::cluster().fresh_database().await;
    let mut knobs = keyway_testbed::Knobs::default();
    knobs.jwt_access_tokens = true;
    let org = keyway_testbed::Testbed::start(knobs).await?;
    let mut knobs = keyway_testbed::Knobs::default();
    knobs.token_lifetime = args.token_lifetime;
    let upstream = keyway_testbed::Testbed::start(knobs).await?;

    let mut rows = vec![(
        "direct to the upstream".to_owned(),
        direct(&upstream, &args).await?,
    )];
    for replicas in [1, 3] {
        // A store of its own per configuration: every person authorizes anew.
        let home = work.join(format!("home-{replicas}"));
        let _ = std::fs::remove_dir_all(&home);
        let db = if replicas == 1 {
            db.clone()
        } else {
            keyway_testbed::postgres::cluster().fresh_database().await
        };
        let team = Team {
            keyway: &keyway,
            home,
            db,
        };
        let m = team.measure(replicas, &org, &upstream, &args).await?;
        rows.push((
            format!(
                "keyway serve, {replicas} replica{}",
                if replicas == 1 { "" } else { "s" }
            ),
            m,
        ));
    }
    report(&rows, &args);
    Ok(())
}

struct Team<'a> {
    keyway: &'a PathBuf,
    home: PathBuf,
    db: String,
}

impl Team<'_> {
    fn keyway(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(self.keyway);
        c.arg("--home")
            .arg(&self.home)
            .args(args)
            .env("KEYWAY_NO_KEYCHAIN", "1")
            .env("KEYWAY_STORE", &self.db)
            .env("KEYWAY_STORE_KEY", KEY)
            .stdin(std::process::Stdio::null());
        c
    }

    async fn measure(
        &self,
        replicas: usize,
        org: &keyway_testbed::Testbed,
        upstream: &keyway_testbed::Testbed,
        args: &TeamArgs,
    ) -> Result<Measured> {
        for step in [
            vec!["add", upstream.mcp_url(), "--name", "up", "--no-authorize"],
            vec!["edit", "up", "--per-person"],
        ] {
            let out = self.keyway(&step).output().await?;
            if !out.status.success() {
                bail!("keyway {step:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let entry = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let public = format!("http://{}/mcp", entry.local_addr()?);
        let mut children = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..replicas {
            let mut child = self
                .keyway(&[
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--authorization-server",
                    org.issuer(),
                    "--public-url",
                    &public,
                    "--max-connections",
                    &(args.callers * 4).to_string(),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("starting keyway serve")?;
            let url = crate::load::gateway_url(&mut child).await?;
            addrs.push(
                url.trim_start_matches("http://")
                    .trim_end_matches("/mcp")
                    .to_owned(),
            );
            children.push(child);
        }
        front(entry, addrs.clone());
        let operator = std::fs::read_to_string(self.home.join("gateway.token"))?
            .trim()
            .to_owned();

        // Each person authorizes the upstream through the link of their first call.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.callers)
            .build()?;
        let mut tokens = Vec::new();
        for p in 0..args.people {
            let person = format!("person{p}");
            let token = org.mint_access_token_for(&person, "", Some(&public));
            let answer = call(&http, &public, &token, GATEWAY_TOOL, "first").await?;
            let link = answer
                .pointer("/result/inputRequests/keyway-connect/params/url")
                .and_then(Value::as_str)
                .with_context(|| format!("no link in {answer}"))?;
            browse_as(&person, link).await?;
            tokens.push(token);
        }
        let before_ops = store_ops(&http, &addrs, &operator).await?;
        let before_refreshes = upstream.stats().refreshes;
        let (calls, seconds, mut latencies) =
            callers(&http, &public, GATEWAY_TOOL, &tokens, args).await?;
        let store = store_ops(&http, &addrs, &operator).await? - before_ops;
        let refreshes = upstream.stats().refreshes - before_refreshes;
        for mut c in children {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
        let (p50_ms, p99_ms) = percentiles(&mut latencies);
        Ok(Measured {
            calls,
            seconds,
            p50_ms,
            p99_ms,
            store_ops: store,
            refreshes,
        })
    }
}

/// The baseline: the same callers calling the upstream itself, each person with a
/// token of the upstream's own.
async fn direct(upstream: &keyway_testbed::Testbed, args: &TeamArgs) -> Result<Measured> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.callers)
        .build()?;
    let tokens: Vec<String> = (0..args.people)
        .map(|p| {
            upstream.mint_access_token_for(&format!("person{p}"), "", Some(upstream.resource()))
        })
        .collect();
    let (calls, seconds, mut latencies) =
        callers(&http, upstream.mcp_url(), "echo", &tokens, args).await?;
    let (p50_ms, p99_ms) = percentiles(&mut latencies);
    Ok(Measured {
        calls,
        seconds,
        p50_ms,
        p99_ms,
        store_ops: 0,
        refreshes: 0,
    })
}

/// `args.callers` callers, caller `i` as person `i % people`, calling for
/// `args.seconds`: the calls made, the seconds taken, and every call's latency.
async fn callers(
    http: &reqwest::Client,
    url: &str,
    tool: &'static str,
    tokens: &[String],
    args: &TeamArgs,
) -> Result<(usize, f64, Vec<Duration>)> {
    // Warm-up, not counted: each caller's first calls meet a person's gateway being
    // made on that replica, and its connection to the upstream opening.
    let warm: Vec<_> = (0..args.callers)
        .map(|i| {
            let (http, url, token) = (
                http.clone(),
                url.to_owned(),
                tokens[i % tokens.len()].clone(),
            );
            tokio::spawn(async move {
                for _ in 0..WARM_UP_CALLS {
                    call(&http, &url, &token, tool, "warm").await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in warm {
        w.await??;
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let failed = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..args.callers)
        .map(|i| {
            let (http, url, token) = (
                http.clone(),
                url.to_owned(),
                tokens[i % tokens.len()].clone(),
            );
            let failed = failed.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    match call(&http, &url, &token, tool, "bench").await {
                        Ok(v) if v.pointer("/result/content/0/text") == Some(&json!("bench")) => {
                            seen.push(t.elapsed())
                        }
                        other => {
                            if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("team: a call failed: {other:?}");
                            }
                        }
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let seconds = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} calls failed");
    }
    Ok((all.len(), seconds, all))
}

/// One 2026-07-28 call of `tool` (an echo) as the holder of `token`.
async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    tool: &str,
    text: &str,
) -> Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool,
        "arguments": {"text": text},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
            "io.modelcontextprotocol/clientInfo": {"name": "keyway-bench", "version": "1"}}}});
    let r = http
        .post(url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&body)
        .send()
        .await?;
    let sse = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
        );
    }
    if sse {
        return crate::direct::sse_answer(&bytes, Some(&json!(1)))
            .context("no answer in the event stream");
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// A browser signing in as `person` wherever it is asked (with its cookies, pressing
/// the link page's button): the testbed approves whom `login_hint` names.
async fn browse_as(person: &str, url: &str) -> Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut jar: std::collections::HashMap<String, Vec<(String, String)>> = Default::default();
    let mut at = url::Url::parse(url)?;
    let mut post = false;
    for _ in 0..12 {
        if at
            .query_pairs()
            .any(|(k, v)| k == "response_type" && v == "code")
            && !at.query_pairs().any(|(k, _)| k == "login_hint")
        {
            at.query_pairs_mut().append_pair("login_hint", person);
        }
        let cookies = jar
            .entry(at.host_str().unwrap_or_default().to_owned())
            .or_default();
        let mut req = if post {
            http.post(at.clone())
        } else {
            http.get(at.clone())
        };
        post = false;
        if !cookies.is_empty() {
            let header: Vec<String> = cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header("cookie", header.join("; "));
        }
        let r = req.send().await?;
        for c in r.headers().get_all("set-cookie") {
            let pair = c.to_str()?.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                cookies.retain(|(n, _)| n != k.trim());
                cookies.push((k.trim().to_owned(), v.trim().to_owned()));
            }
        }
        if r.status().is_redirection() {
            let next = r
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .context("a redirect without a Location")?
                .to_owned();
            at = at.join(&next)?;
            continue;
        }
        let status = r.status();
        let text = r.text().await?;
        if status.is_success() && text.contains("<form method=\"post\">") {
            post = true;
            continue;
        }
        if !status.is_success() {
            bail!("{person}'s authorization ended with {status}");
        }
        return Ok(());
    }
    bail!("too many redirects for {person}")
}

/// The Postgres operations the replicas made so far (`keyway_store_operations_total`).
async fn store_ops(http: &reqwest::Client, addrs: &[String], token: &str) -> Result<u64> {
    let mut total = 0;
    for a in addrs {
        let text = http
            .get(format!("http://{a}/metrics"))
            .bearer_auth(token)
            .send()
            .await?
            .text()
            .await?;
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("keyway_store_operations_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0) as u64;
    }
    Ok(total)
}

/// A round-robin front: each connection to the next replica that takes it. Bytes
/// are copied as they are.
fn front(listener: tokio::net::TcpListener, replicas: Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let _ = inbound.set_nodelay(true);
            let (replicas, next) = (replicas.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..replicas.len() {
                    let at = &replicas[next.fetch_add(1, Ordering::Relaxed) % replicas.len()];
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(at).await {
                        let _ = outbound.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
}

fn percentiles(v: &mut [Duration]) -> (f64, f64) {
    v.sort_unstable();
    let at = |q: f64| {
        v.get(((v.len() as f64 - 1.0) * q).round() as usize)
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    (at(0.50), at(0.99))
}

fn report(rows: &[(String, Measured)], args: &TeamArgs) {
    let base = &rows[0].1;
    println!(
        "\n{} callers ({} people), {} s each, the upstream's tokens living {} s:\n",
        args.callers, args.people, args.seconds, args.token_lifetime
    );
    println!(
        "| | calls/s | p50 ms | p99 ms | added p50 / p99 ms | Postgres operations per call | upstream refreshes |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, m) in rows {
        let added = if std::ptr::eq(m, base) {
            String::new()
        } else {
            format!(
                "{:.2} / {:.2}",
                m.p50_ms - base.p50_ms,
                m.p99_ms - base.p99_ms
            )
        };
        let ops = if std::ptr::eq(m, base) {
            String::new()
        } else {
            format!(
                "{:.4} ({} in all)",
                m.store_ops as f64 / m.calls.max(1) as f64,
                m.store_ops
            )
        };
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {added} | {ops} | {} |",
            m.calls as f64 / m.seconds,
            m.p50_ms,
            m.p99_ms,
            if std::ptr::eq(m, base) {
                String::new()
            } else {
                m.refreshes.to_string()
            }
        );
    }
}
