//! `subscriptions/listen` for the gateway's 2026-07-28 clients: one long-lived
//! request whose stream carries the list changes and resource updates the client
//! opted into, each tagged with the subscription's id (the request's). The stream
//! opens with `notifications/subscriptions/acknowledged`, naming what the gateway
//! agreed to send. Resource updates come from the servers' subscriptions, which the
//! gateway holds once per URI for all its clients (a listen stream counts as a
//! session of its own there, ended with the stream).

use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use super::{Carrier, Gateway, InFlight};
use crate::mcp::modern::{
    LIST_CHANGES, MAX_LISTEN_RESOURCES, META_SUBSCRIPTION_ID, MODERN_VERSION, tag_subscription,
};

/// The session name of each listen stream (numbered) in the gateway's subscription
/// tables.
const LISTEN_SESSION: &str = "listen-";

/// Ends a listen stream's hold on the gateway however the stream ends (cancelled,
/// the client gone, or its task dropped): its request entry, and its resource
/// subscriptions (the servers' with the last one).
struct Ending {
    gw: std::sync::Weak<Gateway>,
    key: (String, String),
    flight: Arc<InFlight>,
    session: String,
}

impl Drop for Ending {
    fn drop(&mut self) {
        let Some(gw) = self.gw.upgrade() else { return };
        {
            let mut table = gw.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            if table
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                table.remove(&self.key);
            }
        }
        let session = std::mem::take(&mut self.session);
        tokio::spawn(async move { gw.end_session(&session).await });
    }
}

/// What one listen stream lets through.
struct Filter {
    methods: Vec<&'static str>,
    uris: std::collections::HashSet<String>,
    /// Its session in the subscription tables.
    session: String,
}

impl Filter {
    fn wants(&self, notice: &super::Notice) -> bool {
        let method = notice.message.get("method").and_then(Value::as_str);
        match method {
            Some("notifications/resources/updated") => {
                notice.session.as_deref().is_none_or(|s| s == self.session)
                    && notice
                        .message
                        .pointer("/params/uri")
                        .and_then(Value::as_str)
                        .is_some_and(|u| self.uris.contains(u))
            }
            Some(m) => notice.session.is_none() && self.methods.contains(&m),
            None => false,
        }
    }
}

impl Gateway {
    /// Serve `subscriptions/listen` request `id` with `params` from a 2026-07-28
    /// client (`session`: its session name), writing its stream's messages (JSON
    /// text) to `out` until the client cancels it or stops reading. A request that
    /// is not valid gets its error on `out` and ends.
    pub async fn listen(&self, session: &str, id: Value, params: Value, out: mpsc::Sender<String>) {
        // Subscribed first: nothing sent after the acknowledgement is missed.
        let mut notices = self.subscribe();
        let checked = match super::modern::revision(&params) {
            Some(MODERN_VERSION) => super::modern::check_meta(&params),
            Some(other) => Err(super::modern::unsupported(other)),
            None => Err(json!({"code": -32602, "message":
                "subscriptions/listen is a 2026-07-28 request: its _meta must name the revision"})),
        };
        let asked = checked.and_then(|()| {
            params
                .get("notifications")
                .and_then(Value::as_object)
                .ok_or_else(|| {
                    json!({"code": -32602, "message":
                    "subscriptions/listen needs params.notifications, the notifications wanted"})
                })
        });
        let asked = match asked {
            Ok(a) => a,
            Err(error) => {
                let error = json!({"jsonrpc": "2.0", "id": id, "error": error});
                let _ = out.send(error.to_string()).await;
                return;
            }
        };
        let mut accepted = Map::new();
        let mut methods = Vec::new();
        for (field, method, _) in LIST_CHANGES {
            if asked.get(*field).and_then(Value::as_bool) == Some(true) {
                accepted.insert((*field).to_owned(), json!(true));
                methods.push(*method);
            }
        }
        let uris: Vec<String> = asked
            .get("resourceSubscriptions")
            .and_then(Value::as_array)
            .map(|u| {
                u.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if uris.len() > MAX_LISTEN_RESOURCES {
            let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": format!(
                "one subscriptions/listen may name at most {MAX_LISTEN_RESOURCES} resources; open more streams"
            )}});
            let _ = out.send(error.to_string()).await;
            return;
        }
        let n = self
            .next_question
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut filter = Filter {
            methods,
            uris: std::collections::HashSet::new(),
            session: format!("{LISTEN_SESSION}{n}"),
        };
        // Registered as a request, so the client's notifications/cancelled ends it;
        // from here on the guard undoes what the stream holds, however it ends.
        let flight = Arc::new(InFlight {
            modern: true,
            ..InFlight::default()
        });
        let key = (session.to_owned(), id.to_string());
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), flight.clone());
        let _ending = Ending {
            gw: self.me.clone(),
            key,
            flight: flight.clone(),
            session: filter.session.clone(),
        };
        let mut subscribed = Vec::new();
        for uri in uris {
            let params = json!({"uri": uri});
            let followed = self
                .subscription(
                    &filter.session,
                    "resources/subscribe",
                    params,
                    &Carrier::default(),
                )
                .await;
            match followed {
                Ok(_) => {
                    subscribed.push(json!(uri));
                    filter.uris.insert(uri);
                }
                Err(e) => {
                    tracing::info!(%uri, "a listen stream's resource could not be followed: {e}")
                }
            }
        }
        if !subscribed.is_empty() {
            accepted.insert("resourceSubscriptions".into(), Value::Array(subscribed));
        }
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": accepted, "_meta": {META_SUBSCRIPTION_ID: id}}});
        if out.send(ack.to_string()).await.is_err() {
            return;
        }
        loop {
            let notice = tokio::select! {
                () = flight.cancelled.cancelled() => break,
                () = out.closed() => break,
                notice = notices.recv() => notice,
            };
            match notice {
                Ok(n) if filter.wants(&n) => {
                    let mut message = n.message;
                    tag_subscription(&mut message, &id);
                    if out.send(message.to_string()).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("a listen stream missed {n} notifications")
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    }
}
