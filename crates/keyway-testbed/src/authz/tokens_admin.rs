//! Token revocation (RFC 7009) and introspection (RFC 7662).

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{client_auth::authenticate, oauth_error, single_params};
use crate::shared::Shared;

/// Revoke an access token, or a refresh token with its whole grant. Unknown tokens
/// answer 200 too (RFC 7009 §2.2).
pub(crate) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let params = match single_params(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let caller = match authenticate(&shared, &headers, &params) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let Some(token) = params.get("token") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "token is missing",
        );
    };
    let mut db = shared.db();
    let mut revoked = false;
    if let Some(rt) = db.refresh.get(token).cloned() {
        let owner = db.families.get(&rt.family).map(|f| f.client_id.clone());
        if owner.as_deref() == Some(caller.client.id.as_str()) {
            db.revoke_family(rt.family);
            revoked = true;
        }
    } else if let Some(at) = db.access.get_mut(token)
        && at.client_id == caller.client.id
        && !at.revoked
    {
        at.revoked = true;
        revoked = true;
    }
    drop(db);
    if revoked {
        shared.stats().revocations += 1;
    }
    StatusCode::OK.into_response()
}

/// Say whether a token is active, for any authenticated client.
pub(crate) async fn introspect(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let params = match single_params(&body) {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    if let Err(resp) = authenticate(&shared, &headers, &params) {
        return resp;
    }
    let token = params.get("token").cloned().unwrap_or_default();
    let now = shared.now();
    let db = shared.db();
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let answer = match db.access.get(&token) {
        Some(at) if !at.revoked && at.expires_at > now => {
            let mut answer = json!({
                "active": true,
                "token_type": "Bearer",
                "client_id": at.client_id,
                "sub": at.subject,
                "scope": at.scope.join(" "),
                "aud": at.resource,
                "iss": shared.urls.issuer,
                "iat": secs(at.issued_at),
                "exp": secs(at.expires_at),
            });
            // RFC 9449 §6.2: a DPoP-bound token names its key.
            if let Some(jkt) = &at.jkt {
                answer["token_type"] = json!("DPoP");
                answer["cnf"] = json!({"jkt": jkt});
            }
            answer
        }
        _ => json!({"active": false}),
    };
    Json(answer).into_response()
}
