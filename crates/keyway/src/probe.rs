//! `probe`: connect without saving anything and say exactly what it takes to get in.
//! The classification is a pure function of what the connection and discovery saw.

use std::sync::Arc;

use serde::Serialize;
use url::Url;

use crate::{
    Secret,
    auth::{
        ClientOptions, DiscoveryReport, ProblemCode,
        discovery::{self, AuthTarget, MetadataSource},
        urls::UrlPolicy,
    },
    mcp::{ConnectError, Connection, ServerSummary, StaticToken},
};

/// What it takes to get in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeClass {
    /// It answers (without a token, or with the one given).
    Open,
    /// The token given was refused (keyway never starts OAuth for it).
    TokenRejected,
    /// OAuth that keyway can run.
    Oauth,
    /// It needs a token keyway cannot obtain by itself.
    TokenOnly,
    /// No answer.
    Unreachable,
    /// Anything else, including metadata that must not be trusted.
    Error,
}

impl ProbeClass {
    /// The kebab-case name shown to people and in JSON output (`token-only`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::TokenRejected => "token-rejected",
            Self::Oauth => "oauth",
            Self::TokenOnly => "token-only",
            Self::Unreachable => "unreachable",
            Self::Error => "error",
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, Serialize)]
pub struct Probe {
    /// The URL probed, as given.
    pub url: String,
    /// What it takes to get in.
    pub class: ProbeClass,
    /// Whether a token (or headers) was sent.
    pub authenticated: bool,
    /// What the server said about itself, when the handshake succeeded.
    pub server: Option<ServerSummaryOut>,
    /// The names of its tools, when listing them succeeded.
    pub tools: Vec<String>,
    /// How a client can register, for `oauth`: `pre-registered`, `cimd`, `dcr`.
    pub registration: Vec<&'static str>,
    /// The authorization server has a `device_authorization_endpoint` (RFC 8628).
    pub device: bool,
    /// The authorization server lists the `client_credentials` grant in
    /// `grant_types_supported` (RFC 8414).
    pub client_credentials: bool,
    /// What DPoP (RFC 9449) would do under `--dpop auto`, in words, when either
    /// server mentions it.
    pub dpop: Option<String>,
    /// The identity-provider profile `--profile auto` would apply, why, and what it
    /// changes.
    pub profile: Option<String>,
    /// Why it was classed so, in words: the server's challenge, the error, or the fatal
    /// discovery problem.
    pub detail: Option<String>,
    /// What discovery found, when the server answered 401 to a probe without a token.
    pub discovery: Option<DiscoveryReport>,
    /// What a person should run or do next.
    pub next_step: String,
    /// The transport that answered: `http` (Streamable HTTP) or `sse` (legacy).
    pub transport: &'static str,
    /// The HTTP status of an answer MCP does not expect (a 404 for a wrong path).
    pub status: Option<u16>,
    /// Why the server could not be reached, for [`ProbeClass::Unreachable`].
    #[serde(skip)]
    pub unreachable: Option<crate::http::ConnectCause>,
}

/// What the server said about itself in the handshake ([`ServerSummary`], serializable).
#[derive(Clone, Debug, Serialize)]
pub struct ServerSummaryOut {
    /// `serverInfo.name`, if given.
    pub name: Option<String>,
    /// `serverInfo.version`, if given.
    pub version: Option<String>,
    /// The protocol revision the server chose.
    pub protocol_version: String,
}

impl From<ServerSummary> for ServerSummaryOut {
    fn from(s: ServerSummary) -> Self {
        Self {
            name: s.name,
            version: s.version,
            protocol_version: s.protocol_version,
        }
    }
}

