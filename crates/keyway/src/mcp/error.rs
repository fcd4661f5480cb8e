//! What can go wrong talking to an MCP server, in terms a person can act on.

use rmcp::{
    service::{ClientInitializeError, ServiceError},
    transport::streamable_http_client::StreamableHttpError,
};

/// Opening a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("{url} is not a usable MCP server URL: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// The server answered 401: it needs (new) authorization.
    #[error("{url} needs authorization")]
    AuthorizationRequired {
        url: String,
        /// The `WWW-Authenticate` challenge, if the server sent one.
        challenge: Option<String>,
    },

    /// The server answered 403 insufficient_scope.
    #[error("{url} needs more scopes than the token has")]
    InsufficientScope { url: String, challenge: String },

    /// No answer: refused, DNS, TLS, timeout.
    #[error("{url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },

    /// Anything else: an HTTP error, not an MCP server, a protocol error.
    #[error("could not connect to {url}: {reason}")]
    Failed { url: String, reason: String },
}

impl ConnectError {
    pub(crate) fn from_wire(url: &str, e: super::wire::WireError) -> Self {
        use super::wire::WireError as W;
        let url = url.to_owned();
        match e {
            W::Unauthorized { challenge } => Self::AuthorizationRequired { url, challenge },
            W::Forbidden { challenge } => Self::InsufficientScope { url, challenge },
            W::Transport(reason) => Self::Unreachable { url, reason },
            other => Self::Failed {
                url,
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn from_initialize(url: &str, e: ClientInitializeError) -> Self {
        if let ClientInitializeError::TransportError { error, .. } = &e
            && let Some(w) = error.error.downcast_ref::<super::wire::WireError>()
        {
            return Self::from_wire(url, w.clone());
        }
        let url = url.to_owned();
        if let Some(challenge) = e.auth_challenge() {
            let challenge = challenge.to_owned();
            return if e.is_authorization_required() {
                Self::AuthorizationRequired {
                    url,
                    challenge: Some(challenge),
                }
            } else {
                Self::InsufficientScope { url, challenge }
            };
        }
        let reason = describe(&e);
        if reason.contains("HTTP 401") {
            return Self::AuthorizationRequired {
                url,
                challenge: None,
            };
        }
        let transport = match &e {
            ClientInitializeError::TransportError { error, .. } => Some(error.error.as_ref()),
            _ => None,
        };
        if transport.is_some_and(no_answer) {
            return Self::Unreachable { url, reason };
        }
        Self::Failed { url, reason }
    }

    /// Whether the fix is to (re-)authorize.
    pub fn needs_authorization(&self) -> bool {
        matches!(
            self,
            Self::AuthorizationRequired { .. } | Self::InsufficientScope { .. }
        )
    }
}

/// A request on an open connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("{url} needs authorization")]
    AuthorizationRequired {
        url: String,
        challenge: Option<String>,
    },
    #[error("{url} needs more scopes than the token has")]
    InsufficientScope { url: String, challenge: String },
    #[error("the server refused the request: {message} (JSON-RPC error {code})")]
    Server { code: i32, message: String },
    #[error("the connection to {url} failed: {reason}")]
    Transport { url: String, reason: String },
}

impl RequestError {
    pub(crate) fn from_service(url: &str, e: ServiceError) -> Self {
        if let ServiceError::TransportSend(t) = &e
            && let Some(w) = t.error.downcast_ref::<super::wire::WireError>()
        {
            use super::wire::WireError as W;
            return match w.clone() {
                W::Unauthorized { challenge } => Self::AuthorizationRequired {
                    url: url.to_owned(),
                    challenge,
                },
                W::Forbidden { challenge } => Self::InsufficientScope {
                    url: url.to_owned(),
                    challenge,
                },
                other => Self::Transport {
                    url: url.to_owned(),
                    reason: other.to_string(),
                },
            };
        }
        let url = url.to_owned();
        if let Some(challenge) = e.auth_challenge() {
            let challenge = challenge.to_owned();
            return if e.is_authorization_required() {
                Self::AuthorizationRequired {
                    url,
                    challenge: Some(challenge),
                }
            } else {
                Self::InsufficientScope { url, challenge }
            };
        }
        match e {
            ServiceError::McpError(data) => Self::Server {
                code: data.code.0,
                message: data.message.into_owned(),
            },
            other => Self::Transport {
                url,
                reason: describe(&other),
            },
        }
    }
}

/// Whether a failed handshake was the server refusing the POST itself (400, 404,
/// 405): an old server that only speaks the legacy SSE transport.
pub(crate) fn refused_post(reason: &str) -> bool {
    [
        "HTTP 400",
        "HTTP 404",
        "HTTP 405",
        "400 Bad Request",
        "404 Not Found",
        "405 Method Not Allowed",
    ]
    .iter()
    .any(|s| reason.contains(s))
}

/// Whether the failure is "nobody answered" (connect, DNS, TLS, timeout).
fn no_answer(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let e: &(dyn std::error::Error + 'static) = e;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<reqwest::Error>()
            && (r.is_connect() || r.is_timeout())
        {
            return true;
        }
        // rmcp keeps the reqwest error inside a variant without `source()`.
        if let Some(StreamableHttpError::Client(r)) =
            s.downcast_ref::<StreamableHttpError<reqwest::Error>>()
            && (r.is_connect() || r.is_timeout())
        {
            return true;
        }
        if s.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
            )
        }) {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error and its causes on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
