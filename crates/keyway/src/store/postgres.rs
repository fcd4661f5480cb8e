//! The Postgres store, for a gateway shared by a team across replicas: the same tables
//! as the SQLite store, the same sealed values ([`sealed`]), written through a pool of
//! tokio-postgres connections (deadpool-postgres).
//!
//! The key never lives in the database, and is never made for it: every machine that
//! shares the store needs the same one, so it is given ([`PgOptions::from_env`] reads
//! `KEYWAY_STORE_KEY`). A database sealed with another key is refused, never
//! rewritten. The tables live in a schema of their own, `keyway`.
//!
//! Concurrency across replicas: every credential write locks its server's row first,
//! so the compare-and-swap of [`Store::save_credential`] holds across processes and
//! machines, and a removal or logout cannot interleave with a refresh; leases are rows
//! with an expiry on the database's clock, taken in one statement, so a holder that
//! died frees its lease once the lease's time is up.
//!
//! Why tokio-postgres with deadpool-postgres rather than sqlx: keyway builds its SQL at
//! run time and needs no compile-time checking or migrations runner (the SQLite store
//! has its own), and tokio-postgres is the driver sqlx-free Rust Postgres code uses,
//! with a small pool crate over it; sqlx would bring a second SQLite driver beside
//! rusqlite.

use std::{
    path::PathBuf,
    time::{Duration, SystemTime},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Row, error::SqlState};

use super::{
    AuthKind, Credential, LastStatus, NewServer, PendingFlowSummary, Person, ServerChange,
    ServerRecord, Store, StoreError, StoreInfo, StoredCredential, Transport,
    crypto::{self, Cipher, KeySource},
    sealed, unix,
};
use crate::{
    Secret,
    auth::{AuthError, RegistrationStore, StoredRegistration},
};

/// The schema this keyway writes in Postgres (the SQLite store's schema 4, created
/// whole: a Postgres store never held the older forms).
const SCHEMA_VERSION: i64 = 5;
/// The Postgres schema keyway's tables are in.
const SCHEMA_NAME: &str = "keyway";
const KEY_CHECK: &[u8] = b"keyway store key check v1";

/// Connections the pool opens at most, unless configured.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// How long a connection may take to open before the store says the database cannot
/// be reached.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS keyway_meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS servers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    url TEXT NOT NULL,
    transport TEXT NOT NULL CHECK (transport IN ('http', 'sse')),
    auth TEXT NOT NULL CHECK (auth IN ('none', 'token', 'oauth')),
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    sealed_headers BYTEA,
    header_names TEXT NOT NULL DEFAULT '[]',
    last_status TEXT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT,
    protocol TEXT,
    tools BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS servers_live_name ON servers (name) WHERE deleted_at IS NULL;
CREATE TABLE IF NOT EXISTS credentials (
    server_id TEXT PRIMARY KEY REFERENCES servers (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('bearer', 'oauth')),
    sealed BYTEA NOT NULL,
    expires_at BIGINT,
    issued_at BIGINT,
    scope TEXT,
    issuer TEXT,
    token_endpoint TEXT,
    client_id TEXT,
    resource TEXT,
    as_metadata TEXT,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (kind = 'bearer' OR (issuer IS NOT NULL AND token_endpoint IS NOT NULL
                               AND client_id IS NOT NULL AND resource IS NOT NULL))
);
CREATE TABLE IF NOT EXISTS registrations (
    issuer TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    sealed BYTEA,
    auth_method TEXT NOT NULL,
    kind TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_flows (
    state_hash TEXT PRIMARY KEY,
    server_id TEXT,
    issuer TEXT NOT NULL,
    data BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
ALTER TABLE servers ADD COLUMN IF NOT EXISTS per_person BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE IF NOT EXISTS person_credentials (
    server_id TEXT NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    person_issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('bearer', 'oauth')),
    sealed BYTEA NOT NULL,
    expires_at BIGINT,
    issued_at BIGINT,
    scope TEXT,
    issuer TEXT,
    token_endpoint TEXT,
    client_id TEXT,
    resource TEXT,
    as_metadata TEXT,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (server_id, person_issuer, subject)
);
CREATE TABLE IF NOT EXISTS leases (
    key TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at_ms BIGINT NOT NULL
);
"#;

const SERVER_COLUMNS: &str = "id, name, url, transport, enabled, auth, header_names, created_at, updated_at, last_status, last_error, protocol, tools, per_person";

/// How to open a Postgres store.
#[derive(Clone)]
pub struct PgOptions {
    /// The store key (32 bytes, base64 or hex); `None` opens nothing but says so.
    pub key: Option<Secret>,
    /// Connections the pool opens at most.
    pub pool_size: usize,
    key_source: KeySource,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgOptions {
    /// The key from `KEYWAY_STORE_KEY`, and [`DEFAULT_POOL_SIZE`] connections.
    pub fn from_env() -> Self {
        Self {
            key: std::env::var("KEYWAY_STORE_KEY").ok().map(Secret::new),
            pool_size: DEFAULT_POOL_SIZE,
            key_source: KeySource::Env,
        }
    }

    /// This key, and [`DEFAULT_POOL_SIZE`] connections.
    pub fn with_key(key: Secret) -> Self {
        Self {
            key: Some(key),
            pool_size: DEFAULT_POOL_SIZE,
            key_source: KeySource::Given,
        }
    }
}

/// The Postgres [`Store`]; clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cipher: Cipher,
    /// The store key, for the keys derived from it ([`PostgresStore::sealing_key`]).
    key: super::crypto::StoreKey,
    key_source: KeySource,
    /// The database's URL without its password, for messages.
    shown: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("database", &self.inner.shown)
            .field("key_source", &self.inner.key_source)
            .finish_non_exhaustive()
    }
}