/// What the caller brings to a probe.
#[derive(Clone, Debug, Default)]
pub struct ProbeOptions {
    /// A static token to send as `Authorization: Bearer`.
    pub token: Option<Secret>,
    /// Extra headers on every request (API keys).
    pub headers: Vec<(http::HeaderName, Secret)>,
    /// What the caller could register with (a pre-registered id, a metadata URL).
    pub client: ClientOptions,
    /// Allow plain http to hosts that are not loopback, for the token, the headers and
    /// discovery (development only).
    pub allow_http: bool,
    /// The transport to try.
    pub transport: crate::mcp::TransportChoice,
}

/// How long [`probe_within`] waits by default: connecting, listing tools, and
/// discovery when the server asks for authorization.
pub const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// [`probe`] with an overall deadline: a server that accepts the connection and never
/// answers is [`ProbeClass::Unreachable`] once `timeout` passes.
pub async fn probe_within(
    http: &crate::http::WireClient,
    url: &str,
    opts: &ProbeOptions,
    timeout: std::time::Duration,
) -> Probe {
    match tokio::time::timeout(timeout, probe(http, url, opts)).await {
        Ok(p) => p,
        Err(_) => Probe {
            url: url.to_owned(),
            class: ProbeClass::Unreachable,
            authenticated: opts.token.is_some(),
            server: None,
            tools: Vec::new(),
            registration: Vec::new(),
            device: false,
            client_credentials: false,
            dpop: None,
            profile: None,
            detail: Some(format!("no answer within {} s", timeout.as_secs())),
            discovery: None,
            next_step: "check that the server is up; it accepted the connection but never answered"
                .into(),
            transport: "http",
            status: None,
            unreachable: Some(crate::http::ConnectCause::TimedOut),
        },
    }
}

/// Probe `url`: connect, list tools, always close; on a 401, run discovery. Saves
/// nothing. Never fails: what went wrong is in the [`Probe`] ([`ProbeClass::Error`],
/// [`ProbeClass::Unreachable`] and [`Probe::detail`]).
pub async fn probe(http: &crate::http::WireClient, url: &str, opts: &ProbeOptions) -> Probe {
    let authenticated = opts.token.is_some() || !opts.headers.is_empty();
    let mut p = Probe {
        url: url.to_owned(),
        class: ProbeClass::Error,
        authenticated,
        server: None,
        tools: Vec::new(),
        registration: Vec::new(),
        device: false,
        client_credentials: false,
        dpop: None,
        profile: None,
        detail: None,
        discovery: None,
        next_step: String::new(),
        transport: match opts.transport {
            crate::mcp::TransportChoice::LegacySse => "sse",
            _ => "http",
        },
        status: None,
        unreachable: None,
    };
    // A static token or header crosses the network only encrypted (or stays on this
    // machine), unless the caller allowed plain http.
    if authenticated
        && let Ok(parsed) = Url::parse(url)
        && let Err(e) = crate::auth::urls::may_carry_secrets(&parsed, opts.allow_http)
    {
        p.detail = Some(format!("not sending the token or headers: {e}"));
        return finish(p);
    }
    let tokens = Arc::new(StaticToken::new(opts.token.clone()));
    match Connection::open_transport(
        url,
        http.clone(),
        tokens,
        opts.headers.clone(),
        opts.transport,
    )
    .await
    {
        Ok(conn) => {
            if conn.transport() == crate::mcp::TransportChoice::LegacySse {
                p.transport = "sse";
            }
            p.server = Some(conn.server().into());
            match conn.list_tools().await {
                Ok(tools) => {
                    p.class = ProbeClass::Open;
                    p.tools = tools.iter().map(|t| t.name.to_string()).collect();
                }
                Err(e) => p.detail = Some(format!("connected, but listing tools failed: {e}")),
            }
            conn.close().await;
        }
        Err(ConnectError::AuthorizationRequired { challenge, .. }) if authenticated => {
            p.class = ProbeClass::TokenRejected;
            p.detail = challenge;
        }
        Err(ConnectError::InsufficientScope { challenge, .. }) => {
            p.class = if authenticated {
                ProbeClass::TokenRejected
            } else {
                ProbeClass::Error
            };
            p.detail = Some(format!("403: {challenge}"));
        }
        Err(ConnectError::AuthorizationRequired { challenge, .. }) => {
            let Ok(parsed) = Url::parse(url) else {
                p.detail = Some("not a URL".into());
                return finish(p);
            };
            let policy = UrlPolicy::for_server_resolved(&parsed, opts.allow_http).await;
            let values: Vec<String> = challenge.into_iter().collect();
            // Discovery follows what the server names: through the guarded client.
            let guarded = match crate::http::guarded(&policy) {
                Ok(c) => c,
                Err(e) => {
                    p.detail = Some(e.to_string());
                    return finish(p);
                }
            };
            let (report, target) = discovery::discover(&guarded, &parsed, &values, &policy).await;
            let verdict = classify(&report, target.as_ref(), &opts.client);
            p.class = verdict.class;
            p.registration = verdict.registration;
            p.device = verdict.device;
            p.client_credentials = verdict.client_credentials;
            p.dpop = dpop_line(&values, &report, target.as_ref());
            p.profile = target
                .as_ref()
                .and_then(|t| crate::auth::profile::Profile::for_issuer(&t.issuer))
                .map(|(profile, why)| {
                    format!(
                        "{} ({}, {why}): {}",
                        profile.name,
                        profile.provider,
                        profile.changes.join("; ")
                    )
                });
            p.detail = report.fatal().map(|f| f.message.clone());
            p.discovery = Some(report);
        }
        Err(ConnectError::Unreachable { reason, cause, .. }) => {
            p.class = ProbeClass::Unreachable;
            p.detail = Some(reason);
            p.unreachable = Some(cause);
        }
        Err(e) => {
            if let ConnectError::Failed { status, .. } = &e {
                p.status = *status;
            }
            p.detail = Some(e.to_string());
        }
    }
    finish(p)
}

