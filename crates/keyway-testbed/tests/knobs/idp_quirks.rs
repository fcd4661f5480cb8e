//! `--idp-quirks`: the authorization server as Entra, Google, Auth0, Okta, Keycloak
//! and GitHub; for each, what it refuses and the request shape it takes.

use std::collections::HashMap;

use keyway_testbed::IdpQuirks;
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::harness::{Bed, REDIRECT, VERIFIER, bearer_params, bed, query, rpc_result};

const GRAPH: &str = "00000003-0000-0000-c000-000000000000";

async fn quirky(q: IdpQuirks) -> Bed {
    bed(|k| k.idp_quirks = Some(q)).await
}

/// A public client registered by DCR.
async fn client(b: &Bed) -> String {
    b.register(json!({})).await["client_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The authorization redirect's parameters for a request without `resource` and with
/// `extra` (an empty value leaves a parameter out).
async fn authorize(b: &Bed, id: &str, extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut params = vec![("resource", "")];
    params.extend_from_slice(extra);
    b.authorize(id, &params).await
}

/// A code for `scope`, without `resource`.
async fn code(b: &Bed, id: &str, extra: &[(&str, &str)]) -> String {
    let q = authorize(b, id, extra).await;
    assert!(q.contains_key("code"), "{q:?}");
    q["code"].clone()
}

/// A token request with `form`, asking for JSON; the status and the JSON answer.
async fn token(b: &Bed, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = b
        .http
        .post(b.tb.endpoint_url("token"))
        .header(header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Exchange `code` (as a public client), with `extra` parameters.
async fn exchange(b: &Bed, id: &str, code: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", id),
    ];
    form.extend_from_slice(extra);
    token(b, &form).await
}

/// Tokens for a code, which must be granted.
async fn tokens(b: &Bed, id: &str, code: &str) -> Value {
    let (status, t) = exchange(b, id, code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    t
}

async fn refresh(b: &Bed, id: &str, rt: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", rt),
        ("client_id", id),
    ];
    form.extend_from_slice(extra);
    token(b, &form).await
}

fn access_token(t: &Value) -> &str {
    t["access_token"].as_str().unwrap()
}

/// The MCP endpoint's answer to `initialize` with `token`: 200, or 401 with
/// `invalid_token` (the audience binding).
async fn mcp_takes(b: &Bed, token: &str) -> bool {
    let r = b
        .mcp_post(
            Some(token),
            None,
            json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-11-25","capabilities":{},
                "clientInfo":{"name":"harness","version":"0"}}}),
        )
        .await;
    match r.status() {
        StatusCode::OK => true,
        StatusCode::UNAUTHORIZED => {
            assert_eq!(bearer_params(&r)["error"], "invalid_token");
            false
        }
        other => panic!("initialize answered {other}"),
    }
}

/// Whether `token` may call `admin_only` (which needs mcp:admin).
async fn calls_admin_only(b: &Bed, token: &str) -> bool {
    let s = b.mcp_session(token).await;
    let r = b.call_tool(token, &s, "admin_only", json!({})).await;
    match r.status() {
        StatusCode::OK => {
            let r = rpc_result(r).await;
            assert_eq!(r["result"]["content"][0]["text"], "admin access granted");
            true
        }
        StatusCode::FORBIDDEN => false,
        other => panic!("admin_only answered {other}"),
    }
}

async fn as_metadata(b: &Bed) -> Value {
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        b.tb.as_origin()
    );
    let (status, m) = b.get_json(&url).await;
    assert_eq!(status, StatusCode::OK);
    m
}

// ------------------------------------------------------------------------- entra

