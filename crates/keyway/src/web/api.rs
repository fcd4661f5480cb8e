//! What the page's buttons and dialogs ask for: a probe while a URL is typed, add
//! (and authorize), authorize, a token, enable / disable, remove, the tools and a test
//! call. Each answers JSON to the page's script, and a plain page (or a redirect) to
//! a form posted without JavaScript. Nothing here decides anything about a server:
//! [`crate::manage`] does, as it does for the `keyway` commands.

use std::{sync::Arc, time::Duration};

use axum::{
    Form, Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use url::Url;

use super::{Ui, flows::FlowView, page};
use crate::{
    Secret,
    auth::{AuthOptions, BrowserMode},
    manage::{self, AddError, AddRequest, Added, AuthorizeError},
    naming,
    probe::{Probe, ProbeClass, ProbeOptions},
    store::{AuthKind, ServerRecord, Store, Transport},
};

/// How long an answer waits for a flow to have a page to open (the probe, discovery
/// and registration happen first; the probe alone may take its 30 s).
const FLOW_START_WAIT: Duration = Duration::from_secs(45);

pub(super) fn routes() -> Router<Ui> {
    Router::new()
        .route("/probe", post(probe))
        .route("/add", post(add))
        .route("/servers/{id}/authorize", post(authorize))
        .route("/servers/{id}/cancel", post(cancel))
        .route("/servers/{id}/token", post(set_token))
        .route("/servers/{id}/enable", post(enable))
        .route("/servers/{id}/disable", post(disable))
        .route("/servers/{id}/remove", post(remove))
        .route("/servers/{id}/tools", get(super::tools::tools))
        .route("/servers/{id}/call", post(super::tools::call))
}

/// Whether the page's script asked (JSON), rather than a plain form.
pub(super) fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// A refusal the page shows as it is: what went wrong and what to do next.
pub(super) struct Problem {
    status: StatusCode,
    error: String,
    hint: Option<String>,
}

impl Problem {
    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            hint: None,
        }
    }

    pub(super) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub(super) fn answer(self, json: bool) -> Response {
        if json {
            let body = serde_json::json!({"error": self.error, "hint": self.hint});
            return (self.status, Json(body)).into_response();
        }
        let text = match &self.hint {
            Some(h) => format!("{} ({h})", self.error),
            None => self.error.clone(),
        };
        (self.status, Html(page::message("That did not work", &text))).into_response()
    }
}

/// Done: JSON for the script, back to the list for a form.
pub(super) fn done(json: bool, body: serde_json::Value) -> Response {
    if json {
        Json(body).into_response()
    } else {
        (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response()
    }
}

pub(super) async fn server(ui: &Ui, id: &str) -> Result<ServerRecord, Problem> {
    match ui.store().server(id).await {
        Ok(Some(rec)) if rec.id == id => Ok(rec),
        Ok(_) => Err(Problem::new(
            StatusCode::NOT_FOUND,
            "no such server: it may have been removed",
        )
        .hint("reload the page")),
        Err(e) => Err(Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string(),
        )),
    }
}

/// A URL typed into the page: http or https, with a host.
fn server_url(raw: &str) -> Result<Url, Problem> {
    let raw = raw.trim();
    let bad = |why: String| {
        Problem::new(StatusCode::BAD_REQUEST, why)
            .hint("give the server's MCP endpoint, like https://mcp.example.com/mcp")
    };
    let url = Url::parse(raw).map_err(|e| bad(format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!(
            "{raw:?} is not an http(s) URL: MCP servers are reached over HTTP"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(format!("{raw:?} names no host")));
    }
    Ok(url)
}

fn secret(raw: &Option<String>) -> Option<Secret> {
    raw.as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_owned()))
}

fn transport(raw: Option<&str>) -> Result<Option<Transport>, Problem> {
    match raw.unwrap_or("auto") {
        "" | "auto" => Ok(None),
        "http" => Ok(Some(Transport::Http)),
        "sse" => Ok(Some(Transport::Sse)),
        other => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("unknown transport {other:?}: auto, http or sse"),
        )),
    }
}

#[derive(Deserialize)]
struct ProbeForm {
    url: String,
    token: Option<String>,
    transport: Option<String>,
}

