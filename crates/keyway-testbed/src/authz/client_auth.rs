//! Who is calling the token-style endpoints (RFC 6749 §2.3): a public client naming
//! itself, client_secret_basic, client_secret_post, or private_key_jwt (RFC 7523); and
//! client lookup, including client ID metadata document clients.

use std::collections::HashMap;

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::Response,
};
use base64::{Engine, engine::general_purpose::STANDARD};

use super::{
    assertion::{self, AssertionError},
    oauth_error,
};
use crate::{
    db::{Client, Db},
    knobs::TokenAuthMethod,
    shared::Shared,
};

/// A client that proved who it is.
#[derive(Debug)]
pub(crate) struct Authenticated {
    pub client: Client,
    pub method: TokenAuthMethod,
}

/// Find a client by id: registered ones, or (with `--cimd`) an https URL id, taken as
/// a public client that may redirect to any loopback port. The testbed does not fetch
/// the document: tests run offline, and the conformance suite does not either.
pub(crate) fn find_client(shared: &Shared, db: &Db, id: &str) -> Option<Client> {
    if let Some(c) = db.clients.get(id) {
        return Some(c.clone());
    }
    let is_cimd_id = shared.knobs.cimd
        && url::Url::parse(id)
            .map(|u| u.scheme() == "https" && u.path() != "/" && u.fragment().is_none())
            .unwrap_or(false);
    is_cimd_id.then(|| Client {
        id: id.to_owned(),
        secret: None,
        auth: TokenAuthMethod::None,
        redirect_uris: vec![
            "http://127.0.0.1/callback".into(),
            "http://[::1]/callback".into(),
        ],
        grant_types: vec!["authorization_code".into(), "refresh_token".into()],
        assertion_key: None,
        registration: None,
    })
}

/// Authenticate the caller of a token-style endpoint. The error is the answer to send.
pub(crate) fn authenticate(
    shared: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Authenticated, Response> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("basic")
                .then(|| rest.trim().to_owned())
        });
    if params.contains_key("client_assertion") || params.contains_key("client_assertion_type") {
        if basic.is_some() || params.contains_key("client_secret") {
            return Err(invalid_request(
                "more than one client authentication method",
            ));
        }
        return by_assertion(shared, params).map_err(|e| invalid_client(&e.to_string(), false));
    }
    let (id, secret, method) = if let Some(b64) = basic {
        if params.contains_key("client_secret") {
            return Err(invalid_request(
                "more than one client authentication method",
            ));
        }
        let decoded = STANDARD
            .decode(b64.as_bytes())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid_client("malformed Basic credentials", true))?;
        let (id, secret) = decoded
            .split_once(':')
            .ok_or_else(|| invalid_client("malformed Basic credentials", true))?;
        let id = form_decode(id);
        if params
            .get("client_id")
            .is_some_and(|body_id| *body_id != id)
        {
            return Err(invalid_request(
                "client_id differs from the Basic credentials",
            ));
        }
        (
            id,
            Some(form_decode(secret)),
            TokenAuthMethod::ClientSecretBasic,
        )
    } else if let Some(secret) = params.get("client_secret") {
        let id = params
            .get("client_id")
            .ok_or_else(|| invalid_client("client_secret without client_id", false))?;
        (
            id.clone(),
            Some(secret.clone()),
            TokenAuthMethod::ClientSecretPost,
        )
    } else if let Some(id) = params.get("client_id") {
        (id.clone(), None, TokenAuthMethod::None)
    } else {
        return Err(invalid_client("no client authentication", false));
    };

    let client = find_client(shared, &shared.db(), &id).ok_or_else(|| {
        invalid_client(
            "unknown client",
            method == TokenAuthMethod::ClientSecretBasic,
        )
    })?;
    if client.auth != method {
        return Err(invalid_client(
            &format!(
                "client is registered for {}, not {}",
                client.auth.as_str(),
                method.as_str()
            ),
            method == TokenAuthMethod::ClientSecretBasic,
        ));
    }
    if client.secret.is_some() && client.secret != secret {
        return Err(invalid_client(
            "wrong client secret",
            method == TokenAuthMethod::ClientSecretBasic,
        ));
    }
    Ok(Authenticated { client, method })
}

/// private_key_jwt: the client named by the assertion (and by `client_id`, when sent),
/// its signature checked with the client's key, its claims, and its `jti` taken.
fn by_assertion(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Result<Authenticated, AssertionError> {
    if params.get("client_assertion_type").map(String::as_str) != Some(assertion::JWT_BEARER) {
        return Err(AssertionError::Type);
    }
    let jwt = params
        .get("client_assertion")
        .ok_or(AssertionError::Missing)?;
    let id = assertion::claimed_issuer(jwt)?;
    if params
        .get("client_id")
        .is_some_and(|body_id| *body_id != id)
    {
        return Err(AssertionError::ClientIdMismatch);
    }
    let now = shared.now();
    let mut db = shared.db();
    // An unknown client is refused as one whose key does not match: nothing tells
    // which client ids exist.
    let client = find_client(shared, &db, &id)
        .ok_or_else(|| AssertionError::Signature("no key of this client checks it".into()))?;
    if client.auth != TokenAuthMethod::PrivateKeyJwt {
        return Err(AssertionError::NotJwtClient(client.auth.as_str()));
    }
    let key = client
        .assertion_key
        .as_ref()
        .ok_or_else(|| AssertionError::Signature("the client has no key".into()))?;
    let token_endpoint = shared.urls.endpoint_url("token");
    let audiences = [shared.urls.issuer.as_str(), token_endpoint.as_str()];
    let verified = assertion::verify(jwt, key, &id, &audiences, now)?;
    if !db.assertion_jtis.take(
        &client.id,
        &verified.jti,
        verified.exp,
        assertion::unix_secs(now),
    ) {
        return Err(AssertionError::Replayed);
    }
    drop(db);
    Ok(Authenticated {
        client,
        method: TokenAuthMethod::PrivateKeyJwt,
    })
}

fn form_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn invalid_client(why: &str, basic: bool) -> Response {
    let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    if basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"keyway-testbed\""),
        );
    }
    resp
}

fn invalid_request(why: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", why)
}
