//! Either store, chosen where keyway starts: SQLite in the home (one person, the
//! default) or Postgres (a team's gateway, `--store postgres://...` or
//! `KEYWAY_STORE`). Everything past the start takes an [`AnyStore`].

use std::{path::Path, time::Duration};

use super::{
    Credential, NewServer, OpenOptions, PendingFlowSummary, Person, PgOptions, PostgresStore,
    ServerChange, ServerRecord, SqliteStore, Store, StoreError, StoreInfo, StoredCredential,
    postgres::shown_url,
};
use crate::{
    Secret,
    auth::{AuthError, PendingFlow, PendingFlows, RegistrationStore, StoredRegistration},
};

/// Where the store is: the home's SQLite file, or a Postgres database.
#[derive(Clone)]
pub enum StoreLocation {
    /// `<home>/keyway.db`.
    Home,
    /// A Postgres database; the URL may carry a password.
    Postgres(Secret),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Home => f.write_str("Home"),
            Self::Postgres(url) => write!(f, "Postgres({})", shown_url(url.expose())),
        }
    }
}

/// Why a store location was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocationError {
    /// Not a `postgres://` or `postgresql://` URL.
    #[error(
        "{0} is not a store keyway knows: give postgres://USER@HOST:PORT/DATABASE, or leave --store out for the SQLite store in keyway's home"
    )]
    Unknown(String),
    /// A password in a command-line flag, where other users see it.
    #[error(
        "the --store URL carries a password, which other users of this machine can read in the process list; put the URL in KEYWAY_STORE instead, or the password in PGPASSWORD"
    )]
    PasswordInArgs,
}

impl StoreLocation {
    /// The location `text` names: a Postgres URL, or (empty) the home. `from_args`:
    /// it came from a command-line flag, where a password is refused. A URL without a
    /// password takes `PGPASSWORD`'s, as libpq does.
    pub fn parse(text: &str, from_args: bool) -> Result<Self, LocationError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Self::Home);
        }
        // Text that does not parse is never shown: it may be a libpq `key=value` string
        // with a password in it.
        let Ok(mut url) = url::Url::parse(text) else {
            return Err(LocationError::Unknown("it".into()));
        };
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            return Err(LocationError::Unknown(shown_url(text)));
        }
        let password_in_query = url
            .query_pairs()
            .any(|(k, _)| k == "password" || k == "passfile");
        if url.password().is_some() || password_in_query {
            if from_args {
                return Err(LocationError::PasswordInArgs);
            }
        } else if let Ok(pw) = std::env::var("PGPASSWORD")
            && !pw.is_empty()
            && url.set_password(Some(&pw)).is_err()
        {
            return Err(LocationError::Unknown(shown_url(text)));
        }
        Ok(Self::Postgres(Secret::new(url.to_string())))
    }
}

/// The SQLite or the Postgres store.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The home's SQLite file.
    Sqlite(SqliteStore),
    /// A Postgres database.
    Postgres(PostgresStore),
}

impl From<SqliteStore> for AnyStore {
    fn from(s: SqliteStore) -> Self {
        Self::Sqlite(s)
    }
}

impl From<PostgresStore> for AnyStore {
    fn from(s: PostgresStore) -> Self {
        Self::Postgres(s)
    }
}

impl AnyStore {
    /// A key derived from the store key for `purpose` (see [`super::SealingKey`]).
    pub fn sealing_key(&self, purpose: &str) -> super::SealingKey {
        match self {
            Self::Sqlite(s) => s.sealing_key(purpose),
            Self::Postgres(s) => s.sealing_key(purpose),
        }
    }

    /// Open the store at `location`: the SQLite store in `home` (its key where
    /// [`SqliteStore::open`] looks), or the Postgres database (its key from
    /// `KEYWAY_STORE_KEY`, see [`PostgresStore::open`]).
    pub async fn open(
        location: &StoreLocation,
        home: &Path,
        options: OpenOptions,
    ) -> Result<Self, StoreError> {
        match location {
            StoreLocation::Home => {
                let home = home.to_owned();
                tokio::task::spawn_blocking(move || SqliteStore::open(&home, options))
                    .await
                    .map_err(|e| StoreError::Sqlite(format!("store task failed: {e}")))?
                    .map(Self::Sqlite)
            }
            StoreLocation::Postgres(url) => PostgresStore::open(url, PgOptions::from_env())
                .await
                .map(Self::Postgres),
        }
    }

