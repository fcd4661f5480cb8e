//! Token endpoint requests (RFC 6749 §3.2, §4.1.3, §6; RFC 8628 §3.4; client
//! credentials) and their answers. `resource` rides on every request (RFC 8707).

use std::time::{Duration, SystemTime};

use oauth2::{AccessToken, RefreshToken};
use reqwest::header;
use serde_json::Value;

use super::{
    callback::printable,
    client::OAuthClient,
    dpop::DpopKey,
    fetch::{describe, read_capped, snippet},
    profile::Quirks,
};

/// Largest token response keyway reads.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Time for one token request.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How an access token is presented (RFC 6749 §7.1 `token_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenType {
    /// `Authorization: Bearer` (RFC 6750).
    #[default]
    Bearer,
    /// Bound to a DPoP key: `Authorization: DPoP` with a proof (RFC 9449 §7.1); never
    /// sent as Bearer.
    Dpop,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug)]
pub(crate) struct TokenResponse {
    /// `token_type`: `DPoP` only when the request carried a proof.
    pub(crate) token_type: TokenType,
    /// `access_token`, never empty.
    pub(crate) access_token: AccessToken,
    /// `refresh_token`; an empty one counts as none.
    pub(crate) refresh_token: Option<RefreshToken>,
    /// `expires_in`; absent, negative or over ten years counts as unknown.
    pub(crate) expires_in: Option<Duration>,
    /// The granted scope, when the server says (else the requested one applies).
    pub(crate) scope: Option<Vec<String>>,
}

/// A token request that failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The server answered with an OAuth error (RFC 6749 §5.2).
    #[error("the token endpoint refused (HTTP {status}): {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth {
        /// The HTTP status.
        status: u16,
        /// `error` (`invalid_grant`, `invalid_client`, ...), made printable.
        error: String,
        /// `error_description`, made printable.
        description: Option<String>,
    },
    /// An answer keyway cannot use: not JSON, no `access_token`, a `token_type` other
    /// than Bearer, an error status without an OAuth error, or too large a body.
    #[error("the token endpoint answered HTTP {status} without a usable body: {detail}")]
    Malformed {
        /// The HTTP status.
        status: u16,
        /// What is wrong, with the start of the body where that helps.
        detail: String,
    },
    /// No answer: the request failed or timed out (or the HTTP client for it could
    /// not be built).
    #[error("the token endpoint could not be reached: {0}")]
    Transport(String),
    /// The client's authentication could not be prepared (signing a private_key_jwt
    /// assertion failed).
    #[error("{0}")]
    Client(String),
    /// DPoP failed at the token endpoint: a nonce it keeps asking for, or a proof
    /// it will not take.
    #[error("DPoP at the token endpoint failed: {0}")]
    Dpop(String),
    /// The endpoint is refused by the URL rules; nothing was sent.
    #[error("refusing the {what}: {refusal}")]
    Refused {
        /// Which endpoint (`token_endpoint`, `revocation_endpoint`).
        what: &'static str,
        /// Why.
        #[source]
        refusal: super::urls::UrlRefusal,
    },
}

impl TokenError {
    /// The OAuth `error` code, for [`TokenError::OAuth`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::OAuth { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// What a token request adds to its grant: a DPoP key to prove, and the provider's
/// quirks (no `resource`, more parameters).
#[derive(Clone, Copy, Default)]
pub(crate) struct Extras<'a> {
    /// Each request carries a fresh proof of this key.
    pub(crate) dpop: Option<&'a DpopKey>,
    /// The flow's quirks ([`Quirks`]).
    pub(crate) quirks: Option<&'a Quirks>,
}

