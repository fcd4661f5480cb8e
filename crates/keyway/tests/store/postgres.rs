//! The Postgres store on a real Postgres (`scripts/postgres`, one cluster per test
//! binary, a database per test): the same records and sealing as SQLite, and what
//! replicas sharing one database need (a credential's compare-and-swap and leases
//! across two store handles, as two replicas hold them).

use std::time::Duration;

use keyway::{
    Secret,
    auth::{AuthMethod, RegistrationKind, RegistrationStore, StoredRegistration},
    store::{
        AuthKind, Credential, NewServer, PgOptions, PostgresStore, ServerChange, Store, StoreError,
        Transport,
    },
};
use oauth2::ClientSecret;

use crate::{pg, records::oauth};

/// The team's store key (any 32 bytes, in hex), and another one.
const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// The store at `url`, opened with [`KEY`].
async fn open(url: &str) -> PostgresStore {
    PostgresStore::open(&Secret::new(url), PgOptions::with_key(Secret::new(KEY)))
        .await
        .expect("open the Postgres store")
}

fn server(id: &str, name: &str) -> NewServer {
    NewServer {
        id: id.into(),
        name: name.into(),
        url: format!("https://{name}.example/mcp"),
        transport: Transport::Http,
        auth: AuthKind::Oauth,
        headers: vec![("X-Api-Key".into(), Secret::new("header-secret"))],
    }
}

fn access_token(c: &Credential) -> String {
    match c {
        Credential::OAuth(o) => o.access_token.secret().clone(),
        Credential::Bearer { token } => token.expose().to_owned(),
    }
}

#[tokio::test]
async fn pg_servers_credentials_and_headers_round_trip() {
    let url = pg::cluster().fresh_database().await;
    let store = open(&url).await;

    let rec = store
        .create_server(&server("id1", "one"), Some(&oauth("at1", Some("rt1"))))
        .await
        .unwrap();
    assert_eq!((rec.name.as_str(), rec.enabled), ("one", true));
    assert_eq!(rec.header_names, ["X-Api-Key"]);
    // A retried add returns the same record; another id under the name is refused.
    assert_eq!(
        store
            .create_server(&server("id1", "one"), None)
            .await
            .unwrap(),
        rec
    );
    assert!(matches!(
        store.create_server(&server("id2", "one"), None).await,
        Err(StoreError::NameTaken(_))
    ));

    let stored = store.credential("id1").await.unwrap().unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(access_token(&stored.credential), "at1");
    let headers = store.headers("id1").await.unwrap();
    assert_eq!(headers[0].1.expose(), "header-secret");

    // The secrets are sealed in the database: not in any column as text.
    let db = pg::connect(&url).await;
    let dump: String = db
        .query_one(
            "SELECT string_agg(encode(sealed, 'escape') || coalesce(issuer, ''), ' ') FROM keyway.credentials",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!dump.contains("at1") && !dump.contains("rt1"), "{dump}");

    store.set_enabled("id1", false).await.unwrap();
    let renamed = store
        .update_server(
            "id1",
            &ServerChange {
                name: Some("uno".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((renamed.name.as_str(), renamed.enabled), ("uno", false));
    // A new URL takes the credential away and keeps the headers, sealed to it.
    store
        .update_server(
            "id1",
            &ServerChange {
                url: Some("https://moved.example/mcp".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(store.credential("id1").await.unwrap().is_none());
    assert_eq!(
        store.headers("id1").await.unwrap()[0].1.expose(),
        "header-secret"
    );

    store.remove_server("id1").await.unwrap();
    assert!(store.servers().await.unwrap().is_empty());
    assert!(matches!(
        store.remove_server("id1").await,
        Err(StoreError::NoSuchServer(_))
    ));
}

#[tokio::test]
async fn pg_two_replicas_share_the_records_and_take_turns_writing_a_credential() {
    let url = pg::cluster().fresh_database().await;
    let a = open(&url).await;
    let b = open(&url).await;
    a.create_server(&server("id1", "one"), Some(&oauth("at1", Some("rt1"))))
        .await
        .unwrap();
    assert_eq!(b.servers().await.unwrap()[0].name, "one");

    // 16 writers across the two replicas, all expecting version 1: one wins.
    let tries = (0..16).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .save_credential("id1", &oauth(&format!("at-{i}"), Some("rt")), Some(1))
                .await
        }
    });
    let results = futures::future::join_all(tries).await;
    let won: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(won.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::Conflict)))
    );
    assert_eq!(b.credential("id1").await.unwrap().unwrap().version, 2);
    // Without an expected version, writes queue behind each other: none lost.
    let writes = (0..10).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.save_credential("id1", &oauth("x", None), None).await }
    });
    for r in futures::future::join_all(writes).await {
        r.unwrap();
    }
    assert_eq!(a.credential("id1").await.unwrap().unwrap().version, 12);
}

