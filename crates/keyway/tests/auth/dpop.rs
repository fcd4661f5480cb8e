//! DPoP (RFC 9449) against the testbed's DPoP knobs: bound tokens, a fresh proof on
//! every request, nonces from both servers, a replay refused and recovered from,
//! and the servers that cannot or will not bind, each a clear error.

use std::time::SystemTime;

use keyway::{
    Secret,
    auth::{AuthError, AuthOptions, OAuthTokens, dpop::DpopMode, refresh, token::TokenType},
    mcp::{Connection, result_text},
};
use serde_json::json;

use crate::harness::{authorizer, challenge, follow, http, testbed, url};

fn with_dpop(mode: DpopMode) -> AuthOptions {
    AuthOptions {
        dpop: mode,
        ..follow()
    }
}

/// Three calls through a connection holding `tokens`.
async fn three_calls(mcp_url: &str, tokens: std::sync::Arc<OAuthTokens>) {
    let conn = Connection::open(mcp_url, http(), tokens).await.unwrap();
    for text in ["one", "two", "three"] {
        let r = conn
            .call_tool("echo", json!({ "text": text }).as_object().cloned())
            .await
            .unwrap();
        assert_eq!(result_text(&r), text);
    }
    conn.close().await;
}

#[tokio::test]
async fn an_advertising_server_gets_bound_tokens_and_a_proof_with_every_request() {
    let tb = testbed(|k| k.dpop = true).await;
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.token_type, TokenType::Dpop, "auto binds when offered");
    let key = grant.dpop.clone().expect("a DPoP key");
    let stats = tb.stats();
    assert_eq!(stats.dpop_bound_tokens_issued, 1);
    assert_eq!(
        stats.authorize_log.back().unwrap().dpop_jkt.as_deref(),
        Some(key.thumbprint()),
        "the code is bound to the key that redeems it (dpop_jkt)"
    );

    let tokens = OAuthTokens::new();
    tokens.set(grant.clone()).await;
    let before = tb.stats().dpop_proofs_accepted;
    three_calls(tb.mcp_url(), tokens).await;
    let stats = tb.stats();
    assert!(
        stats.dpop_proofs_accepted >= before + 4,
        "handshake and three calls, each with its own proof: {} accepted",
        stats.dpop_proofs_accepted - before
    );
    assert_eq!(stats.dpop_proofs_refused, 0);

    // A stolen copy is useless as Bearer.
    let stolen = reqwest::Client::new()
        .post(tb.mcp_url())
        .bearer_auth(grant.access_token.secret())
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stolen.status(), 401);

    // The refresh proves the same key and stays bound.
    let fresh = refresh(&grant, SystemTime::now()).await.unwrap();
    assert_eq!(fresh.token_type, TokenType::Dpop);
    assert_eq!(
        fresh.dpop.as_ref().map(|k| k.thumbprint().to_owned()),
        Some(key.thumbprint().to_owned())
    );
    assert_eq!(tb.stats().dpop_bound_tokens_issued, 2);
}

#[tokio::test]
async fn nonces_are_taken_from_both_servers_even_as_they_rotate() {
    // The nonce rotates every 2 accepted proofs, so the MCP server asks again in the
    // middle of the session, and the previous one ages out.
    let tb = testbed(|k| {
        k.dpop_nonce = true;
        k.dpop_nonce_rotate = 2;
    })
    .await;
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.token_type, TokenType::Dpop);
    let challenges = tb.stats().dpop_nonce_challenges;
    assert!(challenges >= 1, "the token endpoint asked for its nonce");
    let tokens = OAuthTokens::new();
    tokens.set(grant.clone()).await;
    three_calls(tb.mcp_url(), tokens.clone()).await;
    three_calls(tb.mcp_url(), tokens).await;
    let stats = tb.stats();
    assert!(
        stats.dpop_nonce_challenges > challenges,
        "the MCP server asked too"
    );
    assert_eq!(stats.dpop_proofs_refused, 0);
    // A refresh after rotations: the token endpoint's latest nonce is used or fetched.
    tb.rotate_dpop_nonce();
    tb.rotate_dpop_nonce();
    let fresh = refresh(&grant, SystemTime::now()).await.unwrap();
    assert_eq!(fresh.token_type, TokenType::Dpop);
}

