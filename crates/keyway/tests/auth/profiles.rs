//! Identity-provider profiles and the escape hatches, each against the testbed
//! behaving like that provider (`--idp-quirks`): without the profile the flow fails
//! the way it fails with the real provider, with it (or with the flags) it works,
//! refreshes included. The testbed's issuer is on loopback, so the provider profiles
//! are named (`--profile NAME`); picking them by the issuer is a unit test of
//! `auth::profile`, and Keycloak's (by the realm path) is picked here by itself.

use std::time::SystemTime;

use keyway::{
    auth::{
        AuthError, AuthOptions, OAuthTokens, RefreshError,
        profile::{Profile, ProfileChoice},
        refresh,
    },
    mcp::{Connection, result_text},
};
use keyway_testbed::IdpQuirks;
use oauth2::RefreshToken;
use serde_json::json;

use crate::harness::{authorizer, challenge, follow, http, testbed, url};

fn with_profile(name: &str) -> AuthOptions {
    AuthOptions {
        profile: ProfileChoice::Named(Profile::named(name).unwrap()),
        ..follow()
    }
}

/// One call through a connection holding `grant`.
async fn echo(mcp_url: &str, grant: keyway::auth::Grant) -> Result<String, String> {
    let tokens = OAuthTokens::new();
    tokens.set(grant).await;
    let conn = Connection::open(mcp_url, http(), tokens)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn
        .call_tool("echo", json!({"text": "through"}).as_object().cloned())
        .await
        .map_err(|e| e.to_string())?;
    conn.close().await;
    Ok(result_text(&r))
}

#[tokio::test]
async fn entra_needs_no_resource_qualified_scopes_and_the_scopes_on_refresh() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Entra)).await;
    // As the standard says: refused at the authorization endpoint.
    let e = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Callback(_)) && e.to_string().contains("AADSTS9010010"),
        "{e}"
    );
    // Only leaving `resource` out is not enough: a bare scope means Microsoft Graph.
    let e = authorizer(AuthOptions {
        no_resource: true,
        ..follow()
    })
    .authorize(&url(&tb), &challenge(&tb).await, None)
    .await
    .unwrap_err();
    assert!(e.to_string().contains("AADSTS650053"), "{e}");

    let grant = authorizer(with_profile("entra"))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let r = tb.resource();
    assert_eq!(
        grant.requested_scopes,
        [format!("{r}/mcp:tools"), "offline_access".to_owned()]
    );
    assert!(grant.refresh_token.is_some());
    assert_eq!(tb.stats().authorize_log.back().unwrap().resource, None);
    assert_eq!(echo(tb.mcp_url(), grant.clone()).await.unwrap(), "through");

    // The refresh carries the scopes (without them Entra answers for Graph).
    let fresh = refresh(&grant, SystemTime::now()).await.unwrap();
    let sent = tb.stats().token_log.back().unwrap().scope.clone();
    assert_eq!(
        sent.as_deref(),
        Some(format!("{r}/mcp:tools offline_access").as_str())
    );
    assert_eq!(echo(tb.mcp_url(), fresh).await.unwrap(), "through");
}

#[tokio::test]
async fn without_resource_a_server_cannot_ask_for_another_audience() {
    // A hostile server behind a real Entra tenant challenges for Microsoft Graph:
    // with `resource` dropped, the scope alone would decide the audience and keyway
    // would hand the server a Graph token. Refused before anything is sent.
    let tb = testbed(|k| {
        k.idp_quirks = Some(IdpQuirks::Entra);
        k.challenge_scope =
            keyway_testbed::ScopeList(vec!["https://graph.microsoft.com/Mail.Read".into()]);
    })
    .await;
    let e = authorizer(with_profile("entra"))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::ForeignScope { scope, .. } if scope == "https://graph.microsoft.com/Mail.Read"),
        "{e}"
    );
    assert_eq!(tb.stats().authorizations, 0, "nothing was sent");
    // The same with --no-resource alone.
    let e = authorizer(AuthOptions {
        no_resource: true,
        ..follow()
    })
    .authorize(&url(&tb), &challenge(&tb).await, None)
    .await
    .unwrap_err();
    assert!(matches!(e, AuthError::ForeignScope { .. }), "{e}");
}

