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

use crate::pki::Pki;

/// A running upstream; killed when dropped.
#[derive(Debug)]
pub struct Upstream {
    pub name: &'static str,
    pub mcp_url: String,
    /// The testbed's counters; `None` for servers that have none.
    pub stats_url: Option<String>,
    /// The echo tool's argument name.
    pub echo_arg: &'static str,
    /// The certificates of a TLS upstream (its clients must trust `ca`).
    pub tls: Option<Pki>,
    /// Reads the counters: one client for the upstream's life, so over TLS (h2) it
    /// keeps one connection, opened before any peer's run is counted.
    stats_http: reqwest::Client,
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
        Self::start_testbed(name, keyway, knobs, None).await
    }

    /// `keyway testbed` serving MCP over TLS with `pki`'s certificate (h2 and
    /// HTTP/1.1 by ALPN; the authorization server stays plain HTTP on loopback).
    pub async fn testbed_tls(
        name: &'static str,
        keyway: &Path,
        pki: &Pki,
        knobs: &[&str],
    ) -> Result<Self> {
        Self::start_testbed(name, keyway, knobs, Some(pki.clone())).await
    }

    async fn start_testbed(
        name: &'static str,
        keyway: &Path,
        knobs: &[&str],
        tls: Option<Pki>,
    ) -> Result<Self> {
        let mut command = Command::new(keyway);
        command.arg("testbed").args(knobs);
        if let Some(pki) = &tls {
            command
                .arg("--tls-cert")
                .arg(&pki.cert)
                .arg("--tls-key")
                .arg(&pki.key);
        }
        let mut child = command
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
        let stats_http = client_trusting(tls.as_ref())?;
        Ok(Self {
            name,
            mcp_url: a.mcp_url,
            stats_url: Some(a.stats_url),
            echo_arg: "text",
            tls,
            stats_http,
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
            tls: None,
            stats_http: client_trusting(None)?,
            _child: child,
        })
    }

    pub fn echo_args(&self, text: &str) -> Value {
        serde_json::json!({"name": "echo", "arguments": {self.echo_arg: text}})
    }

    /// The testbed's counters now.
    pub async fn stats(&self) -> Result<Value> {
        let url = self
            .stats_url
            .as_deref()
            .context("this upstream has no counters")?;
        Ok(self.stats_http.get(url).send().await?.json().await?)
    }

    /// A new HTTP client (its own connections) that trusts this upstream's CA.
    pub fn client(&self) -> Result<reqwest::Client> {
        client_trusting(self.tls.as_ref())
    }

    /// The CA a peer must trust to reach this upstream, if it serves TLS.
    pub fn ca(&self) -> Option<&Path> {
        self.tls.as_ref().map(|p| p.ca.as_path())
    }
}

/// The direct client's HTTP client; with `pki`, trusting its CA only.
fn client_trusting(pki: Option<&Pki>) -> Result<reqwest::Client> {
    match pki {
        None => crate::direct::http_client(),
        Some(pki) => reqwest::Client::builder()
            .no_proxy()
            .tls_certs_only([pki.ca_certificate()?])
            .build()
            .context("building the HTTP client"),
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
