//! The team gateway as a protected resource: a testbed is the organisation's
//! authorization server, and the gateway (no upstreams: its own answers are enough
//! to see who gets in) serves only tokens that server issued for it.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use keyway::{
    Secret,
    gateway::{
        Gateway,
        edge::{EdgeLimits, listen, serve},
        http::{Guard, app},
        inbound::{ProtectedResource, ResourceSettings, Verification},
    },
    store::SealingKey,
};
use keyway_testbed::{ClientSpec, Knobs, Testbed, TokenAuthMethod};
use serde_json::{Value, json};
use url::Url;

use crate::harness::testbed;

/// A gateway trusting `tb`, on a port of its own, and the clock it decides expiry by.
struct Gw {
    url: String,
    origin: String,
    resource: Arc<ProtectedResource>,
    clock: Arc<Mutex<SystemTime>>,
}

async fn gateway(tb: &Testbed, tune: impl FnOnce(&mut ResourceSettings)) -> Gw {
    replica(tb, None, None, tune).await
}

/// A gateway as [`gateway`] makes, with the public `url` of the replicas it stands
/// beside (default: its own) and the key they seal session ids with.
async fn replica(
    tb: &Testbed,
    url: Option<&str>,
    sessions: Option<SealingKey>,
    tune: impl FnOnce(&mut ResourceSettings),
) -> Gw {
    let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let own = format!("http://{addr}/mcp");
    let url = url.unwrap_or(&own).to_owned();
    let clock = Arc::new(Mutex::new(SystemTime::now()));
    let mut settings = ResourceSettings::new(Url::parse(&url).unwrap(), tb.issuer());
    let c = clock.clone();
    settings.clock = Arc::new(move || *c.lock().unwrap());
    // A token naming a key fetched a moment ago makes the gateway look again now.
    settings.keys_cooldown = Duration::ZERO;
    tune(&mut settings);
    let resource = Arc::new(ProtectedResource::start(settings).await.unwrap());
    let mut guard = Guard::for_addr(addr, Secret::new(""), &[]).with_resource(resource.clone());
    if let Some(key) = sessions {
        guard = guard.with_session_key(key);
    }
    let gw = Gateway::start(Vec::new()).await;
    let limits = EdgeLimits::default();
    tokio::spawn(serve(
        listener,
        app(gw, guard, limits),
        limits,
        std::future::pending(),
        Duration::ZERO,
    ));
    Gw {
        url: own,
        origin: format!("http://{addr}"),
        resource,
        clock,
    }
}

fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}})
}

