//! The gateway over Streamable HTTP (`keyway serve --listen`): POST for requests (JSON
//! answers), GET for the event stream of notifications and server requests, DELETE to
//! end. Every request is checked before anything else, its body included, by a layer
//! over the whole router (no route can skip it, nor a path that has none): the Host
//! header (DNS rebinding), the Origin header (a web page may only be the gateway's own
//! origin), and the gateway's bearer token (always required: a page the user visits
//! can send a request to a loopback port, but cannot know the token). A POST must say
//! `Content-Type: application/json`, which a page cannot send to another origin
//! without the browser asking first (CORS), and which the gateway allows only for the
//! origins it is given ([`Guard::cors_origins`]; none by default). Pages of those may
//! call it with the token, and read its `WWW-Authenticate`, session and protocol
//! headers; no other origin gets an answer it can read.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::post,
};
use futures::Stream;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{
    Gateway,
    inbound::{METADATA_PATH, Principal, ProtectedResource, Rejection},
};
use crate::{Secret, store::SealingKey};

pub use super::edge::{BACKLOG, EdgeLimits, listen};

/// The JSON-RPC error code of a request the client cancelled. MCP defines none (its
/// clients ignore whatever comes after they cancel); this is the one LSP uses.
pub const CANCELLED: i64 = -32800;

/// Who may talk to the listener.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Accepted `Host` values (names or addresses, any port).
    pub hosts: Vec<String>,
    /// Those of `hosts` named by the operator (`--allowed-host`): a proxy in front may
    /// serve the gateway over https under them.
    pub proxied: Vec<String>,
    /// Who may call, and how they prove it.
    pub callers: Callers,
    /// Web origins (`https://chat.example`) whose pages may call the gateway, with
    /// the token, through CORS (`--cors-origin`); none by default.
    pub cors_origins: Vec<String>,
    /// Seals session ids ([`Guard::with_session_key`]); without it they are random
    /// and known only to this process.
    pub session_key: Option<Arc<SealingKey>>,
    /// With [`Callers::OAuth`], the token that opens `/metrics` (a scraper's; people's
    /// tokens never do). Without it, `/metrics` is closed to everyone.
    pub metrics_token: Option<Secret>,
    /// The caller the gateway's token stands for, made once.
    operator: Caller,
}

/// Who may call the gateway.
#[derive(Clone, Debug)]
pub enum Callers {
    /// Whoever holds the gateway's own token (one person, or a few trusted with it).
    Token(Secret),
    /// The people of an organisation, each with an access token its authorization
    /// server issued for the gateway ([`ProtectedResource`]).
    OAuth(Arc<ProtectedResource>),
}

/// Why a `--cors-origin` was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{given} is not a web origin: give its scheme and host (and port), as https://chat.example; `*` is never allowed, since pages would send the gateway's token from anywhere"
)]
pub struct BadOrigin {
    /// What was given (made printable).
    pub given: String,
}

