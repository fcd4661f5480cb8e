//! private_key_jwt (RFC 7523): pre-registered clients proving who they are with a JWT
//! signed by their private key, at the token, revocation and introspection
//! endpoints; replays, wrong keys, expired and misaddressed assertions refused.

use std::time::{Duration, SystemTime};

use aws_lc_rs::{
    encoding::AsDer,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keyway_testbed::{ClientSpec, Clock, TokenAuthMethod};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Bed, REDIRECT, VERIFIER, bed};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CLIENT: &str = "jwt-client";

/// A client's P-256 key: it signs assertions; its public half is registered.
struct ClientKey {
    signing: EncodingKey,
    public_pem: String,
    /// The public key as a JWK, for a dynamic registration's `jwks`.
    jwk: Value,
}

impl ClientKey {
    fn new() -> Self {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let spki = pair.public_key().as_der().unwrap();
        let b64 = STANDARD.encode(spki.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let point = pair.public_key().as_ref();
        Self {
            signing: EncodingKey::from_ec_der(pair.to_pkcs8v1().unwrap().as_ref()),
            public_pem: format!(
                "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
                lines.join("\n")
            ),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig",
                "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
            }),
        }
    }

    /// An assertion with these claims, as they are.
    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &self.signing).unwrap()
    }

    /// An assertion of `client_id` for the token endpoint, good for a minute on the
    /// testbed's clock, with a fresh jti.
    fn assertion(&self, b: &Bed, client_id: &str) -> String {
        self.sign(&claims(b, client_id))
    }
}

fn claims(b: &Bed, client_id: &str) -> Value {
    let now = b
        .clock
        .now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).unwrap();
    json!({
        "iss": client_id,
        "sub": client_id,
        "aud": b.tb.endpoint_url("token"),
        "jti": URL_SAFE_NO_PAD.encode(jti),
        "iat": now,
        "exp": now + 60,
    })
}

/// A testbed whose client `jwt-client` authenticates with `key`.
async fn jwt_bed(key: &ClientKey) -> Bed {
    let pem = key.public_pem.clone();
    bed(move |k| k.clients = vec![ClientSpec::private_key_jwt(CLIENT, pem)]).await
}

/// POST `form` plus the assertion to an AS endpoint.
async fn with_assertion(
    b: &Bed,
    endpoint: &str,
    form: &[(&str, &str)],
    assertion: &str,
) -> (StatusCode, Value) {
    let mut form = form.to_vec();
    form.push(("client_assertion_type", JWT_BEARER));
    form.push(("client_assertion", assertion));
    b.post_form(&b.tb.endpoint_url(endpoint), &form).await
}

/// A client_credentials grant with this assertion.
async fn client_credentials(b: &Bed, assertion: &str) -> (StatusCode, Value) {
    with_assertion(
        b,
        "token",
        &[("grant_type", "client_credentials"), ("scope", "mcp:tools")],
        assertion,
    )
    .await
}

/// 401 invalid_client, the description saying `why`.
fn assert_invalid_client((status, body): (StatusCode, Value), why: &str) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}: {body}");
    assert_eq!(body["error"], "invalid_client", "{why}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.contains(why), "{why}: {description}");
}

#[tokio::test]
async fn private_key_jwt_client_gets_and_refreshes_tokens() {
    let key = ClientKey::new();
    let b = jwt_bed(&key).await;
    let (_, meta) = b
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        ))
        .await;
    let methods = meta["token_endpoint_auth_methods_supported"]
        .as_array()
        .unwrap();
    assert!(methods.contains(&json!("private_key_jwt")), "{meta}");
    assert!(methods.contains(&json!("none")), "the knob's list stays");
    let algs = meta["token_endpoint_auth_signing_alg_values_supported"]
        .as_array()
        .unwrap();
    assert!(algs.contains(&json!("ES256")), "{meta}");

    // Authorization code with PKCE; the exchange carries an assertion, no client_id.
    let q = b
        .authorize(CLIENT, &[("scope", "mcp:tools offline_access")])
        .await;
    let resource = b.tb.resource().to_owned();
    let (status, tokens) = with_assertion(
        &b,
        "token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &q["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
            ("resource", &resource),
        ],
        &key.assertion(&b, CLIENT),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    b.mcp_session(tokens["access_token"].as_str().unwrap())
        .await;
    let seen = b.tb.stats().token_log.back().unwrap().clone();
    assert_eq!(seen.client_auth, "private_key_jwt");
    assert_eq!(seen.client_id.as_deref(), Some(CLIENT));

    // A refresh with a new assertion, addressed to the issuer (and naming the
    // client in client_id too).
    let mut c = claims(&b, CLIENT);
    c["aud"] = json!([b.tb.issuer(), "https://elsewhere.example"]);
    let rt = tokens["refresh_token"].as_str().unwrap();
    let (status, refreshed) = with_assertion(
        &b,
        "token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", CLIENT),
        ],
        &key.sign(&c),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_eq!(b.tb.stats().refreshes, 1);

    // Introspection and revocation authenticate the same way.
    let at = refreshed["access_token"].as_str().unwrap();
    let (status, info) = with_assertion(
        &b,
        "introspect",
        &[("token", at)],
        &key.assertion(&b, CLIENT),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["active"], true);
    let new_rt = refreshed["refresh_token"].as_str().unwrap();
    let (status, _) = with_assertion(
        &b,
        "revoke",
        &[("token", new_rt)],
        &key.assertion(&b, CLIENT),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.tb.stats().revocations, 1);

    // client_credentials: a private_key_jwt client is a confidential one.
    let (status, t) = client_credentials(&b, &key.assertion(&b, CLIENT)).await;
    assert_eq!(status, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let key = ClientKey::new();
    let b = jwt_bed(&key).await;
    let once = key.assertion(&b, CLIENT);
    let (status, t) = client_credentials(&b, &once).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_invalid_client(client_credentials(&b, &once).await, "jti was used before");
    // The same jti in an otherwise new assertion.
    let mut c: Value = claims(&b, CLIENT);
    let first: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(once.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    c["jti"] = first["jti"].clone();
    c["exp"] = json!(c["exp"].as_u64().unwrap() + 5);
    assert_invalid_client(
        client_credentials(&b, &key.sign(&c)).await,
        "jti was used before",
    );
    let (status, t) = client_credentials(&b, &key.assertion(&b, CLIENT)).await;
    assert_eq!(status, StatusCode::OK, "a fresh jti: {t}");
    let log = b.tb.stats().token_log;
    let outcomes: Vec<&str> = log.iter().map(|s| s.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "invalid_client", "invalid_client", "ok"]);
}

