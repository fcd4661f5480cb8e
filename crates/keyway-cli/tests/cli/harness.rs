//! Run the built `keyway` with its own home directory, never the user's.

use std::process::{Command, Output, Stdio};

pub struct Keyway {
    pub home: tempfile::TempDir,
}

impl Keyway {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A `keyway` command with a private home and no inherited log settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyway"));
        c.args(args)
            .env("KEYWAY_HOME", self.home.path())
            .env_remove("KEYWAY_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run without blocking the async runtime (for tests that serve a testbed).
    pub async fn run_async(&self, args: &[&str]) -> Output {
        let cmd = self.cmd(args);
        tokio::process::Command::from(cmd).output().await.unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Settings that make output with ports and timings stable for snapshots.
pub fn stable() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"\d+(\.\d+)? ms", "[TIME]");
    s.add_filter(r"keyway-testbed \d+\.\d+\.\d+", "keyway-testbed [VERSION]");
    s
}
