//! The settings page (`keyway ui`): the saved servers as cards, with the add / probe
//! / authorize flow, on keyway's own store, served on 127.0.0.1 to the one browser
//! that opened its one-time link.
//!
//! [`Ui::new`] makes the page's state and the secret of its link; [`Ui::app`] is the
//! whole app as a [`Router`] (every route behind [`guard::check`]), tested in memory;
//! [`Ui::serve`] runs it until the caller's shutdown, or until the last tab has been
//! closed for a while. Authorizations come back to the page's own `/callback`, each
//! found by its `state`, so several run at once.

mod api;
pub mod flows;
pub mod guard;
pub mod page;
pub mod peer;
mod tools;

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    Extension, Router,
    extract::{Query, RawQuery, State},
    http::{HeaderValue, StatusCode, header},
    middleware,
    response::{
        Html, IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use tokio::sync::{Notify, watch};

use self::{
    flows::{FlowView, Flows},
    guard::{SessionCsrf, Sessions},
};
use crate::{
    Secret,
    auth::{AuthOptions, Callbacks},
    manage::Card,
    store::AnyStore,
};

/// What the page is made with.
#[derive(Clone, Debug)]
pub struct UiOptions {
    /// How to authorize (grant, scopes, client...). The page sets where the
    /// authorization page opens and where its callback comes back.
    pub auth: AuthOptions,
    /// How long after the last tab closed the page ends ([`Ui::serve`]); `None`:
    /// only the caller's shutdown ends it.
    pub idle_exit: Option<Duration>,
    /// The store's location, as the page names it.
    pub store_label: String,
}

impl Default for UiOptions {
    fn default() -> Self {
        Self {
            auth: AuthOptions::default(),
            idle_exit: Some(Duration::from_secs(30)),
            store_label: String::new(),
        }
    }
}

/// The page's state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ui {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: AnyStore,
    http: crate::http::WireClient,
    options: UiOptions,
    port: u16,
    sessions: Arc<Sessions>,
    callbacks: Callbacks,
    flows: Flows,
    /// The cards as last read, and a count that changes when they do.
    snapshot: watch::Sender<Snapshot>,
    /// Read the store now (after a change made here).
    poke: Notify,
    /// Event streams open now (tabs showing the page).
    streams: watch::Sender<usize>,
}

#[derive(Clone, Debug, Default)]
struct Snapshot {
    cards: Vec<Card>,
    flows: BTreeMap<String, FlowView>,
    /// The JSON of both, to tell a change.
    key: String,
}

fn now() -> u64 {
    crate::store::unix(SystemTime::now())
}

/// One open event stream; dropping it counts it closed.
struct StreamOpen(watch::Sender<usize>);

impl Drop for StreamOpen {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Ui {
    /// The page's state for a listener on 127.0.0.1:`port`, and the one-time secret
    /// its link carries (`http://127.0.0.1:PORT/login?k=SECRET`).
    pub fn new(
        store: impl Into<AnyStore>,
        http: crate::http::WireClient,
        options: UiOptions,
        port: u16,
    ) -> (Self, Secret) {
        let store = store.into();
        let (sessions, secret) = Sessions::new(port);
        let callbacks = Callbacks::new(format!(
            "http://127.0.0.1:{port}{}",
            crate::auth::loopback::CALLBACK_PATH
        ));
        let ui = Self {
            inner: Arc::new(Inner {
                store,
                http,
                options,
                port,
                sessions: Arc::new(sessions),
                callbacks,
                flows: Flows::default(),
                snapshot: watch::channel(Snapshot::default()).0,
                poke: Notify::new(),
                streams: watch::channel(0).0,
            }),
        };
        (ui, secret)
    }

    /// The link that opens the page (its secret works once).
    pub fn login_url(&self, secret: &Secret) -> Secret {
        Secret::new(format!(
            "http://127.0.0.1:{}/login?k={}",
            self.inner.port,
            secret.expose()
        ))
    }

    /// The flows the page started.
    pub fn flows(&self) -> &Flows {
        &self.inner.flows
    }

    /// The whole app: every route behind the guard.
    pub fn app(&self) -> Router {
        let api = api::routes();
        Router::new()
            .route("/", get(index))
            .route("/login", get(login))
            .route(crate::auth::loopback::CALLBACK_PATH, get(callback))
            .route("/app.js", get(script))
            .route("/app.css", get(style))
            .route("/events", get(events))
            .route("/cards", get(cards_json))
            .merge(api)
            .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
            .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
            .with_state(self.clone())
            .layer(middleware::from_fn_with_state(
                self.inner.sessions.clone(),
                guard::check,
            ))
    }

    /// Serve on `listener` until `shutdown` resolves, or (with
    /// [`UiOptions::idle_exit`]) until no tab has shown the page for that long and no
    /// authorization is under way.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let app = self.app();
        let watcher = tokio::spawn(self.clone().watch_store());
        let idle = self.clone().idle();
        let limits = crate::gateway::edge::EdgeLimits {
            max_connections: 64,
            max_body: 1 << 20,
            ..Default::default()
        };
        let stop = async move {
            tokio::select! {
                () = shutdown => {}
                () = idle => tracing::info!("the last tab closed; the settings page ends"),
            }
        };
        // Each connection is tagged with who is at its other end (guard::check
        // refuses other users of this machine).
        let (edge, _open) = crate::gateway::edge::Edge::new(limits);
        let result = edge
            .run_tagged(listener, app, peer::owner_of, stop, Duration::from_secs(2))
            .await;
        watcher.abort();
        // Flows still waiting for a person end with the page; a server being added
        // by one is taken away again, as a failed add is.
        for id in self.inner.flows.cancel_all("keyway ui ended") {
            self.purge_added(&id).await;
        }
        result
    }

