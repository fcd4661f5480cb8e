//! Discovery: from a 401 challenge to a validated authorization server, recording
//! every URL tried, what came back, and every problem found ([`DiscoveryReport`]).
//!
//! Order (MCP 2025-11-25 / 2026-07-28): the challenge's `resource_metadata`, else the
//! path-inserted then root well-known PRM; then each `authorization_servers` entry's
//! metadata in the spec's order. Without any PRM, the 2025-03-26 rules: RFC 8414
//! metadata at the MCP origin, else the default endpoints.

use serde::Serialize;
use url::Url;

use super::{
    callback::printable,
    challenge::{self, BearerChallenge},
    fetch::{Fetched, get_json},
    metadata::{AuthServerMetadata, ProtectedResourceMetadata},
    urls::{self, UrlPolicy},
};

/// Everything discovery learned and tried.
#[derive(Clone, Debug, Serialize)]
pub struct DiscoveryReport {
    /// The MCP server URL discovery ran for.
    pub mcp_url: String,
    /// The Bearer challenge of the 401, if there was one.
    pub challenge: Option<ChallengeSummary>,
    /// Every URL fetched, in order.
    pub steps: Vec<Step>,
    /// The protected resource metadata used, if any was found and accepted.
    pub protected_resource: Option<FoundResource>,
    /// The authorization server selected, if one was.
    pub authorization_server: Option<FoundServer>,
    /// What is wrong or missing, in the order found.
    pub problems: Vec<Problem>,
}

/// What the Bearer challenge of the 401 said (RFC 6750 §3, RFC 9728 §5.1).
#[derive(Clone, Debug, Serialize)]
pub struct ChallengeSummary {
    /// `resource_metadata`: the protected resource metadata URL it named.
    pub resource_metadata: Option<String>,
    /// `scope`, split on spaces.
    pub scope: Option<Vec<String>>,
    /// `error` (`invalid_token`, `insufficient_scope`, ...).
    pub error: Option<String>,
}

/// One metadata URL discovery fetched, and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// `protected_resource_metadata` or `authorization_server_metadata`.
    pub purpose: &'static str,
    /// The URL fetched.
    pub url: String,
    /// The HTTP status, if an answer came.
    pub status: Option<u16>,
    /// `used`, `not_found`, `rejected`, `failed`.
    pub outcome: &'static str,
    /// Why it was not used: the check that failed, or what the fetch reported (a
    /// transport error, the start of an error body, a redirect not followed).
    pub detail: Option<String>,
}

/// The protected resource metadata discovery accepted (RFC 9728).
#[derive(Clone, Debug, Serialize)]
pub struct FoundResource {
    /// Where it was fetched from.
    pub url: String,
    /// The document, validated against the MCP server URL (RFC 9728 §3.3).
    pub metadata: ProtectedResourceMetadata,
}

/// The authorization server discovery selected.
#[derive(Clone, Debug, Serialize)]
pub struct FoundServer {
    /// Its issuer identifier, equal to the metadata's `issuer` (RFC 8414 §3.3).
    pub issuer: String,
    /// Where the metadata came from (absent for 2025-03-26 default endpoints).
    pub metadata_url: Option<String>,
    /// How it was found.
    pub source: MetadataSource,
    /// Its metadata (for [`MetadataSource::LegacyDefaults`], the default endpoints).
    pub metadata: AuthServerMetadata,
}

/// How the authorization server was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MetadataSource {
    /// Through protected resource metadata (2025-06-18 and later).
    ProtectedResource,
    /// 2025-03-26: RFC 8414 metadata at the MCP server's origin.
    LegacyOrigin,
    /// 2025-03-26: no metadata at all; the default /authorize, /token, /register.
    LegacyDefaults,
}

/// Something wrong or missing. `fatal` problems stop an authorization flow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What kind of problem, for programs (the CLI picks its hint by it).
    pub code: ProblemCode,
    /// Whether it stops an authorization flow (discovery then names no
    /// authorization server).
    pub fatal: bool,
    /// What is wrong, in the server's terms, for people.
    pub message: String,
}

