//! Settings every command shares, resolved once from the global flags.

use std::path::PathBuf;

use crate::cli::GlobalArgs;

#[derive(Debug, Clone)]
pub struct Settings {
    /// keyway's home: `--home`, else `KEYWAY_HOME`, else the XDG data dir. Nothing is
    /// created here until a command needs to store something.
    #[allow(dead_code, reason = "the store (a later command) is the first user")]
    pub home: PathBuf,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> Self {
        let home = global.home.clone().unwrap_or_else(default_home);
        Self { home }
    }
}

fn default_home() -> PathBuf {
    directories::ProjectDirs::from("dev", "keyway", "keyway")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".keyway"))
}
