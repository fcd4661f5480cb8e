//! The MCP authorization flow, client side (MCP 2026-07-28 authorization, serving
//! 2025-11-25, 2025-06-18 and 2025-03-26 servers too).
//!
//! - [`discovery`]: from a 401 to a validated authorization server, with a report;
//! - [`registration`]: pre-registered, client ID metadata document, or dynamic;
//! - [`Authorizer`]: the authorization code flow with PKCE S256, `state`, `resource`,
//!   RFC 9207 `iss`; the device grant; client credentials; step-up scopes;
//! - [`Grant`] and [`OAuthTokens`]: tokens bound to resource + issuer + client,
//!   refreshed before they expire.
//!
//! The decisions (challenge parsing, URL rules, scope selection, callback verdicts)
//! are pure functions in their own files; the library never prints, it reports
//! through [`Reporter`].

pub mod browser;
pub mod callback;
pub mod challenge;
pub mod client;
mod device;
pub mod discovery;
pub mod enterprise;
mod fetch;
mod flow;
pub mod loopback;
pub mod metadata;
pub mod registration;
pub mod scopes;
pub mod token;
mod tokens;
pub mod urls;

use std::time::Duration;

pub use browser::{BrowserMode, Opener};
pub use client::{AuthMethod, ClientAuth, OAuthClient, RegistrationKind, SigningKey};
pub use discovery::{DiscoveryReport, Problem, ProblemCode};
pub use flow::{Authorizer, StepUp, stable_ports as stable_callback_ports};
pub use registration::{
    ClientOptions, MemoryRegistrations, PendingFlow, PendingFlows, RegistrationStore,
    StoredRegistration,
};
pub use tokens::{Grant, OAuthTokens, RefreshError, refresh, refresh_due};

/// Which grant to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GrantChoice {
    /// Authorization code with a browser; the device grant when no browser can open
    /// and the server offers it.
    #[default]
    Auto,
    /// The device authorization grant (RFC 8628).
    Device,
    /// Client credentials: a machine with its own identity, no person.
    ClientCredentials,
    /// Enterprise-managed: an ID token exchanged at the identity provider for an
    /// ID-JAG, presented to the authorization server (needs [`AuthOptions::idp`]).
    EnterpriseManaged,
    /// A JWT the workload already holds (workload identity federation, SEP-1933),
    /// presented with the RFC 7523 jwt-bearer grant (needs [`AuthOptions::assertion`]).
    JwtBearer,
}

/// Everything about how to authorize that does not come from the server.
#[derive(Clone, Debug)]
pub struct AuthOptions {
    pub client: ClientOptions,
    pub grant: GrantChoice,
    pub browser: BrowserMode,
    /// Scopes to ask for instead of the spec's selection.
    pub scopes: Option<Vec<String>>,
    /// A fixed loopback port (when the registration names an exact redirect URI).
    pub callback_port: Option<u16>,
    /// How long to wait for the browser (default 5 minutes).
    pub callback_timeout: Duration,
    /// Allow plain http to non-loopback hosts (development only).
    pub allow_http: bool,
    /// `client_name` for dynamic registration.
    pub client_name: String,
    /// The identity provider for [`GrantChoice::EnterpriseManaged`].
    pub idp: Option<enterprise::IdentityProvider>,
    /// The workload JWT for [`GrantChoice::JwtBearer`].
    pub assertion: Option<crate::Secret>,
    /// Whether keyway may read a pasted answer from stdin (not when stdin carries MCP
    /// frames, as in `keyway proxy`).
    pub allow_paste: bool,
    /// Opens authorization URLs in [`BrowserMode::System`] instead of the OS
    /// browser: for applications with their own way to show a page (and tests).
    pub opener: Option<std::sync::Arc<dyn browser::Opener>>,
}

impl AuthError {
    /// A refusal of the endpoint named `what`, for `map_err`.
    pub(crate) fn refused(what: &'static str) -> impl FnOnce(urls::UrlRefusal) -> Self {
        move |refusal| Self::InsecureUrl { what, refusal }
    }
}

impl Default for AuthOptions {
    fn default() -> Self {
        Self {
            client: ClientOptions::default(),
            grant: GrantChoice::Auto,
            browser: BrowserMode::System,
            scopes: None,
            callback_port: None,
            callback_timeout: Duration::from_secs(300),
            allow_http: false,
            client_name: "keyway".into(),
            idp: None,
            assertion: None,
            allow_paste: true,
            opener: None,
        }
    }
}

/// Progress of a flow, for whoever shows it (the CLI prints it on stderr).
pub trait Reporter: Send + Sync {
    fn discovered(&self, _report: &DiscoveryReport) {}
    fn registered(&self, _kind: RegistrationKind, _client_id: &str) {}
    /// The authorization URL, and whether a browser was opened on it.
    fn authorization_url(&self, _url: &str, _browser_opened: bool) {}
    /// Paste mode: the person may paste the redirect URL or the code.
    fn waiting_for_paste(&self) {}
    fn device_code(&self, _verification_uri: &str, _complete: Option<&str>, _user_code: &str) {}
    fn authorized(&self, _issuer: &str, _scopes: &[String]) {}
    fn note(&self, _message: &str) {}
}

/// A reporter that shows nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl Reporter for Silent {}

/// Why authorization failed. Every message says what went wrong in the server's
/// terms; the CLI adds what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    #[error("{}", .0.fatal().map(|p| p.message.clone()).unwrap_or_else(|| "authorization discovery failed".into()))]
    Discovery(Box<DiscoveryReport>),
    #[error(
        "the authorization server {issuer} {why}; MCP requires PKCE with S256, so keyway will not start a flow"
    )]
    PkceUnsupported { issuer: String, why: &'static str },
    /// An endpoint the server named is refused by the URL rules: nothing was sent.
    #[error("refusing the {what}: {refusal}")]
    InsecureUrl {
        /// Which endpoint (`authorization_endpoint`, `registration_endpoint`, ...).
        what: &'static str,
        #[source]
        refusal: urls::UrlRefusal,
    },
    #[error("the authorization server {issuer} offers no way for keyway to register{}", if *cimd_offered { " (it takes client ID metadata documents: pass --client-metadata-url)" } else { "" })]
    NoRegistration { issuer: String, cimd_offered: bool },
    #[error("registration at {issuer} failed: {detail}")]
    Registration { issuer: String, detail: String },
    #[error(transparent)]
    Callback(#[from] callback::Refusal),
    #[error("authorization was declined")]
    Declined,
    #[error("gave up waiting for {what} after {} s", waited.as_secs())]
    Timeout {
        waited: Duration,
        what: &'static str,
    },
    #[error("the browser could not be used: {0}")]
    Browser(String),
    #[error("the loopback listener could not start: {0}")]
    Listener(String),
    #[error("the device authorization failed: {detail}")]
    Device { detail: String },
    #[error("the token exchange at the identity provider failed: {detail}")]
    IdentityProvider { detail: String },
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("the server still refuses after {attempts} authorizations (scopes asked: {scopes})")]
    StepUpExhausted { attempts: u32, scopes: String },
    #[error("{0}")]
    Config(String),
    #[error("the credential store failed: {0}")]
    Store(String),
}
