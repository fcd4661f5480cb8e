//! Servers, credentials, registrations, leases, pending flows.

use std::time::{Duration, SystemTime};

use keyway::{
    Secret,
    auth::{AuthMethod, RegistrationKind, RegistrationStore, StoredRegistration},
    store::{
        AuthKind, Credential, LastStatus, NewServer, OAuthCredential, Store, StoreError, Transport,
    },
};
use oauth2::{AccessToken, ClientSecret, RefreshToken};

use crate::open;

fn server(id: &str, name: &str) -> NewServer {
    NewServer {
        id: id.into(),
        name: name.into(),
        url: format!("https://{name}.example/mcp"),
        transport: Transport::Http,
        auth: AuthKind::Oauth,
        headers: vec![],
    }
}

pub fn oauth(at: &str, rt: Option<&str>) -> Credential {
    Credential::OAuth(Box::new(OAuthCredential {
        access_token: AccessToken::new(at.into()),
        refresh_token: rt.map(|r| RefreshToken::new(r.into())),
        expires_at: Some(SystemTime::now() + Duration::from_secs(3600)),
        issued_at: SystemTime::now(),
        scopes: vec!["a".into(), "b".into()],
        issuer: "https://as.example".into(),
        token_endpoint: "https://as.example/token".into(),
        client_id: "c".into(),
        resource: "https://one.example/mcp".into(),
        as_metadata: None,
        token_type: Default::default(),
        dpop: None,
        quirks: Default::default(),
    }))
}

#[tokio::test]
async fn servers_are_created_with_their_credential_listed_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let rec = store
        .create_server(&server("id1", "one"), Some(&oauth("at1", Some("rt1"))))
        .await
        .unwrap();
    assert_eq!(
        (rec.name.as_str(), rec.enabled, rec.auth),
        ("one", true, AuthKind::Oauth)
    );
    // A retried add with the same id returns the same record, no duplicate.
    let again = store
        .create_server(&server("id1", "one"), None)
        .await
        .unwrap();
    assert_eq!(again.id, "id1");
    assert_eq!(store.servers().await.unwrap().len(), 1);
    // Another id with the same name is refused.
    assert!(matches!(
        store.create_server(&server("id2", "one"), None).await,
        Err(StoreError::NameTaken(_))
    ));

    let c = store.credential("id1").await.unwrap().unwrap();
    assert_eq!(c.version, 1);
    let Credential::OAuth(o) = c.credential else {
        panic!()
    };
    assert_eq!(
        (o.access_token.secret().as_str(), o.scopes.len()),
        ("at1", 2)
    );

    store.set_enabled("id1", false).await.unwrap();
    store
        .set_status("id1", LastStatus::NeedsAuth, Some("401"))
        .await
        .unwrap();
    let r = store.server("one").await.unwrap().unwrap();
    assert!(!r.enabled);
    assert_eq!(r.last_status, Some(LastStatus::NeedsAuth));

    store.remove_server("id1").await.unwrap();
    assert!(store.server("one").await.unwrap().is_none());
    assert!(
        store.credential("id1").await.unwrap().is_none(),
        "removing deletes the credential too"
    );
    // The name is free again.
    store
        .create_server(&server("id3", "one"), None)
        .await
        .unwrap();
    assert!(matches!(
        store.remove_server("nope").await,
        Err(StoreError::NoSuchServer(_))
    ));
}

#[tokio::test]
async fn credential_writes_compare_and_swap_on_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store
        .create_server(&server("id1", "one"), Some(&oauth("at1", Some("rt1"))))
        .await
        .unwrap();
    assert_eq!(
        store
            .save_credential("id1", &oauth("at2", Some("rt2")), Some(1))
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        store
            .save_credential("id1", &oauth("at3", None), Some(1))
            .await,
        Err(StoreError::Conflict)
    ));
    let Credential::OAuth(o) = store.credential("id1").await.unwrap().unwrap().credential else {
        panic!()
    };
    assert_eq!(
        o.access_token.secret(),
        "at2",
        "the losing write changed nothing"
    );
    assert!(matches!(
        store
            .save_credential("ghost", &oauth("x", None), None)
            .await,
        Err(StoreError::NoSuchServer(_))
    ));
}

#[tokio::test]
async fn registrations_are_kept_per_issuer_with_sealed_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
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
    let back = store.load("https://as.example").await.unwrap().unwrap();
    assert_eq!(back.client_secret.unwrap().secret(), "registration-secret");
    assert_eq!(back.redirect_uris, r.redirect_uris);
    assert!(store.load("https://other.example").await.unwrap().is_none());
    store.forget("https://as.example").await.unwrap();
    assert!(store.load("https://as.example").await.unwrap().is_none());
    let raw = std::fs::read(dir.path().join("keyway.db")).unwrap();
    let wal = std::fs::read(dir.path().join("keyway.db-wal")).unwrap_or_default();
    assert!(!String::from_utf8_lossy(&[raw, wal].concat()).contains("registration-secret"));
}