/// `text` as browsers send it in `Origin`: `scheme://host[:port]`, http or https,
/// nothing after.
pub fn web_origin(text: &str) -> Result<String, BadOrigin> {
    let bad = || BadOrigin {
        given: crate::text::shown(text, 100),
    };
    let url = url::Url::parse(text.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    Ok(url.origin().ascii_serialization())
}

impl Guard {
    /// The hosts for a listen address: loopback names, plus the address itself.
    pub fn for_addr(addr: SocketAddr, token: Secret, extra_hosts: &[String]) -> Self {
        let mut hosts = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
            "::1".to_owned(),
        ];
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        };
        if !hosts.contains(&ip) {
            hosts.push(ip);
        }
        let proxied: Vec<String> = extra_hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        hosts.extend(proxied.iter().cloned());
        Self {
            hosts,
            proxied,
            callers: Callers::Token(token),
            cors_origins: Vec::new(),
            session_key: None,
            metrics_token: None,
            operator: Arc::new(Principal::operator()),
        }
    }

    /// With people signing in ([`Guard::with_resource`]), `/metrics` opens to
    /// `token` alone: a scraper holds a fixed token, and the metrics name the
    /// servers, which is for operators, not every person with an account.
    pub fn with_metrics_token(mut self, token: Secret) -> Self {
        self.metrics_token = Some(token);
        self
    }

    /// This guard, making session ids that any gateway with the same `key` reads:
    /// each id is the session's person (issuer and subject) sealed with the key, so
    /// a replica behind the same load balancer serves a session another one started,
    /// to that person only. (What a session holds at a server, its subscriptions
    /// and its stream, stays with the replica where it happened.)
    pub fn with_session_key(mut self, key: SealingKey) -> Self {
        self.session_key = Some(Arc::new(key));
        self
    }

    /// This guard, serving the people of an organisation instead of the holders of
    /// the gateway's token: each request needs an access token `resource` accepts.
    /// The host of the resource URL (a load balancer's, say) is allowed too, over
    /// https when the URL says so.
    pub fn with_resource(mut self, resource: Arc<ProtectedResource>) -> Self {
        if let Ok(url) = url::Url::parse(resource.resource())
            && let Some(host) = url.host_str()
        {
            let host = host.to_ascii_lowercase();
            if !self.hosts.contains(&host) {
                self.hosts.push(host.clone());
            }
            if url.scheme() == "https" && !self.proxied.contains(&host) {
                self.proxied.push(host);
            }
        }
        self.callers = Callers::OAuth(resource);
        self
    }

    /// This guard, letting pages of `origins` call the gateway too (each checked
    /// with [`web_origin`]).
    pub fn with_cors_origins(mut self, origins: &[String]) -> Result<Self, BadOrigin> {
        for o in origins {
            let o = web_origin(o)?;
            if !self.cors_origins.contains(&o) {
                self.cors_origins.push(o);
            }
        }
        Ok(self)
    }

    /// The checks every request meets before its caller is asked who they are: the
    /// Host (DNS rebinding) and the Origin.
    fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let refuse = |status: StatusCode, why: &'static str| Refusal(status, why);
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let host_name = strip_port(&host);
        if !self.hosts.iter().any(|h| h == host_name) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "this Host is not allowed (DNS rebinding protection)",
            ));
        }
        let https_too = self.proxied.iter().any(|h| h == host_name);
        if let Some(origin) = headers.get(header::ORIGIN)
            && !origin.to_str().is_ok_and(|o| {
                same_origin(o, &host, https_too) || self.cors_origins.iter().any(|c| c == o)
            })
        {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "requests from another origin are not allowed",
            ));
        }
        Ok(())
    }

    /// Who the caller is: the operator, for the gateway's token; a person of the
    /// organisation, for an access token of its authorization server. `/metrics`
    /// (`metrics`) of a gateway people sign in to takes the metrics token alone.
    async fn caller(&self, headers: &HeaderMap, metrics: bool) -> Result<Caller, Response> {
        let token = match (&self.callers, &self.metrics_token) {
            (Callers::Token(token), _) => token,
            (Callers::OAuth(_), Some(token)) if metrics => token,
            (Callers::OAuth(_), None) if metrics => {
                return Err(Refusal(
                    StatusCode::UNAUTHORIZED,
                    "the metrics are not served: the gateway was given no token for them",
                )
                .into_response());
            }
            (Callers::OAuth(resource), _) => {
                let checked = resource.authenticate(headers).await;
                super::metrics::record_caller(match &checked {
                    Ok(_) => "accepted",
                    Err(Rejection::Missing) => "missing",
                    Err(Rejection::Unavailable(_)) => "unavailable",
                    Err(why) => why.code().unwrap_or("invalid_token"),
                });
                return checked.map(Arc::new).map_err(|why| refused(resource, &why));
            }
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .unwrap_or_default();
        // An empty token (a file cut short) opens nothing.
        let expected = token.expose().as_bytes();
        if expected.is_empty() || !constant_time_eq(given.trim().as_bytes(), expected) {
            return Err(
                Refusal(StatusCode::UNAUTHORIZED, "the gateway needs its token").into_response(),
            );
        }
        Ok(self.operator.clone())
    }
}

/// The answer to a caller whose token is not taken: the status, the challenge
/// (RFC 6750 §3), and a body saying why in the gateway's words. Why the server could
/// not be asked stays in the log: a stranger learns only that it could not.
fn refused(resource: &ProtectedResource, why: &Rejection) -> Response {
    let description = match why {
        Rejection::Unavailable(detail) => {
            tracing::warn!("a token could not be checked: {detail}");
            "the authorization server could not be asked about the token; try again shortly"
                .to_owned()
        }
        other => {
            tracing::debug!(reason = %other, "caller refused");
            other.to_string()
        }
    };
    let body = match why.code() {
        Some(code) => json!({"error": code, "error_description": description}),
        None => json!({"error_description": description}),
    };
    let mut r = (why.status(), Json(body)).into_response();
    if why.status() != StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, resource.challenge(why));
    }
    r
}

/// Whether `origin` is the origin the request was sent to: http (or https behind a
/// proxy, `https_too`), and the host and port of the `Host` header (a page of another
/// port on the same machine is another origin).
fn same_origin(origin: &str, host: &str, https_too: bool) -> bool {
    let Ok(o) = url::Url::parse(origin) else {
        return false;
    };
    let default_port = match o.scheme() {
        "http" => 80,
        "https" if https_too => 443,
        _ => return false,
    };
    let (Some(o_host), Some(o_port)) = (o.host_str(), o.port_or_known_default()) else {
        return false;
    };
    let name = strip_port(host);
    let port = match host[name.len()..].strip_prefix(':') {
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return false,
        },
        None => default_port,
    };
    o_host.eq_ignore_ascii_case(name) && o_port == port
}

/// Whether a request says its body is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
}

/// Why a request was turned away, before anything else happened.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"keyway-gateway\""),
            );
        }
        r
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [::1]:8080
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct AppState {
    gw: super::people::Gateways,
    limits: EdgeLimits,
    /// Numbers the 2026-07-28 requests, each of which is a session of its own.
    requests: Arc<std::sync::atomic::AtomicU64>,
    /// The sessions `initialize` started and no DELETE ended.
    sessions: Arc<Mutex<Sessions>>,
    /// Requests answered on an event stream of their own, by session and id (JSON
    /// text): what comes in their course goes there, not to the session's GET stream.
    streamed: Streamed,
    /// Seals and opens session ids, when they are to be read by other replicas.
    session_key: Option<Arc<SealingKey>>,
}

/// What a sealed session id is bound to.
const SESSION_AAD: &str = "keyway gateway session id v1";

