//! One upstream server of the gateway: a raw JSON-RPC client on a [`Wire`], with
//! request/answer correlation, the handshake, one reconnect when the connection drops,
//! and the server's own requests and notifications handed to the gateway.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::mcp::wire::{Inbound, Wire, WireConfig, WireError};

/// How long one upstream request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why an upstream request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    #[error("{server} needs authorization: run `keyway authorize {server}`")]
    NeedsAuth { server: String },
    #[error("{server}: {message}")]
    Failed { server: String, message: String },
    /// The server answered with a JSON-RPC error (passed on as it is).
    #[error("{server} answered with an error")]
    Rpc { server: String, error: Value },
}

/// Something the upstream sent on its own.
#[derive(Debug)]
pub enum Event {
    /// A notification (list_changed, progress, logging...).
    Notification { server: usize, message: Value },
    /// A request to the client (sampling, elicitation, roots...).
    Request { server: usize, message: Value },
}

pub struct Upstream {
    pub index: usize,
    pub name: String,
    wire: Wire,
    pending: Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>,
    next_id: AtomicU64,
    /// The server's `initialize` result.
    pub server_info: Mutex<Option<Value>>,
    reconnect: tokio::sync::Mutex<u64>,
    liveness: Option<Arc<dyn super::Liveness>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Connect and run the handshake. `events` receives the server's own messages.
    pub async fn connect(
        index: usize,
        name: &str,
        config: WireConfig,
        liveness: Option<Arc<dyn super::Liveness>>,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<Arc<Self>, UpstreamError> {
        let failed = |message: String| UpstreamError::Failed {
            server: name.to_owned(),
            message,
        };
        let (wire, inbound) = Wire::connect(config).await.map_err(|e| match e {
            WireError::Unauthorized { .. } => UpstreamError::NeedsAuth {
                server: name.to_owned(),
            },
            e => failed(e.to_string()),
        })?;
        let up = Arc::new(Self {
            index,
            name: name.to_owned(),
            wire,
            pending: Arc::default(),
            next_id: AtomicU64::new(1),
            server_info: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(0),
            liveness,
        });
        tokio::spawn(route(up.clone(), inbound, events));
        up.handshake().await?;
        Ok(up)
    }

    async fn handshake(&self) -> Result<(), UpstreamError> {
        let result = self
            .request_once(
                "initialize",
                json!({
                    "protocolVersion": crate::mcp::PROTOCOL_VERSION.to_string(),
                    "capabilities": {"roots": {"listChanged": true}, "sampling": {}, "elicitation": {}},
                    "clientInfo": {"name": "keyway-gateway", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        *self.server_info.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        self.wire
            .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .map_err(|e| self.error(e))?;
        if let Err(e) = self.wire.open_standalone_stream().await {
            tracing::debug!(server = %self.name, error = %e, "no standalone stream");
        }
        Ok(())
    }

    fn error(&self, e: WireError) -> UpstreamError {
        match e {
            WireError::Unauthorized { .. } | WireError::Forbidden { .. } => {
                UpstreamError::NeedsAuth {
                    server: self.name.clone(),
                }
            }
            e => UpstreamError::Failed {
                server: self.name.clone(),
                message: e.to_string(),
            },
        }
    }

    /// A request; a dropped connection is re-initialized once and the request sent again.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, UpstreamError> {
        let generation = *self.reconnect.lock().await;
        match self.request_once(method, params.clone()).await {
            Err(UpstreamError::Failed { message, .. }) if message.starts_with(DROPPED) => {
                {
                    let mut g = self.reconnect.lock().await;
                    // Concurrent failures share one reconnect; a server removed or
                    // disabled meanwhile is not reconnected.
                    if let Some(l) = &self.liveness
                        && !l.alive().await
                    {
                        return Err(UpstreamError::Failed {
                            server: self.name.clone(),
                            message: "removed or disabled".into(),
                        });
                    }
                    if *g == generation {
                        self.wire.reset().await.map_err(|e| self.error(e))?;
                        self.handshake().await?;
                        *g += 1;
                    }
                }
                self.request_once(method, params).await
            }
            other => other,
        }
    }

    async fn request_once(&self, method: &str, params: Value) -> Result<Value, UpstreamError> {
        let id = format!("gw-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), tx);
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if let Err(e) = self.wire.send(&message).await {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            return Err(match e {
                e if e.is_dropped() => UpstreamError::Failed {
                    server: self.name.clone(),
                    message: format!("{DROPPED}{e}"),
                },
                e => self.error(e),
            });
        }
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, rx)
            .await
            .map_err(|_| UpstreamError::Failed {
                server: self.name.clone(),
                message: format!("no answer to {method} within 60 s"),
            })?
            .map_err(|_| UpstreamError::Failed {
                server: self.name.clone(),
                message: format!("{DROPPED}the connection closed"),
            })?;
        if let Some(error) = answer.get("error") {
            return Err(UpstreamError::Rpc {
                server: self.name.clone(),
                error: error.clone(),
            });
        }
        Ok(answer.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Send a message as it is (answers to the server's own requests).
    pub async fn send_raw(&self, message: &Value) -> Result<(), UpstreamError> {
        self.wire.send(message).await.map_err(|e| self.error(e))
    }

    pub async fn close(&self) {
        self.wire.close().await;
    }
}

const DROPPED: &str = "dropped: ";

/// Answers to their waiters; everything else to the gateway.
async fn route(
    up: Arc<Upstream>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Some(item) = inbound.recv().await {
        let Inbound::Message(v) = item else { continue };
        let is_answer =
            v.get("method").is_none() && (v.get("result").is_some() || v.get("error").is_some());
        if is_answer {
            let waiter = v.get("id").and_then(Value::as_str).and_then(|id| {
                up.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id)
            });
            if let Some(tx) = waiter {
                let _ = tx.send(v);
            }
        } else if v.get("id").is_some() {
            let _ = events.send(Event::Request {
                server: up.index,
                message: v,
            });
        } else {
            let _ = events.send(Event::Notification {
                server: up.index,
                message: v,
            });
        }
    }
    // The connection is gone: fail whatever still waits.
    up.pending.lock().unwrap_or_else(|p| p.into_inner()).clear();
}
