use std::{sync::Arc, time::SystemTime};

use keyway::{
    Secret,
    auth::{
        AuthMethod, AuthOptions, ClientOptions, GrantChoice, MemoryRegistrations, OAuthTokens,
        RefreshError, RegistrationKind, RegistrationStore, StoredRegistration, refresh,
    },
    mcp::{Connection, result_text},
};
use keyway_testbed::{ClientSpec, TokenAuthMethod};
use oauth2::ClientSecret;
use serde_json::json;

use crate::harness::{authorizer, authorizer_with, challenge, follow, http, testbed, url};

#[tokio::test]
async fn dynamic_registration_and_pkce_give_a_bound_grant_that_works() {
    let tb = testbed(|_| {}).await;
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.resource, tb.resource());
    assert_eq!(grant.issuer, tb.issuer());
    assert_eq!(
        grant.requested_scopes,
        ["mcp:tools", "offline_access"],
        "challenge scope, plus offline_access the AS lists"
    );
    assert!(grant.refresh_token.is_some());
    assert_eq!(grant.client.kind, RegistrationKind::Dynamic);

    let stats = tb.stats();
    assert_eq!(stats.registrations, 1);
    let seen = stats.authorize_log.back().unwrap();
    assert_eq!(seen.code_challenge_method.as_deref(), Some("S256"));
    assert!(seen.has_state);
    assert_eq!(seen.resource.as_deref(), Some(tb.resource()));
    let exchange = stats.token_log.back().unwrap();
    assert_eq!(
        exchange.resource.as_deref(),
        Some(tb.resource()),
        "resource on the code exchange too"
    );

    let tokens = OAuthTokens::new();
    tokens.set(grant).await;
    let conn = Connection::open(tb.mcp_url(), http(), tokens.clone())
        .await
        .unwrap();
    let r = conn
        .call_tool("echo", json!({"text": "ok"}).as_object().cloned())
        .await
        .unwrap();
    assert_eq!(result_text(&r), "ok");
    conn.close().await;
}

#[tokio::test]
async fn registrations_are_reused_per_issuer_and_never_across_servers() {
    let a = testbed(|_| {}).await;
    let b = testbed(|_| {}).await;
    let regs = Arc::new(MemoryRegistrations::default());
    let auth = authorizer_with(follow(), regs.clone());
    let g1 = auth
        .authorize(&url(&a), &challenge(&a).await, None)
        .await
        .unwrap();
    let g2 = auth
        .authorize(&url(&a), &challenge(&a).await, None)
        .await
        .unwrap();
    assert_eq!(g1.client.client_id, g2.client.client_id);
    assert_eq!(a.stats().registrations, 1);
    let g3 = auth
        .authorize(&url(&b), &challenge(&b).await, None)
        .await
        .unwrap();
    assert_ne!(
        g3.client.client_id, g1.client.client_id,
        "a new authorization server means a new registration"
    );
    assert_eq!(b.stats().registrations, 1);
    assert!(
        regs.load(a.issuer()).await.unwrap().is_some()
            && regs.load(b.issuer()).await.unwrap().is_some()
    );
}

#[tokio::test]
async fn a_registration_whose_redirects_are_all_taken_is_made_again() {
    let tb = testbed(|_| {}).await;
    let regs = Arc::new(MemoryRegistrations::default());
    let auth = authorizer_with(follow(), regs.clone());
    let g1 = auth
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    // Another program now holds every loopback port the registration names: its
    // redirect URIs cannot be served, so the next flow registers a client of its own.
    let stored = regs.load(tb.issuer()).await.unwrap().unwrap();
    let mut held = Vec::new();
    for uri in &stored.redirect_uris {
        let port = url::Url::parse(uri).unwrap().port().unwrap();
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        stored.redirect_uris.len(),
        "every port of {:?} could be taken",
        stored.redirect_uris
    );
    let g2 = auth
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_ne!(g2.client.client_id, g1.client.client_id);
    assert_eq!(tb.stats().registrations, 2);
    let again = regs.load(tb.issuer()).await.unwrap().unwrap();
    assert_eq!(again.client_id, g2.client.client_id, "the new one is kept");
    drop(held);
}

