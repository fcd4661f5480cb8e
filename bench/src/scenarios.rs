//! Scenarios 1 to 8 (9, the remote server, is in remote.rs). Each runs one peer once
//! and returns that round's numbers; the caller alternates peers (keyway, mcp-remote,
//! direct, keyway, ...).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    direct::{self, Direct},
    measure::percentile,
    peers::{Env, Route},
    report::Peer,
    stdio::Bridge,
    upstream::Upstream,
};

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Every request the testbed saw, apart from the harness reading its counters.
fn requests(stats: &Value) -> u64 {
    stats["paths"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("/_testbed/"))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

fn path_count(stats: &Value, key: &str) -> u64 {
    stats["paths"][key].as_u64().unwrap_or(0)
}

fn mcp_path(url: &str) -> String {
    url::Url::parse(url)
        .map(|u| u.path().to_owned())
        .unwrap_or_else(|_| "/mcp".into())
}

/// An echo result's text, checked, so a bridge that answers with errors can't look fast.
pub fn check_echo(result: &Value, text: &str) -> Result<()> {
    let got = result.to_string();
    if result.get("isError") == Some(&Value::Bool(true)) || !got.contains(text) {
        bail!("echo answered {got}");
    }
    Ok(())
}

// 1. Cold start --------------------------------------------------------------------

#[derive(Debug)]
pub struct ColdStart {
    pub ms: f64,
    /// HTTP requests the testbed saw before the first tools/call.
    pub requests_before_call: Option<f64>,
    /// Whether the session was DELETEd when the client went away.
    pub deleted: Option<f64>,
}

pub async fn cold_start(env: &Env, route: &Route, peer: Peer, round: usize) -> Result<ColdStart> {
    let up = &route.upstream;
    let before = match up.stats_url {
        Some(_) => Some(up.stats().await?),
        None => None,
    };
    let started = Instant::now();
    let (ms, after_call) = match peer {
        Peer::Direct => {
            let d = Direct::connect(up.client()?, &up.mcp_url, route.token.clone()).await?;
            d.request("tools/list", json!({})).await?;
            let ms = ms(started.elapsed());
            check_echo(
                &d.request("tools/call", up.echo_args("cold")).await?,
                "cold",
            )?;
            let after = stats_if(up).await?;
            d.close().await;
            (ms, after)
        }
        _ => {
            let b = env.bridge(peer, route, &format!("cold-{}-{round}", up.name))?;
            b.initialize().await?;
            b.request("tools/list", json!({})).await?;
            let ms = ms(started.elapsed());
            check_echo(
                &b.request("tools/call", up.echo_args("cold")).await?,
                "cold",
            )?;
            let after = stats_if(up).await?;
            b.close().await?;
            (ms, after)
        }
    };
    let (mut requests_before_call, mut deleted) = (None, None);
    if let (Some(before), Some(after)) = (before, after_call) {
        // Everything up to and including the call, less the call itself.
        requests_before_call = Some((requests(&after) - requests(&before)) as f64 - 1.0);
        let closed = up.stats().await?;
        let key = format!("DELETE {}", mcp_path(&up.mcp_url));
        deleted = Some(if path_count(&closed, &key) > path_count(&before, &key) {
            1.0
        } else {
            0.0
        });
    }
    Ok(ColdStart {
        ms,
        requests_before_call,
        deleted,
    })
}

async fn stats_if(up: &Upstream) -> Result<Option<Value>> {
    match up.stats_url {
        Some(_) => Ok(Some(up.stats().await?)),
        None => Ok(None),
    }
}

// 2. Full authorization ------------------------------------------------------------

/// Empty store to the first initialize answer: discovery, registration, PKCE, the
/// (auto-approved) consent, the code exchange.
pub async fn full_authorization(env: &Env, up: &Upstream, peer: Peer, round: usize) -> Result<f64> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("auth-{}-", peer.label()))
        .tempdir_in(&env.work)?;
    let started = Instant::now();
    match peer {
        Peer::Direct => {
            let http = up.client()?;
            let token = crate::oauth::authorize(&http, &up.mcp_url).await?;
            let d = Direct::connect(http, &up.mcp_url, Some(token)).await?;
            let ms = ms(started.elapsed());
            d.close().await;
            Ok(ms)
        }
        _ => {
            let b = env.fresh_bridge(peer, &up.mcp_url, dir.path(), &format!("auth-{round}"))?;
            b.request("initialize", crate::initialize_params()).await?;
            let ms = ms(started.elapsed());
            b.close().await?;
            Ok(ms)
        }
    }
}

// 3 and 4. Per-call latency and memory ---------------------------------------------

#[derive(Debug)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// Peak RSS of the bridge (bytes) before it was closed (VmHWM); `None` for the
    /// in-process direct client.
    pub peak_rss: Option<f64>,
    /// Peak RSS of the bridge (bytes) over its whole life, shutdown included.
    pub peak_rss_at_exit: Option<f64>,
    /// The bridge's CPU time per timed call (µs).
    pub cpu_us_per_call: Option<f64>,
}

