//! The MCP client side of a stdio bridge: newline-delimited JSON-RPC over a child's
//! stdin and stdout, requests matched to answers by id, so many can be in flight.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    sync::oneshot,
};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// How long one answer may take before the run is called broken.
const ANSWER_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Bridge {
    child: Child,
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Pending,
    next_id: AtomicU64,
    pid: u32,
    name: String,
    /// Run under `keyway-bench-rusage`, which writes the bridge's peak RSS at exit
    /// here (and `pid` is the wrapper's).
    peak_at_exit: Option<PathBuf>,
}

impl Bridge {
    /// [`Bridge::spawn`] under `rusage` (`keyway-bench-rusage`), which writes the
    /// bridge's peak RSS over its whole life to `out` when it exits.
    pub fn spawn_measured(
        name: &str,
        command: Command,
        log: &Path,
        rusage: &Path,
        out: &Path,
    ) -> Result<Self> {
        let inner = command.as_std();
        let mut wrapped = Command::new(rusage);
        wrapped
            .arg(out)
            .arg(inner.get_program())
            .args(inner.get_args());
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            wrapped.current_dir(dir);
        }
        let _ = std::fs::remove_file(out);
        let mut me = Self::spawn(name, wrapped, log)?;
        me.peak_at_exit = Some(out.to_owned());
        Ok(me)
    }

    /// Start `command` with piped stdin/stdout; its stderr goes to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Self> {
        let stderr =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child.id().context("the bridge exited at once")?;
        let stdin = child.stdin.take().context("no stdin pipe")?;
        let stdout = child.stdout.take().context("no stdout pipe")?;
        let pending: Pending = Arc::default();
        let answers = pending.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                // Answers only; server notifications and requests are not awaited.
                if v.get("method").is_some() {
                    continue;
                }
                if let Some(id) = v.get("id").and_then(Value::as_u64)
                    && let Some(tx) = answers
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&id)
                {
                    let _ = tx.send(v);
                }
            }
            // The bridge closed stdout: whoever still waits hears it now.
            answers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        Ok(Self {
            child,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
            next_id: AtomicU64::new(1),
            pid,
            name: name.to_owned(),
            peak_at_exit: None,
        })
    }

    async fn write(&self, v: &Value) -> Result<()> {
        let mut line = serde_json::to_vec(v)?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().await;
        stdin
            .write_all(&line)
            .await
            .with_context(|| format!("{} closed its stdin", self.name))?;
        stdin.flush().await?;
        Ok(())
    }

    /// Send a request and wait for its answer; a JSON-RPC error is an error.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let answer = tokio::time::timeout(ANSWER_LIMIT, rx)
            .await
            .map_err(|_| anyhow!("{}: no answer to {method} in {ANSWER_LIMIT:?}", self.name))?
            .map_err(|_| anyhow!("{}: exited before answering {method}", self.name))?;
        if let Some(e) = answer.get("error") {
            bail!("{}: {method} failed: {e}", self.name);
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    pub async fn notify(&self, method: &str) -> Result<()> {
        self.write(&json!({"jsonrpc": "2.0", "method": method}))
            .await
    }

    /// The MCP handshake as a client does it.
    pub async fn initialize(&self) -> Result<Value> {
        let result = self
            .request("initialize", crate::initialize_params())
            .await?;
        self.notify("notifications/initialized").await?;
        Ok(result)
    }

    /// Peak resident memory of the bridge and its children so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        match self.peak_at_exit {
            // Not the wrapper's own.
            Some(_) => crate::measure::children(self.pid)
                .into_iter()
                .map(crate::measure::peak_rss_tree)
                .sum(),
            None => crate::measure::peak_rss_tree(self.pid),
        }
    }

    /// CPU time the bridge (and its children) used so far, in nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        crate::measure::cpu_ns_tree(self.pid)
    }

    /// Close stdin as a client does on exit and wait for the bridge to end (killed after
    /// 10 s). Its peak RSS over its whole life, in bytes, when it ran measured
    /// ([`Bridge::spawn_measured`]).
    pub async fn close(mut self) -> Result<Option<u64>> {
        drop(self.stdin);
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                // The bridge under a wrapper first, then the wrapper.
                for pid in crate::measure::children(self.pid) {
                    let _ = Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status()
                        .await;
                }
                let _ = self.child.kill().await;
                bail!("{} did not exit within 10 s of stdin closing", self.name)
            }
        }
        let Some(out) = &self.peak_at_exit else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(out)
            .with_context(|| format!("{}: its peak RSS at exit ({})", self.name, out.display()))?;
        let bytes = text
            .trim()
            .parse()
            .with_context(|| format!("{}: peak RSS at exit {text:?}", self.name))?;
        Ok(Some(bytes))
    }
}
