//! The floor: an MCP client speaking Streamable HTTP straight to the server, in this
//! process, with one pooled HTTP client. What a bridge adds is measured against it.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, anyhow, bail};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

const SESSION: &str = "mcp-session-id";
const VERSION: &str = "mcp-protocol-version";

#[derive(Debug)]
pub struct Direct {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
    session: Option<String>,
    version: String,
    next_id: AtomicU64,
}

pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

impl Direct {
    /// Initialize a session (initialize, then notifications/initialized).
    pub async fn connect(http: reqwest::Client, url: &str, token: Option<String>) -> Result<Self> {
        let mut me = Self {
            http,
            url: url.to_owned(),
            token,
            session: None,
            version: crate::PROTOCOL_VERSION.to_owned(),
            next_id: AtomicU64::new(1),
        };
        let (result, session) = me
            .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": crate::initialize_params()}))
            .await?;
        me.session = session;
        if let Some(v) = result
            .and_then(|r| r.pointer("/result/protocolVersion").cloned())
            .and_then(|v| v.as_str().map(str::to_owned))
        {
            me.version = v;
        }
        me.post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        Ok(me)
    }

    pub async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (answer, _) = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let answer = answer.ok_or_else(|| anyhow!("no answer to {method}"))?;
        if let Some(e) = answer.get("error") {
            bail!("{method} failed: {e}");
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// End the session (DELETE), as a well-behaved client does.
    pub async fn close(self) {
        if let Some(session) = &self.session {
            let mut req = self.http.delete(&self.url).header(SESSION, session);
            if let Some(t) = &self.token {
                req = req.header(AUTHORIZATION, format!("Bearer {t}"));
            }
            let _ = req.send().await;
        }
    }

    /// POST one message; the answer (JSON or the first answer on an event stream) and
    /// the session id the server gave, if any.
    async fn post(&self, message: &Value) -> Result<(Option<Value>, Option<String>)> {
        let mut req = self
            .http
            .post(&self.url)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header(VERSION, &self.version)
            .body(serde_json::to_vec(message)?);
        if let Some(s) = &self.session {
            req = req.header(SESSION, s);
        }
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = req.send().await.context("sending to the server")?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the server answered {status}");
        }
        let session = resp
            .headers()
            .get(SESSION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let is_sse = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = resp.bytes().await.context("reading the answer")?;
        if body.is_empty() {
            return Ok((None, session));
        }
        let answer = if is_sse {
            sse_answer(&body, message.get("id"))
        } else {
            Some(serde_json::from_slice(&body).context("the answer is not JSON")?)
        };
        Ok((answer, session))
    }
}

/// The JSON-RPC answer with `id` among an event stream's `data:` lines.
pub fn sse_answer(body: &[u8], id: Option<&Value>) -> Option<Value> {
    let text = std::str::from_utf8(body).ok()?;
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("method").is_none() && v.get("id") == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_answer_among_events() {
        let body = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\nid: 7\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n";
        let v = sse_answer(body, Some(&json!(3))).expect("the answer");
        assert_eq!(v["id"], 3);
        assert!(sse_answer(body, Some(&json!(4))).is_none());
    }
}
