//! Dynamic registration management (RFC 7592): the registration answer's
//! registration_client_uri and registration_access_token, reading and deleting a
//! registration with them, and --no-registration-management.

use keyway_testbed::{ClientSpec, IdpQuirks};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{Bed, bed};

/// `METHOD uri` with an optional Bearer token: the status, the WWW-Authenticate
/// header and the JSON body.
async fn manage(
    b: &Bed,
    method: reqwest::Method,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let mut req = b.http.request(method, uri);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    let challenge = r
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    (status, challenge, r.json().await.unwrap_or(Value::Null))
}

fn assert_invalid_token((status, challenge, body): (StatusCode, Option<String>, Value)) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body, json!({"error": "invalid_token"}));
    assert_eq!(challenge.as_deref(), Some("Bearer error=\"invalid_token\""));
}

fn uri_and_token(reg: &Value) -> (String, String) {
    (
        reg["registration_client_uri"].as_str().unwrap().to_owned(),
        reg["registration_access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

#[tokio::test]
async fn registration_answer_carries_the_management_uri_and_token() {
    let b = bed(|_| {}).await;
    let reg = b.register(json!({})).await;
    let id = reg["client_id"].as_str().unwrap();
    let (uri, token) = uri_and_token(&reg);
    assert_eq!(uri, format!("{}/{id}", b.tb.endpoint_url("register")));
    assert!(token.len() > 30, "{token}");
    assert!(b.tb.secrets().contains(&token));
    let other = b.register(json!({})).await;
    assert_ne!(uri_and_token(&other).1, token, "one token per registration");

    // Keycloak's layout: under clients-registrations, as Keycloak serves it.
    let b = bed(|k| k.idp_quirks = Some(IdpQuirks::Keycloak)).await;
    let reg = b.register(json!({})).await;
    let (uri, token) = uri_and_token(&reg);
    let id = reg["client_id"].as_str().unwrap();
    assert_eq!(
        uri,
        format!(
            "{}/realms/keyway/clients-registrations/openid-connect/{id}",
            b.tb.as_origin()
        )
    );
    let (status, _, read) = manage(&b, reqwest::Method::GET, &uri, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{read}");
}

#[tokio::test]
async fn reading_a_registration_needs_its_token() {
    let b = bed(|k| k.clients = vec![ClientSpec::public("pre")]).await;
    let reg = b
        .register(json!({"token_endpoint_auth_method": "client_secret_basic"}))
        .await;
    let (uri, token) = uri_and_token(&reg);
    let get = reqwest::Method::GET;

    let (status, _, read) = manage(&b, get.clone(), &uri, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read, reg, "the client information response, as registered");
    assert_eq!(read["token_endpoint_auth_method"], "client_secret_basic");
    assert!(read["client_secret"].is_string());
    assert_eq!(b.tb.stats().registration_reads, 1);

    assert_invalid_token(manage(&b, get.clone(), &uri, None).await);
    assert_invalid_token(manage(&b, get.clone(), &uri, Some("tb_rat_wrong")).await);
    let other = b.register(json!({})).await;
    let (_, other_token) = uri_and_token(&other);
    assert_invalid_token(manage(&b, get.clone(), &uri, Some(&other_token)).await);
    // An unknown client and a pre-registered one look the same as a wrong token.
    let register = b.tb.endpoint_url("register");
    let unknown = format!("{register}/tbc_nobody");
    assert_invalid_token(manage(&b, get.clone(), &unknown, Some(&token)).await);
    let pre = format!("{register}/pre");
    assert_invalid_token(manage(&b, get, &pre, Some(&token)).await);
    assert_eq!(b.tb.stats().registration_reads, 1);
    assert_eq!(b.tb.stats().path(&format!("GET {}", uri_path(&uri))), 4);
}

fn uri_path(uri: &str) -> String {
    url::Url::parse(uri).unwrap().path().to_owned()
}

#[tokio::test]
async fn deleting_a_registration_ends_its_client() {
    let b = bed(|_| {}).await;
    // A bystander: another client with tokens and a code of its own.
    let (id, tokens) = b.login().await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let at = tokens["access_token"].as_str().unwrap();
    let code = b.authorize(&id, &[]).await["code"].clone();
    // The client to delete, with tokens and a code issued before the deletion.
    let fresh = b.register(json!({})).await;
    let (uri, token) = uri_and_token(&fresh);
    let fresh_id = fresh["client_id"].as_str().unwrap().to_owned();
    let q = b.authorize(&fresh_id, &[]).await;
    let (status, fresh_tokens) = b.exchange(&fresh_id, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{fresh_tokens}");
    let fresh_rt = fresh_tokens["refresh_token"].as_str().unwrap();
    let fresh_at = fresh_tokens["access_token"].as_str().unwrap();
    let fresh_code = b.authorize(&fresh_id, &[]).await["code"].clone();

    let delete = reqwest::Method::DELETE;
    assert_invalid_token(manage(&b, delete.clone(), &uri, None).await);
    assert_invalid_token(manage(&b, delete.clone(), &uri, Some("tb_rat_wrong")).await);
    let (status, _, _) = manage(&b, delete.clone(), &uri, Some(&token)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(b.tb.stats().registration_deletes, 1);

    // The client is gone: its refresh token, a code it holds, a new authorization.
    let (status, err) = b.refresh(&fresh_id, fresh_rt).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"], "invalid_client");
    let (status, err) = b.exchange(&fresh_id, &fresh_code).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
    assert_eq!(err["error"], "invalid_client");
    let r = b.authorize_raw(&fresh_id, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no redirect");
    assert!(r.text().await.unwrap().contains("invalid_client"));
    // Its access token too (RFC 7592 §2.3: grants and tokens invalidated).
    let r = b
        .mcp_post(
            Some(fresh_at),
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},
                "clientInfo":{"name":"harness","version":"0"}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // The registration is gone with it.
    assert_invalid_token(manage(&b, reqwest::Method::GET, &uri, Some(&token)).await);
    assert_invalid_token(manage(&b, delete, &uri, Some(&token)).await);
    assert_eq!(b.tb.stats().registration_deletes, 1);

    // Another client keeps what it holds.
    b.mcp_session(at).await;
    let (status, t) = b.exchange(&id, &code).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    let (status, t) = b.refresh(&id, rt).await;
    assert_eq!(status, StatusCode::OK, "{t}");
}

#[tokio::test]
async fn no_registration_management_leaves_the_fields_out() {
    let b = bed(|k| k.no_registration_management = true).await;
    let reg = b.register(json!({})).await;
    assert!(reg["client_id"].is_string());
    assert!(reg.get("registration_client_uri").is_none(), "{reg}");
    assert!(reg.get("registration_access_token").is_none(), "{reg}");
    // No configuration endpoint either.
    let id = reg["client_id"].as_str().unwrap();
    let uri = format!("{}/{id}", b.tb.endpoint_url("register"));
    let (status, _, _) = manage(&b, reqwest::Method::GET, &uri, Some("x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(b.tb.stats().registration_reads, 0);
}
