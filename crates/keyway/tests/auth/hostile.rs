//! Hostile and broken servers: each ends in a clear error, and nothing (no
//! authorization request, no code, no token) goes where it should not.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures::FutureExt;
use keyway::{
    auth::{AuthError, OAuthTokens, ProblemCode, callback::Refusal},
    mcp::{ConnectError, Connection},
};
use keyway_testbed::{
    ClientSpec, Endpoint, EndpointFault, IssMode, PkceAdvertised, TokenAuthMethod,
};

use crate::harness::{
    ScriptedBrowser, authorizer, challenge, follow, http, location_of, testbed, url,
};

fn discovery_problem(err: &AuthError) -> ProblemCode {
    match err {
        AuthError::Discovery(report) => report.fatal().unwrap().code,
        other => panic!("expected a discovery error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_resource_of_another_origin_is_refused_before_any_authorization() {
    let tb = testbed(|k| k.prm_resource = Some("https://evil.example.com/mcp".into())).await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert_eq!(discovery_problem(&err), ProblemCode::ResourceMismatch);
    assert!(err.to_string().contains("evil.example.com"), "{err}");
    let s = tb.stats();
    assert_eq!(
        (
            s.endpoint(Endpoint::AsMetadata),
            s.endpoint(Endpoint::Authorize),
            s.registrations
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn an_issuer_mismatch_is_refused() {
    let tb = testbed(|k| k.issuer_override = Some("https://other-issuer.example".into())).await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert_eq!(discovery_problem(&err), ProblemCode::IssuerMismatch);
    assert_eq!(
        tb.stats().endpoint(Endpoint::Authorize) + tb.stats().registrations,
        0
    );
}

#[tokio::test]
async fn no_s256_means_no_flow() {
    for pkce in [PkceAdvertised::Absent, PkceAdvertised::PlainOnly] {
        let tb = testbed(|k| k.pkce = pkce).await;
        let err = authorizer(follow())
            .authorize(&url(&tb), &challenge(&tb).await, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::PkceUnsupported { .. }),
            "{pkce:?}: {err}"
        );
        assert_eq!(
            tb.stats().endpoint(Endpoint::Authorize) + tb.stats().registrations,
            0,
            "{pkce:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_missing_or_normalized_iss_stops_before_the_code_is_used() {
    for (mode, advertised) in [
        (IssMode::Wrong, true),
        (IssMode::Normalized, false),
        (IssMode::Absent, true),
    ] {
        let tb = testbed(|k| {
            k.iss = mode;
            k.no_iss_advertised = !advertised;
        })
        .await;
        let err = authorizer(follow())
            .authorize(&url(&tb), &challenge(&tb).await, None)
            .await
            .unwrap_err();
        let expected = if mode == IssMode::Absent {
            matches!(err, AuthError::Callback(Refusal::IssMissing))
        } else {
            matches!(err, AuthError::Callback(Refusal::IssMismatch { .. }))
        };
        assert!(expected, "{mode:?}: {err}");
        assert_eq!(
            tb.stats().endpoint(Endpoint::Token),
            0,
            "{mode:?}: the code was never exchanged"
        );
    }
}

#[tokio::test]
async fn dangerous_authorization_endpoints_are_never_opened() {
    for endpoint in [
        "javascript:alert(1)",
        "data:text/html,hi",
        "file:///etc/passwd",
        "http://as.example.com/authorize",
    ] {
        let tb = testbed(|k| k.authorization_endpoint_override = Some(endpoint.into())).await;
        let browser = ScriptedBrowser::new(|_| async { Ok(()) }.boxed());
        let err = authorizer(browser.options())
            .authorize(&url(&tb), &challenge(&tb).await, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, AuthError::InsecureUrl { .. }),
            "{endpoint}: {err}"
        );
        assert!(
            browser.opened().is_empty(),
            "{endpoint}: the browser was asked to open it"
        );
        assert_eq!(tb.stats().registrations, 0);
    }
}

#[tokio::test]
async fn a_forged_callback_is_ignored_and_the_real_one_completes() {
    let tb = testbed(|_| {}).await;
    let browser = ScriptedBrowser::new(|auth_url| {
        async move {
            let q: std::collections::HashMap<String, String> =
                auth_url.query_pairs().into_owned().collect();
            let redirect = &q["redirect_uri"];
            // An attacker's page fires a callback first, with its own code and state.
            let forged = reqwest::get(format!("{redirect}?code=evil&state=forged"))
                .await
                .map_err(|e| e.to_string())?;
            assert_eq!(forged.status(), 400);
            // Then the person approves for real.
            let back = location_of(auth_url.as_str()).await;
            reqwest::get(back).await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .boxed()
    });
    let grant = authorizer(browser.options())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.resource, tb.resource());
    assert_eq!(tb.stats().code_exchanges, 1);
}

#[tokio::test]
async fn a_callback_after_the_flow_is_refused() {
    let tb = testbed(|_| {}).await;
    let seen = Arc::new(std::sync::Mutex::new(None::<String>));
    let keep = seen.clone();
    let browser = ScriptedBrowser::new(move |auth_url| {
        let keep = keep.clone();
        async move {
            let back = location_of(auth_url.as_str()).await;
            *keep.lock().unwrap() = Some(back.clone());
            reqwest::get(back).await.map_err(|e| e.to_string())?;
            Ok(())
        }
        .boxed()
    });
    authorizer(browser.options())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let replay = seen.lock().unwrap().clone().unwrap();
    assert!(
        reqwest::get(replay).await.is_err(),
        "the listener is closed once the flow has its code"
    );
    assert_eq!(tb.stats().code_exchanges, 1);
}

#[tokio::test]
async fn a_token_for_server_a_is_never_sent_to_server_b_on_the_same_as() {
    // A runs the authorization server; B trusts it (introspection) for its own resource.
    let a = testbed(|k| {
        k.clients = vec![ClientSpec::confidential(
            "rs-b",
            "introspect",
            TokenAuthMethod::ClientSecretBasic,
        )]
    })
    .await;
    let (issuer, introspect) = (a.issuer().to_owned(), a.endpoint_url("introspect"));
    let b = testbed(move |k| {
        k.external_issuer = Some(issuer);
        k.introspection_url = Some(introspect);
        k.introspection_client = Some("id=rs-b,secret=introspect".parse().unwrap());
    })
    .await;
    let auth = authorizer(follow());
    let grant_a = auth
        .authorize(&url(&a), &challenge(&a).await, None)
        .await
        .unwrap();
    let tokens = OAuthTokens::new();
    tokens.set(grant_a).await;
    let err = Connection::open(b.mcp_url(), http(), tokens.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::AuthorizationRequired { .. }));
    assert_eq!(b.stats().mcp_requests_with_token, 0, "A's token reached B");

    // B, authorized on its own, gets a token bound to B that B accepts.
    let grant_b = auth
        .authorize(&url(&b), &challenge(&b).await, None)
        .await
        .unwrap();
    assert_eq!(grant_b.issuer, a.issuer());
    assert_eq!(grant_b.resource, b.resource());
    tokens.set(grant_b).await;
    let conn = Connection::open(b.mcp_url(), http(), tokens).await.unwrap();
    conn.close().await;
}

#[tokio::test]
async fn metadata_pointing_at_link_local_addresses_is_refused() {
    let tb = testbed(|k| k.prm_authorization_server = Some("http://169.254.169.254/latest".into()))
        .await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    let AuthError::Discovery(report) = &err else {
        panic!("{err}")
    };
    assert!(report.has(ProblemCode::InsecureUrl), "{report:?}");
}

#[tokio::test]
async fn oversized_and_failing_metadata_end_in_clear_errors() {
    let tb =
        testbed(|k| k.oversize = vec![EndpointFault::new(Endpoint::AsMetadata, 4 << 20)]).await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    let AuthError::Discovery(report) = &err else {
        panic!("{err}")
    };
    assert!(
        report.steps.iter().any(|s| s
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("larger than"))),
        "{report:?}"
    );

    let tb =
        testbed(|k| k.fail_nth = vec![EndpointFault::new(Endpoint::Token, 1).with_status(502)])
            .await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("502"), "{err}");
}

#[tokio::test]
async fn a_server_that_denies_is_reported_as_declined() {
    let tb = testbed(|k| k.deny = true).await;
    let err = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuthError::Callback(Refusal::Declined)),
        "{err}"
    );
    let _ = AtomicUsize::new(0).load(Ordering::Relaxed);
}

