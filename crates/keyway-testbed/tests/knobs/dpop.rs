//! DPoP (RFC 9449): proofs at the token endpoint and the MCP endpoint, bound tokens,
//! the nonce, replays, and the broken and misconfigured servers.

use std::time::{Duration, SystemTime};

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, ThumbprintHash},
};
use keyway_testbed::{ClientSpec, Clock, Knobs, Testbed, TokenAuthMethod};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{Bed, REDIRECT, VERIFIER, bed, rpc_result};

/// A client's DPoP key, signing proofs as RFC 9449 §4.2 describes.
struct ProofKey {
    signing: EncodingKey,
    jwk: Jwk,
    jkt: String,
}

impl ProofKey {
    fn new() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let point = pair.public_key().as_ref();
        let jwk: Jwk = serde_json::from_value(json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        }))
        .unwrap();
        let jkt = jwk.thumbprint(ThumbprintHash::SHA256).unwrap();
        Self {
            signing: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            jkt,
        }
    }

    /// A proof with these claims, as they are.
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(self.jwk.clone());
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }

    /// The claims of a proof for `htm htu` at `now`, with a fresh jti.
    fn claims(&self, htm: &str, htu: &str, now: SystemTime) -> Value {
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).unwrap();
        json!({
            "jti": URL_SAFE_NO_PAD.encode(jti),
            "htm": htm,
            "htu": htu,
            "iat": now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
        })
    }

    /// A proof for the token endpoint.
    fn for_token(&self, b: &Bed, nonce: Option<&str>) -> String {
        let mut c = self.claims("POST", &b.tb.endpoint_url("token"), b.clock.now());
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        self.sign(&c)
    }

    /// A proof for `htm` to the MCP endpoint, presenting `at`.
    fn for_mcp(&self, b: &Bed, htm: &str, at: &str, nonce: Option<&str>) -> String {
        let mut c = self.claims(htm, b.tb.mcp_url(), b.clock.now());
        c["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())));
        if let Some(n) = nonce {
            c["nonce"] = json!(n);
        }
        self.sign(&c)
    }
}

/// A token request with an optional `DPoP` header.
async fn token_request(
    b: &Bed,
    form: &[(&str, &str)],
    proof: Option<&str>,
) -> (StatusCode, header::HeaderMap, Value) {
    let mut req = b.http.post(b.tb.endpoint_url("token")).form(form);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    let r = req.send().await.unwrap();
    let (status, headers) = (r.status(), r.headers().clone());
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// A registered public client and a fresh code (authorization request `extra`).
async fn client_and_code(b: &Bed, extra: &[(&str, &str)]) -> (String, String) {
    let reg = b.register(json!({})).await;
    let id = reg["client_id"].as_str().unwrap().to_owned();
    let q = b.authorize(&id, extra).await;
    (id, q["code"].clone())
}

async fn exchange(
    b: &Bed,
    id: &str,
    code: &str,
    proof: Option<&str>,
) -> (StatusCode, header::HeaderMap, Value) {
    let resource = b.tb.resource().to_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", id),
        ("resource", &resource),
    ];
    token_request(b, &form, proof).await
}

async fn refresh(b: &Bed, id: &str, rt: &str, proof: Option<&str>) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", id),
    ];
    let (status, _, body) = token_request(b, &form, proof).await;
    (status, body)
}

/// A ping to the MCP endpoint with `Authorization: SCHEME token` and an optional proof.
async fn mcp(b: &Bed, scheme: &str, at: &str, proof: Option<&str>) -> Response {
    let mut req = b
        .http
        .post(b.tb.mcp_url())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, format!("{scheme} {at}"))
        .json(
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"harness","version":"0"}}}),
        );
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

