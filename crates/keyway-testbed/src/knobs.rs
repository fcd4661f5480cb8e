//! Every behaviour of the testbed that a test may want to change, as one value.
//!
//! The same struct is the `keyway testbed` command line (clap `Args`), so the
//! defaults and the help text live here only. `Knobs::default()` is what the flags
//! give when none is passed.

use std::{fmt, str::FromStr, time::Duration};

use clap::{Args, Parser, ValueEnum};

/// How the testbed behaves. Start from `Knobs::default()` and change fields.
#[derive(Args, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Knobs {
    // ---------------------------------------------------------------- listeners
    /// Port of the MCP server (0 picks a free one).
    #[arg(long, default_value_t = 0, help_heading = "Listeners")]
    pub port: u16,

    /// Port of the authorization server (0 picks a free one). Ignored with --shared-origin.
    #[arg(long, default_value_t = 0, help_heading = "Listeners")]
    pub as_port: u16,

    /// Serve the authorization server on the MCP server's origin (as 2025-03-26 servers did).
    #[arg(long, help_heading = "Listeners")]
    pub shared_origin: bool,

    /// Path of the MCP endpoint.
    #[arg(long, default_value = "/mcp", help_heading = "Listeners")]
    pub mcp_path: String,

    /// Serve the MCP server over TLS with this certificate chain (PEM), offering
    /// HTTP/2 and HTTP/1.1 by ALPN; its URLs become https. Needs --tls-key. The
    /// authorization server stays plain HTTP on loopback unless --shared-origin.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        help_heading = "Listeners"
    )]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_cert",
        help_heading = "Listeners"
    )]
    pub tls_key: Option<std::path::PathBuf>,

    // ------------------------------------------------- protected resource metadata
    /// Where the protected resource metadata (RFC 9728) is served: `header` (path
    /// well-known, named in the 401's resource_metadata), `path` (path well-known only,
    /// not named in the 401), `root` (root well-known only), `custom` (at
    /// --prm-custom-path, named in the 401), `absent` (nowhere).
    #[arg(long, value_enum, default_value_t = PrmLocation::Header, help_heading = "Protected resource metadata")]
    pub prm: PrmLocation,

    /// Path of the metadata document with `--prm custom`.
    #[arg(
        long,
        default_value = "/custom/metadata/location.json",
        help_heading = "Protected resource metadata"
    )]
    pub prm_custom_path: String,

    /// Replace the `resource` value of the metadata (for mismatch tests).
    #[arg(long, value_name = "URL", help_heading = "Protected resource metadata")]
    pub prm_resource: Option<String>,

    /// List the authorization server in the metadata as this URL instead of the real issuer.
    #[arg(long, value_name = "URL", help_heading = "Protected resource metadata")]
    pub prm_authorization_server: Option<String>,

    /// `scopes_supported` of the metadata, space separated; "" leaves the field out.
    #[arg(
        long,
        default_value = "mcp:tools mcp:admin",
        help_heading = "Protected resource metadata"
    )]
    pub scopes_supported: ScopeList,

    /// `scope` of the 401 challenge, space separated; "" leaves it out.
    #[arg(
        long,
        default_value = "mcp:tools",
        help_heading = "Protected resource metadata"
    )]
    pub challenge_scope: ScopeList,

    // ---------------------------------------------------------- authorization server
    /// Path of the issuer (e.g. /tenant1); the issuer is the AS origin plus this path.
    #[arg(long, default_value = "", help_heading = "Authorization server")]
    pub issuer_path: String,

    /// Which AS metadata documents exist, comma separated: `oauth` (RFC 8414, path
    /// inserted), `oidc-insert` (OpenID, path inserted), `oidc-append` (OpenID, path
    /// appended), or `none`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "oauth,oidc-insert",
        help_heading = "Authorization server"
    )]
    pub metadata: Vec<MetadataDoc>,

    /// Put this `issuer` in the AS metadata instead of the real one (mismatch tests).
    #[arg(long, value_name = "URL", help_heading = "Authorization server")]
    pub issuer_override: Option<String>,

    /// `code_challenge_methods_supported`: `s256`, `plain-only`, `s256-and-plain`, or
    /// `absent` (field left out).
    #[arg(long, value_enum, default_value_t = PkceAdvertised::S256, help_heading = "Authorization server")]
    pub pkce: PkceAdvertised,

    /// Turn off dynamic client registration (RFC 7591): no registration_endpoint.
    #[arg(long, help_heading = "Authorization server")]
    pub no_dcr: bool,

    /// Leave RFC 7592 out of dynamic registration: the answer carries no
    /// registration_client_uri and registration_access_token, and no registration can
    /// be read or deleted.
    #[arg(long, help_heading = "Authorization server")]
    pub no_registration_management: bool,

    /// Advertise client ID metadata documents and accept https URL client ids.
    #[arg(long, help_heading = "Authorization server")]
    pub cimd: bool,

    /// A pre-registered client: `id=ID[,secret=S][,auth=METHOD][,redirect=URI]...`
    /// (auth: none, client_secret_basic, client_secret_post, or private_key_jwt with
    /// `public_key=@FILE`, the client's public key as PEM, for RFC 7523 assertions;
    /// redirect may repeat; a loopback redirect matches any port). Repeat the flag for
    /// more clients.
    #[arg(
        long = "client",
        value_name = "SPEC",
        help_heading = "Authorization server"
    )]
    pub clients: Vec<ClientSpec>,

    /// `token_endpoint_auth_methods_supported`, comma separated (private_key_jwt is
    /// added when a --client uses it); registrations get the requested method when
    /// listed, else the first (private_key_jwt only with an inline `jwks`).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "none,client_secret_basic,client_secret_post",
        help_heading = "Authorization server"
    )]
    pub token_auth_methods: Vec<TokenAuthMethod>,

    /// `scopes_supported` of the AS metadata, space separated; "" leaves the field out.
    #[arg(
        long,
        default_value = "mcp:tools mcp:admin offline_access",
        help_heading = "Authorization server"
    )]
    pub as_scopes: ScopeList,

    /// Do not advertise `authorization_response_iss_parameter_supported` (RFC 9207).
    #[arg(long, help_heading = "Authorization server")]
    pub no_iss_advertised: bool,

    /// The `iss` the authorization response carries: `right`, `wrong` (another
    /// issuer), `absent`, or `normalized` (the issuer with a trailing slash: equal only
    /// after normalization, which RFC 9207 forbids).
    #[arg(long, value_enum, default_value_t = IssMode::Right, help_heading = "Authorization server")]
    pub iss: IssMode,

    /// Put this URL in the metadata as `authorization_endpoint` (hostile-server tests:
    /// javascript:, data:, file:, http on a public host).
    #[arg(long, value_name = "URL", help_heading = "Authorization server")]
    pub authorization_endpoint_override: Option<String>,

    /// Replace (or add) one field of the AS metadata with a string: `FIELD=VALUE`,
    /// e.g. `registration_endpoint=http://[fe80::1]/register` (hostile-server tests);
    /// may repeat.
    #[arg(long = "metadata-override", value_name = "FIELD=VALUE", value_parser = parse_field_override, help_heading = "Authorization server")]
    pub metadata_overrides: Vec<(String, String)>,

    /// Deny every authorization (`error=access_denied`), device grants included.
    #[arg(long, help_heading = "Authorization server")]
    pub deny: bool,

    /// Turn off the device authorization grant (RFC 8628).
    #[arg(long, help_heading = "Authorization server")]
    pub no_device: bool,

    /// Polls answered `authorization_pending` before a device grant is approved
    /// (visiting verification_uri_complete approves at once).
    #[arg(long, default_value_t = 1, help_heading = "Authorization server")]
    pub device_pending_polls: u32,

    /// `interval` of device authorization responses, in seconds.
    #[arg(long, default_value_t = 1, help_heading = "Authorization server")]
    pub device_interval: u64,

    /// Turn off the client_credentials grant.
    #[arg(long, help_heading = "Authorization server")]
    pub no_client_credentials: bool,

    /// Turn off token revocation (RFC 7009): no revocation_endpoint.
    #[arg(long, help_heading = "Authorization server")]
    pub no_revocation: bool,

    /// Turn off token introspection (RFC 7662): no introspection_endpoint.
    #[arg(long, help_heading = "Authorization server")]
    pub no_introspection: bool,

    /// The person a grant is for when its authorization request names none with
    /// `login_hint`, and the person of every device grant: the `sub` of their tokens
    /// (client_credentials tokens have the client's id). 1 to 64 ASCII letters,
    /// digits and `-_.@`.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "testbed-user",
        value_parser = parse_subject,
        help_heading = "Authorization server"
    )]
    pub subject: String,

    // ------------------------------------------------------------------ tokens
    /// Access-token lifetime in seconds (`expires_in`).
    #[arg(long, default_value_t = 3600, help_heading = "Tokens")]
    pub token_lifetime: u64,

    /// Keep the same refresh token on refresh instead of rotating it.
    #[arg(long, help_heading = "Tokens")]
    pub no_rotation: bool,

    /// Accept a rotated-out refresh token instead of revoking its whole family.
    #[arg(long, help_heading = "Tokens")]
    pub no_reuse_detection: bool,

    /// Answer refreshes without a refresh token (the old one stays valid).
    #[arg(long, help_heading = "Tokens")]
    pub omit_refresh_token_on_refresh: bool,

    /// Never issue refresh tokens.
    #[arg(long, help_heading = "Tokens")]
    pub no_refresh_token: bool,

    /// Issue refresh tokens only when `offline_access` was granted.
    #[arg(long, help_heading = "Tokens")]
    pub refresh_requires_offline_access: bool,

    /// Refuse authorization and token requests without `resource` (RFC 8707).
    #[arg(long, help_heading = "Tokens")]
    pub require_resource: bool,

    /// Accept tokens issued for any resource (by default a token is accepted only by the
    /// resource it was issued for).
    #[arg(long, help_heading = "Tokens")]
    pub no_audience_binding: bool,

    /// Issue access tokens as JWTs (RFC 9068: `typ` at+jwt, ES256) signed by a key
    /// made at start and published at the jwks endpoint, which every metadata
    /// document then names as `jwks_uri`. Claims: iss, sub, aud (the token's resource,
    /// else the client id), client_id, scope, iat, exp, jti, and cnf.jkt when
    /// DPoP-bound. Off: opaque random access tokens and an empty JWKS.
    #[arg(long, help_heading = "Tokens")]
    pub jwt_access_tokens: bool,

    // ------------------------------------------------------------------ DPoP
    /// DPoP (RFC 9449): the AS metadata lists `dpop_signing_alg_values_supported`
    /// (ES256) and the protected resource metadata too. A token request with a valid
    /// `DPoP` proof gets `token_type` DPoP, its access and refresh tokens bound to the
    /// proof's key (`dpop_jkt` of an authorization request binds the code); one without
    /// a proof gets Bearer tokens as before. The MCP endpoint takes a bound token only
    /// as `Authorization: DPoP` with a proof (`ath`, `htm`, `htu`, fresh `jti`), and
    /// its 401 without a token carries a DPoP challenge after the Bearer one.
    #[arg(long, help_heading = "DPoP")]
    pub dpop: bool,

    /// Like --dpop, and every proof must carry the server's nonce (RFC 9449 §8, §9):
    /// a proof without the current (or previous) nonce is answered `use_dpop_nonce`
    /// with a `DPoP-Nonce` header; every answer of the token and MCP endpoints
    /// carries the current nonce.
    #[arg(long, conflicts_with = "dpop_resource_only", help_heading = "DPoP")]
    pub dpop_nonce: bool,

    /// With --dpop-nonce: a new nonce after this many accepted proofs (the previous
    /// one stays good until the next rotation); 0 never rotates.
    #[arg(long, default_value_t = 100, value_name = "N", help_heading = "DPoP")]
    pub dpop_nonce_rotate: u64,

    /// Like --dpop-nonce, but no nonce is ever good enough: every proof is answered
    /// `use_dpop_nonce` with a new nonce (a server stuck in a nonce loop).
    #[arg(long, conflicts_with = "dpop_resource_only", help_heading = "DPoP")]
    pub dpop_nonce_loop: bool,

    /// Like --dpop (DPoP advertised), but the token endpoint refuses every proof
    /// with 400 invalid_dpop_proof: a broken authorization server.
    #[arg(long, conflicts_with = "dpop_resource_only", help_heading = "DPoP")]
    pub dpop_refuse_proofs: bool,

    /// Like --dpop, and the MCP endpoint refuses the first N otherwise valid proofs
    /// as replayed (401, `DPoP error="invalid_dpop_proof"`): a client must recover
    /// by sending a fresh proof.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "dpop_resource_only",
        help_heading = "DPoP"
    )]
    pub dpop_spurious_replays: u64,

    /// The misconfigured server: the AS knows nothing of DPoP (Bearer tokens, no
    /// advertisement, proofs ignored) but the MCP endpoint demands DPoP: a request
    /// with a Bearer token or none gets 401 with only `WWW-Authenticate: DPoP`, and
    /// the protected resource metadata says `dpop_bound_access_tokens_required`.
    #[arg(long, conflicts_with = "dpop", help_heading = "DPoP")]
    pub dpop_resource_only: bool,

    // ------------------------------------------------ identity-provider quirks
    /// Make the built-in authorization server behave like this real identity provider
    /// where MCP clients trip over it, with the provider's own error texts. keycloak
    /// moves the issuer to /realms/keyway and serves only its OpenID metadata (it
    /// replaces --issuer-path and --metadata). Each request a quirk refuses counts in
    /// `quirk_refusals`.
    #[arg(
        long,
        value_enum,
        value_name = "NAME",
        help_heading = "Identity-provider quirks"
    )]
    pub idp_quirks: Option<IdpQuirks>,

    // ------------------------------------------------------ external issuer
    /// Trust an external authorization server instead of the built-in one: the metadata
    /// names this issuer, and tokens are validated by introspection (needs
    /// --introspection-url and --introspection-client).
    #[arg(long, value_name = "ISSUER", requires_all = ["introspection_url", "introspection_client"], help_heading = "External authorization server")]
    pub external_issuer: Option<String>,

    /// The external server's introspection endpoint (RFC 7662).
    #[arg(
        long,
        value_name = "URL",
        help_heading = "External authorization server"
    )]
    pub introspection_url: Option<String>,

    /// The testbed's own client at the external server, for introspection:
    /// `id=ID,secret=S` (client_secret_basic).
    #[arg(
        long,
        value_name = "SPEC",
        help_heading = "External authorization server"
    )]
    pub introspection_client: Option<ClientSpec>,

    // ------------------------------------------------------------------ faults
    /// Tools that need --step-up-scope (403 insufficient_scope without it), comma
    /// separated. `admin_only` always does.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "TOOLS",
        help_heading = "Faults"
    )]
    pub step_up_tools: Vec<String>,

    /// The scope that step-up tools need.
    #[arg(long, default_value = "mcp:admin", help_heading = "Faults")]
    pub step_up_scope: String,

    /// Answer step-up tools with 403 insufficient_scope even when the scope is held.
    #[arg(long, help_heading = "Faults")]
    pub step_up_never_satisfied: bool,

    /// Tools refused with a plain 403 (no insufficient_scope), comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "TOOLS",
        help_heading = "Faults"
    )]
    pub forbidden_tools: Vec<String>,

    /// Also serve the legacy HTTP+SSE transport (2024-11-05): GET /sse and POST
    /// /messages, behind the same bearer check.
    #[arg(long, help_heading = "Listeners")]
    pub legacy_sse: bool,

    /// Serve only the legacy HTTP+SSE transport: the Streamable HTTP endpoint answers
    /// 404 (as old servers do), so clients must fall back.
    #[arg(long, help_heading = "Listeners")]
    pub legacy_sse_only: bool,

    /// Which MCP generations the server speaks: `both` (2026-07-28 per-request
    /// metadata and the 2025 handshake revisions), `modern` (2026-07-28 only: an
    /// `initialize` is refused) or `legacy` (the handshake revisions only: a
    /// `server/discover` is refused as an unsupported version).
    #[arg(long, value_enum, default_value = "both", help_heading = "Listeners")]
    pub mcp_revision: McpRevision,

    /// What the MCP server offers: `default` (the testbed's own tools, prompt and
    /// resource) or `conformance` (the tools, prompts, resources, resource templates
    /// and completions the official MCP conformance suite's server scenarios call,
    /// with the contents they check). Served on the Streamable HTTP endpoint, under
    /// every --mcp-revision.
    #[arg(
        long,
        value_enum,
        default_value = "default",
        help_heading = "Listeners"
    )]
    pub fixture: Fixture,

    /// The interactive tools (ask_name, sample, list_roots, two_rounds) never
    /// complete for a 2026-07-28 client: every round asks again.
    #[arg(long, help_heading = "Faults")]
    pub input_required_forever: bool,

    /// Claim MCP 2026-07-28 without speaking it: `server/discover` is answered as a
    /// 2026-07-28 server would, and every other 2026-07-28 request (one with an
    /// `Mcp-Method` header) is refused with 400 "no valid session", as a server of the
    /// handshake revisions refuses a request outside a session. Use with
    /// `--mcp-revision legacy`.
    #[arg(long, help_heading = "Faults")]
    pub claims_2026: bool,

    /// Pad every `requestState` the interactive tools issue to this many bytes.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "BYTES",
        help_heading = "Faults"
    )]
    pub request_state_bytes: usize,

    /// Serve MCP without any authorization (an open server).
    #[arg(long, help_heading = "Faults")]
    pub open: bool,

    /// Answer every MCP request with 401, whatever the token.
    #[arg(long, help_heading = "Faults")]
    pub always_401: bool,

    /// After N requests to ENDPOINT, drop the connection of the next one without an
    /// answer (for `mcp`, every session is dropped too, as if the server restarted).
    /// ENDPOINT:N; may repeat.
    #[arg(long, value_name = "ENDPOINT:N", help_heading = "Faults")]
    pub drop_after: Vec<EndpointFault>,

    /// Answer the Nth request to ENDPOINT with a 5xx status (503 unless given).
    /// ENDPOINT:N[:STATUS]; may repeat.
    #[arg(long, value_name = "ENDPOINT:N[:STATUS]", help_heading = "Faults")]
    pub fail_nth: Vec<EndpointFault>,

    /// Answer a random PERCENT of the requests to ENDPOINT with 503, as an overloaded
    /// server does (for load runs; `--fail-nth` is the deterministic one).
    /// ENDPOINT:PERCENT; may repeat.
    #[arg(long, value_name = "ENDPOINT:PERCENT", help_heading = "Faults", value_parser = percent_fault)]
    pub fail_percent: Vec<EndpointFault>,

    /// Never answer a random PERCENT of the requests to ENDPOINT (the connection stays
    /// open until the client gives up), as a wedged backend does. ENDPOINT:PERCENT;
    /// may repeat.
    #[arg(long, value_name = "ENDPOINT:PERCENT", help_heading = "Faults", value_parser = percent_fault)]
    pub hang_percent: Vec<EndpointFault>,

    /// Delay every answer of ENDPOINT by MS milliseconds. ENDPOINT:MS; may repeat.
    #[arg(long, value_name = "ENDPOINT:MS", help_heading = "Faults")]
    pub delay: Vec<EndpointFault>,

    /// Pad every answer of ENDPOINT to at least BYTES bytes (JSON gets a padding field,
    /// event streams a comment). ENDPOINT:BYTES; may repeat.
    #[arg(long, value_name = "ENDPOINT:BYTES", help_heading = "Faults")]
    pub oversize: Vec<EndpointFault>,

    /// Answer every request to ENDPOINT as a hostile server would, so clients can be
    /// shown to bound what they read: `endless` (200, a body that never ends),
    /// `deep` (100,000 nested JSON arrays), `not-utf8` (0xFF 0xFE inside the first JSON
    /// string), `duplicate-keys` (the first member repeated last with another value),
    /// `close-mid-body` (half the body, then the connection closes), `redirect-loop`
    /// (307 to the same URL) or `redirect=URL` (307 to URL). ENDPOINT:KIND; may repeat.
    #[arg(long, value_name = "ENDPOINT:KIND", help_heading = "Faults")]
    pub hostile: Vec<HostileAnswer>,

    /// On each HTTP/2 connection, start a graceful shutdown (GOAWAY) when request N+1
    /// arrives, as servers behind a load balancer do; that request is still answered,
    /// and a client must open a new connection for the next.
    #[arg(long, value_name = "N", help_heading = "Faults")]
    pub h2_goaway_after: Option<u64>,
}

