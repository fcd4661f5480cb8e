//! The SQLite store: `<home>/keyway.db` (0600, in a 0700 home), WAL journaling so a
//! crash at any point leaves the last committed state, schema migrations by
//! `user_version`, secrets sealed by [`Cipher`].

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::{
    AuthKind, Credential, LastStatus, NewServer, PendingFlowSummary, Person, ServerChange,
    ServerRecord, Store, StoreError, StoreInfo, StoredCredential, Transport, binding,
    crypto::{self, Cipher, KeySource},
    sealed, unix,
};
use crate::{
    Secret,
    auth::{AuthError, RegistrationStore, StoredRegistration},
};

/// The schema this keyway writes: 1, the tables ([`MIGRATIONS`]); 2, every sealed
/// value bound to the columns that decide where it goes ([`binding`]); 3 and on,
/// [`LATER_MIGRATIONS`].
const SCHEMA_VERSION: i64 = 5;
const KEY_CHECK: &[u8] = b"keyway store key check v1";
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
    CREATE TABLE servers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        transport TEXT NOT NULL CHECK (transport IN ('http', 'sse')),
        auth TEXT NOT NULL CHECK (auth IN ('none', 'token', 'oauth')),
        enabled INTEGER NOT NULL DEFAULT 1,
        headers BLOB,
        header_names TEXT NOT NULL DEFAULT '[]',
        last_status TEXT,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deleted_at INTEGER
    );
    CREATE UNIQUE INDEX servers_live_name ON servers (name) WHERE deleted_at IS NULL;
    CREATE TABLE credentials (
        server_id TEXT PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('bearer', 'oauth')),
        secret BLOB NOT NULL,
        expires_at INTEGER,
        issued_at INTEGER,
        scope TEXT,
        issuer TEXT,
        token_endpoint TEXT,
        client_id TEXT,
        resource TEXT,
        as_metadata TEXT,
        version INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        CHECK (kind = 'bearer' OR (issuer IS NOT NULL AND token_endpoint IS NOT NULL
                                   AND client_id IS NOT NULL AND resource IS NOT NULL))
    );
    CREATE TABLE registrations (
        issuer TEXT PRIMARY KEY,
        client_id TEXT NOT NULL,
        secret BLOB,
        auth_method TEXT NOT NULL,
        kind TEXT NOT NULL,
        redirect_uris TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE pending_flows (
        state_hash TEXT PRIMARY KEY,
        server_id TEXT,
        issuer TEXT NOT NULL,
        data BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    "#,
];

/// The schema changes after 2 (which needs the key, see [`bind_values`]): the
/// version each one takes the store to, and its SQL.
const LATER_MIGRATIONS: &[(i64, &str)] = &[
    // 3: the MCP revision each server spoke last (`Store::set_protocol`).
    (3, "ALTER TABLE servers ADD COLUMN protocol TEXT;"),
    // 4: how many tools the server listed at the last connection (`Store::set_tools`).
    (4, "ALTER TABLE servers ADD COLUMN tools INTEGER;"),
    // 5: servers whose tokens are each person's own, behind a team gateway, and those
    // tokens ([`Store::person_credential`]).
    (
        5,
        "ALTER TABLE servers ADD COLUMN per_person INTEGER NOT NULL DEFAULT 0;
         CREATE TABLE person_credentials (
             server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
             person_issuer TEXT NOT NULL,
             subject TEXT NOT NULL,
             kind TEXT NOT NULL CHECK (kind IN ('bearer', 'oauth')),
             sealed BLOB NOT NULL,
             expires_at INTEGER,
             issued_at INTEGER,
             scope TEXT,
             issuer TEXT,
             token_endpoint TEXT,
             client_id TEXT,
             resource TEXT,
             as_metadata TEXT,
             version INTEGER NOT NULL,
             updated_at INTEGER NOT NULL,
             PRIMARY KEY (server_id, person_issuer, subject)
         );",
    ),
];

/// How to open a store.
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Look for (and put new) keys in the OS keychain. Tests turn it off so they never
    /// touch the user's keychain.
    pub use_keychain: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { use_keychain: true }
    }
}

