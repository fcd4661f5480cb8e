//! The authorization endpoint, the code exchange, PKCE, iss, clients.

use base64::{Engine, engine::general_purpose::STANDARD};
use keyway_testbed::{ClientSpec, IssMode, PkceAdvertised, TokenAuthMethod};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{REDIRECT, VERIFIER, bed};

#[tokio::test]
async fn approves_at_once_with_code_state_and_iss() {
    let b = bed(|_| {}).await;
    let reg = b.register(json!({})).await;
    let id = reg["client_id"].as_str().unwrap();
    let q = b.authorize(id, &[]).await;
    assert!(q["code"].starts_with("tb_code_"));
    assert_eq!(q["state"], "st4te");
    assert_eq!(q["iss"], b.tb.issuer());
    let seen = b.tb.stats().authorize_log.back().cloned().unwrap();
    assert_eq!(seen.scope.as_deref(), Some("mcp:tools"));
    assert_eq!(seen.resource.as_deref(), Some(b.tb.resource()));
    assert_eq!(seen.code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(b.tb.stats().authorizations, 1);

    let (status, tokens) = b.exchange(id, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "mcp:tools");
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(b.tb.stats().code_exchanges, 1);
}

#[tokio::test]
async fn deny_redirects_with_access_denied() {
    let b = bed(|k| k.deny = true).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b.authorize(&id, &[]).await;
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st4te");
    assert_eq!(
        q["iss"],
        b.tb.issuer(),
        "RFC 9207: iss in error responses too"
    );
    assert!(!q.contains_key("code"));
    assert_eq!(b.tb.stats().denials, 1);
}

#[tokio::test]
async fn iss_is_sent_right_wrong_absent_or_normalized() {
    for (mode, expect) in [
        (IssMode::Wrong, Some("https://attacker.example".to_owned())),
        (IssMode::Absent, None),
    ] {
        let b = bed(|k| k.iss = mode).await;
        let id = b.register(json!({})).await["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            b.authorize(&id, &[]).await.get("iss").cloned(),
            expect,
            "{mode:?}"
        );
    }
    let b = bed(|k| k.iss = IssMode::Normalized).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        b.authorize(&id, &[]).await["iss"],
        format!("{}/", b.tb.issuer())
    );

    // Not advertised, still sent: a client must compare whenever it is present.
    let b = bed(|k| k.no_iss_advertised = true).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(b.authorize(&id, &[]).await["iss"], b.tb.issuer());
}

#[tokio::test]
async fn pkce_is_required_and_verified() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b
        .authorize(
            &id,
            &[("code_challenge", ""), ("code_challenge_method", "")],
        )
        .await;
    assert_eq!(q["error"], "invalid_request");
    let q = b
        .authorize(
            &id,
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "plain"),
            ],
        )
        .await;
    assert_eq!(q["error"], "invalid_request", "plain is not advertised");

    let q = b.authorize(&id, &[]).await;
    let resource = b.tb.resource().to_owned();
    let (status, err) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", REDIRECT),
                (
                    "code_verifier",
                    "wrong-verifier-wrong-verifier-wrong-verifier-00",
                ),
                ("client_id", &id),
                ("resource", &resource),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");

    let b = bed(|k| k.pkce = PkceAdvertised::PlainOnly).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b.authorize(&id, &[]).await;
    assert_eq!(
        q["error"], "invalid_request",
        "S256 refused when only plain is listed"
    );
    let q = b
        .authorize(
            &id,
            &[
                ("code_challenge", VERIFIER),
                ("code_challenge_method", "plain"),
            ],
        )
        .await;
    assert_eq!(b.exchange(&id, &q["code"]).await.0, StatusCode::OK);

    // Absent list: a legacy AS that takes either.
    let b = bed(|k| k.pkce = PkceAdvertised::Absent).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(b.authorize(&id, &[]).await.contains_key("code"));
}

#[tokio::test]
async fn unknown_clients_and_redirects_are_refused_without_redirecting() {
    let b = bed(|_| {}).await;
    let r = b.authorize_raw("nobody", &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = b
        .authorize_raw(&id, &[("redirect_uri", "https://evil.example/cb")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers().get("location").is_none());
    let r = b.authorize_raw(&id, &[("state", "a&state=b")]).await;
    assert_eq!(r.status(), StatusCode::FOUND, "state is opaque");
}

#[tokio::test]
async fn a_code_works_once_and_reuse_revokes_its_tokens() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b.authorize(&id, &[]).await;
    let (_, tokens) = b.exchange(&id, &q["code"]).await;
    let (status, err) = b.exchange(&id, &q["code"]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"], "invalid_grant");
    let at = tokens["access_token"].as_str().unwrap();
    assert_eq!(
        b.mcp_post(Some(at), None, json!({})).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn codes_expire() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b.authorize(&id, &[]).await;
    b.clock.advance(std::time::Duration::from_secs(61));
    let (_, err) = b.exchange(&id, &q["code"]).await;
    assert_eq!(err["error"], "invalid_grant");
}

#[tokio::test]
async fn scopes_must_be_known_to_the_as() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        b.authorize(&id, &[("scope", "mcp:tools nope")]).await["error"],
        "invalid_scope"
    );
    let q = b.authorize(&id, &[("scope", "")]).await;
    let (_, tokens) = b.exchange(&id, &q["code"]).await;
    assert!(
        tokens.get("scope").is_none(),
        "no scope asked, none granted"
    );
}

#[tokio::test]
async fn require_resource_refuses_requests_without_it() {
    let b = bed(|k| k.require_resource = true).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        b.authorize(&id, &[("resource", "")]).await["error"],
        "invalid_target"
    );
    let q = b.authorize(&id, &[]).await;
    let (status, err) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", &id),
            ],
        )
        .await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target"))
    );
    // Without the knob a missing resource is fine, and a mismatched one is not.
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        b.authorize(&id, &[("resource", "")])
            .await
            .contains_key("code")
    );
    assert_eq!(
        b.authorize(&id, &[("resource", "not a uri")]).await["error"],
        "invalid_target"
    );
}

