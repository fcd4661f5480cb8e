//! Who is calling the gateway, when it serves a team: the gateway as an MCP
//! protected resource (MCP authorization; RFC 9728). It publishes its protected
//! resource metadata naming the organisation's authorization server, and serves a
//! request only with an access token that server issued for the gateway itself:
//! verified as a JWT against the server's keys (RFC 9068), or, for tokens it cannot
//! read, by introspection (RFC 7662). The audience must be the gateway's canonical URL
//! (RFC 8707); a missing or refused token is answered 401 with the challenge that
//! lets a client find the server (RFC 6750 §3, RFC 9728 §5.1). A valid token's
//! [`Principal`] goes with the request.

pub mod claims;
pub mod introspect;
pub mod jwks;

use std::{sync::Arc, time::Duration, time::SystemTime};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use url::Url;

pub use claims::Principal;

use crate::{
    Secret,
    auth::{
        ClientAuth, OAuthClient, RegistrationKind,
        urls::{UrlPolicy, UrlRefusal, canonical_resource},
    },
};

/// Why a request's token is not taken. The messages are the gateway's own words
/// (they go into `error_description`), never the token's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization: Bearer` came.
    #[error("this gateway needs an access token from its authorization server")]
    Missing,
    /// The `Authorization` header is not one `Bearer TOKEN` (RFC 6750 §2.1), or the
    /// token is longer than any access token.
    #[error("the Authorization header must be one Bearer token")]
    BadRequest,
    /// The token is not one this gateway can read (not a JWT, or a malformed one).
    #[error("the access token is malformed")]
    Malformed,
    /// A token that is not an access token: an ID token (its `nonce`, `at_hash`,
    /// `c_hash` or `token_use`), a refresh token (introspection's `token_use` or
    /// `typ`), or one of another `typ`.
    #[error("the token is not an access token")]
    NotAccessToken,
    /// A token bound to a DPoP key (`cnf.jkt`, RFC 9449 §6), sent as a Bearer token:
    /// without the key's proof it is a stolen token for all the gateway can tell.
    #[error("the access token is bound to a DPoP key, and this gateway takes Bearer tokens only")]
    Bound,
    /// A JWT signed with an algorithm the gateway does not take.
    #[error("the access token is signed with {0}, which this gateway does not accept")]
    Algorithm(String),
    /// A JWT naming a key the authorization server does not publish.
    #[error("the access token is signed with a key the authorization server does not publish")]
    UnknownKey,
    /// A JWT whose signature does not verify.
    #[error("the access token's signature does not verify")]
    Signature,
    /// Issued by another authorization server.
    #[error("the access token was issued by another authorization server")]
    Issuer,
    /// Issued for another resource.
    #[error("the access token was issued for another resource, not this gateway")]
    Audience,
    /// No usable `exp`.
    #[error("the access token does not say when it expires")]
    NoExpiry,
    /// Expired.
    #[error("the access token has expired")]
    Expired,
    /// Not valid yet (`nbf`).
    #[error("the access token is not valid yet")]
    NotYetValid,
    /// No usable `sub`: the gateway keeps each person's upstream credentials by it.
    #[error("the access token names no subject")]
    NoSubject,
    /// The authorization server says the token is not active (introspection).
    #[error("the authorization server says the access token is not active")]
    Inactive,
    /// The token lacks a scope every caller needs.
    #[error("the access token lacks the scope {0}")]
    Scope(String),
    /// The authorization server could not be asked (its keys or introspection).
    #[error("the authorization server could not be reached to check the token: {0}")]
    Unavailable(String),
}

impl Rejection {
    /// The status of the answer: 401 for a token that is missing or not good, 403
    /// for a good one without the scope, 503 when it could not be checked.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Scope(_) => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The OAuth error code (RFC 6750 §3.1); none when no token came.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing | Self::Unavailable(_) => None,
            Self::BadRequest => Some("invalid_request"),
            Self::Scope(_) => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }
}

/// How the gateway checks the tokens it is given.
#[derive(Clone, Debug)]
pub enum Verification {
    /// As JWTs, against the authorization server's `jwks_uri`.
    Jwt,
    /// By introspection, as this client of the authorization server.
    Introspection {
        /// The gateway's client id there.
        client_id: String,
        /// Its secret (client_secret_basic).
        secret: Secret,
    },
}

