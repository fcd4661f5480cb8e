//! Where keyway keeps servers and credentials: an embedded SQLite database at
//! `<home>/keyway.db`, every secret column encrypted with XChaCha20-Poly1305, behind
//! [`Store`] (so a shared gateway can use another backend later) and rmcp's
//! `CredentialStore` / `StateStore` traits ([`rmcp_adapter`]).
//!
//! Invariants: a credential write is one transaction (old or new, never half);
//! creating a server with its credential is one transaction; a store whose key is
//! missing or wrong is an error and is never wiped; a refresh that rotates a refresh
//! token happens once across all processes ([`tokens::StoredTokens`]).

mod any;
mod binding;
mod crypto;
mod postgres;
pub mod rmcp_adapter;
mod sealed;
mod sqlite;
pub mod state;
pub mod tokens;

use std::{fmt, path::PathBuf, time::SystemTime};

use oauth2::{AccessToken, RefreshToken};
use serde::{Deserialize, Serialize};

pub use any::{AnyStore, LocationError, StoreLocation};
pub use crypto::{KeySource, SealingKey, private_token_file};
pub use postgres::{PgOptions, PostgresStore};
pub use sqlite::{OpenOptions, SqliteStore};

use crate::{
    Secret,
    auth::{RegistrationStore, metadata::AuthServerMetadata},
};

/// How a server is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Streamable HTTP.
    Http,
    /// The legacy HTTP+SSE transport.
    Sse,
}

impl Transport {
    /// The name stored and shown: `http` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Sse => "sse",
        }
    }

    /// The transport named `s` (as [`Transport::as_str`] writes it); `None` for any
    /// other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "sse" => Some(Self::Sse),
            _ => None,
        }
    }
}

/// What a server takes to get in, as found when it was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthKind {
    /// Nothing.
    None,
    /// A static token (bearer or API key header).
    Token,
    /// OAuth: keyway can authorize.
    Oauth,
}

impl AuthKind {
    /// The name stored and shown: `none`, `token` or `oauth`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
            Self::Oauth => "oauth",
        }
    }

    /// The kind named `s` (as [`AuthKind::as_str`] writes it); `None` for any other
    /// text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "token" => Some(Self::Token),
            "oauth" => Some(Self::Oauth),
            _ => None,
        }
    }
}

/// The last thing a connection learned about a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LastStatus {
    /// The connection succeeded.
    Connected,
    /// 401 (or a refresh that failed for good).
    NeedsAuth,
    /// 401 while sending a static token.
    TokenRejected,
    /// Anything else: unreachable, 5xx, protocol errors.
    Error,
}

