//! The protected resource: its metadata (RFC 9728), the bearer check in front of the
//! MCP endpoint (RFC 6750 challenges, audience binding, step-up scopes), and the
//! counters endpoint.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    fixture::{ConformanceServer, FixtureState},
    knobs::{Endpoint, Fixture, PrmLocation},
    shared::Shared,
    tools::TestbedTools,
};

/// Largest MCP request body the bearer check will read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Where the counters are served.
pub(crate) const STATS_PATH: &str = "/_testbed/stats";

pub(crate) fn routes(
    shared: &Arc<Shared>,
    shutdown: CancellationToken,
) -> (Router<Arc<Shared>>, Vec<(String, Endpoint)>) {
    let mut table = Vec::new();
    let mut router = Router::new().route(
        STATS_PATH,
        get(|State(s): State<Arc<Shared>>| async move { Json(s.snapshot()) }),
    );
    if let Some(path) = &shared.urls.prm_path {
        router = router.route(
            path,
            get(
                |State(s): State<Arc<Shared>>| async move { Json(protected_resource_metadata(&s)) },
            ),
        );
        table.push((path.clone(), Endpoint::Prm));
    }

    let config = StreamableHttpServerConfig::default().with_cancellation_token(shutdown);
    let revision = shared.knobs.mcp_revision;
    let mcp_path = shared.urls.mcp_path.clone();
    let mut mcp_router = Router::new();
    if !shared.knobs.legacy_sse_only {
        mcp_router = match shared.knobs.fixture {
            Fixture::Default => {
                let cancelled = shared.tools.clone();
                let rounds = shared.rounds.clone();
                mcp_router.route_service(
                    &mcp_path,
                    StreamableHttpService::new(
                        move || {
                            Ok(TestbedTools::new(
                                cancelled.clone(),
                                revision,
                                rounds.clone(),
                            ))
                        },
                        shared.sessions.clone(),
                        config,
                    ),
                )
            }
            Fixture::Conformance => {
                let state = Arc::new(FixtureState::new(shared.rounds.clone()));
                mcp_router.route_service(
                    &mcp_path,
                    StreamableHttpService::new(
                        move || Ok(ConformanceServer::new(state.clone(), revision)),
                        shared.sessions.clone(),
                        config,
                    ),
                )
            }
        };
        table.push((mcp_path, Endpoint::Mcp));
    }
    if shared.knobs.legacy_sse || shared.knobs.legacy_sse_only {
        mcp_router = mcp_router.merge(crate::legacy::routes(
            Arc::new(crate::legacy::Sessions::default()),
            shared.tools.clone(),
        ));
        table.push((crate::legacy::SSE_PATH.to_owned(), Endpoint::Mcp));
        table.push((crate::legacy::MESSAGES_PATH.to_owned(), Endpoint::Mcp));
    }
    let mcp_router =
        mcp_router.route_layer(middleware::from_fn_with_state(shared.clone(), bearer_check));
    (router.merge(mcp_router), table)
}

fn protected_resource_metadata(shared: &Shared) -> Value {
    let k = &shared.knobs;
    let mut doc = json!({
        "resource": k.prm_resource.clone().unwrap_or_else(|| shared.urls.resource.clone()),
        "authorization_servers": [
            k.prm_authorization_server
                .clone()
                .or_else(|| k.external_issuer.clone())
                .unwrap_or_else(|| shared.urls.issuer.clone())
        ],
        "bearer_methods_supported": ["header"],
        "resource_name": "keyway testbed",
    });
    if !k.scopes_supported.is_empty() {
        doc["scopes_supported"] = json!(k.scopes_supported.0);
    }
    doc
}

