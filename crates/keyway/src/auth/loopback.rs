//! The loopback redirect listener (RFC 8252 §7.3): 127.0.0.1 only, one path, callbacks
//! with an unknown `state` answered and ignored, one small page for the person at the
//! browser, closed as soon as the flow has its answer (dropping it closes it).

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The path keyway registers: `http://127.0.0.1:PORT/callback`.
pub const CALLBACK_PATH: &str = "/callback";

/// A callback whose `state` matched; answer it with the page to show.
#[derive(Debug)]
pub struct Arrived {
    /// The query parameters of the callback, decoded.
    pub params: super::callback::CallbackParams,
    /// Send the page to show; without an answer within 30 s (or if this is dropped)
    /// the tab is told keyway is no longer waiting.
    pub reply: oneshot::Sender<Page>,
}

/// What the browser tab shows.
#[derive(Debug, Clone)]
pub enum Page {
    /// Signed in: the person may close the tab.
    Done,
    /// Sign-in failed, for this reason (shown HTML-escaped).
    Failed(String),
}

#[derive(Debug)]
struct Shared {
    state: String,
    tx: mpsc::Sender<Arrived>,
}

/// A bound listener. Dropping it stops it.
#[derive(Debug)]
pub struct Loopback {
    addr: SocketAddr,
    rx: mpsc::Receiver<Arrived>,
    stop: CancellationToken,
}

impl Loopback {
    /// Bind 127.0.0.1:`port` (0 for any) and serve callbacks carrying `state`.
    pub async fn bind(port: u16, state: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(4);
        let shared = Arc::new(Shared {
            state: state.to_owned(),
            tx,
        });
        let app = Router::new()
            .route(CALLBACK_PATH, get(callback))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(shared);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        // The gateway's edge, for its limits: a browser sends its request at once, so
        // a connection that dawdles over its headers (slowloris) is closed, and a
        // flood of connections waits in the kernel's queue.
        let limits = crate::gateway::edge::EdgeLimits {
            max_connections: 16,
            // A browser sends its one request; a connection kept open after it
            // would hold a slot (16 of them idle, and the real redirect waits).
            keep_alive: false,
            ..Default::default()
        };
        tokio::spawn(async move {
            let _ = crate::gateway::edge::serve(
                listener,
                app,
                limits,
                async move { stopped.cancelled().await },
                Duration::from_secs(1),
            )
            .await;
        });
        Ok(Self { addr, rx, stop })
    }

    /// The port bound (the one chosen by the OS when bound with 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The redirect URI this listener serves: `http://127.0.0.1:PORT/callback`.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}{CALLBACK_PATH}", self.addr.port())
    }

    /// The redirect URI naming the listener's port with `host` (`localhost` resolves
    /// to this listener's address for the browser).
    pub fn redirect_uri_with(&self, host: super::CallbackHost) -> String {
        format!(
            "http://{}:{}{CALLBACK_PATH}",
            host.as_str(),
            self.addr.port()
        )
    }

    /// The next callback with the right state; `None` when `timeout` passes first.
    pub async fn next(&mut self, timeout: Duration) -> Option<Arrived> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn callback(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = query_params(query);
    // Not this flow's: never consumes it. A stale tab or a forged request.
    let tx = (params.get("state") == Some(shared.state.as_str())).then(|| shared.tx.clone());
    deliver(tx, params).await
}

fn query_params(query: Option<String>) -> super::callback::CallbackParams {
    super::callback::CallbackParams::parse(query.as_deref().unwrap_or_default())
}

/// Hand a callback to the flow waiting for it (`None`: no flow is), and answer the
/// browser with what the flow made of it.
async fn deliver(
    tx: Option<mpsc::Sender<Arrived>>,
    params: super::callback::CallbackParams,
) -> Response {
    let Some(tx) = tx else {
        return page(
            StatusCode::BAD_REQUEST,
            "Unknown sign-in",
            "keyway is not waiting for this sign-in (it may have expired or been completed). You can close this tab.",
        );
    };
    let (reply, answer) = oneshot::channel();
    if tx.send(Arrived { params, reply }).await.is_err() {
        return page(
            StatusCode::GONE,
            "Sign-in finished",
            "keyway is no longer waiting. You can close this tab.",
        );
    }
    match tokio::time::timeout(Duration::from_secs(30), answer).await {
        Ok(Ok(Page::Done)) => page(
            StatusCode::OK,
            "Signed in",
            "keyway has the authorization. You can close this tab.",
        ),
        Ok(Ok(Page::Failed(why))) => page(StatusCode::BAD_REQUEST, "Sign-in failed", &why),
        _ => page(
            StatusCode::GONE,
            "Sign-in finished",
            "keyway is no longer waiting. You can close this tab.",
        ),
    }
}