impl Default for Knobs {
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            knobs: Knobs,
        }
        // No arguments: clap only applies the literal defaults above, and
        // `defaults_parse` in the tests below proves they all parse.
        match Defaults::try_parse_from(["testbed"]) {
            Ok(d) => d.knobs,
            Err(e) => panic!("testbed knob defaults do not parse: {e}"),
        }
    }
}

impl Knobs {
    /// The fault rules for one endpoint.
    pub(crate) fn faults_for(&self, endpoint: Endpoint) -> EndpointFaults {
        let pick = |v: &[EndpointFault]| v.iter().find(|f| f.endpoint == endpoint).cloned();
        EndpointFaults {
            drop_after: pick(&self.drop_after).map(|f| f.n),
            fail_nth: pick(&self.fail_nth).map(|f| (f.n, f.status.unwrap_or(503))),
            delay: pick(&self.delay).map(|f| Duration::from_millis(f.n)),
            oversize: pick(&self.oversize).map(|f| f.n as usize),
            fail_percent: pick(&self.fail_percent)
                .map(|f| u8::try_from(f.n.min(100)).unwrap_or(100)),
            hang_percent: pick(&self.hang_percent)
                .map(|f| u8::try_from(f.n.min(100)).unwrap_or(100)),
            hostile: self
                .hostile
                .iter()
                .find(|h| h.endpoint == endpoint)
                .map(|h| h.kind.clone()),
        }
    }

