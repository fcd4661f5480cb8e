//! The protected resource: its metadata (RFC 9728), the bearer check in front of the
//! MCP endpoint (RFC 6750 challenges, audience binding, step-up scopes; DPoP-bound
//! tokens and their proofs, RFC 9449 §7), and the counters endpoint.

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
    dpop::{self, At, Expect},
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
    if k.dpop_at_resource() {
        doc["dpop_signing_alg_values_supported"] = json!([dpop::ALG]);
    }
    if k.dpop_resource_only {
        doc["dpop_bound_access_tokens_required"] = json!(true);
    }
    doc
}

/// How the request presented its access token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Bearer,
    /// `Authorization: DPoP`, with a `DPoP` proof header (RFC 9449 §7.1).
    Dpop,
}

/// What the resource knows of a token it accepts.
#[derive(Debug)]
struct TokenInfo {
    scopes: Vec<String>,
    /// The DPoP key the token is bound to.
    jkt: Option<String>,
}

/// The bearer check, and with `--dpop-nonce` the nonce on every answer.
async fn bearer_check(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let mut resp = authorized(&shared, req, next).await;
    if shared.knobs.dpop_at_resource() {
        dpop::add_nonce(&shared, &mut resp);
    }
    resp
}

/// 401 with a challenge without a valid token for this resource (and, for a
/// DPoP-bound token, a valid proof); 403 insufficient_scope for step-up tools without
/// the step-up scope; a plain 403 for forbidden tools.
async fn authorized(shared: &Arc<Shared>, req: Request, next: Next) -> Response {
    let k = &shared.knobs;
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            let scheme = if scheme.eq_ignore_ascii_case("bearer") {
                Scheme::Bearer
            } else if scheme.eq_ignore_ascii_case("dpop") && k.dpop_at_resource() {
                Scheme::Dpop
            } else {
                return None;
            };
            Some((scheme, rest.trim().to_owned()))
        });
    if k.open {
        return next.run(req).await;
    }
    let Some((scheme, token)) = presented else {
        return unauthorized(shared, None);
    };
    shared.stats().mcp_requests_with_token += 1;
    if k.always_401 {
        return unauthorized(
            shared,
            Some("the testbed refuses every token (--always-401)"),
        );
    }
    if k.dpop_resource_only && scheme == Scheme::Bearer {
        return dpop_unauthorized(shared, None, None);
    }
    let info = match &k.external_issuer {
        None => local_token(shared, &token),
        Some(_) => introspected_token(shared, &token).await,
    };
    const UNKNOWN: &str = "the access token is unknown, expired, revoked, or for another resource";
    let scopes = match (scheme, info) {
        (Scheme::Bearer, None) => return unauthorized(shared, Some(UNKNOWN)),
        (Scheme::Dpop, None) => {
            return dpop_unauthorized(shared, Some("invalid_token"), Some(UNKNOWN));
        }
        (Scheme::Bearer, Some(TokenInfo { jkt: Some(_), .. })) => {
            // RFC 9449 §7.2: a bound token is no bearer token.
            return dpop_unauthorized(
                shared,
                Some("invalid_token"),
                Some("DPoP-bound token presented as Bearer"),
            );
        }
        (Scheme::Bearer, Some(info)) => info.scopes,
        (Scheme::Dpop, Some(TokenInfo { jkt: None, .. })) => {
            return dpop_unauthorized(
                shared,
                Some("invalid_token"),
                Some("the access token is not DPoP-bound"),
            );
        }
        (Scheme::Dpop, Some(info)) => {
            let htu = format!("{}{}", shared.urls.rs_origin, req.uri().path());
            let expect = Expect {
                htm: req.method().as_str(),
                htu: &htu,
                access_token: Some(&token),
                jkt: info.jkt.as_deref(),
                bound: "access token",
            };
            let proof = dpop::proof_header(req.headers());
            if let Err(e) = dpop::check(shared, At::Resource, proof, &expect) {
                let why = e.to_string();
                return dpop_unauthorized(shared, Some(e.code()), Some(&why));
            }
            info.scopes
        }
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
                    shared,
                    scheme,
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

/// A token the built-in authorization server issued for this resource.
fn local_token(shared: &Shared, token: &str) -> Option<TokenInfo> {
    let now = shared.now();
    let db = shared.db();
    let at = db.access.get(token)?;
    let bound = shared.knobs.no_audience_binding
        || at.resource.as_deref() == Some(shared.urls.resource.as_str());
    (!at.revoked && at.expires_at > now && bound).then(|| TokenInfo {
        scopes: at.scope.clone(),
        jkt: at.jkt.clone(),
    })
}

/// A token an external authorization server issued, by introspection (RFC 7662):
/// active, for this resource (`aud`), not expired; bound to the key `cnf.jkt` names.
async fn introspected_token(shared: &Shared, token: &str) -> Option<TokenInfo> {
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
    Some(TokenInfo {
        scopes: info
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        jkt: info
            .get("cnf")
            .and_then(|c| c.get("jkt"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The tool a JSON-RPC `tools/call` request names, if the body is one.
fn called_tool(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    (v.get("method")?.as_str()? == "tools/call")
        .then(|| v.get("params")?.get("name")?.as_str().map(str::to_owned))
        .flatten()
}

/// 401 with a Bearer challenge: `invalid_token` and why when a token was refused;
/// without a token, with `--dpop` a DPoP challenge follows, and with
/// `--dpop-resource-only` there is only the DPoP one.
fn unauthorized(shared: &Shared, invalid_token: Option<&str>) -> Response {
    let k = &shared.knobs;
    if invalid_token.is_none() && k.dpop_resource_only {
        return dpop_unauthorized(shared, None, None);
    }
    shared.stats().unauthorized += 1;
    let scope = (!k.challenge_scope.is_empty()).then(|| k.challenge_scope.joined());
    let value = challenge(
        shared,
        Scheme::Bearer,
        invalid_token.map(|_| "invalid_token"),
        scope.as_deref(),
        invalid_token,
    );
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
    )
        .into_response();
    if invalid_token.is_none() && k.dpop_at_as() {
        let dpop = challenge(shared, Scheme::Dpop, None, None, None);
        resp.headers_mut().append(header::WWW_AUTHENTICATE, dpop);
    }
    resp
}

/// 401 with only a DPoP challenge (RFC 9449 §7.1), and the nonce when it asks for one.
fn dpop_unauthorized(shared: &Shared, error: Option<&str>, description: Option<&str>) -> Response {
    shared.stats().unauthorized += 1;
    let value = challenge(shared, Scheme::Dpop, error, None, description);
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
    )
        .into_response()
}

/// A `Bearer` challenge (RFC 6750 §3) or a `DPoP` one (RFC 9449 §7.1, with `algs`),
/// with `resource_metadata` (RFC 9728 §5.1) when the knobs put the metadata location
/// in the header.
fn challenge(
    shared: &Shared,
    scheme: Scheme,
    error: Option<&str>,
    scope: Option<&str>,
    description: Option<&str>,
) -> HeaderValue {
    let name = match scheme {
        Scheme::Bearer => "Bearer",
        Scheme::Dpop => "DPoP",
    };
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
    if scheme == Scheme::Dpop {
        params.push(format!("algs=\"{}\"", dpop::ALG));
    }
    if matches!(shared.knobs.prm, PrmLocation::Header | PrmLocation::Custom)
        && let Some(url) = shared.urls.prm_url()
    {
        params.push(format!("resource_metadata=\"{url}\""));
    }
    let value = if params.is_empty() {
        name.to_owned()
    } else {
        format!("{name} {}", params.join(", "))
    };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(name))
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
