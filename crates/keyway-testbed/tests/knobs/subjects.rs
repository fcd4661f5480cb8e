//! Subjects: the person of every grant (`login_hint`, else `--subject`), carried
//! through refreshes and told by introspection.

use keyway_testbed::{ClientSpec, Knobs, Testbed, TestbedError, TokenAuthMethod};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{Bed, bed, query};

/// Introspect `token` as the client `client_id`.
async fn introspect(b: &Bed, client_id: &str, token: &str) -> Value {
    let (status, info) = b
        .post_form(
            &b.tb.endpoint_url("introspect"),
            &[("token", token), ("client_id", client_id)],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["active"], true, "{info}");
    info
}

#[tokio::test]
async fn login_hint_names_the_subject_and_a_refresh_keeps_it() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b
        .authorize(&id, &[("login_hint", "alice@example.org")])
        .await;
    assert_eq!(
        b.tb.stats().authorize_log[0].login_hint.as_deref(),
        Some("alice@example.org")
    );
    let (status, t1) = b.exchange(&id, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{t1}");
    let at1 = t1["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, &id, at1).await["sub"], "alice@example.org");

    let (status, t2) = b.refresh(&id, t1["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let at2 = t2["access_token"].as_str().unwrap();
    assert_ne!(at1, at2);
    assert_eq!(introspect(&b, &id, at2).await["sub"], "alice@example.org");

    // Another person through the same client is another subject.
    let q = b.authorize(&id, &[("login_hint", "bob")]).await;
    let (_, t3) = b.exchange(&id, &q["code"]).await;
    let at3 = t3["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, &id, at3).await["sub"], "bob");

    let by_subject = b.tb.stats().tokens_by_subject;
    assert_eq!(by_subject.get("alice@example.org"), Some(&2));
    assert_eq!(by_subject.get("bob"), Some(&1));
}

#[tokio::test]
async fn without_login_hint_the_subject_is_the_default() {
    let b = bed(|_| {}).await;
    let (id, t) = b.login().await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(Knobs::default().subject, "testbed-user");
    assert_eq!(introspect(&b, &id, at).await["sub"], "testbed-user");
    let minted = b.tb.mint_access_token("mcp:tools");
    assert_eq!(introspect(&b, &id, &minted).await["sub"], "testbed-user");

    let b = bed(|k| k.subject = "carol".into()).await;
    let (id, t) = b.login().await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, &id, at).await["sub"], "carol");
    let minted = b.tb.mint_access_token("mcp:tools");
    assert_eq!(introspect(&b, &id, &minted).await["sub"], "carol");
}

#[tokio::test]
async fn the_device_grant_is_the_default_subject_and_client_credentials_the_client() {
    let b = bed(|k| {
        k.subject = "dora".into();
        k.device_pending_polls = 0;
        k.clients = vec![
            ClientSpec::public("dev"),
            ClientSpec::confidential("m2m", "sec", TokenAuthMethod::ClientSecretPost),
        ];
    })
    .await;
    let (status, d) = b
        .post_form(
            &b.tb.endpoint_url("device_authorization"),
            &[("client_id", "dev"), ("scope", "mcp:tools")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    let verify = d["verification_uri_complete"].as_str().unwrap();
    assert_eq!(b.get(verify).await.status(), StatusCode::OK);
    let (status, t) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", d["device_code"].as_str().unwrap()),
                ("client_id", "dev"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, "dev", at).await["sub"], "dora");

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
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, "dev", at).await["sub"], "m2m");
    let by_subject = b.tb.stats().tokens_by_subject;
    assert_eq!(by_subject.get("dora"), Some(&1));
    assert_eq!(by_subject.get("m2m"), Some(&1));
}

#[tokio::test]
async fn a_bad_login_hint_is_refused_with_invalid_request() {
    let b = bed(|_| {}).await;
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let too_long = "a".repeat(65);
    for bad in [
        "a b",
        "alice/bob",
        "zoë",
        "<script>",
        "a\"b",
        too_long.as_str(),
    ] {
        let q = b.authorize(&id, &[("login_hint", bad)]).await;
        assert_eq!(q["error"], "invalid_request", "{bad:?}");
        assert!(q["error_description"].contains("login_hint"), "{bad:?}");
        assert_eq!(q["state"], "st4te");
        assert!(!q.contains_key("code"), "{bad:?}");
    }
    // An empty login_hint (the harness leaves empty parameters out).
    let r = b.authorize_raw(&id, &[]).await;
    let location = r.headers()[header::LOCATION].to_str().unwrap();
    assert!(query(location).contains_key("code"));
    let mut url = url::Url::parse(&b.tb.endpoint_url("authorize")).unwrap();
    let challenge = crate::harness::challenge_s256();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &id)
        .append_pair("redirect_uri", crate::harness::REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("login_hint", "");
    let r = b.get(url.as_str()).await;
    assert_eq!(r.status(), StatusCode::FOUND);
    let q = query(r.headers()[header::LOCATION].to_str().unwrap());
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(b.tb.stats().authorizations, 1, "only the good request");

    // 64 characters of every allowed kind are a name.
    let longest = format!("{}-_.@{}", "A".repeat(30), "9".repeat(30));
    assert_eq!(longest.len(), 64);
    let q = b.authorize(&id, &[("login_hint", &longest)]).await;
    let (_, t) = b.exchange(&id, &q["code"]).await;
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(introspect(&b, &id, at).await["sub"], longest.as_str());
}

#[tokio::test]
async fn a_bad_subject_knob_is_refused_at_start() {
    let mut knobs = Knobs::default();
    knobs.subject = "two words".into();
    assert!(matches!(
        Testbed::start(knobs).await,
        Err(TestbedError::InvalidKnob(m)) if m.contains("--subject")
    ));
}

#[tokio::test]
async fn minted_tokens_name_their_subject_and_resource() {
    let b = bed(|_| {}).await;
    let (id, _) = b.login().await;
    let other = "https://gateway.example/mcp";
    let theirs = b.tb.mint_access_token_for("erin", "mcp:tools", Some(other));
    let info = introspect(&b, &id, &theirs).await;
    assert_eq!(
        (&info["sub"], &info["aud"]),
        (&json!("erin"), &json!(other))
    );
    // Bound to the other resource: this server does not take it.
    let r = b.mcp_post(Some(&theirs), None, json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let ours = b.tb.mint_access_token_for("erin", "mcp:tools", None);
    let info = introspect(&b, &id, &ours).await;
    assert_eq!(info["aud"], b.tb.resource());
    b.mcp_session(&ours).await;
}