    /// `token_endpoint_auth_methods_supported`: --token-auth-methods, and
    /// private_key_jwt when a pre-registered client uses it.
    pub(crate) fn advertised_auth_methods(&self) -> Vec<TokenAuthMethod> {
        let mut methods = self.token_auth_methods.clone();
        let jwt = TokenAuthMethod::PrivateKeyJwt;
        if !methods.contains(&jwt) && self.clients.iter().any(|c| c.auth == jwt) {
            methods.push(jwt);
        }
        methods
    }

    pub(crate) fn access_token_lifetime(&self) -> Duration {
        Duration::from_secs(self.token_lifetime)
    }

    /// The authorization server speaks DPoP (advertises it, verifies proofs, binds).
    pub(crate) fn dpop_at_as(&self) -> bool {
        !self.dpop_resource_only
            && (self.dpop
                || self.dpop_nonce
                || self.dpop_nonce_loop
                || self.dpop_refuse_proofs
                || self.dpop_spurious_replays > 0)
    }

    /// The issuer path in force: Keycloak's realm with `--idp-quirks keycloak`.
    pub(crate) fn effective_issuer_path(&self) -> &str {
        match self.idp_quirks {
            Some(IdpQuirks::Keycloak) => KEYCLOAK_REALM_PATH,
            _ => &self.issuer_path,
        }
    }