#[tokio::test]
async fn an_assertion_by_another_key_is_refused() {
    let key = ClientKey::new();
    let b = jwt_bed(&key).await;
    let stranger = ClientKey::new();
    assert_invalid_client(
        client_credentials(&b, &stranger.assertion(&b, CLIENT)).await,
        "signature",
    );
    // A code exchange too, and the code survives for the right key.
    let q = b.authorize(CLIENT, &[]).await;
    let resource = b.tb.resource().to_owned();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", &resource),
    ];
    let by_stranger = stranger.assertion(&b, CLIENT);
    assert_invalid_client(
        with_assertion(&b, "token", &form, &by_stranger).await,
        "signature",
    );
    let (status, t) = with_assertion(&b, "token", &form, &key.assertion(&b, CLIENT)).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    // Neither the client's own id nor its bare name stands in for an assertion.
    assert_invalid_client(
        b.post_form(
            &b.tb.endpoint_url("token"),
            &[("grant_type", "client_credentials"), ("client_id", CLIENT)],
        )
        .await,
        "registered for private_key_jwt, not none",
    );
}

#[tokio::test]
async fn an_expired_or_misaddressed_assertion_is_refused() {
    let key = ClientKey::new();
    let b = jwt_bed(&key).await;
    // Good for a minute; the testbed's clock moves past it.
    let soon_stale = key.assertion(&b, CLIENT);
    b.clock.advance(Duration::from_secs(61));
    assert_invalid_client(client_credentials(&b, &soon_stale).await, "has expired");

    let refused = |field: &str, value: Value| {
        let mut c = claims(&b, CLIENT);
        c[field] = value;
        key.sign(&c)
    };
    for (field, value, why) in [
        (
            "aud",
            json!("https://elsewhere.example/token"),
            "aud names neither",
        ),
        ("sub", json!("someone-else"), "iss and sub must both be"),
        ("exp", Value::Null, "exp must be"),
        ("nbf", json!(u64::MAX), "not valid yet"),
    ] {
        let assertion = refused(field, value);
        assert_invalid_client(client_credentials(&b, &assertion).await, why);
    }
    // An iss naming a client that does not exist: no key checks it.
    let assertion = refused("iss", json!("someone-else"));
    assert_invalid_client(client_credentials(&b, &assertion).await, "signature");
    // client_id that is not the assertion's iss.
    assert_invalid_client(
        with_assertion(
            &b,
            "token",
            &[("grant_type", "client_credentials"), ("client_id", "other")],
            &key.assertion(&b, CLIENT),
        )
        .await,
        "client_id differs",
    );
    // Another assertion type.
    let (status, err) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:example:saml"),
                ("client_assertion", &key.assertion(&b, CLIENT)),
            ],
        )
        .await;
    assert_invalid_client((status, err), "client_assertion_type must be");
    let (status, t) = client_credentials(&b, &key.assertion(&b, CLIENT)).await;
    assert_eq!(status, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn registration_with_a_jwks_may_choose_private_key_jwt() {
    let key = ClientKey::new();
    let b = bed(|k| {
        k.token_auth_methods = vec![TokenAuthMethod::PrivateKeyJwt, TokenAuthMethod::None];
    })
    .await;
    let reg = b
        .register(json!({
            "token_endpoint_auth_method": "private_key_jwt",
            "grant_types": ["client_credentials"],
            "jwks": {"keys": [key.jwk]},
        }))
        .await;
    assert_eq!(reg["token_endpoint_auth_method"], "private_key_jwt");
    assert!(reg.get("client_secret").is_none(), "{reg}");
    let id = reg["client_id"].as_str().unwrap();
    let (status, t) = client_credentials(&b, &key.assertion(&b, id)).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    // Without a key to check assertions with, the testbed picks another method.
    let reg = b
        .register(json!({"token_endpoint_auth_method": "private_key_jwt"}))
        .await;
    assert_eq!(reg["token_endpoint_auth_method"], "none");
}
