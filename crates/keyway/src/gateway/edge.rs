//! The gateway's HTTP edge: accepting connections with limits a slow or hostile
//! client cannot get around. At most [`EdgeLimits::max_connections`] at once (the
//! next waits in the kernel's queue until one ends); a connection that does not send
//! a request's headers within [`EdgeLimits::header_timeout`] (half-open, slowloris,
//! or idle between requests) is closed. Bodies are read only after a request's
//! headers passed the guard, within [`EdgeLimits::body_timeout`] and
//! [`EdgeLimits::max_body`] (see [`super::http`]).
//!
//! axum's `serve` offers none of these knobs (hyper's header timeout needs a timer
//! it does not set), so connections are served here with hyper's own HTTP/1.1 server,
//! as axum does. HTTP/1.1 only: MCP clients speak it to a plain-http endpoint, and
//! hyper's protocol detection for h2c waits for the first bytes without a deadline.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::sync::{Semaphore, watch};

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

/// Connections served at once unless configured.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// How long the accept loop rests after accepting failed (file descriptors exhausted).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one client may take of the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EdgeLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time for a request's headers, from the connection's start or the end of the
    /// previous request (so also how long a connection may idle between requests).
    pub header_timeout: Duration,
    /// Time for a request's body, once its headers passed the guard.
    pub body_timeout: Duration,
    /// Largest request body (one JSON-RPC message).
    pub max_body: usize,
    /// Whether a connection stays open for more requests (HTTP/1.1 keep-alive).
    pub keep_alive: bool,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_body: crate::mcp::MAX_MESSAGE,
            keep_alive: true,
        }
    }
}

/// How many connections are open now (for tests and logs).
#[derive(Clone, Debug)]
pub struct OpenConnections(watch::Receiver<usize>);

impl OpenConnections {
    /// The number of connections open now.
    pub fn now(&self) -> usize {
        *self.0.borrow()
    }

    /// Wait until `f` holds for the number of open connections.
    pub async fn until(&mut self, f: impl Fn(usize) -> bool) {
        let _ = self.0.wait_for(|n| f(*n)).await;
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, let
/// requests under way finish (at most `drain` long), and return.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: EdgeLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) -> std::io::Result<()> {
    let (edge, _open) = Edge::new(limits);
    edge.run(listener, app, shutdown, drain).await
}

/// The accept loop and its bookkeeping.
#[derive(Debug)]
pub struct Edge {
    limits: EdgeLimits,
    permits: Arc<Semaphore>,
    open: watch::Sender<usize>,
}

impl Edge {
    /// An edge with `limits`, and the count of its open connections.
    pub fn new(limits: EdgeLimits) -> (Self, OpenConnections) {
        let (open, rx) = watch::channel(0);
        (
            Self {
                limits,
                permits: Arc::new(Semaphore::new(limits.max_connections.max(1))),
                open,
            },
            OpenConnections(rx),
        )
    }

    /// Serve `app` on `listener` until `shutdown` resolves; then stop accepting, let
    /// requests under way finish (at most `drain` long), and return `Ok`. A failure to
    /// accept a connection is logged and accepting goes on.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let service = TowerToHyperService::new(app);
        self.serve_with(listener, move |_| service.clone(), shutdown, drain)
            .await
    }