    /// The AS metadata documents served: with `--idp-quirks keycloak` only the OpenID
    /// one at the path-appended location, as Keycloak serves it.
    pub(crate) fn metadata_docs(&self) -> &[MetadataDoc] {
        match self.idp_quirks {
            Some(IdpQuirks::Keycloak) => &[MetadataDoc::OidcAppend],
            _ => &self.metadata,
        }
    }

    /// The MCP endpoint speaks DPoP (takes `Authorization: DPoP` with a proof).
    pub(crate) fn dpop_at_resource(&self) -> bool {
        self.dpop_at_as() || self.dpop_resource_only
    }
}

/// The issuer path of `--idp-quirks keycloak`: a realm named `keyway`.
pub(crate) const KEYCLOAK_REALM_PATH: &str = "/realms/keyway";

#[derive(Clone, Debug, Default)]
pub(crate) struct EndpointFaults {
    pub drop_after: Option<u64>,
    pub fail_nth: Option<(u64, u16)>,
    pub delay: Option<Duration>,
    pub oversize: Option<usize>,
    pub fail_percent: Option<u8>,
    pub hang_percent: Option<u8>,
    pub hostile: Option<HostileKind>,
}

/// `ENDPOINT:PERCENT`, PERCENT from 0 to 100.
fn percent_fault(s: &str) -> Result<EndpointFault, String> {
    let fault: EndpointFault = s.parse()?;
    if fault.n > 100 || fault.status.is_some() {
        return Err(format!(
            "{s:?}: expected ENDPOINT:PERCENT with PERCENT from 0 to 100"
        ));
    }
    Ok(fault)
}