impl LastStatus {
    /// The name stored and shown: `connected`, `needs-auth`, `token-rejected` or
    /// `error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NeedsAuth => "needs-auth",
            Self::TokenRejected => "token-rejected",
            Self::Error => "error",
        }
    }

    /// The status named `s` (as [`LastStatus::as_str`] writes it); `None` for any
    /// other text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "connected" => Some(Self::Connected),
            "needs-auth" => Some(Self::NeedsAuth),
            "token-rejected" => Some(Self::TokenRejected),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A stored server (never its secrets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServerRecord {
    /// Chosen by the caller, so a retried add never duplicates.
    pub id: String,
    /// The name people use for it; unique among the servers not removed.
    pub name: String,
    /// The MCP endpoint URL.
    pub url: String,
    /// How the server is reached.
    pub transport: Transport,
    /// `false` once disabled: keyway does not connect to it until it is enabled again.
    pub enabled: bool,
    /// What the server takes to get in, as found when it was added.
    pub auth: AuthKind,
    /// Names of extra headers (values are secret and stay in the store).
    pub header_names: Vec<String>,
    /// When the server was added, in seconds since the Unix epoch.
    pub created_at: u64,
    /// When the record last changed (added, enabled or disabled, removed), in seconds
    /// since the Unix epoch; recording a status does not change it.
    pub updated_at: u64,
    /// What the last connection learned ([`Store::set_status`]); `None` before any.
    pub last_status: Option<LastStatus>,
    /// The error the last connection recorded with its status, if any.
    pub last_error: Option<String>,
    /// The MCP revision the server spoke when keyway last connected
    /// ([`Store::set_protocol`]); `None` before any, or after its URL changed.
    pub protocol: Option<String>,
    /// How many tools the server listed at the last connection that listed them
    /// ([`Store::set_tools`]); `None` before any, or after its URL changed.
    pub tools: Option<u32>,
    /// Whether each person behind a team gateway authorizes it as themselves
    /// ([`Store::set_per_person`]): the gateway then sends a person's own tokens
    /// ([`Store::person_credential`]), never the server's own credential.
    pub per_person: bool,
}

/// A person signed in at the organisation's authorization server, as a team gateway
/// knows them: the issuer and subject of their access token. A per-person server's
/// tokens are kept for each of them apart ([`Store::person_credential`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
pub struct Person {
    /// The organisation's authorization server.
    pub issuer: String,
    /// Who they are there (`sub`).
    pub subject: String,
}

impl Person {
    /// What a person's credential for `server_id` is sealed to, in the place of the
    /// server's id: a credential moved to another person's row does not open.
    pub(crate) fn binding(&self, server_id: &str) -> String {
        serde_json::json!(["keyway/person/1", server_id, self.issuer, self.subject]).to_string()
    }

    /// A short name for the person that does not show who they are (a hash of the
    /// issuer and subject), for lease keys and logs.
    pub fn tag(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("{}\0{}", self.issuer, self.subject));
        digest[..9].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A server to create.
#[derive(Clone, Debug)]
pub struct NewServer {
    /// Chosen by the caller, so a retried add never duplicates.
    pub id: String,
    /// The name people use for it; must not be taken by another server.
    pub name: String,
    /// The MCP endpoint URL.
    pub url: String,
    /// How the server is reached.
    pub transport: Transport,
    /// What the server takes to get in.
    pub auth: AuthKind,
    /// Extra request headers (e.g. an API key header); values are encrypted.
    pub headers: Vec<(String, Secret)>,
}

/// What to change in a saved server ([`Store::update_server`]); `None` keeps it.
#[derive(Clone, Debug, Default)]
pub struct ServerChange {
    /// A new name (not taken by another server).
    pub name: Option<String>,
    /// A new MCP endpoint URL. The credential goes (it was issued for the old URL's
    /// resource and is sealed to it) and the last status is cleared.
    pub url: Option<String>,
    /// A new transport.
    pub transport: Option<Transport>,
    /// What the server takes to get in.
    pub auth: Option<AuthKind>,
    /// The extra headers, all of them (an empty list removes them).
    pub headers: Option<Vec<(String, Secret)>>,
}

/// OAuth tokens with everything that binds them (seed: a blob without the binding
/// fields can't refresh and falls into a re-authorize loop).
#[derive(Clone, Debug)]
pub struct OAuthCredential {
    /// The access token sent to the resource.
    pub access_token: AccessToken,
    /// The refresh token, when the authorization server issued one.
    pub refresh_token: Option<RefreshToken>,
    /// When the access token expires (from `expires_in`, RFC 6749 section 5.1); `None`
    /// when the token response did not say.
    pub expires_at: Option<SystemTime>,
    /// When the access token was obtained.
    pub issued_at: SystemTime,
    /// The scopes granted (the scopes requested, when the token response did not
    /// list them).
    pub scopes: Vec<String>,
    /// The authorization server's issuer identifier (RFC 8414 section 2).
    pub issuer: String,
    /// The token endpoint refreshes go to.
    pub token_endpoint: String,
    /// The client the tokens were issued to.
    pub client_id: String,
    /// The canonical resource URI the tokens were issued for (RFC 8707); they are
    /// sent to no other.
    pub resource: String,
    /// The authorization server metadata the tokens were obtained under.
    pub as_metadata: Option<AuthServerMetadata>,
    /// How the access token is presented; a DPoP-bound one needs [`dpop`](Self::dpop).
    pub token_type: crate::auth::token::TokenType,
    /// The DPoP key the tokens are bound to (RFC 9449), sealed with them.
    pub dpop: Option<std::sync::Arc<crate::auth::dpop::DpopKey>>,
    /// What the provider needs done differently on refresh (its profile and the
    /// flags), sealed with the tokens.
    pub quirks: crate::auth::profile::Quirks,
}

/// Credential writes this process made, through any store handle: a reader that keeps a
/// copy of a credential reads it again once this moves, so its own process's
/// authorization, step-up or logout is seen at once.
static CREDENTIAL_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub(crate) fn credential_written() {
    CREDENTIAL_WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

pub(crate) fn credential_writes() -> u64 {
    CREDENTIAL_WRITES.load(std::sync::atomic::Ordering::SeqCst)
}

/// A credential for one server.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A static token, sent as `Authorization: Bearer` (`--token`).
    Bearer {
        /// The token.
        token: Secret,
    },
    /// Tokens from an OAuth flow, with their binding.
    OAuth(Box<OAuthCredential>),
}

impl Credential {
    /// The kind as stored: `bearer` or `oauth`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer { .. } => "bearer",
            Self::OAuth(_) => "oauth",
        }
    }
}

