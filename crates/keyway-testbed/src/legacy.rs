//! The legacy HTTP+SSE transport (MCP 2024-11-05), for clients' backwards
//! compatibility: `GET /sse` opens an event stream whose first event, `endpoint`, names
//! where to POST messages; answers come back as `message` events. Each stream runs
//! the same rmcp server as the Streamable HTTP endpoint, over an in-memory pipe.

use std::{collections::HashMap, convert::Infallible, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::StatusCode,
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
    routing::{get, post},
};
use rmcp::ServiceExt;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    sync::{Mutex, mpsc},
};

use crate::{
    db::random_token,
    shared::{Shared, ToolCounters},
    tools::TestbedTools,
};

pub(crate) const SSE_PATH: &str = "/sse";
pub(crate) const MESSAGES_PATH: &str = "/messages";

/// Open legacy sessions: id -> the pipe into its server.
#[derive(Default)]
pub(crate) struct Sessions(Mutex<HashMap<String, tokio::io::WriteHalf<tokio::io::DuplexStream>>>);

/// Counts `slow` calls cancelled by their client.
#[derive(Clone)]
struct Cancelled(Arc<ToolCounters>);

pub(crate) fn routes(sessions: Arc<Sessions>, cancelled: Arc<ToolCounters>) -> Router<Arc<Shared>> {
    Router::new()
        .route(SSE_PATH, get(open_stream))
        .route(MESSAGES_PATH, post(post_message))
        .layer(axum::Extension(sessions))
        .layer(axum::Extension(Cancelled(cancelled)))
}

async fn open_stream(
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    axum::Extension(Cancelled(cancelled)): axum::Extension<Cancelled>,
) -> Response {
    let id = random_token("sse_");
    // client side <-> server side
    let (client_end, server_end) = tokio::io::duplex(1 << 20);
    let (server_read, server_write) = tokio::io::split(server_end);
    let (client_read, client_write) = tokio::io::split(client_end);
    tokio::spawn(async move {
        let rounds = std::sync::Arc::new(crate::interactive::Rounds::new(0, false));
        if let Ok(running) = TestbedTools::new(cancelled, crate::knobs::McpRevision::Legacy, rounds)
            .serve((server_read, server_write))
            .await
        {
            let _ = running.waiting().await;
        }
    });
    sessions.0.lock().await.insert(id.clone(), client_write);
    let (tx, rx) = mpsc::unbounded_channel::<Result<Event, Infallible>>();
    let _ = tx.send(Ok(Event::default()
        .event("endpoint")
        .data(format!("{MESSAGES_PATH}?sessionId={id}"))));
    let sessions2 = sessions.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(client_read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx
                .send(Ok(Event::default().event("message").data(line)))
                .is_err()
            {
                break;
            }
        }
        sessions2.0.lock().await.remove(&id);
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) });
    Sse::new(stream).into_response()
}

async fn post_message(
    axum::Extension(sessions): axum::Extension<Arc<Sessions>>,
    State(_shared): State<Arc<Shared>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let id = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "sessionId")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let mut map = sessions.0.lock().await;
    let Some(pipe) = map.get_mut(&id) else {
        return (StatusCode::NOT_FOUND, "no such session\n").into_response();
    };
    let mut line = body.to_vec();
    line.retain(|b| *b != b'\n');
    line.push(b'\n');
    if pipe.write_all(&line).await.is_err() {
        return (StatusCode::GONE, "the session ended\n").into_response();
    }
    StatusCode::ACCEPTED.into_response()
}
