//! A secret is bound to the columns that decide where it goes: a row edited outside
//! keyway (the server's URL, the token endpoint, the issuer...) makes its secret
//! unusable instead of sending it elsewhere. The other rows stay usable, and putting
//! the value back makes the secret usable again: nothing is lost.

use std::path::Path;

use keyway::{
    Secret,
    auth::{AuthMethod, RegistrationKind, RegistrationStore, StoredRegistration},
    store::{AuthKind, Credential, NewServer, OAuthCredential, Store, StoreError, Transport},
};
use oauth2::ClientSecret;

use crate::{open, records::oauth};

/// Two servers: `one` (a static token and a header) and `two` (OAuth tokens with the
/// server's metadata), and a registration with a secret.
async fn two_servers(home: &Path) {
    let store = open(home).unwrap();
    store
        .create_server(
            &NewServer {
                id: "s1".into(),
                name: "one".into(),
                url: "https://one.example/mcp".into(),
                transport: Transport::Http,
                auth: AuthKind::Token,
                headers: vec![("X-Api-Key".into(), Secret::new("header-secret"))],
            },
            Some(&Credential::Bearer {
                token: Secret::new("bearer-secret"),
            }),
        )
        .await
        .unwrap();
    let Credential::OAuth(mut o) = oauth("at-secret", Some("rt-secret")) else {
        unreachable!()
    };
    o.as_metadata = Some(
        serde_json::from_value(serde_json::json!({
            "issuer": "https://as.example",
            "token_endpoint": "https://as.example/token",
            "revocation_endpoint": "https://as.example/revoke",
        }))
        .unwrap(),
    );
    store
        .create_server(
            &NewServer {
                id: "s2".into(),
                name: "two".into(),
                url: "https://one.example/mcp".into(),
                transport: Transport::Http,
                auth: AuthKind::Oauth,
                headers: vec![],
            },
            Some(&Credential::OAuth(o)),
        )
        .await
        .unwrap();
    store
        .save(&StoredRegistration {
            issuer: "https://as.example".into(),
            client_id: "c".into(),
            client_secret: Some(ClientSecret::new("client-secret".into())),
            auth_method: AuthMethod::ClientSecretBasic,
            redirect_uris: vec!["http://127.0.0.1:1/callback".into()],
            kind: RegistrationKind::Dynamic,
            extras: Default::default(),
        })
        .await
        .unwrap();
}

fn sql(home: &Path, statement: &str) {
    let c = rusqlite::Connection::open(home.join("keyway.db")).unwrap();
    c.execute_batch(statement).unwrap();
}

/// What can still be read, by what it is.
async fn readable(home: &Path) -> [bool; 4] {
    let store = open(home).unwrap();
    let unreadable = |e: &StoreError| matches!(e, StoreError::Unreadable { .. });
    let one = store.credential("s1").await;
    let headers = store.headers("s1").await;
    let two = store.credential("s2").await;
    let reg = RegistrationStore::load(&store, "https://as.example").await;
    for e in [
        one.as_ref().err(),
        headers.as_ref().err(),
        two.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(unreadable(e), "{e}");
        // The message names the server and what to do, never a secret.
        let text = e.to_string();
        assert!(text.contains("keyway"), "{text}");
        assert!(!text.contains("secret\""), "{text}");
    }
    if let Err(e) = &reg {
        assert!(e.to_string().contains("cannot be opened"), "{e}");
    }
    [one.is_ok(), headers.is_ok(), two.is_ok(), reg.is_ok()]
}