/// A Postgres URL without its password (and without its query, which may carry
/// one), for messages and `keyway doctor`.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "(a Postgres URL keyway cannot read)".into(),
    }
}

fn pg_error(e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        return StoreError::Postgres(format!("{} ({})", db.message(), db.code().code()));
    }
    StoreError::Postgres(crate::text::shown(&e.to_string(), 300))
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Postgres(format!("no database connection: {other}")),
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        pg_error(e)
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        pool_error(e)
    }
}

fn now() -> i64 {
    unix(SystemTime::now()) as i64
}

fn server_row(r: &Row) -> Result<ServerRecord, StoreError> {
    let transport: String = r.try_get(3)?;
    let auth: String = r.try_get(5)?;
    let header_names: String = r.try_get(6)?;
    let status: Option<String> = r.try_get(9)?;
    Ok(ServerRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        url: r.try_get(2)?,
        transport: Transport::parse(&transport).unwrap_or(Transport::Http),
        enabled: r.try_get(4)?,
        auth: AuthKind::parse(&auth).unwrap_or(AuthKind::None),
        header_names: serde_json::from_str(&header_names).unwrap_or_default(),
        created_at: r.try_get::<_, i64>(7)?.max(0) as u64,
        updated_at: r.try_get::<_, i64>(8)?.max(0) as u64,
        last_status: status.as_deref().and_then(LastStatus::parse),
        last_error: r.try_get(10)?,
        protocol: r.try_get(11)?,
        tools: r
            .try_get::<_, Option<i64>>(12)?
            .and_then(|n| u32::try_from(n).ok()),
        per_person: r.try_get(13)?,
    })
}

async fn find_server(
    c: &impl deadpool_postgres::GenericClient,
    name_or_id: &str,
) -> Result<Option<ServerRecord>, StoreError> {
    c.query_opt(
        &format!(
            "SELECT {SERVER_COLUMNS} FROM servers WHERE deleted_at IS NULL AND (id = $1 OR name = $1)
             ORDER BY (id = $1) DESC LIMIT 1"
        ),
        &[&name_or_id],
    )
    .await?
    .map(|r| server_row(&r))
    .transpose()
}

/// Lock server `id`'s row for the rest of the transaction, so credential writes to
/// it take turns across every replica; its URL, or `None` when it is not there.
async fn lock_server(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT url FROM servers WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
            &[&id],
        )
        .await?
        .map(|r| r.try_get::<_, String>(0))
        .transpose()?)
}

