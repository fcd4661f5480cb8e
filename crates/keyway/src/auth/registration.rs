//! How keyway gets a client id at an authorization server, in the MCP priority
//! (2025-11-25 "Client Registration Approaches"): a pre-registered client, a client ID
//! metadata document, dynamic client registration (RFC 7591). Registrations are
//! bound to the issuer: a new authorization server means a new registration.

use std::{collections::HashMap, fmt, sync::Mutex};

use oauth2::ClientSecret;
use reqwest::header;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    AuthError,
    callback::printable,
    client::{AuthMethod, ClientAuth, OAuthClient, RegistrationKind, SigningKey},
    fetch::{describe, read_capped, snippet},
    metadata::AuthServerMetadata,
    urls::UrlPolicy,
};
use crate::Secret;

/// What the user told keyway about its client.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// A pre-registered client id (`--client-id`).
    pub client_id: Option<String>,
    /// The pre-registered client's secret (`--client-secret`).
    pub client_secret: Option<Secret>,
    /// How to authenticate; derived from the secret/key and the server when absent.
    pub auth_method: Option<AuthMethod>,
    /// The key for private_key_jwt (`--private-key`).
    pub private_key: Option<SigningKey>,
    /// An https URL serving keyway's client ID metadata document.
    pub client_metadata_url: Option<String>,
}

/// Which way to get a client id, decided from the options and the server. Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The client id the user gave.
    Preregistered,
    /// This client ID metadata document URL as the client id.
    MetadataDocument(String),
    /// Dynamic registration at this endpoint.
    Dynamic(String),
}

/// The first way that applies: a client id given, else a metadata document URL given
/// and supported by the server, else the server's registration endpoint; else
/// [`AuthError::NoRegistration`].
pub(crate) fn plan(opts: &ClientOptions, m: &AuthServerMetadata) -> Result<Plan, AuthError> {
    if opts.client_id.is_some() {
        return Ok(Plan::Preregistered);
    }
    if let Some(url) = &opts.client_metadata_url
        && m.supports_cimd()
    {
        return Ok(Plan::MetadataDocument(url.clone()));
    }
    if let Some(endpoint) = &m.registration_endpoint {
        return Ok(Plan::Dynamic(endpoint.clone()));
    }
    Err(AuthError::NoRegistration {
        issuer: m.issuer.clone(),
        cimd_offered: m.supports_cimd(),
    })
}

/// The pre-registered client from the options.
pub fn preregistered(
    opts: &ClientOptions,
    m: &AuthServerMetadata,
) -> Result<OAuthClient, AuthError> {
    let Some(client_id) = opts.client_id.clone() else {
        return Err(AuthError::Config(
            "a pre-registered client needs --client-id".into(),
        ));
    };
    let secret = opts
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose().to_owned()));
    let method = match (opts.auth_method, &opts.private_key, &secret) {
        (Some(m), _, _) => m,
        (None, Some(_), _) => AuthMethod::PrivateKeyJwt,
        (None, None, Some(_)) if m.supports_auth_method("client_secret_basic") => {
            AuthMethod::ClientSecretBasic
        }
        (None, None, Some(_)) if m.supports_auth_method("client_secret_post") => {
            AuthMethod::ClientSecretPost
        }
        (None, None, Some(_)) => AuthMethod::ClientSecretBasic,
        (None, None, None) => AuthMethod::None,
    };
    let auth = match method {
        AuthMethod::None => ClientAuth::None,
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
            let Some(secret) = secret else {
                return Err(AuthError::Config(format!(
                    "{} needs --client-secret",
                    method.as_str()
                )));
            };
            if method == AuthMethod::ClientSecretBasic {
                ClientAuth::SecretBasic(secret)
            } else {
                ClientAuth::SecretPost(secret)
            }
        }
        AuthMethod::PrivateKeyJwt => match &opts.private_key {
            Some(k) => ClientAuth::PrivateKeyJwt(k.clone()),
            None => {
                return Err(AuthError::Config(
                    "private_key_jwt needs --private-key FILE".into(),
                ));
            }
        },
    };
    Ok(OAuthClient {
        client_id,
        auth,
        kind: RegistrationKind::Preregistered,
        issuer: m.issuer.clone(),
        redirect_uris: Vec::new(),
    })
}

