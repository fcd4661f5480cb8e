//! What can go wrong talking to an MCP server, in terms a person can act on.

use rmcp::service::{ClientInitializeError, ServiceError};

use super::wire::WireError;
use crate::http::{ConnectCause, reply::describe};

/// Opening a connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL cannot be an MCP endpoint.
    #[error("{url} is not a usable MCP server URL: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why not.
        reason: String,
    },

    /// The server answered 401: it needs (new) authorization.
    #[error("{url} needs authorization")]
    AuthorizationRequired {
        /// The server.
        url: String,
        /// The `WWW-Authenticate` challenge, if the server sent one.
        challenge: Option<String>,
    },

    /// The server answered 403 insufficient_scope.
    #[error("{url} needs more scopes than the token has")]
    InsufficientScope {
        /// The server.
        url: String,
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },

    /// No answer: refused, DNS, TLS, the connect deadline.
    #[error("{url} is unreachable: {reason}")]
    Unreachable {
        /// The server.
        url: String,
        /// What failed (with the certificate problem for TLS).
        reason: String,
        /// Its kind, which decides the next step ([`ConnectError::next_step`]).
        cause: ConnectCause,
    },

    /// Anything else: an HTTP error, not an MCP server, a protocol error, a deadline.
    #[error("could not connect to {url}: {reason}")]
    Failed {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
        /// The HTTP status of the refusal, if the server answered with one.
        status: Option<u16>,
    },
}

impl ConnectError {
    pub(crate) fn from_wire(url: &str, e: WireError) -> Self {
        use WireError as W;
        let url = url.to_owned();
        match e {
            W::Unauthorized { challenge } => Self::AuthorizationRequired { url, challenge },
            W::Forbidden { challenge } => Self::InsufficientScope { url, challenge },
            W::Connect { reason, cause, .. } => Self::Unreachable { url, reason, cause },
            W::Deadline {
                limit: super::wire::Limit::Connect(d),
                ..
            } => Self::Unreachable {
                url,
                reason: format!("no connection within {} s", d.as_secs()),
                cause: ConnectCause::TimedOut,
            },
            other => Self::Failed {
                url,
                status: other.status(),
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn from_initialize(url: &str, e: ClientInitializeError) -> Self {
        // `server/discover` said "legacy" and the handshake then failed: the
        // handshake's failure is the one that tells what is wrong.
        let e = match e {
            ClientInitializeError::LegacyFallbackFailed { fallback, .. } => *fallback,
            e => e,
        };
        if let ClientInitializeError::TransportError { error, .. } = &e
            && let Some(w) = error.error.downcast_ref::<WireError>()
        {
            return Self::from_wire(url, w.clone());
        }
        Self::Failed {
            url: url.to_owned(),
            reason: describe(&e),
            status: None,
        }
    }

    /// What the person can do next, when keyway knows: the host name, the port, the
    /// scheme, the certificate ([`ConnectCause::next_step`]).
    pub fn next_step(&self) -> Option<String> {
        match self {
            Self::Unreachable { url, cause, .. } => Some(cause.next_step(url)),
            Self::AuthorizationRequired { .. } | Self::InsufficientScope { .. } => {
                Some("authorize again (keyway authorize NAME)".into())
            }
            _ => None,
        }
    }

    /// The failure and its next step on one line, as a saved server's last error.
    pub fn one_line(&self) -> String {
        match self.next_step() {
            Some(step) => format!("{self} (next: {step})"),
            None => self.to_string(),
        }
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
    /// 401: the server wants (new) authorization.
    #[error("{url} needs authorization")]
    AuthorizationRequired {
        /// The server.
        url: String,
        /// The `WWW-Authenticate` challenge, if any.
        challenge: Option<String>,
    },
    /// 403 insufficient_scope: a step-up is needed.
    #[error("{url} needs more scopes than the token has")]
    InsufficientScope {
        /// The server.
        url: String,
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// The server answered with a JSON-RPC error.
    #[error("the server refused the request: {message} (JSON-RPC error {code})")]
    Server {
        /// The JSON-RPC error code.
        code: i32,
        /// Its message.
        message: String,
    },
    /// MCP 2026-07-28: the tool's `x-mcp-header` annotations are invalid, so keyway
    /// left it out of the server's tools and does not call it.
    #[error(
        "the server's tool `{tool}` cannot be called: {reason} (MCP 2026-07-28 tells clients to leave such tools out; the server must fix its definition)"
    )]
    InvalidTool {
        /// The tool.
        tool: String,
        /// What is wrong with its definition.
        reason: super::modern::InvalidAnnotation,
    },
    /// The request did not get through.
    #[error("the connection to {url} failed: {reason}")]
    Transport {
        /// The server.
        url: String,
        /// What failed.
        reason: String,
        /// The wire's error, to decide on (reconnect, retry).
        error: Option<WireError>,
    },
}

impl RequestError {
    pub(crate) fn from_service(url: &str, e: ServiceError) -> Self {
        let url = url.to_owned();
        if let ServiceError::TransportSend(t) = &e
            && let Some(w) = t.error.downcast_ref::<WireError>()
        {
            return match w.clone() {
                WireError::Unauthorized { challenge } => {
                    Self::AuthorizationRequired { url, challenge }
                }
                WireError::Forbidden { challenge } => Self::InsufficientScope { url, challenge },
                other => Self::Transport {
                    url,
                    reason: other.to_string(),
                    error: Some(other),
                },
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
                error: None,
            },
        }
    }
}