/// A probe as the page shows it.
#[derive(Serialize)]
struct ProbeView {
    class: ProbeClass,
    /// The class in words.
    title: &'static str,
    detail: Option<String>,
    next_step: String,
    tools: Vec<String>,
    registration: Vec<&'static str>,
    device: bool,
    problems: Vec<String>,
    transport: &'static str,
    protocol: Option<String>,
    /// A name for it, free among the saved ones.
    name: String,
}

fn probe_title(p: &Probe) -> &'static str {
    match p.class {
        ProbeClass::Open => "Tools found",
        ProbeClass::TokenRejected => "Token rejected",
        ProbeClass::Oauth => "Authorization required",
        ProbeClass::TokenOnly => "Access token required",
        ProbeClass::Unreachable => "Unreachable",
        ProbeClass::Error => "Error",
    }
}

async fn probe(State(ui): State<Ui>, Form(f): Form<ProbeForm>) -> Response {
    let url = match server_url(&f.url) {
        Ok(u) => u,
        Err(p) => return p.answer(true),
    };
    let transport = match transport(f.transport.as_deref()) {
        Ok(t) => t,
        Err(p) => return p.answer(true),
    };
    let auth = &ui.inner.options.auth;
    let opts = ProbeOptions {
        token: secret(&f.token),
        headers: Vec::new(),
        client: crate::auth::ClientOptions {
            client_id: auth.client.client_id.clone(),
            client_metadata_url: auth.client.client_metadata_url.clone(),
            ..Default::default()
        },
        allow_http: auth.allow_http,
        transport: transport
            .map(manage::transport_choice)
            .unwrap_or(crate::mcp::TransportChoice::Auto),
    };
    let p = crate::probe::probe_within(
        &ui.inner.http,
        url.as_str(),
        &opts,
        crate::probe::PROBE_TIMEOUT,
    )
    .await;
    let taken: Vec<String> = match ui.store().servers().await {
        Ok(s) => s.into_iter().map(|s| s.name).collect(),
        Err(_) => Vec::new(),
    };
    Json(ProbeView {
        class: p.class,
        title: probe_title(&p),
        detail: p.detail.clone(),
        next_step: p.next_step.clone(),
        tools: p.tools.clone(),
        registration: p.registration.clone(),
        device: p.device,
        problems: p
            .discovery
            .as_ref()
            .map(|d| d.problems.iter().map(|x| x.message.clone()).collect())
            .unwrap_or_default(),
        transport: p.transport,
        protocol: p.server.as_ref().map(|s| s.protocol_version.clone()),
        name: naming::unique(&naming::default_name(&url), &taken),
    })
    .into_response()
}

/// The options of a flow the page runs: the page opens the authorization page (in a
/// tab) and its callback comes back here.
fn flow_options(ui: &Ui, id: &str) -> AuthOptions {
    let base = &ui.inner.options.auth;
    // `follow` (servers that approve without a person) stays as asked; otherwise the
    // page opens the authorization page in a tab of its own.
    let follow = base.browser == BrowserMode::Follow;
    let witness = ui.inner.flows.witness(id);
    AuthOptions {
        browser: if follow {
            BrowserMode::Follow
        } else {
            BrowserMode::System
        },
        opener: (!follow).then_some(witness as Arc<dyn crate::auth::Opener>),
        callbacks: Some(ui.inner.callbacks.clone()),
        allow_paste: false,
        ..ui.inner.options.auth.clone()
    }
}

#[derive(Deserialize)]
struct AddForm {
    url: String,
    name: Option<String>,
    token: Option<String>,
    transport: Option<String>,
    /// "1": Add & Authorize.
    authorize: Option<String>,
}