#[tokio::test]
async fn a_proof_refused_as_replayed_is_followed_by_a_fresh_one() {
    // With nonces too: the first request is refused for want of the nonce, its retry
    // as replayed; each refusal earns its own retry.
    let tb = testbed(|k| {
        k.dpop_spurious_replays = 1;
        k.dpop_nonce = true;
    })
    .await;
    let grant = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    let tokens = OAuthTokens::new();
    tokens.set(grant.clone()).await;
    three_calls(tb.mcp_url(), tokens).await;
    assert_eq!(tb.stats().dpop_replays_refused, 1);

    // A real replay: the same proof twice. The second is refused.
    let key = grant.dpop.clone().unwrap();
    let target = url::Url::parse(tb.mcp_url()).unwrap();
    let token = Secret::new(grant.access_token.secret().as_str());
    let nonce = tb.dpop_nonce();
    let proof = key
        .proof(
            "POST",
            &target,
            Some(&token),
            nonce.as_deref(),
            SystemTime::now(),
        )
        .unwrap();
    let send = || {
        reqwest::Client::new()
            .post(tb.mcp_url())
            .header("authorization", format!("DPoP {}", token.expose()))
            .header("dpop", proof.expose())
            .header("accept", "application/json, text/event-stream")
            .json(&json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}
            }))
            .send()
    };
    assert!(send().await.unwrap().status().is_success());
    let replayed = send().await.unwrap();
    assert_eq!(replayed.status(), 401);
    assert_eq!(tb.stats().dpop_replays_refused, 2);
}

#[tokio::test]
async fn servers_that_cannot_bind_end_in_a_clear_error() {
    // An authorization server that advertises DPoP and refuses every proof.
    let tb = testbed(|k| k.dpop_refuse_proofs = true).await;
    let e = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AuthError::Token(t) if t.code() == Some("invalid_dpop_proof")),
        "{e}"
    );

    // A token endpoint in a nonce loop: one retry with the nonce it gave, then a
    // sentence, not a loop.
    let tb = testbed(|k| k.dpop_nonce_loop = true).await;
    let e = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("asked for a new DPoP nonce again after keyway used the one it gave"),
        "{e}"
    );
    assert_eq!(
        tb.stats().dpop_nonce_challenges,
        2,
        "the first try and one retry"
    );

    // An MCP server that takes only DPoP behind an authorization server that issues
    // Bearer tokens: no loop, a sentence.
    let tb = testbed(|k| k.dpop_resource_only = true).await;
    let e = authorizer(follow())
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            AuthError::BearerIssued {
                resource_demands: true,
                ..
            }
        ),
        "{e}"
    );
    // ... and with DPoP turned off, before anything is sent to the token endpoint.
    let exchanges = tb.stats().code_exchanges;
    let e = authorizer(with_dpop(DpopMode::Never))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            AuthError::DpopUnusable(keyway::auth::dpop::Unusable::TurnedOff)
        ),
        "{e}"
    );
    assert_eq!(tb.stats().code_exchanges, exchanges);

    // `always` against a server that ignores proofs and issues Bearer tokens.
    let tb = testbed(|_| {}).await;
    let e = authorizer(with_dpop(DpopMode::Always))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            AuthError::BearerIssued {
                resource_demands: false,
                ..
            }
        ),
        "{e}"
    );
    // `never` against an advertising server: Bearer, as asked.
    let tb = testbed(|k| k.dpop = true).await;
    let grant = authorizer(with_dpop(DpopMode::Never))
        .authorize(&url(&tb), &challenge(&tb).await, None)
        .await
        .unwrap();
    assert_eq!(grant.token_type, TokenType::Bearer);
    assert!(grant.dpop.is_none());
    assert_eq!(tb.stats().dpop_bound_tokens_issued, 0);
}