#[tokio::test]
async fn google_needs_offline_access_type_and_consent_and_no_resource() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Google)).await;
    let e = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Parameter not allowed for this message type: resource"),
        "{e}"
    );

    let grant = authorizer(with_profile("google"))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(grant.refresh_token.is_some(), "offline access was asked");
    assert!(!grant.requested_scopes.iter().any(|s| s == "offline_access"));
    let seen = tb.stats().authorize_log.back().unwrap().clone();
    assert_eq!(
        (seen.access_type.as_deref(), seen.prompt.as_deref()),
        (Some("offline"), Some("consent"))
    );
    refresh(&grant, SystemTime::now()).await.unwrap();

    // The same with the escape hatches alone.
    let grant = authorizer(AuthOptions {
        no_resource: true,
        authorize_params: vec![
            ("access_type".into(), "offline".into()),
            ("prompt".into(), "consent".into()),
        ]
        .into(),
        ..follow()
    })
    .authorize(&url(&tb), &challenge(&tb).await, None)
    .await
    .unwrap();
    assert!(grant.refresh_token.is_some());
}

#[tokio::test]
async fn auth0_needs_the_audience() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Auth0)).await;
    // Without an audience the token is for Auth0's userinfo: the server refuses it.
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(echo(tb.mcp_url(), grant).await.is_err());

    let grant = authorizer(with_profile("auth0"))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(
        tb.stats().authorize_log.back().unwrap().audience.as_deref(),
        Some(tb.resource())
    );
    assert!(grant.refresh_token.is_some());
    let fresh = refresh(&grant, SystemTime::now()).await.unwrap();
    assert_eq!(
        tb.stats().token_log.back().unwrap().audience.as_deref(),
        Some(tb.resource()),
        "the audience on the refresh too"
    );
    assert_eq!(echo(tb.mcp_url(), fresh).await.unwrap(), "through");

    // --authorize-param audience=... does the same by hand.
    let grant = authorizer(AuthOptions {
        authorize_params: vec![("audience".into(), tb.resource().to_owned())].into(),
        ..follow()
    })
    .authorize(&url(&tb), &challenge(&tb).await, None)
    .await
    .unwrap();
    assert_eq!(echo(tb.mcp_url(), grant).await.unwrap(), "through");
}

#[tokio::test]
async fn okta_gives_a_refresh_token_only_when_offline_access_is_asked() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Okta)).await;
    let plain = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(
        plain.refresh_token.is_none(),
        "not listed, so not asked by the standard rule"
    );
    let grant = authorizer(with_profile("okta"))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(grant.refresh_token.is_some());
    assert!(grant.requested_scopes.iter().any(|s| s == "offline_access"));
}

#[tokio::test]
async fn keycloak_is_recognised_by_its_realm_and_its_openid_metadata_found() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Keycloak)).await;
    let probe = keyway::probe::probe(
        &http(),
        tb.mcp_url(),
        &keyway::probe::ProbeOptions::default(),
    )
    .await;
    let line = probe.profile.clone().unwrap_or_default();
    assert!(
        line.starts_with("keycloak (Keycloak, the issuer's path /realms/keyway"),
        "{line}"
    );
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(grant.issuer.ends_with("/realms/keyway"));
    assert_eq!(echo(tb.mcp_url(), grant).await.unwrap(), "through");
}

#[tokio::test]
async fn github_errors_in_a_200_are_errors() {
    let tb = testbed(|k| k.idp_quirks = Some(IdpQuirks::Github)).await;
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let mut stale = grant.clone();
    stale.refresh_token = Some(RefreshToken::new("not-a-refresh-token".into()));
    let e = refresh(&stale, SystemTime::now()).await.unwrap_err();
    assert!(
        matches!(&e, RefreshError::Rejected(t) if t.code() == Some("bad_refresh_token")),
        "{e}"
    );
}
