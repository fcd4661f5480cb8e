//! Who keyway is at an authorization server: a client id, how it got it, and how it
//! authenticates at the token endpoint (none, client_secret_basic,
//! client_secret_post, private_key_jwt).

use std::{fmt, time::SystemTime};

use base64::{Engine, engine::general_purpose::STANDARD};
use oauth2::ClientSecret;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// Token endpoint authentication methods keyway speaks, by their registered names
/// (`token_endpoint_auth_method`, RFC 7591 §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// `none`: a public client; only `client_id` is sent.
    None,
    /// `client_secret_basic`: id and secret in an HTTP Basic header (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_secret_post`: id and secret as form fields (RFC 6749 §2.3.1).
    ClientSecretPost,
    /// `private_key_jwt`: a signed client assertion (RFC 7523 §2.2).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// The registered name (`client_secret_basic`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    /// The method with registered name `s` (exact, lowercase); `None` for a method
    /// keyway does not speak.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "client_secret_basic" => Self::ClientSecretBasic,
            "client_secret_post" => Self::ClientSecretPost,
            "private_key_jwt" => Self::PrivateKeyJwt,
            _ => return None,
        })
    }
}

/// How the client id was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistrationKind {
    /// Given by the user (`--client-id`), registered out of band.
    Preregistered,
    /// An https URL serving a client ID metadata document, used as the client id
    /// (MCP 2025-11-25 "Client ID Metadata Documents").
    MetadataDocument,
    /// Obtained by dynamic client registration (RFC 7591).
    Dynamic,
}

/// Why a private key for private_key_jwt cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The algorithm asked for is not a JWS algorithm keyway knows.
    #[error("unknown signing algorithm {0:?}")]
    UnknownAlgorithm(String),
    /// The PEM is none of the key types keyway reads.
    #[error("the private key is not a PEM EC, RSA or Ed25519 private key (PKCS#8 or traditional)")]
    NotAKey,
    /// Signing the client assertion failed.
    #[error("signing the client assertion failed: {0}")]
    Signing(String),
}

type KeyLoader = fn(&[u8]) -> Result<jsonwebtoken::EncodingKey, jsonwebtoken::errors::Error>;

/// A private key for private_key_jwt (RFC 7523 §2.2).
#[derive(Clone)]
pub struct SigningKey {
    key: jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
    /// The PEM it was read from, for the encrypted store only.
    pem: Secret,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({:?}, [redacted])", self.alg)
    }
}

impl SigningKey {
    /// Read a PEM private key (EC P-256/P-384, RSA, or Ed25519). `alg` overrides the
    /// algorithm the key type implies (e.g. PS256 for an RSA key).
    pub fn from_pem(pem: &Secret, alg: Option<&str>) -> Result<Self, KeyError> {
        use jsonwebtoken::{Algorithm, EncodingKey};
        let bytes = pem.expose().as_bytes();
        let wanted = alg
            .map(|a| {
                a.parse::<Algorithm>()
                    .map_err(|_| KeyError::UnknownAlgorithm(a.to_owned()))
            })
            .transpose()?;
        let attempts: [(Algorithm, KeyLoader); 4] = [
            (Algorithm::ES256, EncodingKey::from_ec_pem),
            (Algorithm::RS256, EncodingKey::from_rsa_pem),
            (Algorithm::EdDSA, EncodingKey::from_ed_pem),
            (Algorithm::ES384, EncodingKey::from_ec_pem),
        ];
        for (implied, load) in attempts {
            if let Some(w) = wanted {
                let family_matches = match implied {
                    Algorithm::ES256 | Algorithm::ES384 => {
                        matches!(w, Algorithm::ES256 | Algorithm::ES384)
                    }
                    Algorithm::RS256 => matches!(
                        w,
                        Algorithm::RS256
                            | Algorithm::RS384
                            | Algorithm::RS512
                            | Algorithm::PS256
                            | Algorithm::PS384
                            | Algorithm::PS512
                    ),
                    other => other == w,
                };
                if !family_matches {
                    continue;
                }
            }
            if let Ok(key) = load(bytes) {
                return Ok(Self {
                    key,
                    alg: wanted.unwrap_or(implied),
                    pem: pem.clone(),
                });
            }
        }
        Err(KeyError::NotAKey)
    }

    /// The PEM the key was read from: for the encrypted store only.
    pub fn pem(&self) -> &Secret {
        &self.pem
    }