/// A credential as stored, with its version (bumped by every write; compare-and-swap
/// on it keeps concurrent refreshes from losing a rotated refresh token).
#[derive(Clone, Debug)]
pub struct StoredCredential {
    /// The credential.
    pub credential: Credential,
    /// 1 when written where none was stored, one more with every write after.
    pub version: u64,
    /// When it was last written, in seconds since the Unix epoch.
    pub updated_at: u64,
}

/// A pending authorization flow, keyed by `state` (kept 10 minutes).
#[derive(Clone, Debug, Serialize)]
pub struct PendingFlowSummary {
    /// The stored server the flow authorizes, when whoever recorded the flow
    /// ([`SqliteStore::save_pending_flow`]) named one.
    pub server_id: Option<String>,
    /// The issuer of the authorization server the flow runs against.
    pub issuer: String,
    /// When the flow started, in seconds since the Unix epoch.
    pub created_at: u64,
}

/// Why the store failed. Every message says what to do; nothing stored is lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store exists but none of the places a key can come from has one.
    #[error(
        "the store at {path} is encrypted with a key keyway cannot find (looked in: {looked}); restore the key file, or set KEYWAY_STORE_KEY. The store was not changed"
    )]
    KeyMissing {
        /// The database file.
        path: PathBuf,
        /// The places looked in, for the message.
        looked: String,
    },
    /// A new shared store (Postgres) and no key given for it: one is never made there,
    /// since every machine sharing the store needs the same.
    #[error(
        "the new store at {path} needs its key: set KEYWAY_STORE_KEY to 32 random bytes in base64 (`head -c 32 /dev/urandom | base64`), the same on every machine that shares the store, and keep it safe. Nothing was written"
    )]
    KeyNeeded {
        /// The database (its URL without the password).
        path: PathBuf,
    },
    /// Keys were found, but none of them opens the store.
    #[error(
        "no store key opens {path} (tried: {tried}); it was made with another key. Set KEYWAY_STORE_KEY to the right one, or move the file aside to start over. The store was not changed"
    )]
    WrongKey {
        /// The database file.
        path: PathBuf,
        /// The key sources tried, for the message.
        tried: String,
    },
    /// The file is not a keyway store (not SQLite, or another program's database).
    #[error(
        "{path} is not a keyway store ({why}); keyway never overwrites it: move it aside, or use another --home"
    )]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// What gave it away.
        why: String,
    },
    /// SQLite reports the database damaged.
    #[error(
        "{path} is damaged ({why}); keyway never deletes it: move it aside, or restore a backup"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's diagnosis.
        why: String,
    },
    /// The schema version is newer than this keyway knows.
    #[error(
        "{path} was written by a newer keyway (schema {found}, this one knows {known}); upgrade keyway"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// The schema version in the file (`user_version`).
        found: i64,
        /// The newest schema version this keyway writes.
        known: i64,
    },
    /// The key file can be read or changed by another user (or is another user's), and
    /// no other key is at hand.
    #[error(
        "the store key file {path} is not used: {why}. If nobody else could have read it, `chmod 600` it (as its owner); otherwise treat the stored secrets as exposed: move the store aside and add the servers again. The store was not changed"
    )]
    KeyFileExposed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its owner or mode.
        why: String,
    },
    /// A secret file keyway made ([`private_token_file`], such as the gateway's token)
    /// can be read or changed by another user, or is another user's.
    #[error(
        "{path} is not used: {why}. `chmod 600` it (as its owner) if nobody else could have read it; otherwise delete it, and keyway makes a new one"
    )]
    SecretFileExposed {
        /// The file.
        path: PathBuf,
        /// What is wrong with its owner or mode.
        why: String,
    },
    /// `KEYWAY_STORE_KEY` is set but is not a key.
    #[error("KEYWAY_STORE_KEY is not a 32-byte key in base64 or hex")]
    BadEnvKey,
    /// Another server already has this name (or id).
    #[error("a server named {0:?} already exists")]
    NameTaken(String),
    /// No server (not removed) has this name or id.
    #[error("no server named {0:?}")]
    NoSuchServer(String),
    /// A compare-and-swap write found another version than the one expected
    /// ([`Store::save_credential`]).
    #[error("the credential changed under us (someone else wrote it first)")]
    Conflict,
    /// A file or directory of the store cannot be read, written or created.
    #[error("cannot use {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed (busy past its timeout, disk full, ...); SQLite's message.
    #[error("the store failed: {0}")]
    Sqlite(String),
    /// The Postgres store failed (unreachable, a statement refused...); what
    /// Postgres or the driver said, never the database's password.
    #[error("the Postgres store failed: {0}")]
    Postgres(String),
    /// A stored value does not decrypt or does not parse; what failed.
    #[error("a stored value cannot be decrypted or read ({0}); the store key may be wrong")]
    Decode(String),
    /// One sealed value does not open: its row was edited outside keyway (a URL, an
    /// issuer, an endpoint...), or it was damaged. It is never used; the rest of the
    /// store is unaffected.
    #[error(
        "{what} cannot be opened: its record was changed outside keyway, or it is damaged, so it is not used. {fix}"
    )]
    Unreadable {
        /// The value, for the message ("the stored credential of NAME").
        what: String,
        /// What to do about it.
        fix: String,
    },
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sqlite(e.to_string())
    }
}

