//! keyway as a client against the testbed's hostile answers (`--hostile
//! ENDPOINT:KIND`): every one ends in a clear error, read within keyway's limits,
//! with nothing taken from it; redirects that loop or lead to private addresses
//! are not followed.

use std::{sync::Arc, time::Duration};

use keyway::{
    Secret,
    auth::{
        AuthError, AuthOptions, Authorizer, BrowserMode, MemoryRegistrations, Silent,
        discovery::ProblemCode,
    },
    mcp::{Connection, StaticToken},
};
use keyway_testbed::{Endpoint, HostileAnswer, HostileKind, Knobs, Testbed};
use url::Url;

async fn testbed(hostile: &[(Endpoint, HostileKind)], f: impl FnOnce(&mut Knobs)) -> Testbed {
    let mut k = Knobs::default();
    k.hostile = hostile
        .iter()
        .map(|(e, kind)| HostileAnswer::new(*e, kind.clone()))
        .collect();
    f(&mut k);
    Testbed::start(k).await.unwrap()
}

/// An authorization with everything approved at once, to the error it ends in;
/// bounded by a guard so a read that never ends fails the test instead of hanging it.
async fn authorize(tb: &Testbed) -> AuthError {
    let options = AuthOptions {
        browser: BrowserMode::Follow,
        callback_timeout: Duration::from_secs(20),
        ..AuthOptions::default()
    };
    let authorizer = Authorizer::new(
        options,
        Arc::new(MemoryRegistrations::default()),
        Arc::new(Silent),
    )
    .unwrap();
    let challenge = challenge(tb).await;
    let url = Url::parse(tb.mcp_url()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        authorizer.authorize(&url, &challenge, None),
    )
    .await
    .expect("the authorization ended")
    .expect_err("a hostile server gives no credentials")
}

async fn challenge(tb: &Testbed) -> Vec<String> {
    let r = reqwest::Client::new()
        .post(tb.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// What a person is shown: one line, printable, short.
fn clear(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    assert!(!text.chars().any(char::is_control), "{text:?}");
    assert!(text.len() < 1200, "{} bytes: {text}", text.len());
    text
}

/// The detail of every step discovery took.
fn steps(e: &AuthError) -> String {
    let AuthError::Discovery(report) = e else {
        panic!("not a discovery error: {e}")
    };
    report
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} {}: {}",
                s.purpose,
                s.outcome,
                s.detail.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn hostile_metadata_ends_discovery_with_what_was_wrong() {
    for (endpoint, kind, expected) in [
        (Endpoint::Prm, HostileKind::Endless, "larger than"),
        (Endpoint::AsMetadata, HostileKind::Endless, "larger than"),
        (Endpoint::AsMetadata, HostileKind::Deep, "recursion limit"),
        (Endpoint::AsMetadata, HostileKind::NotUtf8, "not JSON"),
        (
            Endpoint::AsMetadata,
            HostileKind::DuplicateKeys,
            "appears twice",
        ),
        (Endpoint::AsMetadata, HostileKind::CloseMidBody, "body"),
        (Endpoint::Prm, HostileKind::RedirectLoop, "redirects"),
    ] {
        let tb = testbed(&[(endpoint, kind.clone())], |_| {}).await;
        let e = authorize(&tb).await;
        clear(&e);
        let steps = steps(&e);
        assert!(
            steps.contains(expected),
            "{kind:?} at {endpoint:?}:\n{steps}"
        );
        assert_eq!(tb.stats().code_exchanges, 0);
    }
}

#[tokio::test]
async fn redirects_to_private_addresses_are_not_followed() {
    for target in [
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/.well-known/oauth-authorization-server",
        "http://127.0.0.1:9/x",
    ] {
        let tb = testbed(
            &[(Endpoint::AsMetadata, HostileKind::Redirect(target.into()))],
            |_| {},
        )
        .await;
        let e = authorize(&tb).await;
        let steps = steps(&e);
        assert!(steps.contains("not followed"), "{target}:\n{steps}");
        let AuthError::Discovery(report) = &e else {
            unreachable!()
        };
        assert!(
            report.has(ProblemCode::AuthServerMetadataMissing),
            "{report:?}"
        );
    }
}

#[tokio::test]
async fn hostile_token_and_registration_answers_are_clear_errors() {
    for (endpoint, kind, expected) in [
        (Endpoint::Token, HostileKind::Endless, "larger than"),
        // 200,000 bytes: past what keyway reads of a token answer.
        (Endpoint::Token, HostileKind::Deep, "larger than"),
        (Endpoint::Token, HostileKind::NotUtf8, "not valid JSON"),
        (Endpoint::Token, HostileKind::DuplicateKeys, "appears twice"),
        (Endpoint::Token, HostileKind::CloseMidBody, "token"),
        (Endpoint::Token, HostileKind::RedirectLoop, "307"),
        (Endpoint::Register, HostileKind::Endless, "larger than"),
        (
            Endpoint::Register,
            HostileKind::DuplicateKeys,
            "appears twice",
        ),
        (Endpoint::Register, HostileKind::NotUtf8, "not valid JSON"),
    ] {
        let tb = testbed(&[(endpoint, kind.clone())], |_| {}).await;
        let e = authorize(&tb).await;
        let text = clear(&e);
        assert!(text.contains(expected), "{kind:?} at {endpoint:?}: {text}");
        // A successful answer's text is never shown: it carries the secrets.
        assert!(
            !text.contains("tb_at_") && !text.contains("tb_rt_"),
            "{text}"
        );
    }
}

/// An open server (no authorization) whose MCP answers are hostile: each call
/// ends in a clear error within keyway's limits, and keyway is not left stuck.
#[tokio::test]
async fn hostile_mcp_answers_end_the_call_with_a_clear_error() {
    for (kind, expected) in [
        (HostileKind::Endless, "larger than"),
        (HostileKind::Deep, "recursion limit"),
        (HostileKind::NotUtf8, "not valid JSON-RPC"),
        (HostileKind::DuplicateKeys, "appears twice"),
        (HostileKind::CloseMidBody, "broke"),
        (HostileKind::RedirectLoop, "307"),
    ] {
        let tb = testbed(&[(Endpoint::Mcp, kind.clone())], |k| k.open = true).await;
        let http = keyway::http::WireClient::new(&Default::default()).unwrap();
        let token = Arc::new(StaticToken::new(Some(Secret::new("unused"))));
        let opened = tokio::time::timeout(
            Duration::from_secs(60),
            Connection::open(tb.mcp_url(), http, token),
        )
        .await
        .expect("the connection attempt ended");
        let e = match opened {
            Err(e) => e.to_string(),
            Ok(c) => {
                let called = tokio::time::timeout(Duration::from_secs(60), c.list_tools())
                    .await
                    .expect("the call ended");
                c.close().await;
                called
                    .expect_err("a hostile answer is no answer")
                    .to_string()
            }
        };
        let shown = clear(&e);
        eprintln!("{kind:?}: {shown}");
        assert!(shown.contains(expected), "{kind:?}: {shown}");
    }
}
