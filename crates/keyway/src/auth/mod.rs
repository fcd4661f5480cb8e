//! The MCP authorization flow, client side (MCP 2026-07-28 authorization, serving
//! 2025-11-25, 2025-06-18 and 2025-03-26 servers too).
//!
//! - [`discovery`]: from a 401 to a validated authorization server, with a report;
//! - [`registration`]: pre-registered, client ID metadata document, or dynamic;
//! - [`dpop`]: DPoP (RFC 9449) keys and proofs;
//! - [`profile`]: identity-provider profiles (Entra, Google, ...) as data;
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
pub(crate) mod device;
pub mod discovery;
pub mod dpop;
pub mod enterprise;
pub(crate) mod fetch;
mod flow;
pub mod loopback;
pub mod metadata;
pub mod profile;
pub mod registration;
pub mod scopes;
pub mod token;
mod tokens;
pub mod urls;

use std::time::Duration;

pub use browser::{BrowserError, BrowserMode, Opener};
pub use client::{AuthMethod, ClientAuth, KeyError, OAuthClient, RegistrationKind, SigningKey};
pub use discovery::{DiscoveryReport, Problem, ProblemCode};
pub use flow::{Authorizer, StepUp, WebFlow, stable_ports as stable_callback_ports};
pub use loopback::Callbacks;
pub use registration::{
    ClientOptions, MemoryRegistrations, PendingFlow, PendingFlows, REGISTRATION_METADATA_FIELDS,
    RegistrationStore, StoredRegistration, registration_metadata,
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
    /// What the user said about the client: a pre-registered id and its credentials,
    /// or a client ID metadata document URL.
    pub client: ClientOptions,
    /// Which grant to run.
    pub grant: GrantChoice,
    /// How the authorization URL reaches a browser.
    pub browser: BrowserMode,
    /// Scopes to ask for instead of the spec's selection.
    pub scopes: Option<Vec<String>>,
    /// A fixed loopback port (when the registration names an exact redirect URI).
    pub callback_port: Option<u16>,
    /// The host name in the redirect URI of a pre-registered client or a client ID
    /// metadata document (`127.0.0.1` unless the registration names `localhost`).
    /// Dynamic registrations always use `127.0.0.1` (RFC 8252 §7.3); the listener is
    /// on 127.0.0.1 either way.
    pub callback_host: CallbackHost,
    /// How long to wait for the browser (default 5 minutes).
    pub callback_timeout: Duration,
    /// Allow plain http to non-loopback hosts (development only).
    pub allow_http: bool,
    /// `client_name` for dynamic registration.
    pub client_name: String,
    /// More metadata for a dynamic registration (RFC 7591 §2): `client_name`, `scope`,
    /// `client_uri`, ... ([`REGISTRATION_METADATA_FIELDS`]; see
    /// [`registration_metadata`]). Used when keyway registers anew; a
    /// registration already stored for the issuer is reused as it is.
    pub registration_metadata: serde_json::Map<String, serde_json::Value>,
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
    /// Callbacks come back to a server of the caller's own (the settings page)
    /// instead of a loopback listener of the flow's: the authorization code flow
    /// registers and sends [`loopback::Callbacks::redirect_uri`]. Ignored when
    /// `callback_port` is set (a registration that names an exact port).
    pub callbacks: Option<loopback::Callbacks>,
    /// Whether tokens are bound to a DPoP key (RFC 9449; `--dpop`).
    pub dpop: dpop::DpopMode,
    /// Which identity-provider profile applies (`--profile`).
    pub profile: profile::ProfileChoice,
    /// Leave `resource` out of every request (`--no-resource`), for servers that
    /// refuse it.
    pub no_resource: bool,
    /// More authorization request parameters (`--authorize-param`), after the
    /// profile's (a key given here replaces the profile's).
    pub authorize_params: profile::Params,
    /// More token request parameters (`--token-param`), likewise.
    pub token_params: profile::Params,
    /// The quirks a saved server's last authorization used: they apply again when
    /// the options above name none (the profile `auto`, no flags).
    pub remembered: Option<profile::Quirks>,
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
            callback_host: CallbackHost::default(),
            registration_metadata: Default::default(),
            callback_timeout: Duration::from_secs(300),
            allow_http: false,
            client_name: "keyway".into(),
            idp: None,
            assertion: None,
            allow_paste: true,
            opener: None,
            callbacks: None,
            dpop: dpop::DpopMode::Auto,
            profile: profile::ProfileChoice::Auto,
            no_resource: false,
            authorize_params: profile::Params::default(),
            token_params: profile::Params::default(),
            remembered: None,
        }
    }
}