impl From<StoreError> for crate::auth::AuthError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// keyway's store. Async so a networked backend fits; the SQLite one runs its
/// statements on the blocking pool.
#[async_trait::async_trait]
pub trait Store: RegistrationStore + Send + Sync + fmt::Debug {
    /// Create a server, with its credential if any, in one transaction. Creating the
    /// same id again with the same name and URL returns the existing record.
    async fn create_server(
        &self,
        server: &NewServer,
        credential: Option<&Credential>,
    ) -> Result<ServerRecord, StoreError>;
    /// Every server not removed, by name.
    async fn servers(&self) -> Result<Vec<ServerRecord>, StoreError>;
    /// A server by name or id.
    async fn server(&self, name_or_id: &str) -> Result<Option<ServerRecord>, StoreError>;
    /// The extra headers of a server (decrypted).
    async fn headers(&self, server_id: &str) -> Result<Vec<(String, Secret)>, StoreError>;
    /// Enable or disable a server ([`StoreError::NoSuchServer`] if it is not there).
    async fn set_enabled(&self, server_id: &str, enabled: bool) -> Result<(), StoreError>;
    /// Record what the last connection learned, and its error if any.
    async fn set_status(
        &self,
        server_id: &str,
        status: LastStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Note the MCP revision the server spoke (`None`: forget it, so the next
    /// connection asks again).
    async fn set_protocol(&self, server_id: &str, revision: Option<&str>)
    -> Result<(), StoreError>;
    /// Note how many tools the server listed (`None`: forget it).
    async fn set_tools(&self, server_id: &str, count: Option<u32>) -> Result<(), StoreError>;
    /// Remove a server (soft delete) and its credential, in one transaction.
    async fn remove_server(&self, server_id: &str) -> Result<(), StoreError>;
    /// Delete a server row and its credential for good (rolling back a failed add).
    async fn purge_server(&self, server_id: &str) -> Result<(), StoreError>;
    /// Change a server's name, URL, transport, auth kind or headers, in one
    /// transaction ([`ServerChange`] says what a new URL takes away). The headers kept
    /// across a new URL are sealed to it.
    async fn update_server(
        &self,
        server_id: &str,
        change: &ServerChange,
    ) -> Result<ServerRecord, StoreError>;
    /// Put the server `new_id` in the place of `old_id` (`keyway add --force` on a taken
    /// name): the old server and its credential are deleted and the new one takes its
    /// name, in one transaction.
    async fn replace_server(&self, old_id: &str, new_id: &str) -> Result<ServerRecord, StoreError>;

    /// The credential of a server, decrypted; `None` if it has none.
    /// [`StoreError::Unreadable`] when it does not open.
    async fn credential(&self, server_id: &str) -> Result<Option<StoredCredential>, StoreError>;
    /// Write a credential. With `expected_version`, only if the stored version is still
    /// that one ([`StoreError::Conflict`] otherwise). Returns the new version.
    async fn save_credential(
        &self,
        server_id: &str,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// Delete the credential of a server (none stored is not an error).
    async fn forget_credential(&self, server_id: &str) -> Result<(), StoreError>;
    /// Give a server a static token in place of whatever credential it had, and mark
    /// it as a token server, in one transaction. Returns the credential's new version.
    async fn set_token(&self, server_id: &str, token: &crate::Secret) -> Result<u64, StoreError>;

    /// Mark a server as authorized by each person behind a team gateway, or not
    /// ([`ServerRecord::per_person`]).
    async fn set_per_person(&self, server_id: &str, per_person: bool) -> Result<(), StoreError>;
    /// `person`'s own credential for a per-person server, decrypted; `None` if they
    /// have none.
    async fn person_credential(
        &self,
        server_id: &str,
        person: &Person,
    ) -> Result<Option<StoredCredential>, StoreError>;
    /// Write `person`'s credential for a server, as [`Store::save_credential`] does
    /// the server's own (compare-and-swap on `expected_version`).
    async fn save_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    /// Delete `person`'s credential for a server (none stored is not an error); with
    /// `version`, only while the stored one is still that version.
    async fn forget_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        version: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Keep `data` (sealed) under the secret `key` for [`state::PENDING_FLOW_TTL`]:
    /// a step of a flow that any process sharing the store may take next.
    async fn put_flow(
        &self,
        key: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError>;
    /// Take what [`Store::put_flow`] kept under `key`, once: it is gone after this
    /// (for whoever asks next, in any process), and `None` once it expired.
    async fn take_flow(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Take a lease named `key` for `ttl` unless another holder has a live one.
    /// Returns whether `holder` holds it now (`true` also when it held it already).
    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;
    /// Give up the lease `key` if `holder` holds it; otherwise do nothing.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// The authorization flows started and not finished within
    /// [`state::PENDING_FLOW_TTL`], oldest first.
    async fn pending_flows(&self) -> Result<Vec<PendingFlowSummary>, StoreError>;

    /// Where the store lives and where its key came from (for `keyway doctor`).
    fn describe(&self) -> StoreInfo;
}

/// Where a store lives and where its key came from.
#[derive(Clone, Debug, Serialize)]
pub struct StoreInfo {
    /// The database file.
    pub path: PathBuf,
    /// Where the key came from, in words ([`KeySource`]'s `Display`).
    pub key_source: String,
}

/// A lease holder's name: `prefix`, this process, and a random tag, so two processes
/// with the same id (each replica is PID 1 in its container) never pass for one.
pub(crate) fn lease_holder(prefix: &str) -> String {
    use rand::Rng as _;
    let mut tag = [0u8; 6];
    rand::rng().fill_bytes(&mut tag);
    let tag: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{}-{tag}", std::process::id())
}

/// Seconds since the epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn from_unix(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s)
}
