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

/// The `WWW-Authenticate` values of `tb`'s 401 to a request without a token.
async fn challenge_of(tb: &Testbed) -> Vec<String> {
    reqwest::Client::new()
        .post(tb.mcp_url())
        .body("{}")
        .send()
        .await
        .unwrap()
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().into())
        .collect()
}

async fn authorized(
    knobs: impl FnOnce(&mut Knobs),
    home: &std::path::Path,
) -> (Testbed, keyway::store::SqliteStore) {
    authorized_with(knobs, home, AuthOptions::default()).await
}

async fn authorized_with(
    knobs: impl FnOnce(&mut Knobs),
    home: &std::path::Path,
    opts: AuthOptions,
) -> (Testbed, keyway::store::SqliteStore) {
    let store = open(home).unwrap();
    let tb = authorized_in(knobs, store.clone(), opts).await;
    (tb, store)
}

/// A testbed, and `store` holding the server `srv` on it with a credential due for a
/// refresh (authorized through the testbed, as a person would).
pub async fn authorized_in<S>(
    knobs: impl FnOnce(&mut Knobs),
    store: S,
    opts: AuthOptions,
) -> Testbed
where
    S: Store + keyway::auth::RegistrationStore + Clone + 'static,
{
    let mut k = Knobs::default();
    knobs(&mut k);
    let tb = Testbed::start(k).await.unwrap();
    let opts = AuthOptions {
        browser: BrowserMode::Follow,
        ..opts
    };
    let auth = Authorizer::new(opts, Arc::new(store.clone()), Arc::new(Silent)).unwrap();
    let values = challenge_of(&tb).await;
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
    tb
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
    for s in &sources {
        s.counted_as("metrics-one-refresh");
    }
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
    let metrics = keyway::gateway::metrics::render();
    assert!(
        metrics.contains(
            r#"keyway_token_refreshes_total{server="metrics-one-refresh",outcome="ok"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_in_another_process_keeps_the_providers_quirks_and_the_dpop_key() {
    use keyway::auth::{
        profile::{Profile, ProfileChoice},
        token::TokenType,
    };
    let dir = tempfile::tempdir().unwrap();
    let opts = AuthOptions {
        profile: ProfileChoice::Named(Profile::named("entra").unwrap()),
        ..AuthOptions::default()
    };
    let (tb, store) = authorized_with(
        |k| {
            k.idp_quirks = Some(keyway_testbed::IdpQuirks::Entra);
            k.dpop = true;
        },
        dir.path(),
        opts,
    )
    .await;
    let Credential::OAuth(before) = store.credential("srv").await.unwrap().unwrap().credential
    else {
        panic!()
    };
    assert_eq!(before.token_type, TokenType::Dpop);
    // Another process: only the store to go on. Entra refuses a refresh without the
    // scopes, and a bound refresh token without a proof of its key.
    let other = StoredTokens::new(Arc::new(open(dir.path()).unwrap()), "srv");
    let Some(Credential::OAuth(after)) = other.current().await.unwrap() else {
        panic!("a refreshed OAuth credential")
    };
    assert_ne!(after.access_token.secret(), before.access_token.secret());
    assert_eq!(after.token_type, TokenType::Dpop);
    assert_eq!(
        after.dpop.as_ref().unwrap().thumbprint(),
        before.dpop.as_ref().unwrap().thumbprint()
    );
    assert_eq!(after.quirks, before.quirks);
    let stats = tb.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(stats.quirk_refusals, 0);
    assert!(
        stats
            .token_log
            .back()
            .unwrap()
            .scope
            .as_deref()
            .is_some_and(|s| s.contains("/mcp:tools")),
        "the qualified scopes went with the refresh"
    );
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
    source.counted_as("metrics-refused-refresh");
    // Not expired yet: the current token is still offered.
    assert!(source.current().await.unwrap().is_some());
    let metrics = keyway::gateway::metrics::render();
    assert!(
        metrics.contains(
            r#"keyway_token_refreshes_total{server="metrics-refused-refresh",outcome="rejected"} 1"#
        ),
        "{metrics}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_the_server_forgot_is_forgotten_too_and_registered_again() {
    use keyway::auth::RegistrationStore;
    let dir = tempfile::tempdir().unwrap();
    let (tb, store) = authorized(|_| {}, dir.path()).await;
    let registration = RegistrationStore::load(&store, tb.issuer())
        .await
        .unwrap()
        .unwrap();
    // The server forgets the client (deleted through RFC 7592, as its operator might).
    let m = registration
        .extras
        .management
        .clone()
        .expect("RFC 7592 fields");
    let deleted = reqwest::Client::new()
        .delete(&m.uri)
        .bearer_auth(m.token.expose())
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // The due refresh is answered invalid_client: the registration is forgotten here
    // too, and the server needs authorization (the old token still works a moment).
    let tokens = StoredTokens::new(Arc::new(store.clone()), "srv");
    let _ = tokens.current().await.unwrap();
    assert!(
        RegistrationStore::load(&store, tb.issuer())
            .await
            .unwrap()
            .is_none()
    );
    let rec = store.server("tb").await.unwrap().unwrap();
    assert_eq!(rec.last_status, Some(LastStatus::NeedsAuth));
    // The next authorization registers anew, without a person seeing an error page
    // for an unknown client.
    let auth = Authorizer::new(
        AuthOptions {
            browser: BrowserMode::Follow,
            ..AuthOptions::default()
        },
        Arc::new(store.clone()),
        Arc::new(Silent),
    )
    .unwrap();
    let challenge = challenge_of(&tb).await;
    let grant = auth
        .authorize(&url::Url::parse(tb.mcp_url()).unwrap(), &challenge, None)
        .await
        .unwrap();
    assert_ne!(grant.client.client_id, registration.client_id);
    assert_eq!(tb.stats().registrations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_key_jwt_client_refreshes_from_the_store_in_another_process() {
    use keyway::auth::{ClientOptions, SigningKey};
    let key = rcgen::KeyPair::generate().unwrap();
    let private = keyway::Secret::new(key.serialize_pem());
    let mut knobs = Knobs::default();
    knobs.no_dcr = true;
    knobs.clients = vec![keyway_testbed::ClientSpec::private_key_jwt(
        "signed",
        key.public_key_pem(),
    )];
    let tb = Testbed::start(knobs).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let auth = Authorizer::new(
        AuthOptions {
            browser: BrowserMode::Follow,
            client: ClientOptions {
                client_id: Some("signed".into()),
                private_key: Some(SigningKey::from_pem(&private, None).unwrap()),
                ..ClientOptions::default()
            },
            ..AuthOptions::default()
        },
        Arc::new(store.clone()),
        Arc::new(Silent),
    )
    .unwrap();
    let challenge = challenge_of(&tb).await;
    let grant = auth
        .authorize(&url::Url::parse(tb.mcp_url()).unwrap(), &challenge, None)
        .await
        .unwrap();
    assert_eq!(
        tb.stats().token_log.back().unwrap().client_auth,
        "private_key_jwt"
    );
    let server = NewServer {
        id: "srv".into(),
        name: "signed".into(),
        url: tb.mcp_url().into(),
        transport: Transport::Http,
        auth: AuthKind::Oauth,
        headers: vec![],
    };
    store.create_server(&server, None).await.unwrap();
    keyway::client::save_grant(&store.clone().into(), "srv", &grant)
        .await
        .unwrap();
    drop(store);
    // Another process, with only the store: it signs a new assertion with the key
    // sealed there.
    let other = StoredTokens::new(Arc::new(open(dir.path()).unwrap()), "srv");
    assert!(other.force_refresh().await.unwrap().is_some());
    let stats = tb.stats();
    assert_eq!(stats.refreshes, 1);
    assert_eq!(
        stats.token_log.back().unwrap().client_auth,
        "private_key_jwt"
    );
}
