//! The accept loop. It is ours rather than `axum::serve` so a request can drop its
//! own connection without an answer (`--drop-after`), as a crashed server would, so
//! an HTTP/2 connection can be told to go away mid-request (`--h2-goaway-after`), and
//! so the MCP listener can speak TLS (HTTP/2 or HTTP/1.1 by ALPN) and count its
//! connections.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{faults::ConnectionKill, shared::Shared};

/// How long a client may take over its TLS handshake.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// What a listener is for: the MCP server's may speak TLS, and its connections are
/// counted apart too (`mcp_connections`).
#[derive(Clone, Default)]
pub(crate) struct Listener {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub mcp: bool,
}

pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    role: Listener,
    shared: Arc<Shared>,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let goaway_after = shared.knobs.h2_goaway_after;
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "testbed accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        {
            let mut stats = shared.stats();
            stats.connections_accepted += 1;
            stats.mcp_connections += u64::from(role.mcp);
        }
        let kill = CancellationToken::new();
        let goaway = CancellationToken::new();
        let app = app.clone();
        let conn_kill = kill.clone();
        let conn_goaway = goaway.clone();
        let requests = AtomicU64::new(0);
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                let nth = requests.fetch_add(1, Ordering::SeqCst) + 1;
                if req.version() == http::Version::HTTP_2
                    && goaway_after.is_some_and(|after| nth == after.saturating_add(1))
                {
                    // The connection's task sends GOAWAY while this request is served.
                    conn_goaway.cancel();
                }
                req.extensions_mut()
                    .insert(ConnectionKill(conn_kill.clone()));
                app.clone().oneshot(req)
            });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = role.tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => drive(&builder, TokioIo::new(stream), service, &goaway, &shared).await,
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        drive(&builder, TokioIo::new(stream), service, &goaway, &shared).await;
                    }
                }
            };
            tokio::select! {
                // The connection first: what a request wrote before it killed its
                // connection (`--hostile ENDPOINT:close-mid-body`) is flushed by this
                // poll, before the kill below drops the socket.
                biased;
                () = served => {}
                () = kill.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// Serve one connection to its end, shutting it down gracefully (GOAWAY on HTTP/2)
/// once `goaway` is cancelled.
async fn drive<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: S,
    goaway: &CancellationToken,
    shared: &Shared,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut told = false;
    loop {
        tokio::select! {
            // Before the connection is polled again, so GOAWAY leaves ahead of the
            // answer to the request that asked for it.
            biased;
            () = goaway.cancelled(), if !told => {
                told = true;
                conn.as_mut().graceful_shutdown();
                shared.stats().goaways_sent += 1;
            }
            _ = conn.as_mut() => break,
        }
    }
}

/// The TLS setup of `--tls-cert` and `--tls-key`: h2 and http/1.1 by ALPN.
pub(crate) fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