#[tokio::test]
async fn a_dynamic_client_refused_with_invalid_client_is_registered_again_once() {
    let tb = testbed(|_| {}).await;
    let u = url(&tb);
    // A fixed callback port, so the stored registration's redirect matches (the stable
    // per-server port may be taken by another test running beside this one).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://127.0.0.1:{port}/callback");
    // A confidential registration, then forget its secret: the token endpoint will
    // answer invalid_client.
    let reg: serde_json::Value = reqwest::Client::new()
        .post(tb.endpoint_url("register"))
        .json(&json!({"redirect_uris": [redirect], "token_endpoint_auth_method": "client_secret_basic",
                      "grant_types": ["authorization_code", "refresh_token"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let regs = Arc::new(MemoryRegistrations::default());
    regs.save(&StoredRegistration {
        issuer: tb.issuer().to_owned(),
        client_id: reg["client_id"].as_str().unwrap().to_owned(),
        client_secret: Some(ClientSecret::new("not-the-secret".into())),
        auth_method: AuthMethod::ClientSecretBasic,
        redirect_uris: vec![redirect],
        kind: RegistrationKind::Dynamic,
        extras: Default::default(),
    })
    .await
    .unwrap();
    let grant = authorizer_with(
        AuthOptions {
            callback_port: Some(port),
            ..follow()
        },
        regs.clone(),
    )
    .authorize(&u, &challenge(&tb).await, None)
    .await
    .unwrap();
    let stats = tb.stats();
    assert_eq!(
        stats
            .token_log
            .iter()
            .filter(|t| t.outcome == "invalid_client")
            .count(),
        1
    );
    assert_eq!(stats.registrations, 2, "the test's, then keyway's new one");
    assert_ne!(grant.client.client_id, reg["client_id"].as_str().unwrap());
}

#[tokio::test]
async fn preregistered_clients_use_their_auth_method() {
    for (method, expect) in [
        (TokenAuthMethod::ClientSecretBasic, "client_secret_basic"),
        (TokenAuthMethod::ClientSecretPost, "client_secret_post"),
    ] {
        let tb = testbed(|k| {
            k.no_dcr = true;
            k.token_auth_methods = vec![method];
            k.clients = vec![ClientSpec::confidential("pre", "s3cret", method)];
        })
        .await;
        let mut opts = follow();
        opts.client = ClientOptions {
            client_id: Some("pre".into()),
            client_secret: Some(Secret::new("s3cret")),
            ..Default::default()
        };
        let grant = authorizer(opts)
            .authorize(&url(&tb), &challenge(&tb).await, None)
            .await
            .unwrap();
        assert_eq!(grant.client.kind, RegistrationKind::Preregistered);
        assert_eq!(tb.stats().token_log.back().unwrap().client_auth, expect);
        assert_eq!(tb.stats().registrations, 0);
    }
}

#[tokio::test]
async fn no_way_to_register_is_a_clear_error() {
    let tb = testbed(|k| k.no_dcr = true).await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, keyway::auth::AuthError::NoRegistration { .. }),
        "{err}"
    );
    assert_eq!(tb.stats().endpoint(keyway_testbed::Endpoint::Authorize), 0);
}

#[tokio::test]
async fn client_id_metadata_documents_when_the_server_takes_them() {
    let tb = testbed(|k| k.cimd = true).await;
    let mut opts = follow();
    opts.client.client_metadata_url = Some("https://keyway.example/client.json".into());
    let grant = authorizer(opts)
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.client.client_id, "https://keyway.example/client.json");
    assert_eq!(tb.stats().registrations, 0);
    assert_eq!(
        tb.stats().authorize_log.back().unwrap().client_id,
        "https://keyway.example/client.json"
    );
}

#[tokio::test]
async fn device_grant() {
    let tb = testbed(|k| {
        k.device_interval = 0;
        k.device_pending_polls = 2;
    })
    .await;
    let mut opts = follow();
    opts.grant = GrantChoice::Device;
    let grant = authorizer(opts)
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(tb.stats().device_grants, 1);
    assert_eq!(grant.resource, tb.resource());
    let polls = tb
        .stats()
        .token_log
        .iter()
        .filter(|t| t.outcome == "authorization_pending")
        .count();
    assert_eq!(polls, 2);
}

#[tokio::test]
async fn client_credentials_with_a_secret() {
    let tb = testbed(|k| {
        k.clients = vec![ClientSpec::confidential(
            "m2m",
            "sec",
            TokenAuthMethod::ClientSecretBasic,
        )]
    })
    .await;
    let mut opts = follow();
    opts.grant = GrantChoice::ClientCredentials;
    opts.client = ClientOptions {
        client_id: Some("m2m".into()),
        client_secret: Some(Secret::new("sec")),
        ..Default::default()
    };
    let grant = authorizer(opts)
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert!(grant.refresh_token.is_none());
    let seen = tb.stats().token_log.back().cloned().unwrap();
    assert_eq!(
        (seen.grant_type.as_str(), seen.resource.as_deref()),
        ("client_credentials", Some(tb.resource()))
    );
}

#[tokio::test]
async fn refresh_rotates_keeps_the_old_token_when_none_comes_and_reports_invalid_grant() {
    let tb = testbed(|_| {}).await;
    let g1 = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let g2 = refresh(&g1, SystemTime::now()).await.unwrap();
    assert_ne!(
        g2.refresh_token.as_ref().unwrap().secret(),
        g1.refresh_token.as_ref().unwrap().secret()
    );
    assert_eq!(
        tb.stats().token_log.back().unwrap().resource.as_deref(),
        Some(tb.resource()),
        "resource on refresh"
    );
    // The rotated-out token is dead (and reusing it revokes the family): invalid_grant.
    assert!(matches!(
        refresh(&g1, SystemTime::now()).await,
        Err(RefreshError::Rejected(_))
    ));

    let tb = testbed(|k| k.omit_refresh_token_on_refresh = true).await;
    let g1 = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let g2 = refresh(&g1, SystemTime::now()).await.unwrap();
    assert_eq!(
        g2.refresh_token.as_ref().unwrap().secret(),
        g1.refresh_token.as_ref().unwrap().secret()
    );
    assert!(g2.expires_at.unwrap() > SystemTime::now());
}

#[tokio::test]
async fn step_up_asks_for_the_union_of_scopes() {
    let tb = testbed(|_| {}).await;
    let auth = authorizer(follow());
    let g1 = auth
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let forbidden = r#"Bearer error="insufficient_scope", scope="mcp:admin""#.to_owned();
    let g2 = auth
        .authorize(&url(&tb), &[forbidden], Some(&g1.requested_scopes))
        .await
        .unwrap();
    assert_eq!(
        g2.requested_scopes,
        ["mcp:tools", "offline_access", "mcp:admin"]
    );
    assert_eq!(
        tb.stats().authorize_log.back().unwrap().scope.as_deref(),
        Some("mcp:tools offline_access mcp:admin")
    );
}
