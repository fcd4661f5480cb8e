//! The layer in front of every route: counts each request per endpoint and path, and
//! applies the fault knobs (delay, injected 5xx, dropped connection, oversized answer,
//! hostile answer).

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    body::{Body, Bytes, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{knobs::Endpoint, resource::STATS_PATH, shared::Shared};

/// Which endpoint each served path is, on one listener.
pub(crate) type RouteTable = HashMap<String, Endpoint>;

/// Put into each request by the accept loop: cancelling it drops the connection the
/// request came on, without an answer.
#[derive(Clone, Debug)]
pub(crate) struct ConnectionKill(pub CancellationToken);

/// Bodies larger than this are not padded (they are already oversized).
const MAX_PAD_SOURCE: usize = 64 * 1024 * 1024;

pub(crate) async fn faults(
    State((shared, table)): State<(Arc<Shared>, Arc<RouteTable>)>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_owned();
    if path == STATS_PATH {
        return next.run(req).await;
    }
    let endpoint = table.get(&path).copied().unwrap_or(Endpoint::Other);
    let nth = {
        let mut stats = shared.stats();
        stats.hit(
            endpoint,
            req.method().as_str(),
            &path,
            req.version() == http::Version::HTTP_2,
        );
        stats.endpoint(endpoint)
    };
    let rules = shared.faults(endpoint).clone();
    if endpoint == Endpoint::Jwks && shared.keys_down.load(std::sync::atomic::Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "temporarily_unavailable", "error_description": "the keys are down (Testbed::set_keys_down)"})),
        )
            .into_response();
    }
    if endpoint == Endpoint::Mcp && shared.hung.load(std::sync::atomic::Ordering::SeqCst) {
        // Accept the request and never answer, as a wedged server does.
        std::future::pending::<()>().await;
    }

    if let Some(delay) = rules.delay {
        tokio::time::sleep(delay).await;
    }
    if rules.hang_percent.is_some_and(roll) {
        shared.stats().random_hangs += 1;
        // Accepted, and never answered: the client's own deadline ends it.
        std::future::pending::<()>().await;
    }
    if rules.fail_percent.is_some_and(roll) {
        shared.stats().random_failures += 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "temporarily_unavailable", "error_description": "injected by --fail-percent"})),
        )
            .into_response();
    }
    if endpoint == Endpoint::Mcp
        && shared.knobs.claims_2026
        && let Some(method) = req.headers().get("mcp-method")
    {
        return if method.as_bytes() == b"server/discover" {
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let id = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("id").cloned())
                .unwrap_or(serde_json::Value::Null);
            Json(json!({"jsonrpc": "2.0", "id": id, "result": {
                "resultType": "complete",
                "supportedVersions": ["2026-07-28"],
                "capabilities": {"tools": {}},
                "ttlMs": 0,
                "cacheScope": "private",
                "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "claims-2026", "version": "0"}},
            }}))
            .into_response()
        } else {
            (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000,
                    "message": "Bad Request: No valid session ID provided"}}),
                ),
            )
                .into_response()
        };
    }
    let armed = endpoint == Endpoint::Mcp
        && shared
            .drop_next
            .swap(false, std::sync::atomic::Ordering::SeqCst);
    if armed || rules.drop_after.is_some_and(|after| nth == after + 1) {
        shared.stats().dropped_connections += 1;
        if endpoint == Endpoint::Mcp {
            shared.drop_sessions().await;
        }
        if let Some(kill) = req.extensions().get::<ConnectionKill>() {
            kill.0.cancel();
            // The accept loop drops this connection, and this future with it.
            std::future::pending::<()>().await;
        }
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some((n, status)) = rules.fail_nth
        && nth == n
    {
        shared.stats().injected_failures += 1;
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (
            status,
            Json(json!({"error": "temporarily_unavailable", "error_description": "injected by --fail-nth"})),
        )
            .into_response();
    }
    if let Some(kind) = &rules.hostile {
        // Every answer, not the Nth: a hostile server stays hostile. It replaces
        // --oversize, whose padding it would spoil anyway.
        return crate::hostile::answer(kind, &shared, req, next).await;
    }
    let resp = next.run(req).await;
    match rules.oversize {
        Some(size) => pad(resp, size).await,
        None => resp,
    }
}

/// True for a random `percent` of the calls.
fn roll(percent: u8) -> bool {
    rand::random_range(0..100u8) < percent
}

/// Make an answer at least `size` bytes: a padding field in a JSON object, a comment
/// before an event stream, trailing spaces otherwise.
async fn pad(resp: Response, size: usize) -> Response {
    let (mut parts, body) = resp.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    parts.headers.remove(header::CONTENT_LENGTH);
    if content_type.starts_with("text/event-stream") {
        let comment = Bytes::from(format!(": {}\n\n", "x".repeat(size)));
        let stream = futures::stream::once(async move { Ok::<_, axum::Error>(comment) })
            .chain(body.into_data_stream());
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let Ok(bytes) = to_bytes(body, MAX_PAD_SOURCE).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let padded = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("x_testbed_padding".into(), json!("x".repeat(size)));
            serde_json::to_vec(&obj).unwrap_or_default()
        }
        _ => {
            let mut v = bytes.to_vec();
            v.resize(v.len().max(size), b' ');
            v
        }
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(padded.len()));
    Response::from_parts(parts, Body::from(padded))
}