/// A registration as keyway keeps it, per issuer.
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredRegistration {
    /// The issuer that registered the client: the key it is stored under.
    pub issuer: String,
    /// `client_id` (RFC 7591 §3.2.1).
    pub client_id: String,
    /// `client_secret`, when the server issued one (RFC 7591 §3.2.1).
    pub client_secret: Option<ClientSecret>,
    /// How it authenticates at the token endpoint (`token_endpoint_auth_method`,
    /// RFC 7591 §2; for dynamic clients, the server's choice).
    pub auth_method: AuthMethod,
    /// `redirect_uris` the client is registered with.
    pub redirect_uris: Vec<String>,
    /// How the client id was obtained.
    pub kind: RegistrationKind,
    /// What else a refresh or a removal needs: the private key of a pre-registered
    /// private_key_jwt client, the RFC 7592 management endpoint of a dynamic one.
    /// Sealed in the store.
    #[serde(skip)]
    pub extras: RegistrationExtras,
}

/// The parts of a registration that only the encrypted store keeps.
#[derive(Clone, Default)]
pub struct RegistrationExtras {
    /// The private key of a pre-registered private_key_jwt client, so a refresh in
    /// another process can sign its assertion.
    pub private_key: Option<super::SigningKey>,
    /// RFC 7592: where the registration can be read or deleted, and with what token.
    pub management: Option<Management>,
}

/// A dynamic registration's management endpoint (RFC 7592 §2). `Debug` redacts the
/// token.
#[derive(Clone, Debug)]
pub struct Management {
    /// `registration_client_uri`.
    pub uri: String,
    /// `registration_access_token`, sent as Bearer to `uri` only.
    pub token: crate::Secret,
}

impl fmt::Debug for RegistrationExtras {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationExtras")
            .field("private_key", &self.private_key.is_some())
            .field(
                "management_uri",
                &self.management.as_ref().map(|m| m.uri.as_str()),
            )
            .finish()
    }
}

impl fmt::Debug for StoredRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredRegistration")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .field("auth_method", &self.auth_method)
            .field("redirect_uris", &self.redirect_uris)
            .field("kind", &self.kind)
            .field("extras", &self.extras)
            .finish()
    }
}

impl StoredRegistration {
    /// The client to use: its secret for the two secret methods when there is one,
    /// its private key for private_key_jwt when it is kept, else a public client.
    pub fn client(&self) -> OAuthClient {
        let auth = match (
            self.auth_method,
            &self.client_secret,
            &self.extras.private_key,
        ) {
            (AuthMethod::ClientSecretBasic, Some(s), _) => ClientAuth::SecretBasic(s.clone()),
            (AuthMethod::ClientSecretPost, Some(s), _) => ClientAuth::SecretPost(s.clone()),
            (AuthMethod::PrivateKeyJwt, _, Some(k)) => ClientAuth::PrivateKeyJwt(k.clone()),
            _ => ClientAuth::None,
        };
        OAuthClient {
            client_id: self.client_id.clone(),
            auth,
            kind: self.kind,
            issuer: self.issuer.clone(),
            redirect_uris: self.redirect_uris.clone(),
        }
    }
}

/// Why deleting a registration (RFC 7592) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeleteError {
    /// The management URI is refused by the URL rules; nothing was sent.
    #[error("refusing the registration_client_uri: {0}")]
    Refused(#[source] super::urls::UrlRefusal),
    /// No answer.
    #[error("the registration endpoint could not be reached: {0}")]
    Transport(String),
    /// An answer other than success (401: the server no longer takes the token, or
    /// no longer knows the client).
    #[error("the registration endpoint answered HTTP {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The start of the body, made printable.
        body: String,
    },
}

/// Delete a dynamic registration at its management endpoint (RFC 7592 §2.3), for a
/// client whose tokens were for `resource` (the endpoint obeys that resource's URL
/// rules, as a refresh's token endpoint does). Gone already (404) counts as deleted.
pub async fn delete(resource: &str, m: &Management) -> Result<(), DeleteError> {
    let policy = super::tokens::policy_for_resource(resource)
        .await
        .map_err(|e| match e {
            super::RefreshError::Refused(r) => DeleteError::Refused(r),
            other => DeleteError::Transport(other.to_string()),
        })?;
    let uri = policy.check(&m.uri).map_err(DeleteError::Refused)?;
    let http = crate::http::guarded(&policy).map_err(|e| DeleteError::Transport(e.to_string()))?;
    let resp = http
        .delete(uri.clone())
        .bearer_auth(m.token.expose())
        .timeout(super::token::TOKEN_TIMEOUT)
        .send()
        .await
        .map_err(|e| match crate::http::refused_addresses(&e) {
            Some(r) => DeleteError::Refused(super::urls::UrlRefusal::Addresses {
                url: super::urls::redacted_str(uri.as_str()),
                detail: r.to_string(),
            }),
            None => DeleteError::Transport(describe(&e)),
        })?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) || status == 404 {
        return Ok(());
    }
    let body = read_capped(resp, 16 * 1024).await.unwrap_or_default();
    Err(DeleteError::Status {
        status,
        body: snippet(&body),
    })
}