/// A new session id for `owner`: sealed with `key` (base64url, so visible ASCII as
/// the transport asks), else 32 random hex digits.
fn new_session_id(key: Option<&SealingKey>, owner: &Owner) -> String {
    let mut nonce = [0u8; 16];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
    let random: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    match key {
        None => random,
        Some(key) => {
            let plain = json!({"i": owner.0, "s": owner.1, "n": random}).to_string();
            base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                key.seal(SESSION_AAD, plain.as_bytes()),
            )
        }
    }
}

/// The owner sealed in session id `id`, if `key` sealed it.
fn sealed_owner(key: &SealingKey, id: &str) -> Option<Owner> {
    // A sealed id of any owner is well under this; longer is not one of ours.
    if id.len() > 2048 {
        return None;
    }
    let sealed =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, id).ok()?;
    let plain = key.open(SESSION_AAD, &sealed)?;
    let v: Value = serde_json::from_slice(&plain).ok()?;
    Some((v["i"].as_str()?.to_owned(), v["s"].as_str()?.to_owned()))
}

type Streamed = Arc<Mutex<std::collections::HashSet<(String, String)>>>;

/// Takes a request out of [`AppState::streamed`] when its stream ends.
struct Streaming {
    streamed: Streamed,
    key: (String, String),
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// The live sessions of handshake-era clients, each with the person who started it,
/// the oldest forgotten first beyond [`MAX_SESSIONS`] (its client is told 404 and
/// starts a new one, as the transport provides). A session answers only to its
/// person: another caller naming its id is told it does not exist.
#[derive(Default)]
struct Sessions {
    live: std::collections::HashMap<String, Owner>,
    order: std::collections::VecDeque<String>,
}

/// Who a session belongs to: the issuer and subject of its caller.
type Owner = (String, String);

/// The owner a request's caller would be (made only when a session starts).
fn owner(caller: Option<&Principal>) -> Owner {
    caller
        .map(|p| (p.issuer.clone(), p.subject.clone()))
        .unwrap_or_default()
}

/// Whether `caller` is `owner` (compared in place: no owner is made per request).
fn owns(owner: &Owner, caller: Option<&Principal>) -> bool {
    match caller {
        Some(p) => owner.0 == p.issuer && owner.1 == p.subject,
        None => owner.0.is_empty() && owner.1.is_empty(),
    }
}

/// The caller the guard put on a request.
type Caller = Arc<Principal>;

/// Sessions kept at once.
const MAX_SESSIONS: usize = 4096;
/// Sessions kept at once for one person: beyond it, their own oldest is forgotten,
/// so no one can push everyone else's sessions out by opening thousands.
const MAX_SESSIONS_PER_PERSON: usize = MAX_SESSIONS / 8;

impl Sessions {
    /// A new session; the one forgotten to make room for it, if any: the person's
    /// own oldest when they hold their share, else the oldest of all when full.
    fn start(&mut self, id: String, owner: Owner) -> Option<(String, Owner)> {
        let theirs = self.live.values().filter(|o| **o == owner).count();
        let forgotten = if theirs >= MAX_SESSIONS_PER_PERSON {
            let live = &self.live;
            self.order
                .iter()
                .position(|s| live.get(s) == Some(&owner))
                .and_then(|at| self.order.remove(at))
        } else if self.order.len() >= MAX_SESSIONS {
            self.order.pop_front()
        } else {
            None
        };
        let forgotten = forgotten.and_then(|old| self.live.remove(&old).map(|o| (old, o)));
        self.live.insert(id.clone(), owner);
        self.order.push_back(id);
        forgotten
    }

    /// End `id`, if it is `caller`'s.
    fn end(&mut self, id: &str, caller: Option<&Principal>) -> bool {
        if !self.live.get(id).is_some_and(|o| owns(o, caller)) {
            return false;
        }
        self.order.retain(|s| s != id);
        self.live.remove(id).is_some()
    }
}

impl AppState {
    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End what the gateway holds for a session forgotten to make room.
    fn end_forgotten(&self, forgotten: Option<(String, Owner)>) {
        if let Some((old, owner)) = forgotten
            && let Some(gw) = self.gw.of_owner(&owner.0, &owner.1)
        {
            tokio::spawn(async move { gw.end_session(&old).await });
        }
    }

    /// A request naming a session that is not (or no longer) live, or not its
    /// caller's: 404, so the client starts a new one.
    fn unknown_session(&self, headers: &HeaderMap, caller: Option<&Principal>) -> Option<Response> {
        let id = session_of(headers);
        if id.is_empty()
            || self
                .sessions()
                .live
                .get(id)
                .is_some_and(|o| owns(o, caller))
        {
            return None;
        }
        // Another replica started it (or this one forgot it): it is taken on here.
        if let Some(key) = &self.session_key
            && let Some(owner) = sealed_owner(key, id).filter(|o| owns(o, caller))
        {
            let forgotten = self.sessions().start(id.to_owned(), owner);
            self.end_forgotten(forgotten);
            return None;
        }
        Some(
            (
                StatusCode::NOT_FOUND,
                Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001,
                    "message": "session not found: it ended, or the gateway restarted; initialize again"}})),
            )
                .into_response(),
        )
    }
}

