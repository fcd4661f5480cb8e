//! Files, permissions, keys, and what happens when they are wrong.

use std::{fs, os::unix::fs::PermissionsExt};

use keyway::{
    Secret,
    store::{AuthKind, Credential, NewServer, Store, StoreError, Transport},
};

use crate::open;

fn server(id: &str, name: &str) -> NewServer {
    NewServer {
        id: id.into(),
        name: name.into(),
        url: "https://mcp.example.com/mcp".into(),
        transport: Transport::Http,
        auth: AuthKind::Token,
        headers: vec![("X-Api-Key".into(), Secret::new("header-secret-value"))],
    }
}

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_new_store_is_private_and_its_secrets_are_not_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let store = open(&home).unwrap();
    store
        .create_server(
            &server("s1", "one"),
            Some(&Credential::Bearer {
                token: Secret::new("bearer-secret-value"),
            }),
        )
        .await
        .unwrap();
    drop(store);
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("keyway.db")), 0o600);
    assert_eq!(mode(&home.join("store.key")), 0o600);
    let mut raw = fs::read(home.join("keyway.db")).unwrap();
    if let Ok(wal) = fs::read(home.join("keyway.db-wal")) {
        raw.extend(wal);
    }
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.contains("bearer-secret-value") && !text.contains("header-secret-value"));
    assert!(text.contains("one"), "names are not secret");

    let store = open(&home).unwrap();
    let c = store.credential("s1").await.unwrap().unwrap();
    let Credential::Bearer { token } = c.credential else {
        panic!()
    };
    assert_eq!(token.expose(), "bearer-secret-value");
    assert_eq!(
        store.headers("s1").await.unwrap()[0].1.expose(),
        "header-secret-value"
    );
}

#[tokio::test]
async fn a_readable_home_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    fs::create_dir(&home).unwrap();
    fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
    open(&home).unwrap();
    assert_eq!(mode(&home), 0o700);
}

async fn with_one_server(home: &std::path::Path) -> Vec<u8> {
    let store = open(home).unwrap();
    store
        .create_server(
            &server("s1", "one"),
            Some(&Credential::Bearer {
                token: Secret::new("t"),
            }),
        )
        .await
        .unwrap();
    drop(store);
    fs::read(home.join("keyway.db")).unwrap()
}

#[tokio::test]
async fn a_missing_key_is_a_clear_error_and_the_store_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    with_one_server(home).await;
    let key = fs::read(home.join("store.key")).unwrap();
    fs::remove_file(home.join("store.key")).unwrap();
    let before = fs::read(home.join("keyway.db")).unwrap();
    let err = open(home).unwrap_err();
    assert!(matches!(err, StoreError::KeyMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("KEYWAY_STORE_KEY") && err.to_string().contains("not changed")
    );
    assert_eq!(fs::read(home.join("keyway.db")).unwrap(), before);
    assert!(
        !home.join("store.key").exists(),
        "no new key was made for an existing store"
    );
    // Putting the key back (readable by its owner only) opens it again with
    // everything in it.
    fs::write(home.join("store.key"), key).unwrap();
    fs::set_permissions(home.join("store.key"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(open(home).unwrap().servers().await.unwrap().len(), 1);
}

/// A key file other users can read (or change) is not used: the error says what to do,
/// and nothing in the store changes. Before the fix it was used whatever its mode.
#[tokio::test]
async fn a_key_file_others_can_read_is_refused_and_the_store_kept() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    with_one_server(home).await;
    let before = fs::read(home.join("keyway.db")).unwrap();
    for exposed in [0o644, 0o640, 0o606, 0o620] {
        fs::set_permissions(home.join("store.key"), fs::Permissions::from_mode(exposed)).unwrap();
        let err = open(home).unwrap_err();
        assert!(
            matches!(err, StoreError::KeyFileExposed { .. }),
            "{exposed:o}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("chmod 600") && text.contains(&format!("{exposed:03o}")),
            "{text}"
        );
        assert_eq!(fs::read(home.join("keyway.db")).unwrap(), before);
    }
    fs::set_permissions(home.join("store.key"), fs::Permissions::from_mode(0o600)).unwrap();
    let store = open(home).unwrap();
    assert!(store.credential("s1").await.unwrap().is_some());
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_and_the_store_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    with_one_server(home).await;
    fs::write(
        home.join("store.key"),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )
    .unwrap();
    let before = fs::read(home.join("keyway.db")).unwrap();
    let err = open(home).unwrap_err();
    assert!(matches!(err, StoreError::WrongKey { .. }), "{err}");
    assert_eq!(fs::read(home.join("keyway.db")).unwrap(), before);
}

#[tokio::test]
async fn foreign_and_corrupt_files_are_refused_and_kept() {
    let cases: [(&str, &[u8]); 3] = [
        (
            "text",
            b"this is not a database at all, but it is long enough",
        ),
        (
            "truncated sqlite",
            b"SQLite format 3\0\x10\x00\x01\x01garbagegarbagegarbage",
        ),
        ("short", b"hi"),
    ];
    for (what, bytes) in cases {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keyway.db"), bytes).unwrap();
        let err = open(dir.path()).unwrap_err();
        assert!(
            matches!(err, StoreError::Foreign { .. } | StoreError::Corrupt { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains("move it aside"), "{what}: {err}");
        assert_eq!(
            fs::read(dir.path().join("keyway.db")).unwrap(),
            bytes,
            "{what}: the file was changed"
        );
    }
    // Another program's SQLite database.
    let dir = tempfile::tempdir().unwrap();
    let other = rusqlite::Connection::open(dir.path().join("keyway.db")).unwrap();
    other
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    drop(other);
    let err = open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
}

#[tokio::test]
async fn a_store_from_a_newer_keyway_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    with_one_server(dir.path()).await;
    let c = rusqlite::Connection::open(dir.path().join("keyway.db")).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    assert!(matches!(
        open(dir.path()).unwrap_err(),
        StoreError::TooNew { found: 99, .. }
    ));
}
