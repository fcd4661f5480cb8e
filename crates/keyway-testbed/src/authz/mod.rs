//! The authorization server: metadata (RFC 8414 / OpenID Discovery), authorization
//! (with PKCE and RFC 9207 `iss`), token (authorization_code, refresh_token,
//! client_credentials, device_code), registration (RFC 7591) and its management
//! (RFC 7592), revocation (RFC 7009), introspection (RFC 7662) and device
//! authorization (RFC 8628); clients authenticate with a secret or a private_key_jwt
//! assertion (RFC 7523).

mod assertion;
mod authorize;
mod client_auth;
mod device;
mod manage;
mod quirks;
mod register;
mod token;
mod tokens_admin;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

pub(crate) use assertion::assertion_key;

use crate::{
    knobs::{Endpoint, MetadataDoc, TokenAuthMethod},
    shared::{Shared, Urls},
};

/// The AS routes, at their full paths on the AS origin, and which endpoint each is.
pub(crate) fn routes(shared: &Arc<Shared>) -> (Router<Arc<Shared>>, Vec<(String, Endpoint)>) {
    let k = &shared.knobs;
    let u = &shared.urls;
    let mut table = Vec::new();
    let mut router = Router::new();

    for doc in k.metadata_docs() {
        // Without an issuer path the two OpenID locations are one URL.
        let path = u
            .metadata_path(*doc)
            .filter(|p| !table.iter().any(|(t, _)| t == p));
        if let Some(path) = path {
            let oidc = *doc != MetadataDoc::Oauth;
            router = router.route(
                &path,
                get(move |state: State<Arc<Shared>>| async move { Json(metadata(&state, oidc)) }),
            );
            table.push((path, Endpoint::AsMetadata));
        }
    }

    let mut add = |name: &str, endpoint: Endpoint, method_router| {
        let path = u.endpoint_path(name);
        router = std::mem::take(&mut router).route(&path, method_router);
        table.push((path, endpoint));
    };
    add("authorize", Endpoint::Authorize, get(authorize::authorize));
    add("token", Endpoint::Token, post(token::token));
    add("jwks", Endpoint::Jwks, get(jwks));
    if !k.no_dcr {
        add("register", Endpoint::Register, post(register::register));
    }
    if !k.no_revocation {
        add("revoke", Endpoint::Revoke, post(tokens_admin::revoke));
    }
    if !k.no_introspection {
        add(
            "introspect",
            Endpoint::Introspect,
            post(tokens_admin::introspect),
        );
    }
    if !k.no_device {
        add(
            "device_authorization",
            Endpoint::DeviceAuthorization,
            post(device::device_authorization),
        );
        add("device", Endpoint::DeviceVerify, get(device::verify));
    }
    if !k.no_dcr && !k.no_registration_management {
        // RFC 7592's client configuration endpoint, one per registration; not a named
        // endpoint (faults and counters see it as `other`, by path).
        router = router.route(
            &manage::route_path(u),
            get(manage::read).delete(manage::delete),
        );
    }
    (router, table)
}