/// The kinds of [`Problem`]. Serialized in snake_case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProblemCode {
    /// The 401 carries no Bearer challenge.
    NoBearerChallenge,
    /// The Bearer challenge names no `resource_metadata` (RFC 9728 §5.1); the
    /// well-known locations are probed instead.
    NoResourceMetadataInChallenge,
    /// The `resource_metadata` URL the challenge named did not answer with metadata;
    /// fatal when no metadata was found elsewhere either.
    ResourceMetadataUnusable,
    /// No protected resource metadata anywhere: treated as a 2025-03-26 server.
    NoProtectedResourceMetadata,
    /// The protected resource metadata is for another resource (RFC 9728 §3.3).
    /// Fatal.
    ResourceMismatch,
    /// The protected resource metadata lists no `authorization_servers`. Fatal.
    NoAuthorizationServers,
    /// A URL from the server is refused by the [`UrlPolicy`] (fatal for the
    /// `resource_metadata` URL and the token endpoint).
    InsecureUrl,
    /// No authorization server named answered with usable metadata. Fatal.
    AuthServerMetadataMissing,
    /// Authorization server metadata names another `issuer` (RFC 8414 §3.3); fatal
    /// when no other metadata could be used.
    IssuerMismatch,
    /// No `code_challenge_methods_supported`: a code flow will not start.
    PkceNotAdvertised,
    /// `code_challenge_methods_supported` lacks `S256`: a code flow will not start.
    NoS256,
    /// `response_types_supported` lacks `code`.
    NoCodeResponseType,
    /// The metadata has no `token_endpoint`. Fatal.
    MissingEndpoint,
    /// No metadata at all: the 2025-03-26 default endpoints `/authorize`, `/token`
    /// and `/register` at the MCP server's origin are used.
    LegacyDefaultEndpoints,
}

impl DiscoveryReport {
    /// The first fatal problem, if any: when there is one, discovery named no
    /// authorization server.
    pub fn fatal(&self) -> Option<&Problem> {
        self.problems.iter().find(|p| p.fatal)
    }

    /// Whether a problem of kind `code` was found.
    pub fn has(&self, code: ProblemCode) -> bool {
        self.problems.iter().any(|p| p.code == code)
    }

    fn problem(&mut self, code: ProblemCode, fatal: bool, message: impl Into<String>) {
        self.problems.push(Problem {
            code,
            fatal,
            message: message.into(),
        });
    }

    fn step(
        &mut self,
        purpose: &'static str,
        url: &Url,
        fetched: &Fetched,
        outcome: &'static str,
        detail: Option<String>,
    ) {
        let (status, fetch_detail) = match fetched {
            Fetched::Json { status, .. } => (Some(*status), None),
            Fetched::Status { status, detail } => {
                (Some(*status).filter(|s| *s != 0), Some(detail.clone()))
            }
            Fetched::Failed { detail } => (None, Some(detail.clone())),
        };
        self.steps.push(Step {
            purpose,
            url: url.to_string(),
            status,
            outcome,
            detail: detail.or(fetch_detail).filter(|d| !d.is_empty()),
        });
    }
}

/// What an authorization flow needs from discovery.
#[derive(Clone, Debug)]
pub struct AuthTarget {
    /// The resource indicator to send (RFC 8707): the validated PRM `resource`, or the
    /// canonical MCP URL for 2025-03-26 servers.
    pub resource: String,
    /// The selected authorization server's issuer identifier.
    pub issuer: String,
    /// Its metadata, validated; endpoints are still checked by each flow.
    pub metadata: AuthServerMetadata,
    /// How it was found.
    pub source: MetadataSource,
    /// `scope` of the 401 challenge.
    pub challenge_scope: Option<Vec<String>>,
    /// `scopes_supported` of the protected resource metadata.
    pub resource_scopes: Option<Vec<String>>,
}

const PRM: &str = "protected_resource_metadata";
const ASM: &str = "authorization_server_metadata";