/// Every `WWW-Authenticate` value of an answer.
fn challenges(r: &Response) -> Vec<String> {
    r.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// A DPoP login: DCR, authorization, and a code exchange with a proof.
async fn dpop_login(b: &Bed, key: &ProofKey) -> (String, Value) {
    let (id, code) = client_and_code(b, &[]).await;
    let (status, _, tokens) = exchange(b, &id, &code, Some(&key.for_token(b, None))).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    (id, tokens)
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_tokens_and_the_resource_wants_proofs() {
    let b = bed(|k| k.dpop = true).await;
    let meta = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await
        .1;
    assert_eq!(meta["dpop_signing_alg_values_supported"], json!(["ES256"]));
    let prm = b.get_json(&b.tb.prm_url().unwrap()).await.1;
    assert_eq!(prm["dpop_signing_alg_values_supported"], json!(["ES256"]));

    let key = ProofKey::new();
    let (id, tokens) = dpop_login(&b, &key).await;
    assert_eq!(tokens["token_type"], "DPoP");
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(b.tb.stats().dpop_bound_tokens_issued, 1);
    assert!(b.tb.stats().token_log.back().unwrap().dpop_proof);

    // The resource takes the token with a proof of the same key.
    let proof = key.for_mcp(&b, "POST", at, None);
    let r = mcp(&b, "DPoP", at, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        rpc_result(r).await["result"]["serverInfo"]["name"],
        "keyway-testbed"
    );

    // The same proof again is a replay.
    let r = mcp(&b, "DPoP", at, Some(&proof)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenges(&r)[0].starts_with(
            "DPoP error=\"invalid_dpop_proof\", error_description=\"proof replayed\", algs=\"ES256\", resource_metadata="
        ),
        "{:?}",
        challenges(&r)
    );

    // As Bearer: refused, with a DPoP challenge that says why.
    let r = mcp(&b, "Bearer", at, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let prm_url = b.tb.prm_url().unwrap();
    assert_eq!(
        challenges(&r),
        [format!(
            "DPoP error=\"invalid_token\", error_description=\"DPoP-bound token presented as Bearer\", algs=\"ES256\", resource_metadata=\"{prm_url}\""
        )]
    );

    // Without a proof, by another key, without ath, for another URL or method.
    let other = ProofKey::new();
    let no_ath = key.sign(&key.claims("POST", b.tb.mcp_url(), b.clock.now()));
    let wrong_url = {
        let mut c = key.claims(
            "POST",
            &format!("{}/other", b.tb.rs_origin()),
            b.clock.now(),
        );
        c["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())));
        key.sign(&c)
    };
    let stale = {
        let then = b.clock.now() - Duration::from_secs(301);
        let mut c = key.claims("POST", b.tb.mcp_url(), then);
        c["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())));
        key.sign(&c)
    };
    for (proof, why) in [
        (
            None,
            "a DPoP proof is required: the access token is DPoP-bound",
        ),
        (
            Some(other.for_mcp(&b, "POST", at, None)),
            "the proof's key does not match the key the access token is bound to",
        ),
        (Some(no_ath), "ath does not match the access token"),
        (
            Some(key.for_mcp(&b, "GET", at, None)),
            "htm GET does not match",
        ),
        (Some(wrong_url), "htu "),
        (Some(stale), "iat is more than 300 s away"),
    ] {
        let r = mcp(&b, "DPoP", at, proof.as_deref()).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{why}");
        let c = &challenges(&r)[0];
        assert!(
            c.starts_with("DPoP error=\"invalid_dpop_proof\"") && c.contains(why),
            "{why}: {c}"
        );
    }
    // A query string is not part of htu.
    let r = b
        .http
        .post(format!("{}?x=1", b.tb.mcp_url()))
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, format!("DPoP {at}"))
        .header("DPoP", key.for_mcp(&b, "POST", at, None))
        .json(
            &json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-11-25","capabilities":{},
            "clientInfo":{"name":"harness","version":"0"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Step-up: the 403 challenges in the scheme the token came in.
    let r = b
        .http
        .post(b.tb.mcp_url())
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, format!("DPoP {at}"))
        .header("DPoP", key.for_mcp(&b, "POST", at, None))
        .json(&json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"admin_only"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        challenges(&r),
        [format!(
            "DPoP error=\"insufficient_scope\", scope=\"mcp:admin\", algs=\"ES256\", resource_metadata=\"{prm_url}\""
        )]
    );

    let s = b.tb.stats();
    assert_eq!(
        s.dpop_proofs_accepted, 4,
        "token endpoint, three MCP requests"
    );
    assert_eq!(s.dpop_proofs_refused, 7);
    assert_eq!(s.dpop_replays_refused, 1);
    assert_eq!(s.dpop_nonce_challenges, 0);

    // Introspection names the key (RFC 9449 §6.2).
    let (_, info) = b
        .post_form(
            &b.tb.endpoint_url("introspect"),
            &[("token", at), ("client_id", &id)],
        )
        .await;
    assert_eq!(info["token_type"], "DPoP");
    assert_eq!(info["cnf"]["jkt"], key.jkt);
}

#[tokio::test]
async fn without_a_proof_tokens_stay_bearer_and_the_401_offers_both_schemes() {
    let b = bed(|k| k.dpop = true).await;
    let r = b.get(b.tb.mcp_url()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let prm_url = b.tb.prm_url().unwrap();
    assert_eq!(
        challenges(&r),
        [
            format!("Bearer scope=\"mcp:tools\", resource_metadata=\"{prm_url}\""),
            format!("DPoP algs=\"ES256\", resource_metadata=\"{prm_url}\""),
        ]
    );
    let (_, tokens) = b.login().await;
    assert_eq!(tokens["token_type"], "Bearer");
    let at = tokens["access_token"].as_str().unwrap();
    b.mcp_session(at).await;
    // An unbound token is not taken as DPoP.
    let key = ProofKey::new();
    let r = mcp(&b, "DPoP", at, Some(&key.for_mcp(&b, "POST", at, None))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(challenges(&r)[0].contains("the access token is not DPoP-bound"));
    assert_eq!(b.tb.stats().dpop_bound_tokens_issued, 0);

    // Without --dpop the AS ignores a proof and the resource keeps one challenge.
    let plain = bed(|_| {}).await;
    let (id, code) = client_and_code(&plain, &[]).await;
    let (status, _, tokens) =
        exchange(&plain, &id, &code, Some(&key.for_token(&plain, None))).await;
    assert_eq!(
        (status, tokens["token_type"].as_str()),
        (StatusCode::OK, Some("Bearer"))
    );
    assert_eq!(challenges(&plain.get(plain.tb.mcp_url()).await).len(), 1);
    assert_eq!(plain.tb.stats().dpop_proofs_accepted, 0);
}

#[tokio::test]
async fn bad_proofs_at_the_token_endpoint_are_refused_and_do_not_spend_the_code() {
    let b = bed(|k| k.dpop = true).await;
    let key = ProofKey::new();
    let (id, code) = client_and_code(&b, &[]).await;
    let token_url = b.tb.endpoint_url("token");
    let good = key.for_token(&b, None);
    let none_alg = {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let claims = key.claims("POST", &token_url, b.clock.now());
        let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.jwk});
        format!("{}.{}.", enc(&header), enc(&claims))
    };
    let cases = [
        (
            key.sign(&key.claims("GET", &token_url, b.clock.now())),
            "htm GET",
        ),
        (
            key.sign(&key.claims("POST", b.tb.mcp_url(), b.clock.now())),
            "htu ",
        ),
        (
            key.sign(&key.claims("POST", &token_url, b.clock.now() + Duration::from_secs(301))),
            "iat",
        ),
        (none_alg, "compact JWS"),
        ("not a jwt".to_owned(), "compact JWS"),
    ];
    for (proof, why) in &cases {
        let (status, _, err) = exchange(&b, &id, &code, Some(proof)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(err["error"], "invalid_dpop_proof", "{why}");
        let description = err["error_description"].as_str().unwrap();
        assert!(description.contains(why), "{why}: {description}");
    }
    // Two DPoP headers.
    let resource = b.tb.resource().to_owned();
    let r = b
        .http
        .post(&token_url)
        .header("DPoP", &good)
        .header("DPoP", key.for_token(&b, None))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("client_id", &id),
            ("resource", &resource),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "invalid_dpop_proof"
    );
    // The code is still good, and a proof is good once.
    let (status, _, tokens) = exchange(&b, &id, &code, Some(&good)).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (status, err) = refresh(&b, &id, rt, Some(&good)).await;
    assert_eq!(
        (status, err["error_description"].as_str()),
        (StatusCode::BAD_REQUEST, Some("proof replayed"))
    );
    assert_eq!(b.tb.stats().dpop_replays_refused, 1);
}

#[tokio::test]
async fn a_bound_refresh_token_needs_a_proof_by_the_same_key() {
    let b = bed(|k| k.dpop = true).await;
    let key = ProofKey::new();
    let (id, tokens) = dpop_login(&b, &key).await;
    let rt = tokens["refresh_token"].as_str().unwrap();

    let (status, err) = refresh(&b, &id, rt, None).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_dpop_proof"))
    );
    assert_eq!(
        err["error_description"],
        "a DPoP proof is required: the refresh token is DPoP-bound"
    );
    let other = ProofKey::new();
    let (_, err) = refresh(&b, &id, rt, Some(&other.for_token(&b, None))).await;
    assert_eq!(err["error"], "invalid_dpop_proof");

    let (status, t2) = refresh(&b, &id, rt, Some(&key.for_token(&b, None))).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert_eq!(t2["token_type"], "DPoP");
    let at2 = t2["access_token"].as_str().unwrap();
    let r = mcp(&b, "DPoP", at2, Some(&key.for_mcp(&b, "POST", at2, None))).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The rotated refresh token is bound too.
    let rt2 = t2["refresh_token"].as_str().unwrap();
    assert_eq!(
        refresh(&b, &id, rt2, None).await.1["error"],
        "invalid_dpop_proof"
    );
    assert_eq!(b.tb.stats().dpop_bound_tokens_issued, 2);
}

#[tokio::test]
async fn dpop_jkt_binds_the_code_to_the_key() {
    let b = bed(|k| k.dpop = true).await;
    let key = ProofKey::new();
    let other = ProofKey::new();
    let (id, code) = client_and_code(&b, &[("dpop_jkt", &key.jkt)]).await;
    assert_eq!(
        b.tb.stats()
            .authorize_log
            .back()
            .unwrap()
            .dpop_jkt
            .as_deref(),
        Some(key.jkt.as_str())
    );
    let (status, _, err) = exchange(&b, &id, &code, None).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_dpop_proof"))
    );
    let (_, _, err) = exchange(&b, &id, &code, Some(&other.for_token(&b, None))).await;
    assert_eq!(err["error"], "invalid_dpop_proof");
    let (status, _, tokens) = exchange(&b, &id, &code, Some(&key.for_token(&b, None))).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
}

#[tokio::test]
async fn client_credentials_and_the_device_grant_bind_too() {
    let b = bed(|k| {
        k.dpop = true;
        k.device_pending_polls = 0;
        k.clients = vec![
            ClientSpec::confidential("m2m", "sec", TokenAuthMethod::ClientSecretPost),
            ClientSpec::public("dev"),
        ];
    })
    .await;
    let key = ProofKey::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "m2m"),
        ("client_secret", "sec"),
    ];
    let (status, _, t) = token_request(&b, &form, Some(&key.for_token(&b, None))).await;
    assert_eq!(
        (status, t["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP"))
    );

    let (_, d) = b
        .post_form(
            &b.tb.endpoint_url("device_authorization"),
            &[("client_id", "dev"), ("scope", "mcp:tools")],
        )
        .await;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", d["device_code"].as_str().unwrap()),
        ("client_id", "dev"),
    ];
    let (status, _, t) = token_request(&b, &form, Some(&key.for_token(&b, None))).await;
    assert_eq!(
        (status, t["token_type"].as_str()),
        (StatusCode::OK, Some("DPoP")),
        "{t}"
    );
    assert_eq!(b.tb.stats().dpop_bound_tokens_issued, 2);
}