/// Where registrations live between flows. The in-memory one serves ad hoc calls;
/// the encrypted store implements the same trait.
#[async_trait::async_trait]
pub trait RegistrationStore: Send + Sync + fmt::Debug {
    /// The registration for `issuer`, if one is kept.
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError>;
    /// Keep `registration` under its issuer, replacing any before it.
    async fn save(&self, registration: &StoredRegistration) -> Result<(), AuthError>;
    /// Drop the registration for `issuer` (none kept is not an error).
    async fn forget(&self, issuer: &str) -> Result<(), AuthError>;
}

/// An authorization flow waiting for its callback, recorded before the browser opens
/// (so another process could finish it, and `keyway doctor` can show it).
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingFlow {
    /// The authorization server's issuer.
    pub issuer: String,
    /// The resource indicator asked for (RFC 8707).
    pub resource: String,
    /// The redirect URI sent with the authorization request.
    pub redirect_uri: String,
    /// The client id used.
    pub client_id: String,
    /// Where the code is to be redeemed.
    pub token_endpoint: String,
    /// The scopes asked for.
    pub scopes: Vec<String>,
    /// The PKCE verifier: a secret; the store seals it.
    pub code_verifier: String,
    /// When the flow started, in seconds since the Unix epoch.
    pub started_at: u64,
}

impl fmt::Debug for PendingFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingFlow")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .field("client_id", &self.client_id)
            .field("code_verifier", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// Where pending flows are recorded, keyed by `state`.
#[async_trait::async_trait]
pub trait PendingFlows: Send + Sync + fmt::Debug {
    /// Record `flow` under `state` before the browser opens; an error stops the flow.
    async fn begin(&self, state: &str, flow: &PendingFlow) -> Result<(), AuthError>;
    /// Forget the flow under `state` once it has its answer (or failed); an error is
    /// only logged.
    async fn end(&self, state: &str) -> Result<(), AuthError>;
}

/// A [`RegistrationStore`] in memory: registrations last as long as it does.
#[derive(Debug, Default)]
pub struct MemoryRegistrations(Mutex<HashMap<String, StoredRegistration>>);

#[async_trait::async_trait]
impl RegistrationStore for MemoryRegistrations {
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(issuer)
            .cloned())
    }
    async fn save(&self, r: &StoredRegistration) -> Result<(), AuthError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(r.issuer.clone(), r.clone());
        Ok(())
    }
    async fn forget(&self, issuer: &str) -> Result<(), AuthError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(issuer);
        Ok(())
    }
}

/// The registration metadata (RFC 7591 §2) a user may set for dynamic registration
/// ([`crate::auth::AuthOptions::registration_metadata`]): what describes the client.
/// What decides where codes and tokens go (redirect URIs, grant and response types,
/// the token endpoint auth method, keys) stays keyway's.
pub const REGISTRATION_METADATA_FIELDS: &[&str] = &[
    "client_name",
    "client_uri",
    "logo_uri",
    "scope",
    "contacts",
    "tos_uri",
    "policy_uri",
    "software_id",
    "software_version",
];

/// `text` as registration metadata: a JSON object of [`REGISTRATION_METADATA_FIELDS`]
/// only; anything else is an error naming the field.
pub fn registration_metadata(
    text: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let map = match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err("registration metadata must be a JSON object".into()),
        Err(e) => return Err(format!("registration metadata is not JSON: {e}")),
    };
    if let Some(k) = map
        .keys()
        .find(|k| !REGISTRATION_METADATA_FIELDS.contains(&k.as_str()))
    {
        return Err(format!(
            "{k} is not a field keyway lets a user set (these are: {}); redirect URIs, grant types and authentication stay keyway's",
            REGISTRATION_METADATA_FIELDS.join(", ")
        ));
    }
    Ok(map)
}

/// Whether `uri` comes back to this machine (http on a loopback address or `localhost`).
fn is_loopback_redirect(uri: &str) -> bool {
    url::Url::parse(uri).is_ok_and(|u| {
        u.scheme() == "http"
            && matches!(
                crate::auth::urls::host_class(&u),
                crate::auth::urls::HostClass::Loopback
            )
    })
}