/// Callbacks of many flows arriving at one server of the caller's own (the settings
/// page serves its `/callback` with [`Callbacks::answer`]), instead of a listener per
/// flow. Each flow is found by its `state`; a callback whose state no flow waits for
/// consumes nothing. Cheap to clone.
#[derive(Clone)]
pub struct Callbacks {
    redirect_uri: String,
    waiting: Arc<std::sync::Mutex<HashMap<String, mpsc::Sender<Arrived>>>>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The map's keys are live `state` values: never shown.
        f.debug_struct("Callbacks")
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl Callbacks {
    /// Callbacks that come back to `redirect_uri` (an `http://127.0.0.1:PORT/...` URL
    /// the caller serves).
    pub fn new(redirect_uri: impl Into<String>) -> Self {
        Self {
            redirect_uri: redirect_uri.into(),
            waiting: Default::default(),
        }
    }

    /// The redirect URI flows register and send.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// How many flows are waiting for their callback.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Wait for the callback carrying `state`, until the [`Expecting`] is dropped.
    pub(crate) fn expect(&self, state: &str) -> Expecting {
        let (tx, rx) = mpsc::channel(4);
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(state.to_owned(), tx);
        }
        Expecting {
            state: state.to_owned(),
            rx,
            callbacks: self.clone(),
        }
    }

    /// Answer a callback request whose query string is `query`: hand it to the flow
    /// waiting for its `state`, and give the browser the page that flow chose.
    pub async fn answer(&self, query: Option<String>) -> Response {
        let params = query_params(query);
        let tx = params
            .get("state")
            .and_then(|state| self.waiting.lock().ok().and_then(|w| w.get(state).cloned()));
        deliver(tx, params).await
    }
}

/// One flow waiting at [`Callbacks`]; dropping it stops the wait.
pub(crate) struct Expecting {
    state: String,
    rx: mpsc::Receiver<Arrived>,
    callbacks: Callbacks,
}

impl Expecting {
    /// The redirect URI the callback comes back to.
    pub(crate) fn redirect_uri(&self) -> String {
        self.callbacks.redirect_uri.clone()
    }

    /// The next callback with this flow's state; `None` when `timeout` passes first.
    pub(crate) async fn next(&mut self, timeout: Duration) -> Option<Arrived> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Expecting {
    fn drop(&mut self) {
        if let Ok(mut w) = self.callbacks.waiting.lock() {
            w.remove(&self.state);
        }
    }
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t} · keyway</title>\
         <style>body{{font:16px system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;color:#222}}\
         h1{{font-size:1.4em}}</style></head><body><h1>{t}</h1><p>{x}</p></body></html>",
        t = escape(title),
        x = escape(text)
    );
    let mut resp = (status, Html(body)).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp.headers_mut().insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn shared_callbacks_find_each_flow_by_its_state() {
        let callbacks = Callbacks::new("http://127.0.0.1:1/callback");
        let mut a = callbacks.expect("state-a");
        let mut b = callbacks.expect("state-b");
        assert_eq!(callbacks.waiting(), 2);

        // An unknown state consumes nothing.
        let r = callbacks.answer(Some("code=x&state=state-c".into())).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        // b's callback reaches b (answered by b), not a.
        let cb = callbacks.clone();
        let browser =
            tokio::spawn(async move { cb.answer(Some("code=for-b&state=state-b".into())).await });
        let arrived = b.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(arrived.params.get("code"), Some("for-b"));
        arrived.reply.send(Page::Done).unwrap();
        assert_eq!(browser.await.unwrap().status(), StatusCode::OK);
        assert!(a.next(Duration::from_millis(0)).await.is_none());

        // A finished flow stops waiting: its state is not found any more.
        drop(b);
        assert_eq!(callbacks.waiting(), 1);
        let r = callbacks
            .answer(Some("code=late&state=state-b".into()))
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        drop(a);
        assert_eq!(callbacks.waiting(), 0);
    }
}