/// The bearer check: 401 with a challenge without a valid token for this resource;
/// 403 insufficient_scope for step-up tools without the step-up scope; a plain 403
/// for forbidden tools.
async fn bearer_check(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let k = &shared.knobs;
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| rest.trim().to_owned())
        });
    if k.open {
        return next.run(req).await;
    }
    let Some(token) = token else {
        return unauthorized(&shared, None);
    };
    shared.stats().mcp_requests_with_token += 1;
    if k.always_401 {
        return unauthorized(
            &shared,
            Some("the testbed refuses every token (--always-401)"),
        );
    }
    let scopes = match &k.external_issuer {
        None => local_token_scopes(&shared, &token),
        Some(_) => introspected_scopes(&shared, &token).await,
    };
    let Some(scopes) = scopes else {
        return unauthorized(
            &shared,
            Some("the access token is unknown, expired, revoked, or for another resource"),
        );
    };

    let req = if req.method() == Method::POST {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
        };
        if let Some(tool) = called_tool(&bytes) {
            if k.forbidden_tools.contains(&tool) {
                return (
                    StatusCode::FORBIDDEN,
                    Json(json!({"error": "forbidden", "error_description": "this tool is refused to every client"})),
                )
                    .into_response();
            }
            let needs_step_up = tool == "admin_only" || k.step_up_tools.contains(&tool);
            let has_scope = scopes.contains(&k.step_up_scope);
            if needs_step_up && (k.step_up_never_satisfied || !has_scope) {
                shared.stats().insufficient_scope += 1;
                let value = challenge(
                    &shared,
                    Some("insufficient_scope"),
                    Some(&k.step_up_scope),
                    None,
                );
                return (StatusCode::FORBIDDEN, [(header::WWW_AUTHENTICATE, value)])
                    .into_response();
            }
        }
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    shared.stats().authorized_mcp_requests += 1;
    next.run(req).await
}

/// The scopes of a token the built-in authorization server issued for this resource.
fn local_token_scopes(shared: &Shared, token: &str) -> Option<Vec<String>> {
    let now = shared.now();
    let db = shared.db();
    let at = db.access.get(token)?;
    let bound = shared.knobs.no_audience_binding
        || at.resource.as_deref() == Some(shared.urls.resource.as_str());
    (!at.revoked && at.expires_at > now && bound).then(|| at.scope.clone())
}

/// The scopes of a token an external authorization server issued, by introspection
/// (RFC 7662): active, for this resource (`aud`), not expired.
async fn introspected_scopes(shared: &Shared, token: &str) -> Option<Vec<String>> {
    let k = &shared.knobs;
    let (url, client) = (
        k.introspection_url.as_deref()?,
        k.introspection_client.as_ref()?,
    );
    let resp = shared
        .http
        .post(url)
        .basic_auth(&client.id, client.secret.as_deref())
        .form(&[("token", token)])
        .send()
        .await
        .ok()?;
    let info: Value = resp.json().await.ok()?;
    if info.get("active") != Some(&Value::Bool(true)) {
        return None;
    }
    let resource = shared.urls.resource.as_str();
    let aud_ok = match info.get("aud") {
        Some(Value::String(a)) => a == resource,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(resource)),
        _ => false,
    };
    if !aud_ok && !k.no_audience_binding {
        return None;
    }
    let now = shared
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if info
        .get("exp")
        .and_then(Value::as_u64)
        .is_some_and(|exp| exp <= now)
    {
        return None;
    }
    Some(
        info.get("scope")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// The tool a JSON-RPC `tools/call` request names, if the body is one.
fn called_tool(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    (v.get("method")?.as_str()? == "tools/call")
        .then(|| v.get("params")?.get("name")?.as_str().map(str::to_owned))
        .flatten()
}

fn unauthorized(shared: &Shared, invalid_token: Option<&str>) -> Response {
    shared.stats().unauthorized += 1;
    let scope =
        (!shared.knobs.challenge_scope.is_empty()).then(|| shared.knobs.challenge_scope.joined());
    let value = challenge(
        shared,
        invalid_token.map(|_| "invalid_token"),
        scope.as_deref(),
        invalid_token,
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
    )
        .into_response()
}

/// A `Bearer` challenge (RFC 6750 §3) with `resource_metadata` (RFC 9728 §5.1) when the
/// knobs put the metadata location in the header.
fn challenge(
    shared: &Shared,
    error: Option<&str>,
    scope: Option<&str>,
    description: Option<&str>,
) -> HeaderValue {
    let mut params = Vec::new();
    if let Some(e) = error {
        params.push(format!("error=\"{e}\""));
    }
    if let Some(d) = description {
        params.push(format!(
            "error_description=\"{}\"",
            d.replace(['"', '\\'], "'")
        ));
    }
    if let Some(s) = scope {
        params.push(format!("scope=\"{s}\""));
    }
    if matches!(shared.knobs.prm, PrmLocation::Header | PrmLocation::Custom)
        && let Some(url) = shared.urls.prm_url()
    {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    let value = if params.is_empty() {
        "Bearer".to_owned()
    } else {
        format!("Bearer {}", params.join(", "))
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_called_tool() {
        let call =
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"admin_only"}}"#;
        assert_eq!(called_tool(call).as_deref(), Some("admin_only"));
        assert_eq!(
            called_tool(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#),
            None
        );
        assert_eq!(called_tool(b"not json"), None);
    }
}