#[tokio::test]
async fn pg_a_lease_is_held_by_one_replica_until_released_or_expired() {
    let url = pg::cluster().fresh_database().await;
    let a = open(&url).await;
    let b = open(&url).await;
    let long = Duration::from_secs(600);
    assert!(a.try_lease("refresh:one", "a", long).await.unwrap());
    assert!(!b.try_lease("refresh:one", "b", long).await.unwrap());
    // Its holder takes it again (and extends it).
    assert!(a.try_lease("refresh:one", "a", long).await.unwrap());
    // Only the holder releases it.
    b.release_lease("refresh:one", "b").await.unwrap();
    assert!(!b.try_lease("refresh:one", "b", long).await.unwrap());
    a.release_lease("refresh:one", "a").await.unwrap();
    assert!(b.try_lease("refresh:one", "b", long).await.unwrap());
    // A lease whose time is up (its holder died) is taken over; the clock is the
    // database's callers', and a zero lifetime is up at once.
    assert!(
        a.try_lease("refresh:two", "a", Duration::ZERO)
            .await
            .unwrap()
    );
    assert!(b.try_lease("refresh:two", "b", long).await.unwrap());
    assert!(!a.try_lease("refresh:two", "a", long).await.unwrap());
}

#[tokio::test]
async fn pg_registrations_and_pending_flows_round_trip() {
    let url = pg::cluster().fresh_database().await;
    let store = open(&url).await;
    let r = StoredRegistration {
        issuer: "https://as.example".into(),
        client_id: "cid".into(),
        client_secret: Some(ClientSecret::new("registration-secret".into())),
        auth_method: AuthMethod::ClientSecretBasic,
        redirect_uris: vec!["http://127.0.0.1:5000/callback".into()],
        kind: RegistrationKind::Dynamic,
        extras: Default::default(),
    };
    store.save(&r).await.unwrap();
    store.save(&r).await.unwrap();
    let back = store.load("https://as.example").await.unwrap().unwrap();
    assert_eq!(back.client_secret.unwrap().secret(), "registration-secret");
    assert_eq!(back.redirect_uris, r.redirect_uris);
    store.forget("https://as.example").await.unwrap();
    assert!(store.load("https://as.example").await.unwrap().is_none());

    store
        .save_pending_flow("state-1", Some("id1"), "https://as.example", b"flow data")
        .await
        .unwrap();
    assert_eq!(
        store.load_pending_flow("state-1").await.unwrap().as_deref(),
        Some(&b"flow data"[..])
    );
    assert_eq!(store.pending_flows().await.unwrap().len(), 1);
    store.delete_pending_flow("state-1").await.unwrap();
    assert!(store.load_pending_flow("state-1").await.unwrap().is_none());
}