/// What the gateway needs to be a protected resource.
#[derive(Clone)]
pub struct ResourceSettings {
    /// The gateway's URL as clients reach it (behind a load balancer, the balancer's):
    /// its canonical form is the audience every token must name.
    pub resource: Url,
    /// The organisation's authorization server (its issuer identifier).
    pub issuer: String,
    /// Scopes every token must carry (listed in the metadata and the challenge).
    pub required_scopes: Vec<String>,
    /// JWT or introspection.
    pub verification: Verification,
    /// Plain http to a non-loopback authorization server (development only).
    pub allow_http: bool,
    /// Clock skew forgiven on `exp` and `nbf`.
    pub leeway: Duration,
    /// The least time between two fetches of the keys for a token naming an unknown
    /// key (so junk tokens cannot make the gateway fetch on every request).
    pub keys_cooldown: Duration,
    /// Keys older than this are fetched again before use.
    pub keys_max_age: Duration,
    /// What time it is (tests move it instead of waiting).
    pub clock: crate::store::tokens::Clock,
}

impl std::fmt::Debug for ResourceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceSettings")
            .field("resource", &self.resource.as_str())
            .field("issuer", &self.issuer)
            .field("required_scopes", &self.required_scopes)
            .finish_non_exhaustive()
    }
}

impl ResourceSettings {
    /// Settings for the gateway at `resource` trusting `issuer`, with JWT
    /// verification, no required scope, 30 s of leeway, keys fetched again at most
    /// every 10 s for unknown keys and every hour regardless, on the system clock.
    pub fn new(resource: Url, issuer: &str) -> Self {
        Self {
            resource,
            issuer: issuer.to_owned(),
            required_scopes: Vec::new(),
            verification: Verification::Jwt,
            allow_http: false,
            leeway: Duration::from_secs(30),
            keys_cooldown: Duration::from_secs(10),
            keys_max_age: Duration::from_secs(3600),
            clock: Arc::new(SystemTime::now),
        }
    }
}

/// Why the gateway cannot serve as a protected resource with these settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The gateway's URL cannot be a resource identifier.
    #[error(
        "{0} cannot be the gateway's resource URL: give the https URL clients use (http only on loopback), without a user, query or fragment"
    )]
    Resource(String),
    /// A required scope is not a scope (RFC 6749 §3.3).
    #[error("{0:?} is not an OAuth scope (printable ASCII, no spaces, quotes or backslashes)")]
    Scope(String),
    /// The issuer is refused by the URL rules.
    #[error("the authorization server {issuer}: {refusal}")]
    Issuer {
        /// The issuer given.
        issuer: String,
        /// Why.
        #[source]
        refusal: UrlRefusal,
    },
    /// The authorization server's metadata could not be had or is not its own.
    #[error("the authorization server {issuer}: {detail}")]
    Metadata {
        /// The issuer given.
        issuer: String,
        /// What discovery found.
        detail: String,
    },
    /// JWT verification was asked of a server that publishes no keys.
    #[error(
        "the authorization server {issuer} publishes no jwks_uri, so its tokens cannot be verified here; validate them by introspection instead (--introspection-client)"
    )]
    NoKeys {
        /// The issuer.
        issuer: String,
    },
    /// Introspection was asked of a server without the endpoint.
    #[error(
        "the authorization server {issuer} has no introspection_endpoint; verify its tokens as JWTs instead (leave out --introspection-client)"
    )]
    NoIntrospection {
        /// The issuer.
        issuer: String,
    },
    /// An endpoint the metadata names is refused by the URL rules.
    #[error("refusing the authorization server's {what}: {refusal}")]
    Endpoint {
        /// `jwks_uri` or `introspection_endpoint`.
        what: &'static str,
        /// Why.
        #[source]
        refusal: UrlRefusal,
    },
    /// The keys could not be read.
    #[error(transparent)]
    Keys(#[from] jwks::KeysUnavailable),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Http(String),
}

enum Verifier {
    Keys(jwks::KeySet),
    Introspection(introspect::Introspector),
}

/// The gateway as a protected resource: its metadata, and the check of each
/// request's token.
pub struct ProtectedResource {
    resource: String,
    issuer: String,
    required_scopes: Vec<String>,
    metadata_path: String,
    metadata_url: String,
    verifier: Verifier,
    leeway: u64,
    clock: crate::store::tokens::Clock,
}

impl std::fmt::Debug for ProtectedResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtectedResource")
            .field("resource", &self.resource)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// The well-known path of protected resource metadata (RFC 9728 §3).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

