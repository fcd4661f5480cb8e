//! The encrypted store: SQLite on real files in a temporary home, Postgres on a
//! throwaway cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod files;
mod pg;
mod postgres;
mod records;
mod refresh;
mod tampering;
mod upgrade;

use keyway::store::{OpenOptions, SqliteStore};

/// Open a store in `home` without ever touching the OS keychain.
pub fn open(home: &std::path::Path) -> Result<SqliteStore, keyway::store::StoreError> {
    SqliteStore::open(
        home,
        OpenOptions {
            use_keychain: false,
        },
    )
}