fn add_problem(e: &AddError) -> Problem {
    let status = match e {
        AddError::BadName(_) => StatusCode::BAD_REQUEST,
        AddError::NameTaken(_) => StatusCode::CONFLICT,
        AddError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    let p = Problem::new(status, e.to_string());
    match e {
        AddError::NameTaken(_) => p.hint("choose another name"),
        AddError::TokenRejected { .. } => p.hint("check the token and try again"),
        AddError::TokenNeeded { .. } => {
            p.hint("enter the access token the server's operator gave you")
        }
        _ => match e.probe() {
            Some(probe) => p.hint(probe.next_step.clone()),
            None => p,
        },
    }
}

fn flow_end(result: &Result<Added, AddError>) -> FlowView {
    match result {
        Ok(added) => FlowView::Authorized {
            issuer: added.issuer.clone().unwrap_or_default(),
            note: added.note.clone(),
        },
        Err(AddError::Authorize(AuthorizeError::Auth(e))) => FlowView::from_error(e),
        Err(e) => FlowView::Failed {
            reason: e.to_string(),
        },
    }
}

async fn add(State(ui): State<Ui>, headers: HeaderMap, Form(f): Form<AddForm>) -> Response {
    let json = wants_json(&headers);
    let url = match server_url(&f.url) {
        Ok(u) => u,
        Err(p) => return p.answer(json),
    };
    let transport = match transport(f.transport.as_deref()) {
        Ok(t) => t,
        Err(p) => return p.answer(json),
    };
    let authorize = f.authorize.as_deref() == Some("1");
    let id = manage::new_id();
    let req = AddRequest {
        url,
        name: f
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        id: Some(id.clone()),
        token: secret(&f.token),
        headers: Vec::new(),
        transport,
        auth: flow_options(&ui, &id),
        authorize,
        force: false,
    };
    if authorize && ui.inner.flows.try_start(&id).is_err() {
        return Problem::new(StatusCode::CONFLICT, "this server is being added already")
            .answer(json);
    }
    let (tx, rx) = oneshot::channel();
    let (go, ready) = oneshot::channel::<()>();
    let task_ui = ui.clone();
    let reporter = ui.inner.flows.witness(&id);
    let task_id = id.clone();
    let task = tokio::spawn(async move {
        // Not before the task is known, so a cancel always finds it.
        let _ = ready.await;
        let result = manage::add(
            task_ui.store(),
            &task_ui.inner.http,
            req,
            reporter,
            &manage::Quiet,
        )
        .await;
        if authorize {
            task_ui.inner.flows.ended(&task_id);
            match &result {
                // Not an OAuth server after all: nothing was authorized.
                Ok(added) if added.issuer.is_none() => task_ui.inner.flows.forget(&task_id),
                r => task_ui.inner.flows.set(&task_id, flow_end(r)),
            }
        }
        task_ui.changed();
        let _ = tx.send(result);
    });
    if authorize {
        ui.inner.flows.running(&id, task.abort_handle(), true);
    }
    let _ = go.send(());
    let flows = ui.inner.flows.clone();
    let wait_id = id.clone();
    let flow_ready = async move {
        if authorize {
            flows.actionable(&wait_id, FLOW_START_WAIT).await
        } else {
            std::future::pending().await
        }
    };
    tokio::select! {
        result = rx => match result {
            Ok(Ok(added)) => done(json, serde_json::json!({"id": id, "added": added, "flow": ui.inner.flows.get(&id)})),
            Ok(Err(e)) => add_problem(&e).answer(json),
            Err(_) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "adding stopped unexpectedly").answer(json),
        },
        flow = flow_ready => flow_answer(json, &id, flow),
    }
}

/// The answer once a flow has a page to open: JSON for the script (which opens it in
/// the tab it prepared), the page itself for a form.
fn flow_answer(json: bool, id: &str, flow: Option<FlowView>) -> Response {
    if json {
        return Json(serde_json::json!({"id": id, "flow": flow})).into_response();
    }
    match flow {
        Some(FlowView::Authorizing { url: Some(u), .. }) => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, u)]).into_response()
        }
        _ => (StatusCode::SEE_OTHER, [(header::LOCATION, "/".to_owned())]).into_response(),
    }
}