#[tokio::test]
async fn preregistered_clients_authenticate_with_their_method() {
    let b = bed(|k| {
        k.no_dcr = true;
        k.clients = vec![
            ClientSpec::confidential(
                "basic-client",
                "s3cret:/+",
                TokenAuthMethod::ClientSecretBasic,
            ),
            ClientSpec::confidential("post-client", "p0st", TokenAuthMethod::ClientSecretPost),
            "id=public-client".parse().unwrap(),
        ];
    })
    .await;
    let token_url = b.tb.endpoint_url("token");
    let resource = b.tb.resource().to_owned();

    // client_secret_basic: form-encoded id and secret inside Basic (RFC 6749 §2.3.1).
    let q = b.authorize("basic-client", &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", resource.as_str()),
    ];
    let creds = STANDARD.encode("basic-client:s3cret%3A%2F%2B");
    let r = b
        .http
        .post(&token_url)
        .header("authorization", format!("Basic {creds}"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let seen = b.tb.stats().token_log.back().cloned().unwrap();
    assert_eq!(seen.client_auth, "client_secret_basic");

    // The same client trying client_secret_post is refused.
    let q = b.authorize("basic-client", &[]).await;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", q["code"].as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", "basic-client"),
        ("client_secret", "s3cret:/+"),
    ];
    let (status, err) = b.post_form(&token_url, &form).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );

    let q = b.authorize("post-client", &[]).await;
    form[1].1 = q["code"].as_str();
    form[4].1 = "post-client";
    form[5].1 = "wrong";
    assert_eq!(
        b.post_form(&token_url, &form).await.1["error"],
        "invalid_client"
    );
    form[5].1 = "p0st";
    let (status, _) = b.post_form(&token_url, &form).await;
    assert_eq!(status, StatusCode::OK);

    let q = b.authorize("public-client", &[]).await;
    assert_eq!(
        b.exchange("public-client", &q["code"]).await.0,
        StatusCode::OK
    );
    assert_eq!(b.tb.stats().registrations, 0);
}

#[tokio::test]
async fn registration_negotiates_the_auth_method_and_checks_redirects() {
    let b = bed(|k| k.token_auth_methods = vec![TokenAuthMethod::ClientSecretPost]).await;
    let reg = b.register(json!({"token_endpoint_auth_method": "client_secret_basic", "application_type": "native"})).await;
    assert_eq!(reg["token_endpoint_auth_method"], "client_secret_post");
    assert!(reg["client_secret"].is_string());
    assert_eq!(reg["client_secret_expires_at"], 0);
    assert_eq!(reg["application_type"], "native");
    assert_eq!(b.tb.stats().registrations, 1);

    for bad in [
        "http://evil.example/cb",
        "javascript:alert(1)",
        "not a uri",
        "https://x.example/cb#frag",
    ] {
        let r = b
            .http
            .post(b.tb.endpoint_url("register"))
            .json(&json!({"redirect_uris": [bad]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["error"],
            "invalid_redirect_uri"
        );
    }
    let r = b
        .http
        .post(b.tb.endpoint_url("register"))
        .body("[]")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_client_registered_without_refresh_token_gets_none() {
    let b = bed(|_| {}).await;
    let reg = b
        .register(json!({"grant_types": ["authorization_code"]}))
        .await;
    let id = reg["client_id"].as_str().unwrap();
    let q = b.authorize(id, &[]).await;
    let (_, tokens) = b.exchange(id, &q["code"]).await;
    assert!(tokens.get("refresh_token").is_none());
}

#[tokio::test]
async fn cimd_accepts_https_url_client_ids_only_when_on() {
    let id = "https://client.example/keyway.json";
    let b = bed(|k| k.cimd = true).await;
    let q = b.authorize(id, &[]).await;
    assert_eq!(b.exchange(id, &q["code"]).await.0, StatusCode::OK);
    assert_eq!(
        b.authorize_raw("http://client.example/x.json", &[])
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let b = bed(|_| {}).await;
    assert_eq!(
        b.authorize_raw(id, &[]).await.status(),
        StatusCode::BAD_REQUEST
    );
}