/// Whether `s` may name a person (`--subject`, `login_hint`): 1 to 64 ASCII letters,
/// digits and `-_.@`.
pub(crate) fn valid_subject(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

fn parse_subject(s: &str) -> Result<String, String> {
    if valid_subject(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: expected 1 to 64 ASCII letters, digits and -_.@"
        ))
    }
}

fn parse_field_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?}: expected FIELD=VALUE")),
    }
}

/// The MCP generations the testbed's server speaks.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum McpRevision {
    /// 2026-07-28 and the handshake revisions.
    Both,
    /// 2026-07-28 only.
    Modern,
    /// 2025-11-25 and older only.
    Legacy,
}

/// What the testbed's MCP server offers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixture {
    /// The testbed's own tools (`TOOL_NAMES`), the prompt `greet`, the resource
    /// `testbed://readme`.
    Default,
    /// What the official MCP conformance suite's server scenarios expect.
    Conformance,
}

/// A real identity provider the built-in authorization server imitates
/// (`--idp-quirks`). RESOURCE is the MCP server's resource identifier.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdpQuirks {
    /// Microsoft Entra ID v2: `resource` refused (AADSTS9010010, AADSTS901002); scopes
    /// qualified with the resource (RESOURCE/NAME, RESOURCE/.default) and tokens
    /// carrying NAME, a bare scope refused (AADSTS650053: taken for Microsoft Graph); a
    /// refresh needs `scope`; refresh tokens only with offline_access.
    Entra,
    /// Google: `resource` refused (invalid_request); offline_access refused and not
    /// advertised; refresh tokens only with access_type=offline and prompt=consent.
    Google,
    /// Auth0: `resource` ignored; tokens are for `audience`, without it for the
    /// issuer's /userinfo (the MCP server refuses them); refresh tokens only with
    /// offline_access.
    Auth0,
    /// Okta: offline_access not advertised, yet refresh tokens only with it.
    Okta,
    /// Keycloak: issuer /realms/keyway, metadata only at
    /// /realms/keyway/.well-known/openid-configuration, endpoints under
    /// /realms/keyway/protocol/openid-connect; `resource` ignored.
    Keycloak,
    /// GitHub: the token endpoint answers errors with 200 (bad_verification_code,
    /// bad_refresh_token, ...), and form-encoded unless Accept names application/json.
    Github,
}

/// Where the protected resource metadata lives.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrmLocation {
    Header,
    Path,
    Root,
    Custom,
    Absent,
}

/// One authorization server metadata document.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetadataDoc {
    Oauth,
    OidcInsert,
    OidcAppend,
    None,
}

/// What the AS says about PKCE methods.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkceAdvertised {
    S256,
    PlainOnly,
    S256AndPlain,
    Absent,
}

impl PkceAdvertised {
    pub(crate) fn listed(self) -> Option<&'static [&'static str]> {
        match self {
            Self::S256 => Some(&["S256"]),
            Self::PlainOnly => Some(&["plain"]),
            Self::S256AndPlain => Some(&["S256", "plain"]),
            Self::Absent => None,
        }
    }

    /// Methods the authorization endpoint accepts. An AS that says nothing accepts
    /// both, as legacy servers did.
    pub(crate) fn accepts(self, method: &str) -> bool {
        self.listed()
            .unwrap_or(&["S256", "plain"])
            .contains(&method)
    }
}

/// The `iss` parameter of authorization responses.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssMode {
    Right,
    Wrong,
    Absent,
    Normalized,
}

/// Token endpoint client authentication methods the testbed implements;
/// `PrivateKeyJwt` is a JWT signed with the client's private key (RFC 7523 §2.2),
/// checked with the public key of its [`ClientSpec`].
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    // A JWT signed with the client's private key (RFC 7523 §2.2, OpenID Connect Core
    // §9), checked with the public key of its `ClientSpec`. A plain comment: a doc
    // comment would make clap list every value of --token-auth-methods on its own line.
    PrivateKeyJwt,
}

impl TokenAuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as ValueEnum>::from_str(s, false).ok()
    }
}

/// A space-separated scope list, as OAuth writes them; empty means "leave it out".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeList(pub Vec<String>);

impl ScopeList {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(scopes: I) -> Self {
        Self(scopes.into_iter().map(Into::into).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn joined(&self) -> String {
        self.0.join(" ")
    }
}

impl FromStr for ScopeList {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.split_whitespace().map(str::to_owned).collect()))
    }
}

impl fmt::Display for ScopeList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.joined())
    }
}

/// The named endpoints of the testbed, for faults and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Endpoint {
    Mcp,
    Prm,
    AsMetadata,
    Authorize,
    Token,
    Register,
    Revoke,
    Introspect,
    DeviceAuthorization,
    DeviceVerify,
    Jwks,
    Other,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mcp => "mcp",
            Self::Prm => "prm",
            Self::AsMetadata => "as_metadata",
            Self::Authorize => "authorize",
            Self::Token => "token",
            Self::Register => "register",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
            Self::DeviceAuthorization => "device_authorization",
            Self::DeviceVerify => "device_verify",
            Self::Jwks => "jwks",
            Self::Other => "other",
        }
    }
}

/// `ENDPOINT:N[:STATUS]`: a fault rule for one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointFault {
    pub endpoint: Endpoint,
    pub n: u64,
    pub status: Option<u16>,
}

