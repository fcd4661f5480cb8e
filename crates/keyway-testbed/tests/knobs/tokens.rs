//! Token lifetime, refresh rotation, reuse detection, audience binding.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{bearer_params, bed};

#[tokio::test]
async fn access_tokens_expire_on_the_injected_clock() {
    let b = bed(|k| k.token_lifetime = 2).await;
    let (_, tokens) = b.login().await;
    assert_eq!(tokens["expires_in"], 2);
    let at = tokens["access_token"].as_str().unwrap();
    b.mcp_session(at).await;
    b.clock.advance(Duration::from_secs(3));
    let r = b.mcp_post(Some(at), None, json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bearer_params(&r)["error"], "invalid_token");
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_whole_family() {
    let b = bed(|_| {}).await;
    let (id, t1) = b.login().await;
    let rt1 = t1["refresh_token"].as_str().unwrap();
    let (status, t2) = b.refresh(&id, rt1).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let rt2 = t2["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2, "rotated");
    assert_eq!(b.tb.stats().refreshes, 1);

    // rt1 again: reuse. The family dies: rt2 and the access tokens too.
    let (status, err) = b.refresh(&id, rt1).await;
    assert_eq!(
        (status, err["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant"))
    );
    assert_eq!(b.tb.stats().reuse_revocations, 1);
    assert_eq!(b.refresh(&id, rt2).await.1["error"], "invalid_grant");
    let at2 = t2["access_token"].as_str().unwrap();
    assert_eq!(
        b.mcp_post(Some(at2), None, json!({})).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn without_reuse_detection_an_old_refresh_token_still_works() {
    let b = bed(|k| k.no_reuse_detection = true).await;
    let (id, t1) = b.login().await;
    let rt1 = t1["refresh_token"].as_str().unwrap();
    b.refresh(&id, rt1).await;
    assert_eq!(b.refresh(&id, rt1).await.0, StatusCode::OK);
    assert_eq!(b.tb.stats().reuse_revocations, 0);
}

#[tokio::test]
async fn no_rotation_hands_back_the_same_refresh_token() {
    let b = bed(|k| k.no_rotation = true).await;
    let (id, t1) = b.login().await;
    let rt1 = t1["refresh_token"].as_str().unwrap();
    let (_, t2) = b.refresh(&id, rt1).await;
    assert_eq!(t2["refresh_token"], rt1);
    assert_eq!(b.refresh(&id, rt1).await.0, StatusCode::OK);
}

#[tokio::test]
async fn omitted_refresh_token_keeps_the_old_one_valid() {
    let b = bed(|k| k.omit_refresh_token_on_refresh = true).await;
    let (id, t1) = b.login().await;
    let rt1 = t1["refresh_token"].as_str().unwrap();
    let (status, t2) = b.refresh(&id, rt1).await;
    assert_eq!(status, StatusCode::OK);
    assert!(t2.get("refresh_token").is_none());
    assert!(t2["access_token"].is_string());
    assert_eq!(b.refresh(&id, rt1).await.0, StatusCode::OK);
}

#[tokio::test]
async fn refresh_tokens_can_be_withheld() {
    let b = bed(|k| k.no_refresh_token = true).await;
    assert!(b.login().await.1.get("refresh_token").is_none());

    let b = bed(|k| k.refresh_requires_offline_access = true).await;
    assert!(b.login().await.1.get("refresh_token").is_none());
    let id = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = b
        .authorize(&id, &[("scope", "mcp:tools offline_access")])
        .await;
    assert!(b.exchange(&id, &q["code"]).await.1["refresh_token"].is_string());
}

#[tokio::test]
async fn refresh_checks_resource_scope_and_client() {
    let b = bed(|_| {}).await;
    let (id, t1) = b.login().await;
    let rt = t1["refresh_token"].as_str().unwrap();
    let token_url = b.tb.endpoint_url("token");
    let (_, err) = b
        .post_form(
            &token_url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &id),
                ("resource", "http://127.0.0.1:1/other"),
            ],
        )
        .await;
    assert_eq!(err["error"], "invalid_target");
    let (_, err) = b
        .post_form(
            &token_url,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", &id),
                ("scope", "mcp:admin"),
            ],
        )
        .await;
    assert_eq!(err["error"], "invalid_scope", "no widening on refresh");
    let other = b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(b.refresh(&other, rt).await.1["error"], "invalid_grant");
    assert_eq!(b.refresh(&id, rt).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_for_one_resource_is_refused_by_another_testbed() {
    let a = bed(|_| {}).await;
    let b = bed(|_| {}).await;
    let (_, tokens) = a.login().await;
    let at = tokens["access_token"].as_str().unwrap();
    a.mcp_session(at).await;
    assert_eq!(
        b.mcp_post(Some(at), None, json!({})).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn audience_binding_refuses_tokens_bound_elsewhere_unless_off() {
    for off in [false, true] {
        let b = bed(|k| k.no_audience_binding = off).await;
        let id = b.register(json!({})).await["client_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let q = b
            .authorize(&id, &[("resource", "https://other.example/mcp")])
            .await;
        let code = q["code"].clone();
        let (status, tokens) = b
            .post_form(
                &b.tb.endpoint_url("token"),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", crate::harness::REDIRECT),
                    ("code_verifier", crate::harness::VERIFIER),
                    ("client_id", &id),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let at = tokens["access_token"].as_str().unwrap();
        let r = b
            .mcp_post(
                Some(at),
                None,
                json!({"jsonrpc":"2.0","id":1,"method":"ping"}),
            )
            .await;
        if off {
            assert_ne!(r.status(), StatusCode::UNAUTHORIZED);
        } else {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