#[tokio::test]
async fn pg_a_row_edited_outside_keyway_does_not_open_and_a_wrong_key_is_refused() {
    let url = pg::cluster().fresh_database().await;
    let store = open(&url).await;
    store
        .create_server(&server("id1", "one"), Some(&oauth("at1", Some("rt1"))))
        .await
        .unwrap();
    // Pointing the token endpoint elsewhere in the database: the credential is not used.
    let db = pg::connect(&url).await;
    db.execute(
        "UPDATE keyway.credentials SET token_endpoint = 'https://evil.example/token'",
        &[],
    )
    .await
    .unwrap();
    assert!(matches!(
        store.credential("id1").await,
        Err(StoreError::Unreadable { .. })
    ));

    // No key: refused. Another key: refused. The database is as it was.
    let mut no_key = PgOptions::with_key(Secret::new(KEY));
    no_key.key = None;
    let err = PostgresStore::open(&Secret::new(url.as_str()), no_key.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyMissing { .. }), "{err}");
    let err = PostgresStore::open(
        &Secret::new(url.as_str()),
        PgOptions::with_key(Secret::new(OTHER_KEY)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    // A new database is never given a key of keyway's making: it asks for one.
    let fresh = pg::cluster().fresh_database().await;
    let err = PostgresStore::open(&Secret::new(fresh.as_str()), no_key)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::KeyNeeded { .. }), "{err}");
    assert!(err.to_string().contains("KEYWAY_STORE_KEY"), "{err}");
    let servers: i64 = db
        .query_one("SELECT count(*) FROM keyway.servers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(servers, 1);
}

#[tokio::test]
async fn pg_the_database_password_is_never_shown() {
    let url = pg::cluster().fresh_database().await;
    let store = open(&url).await;
    let password = url::Url::parse(&url)
        .unwrap()
        .password()
        .unwrap()
        .to_owned();
    assert!(!format!("{store:?}").contains(&password));
    assert!(
        !store
            .describe()
            .path
            .display()
            .to_string()
            .contains(&password)
    );

    // A wrong password: the error says what failed, not the password tried.
    let mut wrong = url::Url::parse(&url).unwrap();
    wrong.set_password(Some("not-the-password-42")).unwrap();
    let err = PostgresStore::open(
        &Secret::new(wrong.as_str()),
        PgOptions::with_key(Secret::new(KEY)),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("cannot reach the database"), "{text}");
    assert!(!text.contains("not-the-password-42"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_one_refresh_across_replicas() {
    use std::sync::Arc;

    use keyway::store::tokens::StoredTokens;

    let url = pg::cluster().fresh_database().await;
    let a = open(&url).await;
    let tb = crate::refresh::authorized_in(|_| {}, a.clone(), Default::default()).await;
    // Another handle on the database stands for another replica.
    let b = open(&url).await;
    let sources = [
        StoredTokens::new(Arc::new(a.clone()), "srv"),
        StoredTokens::new(Arc::new(b), "srv"),
    ];
    let tasks = (0..16).map(|i| {
        let s = sources[i % 2].clone();
        tokio::spawn(async move { s.current().await.unwrap().unwrap() })
    });
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(access_token(&t.await.unwrap()));
    }
    tokens.dedup();
    assert_eq!(tokens.len(), 1, "everyone got the one new token");
    assert_eq!(tb.stats().refreshes, 1);
    assert_eq!(tb.stats().reuse_revocations, 0);
    assert_eq!(a.credential("srv").await.unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn pg_replicas_adding_one_name_at_once_make_one_server() {
    let url = pg::cluster().fresh_database().await;
    let (a, b) = (open(&url).await, open(&url).await);
    let adds = (0..8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            store
                .create_server(&server(&format!("id{i}"), "shared"), None)
                .await
        }
    });
    let results = futures::future::join_all(adds).await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| matches!(r, Err(StoreError::NameTaken(n)) if n == "shared")),
        "{results:?}"
    );
    assert_eq!(b.servers().await.unwrap().len(), 1);
}

#[tokio::test]
async fn pg_people_keep_their_own_tokens() {
    let url = pg::cluster().fresh_database().await;
    crate::records::people_keep_their_own_tokens(&open(&url).await).await;
}
