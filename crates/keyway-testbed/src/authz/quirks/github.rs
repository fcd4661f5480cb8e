//! GitHub's token endpoint (`--idp-quirks github`): every error is answered with
//! HTTP 200 and GitHub's own codes, and every answer is form-encoded unless the
//! request's `Accept` names `application/json`. The standard answer is built first,
//! then reshaped here; successful JSON answers pass unchanged.

use axum::{
    body::{Body, to_bytes},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

/// Where GitHub's token errors are explained; each code has its anchor.
const TROUBLESHOOTING: &str = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/";
/// Where GitHub explains refresh token errors.
const REFRESHING: &str = "https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app/refreshing-user-access-tokens";

/// The largest answer reshaped (token answers are a few hundred bytes).
const MAX_ANSWER: usize = 1 << 20;

/// GitHub's version of the standard error `code` for a `grant_type` request:
/// (error, error_description or `None` to keep the standard one, error_uri).
pub(crate) fn github_error(grant_type: &str, code: &str) -> (String, Option<&'static str>, String) {
    match (grant_type, code) {
        (_, "invalid_client") => (
            "incorrect_client_credentials".into(),
            Some("The client_id and/or client_secret passed are incorrect."),
            format!("{TROUBLESHOOTING}#incorrect-client-credentials"),
        ),
        ("authorization_code", "invalid_grant") => (
            "bad_verification_code".into(),
            Some("The code passed is incorrect or expired."),
            format!("{TROUBLESHOOTING}#bad-verification-code"),
        ),
        ("refresh_token", "invalid_grant") => (
            "bad_refresh_token".into(),
            Some("The refresh token passed is incorrect or expired."),
            REFRESHING.into(),
        ),
        (_, other) => (other.to_owned(), None, TROUBLESHOOTING.into()),
    }
}

/// Whether the request asked for JSON (GitHub answers form-encoded otherwise).
pub(crate) fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("application/json"))
}

/// The token endpoint's standard answer `resp` to a `grant_type` request, as GitHub
/// gives it.
pub(crate) async fn reshape(resp: Response, grant_type: &str, json: bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = match to_bytes(body, MAX_ANSWER).await {
        Ok(b) => b,
        Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    };
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&bytes) else {
        // Not a token answer (an injected fault, say): as it is.
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(code) = obj.get("error").and_then(Value::as_str) {
        let (error, description, uri) = github_error(grant_type, code);
        obj.insert("error".into(), Value::String(error));
        if let Some(d) = description {
            obj.insert("error_description".into(), Value::String(d.into()));
        }
        obj.insert("error_uri".into(), Value::String(uri));
        parts.status = StatusCode::OK;
        parts.headers.remove(header::WWW_AUTHENTICATE);
    } else if json {
        return Response::from_parts(parts, Body::from(bytes));
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    let (content_type, body) = if json {
        ("application/json", Value::Object(obj).to_string())
    } else {
        (
            "application/x-www-form-urlencoded; charset=utf-8",
            form(&obj),
        )
    };
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Response::from_parts(parts, Body::from(body))
}

/// A JSON answer as GitHub's form encoding: fields in name order, `token_type` in
/// lower case (`token_type=bearer`).
fn form(obj: &Map<String, Value>) -> String {
    let mut names: Vec<&String> = obj.keys().collect();
    names.sort();
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for name in names {
        let value = match &obj[name] {
            Value::String(s) if name == "token_type" => s.to_ascii_lowercase(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        out.append_pair(name, &value);
    }
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_errors_become_githubs() {
        let (e, d, uri) = github_error("authorization_code", "invalid_grant");
        assert_eq!(e, "bad_verification_code");
        assert_eq!(d, Some("The code passed is incorrect or expired."));
        assert!(uri.ends_with("#bad-verification-code"));
        assert_eq!(
            github_error("refresh_token", "invalid_grant").0,
            "bad_refresh_token"
        );
        assert_eq!(
            github_error("refresh_token", "invalid_client").0,
            "incorrect_client_credentials"
        );
        let (e, d, _) = github_error("urn:x", "unsupported_grant_type");
        assert_eq!((e.as_str(), d), ("unsupported_grant_type", None));
    }

    #[test]
    fn form_answers_sort_fields_and_lower_the_token_type() {
        let obj = serde_json::json!({
            "token_type": "Bearer", "access_token": "a b", "expires_in": 3600, "scope": "x y",
        });
        let Value::Object(obj) = obj else {
            unreachable!("a JSON object literal")
        };
        assert_eq!(
            form(&obj),
            "access_token=a+b&expires_in=3600&scope=x+y&token_type=bearer"
        );
        let mut h = HeaderMap::new();
        assert!(!wants_json(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_json(&h));
        h.append(header::ACCEPT, HeaderValue::from_static("Application/JSON"));
        assert!(wants_json(&h));
    }
}