/// POST initialize with `token`: the status and `WWW-Authenticate`.
async fn call(gw: &Gw, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(&gw.url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let challenge = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (r.status().as_u16(), challenge)
}

fn jwt_testbed(k: &mut Knobs) {
    k.jwt_access_tokens = true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_names_the_server_and_a_call_without_a_token_is_challenged() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |s| s.required_scopes = vec!["mcp:tools".into()]).await;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let doc: Value = http
            .get(format!("{}{path}", gw.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["resource"], gw.url.as_str(), "{path}");
        assert_eq!(doc["authorization_servers"], json!([tb.issuer()]));
        assert_eq!(doc["scopes_supported"], json!(["mcp:tools"]));
    }
    let (status, challenge) = call(&gw, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        challenge,
        format!(
            "Bearer resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:tools\"",
            gw.origin
        )
    );
    let (status, challenge) = call(&gw, Some("not-a-jwt")).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_live_token_of_the_server_for_this_gateway_gets_in() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |_| {}).await;
    let good = tb.mint_access_token_for("alice", "", Some(&gw.url));
    assert_eq!(call(&gw, Some(&good)).await.0, 200);

    // Another audience: a token the same server issued for another resource.
    let other = tb.mint_access_token_for("alice", "", Some("https://other.example/mcp"));
    let (status, challenge) = call(&gw, Some(&other)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("another resource"), "{challenge}");

    // Another issuer: a token of another server, for this gateway.
    let elsewhere = testbed(jwt_testbed).await;
    let foreign = elsewhere.mint_access_token_for("alice", "", Some(&gw.url));
    let (status, challenge) = call(&gw, Some(&foreign)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    // Expired: the gateway's clock moves past the token's lifetime and the leeway.
    *gw.clock.lock().unwrap() += Duration::from_secs(24 * 3600);
    let (status, challenge) = call(&gw, Some(&good)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("has expired"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_when_a_token_first_names_it() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |_| {}).await;
    let before = tb.mint_access_token_for("alice", "", Some(&gw.url));
    assert_eq!(call(&gw, Some(&before)).await.0, 200);
    assert_eq!(
        gw.resource.lookups(),
        1,
        "the keys are fetched once, at start"
    );
    tb.rotate_signing_key(false);
    let after = tb.mint_access_token_for("bob", "", Some(&gw.url));
    assert_eq!(call(&gw, Some(&after)).await.0, 200);
    assert_eq!(call(&gw, Some(&after)).await.0, 200);
    assert_eq!(gw.resource.lookups(), 2, "one fetch for the new key");
    // A token whose signature does not verify with the key it names is refused.
    let forged = {
        let mut parts: Vec<String> = after.split('.').map(str::to_owned).collect();
        parts[2] = "AAAA".into();
        parts.join(".")
    };
    assert_eq!(call(&gw, Some(&forged)).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_a_required_scope_is_refused_with_insufficient_scope() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |s| s.required_scopes = vec!["mcp:tools".into()]).await;
    let without = tb.mint_access_token_for("alice", "email", Some(&gw.url));
    let (status, challenge) = call(&gw, Some(&without)).await;
    assert_eq!(status, 403);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    let with = tb.mint_access_token_for("alice", "mcp:tools email", Some(&gw.url));
    assert_eq!(call(&gw, Some(&with)).await.0, 200);
}

/// A testbed with opaque tokens, and a gateway introspecting them as its client
/// `the-gateway`, presenting `secret` (the right one is `a-secret-of-the-gateway`).
async fn introspecting(secret: &str) -> (Testbed, Gw) {
    let tb = testbed(|k| {
        k.clients = vec![ClientSpec::confidential(
            "the-gateway",
            "a-secret-of-the-gateway",
            TokenAuthMethod::ClientSecretBasic,
        )];
    })
    .await;
    let gw = gateway(&tb, |s| {
        s.verification = Verification::Introspection {
            client_id: "the-gateway".into(),
            secret: Secret::new(secret),
        };
    })
    .await;
    (tb, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_once_per_half_minute() {
    let (tb, gw) = introspecting("a-secret-of-the-gateway").await;
    let good = tb.mint_access_token_for("alice", "", Some(&gw.url));
    assert_eq!(call(&gw, Some(&good)).await.0, 200);
    assert_eq!(call(&gw, Some(&good)).await.0, 200);
    assert_eq!(gw.resource.lookups(), 1);
    let other = tb.mint_access_token_for("alice", "", Some("https://other.example/mcp"));
    assert_eq!(call(&gw, Some(&other)).await.0, 401);
    let (status, challenge) = call(&gw, Some("tb_at_never-issued")).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("not active"), "{challenge}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_keys_or_introspection_is_a_clear_error_at_start() {
    let tb = testbed(|k| k.no_introspection = true).await;
    let r = ResourceSettings::new(Url::parse("http://127.0.0.1:1/mcp").unwrap(), tb.issuer());
    let mut intro = r.clone();
    intro.verification = Verification::Introspection {
        client_id: "x".into(),
        secret: Secret::new("y"),
    };
    let e = ProtectedResource::start(intro).await.unwrap_err();
    assert!(e.to_string().contains("no introspection_endpoint"), "{e}");
    let mut bad = r.clone();
    bad.resource = Url::parse("http://gw.example/mcp").unwrap();
    let e = ProtectedResource::start(bad).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot be the gateway's resource URL"),
        "{e}"
    );
    let mut with_user = r.clone();
    with_user.resource = Url::parse("https://ops:hunter2@gw.example/mcp").unwrap();
    let e = ProtectedResource::start(with_user)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("gw.example") && !e.contains("hunter2"), "{e}");
    let mut wrong = r;
    wrong.issuer = format!("{}/elsewhere", tb.issuer());
    let e = ProtectedResource::start(wrong).await.unwrap_err();
    assert!(e.to_string().contains("/elsewhere"), "{e}");
}

/// A JWT with `header` and `claims`, signed with HMAC key `secret` (or unsigned for
/// `alg: none`): what an attacker who knows only public things can make.
fn forged(header: Value, claims: Value, secret: &[u8]) -> String {
    use base64::Engine;
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let input = format!("{}.{}", b64(&header), b64(&claims));
    if header["alg"] == "none" {
        return format!("{input}.");
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    h.kid = header["kid"].as_str().map(str::to_owned);
    jsonwebtoken::encode(&h, &claims, &key).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_and_malformed_headers_are_refused() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |_| {}).await;
    let good = tb.mint_access_token_for("alice", "", Some(&gw.url));
    let kid = jsonwebtoken::decode_header(&good).unwrap().kid.unwrap();
    let claims = json!({"iss": tb.issuer(), "sub": "mallory", "aud": gw.url,
        "exp": 4_000_000_000u64});
    // alg none, and HS256 keyed with what the JWKS publishes.
    let jwks: Value = reqwest::get(format!("{}/jwks", tb.issuer()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().as_bytes().to_vec();
    let none = forged(json!({"alg": "none", "kid": kid}), claims.clone(), b"");
    let hs = forged(json!({"alg": "HS256", "kid": kid}), claims.clone(), &x);
    for (token, why) in [(none, "malformed"), (hs, "HS256")] {
        let (status, challenge) = call(&gw, Some(&token)).await;
        assert_eq!(status, 401, "{why}");
        assert!(challenge.contains(why), "{why}: {challenge}");
    }
    // Not one Bearer token: 400 invalid_request (RFC 6750 §3.1).
    for bad in ["Bearer a b", "Bearer"] {
        let r = reqwest::Client::new()
            .post(&gw.url)
            .header("authorization", bad)
            .json(&initialize())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("error=\"invalid_request\"")
        );
    }
    let r = reqwest::Client::new()
        .post(&gw.url)
        .header("authorization", format!("Bearer {good}"))
        .header("authorization", format!("Bearer {good}"))
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "two Authorization headers");
    // Each kind of refusal is counted (the counters are the process's, shared by
    // the tests running beside this one: they only grow).
    let metrics = keyway::gateway::metrics::render();
    for outcome in ["invalid_token", "invalid_request"] {
        let line = format!("keyway_inbound_requests_total{{outcome=\"{outcome}\"}} ");
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("{metrics}"))
            .parse()
            .unwrap();
        assert!(n >= 2, "{outcome}: {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_within_the_cooldown_waits_for_it() {
    let tb = testbed(jwt_testbed).await;
    // The default cooldown: the keys were read a moment ago, at start.
    let gw = gateway(&tb, |s| s.keys_cooldown = Duration::from_secs(600)).await;
    tb.rotate_signing_key(false);
    let after = tb.mint_access_token_for("bob", "", Some(&gw.url));
    let (status, challenge) = call(&gw, Some(&after)).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("does not publish"), "{challenge}");
    assert_eq!(gw.resource.lookups(), 1, "no fetch within the cooldown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_answers_only_to_the_person_who_started_it() {
    let tb = testbed(jwt_testbed).await;
    let gw = gateway(&tb, |_| {}).await;
    let alice = tb.mint_access_token_for("alice", "", Some(&gw.url));
    let bob = tb.mint_access_token_for("bob", "", Some(&gw.url));
    let http = reqwest::Client::new();
    let r = http
        .post(&gw.url)
        .bearer_auth(&alice)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize())
        .send()
        .await
        .unwrap();
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    let ping = json!({"jsonrpc": "2.0", "id": 2, "method": "ping"});
    let send = |token: &str, method: reqwest::Method| {
        let mut req = http
            .request(method.clone(), &gw.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &session)
            .header("mcp-protocol-version", "2025-11-25");
        if method == reqwest::Method::POST {
            req = req.json(&ping);
        }
        req.send()
    };
    assert_eq!(
        send(&bob, reqwest::Method::POST).await.unwrap().status(),
        404
    );
    assert_eq!(
        send(&bob, reqwest::Method::DELETE).await.unwrap().status(),
        404
    );
    assert_eq!(
        send(&alice, reqwest::Method::POST).await.unwrap().status(),
        200
    );
    assert_eq!(
        send(&alice, reqwest::Method::DELETE)
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_be_asked_is_a_503_that_names_nothing_of_it() {
    let (tb, gw) = introspecting("a-wrong-secret").await;
    let token = tb.mint_access_token_for("alice", "", Some(&gw.url));
    let r = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(&token)
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("could not be asked"), "{body}");
    assert!(
        !body.contains("introspect") && !body.contains("invalid_client"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_key_serve_each_others_sessions_to_their_person_only() {
    let tb = testbed(jwt_testbed).await;
    // Two replicas behind one public URL; tests reach each at its own address. Both
    // derive one sealing key (as from one store key); a third has another.
    let public = "http://127.0.0.1:1/mcp";
    let store = tempfile::tempdir().unwrap();
    let st = keyway::store::SqliteStore::open(
        store.path(),
        keyway::store::OpenOptions {
            use_keychain: false,
        },
    )
    .unwrap();
    let key = || st.sealing_key("gateway session ids");
    let a = replica(&tb, Some(public), Some(key()), |_| {}).await;
    let b = replica(&tb, Some(public), Some(key()), |_| {}).await;
    let other = replica(&tb, Some(public), Some(SealingKey::random()), |_| {}).await;
    let alice = tb.mint_access_token_for("alice", "", Some(public));
    let bob = tb.mint_access_token_for("bob", "", Some(public));
    let http = reqwest::Client::new();
    let r = http
        .post(&a.url)
        .bearer_auth(&alice)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
    assert!(
        !session.contains("alice"),
        "the id names no one in the clear"
    );
    let ping = |gw: &Gw, token: &str, id: &str| {
        http.post(&gw.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-11-25")
            .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "ping"}))
            .send()
    };
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(status(ping(&b, &alice, &session).await.unwrap()), 200);
    assert_eq!(status(ping(&b, &bob, &session).await.unwrap()), 404);
    assert_eq!(status(ping(&other, &alice, &session).await.unwrap()), 404);
    let mut changed = session.clone().into_bytes();
    let last = changed.len() - 2;
    changed[last] = if changed[last] == b'A' { b'B' } else { b'A' };
    let changed = String::from_utf8(changed).unwrap();
    assert_eq!(status(ping(&b, &alice, &changed).await.unwrap()), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_key_server_is_down_the_keys_held_still_serve() {
    let tb = testbed(jwt_testbed).await;
    // Every key set is stale at once and may be read again at once: each request
    // tries (the cooldown's own test is `a_new_key_within_the_cooldown_waits_for_it`).
    let gw = gateway(&tb, |s| s.keys_max_age = Duration::ZERO).await;
    let fetches = || tb.stats().endpoint(keyway_testbed::Endpoint::Jwks);
    let at_start = fetches();
    tb.set_keys_down(true);
    let token = tb.mint_access_token_for("alice", "", Some(&gw.url));
    for _ in 0..3 {
        assert_eq!(call(&gw, Some(&token)).await.0, 200);
    }
    assert_eq!(
        fetches(),
        at_start + 3,
        "asked each time, refused each time"
    );
    // A key it never held cannot be had while the server is down: 503, saying
    // nothing of the server.
    tb.rotate_signing_key(false);
    let new = tb.mint_access_token_for("alice", "", Some(&gw.url));
    assert_eq!(call(&gw, Some(&new)).await.0, 503);
    // Back up: the new key is read and taken.
    tb.set_keys_down(false);
    assert_eq!(call(&gw, Some(&new)).await.0, 200);
}
