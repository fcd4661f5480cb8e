//! keyway-bench: keyway beside mcp-remote (the bridge people use today) and a direct
//! Streamable HTTP client (the baseline) and the floor (`keyway-bench-floor`, the least
//! a process in between can cost), scenario by scenario, peers alternating within
//! every round. Run it through `bench/run`, which installs the peers and builds keyway.

mod direct;
mod load;
mod measure;
mod oauth;
mod peers;
mod pki;
mod remote;
mod report;
mod scenarios;
mod stdio;
mod team;
mod upstream;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use serde_json::{Value, json};

use crate::{
    peers::{Env, Route},
    report::{Check, Peer, Results},
    upstream::Upstream,
};

pub const PROTOCOL_VERSION: &str = "2025-06-18";

pub fn initialize_params() -> Value {
    json!({
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {},
        "clientInfo": {"name": "keyway-bench", "version": env!("CARGO_PKG_VERSION")}
    })
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "keyway beside mcp-remote and a direct client, in one run"
)]
struct Args {
    /// Rounds per scenario (each round runs every peer once, alternating).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// One round, for CI: proves the benchmark still runs, not how fast anything is.
    #[arg(long)]
    quick: bool,
    /// Sequential echo calls in the per-call latency scenario.
    #[arg(long, default_value_t = 1000)]
    calls: usize,
    /// Calls per caller in the gateway scenario.
    #[arg(long, default_value_t = 200)]
    gateway_calls: usize,
    /// Calls per bridge in the parallel-bridges scenario (more calls keep the bridges
    /// running long enough to attach perf or strace to them).
    #[arg(long, default_value_t = 200)]
    parallel_calls: usize,
    /// Only these scenarios (1-9), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Only these peers (keyway, mcp-remote, direct, floor), comma-separated; for profiling
    /// one of them. Ratios need keyway and the peer they compare with.
    #[arg(long, value_delimiter = ',', value_parser = ["keyway", "mcp-remote", "direct", "floor"])]
    peers: Vec<String>,
    /// Only against these upstreams (testbed, server-everything), comma-separated, in
    /// the scenarios that run against both; for profiling one of them.
    #[arg(long, value_delimiter = ',', value_parser = ["testbed", "server-everything"])]
    upstreams: Vec<String>,
    /// The floors run on tokio (`keyway-bench-floor relay-async` and `forward-async`)
    /// instead of blocking I/O: what async I/O costs by itself.
    #[arg(long)]
    async_floor: bool,
    /// The repository root (where target/PROFILE/keyway and bench/peer are).
    #[arg(long, default_value = ".")]
    root: PathBuf,
    /// The cargo profile whose binaries run: `dist` (fat LTO, what is packaged) for
    /// numbers; CI's smoke run uses `release`, which its earlier steps already built.
    #[arg(long, default_value = "dist", value_name = "PROFILE")]
    profile: String,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// The gateway under many callers for minutes, in front of an upstream that fails
    /// and hangs a share of calls (`bench/load`); no peers, no rounds.
    Load(load::LoadArgs),
    /// The team gateway: 1 and 3 replicas on one Postgres, people authorizing a
    /// per-person upstream, 32 callers (`bench/team`); no peers, no rounds.
    Team(team::TeamArgs),
}

/// Access-token lifetime of the refresh-storm testbed.
const STORM_LIFETIME: Duration = Duration::from_secs(2);
const STORM_CALLS: usize = 1000;
const PARALLEL_BRIDGES: usize = 8;
const FAN_OUT_SERVERS: usize = 50;
const FAN_OUT_TIMEOUT_S: f64 = 2.0;
const GATEWAY_CALLERS: usize = 32;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyway-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn wanted(args: &Args, n: u8) -> bool {
    args.only.is_empty() || args.only.contains(&n)
}

