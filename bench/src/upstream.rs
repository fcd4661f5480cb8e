//! The servers the bridges reach: keyway's testbed (OAuth 2.1 in front of MCP) and
//! `@modelcontextprotocol/server-everything` (Streamable HTTP, no authorization), each
//! in its own process so neither shares CPU time with the harness's runtime.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// A running upstream; killed when dropped.
#[derive(Debug)]
pub struct Upstream {
    pub name: &'static str,
    pub mcp_url: String,
    /// The testbed's counters; `None` for servers that have none.
    pub stats_url: Option<String>,
    /// The echo tool's argument name.
    pub echo_arg: &'static str,
    _child: Child,
}

#[derive(Deserialize)]
struct Announcement {
    mcp_url: String,
    stats_url: String,
}

impl Upstream {
    /// `keyway testbed` with `knobs`, waiting for its one-line announcement.
    pub async fn testbed(name: &'static str, keyway: &Path, knobs: &[&str]) -> Result<Self> {
        let mut child = Command::new(keyway)
            .arg("testbed")
            .args(knobs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting keyway testbed")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("keyway testbed did not announce itself in 30 s")??
            .context("keyway testbed exited before listening")?;
        let a: Announcement = serde_json::from_str(&line)
            .with_context(|| format!("keyway testbed announced {line:?}"))?;
        Ok(Self {
            name,
            mcp_url: a.mcp_url,
            stats_url: Some(a.stats_url),
            echo_arg: "text",
            _child: child,
        })
    }

    /// server-everything in Streamable HTTP mode on a free loopback port.
    pub async fn everything(peers: &Path, log: &Path) -> Result<Self> {
        let port = free_port()?;
        let script =
            peers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
        let preload = peers.join("bind-loopback.mjs");
        let log_file = std::fs::File::create(log)?;
        let child = Command::new("node")
            .arg("--import")
            .arg(&preload)
            .arg(&script)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context(
                "starting server-everything (is node installed? bench/run installs the peers)",
            )?;
        let url = format!("http://127.0.0.1:{port}/mcp");
        wait_listening(port, log).await?;
        Ok(Self {
            name: "server-everything",
            mcp_url: url,
            stats_url: None,
            echo_arg: "message",
            _child: child,
        })
    }

    pub fn echo_args(&self, text: &str) -> Value {
        serde_json::json!({"name": "echo", "arguments": {self.echo_arg: text}})
    }

    /// The testbed's counters now.
    pub async fn stats(&self, http: &reqwest::Client) -> Result<Value> {
        let url = self
            .stats_url
            .as_deref()
            .context("this upstream has no counters")?;
        Ok(http.get(url).send().await?.json().await?)
    }
}

/// A port nobody listens on right now (the OS picks it).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Wait until something accepts connections on `port` (at most 20 s).
async fn wait_listening(port: u16, log: &Path) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!("server-everything did not listen on {port} within 20 s:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Where the npm peers are installed.
pub fn peers_dir(root: &Path) -> PathBuf {
    root.join("bench/peer")
}
