//! `POST /token`: authorization_code (PKCE-verified), refresh_token (rotation and
//! reuse detection), client_credentials and device_code grants; with `--dpop`, a
//! request with a DPoP proof gets tokens bound to the proof's key (RFC 9449 §5); with
//! `--idp-quirks`, the provider's rules on `resource`, scopes and refresh tokens, and
//! GitHub's way of answering.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{
    check_resource,
    client_auth::{Authenticated, authenticate},
    no_store, oauth_error,
    quirks::{self, Refused, github},
    single_params,
};
use crate::{
    db::{DEVICE_CODE_GRANT, Db, Issued, NewAccess, pkce_matches},
    dpop::{self, At, Expect},
    knobs::{IdpQuirks, TokenAuthMethod},
    shared::Shared,
    signing::SigningError,
    stats::TokenSeen,
};

/// An OAuth error answer: status, code, description, and whether an `--idp-quirks`
/// rule gave it.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: &'static str,
    why: String,
    by_quirk: bool,
}

fn refuse(error: &'static str, why: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        why: why.into(),
        by_quirk: false,
    }
}

/// The access token could not be signed (`--jwt-access-tokens`).
impl From<SigningError> for Refusal {
    fn from(e: SigningError) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            ..refuse("server_error", e.to_string())
        }
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Self {
            by_quirk: r.by_quirk,
            ..refuse(r.error, r.description)
        }
    }
}

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut resp = answer(&shared, &headers, &body);
    if shared.knobs.idp_quirks == Some(IdpQuirks::Github) {
        let params = single_params(&body).unwrap_or_default();
        let grant_type = params.get("grant_type").map_or("", String::as_str);
        resp = github::reshape(resp, grant_type, github::wants_json(&headers)).await;
    }
    dpop::add_nonce(&shared, &mut resp);
    resp
}