/// The AS metadata document, as the knobs shape it.
pub(crate) fn metadata(shared: &Shared, oidc: bool) -> Value {
    let k = &shared.knobs;
    let u: &Urls = &shared.urls;
    let mut grants = vec!["authorization_code", "refresh_token"];
    if !k.no_client_credentials {
        grants.push("client_credentials");
    }
    if !k.no_device {
        grants.push(crate::db::DEVICE_CODE_GRANT);
    }
    let mut obj = serde_json::Map::new();
    let mut put = |k: &str, v: Value| obj.insert(k.to_owned(), v);
    put("issuer", json!(shared.advertised_issuer()));
    put(
        "authorization_endpoint",
        json!(
            k.authorization_endpoint_override
                .clone()
                .unwrap_or_else(|| u.endpoint_url("authorize"))
        ),
    );
    put("token_endpoint", json!(u.endpoint_url("token")));
    put("response_types_supported", json!(["code"]));
    put("response_modes_supported", json!(["query"]));
    put("grant_types_supported", json!(grants));
    let auth_methods = k.advertised_auth_methods();
    put(
        "token_endpoint_auth_methods_supported",
        json!(auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>()),
    );
    if auth_methods.contains(&TokenAuthMethod::PrivateKeyJwt) {
        // RFC 8414 §2: present whenever private_key_jwt is listed.
        put(
            "token_endpoint_auth_signing_alg_values_supported",
            json!(assertion::SIGNING_ALGS),
        );
    }
    if let Some(methods) = k.pkce.listed() {
        obj.insert("code_challenge_methods_supported".into(), json!(methods));
    }
    if !k.as_scopes.is_empty() {
        let hide_offline = quirks::hides_offline_access(k.idp_quirks);
        let listed: Vec<&String> = k
            .as_scopes
            .0
            .iter()
            .filter(|s| !(hide_offline && *s == "offline_access"))
            .collect();
        obj.insert("scopes_supported".into(), json!(listed));
    }
    if !k.no_dcr {
        obj.insert(
            "registration_endpoint".into(),
            json!(u.endpoint_url("register")),
        );
    }
    if !k.no_revocation {
        obj.insert(
            "revocation_endpoint".into(),
            json!(u.endpoint_url("revoke")),
        );
    }
    if !k.no_introspection {
        obj.insert(
            "introspection_endpoint".into(),
            json!(u.endpoint_url("introspect")),
        );
    }
    if !k.no_device {
        obj.insert(
            "device_authorization_endpoint".into(),
            json!(u.endpoint_url("device_authorization")),
        );
    }
    for (field, value) in &k.metadata_overrides {
        obj.insert(field.clone(), json!(value));
    }
    if !k.no_iss_advertised {
        obj.insert(
            "authorization_response_iss_parameter_supported".into(),
            json!(true),
        );
    }
    if k.cimd {
        obj.insert("client_id_metadata_document_supported".into(), json!(true));
    }
    if k.dpop_at_as() {
        obj.insert(
            "dpop_signing_alg_values_supported".into(),
            json!([crate::dpop::ALG]),
        );
    }
    if oidc || k.jwt_access_tokens {
        // RFC 8414 §2: where the keys that sign (here, JWT access tokens) are.
        obj.insert("jwks_uri".into(), json!(u.endpoint_url("jwks")));
    }
    if oidc {
        obj.insert("subject_types_supported".into(), json!(["public"]));
        obj.insert(
            "id_token_signing_alg_values_supported".into(),
            json!(["RS256"]),
        );
    }
    Value::Object(obj)
}

/// The JWK Set (RFC 7517 §5): the keys that sign JWT access tokens with
/// `--jwt-access-tokens`, none without.
async fn jwks(State(shared): State<Arc<Shared>>) -> Json<Value> {
    if shared.knobs.jwt_access_tokens {
        Json(shared.signing.jwks())
    } else {
        Json(json!({"keys": []}))
    }
}

/// Form or query parameters, refusing a parameter given twice (RFC 6749 §3.1, §3.2).
pub(crate) fn single_params(raw: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k} is repeated"));
        }
    }
    Ok(out)
}

/// An OAuth error answer from the token-style endpoints (RFC 6749 §5.2).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut resp = (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    no_store(&mut resp);
    resp
}

pub(crate) fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// The scopes a request names, refused when the AS lists scopes and one is not listed
/// (the OpenID Connect scopes are always taken by the providers `--idp-quirks`
/// imitates, GitHub's aside).
pub(crate) fn requested_scopes(
    shared: &Shared,
    scope: Option<&str>,
) -> Result<Vec<String>, String> {
    let scopes: Vec<String> = scope
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let known = &shared.knobs.as_scopes;
    let oidc = quirks::takes_oidc_scopes(shared.knobs.idp_quirks);
    let accepted =
        |s: &String| known.0.contains(s) || oidc && quirks::OIDC_SCOPES.contains(&s.as_str());
    if !known.is_empty()
        && let Some(bad) = scopes.iter().find(|s| !accepted(s))
    {
        return Err(format!("scope {bad} is not supported"));
    }
    Ok(scopes)
}

/// A `resource` parameter must be an absolute URI without a fragment (RFC 8707 §2).
pub(crate) fn check_resource(shared: &Shared, resource: Option<&str>) -> Result<(), String> {
    match resource {
        None if shared.knobs.require_resource => Err("resource is required".into()),
        None => Ok(()),
        Some(r) => match url::Url::parse(r) {
            Ok(u) if u.fragment().is_none() => Ok(()),
            _ => Err(format!(
                "resource {r:?} is not an absolute URI without a fragment"
            )),
        },
    }
}
