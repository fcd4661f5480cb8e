//! The team gateway as a team runs it: three `keyway serve` replicas on one Postgres
//! behind a round-robin front, two people signed in at the organisation's server,
//! two per-person upstream servers whose tokens last two seconds. One replica is
//! killed (SIGKILL) mid-run.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use crate::{
    harness::{Keyway, stderr, testbed},
    serve::{browse_as, listen_with},
};

/// A team's store key (32 bytes, base64).
const KEY: &str = "a2V5d2F5J3MgdGVhbSBzdG9yZSBrZXksIDMyIGJ5dGU=";

/// A round-robin front: each connection goes to the next replica that takes it, as
/// a load balancer's would (a replica that refuses is skipped). Bytes are passed as
/// they are: no HTTP here.
fn front(listener: tokio::net::TcpListener, replicas: Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let (replicas, next) = (replicas.clone(), next.clone());
            tokio::spawn(async move {
                for _ in 0..replicas.len() {
                    let at = &replicas[next.fetch_add(1, Ordering::Relaxed) % replicas.len()];
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(at).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
}

/// One 2026-07-28 call of `tool` as the holder of `token`: each on a connection of
/// its own, so the front spreads them. `Err`: the connection broke (a killed replica).
async fn call(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    tool: &str,
    text: &str,
) -> Result<Value, reqwest::Error> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": tool, "arguments": {"text": text},
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"url": {}}},
            "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}});
    http.post(url)
        .bearer_auth(token)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&body)
        .send()
        .await?
        .json()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn three_replicas_serve_two_people_their_own_tokens_and_survive_a_killed_one() {
    let db = keyway_testbed::postgres::cluster().fresh_database().await;
    let env = [("KEYWAY_STORE", db.as_str()), ("KEYWAY_STORE_KEY", KEY)];
    // The organisation's server, two hours behind until its expired token is made.
    let clock = Arc::new(keyway_testbed::ManualClock::at(
        SystemTime::now() - Duration::from_secs(7200),
    ));
    let mut knobs = keyway_testbed::Knobs::default();
    knobs.jwt_access_tokens = true;
    let org = keyway_testbed::Testbed::start_with_clock(knobs, clock.clone())
        .await
        .unwrap();
    let upstreams = [
        testbed(|k| k.token_lifetime = 2).await,
        testbed(|k| k.token_lifetime = 2).await,
    ];
    let operator = Keyway::new();
    for (tb, name) in upstreams.iter().zip(["alpha", "beta"]) {
        for args in [
            vec!["add", tb.mcp_url(), "--name", name, "--no-authorize"],
            vec!["edit", name, "--per-person"],
        ] {
            let mut cmd = tokio::process::Command::from(operator.cmd(&args));
            cmd.envs(env);
            let out = cmd.output().await.unwrap();
            assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        }
    }

    // The front's address is the public URL; the replicas start behind it.
    let entry = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}/mcp", entry.local_addr().unwrap());
    let mut replicas = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..3 {
        let (child, gw) = listen_with(
            &operator,
            &[
                "--authorization-server",
                org.issuer(),
                "--public-url",
                &public,
            ],
            &env,
        )
        .await;
        addrs.push(
            gw.url
                .trim_start_matches("http://")
                .trim_end_matches("/mcp")
                .to_owned(),
        );
        replicas.push(child);
    }
    front(entry, addrs.clone());

    // Tokens the gateway refuses, at every replica: expired, for another audience,
    // from another issuer.
    let expired = org.mint_access_token_for("alice", "", Some(&public));
    clock.advance(Duration::from_secs(7200));
    let other_issuer = testbed(|k| k.jwt_access_tokens = true).await;
    let refused = [
        expired,
        org.mint_access_token_for("alice", "", Some("http://127.0.0.1:1/mcp")),
        other_issuer.mint_access_token_for("alice", "", Some(&public)),
    ];
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for addr in &addrs {
        for token in &refused {
            let r = http
                .post(format!("http://{addr}/mcp"))
                .bearer_auth(token)
                .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401);
        }
    }

    // Each person authorizes each upstream through the link they are given, the
    // browser's steps spread over the replicas by the front.
    let people = ["alice", "bob"];
    let began = Instant::now();
    let tokens: Vec<String> = people
        .iter()
        .map(|p| org.mint_access_token_for(p, "", Some(&public)))
        .collect();
    for (person, token) in people.iter().zip(&tokens) {
        for tool in ["alpha__echo", "beta__echo"] {
            let answer = call(&http, &public, token, tool, "first").await.unwrap();
            assert_eq!(answer["result"]["resultType"], "input_required", "{answer}");
            let link = answer["result"]["inputRequests"]["keyway-connect"]["params"]["url"]
                .as_str()
                .unwrap()
                .to_owned();
            let (status, page) = browse_as(person, &link).await;
            assert_eq!(status, 200, "{person} {tool}: {page}");
        }
    }

    // Both people call both upstreams over and over for three seconds (past a
    // token's life, so each token is refreshed), through the front. A replica is
    // killed after the first 40 calls; a call that broke with it is tried again, as
    // a client would.
    let done = Arc::new(AtomicUsize::new(0));
    let kill = Arc::new(tokio::sync::Notify::new());
    let broken = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut loops = Vec::new();
    for (person, token) in people.iter().zip(&tokens) {
        for tool in ["alpha__echo", "beta__echo"] {
            let (http, public, token) = (http.clone(), public.clone(), token.clone());
            let (done, kill, broken) = (done.clone(), kill.clone(), broken.clone());
            let person = person.to_string();
            loops.push(tokio::spawn(async move {
                let mut n = 0;
                while Instant::now() < deadline {
                    let text = format!("{person} {n}");
                    match call(&http, &public, &token, tool, &text).await {
                        Ok(answer) => {
                            assert_eq!(
                                answer["result"]["content"][0]["text"], text,
                                "{person} {tool}: {answer}"
                            );
                            n += 1;
                            if done.fetch_add(1, Ordering::Relaxed) + 1 == 40 {
                                kill.notify_one();
                            }
                        }
                        Err(_) => {
                            broken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                n
            }));
        }
    }
    kill.notified().await;
    replicas[1].start_kill().unwrap();
    let _ = replicas[1].wait().await;
    let mut answered = 0;
    for l in loops {
        let n = l.await.unwrap();
        assert!(n > 10, "{n} calls answered");
        answered += n;
    }
    // Only calls under way on the killed replica broke (at most one per loop).
    assert!(
        broken.load(Ordering::Relaxed) <= 4,
        "{}",
        broken.load(Ordering::Relaxed)
    );

    // Each person's calls reached each upstream with their own tokens, refreshed
    // once per expiry across the replicas: no refresh token was used twice, no
    // token request failed, and nobody authorized again.
    for tb in &upstreams {
        let s = tb.stats();
        assert_eq!(s.reuse_revocations, 0, "{s:?}");
        assert_eq!(s.token_errors, 0, "{s:?}");
        assert_eq!(s.authorizations, 2, "{s:?}");
        for person in people {
            let issued = s.tokens_by_subject.get(person).copied().unwrap_or(0);
            assert!(issued >= 2, "{person}: {issued} tokens ({s:?})");
        }
        // Two seconds of life, refreshed at half of it: at most one refresh a second
        // per person since their first token, not one per replica or per call.
        let seconds = began.elapsed().as_secs() + 1;
        assert!(s.refreshes <= 2 * (seconds + 1), "{seconds} s: {s:?}");
        println!(
            "upstream: {} refreshes, tokens by person {:?}",
            s.refreshes, s.tokens_by_subject
        );
    }
    println!(
        "{answered} calls answered, {} broken with the killed replica",
        broken.load(Ordering::Relaxed)
    );
}