/// The testbed's metadata with `field` replaced by `value`.
async fn with_metadata(field: &str, value: &str) -> keyway_testbed::Testbed {
    let (field, value) = (field.to_owned(), value.to_owned());
    testbed(move |k| k.metadata_overrides = vec![(field, value)]).await
}

/// A server's metadata cannot aim keyway's dynamic registration at an address the
/// server itself is not on (here link-local, over plain http): the flow stops with a
/// refusal naming the endpoint, and nothing is sent there (before the fix, keyway
/// POSTed its registration to it and failed to connect).
#[tokio::test]
async fn a_registration_endpoint_the_url_rules_refuse_is_fatal_for_registration() {
    for endpoint in [
        "http://[fe80::1]:9/register",
        "https://[fe80::1]:9/register",
        "http://[::ffff:169.254.169.254]/register",
    ] {
        let tb = with_metadata("registration_endpoint", endpoint).await;
        let err = authorizer(follow())
            .authorize(&url(&tb), &challenge(&tb).await, None)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::InsecureUrl {
                    what: "registration_endpoint",
                    ..
                }
            ),
            "{endpoint}: {err}"
        );
        assert!(err.to_string().contains("registration_endpoint"), "{err}");
        assert_eq!(tb.stats().endpoint(Endpoint::Authorize), 0, "{endpoint}");
    }
}

