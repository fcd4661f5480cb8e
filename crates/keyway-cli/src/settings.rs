//! Settings every command shares, resolved once from the global flags.

use std::path::PathBuf;

use keyway::store::{LocationError, StoreLocation};

use crate::cli::GlobalArgs;

#[derive(Debug, Clone)]
pub struct Settings {
    /// keyway's home: `--home`, else `KEYWAY_HOME`, else the XDG data dir. Nothing is
    /// created there until a command stores something.
    pub home: PathBuf,
    /// Whether the home was chosen (and must be passed on, e.g. in exported configs).
    pub home_explicit: bool,
    /// Use the OS keychain for the store key (off with KEYWAY_NO_KEYCHAIN=1).
    pub use_keychain: bool,
    /// Where the store is: `--store`, else `KEYWAY_STORE`, else the home.
    pub store: Result<StoreLocation, LocationError>,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> Self {
        Self {
            home: global.home.clone().unwrap_or_else(default_home),
            home_explicit: global.home.is_some(),
            use_keychain: std::env::var_os("KEYWAY_NO_KEYCHAIN")
                .is_none_or(|v| v.is_empty() || v == "0"),
            store: match &global.store {
                Some(flag) => StoreLocation::parse(flag, true),
                None => {
                    StoreLocation::parse(&std::env::var("KEYWAY_STORE").unwrap_or_default(), false)
                }
            },
        }
    }
}

fn default_home() -> PathBuf {
    directories::ProjectDirs::from("dev", "keyway", "keyway")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".keyway"))
}