/// The SQLite [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    conn: Mutex<Connection>,
    cipher: Cipher,
    /// The store key, for the keys derived from it ([`SqliteStore::sealing_key`]).
    key: super::crypto::StoreKey,
    key_source: KeySource,
    /// Leases this process holds: key -> (holder, the locked file).
    leases: Mutex<HashMap<String, (String, std::fs::File)>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("key_source", &self.inner.key_source)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A key derived from the store key for `purpose` (see [`SealingKey`]).
    pub fn sealing_key(&self, purpose: &str) -> super::SealingKey {
        super::SealingKey::derived(&self.inner.key, purpose)
    }

    /// Open (or create) the store in `home`: `home` is created (0700) if missing, the
    /// database `keyway.db` in it (0600) is created or migrated to the current schema,
    /// and the key that opens it is found (or, for a new store, made: see
    /// [`KeySource`]).
    ///
    /// Fails when no key opens an existing store ([`StoreError::KeyMissing`],
    /// [`StoreError::WrongKey`]), when the file is not a keyway store or is damaged
    /// ([`StoreError::Foreign`], [`StoreError::Corrupt`]), when a newer keyway wrote it
    /// ([`StoreError::TooNew`]), or on I/O and SQLite errors. An existing file is never
    /// overwritten or wiped.
    ///
    /// ```rust
    /// use keyway::store::{OpenOptions, SqliteStore, Store};
    ///
    /// let unique = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    /// let home = std::env::temp_dir().join(format!(
    ///     "keyway-doc-{}-{}",
    ///     std::process::id(),
    ///     unique.as_nanos()
    /// ));
    /// // No keychain: the key goes to a 0600 key file in `home` (or comes from
    /// // KEYWAY_STORE_KEY when that is set).
    /// let store = SqliteStore::open(&home, OpenOptions { use_keychain: false })?;
    /// assert_eq!(store.path(), home.join("keyway.db"));
    /// println!("key from {}", store.describe().key_source);
    ///
    /// let servers = tokio::runtime::Runtime::new()?.block_on(store.servers())?;
    /// assert!(servers.is_empty());
    ///
    /// drop(store);
    /// std::fs::remove_dir_all(&home)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn open(home: &Path, options: OpenOptions) -> Result<Self, StoreError> {
        ensure_private_dir(home)?;
        let path = home.join("keyway.db");
        let fresh = check_file(&path)?;
        if fresh && !path.exists() {
            crypto::write_private(&path, b"")?;
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify_open_error(&path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| classify_open_error(&path, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut conn = conn;
        migrate(&mut conn, &path)?;
        let (key, key_source) = unlock(&mut conn, home, &path, options.use_keychain)?;
        let cipher = Cipher::new(&key);
        bind_values(&mut conn, &cipher)?;
        migrate_later(&mut conn)?;
        tighten(&path);
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                conn: Mutex::new(conn),
                cipher,
                key,
                key_source,
                leases: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The database file (`<home>/keyway.db`).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        let safe: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self
            .inner
            .path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_default();
        dir.join("locks").join(format!("{safe}.lock"))
    }

    /// Run `f` on the connection on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection, &Cipher) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, &inner.cipher)
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))?
    }
}

/// `home` exists and only its owner can read it.
fn ensure_private_dir(home: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: home.to_owned(),
        source,
    };
    if !home.exists() {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(home).map_err(io)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(home).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(home = %home.display(), "keyway's home was readable by others; restricting it to its owner");
            std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    Ok(())
}

/// The database and its WAL files readable by the owner only.
fn tighten(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let p = PathBuf::from(format!("{}{suffix}", path.display()));
            if let Ok(m) = std::fs::metadata(&p)
                && m.permissions().mode() & 0o077 != 0
            {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    let _ = path;
}

/// Whether the store is new; an existing file must at least look like SQLite.
fn check_file(path: &Path) -> Result<bool, StoreError> {
    use std::io::Read;
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(source) => {
            return Err(StoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut header = [0u8; 16];
    let n = f.read(&mut header).map_err(|source| StoreError::Io {
        path: path.to_owned(),
        source,
    })?;
    if n == 0 {
        return Ok(true);
    }
    if n < 16 || &header != b"SQLite format 3\0" {
        return Err(StoreError::Foreign {
            path: path.to_owned(),
            why: "it is not an SQLite database".into(),
        });
    }
    Ok(false)
}

fn classify_open_error(path: &Path, e: rusqlite::Error) -> StoreError {
    let text = e.to_string();
    if text.contains("not a database") || text.contains("malformed") || text.contains("corrupt") {
        StoreError::Corrupt {
            path: path.to_owned(),
            why: text,
        }
    } else {
        StoreError::Sqlite(text)
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| classify_open_error(path, e))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| classify_open_error(path, e))?;
        if tables > 0 {
            return Err(StoreError::Foreign {
                path: path.to_owned(),
                why: "an SQLite database of another program".into(),
            });
        }
    } else {
        let ok: String = conn
            .query_row("PRAGMA quick_check(1)", [], |r| r.get(0))
            .map_err(|e| classify_open_error(path, e))?;
        if ok != "ok" {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                why: ok,
            });
        }
    }
    // Schema 2 needs the key: [`bind_values`] takes the store there after unlocking,
    // and [`migrate_later`] on from there.
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        migrate_to(conn, i as i64 + 1, sql)?;
    }
    Ok(())
}

/// Take the store to schema `target` with `sql`, in one transaction, unless it is
/// there already (another process may have done it while this one waited).
fn migrate_to(conn: &mut Connection, target: i64, sql: &str) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current < target {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", target)?;
    }
    tx.commit()?;
    Ok(())
}