    /// Whether a server has a credential row, without opening it.
    pub async fn has_credential(&self, server_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(s) => s.has_credential(server_id).await,
            Self::Postgres(s) => s.has_credential(server_id).await,
        }
    }

    /// Record a pending flow (sealed), keyed by a hash of its `state`.
    pub async fn save_pending_flow(
        &self,
        state: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.save_pending_flow(state, server_id, issuer, data).await,
            Self::Postgres(s) => s.save_pending_flow(state, server_id, issuer, data).await,
        }
    }

    /// The data of a live pending flow.
    pub async fn load_pending_flow(&self, state: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            Self::Sqlite(s) => s.load_pending_flow(state).await,
            Self::Postgres(s) => s.load_pending_flow(state).await,
        }
    }

    /// Forget a pending flow (none under that `state` is not an error).
    pub async fn delete_pending_flow(&self, state: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(s) => s.delete_pending_flow(state).await,
            Self::Postgres(s) => s.delete_pending_flow(state).await,
        }
    }
}

/// `$s.$method($args)` on whichever store this is.
macro_rules! either {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call,
            AnyStore::Postgres($s) => $call,
        }
    };
}

#[async_trait::async_trait]
impl Store for AnyStore {
    async fn create_server(
        &self,
        server: &NewServer,
        credential: Option<&Credential>,
    ) -> Result<ServerRecord, StoreError> {
        either!(self, s => s.create_server(server, credential).await)
    }
    async fn servers(&self) -> Result<Vec<ServerRecord>, StoreError> {
        either!(self, s => s.servers().await)
    }
    async fn server(&self, name_or_id: &str) -> Result<Option<ServerRecord>, StoreError> {
        either!(self, s => s.server(name_or_id).await)
    }
    async fn headers(&self, server_id: &str) -> Result<Vec<(String, Secret)>, StoreError> {
        either!(self, s => s.headers(server_id).await)
    }
    async fn set_enabled(&self, server_id: &str, enabled: bool) -> Result<(), StoreError> {
        either!(self, s => s.set_enabled(server_id, enabled).await)
    }
    async fn set_status(
        &self,
        server_id: &str,
        status: super::LastStatus,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        either!(self, s => s.set_status(server_id, status, error).await)
    }
    async fn set_protocol(
        &self,
        server_id: &str,
        revision: Option<&str>,
    ) -> Result<(), StoreError> {
        either!(self, s => s.set_protocol(server_id, revision).await)
    }
    async fn set_tools(&self, server_id: &str, count: Option<u32>) -> Result<(), StoreError> {
        either!(self, s => s.set_tools(server_id, count).await)
    }
    async fn remove_server(&self, server_id: &str) -> Result<(), StoreError> {
        either!(self, s => s.remove_server(server_id).await)
    }
    async fn purge_server(&self, server_id: &str) -> Result<(), StoreError> {
        either!(self, s => s.purge_server(server_id).await)
    }
    async fn update_server(
        &self,
        server_id: &str,
        change: &ServerChange,
    ) -> Result<ServerRecord, StoreError> {
        either!(self, s => s.update_server(server_id, change).await)
    }
    async fn replace_server(&self, old_id: &str, new_id: &str) -> Result<ServerRecord, StoreError> {
        either!(self, s => s.replace_server(old_id, new_id).await)
    }
    async fn credential(&self, server_id: &str) -> Result<Option<StoredCredential>, StoreError> {
        either!(self, s => s.credential(server_id).await)
    }
    async fn save_credential(
        &self,
        server_id: &str,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        either!(self, s => s.save_credential(server_id, credential, expected_version).await)
    }
    async fn forget_credential(&self, server_id: &str) -> Result<(), StoreError> {
        either!(self, s => s.forget_credential(server_id).await)
    }
    async fn set_token(&self, server_id: &str, token: &Secret) -> Result<u64, StoreError> {
        either!(self, s => s.set_token(server_id, token).await)
    }
    async fn set_per_person(&self, server_id: &str, per_person: bool) -> Result<(), StoreError> {
        either!(self, s => s.set_per_person(server_id, per_person).await)
    }
    async fn person_credential(
        &self,
        server_id: &str,
        person: &Person,
    ) -> Result<Option<StoredCredential>, StoreError> {
        either!(self, s => s.person_credential(server_id, person).await)
    }
    async fn save_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        credential: &Credential,
        expected_version: Option<u64>,
    ) -> Result<u64, StoreError> {
        either!(self, s => s.save_person_credential(server_id, person, credential, expected_version).await)
    }
    async fn forget_person_credential(
        &self,
        server_id: &str,
        person: &Person,
        version: Option<u64>,
    ) -> Result<(), StoreError> {
        either!(self, s => s.forget_person_credential(server_id, person, version).await)
    }
    async fn put_flow(
        &self,
        key: &str,
        server_id: Option<&str>,
        issuer: &str,
        data: &[u8],
    ) -> Result<(), StoreError> {
        either!(self, s => s.put_flow(key, server_id, issuer, data).await)
    }
    async fn take_flow(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        either!(self, s => s.take_flow(key).await)
    }
    async fn try_lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        either!(self, s => s.try_lease(key, holder, ttl).await)
    }
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        either!(self, s => s.release_lease(key, holder).await)
    }
    async fn pending_flows(&self) -> Result<Vec<PendingFlowSummary>, StoreError> {
        either!(self, s => s.pending_flows().await)
    }
    fn describe(&self) -> StoreInfo {
        either!(self, s => s.describe())
    }
}