/// The listener's routes at `/mcp`, behind the [`Guard`]. Serve them with
/// [`super::edge::serve`], which applies the connection limits of `limits`; the body
/// limits are applied here.
pub fn app(gw: Arc<Gateway>, guard: Guard, limits: EdgeLimits) -> Router {
    app_with(gw, guard, limits, Router::new())
}

/// [`app`] with routes of `open` served outside the guard (the health probes: they
/// carry no token). A path that matches no route still meets the guard first.
pub fn app_with(
    gw: impl Into<super::people::Gateways>,
    guard: Guard,
    limits: EdgeLimits,
    open: Router,
) -> Router {
    let gw = gw.into();
    let cors = cors_layer(&guard.cors_origins);
    let metadata = match &guard.callers {
        Callers::OAuth(resource) => metadata_routes(resource.clone()),
        Callers::Token(_) => Router::new(),
    };
    let guard = Arc::new(guard);
    let router = Router::new()
        .route(
            "/mcp",
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        // Behind the guard: the metrics name the servers.
        .route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    super::metrics::render(),
                )
            }),
        )
        .with_state(AppState {
            gw,
            limits,
            requests: Arc::default(),
            sessions: Arc::default(),
            streamed: Arc::default(),
            session_key: guard.session_key.clone(),
        })
        // A layer on the whole router, so every request meets the guard first.
        .layer(axum::middleware::from_fn_with_state(guard.clone(), guarded))
        // Outside the guard: a client reads the metadata before it has a token.
        .merge(metadata)
        .merge(open)
        // A path that matches no route meets the guard too (a 404 would tell a
        // stranger what is there). Set last: a merge would drop a layered fallback.
        .fallback_service(
            axum::routing::any(|| async { StatusCode::NOT_FOUND })
                .layer(axum::middleware::from_fn_with_state(guard, guarded)),
        );
    match cors {
        None => router,
        // Outside the guard: a preflight carries no token and is answered here, and
        // the guard's own refusals (a 401 and its WWW-Authenticate) reach the page.
        Some(cors) => router.layer(cors),
    }
}

/// The protected resource metadata (RFC 9728 §3): at the well-known path with the
/// resource's path inserted, and at the bare well-known path as well.
fn metadata_routes(resource: Arc<ProtectedResource>) -> Router {
    let (path, _) = resource.metadata_location();
    let doc = resource.metadata();
    let serve = move || {
        let doc = doc.clone();
        async move { Json(doc) }
    };
    let mut router = Router::new().route(path, axum::routing::get(serve.clone()));
    if path != METADATA_PATH {
        router = router.route(METADATA_PATH, axum::routing::get(serve));
    }
    router
}

/// The CORS policy for `origins` (tower-http's): preflights answered for them alone,
/// the headers an MCP client sends allowed, the ones it must read exposed
/// (`WWW-Authenticate` for its authorization, the session and protocol headers). No
/// cookies: the gateway's token goes in `Authorization`, so credentials mode is off.
fn cors_layer(origins: &[String]) -> Option<tower_http::cors::CorsLayer> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let name = |n: &'static str| header::HeaderName::from_static(n);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(allowed))
            .allow_methods([
                axum::http::Method::GET,
                axum::http::Method::POST,
                axum::http::Method::DELETE,
            ])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                header::ACCEPT,
                name("mcp-session-id"),
                name("mcp-protocol-version"),
                name("last-event-id"),
            ])
            .expose_headers([
                header::WWW_AUTHENTICATE,
                name("mcp-session-id"),
                name("mcp-protocol-version"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The guard as a layer: a request that fails it is answered here, before any
/// handler runs or its body is read.
async fn guarded(
    State(guard): State<Arc<Guard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request_id(request.headers());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        issuer = tracing::field::Empty,
        subject = tracing::field::Empty,
    );
    let started = std::time::Instant::now();
    let mut response = async {
        if let Err(refusal) = guard.check(request.headers()) {
            return refusal.into_response();
        }
        let mut request = request;
        let metrics = request.uri().path() == "/metrics";
        match guard.caller(request.headers(), metrics).await {
            Ok(principal) => {
                let span = tracing::Span::current();
                span.record("issuer", principal.issuer.as_str());
                span.record("subject", principal.subject.as_str());
                request.extensions_mut().insert(principal);
            }
            Err(refusal) => return refusal,
        }
        next.run(request).await
    }
    .instrument(span.clone())
    .await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "answered"
        )
    });
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, v);
    }
    response
}

/// The header carrying a request's id, both ways: one a proxy in front gave (when it
/// looks like an id) is kept, else the gateway makes one. Every log line of the
/// request carries it, and the answer names it.
pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The id of a request: the caller's `X-Request-Id` when it is 1 to 64 of
/// `A-Za-z0-9-_.:`, else 16 random hex digits.
fn request_id(headers: &HeaderMap) -> String {
    let given = headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        });
    match given {
        Some(v) => v.to_owned(),
        None => format!("{:016x}", rand::random::<u64>()),
    }
}

/// A request's body, read only now that its headers passed the guard: at most
/// `max_body` bytes, within `body_timeout`.
async fn read_body(
    limits: &EdgeLimits,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Json(json!({"error": format!("a message may be at most {} MiB", limits.max_body / (1024 * 1024))})),
        )
            .into_response()
    };
    if declared.is_some_and(|n| n > limits.max_body as u64) {
        return Err(too_large());
    }
    // A small body usually came with the headers: taken at once, without setting a
    // timer for it (a timer per request is measurable on the gateway's hot path).
    let mut read = std::pin::pin!(axum::body::to_bytes(body, limits.max_body));
    let read = match futures::FutureExt::now_or_never(&mut read) {
        Some(done) => Ok(done),
        None => tokio::time::timeout(limits.body_timeout, read).await,
    };
    match read {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": "the request body did not arrive in time"})),
        )
            .into_response()),
    }
}