/// Lock the rows of servers `ids` (removed or not), in one order whoever asks, for
/// the rest of the transaction.
async fn lock_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    ids: &[&str],
) -> Result<(), StoreError> {
    tx.query(
        "SELECT id FROM servers WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )
    .await?;
    Ok(())
}

async fn credential_version(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<u64>, StoreError> {
    Ok(tx
        .query_opt(
            "SELECT version FROM credentials WHERE server_id = $1",
            &[&id],
        )
        .await?
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()?
        .map(|v| v.max(0) as u64))
}

/// A credential row as `SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope,
/// c.issuer, c.token_endpoint, c.client_id, c.resource, c.as_metadata, c.version,
/// c.updated_at, s.url, s.name` gives it: the sealed row, its version and update time,
/// and its server's URL and name (what it is bound to).
fn credential_row(
    r: &tokio_postgres::Row,
) -> Result<(sealed::CredentialRow, i64, i64, String, String), StoreError> {
    Ok((
        sealed::CredentialRow {
            kind: r.try_get(0)?,
            sealed: r.try_get(1)?,
            expires_at: r.try_get(2)?,
            issued_at: r.try_get(3)?,
            scope: r.try_get(4)?,
            issuer: r.try_get(5)?,
            token_endpoint: r.try_get(6)?,
            client_id: r.try_get(7)?,
            resource: r.try_get(8)?,
            as_metadata: r.try_get(9)?,
        },
        r.try_get(10)?,
        r.try_get(11)?,
        r.try_get(12)?,
        r.try_get(13)?,
    ))
}

async fn write_credential(
    tx: &deadpool_postgres::Transaction<'_>,
    cipher: &Cipher,
    server_id: &str,
    server_url: &str,
    c: &Credential,
    version: u64,
) -> Result<(), StoreError> {
    let row = sealed::seal_credential(cipher, server_id, server_url, c)?;
    tx.execute(
        "INSERT INTO credentials (server_id, kind, sealed, expires_at, issued_at, scope, issuer, token_endpoint,
                                  client_id, resource, as_metadata, version, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (server_id) DO UPDATE SET kind = excluded.kind, sealed = excluded.sealed,
             expires_at = excluded.expires_at, issued_at = excluded.issued_at, scope = excluded.scope,
             issuer = excluded.issuer, token_endpoint = excluded.token_endpoint, client_id = excluded.client_id,
             resource = excluded.resource, as_metadata = excluded.as_metadata, version = excluded.version,
             updated_at = excluded.updated_at",
        &[
            &server_id,
            &row.kind,
            &row.sealed,
            &row.expires_at,
            &row.issued_at,
            &row.scope,
            &row.issuer,
            &row.token_endpoint,
            &row.client_id,
            &row.resource,
            &row.as_metadata,
            &(version as i64),
            &now(),
        ],
    )
    .await?;
    Ok(())
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Whether `host` is this machine (where TLS to the database guards nothing).
fn is_local(host: &tokio_postgres::config::Host) -> bool {
    match host {
        tokio_postgres::config::Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    }
}

impl PostgresStore {
    /// A key derived from the store key for `purpose` (see [`SealingKey`]): every
    /// replica sharing the database (and so its key) derives the same.
    ///
    /// [`SealingKey`]: super::SealingKey
    pub fn sealing_key(&self, purpose: &str) -> super::SealingKey {
        super::SealingKey::derived(&self.inner.key, purpose)
    }

    /// Connect to the database at `url` (`postgres://user:password@host:port/db`,
    /// TLS as its `sslmode` says, verified against the platform's roots), create the
    /// tables in a new database, and find the key that opens it (see the module's
    /// documentation).
    ///
    /// Fails when the database cannot be reached, when a newer keyway wrote it
    /// ([`StoreError::TooNew`]), when a new database is given no key
    /// ([`StoreError::KeyNeeded`]), or when the key given does not open it
    /// ([`StoreError::KeyMissing`], [`StoreError::WrongKey`]); an existing database is
    /// never rewritten or wiped.
    pub async fn open(url: &Secret, options: PgOptions) -> Result<Self, StoreError> {
        let shown = shown_url(url.expose());
        let mut config: tokio_postgres::Config = url.expose().parse().map_err(|_| {
            StoreError::Postgres(format!(
                "{shown} is not a Postgres URL; give one as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("keyway");
        // keyway's tables in a schema of their own: never another program's `servers`.
        let options_text = match config.get_options() {
            Some(o) => format!("{o} -c search_path={SCHEMA_NAME}"),
            None => format!("-c search_path={SCHEMA_NAME}"),
        };
        config.options(&options_text);
        // libpq's default, `prefer`, lets anyone on the path answer "no TLS" and read
        // the password: beyond this machine, TLS is required unless the URL says
        // otherwise.
        let says_sslmode = url::Url::parse(url.expose())
            .is_ok_and(|u| u.query_pairs().any(|(k, _)| k == "sslmode"));
        if !says_sslmode && !config.get_hosts().iter().all(is_local) {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        let tls = crate::http::tls_config().ok_or_else(|| {
            StoreError::Postgres("no TLS configuration could be made for the database".into())
        })?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Postgres(format!("cannot make the connection pool: {e}")))?;
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::Postgres(format!(
                "cannot reach the database {shown}: {}; check the URL, and that the database runs and takes connections from here",
                match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => crate::text::shown(&e.to_string(), 300),
                }
            )),
            other => pool_error(other),
        })?;
        let tx = client.transaction().await?;
        // One migration at a time across replicas starting together.
        tx.execute("SELECT pg_advisory_xact_lock(7271727)", &[])
            .await?;
        // A newer keyway's store is left as it is: checked before any statement here.
        let version: Option<i64> = match tx
            .query_one(
                &format!("SELECT to_regclass('{SCHEMA_NAME}.keyway_meta') IS NOT NULL"),
                &[],
            )
            .await?
            .try_get::<_, bool>(0)?
        {
            false => None,
            true => tx
                .query_opt(
                    "SELECT value FROM keyway_meta WHERE key = 'schema_version'",
                    &[],
                )
                .await?
                .map(|r| r.try_get::<_, Vec<u8>>(0))
                .transpose()?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse().ok()),
        };
        if let Some(found) = version
            && found > SCHEMA_VERSION
        {
            return Err(StoreError::TooNew {
                path: PathBuf::from(&shown),
                found,
                known: SCHEMA_VERSION,
            });
        }
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME};"))
            .await?;
        tx.batch_execute(SCHEMA).await?;
        if version.is_none_or(|v| v < SCHEMA_VERSION) {
            tx.execute(
                "INSERT INTO keyway_meta (key, value) VALUES ('schema_version', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&SCHEMA_VERSION.to_string().into_bytes()],
            )
            .await?;
        }
        let key = unlock(&tx, options.key.as_ref(), &shown).await?;
        let key_source = options.key_source;
        tx.commit().await?;
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                pool,
                cipher: Cipher::new(&key),
                key,
                key_source,
                shown,
            }),
        })
    }

    /// A connection from the pool, for one operation: a statement (one round trip)
    /// or a transaction. Counted in the metrics (`keyway_store_operations_total`).
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        crate::gateway::metrics::record_store_operation();
        Ok(self.inner.pool.get().await?)
    }

    /// Whether a server has a credential row, without opening it.
    pub async fn has_credential(&self, server_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT 1 FROM credentials WHERE server_id = $1",
                &[&server_id],
            )
            .await?
            .is_some())
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
        let sealed = self
            .inner
            .cipher
            .seal(&sealed::pending_flow_aad(&key), data);
        self.client()
            .await?
            .execute(
                "INSERT INTO pending_flows (state_hash, server_id, issuer, data, created_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (state_hash) DO UPDATE SET server_id = excluded.server_id,
                     issuer = excluded.issuer, data = excluded.data, created_at = excluded.created_at",
                &[&key, &server_id, &issuer, &sealed, &now()],
            )
            .await?;
        Ok(())
    }

    /// The data of a live pending flow.
    pub async fn load_pending_flow(&self, state: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = super::state::state_hash(state);
        let cutoff = now() - super::state::PENDING_FLOW_TTL.as_secs() as i64;
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT data FROM pending_flows WHERE state_hash = $1 AND created_at >= $2",
                &[&key, &cutoff],
            )
            .await?;
        row.map(|r| {
            let sealed: Vec<u8> = r.try_get(0)?;
            self.inner
                .cipher
                .open(&sealed::pending_flow_aad(&key), &sealed)
                .map(|p| p.to_vec())
        })
        .transpose()
    }

    /// Forget a pending flow (none under that `state` is not an error).
    pub async fn delete_pending_flow(&self, state: &str) -> Result<(), StoreError> {
        let key = super::state::state_hash(state);
        self.client()
            .await?
            .execute("DELETE FROM pending_flows WHERE state_hash = $1", &[&key])
            .await?;
        Ok(())
    }
}