pub async fn latency(
    env: &Env,
    route: &Route,
    peer: Peer,
    calls: usize,
    round: usize,
) -> Result<Latency> {
    let up = &route.upstream;
    let mut samples = Vec::with_capacity(calls);
    let text = "latency";
    let args = up.echo_args(text);
    let (peak_rss, peak_rss_at_exit, cpu_us_per_call) = match peer {
        Peer::Direct => {
            let d = Direct::connect(up.client()?, &up.mcp_url, route.token.clone()).await?;
            d.request("tools/list", json!({})).await?;
            for i in 0..calls + WARMUP {
                let t = Instant::now();
                let r = d.request("tools/call", args.clone()).await?;
                if i >= WARMUP {
                    samples.push(ms(t.elapsed()));
                }
                check_echo(&r, text)?;
            }
            d.close().await;
            (None, None, None)
        }
        _ => {
            let b = env.bridge_with(peer, route, &format!("latency-{}-{round}", up.name), true)?;
            b.initialize().await?;
            b.request("tools/list", json!({})).await?;
            let mut cpu_before = 0;
            for i in 0..calls + WARMUP {
                if i == WARMUP {
                    cpu_before = b.cpu_ns();
                }
                let t = Instant::now();
                let r = b.request("tools/call", args.clone()).await?;
                if i >= WARMUP {
                    samples.push(ms(t.elapsed()));
                }
                check_echo(&r, text)?;
            }
            let cpu = b.cpu_ns().saturating_sub(cpu_before) as f64 / 1000.0 / calls as f64;
            let rss = b.peak_rss() as f64;
            let at_exit = b.close().await?.map(|b| b as f64);
            (Some(rss), at_exit, Some(cpu))
        }
    };
    Ok(Latency {
        p50: percentile(&samples, 50.0).unwrap_or(f64::NAN),
        p90: percentile(&samples, 90.0).unwrap_or(f64::NAN),
        p99: percentile(&samples, 99.0).unwrap_or(f64::NAN),
        peak_rss,
        peak_rss_at_exit,
        cpu_us_per_call,
    })
}

/// Calls made before timing starts (connections warm, code paged in).
const WARMUP: usize = 20;

/// Calls each upstream gets from direct clients before round 1. Node compiles
/// server-everything's hot paths over its first few thousand calls, so without this
/// the first peer of round 1 (keyway) met a server still warming up: in one-round runs
/// its added p50 over direct read 0.24-0.29 ms; after 2,000 calls 0.10-0.13 ms, after
/// 6,000 0.04-0.08 ms (later rounds of full runs: 0.01-0.06 ms).
pub const UPSTREAM_WARMUP: usize = 6000;

