//! What every backend stores of a credential, a server's headers and a client
//! registration: the plaintext columns and the sealed value, bound to those columns
//! ([`binding`]). No SQL here, so the SQLite and Postgres stores write the same bytes
//! and read each other's rows the same way; each backend only moves the columns.

use base64::Engine as _;
use oauth2::{AccessToken, ClientSecret, RefreshToken};
use serde::{Deserialize, Serialize};

use super::{
    Credential, OAuthCredential, StoreError, StoredCredential, binding, crypto::Cipher, from_unix,
    unix,
};
use crate::{
    Secret,
    auth::{
        AuthMethod, RegistrationKind, StoredRegistration,
        dpop::DpopKey,
        profile::Quirks,
        registration::{Management, RegistrationExtras},
        token::TokenType,
    },
};

fn decode_json<T: for<'de> Deserialize<'de>>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Decode(format!("{what}: {e}")))
}

/// The sealed part of a credential.
#[derive(Serialize, Deserialize)]
struct CredentialSecret {
    token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    /// `DPoP` for a DPoP-bound access token; absent for Bearer. Sealed, so nobody
    /// can turn a bound token into a Bearer one by editing the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    /// The DPoP private key (PKCS#8 DER, base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dpop_key: Option<String>,
    /// The provider's quirks, when not the standard's (token parameters may be
    /// secret-ish: sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quirks: Option<Quirks>,
}

/// A credential row: its plaintext columns and the sealed value.
#[derive(Debug, Clone)]
pub(crate) struct CredentialRow {
    pub kind: String,
    pub sealed: Vec<u8>,
    pub expires_at: Option<i64>,
    pub issued_at: Option<i64>,
    pub scope: Option<String>,
    pub issuer: Option<String>,
    pub token_endpoint: Option<String>,
    pub client_id: Option<String>,
    pub resource: Option<String>,
    pub as_metadata: Option<String>,
}

/// The row of credential `c` of server `server_id` at `server_url`.
pub(crate) fn seal_credential(
    cipher: &Cipher,
    server_id: &str,
    server_url: &str,
    c: &Credential,
) -> Result<CredentialRow, StoreError> {
    let (secret, o): (CredentialSecret, Option<&OAuthCredential>) = match c {
        Credential::Bearer { token } => (
            CredentialSecret {
                token: token.expose().to_owned(),
                refresh_token: None,
                token_type: None,
                dpop_key: None,
                quirks: None,
            },
            None,
        ),
        Credential::OAuth(o) => (
            CredentialSecret {
                token: o.access_token.secret().clone(),
                refresh_token: o.refresh_token.as_ref().map(|r| r.secret().clone()),
                token_type: (o.token_type == TokenType::Dpop).then(|| "DPoP".to_owned()),
                dpop_key: o
                    .dpop
                    .as_ref()
                    .map(|k| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.pkcs8())),
                quirks: (o.quirks != Quirks::default()).then(|| o.quirks.clone()),
            },
            Some(o),
        ),
    };
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(&secret).map_err(|e| StoreError::Decode(e.to_string()))?,
    );
    let as_metadata = o
        .and_then(|o| o.as_metadata.as_ref())
        .and_then(|m| serde_json::to_string(m).ok());
    let aad = binding::credential(
        server_id,
        server_url,
        c.kind(),
        o.map(|o| o.issuer.as_str()),
        o.map(|o| o.token_endpoint.as_str()),
        o.map(|o| o.client_id.as_str()),
        o.map(|o| o.resource.as_str()),
        as_metadata.as_deref(),
    );
    Ok(CredentialRow {
        kind: c.kind().to_owned(),
        sealed: cipher.seal(&aad, &plain),
        expires_at: o.and_then(|o| o.expires_at).map(|t| unix(t) as i64),
        issued_at: o.map(|o| unix(o.issued_at) as i64),
        scope: o.map(|o| o.scopes.join(" ")),
        issuer: o.map(|o| o.issuer.clone()),
        token_endpoint: o.map(|o| o.token_endpoint.clone()),
        client_id: o.map(|o| o.client_id.clone()),
        resource: o.map(|o| o.resource.clone()),
        as_metadata,
    })
}