#[tokio::test]
async fn the_nonce_is_asked_for_then_taken_at_both_endpoints() {
    let b = bed(|k| k.dpop_nonce = true).await;
    let key = ProofKey::new();
    let (id, code) = client_and_code(&b, &[]).await;

    // Without the nonce: use_dpop_nonce, and the nonce in DPoP-Nonce.
    let first = key.claims("POST", &b.tb.endpoint_url("token"), b.clock.now());
    let (status, headers, err) = exchange(&b, &id, &code, Some(&key.sign(&first))).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("use_dpop_nonce"))
    );
    let nonce = headers["dpop-nonce"].to_str().unwrap().to_owned();
    assert_eq!(Some(&nonce), b.tb.dpop_nonce().as_ref());

    // The same jti with the nonce is no replay: the refused proof was not remembered.
    let mut again = first.clone();
    again["nonce"] = json!(nonce);
    let (status, headers, tokens) = exchange(&b, &id, &code, Some(&key.sign(&again))).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "DPoP");
    assert!(headers.contains_key("dpop-nonce"));
    let at = tokens["access_token"].as_str().unwrap();

    // The resource asks too, with the DPoP scheme.
    let r = mcp(&b, "DPoP", at, Some(&key.for_mcp(&b, "POST", at, None))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(
        challenges(&r)[0].starts_with(
            "DPoP error=\"use_dpop_nonce\", error_description=\"a DPoP nonce is required: use the one in the DPoP-Nonce header\", algs=\"ES256\""
        ),
        "{:?}",
        challenges(&r)
    );
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_owned();
    let r = mcp(
        &b,
        "DPoP",
        at,
        Some(&key.for_mcp(&b, "POST", at, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["dpop-nonce"].to_str().unwrap(), nonce);

    // After a rotation the previous nonce is still good, the one before it is not.
    b.tb.rotate_dpop_nonce();
    let r = mcp(
        &b,
        "DPoP",
        at,
        Some(&key.for_mcp(&b, "POST", at, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK, "grace of one rotation");
    assert_ne!(r.headers()["dpop-nonce"].to_str().unwrap(), nonce);
    b.tb.rotate_dpop_nonce();
    let r = mcp(
        &b,
        "DPoP",
        at,
        Some(&key.for_mcp(&b, "POST", at, Some(&nonce))),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let s = b.tb.stats();
    assert_eq!(s.dpop_nonce_challenges, 3);
    assert_eq!(s.dpop_proofs_accepted, 3);
    assert_eq!(s.dpop_proofs_refused, 0);
}

#[tokio::test]
async fn a_broken_as_refuses_every_proof() {
    let b = bed(|k| k.dpop_refuse_proofs = true).await;
    let meta = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await
        .1;
    assert_eq!(meta["dpop_signing_alg_values_supported"], json!(["ES256"]));
    let key = ProofKey::new();
    let (id, code) = client_and_code(&b, &[]).await;
    let (status, _, err) = exchange(&b, &id, &code, Some(&key.for_token(&b, None))).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_dpop_proof"))
    );
    let (status, _, tokens) = exchange(&b, &id, &code, None).await;
    assert_eq!(
        (status, tokens["token_type"].as_str()),
        (StatusCode::OK, Some("Bearer"))
    );
    assert_eq!(b.tb.stats().dpop_proofs_refused, 1);
}

#[tokio::test]
async fn spurious_replays_are_refused_until_a_fresh_proof_comes() {
    let b = bed(|k| k.dpop_spurious_replays = 2).await;
    let key = ProofKey::new();
    let (_, tokens) = dpop_login(&b, &key).await;
    let at = tokens["access_token"].as_str().unwrap();
    let first = key.for_mcp(&b, "POST", at, None);
    for proof in [first.clone(), first, key.for_mcp(&b, "POST", at, None)] {
        let r = mcp(&b, "DPoP", at, Some(&proof)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(challenges(&r)[0].contains("error_description=\"proof replayed\""));
    }
    let r = mcp(&b, "DPoP", at, Some(&key.for_mcp(&b, "POST", at, None))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let s = b.tb.stats();
    assert_eq!(s.dpop_replays_refused, 3, "two spurious, one real");
    assert_eq!(s.dpop_proofs_accepted, 2, "token endpoint, the fresh proof");
}

#[tokio::test]
async fn a_resource_that_demands_dpop_behind_an_as_that_knows_none() {
    let b = bed(|k| k.dpop_resource_only = true).await;
    let meta = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await
        .1;
    assert!(meta.get("dpop_signing_alg_values_supported").is_none());
    let prm = b.get_json(&b.tb.prm_url().unwrap()).await.1;
    assert_eq!(prm["dpop_bound_access_tokens_required"], true);

    let prm_url = b.tb.prm_url().unwrap();
    let only_dpop = [format!(
        "DPoP algs=\"ES256\", resource_metadata=\"{prm_url}\""
    )];
    assert_eq!(challenges(&b.get(b.tb.mcp_url()).await), only_dpop);
    // A proof at the token endpoint is ignored: Bearer tokens.
    let key = ProofKey::new();
    let (id, code) = client_and_code(&b, &[]).await;
    let (_, _, tokens) = exchange(&b, &id, &code, Some(&key.for_token(&b, None))).await;
    assert_eq!(tokens["token_type"], "Bearer");
    let at = tokens["access_token"].as_str().unwrap();
    let r = mcp(&b, "Bearer", at, None).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(challenges(&r), only_dpop);
    let r = mcp(&b, "DPoP", at, Some(&key.for_mcp(&b, "POST", at, None))).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_legacy_sse_stream_takes_a_proof_for_its_own_url() {
    let b = bed(|k| {
        k.dpop = true;
        k.legacy_sse = true;
    })
    .await;
    let key = ProofKey::new();
    let at = b.tb.mint_dpop_bound_access_token("mcp:tools", &key.jkt);
    let mut c = key.claims("GET", &b.tb.sse_url(), b.clock.now());
    c["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(at.as_bytes())));
    let r = b
        .http
        .get(b.tb.sse_url())
        .header(header::AUTHORIZATION, format!("DPoP {at}"))
        .header("DPoP", key.sign(&c))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn resource_only_goes_with_no_other_dpop_knob() {
    let mut k = Knobs::default();
    k.dpop_resource_only = true;
    k.dpop_nonce = true;
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(keyway_testbed::SystemClock);
    let err = Testbed::start_with_clock(k, clock).await.unwrap_err();
    assert!(err.to_string().contains("--dpop-resource-only"), "{err}");
}