async fn authorize(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let json = wants_json(&headers);
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    if rec.auth == AuthKind::Token {
        return Problem::new(
            StatusCode::CONFLICT,
            format!(
                "{} takes an access token only: its server offers no OAuth sign-in",
                rec.name
            ),
        )
        .hint("set a token on its card instead")
        .answer(json);
    }
    if ui.inner.flows.try_start(&id).is_err() {
        return Problem::new(
            StatusCode::CONFLICT,
            format!("{} is being authorized already", rec.name),
        )
        .hint("finish the sign-in that is open, or cancel it on the card")
        .answer(json);
    }
    let options = flow_options(&ui, &id);
    let task_ui = ui.clone();
    let reporter = ui.inner.flows.witness(&id);
    let (go, ready) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = ready.await;
        let (store, http) = (task_ui.store(), &task_ui.inner.http);
        let view = match manage::authorize(store, http, &rec, options, reporter).await {
            Ok(grant) => {
                let note = manage::verify(store, http, &rec, &manage::Quiet)
                    .await
                    .err()
                    .map(|e| e.to_string());
                FlowView::Authorized {
                    issuer: grant.issuer,
                    note,
                }
            }
            Err(AuthorizeError::Auth(e)) => FlowView::from_error(&e),
            Err(e) => FlowView::Failed {
                reason: e.to_string(),
            },
        };
        task_ui.inner.flows.ended(&rec.id);
        task_ui.inner.flows.set(&rec.id, view);
        task_ui.changed();
    });
    ui.inner.flows.running(&id, task.abort_handle(), false);
    let _ = go.send(());
    let flow = ui.inner.flows.actionable(&id, FLOW_START_WAIT).await;
    flow_answer(json, &id, flow)
}

/// Stop the flow under way for `id` (the person closed the sign-in, or gave up). A
/// flow that was adding its server takes the new row away, as a failed add does.
async fn cancel(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let json = wants_json(&headers);
    match ui.inner.flows.cancel(&id, "cancelled") {
        None => {
            Problem::new(StatusCode::CONFLICT, "no authorization is under way for it").answer(json)
        }
        Some(adding) => {
            if adding {
                ui.purge_added(&id).await;
            }
            ui.changed();
            done(
                json,
                serde_json::json!({"cancelled": true, "saved": !adding}),
            )
        }
    }
}

#[derive(Deserialize)]
struct TokenForm {
    token: Option<String>,
}

async fn set_token(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<TokenForm>,
) -> Response {
    let json = wants_json(&headers);
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    let Some(token) = secret(&f.token) else {
        return Problem::new(StatusCode::BAD_REQUEST, "no token was given").answer(json);
    };
    let result = manage::set_token(
        ui.store(),
        &ui.inner.http,
        &rec,
        &token,
        true,
        &manage::Quiet,
    )
    .await;
    ui.changed();
    match result {
        Ok(manage::TokenCheck::Accepted { tools }) => {
            done(json, serde_json::json!({"saved": true, "tools": tools}))
        }
        Ok(manage::TokenCheck::Unchecked { why }) => {
            done(json, serde_json::json!({"saved": true, "note": why}))
        }
        Err(e) => {
            let status = match e {
                manage::SetTokenError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
                manage::SetTokenError::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::BAD_REQUEST,
            };
            Problem::new(status, e.to_string()).answer(json)
        }
    }
}

async fn set_enabled(ui: Ui, headers: HeaderMap, id: String, enabled: bool) -> Response {
    let json = wants_json(&headers);
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    let result = ui.store().set_enabled(&rec.id, enabled).await;
    ui.changed();
    match result {
        Ok(()) => done(json, serde_json::json!({"enabled": enabled})),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).answer(json),
    }
}

async fn enable(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_enabled(ui, headers, id, true).await
}

async fn disable(State(ui): State<Ui>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    set_enabled(ui, headers, id, false).await
}

#[derive(Deserialize)]
struct RemoveForm {
    confirm: Option<String>,
}

async fn remove(
    State(ui): State<Ui>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<RemoveForm>,
) -> Response {
    let json = wants_json(&headers);
    if f.confirm.as_deref() != Some("yes") {
        return Problem::new(StatusCode::BAD_REQUEST, "removing needs a confirmation")
            .hint("tick the box beside Remove")
            .answer(json);
    }
    let rec = match server(&ui, &id).await {
        Ok(r) => r,
        Err(p) => return p.answer(json),
    };
    // A flow under way for it ends first: its tokens would belong to nothing.
    let _ = ui.inner.flows.cancel(&id, "the server was removed");
    let result = manage::remove(ui.store(), &rec).await;
    ui.inner.flows.forget(&id);
    ui.changed();
    match result {
        Ok(removal) => done(
            json,
            serde_json::json!({
                "removed": true,
                "revocation": removal.revocation.map(|r| r.to_string()),
                "registration": removal.registration.map(|d| d.to_string()),
            }),
        ),
        Err(e) => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).answer(json),
    }
}