/// Run discovery for `mcp_url` given the `WWW-Authenticate` values of its 401: every
/// fetch goes through `http` and every URL the server names is checked by `policy`.
/// Never fails: the report says what was tried and found; the target is `Some` only
/// when an authorization server was selected and no problem is fatal.
pub async fn discover(
    http: &reqwest::Client,
    mcp_url: &Url,
    www_authenticate: &[String],
    policy: &UrlPolicy,
) -> (DiscoveryReport, Option<AuthTarget>) {
    let bearer: Option<BearerChallenge> =
        challenge::bearer(www_authenticate.iter().map(String::as_str));
    let mut report = DiscoveryReport {
        mcp_url: mcp_url.to_string(),
        challenge: bearer.as_ref().map(|b| ChallengeSummary {
            resource_metadata: b.resource_metadata.clone(),
            scope: b.scope.clone(),
            error: b.error.clone(),
        }),
        steps: Vec::new(),
        protected_resource: None,
        authorization_server: None,
        problems: Vec::new(),
    };
    match &bearer {
        None => report.problem(
            ProblemCode::NoBearerChallenge,
            false,
            "the 401 carries no Bearer challenge (WWW-Authenticate)",
        ),
        Some(b) if b.resource_metadata.is_none() => report.problem(
            ProblemCode::NoResourceMetadataInChallenge,
            false,
            "the Bearer challenge does not name resource_metadata; probing the well-known locations",
        ),
        Some(_) => {}
    }

    let prm = find_prm(http, mcp_url, bearer.as_ref(), policy, &mut report).await;
    if report.fatal().is_some() {
        return (report, None);
    }
    let challenge_scope = bearer.as_ref().and_then(|b| b.scope.clone());
    let target = match prm {
        Some(found) => {
            let resource = found.metadata.resource.clone();
            let resource_scopes = found.metadata.scopes_supported.clone();
            let servers = found.metadata.authorization_servers.clone();
            report.protected_resource = Some(found);
            let server = find_server(http, &servers, policy, &mut report).await;
            server.map(|(issuer, metadata)| AuthTarget {
                resource,
                issuer,
                metadata,
                source: MetadataSource::ProtectedResource,
                challenge_scope,
                resource_scopes,
            })
        }
        // A server whose challenge names its resource metadata is no 2025-03-26
        // server: when that metadata cannot be had (and none is at the well-known
        // places), its endpoints are not guessed from its origin.
        None if report.has(ProblemCode::ResourceMetadataUnusable) => {
            report
                .problems
                .iter_mut()
                .filter(|p| p.code == ProblemCode::ResourceMetadataUnusable)
                .for_each(|p| p.fatal = true);
            None
        }
        None => legacy_server(http, mcp_url, policy, &mut report).await.map(
            |(issuer, metadata, source)| AuthTarget {
                resource: urls::canonical_resource(mcp_url),
                issuer,
                metadata,
                source,
                challenge_scope,
                resource_scopes: None,
            },
        ),
    };
    if let Some(t) = &target {
        check_server(t, policy, &mut report);
    }
    let target = target.filter(|_| report.fatal().is_none());
    (report, target)
}