impl EndpointFault {
    pub fn new(endpoint: Endpoint, n: u64) -> Self {
        Self {
            endpoint,
            n,
            status: None,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
}

impl FromStr for EndpointFault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split(':');
        let endpoint = parse_endpoint(parts.next().unwrap_or_default())?;
        let n = parts
            .next()
            .ok_or_else(|| format!("{s:?}: expected ENDPOINT:N"))?
            .parse::<u64>()
            .map_err(|e| format!("{s:?}: N is not a number: {e}"))?;
        let status = parts
            .next()
            .map(|st| match st.parse::<u16>() {
                Ok(code @ 100..=599) => Ok(code),
                _ => Err(format!("{s:?}: STATUS must be an HTTP status code")),
            })
            .transpose()?;
        if parts.next().is_some() {
            return Err(format!(
                "{s:?}: too many parts; expected ENDPOINT:N[:STATUS]"
            ));
        }
        Ok(Self {
            endpoint,
            n,
            status,
        })
    }
}

/// `ENDPOINT:KIND`: every answer of one endpoint made hostile (`--hostile`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostileAnswer {
    pub endpoint: Endpoint,
    pub kind: HostileKind,
}

impl HostileAnswer {
    pub fn new(endpoint: Endpoint, kind: HostileKind) -> Self {
        Self { endpoint, kind }
    }
}

impl FromStr for HostileAnswer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the first ':' splits: `redirect=URL` has its own.
        let (name, kind) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected ENDPOINT:KIND"))?;
        Ok(Self {
            endpoint: parse_endpoint(name)?,
            kind: kind.parse()?,
        })
    }
}

/// What a hostile answer (`--hostile`) does to the real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostileKind {
    /// 200 with the real answer's Content-Type and a body that never ends: `{"x":"`
    /// and then `x` forever for JSON, `data: ` and then `x` forever for an event
    /// stream. It is only made as fast as the client reads it.
    Endless,
    /// The real status, and for a body 100,000 `[` then 100,000 `]`
    /// (application/json): a parser that recurses overflows its stack.
    Deep,
    /// The real answer with the bytes 0xFF 0xFE inside its first JSON string value
    /// (in an event stream, in the first `data:` line that has one).
    NotUtf8,
    /// The real answer (a JSON object) with its first member repeated last with
    /// another value: `"duplicate-"` before a string, else `"duplicate"`. In an event
    /// stream, every `data:` line's object.
    DuplicateKeys,
    /// The real headers with the real Content-Length, half the body, then the
    /// connection closes (an event stream: half its first event with data, after the
    /// empty priming event, which is sent whole).
    CloseMidBody,
    /// 307 to the URL that was asked for.
    RedirectLoop,
    /// 307 to this URL (`redirect=URL`), e.g. a cloud metadata address.
    Redirect(String),
}

impl HostileKind {
    /// The name of the kind, as `--hostile` takes it and the stats count it
    /// (`redirect` for `redirect=URL`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Endless => "endless",
            Self::Deep => "deep",
            Self::NotUtf8 => "not-utf8",
            Self::DuplicateKeys => "duplicate-keys",
            Self::CloseMidBody => "close-mid-body",
            Self::RedirectLoop => "redirect-loop",
            Self::Redirect(_) => "redirect",
        }
    }
}

impl FromStr for HostileKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(url) = s.strip_prefix("redirect=") {
            // It goes into a Location header as it is: anything a header can carry,
            // relative references and odd schemes included, is fair for a hostile server.
            if url.is_empty() || http::HeaderValue::from_str(url).is_err() {
                return Err(format!(
                    "{s:?}: the URL of redirect=URL must be non-empty visible ASCII"
                ));
            }
            return Ok(Self::Redirect(url.to_owned()));
        }
        Ok(match s {
            "endless" => Self::Endless,
            "deep" => Self::Deep,
            "not-utf8" => Self::NotUtf8,
            "duplicate-keys" => Self::DuplicateKeys,
            "close-mid-body" => Self::CloseMidBody,
            "redirect-loop" => Self::RedirectLoop,
            _ => {
                return Err(format!(
                    "unknown hostile answer {s:?}; one of: endless, deep, not-utf8, \
                     duplicate-keys, close-mid-body, redirect-loop, redirect=URL"
                ));
            }
        })
    }
}

/// An endpoint by the name the fault knobs take, with the list of names when unknown.
fn parse_endpoint(name: &str) -> Result<Endpoint, String> {
    <Endpoint as ValueEnum>::from_str(name, false).map_err(|_| {
        let names: Vec<_> = Endpoint::value_variants()
            .iter()
            .map(|e| e.as_str())
            .collect();
        format!("unknown endpoint {name:?}; one of: {}", names.join(", "))
    })
}

/// A pre-registered client:
/// `id=ID[,secret=S][,auth=METHOD][,public_key=@FILE][,redirect=URI]...`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSpec {
    pub id: String,
    pub secret: Option<String>,
    pub auth: TokenAuthMethod,
    pub redirect_uris: Vec<String>,
    /// The client's public key (PEM: `PUBLIC KEY`, or `RSA PUBLIC KEY`), which checks
    /// its private_key_jwt assertions. EC (ES256, ES384), RSA (RS*, PS*) or Ed25519
    /// (EdDSA).
    pub public_key_pem: Option<String>,
}

impl fmt::Debug for ClientSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A public key is no secret, but a page of base64 helps no one reading a log.
        f.debug_struct("ClientSpec")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("auth", &self.auth)
            .field("redirect_uris", &self.redirect_uris)
            .field(
                "public_key_pem",
                &self.public_key_pem.as_ref().map(|_| "[PEM]"),
            )
            .finish()
    }
}

impl ClientSpec {
    /// A public client (auth `none`) that may redirect to any loopback port.
    pub fn public(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            secret: None,
            auth: TokenAuthMethod::None,
            redirect_uris: vec!["http://127.0.0.1/callback".into()],
            public_key_pem: None,
        }
    }

    /// A confidential client authenticating with private_key_jwt (RFC 7523): its
    /// assertions are checked with `public_key_pem`, the client's public key as PEM.
    /// It may redirect to any loopback port.
    pub fn private_key_jwt(id: impl Into<String>, public_key_pem: impl Into<String>) -> Self {
        Self {
            auth: TokenAuthMethod::PrivateKeyJwt,
            public_key_pem: Some(public_key_pem.into()),
            ..Self::public(id)
        }
    }

    /// A confidential client using `auth`.
    pub fn confidential(
        id: impl Into<String>,
        secret: impl Into<String>,
        auth: TokenAuthMethod,
    ) -> Self {
        Self {
            secret: Some(secret.into()),
            auth,
            ..Self::public(id)
        }
    }
}

