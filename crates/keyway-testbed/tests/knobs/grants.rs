//! client_credentials, the device grant, revocation and introspection.

use keyway_testbed::{ClientSpec, TokenAuthMethod};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{bed, query};

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let b = bed(|k| {
        k.clients = vec![
            ClientSpec::confidential("m2m", "sec", TokenAuthMethod::ClientSecretPost),
            ClientSpec::public("pub"),
        ]
    })
    .await;
    let url = b.tb.endpoint_url("token");
    let resource = b.tb.resource().to_owned();
    let (status, t) = b
        .post_form(
            &url,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "m2m"),
                ("client_secret", "sec"),
                ("resource", &resource),
                ("scope", "mcp:tools"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(t.get("refresh_token").is_none());
    b.mcp_session(t["access_token"].as_str().unwrap()).await;
    assert_eq!(b.tb.stats().client_credentials_grants, 1);
    let (_, err) = b
        .post_form(
            &url,
            &[("grant_type", "client_credentials"), ("client_id", "pub")],
        )
        .await;
    assert_eq!(err["error"], "unauthorized_client");

    let b = bed(|k| {
        k.no_client_credentials = true;
        k.clients = vec![ClientSpec::confidential(
            "m2m",
            "sec",
            TokenAuthMethod::ClientSecretPost,
        )];
    })
    .await;
    let (_, err) = b
        .post_form(
            &b.tb.endpoint_url("token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", "m2m"),
                ("client_secret", "sec"),
            ],
        )
        .await;
    assert_eq!(err["error"], "unsupported_grant_type");
}

async fn device_start(b: &crate::harness::Bed) -> serde_json::Value {
    let resource = b.tb.resource().to_owned();
    let (status, d) = b
        .post_form(
            &b.tb.endpoint_url("device_authorization"),
            &[
                ("client_id", "dev"),
                ("scope", "mcp:tools"),
                ("resource", &resource),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    d
}

async fn device_poll(b: &crate::harness::Bed, code: &str) -> (StatusCode, serde_json::Value) {
    b.post_form(
        &b.tb.endpoint_url("token"),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", code),
            ("client_id", "dev"),
        ],
    )
    .await
}

#[tokio::test]
async fn device_grant_pends_then_succeeds() {
    let b = bed(|k| {
        k.clients = vec![ClientSpec::public("dev")];
        k.device_pending_polls = 2;
        k.device_interval = 7;
    })
    .await;
    let d = device_start(&b).await;
    assert_eq!(d["interval"], 7);
    assert_eq!(d["verification_uri"], b.tb.endpoint_url("device"));
    let code = d["device_code"].as_str().unwrap();
    for _ in 0..2 {
        assert_eq!(
            device_poll(&b, code).await.1["error"],
            "authorization_pending"
        );
    }
    let (status, t) = device_poll(&b, code).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    b.mcp_session(t["access_token"].as_str().unwrap()).await;
    assert_eq!(b.tb.stats().device_grants, 1);
    assert_eq!(
        device_poll(&b, code).await.1["error"],
        "invalid_grant",
        "used up"
    );
}

#[tokio::test]
async fn device_verification_page_approves_or_denies() {
    let b = bed(|k| {
        k.clients = vec![ClientSpec::public("dev")];
        k.device_pending_polls = 100;
    })
    .await;
    let d = device_start(&b).await;
    let complete = d["verification_uri_complete"].as_str().unwrap();
    assert_eq!(
        query(complete)["user_code"],
        d["user_code"].as_str().unwrap()
    );
    assert_eq!(b.get(complete).await.status(), StatusCode::OK);
    assert_eq!(
        device_poll(&b, d["device_code"].as_str().unwrap()).await.0,
        StatusCode::OK
    );

    let b = bed(|k| {
        k.clients = vec![ClientSpec::public("dev")];
        k.deny = true;
    })
    .await;
    let d = device_start(&b).await;
    b.get(d["verification_uri_complete"].as_str().unwrap())
        .await;
    assert_eq!(
        device_poll(&b, d["device_code"].as_str().unwrap()).await.1["error"],
        "access_denied"
    );

    let b = bed(|k| k.clients = vec![ClientSpec::public("dev")]).await;
    let d = device_start(&b).await;
    b.clock.advance(std::time::Duration::from_secs(601));
    assert_eq!(
        device_poll(&b, d["device_code"].as_str().unwrap()).await.1["error"],
        "expired_token"
    );
}

#[tokio::test]
async fn revocation_kills_a_grant_and_introspection_tells() {
    let b = bed(|_| {}).await;
    let (id, t) = b.login().await;
    let at = t["access_token"].as_str().unwrap();
    let rt = t["refresh_token"].as_str().unwrap();
    let introspect = b.tb.endpoint_url("introspect");
    let (_, info) = b
        .post_form(&introspect, &[("token", at), ("client_id", &id)])
        .await;
    assert_eq!(info["active"], true);
    assert_eq!(info["aud"], b.tb.resource());
    assert_eq!(info["scope"], "mcp:tools");

    let (status, _) = b
        .post_form(
            &b.tb.endpoint_url("revoke"),
            &[("token", rt), ("client_id", &id)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.tb.stats().revocations, 1);
    assert_eq!(
        b.post_form(&introspect, &[("token", at), ("client_id", &id)])
            .await
            .1["active"],
        false
    );
    assert_eq!(b.refresh(&id, rt).await.1["error"], "invalid_grant");
    // Unknown tokens: 200 and nothing counted (RFC 7009 §2.2).
    let (status, _) = b
        .post_form(
            &b.tb.endpoint_url("revoke"),
            &[("token", "nope"), ("client_id", &id)],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(b.tb.stats().revocations, 1);
    // Introspection needs a known client.
    assert_eq!(
        b.post_form(&introspect, &[("token", at)]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let _ = json!({});
}