    /// [`Edge::run`], with what `tag` learns of each connection (who is at the other
    /// end, say) put into every request on it as an extension.
    pub async fn run_tagged<T: Clone + Send + Sync + 'static>(
        self,
        listener: tokio::net::TcpListener,
        app: axum::Router,
        tag: impl Fn(&tokio::net::TcpStream) -> T,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let make = move |stream: &tokio::net::TcpStream| {
            TowerToHyperService::new(app.clone().layer(axum::Extension(tag(stream))))
        };
        self.serve_with(listener, make, shutdown, drain).await
    }

    async fn serve_with(
        self,
        listener: tokio::net::TcpListener,
        make: impl Fn(&tokio::net::TcpStream) -> TowerToHyperService<axum::Router>,
        shutdown: impl Future<Output = ()>,
        drain: Duration,
    ) -> std::io::Result<()> {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout)
            .keep_alive(self.limits.keep_alive);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            // A free slot first: at the limit, connections wait in the kernel's queue
            // (they are not accepted and dropped).
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break,
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, _) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: say so, and try again
                        // a moment later (at once would spin and flood the log).
                        tracing::warn!(error = %e, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let service = make(&stream);
            let conn = http1.serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            self.open.send_modify(|n| *n += 1);
            let open = self.open.clone();
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "a connection ended with an error");
                }
                open.send_modify(|n| *n = n.saturating_sub(1));
                drop(permit);
            });
        }
        drop(listener);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::info!("requests still under way at shutdown were cut off");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::{
        Secret,
        gateway::{Gateway, http::Guard},
    };

    const TOKEN: &str = "a-token-of-the-gateway";

    /// A gateway with no upstreams behind an edge with `limits`, on a port of its own.
    async fn start(limits: EdgeLimits) -> (SocketAddr, OpenConnections) {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let gw = Gateway::start(Vec::new()).await;
        let app =
            crate::gateway::http::app(gw, Guard::for_addr(addr, Secret::new(TOKEN), &[]), limits);
        let (edge, open) = Edge::new(limits);
        tokio::spawn(edge.run(listener, app, std::future::pending(), Duration::ZERO));
        (addr, open)
    }

    /// A request body that never comes (a caller promising one and stalling).
    type Stalled = http_body_util::StreamBody<
        futures::stream::Pending<
            Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
        >,
    >;

    /// An HTTP/1.1 connection to `addr` through hyper's own client, and the task
    /// driving it (it ends when the gateway closes the connection).
    async fn connect<B>(
        addr: SocketAddr,
    ) -> (
        hyper::client::conn::http1::SendRequest<B>,
        tokio::task::JoinHandle<hyper::Result<()>>,
    )
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        (send, tokio::spawn(conn))
    }

    /// A DELETE of the session with the token: what the tests below send to be served.
    fn delete(addr: SocketAddr) -> http::Request<http_body_util::Empty<bytes::Bytes>> {
        http::Request::delete("/mcp")
            .header(http::header::HOST, addr.to_string())
            .header(http::header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(http_body_util::Empty::new())
            .unwrap()
    }

    /// A guard against a test that would otherwise hang: far longer than any wait
    /// here should take.
    const GUARD: Duration = Duration::from_secs(20);

    /// Before the fix the body was read first: a caller without the token could hold
    /// a connection by promising a large body and never sending it. Now the token
    /// and the content type are checked on the headers alone.
    #[tokio::test]
    async fn a_request_is_judged_before_its_body_is_read() {
        let (addr, _) = start(EdgeLimits::default()).await;
        for (auth, content_type, expected) in [
            (None, "application/json", 401),
            (Some("Bearer wrong".to_owned()), "application/json", 401),
            (Some(format!("Bearer {TOKEN}")), "text/plain", 415),
        ] {
            let (mut send, _conn) = connect::<Stalled>(addr).await;
            let mut req = http::Request::post("/mcp")
                .header(http::header::HOST, addr.to_string())
                .header(http::header::CONTENT_TYPE, content_type)
                .header(http::header::CONTENT_LENGTH, "1000000");
            if let Some(a) = auth {
                req = req.header(http::header::AUTHORIZATION, a);
            }
            let req = req
                .body(http_body_util::StreamBody::new(futures::stream::pending()))
                .unwrap();
            let answer = tokio::time::timeout(GUARD, send.send_request(req))
                .await
                .expect("an answer without the body")
                .unwrap();
            assert_eq!(answer.status().as_u16(), expected, "{content_type}");
        }
    }

    /// A connection that sends nothing (half-open, slowloris) is closed once the
    /// header timeout passes, so such connections cannot pile up.
    #[tokio::test]
    async fn a_connection_that_does_not_send_its_headers_is_closed() {
        let limits = EdgeLimits {
            header_timeout: Duration::from_millis(300),
            ..EdgeLimits::default()
        };
        let (addr, mut open) = start(limits).await;
        let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(GUARD, silent.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the connection was left open");
        tokio::time::timeout(GUARD, open.until(|n| n == 0))
            .await
            .unwrap();
    }

    /// A connection idle after its request (keep-alive) is closed once it goes the
    /// header timeout without a new one, so idle connections do not hold slots.
    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        let limits = EdgeLimits {
            header_timeout: Duration::from_millis(300),
            ..EdgeLimits::default()
        };
        let (addr, mut open) = start(limits).await;
        let (mut send, conn) = connect(addr).await;
        let answer = tokio::time::timeout(GUARD, send.send_request(delete(addr)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer.status(), 200);
        tokio::time::timeout(GUARD, conn)
            .await
            .expect("the idle connection was closed")
            .unwrap()
            .unwrap();
        tokio::time::timeout(GUARD, open.until(|n| n == 0))
            .await
            .unwrap();
    }

    /// At the limit, the next connection waits for a free slot instead of being
    /// served beside the others; it is served once one ends.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_one() {
        let limits = EdgeLimits {
            max_connections: 2,
            header_timeout: Duration::from_secs(60),
            ..EdgeLimits::default()
        };
        let (addr, mut open) = start(limits).await;
        let idle_a = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _idle_b = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::timeout(GUARD, open.until(|n| n == 2))
            .await
            .unwrap();
        let (mut send, _conn) = connect(addr).await;
        let answer = send.send_request(delete(addr));
        tokio::pin!(answer);
        // Not served while both slots are held (without a limit it would be at once).
        let early = tokio::time::timeout(Duration::from_millis(200), &mut answer).await;
        assert!(early.is_err(), "served beyond the limit");
        assert_eq!(open.now(), 2);
        drop(idle_a);
        let answer = tokio::time::timeout(GUARD, answer)
            .await
            .expect("served once a slot is free")
            .unwrap();
        assert_eq!(answer.status(), 200);
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
}