impl FromStr for ClientSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut id = None;
        let mut secret = None;
        let mut auth = None;
        let mut public_key_pem = None;
        let mut redirect_uris = Vec::new();
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected key=value"))?;
            match k {
                "id" => id = Some(v.to_owned()),
                "secret" => secret = Some(v.to_owned()),
                "auth" => {
                    auth = Some(TokenAuthMethod::parse(v).ok_or_else(|| {
                        format!(
                            "auth={v:?}: one of none, client_secret_basic, \
                             client_secret_post, private_key_jwt"
                        )
                    })?)
                }
                "public_key" => {
                    let path = v
                        .strip_prefix('@')
                        .ok_or_else(|| format!("public_key={v:?}: expected @FILE (PEM)"))?;
                    let pem = std::fs::read_to_string(path)
                        .map_err(|e| format!("public_key=@{path}: {e}"))?;
                    crate::authz::assertion_key(&pem)
                        .map_err(|e| format!("public_key=@{path}: {e}"))?;
                    public_key_pem = Some(pem);
                }
                "redirect" => redirect_uris.push(v.to_owned()),
                other => return Err(format!("unknown client key {other:?}")),
            }
        }
        let id = id.ok_or("a client needs id=")?;
        let auth = auth.unwrap_or(if public_key_pem.is_some() {
            TokenAuthMethod::PrivateKeyJwt
        } else if secret.is_some() {
            TokenAuthMethod::ClientSecretBasic
        } else {
            TokenAuthMethod::None
        });
        if (auth == TokenAuthMethod::PrivateKeyJwt) != public_key_pem.is_some() {
            return Err(format!(
                "client {id:?}: public_key= goes with auth=private_key_jwt, and only with it"
            ));
        }
        if auth == TokenAuthMethod::PrivateKeyJwt && secret.is_some() {
            return Err(format!(
                "client {id:?}: a private_key_jwt client has no secret="
            ));
        }
        if matches!(
            auth,
            TokenAuthMethod::ClientSecretBasic | TokenAuthMethod::ClientSecretPost
        ) && secret.is_none()
        {
            return Err(format!(
                "client {id:?}: auth={} needs secret=",
                auth.as_str()
            ));
        }
        if redirect_uris.is_empty() {
            redirect_uris.push("http://127.0.0.1/callback".into());
        }
        Ok(Self {
            id,
            secret,
            auth,
            redirect_uris,
            public_key_pem,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let k = Knobs::default();
        assert_eq!(k.mcp_path, "/mcp");
        assert_eq!(k.prm, PrmLocation::Header);
        assert_eq!(
            k.metadata,
            vec![MetadataDoc::Oauth, MetadataDoc::OidcInsert]
        );
        assert_eq!(k.challenge_scope, ScopeList::new(["mcp:tools"]));
        assert_eq!(k.token_lifetime, 3600);
    }

    #[test]
    fn dpop_flags_parse_and_resource_only_stands_alone() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            knobs: Knobs,
        }
        let k = Cli::try_parse_from(["tb", "--dpop-nonce", "--dpop-spurious-replays", "2"])
            .unwrap()
            .knobs;
        assert!(k.dpop_nonce && k.dpop_at_as() && k.dpop_at_resource());
        assert_eq!((k.dpop_spurious_replays, k.dpop_nonce_rotate), (2, 100));
        let k = Cli::try_parse_from(["tb", "--dpop-resource-only"])
            .unwrap()
            .knobs;
        assert!(!k.dpop_at_as() && k.dpop_at_resource());
        assert!(!Knobs::default().dpop_at_resource());
        for other in ["--dpop", "--dpop-nonce", "--dpop-refuse-proofs"] {
            assert!(Cli::try_parse_from(["tb", "--dpop-resource-only", other]).is_err());
        }
    }

    #[test]
    fn subject_and_jwt_access_tokens_parse() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            knobs: Knobs,
        }
        let k = Knobs::default();
        assert_eq!(
            (k.subject.as_str(), k.jwt_access_tokens),
            ("testbed-user", false)
        );
        let k = Cli::try_parse_from([
            "tb",
            "--subject",
            "alice@example.org",
            "--jwt-access-tokens",
        ])
        .unwrap()
        .knobs;
        assert_eq!(
            (k.subject.as_str(), k.jwt_access_tokens),
            ("alice@example.org", true)
        );
        let too_long = "x".repeat(65);
        for bad in ["", "two words", "zoë", "a/b", too_long.as_str()] {
            assert!(
                Cli::try_parse_from(["tb", "--subject", bad]).is_err(),
                "{bad:?}"
            );
        }
        assert!(valid_subject(&"x".repeat(64)) && valid_subject("A-z_0.9@"));
    }

    #[test]
    fn idp_quirks_take_the_providers_names() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            knobs: Knobs,
        }
        assert_eq!(Knobs::default().idp_quirks, None);
        let names = ["entra", "google", "auth0", "okta", "keycloak", "github"];
        let parsed: Vec<_> = names
            .iter()
            .map(|n| {
                Cli::try_parse_from(["tb", "--idp-quirks", n])
                    .unwrap()
                    .knobs
                    .idp_quirks
                    .unwrap()
            })
            .collect();
        assert_eq!(parsed, IdpQuirks::value_variants());
        assert!(Cli::try_parse_from(["tb", "--idp-quirks", "azure"]).is_err());
        let k = Cli::try_parse_from(["tb", "--idp-quirks", "keycloak", "--issuer-path", "/t"])
            .unwrap()
            .knobs;
        assert_eq!(k.effective_issuer_path(), KEYCLOAK_REALM_PATH);
        assert_eq!(k.metadata_docs(), [MetadataDoc::OidcAppend]);
    }

    #[test]
    fn idp_quirks_have_their_own_help_section() {
        use clap::CommandFactory;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            knobs: Knobs,
        }
        // As `keyway testbed --help` renders it (the CLI's snapshot uses 100 columns).
        let help = Cli::command()
            .term_width(100)
            .render_long_help()
            .to_string();
        let section = help
            .split("\nIdentity-provider quirks:\n")
            .nth(1)
            .and_then(|rest| rest.split("\n\n\n").next().or(Some(rest)))
            .unwrap();
        assert!(
            section.starts_with("      --idp-quirks <NAME>\n"),
            "{section}"
        );
        for name in ["entra", "google", "auth0", "okta", "keycloak", "github"] {
            assert!(section.contains(&format!("          - {name}:")), "{name}");
        }
        if let Ok(path) = std::env::var("KEYWAY_TESTBED_HELP_OUT") {
            // To refresh keyway-cli's help snapshot by hand.
            std::fs::write(path, &help).unwrap();
        }
        let dpop = help.find("\nDPoP:\n").unwrap();
        let quirks = help.find("\nIdentity-provider quirks:\n").unwrap();
        let external = help.find("\nExternal authorization server:\n").unwrap();
        assert!(dpop < quirks && quirks < external, "{help}");
    }

    #[test]
    fn endpoint_fault_parses() {
        let f: EndpointFault = "token:2:502".parse().unwrap();
        assert_eq!(f, EndpointFault::new(Endpoint::Token, 2).with_status(502));
        assert!(
            "nope:1"
                .parse::<EndpointFault>()
                .unwrap_err()
                .contains("one of")
        );
        assert!("mcp".parse::<EndpointFault>().is_err());
        assert!("mcp:1:42".parse::<EndpointFault>().is_err());
    }

    #[test]
    fn hostile_answers_parse() {
        let h: HostileAnswer = "prm:redirect=http://169.254.169.254/latest/meta-data"
            .parse()
            .unwrap();
        assert_eq!(
            h,
            HostileAnswer::new(
                Endpoint::Prm,
                HostileKind::Redirect("http://169.254.169.254/latest/meta-data".into())
            )
        );
        for (s, kind) in [
            ("endless", HostileKind::Endless),
            ("deep", HostileKind::Deep),
            ("not-utf8", HostileKind::NotUtf8),
            ("duplicate-keys", HostileKind::DuplicateKeys),
            ("close-mid-body", HostileKind::CloseMidBody),
            ("redirect-loop", HostileKind::RedirectLoop),
        ] {
            let h: HostileAnswer = format!("as_metadata:{s}").parse().unwrap();
            assert_eq!(h, HostileAnswer::new(Endpoint::AsMetadata, kind.clone()));
            assert_eq!(kind.as_str(), s);
        }
        assert!(
            "mcp:nope"
                .parse::<HostileAnswer>()
                .unwrap_err()
                .contains("one of: endless")
        );
        assert!(
            "nope:deep"
                .parse::<HostileAnswer>()
                .unwrap_err()
                .contains("one of")
        );
        assert!("mcp".parse::<HostileAnswer>().is_err());
        assert!("mcp:redirect=".parse::<HostileAnswer>().is_err());
        assert!("mcp:redirect=a\nb".parse::<HostileAnswer>().is_err());

        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            knobs: Knobs,
        }
        let k = Cli::try_parse_from([
            "tb",
            "--hostile",
            "mcp:deep",
            "--hostile",
            "token:redirect-loop",
            "--h2-goaway-after",
            "3",
        ])
        .unwrap()
        .knobs;
        assert_eq!(k.hostile.len(), 2);
        assert_eq!(k.h2_goaway_after, Some(3));
        assert_eq!(k.faults_for(Endpoint::Mcp).hostile, Some(HostileKind::Deep));
        assert_eq!(k.faults_for(Endpoint::Prm).hostile, None);
        let off = Knobs::default();
        assert!(off.hostile.is_empty() && off.h2_goaway_after.is_none());
    }

    #[test]
    fn client_spec_parses_and_redacts() {
        let c: ClientSpec = "id=a,secret=s3cr3t,auth=client_secret_post"
            .parse()
            .unwrap();
        assert_eq!(c.auth, TokenAuthMethod::ClientSecretPost);
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(
            "id=a,auth=client_secret_basic"
                .parse::<ClientSpec>()
                .is_err()
        );
        assert_eq!(
            "id=p".parse::<ClientSpec>().unwrap().auth,
            TokenAuthMethod::None
        );
    }

    #[test]
    fn client_spec_takes_a_public_key_file_for_private_key_jwt() {
        use aws_lc_rs::{
            encoding::AsDer,
            signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _},
        };
        use base64::{Engine, engine::general_purpose::STANDARD};
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.public_key().as_der().unwrap();
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            STANDARD.encode(der.as_ref())
        );
        let dir = std::env::temp_dir().join(format!("keyway-testbed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client-key.pem");
        std::fs::write(&file, &pem).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a key").unwrap();
        let (file, junk) = (file.display(), junk.display());

        let c: ClientSpec = format!("id=k,public_key=@{file}").parse().unwrap();
        assert_eq!(c.auth, TokenAuthMethod::PrivateKeyJwt);
        assert_eq!(c.public_key_pem.as_deref(), Some(pem.as_str()));
        assert_eq!(c, ClientSpec::private_key_jwt("k", pem.clone()));
        assert!(!format!("{c:?}").contains("BEGIN"));
        let c: ClientSpec = format!("id=k,auth=private_key_jwt,public_key=@{file}")
            .parse()
            .unwrap();
        assert_eq!(c.auth, TokenAuthMethod::PrivateKeyJwt);
        for bad in [
            "id=k,auth=private_key_jwt".to_owned(),
            format!("id=k,public_key={file}"),
            format!("id=k,public_key=@{junk}"),
            format!("id=k,public_key=@{file}.missing"),
            format!("id=k,auth=client_secret_post,secret=s,public_key=@{file}"),
            format!("id=k,secret=s,public_key=@{file}"),
        ] {
            assert!(bad.parse::<ClientSpec>().is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            TokenAuthMethod::parse("private_key_jwt"),
            Some(TokenAuthMethod::PrivateKeyJwt)
        );
    }
}