async fn find_prm(
    http: &reqwest::Client,
    mcp_url: &Url,
    bearer: Option<&BearerChallenge>,
    policy: &UrlPolicy,
    report: &mut DiscoveryReport,
) -> Option<FoundResource> {
    let mut candidates = Vec::new();
    if let Some(named) = bearer.and_then(|b| b.resource_metadata.as_deref()) {
        match policy.check(named) {
            Ok(u) => candidates.push(u),
            Err(e) => report.problem(
                ProblemCode::InsecureUrl,
                true,
                format!("resource_metadata: {e}"),
            ),
        }
        if report.fatal().is_some() {
            return None;
        }
    }
    let named_count = candidates.len();
    for u in urls::prm_well_known(mcp_url) {
        if !candidates.contains(&u) {
            candidates.push(u);
        }
    }
    for (i, url) in candidates.iter().enumerate() {
        let fetched = get_json(http, url, policy).await;
        let Fetched::Json { body, .. } = &fetched else {
            let outcome = if matches!(fetched, Fetched::Status { status: 404, .. }) {
                "not_found"
            } else {
                "failed"
            };
            report.step(PRM, url, &fetched, outcome, None);
            if i < named_count {
                unusable_named(report, url);
            }
            continue;
        };
        let metadata = match read_resource_metadata(body, mcp_url) {
            Ok(m) => m,
            Err(refusal) => {
                report.step(PRM, url, &fetched, "rejected", Some(refusal.to_string()));
                match refusal {
                    PrmRefusal::Malformed(_) => {
                        if i < named_count {
                            unusable_named(report, url);
                        }
                        continue;
                    }
                    PrmRefusal::ResourceMismatch { resource } => report.problem(
                        ProblemCode::ResourceMismatch,
                        true,
                        format!(
                            "the protected resource metadata at {} is for {resource:?}, not {}: refusing it (RFC 9728 §3.3)",
                            urls::redacted(url),
                            urls::redacted(mcp_url)
                        ),
                    ),
                    PrmRefusal::NoAuthorizationServers => report.problem(
                        ProblemCode::NoAuthorizationServers,
                        true,
                        format!(
                            "the protected resource metadata at {} lists no authorization server",
                            urls::redacted(url)
                        ),
                    ),
                }
                return None;
            }
        };
        report.step(PRM, url, &fetched, "used", None);
        return Some(FoundResource {
            url: url.to_string(),
            metadata,
        });
    }
    None
}

/// The challenge's `resource_metadata` URL gave nothing usable (fatal later when no
/// metadata is found elsewhere either).
fn unusable_named(report: &mut DiscoveryReport, url: &Url) {
    report.problem(
        ProblemCode::ResourceMetadataUnusable,
        false,
        format!(
            "the resource_metadata URL named by the challenge ({}) did not answer with usable metadata; the server's operator can fix it, or add the server with a static token (--token)",
            urls::redacted(url)
        ),
    );
}

async fn find_server(
    http: &reqwest::Client,
    issuers: &[String],
    policy: &UrlPolicy,
    report: &mut DiscoveryReport,
) -> Option<(String, AuthServerMetadata)> {
    for issuer in issuers {
        let issuer_url = match policy.check(issuer) {
            Ok(u) if u.query().is_none() && u.fragment().is_none() => u,
            Ok(_) => {
                report.problem(
                    ProblemCode::InsecureUrl,
                    false,
                    format!("issuer {issuer} has a query or fragment (RFC 8414 §2)"),
                );
                continue;
            }
            Err(e) => {
                report.problem(
                    ProblemCode::InsecureUrl,
                    false,
                    format!("authorization server: {e}"),
                );
                continue;
            }
        };
        if let Some(m) = fetch_server_metadata(
            http,
            issuer,
            &urls::as_metadata_urls(&issuer_url),
            policy,
            report,
        )
        .await
        {
            return Some((issuer.clone(), m));
        }
    }
    if !report.has(ProblemCode::IssuerMismatch) {
        report.problem(
            ProblemCode::AuthServerMetadataMissing,
            true,
            format!(
                "no usable authorization server metadata for {}",
                issuers.join(", ")
            ),
        );
    } else {
        report
            .problems
            .iter_mut()
            .filter(|p| p.code == ProblemCode::IssuerMismatch)
            .for_each(|p| p.fatal = true);
    }
    None
}

/// The validated metadata of the authorization server `issuer` itself (RFC 8414 §3,
/// then OpenID Connect discovery; the `issuer` it names must be exactly this one),
/// for a protected resource of keyway's own (the team gateway). `Err`: the report of
/// what was tried; its [`DiscoveryReport::fatal`] problem says why none is usable.
pub async fn authorization_server(
    http: &reqwest::Client,
    issuer: &str,
    policy: &UrlPolicy,
) -> Result<AuthServerMetadata, Box<DiscoveryReport>> {
    let mut report = DiscoveryReport {
        mcp_url: issuer.to_owned(),
        challenge: None,
        steps: Vec::new(),
        protected_resource: None,
        authorization_server: None,
        problems: Vec::new(),
    };
    match find_server(http, &[issuer.to_owned()], policy, &mut report).await {
        Some((_, metadata)) => Ok(metadata),
        None => Err(Box::new(report)),
    }
}

