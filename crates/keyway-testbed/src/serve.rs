//! The accept loop. It is ours rather than `axum::serve` so a request can drop its
//! own connection without an answer (`--drop-after`), as a crashed server would, and
//! so the MCP listener can speak TLS (HTTP/2 or HTTP/1.1 by ALPN) and count its
//! connections.

use std::{sync::Arc, time::Duration};

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

/// What a listener is for: the MCP server's counts its connections and may speak TLS.
#[derive(Clone, Default)]
pub(crate) struct Listener {
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub counted: Option<Arc<Shared>>,
}

pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    role: Listener,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
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
        if let Some(shared) = &role.counted {
            shared.stats().mcp_connections += 1;
        }
        let kill = CancellationToken::new();
        let app = app.clone();
        let conn_kill = kill.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(ConnectionKill(conn_kill.clone()));
                app.clone().oneshot(req)
            });
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        let tls = role.tls.clone();
        tokio::spawn(async move {
            let served = async {
                match tls {
                    None => {
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                    Some(acceptor) => {
                        let Ok(Ok(stream)) =
                            tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(stream)).await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            tokio::select! {
                () = served => {}
                () = kill.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        });
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