/// POST a grant to the token endpoint as `client`. `audience` is the issuer (the
/// `aud` of private_key_jwt assertions). With a DPoP key, each request carries a fresh
/// proof of it (RFC 9449 §5) with the endpoint's latest nonce; a `use_dpop_nonce`
/// answer that brings a new nonce is retried once with it (§8). The quirks leave
/// `resource` out or add parameters (never one the grant or the client's
/// authentication already has).
pub(crate) async fn request(
    http: &reqwest::Client,
    token_endpoint: &str,
    audience: &str,
    client: &OAuthClient,
    mut form: Vec<(&'static str, String)>,
    now: SystemTime,
    extras: Extras<'_>,
) -> Result<TokenResponse, TokenError> {
    let dpop = extras.dpop;
    if let Some(q) = extras.quirks
        && !q.send_resource
    {
        form.retain(|(k, _)| *k != "resource");
    }
    let more: &[(String, String)] = extras.quirks.map_or(&[], |q| &q.token_params);
    let endpoint_url = match dpop {
        Some(_) => Some(
            url::Url::parse(token_endpoint).map_err(|_| TokenError::Refused {
                what: "token_endpoint",
                refusal: super::urls::UrlRefusal::NotAUrl {
                    url: super::urls::redacted_str(token_endpoint),
                },
            })?,
        ),
        None => None,
    };
    let mut nonce_retried = false;
    // The nonce a use_dpop_nonce answer just gave: the retry uses it, whatever
    // another request may have put in the cache since.
    let mut given: Option<String> = None;
    loop {
        let mut form = form.clone();
        let mut req = http
            .post(token_endpoint)
            .header(header::ACCEPT, "application/json")
            .timeout(TOKEN_TIMEOUT);
        let mut used_nonce = None;
        if let (Some(key), Some(url)) = (dpop, &endpoint_url) {
            used_nonce = given.take().or_else(|| super::dpop::nonce(url));
            let proof = key
                .proof("POST", url, None, used_nonce.as_deref(), now)
                .map_err(|e| TokenError::Client(e.to_string()))?;
            let mut value = header::HeaderValue::from_str(proof.expose())
                .map_err(|_| TokenError::Client("a DPoP proof is not a header value".into()))?;
            value.set_sensitive(true);
            req = req.header(DPOP, value);
        }
        let req = client
            .authenticate(req, &mut form, audience, now)
            .map_err(|e| TokenError::Client(e.to_string()))?;
        // keyway's own parameters win: an extra one only adds a name the grant lacks.
        let all: Vec<(&str, &str)> = form
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(
                more.iter()
                    .filter(|(k, _)| !form.iter().any(|(f, _)| f == k))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
        let resp = req
            .form(&all)
            .send()
            .await
            .map_err(|e| transport_error("token_endpoint", token_endpoint, &e))?;
        let status = resp.status().as_u16();
        let fresh_nonce = match (&endpoint_url, resp.headers().get(DPOP_NONCE)) {
            (Some(url), Some(n))
                if super::dpop::remember_nonce(url, n.as_bytes())
                    && used_nonce.as_deref().map(str::as_bytes) != Some(n.as_bytes()) =>
            {
                given = n.to_str().ok().map(str::to_owned);
                true
            }
            _ => false,
        };
        let body = read_capped(resp, MAX_TOKEN_BYTES)
            .await
            .map_err(|detail| TokenError::Malformed { status, detail })?;
        match parse_response(status, &body, dpop.is_some()) {
            Err(e) if e.code() == Some("use_dpop_nonce") && fresh_nonce && !nonce_retried => {
                nonce_retried = true;
            }
            Err(e) if e.code() == Some("use_dpop_nonce") => {
                return Err(TokenError::Dpop(if nonce_retried {
                    "the token endpoint asked for a new DPoP nonce again after keyway used the one it gave".into()
                } else {
                    "the token endpoint asked for a DPoP nonce (use_dpop_nonce) without giving a usable one (DPoP-Nonce)".into()
                }));
            }
            other => return other,
        }
    }
}

/// The DPoP proof request header (RFC 9449 §4.1).
pub const DPOP: &str = "dpop";
/// The header a server gives its nonce in (RFC 9449 §8.1).
pub const DPOP_NONCE: &str = "dpop-nonce";

/// A request that failed: [`TokenError::Refused`] when the guarded resolver refused
/// the addresses of `endpoint`'s name (nothing was sent), else a transport error.
fn transport_error(what: &'static str, endpoint: &str, e: &reqwest::Error) -> TokenError {
    match crate::http::refused_addresses(e) {
        Some(r) => TokenError::Refused {
            what,
            refusal: super::urls::UrlRefusal::Addresses {
                url: super::urls::redacted_str(endpoint),
                detail: r.to_string(),
            },
        },
        None => TokenError::Transport(describe(e)),
    }
}

/// Revoke a token issued for `resource` (RFC 7009). The endpoint comes from the
/// authorization server's metadata, so it obeys the URL rules of that resource
/// (the rules [`refresh`](super::refresh) applies) before the token and the client's
/// authentication go anywhere. Unknown tokens are fine (200); an error answer is
/// returned for the caller to report.
pub async fn revoke(
    resource: &str,
    endpoint: &str,
    issuer: &str,
    client: &OAuthClient,
    token: &crate::Secret,
    hint: &'static str,
) -> Result<(), TokenError> {
    let refused = |refusal| TokenError::Refused {
        what: "revocation_endpoint",
        refusal,
    };
    let policy = super::tokens::policy_for_resource(resource)
        .await
        .map_err(|e| match e {
            super::RefreshError::Refused(r) => refused(r),
            other => TokenError::Client(other.to_string()),
        })?;
    let endpoint = policy.check(endpoint).map_err(refused)?;
    let http = crate::http::guarded(&policy).map_err(|e| TokenError::Transport(e.to_string()))?;
    let mut form = vec![
        ("token", token.expose().to_owned()),
        ("token_type_hint", hint.to_owned()),
    ];
    let req = http.post(endpoint.clone()).timeout(TOKEN_TIMEOUT);
    let req = client
        .authenticate(req, &mut form, issuer, SystemTime::now())
        .map_err(|e| TokenError::Client(e.to_string()))?;
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| transport_error("revocation_endpoint", endpoint.as_str(), &e))?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(());
    }
    let body = read_capped(resp, MAX_TOKEN_BYTES).await.unwrap_or_default();
    match parse_response(status, &body, false) {
        Err(e) => Err(e),
        Ok(_) => Err(TokenError::Malformed {
            status,
            detail: "unexpected answer".into(),
        }),
    }
}