/// Try each metadata URL; the first whose `issuer` is exactly `issuer` wins.
async fn fetch_server_metadata(
    http: &reqwest::Client,
    issuer: &str,
    candidates: &[Url],
    policy: &UrlPolicy,
    report: &mut DiscoveryReport,
) -> Option<AuthServerMetadata> {
    for url in candidates {
        let fetched = get_json(http, url, policy).await;
        let Fetched::Json { body, .. } = &fetched else {
            let outcome = if matches!(fetched, Fetched::Status { status: 404, .. }) {
                "not_found"
            } else {
                "failed"
            };
            report.step(ASM, url, &fetched, outcome, None);
            continue;
        };
        let metadata = match read_server_metadata(body, issuer) {
            Ok(m) => m,
            Err(refusal) => {
                report.step(ASM, url, &fetched, "rejected", Some(refusal.to_string()));
                if let AsRefusal::IssuerMismatch { named } = refusal {
                    report.problem(
                        ProblemCode::IssuerMismatch,
                        false,
                        format!(
                            "the metadata at {} names issuer {named:?}, not {issuer:?}: refusing it (RFC 8414 §3.3)",
                            urls::redacted(url)
                        ),
                    );
                }
                continue;
            }
        };
        report.step(ASM, url, &fetched, "used", None);
        report.authorization_server = Some(FoundServer {
            issuer: issuer.to_owned(),
            metadata_url: Some(url.to_string()),
            source: MetadataSource::ProtectedResource,
            metadata: metadata.clone(),
        });
        return Some(metadata);
    }
    None
}

/// Why a protected resource metadata document (RFC 9728) was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PrmRefusal {
    /// Not the document's shape; the next candidate URL is tried.
    #[error("malformed metadata: {0}")]
    Malformed(String),
    /// For another resource (RFC 9728 §3.3): discovery stops.
    #[error("resource does not match the server URL")]
    ResourceMismatch {
        /// The `resource` it names, made printable.
        resource: String,
    },
    /// No `authorization_servers`: discovery stops.
    #[error("no authorization_servers")]
    NoAuthorizationServers,
}

/// Read a protected resource metadata document fetched for `mcp_url`. Pure: the
/// server's bytes decide only the result, and every text in a refusal is printable.
pub(crate) fn read_resource_metadata(
    body: &serde_json::Value,
    mcp_url: &Url,
) -> Result<ProtectedResourceMetadata, PrmRefusal> {
    let metadata: ProtectedResourceMetadata = serde_json::from_value(body.clone())
        .map_err(|e| PrmRefusal::Malformed(printable(&e.to_string())))?;
    if !urls::resource_matches(&metadata.resource, mcp_url) {
        return Err(PrmRefusal::ResourceMismatch {
            resource: printable(&metadata.resource),
        });
    }
    if metadata.authorization_servers.is_empty() {
        return Err(PrmRefusal::NoAuthorizationServers);
    }
    Ok(metadata)
}

/// Why an authorization server metadata document (RFC 8414) was refused; either
/// way the next candidate URL is tried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AsRefusal {
    /// Not the document's shape.
    #[error("malformed metadata: {0}")]
    Malformed(String),
    /// Names another issuer (RFC 8414 §3.3, by simple string comparison).
    #[error("issuer is {named:?}")]
    IssuerMismatch {
        /// The `issuer` it names, made printable.
        named: String,
    },
}

/// Read an authorization server metadata document fetched for `issuer`. Pure.
pub(crate) fn read_server_metadata(
    body: &serde_json::Value,
    issuer: &str,
) -> Result<AuthServerMetadata, AsRefusal> {
    let metadata: AuthServerMetadata = serde_json::from_value(body.clone())
        .map_err(|e| AsRefusal::Malformed(printable(&e.to_string())))?;
    if metadata.issuer != issuer {
        return Err(AsRefusal::IssuerMismatch {
            named: printable(&metadata.issuer),
        });
    }
    Ok(metadata)
}

