//! `POST /register`: dynamic client registration (RFC 7591), with the management
//! fields of RFC 7592 unless `--no-registration-management`.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use jsonwebtoken::{AlgorithmFamily, DecodingKey, jwk::Jwk};
use serde_json::{Value, json};

use super::{manage, no_store, oauth_error};
use crate::{
    db::{Client, Registration, random_token},
    knobs::TokenAuthMethod,
    shared::Shared,
};

pub(crate) async fn register(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let meta: Value = match serde_json::from_str(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => return invalid_metadata("the body must be a JSON object"),
    };
    let redirect_uris: Vec<String> = match meta.get("redirect_uris").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => {
            let strings: Option<Vec<String>> =
                list.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            match strings {
                Some(s) => s,
                None => return invalid_redirect("redirect_uris must be strings"),
            }
        }
        _ => return invalid_redirect("redirect_uris is required"),
    };
    for uri in &redirect_uris {
        if let Err(why) = acceptable_redirect(uri) {
            return invalid_redirect(&why);
        }
    }

    let supported = shared.knobs.advertised_auth_methods();
    let requested = meta
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
        .unwrap_or("client_secret_basic");
    // private_key_jwt needs the client's key: a `jwks` (RFC 7591 §2) holding one the
    // testbed can use. The testbed works offline, so a `jwks_uri` is not fetched.
    let assertion_key = jwks_key(&meta);
    // The AS may replace what the client asked for (RFC 7591 §3.2.1); the client must
    // use what comes back.
    let usable = |m: &TokenAuthMethod| {
        supported.contains(m) && (*m != TokenAuthMethod::PrivateKeyJwt || assertion_key.is_some())
    };
    let auth = TokenAuthMethod::parse(requested)
        .filter(usable)
        .or_else(|| supported.iter().copied().find(usable))
        .unwrap_or(TokenAuthMethod::None);
    let with_secret = matches!(
        auth,
        TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost
    );
    let grant_types: Vec<String> = meta
        .get("grant_types")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|| vec!["authorization_code".into()]);

    let mut client = Client {
        id: random_token("tbc_"),
        secret: with_secret.then(|| random_token("tbs_")),
        auth,
        redirect_uris: redirect_uris.clone(),
        grant_types: grant_types.clone(),
        assertion_key: assertion_key.filter(|_| auth == TokenAuthMethod::PrivateKeyJwt),
        registration: None,
    };
    let issued_at = shared
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);

    let mut answer = meta.clone();
    answer["client_id"] = json!(client.id);
    answer["client_id_issued_at"] = json!(issued_at);
    answer["redirect_uris"] = json!(redirect_uris);
    answer["grant_types"] = json!(grant_types);
    answer["token_endpoint_auth_method"] = json!(auth.as_str());
    if answer.get("response_types").is_none() {
        answer["response_types"] = json!(["code"]);
    }
    if let Some(secret) = &client.secret {
        answer["client_secret"] = json!(secret);
        answer["client_secret_expires_at"] = json!(0);
    }
    if !shared.knobs.no_registration_management {
        let access_token = random_token("tb_rat_");
        answer["registration_client_uri"] = json!(manage::client_uri(&shared.urls, &client.id));
        answer["registration_access_token"] = json!(access_token);
        client.registration = Some(Registration {
            access_token,
            answer: answer.clone(),
        });
    }
    {
        let mut db = shared.db();
        if let Some(secret) = &client.secret {
            db.secrets.push(secret.clone());
        }
        if let Some(reg) = &client.registration {
            db.secrets.push(reg.access_token.clone());
        }
        db.clients.insert(client.id.clone(), client);
    }
    shared.stats().registrations += 1;
    shared.stats().last_registration = Some(meta.clone());
    let mut resp = (StatusCode::CREATED, Json(answer)).into_response();
    no_store(&mut resp);
    resp
}

/// The first key of the registration's `jwks` that can check assertions.
fn jwks_key(meta: &Value) -> Option<DecodingKey> {
    meta.get("jwks")?
        .get("keys")?
        .as_array()?
        .iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter_map(|jwk| DecodingKey::from_jwk(&jwk).ok())
        // A symmetric key in a published key set would be no proof of anything.
        .find(|key| key.family() != AlgorithmFamily::Hmac)
}

/// Redirect URIs must be absolute, fragment-free, and https unless loopback (OAuth 2.1
/// §2.3.1; RFC 8252 §7 allows private-use schemes for native apps).
fn acceptable_redirect(uri: &str) -> Result<(), String> {
    let u = url::Url::parse(uri).map_err(|_| format!("{uri:?} is not an absolute URI"))?;
    if u.fragment().is_some() {
        return Err(format!("{uri:?} has a fragment"));
    }
    match u.scheme() {
        "https" => Ok(()),
        "http" if matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => Ok(()),
        "http" => Err(format!("{uri:?}: http is allowed only for loopback hosts")),
        "javascript" | "data" | "file" | "vbscript" => Err(format!("{uri:?}: scheme not allowed")),
        _ => Ok(()),
    }
}

fn invalid_redirect(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_redirect_uri", why)
}

fn invalid_metadata(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_client_metadata", why)
}
