//! Refresh through the store: once across tasks and store handles (processes), the
//! old refresh token kept when none comes back, invalid_grant leaves the credential.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use keyway::{
    auth::{AuthOptions, Authorizer, BrowserMode, Silent},
    mcp::TokenSource,
    store::{
        AuthKind, Credential, LastStatus, NewServer, Store, Transport,
        tokens::{StoredTokens, credential_from_grant},
    },
};
use keyway_testbed::{Knobs, Testbed};

use crate::open;

async fn authorized(
    knobs: impl FnOnce(&mut Knobs),
    home: &std::path::Path,
) -> (Testbed, keyway::store::SqliteStore) {
    let mut k = Knobs::default();
    knobs(&mut k);
    let tb = Testbed::start(k).await.unwrap();
    let store = open(home).unwrap();
    let opts = AuthOptions {
        browser: BrowserMode::Follow,
        ..AuthOptions::default()
    };
    let auth = Authorizer::new(opts, Arc::new(store.clone()), Arc::new(Silent)).unwrap();
    let challenge = reqwest::Client::new()
        .post(tb.mcp_url())
        .body("{}")
        .send()
        .await
        .unwrap();
    let values: Vec<String> = challenge
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().into())
        .collect();
    let mut grant = auth
        .authorize(&url::Url::parse(tb.mcp_url()).unwrap(), &values, None)
        .await
        .unwrap();
    // Make the access token due for a refresh (it still works at the server).
    grant.issued_at = SystemTime::now() - Duration::from_secs(3500);
    grant.expires_at = Some(SystemTime::now() + Duration::from_secs(30));
    let c = Credential::OAuth(Box::new(credential_from_grant(&grant)));
    let server = NewServer {
        id: "srv".into(),
        name: "tb".into(),
        url: tb.mcp_url().into(),
        transport: Transport::Http,
        auth: AuthKind::Oauth,
        headers: vec![],
    };
    store.create_server(&server, Some(&c)).await.unwrap();
    (tb, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_refresh_across_tasks_and_store_handles() {
    let dir = tempfile::tempdir().unwrap();
    let (tb, store) = authorized(|_| {}, dir.path()).await;
    // Two handles on the same file stand for two processes.
    let other = open(dir.path()).unwrap();
    let sources = [
        StoredTokens::new(Arc::new(store.clone()), "srv"),
        StoredTokens::new(Arc::new(other), "srv"),
    ];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = sources[i % 2].clone();
        tasks.push(tokio::spawn(
            async move { s.current().await.unwrap().unwrap() },
        ));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        let Credential::OAuth(o) = t.await.unwrap() else {
            panic!()
        };
        tokens.push(o.access_token.secret().clone());
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "everyone got the one new token");
    let stats = tb.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.reuse_revocations, 0);
    assert_eq!(sources[0].refreshes() + sources[1].refreshes(), 1);
    assert_eq!(store.credential("srv").await.unwrap().unwrap().version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_source_reads_the_store_about_once_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let (_tb, store) = authorized(|_| {}, dir.path()).await;
    let source = StoredTokens::new(Arc::new(store.clone()), "srv");
    // Refreshed once (the helper stores a token due for it), then reused.
    source.current().await.unwrap().unwrap();
    let reads_before = source.store_reads();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let s = source.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let t = s.token("http://127.0.0.1:1/").await;
                assert!(t.is_ok());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let reads = source.store_reads() - reads_before;
    let bound = 1 + started.elapsed().as_secs();
    assert!(
        reads <= bound,
        "{reads} store reads for 3,200 requests in under {bound} s"
    );
    assert_eq!(source.refreshes(), 1);
}

#[tokio::test]
async fn a_token_another_process_renewed_is_taken_not_refreshed_again() {
    let dir = tempfile::tempdir().unwrap();
    let (tb, store) = authorized(|_| {}, dir.path()).await;
    let here = StoredTokens::new(Arc::new(store.clone()), "srv");
    let there = StoredTokens::new(Arc::new(open(dir.path()).unwrap()), "srv");
    let Some(Credential::OAuth(used)) = here.current().await.unwrap() else {
        panic!()
    };
    assert_eq!(tb.stats().refreshes, 1);
    // The other process refreshes (its server refused the token, say).
    there.force_refresh().await.unwrap().unwrap();
    assert_eq!(tb.stats().refreshes, 2);
    // Our token is refused too: the other process's new one is taken, no third refresh.
    assert!(here.renew().await.unwrap());
    assert_eq!(tb.stats().refreshes, 2);
    let Some(Credential::OAuth(now)) = here.current().await.unwrap() else {
        panic!()
    };
    assert_ne!(now.access_token.secret(), used.access_token.secret());
    let stored = store.credential("srv").await.unwrap().unwrap();
    let Credential::OAuth(stored) = stored.credential else {
        panic!()
    };
    assert_eq!(now.access_token.secret(), stored.access_token.secret());
}