#[async_trait::async_trait]
impl RegistrationStore for AnyStore {
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError> {
        either!(self, s => s.load(issuer).await)
    }
    async fn save(&self, registration: &StoredRegistration) -> Result<(), AuthError> {
        either!(self, s => s.save(registration).await)
    }
    async fn forget(&self, issuer: &str) -> Result<(), AuthError> {
        either!(self, s => s.forget(issuer).await)
    }
}

#[async_trait::async_trait]
impl PendingFlows for AnyStore {
    async fn begin(&self, state: &str, flow: &PendingFlow) -> Result<(), AuthError> {
        either!(self, s => s.begin(state, flow).await)
    }
    async fn end(&self, state: &str) -> Result<(), AuthError> {
        either!(self, s => s.end(state).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_postgres_urls_or_the_home() {
        assert!(matches!(
            StoreLocation::parse("", true),
            Ok(StoreLocation::Home)
        ));
        assert!(matches!(
            StoreLocation::parse("postgres://keyway@db.internal:5432/keyway", true),
            Ok(StoreLocation::Postgres(_))
        ));
        assert_eq!(
            StoreLocation::parse("postgres://keyway:hunter2@db/keyway", true).err(),
            Some(LocationError::PasswordInArgs)
        );
        // From the environment, a password is fine, and never shown in Debug.
        let from_env = StoreLocation::parse("postgresql://keyway:hunter2@db/keyway", false)
            .unwrap_or(StoreLocation::Home);
        assert!(matches!(from_env, StoreLocation::Postgres(_)));
        assert!(!format!("{from_env:?}").contains("hunter2"));
        let err = StoreLocation::parse("mysql://root:hunter2@db/x", false).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(StoreLocation::parse("/var/lib/keyway", true).is_err());
        assert_eq!(
            StoreLocation::parse("postgres://keyway@db/keyway?password=hunter2", true).err(),
            Some(LocationError::PasswordInArgs)
        );
        // Text that is not a URL is not shown: it may be libpq's form, password and all.
        for text in [
            "host=db password=hunter2",
            "postgres://keyway:hunter2@db:99999/keyway",
        ] {
            let err = StoreLocation::parse(text, false).unwrap_err();
            assert!(!err.to_string().contains("hunter2"), "{err}");
            assert!(!format!("{err:?}").contains("hunter2"), "{err:?}");
        }
    }
}
