//! `GET /authorize`: approves at once (or denies with `--deny`) and redirects back with
//! a code, the state, and the `iss` the knobs ask for (RFC 9207). The person who
//! approves is the request's `login_hint`, else `--subject`.

use std::sync::Arc;

use axum::{
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{client_auth::find_client, quirks, single_params};
use crate::{
    db::{CODE_LIFETIME, Code, random_token},
    knobs::{IssMode, valid_subject},
    shared::Shared,
    stats::AuthorizeSeen,
};

pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match single_params(query.as_deref().unwrap_or_default()) {
        Ok(p) => p,
        Err(e) => return bad_request(&e),
    };
    let get = |k: &str| params.get(k).map(String::as_str);
    let Some(client_id) = get("client_id") else {
        return bad_request("client_id is missing");
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return bad_request("redirect_uri is missing");
    };
    shared.stats().log_authorize(AuthorizeSeen {
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scope: get("scope").map(str::to_owned),
        resource: get("resource").map(str::to_owned),
        code_challenge_method: get("code_challenge_method").map(str::to_owned),
        has_state: params.contains_key("state"),
        dpop_jkt: get("dpop_jkt").map(str::to_owned),
        audience: get("audience").map(str::to_owned),
        access_type: get("access_type").map(str::to_owned),
        prompt: get("prompt").map(str::to_owned),
        login_hint: get("login_hint").map(str::to_owned),
    });

    // Errors about the client or its redirect are shown here, never redirected (RFC
    // 6749 §4.1.2.1): redirecting to an unchecked URI would make this an open redirector.
    let Some(client) = find_client(&shared, &shared.db(), client_id) else {
        return bad_request("invalid_client: unknown client_id");
    };
    if !client.allows_redirect(redirect_uri) {
        return bad_request("redirect_uri is not registered for this client");
    }
    let Ok(mut back) = url::Url::parse(redirect_uri) else {
        return bad_request("redirect_uri is not a URL");
    };
    let state = get("state");

    let verdict = (|| {
        if get("response_type") != Some("code") {
            return Err((
                "unsupported_response_type",
                "response_type must be code".to_owned(),
            ));
        }
        let challenge = get("code_challenge").ok_or((
            "invalid_request",
            "code_challenge is required (PKCE)".to_owned(),
        ))?;
        let method = get("code_challenge_method").unwrap_or("plain");
        if !shared.knobs.pkce.accepts(method) {
            return Err((
                "invalid_request",
                format!("code_challenge_method {method} is not supported"),
            ));
        }
        // The person who authorizes: the one the client names, else the default.
        let subject = match get("login_hint") {
            Some(hint) if valid_subject(hint) => hint.to_owned(),
            Some(_) => {
                return Err((
                    "invalid_request",
                    "login_hint must be 1 to 64 ASCII letters, digits and -_.@".to_owned(),
                ));
            }
            None => shared.knobs.subject.clone(),
        };
        let grant = quirks::grant(&shared, &params).map_err(|r| {
            if r.by_quirk {
                shared.stats().quirk_refusals += 1;
            }
            (r.error, r.description)
        })?;
        if shared.knobs.deny {
            return Err((
                "access_denied",
                "the testbed denies every authorization".to_owned(),
            ));
        }
        Ok(Code {
            client_id: client.id.clone(),
            subject,
            redirect_uri: redirect_uri.to_owned(),
            challenge: challenge.to_owned(),
            method: method.to_owned(),
            scope: grant.scope,
            resource: grant.resource,
            quirks: grant.quirks,
            expires_at: shared.now() + CODE_LIFETIME,
            issued_family: None,
            // RFC 9449 §10: the code is bound to the key; an AS without DPoP ignores it.
            dpop_jkt: get("dpop_jkt")
                .filter(|_| shared.knobs.dpop_at_as())
                .map(str::to_owned),
        })
    })();

    {
        let mut q = back.query_pairs_mut();
        match verdict {
            Ok(code) => {
                let value = random_token("tb_code_");
                {
                    let mut db = shared.db();
                    db.secrets.push(value.clone());
                    db.codes.insert(value.clone(), code);
                }
                shared.stats().authorizations += 1;
                q.append_pair("code", &value);
            }
            Err((error, description)) => {
                if error == "access_denied" {
                    shared.stats().denials += 1;
                }
                q.append_pair("error", error);
                q.append_pair("error_description", &description);
            }
        }
        if let Some(state) = state {
            q.append_pair("state", state);
        }
        if let Some(iss) = iss_value(&shared) {
            q.append_pair("iss", &iss);
        }
    }
    (StatusCode::FOUND, [(header::LOCATION, back.to_string())]).into_response()
}

/// The `iss` to send back, per `--iss`.
fn iss_value(shared: &Shared) -> Option<String> {
    let issuer = &shared.urls.issuer;
    match shared.knobs.iss {
        IssMode::Right => Some(issuer.clone()),
        IssMode::Absent => None,
        IssMode::Wrong => Some("https://attacker.example".to_owned()),
        IssMode::Normalized => Some(format!("{issuer}/")),
    }
}

fn bad_request(why: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("authorization request refused: {why}\n"),
    )
        .into_response()
}
