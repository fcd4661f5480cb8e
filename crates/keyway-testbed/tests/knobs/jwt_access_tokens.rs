//! `--jwt-access-tokens`: RFC 9068 access tokens that verify against the keys at the
//! metadata's `jwks_uri`, and signing-key rotation.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use keyway_testbed::{ClientSpec, Endpoint, TokenAuthMethod};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Bed, bed};

/// The RFC 8414 metadata (path inserted after the well-known prefix).
async fn metadata(b: &Bed) -> Value {
    let path = b.tb.issuer().strip_prefix(b.tb.as_origin()).unwrap();
    let (status, meta) = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server{path}",
            b.tb.as_origin()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    meta
}

/// The JWK Set at the metadata's `jwks_uri`.
async fn jwks(b: &Bed) -> JwkSet {
    let meta = metadata(b).await;
    let uri = meta["jwks_uri"].as_str().expect("jwks_uri is advertised");
    let (status, set) = b.get_json(uri).await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_value(set).unwrap()
}

fn kids(set: &JwkSet) -> Vec<String> {
    set.keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

/// Verify `jwt` as a resource server for `audience` would: the key by `kid` from the
/// JWKS, ES256, `iss` exactly the metadata's issuer, `aud`, `exp`. Returns the kid
/// and the claims.
async fn verify(b: &Bed, jwt: &str, audience: &str) -> (String, Value) {
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert_eq!(header.alg, Algorithm::ES256);
    let kid = header.kid.expect("a kid");
    let issuer = metadata(b).await["issuer"].as_str().unwrap().to_owned();
    let set = jwks(b).await;
    let jwk = set.find(&kid).expect("the kid is in the JWKS");
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[audience]);
    v.set_issuer(&[issuer]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk).unwrap(), &v)
        .expect("the token verifies");
    (kid, data.claims)
}

#[tokio::test]
async fn code_flow_tokens_are_jwts_that_verify_against_the_jwks() {
    let b = bed(|k| {
        k.jwt_access_tokens = true;
        k.token_lifetime = 600;
    })
    .await;
    let set = jwks(&b).await;
    assert_eq!(set.keys.len(), 1);
    let (_, raw) = b.get_json(&b.tb.endpoint_url("jwks")).await;
    let key = &raw["keys"][0];
    for (field, value) in [
        ("kty", "EC"),
        ("crv", "P-256"),
        ("alg", "ES256"),
        ("use", "sig"),
    ] {
        assert_eq!(key[field], value, "{field}");
    }
    assert!(key.get("d").is_none(), "no private part");

    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b.authorize(&id, &[("login_hint", "alice")]).await;
    let (status, t) = b.exchange(&id, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let at = t["access_token"].as_str().unwrap();
    let (kid, c) = verify(&b, at, b.tb.resource()).await;
    assert_eq!(kid, b.tb.signing_kid());
    assert_eq!(c["iss"], b.tb.issuer());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], b.tb.resource());
    assert_eq!(c["client_id"], id.as_str());
    assert_eq!(c["scope"], "mcp:tools");
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 600);
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(c.get("cnf").is_none(), "a bearer token");
    assert_eq!(b.tb.stats().endpoint(Endpoint::Jwks), 3);

    // Still the testbed's own token: its MCP endpoint, introspection and refresh
    // take it, and it is a secret tests look for.
    b.mcp_session(at).await;
    let (_, info) = b
        .post_form(
            &b.tb.endpoint_url("introspect"),
            &[("token", at), ("client_id", &id)],
        )
        .await;
    assert_eq!(
        (&info["active"], &info["sub"]),
        (&json!(true), &json!("alice"))
    );
    assert!(b.tb.secrets().iter().any(|s| s == at));
    let (_, t2) = b.refresh(&id, t["refresh_token"].as_str().unwrap()).await;
    let (_, c2) = verify(&b, t2["access_token"].as_str().unwrap(), b.tb.resource()).await;
    assert_eq!(c2["sub"], "alice");
    assert_ne!(c2["jti"], c["jti"]);
}