/// What `--dpop auto` would do with these servers, when either mentions DPoP.
fn dpop_line(
    challenge: &[String],
    report: &DiscoveryReport,
    target: Option<&AuthTarget>,
) -> Option<String> {
    use crate::auth::dpop::{self, DpopMode, ResourceSignal};
    let signal = ResourceSignal::read(
        challenge,
        report
            .protected_resource
            .as_ref()
            .map(|found| &found.metadata.extra),
    );
    let advertised = target.and_then(|t| t.metadata.dpop_signing_alg_values_supported.clone());
    if !signal.offers && advertised.is_none() {
        return None;
    }
    let list = |a: &Option<Vec<String>>| {
        a.as_ref()
            .map(|l| {
                l.iter()
                    .map(|x| crate::auth::callback::printable(x))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "no algorithms named".into())
    };
    Some(
        match dpop::decide(DpopMode::Auto, advertised.as_deref(), &signal) {
            Ok(true) if signal.demands.is_some() => format!(
                "required by the MCP server: tokens will be bound to a key keyway holds (the authorization server offers {})",
                list(&advertised)
            ),
            Ok(true) => format!(
                "offered ({}): tokens will be bound to a key keyway holds",
                list(&advertised)
            ),
            Ok(false) if !signal.offers => format!(
                "offered by the authorization server ({}) but not by the MCP server: tokens will be Bearer (--dpop always binds them anyway)",
                list(&advertised)
            ),
            Ok(false) => format!(
                "offered only with {}; keyway signs with ES256, so tokens will be Bearer",
                list(&advertised)
            ),
            Err(why) => format!("cannot be done: {why}"),
        },
    )
}

fn finish(mut p: Probe) -> Probe {
    p.next_step = next_step(&p);
    p
}

/// The outcome of discovery, as a class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub class: ProbeClass,
    pub registration: Vec<&'static str>,
    pub device: bool,
    pub client_credentials: bool,
}