/// Register dynamically (RFC 7591) as a native public client, and use what the
/// server hands back, including the auth method it chose (§3.2.1). An `endpoint` the
/// URL rules refuse is an error before anything is sent: nothing about keyway's client
/// goes where the server may not send it. (A registration already stored is used
/// without coming here, so a server whose endpoint is refused only now keeps working
/// for as long as that registration does.)
#[allow(clippy::too_many_arguments)]
pub(crate) async fn register(
    http: &reqwest::Client,
    policy: &UrlPolicy,
    endpoint: &str,
    m: &AuthServerMetadata,
    client_name: &str,
    redirect_uris: &[String],
    grant_types: &[&str],
    extra: &serde_json::Map<String, serde_json::Value>,
) -> Result<StoredRegistration, AuthError> {
    let mut body = json!({
        "client_name": client_name,
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        // OpenID Connect Registration §2: a client whose redirects come back to this
        // machine is native; one at a web server's own URL (the team gateway) is web.
        "application_type": if redirect_uris.iter().all(|u| is_loopback_redirect(u)) { "native" } else { "web" },
        "software_id": "keyway",
        "software_version": env!("CARGO_PKG_VERSION"),
    });
    if let Some(obj) = body.as_object_mut() {
        for (k, v) in extra {
            if REGISTRATION_METADATA_FIELDS.contains(&k.as_str()) {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
    let failed = |detail: String| AuthError::Registration {
        issuer: m.issuer.clone(),
        detail,
    };
    let endpoint = policy
        .check(endpoint)
        .map_err(AuthError::refused("registration_endpoint"))?;
    let resp = http
        .post(endpoint.clone())
        .header(header::ACCEPT, "application/json")
        .json(&body)
        .timeout(super::token::TOKEN_TIMEOUT)
        .send()
        .await
        .map_err(|e| failed(describe(&e)))?;
    let status = resp.status().as_u16();
    let bytes = read_capped(resp, 64 * 1024).await.map_err(failed)?;
    read_answer(status, &bytes, &endpoint, m, redirect_uris, policy)
}

/// Read a registration endpoint's answer (RFC 7591 §3.2) to a registration sent to
/// `endpoint` for `redirect_uris`. Pure: every text in an error is printable.
pub(crate) fn read_answer(
    status: u16,
    bytes: &[u8],
    endpoint: &url::Url,
    m: &AuthServerMetadata,
    redirect_uris: &[String],
    policy: &UrlPolicy,
) -> Result<StoredRegistration, AuthError> {
    let failed = |detail: String| AuthError::Registration {
        issuer: m.issuer.clone(),
        detail,
    };
    let parsed = crate::json::parse(bytes);
    let json = parsed.as_ref().ok();
    if !(200..300).contains(&status) {
        let detail = match json.and_then(|j| j.get("error")).and_then(Value::as_str) {
            Some(e) => {
                let d = json
                    .and_then(|j| j.get("error_description"))
                    .and_then(Value::as_str);
                format!(
                    "HTTP {status}: {}{}",
                    printable(e),
                    d.map(|d| format!(" ({})", printable(d)))
                        .unwrap_or_default()
                )
            }
            None => format!("HTTP {status}: {}", snippet(bytes)),
        };
        return Err(failed(detail));
    }
    // A successful answer holds the client's secrets: its text is never shown, only
    // what is wrong with it.
    let obj = match &parsed {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(failed("the answer is not a JSON object".into())),
        Err(e) => return Err(failed(format!("the answer is not valid JSON: {e}"))),
    };
    let client_id = obj
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| failed("the answer has no client_id".into()))?;
    // Some servers send an empty secret for public clients: that is no secret.
    let secret = obj
        .get("client_secret")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| ClientSecret::new(s.to_owned()));
    let auth_method = match obj
        .get("token_endpoint_auth_method")
        .and_then(Value::as_str)
    {
        Some(chosen) => AuthMethod::parse(chosen).ok_or_else(|| {
            failed(format!(
                "the server chose auth method {:?}, which keyway cannot use",
                printable(chosen)
            ))
        })?,
        None if secret.is_some() => AuthMethod::ClientSecretBasic,
        None => AuthMethod::None,
    };
    if matches!(
        auth_method,
        AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost
    ) && secret.is_none()
    {
        return Err(failed(format!(
            "the server chose {} but issued no client_secret",
            auth_method.as_str()
        )));
    }
    if auth_method == AuthMethod::PrivateKeyJwt {
        return Err(failed(
            "the server chose private_key_jwt for a registration without keys".into(),
        ));
    }
    let redirect_uris = obj
        .get("redirect_uris")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|| redirect_uris.to_vec());
    // RFC 7592: kept only when both come, and the URI obeys the flow's URL rules (the
    // token goes there when the server is removed).
    let management = match (
        obj.get("registration_client_uri").and_then(Value::as_str),
        obj.get("registration_access_token").and_then(Value::as_str),
    ) {
        (Some(uri), Some(token)) if !token.is_empty() => match policy.check(uri) {
            // On the registration endpoint's origin or the issuer's: the token and
            // the DELETE go nowhere else.
            Ok(u)
                if u.origin() == endpoint.origin()
                    || url::Url::parse(&m.issuer).is_ok_and(|o| o.origin() == u.origin()) =>
            {
                Some(Management {
                    uri: u.to_string(),
                    token: crate::Secret::new(token),
                })
            }
            Ok(u) => {
                tracing::warn!(uri = %u, "ignoring a registration management URI on another origin");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the registration's management URI");
                None
            }
        },
        _ => None,
    };
    Ok(StoredRegistration {
        issuer: m.issuer.clone(),
        client_id: client_id.to_owned(),
        client_secret: secret,
        auth_method,
        redirect_uris,
        kind: RegistrationKind::Dynamic,
        extras: RegistrationExtras {
            private_key: None,
            management,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(f: impl FnOnce(&mut AuthServerMetadata)) -> AuthServerMetadata {
        let mut m = AuthServerMetadata {
            issuer: "https://as".into(),
            ..Default::default()
        };
        f(&mut m);
        m
    }

    fn public_server() -> UrlPolicy {
        UrlPolicy {
            server: crate::auth::urls::HostClass::Public,
            allow_http: false,
        }
    }

    /// A public server's metadata cannot aim the registration POST at the user's
    /// machine, network or cloud metadata, nor over plain http: refused before any
    /// request.
    #[tokio::test]
    async fn a_registration_endpoint_the_rules_refuse_gets_nothing() {
        let http = crate::http::client().unwrap();
        for bad in [
            "http://127.0.0.1:8080/register",
            "https://127.0.0.1/register",
            "https://10.0.0.7/register",
            "https://169.254.169.254/latest/register",
            "https://[::ffff:192.168.1.1]/register",
            "https://[64:ff9b::7f00:1]/register",
            "http://as.example.com/register",
            "file:///etc/passwd",
        ] {
            let m = meta(|m| m.registration_endpoint = Some(bad.into()));
            let err = register(
                &http,
                &public_server(),
                bad,
                &m,
                "keyway",
                &[],
                &[],
                &Default::default(),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(
                    err,
                    AuthError::InsecureUrl {
                        what: "registration_endpoint",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn priority_is_preregistered_then_cimd_then_dcr() {
        let both = meta(|m| {
            m.client_id_metadata_document_supported = Some(true);
            m.registration_endpoint = Some("https://as/register".into());
        });
        let cimd = ClientOptions {
            client_metadata_url: Some("https://me/c.json".into()),
            ..Default::default()
        };
        assert_eq!(
            plan(&cimd, &both).unwrap(),
            Plan::MetadataDocument("https://me/c.json".into())
        );
        let pre = ClientOptions {
            client_id: Some("x".into()),
            ..cimd.clone()
        };
        assert_eq!(plan(&pre, &both).unwrap(), Plan::Preregistered);
        let dcr_only = meta(|m| m.registration_endpoint = Some("https://as/register".into()));
        assert_eq!(
            plan(&cimd, &dcr_only).unwrap(),
            Plan::Dynamic("https://as/register".into())
        );
        assert!(matches!(
            plan(&ClientOptions::default(), &meta(|_| {})),
            Err(AuthError::NoRegistration { .. })
        ));
    }

    #[test]
    fn preregistered_auth_method_follows_the_server() {
        let secret = ClientOptions {
            client_id: Some("c".into()),
            client_secret: Some(Secret::new("s")),
            ..Default::default()
        };
        let post_only = meta(|m| {
            m.token_endpoint_auth_methods_supported = Some(vec!["client_secret_post".into()])
        });
        assert_eq!(
            preregistered(&secret, &post_only).unwrap().auth.method(),
            AuthMethod::ClientSecretPost
        );
        assert_eq!(
            preregistered(&secret, &meta(|_| {})).unwrap().auth.method(),
            AuthMethod::ClientSecretBasic
        );
        let public = ClientOptions {
            client_id: Some("c".into()),
            ..Default::default()
        };
        assert_eq!(
            preregistered(&public, &meta(|_| {})).unwrap().auth.method(),
            AuthMethod::None
        );
        let wants_post = ClientOptions {
            auth_method: Some(AuthMethod::ClientSecretPost),
            ..public
        };
        assert!(matches!(
            preregistered(&wants_post, &meta(|_| {})),
            Err(AuthError::Config(_))
        ));
    }
}