/// Schema 2: every sealed value of a schema-1 store resealed under its binding, in one
/// transaction (another process opening the store meanwhile waits, then finds it
/// done). A value that does not open is left as it is and named in the log.
fn bind_values(conn: &mut Connection, cipher: &Cipher) -> Result<(), StoreError> {
    // Done already (every open after the first): no write lock taken.
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= 2 {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current >= 2 {
        return Ok(());
    }
    let rebound = binding::bind_all(&tx, cipher)?;
    // New names for the sealed columns: a keyway from before, still running, fails
    // loudly on them instead of writing values sealed the old way, which would not
    // open any more.
    tx.execute_batch(
        "ALTER TABLE credentials RENAME COLUMN secret TO sealed;
         ALTER TABLE servers RENAME COLUMN headers TO sealed_headers;
         ALTER TABLE registrations RENAME COLUMN secret TO sealed;",
    )?;
    tx.pragma_update(None, "user_version", 2)?;
    tx.commit()?;
    if rebound.sealed > 0 {
        tracing::info!(
            values = rebound.sealed,
            "store upgraded: every secret is now bound to where it goes"
        );
    }
    for what in &rebound.unreadable {
        tracing::warn!(
            "the {what} could not be opened while upgrading the store; it will not be used"
        );
    }
    Ok(())
}

/// The [`LATER_MIGRATIONS`] a store has not had yet, each in its own transaction.
fn migrate_later(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for &(target, sql) in LATER_MIGRATIONS.iter().filter(|(t, _)| *t > version) {
        migrate_to(conn, target, sql)?;
    }
    Ok(())
}

/// Find the key that opens this store, or make one for a new store.
fn unlock(
    conn: &mut Connection,
    home: &Path,
    path: &Path,
    use_keychain: bool,
) -> Result<(crypto::StoreKey, KeySource), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let check: Option<Vec<u8>> = tx
        .query_row("SELECT value FROM meta WHERE key = 'key_check'", [], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(check) = check else {
        let (key, source) = match crypto::candidate_keys(home, use_keychain)?
            .into_iter()
            .next()
        {
            // A key left by a creation that crashed before committing: reuse it.
            Some(found) => found,
            None => crypto::create_key(home, use_keychain)?,
        };
        let sealed = Cipher::new(&key).seal("meta.key_check", KEY_CHECK);
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('key_check', ?1)",
            params![sealed],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('created_at', ?1)",
            params![unix(SystemTime::now()).to_string().into_bytes()],
        )?;
        tx.commit()?;
        return Ok((key, source));
    };
    tx.commit()?;
    let candidates = crypto::candidate_keys(home, use_keychain)?;
    if candidates.is_empty() {
        return Err(StoreError::KeyMissing {
            path: path.to_owned(),
            looked: crypto::looked_in(home, use_keychain),
        });
    }
    let tried: Vec<String> = candidates.iter().map(|(_, s)| s.to_string()).collect();
    for (key, source) in candidates {
        if Cipher::new(&key)
            .open("meta.key_check", &check)
            .is_ok_and(|v| v.as_slice() == KEY_CHECK)
        {
            return Ok((key, source));
        }
    }
    Err(StoreError::WrongKey {
        path: path.to_owned(),
        tried: tried.join(", "),
    })
}

fn now() -> u64 {
    unix(SystemTime::now())
}

const SERVER_COLUMNS: &str = "id, name, url, transport, enabled, auth, header_names, created_at, updated_at, last_status, last_error, protocol, tools, per_person";

fn server_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServerRecord> {
    let transport: String = r.get(3)?;
    let auth: String = r.get(5)?;
    let header_names: String = r.get(6)?;
    let status: Option<String> = r.get(9)?;
    Ok(ServerRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        url: r.get(2)?,
        transport: Transport::parse(&transport).unwrap_or(Transport::Http),
        enabled: r.get::<_, i64>(4)? != 0,
        auth: AuthKind::parse(&auth).unwrap_or(AuthKind::None),
        header_names: serde_json::from_str(&header_names).unwrap_or_default(),
        created_at: r.get::<_, i64>(7)? as u64,
        updated_at: r.get::<_, i64>(8)? as u64,
        last_status: status.as_deref().and_then(LastStatus::parse),
        last_error: r.get(10)?,
        protocol: r.get(11)?,
        tools: r
            .get::<_, Option<i64>>(12)?
            .and_then(|n| u32::try_from(n).ok()),
        per_person: r.get::<_, i64>(13)? != 0,
    })
}

fn find_server(conn: &Connection, name_or_id: &str) -> Result<Option<ServerRecord>, StoreError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {SERVER_COLUMNS} FROM servers WHERE deleted_at IS NULL AND (id = ?1 OR name = ?1)
                 ORDER BY (id = ?1) DESC LIMIT 1"
            ),
            params![name_or_id],
            server_row,
        )
        .optional()?)
}