#[tokio::test]
async fn leases_have_one_holder_until_released_or_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(dir.path()).unwrap();
    let b = open(dir.path()).unwrap();
    let ttl = Duration::from_secs(30);
    assert!(a.try_lease("k", "a", ttl).await.unwrap());
    assert!(!b.try_lease("k", "b", ttl).await.unwrap());
    assert!(
        a.try_lease("k", "a", ttl).await.unwrap(),
        "the holder may renew"
    );
    a.release_lease("k", "a").await.unwrap();
    assert!(b.try_lease("k", "b", ttl).await.unwrap());
    assert!(!a.try_lease("k", "a", ttl).await.unwrap());
    // Dropping a handle (as a dying process does) releases what it held.
    drop(b);
    assert!(a.try_lease("k", "a", ttl).await.unwrap());
}

#[tokio::test]
async fn pending_flows_are_sealed_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    store
        .save_pending_flow(
            "state-abc",
            Some("id1"),
            "https://as.example",
            b"verifier-secret",
        )
        .await
        .unwrap();
    assert_eq!(
        store.load_pending_flow("state-abc").await.unwrap().unwrap(),
        b"verifier-secret"
    );
    assert!(
        store
            .load_pending_flow("state-other")
            .await
            .unwrap()
            .is_none()
    );
    let list = store.pending_flows().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].server_id.as_deref(), Some("id1"));
    store.delete_pending_flow("state-abc").await.unwrap();
    assert!(store.pending_flows().await.unwrap().is_empty());
    let _ = Secret::new("x");
}

#[tokio::test]
async fn a_flow_is_pending_while_it_waits_for_its_callback() {
    use std::sync::{Arc, Mutex};

    use futures::future::BoxFuture;
    use keyway::auth::{AuthOptions, Authorizer, BrowserMode, Opener, Silent};

    #[derive(Debug)]
    struct Peek(keyway::store::SqliteStore, Arc<Mutex<usize>>);
    impl Opener for Peek {
        fn open<'a>(
            &'a self,
            url: &'a url::Url,
        ) -> BoxFuture<'a, Result<(), keyway::auth::BrowserError>> {
            Box::pin(async move {
                *self.1.lock().unwrap() = self.0.pending_flows().await.unwrap().len();
                let c = reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .unwrap();
                let back = c.get(url.as_str()).send().await.unwrap().headers()["location"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                reqwest::get(back).await.map_err(|e| e.to_string())?;
                Ok(())
            })
        }
    }

    let tb = keyway_testbed::Testbed::start(keyway_testbed::Knobs::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let seen = Arc::new(Mutex::new(0));
    let opts = AuthOptions {
        browser: BrowserMode::System,
        opener: Some(Arc::new(Peek(store.clone(), seen.clone()))),
        ..AuthOptions::default()
    };
    let auth = Authorizer::new(opts, Arc::new(store.clone()), Arc::new(Silent))
        .unwrap()
        .with_pending_flows(Arc::new(store.clone()));
    let r = reqwest::Client::new()
        .post(tb.mcp_url())
        .body("{}")
        .send()
        .await
        .unwrap();
    let challenge: Vec<String> = r
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().into())
        .collect();
    auth.authorize(&url::Url::parse(tb.mcp_url()).unwrap(), &challenge, None)
        .await
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        1,
        "recorded before the browser opened"
    );
    assert!(
        store.pending_flows().await.unwrap().is_empty(),
        "forgotten once done"
    );
    // The verifier is sealed in the file.
    let raw = std::fs::read(dir.path().join("keyway.db")).unwrap();
    let wal = std::fs::read(dir.path().join("keyway.db-wal")).unwrap_or_default();
    let all = [raw, wal].concat();
    for s in tb.secrets() {
        assert!(!all.windows(s.len()).any(|w| w == s.as_bytes()));
    }
}