impl ProtectedResource {
    /// Read the authorization server's metadata (and its keys, for JWTs): a gateway
    /// that cannot check tokens does not start.
    pub async fn start(settings: ResourceSettings) -> Result<Self, StartError> {
        let r = &settings.resource;
        let loopback = matches!(
            crate::auth::urls::host_class(r),
            crate::auth::urls::HostClass::Loopback
        );
        if !(r.scheme() == "https" || (r.scheme() == "http" && (loopback || settings.allow_http)))
            || r.query().is_some()
            || r.fragment().is_some()
            || r.host().is_none()
            || !r.username().is_empty()
            || r.password().is_some()
            // Segments the router would read as parameters or wildcards.
            || r.path_segments().into_iter().flatten().any(|seg| {
                seg.starts_with(':') || seg.starts_with('*') || seg.contains(['{', '}'])
            })
        {
            // Never its user or password: the message goes to a terminal and logs.
            return Err(StartError::Resource(crate::auth::urls::redacted(r)));
        }
        if let Some(bad) = settings.required_scopes.iter().find(|s| !is_scope(s)) {
            return Err(StartError::Scope(crate::text::shown(bad, 100)));
        }
        let issuer_url = Url::parse(&settings.issuer).map_err(|_| StartError::Issuer {
            issuer: crate::auth::urls::redacted_str(&settings.issuer),
            refusal: UrlRefusal::NotAUrl {
                url: crate::auth::urls::redacted_str(&settings.issuer),
            },
        })?;
        // The operator named this server: the URL rules judge it by its own class
        // (https, or http on loopback), and its endpoints may be its neighbours.
        let policy = UrlPolicy::for_server(&issuer_url, settings.allow_http);
        policy
            .check_url(&issuer_url)
            .map_err(|refusal| StartError::Issuer {
                issuer: settings.issuer.clone(),
                refusal,
            })?;
        let http = crate::http::client().map_err(|e| StartError::Http(e.to_string()))?;
        let metadata =
            crate::auth::discovery::authorization_server(&http, &settings.issuer, &policy)
                .await
                .map_err(|report| StartError::Metadata {
                    issuer: settings.issuer.clone(),
                    detail: report
                        .fatal()
                        .map(|p| p.message.clone())
                        .unwrap_or_else(|| "no usable metadata".into()),
                })?;
        let endpoint = |what: &'static str, named: Option<&str>| {
            named
                .map(|u| {
                    policy
                        .check(u)
                        .map_err(|refusal| StartError::Endpoint { what, refusal })
                })
                .transpose()
        };
        let verifier = match &settings.verification {
            Verification::Jwt => {
                let jwks_uri = metadata.extra.get("jwks_uri").and_then(Value::as_str);
                let Some(url) = endpoint("jwks_uri", jwks_uri)? else {
                    return Err(StartError::NoKeys {
                        issuer: settings.issuer.clone(),
                    });
                };
                Verifier::Keys(
                    jwks::KeySet::fetch(
                        http,
                        url,
                        policy,
                        settings.keys_cooldown,
                        settings.keys_max_age,
                    )
                    .await?,
                )
            }
            Verification::Introspection { client_id, secret } => {
                let named = metadata.introspection_endpoint.as_deref();
                let Some(url) = endpoint("introspection_endpoint", named)? else {
                    return Err(StartError::NoIntrospection {
                        issuer: settings.issuer.clone(),
                    });
                };
                let client = OAuthClient {
                    client_id: client_id.clone(),
                    auth: ClientAuth::SecretBasic(oauth2::ClientSecret::new(
                        secret.expose().to_owned(),
                    )),
                    kind: RegistrationKind::Preregistered,
                    issuer: settings.issuer.clone(),
                    redirect_uris: Vec::new(),
                };
                Verifier::Introspection(introspect::Introspector::new(http, url, client))
            }
        };
        let resource = canonical_resource(r);
        let metadata_path = format!("{METADATA_PATH}{}", r.path().trim_end_matches('/'));
        let mut metadata_url = r.clone();
        metadata_url.set_path(&metadata_path);
        Ok(Self {
            resource,
            issuer: settings.issuer,
            required_scopes: settings.required_scopes,
            metadata_path,
            metadata_url: metadata_url.to_string(),
            verifier,
            leeway: settings.leeway.as_secs(),
            clock: settings.clock,
        })
    }

    /// The canonical URL tokens must be issued for.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The organisation's authorization server.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Where the metadata is served: the path under the well-known prefix (RFC 9728
    /// §3.1), and the full URL the challenge names.
    pub fn metadata_location(&self) -> (&str, &str) {
        (&self.metadata_path, &self.metadata_url)
    }

    /// The protected resource metadata document (RFC 9728 §2).
    pub fn metadata(&self) -> Value {
        let mut doc = json!({
            "resource": self.resource,
            "authorization_servers": [self.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "keyway gateway",
        });
        if !self.required_scopes.is_empty() {
            doc["scopes_supported"] = json!(self.required_scopes);
        }
        doc
    }

    /// How many times the keys were fetched, or introspection asked (for tests and
    /// metrics).
    pub fn lookups(&self) -> u64 {
        match &self.verifier {
            Verifier::Keys(k) => k.fetches(),
            Verifier::Introspection(i) => i.calls(),
        }
    }

    /// The scopes every token must carry (`--require-scope`).
    pub fn required_scopes(&self) -> &[String] {
        &self.required_scopes
    }

    /// Who the request's token speaks for.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, Rejection> {
        let token = bearer(headers)?;
        let now = (self.clock)();
        let (claims, iss_optional) = match &self.verifier {
            Verifier::Keys(keys) => (keys.verify(token).await?, false),
            Verifier::Introspection(i) => (i.claims(token, now).await?, true),
        };
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        claims::check(
            &claims,
            &claims::Expect {
                issuer: &self.issuer,
                audience: &self.resource,
                required_scopes: &self.required_scopes,
                now: secs,
                leeway: self.leeway,
            },
            iss_optional,
        )
    }

    /// The `WWW-Authenticate` value for a refusal (RFC 6750 §3, RFC 9728 §5.1).
    pub fn challenge(&self, why: &Rejection) -> HeaderValue {
        let mut value = format!("Bearer resource_metadata=\"{}\"", self.metadata_url);
        if !self.required_scopes.is_empty() {
            value.push_str(&format!(", scope=\"{}\"", self.required_scopes.join(" ")));
        }
        if let Some(code) = why.code() {
            // The message is the gateway's own text: printable ASCII, no quotes.
            let description: String = why
                .to_string()
                .chars()
                .filter(|c| matches!(c, ' ' | '!' | '#'..='[' | ']'..='~'))
                .collect();
            value.push_str(&format!(
                ", error=\"{code}\", error_description=\"{description}\""
            ));
        }
        // The metadata URL came from a parsed URL and the scopes were checked at
        // start: every byte is visible ASCII.
        HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
    }
}