async fn handle_post(State(s): State<AppState>, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let caller = parts.extensions.get::<Caller>().map(|c| &**c);
    let gw = s.gw.for_caller(caller).await;
    let headers = parts.headers;
    if !is_json(&headers) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Json(json!({"error": "a POST must be Content-Type: application/json"})),
        )
            .into_response();
    }
    let body = match read_body(&s.limits, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    // Strict: a client's message whose keys repeat could read one way here and
    // another way at the server behind.
    let message: Value = match crate::json::parse(&body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(Value::Array(batch)) => return handle_batch(&s, &headers, caller, batch).await,
        parsed => {
            let why = match parsed {
                Err(e) => format!("parse error: {e}"),
                Ok(_) => "parse error: one JSON-RPC object per request".to_owned(),
            };
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": why}})),
            )
                .into_response();
        }
    };
    let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    // A request (method and id) gets an answer whatever happens; see below.
    let request_id = message.get("method").and(message.get("id")).cloned();
    let refuse = |error: Value| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"jsonrpc": "2.0", "id": request_id.clone(), "error": error})),
        )
            .into_response()
    };
    if let Err(error) = super::modern::check_headers(&headers, &message) {
        return refuse(error);
    }
    let own_session;
    let session = match message.get("params").and_then(super::modern::revision) {
        // 2026-07-28: no session; each request is on its own.
        Some(_) if !session_of(&headers).is_empty() => {
            return refuse(json!({"code": -32600, "message":
                "a 2026-07-28 request belongs to no session: send it without Mcp-Session-Id, or initialize and speak the session's revision"}));
        }
        Some(_) => {
            own_session = format!(
                "{REQUEST_SESSION}{}",
                s.requests
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            own_session.as_str()
        }
        // A new session's id is made first: the gateway keeps what its client
        // declares in `initialize` under it.
        None if is_initialize => {
            own_session = new_session_id(s.session_key.as_deref(), &owner(caller));
            own_session.as_str()
        }
        None => {
            if let Some(r) = s.unknown_session(&headers, caller) {
                return r;
            }
            session_of(&headers)
        }
    };
    // `subscriptions/listen`: a stream for as long as the client keeps it open.
    if session.starts_with(REQUEST_SESSION)
        && message.get("method").and_then(Value::as_str) == Some("subscriptions/listen")
    {
        if !accepts_events(&headers) {
            return refuse(json!({"code": -32600, "message":
                "subscriptions/listen is answered with an event stream: send Accept: text/event-stream"}));
        }
        let id = request_id.clone().unwrap_or(Value::Null);
        let params = message.get("params").cloned().unwrap_or(Value::Null);
        let session = session.to_owned();
        let stream = async_stream_events(move |tx| async move {
            let (out, mut rx) = tokio::sync::mpsc::channel::<String>(64);
            let listening = gw.listen(&session, id, params, out);
            tokio::pin!(listening);
            loop {
                tokio::select! {
                    () = &mut listening => break,
                    // The client closed the stream: dropping `listening` ends it.
                    () = tx.closed() => break,
                    text = rx.recv() => match text {
                        Some(text) => {
                            if tx.send(Event::default().event("message").data(text)).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            // What it sent last (an error) before it ended.
            while let Ok(text) = rx.try_recv() {
                let _ = tx.send(Event::default().event("message").data(text)).await;
            }
        });
        return Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response();
    }
    // A request with a progress token, from a client that takes a stream: its
    // progress (and a server's requests in its course) and then its answer, on the
    // POST's own event stream, so they come before the answer as the server sent them
    // (a 2026-07-28 client has no other stream).
    if let Some(id) = &request_id
        && !is_initialize
        && message.pointer("/params/_meta/progressToken").is_some()
        && accepts_events(&headers)
    {
        let key = (session.to_owned(), id.to_string());
        s.streamed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone());
        let streaming = Streaming {
            streamed: s.streamed.clone(),
            key,
        };
        return Sse::new(answer_with_progress(gw, streaming, message)).into_response();
    }
    match gw.handle(session, message).await {
        None if is_initialize => {
            // Cancelled before its session started: nothing of it is kept.
            gw.end_session(session).await;
            let id = request_id.unwrap_or(Value::Null);
            Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": CANCELLED, "message": "cancelled by the client"}})).into_response()
        }
        None => match request_id {
            // Cancelled by the client meanwhile. Over HTTP a request's POST still
            // needs an answer; the client ignores it (it cancelled).
            Some(id) => Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": CANCELLED, "message": "cancelled by the client"}})).into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        },
        Some(answer) => {
            // A 2026-07-28 error answer says on the HTTP status too what it is.
            let status = if session.starts_with(REQUEST_SESSION) {
                error_code(&answer)
                    .map(super::modern::error_status)
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK)
            } else {
                StatusCode::OK
            };
            let mut r = (
                status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                answer,
            )
                .into_response();
            if is_initialize && let Ok(v) = HeaderValue::from_str(session) {
                r.headers_mut().insert("mcp-session-id", v);
                let forgotten = s.sessions().start(session.to_owned(), owner(caller));
                s.end_forgotten(forgotten);
            }
            r
        }
    }
}

/// Most messages in one batch.
const MAX_BATCH: usize = 100;

/// A JSON-RPC batch, as 2025-03-26 clients may send: each message handled as if sent
/// alone (at once, side by side) in the client's session, the answers together in one
/// array (202 when there are none). 2026-07-28 has no batches, and `initialize` may
/// not be in one.
async fn handle_batch(
    s: &AppState,
    headers: &HeaderMap,
    caller: Option<&Principal>,
    batch: Vec<Value>,
) -> Response {
    let invalid = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": why}})),
        )
            .into_response()
    };
    if batch.is_empty() {
        return invalid("an empty batch");
    }
    if batch.len() > MAX_BATCH {
        return invalid("a batch of more than 100 messages");
    }
    let modern = batch
        .iter()
        .any(|m| m.get("params").and_then(super::modern::revision).is_some());
    if modern || headers.contains_key("mcp-method") {
        return invalid("MCP 2026-07-28 has no batches: send the requests one by one");
    }
    if batch
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
    {
        return invalid("initialize may not be part of a batch");
    }
    if let Some(r) = s.unknown_session(headers, caller) {
        return r;
    }
    let session = session_of(headers);
    let gw = &s.gw.for_caller(caller).await;
    let answers = futures::future::join_all(batch.into_iter().map(|message| async move {
        match message {
            Value::Object(_) => {
                let request_id = message.get("method").and(message.get("id")).cloned();
                match gw.handle(session, message).await {
                    Some(answer) => serde_json::from_str::<Value>(&answer).ok(),
                    // Cancelled meanwhile: a request still gets its answer.
                    None => request_id.map(|id| {
                        json!({"jsonrpc": "2.0", "id": id,
                        "error": {"code": CANCELLED, "message": "cancelled by the client"}})
                    }),
                }
            }
            _ => Some(json!({"jsonrpc": "2.0", "id": null,
                "error": {"code": -32600, "message": "a batch holds JSON-RPC objects"}})),
        }
    }))
    .await;
    let answers: Vec<Value> = answers.into_iter().flatten().collect();
    if answers.is_empty() {
        StatusCode::ACCEPTED.into_response()
    } else {
        Json(Value::Array(answers)).into_response()
    }
}

/// The client's session id ("" when it sent none).
fn session_of(headers: &HeaderMap) -> &str {
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn handle_get(
    State(s): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let caller = caller.as_ref().map(|c| &*c.0);
    if let Some(r) = s.unknown_session(&headers, caller) {
        return r;
    }
    let gw = s.gw.for_caller(caller).await;
    let rx = gw.subscribe();
    let listener = gw.listener(session_of(&headers));
    let stream = events(
        rx,
        session_of(&headers).to_owned(),
        s.streamed.clone(),
        listener,
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What the gateway has for a client of `session`, as events (less what goes on the
/// stream of a request answered on one of its own).
fn events(
    mut rx: tokio::sync::broadcast::Receiver<super::Notice>,
    session: String,
    streamed: Streamed,
    listener: super::Listener,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let on_its_own = move |notice: &super::Notice| {
        notice.request.as_ref().is_some_and(|r| {
            streamed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&(session_key(notice), r.clone()))
        })
    };
    async_stream_events(move |tx| async move {
        let _listener = listener;
        loop {
            let notice = tokio::select! {
                // The client closed the stream.
                () = tx.closed() => break,
                notice = rx.recv() => notice,
            };
            match notice {
                Ok(notice) if !notice.is_for(&session) || on_its_own(&notice) => {}
                Ok(notice) => {
                    if tx
                        .send(
                            Event::default()
                                .event("message")
                                .data(notice.message.to_string()),
                        )
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => break,
            }
        }
    })
}

/// The JSON-RPC error code of an answer, if it is an error (read without building
/// the rest).
fn error_code(answer: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Answer {
        error: Option<Code>,
    }
    #[derive(serde::Deserialize)]
    struct Code {
        code: i64,
    }
    serde_json::from_str::<Answer>(answer)
        .ok()?
        .error
        .map(|e| e.code)
}

/// How long a streamed answer waits, after it arrived, for progress reports still on
/// their way (and again after each one), at most ten times over.
const PROGRESS_GRACE: Duration = Duration::from_millis(20);

/// The session name of each 2026-07-28 request (numbered), which has none of its own.
const REQUEST_SESSION: &str = "request-";

/// Whether the client takes an event stream for its answer (`Accept`).
fn accepts_events(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            let v = v.split(';').next().unwrap_or_default().trim();
            v.eq_ignore_ascii_case("text/event-stream")
        })
}

/// The session a notice is for ("" for every session).
fn session_key(notice: &super::Notice) -> String {
    notice.session.clone().unwrap_or_default()
}

/// A request served on an event stream: the progress reports its server sends and
/// the server's requests in its course (this request's alone), then its answer. For a
/// 2026-07-28 client, closing the stream cancels the request, and with it the
/// server's; a handshake-era client's request is served to its end regardless (its
/// revision does not take a dropped stream for a cancellation).
fn answer_with_progress(
    gw: Arc<Gateway>,
    streaming: Streaming,
    message: Value,
) -> impl Stream<Item = Result<Event, Infallible>> {
    // Subscribed before the request starts, so no report is missed.
    let mut notices = gw.subscribe();
    let (session, id) = streaming.key.clone();
    let listener = gw.listener(&session);
    async_stream_events(move |tx| async move {
        let _streaming = streaming;
        let _listener = listener;
        let answer: futures::future::BoxFuture<'_, Option<String>> =
            if session.starts_with(REQUEST_SESSION) {
                Box::pin(gw.handle(&session, message))
            } else {
                let (gw, session) = (gw.clone(), session.clone());
                let served = tokio::spawn(async move { gw.handle(&session, message).await });
                Box::pin(async move { served.await.ok().flatten() })
            };
        tokio::pin!(answer);
        loop {
            tokio::select! {
                answer = &mut answer => {
                    // The server's last reports may still be on their way (they travel
                    // through the gateway's event queue, the answer straight back): a
                    // moment for them, each one extending it a little, so they come
                    // before the answer as the server sent them.
                    let until = tokio::time::Instant::now() + PROGRESS_GRACE * 10;
                    loop {
                        let quiet = tokio::time::sleep(PROGRESS_GRACE);
                        tokio::select! {
                            () = quiet => break,
                            () = tokio::time::sleep_until(until) => break,
                            notice = notices.recv() => match notice {
                                Ok(n) if n.is_during(&session, &id) => {
                                    let event = Event::default().event("message").data(n.message.to_string());
                                    if tx.send(event).await.is_err() {
                                        return;
                                    }
                                }
                                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(_) => break,
                            },
                        }
                    }
                    if let Some(text) = answer {
                        let _ = tx.send(Event::default().event("message").data(text)).await;
                    }
                    break;
                }
                () = tx.closed() => break,
                notice = notices.recv() => match notice {
                    Ok(n) if n.is_during(&session, &id) => {
                        let event = Event::default().event("message").data(n.message.to_string());
                        if tx.send(event).await.is_err() {
                            break;
                        }
                    }
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    // The gateway is shutting down; the answer still comes.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        if let Some(text) = answer.await {
                            let _ = tx.send(Event::default().event("message").data(text)).await;
                        }
                        break;
                    }
                },
            }
        }
    })
}

/// A stream fed by a task (no extra crate).
fn async_stream_events<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
    )
}