/// The credential in `row` of server `server_id` (named `name`, at `server_url`),
/// with the row's `version` and `updated_at`.
pub(crate) fn open_credential(
    cipher: &Cipher,
    server_id: &str,
    server_url: &str,
    name: &str,
    row: CredentialRow,
    version: u64,
    updated_at: u64,
) -> Result<StoredCredential, StoreError> {
    let aad = binding::credential(
        server_id,
        server_url,
        &row.kind,
        row.issuer.as_deref(),
        row.token_endpoint.as_deref(),
        row.client_id.as_deref(),
        row.resource.as_deref(),
        row.as_metadata.as_deref(),
    );
    let plain = cipher
        .open(&aad, &row.sealed)
        .map_err(|_| StoreError::Unreadable {
            what: format!("the stored credential of {name}"),
            fix: format!(
                "`keyway logout {name}` forgets it; then `keyway authorize {name}` (or, for a token, remove the server and add it again with --token)"
            ),
        })?;
    let secret: CredentialSecret = decode_json("credential", &plain)?;
    let dpop = match &secret.dpop_key {
        None => None,
        Some(b64) => {
            let der = zeroize::Zeroizing::new(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(b64)
                    .map_err(|e| StoreError::Decode(format!("the DPoP key of {name}: {e}")))?,
            );
            Some(std::sync::Arc::new(DpopKey::from_pkcs8(&der).map_err(
                |e| StoreError::Decode(format!("the DPoP key of {name}: {e}")),
            )?))
        }
    };
    let token_type = match secret.token_type.as_deref() {
        Some("DPoP") => TokenType::Dpop,
        None => TokenType::Bearer,
        // Never guess Bearer for a type this keyway does not know.
        Some(other) => {
            return Err(StoreError::Decode(format!(
                "the credential of {name} has a token type this keyway does not know ({}); update keyway",
                crate::auth::callback::printable(other)
            )));
        }
    };
    let credential = match row.kind.as_str() {
        "bearer" => Credential::Bearer {
            token: Secret::new(secret.token),
        },
        _ => {
            let missing =
                |what: &str| StoreError::Decode(format!("oauth credential without {what}"));
            Credential::OAuth(Box::new(OAuthCredential {
                access_token: AccessToken::new(secret.token),
                refresh_token: secret.refresh_token.map(RefreshToken::new),
                expires_at: row.expires_at.map(|s| from_unix(s.max(0) as u64)),
                issued_at: from_unix(row.issued_at.unwrap_or(0).max(0) as u64),
                scopes: row
                    .scope
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect(),
                issuer: row.issuer.ok_or_else(|| missing("issuer"))?,
                token_endpoint: row
                    .token_endpoint
                    .ok_or_else(|| missing("token endpoint"))?,
                client_id: row.client_id.ok_or_else(|| missing("client id"))?,
                resource: row.resource.ok_or_else(|| missing("resource"))?,
                as_metadata: row.as_metadata.and_then(|m| serde_json::from_str(&m).ok()),
                token_type,
                dpop,
                quirks: secret.quirks.clone().unwrap_or_default(),
            }))
        }
    };
    Ok(StoredCredential {
        credential,
        version,
        updated_at,
    })
}

/// A server's extra headers: the sealed value (none when there are none) and the
/// JSON list of their names, which is not secret.
pub(crate) fn seal_headers(
    cipher: &Cipher,
    server_id: &str,
    server_url: &str,
    pairs: &[(String, String)],
) -> Result<(Option<Vec<u8>>, String), StoreError> {
    let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
    let names = serde_json::to_string(&names).unwrap_or_else(|_| "[]".into());
    if pairs.is_empty() {
        return Ok((None, names));
    }
    let plain = zeroize::Zeroizing::new(
        serde_json::to_vec(pairs).map_err(|e| StoreError::Decode(e.to_string()))?,
    );
    Ok((
        Some(cipher.seal(&binding::headers(server_id, server_url), &plain)),
        names,
    ))
}

/// The headers sealed in `sealed`, or [`StoreError::Unreadable`] naming `what` and
/// the `fix`.
pub(crate) fn open_headers(
    cipher: &Cipher,
    server_id: &str,
    server_url: &str,
    sealed: &[u8],
    what: String,
    fix: String,
) -> Result<Vec<(String, String)>, StoreError> {
    let plain = cipher
        .open(&binding::headers(server_id, server_url), sealed)
        .map_err(|_| StoreError::Unreadable { what, fix })?;
    decode_json("headers", &plain)
}

/// The plain headers of a [`super::NewServer`] or [`super::ServerChange`].
pub(crate) fn plain_headers(headers: &[(String, Secret)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_owned()))
        .collect()
}

#[derive(Serialize, Deserialize, Default)]
struct RegistrationSecret {
    client_secret: Option<String>,
    /// A pre-registered private_key_jwt client's key (PEM) and algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_alg: Option<String>,
    /// RFC 7592 management: `registration_client_uri` and its access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    management_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    management_token: Option<String>,
}