/// A refused registration endpoint does not matter to a pre-registered client: the
/// refusal is fatal for the step that would use it, not for the whole server.
#[tokio::test]
async fn a_preregistered_client_does_not_need_the_refused_registration_endpoint() {
    let tb = testbed(|k| {
        k.metadata_overrides = vec![(
            "registration_endpoint".into(),
            "http://[fe80::1]:9/register".into(),
        )];
        k.clients = vec!["id=pre".parse().unwrap()];
    })
    .await;
    let mut options = follow();
    options.client.client_id = Some("pre".into());
    let grant = authorizer(options)
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.client.client_id, "pre");
}

/// The stored token endpoint is judged again at every refresh, by the rules of the
/// grant's resource: a public resource's refresh token never goes to a private,
/// loopback or link-local address, nor over plain http (before the fix, the refresh
/// was sent wherever the stored endpoint said).
#[tokio::test]
async fn a_refresh_checks_the_stored_token_endpoint_first() {
    let tb = testbed(|_| {}).await;
    let good = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    for (resource, endpoint) in [
        ("https://93.184.216.34/mcp", "https://10.0.0.1/token"),
        ("https://93.184.216.34/mcp", "https://127.0.0.1:9/token"),
        ("https://93.184.216.34/mcp", "https://169.254.169.254/token"),
        ("https://93.184.216.34/mcp", "http://93.184.216.35/token"),
        (tb.resource(), "http://[fe80::1]:9/token"),
    ] {
        let mut g = good.clone();
        g.resource = resource.to_owned();
        g.token_endpoint = endpoint.to_owned();
        let before = tb.stats().endpoint(Endpoint::Token);
        let err = keyway::auth::refresh(&g, std::time::SystemTime::now())
            .await
            .unwrap_err();
        assert!(
            matches!(err, keyway::auth::RefreshError::Refused(_)),
            "{endpoint}: {err}"
        );
        assert_eq!(tb.stats().endpoint(Endpoint::Token), before);
    }
}

/// Revocation sends the refresh token and the client's authentication: its endpoint
/// obeys the same rules (a link-local one is refused without a connection).
#[tokio::test]
async fn revocation_refuses_an_endpoint_the_rules_refuse() {
    let tb = testbed(|_| {}).await;
    let g = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let token = keyway::Secret::new(g.refresh_token.as_ref().unwrap().secret().clone());
    for endpoint in ["http://[fe80::1]:9/revoke", "file:///etc/passwd"] {
        let err = keyway::auth::token::revoke(
            &g.resource,
            endpoint,
            &g.issuer,
            &g.client,
            &token,
            "refresh_token",
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err,
                keyway::auth::token::TokenError::Refused {
                    what: "revocation_endpoint",
                    ..
                }
            ),
            "{endpoint}: {err}"
        );
    }
    // The testbed's own endpoint (loopback, like the server) is fine.
    keyway::auth::token::revoke(
        &g.resource,
        &tb.endpoint_url("revoke"),
        &g.issuer,
        &g.client,
        &token,
        "refresh_token",
    )
    .await
    .unwrap();
}