#[tokio::test]
async fn entra_refuses_resource_at_authorize_token_and_device_endpoints() {
    let b = quirky(IdpQuirks::Entra).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;
    let scope = format!("{r}/mcp:tools");
    // The harness sends `resource` unless told otherwise.
    let q = b.authorize(&id, &[("scope", &scope)]).await;
    assert_eq!(q["error"], "invalid_target");
    assert_eq!(
        q["error_description"],
        "AADSTS9010010: The resource parameter provided in the request doesn't match with \
         the requested scopes."
    );
    assert_eq!(q["state"], "st4te");
    assert_eq!(q["iss"], b.tb.issuer());
    assert!(!q.contains_key("code"));

    let code = code(&b, &id, &[("scope", &scope)]).await;
    let (status, err) = exchange(&b, &id, &code, &[("resource", &r)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "invalid_target",
               "error_description": "AADSTS901002: The 'resource' request parameter is not supported."})
    );
    // The refusal came before the code was looked at: it is still good.
    let t = tokens(&b, &id, &code).await;
    assert!(mcp_takes(&b, access_token(&t)).await);

    let (status, err) = b
        .post_form(
            &b.tb.endpoint_url("device_authorization"),
            &[("client_id", &id), ("scope", &scope), ("resource", &r)],
        )
        .await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_target"))
    );

    let stats = b.tb.stats();
    assert_eq!(stats.quirk_refusals, 3);
    assert_eq!(stats.token_log[0].resource.as_deref(), Some(r.as_str()));
    assert_eq!(stats.token_log[0].outcome, "invalid_target");
}

#[tokio::test]
async fn entra_takes_scopes_qualified_with_the_resource_only() {
    let b = quirky(IdpQuirks::Entra).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;

    let q = authorize(&b, &id, &[("scope", "mcp:tools")]).await;
    assert_eq!(q["error"], "invalid_scope");
    assert_eq!(
        q["error_description"],
        format!(
            "AADSTS650053: The application asked for scope 'mcp:tools' that doesn't exist on \
             the resource '{GRAPH}'."
        )
    );
    let q = authorize(&b, &id, &[("scope", &format!("{r}/mcp:nope"))]).await;
    assert_eq!(q["error"], "invalid_scope");
    assert!(q["error_description"].starts_with("AADSTS650053: "));
    assert_eq!(b.tb.stats().quirk_refusals, 2);

    // Qualified: the response names the scopes as asked, the token carries the names,
    // so the MCP server's scope checks (step-up) read it as before.
    let asked = format!("{r}/mcp:tools openid");
    let t = tokens(&b, &id, &code(&b, &id, &[("scope", &asked)]).await).await;
    assert_eq!(t["scope"], asked.as_str());
    assert!(
        t.get("refresh_token").is_none(),
        "no offline_access, no refresh token"
    );
    assert!(mcp_takes(&b, access_token(&t)).await);
    assert!(!calls_admin_only(&b, access_token(&t)).await);

    // `.default`: every scope of the resource.
    let asked = format!("{r}/.default");
    let t = tokens(&b, &id, &code(&b, &id, &[("scope", &asked)]).await).await;
    assert_eq!(t["scope"], asked.as_str());
    assert!(calls_admin_only(&b, access_token(&t)).await);

    // OpenID scopes alone make a token for Microsoft Graph, not for this server.
    let t = tokens(
        &b,
        &id,
        &code(&b, &id, &[("scope", "openid profile")]).await,
    )
    .await;
    assert!(!mcp_takes(&b, access_token(&t)).await);
}

#[tokio::test]
async fn entra_refreshes_only_with_offline_access_and_a_scope() {
    let b = quirky(IdpQuirks::Entra).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;
    let asked = format!("{r}/mcp:tools offline_access");
    let t = tokens(&b, &id, &code(&b, &id, &[("scope", &asked)]).await).await;
    assert_eq!(t["scope"], asked.as_str());
    let rt = t["refresh_token"].as_str().unwrap().to_owned();

    // Without `scope` Entra refreshes for Microsoft Graph.
    let (status, err) = refresh(&b, &id, &rt, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "invalid_scope", "error_description": format!(
            "AADSTS650053: The application asked for scope 'mcp:tools' that doesn't exist on \
             the resource '{GRAPH}'.")})
    );
    assert_eq!(b.tb.stats().quirk_refusals, 1);
    let (status, err) = refresh(&b, &id, &rt, &[("scope", "mcp:tools")]).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::BAD_REQUEST, &json!("invalid_scope"))
    );

    let (status, t2) = refresh(&b, &id, &rt, &[("scope", &asked)]).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert_eq!(t2["scope"], asked.as_str());
    assert!(t2["refresh_token"].is_string());
    assert!(mcp_takes(&b, access_token(&t2)).await);
    // `.default` on a refresh is what was granted.
    let rt2 = t2["refresh_token"].as_str().unwrap();
    let (status, t3) = refresh(&b, &id, rt2, &[("scope", &format!("{r}/.default"))]).await;
    assert_eq!(status, StatusCode::OK, "{t3}");
    assert!(!calls_admin_only(&b, access_token(&t3)).await);
    let stats = b.tb.stats();
    assert_eq!(stats.refreshes, 2);
    assert_eq!(
        stats.token_log.back().unwrap().scope,
        Some(format!("{r}/.default"))
    );
}

