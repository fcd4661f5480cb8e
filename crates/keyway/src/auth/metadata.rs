//! Protected resource metadata (RFC 9728) and authorization server metadata (RFC 8414,
//! OpenID Discovery), as keyway reads them. Unknown fields are kept, so what a server
//! said can be shown and stored whole.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Protected resource metadata (RFC 9728 §2): what an MCP server says about itself
/// and which authorization servers issue its tokens. Discovery keeps it only when
/// `resource` matches the server's URL ([`super::urls::resource_matches`]).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ProtectedResourceMetadata {
    /// `resource`: the resource identifier, sent as the RFC 8707 `resource` parameter.
    pub resource: String,
    /// `authorization_servers`: issuer identifiers; keyway uses the first that answers
    /// with valid metadata.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// `scopes_supported`: what MCP asks for when the challenge names no scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// `bearer_methods_supported`: how the token may be presented (`header`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_methods_supported: Option<Vec<String>>,
    /// `resource_name`: a human-readable name for the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    /// Every other field, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Authorization server metadata (RFC 8414 §2, or OpenID Connect Discovery 1.0 §3).
/// Discovery keeps fetched metadata only when `issuer` is exactly the issuer it was
/// looked up for (RFC 8414 §3.3). Endpoints are as the server wrote them: every flow
/// checks them against its [`UrlPolicy`](super::urls::UrlPolicy) before use.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct AuthServerMetadata {
    /// `issuer`: the authorization server's identifier; the `iss` of RFC 9207.
    pub issuer: String,
    /// `authorization_endpoint`: where the person is sent (RFC 6749 §3.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// `token_endpoint`: where grants are exchanged for tokens (RFC 6749 §3.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// `registration_endpoint`: dynamic client registration (RFC 7591 §3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    /// `revocation_endpoint`: token revocation (RFC 7009 §2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    /// `introspection_endpoint`: token introspection (RFC 7662 §2); unused by keyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection_endpoint: Option<String>,
    /// `device_authorization_endpoint`: the device grant (RFC 8628 §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
    /// `scopes_supported`: the scopes this server knows; keyway asks for
    /// `offline_access` only when it is listed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// `response_types_supported`: a code flow needs `code` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_types_supported: Option<Vec<String>>,
    /// `grant_types_supported`; [`supports_grant`](Self::supports_grant) applies
    /// the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_types_supported: Option<Vec<String>>,
    /// `code_challenge_methods_supported` (RFC 7636): MCP requires `S256` here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// `token_endpoint_auth_methods_supported`: see
    /// [`supports_auth_method`](Self::supports_auth_method) for the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    /// `authorization_response_iss_parameter_supported` (RFC 9207 §3): when true,
    /// every authorization response must carry `iss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    /// `client_id_metadata_document_supported` (MCP 2025-11-25 "Client ID Metadata
    /// Documents"): an https URL may serve as the client id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_document_supported: Option<bool>,
    /// `dpop_signing_alg_values_supported` (RFC 9449 §5.1): the server binds tokens
    /// to DPoP keys signing with these. A value that is not a list of strings counts
    /// as absent (it is not worth refusing the whole document for).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_strings"
    )]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// Every other field, as received.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A list of strings, or `None` for anything else.
fn lenient_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_array().and_then(|a| {
        a.iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
    }))
}

impl AuthServerMetadata {
    /// Whether the server offers `grant` (`authorization_code`,
    /// `urn:ietf:params:oauth:grant-type:device_code`, ...). RFC 8414 §2: when
    /// `grant_types_supported` is absent, `authorization_code` and `implicit` are
    /// assumed.
    ///
    /// ```
    /// use keyway::auth::metadata::AuthServerMetadata;
    ///
    /// let m: AuthServerMetadata = serde_json::from_str(
    ///     r#"{"issuer": "https://as.example", "code_challenge_methods_supported": ["S256"]}"#,
    /// )
    /// .unwrap();
    /// assert!(m.supports_grant("authorization_code"));
    /// assert!(!m.supports_grant("client_credentials"));
    /// assert!(m.supports_auth_method("client_secret_basic"));
    /// assert!(m.supports_s256());
    /// assert!(!m.iss_parameter_required());
    ///
    /// // A malformed DPoP list does not spoil the document.
    /// let m: AuthServerMetadata = serde_json::from_str(
    ///     r#"{"issuer": "https://as.example", "dpop_signing_alg_values_supported": "ES256"}"#,
    /// )
    /// .unwrap();
    /// assert_eq!(m.dpop_signing_alg_values_supported, None);
    /// ```
    pub fn supports_grant(&self, grant: &str) -> bool {
        match &self.grant_types_supported {
            Some(list) => list.iter().any(|g| g == grant),
            None => matches!(grant, "authorization_code" | "implicit"),
        }
    }

    /// Whether the token endpoint takes the client authentication `method`
    /// (`none`, `client_secret_post`, ...). RFC 8414 §2: when the list is absent, only
    /// `client_secret_basic`.
    pub fn supports_auth_method(&self, method: &str) -> bool {
        match &self.token_endpoint_auth_methods_supported {
            Some(list) => list.iter().any(|m| m == method),
            None => method == "client_secret_basic",
        }
    }

    /// Whether PKCE `S256` is advertised (absent counts as no: MCP clients must then
    /// refuse to start a code flow).
    pub fn supports_s256(&self) -> bool {
        self.code_challenge_methods_supported
            .as_ref()
            .is_some_and(|m| m.iter().any(|x| x == "S256"))
    }

    /// Whether `scopes_supported` lists `scope` (absent counts as no).
    pub fn lists_scope(&self, scope: &str) -> bool {
        self.scopes_supported
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == scope))
    }

    /// Whether authorization responses must carry `iss` (RFC 9207 §2.4): the server
    /// advertised `authorization_response_iss_parameter_supported: true`.
    pub fn iss_parameter_required(&self) -> bool {
        self.authorization_response_iss_parameter_supported == Some(true)
    }

    /// Whether the server takes a client ID metadata document URL as `client_id`.
    pub fn supports_cimd(&self) -> bool {
        self.client_id_metadata_document_supported == Some(true)
    }
}