/// The host name of the loopback redirect URI ([`AuthOptions::callback_host`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CallbackHost {
    /// `http://127.0.0.1:PORT/callback`, as RFC 8252 §7.3 recommends.
    #[default]
    Ip,
    /// `http://localhost:PORT/callback`, for registrations that name it.
    Localhost,
}

impl CallbackHost {
    /// The host as written in the URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "127.0.0.1",
            Self::Localhost => "localhost",
        }
    }
}

/// Progress of a flow, for whoever shows it (the CLI prints it on stderr). Every
/// method does nothing by default.
pub trait Reporter: Send + Sync {
    /// Discovery finished (whether or not it selected an authorization server).
    fn discovered(&self, _report: &DiscoveryReport) {}
    /// A new client was registered and saved, with this client id.
    fn registered(&self, _kind: RegistrationKind, _client_id: &str) {}
    /// The authorization URL, and whether a browser was opened on it.
    fn authorization_url(&self, _url: &str, _browser_opened: bool) {}
    /// Paste mode: the person may paste the redirect URL or the code.
    fn waiting_for_paste(&self) {}
    /// The device grant (RFC 8628 §3.3): the person should visit `verification_uri`
    /// and enter `user_code`, or visit `complete` (the URI with the code in it) when
    /// the server gave one. All three are made printable.
    fn device_code(&self, _verification_uri: &str, _complete: Option<&str>, _user_code: &str) {}
    /// A grant was obtained from `issuer`, for the scopes asked.
    fn authorized(&self, _issuer: &str, _scopes: &[String]) {}
    /// Anything else worth telling the person (a fallback taken, a paste not understood).
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
    /// Discovery selected no authorization server; the report says what was tried
    /// (the message is its first fatal problem).
    #[error("{}", .0.fatal().map(|p| p.message.clone()).unwrap_or_else(|| "authorization discovery failed".into()))]
    Discovery(Box<DiscoveryReport>),
    /// The authorization server does not advertise PKCE S256, so no code flow starts
    /// (MCP "Authorization Code Protection").
    #[error(
        "the authorization server {issuer} {why}; MCP requires PKCE with S256, so keyway will not start a flow"
    )]
    PkceUnsupported {
        /// The authorization server.
        issuer: String,
        /// What its metadata lacks.
        why: &'static str,
    },
    /// An endpoint the server named is refused by the URL rules: nothing was sent.
    #[error("refusing the {what}: {refusal}")]
    InsecureUrl {
        /// Which endpoint (`authorization_endpoint`, `registration_endpoint`, ...).
        what: &'static str,
        /// Why.
        #[source]
        refusal: urls::UrlRefusal,
    },
    /// No client id was given, the server has no registration endpoint, and no client
    /// ID metadata document can be used (no URL given, or the server does not take them).
    #[error("the authorization server {issuer} offers no way for keyway to register{}", if *cimd_offered { " (it takes client ID metadata documents: pass --client-metadata-url)" } else { "" })]
    NoRegistration {
        /// The authorization server.
        issuer: String,
        /// Whether it takes client ID metadata documents.
        cimd_offered: bool,
    },
    /// Dynamic client registration (RFC 7591) failed: refused, no answer, or an
    /// answer keyway cannot use.
    #[error("registration at {issuer} failed: {detail}")]
    Registration {
        /// The authorization server.
        issuer: String,
        /// What went wrong, with the server's `error` when it sent one (RFC 7591 §3.2.2).
        detail: String,
    },
    /// The authorization response refused the flow (an error, a wrong `iss`, ...).
    #[error(transparent)]
    Callback(#[from] callback::Refusal),
    /// The person declined at the device grant's verification page (`access_denied`).
    #[error("authorization was declined")]
    Declined,
    /// The wait for the browser or the device code ran out.
    #[error("gave up waiting for {what} after {} s", waited.as_secs())]
    Timeout {
        /// How long keyway waited.
        waited: Duration,
        /// What it waited for.
        what: &'static str,
    },
    /// The authorization URL could not be shown or followed, and no other way to get
    /// the answer was open.
    #[error("the browser could not be used: {0}")]
    Browser(String),
    /// The loopback redirect listener could not bind its port.
    #[error("the loopback listener could not start: {0}")]
    Listener(String),
    /// The device authorization request (RFC 8628 §3.1) failed or its answer is
    /// unusable.
    #[error("the device authorization failed: {detail}")]
    Device {
        /// What went wrong.
        detail: String,
    },
    /// The token exchange at the identity provider ([`GrantChoice::EnterpriseManaged`])
    /// failed or issued no ID-JAG.
    #[error("the token exchange at the identity provider failed: {detail}")]
    IdentityProvider {
        /// What went wrong.
        detail: String,
    },
    /// The token endpoint refused or failed.
    #[error(transparent)]
    Token(#[from] token::TokenError),
    /// Step-up authorization reached its cap ([`StepUp::MAX_ATTEMPTS`]) and the server
    /// still answers `insufficient_scope`.
    #[error("the server still refuses after {attempts} authorizations (scopes asked: {scopes})")]
    StepUpExhausted {
        /// How many authorizations were made.
        attempts: u32,
        /// The scopes asked for last, space-separated.
        scopes: String,
    },
    /// The options do not fit the server or the grant (a missing client id, secret,
    /// key or assertion; an endpoint the grant needs that the server lacks), or an HTTP
    /// client or a client assertion could not be built.
    #[error("{0}")]
    Config(String),
    /// The registration or credential store failed.
    #[error("the credential store failed: {0}")]
    Store(String),
    /// Without `resource` (a profile or `--no-resource`), the server named a scope of
    /// another resource: the token would be for whatever that scope names, and it
    /// would go to this server. Nothing was sent.
    #[error(
        "the server asks for the scope {scope:?}, which is not under its own resource {resource}; without the resource parameter the token would be for whatever that scope names. Nothing was sent; pass --scope with it if you trust this server with such a token"
    )]
    ForeignScope {
        /// The scope, made printable.
        scope: String,
        /// The server's resource.
        resource: String,
    },
    /// DPoP is needed but cannot be done: the servers' algorithms are not keyway's,
    /// or a server wants DPoP while `--dpop never` is set. Nothing was sent.
    #[error(transparent)]
    DpopUnusable(#[from] dpop::Unusable),
    /// An extra request parameter names one of keyway's own.
    #[error(transparent)]
    Param(#[from] profile::ParamError),
    /// The DPoP key could not be made.
    #[error("{0}; try again, or pass --dpop never")]
    DpopKey(#[source] dpop::DpopError),
    /// A DPoP-bound token was asked for (`--dpop always`, or an MCP server that takes
    /// nothing else) and the authorization server issued a Bearer one. Nothing was
    /// stored.
    #[error(
        "the authorization server {issuer} issued a Bearer token where a DPoP-bound one was asked for{}",
        if *resource_demands { ", and the MCP server takes only DPoP-bound tokens" } else { " (--dpop always)" }
    )]
    BearerIssued {
        /// The authorization server.
        issuer: String,
        /// Whether the MCP server takes only DPoP (else `--dpop always` asked).
        resource_demands: bool,
    },
}