/// Parse a token endpoint answer (`proved`: the request carried a DPoP proof, so a
/// `DPoP` token type is expected and allowed). Pure.
pub(crate) fn parse_response(
    status: u16,
    body: &[u8],
    proved: bool,
) -> Result<TokenResponse, TokenError> {
    let parsed = crate::json::parse(body);
    let json = parsed.as_ref().ok();
    if !(200..300).contains(&status) {
        return Err(
            match json.and_then(|j| j.get("error")).and_then(Value::as_str) {
                Some(error) => TokenError::OAuth {
                    status,
                    error: printable(error),
                    description: json
                        .and_then(|j| j.get("error_description"))
                        .and_then(Value::as_str)
                        .map(printable),
                },
                None => TokenError::Malformed {
                    status,
                    detail: snippet(body),
                },
            },
        );
    }
    // A successful answer's body holds tokens: its text is never shown, only what
    // is wrong with it.
    let obj = match parsed {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => {
            return Err(TokenError::Malformed {
                status,
                detail: "not a JSON object".into(),
            });
        }
        Err(e) => {
            return Err(TokenError::Malformed {
                status,
                detail: format!("not valid JSON: {e}"),
            });
        }
    };
    let malformed = |detail: &str| TokenError::Malformed {
        status,
        detail: detail.to_owned(),
    };
    // GitHub reports errors with 200: an answer with `error` and no token is one.
    if !obj.contains_key("access_token")
        && let Some(error) = obj.get("error").and_then(Value::as_str)
    {
        return Err(TokenError::OAuth {
            status,
            error: printable(error),
            description: obj
                .get("error_description")
                .and_then(Value::as_str)
                .map(printable),
        });
    }
    let access_token = obj
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed("no access_token"))?;
    // RFC 6749 §7.1: the type is case-insensitive. DPoP only answers a proof.
    let token_type = match obj.get("token_type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("bearer") => TokenType::Bearer,
        Some(t) if t.eq_ignore_ascii_case("dpop") && proved => TokenType::Dpop,
        Some(t) if t.eq_ignore_ascii_case("dpop") => {
            return Err(malformed(
                "token_type DPoP, but keyway sent no DPoP proof to bind it to",
            ));
        }
        Some(t) => {
            return Err(malformed(&format!(
                "token_type {:?} is neither Bearer nor DPoP",
                printable(t)
            )));
        }
        None => return Err(malformed("no token_type")),
    };
    // Some servers send expires_in as a string; a negative or absurd one counts as absent.
    let expires_in = match obj.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .filter(|s| *s <= 10 * 365 * 24 * 3600)
    .map(Duration::from_secs);
    Ok(TokenResponse {
        token_type,
        access_token: AccessToken::new(access_token.to_owned()),
        refresh_token: obj
            .get("refresh_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(|t| RefreshToken::new(t.to_owned())),
        expires_in,
        scope: obj
            .get("scope")
            .and_then(Value::as_str)
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_leniently_where_servers_differ() {
        let r = parse_response(
            200,
            br#"{"access_token":"a","token_type":"bearer","expires_in":"60","scope":"x y"}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.access_token.secret(), "a");
        assert_eq!(r.expires_in, Some(Duration::from_secs(60)));
        assert_eq!(r.scope, Some(vec!["x".into(), "y".into()]));
        assert!(r.refresh_token.is_none());
        let r = parse_response(
            200,
            br#"{"access_token":"a","token_type":"Bearer","expires_in":-5}"#,
            false,
        )
        .unwrap();
        assert_eq!(r.expires_in, None);
        let r = parse_response(200, br#"{"access_token":"a","token_type":"dpop"}"#, true).unwrap();
        assert_eq!(r.token_type, TokenType::Dpop);
    }

    #[test]
    fn refuses_what_cannot_be_used() {
        for body in [
            &br#"{"token_type":"Bearer"}"#[..],
            br#"{"access_token":"a"}"#,
            br#"{"access_token":"a","token_type":"DPoP"}"#,
            br#"{"access_token":"a","token_type":"N_A"}"#,
            br#"[]"#,
            b"<html>",
        ] {
            assert!(
                matches!(
                    parse_response(200, body, false),
                    Err(TokenError::Malformed { .. })
                ),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn oauth_errors_are_kept_printable_and_never_echo_secrets() {
        let e = parse_response(
            400,
            br#"{"error":"invalid_grant","error_description":"gone\n"}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code(), Some("invalid_grant"));
        assert_eq!(
            e.to_string(),
            "the token endpoint refused (HTTP 400): invalid_grant (gone)"
        );
        let e = parse_response(502, b"Bad Gateway", false).unwrap_err();
        assert!(matches!(e, TokenError::Malformed { status: 502, .. }));
        // GitHub's way: an error in a 200.
        let e = parse_response(
            200,
            br#"{"error":"bad_verification_code","error_description":"The code passed is incorrect or expired."}"#,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code(), Some("bad_verification_code"));
    }
}