    /// The JWS algorithm it signs with (`ES256`, `PS256`, ...).
    pub fn algorithm(&self) -> String {
        format!("{:?}", self.alg)
    }

    /// A client assertion: iss = sub = client id, aud = the issuer, short-lived, unique.
    pub(crate) fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        now: SystemTime,
    ) -> Result<String, KeyError> {
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut jti = [0u8; 16];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut jti);
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + 60,
            "jti": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
        });
        jsonwebtoken::encode(&jsonwebtoken::Header::new(self.alg), &claims, &self.key)
            .map_err(|e| KeyError::Signing(e.to_string()))
    }
}

/// How the client proves itself at the token endpoint, with the credential it needs.
#[derive(Clone, Debug)]
pub enum ClientAuth {
    /// [`AuthMethod::None`]: a public client.
    None,
    /// [`AuthMethod::ClientSecretBasic`] with this secret.
    SecretBasic(ClientSecret),
    /// [`AuthMethod::ClientSecretPost`] with this secret.
    SecretPost(ClientSecret),
    /// [`AuthMethod::PrivateKeyJwt`] with this key.
    PrivateKeyJwt(SigningKey),
}

impl ClientAuth {
    /// The method this is.
    pub fn method(&self) -> AuthMethod {
        match self {
            Self::None => AuthMethod::None,
            Self::SecretBasic(_) => AuthMethod::ClientSecretBasic,
            Self::SecretPost(_) => AuthMethod::ClientSecretPost,
            Self::PrivateKeyJwt(_) => AuthMethod::PrivateKeyJwt,
        }
    }

    /// The client secret, for the two secret methods.
    pub fn secret(&self) -> Option<&ClientSecret> {
        match self {
            Self::SecretBasic(s) | Self::SecretPost(s) => Some(s),
            _ => None,
        }
    }

    /// The private key, for [`ClientAuth::PrivateKeyJwt`].
    pub fn signing_key(&self) -> Option<&SigningKey> {
        match self {
            Self::PrivateKeyJwt(k) => Some(k),
            _ => None,
        }
    }
}

/// A client at one authorization server.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    /// The `client_id` (for a metadata document client, the document's URL).
    pub client_id: String,
    /// How it authenticates at the token endpoint.
    pub auth: ClientAuth,
    /// How the client id was obtained.
    pub kind: RegistrationKind,
    /// The issuer this client belongs to (registrations are bound to it).
    pub issuer: String,
    /// Redirect URIs it is registered with (empty when unknown).
    pub redirect_uris: Vec<String>,
}

impl OAuthClient {
    /// Add the client's authentication to a token-style request (RFC 6749 §2.3.1,
    /// RFC 7523 §2.2): a header, or fields of the form.
    pub(crate) fn authenticate(
        &self,
        req: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        audience: &str,
        now: SystemTime,
    ) -> Result<reqwest::RequestBuilder, KeyError> {
        Ok(match &self.auth {
            ClientAuth::None => {
                form.push(("client_id", self.client_id.clone()));
                req
            }
            ClientAuth::SecretBasic(secret) => {
                // The id and secret are form-encoded before Base64 (RFC 6749 §2.3.1).
                let creds = format!(
                    "{}:{}",
                    form_encode(&self.client_id),
                    form_encode(secret.secret())
                );
                req.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(creds)),
                )
            }
            ClientAuth::SecretPost(secret) => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", secret.secret().clone()));
                req
            }
            ClientAuth::PrivateKeyJwt(key) => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push((
                    "client_assertion",
                    key.assertion(&self.client_id, audience, now)?,
                ));
                req
            }
        })
    }
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded_first() {
        assert_eq!(form_encode("a b:c/+"), "a+b%3Ac%2F%2B");
        assert_eq!(
            form_encode("pre-registered-client"),
            "pre-registered-client"
        );
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = OAuthClient {
            client_id: "id".into(),
            auth: ClientAuth::SecretBasic(ClientSecret::new("hunter2".into())),
            kind: RegistrationKind::Preregistered,
            issuer: "https://as".into(),
            redirect_uris: vec![],
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn non_pem_keys_are_refused_clearly() {
        let err = SigningKey::from_pem(&Secret::new("nope"), None).unwrap_err();
        assert_eq!(err, KeyError::NotAKey);
        assert!(err.to_string().contains("PEM"));
        assert_eq!(
            SigningKey::from_pem(&Secret::new("x"), Some("HS999")).unwrap_err(),
            KeyError::UnknownAlgorithm("HS999".into())
        );
    }
}