/// Pure: what discovery means for getting in.
pub(crate) fn classify(
    report: &DiscoveryReport,
    target: Option<&AuthTarget>,
    client: &ClientOptions,
) -> Verdict {
    let mut v = Verdict {
        class: ProbeClass::TokenOnly,
        registration: Vec::new(),
        device: false,
        client_credentials: false,
    };
    let Some(t) = target else {
        // Metadata that must not be trusted is an error; otherwise a token is needed.
        let hostile = report.problems.iter().any(|p| {
            p.fatal
                && matches!(
                    p.code,
                    ProblemCode::ResourceMismatch
                        | ProblemCode::IssuerMismatch
                        | ProblemCode::InsecureUrl
                )
        });
        if hostile {
            v.class = ProbeClass::Error;
        }
        return v;
    };
    let m = &t.metadata;
    if t.source == MetadataSource::LegacyDefaults {
        // No OAuth metadata at all: a token is what it takes (a 2025-03-26 server may
        // still take its default endpoints; `keyway authorize` tries them).
        return v;
    }
    v.device = m.device_authorization_endpoint.is_some();
    v.client_credentials = m.supports_grant("client_credentials");
    if client.client_id.is_some() {
        v.registration.push("pre-registered");
    }
    if m.supports_cimd() {
        v.registration.push("cimd");
    }
    if m.registration_endpoint.is_some() {
        v.registration.push("dcr");
    }
    let can_register = client.client_id.is_some()
        || m.registration_endpoint.is_some()
        || (m.supports_cimd() && client.client_metadata_url.is_some());
    let code_flow = m.supports_s256() && m.authorization_endpoint.is_some();
    if can_register && code_flow {
        v.class = ProbeClass::Oauth;
    }
    v
}

/// The next step after a 404: MCP servers are usually served at `/mcp` (Streamable
/// HTTP) or `/sse` (legacy HTTP+SSE), rarely at the root.
fn not_found(url: &str) -> String {
    let Ok(u) = Url::parse(url) else {
        return "check the URL's path".into();
    };
    if matches!(u.path(), "" | "/") {
        let base = url.trim_end_matches('/');
        format!(
            "nothing is served at the root: MCP servers usually listen on a path; try {base}/mcp (Streamable HTTP) or {base}/sse (legacy HTTP+SSE)"
        )
    } else {
        format!(
            "there is no MCP endpoint at {}: check the path (servers usually use /mcp, or /sse for the legacy transport)",
            u.path()
        )
    }
}

fn next_step(p: &Probe) -> String {
    let url = &p.url;
    match p.class {
        ProbeClass::Open if p.authenticated => {
            format!("keyway add {url} --token <TOKEN> to keep it")
        }
        ProbeClass::Open => format!("keyway add {url}"),
        ProbeClass::TokenRejected => {
            "the server refused this token: get a new one from its operator".into()
        }
        ProbeClass::Oauth => format!(
            "keyway add {url} (authorizes in your browser; --device or --browser none without one)"
        ),
        ProbeClass::TokenOnly if p.registration.contains(&"cimd") => format!(
            "keyway add {url} --client-metadata-url <URL> (the server takes client ID metadata documents), or --token <TOKEN>"
        ),
        ProbeClass::TokenOnly => format!(
            "keyway add {url} --token <TOKEN> (get an access token from the server's operator), or --client-id for a pre-registered client"
        ),
        ProbeClass::Unreachable => p
            .unreachable
            .unwrap_or(crate::http::ConnectCause::Other)
            .next_step(url),
        ProbeClass::Error => match p.discovery.as_ref().and_then(DiscoveryReport::fatal) {
            Some(f)
                if matches!(
                    f.code,
                    ProblemCode::ResourceMismatch | ProblemCode::IssuerMismatch
                ) =>
            {
                "do not authorize: the server's metadata points elsewhere; tell its operator".into()
            }
            _ if p.status == Some(404) => not_found(url),
            _ => "run with -v for details; the server answered, but not as an MCP server should"
                .into(),
        },
    }
}