#[tokio::test]
async fn a_row_edited_outside_keyway_keeps_its_secret_from_going_elsewhere() {
    let all = [true; 4];
    for (edit, undo, expected) in [
        // The URL a static token and the headers are sent to.
        (
            "UPDATE servers SET url = 'https://evil.example/mcp' WHERE id = 's1'",
            "UPDATE servers SET url = 'https://one.example/mcp' WHERE id = 's1'",
            [false, false, true, true],
        ),
        // The URL OAuth tokens are sent to.
        (
            "UPDATE servers SET url = 'https://evil.example/mcp' WHERE id = 's2'",
            "UPDATE servers SET url = 'https://one.example/mcp' WHERE id = 's2'",
            [true, true, false, true],
        ),
        // Where the refresh token goes.
        (
            "UPDATE credentials SET token_endpoint = 'https://evil.example/token' WHERE server_id = 's2'",
            "UPDATE credentials SET token_endpoint = 'https://as.example/token' WHERE server_id = 's2'",
            [true, true, false, true],
        ),
        (
            "UPDATE credentials SET issuer = 'https://evil.example' WHERE server_id = 's2'",
            "UPDATE credentials SET issuer = 'https://as.example' WHERE server_id = 's2'",
            [true, true, false, true],
        ),
        (
            "UPDATE credentials SET resource = 'https://evil.example/mcp' WHERE server_id = 's2'",
            "UPDATE credentials SET resource = 'https://one.example/mcp' WHERE server_id = 's2'",
            [true, true, false, true],
        ),
        (
            "UPDATE credentials SET client_id = 'other' WHERE server_id = 's2'",
            "UPDATE credentials SET client_id = 'c' WHERE server_id = 's2'",
            [true, true, false, true],
        ),
        // Where logout sends the refresh token (the revocation endpoint).
        (
            "UPDATE credentials SET as_metadata = replace(as_metadata, 'as.example/revoke', 'evil.example/revoke') WHERE server_id = 's2'",
            "UPDATE credentials SET as_metadata = replace(as_metadata, 'evil.example/revoke', 'as.example/revoke') WHERE server_id = 's2'",
            [true, true, false, true],
        ),
        // A token turned into another kind of credential.
        (
            "UPDATE credentials SET kind = 'oauth', issuer = 'https://as.example', token_endpoint = 'https://evil.example/token', client_id = 'c', resource = 'https://one.example/mcp' WHERE server_id = 's1'",
            "UPDATE credentials SET kind = 'bearer', issuer = NULL, token_endpoint = NULL, client_id = NULL, resource = NULL WHERE server_id = 's1'",
            [false, true, true, true],
        ),
        // The client a registration's secret authenticates.
        (
            "UPDATE registrations SET client_id = 'other'",
            "UPDATE registrations SET client_id = 'c'",
            [true, true, true, false],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        two_servers(dir.path()).await;
        assert_eq!(readable(dir.path()).await, all);
        sql(dir.path(), edit);
        assert_eq!(readable(dir.path()).await, expected, "after {edit}");
        // Nothing was lost: the value back, the secret opens again.
        sql(dir.path(), undo);
        assert_eq!(readable(dir.path()).await, all, "after {undo}");
    }
}

/// A credential of one row copied into another row does not open there either.
#[tokio::test]
async fn a_sealed_value_moved_to_another_row_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    two_servers(dir.path()).await;
    sql(
        dir.path(),
        "UPDATE credentials SET sealed = (SELECT sealed FROM credentials WHERE server_id = 's2') WHERE server_id = 's1'",
    );
    assert_eq!(readable(dir.path()).await, [false, true, true, true]);
}

/// Writing a new credential over an unreadable one works (authorize again).
#[tokio::test]
async fn an_unreadable_credential_is_replaced_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    two_servers(dir.path()).await;
    sql(
        dir.path(),
        "UPDATE credentials SET client_id = 'x' WHERE server_id = 's2'",
    );
    let store = open(dir.path()).unwrap();
    assert!(store.credential("s2").await.is_err());
    store
        .save_credential("s2", &oauth("new-at", Some("new-rt")), None)
        .await
        .unwrap();
    let Credential::OAuth(o) = store.credential("s2").await.unwrap().unwrap().credential else {
        panic!()
    };
    let o: Box<OAuthCredential> = o;
    assert_eq!(o.access_token.secret(), "new-at");
}
