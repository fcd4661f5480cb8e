//! A saved server's tools, as the page shows them, and a test call of one: over a
//! connection with the stored credential (refreshed when due, never a flow: the
//! card's Authorize button starts those).

use std::{sync::Arc, time::Duration};

use axum::{
    Form, Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{
    Ui,
    api::{Problem, server, wants_json},
    page,
};
use crate::{
    manage,
    mcp::Connection,
    store::{ServerRecord, Store, tokens::StoredTokens},
};

/// How long listing tools or a test call may take.
const TOOLS_DEADLINE: Duration = Duration::from_secs(30);
const CALL_DEADLINE: Duration = Duration::from_secs(60);

/// A connection with the stored credential: refreshed when due, never a flow (the
/// page's Authorize button starts those).
async fn connect(ui: &Ui, rec: &ServerRecord) -> Result<Connection, Problem> {
    if !rec.enabled {
        return Err(
            Problem::new(StatusCode::CONFLICT, format!("{} is disabled", rec.name))
                .hint("enable it first"),
        );
    }
    let headers = manage::saved_headers(ui.store(), rec)
        .await
        .map_err(|e| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let tokens = StoredTokens::new(Arc::new(ui.store().clone()), &rec.id);
    let conn = Connection::open_transport(
        &rec.url,
        ui.inner.http.clone(),
        tokens,
        headers,
        manage::transport_choice(rec.transport),
    )
    .await;
    match conn {
        Ok(c) => Ok(c),
        Err(e) => {
            let status = if e.needs_authorization() {
                crate::store::LastStatus::NeedsAuth
            } else {
                crate::store::LastStatus::Error
            };
            let _ = ui
                .store()
                .set_status(&rec.id, status, Some(&e.one_line()))
                .await;
            ui.changed();
            let p = Problem::new(StatusCode::BAD_GATEWAY, e.one_line());
            Err(match e.next_step() {
                Some(step) => p.hint(step),
                None if e.needs_authorization() => p.hint("authorize it from its card"),
                None => p,
            })
        }
    }
}

#[derive(Serialize)]
struct ToolView {
    name: String,
    description: Option<String>,
    input_schema: serde_json::Value,
}

pub(super) async fn tools(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let json = wants_json(&headers);
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    let listed = tokio::time::timeout(TOOLS_DEADLINE, async {
        let conn = connect(&ui, &rec).await?;
        let spoken = conn.server().protocol_version;
        let listed = conn.list_tools().await;
        conn.close().await;
        let _ = ui.store().set_protocol(&rec.id, Some(&spoken)).await;
        listed.map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, e.to_string()))
    })
    .await
    .unwrap_or_else(|_| {
        Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} did not list its tools within {} s",
                rec.name,
                TOOLS_DEADLINE.as_secs()
            ),
        ))
    });
    let store = ui.store();
    let tools = match listed {
        Ok(t) => {
            let _ = store
                .set_status(&rec.id, crate::store::LastStatus::Connected, None)
                .await;
            let _ = store.set_tools(&rec.id, u32::try_from(t.len()).ok()).await;
            ui.changed();
            t
        }
        Err(p) => return p.answer(json),
    };
    let views: Vec<ToolView> = tools
        .into_iter()
        .map(|t| ToolView {
            name: t.name.to_string(),
            description: t.description.map(|d| d.to_string()),
            input_schema: serde_json::Value::Object((*t.input_schema).clone()),
        })
        .collect();
    if json {
        return Json(serde_json::json!({"server": rec.name, "tools": views})).into_response();
    }
    let list: String = views
        .iter()
        .map(|t| {
            format!(
                "<li><strong>{}</strong> {}</li>",
                page::escape(&t.name),
                page::escape(t.description.as_deref().unwrap_or(""))
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{n} tools · keyway</title>\
         <link rel=\"stylesheet\" href=\"/app.css\"></head><body><main class=\"message\"><h1>{n}: {c} tools</h1>\
         <ul>{list}</ul><p><a href=\"/\">Back to the servers</a></p></main></body></html>",
        n = page::escape(&rec.name),
        c = views.len()
    ))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct CallForm {
    tool: String,
    arguments: Option<String>,
}

pub(super) async fn call(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CallForm>,
) -> Response {
    let json = wants_json(&headers);
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    let raw = f.arguments.as_deref().map(str::trim).unwrap_or("");
    let arguments = if raw.is_empty() {
        None
    } else {
        match serde_json::from_str::<serde_json::Value>(raw) {
            Ok(serde_json::Value::Object(m)) => Some(m),
            Ok(_) => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    "the arguments must be a JSON object",
                )
                .hint("like {\"text\": \"hello\"}")
                .answer(json);
            }
            Err(e) => {
                return Problem::new(
                    StatusCode::BAD_REQUEST,
                    format!("the arguments are not JSON: {e}"),
                )
                .answer(json);
            }
        }
    };
    let called = tokio::time::timeout(CALL_DEADLINE, async {
        let conn = connect(&ui, &rec).await?;
        let result = conn.call_tool(&f.tool, arguments).await;
        conn.close().await;
        result.map_err(|e| Problem::new(StatusCode::BAD_GATEWAY, e.to_string()))
    })
    .await
    .unwrap_or_else(|_| {
        Err(Problem::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "{} did not answer within {} s",
                f.tool,
                CALL_DEADLINE.as_secs()
            ),
        ))
    });
    match called {
        Ok(result) => {
            let value = serde_json::to_value(&result).unwrap_or(serde_json::Value::Null);
            Json(serde_json::json!({"result": value})).into_response()
        }
        Err(p) => p.answer(json),
    }
}
