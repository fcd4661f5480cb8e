//! A store written before secrets were bound to their rows (schema 1, made by an
//! earlier keyway: `fixtures/schema1`) is upgraded in place when it is opened: every
//! secret is kept, and is bound from then on; each server gets a place for the MCP
//! revision it speaks (schema 3).

use std::{fs, os::unix::fs::PermissionsExt, path::Path};

use keyway::{
    auth::RegistrationStore,
    store::{Credential, Store, StoreError},
};

use crate::open;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/store/fixtures/schema1");

/// The fixture in a home of the test's own.
fn schema1_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in ["keyway.db", "store.key"] {
        fs::copy(Path::new(FIXTURE).join(file), dir.path().join(file)).unwrap();
        fs::set_permissions(dir.path().join(file), fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

fn user_version(home: &Path) -> i64 {
    rusqlite::Connection::open(home.join("keyway.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

fn sql(home: &Path, statement: &str) {
    rusqlite::Connection::open(home.join("keyway.db"))
        .unwrap()
        .execute_batch(statement)
        .unwrap();
}

#[tokio::test]
async fn a_schema_1_store_keeps_every_secret_and_is_bound_from_then_on() {
    let home = schema1_home();
    assert_eq!(user_version(home.path()), 1);
    let store = open(home.path()).unwrap();
    assert_eq!(user_version(home.path()), 5);
    // A keyway from before that is still running finds none of the columns it seals
    // into: it fails loudly rather than writing values that would not open.
    for old in [
        "SELECT secret FROM credentials",
        "SELECT headers FROM servers",
        "SELECT secret FROM registrations",
    ] {
        let db = rusqlite::Connection::open(home.path().join("keyway.db")).unwrap();
        assert!(db.prepare(old).is_err(), "{old}");
    }

    let servers = store.servers().await.unwrap();
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["one", "tb"]);
    let (one, tb) = (&servers[0], &servers[1]);
    assert_eq!(one.protocol, None, "not known until keyway connects");
    store
        .set_protocol(&tb.id, Some("2026-07-28"))
        .await
        .unwrap();

    let Credential::Bearer { token } = store.credential(&one.id).await.unwrap().unwrap().credential
    else {
        panic!("one has a static token")
    };
    assert_eq!(token.expose(), "v1-bearer-token");
    let headers = store.headers(&one.id).await.unwrap();
    assert_eq!(headers[0].0, "x-api-key");
    assert_eq!(headers[0].1.expose(), "v1-header-value");

    let Credential::OAuth(o) = store.credential(&tb.id).await.unwrap().unwrap().credential else {
        panic!("tb has OAuth tokens")
    };
    assert!(o.access_token.secret().starts_with("tb_at_"));
    assert!(o.refresh_token.is_some());
    let registration = RegistrationStore::load(&store, &o.issuer)
        .await
        .unwrap()
        .unwrap();
    assert!(registration.client_secret.is_some());
    drop(store);

    // Opened again: nothing more to do, everything still there.
    let store = open(home.path()).unwrap();
    assert!(store.credential(&tb.id).await.unwrap().is_some());
    let tb_now = store.server(&tb.id).await.unwrap().unwrap();
    assert_eq!(tb_now.protocol.as_deref(), Some("2026-07-28"));
    drop(store);

    // Bound now: the URL edited, the token does not open.
    sql(
        home.path(),
        &format!(
            "UPDATE servers SET url = 'https://evil.example/mcp' WHERE id = '{}'",
            one.id
        ),
    );
    let store = open(home.path()).unwrap();
    assert!(matches!(
        store.credential(&one.id).await,
        Err(StoreError::Unreadable { .. })
    ));
    assert!(store.credential(&tb.id).await.unwrap().is_some());
}

/// A schema-1 value that does not open (damaged) does not stop the upgrade: the
/// others are upgraded, and that one is reported as unreadable when used.
#[tokio::test]
async fn a_damaged_value_does_not_stop_the_upgrade() {
    let home = schema1_home();
    // Flip the last byte of the static token's sealed value.
    let db = rusqlite::Connection::open(home.path().join("keyway.db")).unwrap();
    let mut sealed: Vec<u8> = db
        .query_row(
            "SELECT secret FROM credentials WHERE kind = 'bearer'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    *sealed.last_mut().unwrap() ^= 1;
    db.execute(
        "UPDATE credentials SET secret = ?1 WHERE kind = 'bearer'",
        [sealed],
    )
    .unwrap();
    drop(db);
    let store = open(home.path()).unwrap();
    assert_eq!(user_version(home.path()), 5);
    let servers = store.servers().await.unwrap();
    let err = store.credential(&servers[0].id).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("keyway logout one"), "{err}");
    assert!(store.headers(&servers[0].id).await.is_ok());
    assert!(store.credential(&servers[1].id).await.unwrap().is_some());
}