// ------------------------------------------------------------------------ google

#[tokio::test]
async fn google_refuses_resource_and_offline_access() {
    let b = quirky(IdpQuirks::Google).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;
    let q = b.authorize(&id, &[]).await;
    assert_eq!(q["error"], "invalid_request");
    assert_eq!(
        q["error_description"],
        "Parameter not allowed for this message type: resource"
    );
    assert_eq!(q["iss"], b.tb.issuer());

    let q = authorize(&b, &id, &[("scope", "mcp:tools offline_access")]).await;
    assert_eq!(q["error"], "invalid_scope");
    assert_eq!(
        q["error_description"],
        "Some requested scopes were invalid. {invalid=[offline_access]}"
    );
    let listed = as_metadata(&b).await["scopes_supported"].clone();
    assert_eq!(listed, json!(["mcp:tools", "mcp:admin"]));

    let code = code(&b, &id, &[]).await;
    let (status, err) = exchange(&b, &id, &code, &[("resource", &r)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        err,
        json!({"error": "invalid_request",
               "error_description": "Parameter not allowed for this message type: resource"})
    );
    let t = tokens(&b, &id, &code).await;
    assert!(
        mcp_takes(&b, access_token(&t)).await,
        "the token is for this server"
    );
    assert_eq!(b.tb.stats().quirk_refusals, 3);
}

#[tokio::test]
async fn google_gives_a_refresh_token_for_offline_access_type_with_consent_only() {
    let b = quirky(IdpQuirks::Google).await;
    let id = client(&b).await;
    for (extra, expect_rt) in [
        (&[][..], false),
        (&[("access_type", "offline")][..], false),
        (&[("prompt", "consent")][..], false),
        (
            &[("access_type", "online"), ("prompt", "consent")][..],
            false,
        ),
        (
            &[("access_type", "offline"), ("prompt", "consent")][..],
            true,
        ),
        (
            &[
                ("access_type", "offline"),
                ("prompt", "select_account consent"),
            ][..],
            true,
        ),
    ] {
        let t = tokens(&b, &id, &code(&b, &id, extra).await).await;
        assert_eq!(t["refresh_token"].is_string(), expect_rt, "{extra:?}");
        if expect_rt {
            let (status, t2) = refresh(&b, &id, t["refresh_token"].as_str().unwrap(), &[]).await;
            assert_eq!(status, StatusCode::OK, "{t2}");
            assert!(mcp_takes(&b, access_token(&t2)).await);
        }
    }
    let seen = b.tb.stats().authorize_log.back().cloned().unwrap();
    assert_eq!(seen.access_type.as_deref(), Some("offline"));
    assert_eq!(seen.prompt.as_deref(), Some("select_account consent"));
    assert_eq!(b.tb.stats().quirk_refusals, 0);
}

// ------------------------------------------------------------------------- auth0

#[tokio::test]
async fn auth0_binds_the_token_to_the_audience_and_ignores_resource() {
    let b = quirky(IdpQuirks::Auth0).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;

    // `resource` (sent by the harness) is no error, and no audience either: the
    // token is for the userinfo endpoint, which the MCP server refuses.
    let q = b.authorize(&id, &[]).await;
    let (status, t) = exchange(&b, &id, &q["code"], &[("resource", &r)]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(!mcp_takes(&b, access_token(&t)).await);

    let t = tokens(
        &b,
        &id,
        &code(&b, &id, &[("audience", "https://api.example")]).await,
    )
    .await;
    assert!(!mcp_takes(&b, access_token(&t)).await);

    let t = tokens(&b, &id, &code(&b, &id, &[("audience", &r)]).await).await;
    assert!(mcp_takes(&b, access_token(&t)).await);
    let stats = b.tb.stats();
    assert_eq!(
        stats.authorize_log.back().unwrap().audience.as_deref(),
        Some(r.as_str())
    );
    assert_eq!(stats.quirk_refusals, 0);
}

#[tokio::test]
async fn auth0_gives_a_refresh_token_for_offline_access_only() {
    let b = quirky(IdpQuirks::Auth0).await;
    let r = b.tb.resource().to_owned();
    let id = client(&b).await;
    let t = tokens(&b, &id, &code(&b, &id, &[("audience", &r)]).await).await;
    assert!(t.get("refresh_token").is_none());

    let scope = "openid mcp:tools offline_access";
    let t = tokens(
        &b,
        &id,
        &code(&b, &id, &[("audience", &r), ("scope", scope)]).await,
    )
    .await;
    assert_eq!(t["scope"], scope);
    let rt = t["refresh_token"].as_str().unwrap();
    // As keyway sends it: `audience` and `resource` on the refresh too, both ignored.
    let (status, t2) = refresh(&b, &id, rt, &[("audience", &r), ("resource", &r)]).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert!(mcp_takes(&b, access_token(&t2)).await);
    assert_eq!(
        b.tb.stats().token_log.back().unwrap().audience.as_deref(),
        Some(r.as_str())
    );
}

#[tokio::test]
async fn auth0_client_credentials_take_the_audience_of_the_token_request() {
    let b = quirky(IdpQuirks::Auth0).await;
    let r = b.tb.resource().to_owned();
    let reg = b
        .register(json!({
            "token_endpoint_auth_method": "client_secret_post",
            "grant_types": ["client_credentials"],
        }))
        .await;
    let (id, secret) = (
        reg["client_id"].as_str().unwrap(),
        reg["client_secret"].as_str().unwrap(),
    );
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
        ("scope", "mcp:tools"),
    ];
    let (status, t) = token(&b, &form).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(
        !mcp_takes(&b, access_token(&t)).await,
        "no audience: userinfo"
    );
    form.push(("audience", &r));
    let (status, t) = token(&b, &form).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(mcp_takes(&b, access_token(&t)).await);
}

// -------------------------------------------------------------------------- okta

#[tokio::test]
async fn okta_hides_offline_access_yet_needs_it_for_a_refresh_token() {
    let b = quirky(IdpQuirks::Okta).await;
    for doc in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let (status, m) = b.get_json(&format!("{}{doc}", b.tb.as_origin())).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            m["scopes_supported"],
            json!(["mcp:tools", "mcp:admin"]),
            "{doc}"
        );
    }
    let id = client(&b).await;
    let (_, t) = b.exchange(&id, &b.authorize(&id, &[]).await["code"]).await;
    assert!(t.get("refresh_token").is_none(), "{t}");
    assert!(mcp_takes(&b, access_token(&t)).await);

    let scope = "openid mcp:tools offline_access";
    let (status, t) = b
        .exchange(&id, &b.authorize(&id, &[("scope", scope)]).await["code"])
        .await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["scope"], scope, "offline_access is accepted");
    let (status, t2) = b.refresh(&id, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    assert!(mcp_takes(&b, access_token(&t2)).await);
}

