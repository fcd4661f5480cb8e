//! Device authorization (RFC 8628): `POST /device_authorization` hands out a device
//! code; `GET /device?user_code=...` is the page a person would visit, and approves
//! at once (denies with `--deny`). Polling happens at `/token`.

use std::sync::Arc;

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{client_auth::authenticate, no_store, oauth_error, quirks, single_params};
use crate::{
    db::{DEVICE_CODE_LIFETIME, DeviceGrant, random_token, user_code},
    shared::Shared,
};

pub(crate) async fn device_authorization(
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
    let grant = match quirks::grant(&shared, &params) {
        Ok(g) => g,
        Err(r) => {
            if r.by_quirk {
                shared.stats().quirk_refusals += 1;
            }
            return oauth_error(StatusCode::BAD_REQUEST, r.error, &r.description);
        }
    };
    let device_code = random_token("tb_dc_");
    let user = user_code();
    shared.db().devices.insert(
        device_code.clone(),
        DeviceGrant {
            client_id: caller.client.id,
            subject: shared.knobs.subject.clone(),
            user_code: user.clone(),
            scope: grant.scope,
            resource: grant.resource,
            expires_at: shared.now() + DEVICE_CODE_LIFETIME,
            polls: 0,
            approved: false,
            denied: false,
            quirks: grant.quirks,
        },
    );
    let verify = shared.urls.endpoint_url("device");
    let complete = url::Url::parse_with_params(&verify, [("user_code", &user)])
        .map(String::from)
        .unwrap_or_else(|_| verify.clone());
    let mut resp = Json(json!({
        "device_code": device_code,
        "user_code": user,
        "verification_uri": verify,
        "verification_uri_complete": complete,
        "expires_in": DEVICE_CODE_LIFETIME.as_secs(),
        "interval": shared.knobs.device_interval,
    }))
    .into_response();
    no_store(&mut resp);
    resp
}

/// The verification page: approves (or denies) the grant with this user code.
pub(crate) async fn verify(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let params = single_params(q.as_deref().unwrap_or_default()).unwrap_or_default();
    let Some(code) = params.get("user_code") else {
        return (StatusCode::BAD_REQUEST, "user_code is missing\n").into_response();
    };
    let deny = shared.knobs.deny;
    let mut db = shared.db();
    match db.devices.values_mut().find(|d| d.user_code == *code) {
        Some(grant) if deny => {
            grant.denied = true;
            (StatusCode::OK, "Device request denied.\n").into_response()
        }
        Some(grant) => {
            grant.approved = true;
            (
                StatusCode::OK,
                "Device approved. You can return to your terminal.\n",
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "No pending request has that code.\n").into_response(),
    }
}