fn answer(shared: &Shared, headers: &HeaderMap, body: &str) -> Response {
    let mut params = match single_params(body) {
        Ok(p) => p,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    let grant_type = params.get("grant_type").cloned().unwrap_or_default();
    let mut seen = TokenSeen {
        grant_type: grant_type.clone(),
        client_id: params.get("client_id").cloned(),
        client_auth: "unauthenticated".into(),
        scope: params.get("scope").cloned(),
        resource: params.get("resource").cloned(),
        audience: params.get("audience").cloned(),
        dpop_proof: headers.contains_key(dpop::PROOF_HEADER),
        outcome: String::new(),
    };
    let caller = match authenticate(shared, headers, &params) {
        Ok(c) => c,
        Err(resp) => {
            seen.outcome = "invalid_client".into();
            shared.stats().log_token(seen);
            return resp;
        }
    };
    seen.client_id = Some(caller.client.id.clone());
    seen.client_auth = caller.method.as_str().into();

    if !grant_type.is_empty() && !caller.client.may_use(&grant_type) {
        seen.outcome = "unauthorized_client".into();
        shared.stats().log_token(seen);
        let why = format!("client is not registered for {grant_type}");
        return oauth_error(StatusCode::BAD_REQUEST, "unauthorized_client", &why);
    }
    if let Err(r) = quirks::token_resource(shared, &mut params) {
        seen.outcome = r.error.into();
        shared.stats().quirk_refusals += 1;
        shared.stats().log_token(seen);
        return oauth_error(StatusCode::BAD_REQUEST, r.error, &r.description);
    }
    let jkt = match proof(shared, headers, &grant_type, &params) {
        Ok(jkt) => jkt,
        Err(e) => {
            seen.outcome = e.code().into();
            shared.stats().log_token(seen);
            return oauth_error(StatusCode::BAD_REQUEST, e.code(), &e.to_string());
        }
    };
    let jkt = jkt.as_deref();
    let result = match grant_type.as_str() {
        "authorization_code" => authorization_code(shared, &caller, &params, jkt),
        "refresh_token" => refresh(shared, &caller, &params, jkt),
        "client_credentials" if !shared.knobs.no_client_credentials => {
            client_credentials(shared, &caller, &params, jkt)
        }
        DEVICE_CODE_GRANT if !shared.knobs.no_device => device_code(shared, &caller, &params, jkt),
        "" => Err(refuse("invalid_request", "grant_type is missing")),
        other => Err(refuse(
            "unsupported_grant_type",
            format!("grant_type {other} is not supported"),
        )),
    };
    match result {
        Ok(issued) => {
            seen.outcome = "ok".into();
            {
                let mut stats = shared.stats();
                stats.log_token(seen);
                *stats
                    .tokens_by_subject
                    .entry(issued.subject.clone())
                    .or_default() += 1;
            }
            let token_type = if jkt.is_some() {
                shared.stats().dpop_bound_tokens_issued += 1;
                "DPoP"
            } else {
                "Bearer"
            };
            let mut body = json!({
                "access_token": issued.access_token,
                "token_type": token_type,
                "expires_in": shared.knobs.token_lifetime,
            });
            if let Some(rt) = issued.refresh_token {
                body["refresh_token"] = json!(rt);
            }
            if !issued.scope.is_empty() {
                body["scope"] = json!(issued.scope.join(" "));
            }
            let mut resp = Json(body).into_response();
            no_store(&mut resp);
            resp
        }
        Err(r) => {
            seen.outcome = r.error.into();
            if r.by_quirk {
                shared.stats().quirk_refusals += 1;
            }
            shared.stats().log_token(seen);
            oauth_error(r.status, r.error, &r.why)
        }
    }
}

/// The DPoP proof of a token request, checked when the AS speaks DPoP: `Ok(Some(jkt))`
/// binds what is issued to that key. A code or refresh token bound to a key needs a
/// proof by it.
fn proof(
    shared: &Shared,
    headers: &HeaderMap,
    grant_type: &str,
    p: &HashMap<String, String>,
) -> Result<Option<String>, dpop::ProofError> {
    if !shared.knobs.dpop_at_as() {
        // An AS that knows nothing of DPoP ignores the header.
        return Ok(None);
    }
    let (bound, jkt) = {
        let db = shared.db();
        let param = |name: &str| p.get(name).map(String::as_str).unwrap_or_default();
        match grant_type {
            "authorization_code" => (
                "authorization code",
                db.codes.get(param("code")).and_then(|c| c.dpop_jkt.clone()),
            ),
            "refresh_token" => (
                "refresh token",
                db.refresh
                    .get(param("refresh_token"))
                    .and_then(|r| r.jkt.clone()),
            ),
            _ => ("grant", None),
        }
    };
    let htu = shared.urls.endpoint_url("token");
    let expect = Expect {
        htm: "POST",
        htu: &htu,
        access_token: None,
        jkt: jkt.as_deref(),
        bound,
    };
    dpop::check(
        shared,
        At::TokenEndpoint,
        dpop::proof_header(headers),
        &expect,
    )
}

fn authorization_code(
    shared: &Shared,
    caller: &Authenticated,
    p: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Issued, Refusal> {
    let code = p
        .get("code")
        .ok_or_else(|| refuse("invalid_request", "code is missing"))?;
    let now = shared.now();
    let mut db = shared.db();
    let stored = db
        .codes
        .get(code)
        .cloned()
        .ok_or_else(|| refuse("invalid_grant", "unknown authorization code"))?;
    if let Some(family) = stored.issued_family {
        // RFC 6749 §4.1.2: a code used twice revokes what it already issued.
        db.revoke_family(family);
        return Err(refuse("invalid_grant", "authorization code already used"));
    }
    if stored.expires_at <= now {
        return Err(refuse("invalid_grant", "authorization code expired"));
    }
    if stored.client_id != caller.client.id {
        return Err(refuse("invalid_grant", "code was issued to another client"));
    }
    if p.get("redirect_uri") != Some(&stored.redirect_uri) {
        return Err(refuse(
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        ));
    }
    let verifier = p
        .get("code_verifier")
        .ok_or_else(|| refuse("invalid_grant", "code_verifier is missing (PKCE)"))?;
    db.secrets.push(verifier.clone());
    if !pkce_matches(&stored.method, &stored.challenge, verifier) {
        return Err(refuse(
            "invalid_grant",
            "code_verifier does not match the code_challenge",
        ));
    }
    let resource = p.get("resource").map(String::as_str);
    check_resource(shared, resource).map_err(|e| refuse("invalid_target", e))?;
    if let (Some(asked), Some(granted)) = (resource, stored.resource.as_deref())
        && asked != granted
    {
        return Err(refuse(
            "invalid_target",
            "resource differs from the authorization request",
        ));
    }
    let resource = resource.or(stored.resource.as_deref()).map(str::to_owned);
    let family = db.new_family(
        &caller.client.id,
        &stored.subject,
        &stored.scope,
        resource.as_deref(),
    );
    if let Some(c) = db.codes.get_mut(code) {
        c.issued_family = Some(family);
    }
    let new = NewAccess {
        client_id: &caller.client.id,
        subject: &stored.subject,
        scope: &stored.scope,
        resource: resource.as_deref(),
        family: Some(family),
        jkt,
    };
    let mut issued = issue(shared, &mut db, &new, stored.quirks.refresh_allowed)?;
    drop(db);
    if let Some(shown) = stored.quirks.scope_shown {
        issued.scope = shown;
    }
    shared.stats().code_exchanges += 1;
    Ok(issued)
}

fn refresh(
    shared: &Shared,
    caller: &Authenticated,
    p: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Issued, Refusal> {
    let presented = p
        .get("refresh_token")
        .ok_or_else(|| refuse("invalid_request", "refresh_token is missing"))?;
    let k = &shared.knobs;
    let mut db = shared.db();
    let rt = db
        .refresh
        .get(presented)
        .cloned()
        .ok_or_else(|| refuse("invalid_grant", "unknown or revoked refresh token"))?;
    let family = db
        .families
        .get(&rt.family)
        .cloned()
        .ok_or_else(|| refuse("invalid_grant", "unknown grant"))?;
    if family.client_id != caller.client.id {
        return Err(refuse(
            "invalid_grant",
            "refresh token was issued to another client",
        ));
    }
    if family.revoked {
        return Err(refuse("invalid_grant", "grant revoked"));
    }
    if rt.used && !k.no_reuse_detection {
        db.revoke_family(rt.family);
        drop(db);
        shared.stats().reuse_revocations += 1;
        return Err(refuse(
            "invalid_grant",
            "refresh token reused: the whole grant is revoked",
        ));
    }
    let resource = p.get("resource").map(String::as_str);
    check_resource(shared, resource).map_err(|e| refuse("invalid_target", e))?;
    if let (Some(asked), Some(granted)) = (resource, family.resource.as_deref())
        && asked != granted
    {
        return Err(refuse("invalid_target", "resource differs from the grant"));
    }
    let asked = quirks::refresh_scope(shared, &family.scope, p.get("scope").map(String::as_str))?;
    let (scope, shown) = match asked {
        None => (family.scope.clone(), None),
        Some(asked) => {
            if let Some(extra) = asked.scope.iter().find(|s| !family.scope.contains(s)) {
                return Err(refuse(
                    "invalid_scope",
                    format!("scope {extra} was not granted"),
                ));
            }
            (asked.scope, asked.shown)
        }
    };
    let rotate = !k.no_rotation && !k.omit_refresh_token_on_refresh;
    if rotate && let Some(old) = db.refresh.get_mut(presented) {
        old.used = true;
    }
    let new = NewAccess {
        client_id: &caller.client.id,
        subject: &family.subject,
        scope: &scope,
        resource: family.resource.as_deref(),
        family: Some(rt.family),
        jkt,
    };
    let mut issued = issue(shared, &mut db, &new, rotate)?;
    if !rotate && !k.omit_refresh_token_on_refresh {
        issued.refresh_token = Some(presented.clone());
    }
    drop(db);
    if let Some(shown) = shown {
        issued.scope = shown;
    }
    shared.stats().refreshes += 1;
    Ok(issued)
}

fn client_credentials(
    shared: &Shared,
    caller: &Authenticated,
    p: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Issued, Refusal> {
    // A client that authenticated by any method but `none` is confidential.
    if caller.method == TokenAuthMethod::None {
        return Err(refuse(
            "unauthorized_client",
            "client_credentials needs a confidential client",
        ));
    }
    // What the token is for and carries, as an authorization request would decide
    // (with Auth0, `audience` on this request picks the resource).
    let grant = quirks::grant(shared, p)?;
    // No person: the client acts for itself.
    let subject = &caller.client.id;
    let new = NewAccess {
        client_id: &caller.client.id,
        subject,
        scope: &grant.scope,
        resource: grant.resource.as_deref(),
        family: None,
        jkt,
    };
    let token = shared.mint_access(&mut shared.db(), &new)?;
    shared.stats().client_credentials_grants += 1;
    Ok(Issued {
        access_token: token,
        subject: subject.clone(),
        refresh_token: None,
        scope: grant.quirks.scope_shown.unwrap_or(grant.scope),
    })
}

fn device_code(
    shared: &Shared,
    caller: &Authenticated,
    p: &HashMap<String, String>,
    jkt: Option<&str>,
) -> Result<Issued, Refusal> {
    let code = p
        .get("device_code")
        .ok_or_else(|| refuse("invalid_request", "device_code is missing"))?;
    let now = shared.now();
    let mut db = shared.db();
    let grant = db
        .devices
        .get_mut(code)
        .ok_or_else(|| refuse("invalid_grant", "unknown device code"))?;
    if grant.client_id != caller.client.id {
        return Err(refuse(
            "invalid_grant",
            "device code was issued to another client",
        ));
    }
    if grant.expires_at <= now {
        return Err(refuse("expired_token", "device code expired"));
    }
    if grant.denied {
        return Err(refuse("access_denied", "the user denied the request"));
    }
    if !grant.approved {
        grant.polls += 1;
        if grant.polls <= shared.knobs.device_pending_polls {
            return Err(refuse("authorization_pending", "waiting for the user"));
        }
        grant.approved = true;
    }
    let Some(grant) = db.devices.remove(code) else {
        // Found just above, under the same lock.
        return Err(refuse("invalid_grant", "unknown device code"));
    };
    let family = db.new_family(
        &caller.client.id,
        &grant.subject,
        &grant.scope,
        grant.resource.as_deref(),
    );
    let new = NewAccess {
        client_id: &caller.client.id,
        subject: &grant.subject,
        scope: &grant.scope,
        resource: grant.resource.as_deref(),
        family: Some(family),
        jkt,
    };
    let mut issued = issue(shared, &mut db, &new, grant.quirks.refresh_allowed)?;
    drop(db);
    if let Some(shown) = grant.quirks.scope_shown {
        issued.scope = shown;
    }
    shared.stats().device_grants += 1;
    Ok(issued)
}

/// Mint an access token for `new` (and a refresh token of its family when the knobs
/// allow and `with_refresh`), both bound to its DPoP key when there is one.
fn issue(
    shared: &Shared,
    db: &mut Db,
    new: &NewAccess<'_>,
    with_refresh: bool,
) -> Result<Issued, SigningError> {
    let k = &shared.knobs;
    db.sweep(shared.now());
    let access_token = shared.mint_access(db, new)?;
    let may_refresh = db
        .clients
        .get(new.client_id)
        .is_none_or(|c| c.may_use("refresh_token"));
    let wants_refresh = with_refresh
        && may_refresh
        && !k.no_refresh_token
        && (!k.refresh_requires_offline_access || new.scope.iter().any(|s| s == "offline_access"));
    let refresh_token = match new.family {
        Some(f) if wants_refresh => Some(db.mint_refresh(f, new.jkt)),
        _ => None,
    };
    Ok(Issued {
        access_token,
        subject: new.subject.to_owned(),
        refresh_token,
        scope: new.scope.to_vec(),
    })
}
