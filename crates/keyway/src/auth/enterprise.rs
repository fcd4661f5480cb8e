//! Enterprise-managed authorization (MCP extension `enterprise-managed-authorization`,
//! SEP-990): exchange the person's ID token at their identity provider for an
//! Identity Assertion JWT Authorization Grant (ID-JAG, RFC 8693 token exchange), then
//! present it to the MCP authorization server (RFC 7523 jwt-bearer). No browser.
//! The ID token and the ID-JAG are secrets: never logged, never in a URL.

use std::time::SystemTime;

use reqwest::header;
use serde_json::Value;

use super::{
    AuthError,
    callback::printable,
    client::OAuthClient,
    fetch::{describe, read_capped, snippet},
    token::{self, TokenResponse},
};
use crate::Secret;

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
const ID_JAG_TYPE: &str = "urn:ietf:params:oauth:token-type:id-jag";
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The person's identity provider and their ID token.
#[derive(Clone, Debug)]
pub struct IdentityProvider {
    /// The identity provider's token endpoint, where the RFC 8693 exchange is posted:
    /// https, or http on this machine (or anywhere with `allow_http`).
    pub token_endpoint: String,
    /// keyway's client at the identity provider.
    pub client: OAuthClient,
    /// The person's ID token, the exchange's `subject_token`.
    pub id_token: Secret,
}

/// Token exchange at the IdP, then the jwt-bearer grant at the MCP authorization server.
/// The IdP is the user's choice, reached with keyway's ordinary client (it may well be
/// on the user's network); the authorization server with `http`, the flow's guarded one.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    http: &reqwest::Client,
    idp: &IdentityProvider,
    as_issuer: &str,
    as_token_endpoint: &str,
    as_client: &OAuthClient,
    resource: &str,
    scopes: &[String],
    extras: token::Extras<'_>,
) -> Result<TokenResponse, AuthError> {
    let ordinary = crate::http::client().map_err(|e| AuthError::IdentityProvider {
        detail: format!("building the HTTP client: {e}"),
    })?;
    let id_jag = exchange(&ordinary, idp, as_issuer, resource, scopes).await?;
    let mut form = vec![
        ("grant_type", JWT_BEARER.to_owned()),
        ("assertion", id_jag.expose().to_owned()),
        ("resource", resource.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    Ok(token::request(
        http,
        as_token_endpoint,
        as_issuer,
        as_client,
        form,
        SystemTime::now(),
        extras,
    )
    .await?)
}

/// RFC 8693 token exchange: ID token in, ID-JAG out (audience: the MCP AS issuer).
async fn exchange(
    http: &reqwest::Client,
    idp: &IdentityProvider,
    audience: &str,
    resource: &str,
    scopes: &[String],
) -> Result<Secret, AuthError> {
    let mut form = vec![
        ("grant_type", TOKEN_EXCHANGE.to_owned()),
        ("requested_token_type", ID_JAG_TYPE.to_owned()),
        ("audience", audience.to_owned()),
        ("resource", resource.to_owned()),
        ("subject_token", idp.id_token.expose().to_owned()),
        ("subject_token_type", ID_TOKEN_TYPE.to_owned()),
    ];
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let failed = |detail: String| AuthError::IdentityProvider { detail };
    let req = http
        .post(&idp.token_endpoint)
        .header(header::ACCEPT, "application/json")
        .timeout(token::TOKEN_TIMEOUT);
    let req = idp
        .client
        .authenticate(req, &mut form, &idp.token_endpoint, SystemTime::now())
        .map_err(|e| AuthError::Config(e.to_string()))?;
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    let status = resp.status().as_u16();
    let body = read_capped(resp, 64 * 1024).await.map_err(failed)?;
    let json: Option<Value> = crate::json::parse(&body).ok();
    if !(200..300).contains(&status) {
        let e = json
            .as_ref()
            .and_then(|j| j.get("error"))
            .and_then(Value::as_str)
            .map(printable);
        return Err(failed(format!(
            "HTTP {status}: {}",
            e.unwrap_or_else(|| snippet(&body))
        )));
    }
    let json = json.ok_or_else(|| failed("the answer is not JSON".into()))?;
    if json.get("issued_token_type").and_then(Value::as_str) != Some(ID_JAG_TYPE) {
        return Err(failed(
            "the identity provider did not issue an ID-JAG".into(),
        ));
    }
    json.get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .map(|t| Secret::new(t.to_owned()))
        .ok_or_else(|| failed("the answer has no access_token".into()))
}