fn say(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

async fn run(mut args: Args) -> Result<()> {
    if args.quick {
        args.rounds = 1;
    }
    if args.rounds == 0 || args.calls == 0 {
        bail!("--rounds and --calls must be at least 1");
    }
    let root = std::fs::canonicalize(&args.root).context("the --root directory")?;
    let keyway = root.join("target").join(&args.profile).join("keyway");
    match args.command {
        Some(Command::Load(load)) => {
            return load::run(keyway, root.join("target/bench/load"), load).await;
        }
        Some(Command::Team(team)) => {
            return team::run(keyway, root.join("target/bench/team"), team).await;
        }
        None => {}
    }
    let work = tempfile::Builder::new()
        .prefix("keyway-bench-")
        .tempdir()
        .context("making the work directory")?;
    let mut env = environment(&root, &args.profile, work.path())?;
    if args.async_floor {
        env.floor_relay = "relay-async";
        env.floor_forward = "forward-async";
    }
    let begun = Instant::now();

    say("starting the upstreams");
    let testbed = Upstream::testbed("testbed", &env.keyway, &[]).await?;
    let everything = Upstream::everything(&env.peers, &work.path().join("everything.log")).await?;
    let tb = prepare(&env, testbed, "tb").await?;
    let ev = prepare(&env, everything, "everything").await?;
    let routes: Vec<&Route> = [&tb, &ev]
        .into_iter()
        .filter(|r| {
            args.upstreams.is_empty() || args.upstreams.iter().any(|u| u == r.upstream.name)
        })
        .collect();
    // The same testbed speaking only the handshake revisions, for the cold start: the
    // requests a 2026-07-28 server saves show beside those the handshake needs.
    let handshake_tb = if wanted(&args, 1) && routes.iter().any(|r| r.upstream.name == "testbed") {
        let up =
            Upstream::testbed("testbed-2025", &env.keyway, &["--mcp-revision", "legacy"]).await?;
        Some(prepare(&env, up, "tb2025").await?)
    } else {
        None
    };
    say("warming the upstreams up");
    for &route in &routes {
        scenarios::warm_up(route)
            .await
            .with_context(|| format!("warming {} up", route.upstream.name))?;
    }
    let storm = if wanted(&args, 8) {
        let lifetime = STORM_LIFETIME.as_secs().to_string();
        let up =
            Upstream::testbed("testbed-2s", &env.keyway, &["--token-lifetime", &lifetime]).await?;
        Some(prepare(&env, up, "storm").await?)
    } else {
        None
    };
    let tls = if wanted(&args, 9) {
        let pki = pki::Pki::write(work.path())?;
        let delay = format!("mcp:{}", remote::DELAY_MS);
        let up =
            Upstream::testbed_tls("testbed-tls", &env.keyway, &pki, &["--delay", &delay]).await?;
        Some(prepare(&env, up, "remote").await?)
    } else {
        None
    };
    let fan_out = if wanted(&args, 6) {
        Some(FanOutSet::start(&env, FAN_OUT_SERVERS).await?)
    } else {
        None
    };

    let mut res = Results::default();
    declare_targets(&mut res, args.parallel_calls);
    for round in 1..=args.rounds {
        say(format!("round {round} of {}", args.rounds));
        let peers: Vec<Peer> = Peer::ALL
            .into_iter()
            .filter(|p| args.peers.is_empty() || args.peers.iter().any(|x| x == p.label()))
            .collect();
        let peers = peers.as_slice();
        if wanted(&args, 1) {
            for route in routes.iter().copied().chain(handshake_tb.iter()) {
                let s = format!("1 cold start, {}", route.upstream.name);
                for &p in peers.iter().filter(|p| **p != Peer::Floor) {
                    let c = scenarios::cold_start(&env, route, p, round)
                        .await
                        .with_context(|| format!("{s}: {}", p.label()))?;
                    res.record(&s, "spawn to tools/list", "ms", p, c.ms);
                    if let Some(n) = c.requests_before_call {
                        res.record(&s, "HTTP requests before first tools/call", "count", p, n);
                    }
                    if let Some(d) = c.deleted {
                        res.record(&s, "session DELETEd on exit", "1=yes", p, d);
                    }
                }
            }
        }
        if wanted(&args, 2) {
            let s = "2 full authorization, testbed";
            for &p in peers.iter().filter(|p| **p != Peer::Floor) {
                let v = scenarios::full_authorization(&env, &tb.upstream, p, round)
                    .await
                    .with_context(|| format!("{s}: {}", p.label()))?;
                res.record(s, "empty store to initialize answer", "ms", p, v);
            }
        }
        if wanted(&args, 3) || wanted(&args, 4) {
            for &route in &routes {
                let s = format!("3 per-call latency, {}", route.upstream.name);
                let s4 = format!("4 memory, {}", route.upstream.name);
                let mut p50 = Vec::new();
                for &p in peers {
                    let l = scenarios::latency(&env, route, p, args.calls, round)
                        .await
                        .with_context(|| format!("{s}: {}", p.label()))?;
                    res.record(&s, "echo p50", "ms", p, l.p50);
                    res.record(&s, "echo p90", "ms", p, l.p90);
                    res.record(&s, "echo p99", "ms", p, l.p99);
                    if let Some(rss) = l.peak_rss_at_exit {
                        res.record(&s4, "peak RSS at exit", "MiB", p, rss / MIB);
                    }
                    if let Some(rss) = l.peak_rss {
                        res.record(&s4, "peak RSS before close (VmHWM)", "MiB", p, rss / MIB);
                    }
                    if let Some(cpu) = l.cpu_us_per_call {
                        res.record(&s, "bridge CPU per call", "µs", p, cpu);
                    }
                    p50.push((p, l.p50));
                }
                if let Some(&(_, direct)) = p50.iter().find(|(p, _)| *p == Peer::Direct) {
                    for (p, v) in p50 {
                        if p != Peer::Direct {
                            res.record(&s, "added p50 over direct", "ms", p, v - direct);
                        }
                    }
                }
            }
        }
        if wanted(&args, 5) {
            for &route in &routes {
                let s = format!("5 parallel bridges, {}", route.upstream.name);
                let mut rates = Vec::new();
                for &p in peers {
                    let r = scenarios::parallel(
                        &env,
                        route,
                        p,
                        PARALLEL_BRIDGES,
                        args.parallel_calls,
                        round,
                    )
                    .await
                    .with_context(|| format!("{s}: {}", p.label()))?;
                    res.record(
                        &s,
                        &format!("{PARALLEL_BRIDGES} up (spawn to all initialized)"),
                        "ms",
                        p,
                        r.up_ms,
                    );
                    res.record(
                        &s,
                        &format!("{PARALLEL_BRIDGES} x {} calls", args.parallel_calls),
                        "calls/s",
                        p,
                        r.calls_per_s,
                    );
                    rates.push((p, r.calls_per_s));
                    if let Some(rss) = r.total_rss {
                        res.record(&s, "total peak RSS", "MiB", p, rss / MIB);
                    }
                    if let Some(cpu) = r.cpu_us_per_call {
                        res.record(&s, "bridge CPU per call", "µs", p, cpu);
                    }
                }
                record_shares(&mut res, &s, &rates);
            }
        }
        if let Some(set) = &fan_out {
            let s = format!("6 fan-out, {FAN_OUT_SERVERS} servers, 1 hung");
            let f = scenarios::fan_out(&env, &set.home, FAN_OUT_TIMEOUT_S)
                .await
                .context("fan-out")?;
            res.record(
                &s,
                &format!("keyway tools --timeout {FAN_OUT_TIMEOUT_S}"),
                "ms",
                Peer::Keyway,
                f.wall_ms,
            );
            res.record(&s, "tools listed", "count", Peer::Keyway, f.tools);
        }
        if wanted(&args, 7) {
            for &route in &routes {
                let s = format!(
                    "7 gateway, {GATEWAY_CALLERS} callers, {}",
                    route.upstream.name
                );
                let g = gateway_round(&env, route, args.gateway_calls)
                    .await
                    .with_context(|| s.clone())?;
                let (direct_p50, direct_p99) = (g.direct.p50, g.direct.p99);
                record_shares(
                    &mut res,
                    &s,
                    &[
                        (Peer::Keyway, g.keyway.calls_per_s),
                        (Peer::Direct, g.direct.calls_per_s),
                        (Peer::Floor, g.floor.calls_per_s),
                    ],
                );
                for (p, r) in [
                    (Peer::Keyway, &g.keyway),
                    (Peer::Direct, &g.direct),
                    (Peer::Floor, &g.floor),
                ] {
                    res.record(&s, "calls/s", "calls/s", p, r.calls_per_s);
                    res.record(&s, "p50", "ms", p, r.p50);
                    res.record(&s, "p99", "ms", p, r.p99);
                    res.record(&s, "slowest call", "ms", p, r.max);
                    if p != Peer::Direct {
                        res.record(&s, "added p50 over direct", "ms", p, r.p50 - direct_p50);
                        res.record(&s, "p99 over direct's", "x", p, r.p99 / direct_p99);
                    }
                    if let Some(cpu) = r.cpu_us_per_call {
                        res.record(&s, "gateway CPU per call", "µs", p, cpu);
                    }
                }
            }
        }
        if let Some(route) = &storm {
            let s = format!("8 refresh storm, {STORM_CALLS} calls");
            for &p in peers
                .iter()
                .filter(|p| !matches!(p, Peer::Direct | Peer::Floor))
            {
                let r = scenarios::storm(&env, route, p, STORM_LIFETIME, STORM_CALLS, round)
                    .await
                    .with_context(|| format!("{s}: {}", p.label()))?;
                res.record(&s, "refreshes", "count", p, r.refreshes);
                res.record(&s, "call p99", "ms", p, r.p99);
                res.record(&s, "failed calls", "count", p, r.failed);
                res.record(
                    &s,
                    "refresh-token reuse revocations",
                    "count",
                    p,
                    r.reuse_revocations,
                );
            }
        }
        if let Some(route) = &tls {
            let s = REMOTE_SCENARIO;
            for &p in peers.iter().filter(|p| **p != Peer::Floor) {
                let r = remote::remote(&env, route, p, round)
                    .await
                    .with_context(|| format!("{s}: {}", p.label()))?;
                let m = RemoteMetrics::new();
                res.record(s, &m.first_call, "ms", p, r.first_call_ms);
                res.record(s, &m.wall, "ms", p, r.concurrent_ms);
                res.record(s, &m.opened, "count", p, r.connections_during);
                res.record(s, &m.connections, "count", p, r.connections_total);
                res.record(s, &m.http2, "%", p, r.http2_share);
            }
        }
    }

    let rows = res.rows();
    let header = format!(
        "# keyway benchmark\n\n{} round(s), medians with (min-max) over rounds; {} cores; {}; mcp-remote 0.15.1 on node {}; floors: {}; took {:.0} s.",
        args.rounds,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if args.quick {
            "QUICK MODE (numbers are not comparable)"
        } else {
            "full run"
        },
        node_version().await,
        if args.async_floor {
            "async relay and forwarder (tokio)"
        } else {
            "blocking relay and forwarder"
        },
        begun.elapsed().as_secs_f64()
    );
    let md = report::markdown(&rows, &header);
    println!("{md}");
    let out = if args.out.is_absolute() {
        args.out.clone()
    } else {
        root.join(&args.out)
    };
    let meta = json!({
        "rounds": args.rounds,
        "quick": args.quick,
        "calls": args.calls,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "node": node_version().await,
    });
    report::write(&out, &rows, &header, &meta)?;
    let missed: Vec<_> = rows
        .iter()
        .filter(|r| r.met == Some(false))
        .map(|r| format!("{}: {}", r.scenario, r.metric))
        .collect();
    say(format!(
        "wrote {} and results.json",
        out.join("results.md").display()
    ));
    if !missed.is_empty() {
        say(format!("targets missed: {}", missed.join("; ")));
    }
    Ok(())
}

const MIB: f64 = 1024.0 * 1024.0;

const REMOTE_SCENARIO: &str = "9 testbed over TLS, 25 ms per request";

/// Scenario 9's rows.
struct RemoteMetrics {
    first_call: String,
    wall: String,
    opened: String,
    connections: String,
    http2: String,
}

impl RemoteMetrics {
    fn new() -> Self {
        let calls = format!(
            "{} x slow({} ms) at once",
            remote::CONCURRENT,
            remote::SLOW_MS
        );
        Self {
            first_call: "spawn to first tools/call answer".into(),
            wall: format!("{calls}: wall"),
            opened: format!("{calls}: connections opened meanwhile"),
            connections: format!("connections, spawn to the last of the {calls}"),
            http2: format!("{calls}: requests over HTTP/2"),
        }
    }
}

/// Each peer's calls/s as a share of the direct clients' in the same round. Neighbours
/// in time share the machine's mood, so this ratio is steadier than one of medians
/// taken over rounds; and the floor's share shows what any process in between can
/// reach here.
fn record_shares(res: &mut Results, scenario: &str, rates: &[(Peer, f64)]) {
    let Some(&(_, direct)) = rates.iter().find(|(p, _)| *p == Peer::Direct) else {
        return;
    };
    if direct <= 0.0 {
        return;
    }
    for &(p, rate) in rates.iter().filter(|(p, _)| *p != Peer::Direct) {
        res.record(
            scenario,
            "share of direct, same round",
            "%",
            p,
            100.0 * rate / direct,
        );
    }
}

fn declare_targets(res: &mut Results, parallel_calls: usize) {
    let ratio = |v: f64| Check::RatioToRemoteAtMost(v);
    // CPU per message of a bridge: within 1.6x of the floor relay's.
    let cpu = Check::RatioToFloorAtMost(1.6);
    for up in ["testbed", "server-everything"] {
        let cold = format!("1 cold start, {up}");
        res.declare(&cold, "spawn to tools/list", "ms", &[ratio(1.0 / 15.0)]);
        let lat = format!("3 per-call latency, {up}");
        res.declare(&lat, "echo p50", "ms", &[]);
        res.declare(&lat, "echo p90", "ms", &[]);
        res.declare(&lat, "echo p99", "ms", &[]);
        res.declare(
            &lat,
            "added p50 over direct",
            "ms",
            &[Check::AtMost(0.2), ratio(1.0 / 6.0)],
        );
        res.declare(&lat, "bridge CPU per call", "µs", &[cpu]);
        let par = format!("5 parallel bridges, {up}");
        // Retired by issue 15: the floor relay showed no separate process meets them
        // on 2 cores. Still reported.
        res.declare(
            &par,
            &format!("{PARALLEL_BRIDGES} x {parallel_calls} calls"),
            "calls/s",
            &[Check::Retired(">= 85% of direct")],
        );
        res.declare(&par, "bridge CPU per call", "µs", &[cpu]);
        let gw = format!("7 gateway, {GATEWAY_CALLERS} callers, {up}");
        res.declare(
            &gw,
            "calls/s",
            "calls/s",
            &[Check::Retired(">= 80% of direct")],
        );
        res.declare(&gw, "added p50 over direct", "ms", &[Check::AtMost(0.5)]);
        // Issue 20: the gateway's tail within a quarter of the direct connection's.
        res.declare(&gw, "p99 over direct's", "x", &[Check::AtMost(1.25)]);
    }
    // The testbed speaks 2026-07-28 (and the handshake): server/discover and
    // tools/list; testbed-2025 only the handshake: initialize, initialized, tools/list,
    // and a session to end.
    res.declare(
        "1 cold start, testbed",
        "HTTP requests before first tools/call",
        "count",
        &[Check::AtMost(2.0)],
    );
    res.declare(
        "1 cold start, testbed-2025",
        "HTTP requests before first tools/call",
        "count",
        &[Check::AtMost(3.0)],
    );
    res.declare(
        "1 cold start, testbed-2025",
        "session DELETEd on exit",
        "1=yes",
        &[Check::Always],
    );
    res.declare(
        "2 full authorization, testbed",
        "empty store to initialize answer",
        "ms",
        &[ratio(0.1)],
    );
    res.declare(
        &format!("8 refresh storm, {STORM_CALLS} calls"),
        "refreshes",
        "count",
        &[Check::Exactly(1.0)],
    );
    res.declare(
        &format!("6 fan-out, {FAN_OUT_SERVERS} servers, 1 hung"),
        &format!("keyway tools --timeout {FAN_OUT_TIMEOUT_S}"),
        "ms",
        &[Check::AtMost(FAN_OUT_TIMEOUT_S * 1000.0 + 150.0)],
    );
    for up in ["testbed", "server-everything"] {
        let mem = format!("4 memory, {up}");
        res.declare(&mem, "peak RSS at exit", "MiB", &[ratio(1.0 / 8.0)]);
        res.declare(&mem, "peak RSS before close (VmHWM)", "MiB", &[]);
    }
    // keyway within one round trip of the direct client, and its concurrent calls
    // over one connection (h2).
    let m = RemoteMetrics::new();
    let delay = remote::DELAY_MS as f64;
    res.declare(
        REMOTE_SCENARIO,
        &m.first_call,
        "ms",
        &[Check::AtMostDirectPlus(delay)],
    );
    res.declare(REMOTE_SCENARIO, &m.wall, "ms", &[]);
    res.declare(REMOTE_SCENARIO, &m.opened, "count", &[]);
    res.declare(
        REMOTE_SCENARIO,
        &m.connections,
        "count",
        &[Check::Exactly(1.0)],
    );
    res.declare(REMOTE_SCENARIO, &m.http2, "%", &[]);
}

fn environment(root: &Path, profile: &str, work: &Path) -> Result<Env> {
    let dist = root.join("target").join(profile);
    let keyway = dist.join("keyway");
    let browser = dist.join("keyway-bench-browser");
    let floor = dist.join("keyway-bench-floor");
    let rusage = dist.join("keyway-bench-rusage");
    for b in [&keyway, &browser, &floor, &rusage] {
        if !b.exists() {
            bail!(
                "{} is missing: run bench/run (it builds keyway with the {profile} profile first)",
                b.display()
            );
        }
    }
    let peers = upstream::peers_dir(root);
    let mcp_remote = peers.join("node_modules/mcp-remote/dist/proxy.js");
    if !mcp_remote.exists() {
        bail!(
            "mcp-remote is not installed under {}: run bench/run (it runs npm ci there)",
            peers.display()
        );
    }
    Ok(Env {
        keyway,
        browser,
        floor,
        rusage,
        floor_relay: "relay",
        floor_forward: "forward",
        mcp_remote,
        peers,
        work: work.to_owned(),
    })
}

/// Give every peer what it needs to reach `up` with stored credentials: a keyway home
/// with the server saved (and authorized), an mcp-remote config directory whose
/// authorization already ran, and the direct client's token.
async fn prepare(env: &Env, up: Upstream, name: &str) -> Result<Route> {
    let home = env.work.join(format!("home-{name}"));
    let remote_dir = env.work.join(format!("mcp-remote-{name}"));
    std::fs::create_dir_all(&remote_dir)?;
    env.keyway_run(
        &home,
        up.ca(),
        &["add", &up.mcp_url, "--name", name, "--browser", "follow"],
    )
    .await
    .with_context(|| format!("saving {} in keyway", up.name))?;
    let token = match up.stats_url {
        Some(_) => Some(
            oauth::authorize(&up.client()?, &up.mcp_url)
                .await
                .context("the direct client's authorization")?,
        ),
        None => None,
    };
    let route = Route {
        upstream: up,
        home,
        name: name.into(),
        remote_dir,
        token,
    };
    // One untimed run each: mcp-remote authorizes and stores its tokens; both warm up.
    for p in [Peer::Keyway, Peer::McpRemote] {
        let b = env.bridge(p, &route, &format!("prepare-{name}"))?;
        b.initialize()
            .await
            .with_context(|| format!("{} to {}", p.label(), route.upstream.name))?;
        b.request("tools/list", json!({})).await?;
        b.close().await?;
    }
    Ok(route)
}

/// One gateway round: the callers through keyway's gateway over `route`'s home, then
/// direct, then through the floor forwarder.
struct GatewayRound {
    keyway: scenarios::Gateway,
    direct: scenarios::Gateway,
    floor: scenarios::Gateway,
}

async fn gateway_round(env: &Env, route: &Route, calls: usize) -> Result<GatewayRound> {
    let mut child = env
        .keyway_cmd(&route.home, route.upstream.ca())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting keyway serve")?;
    let stderr = child.stderr.take().context("no stderr")?;
    let url = announced(stderr, "keyway gateway on ", "keyway serve").await?;
    let up = &route.upstream;
    let mut via = up.echo_args("gateway");
    via["name"] = json!(format!("{}__echo", route.name));
    let pid = child.id().context("keyway serve exited")?;
    let cpu_before = measure::cpu_ns_tree(pid);
    // The gateway always wants its token: the one it made in the home.
    let token = std::fs::read_to_string(route.home.join("gateway.token"))
        .context("reading the gateway's token")?
        .trim()
        .to_owned();
    let mut keyway = scenarios::callers(&url, Some(token), &via, GATEWAY_CALLERS, calls).await?;
    keyway.cpu_us_per_call = Some(
        measure::cpu_ns_tree(pid).saturating_sub(cpu_before) as f64
            / 1000.0
            / (GATEWAY_CALLERS * calls) as f64,
    );
    stop(&mut child).await;
    let direct = scenarios::callers(
        &up.mcp_url,
        route.token.clone(),
        &up.echo_args("gateway"),
        GATEWAY_CALLERS,
        calls,
    )
    .await?;

    let upstream = url::Url::parse(&up.mcp_url)?;
    let authority = format!(
        "{}:{}",
        upstream.host_str().context("the upstream has no host")?,
        upstream.port_or_known_default().unwrap_or(80)
    );
    let mut child = tokio::process::Command::new(&env.floor)
        .args([env.floor_forward, &authority])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting keyway-bench-floor forward")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let base = announced(stdout, "", "keyway-bench-floor forward").await?;
    let pid = child.id().context("keyway-bench-floor exited")?;
    // Its threads end with their connections: count exited threads too.
    let cpu_before = measure::cpu_ns_process(pid);
    let mut floor = scenarios::callers(
        &format!("{base}{}", upstream.path()),
        route.token.clone(),
        &up.echo_args("gateway"),
        GATEWAY_CALLERS,
        calls,
    )
    .await?;
    floor.cpu_us_per_call = Some(
        measure::cpu_ns_process(pid).saturating_sub(cpu_before) as f64
            / 1000.0
            / (GATEWAY_CALLERS * calls) as f64,
    );
    stop(&mut child).await;
    Ok(GatewayRound {
        keyway,
        direct,
        floor,
    })
}

/// Ask a gateway to stop (SIGTERM, as a service manager would), so it ends its
/// sessions and a profiler wrapped around it can write its data; killed after 10 s.
async fn stop(child: &mut tokio::process::Child) {
    let Some(pid) = child.id() else {
        return; // it has exited already
    };
    let asked = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .is_ok_and(|s| s.success());
    if !asked
        || tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
    {
        let _ = child.kill().await;
    }
}

/// The first word after `prefix` on a line a child prints (its address), within 30 s;
/// the rest of its output is drained so it never blocks on a full pipe.
async fn announced(
    out: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    prefix: &str,
    who: &str,
) -> Result<String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(out).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(at) = l.find(prefix) {
                return l[at + prefix.len()..]
                    .split_whitespace()
                    .next()
                    .map(str::to_owned);
            }
        }
        None
    })
    .await
    .with_context(|| format!("{who} did not announce its address in 30 s"))?
    .with_context(|| format!("{who} exited before listening"))?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(url)
}

/// The fan-out set: open testbeds in this process, one of them hung, all saved in one
/// keyway home.
struct FanOutSet {
    home: PathBuf,
    _testbeds: Vec<keyway_testbed::Testbed>,
}

impl FanOutSet {
    async fn start(env: &Env, n: usize) -> Result<Self> {
        let home = env.work.join("home-fan-out");
        let mut testbeds = Vec::with_capacity(n);
        for i in 0..n {
            let mut knobs = keyway_testbed::Knobs::default();
            knobs.open = true;
            let t = keyway_testbed::Testbed::start(knobs).await?;
            env.keyway_run(
                &home,
                None,
                &["add", t.mcp_url(), "--name", &format!("s{i:02}")],
            )
            .await?;
            testbeds.push(t);
        }
        // Saved while healthy, hung from now on: it accepts connections, answers nothing.
        if let Some(t) = testbeds.last() {
            t.set_hung(true);
        }
        Ok(Self {
            home,
            _testbeds: testbeds,
        })
    }
}

async fn node_version() -> String {
    tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}