    /// Take away the row an Add & Authorize made before its flow was cancelled.
    async fn purge_added(&self, id: &str) {
        use crate::store::Store as _;
        if let Err(e) = self.inner.store.purge_server(id).await {
            tracing::warn!(error = %e, "taking back a cancelled add failed");
        }
    }

    /// Resolves once no tab has had the page open for `idle_exit` (after one did)
    /// with no authorization under way; never without `idle_exit`.
    async fn idle(self) {
        let Some(limit) = self.inner.options.idle_exit else {
            return std::future::pending().await;
        };
        let mut streams = self.inner.streams.subscribe();
        // Until a tab has opened the page, nothing to wait for.
        let _ = streams.wait_for(|n| *n > 0).await;
        loop {
            let _ = streams.wait_for(|n| *n == 0).await;
            match tokio::time::timeout(limit, streams.wait_for(|n| *n > 0)).await {
                Ok(_) => continue,
                Err(_) if self.inner.flows.any_running() => continue,
                Err(_) => return,
            }
        }
    }

    /// Keep the snapshot current: read the store when poked, when a flow changes, and
    /// every second while a tab shows the page (another process may change it).
    async fn watch_store(self) {
        let mut flows = self.inner.flows.watch();
        let mut streams = self.inner.streams.subscribe();
        loop {
            self.refresh().await;
            let open = *streams.borrow_and_update() > 0;
            tokio::select! {
                () = self.inner.poke.notified() => {}
                _ = flows.changed() => {}
                _ = streams.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)), if open => {}
            }
        }
    }

    /// Read the cards now; the snapshot changes only when they did.
    async fn refresh(&self) -> Snapshot {
        let cards = match crate::manage::cards(&self.inner.store).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "reading the servers for the settings page failed");
                return self.inner.snapshot.borrow().clone();
            }
        };
        let flows = self.inner.flows.all();
        let key = serde_json::to_string(&(&cards, &flows)).unwrap_or_default();
        let snap = Snapshot { cards, flows, key };
        self.inner.snapshot.send_if_modified(|old| {
            if old.key == snap.key {
                false
            } else {
                *old = snap.clone();
                true
            }
        });
        snap
    }

    /// Something changed here: read the store again now.
    fn changed(&self) {
        self.inner.poke.notify_one();
    }

    fn store(&self) -> &AnyStore {
        &self.inner.store
    }
}

async fn login(State(ui): State<Ui>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let Some(cookie) = q.get("k").and_then(|k| ui.inner.sessions.exchange(k)) else {
        return (
            StatusCode::FORBIDDEN,
            Html(page::message(
                "This link does not work",
                "Each link keyway ui prints opens the page once, in one browser. Run keyway ui again for a new one.",
            )),
        )
            .into_response();
    };
    // A page of our own that moves on to `/`, not a redirect: the link may have been
    // opened from a file or another program, and a redirect would carry that
    // navigation's cross-site origin on to `/`, where the browser then leaves the
    // SameSite=Strict cookie out. From this page, the next one is same-origin.
    let mut r = Html(
        "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url=/\">\
         <title>keyway</title><p><a href=\"/\">Open keyway's settings page</a></p>",
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn callback(State(ui): State<Ui>, RawQuery(q): RawQuery) -> Response {
    ui.inner.callbacks.answer(q).await
}

async fn index(State(ui): State<Ui>, Extension(csrf): Extension<SessionCsrf>) -> Response {
    let snap = ui.refresh().await;
    let cards = page::cards(&snap.cards, &snap.flows, csrf.0.expose(), now());
    Html(page::page(
        &cards,
        csrf.0.expose(),
        &ui.inner.options.store_label,
    ))
    .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/app.css"),
    )
        .into_response()
}

/// The cards and flows, as the page's script and tests read them.
async fn cards_json(State(ui): State<Ui>) -> Response {
    let snap = ui.refresh().await;
    axum::Json(serde_json::json!({"cards": snap.cards, "flows": snap.flows})).into_response()
}

/// The cards as HTML and the flows as JSON, once now and again at every change, for
/// as long as the tab keeps the stream open.
async fn events(State(ui): State<Ui>, Extension(csrf): Extension<SessionCsrf>) -> Response {
    ui.inner.streams.send_modify(|n| *n += 1);
    let open = StreamOpen(ui.inner.streams.clone());
    let mut rx = ui.inner.snapshot.subscribe();
    rx.mark_changed();
    let csrf = csrf.0;
    let stream = futures::stream::unfold((rx, open), move |(mut rx, open)| {
        let csrf = csrf.clone();
        async move {
            rx.changed().await.ok()?;
            let snap = rx.borrow_and_update().clone();
            let html = page::cards(&snap.cards, &snap.flows, csrf.expose(), now());
            let data = serde_json::json!({"html": html, "flows": snap.flows}).to_string();
            let event = Event::default().event("cards").data(data);
            Some((Ok::<_, std::convert::Infallible>(event), (rx, open)))
        }
    });
    ui.changed();
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
