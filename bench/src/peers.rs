//! How each bridge is started, and the state each one keeps per upstream (a keyway home,
//! an mcp-remote config directory, the direct client's token).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tokio::process::Command;

use crate::{report::Peer, stdio::Bridge, upstream::Upstream};

/// Binaries and places shared by every scenario.
#[derive(Debug)]
pub struct Env {
    pub keyway: PathBuf,
    pub browser: PathBuf,
    pub floor: PathBuf,
    /// `keyway-bench-rusage`: runs a bridge and writes its peak RSS at exit.
    pub rusage: PathBuf,
    /// The floor's bridge mode: `relay` (blocking) or `relay-async` (tokio).
    pub floor_relay: &'static str,
    /// The floor's gateway mode: `forward` (blocking) or `forward-async` (tokio).
    pub floor_forward: &'static str,
    pub mcp_remote: PathBuf,
    pub peers: PathBuf,
    pub work: PathBuf,
}

/// One upstream as each peer knows it.
#[derive(Debug)]
pub struct Route {
    pub upstream: Upstream,
    /// keyway's home holding this one server, saved as `name`.
    pub home: PathBuf,
    pub name: String,
    /// mcp-remote's config directory (its stored client and tokens).
    pub remote_dir: PathBuf,
    /// The direct client's access token (when the upstream needs one).
    pub token: Option<String>,
}

impl Env {
    fn log(&self, what: &str) -> PathBuf {
        self.work.join(format!("{what}.log"))
    }

    /// `keyway` with a throwaway home and no keychain: the store key lives beside it.
    /// With `ca`, it trusts that CA (and only it) through `SSL_CERT_FILE`, which the
    /// platform verifier honours on Linux.
    pub fn keyway_cmd(&self, home: &Path, ca: Option<&Path>) -> Command {
        let mut c = Command::new(&self.keyway);
        c.arg("--home")
            .arg(home)
            .env("KEYWAY_NO_KEYCHAIN", "1")
            .env("BROWSER", &self.browser)
            .env_remove("KEYWAY_LOG");
        if let Some(ca) = ca {
            c.env("SSL_CERT_FILE", ca).env("SSL_CERT_DIR", "");
        }
        c
    }

    /// mcp-remote as its README has people run it (node directly, not through npx, so
    /// npm's own start-up is not counted against it); with `ca`, node trusts that CA
    /// too (`NODE_EXTRA_CA_CERTS`).
    pub fn remote_cmd(&self, url: &str, config_dir: &Path, ca: Option<&Path>) -> Command {
        let mut c = Command::new("node");
        c.arg(&self.mcp_remote)
            .arg(url)
            .arg("--allow-http")
            .env("MCP_REMOTE_CONFIG_DIR", config_dir)
            .env("BROWSER", &self.browser)
            // No desktop: the browser is $BROWSER, which clicks Allow.
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY");
        if let Some(ca) = ca {
            c.env("NODE_EXTRA_CA_CERTS", ca);
        }
        c
    }

    /// Start `peer`'s bridge to `route` with what it has stored.
    pub fn bridge(&self, peer: Peer, route: &Route, tag: &str) -> Result<Bridge> {
        self.bridge_with(peer, route, tag, false)
    }

    /// [`Env::bridge`], and with `at_exit` run under `keyway-bench-rusage` so that
    /// [`Bridge::close`] reads its peak RSS over its whole life (the wrapper's own
    /// process start is then part of the bridge's: not for timed starts).
    pub fn bridge_with(
        &self,
        peer: Peer,
        route: &Route,
        tag: &str,
        at_exit: bool,
    ) -> Result<Bridge> {
        let log = self.log(&format!("{}-{tag}", peer.label()));
        let ca = route.upstream.ca();
        let (name, command) = match peer {
            Peer::Keyway => {
                let mut c = self.keyway_cmd(&route.home, ca);
                c.arg("proxy").arg(&route.name);
                ("keyway proxy", c)
            }
            Peer::McpRemote => (
                "mcp-remote",
                self.remote_cmd(&route.upstream.mcp_url, &route.remote_dir, ca),
            ),
            Peer::Floor => {
                let mut c = Command::new(&self.floor);
                c.arg(self.floor_relay).arg(&route.upstream.mcp_url);
                // A throwaway token of the loopback testbed, for this bench-only relay.
                if let Some(t) = &route.token {
                    c.env("KEYWAY_BENCH_FLOOR_TOKEN", t);
                }
                ("floor relay", c)
            }
            Peer::Direct => anyhow::bail!("the direct client is not a bridge"),
        };
        if at_exit {
            let out = self.work.join(format!("{}-{tag}.peak-rss", peer.label()));
            Bridge::spawn_measured(name, command, &log, &self.rusage, &out)
        } else {
            Bridge::spawn(name, command, &log)
        }
    }

    /// Start `peer`'s bridge to `url` with nothing stored (a fresh home or config dir).
    pub fn fresh_bridge(&self, peer: Peer, url: &str, dir: &Path, tag: &str) -> Result<Bridge> {
        let log = self.log(&format!("{}-{tag}", peer.label()));
        match peer {
            Peer::Keyway => {
                let mut c = self.keyway_cmd(dir, None);
                c.args(["proxy", url, "--browser", "system"]);
                Bridge::spawn("keyway proxy", c, &log)
            }
            Peer::McpRemote => Bridge::spawn("mcp-remote", self.remote_cmd(url, dir, None), &log),
            Peer::Direct | Peer::Floor => anyhow::bail!("{} has no authorization", peer.label()),
        }
    }

    /// Run a keyway command to completion (trusting `ca`, if given); its stdout, or
    /// the error with its stderr.
    pub async fn keyway_run(
        &self,
        home: &Path,
        ca: Option<&Path>,
        args: &[&str],
    ) -> Result<String> {
        let out = self
            .keyway_cmd(home, ca)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .with_context(|| format!("running keyway {}", args.join(" ")))?;
        if !out.status.success() {
            anyhow::bail!(
                "keyway {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