// ---------------------------------------------------------------------- keycloak

#[tokio::test]
async fn keycloak_serves_openid_metadata_under_its_realm_only() {
    let b = quirky(IdpQuirks::Keycloak).await;
    let origin = b.tb.as_origin().to_owned();
    let issuer = format!("{origin}/realms/keyway");
    assert_eq!(b.tb.issuer(), issuer);
    let (_, prm) = b.get_json(&b.tb.prm_url().unwrap()).await;
    assert_eq!(prm["authorization_servers"], json!([issuer]));

    let (status, m) = b
        .get_json(&format!("{issuer}/.well-known/openid-configuration"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(m["issuer"], issuer.as_str());
    let endpoints = format!("{issuer}/protocol/openid-connect");
    assert_eq!(m["authorization_endpoint"], format!("{endpoints}/auth"));
    assert_eq!(m["token_endpoint"], format!("{endpoints}/token"));
    assert_eq!(m["jwks_uri"], format!("{endpoints}/certs"));
    assert_eq!(
        m["registration_endpoint"],
        format!("{issuer}/clients-registrations/openid-connect")
    );
    for path in [
        "/.well-known/oauth-authorization-server/realms/keyway",
        "/.well-known/openid-configuration/realms/keyway",
        "/realms/keyway/.well-known/oauth-authorization-server",
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let status = b.get(&format!("{origin}{path}")).await.status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn keycloak_flow_works_through_its_metadata_and_ignores_resource() {
    let b = quirky(IdpQuirks::Keycloak).await;
    let issuer = b.tb.issuer().to_owned();
    let (_, m) = b
        .get_json(&format!("{issuer}/.well-known/openid-configuration"))
        .await;
    for (field, name) in [
        ("authorization_endpoint", "authorize"),
        ("token_endpoint", "token"),
        ("registration_endpoint", "register"),
    ] {
        assert_eq!(m[field], b.tb.endpoint_url(name), "{field}");
    }
    let id = client(&b).await;
    // With `resource`: ignored, not refused.
    let q = b.authorize(&id, &[("scope", "openid mcp:tools")]).await;
    assert_eq!(q["iss"], issuer);
    let (status, t) = b.exchange(&id, &q["code"]).await;
    assert_eq!(status, StatusCode::OK, "{t}");
    assert!(mcp_takes(&b, access_token(&t)).await);
    // Without: the token is for this server all the same.
    let t = tokens(&b, &id, &code(&b, &id, &[]).await).await;
    assert!(mcp_takes(&b, access_token(&t)).await);
    let (status, t2) = refresh(&b, &id, t["refresh_token"].as_str().unwrap(), &[]).await;
    assert_eq!(status, StatusCode::OK, "{t2}");
    let stats = b.tb.stats();
    assert_eq!(
        stats.path("GET /realms/keyway/.well-known/openid-configuration"),
        1
    );
    assert_eq!(
        stats.path("POST /realms/keyway/protocol/openid-connect/token"),
        3
    );
}

// ------------------------------------------------------------------------ github

#[tokio::test]
async fn github_reports_token_errors_with_200() {
    let b = quirky(IdpQuirks::Github).await;
    let id = client(&b).await;
    let (status, err) = exchange(&b, &id, "tb_code_nope", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(err["error"], "bad_verification_code");
    assert_eq!(
        err["error_description"],
        "The code passed is incorrect or expired."
    );
    assert!(
        err["error_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/"),
        "{err}"
    );

    // Success is unchanged; the same code again is a bad code too.
    let code = b.authorize(&id, &[]).await["code"].clone();
    let (status, t) = exchange(&b, &id, &code, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["token_type"], "Bearer");
    assert!(mcp_takes(&b, access_token(&t)).await);
    let (status, err) = exchange(&b, &id, &code, &[]).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::OK, &json!("bad_verification_code"))
    );

    let (status, err) = refresh(&b, &id, "tb_rt_nope", &[]).await;
    assert_eq!(
        (status, &err["error"]),
        (StatusCode::OK, &json!("bad_refresh_token"))
    );
    let (status, err) = token(
        &b,
        &[
            ("grant_type", "authorization_code"),
            ("code", "x"),
            ("client_id", "nobody"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(err["error"], "incorrect_client_credentials");
    let stats = b.tb.stats();
    assert_eq!(stats.token_errors, 4);
    assert_eq!(
        stats.quirk_refusals, 0,
        "GitHub refuses nothing the standard takes"
    );
}

#[tokio::test]
async fn github_answers_form_encoded_without_accept_json() {
    let b = quirky(IdpQuirks::Github).await;
    let id = client(&b).await;
    let code = b.authorize(&id, &[]).await["code"].clone();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("client_id", id.as_str()),
    ];
    let r = b
        .http
        .post(b.tb.endpoint_url("token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/x-www-form-urlencoded; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(text.starts_with("access_token="), "{text}");
    let answer = query(&format!("http://x/?{text}"));
    assert_eq!(answer["token_type"], "bearer");
    assert_eq!(answer["scope"], "mcp:tools");
    assert!(mcp_takes(&b, &answer["access_token"]).await);

    // Errors too, with the same 200.
    let r = b
        .http
        .post(b.tb.endpoint_url("token"))
        .header(header::ACCEPT, "*/*")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer = query(&format!("http://x/?{}", r.text().await.unwrap()));
    assert_eq!(answer["error"], "bad_verification_code");
    assert_eq!(
        answer["error_description"],
        "The code passed is incorrect or expired."
    );
}
