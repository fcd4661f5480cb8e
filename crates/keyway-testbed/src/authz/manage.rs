//! Dynamic client registration management (RFC 7592): each dynamic registration has a
//! client configuration endpoint, `{registration endpoint}/{client_id}`, read with
//! `GET` and deleted with `DELETE`, both with `Authorization: Bearer` and the
//! registration's `registration_access_token`. Updates (`PUT`) are not offered.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::no_store;
use crate::shared::{Shared, Urls};

/// The route of every registration's configuration endpoint, on the AS origin.
pub(crate) fn route_path(u: &Urls) -> String {
    format!("{}/{{client_id}}", u.endpoint_path("register"))
}

/// `registration_client_uri` of one client.
pub(crate) fn client_uri(u: &Urls, client_id: &str) -> String {
    format!("{}/{client_id}", u.endpoint_url("register"))
}

/// `GET`: the client information response, as registration gave it (RFC 7592 §2.1).
pub(crate) async fn read(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let answer = {
        let db = shared.db();
        let Some(reg) = db
            .clients
            .get(&client_id)
            .and_then(|c| c.registration.as_ref())
            .filter(|r| bearer(&headers) == Some(r.access_token.as_str()))
        else {
            return invalid_token();
        };
        reg.answer.clone()
    };
    shared.stats().registration_reads += 1;
    let mut resp = Json(answer).into_response();
    no_store(&mut resp);
    resp
}

/// `DELETE`: the client is forgotten, with every grant and token it holds (RFC 7592
/// §2.3); its client_id no longer works at the authorization or token endpoint.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Path(client_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    {
        let mut db = shared.db();
        let allowed = db
            .clients
            .get(&client_id)
            .and_then(|c| c.registration.as_ref())
            .is_some_and(|r| bearer(&headers) == Some(r.access_token.as_str()));
        if !allowed {
            return invalid_token();
        }
        db.remove_client(&client_id);
    }
    shared.stats().registration_deletes += 1;
    StatusCode::NO_CONTENT.into_response()
}

/// The Bearer token of a request (RFC 6750 §2.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// 401 for a missing or wrong token, and for a client that does not exist (or was
/// not registered dynamically): RFC 7592 §2 says not to tell these apart.
fn invalid_token() -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        )],
        Json(json!({"error": "invalid_token"})),
    )
        .into_response();
    no_store(&mut resp);
    resp
}
