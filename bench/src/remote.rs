//! Scenario 9, a remote server: the testbed over TLS (h2 and HTTP/1.1 by ALPN) with
//! [`DELAY_MS`] added to every MCP answer, as a server one round trip away. What users
//! feel there is round trips and connections, not microseconds of CPU: spawn to the
//! first `tools/call` answer, and [`CONCURRENT`] calls in flight through one bridge.

use std::time::Instant;

use anyhow::{Context, Result};
use futures::future::join_all;
use serde_json::{Value, json};

use crate::{
    direct::Direct,
    peers::{Env, Route},
    report::Peer,
    scenarios::{check_echo, ms},
};

/// Added by the testbed to every MCP answer (`--delay mcp:25`): one round trip.
pub const DELAY_MS: u64 = 25;
/// Calls sent at once through one bridge.
pub const CONCURRENT: usize = 8;
/// How long each of them runs on the server (the `slow` tool).
pub const SLOW_MS: u64 = 100;

/// One peer's round.
#[derive(Debug)]
pub struct Remote {
    /// Spawn (direct: client creation) to the first `tools/call` answer, initialize
    /// included, with stored credentials.
    pub first_call_ms: f64,
    /// The [`CONCURRENT`] calls, first sent to last answered.
    pub concurrent_ms: f64,
    /// Connections the server accepted while they ran.
    pub connections_during: f64,
    /// Connections the server accepted from the spawn to the last of them: what the
    /// bridge (or client) used for everything so far.
    pub connections_total: f64,
    /// Of the requests the server saw while they ran, the share that came over HTTP/2.
    pub http2_share: f64,
}

fn counter(stats: &Value, key: &str) -> Result<u64> {
    stats[key]
        .as_u64()
        .with_context(|| format!("the testbed's counters have no {key}"))
}

/// Requests the testbed saw on `path`, any method (its counters do not count
/// themselves).
fn requests_to(stats: &Value, path: &str) -> u64 {
    stats["paths"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.split_once(' ').is_some_and(|(_, p)| p == path))
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

pub async fn remote(env: &Env, route: &Route, peer: Peer, round: usize) -> Result<Remote> {
    let up = &route.upstream;
    let path = url::Url::parse(&up.mcp_url)?.path().to_owned();
    let echo = up.echo_args("remote");
    let slow = json!({"name": "slow", "arguments": {"ms": SLOW_MS}});
    let waited = format!("waited {SLOW_MS} ms");
    // Read first: the counters' own connection is open (and counted) before the run.
    let before = up.stats().await?;
    let started = Instant::now();
    let (first_call_ms, during, after, concurrent_ms) = match peer {
        Peer::Direct => {
            let d = Direct::connect(up.client()?, &up.mcp_url, route.token.clone()).await?;
            check_echo(&d.request("tools/call", echo).await?, "remote")?;
            let first = ms(started.elapsed());
            let during = up.stats().await?;
            let t = Instant::now();
            for r in join_all((0..CONCURRENT).map(|_| d.request("tools/call", slow.clone()))).await
            {
                check_echo(&r?, &waited)?;
            }
            let wall = ms(t.elapsed());
            let after = up.stats().await?;
            d.close().await;
            (first, during, after, wall)
        }
        _ => {
            let b = env.bridge(peer, route, &format!("remote-{round}"))?;
            b.initialize().await?;
            check_echo(&b.request("tools/call", echo).await?, "remote")?;
            let first = ms(started.elapsed());
            let during = up.stats().await?;
            let t = Instant::now();
            for r in join_all((0..CONCURRENT).map(|_| b.request("tools/call", slow.clone()))).await
            {
                check_echo(&r?, &waited)?;
            }
            let wall = ms(t.elapsed());
            let after = up.stats().await?;
            b.close().await?;
            (first, during, after, wall)
        }
    };
    let connections = |from: &Value| -> Result<f64> {
        Ok(
            counter(&after, "mcp_connections")?.saturating_sub(counter(from, "mcp_connections")?)
                as f64,
        )
    };
    let requests = requests_to(&after, &path).saturating_sub(requests_to(&during, &path));
    let http2 =
        counter(&after, "http2_requests")?.saturating_sub(counter(&during, "http2_requests")?);
    Ok(Remote {
        first_call_ms,
        concurrent_ms,
        connections_during: connections(&during)?,
        connections_total: connections(&before)?,
        http2_share: if requests == 0 {
            0.0
        } else {
            100.0 * http2 as f64 / requests as f64
        },
    })
}
