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

/// `_meta` key of the subscription a listen-stream notification belongs to.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The session name of each listen stream (numbered) in the gateway's subscription
/// tables.
const LISTEN_SESSION: &str = "listen-";

/// The list-change filters and the notifications they let through.
const LIST_CHANGES: &[(&str, &str)] = &[
    ("toolsListChanged", "notifications/tools/list_changed"),
    ("promptsListChanged", "notifications/prompts/list_changed"),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
    ),
];

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
        let Some(asked) = params.get("notifications").and_then(Value::as_object) else {
            let error = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602,
                "message": "subscriptions/listen needs params.notifications, the notifications wanted"}});
            let _ = out.send(error.to_string()).await;
            return;
        };
        let mut accepted = Map::new();
        let mut methods = Vec::new();
        for (field, method) in LIST_CHANGES {
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
        let n = self
            .next_question
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let filter = Filter {
            methods,
            uris: uris.iter().cloned().collect(),
            session: format!("{LISTEN_SESSION}{n}"),
        };
        let mut subscribed = Vec::new();
        for uri in &uris {
            let params = json!({"uri": uri});
            match self
                .subscription(
                    &filter.session,
                    "resources/subscribe",
                    params,
                    &Carrier::default(),
                )
                .await
            {
                Ok(_) => subscribed.push(json!(uri)),
                Err(e) => {
                    tracing::info!(%uri, "a listen stream's resource could not be followed: {e}")
                }
            }
        }
        if !subscribed.is_empty() {
            accepted.insert("resourceSubscriptions".into(), Value::Array(subscribed));
        }
        // Registered as a request, so the client's notifications/cancelled ends it.
        let flight = Arc::new(InFlight {
            modern: true,
            ..InFlight::default()
        });
        let key = (session.to_owned(), id.to_string());
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), flight.clone());
        let ack = json!({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
            "params": {"notifications": accepted, "_meta": {META_SUBSCRIPTION_ID: id}}});
        if out.send(ack.to_string()).await.is_ok() {
            loop {
                let notice = tokio::select! {
                    () = flight.cancelled.cancelled() => break,
                    () = out.closed() => break,
                    notice = notices.recv() => notice,
                };
                match notice {
                    Ok(n) if filter.wants(&n) => {
                        let mut message = n.message;
                        if !message.get("params").is_some_and(Value::is_object) {
                            message["params"] = json!({});
                        }
                        let params = &mut message["params"];
                        if !params.get("_meta").is_some_and(Value::is_object) {
                            params["_meta"] = json!({});
                        }
                        params["_meta"][META_SUBSCRIPTION_ID] = id.clone();
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
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.end_session(&filter.session).await;
    }
}
