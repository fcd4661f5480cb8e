//! The device authorization grant (RFC 8628): show a code and a URL, poll until the
//! person approves on another device.

use std::time::{Duration, SystemTime};

use reqwest::header;
use serde_json::Value;

use super::{
    AuthError, Reporter,
    callback::printable,
    client::OAuthClient,
    fetch::{describe, read_capped, snippet},
    token::{self, TokenError, TokenResponse},
};

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// What the device authorization endpoint handed out.
#[derive(Debug)]
pub struct DeviceStart {
    pub device_code: oauth2::DeviceCode,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    http: &reqwest::Client,
    endpoint: &str,
    token_endpoint: &str,
    issuer: &str,
    client: &OAuthClient,
    scopes: &[String],
    resource: &str,
    reporter: &dyn Reporter,
    extras: token::Extras<'_>,
) -> Result<TokenResponse, AuthError> {
    let send_resource = extras.quirks.is_none_or(|q| q.send_resource);
    let start = start(
        http,
        endpoint,
        issuer,
        client,
        scopes,
        send_resource.then_some(resource),
    )
    .await?;
    reporter.device_code(
        &start.verification_uri,
        start.verification_uri_complete.as_deref(),
        &start.user_code,
    );
    let deadline = tokio::time::Instant::now() + start.expires_in;
    let mut interval = start.interval;
    loop {
        let form = vec![
            ("grant_type", DEVICE_GRANT.to_owned()),
            ("device_code", start.device_code.secret().clone()),
            ("resource", resource.to_owned()),
        ];
        match token::request(
            http,
            token_endpoint,
            issuer,
            client,
            form,
            SystemTime::now(),
            extras,
        )
        .await
        {
            Ok(t) => return Ok(t),
            Err(TokenError::OAuth { error, .. }) if error == "authorization_pending" => {}
            Err(TokenError::OAuth { error, .. }) if error == "slow_down" => {
                interval += Duration::from_secs(5)
            }
            Err(TokenError::OAuth { error, .. }) if error == "access_denied" => {
                return Err(AuthError::Declined);
            }
            Err(TokenError::OAuth { error, .. }) if error == "expired_token" => {
                return Err(AuthError::Timeout {
                    waited: start.expires_in,
                    what: "the device code",
                });
            }
            Err(e) => return Err(AuthError::Token(e)),
        }
        if tokio::time::Instant::now() + interval > deadline {
            return Err(AuthError::Timeout {
                waited: start.expires_in,
                what: "the device code",
            });
        }
        tokio::time::sleep(interval).await;
    }
}

async fn start(
    http: &reqwest::Client,
    endpoint: &str,
    issuer: &str,
    client: &OAuthClient,
    scopes: &[String],
    resource: Option<&str>,
) -> Result<DeviceStart, AuthError> {
    let mut form: Vec<(&'static str, String)> = resource
        .map(|r| ("resource", r.to_owned()))
        .into_iter()
        .collect();
    if !scopes.is_empty() {
        form.push(("scope", scopes.join(" ")));
    }
    let req = http
        .post(endpoint)
        .header(header::ACCEPT, "application/json")
        .timeout(token::TOKEN_TIMEOUT);
    let req = client
        .authenticate(req, &mut form, issuer, SystemTime::now())
        .map_err(|e| AuthError::Config(e.to_string()))?;
    let failed = |detail: String| AuthError::Device { detail };
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    let status = resp.status().as_u16();
    let body = read_capped(resp, 64 * 1024).await.map_err(failed)?;
    read_start(status, &body)
}

/// Read a device authorization endpoint's answer (RFC 8628 §3.2). Pure; a
/// successful answer's text (it holds the device code) is never shown.
pub(crate) fn read_start(status: u16, body: &[u8]) -> Result<DeviceStart, AuthError> {
    let failed = |detail: String| AuthError::Device { detail };
    let json: Value = match crate::json::parse(body) {
        Ok(json) => json,
        Err(_) if !(200..300).contains(&status) => {
            return Err(failed(format!("HTTP {status}: {}", snippet(body))));
        }
        Err(e) => {
            return Err(failed(format!(
                "HTTP {status}: the answer is not valid JSON: {e}"
            )));
        }
    };
    if !(200..300).contains(&status) {
        let e = json.get("error").and_then(Value::as_str).unwrap_or("error");
        return Err(failed(format!("HTTP {status}: {}", printable(e))));
    }
    let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
    let secs = |k: &str| match json.get(k) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let verification_uri = text("verification_uri")
        .or_else(|| text("verification_url"))
        .ok_or_else(|| failed("no verification_uri".into()))?;
    Ok(DeviceStart {
        device_code: oauth2::DeviceCode::new(
            text("device_code").ok_or_else(|| failed("no device_code".into()))?,
        ),
        user_code: printable(&text("user_code").ok_or_else(|| failed("no user_code".into()))?),
        verification_uri: printable(&verification_uri),
        verification_uri_complete: text("verification_uri_complete").map(|s| printable(&s)),
        expires_in: Duration::from_secs(secs("expires_in").unwrap_or(600).min(3600)),
        // RFC 8628 §3.2: 5 seconds when absent.
        // Between 1 and 60 s: an interval of 0 would poll without a pause.
        interval: Duration::from_secs(secs("interval").unwrap_or(5).clamp(1, 60)),
    })
}