/// DELETE ends the session it names (later requests naming it get 404), and what
/// it holds at the servers ([`Gateway::end_session`](super::Gateway::end_session)).
async fn handle_delete(
    State(s): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let id = session_of(&headers);
    if id.is_empty() {
        return StatusCode::OK.into_response();
    }
    let caller = caller.as_ref().map(|c| &*c.0);
    let ended = s.sessions().end(id, caller)
        // One another replica started: there is nothing of it here to end.
        || s
            .session_key
            .as_ref()
            .and_then(|key| sealed_owner(key, id))
            .is_some_and(|o| owns(&o, caller));
    if ended {
        s.gw.for_caller(caller).await.end_session(id).await;
        StatusCode::OK.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_origins_are_written_as_browsers_send_them() {
        assert_eq!(
            web_origin("https://Chat.Example:443").as_deref(),
            Ok("https://chat.example")
        );
        assert_eq!(
            web_origin("http://127.0.0.1:3000/").as_deref(),
            Ok("http://127.0.0.1:3000")
        );
        for bad in [
            "*",
            "null",
            "chat.example",
            "https://chat.example/app",
            "ftp://x.example",
            "https://u:p@x.example",
        ] {
            assert!(web_origin(bad).is_err(), "{bad}");
        }
    }

    /// The guard is a layer over every route, tested in memory: each method of
    /// `/mcp`, and a path no route has, is refused the same way without the token or
    /// from another host, and reaches its handler with them.
    #[tokio::test]
    async fn no_route_gets_past_the_guard() {
        use tower::ServiceExt;
        let gw = Gateway::start(Vec::new()).await;
        // With a route outside the guard, as the health probes are: it must not
        // open the paths no route has.
        let open = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        let router = app_with(
            gw,
            Guard::for_addr("127.0.0.1:7000".parse().unwrap(), Secret::new("t0k"), &[]),
            EdgeLimits::default(),
            open,
        );
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let send = |method: &str, path: &str, host: &str, token: Option<&str>| {
            let mut r = axum::http::Request::builder()
                .method(method)
                .uri(path)
                .header("host", host)
                .header("content-type", "application/json");
            if let Some(t) = token {
                r = r.header("authorization", format!("Bearer {t}"));
            }
            let body = if method == "POST" { ping } else { "" };
            router
                .clone()
                .oneshot(r.body(axum::body::Body::from(body)).unwrap())
        };
        let good = "127.0.0.1:7000";
        for (method, path) in [
            ("POST", "/mcp"),
            ("GET", "/mcp"),
            ("DELETE", "/mcp"),
            ("PUT", "/mcp"),
            ("GET", "/"),
            ("POST", "/admin"),
        ] {
            for (host, token, refused) in [
                (good, None, StatusCode::UNAUTHORIZED),
                (good, Some("nope"), StatusCode::UNAUTHORIZED),
                ("evil.example:7000", Some("t0k"), StatusCode::FORBIDDEN),
            ] {
                let r = send(method, path, host, token).await.unwrap();
                assert_eq!(
                    r.status(),
                    refused,
                    "{method} {path} from {host} with {token:?}"
                );
            }
        }
        let r = send("POST", "/mcp", good, Some("t0k")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["result"], json!({}), "{answer}");
        let r = send("DELETE", "/mcp", good, Some("t0k")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = send("GET", "/admin", good, Some("t0k")).await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = send("GET", "/healthz", "anything", None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = send("PUT", "/mcp", good, Some("t0k")).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn an_empty_token_opens_nothing() {
        let g = Guard::for_addr("127.0.0.1:7000".parse().unwrap(), Secret::new(""), &[]);
        for auth in [None, Some("Bearer "), Some("Bearer"), Some("")] {
            let mut h = vec![("host", "127.0.0.1:7000")];
            if let Some(a) = auth {
                h.push(("authorization", a));
            }
            assert!(!passes(&g, &headers(&h)).await, "{auth:?}");
        }
    }

    #[test]
    fn one_person_cannot_push_out_everyone_elses_sessions() {
        let mut sessions = Sessions::default();
        let alice = ("iss".to_owned(), "alice".to_owned());
        let mallory = ("iss".to_owned(), "mallory".to_owned());
        assert_eq!(sessions.start("a1".into(), alice.clone()), None);
        let mut forgotten = Vec::new();
        for i in 0..MAX_SESSIONS {
            forgotten.extend(sessions.start(format!("m{i}"), mallory.clone()));
        }
        // Mallory's own oldest went, never alice's.
        assert!(sessions.live.contains_key("a1"));
        assert_eq!(forgotten.len(), MAX_SESSIONS - MAX_SESSIONS_PER_PERSON);
        assert_eq!(forgotten[0], ("m0".to_owned(), mallory.clone()));
        let mallorys = sessions.live.values().filter(|o| **o == mallory).count();
        assert_eq!(mallorys, MAX_SESSIONS_PER_PERSON);
        assert_eq!(sessions.order.len(), sessions.live.len());
    }

    #[test]
    fn only_json_posts() {
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("text/plain", false),
            ("text/plain; charset=application/json", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
        ] {
            assert_eq!(is_json(&headers(&[("content-type", ct)])), ok, "{ct}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    /// Whether a request with `h` gets past the guard: its Host and Origin, then its
    /// caller.
    async fn passes(g: &Guard, h: &HeaderMap) -> bool {
        g.check(h).is_ok() && g.caller(h, false).await.is_ok()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[tokio::test]
    async fn host_origin_and_token() {
        let g = Guard::for_addr("127.0.0.1:7000".parse().unwrap(), Secret::new("t0k"), &[]);
        let ok = [("host", "127.0.0.1:7000"), ("authorization", "Bearer t0k")];
        assert!(passes(&g, &headers(&ok)).await);
        assert!(
            passes(
                &g,
                &headers(&[("host", "localhost:7000"), ("authorization", "Bearer t0k")])
            )
            .await
        );
        assert!(
            !passes(
                &g,
                &headers(&[
                    ("host", "evil.example:7000"),
                    ("authorization", "Bearer t0k")
                ])
            )
            .await
        );
        assert!(
            !passes(
                &g,
                &headers(&[("host", "127.0.0.1:7000"), ("authorization", "Bearer nope")])
            )
            .await
        );
        assert!(!passes(&g, &headers(&[("host", "127.0.0.1:7000")])).await);
        let from_page = [
            ("host", "127.0.0.1:7000"),
            ("authorization", "Bearer t0k"),
            ("origin", "https://evil.example"),
        ];
        assert!(!passes(&g, &headers(&from_page)).await);
        // A page of another port on the same machine is another origin.
        for other in [
            "http://localhost:3000",
            "http://127.0.0.1:3000",
            "http://127.0.0.1",
            "https://127.0.0.1:7000",
            "http://127.0.0.1.evil.example:7000",
            "null",
            "file://",
        ] {
            let from = [
                ("host", "127.0.0.1:7000"),
                ("authorization", "Bearer t0k"),
                ("origin", other),
            ];
            assert!(!passes(&g, &headers(&from)).await, "{other}");
        }
        // The gateway's own origin (a page it served, were it to serve one) is fine.
        for (host, own) in [
            ("127.0.0.1:7000", "http://127.0.0.1:7000"),
            ("localhost:7000", "http://LOCALHOST:7000"),
            ("[::1]:7000", "http://[::1]:7000"),
        ] {
            let from = [
                ("host", host),
                ("authorization", "Bearer t0k"),
                ("origin", own),
            ];
            assert!(passes(&g, &headers(&from)).await, "{own}");
        }
        // Behind a proxy under an allowed host, its https origin is the gateway's own.
        let proxied = Guard::for_addr(
            "127.0.0.1:7000".parse().unwrap(),
            Secret::new("t0k"),
            &["gw.example.com".into()],
        );
        for (origin, ok) in [
            ("https://gw.example.com", true),
            ("http://gw.example.com", true),
            ("https://gw.example.com:8443", false),
            ("https://evil.example.com", false),
        ] {
            let from = [
                ("host", "gw.example.com"),
                ("authorization", "Bearer t0k"),
                ("origin", origin),
            ];
            assert_eq!(passes(&proxied, &headers(&from)).await, ok, "{origin}");
        }
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