#[tokio::test]
async fn the_old_refresh_token_stays_when_none_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let (_tb, store) = authorized(|k| k.omit_refresh_token_on_refresh = true, dir.path()).await;
    let Credential::OAuth(before) = store.credential("srv").await.unwrap().unwrap().credential
    else {
        panic!()
    };
    let source = StoredTokens::new(Arc::new(store.clone()), "srv");
    source.current().await.unwrap().unwrap();
    let Credential::OAuth(after) = store.credential("srv").await.unwrap().unwrap().credential
    else {
        panic!()
    };
    assert_ne!(after.access_token.secret(), before.access_token.secret());
    assert_eq!(
        after.refresh_token.unwrap().secret(),
        before.refresh_token.unwrap().secret()
    );
    assert!(
        after.expires_at.unwrap() > SystemTime::now(),
        "expiry recomputed, not left in the past"
    );
}

#[tokio::test]
async fn invalid_grant_leaves_the_credential_and_marks_needs_auth() {
    let dir = tempfile::tempdir().unwrap();
    let (tb, store) = authorized(|_| {}, dir.path()).await;
    // Revoke the grant at the server, behind keyway's back.
    let Credential::OAuth(o) = store.credential("srv").await.unwrap().unwrap().credential else {
        panic!()
    };
    let r = reqwest::Client::new()
        .post(tb.endpoint_url("revoke"))
        .form(&[
            ("token", o.refresh_token.as_ref().unwrap().secret().as_str()),
            ("client_id", o.client_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let source = StoredTokens::new(Arc::new(store.clone()), "srv");
    // Not expired yet: the current token is still offered.
    assert!(source.current().await.unwrap().is_some());
    let after = store.credential("srv").await.unwrap().unwrap();
    assert_eq!(after.version, 1, "the stored credential is unchanged");
    assert_eq!(
        store.server("srv").await.unwrap().unwrap().last_status,
        Some(LastStatus::NeedsAuth)
    );
}

#[tokio::test]
async fn rmcp_sees_the_store_through_its_own_traits() {
    use keyway::store::rmcp_adapter::{RmcpCredentials, RmcpStates};
    use rmcp::transport::auth::{CredentialStore, StateStore};

    let dir = tempfile::tempdir().unwrap();
    let (tb, store) = authorized(|_| {}, dir.path()).await;
    let a = RmcpCredentials::new(
        store.clone(),
        "srv",
        &tb.endpoint_url("token"),
        tb.resource(),
    );
    let loaded = a.load().await.unwrap().unwrap();
    assert_eq!(loaded.issuer.as_deref(), Some(tb.issuer()));
    // Saving what rmcp hands back keeps the binding and bumps the version.
    a.save(loaded.clone()).await.unwrap();
    let Credential::OAuth(o) = store.credential("srv").await.unwrap().unwrap().credential else {
        panic!()
    };
    assert_eq!(
        (o.resource.as_str(), o.issuer.as_str()),
        (tb.resource(), tb.issuer())
    );
    // The refresh guard is the cross-process lease: a second holder waits.
    let guard = a.acquire_refresh_guard().await.unwrap();
    assert!(guard.is_some());
    let other = open(dir.path()).unwrap();
    assert!(
        !other
            .try_lease("refresh:srv", "someone-else", Duration::from_secs(30))
            .await
            .unwrap()
    );
    drop(guard);
    let mut free = false;
    for _ in 0..200 {
        // The guard is released on a background task; give it its turn.
        tokio::task::yield_now().await;
        if other
            .try_lease("refresh:srv", "someone-else", Duration::from_secs(30))
            .await
            .unwrap()
        {
            free = true;
            break;
        }
    }
    assert!(free, "dropping the guard released the lease");

    let states = RmcpStates::new(store.clone(), tb.issuer());
    let state: rmcp::transport::auth::StoredAuthorizationState = serde_json::from_value(
        serde_json::json!({"pkce_verifier": "v", "csrf_token": "c", "created_at": 1}),
    )
    .unwrap();
    states.save("c", state).await.unwrap();
    assert_eq!(states.load("c").await.unwrap().unwrap().pkce_verifier, "v");
    states.delete("c").await.unwrap();
    assert!(states.load("c").await.unwrap().is_none());
}
