//! The gateway over Streamable HTTP (`keyway serve --listen`): POST for requests (JSON
//! answers), GET for the event stream of notifications and server requests, DELETE to
//! end. Every request is checked before anything else: the Host header (DNS rebinding),
//! the Origin header (other web pages), and the gateway's own bearer token when one is
//! set (required when listening beyond loopback).

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

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

use super::Gateway;
use crate::Secret;

/// Connections the kernel queues for the gateway before it accepts them. tokio's
/// `TcpListener::bind` asks for 128: a burst of clients beyond that (a fleet of agents
/// starting together) overflows the queue, and each dropped connection waits out a
/// one-second SYN retransmission. Servers people run ask for more (node and nginx 511,
/// Go the system's maximum); the kernel caps it at `net.core.somaxconn`.
pub const BACKLOG: u32 = 1024;

/// Listen on `addr` with a queue of [`BACKLOG`] connections.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As TcpListener::bind does on Unix: a restarted gateway can take its port back
    // while the old one's connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The JSON-RPC error code of a request the client cancelled. MCP defines none (its
/// clients ignore whatever comes after they cancel); this is the one LSP uses.
pub const CANCELLED: i64 = -32800;

/// Who may talk to the listener.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Accepted `Host` values (names or addresses, any port).
    pub hosts: Vec<String>,
    /// The token clients must present, if any.
    pub token: Option<Secret>,
}

impl Guard {
    /// The hosts for a listen address: loopback names, plus the address itself.
    pub fn for_addr(addr: SocketAddr, token: Option<Secret>, extra_hosts: &[String]) -> Self {
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
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Self { hosts, token }
    }

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
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) {
            let allowed = url::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()))
                .is_some_and(|h| {
                    self.hosts.iter().any(|a| {
                        *a == h || a.trim_matches(['[', ']']) == h.trim_matches(['[', ']'])
                    })
                });
            if !allowed {
                return Err(refuse(
                    StatusCode::FORBIDDEN,
                    "requests from this Origin are not allowed",
                ));
            }
        }
        if let Some(token) = &self.token {
            let given = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .unwrap_or_default();
            if !constant_time_eq(given.trim().as_bytes(), token.expose().as_bytes()) {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "the gateway needs its token",
                ));
            }
        }
        Ok(())
    }
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
    gw: Arc<Gateway>,
    guard: Arc<Guard>,
}

/// The listener's routes at `/mcp`.
pub fn app(gw: Arc<Gateway>, guard: Guard) -> Router {
    Router::new()
        .route(
            "/mcp",
            post(handle_post).get(handle_get).delete(handle_delete),
        )
        .with_state(AppState {
            gw,
            guard: Arc::new(guard),
        })
}

async fn handle_post(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = s.guard.check(&headers) {
        return r.into_response();
    }
    let message: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error: one JSON-RPC object per request"}})),
            )
                .into_response();
        }
    };
    let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    // A request (method and id) gets an answer whatever happens; see below.
    let request_id = message.get("method").and(message.get("id")).cloned();
    match s.gw.handle(session_of(&headers), message).await {
        None => match request_id {
            // Cancelled by the client meanwhile. Over HTTP a request's POST still
            // needs an answer; the client ignores it (it cancelled).
            Some(id) => Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": CANCELLED, "message": "cancelled by the client"}})).into_response(),
            None => StatusCode::ACCEPTED.into_response(),
        },
        Some(answer) => {
            let mut r = (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                answer,
            )
                .into_response();
            if is_initialize {
                let mut id = [0u8; 16];
                rand::Rng::fill_bytes(&mut rand::rng(), &mut id);
                let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
                if let Ok(v) = HeaderValue::from_str(&id) {
                    r.headers_mut().insert("mcp-session-id", v);
                }
            }
            r
        }
    }
}

/// The client's session id ("" when it sent none).
fn session_of(headers: &HeaderMap) -> &str {
    headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

async fn handle_get(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = s.guard.check(&headers) {
        return r.into_response();
    }
    let rx = s.gw.subscribe();
    let stream = events(rx, session_of(&headers).to_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What the gateway has for a client of `session`, as events.
fn events(
    mut rx: tokio::sync::broadcast::Receiver<super::Notice>,
    session: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    async_stream_events(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok(notice) if !notice.is_for(&session) => {}
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

async fn handle_delete(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = s.guard.check(&headers) {
        return r.into_response();
    }
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A burst of connections beyond tokio's default queue of 128, none accepted yet:
    /// each must complete its handshake from the queue, not wait out a dropped SYN.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_listener_queues_a_burst_beyond_128() {
        // The kernel caps the queue at net.core.somaxconn.
        let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(4096);
        let burst = cap.min(BACKLOG).min(300) as usize;
        if burst < 200 {
            eprintln!("net.core.somaxconn is {cap}: this machine cannot queue a burst past 128");
            return;
        }
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let connects = futures::future::join_all((0..burst).map(|_| {
            tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        }))
        .await;
        let queued = connects.iter().filter(|c| matches!(c, Ok(Ok(_)))).count();
        assert_eq!(queued, burst, "connections left out of the listen queue");
    }

    #[test]
    fn host_origin_and_token() {
        let g = Guard::for_addr(
            "127.0.0.1:7000".parse().unwrap(),
            Some(Secret::new("t0k")),
            &[],
        );
        let ok = [("host", "127.0.0.1:7000"), ("authorization", "Bearer t0k")];
        assert!(g.check(&headers(&ok)).is_ok());
        assert!(
            g.check(&headers(&[
                ("host", "localhost:7000"),
                ("authorization", "Bearer t0k")
            ]))
            .is_ok()
        );
        assert!(
            g.check(&headers(&[
                ("host", "evil.example:7000"),
                ("authorization", "Bearer t0k")
            ]))
            .is_err()
        );
        assert!(
            g.check(&headers(&[
                ("host", "127.0.0.1:7000"),
                ("authorization", "Bearer nope")
            ]))
            .is_err()
        );
        assert!(g.check(&headers(&[("host", "127.0.0.1:7000")])).is_err());
        let from_page = [
            ("host", "127.0.0.1:7000"),
            ("authorization", "Bearer t0k"),
            ("origin", "https://evil.example"),
        ];
        assert!(g.check(&headers(&from_page)).is_err());
        let local_page = [
            ("host", "127.0.0.1:7000"),
            ("authorization", "Bearer t0k"),
            ("origin", "http://localhost:3000"),
        ];
        assert!(g.check(&headers(&local_page)).is_ok());
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("localhost"), "localhost");
    }
}
