//! Where keyway keeps servers and credentials: an embedded SQLite database at
//! `<home>/keyway.db`, every secret column encrypted with XChaCha20-Poly1305, behind
//! [`Store`] (so a shared gateway can use another backend later) and rmcp's
//! `CredentialStore` / `StateStore` traits ([`rmcp_adapter`]).
//!
//! Invariants: a credential write is one transaction (old or new, never half);
//! creating a server with its credential is one transaction; a store whose key is
//! missing or wrong is an error and is never wiped; a refresh that rotates a refresh
//! token happens once across all processes ([`tokens::StoredTokens`]).

mod binding;
mod crypto;
pub mod rmcp_adapter;
mod sqlite;
pub mod state;
pub mod tokens;

use std::{fmt, path::PathBuf, time::SystemTime};

use oauth2::{AccessToken, RefreshToken};
use serde::{Deserialize, Serialize};

pub use crypto::{KeySource, private_token_file};
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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Sse => "sse",
        }
    }

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
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Token => "token",
            Self::Oauth => "oauth",
        }
    }

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
    Connected,
    /// 401 (or a refresh that failed for good).
    NeedsAuth,
    /// 401 while sending a static token.
    TokenRejected,
    /// Anything else: unreachable, 5xx, protocol errors.
    Error,
}

impl LastStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "connected",
            Self::NeedsAuth => "needs-auth",
            Self::TokenRejected => "token-rejected",
            Self::Error => "error",
        }
    }

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
    pub name: String,
    pub url: String,
    pub transport: Transport,
    pub enabled: bool,
    pub auth: AuthKind,
    /// Names of extra headers (values are secret and stay in the store).
    pub header_names: Vec<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub last_status: Option<LastStatus>,
    pub last_error: Option<String>,
}

/// A server to create.
#[derive(Clone, Debug)]
pub struct NewServer {
    pub id: String,
    pub name: String,
    pub url: String,
    pub transport: Transport,
    pub auth: AuthKind,
    /// Extra request headers (e.g. an API key header); values are encrypted.
    pub headers: Vec<(String, Secret)>,
}

/// OAuth tokens with everything that binds them (seed: a blob without the binding
/// fields can't refresh and falls into a re-authorize loop).
#[derive(Clone, Debug)]
pub struct OAuthCredential {
    pub access_token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    pub expires_at: Option<SystemTime>,
    pub issued_at: SystemTime,
    pub scopes: Vec<String>,
    pub issuer: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub resource: String,
    /// The authorization server metadata the tokens were obtained under.
    pub as_metadata: Option<AuthServerMetadata>,
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
    Bearer { token: Secret },
    OAuth(Box<OAuthCredential>),
}

impl Credential {
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
    pub credential: Credential,
    pub version: u64,
    pub updated_at: u64,
}

/// A pending authorization flow, keyed by `state` (kept 10 minutes).
#[derive(Clone, Debug, Serialize)]
pub struct PendingFlowSummary {
    pub server_id: Option<String>,
    pub issuer: String,
    pub created_at: u64,
}

/// Why the store failed. Every message says what to do; nothing stored is lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "the store at {path} is encrypted with a key keyway cannot find (looked in: {looked}); restore the key file, or set KEYWAY_STORE_KEY. The store was not changed"
    )]
    KeyMissing { path: PathBuf, looked: String },
    #[error(
        "no store key opens {path} (tried: {tried}); it was made with another key. Set KEYWAY_STORE_KEY to the right one, or move the file aside to start over. The store was not changed"
    )]
    WrongKey { path: PathBuf, tried: String },
    #[error(
        "{path} is not a keyway store ({why}); keyway never overwrites it: move it aside, or use another --home"
    )]
    Foreign { path: PathBuf, why: String },
    #[error(
        "{path} is damaged ({why}); keyway never deletes it: move it aside, or restore a backup"
    )]
    Corrupt { path: PathBuf, why: String },
    #[error(
        "{path} was written by a newer keyway (schema {found}, this one knows {known}); upgrade keyway"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "the store key file {path} is not used: {why}. If nobody else could have read it, `chmod 600` it (as its owner); otherwise treat the stored secrets as exposed: move the store aside and add the servers again. The store was not changed"
    )]
    KeyFileExposed { path: PathBuf, why: String },
    #[error(
        "{path} is not used: {why}. `chmod 600` it (as its owner) if nobody else could have read it; otherwise delete it, and keyway makes a new one"
    )]
    SecretFileExposed { path: PathBuf, why: String },
    #[error("KEYWAY_STORE_KEY is not a 32-byte key in base64 or hex")]
    BadEnvKey,
    #[error("a server named {0:?} already exists")]
    NameTaken(String),
    #[error("no server named {0:?}")]
    NoSuchServer(String),
    #[error("the credential changed under us (someone else wrote it first)")]
    Conflict,
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the store failed: {0}")]
    Sqlite(String),
    #[error("a stored value cannot be decrypted or read ({0}); the store key may be wrong")]
    Decode(String),
    /// One sealed value does not open: its row was edited outside keyway (a URL, an
    /// issuer, an endpoint...), or it was damaged. It is never used; the rest of the
    /// store is unaffected.
    #[error(
        "{what} cannot be opened: its record was changed outside keyway, or it is damaged, so it is not used. {fix}"
    )]
    Unreadable { what: String, fix: String },
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
    async fn set_enabled(&self, server_id: &str, enabled: bool) -> Result<(), StoreError>;
    async fn set_status(
        &self,
        server_id: &str,
        status: LastStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Remove a server (soft delete) and its credential, in one transaction.
    async fn remove_server(&self, server_id: &str) -> Result<(), StoreError>;
    /// Delete a server row and its credential for good (rolling back a failed add).
    async fn purge_server(&self, server_id: &str) -> Result<(), StoreError>;

    async fn credential(&self, server_id: &str) -> Result<Option<StoredCredential>, StoreError>;
    /// Write a credential. With `expected_version`, only if the stored version is still
    /// that one ([`StoreError::Conflict`] otherwise). Returns the new version.
    async fn save_credential(
        &self,
        server_id: &str,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError>;
    async fn forget_credential(&self, server_id: &str) -> Result<(), StoreError>;

    /// Take a lease named `key` for `ttl` unless another holder has a live one.
    async fn try_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError>;
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    async fn pending_flows(&self) -> Result<Vec<PendingFlowSummary>, StoreError>;

    /// Where the store lives and where its key came from (for `keyway doctor`).
    fn describe(&self) -> StoreInfo;
}

#[derive(Clone, Debug, Serialize)]
pub struct StoreInfo {
    pub path: PathBuf,
    pub key_source: String,
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