#[tokio::test]
async fn a_dpop_bound_credential_keeps_its_key_sealed_with_it() {
    use keyway::auth::{dpop::DpopKey, token::TokenType};
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let key = std::sync::Arc::new(DpopKey::generate().unwrap());
    let Credential::OAuth(mut o) = oauth("bound-at", Some("bound-rt")) else {
        unreachable!()
    };
    o.token_type = TokenType::Dpop;
    o.dpop = Some(key.clone());
    store
        .create_server(&server("id1", "one"), Some(&Credential::OAuth(o)))
        .await
        .unwrap();
    let Credential::OAuth(back) = store.credential("id1").await.unwrap().unwrap().credential else {
        panic!("an OAuth credential was stored")
    };
    assert_eq!(back.token_type, TokenType::Dpop);
    assert_eq!(
        back.dpop.as_ref().map(|k| k.thumbprint().to_owned()),
        Some(key.thumbprint().to_owned())
    );
    // The private key is in no column in the clear, nor is the token type (a Bearer
    // downgrade by editing the file is impossible: it is sealed with the token).
    drop(store);
    // The database and its write-ahead log, whichever holds the rows now.
    let mut raw = std::fs::read(dir.path().join("keyway.db")).unwrap();
    raw.extend(std::fs::read(dir.path().join("keyway.db-wal")).unwrap_or_default());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.pkcs8());
    let hay = String::from_utf8_lossy(&raw);
    assert!(
        !hay.contains(&b64[..40]),
        "the DPoP key is stored in the clear"
    );
    assert!(!hay.contains("DPoP"));
    assert!(
        !raw.windows(key.pkcs8().len()).any(|w| w == key.pkcs8()),
        "the DPoP key's DER is stored in the clear"
    );
}

/// A per-person server's tokens, each person's apart: what a team gateway keeps
/// (shared by the SQLite and Postgres tests).
pub async fn people_keep_their_own_tokens(store: &dyn Store) {
    use keyway::store::Person;
    let person = |s: &str| Person {
        issuer: "https://org.example".into(),
        subject: s.into(),
    };
    let (alice, bob) = (person("alice"), person("bob"));
    store
        .create_server(&server("pp", "github"), Some(&oauth("shared", None)))
        .await
        .unwrap();
    assert!(!store.server("pp").await.unwrap().unwrap().per_person);
    store.set_per_person("pp", true).await.unwrap();
    assert!(store.server("pp").await.unwrap().unwrap().per_person);

    assert!(
        store
            .person_credential("pp", &alice)
            .await
            .unwrap()
            .is_none()
    );
    let v = store
        .save_person_credential("pp", &alice, &oauth("alice-at", Some("alice-rt")), None)
        .await
        .unwrap();
    assert_eq!(v, 1);
    store
        .save_person_credential("pp", &bob, &oauth("bob-at", None), None)
        .await
        .unwrap();
    let token = |c: &Credential| match c {
        Credential::OAuth(o) => o.access_token.secret().clone(),
        Credential::Bearer { token } => token.expose().to_owned(),
    };
    let read = store
        .person_credential("pp", &alice)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (token(&read.credential), read.version),
        ("alice-at".into(), 1)
    );
    let read = store.person_credential("pp", &bob).await.unwrap().unwrap();
    assert_eq!(token(&read.credential), "bob-at");
    // The server's own credential is apart from theirs.
    let own = store.credential("pp").await.unwrap().unwrap();
    assert_eq!(token(&own.credential), "shared");

    // Compare-and-swap, as the server's own.
    assert!(matches!(
        store
            .save_person_credential("pp", &alice, &oauth("stale", None), Some(7))
            .await,
        Err(StoreError::Conflict)
    ));
    let v = store
        .save_person_credential("pp", &alice, &oauth("alice-2", None), Some(1))
        .await
        .unwrap();
    assert_eq!(v, 2);
    // Forgetting a version that is no longer stored does nothing.
    store
        .forget_person_credential("pp", &alice, Some(1))
        .await
        .unwrap();
    assert!(
        store
            .person_credential("pp", &alice)
            .await
            .unwrap()
            .is_some()
    );
    store
        .forget_person_credential("pp", &bob, None)
        .await
        .unwrap();
    assert!(store.person_credential("pp", &bob).await.unwrap().is_none());
    assert!(
        store
            .person_credential("pp", &alice)
            .await
            .unwrap()
            .is_some()
    );

    // A flow step is taken once.
    store
        .put_flow("link-secret", Some("pp"), "https://org.example", b"step")
        .await
        .unwrap();
    assert_eq!(
        store.take_flow("link-secret").await.unwrap().as_deref(),
        Some(&b"step"[..])
    );
    assert!(store.take_flow("link-secret").await.unwrap().is_none());

    // A removed server takes its people's tokens with it.
    store.remove_server("pp").await.unwrap();
    assert!(
        store
            .person_credential("pp", &alice)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn people_keep_their_own_tokens_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    people_keep_their_own_tokens(&store).await;
}
