//! Protected resource metadata and authorization server metadata knobs.

use keyway_testbed::{MetadataDoc, PkceAdvertised, PrmLocation, ScopeList, TokenAuthMethod};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::{bearer_params, bed};

#[tokio::test]
async fn prm_in_header_is_named_by_the_challenge() {
    let b = bed(|_| {}).await;
    let r = b.get(b.tb.mcp_url()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let p = bearer_params(&r);
    let prm_url = b.tb.prm_url().unwrap();
    assert_eq!(p["resource_metadata"], prm_url);
    assert_eq!(p["scope"], "mcp:tools");
    assert!(
        !p.contains_key("error"),
        "no token, no error code (RFC 6750 §3.1)"
    );
    let (status, prm) = b.get_json(&prm_url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prm["resource"], b.tb.mcp_url());
    assert_eq!(prm["authorization_servers"], json!([b.tb.issuer()]));
    assert_eq!(prm["scopes_supported"], json!(["mcp:tools", "mcp:admin"]));
}

#[tokio::test]
async fn prm_path_only_is_not_named_by_the_challenge() {
    let b = bed(|k| k.prm = PrmLocation::Path).await;
    let p = bearer_params(&b.get(b.tb.mcp_url()).await);
    assert!(!p.contains_key("resource_metadata"));
    let path_url = format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        b.tb.rs_origin()
    );
    assert_eq!(b.get(&path_url).await.status(), StatusCode::OK);
    let root = format!("{}/.well-known/oauth-protected-resource", b.tb.rs_origin());
    assert_eq!(b.get(&root).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn prm_root_only_names_the_origin() {
    let b = bed(|k| k.prm = PrmLocation::Root).await;
    let path_url = format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        b.tb.rs_origin()
    );
    assert_eq!(b.get(&path_url).await.status(), StatusCode::NOT_FOUND);
    let (status, prm) = b
        .get_json(&format!(
            "{}/.well-known/oauth-protected-resource",
            b.tb.rs_origin()
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(prm["resource"], b.tb.rs_origin());
    assert!(!bearer_params(&b.get(b.tb.mcp_url()).await).contains_key("resource_metadata"));
}

#[tokio::test]
async fn prm_custom_location_is_named_by_the_challenge() {
    let b = bed(|k| {
        k.prm = PrmLocation::Custom;
        k.prm_custom_path = "/meta/prm.json".into();
    })
    .await;
    let p = bearer_params(&b.get(b.tb.mcp_url()).await);
    assert_eq!(
        p["resource_metadata"],
        format!("{}/meta/prm.json", b.tb.rs_origin())
    );
    assert_eq!(
        b.get(&p["resource_metadata"]).await.status(),
        StatusCode::OK
    );
    let well_known = format!(
        "{}/.well-known/oauth-protected-resource/mcp",
        b.tb.rs_origin()
    );
    assert_eq!(b.get(&well_known).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn prm_absent_serves_nothing() {
    let b = bed(|k| k.prm = PrmLocation::Absent).await;
    assert!(b.tb.prm_url().is_none());
    assert!(!bearer_params(&b.get(b.tb.mcp_url()).await).contains_key("resource_metadata"));
    for p in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        assert_eq!(
            b.get(&format!("{}{p}", b.tb.rs_origin())).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn prm_values_can_be_overridden() {
    let b = bed(|k| {
        k.prm_resource = Some("https://evil.example.com/mcp".into());
        k.prm_authorization_server = Some("https://other-as.example".into());
        k.scopes_supported = ScopeList::default();
        k.challenge_scope = ScopeList::new(["a", "b"]);
    })
    .await;
    let (_, prm) = b.get_json(&b.tb.prm_url().unwrap()).await;
    assert_eq!(prm["resource"], "https://evil.example.com/mcp");
    assert_eq!(
        prm["authorization_servers"],
        json!(["https://other-as.example"])
    );
    assert!(prm.get("scopes_supported").is_none());
    assert_eq!(bearer_params(&b.get(b.tb.mcp_url()).await)["scope"], "a b");

    let b = bed(|k| k.challenge_scope = ScopeList::default()).await;
    assert!(!bearer_params(&b.get(b.tb.mcp_url()).await).contains_key("scope"));
}

#[tokio::test]
async fn as_metadata_documents_follow_the_issuer_path() {
    let b = bed(|k| {
        k.issuer_path = "/tenant1".into();
        k.metadata = vec![MetadataDoc::OidcAppend];
    })
    .await;
    let o = b.tb.as_origin().to_owned();
    assert_eq!(b.tb.issuer(), format!("{o}/tenant1"));
    let (status, meta) = b
        .get_json(&format!("{o}/tenant1/.well-known/openid-configuration"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["issuer"], format!("{o}/tenant1"));
    assert_eq!(meta["token_endpoint"], format!("{o}/tenant1/token"));
    assert!(
        meta["jwks_uri"].is_string(),
        "OpenID documents carry jwks_uri"
    );
    for absent in [
        "/.well-known/oauth-authorization-server/tenant1",
        "/.well-known/openid-configuration/tenant1",
        "/.well-known/oauth-authorization-server",
    ] {
        assert_eq!(
            b.get(&format!("{o}{absent}")).await.status(),
            StatusCode::NOT_FOUND,
            "{absent}"
        );
    }

    let b = bed(|k| {
        k.issuer_path = "/t".into();
        k.metadata = vec![MetadataDoc::Oauth, MetadataDoc::OidcInsert];
    })
    .await;
    let o = b.tb.as_origin().to_owned();
    let (_, oauth) = b
        .get_json(&format!("{o}/.well-known/oauth-authorization-server/t"))
        .await;
    assert!(oauth.get("jwks_uri").is_none());
    assert_eq!(
        b.get(&format!("{o}/.well-known/openid-configuration/t"))
            .await
            .status(),
        StatusCode::OK
    );

    let b = bed(|k| k.metadata = vec![MetadataDoc::None]).await;
    let o = b.tb.as_origin().to_owned();
    for p in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        assert_eq!(
            b.get(&format!("{o}{p}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

#[tokio::test]
async fn oidc_insert_and_append_coincide_without_an_issuer_path() {
    let b = bed(|k| k.metadata = vec![MetadataDoc::OidcInsert, MetadataDoc::OidcAppend]).await;
    let url = format!("{}/.well-known/openid-configuration", b.tb.as_origin());
    assert_eq!(b.get(&url).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn as_metadata_fields_follow_the_knobs() {
    let b = bed(|_| {}).await;
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        b.tb.as_origin()
    );
    let (_, m) = b.get_json(&url).await;
    assert_eq!(m["issuer"], b.tb.issuer());
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    assert!(m["registration_endpoint"].is_string());
    assert!(m["revocation_endpoint"].is_string());
    assert!(m["introspection_endpoint"].is_string());
    assert!(m["device_authorization_endpoint"].is_string());
    assert!(m.get("client_id_metadata_document_supported").is_none());
    assert_eq!(
        m["scopes_supported"],
        json!(["mcp:tools", "mcp:admin", "offline_access"])
    );
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!(["none", "client_secret_basic", "client_secret_post"])
    );
    assert!(
        m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials"))
    );

    let b = bed(|k| {
        k.issuer_override = Some("https://wrong.example".into());
        k.pkce = PkceAdvertised::Absent;
        k.no_dcr = true;
        k.no_revocation = true;
        k.no_introspection = true;
        k.no_device = true;
        k.no_client_credentials = true;
        k.no_iss_advertised = true;
        k.cimd = true;
        k.as_scopes = ScopeList::default();
        k.token_auth_methods = vec![TokenAuthMethod::ClientSecretPost];
    })
    .await;
    let url = format!(
        "{}/.well-known/oauth-authorization-server",
        b.tb.as_origin()
    );
    let (_, m) = b.get_json(&url).await;
    assert_eq!(m["issuer"], "https://wrong.example");
    for absent in [
        "code_challenge_methods_supported",
        "registration_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
        "authorization_response_iss_parameter_supported",
        "scopes_supported",
    ] {
        assert!(m.get(absent).is_none(), "{absent} should be absent");
    }
    assert_eq!(m["client_id_metadata_document_supported"], true);
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        json!(["client_secret_post"])
    );
    assert!(
        !m["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("client_credentials"))
    );
    for gone in ["register", "revoke", "introspect", "device_authorization"] {
        let r = b.http.post(b.tb.endpoint_url(gone)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{gone}");
    }

    for (pkce, listed) in [
        (PkceAdvertised::PlainOnly, json!(["plain"])),
        (PkceAdvertised::S256AndPlain, json!(["S256", "plain"])),
    ] {
        let b = bed(|k| k.pkce = pkce).await;
        let url = format!(
            "{}/.well-known/oauth-authorization-server",
            b.tb.as_origin()
        );
        assert_eq!(
            b.get_json(&url).await.1["code_challenge_methods_supported"],
            listed
        );
    }
}