/// The token of `Authorization: Bearer TOKEN` (RFC 6750 §2.1): one header, the
/// scheme in any case, a token68 value.
fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::AUTHORIZATION) {
            Err(Rejection::BadRequest)
        } else {
            Err(Rejection::Missing)
        };
    };
    let text = value.to_str().map_err(|_| Rejection::BadRequest)?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Rejection::Missing);
    }
    let token = token.trim_start_matches(' ');
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    let body = token.trim_end_matches('=');
    if body.is_empty() || token.len() > MAX_TOKEN || !body.chars().all(token68) {
        return Err(Rejection::BadRequest);
    }
    Ok(token)
}

/// The longest access token taken (a JWT with many claims is a few KB).
const MAX_TOKEN: usize = 16 * 1024;

/// A scope token (RFC 6749 §3.3): `%x21 / %x23-5B / %x5D-7E`, at least one.
fn is_scope(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn the_bearer_token_is_read_strictly() {
        assert_eq!(
            bearer(&headers(&["Bearer abc.def-ghi_~+/=="])),
            Ok("abc.def-ghi_~+/==")
        );
        assert_eq!(bearer(&headers(&["bearer abc"])), Ok("abc"));
        assert_eq!(bearer(&headers(&[])), Err(Rejection::Missing));
        assert_eq!(bearer(&headers(&["Basic abc"])), Err(Rejection::Missing));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\"b",
            "Bearer ===",
        ] {
            assert_eq!(
                bearer(&headers(&[bad])),
                Err(Rejection::BadRequest),
                "{bad}"
            );
        }
        assert_eq!(
            bearer(&headers(&["Bearer a", "Bearer b"])),
            Err(Rejection::BadRequest)
        );
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(bearer(&headers(&[&long])), Err(Rejection::BadRequest));
    }

    #[test]
    fn rejections_map_to_status_and_code() {
        assert_eq!(Rejection::Missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(Rejection::Missing.code(), None);
        assert_eq!(Rejection::Audience.code(), Some("invalid_token"));
        assert_eq!(Rejection::Scope("x".into()).status(), StatusCode::FORBIDDEN);
        assert_eq!(
            Rejection::Scope("x".into()).code(),
            Some("insufficient_scope")
        );
        assert_eq!(
            Rejection::Unavailable("down".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn scopes_are_scope_tokens() {
        assert!(is_scope("mcp:tools"));
        for bad in ["", "a b", "a\"b", "a\\b", "é"] {
            assert!(!is_scope(bad), "{bad}");
        }
    }
}