/// The key that opens this database: `key`, checked against the value sealed with the
/// key the database was made with; for a new database, `key` becomes its key (only a
/// value sealed with it is stored, to tell a wrong key later).
async fn unlock(
    tx: &deadpool_postgres::Transaction<'_>,
    key: Option<&Secret>,
    shown: &str,
) -> Result<crypto::StoreKey, StoreError> {
    let check: Option<Vec<u8>> = tx
        .query_opt("SELECT value FROM keyway_meta WHERE key = 'key_check'", &[])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let key = match key {
        Some(text) => crypto::StoreKey::parse(text.expose()).ok_or(StoreError::BadEnvKey)?,
        None if check.is_none() => {
            return Err(StoreError::KeyNeeded {
                path: PathBuf::from(shown),
            });
        }
        None => {
            return Err(StoreError::KeyMissing {
                path: PathBuf::from(shown),
                looked: "KEYWAY_STORE_KEY".into(),
            });
        }
    };
    let cipher = Cipher::new(&key);
    match check {
        None => {
            let sealed = cipher.seal("meta.key_check", KEY_CHECK);
            tx.execute(
                "INSERT INTO keyway_meta (key, value) VALUES ('key_check', $1)",
                &[&sealed],
            )
            .await?;
            Ok(key)
        }
        Some(check)
            if cipher
                .open("meta.key_check", &check)
                .is_ok_and(|v| v.as_slice() == KEY_CHECK) =>
        {
            Ok(key)
        }
        Some(_) => Err(StoreError::WrongKey {
            path: PathBuf::from(shown),
            tried: "KEYWAY_STORE_KEY".into(),
        }),
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn create_server(
        &self,
        s: &NewServer,
        credential: Option<&Credential>,
    ) -> Result<ServerRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(existing) = find_server(&tx, &s.id).await?.filter(|e| e.id == s.id) {
            if existing.name == s.name && existing.url == s.url {
                return Ok(existing);
            }
            return Err(StoreError::NameTaken(s.id.clone()));
        }
        if find_server(&tx, &s.name).await?.is_some() {
            return Err(StoreError::NameTaken(s.name.clone()));
        }
        let (sealed_headers, names) = sealed::seal_headers(
            &self.inner.cipher,
            &s.id,
            &s.url,
            &sealed::plain_headers(&s.headers),
        )?;
        let t = now();
        let inserted = tx
            .execute(
                "INSERT INTO servers (id, name, url, transport, auth, enabled, sealed_headers, header_names, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, TRUE, $6, $7, $8, $8)",
                &[
                    &s.id,
                    &s.name,
                    &s.url,
                    &s.transport.as_str(),
                    &s.auth.as_str(),
                    &sealed_headers,
                    &names,
                    &t,
                ],
            )
            .await
            ;
        // Another replica created the same name (or id) meanwhile.
        if let Err(e) = inserted {
            return Err(if is_unique_violation(&e) {
                StoreError::NameTaken(s.name.clone())
            } else {
                e.into()
            });
        }
        if let Some(c) = credential {
            write_credential(&tx, &self.inner.cipher, &s.id, &s.url, c, 1).await?;
        }
        let record = find_server(&tx, &s.id)
            .await?
            .ok_or_else(|| StoreError::NoSuchServer(s.id.clone()))?;
        tx.commit().await?;
        super::credential_written();
        Ok(record)
    }

    async fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        self.client()
            .await?
            .query(
                &format!(
                    "SELECT {SERVER_COLUMNS} FROM servers WHERE deleted_at IS NULL ORDER BY name"
                ),
                &[],
            )
            .await?
            .iter()
            .map(server_row)
            .collect()
    }

    async fn server(&self, name_or_id: &str) -> Result<Option<ServerRecord>, StoreError> {
        find_server(&self.client().await?, name_or_id).await
    }

    async fn headers(&self, server_id: &str) -> Result<Vec<(String, Secret)>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT sealed_headers, url, name FROM servers WHERE id = $1",
                &[&server_id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Vec::new());
        };
        let Some(stored) = row.try_get::<_, Option<Vec<u8>>>(0)? else {
            return Ok(Vec::new());
        };
        let (url, name): (String, String) = (row.try_get(1)?, row.try_get(2)?);
        let pairs = sealed::open_headers(
            &self.inner.cipher,
            server_id,
            &url,
            &stored,
            format!("the stored headers of {name}"),
            format!("remove {name} and add it again with its --header values"),
        )?;
        Ok(pairs
            .into_iter()
            .map(|(k, v)| (k, Secret::new(v)))
            .collect())
    }

    async fn set_enabled(&self, server_id: &str, enabled: bool) -> Result<(), StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE servers SET enabled = $2, updated_at = $3 WHERE id = $1 AND deleted_at IS NULL",
                &[&server_id, &enabled, &now()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        }
        Ok(())
    }

    async fn set_status(
        &self,
        server_id: &str,
        status: LastStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE servers SET last_status = $2, last_error = $3 WHERE id = $1",
                &[&server_id, &status.as_str(), &error],
            )
            .await?;
        Ok(())
    }

    async fn set_protocol(
        &self,
        server_id: &str,
        revision: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE servers SET protocol = $2 WHERE id = $1",
                &[&server_id, &revision],
            )
            .await?;
        Ok(())
    }

    async fn set_tools(&self, server_id: &str, count: Option<u32>) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE servers SET tools = $2 WHERE id = $1",
                &[&server_id, &count.map(i64::from)],
            )
            .await?;
        Ok(())
    }

    async fn remove_server(&self, server_id: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_rows(&tx, &[server_id]).await?;
        tx.execute(
            "DELETE FROM credentials WHERE server_id = $1",
            &[&server_id],
        )
        .await?;
        tx.execute(
            "DELETE FROM person_credentials WHERE server_id = $1",
            &[&server_id],
        )
        .await?;
        let n = tx
            .execute(
                "UPDATE servers SET deleted_at = $2, updated_at = $2, sealed_headers = NULL WHERE id = $1 AND deleted_at IS NULL",
                &[&server_id, &now()],
            )
            .await?;
        tx.commit().await?;
        super::credential_written();
        if n == 0 {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        }
        Ok(())
    }

    async fn purge_server(&self, server_id: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_rows(&tx, &[server_id]).await?;
        tx.execute(
            "DELETE FROM credentials WHERE server_id = $1",
            &[&server_id],
        )
        .await?;
        tx.execute("DELETE FROM servers WHERE id = $1", &[&server_id])
            .await?;
        tx.commit().await?;
        super::credential_written();
        Ok(())
    }

    async fn update_server(
        &self,
        server_id: &str,
        change: &ServerChange,
    ) -> Result<ServerRecord, StoreError> {
        let id = server_id;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if lock_server(&tx, id).await?.is_none() {
            return Err(StoreError::NoSuchServer(id.to_owned()));
        }
        let old = find_server(&tx, id)
            .await?
            .filter(|s| s.id == id)
            .ok_or_else(|| StoreError::NoSuchServer(id.to_owned()))?;
        if let Some(name) = &change.name
            && find_server(&tx, name)
                .await?
                .is_some_and(|other| other.id != id)
        {
            return Err(StoreError::NameTaken(name.clone()));
        }
        let url = change.url.clone().unwrap_or_else(|| old.url.clone());
        let moved = url != old.url;
        let headers: Option<Vec<(String, String)>> = match &change.headers {
            Some(h) => Some(sealed::plain_headers(h)),
            None if moved => {
                let stored: Option<Vec<u8>> = tx
                    .query_one("SELECT sealed_headers FROM servers WHERE id = $1", &[&id])
                    .await?
                    .try_get(0)?;
                match stored {
                    None => None,
                    Some(stored) => Some(sealed::open_headers(
                        &self.inner.cipher,
                        id,
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
            let (sealed, names) = sealed::seal_headers(&self.inner.cipher, id, &url, pairs)?;
            tx.execute(
                "UPDATE servers SET sealed_headers = $2, header_names = $3 WHERE id = $1",
                &[&id, &sealed, &names],
            )
            .await?;
        }
        if moved {
            tx.execute("DELETE FROM credentials WHERE server_id = $1", &[&id])
                .await?;
            tx.execute(
                "DELETE FROM person_credentials WHERE server_id = $1",
                &[&id],
            )
            .await?;
            tx.execute(
                "UPDATE servers SET url = $2, last_status = NULL, last_error = NULL, protocol = NULL, tools = NULL WHERE id = $1",
                &[&id, &url],
            )
            .await?;
        }
        if let Some(name) = &change.name {
            let renamed = tx
                .execute("UPDATE servers SET name = $2 WHERE id = $1", &[&id, name])
                .await;
            if let Err(e) = renamed {
                return Err(if is_unique_violation(&e) {
                    StoreError::NameTaken(name.clone())
                } else {
                    e.into()
                });
            }
        }
        if let Some(t) = change.transport {
            tx.execute(
                "UPDATE servers SET transport = $2, protocol = NULL WHERE id = $1",
                &[&id, &t.as_str()],
            )
            .await?;
        }
        if let Some(a) = change.auth {
            tx.execute(
                "UPDATE servers SET auth = $2 WHERE id = $1",
                &[&id, &a.as_str()],
            )
            .await?;
        }
        tx.execute(
            "UPDATE servers SET updated_at = $2 WHERE id = $1",
            &[&id, &now()],
        )
        .await?;
        let record = find_server(&tx, id)
            .await?
            .ok_or_else(|| StoreError::NoSuchServer(id.to_owned()))?;
        tx.commit().await?;
        super::credential_written();
        Ok(record)
    }

    async fn replace_server(&self, old_id: &str, new_id: &str) -> Result<ServerRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        lock_rows(&tx, &[old_id, new_id]).await?;
        let old = find_server(&tx, old_id)
            .await?
            .filter(|s| s.id == old_id)
            .ok_or_else(|| StoreError::NoSuchServer(old_id.to_owned()))?;
        tx.execute("DELETE FROM credentials WHERE server_id = $1", &[&old_id])
            .await?;
        tx.execute(
            "DELETE FROM person_credentials WHERE server_id = $1",
            &[&old_id],
        )
        .await?;
        tx.execute("DELETE FROM servers WHERE id = $1", &[&old_id])
            .await?;
        let n = tx
            .execute(
                "UPDATE servers SET name = $2, updated_at = $3 WHERE id = $1 AND deleted_at IS NULL",
                &[&new_id, &old.name, &now()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSuchServer(new_id.to_owned()));
        }
        let record = find_server(&tx, new_id)
            .await?
            .ok_or_else(|| StoreError::NoSuchServer(new_id.to_owned()))?;
        tx.commit().await?;
        super::credential_written();
        Ok(record)
    }

    async fn credential(&self, server_id: &str) -> Result<Option<StoredCredential>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope, c.issuer, c.token_endpoint,
                        c.client_id, c.resource, c.as_metadata, c.version, c.updated_at, s.url, s.name
                 FROM credentials c JOIN servers s ON s.id = c.server_id WHERE c.server_id = $1",
                &[&server_id],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let (row, version, updated, url, name) = credential_row(&r)?;
        sealed::open_credential(
            &self.inner.cipher,
            server_id,
            &url,
            &name,
            row,
            version.max(0) as u64,
            updated.max(0) as u64,
        )
        .map(Some)
    }

    async fn save_credential(
        &self,
        server_id: &str,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(url) = lock_server(&tx, server_id).await? else {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        };
        let current = credential_version(&tx, server_id).await?;
        if let Some(expected) = expected_version
            && current != Some(expected)
        {
            return Err(StoreError::Conflict);
        }
        let version = current.map_or(1, |v| v + 1);
        write_credential(
            &tx,
            &self.inner.cipher,
            server_id,
            &url,
            credential,
            version,
        )
        .await?;
        tx.commit().await?;
        super::credential_written();
        Ok(version)
    }

    async fn forget_credential(&self, server_id: &str) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // After a refresh holding the row, never before it: a logout stays a logout.
        lock_rows(&tx, &[server_id]).await?;
        tx.execute(
            "DELETE FROM credentials WHERE server_id = $1",
            &[&server_id],
        )
        .await?;
        tx.commit().await?;
        super::credential_written();
        Ok(())
    }

    async fn set_per_person(&self, server_id: &str, per_person: bool) -> Result<(), StoreError> {
        let n = self
            .client()
            .await?
            .execute(
                "UPDATE servers SET per_person = $2, updated_at = $3 WHERE id = $1 AND deleted_at IS NULL",
                &[&server_id, &per_person, &now()],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        }
        Ok(())
    }

    async fn person_credential(
        &self,
        server_id: &str,
        person: &Person,
    ) -> Result<Option<StoredCredential>, StoreError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT c.kind, c.sealed, c.expires_at, c.issued_at, c.scope, c.issuer, c.token_endpoint,
                        c.client_id, c.resource, c.as_metadata, c.version, c.updated_at, s.url, s.name
                 FROM person_credentials c JOIN servers s ON s.id = c.server_id
                 WHERE c.server_id = $1 AND c.person_issuer = $2 AND c.subject = $3 AND s.deleted_at IS NULL",
                &[&server_id, &person.issuer, &person.subject],
            )
            .await?;
        let Some(r) = row else {
            return Ok(None);
        };
        let (row, version, updated, url, name) = credential_row(&r)?;
        sealed::open_credential(
            &self.inner.cipher,
            &person.binding(server_id),
            &url,
            &name,
            row,
            version.max(0) as u64,
            updated.max(0) as u64,
        )
        .map(Some)
    }

    async fn save_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The server's row first, then the person's: the order every writer takes.
        let Some(url) = lock_server(&tx, server_id).await? else {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        };
        let current = tx
            .query_opt(
                "SELECT version FROM person_credentials
                 WHERE server_id = $1 AND person_issuer = $2 AND subject = $3 FOR UPDATE",
                &[&server_id, &person.issuer, &person.subject],
            )
            .await?
            .map(|r| r.try_get::<_, i64>(0))
            .transpose()?
            .map(|v| v.max(0) as u64);
        if let Some(expected) = expected_version
            && current != Some(expected)
        {
            return Err(StoreError::Conflict);
        }
        let version = current.map_or(1, |v| v + 1);
        let row = sealed::seal_credential(
            &self.inner.cipher,
            &person.binding(server_id),
            &url,
            credential,
        )?;
        tx.execute(
            "INSERT INTO person_credentials (server_id, person_issuer, subject, kind, sealed, expires_at,
                 issued_at, scope, issuer, token_endpoint, client_id, resource, as_metadata, version, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
             ON CONFLICT (server_id, person_issuer, subject) DO UPDATE SET kind = excluded.kind,
                 sealed = excluded.sealed, expires_at = excluded.expires_at, issued_at = excluded.issued_at,
                 scope = excluded.scope, issuer = excluded.issuer, token_endpoint = excluded.token_endpoint,
                 client_id = excluded.client_id, resource = excluded.resource,
                 as_metadata = excluded.as_metadata, version = excluded.version,
                 updated_at = excluded.updated_at",
            &[
                &server_id,
                &person.issuer,
                &person.subject,
                &row.kind,
                &row.sealed,
                &row.expires_at,
                &row.issued_at,
                &row.scope,
                &row.issuer,
                &row.token_endpoint,
                &row.client_id,
                &row.resource,
                &row.as_metadata,
                &(version as i64),
                &now(),
            ],
        )
        .await?;
        tx.commit().await?;
        super::credential_written();
        Ok(version)
    }

    async fn forget_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        version: Option<u64>,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM person_credentials WHERE server_id = $1 AND person_issuer = $2 AND subject = $3
                 AND ($4::BIGINT IS NULL OR version = $4)",
                &[
                    &server_id,
                    &person.issuer,
                    &person.subject,
                    &version.map(|v| v as i64),
                ],
            )
            .await?;
        super::credential_written();
        Ok(())
    }

    async fn put_flow(
        &self,
        key: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        // Expired steps go as new ones come: links people never opened do not pile up.
        let cutoff = now() - super::state::PENDING_FLOW_TTL.as_secs() as i64;
        self.client()
            .await?
            .execute(
                "DELETE FROM pending_flows WHERE created_at < $1",
                &[&cutoff],
            )
            .await?;
        self.save_pending_flow(key, server_id, issuer, data).await
    }

    async fn take_flow(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = super::state::state_hash(key);
        let cutoff = now() - super::state::PENDING_FLOW_TTL.as_secs() as i64;
        let row = self
            .client()
            .await?
            .query_opt(
                "DELETE FROM pending_flows WHERE state_hash = $1 RETURNING data, created_at",
                &[&key],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let (sealed, created): (Vec<u8>, i64) = (r.try_get(0)?, r.try_get(1)?);
        if created < cutoff {
            return Ok(None);
        }
        self.inner
            .cipher
            .open(&sealed::pending_flow_aad(&key), &sealed)
            .map(|p| Some(p.to_vec()))
    }

    async fn set_token(&self, server_id: &str, token: &Secret) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(url) = lock_server(&tx, server_id).await? else {
            return Err(StoreError::NoSuchServer(server_id.to_owned()));
        };
        tx.execute(
            "UPDATE servers SET auth = 'token', updated_at = $2 WHERE id = $1",
            &[&server_id, &now()],
        )
        .await?;
        let version = credential_version(&tx, server_id)
            .await?
            .map_or(1, |v| v + 1);
        let c = Credential::Bearer {
            token: token.clone(),
        };
        write_credential(&tx, &self.inner.cipher, server_id, &url, &c, version).await?;
        tx.commit().await?;
        super::credential_written();
        Ok(version)
    }

    /// A lease is a row with an expiry: taken when there is none, when it has
    /// expired (its holder died or hung), or when `holder` holds it already (which
    /// extends it). One statement, on the database's clock (replicas' clocks may
    /// differ), so two replicas never both take it.
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        let ttl_ms = ttl.as_millis().min(i64::MAX as u128 / 2) as i64;
        let row = self
            .client()
            .await?
            .query_opt(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
                 INSERT INTO leases (key, holder, expires_at_ms)
                 SELECT $1, $2, now.ms + $3 FROM now
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms
                 WHERE leases.expires_at_ms <= (SELECT ms FROM now) OR leases.holder = excluded.holder
                 RETURNING holder",
                &[&key, &holder, &ttl_ms],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "DELETE FROM leases WHERE key = $1 AND holder = $2",
                &[&key, &holder],
            )
            .await?;
        Ok(())
    }

    async fn pending_flows(&self) -> Result<Vec<PendingFlowSummary>, StoreError> {
        let client = self.client().await?;
        let cutoff = now() - super::state::PENDING_FLOW_TTL.as_secs() as i64;
        client
            .execute(
                "DELETE FROM pending_flows WHERE created_at < $1",
                &[&cutoff],
            )
            .await?;
        client
            .query(
                "SELECT server_id, issuer, created_at FROM pending_flows ORDER BY created_at",
                &[],
            )
            .await?
            .iter()
            .map(|r| {
                Ok(PendingFlowSummary {
                    server_id: r.try_get(0)?,
                    issuer: r.try_get(1)?,
                    created_at: r.try_get::<_, i64>(2)?.max(0) as u64,
                })
            })
            .collect()
    }

    fn describe(&self) -> StoreInfo {
        StoreInfo {
            path: PathBuf::from(&self.inner.shown),
            key_source: self.inner.key_source.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl crate::auth::PendingFlows for PostgresStore {
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
impl RegistrationStore for PostgresStore {
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT client_id, sealed, auth_method, kind, redirect_uris FROM registrations WHERE issuer = $1",
                &[&issuer],
            )
            .await
            .map_err(StoreError::from)?;
        let Some(r) = row else {
            return Ok(None);
        };
        let row = sealed::RegistrationRow {
            client_id: r.try_get(0).map_err(StoreError::from)?,
            sealed: r.try_get(1).map_err(StoreError::from)?,
            auth_method: r.try_get(2).map_err(StoreError::from)?,
            kind: r.try_get(3).map_err(StoreError::from)?,
            redirect_uris: r.try_get(4).map_err(StoreError::from)?,
        };
        Ok(Some(sealed::open_registration(
            &self.inner.cipher,
            issuer,
            row,
        )?))
    }

    async fn save(&self, r: &StoredRegistration) -> Result<(), AuthError> {
        let row = sealed::seal_registration(&self.inner.cipher, r);
        self.client()
            .await?
            .execute(
                "INSERT INTO registrations (issuer, client_id, sealed, auth_method, kind, redirect_uris, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (issuer) DO UPDATE SET client_id = excluded.client_id, sealed = excluded.sealed,
                     auth_method = excluded.auth_method, kind = excluded.kind,
                     redirect_uris = excluded.redirect_uris, created_at = excluded.created_at",
                &[
                    &r.issuer,
                    &row.client_id,
                    &row.sealed,
                    &row.auth_method,
                    &row.kind,
                    &row.redirect_uris,
                    &now(),
                ],
            )
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }

    async fn forget(&self, issuer: &str) -> Result<(), AuthError> {
        self.client()
            .await?
            .execute("DELETE FROM registrations WHERE issuer = $1", &[&issuer])
            .await
            .map_err(StoreError::from)?;
        Ok(())
    }
}