/// The version of a server's stored credential, if it has one.
fn credential_version(
    tx: &rusqlite::Transaction<'_>,
    server_id: &str,
) -> Result<Option<u64>, StoreError> {
    let v: Option<i64> = tx
        .query_row(
            "SELECT version FROM credentials WHERE server_id = ?1",
            params![server_id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.map(|v| v as u64))
}

/// Write `c` as the version after `current` and commit.
fn commit_credential(
    tx: rusqlite::Transaction<'_>,
    cipher: &Cipher,
    server_id: &str,
    c: &Credential,
    current: Option<u64>,
) -> Result<u64, StoreError> {
    let version = current.map_or(1, |v| v + 1);
    write_credential(&tx, cipher, server_id, c, version)?;
    tx.commit()?;
    Ok(version)
}

fn write_credential(
    tx: &rusqlite::Transaction<'_>,
    cipher: &Cipher,
    server_id: &str,
    c: &Credential,
    version: u64,
) -> Result<(), StoreError> {
    let row = sealed::seal_credential(cipher, server_id, &binding::server_url(tx, server_id)?, c)?;
    tx.execute(
        "INSERT INTO credentials (server_id, kind, sealed, expires_at, issued_at, scope, issuer, token_endpoint,
                                  client_id, resource, as_metadata, version, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (server_id) DO UPDATE SET kind = excluded.kind, sealed = excluded.sealed,
             expires_at = excluded.expires_at, issued_at = excluded.issued_at, scope = excluded.scope,
             issuer = excluded.issuer, token_endpoint = excluded.token_endpoint, client_id = excluded.client_id,
             resource = excluded.resource, as_metadata = excluded.as_metadata, version = excluded.version,
             updated_at = excluded.updated_at",
        params![
            server_id,
            row.kind,
            row.sealed,
            row.expires_at,
            row.issued_at,
            row.scope,
            row.issuer,
            row.token_endpoint,
            row.client_id,
            row.resource,
            row.as_metadata,
            version as i64,
            now() as i64,
        ],
    )?;
    Ok(())
}

/// A credential row as `SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope,
/// c.issuer, c.token_endpoint, c.client_id, c.resource, c.as_metadata, c.version,
/// c.updated_at, s.url, s.name` gives it: the sealed row, its version and update time,
/// and its server's URL and name (what it is bound to).
type CredentialColumns = (sealed::CredentialRow, i64, i64, String, String);

fn credential_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CredentialColumns> {
    Ok((
        sealed::CredentialRow {
            kind: r.get(0)?,
            sealed: r.get(1)?,
            expires_at: r.get(2)?,
            issued_at: r.get(3)?,
            scope: r.get(4)?,
            issuer: r.get(5)?,
            token_endpoint: r.get(6)?,
            client_id: r.get(7)?,
            resource: r.get(8)?,
            as_metadata: r.get(9)?,
        },
        r.get(10)?,
        r.get(11)?,
        r.get(12)?,
        r.get(13)?,
    ))
}

fn read_credential(
    conn: &Connection,
    cipher: &Cipher,
    server_id: &str,
) -> Result<Option<StoredCredential>, StoreError> {
    let row = conn
        .query_row(
            "SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope, c.issuer, c.token_endpoint,
                    c.client_id, c.resource, c.as_metadata, c.version, c.updated_at, s.url, s.name
             FROM credentials c JOIN servers s ON s.id = c.server_id WHERE c.server_id = ?1",
            params![server_id],
            credential_row,
        )
        .optional()?;
    let Some((row, version, updated, url, name)) = row else {
        return Ok(None);
    };
    sealed::open_credential(
        cipher,
        server_id,
        &url,
        &name,
        row,
        version as u64,
        updated as u64,
    )
    .map(Some)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_server(
        &self,
        s: &NewServer,
        credential: Option<&Credential>,
    ) -> Result<ServerRecord, StoreError> {
        let s = s.clone();
        let credential = credential.cloned();
        let written = self.run(move |conn, cipher| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The same id again (a retried add): return what is there if it matches.
            if let Some(existing) = find_server(&tx, &s.id)?.filter(|e| e.id == s.id) {
                if existing.name == s.name && existing.url == s.url {
                    return Ok(existing);
                }
                return Err(StoreError::NameTaken(s.id.clone()));
            }
            if find_server(&tx, &s.name)?.is_some() {
                return Err(StoreError::NameTaken(s.name.clone()));
            }
            let (sealed_headers, names) =
                sealed::seal_headers(cipher, &s.id, &s.url, &sealed::plain_headers(&s.headers))?;
            let t = now() as i64;
            tx.execute(
                "INSERT INTO servers (id, name, url, transport, auth, enabled, sealed_headers, header_names, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?8)",
                params![
                    s.id,
                    s.name,
                    s.url,
                    s.transport.as_str(),
                    s.auth.as_str(),
                    sealed_headers,
                    names,
                    t
                ],
            )?;
            if let Some(c) = &credential {
                write_credential(&tx, cipher, &s.id, c, 1)?;
            }
            let record = find_server(&tx, &s.id)?.ok_or_else(|| StoreError::NoSuchServer(s.id.clone()))?;
            tx.commit()?;
            Ok(record)
        })
        .await;
        super::credential_written();
        written
    }

    async fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        self.run(|conn, _| {
            let mut st = conn.prepare(&format!(
                "SELECT {SERVER_COLUMNS} FROM servers WHERE deleted_at IS NULL ORDER BY name"
            ))?;
            let rows = st
                .query_map([], server_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn server(&self, name_or_id: &str) -> Result<Option<ServerRecord>, StoreError> {
        let key = name_or_id.to_owned();
        self.run(move |conn, _| find_server(conn, &key)).await
    }

    async fn headers(&self, server_id: &str) -> Result<Vec<(String, Secret)>, StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, cipher| {
            let row: Option<(Option<Vec<u8>>, String, String)> = conn
                .query_row(
                    "SELECT sealed_headers, url, name FROM servers WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let Some((Some(sealed), url, name)) = row else {
                return Ok(Vec::new());
            };
            let pairs = sealed::open_headers(
                cipher,
                &id,
                &url,
                &sealed,
                format!("the stored headers of {name}"),
                format!("remove {name} and add it again with its --header values"),
            )?;
            Ok(pairs
                .into_iter()
                .map(|(k, v)| (k, Secret::new(v)))
                .collect())
        })
        .await
    }

    async fn set_enabled(&self, server_id: &str, enabled: bool) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, _| {
            let n = conn.execute(
                "UPDATE servers SET enabled = ?2, updated_at = ?3 WHERE id = ?1 AND deleted_at IS NULL",
                params![id, enabled as i64, now() as i64],
            )?;
            if n == 0 { Err(StoreError::NoSuchServer(id)) } else { Ok(()) }
        })
        .await
    }

    async fn set_status(
        &self,
        server_id: &str,
        status: LastStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let (id, error) = (server_id.to_owned(), error.map(str::to_owned));
        self.run(move |conn, _| {
            conn.execute(
                "UPDATE servers SET last_status = ?2, last_error = ?3 WHERE id = ?1",
                params![id, status.as_str(), error],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_protocol(
        &self,
        server_id: &str,
        revision: Option<&str>,
    ) -> Result<(), StoreError> {
        let (id, revision) = (server_id.to_owned(), revision.map(str::to_owned));
        self.run(move |conn, _| {
            conn.execute(
                "UPDATE servers SET protocol = ?2 WHERE id = ?1",
                params![id, revision],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_tools(&self, server_id: &str, count: Option<u32>) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, _| {
            conn.execute(
                "UPDATE servers SET tools = ?2 WHERE id = ?1",
                params![id, count],
            )?;
            Ok(())
        })
        .await
    }

    async fn remove_server(&self, server_id: &str) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        let written = self.run(move |conn, _| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute("DELETE FROM credentials WHERE server_id = ?1", params![id])?;
            tx.execute("DELETE FROM person_credentials WHERE server_id = ?1", params![id])?;
            let n = tx.execute(
                "UPDATE servers SET deleted_at = ?2, updated_at = ?2, sealed_headers = NULL WHERE id = ?1 AND deleted_at IS NULL",
                params![id, now() as i64],
            )?;
            tx.commit()?;
            if n == 0 { Err(StoreError::NoSuchServer(id)) } else { Ok(()) }
        })
        .await;
        super::credential_written();
        written
    }

    async fn purge_server(&self, server_id: &str) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        let written = self
            .run(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute("DELETE FROM credentials WHERE server_id = ?1", params![id])?;
                tx.execute(
                    "DELETE FROM person_credentials WHERE server_id = ?1",
                    params![id],
                )?;
                tx.execute("DELETE FROM servers WHERE id = ?1", params![id])?;
                tx.commit()?;
                Ok(())
            })
            .await;
        super::credential_written();
        written
    }

    async fn update_server(
        &self,
        server_id: &str,
        change: &ServerChange,
    ) -> Result<ServerRecord, StoreError> {
        let (id, change) = (server_id.to_owned(), change.clone());
        let written = self
            .run(move |conn, cipher| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let old = find_server(&tx, &id)?
                    .filter(|s| s.id == id)
                    .ok_or_else(|| StoreError::NoSuchServer(id.clone()))?;
                if let Some(name) = &change.name
                    && find_server(&tx, name)?.is_some_and(|other| other.id != id)
                {
                    return Err(StoreError::NameTaken(name.clone()));
                }
                let url = change.url.clone().unwrap_or_else(|| old.url.clone());
                let moved = url != old.url;
                // The headers: the new ones, or the old ones opened to be sealed to a
                // new URL.
                let headers: Option<Vec<(String, String)>> = match &change.headers {
                    Some(h) => Some(sealed::plain_headers(h)),
                    None if moved => {
                        let stored: Option<Vec<u8>> = tx.query_row(
                            "SELECT sealed_headers FROM servers WHERE id = ?1",
                            params![id],
                            |r| r.get(0),
                        )?;
                        match stored {
                            None => None,
                            Some(stored) => Some(sealed::open_headers(
                                cipher,
                                &id,
                                &old.url,
                                &stored,
                                format!("the stored headers of {}", old.name),
                                "give the headers again with --header".into(),
                            )?),
                        }
                    }
                    None => None,
                };
                if let Some(pairs) = &headers {
                    let (sealed, names) = sealed::seal_headers(cipher, &id, &url, pairs)?;
                    tx.execute(
                        "UPDATE servers SET sealed_headers = ?2, header_names = ?3 WHERE id = ?1",
                        params![id, sealed, names],
                    )?;
                }
                if moved {
                    tx.execute("DELETE FROM credentials WHERE server_id = ?1", params![id])?;
                    tx.execute("DELETE FROM person_credentials WHERE server_id = ?1", params![id])?;
                    tx.execute(
                        "UPDATE servers SET url = ?2, last_status = NULL, last_error = NULL, protocol = NULL, tools = NULL WHERE id = ?1",
                        params![id, url],
                    )?;
                }
                if let Some(name) = &change.name {
                    tx.execute("UPDATE servers SET name = ?2 WHERE id = ?1", params![id, name])?;
                }
                if let Some(t) = change.transport {
                    tx.execute(
                        "UPDATE servers SET transport = ?2, protocol = NULL WHERE id = ?1",
                        params![id, t.as_str()],
                    )?;
                }
                if let Some(a) = change.auth {
                    tx.execute("UPDATE servers SET auth = ?2 WHERE id = ?1", params![id, a.as_str()])?;
                }
                tx.execute(
                    "UPDATE servers SET updated_at = ?2 WHERE id = ?1",
                    params![id, now() as i64],
                )?;
                let record = find_server(&tx, &id)?.ok_or_else(|| StoreError::NoSuchServer(id.clone()))?;
                tx.commit()?;
                Ok(record)
            })
            .await;
        super::credential_written();
        written
    }

    async fn replace_server(&self, old_id: &str, new_id: &str) -> Result<ServerRecord, StoreError> {
        let (old_id, new_id) = (old_id.to_owned(), new_id.to_owned());
        let written = self
            .run(move |conn, _| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let old = find_server(&tx, &old_id)?
                    .filter(|s| s.id == old_id)
                    .ok_or_else(|| StoreError::NoSuchServer(old_id.clone()))?;
                tx.execute("DELETE FROM credentials WHERE server_id = ?1", params![old_id])?;
                tx.execute("DELETE FROM person_credentials WHERE server_id = ?1", params![old_id])?;
                tx.execute("DELETE FROM servers WHERE id = ?1", params![old_id])?;
                let n = tx.execute(
                    "UPDATE servers SET name = ?2, updated_at = ?3 WHERE id = ?1 AND deleted_at IS NULL",
                    params![new_id, old.name, now() as i64],
                )?;
                if n == 0 {
                    return Err(StoreError::NoSuchServer(new_id));
                }
                let record = find_server(&tx, &new_id)?.ok_or_else(|| StoreError::NoSuchServer(new_id.clone()))?;
                tx.commit()?;
                Ok(record)
            })
            .await;
        super::credential_written();
        written
    }

    async fn credential(&self, server_id: &str) -> Result<Option<StoredCredential>, StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, cipher| read_credential(conn, cipher, &id))
            .await
    }

    async fn save_credential(
        &self,
        server_id: &str,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let (id, c) = (server_id.to_owned(), credential.clone());
        let written = self
            .run(move |conn, cipher| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current = credential_version(&tx, &id)?;
                if let Some(expected) = expected_version
                    && current != Some(expected)
                {
                    return Err(StoreError::Conflict);
                }
                let exists: bool = tx
                    .query_row(
                        "SELECT 1 FROM servers WHERE id = ?1 AND deleted_at IS NULL",
                        params![id],
                        |_| Ok(true),
                    )
                    .optional()?
                    .unwrap_or(false);
                if !exists {
                    return Err(StoreError::NoSuchServer(id));
                }
                commit_credential(tx, cipher, &id, &c, current)
            })
            .await;
        super::credential_written();
        written
    }

    async fn set_token(&self, server_id: &str, token: &Secret) -> Result<u64, StoreError> {
        let id = server_id.to_owned();
        let c = Credential::Bearer {
            token: token.clone(),
        };
        let written = self
            .run(move |conn, cipher| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let n = tx.execute(
                    "UPDATE servers SET auth = 'token', updated_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![id, now() as i64],
                )?;
                if n == 0 {
                    return Err(StoreError::NoSuchServer(id));
                }
                let current = credential_version(&tx, &id)?;
                commit_credential(tx, cipher, &id, &c, current)
            })
            .await;
        super::credential_written();
        written
    }

    async fn forget_credential(&self, server_id: &str) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        let written = self
            .run(move |conn, _| {
                conn.execute("DELETE FROM credentials WHERE server_id = ?1", params![id])?;
                Ok(())
            })
            .await;
        super::credential_written();
        written
    }

    async fn set_per_person(&self, server_id: &str, per_person: bool) -> Result<(), StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, _| {
            let n = conn.execute(
                "UPDATE servers SET per_person = ?2, updated_at = ?3 WHERE id = ?1 AND deleted_at IS NULL",
                params![id, per_person as i64, now() as i64],
            )?;
            if n == 0 {
                return Err(StoreError::NoSuchServer(id));
            }
            Ok(())
        })
        .await
    }

    async fn person_credential(
        &self,
        server_id: &str,
        person: &Person,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let (id, person) = (server_id.to_owned(), person.clone());
        self.run(move |conn, cipher| {
            let row = conn
                .query_row(
                    "SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope, c.issuer, c.token_endpoint,
                            c.client_id, c.resource, c.as_metadata, c.version, c.updated_at, s.url, s.name
                     FROM person_credentials c JOIN servers s ON s.id = c.server_id
                     WHERE c.server_id = ?1 AND c.person_issuer = ?2 AND c.subject = ?3 AND s.deleted_at IS NULL",
                    params![id, person.issuer, person.subject],
                    credential_row,
                )
                .optional()?;
            let Some((row, version, updated, url, name)) = row else {
                return Ok(None);
            };
            sealed::open_credential(
                cipher,
                &person.binding(&id),
                &url,
                &name,
                row,
                version as u64,
                updated as u64,
            )
            .map(Some)
        })
        .await
    }

    async fn save_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let (id, person, c) = (server_id.to_owned(), person.clone(), credential.clone());
        let written = self
            .run(move |conn, cipher| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let current: Option<i64> = tx
                    .query_row(
                        "SELECT version FROM person_credentials
                         WHERE server_id = ?1 AND person_issuer = ?2 AND subject = ?3",
                        params![id, person.issuer, person.subject],
                        |r| r.get(0),
                    )
                    .optional()?;
                let current = current.map(|v| v as u64);
                if let Some(expected) = expected_version
                    && current != Some(expected)
                {
                    return Err(StoreError::Conflict);
                }
                let url: Option<String> = tx
                    .query_row(
                        "SELECT url FROM servers WHERE id = ?1 AND deleted_at IS NULL",
                        params![id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let Some(url) = url else {
                    return Err(StoreError::NoSuchServer(id));
                };
                let version = current.map_or(1, |v| v + 1);
                let row = sealed::seal_credential(cipher, &person.binding(&id), &url, &c)?;
                tx.execute(
                    "INSERT INTO person_credentials (server_id, person_issuer, subject, kind, sealed, expires_at,
                         issued_at, scope, issuer, token_endpoint, client_id, resource, as_metadata, version, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
                     ON CONFLICT (server_id, person_issuer, subject) DO UPDATE SET kind = excluded.kind,
                         sealed = excluded.sealed, expires_at = excluded.expires_at, issued_at = excluded.issued_at,
                         scope = excluded.scope, issuer = excluded.issuer, token_endpoint = excluded.token_endpoint,
                         client_id = excluded.client_id, resource = excluded.resource,
                         as_metadata = excluded.as_metadata, version = excluded.version,
                         updated_at = excluded.updated_at",
                    params![
                        id,
                        person.issuer,
                        person.subject,
                        row.kind,
                        row.sealed,
                        row.expires_at,
                        row.issued_at,
                        row.scope,
                        row.issuer,
                        row.token_endpoint,
                        row.client_id,
                        row.resource,
                        row.as_metadata,
                        version as i64,
                        now() as i64
                    ],
                )?;
                tx.commit()?;
                Ok(version)
            })
            .await;
        super::credential_written();
        written
    }

    async fn forget_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        version: Option<u64>,
    ) -> Result<(), StoreError> {
        let (id, person) = (server_id.to_owned(), person.clone());
        let written = self
            .run(move |conn, _| {
                conn.execute(
                    "DELETE FROM person_credentials WHERE server_id = ?1 AND person_issuer = ?2 AND subject = ?3
                     AND (?4 IS NULL OR version = ?4)",
                    params![id, person.issuer, person.subject, version.map(|v| v as i64)],
                )?;
                Ok(())
            })
            .await;
        super::credential_written();
        written
    }

    async fn put_flow(
        &self,
        key: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        // Expired steps go as new ones come: links people never opened do not pile up.
        self.run(|conn, _| {
            let cutoff = now().saturating_sub(super::state::PENDING_FLOW_TTL.as_secs()) as i64;
            conn.execute(
                "DELETE FROM pending_flows WHERE created_at < ?1",
                params![cutoff],
            )?;
            Ok(())
        })
        .await?;
        self.save_pending_flow(key, server_id, issuer, data).await
    }

    async fn take_flow(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = super::state::state_hash(key);
        self.run(move |conn, cipher| {
            let cutoff = now().saturating_sub(super::state::PENDING_FLOW_TTL.as_secs()) as i64;
            let sealed: Option<(Vec<u8>, i64)> = conn
                .query_row(
                    "DELETE FROM pending_flows WHERE state_hash = ?1 RETURNING data, created_at",
                    params![key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            sealed
                .filter(|(_, created)| *created >= cutoff)
                .map(|(s, _)| {
                    cipher
                        .open(&sealed::pending_flow_aad(&key), &s)
                        .map(|p| p.to_vec())
                })
                .transpose()
        })
        .await
    }

    /// A lease is an OS file lock on `<home>/locks/<key>.lock`: exclusive across
    /// processes (and across handles in one process), and released by the OS when its
    /// holder dies, so a killed keyway never leaves the others waiting. `ttl` is not
    /// needed for that.
    async fn try_lease(&self, key: &str, holder: &str, _ttl: Duration) -> Result<bool, StoreError> {
        let path = self.lock_path(key);
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut held = inner.leases.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((h, _)) = held.get(&key) {
                return Ok(*h == holder);
            }
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                    path: dir.to_owned(),
                    source,
                })?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|source| StoreError::Io {
                    path: path.clone(),
                    source,
                })?;
            match file.try_lock() {
                Ok(()) => {
                    held.insert(key, (holder, file));
                    Ok(true)
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(false),
                Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io { path, source }),
            }
        })
        .await
        .map_err(|e| StoreError::Sqlite(format!("lease task failed: {e}")))?
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let mut held = self.inner.leases.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(key).is_some_and(|(h, _)| h == holder) {
            // Dropping the file unlocks it.
            held.remove(key);
        }
        Ok(())
    }

    async fn pending_flows(&self) -> Result<Vec<PendingFlowSummary>, StoreError> {
        self.run(|conn, _| {
            let cutoff = now().saturating_sub(super::state::PENDING_FLOW_TTL.as_secs()) as i64;
            conn.execute(
                "DELETE FROM pending_flows WHERE created_at < ?1",
                params![cutoff],
            )?;
            let mut st = conn.prepare(
                "SELECT server_id, issuer, created_at FROM pending_flows ORDER BY created_at",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(PendingFlowSummary {
                        server_id: r.get(0)?,
                        issuer: r.get(1)?,
                        created_at: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    fn describe(&self) -> StoreInfo {
        StoreInfo {
            path: self.inner.path.clone(),
            key_source: self.inner.key_source.to_string(),
        }
    }
}

impl SqliteStore {
    /// Whether a server has a credential row, without opening it (one that cannot be
    /// opened still counts).
    pub async fn has_credential(&self, server_id: &str) -> Result<bool, StoreError> {
        let id = server_id.to_owned();
        self.run(move |conn, _| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM credentials WHERE server_id = ?1",
                    params![id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    /// Record a pending flow (sealed), keyed by a hash of its `state`.
    pub async fn save_pending_flow(
        &self,
        state: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let key = super::state::state_hash(state);
        let (server_id, issuer, data) = (
            server_id.map(str::to_owned),
            issuer.to_owned(),
            data.to_vec(),
        );
        self.run(move |conn, cipher| {
            let sealed = cipher.seal(&sealed::pending_flow_aad(&key), &data);
            conn.execute(
                "INSERT OR REPLACE INTO pending_flows (state_hash, server_id, issuer, data, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![key, server_id, issuer, sealed, now() as i64],
            )?;
            Ok(())
        })
        .await
    }

    /// The data of a live pending flow (not consumed).
    pub async fn load_pending_flow(&self, state: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = super::state::state_hash(state);
        self.run(move |conn, cipher| {
            let cutoff = now().saturating_sub(super::state::PENDING_FLOW_TTL.as_secs()) as i64;
            let sealed: Option<Vec<u8>> = conn
                .query_row(
                    "SELECT data FROM pending_flows WHERE state_hash = ?1 AND created_at >= ?2",
                    params![key, cutoff],
                    |r| r.get(0),
                )
                .optional()?;
            sealed
                .map(|s| {
                    cipher
                        .open(&sealed::pending_flow_aad(&key), &s)
                        .map(|p| p.to_vec())
                })
                .transpose()
        })
        .await
    }

    /// Forget a pending flow (none under that `state` is not an error).
    pub async fn delete_pending_flow(&self, state: &str) -> Result<(), StoreError> {
        let key = super::state::state_hash(state);
        self.run(move |conn, _| {
            conn.execute(
                "DELETE FROM pending_flows WHERE state_hash = ?1",
                params![key],
            )?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl crate::auth::PendingFlows for SqliteStore {
    async fn begin(&self, state: &str, flow: &crate::auth::PendingFlow) -> Result<(), AuthError> {
        let data = zeroize::Zeroizing::new(
            serde_json::to_vec(flow).map_err(|e| AuthError::Store(e.to_string()))?,
        );
        Ok(self
            .save_pending_flow(state, None, &flow.issuer, &data)
            .await?)
    }

    async fn end(&self, state: &str) -> Result<(), AuthError> {
        Ok(self.delete_pending_flow(state).await?)
    }
}

#[async_trait::async_trait]
impl RegistrationStore for SqliteStore {
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError> {
        let issuer = issuer.to_owned();
        Ok(self
            .run(move |conn, cipher| {
                let row = conn
                    .query_row(
                        "SELECT client_id, sealed, auth_method, kind, redirect_uris FROM registrations WHERE issuer = ?1",
                        params![issuer],
                        |r| {
                            Ok(sealed::RegistrationRow {
                                client_id: r.get(0)?,
                                sealed: r.get(1)?,
                                auth_method: r.get(2)?,
                                kind: r.get(3)?,
                                redirect_uris: r.get(4)?,
                            })
                        },
                    )
                    .optional()?;
                let Some(row) = row else { return Ok(None) };
                sealed::open_registration(cipher, &issuer, row).map(Some)
            })
            .await?)
    }

    async fn save(&self, r: &StoredRegistration) -> Result<(), AuthError> {
        let r = r.clone();
        Ok(self
            .run(move |conn, cipher| {
                let row = sealed::seal_registration(cipher, &r);
                conn.execute(
                    "INSERT OR REPLACE INTO registrations (issuer, client_id, sealed, auth_method, kind, redirect_uris, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![
                        r.issuer,
                        row.client_id,
                        row.sealed,
                        row.auth_method,
                        row.kind,
                        row.redirect_uris,
                        now() as i64
                    ],
                )?;
                Ok(())
            })
            .await?)
    }

    async fn forget(&self, issuer: &str) -> Result<(), AuthError> {
        let issuer = issuer.to_owned();
        Ok(self
            .run(move |conn, _| {
                conn.execute(
                    "DELETE FROM registrations WHERE issuer = ?1",
                    params![issuer],
                )?;
                Ok(())
            })
            .await?)
    }
}