/// 2025-03-26: no protected resource metadata. The MCP origin is the issuer.
async fn legacy_server(
    http: &reqwest::Client,
    mcp_url: &Url,
    policy: &UrlPolicy,
    report: &mut DiscoveryReport,
) -> Option<(String, AuthServerMetadata, MetadataSource)> {
    report.problem(
        ProblemCode::NoProtectedResourceMetadata,
        false,
        "no protected resource metadata (RFC 9728); treating it as a 2025-03-26 server",
    );
    let issuer = urls::origin_string(mcp_url);
    let mut root = urls::origin_url(mcp_url);
    root.set_path("/.well-known/oauth-authorization-server");
    let mismatches_before = report.problems.len();
    if let Some(m) =
        fetch_server_metadata(http, &issuer, std::slice::from_ref(&root), policy, report).await
    {
        if let Some(found) = &mut report.authorization_server {
            found.source = MetadataSource::LegacyOrigin;
        }
        return Some((issuer, m, MetadataSource::LegacyOrigin));
    }
    if report.problems.len() > mismatches_before {
        report
            .problems
            .iter_mut()
            .filter(|p| p.code == ProblemCode::IssuerMismatch)
            .for_each(|p| p.fatal = true);
        return None;
    }
    report.problem(
        ProblemCode::LegacyDefaultEndpoints,
        false,
        "no authorization server metadata either; using the 2025-03-26 default endpoints /authorize, /token, /register",
    );
    let at = |p: &str| format!("{issuer}{p}");
    let metadata = AuthServerMetadata {
        issuer: issuer.clone(),
        authorization_endpoint: Some(at("/authorize")),
        token_endpoint: Some(at("/token")),
        registration_endpoint: Some(at("/register")),
        // 2025-03-26 requires PKCE S256 of clients, and these are its endpoints.
        code_challenge_methods_supported: Some(vec!["S256".into()]),
        response_types_supported: Some(vec!["code".into()]),
        ..AuthServerMetadata::default()
    };
    report.authorization_server = Some(FoundServer {
        issuer: issuer.clone(),
        metadata_url: None,
        source: MetadataSource::LegacyDefaults,
        metadata: metadata.clone(),
    });
    Some((issuer, metadata, MetadataSource::LegacyDefaults))
}

/// The checks on a selected server that decide whether a code flow may start.
pub(crate) fn check_server(t: &AuthTarget, policy: &UrlPolicy, report: &mut DiscoveryReport) {
    let m = &t.metadata;
    match &m.code_challenge_methods_supported {
        None => report.problem(
            ProblemCode::PkceNotAdvertised,
            false,
            "the authorization server does not advertise code_challenge_methods_supported; MCP clients must refuse to start a flow",
        ),
        Some(_) if !m.supports_s256() => report.problem(
            ProblemCode::NoS256,
            false,
            "the authorization server does not support PKCE S256",
        ),
        Some(_) => {}
    }
    if m.response_types_supported
        .as_ref()
        .is_some_and(|r| !r.iter().any(|x| x == "code"))
    {
        report.problem(
            ProblemCode::NoCodeResponseType,
            false,
            "the authorization server does not offer response_type=code",
        );
    }
    for (name, value) in [
        ("authorization_endpoint", &m.authorization_endpoint),
        ("token_endpoint", &m.token_endpoint),
        ("registration_endpoint", &m.registration_endpoint),
        (
            "device_authorization_endpoint",
            &m.device_authorization_endpoint,
        ),
        ("revocation_endpoint", &m.revocation_endpoint),
    ] {
        match value {
            Some(v) => {
                if let Err(e) = policy.check(v) {
                    let fatal = name == "token_endpoint";
                    report.problem(ProblemCode::InsecureUrl, fatal, format!("{name}: {e}"));
                }
            }
            None if name == "token_endpoint" => report.problem(
                ProblemCode::MissingEndpoint,
                true,
                "the authorization server metadata has no token_endpoint",
            ),
            None => {}
        }
    }
}