/// A registration row (its issuer is the key, kept by the caller).
#[derive(Debug, Clone)]
pub(crate) struct RegistrationRow {
    pub client_id: String,
    pub sealed: Option<Vec<u8>>,
    pub auth_method: String,
    pub kind: String,
    pub redirect_uris: String,
}

fn kind_name(kind: RegistrationKind) -> &'static str {
    match kind {
        RegistrationKind::Preregistered => "preregistered",
        RegistrationKind::MetadataDocument => "metadata_document",
        RegistrationKind::Dynamic => "dynamic",
    }
}

/// The row of registration `r`.
pub(crate) fn seal_registration(cipher: &Cipher, r: &StoredRegistration) -> RegistrationRow {
    let kind = kind_name(r.kind);
    let redirects = serde_json::to_string(&r.redirect_uris).unwrap_or_else(|_| "[]".into());
    let secret = RegistrationSecret {
        client_secret: r.client_secret.as_ref().map(|s| s.secret().clone()),
        private_key_pem: r
            .extras
            .private_key
            .as_ref()
            .map(|k| k.pem().expose().to_owned()),
        signing_alg: r.extras.private_key.as_ref().map(|k| k.algorithm()),
        management_uri: r.extras.management.as_ref().map(|m| m.uri.clone()),
        management_token: r
            .extras
            .management
            .as_ref()
            .map(|m| m.token.expose().to_owned()),
    };
    let any = secret.client_secret.is_some()
        || secret.private_key_pem.is_some()
        || secret.management_uri.is_some();
    let sealed = any.then(|| {
        let plain = zeroize::Zeroizing::new(serde_json::to_vec(&secret).unwrap_or_default());
        let aad = binding::registration(
            &r.issuer,
            &r.client_id,
            r.auth_method.as_str(),
            kind,
            &redirects,
        );
        cipher.seal(&aad, &plain)
    });
    RegistrationRow {
        client_id: r.client_id.clone(),
        sealed,
        auth_method: r.auth_method.as_str().to_owned(),
        kind: kind.to_owned(),
        redirect_uris: redirects,
    }
}

/// The registration at `issuer` in `row`.
pub(crate) fn open_registration(
    cipher: &Cipher,
    issuer: &str,
    row: RegistrationRow,
) -> Result<StoredRegistration, StoreError> {
    let secret: RegistrationSecret = match &row.sealed {
        Some(s) => {
            let aad = binding::registration(
                issuer,
                &row.client_id,
                &row.auth_method,
                &row.kind,
                &row.redirect_uris,
            );
            let plain = cipher.open(&aad, s).map_err(|_| StoreError::Unreadable {
                what: format!("the stored client registration at {issuer}"),
                fix: "authorize again: keyway registers anew when the server allows it, or pass --client-id and --client-secret".into(),
            })?;
            decode_json("registration", &plain)?
        }
        None => RegistrationSecret::default(),
    };
    let extras = RegistrationExtras {
        private_key: match &secret.private_key_pem {
            Some(pem) => Some(
                crate::auth::SigningKey::from_pem(
                    &Secret::new(pem.as_str()),
                    secret.signing_alg.as_deref(),
                )
                .map_err(|e| {
                    StoreError::Decode(format!(
                        "the stored private key of the client at {issuer}: {e}"
                    ))
                })?,
            ),
            None => None,
        },
        management: match (&secret.management_uri, &secret.management_token) {
            (Some(uri), Some(token)) => Some(Management {
                uri: uri.clone(),
                token: Secret::new(token.as_str()),
            }),
            _ => None,
        },
    };
    Ok(StoredRegistration {
        issuer: issuer.to_owned(),
        client_id: row.client_id,
        client_secret: secret.client_secret.map(ClientSecret::new),
        auth_method: AuthMethod::parse(&row.auth_method).unwrap_or(AuthMethod::None),
        redirect_uris: serde_json::from_str(&row.redirect_uris).unwrap_or_default(),
        kind: match row.kind.as_str() {
            "preregistered" => RegistrationKind::Preregistered,
            "metadata_document" => RegistrationKind::MetadataDocument,
            _ => RegistrationKind::Dynamic,
        },
        extras,
    })
}

/// The associated data of a pending flow's sealed data, by its state's hash.
pub(crate) fn pending_flow_aad(state_hash: &str) -> String {
    format!("pending_flows.data:{state_hash}")
}