#[tokio::test]
async fn the_issuer_is_the_one_the_metadata_names() {
    let b = bed(|k| {
        k.jwt_access_tokens = true;
        k.issuer_path = "/tenant1".into();
    })
    .await;
    let minted = b.tb.mint_access_token("mcp:tools");
    let (_, c) = verify(&b, &minted, b.tb.resource()).await;
    assert_eq!(c["iss"], format!("{}/tenant1", b.tb.as_origin()));
    assert_eq!(c["iss"], b.tb.issuer());

    // A metadata document that names another issuer (a mismatch test) names the
    // same one in the tokens.
    let b = bed(|k| {
        k.jwt_access_tokens = true;
        k.issuer_override = Some("https://login.example/tenant".into());
    })
    .await;
    let minted = b.tb.mint_access_token("mcp:tools");
    let (_, c) = verify(&b, &minted, b.tb.resource()).await;
    assert_eq!(c["iss"], "https://login.example/tenant");
}

#[tokio::test]
async fn rotation_signs_with_a_new_kid_and_keeps_or_drops_the_old_key() {
    let b = bed(|k| k.jwt_access_tokens = true).await;
    let first = b.tb.mint_access_token("mcp:tools");
    let (k1, _) = verify(&b, &first, b.tb.resource()).await;

    b.tb.rotate_signing_key(true);
    let second = b.tb.mint_access_token("mcp:tools");
    let (k2, _) = verify(&b, &second, b.tb.resource()).await;
    assert_ne!(k1, k2);
    assert_eq!(kids(&jwks(&b).await), [k2.as_str(), k1.as_str()]);
    verify(&b, &first, b.tb.resource()).await;

    b.tb.rotate_signing_key(false);
    let third = b.tb.mint_access_token("mcp:tools");
    let (k3, _) = verify(&b, &third, b.tb.resource()).await;
    assert_eq!(kids(&jwks(&b).await), [k3.as_str()]);
    assert_eq!([&k1, &k2, &k3].into_iter().collect::<HashSet<_>>().len(), 3);
    // The old kid is gone: a resource server can no longer check the old tokens.
    let old_kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();
    assert!(jwks(&b).await.find(&old_kid).is_none());
    // The testbed itself still knows them (they are in its memory).
    b.mcp_session(&first).await;
}

#[tokio::test]
async fn minted_tokens_carry_their_subject_audience_and_key_binding() {
    let b = bed(|k| k.jwt_access_tokens = true).await;
    let other = "https://gateway.example/mcp";
    let theirs =
        b.tb.mint_access_token_for("bob", "mcp:tools files:read", Some(other));
    let (_, c) = verify(&b, &theirs, other).await;
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["aud"], other);
    assert_eq!(c["scope"], "mcp:tools files:read");
    assert_eq!(c["client_id"], "testbed-minted");

    let ours = b.tb.mint_access_token("");
    let (_, c) = verify(&b, &ours, b.tb.resource()).await;
    assert_eq!(c["sub"], "testbed-user");
    assert!(c.get("scope").is_none(), "no scope, no claim");

    let bound =
        b.tb.mint_dpop_bound_access_token("mcp:tools", "some-thumbprint");
    let (_, c) = verify(&b, &bound, b.tb.resource()).await;
    assert_eq!(c["cnf"], json!({"jkt": "some-thumbprint"}));
}

#[tokio::test]
async fn client_credentials_tokens_are_for_the_client() {
    let b = bed(|k| {
        k.jwt_access_tokens = true;
        k.clients = vec![ClientSpec::confidential(
            "m2m",
            "sec",
            TokenAuthMethod::ClientSecretPost,
        )];
    })
    .await;
    let (status, t) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "m2m"),
                ("client_secret", "sec"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    // No resource: the audience is the client.
    let (_, c) = verify(&b, t["access_token"].as_str().unwrap(), "m2m").await;
    assert_eq!((&c["sub"], &c["client_id"]), (&json!("m2m"), &json!("m2m")));
}

#[tokio::test]
async fn without_the_knob_tokens_stay_opaque_and_the_jwks_empty() {
    let b = bed(|_| {}).await;
    let (_, t) = b.login().await;
    assert!(t["access_token"].as_str().unwrap().starts_with("tb_at_"));
    assert!(b.tb.mint_access_token("mcp:tools").starts_with("tb_at_"));
    let (status, set) = b.get_json(&b.tb.endpoint_url("jwks")).await;
    assert_eq!((status, set), (StatusCode::OK, json!({"keys": []})));
}