/// Warm an upstream up: [`UPSTREAM_WARMUP`] echo calls from 4 direct clients.
pub async fn warm_up(route: &Route) -> Result<()> {
    let up = &route.upstream;
    let args = up.echo_args("warm-up");
    let clients =
        join_all((0..4).map(|_| async {
            Direct::connect(up.client()?, &up.mcp_url, route.token.clone()).await
        }))
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    join_all(clients.iter().map(|d| async {
        for _ in 0..UPSTREAM_WARMUP / 4 {
            check_echo(&d.request("tools/call", args.clone()).await?, "warm-up")?;
        }
        anyhow::Ok(())
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    join_all(clients.into_iter().map(Direct::close)).await;
    Ok(())
}

// 5. Parallel bridges ---------------------------------------------------------------

#[derive(Debug)]
pub struct Parallel {
    /// Spawn of all bridges to the last initialize answer.
    pub up_ms: f64,
    pub calls_per_s: f64,
    /// Sum of the bridges' peak RSS (bytes).
    pub total_rss: Option<f64>,
    /// The bridges' CPU time per call (µs).
    pub cpu_us_per_call: Option<f64>,
}

pub async fn parallel(
    env: &Env,
    route: &Route,
    peer: Peer,
    clients: usize,
    calls: usize,
    round: usize,
) -> Result<Parallel> {
    let up = &route.upstream;
    let args = up.echo_args("parallel");
    let started = Instant::now();
    match peer {
        Peer::Direct => {
            let ds = join_all((0..clients).map(|_| async {
                Direct::connect(up.client()?, &up.mcp_url, route.token.clone()).await
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            let up_ms = ms(started.elapsed());
            let t = Instant::now();
            join_all(ds.iter().map(|d| async {
                for _ in 0..calls {
                    check_echo(&d.request("tools/call", args.clone()).await?, "parallel")?;
                }
                anyhow::Ok(())
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            let secs = t.elapsed().as_secs_f64();
            join_all(ds.into_iter().map(Direct::close)).await;
            Ok(Parallel {
                up_ms,
                calls_per_s: (clients * calls) as f64 / secs,
                total_rss: None,
                cpu_us_per_call: None,
            })
        }
        _ => {
            let bs = (0..clients)
                .map(|i| env.bridge(peer, route, &format!("parallel-{}-{round}-{i}", up.name)))
                .collect::<Result<Vec<Bridge>>>()?;
            join_all(bs.iter().map(|b| b.initialize()))
                .await
                .into_iter()
                .collect::<Result<Vec<_>>>()?;
            let up_ms = ms(started.elapsed());
            let cpu_before: u64 = bs.iter().map(Bridge::cpu_ns).sum();
            let t = Instant::now();
            join_all(bs.iter().map(|b| async {
                for _ in 0..calls {
                    check_echo(&b.request("tools/call", args.clone()).await?, "parallel")?;
                }
                anyhow::Ok(())
            }))
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
            let secs = t.elapsed().as_secs_f64();
            let cpu: u64 = bs
                .iter()
                .map(Bridge::cpu_ns)
                .sum::<u64>()
                .saturating_sub(cpu_before);
            let rss: u64 = bs.iter().map(Bridge::peak_rss).sum();
            for r in join_all(bs.into_iter().map(Bridge::close)).await {
                r?;
            }
            Ok(Parallel {
                up_ms,
                calls_per_s: (clients * calls) as f64 / secs,
                total_rss: Some(rss as f64),
                cpu_us_per_call: Some(cpu as f64 / 1000.0 / (clients * calls) as f64),
            })
        }
    }
}

// 6. Fan-out -------------------------------------------------------------------------

#[derive(Debug)]
pub struct FanOut {
    pub wall_ms: f64,
    pub tools: f64,
}

/// `keyway tools --timeout T` over a home of many servers, one of them hung.
pub async fn fan_out(env: &Env, home: &Path, timeout_s: f64) -> Result<FanOut> {
    let started = Instant::now();
    let out = env
        .keyway_run(
            home,
            None,
            &["--json", "tools", "--timeout", &timeout_s.to_string()],
        )
        .await?;
    let wall_ms = ms(started.elapsed());
    let report: Value = serde_json::from_str(&out).context("keyway tools --json")?;
    let tools = report["tools"].as_array().map(Vec::len).unwrap_or(0) as f64;
    Ok(FanOut { wall_ms, tools })
}

// 7. Gateway ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct Gateway {
    pub calls_per_s: f64,
    pub p50: f64,
    pub p99: f64,
    /// The slowest call.
    pub max: f64,
    /// The gateway's CPU time per call (µs), when measured.
    pub cpu_us_per_call: Option<f64>,
}

/// `callers` concurrent MCP clients, each with its own session, against `url` (the
/// gateway or the upstream itself).
pub async fn callers(
    url: &str,
    token: Option<String>,
    tool_args: &Value,
    callers: usize,
    calls: usize,
) -> Result<Gateway> {
    let cs = join_all(
        (0..callers)
            .map(|_| async { Direct::connect(direct::http_client()?, url, token.clone()).await }),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?;
    let started = Instant::now();
    let samples = join_all(cs.iter().map(|c| async {
        let mut v = Vec::with_capacity(calls);
        for _ in 0..calls {
            let t = Instant::now();
            let r = c.request("tools/call", tool_args.clone()).await?;
            v.push(ms(t.elapsed()));
            check_echo(&r, "gateway")?;
        }
        anyhow::Ok(v)
    }))
    .await
    .into_iter()
    .collect::<Result<Vec<_>>>()?
    .concat();
    let secs = started.elapsed().as_secs_f64();
    join_all(cs.into_iter().map(Direct::close)).await;
    Ok(Gateway {
        calls_per_s: samples.len() as f64 / secs,
        p50: percentile(&samples, 50.0).unwrap_or(f64::NAN),
        p99: percentile(&samples, 99.0).unwrap_or(f64::NAN),
        max: samples.iter().copied().fold(f64::NAN, f64::max),
        cpu_us_per_call: None,
    })
}

// 8. Refresh storm ---------------------------------------------------------------------

#[derive(Debug)]
pub struct Storm {
    pub refreshes: f64,
    pub p99: f64,
    pub failed: f64,
    pub reuse_revocations: f64,
}

/// A bridge whose access token has just expired gets `calls` calls at once.
pub async fn storm(
    env: &Env,
    route: &Route,
    peer: Peer,
    lifetime: Duration,
    calls: usize,
    round: usize,
) -> Result<Storm> {
    let up = &route.upstream;
    let b = env.bridge(peer, route, &format!("storm-{round}"))?;
    b.initialize().await?;
    b.request("tools/list", json!({})).await?;
    let before = up.stats().await?;
    // Whatever token the bridge holds was issued by now: wait out its life.
    tokio::time::sleep(lifetime + Duration::from_millis(250)).await;
    let args = up.echo_args("storm");
    let results = join_all((0..calls).map(|_| async {
        let t = Instant::now();
        let r = b.request("tools/call", args.clone()).await;
        (ms(t.elapsed()), r.and_then(|r| check_echo(&r, "storm")))
    }))
    .await;
    let after = up.stats().await?;
    b.close().await?;
    let samples: Vec<f64> = results.iter().map(|(t, _)| *t).collect();
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    let delta = |k: &str| {
        after[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before[k].as_u64().unwrap_or(0)) as f64
    };
    Ok(Storm {
        refreshes: delta("refreshes"),
        p99: percentile(&samples, 99.0).unwrap_or(f64::NAN),
        failed: failed as f64,
        reuse_revocations: delta("reuse_revocations"),
    })
}
