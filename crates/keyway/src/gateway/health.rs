//! `/healthz` and `/readyz` for whatever runs the gateway (a load balancer, Kubernetes,
//! systemd): `/healthz` answers 200 while the process serves HTTP at all; `/readyz`
//! answers 200 only when the gateway can do its work (its store answers), else 503.
//!
//! Both sit outside the gateway's guard, because probes send no token and name the
//! machine by whatever address they reach it at. They say nothing a stranger could
//! use: a word, no versions, no server names, no error text (that goes to the log).

use std::{sync::Arc, time::Duration};

use axum::{Router, http::StatusCode, routing::get};
use futures::future::BoxFuture;

/// How long `/readyz` waits for [`Readiness::ready`] before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why the gateway cannot serve now (logged; `/readyz` says only "not ready").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotReady {
    /// The store does not answer.
    #[error("the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// What `/readyz` asks.
pub trait Readiness: Send + Sync {
    /// `Ok` when the gateway can serve; else what is wrong, for the log.
    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>>;
}

/// The probe routes, to merge into the gateway's router after its guard.
pub fn routes(readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match tokio::time::timeout(READY_TIMEOUT, readiness.ready()).await {
                        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
                        Ok(Err(why)) => {
                            tracing::warn!("not ready: {why}");
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                        }
                        Err(_) => {
                            tracing::warn!(
                                "not ready: no answer within {} s",
                                READY_TIMEOUT.as_secs()
                            );
                            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                        }
                    }
                }
            }),
        )
}

/// Ready when `store` lists its servers.
#[derive(Debug, Clone)]
pub struct StoreAnswers(pub crate::store::AnyStore);

impl Readiness for StoreAnswers {
    fn ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(async move {
            use crate::store::Store as _;
            self.0.servers().await?;
            Ok(())
        })
    }
}
