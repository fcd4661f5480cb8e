//! Counters a test reads to see what a client did (also served as JSON on
//! `GET /_testbed/stats`).

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::knobs::Endpoint;

/// How many recent authorization and token requests are kept for inspection.
const LOG_LEN: usize = 64;

/// A snapshot of the testbed's counters.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Requests per named endpoint (`mcp`, `token`, ...).
    pub endpoints: BTreeMap<String, u64>,
    /// Requests per `METHOD path`, including paths the testbed does not serve.
    pub paths: BTreeMap<String, u64>,
    /// Authorization codes issued (approved authorization requests).
    pub authorizations: u64,
    /// Authorization requests denied (`--deny`).
    pub denials: u64,
    /// Authorization codes exchanged for tokens.
    pub code_exchanges: u64,
    /// Successful refresh_token grants.
    pub refreshes: u64,
    /// Refresh token families revoked because a rotated-out token was used again.
    pub reuse_revocations: u64,
    /// Clients registered dynamically (RFC 7591).
    pub registrations: u64,
    /// Registrations read at their client configuration endpoint (RFC 7592 `GET`).
    pub registration_reads: u64,
    /// Registrations deleted at their client configuration endpoint (RFC 7592
    /// `DELETE`).
    pub registration_deletes: u64,
    /// Successful client_credentials grants.
    pub client_credentials_grants: u64,
    /// Successful device_code grants.
    pub device_grants: u64,
    /// Tokens revoked through the revocation endpoint.
    pub revocations: u64,
    /// Token requests refused (any OAuth error).
    pub token_errors: u64,
    /// MCP requests refused with 401.
    pub unauthorized: u64,
    /// MCP requests refused with 403 insufficient_scope.
    pub insufficient_scope: u64,
    /// Connections dropped on purpose (`--drop-after`).
    pub dropped_connections: u64,
    /// Answers replaced by an injected 5xx (`--fail-nth`).
    pub injected_failures: u64,
    /// Answers made hostile (`--hostile`), per kind: `endless`, `deep`, `not-utf8`,
    /// `duplicate-keys`, `close-mid-body`, `redirect-loop`, `redirect`.
    pub hostile_answers: BTreeMap<String, u64>,
    /// Endless answers (`--hostile ENDPOINT:endless`) that stopped, as they do when
    /// their client hangs up: none goes on being made for no one.
    pub endless_answers_stopped: u64,
    /// HTTP/2 connections told to go away (`--h2-goaway-after`).
    pub goaways_sent: u64,
    /// Requests answered 503 by `--fail-percent`.
    pub random_failures: u64,
    /// Requests never answered by `--hang-percent`.
    pub random_hangs: u64,
    /// Connections accepted on every listener, HTTP/1.1 and HTTP/2 alike.
    pub connections_accepted: u64,
    /// MCP requests that carried a token the testbed accepted.
    pub authorized_mcp_requests: u64,
    /// MCP requests that carried any bearer token at all (accepted or not).
    pub mcp_requests_with_token: u64,
    /// `slow` calls stopped by their client's `notifications/cancelled`.
    pub cancelled_calls: u64,
    /// The most `slow` calls that ran at the same time.
    pub most_slow_calls_at_once: u64,
    /// `resources/subscribe` requests served (MCP's handshake revisions).
    pub resource_subscribes: u64,
    /// `resources/unsubscribe` requests served.
    pub resource_unsubscribes: u64,
    /// Connections the MCP server's listener accepted.
    pub mcp_connections: u64,
    /// Requests that came over HTTP/2.
    pub http2_requests: u64,
    /// DPoP proofs accepted, at the token endpoint and the MCP endpoint.
    pub dpop_proofs_accepted: u64,
    /// Requests refused with `invalid_dpop_proof` (a bad, missing, replayed or
    /// spuriously "replayed" proof, or one by the wrong key).
    pub dpop_proofs_refused: u64,
    /// Proofs answered `use_dpop_nonce` (`--dpop-nonce`).
    pub dpop_nonce_challenges: u64,
    /// Proofs refused as replayed (counted in `dpop_proofs_refused` too), the
    /// spurious ones of `--dpop-spurious-replays` included.
    pub dpop_replays_refused: u64,
    /// Token responses whose tokens were DPoP-bound (`token_type` DPoP).
    pub dpop_bound_tokens_issued: u64,
    /// Access tokens the token endpoint issued, per subject (the person, or the
    /// client's id for client_credentials).
    pub tokens_by_subject: BTreeMap<String, u64>,
    /// Requests refused by an `--idp-quirks` rule (authorization, device
    /// authorization and token requests), e.g. Entra refusing `resource`.
    pub quirk_refusals: u64,
    /// The last authorization requests, oldest first.
    pub authorize_log: VecDeque<AuthorizeSeen>,
    /// The last token requests, oldest first.
    pub token_log: VecDeque<TokenSeen>,
    /// The metadata of the last dynamic registration request, as sent.
    pub last_registration: Option<serde_json::Value>,
}

/// What an authorization request asked for.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct AuthorizeSeen {
    pub client_id: String,
    pub redirect_uri: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub code_challenge_method: Option<String>,
    pub has_state: bool,
    /// `dpop_jkt` (RFC 9449 §10), as sent.
    pub dpop_jkt: Option<String>,
    /// `audience` (Auth0's resource parameter), as sent.
    pub audience: Option<String>,
    /// `access_type` (Google's way to ask for a refresh token), as sent.
    pub access_type: Option<String>,
    /// `prompt`, as sent.
    pub prompt: Option<String>,
    /// `login_hint` (the person, when the client names one), as sent.
    pub login_hint: Option<String>,
}

/// What a token request asked for (never the secrets it carried).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[non_exhaustive]
pub struct TokenSeen {
    pub grant_type: String,
    pub client_id: Option<String>,
    /// How the client authenticated: none, client_secret_basic, client_secret_post,
    /// private_key_jwt (`unauthenticated` when it did not).
    pub client_auth: String,
    pub scope: Option<String>,
    pub resource: Option<String>,
    /// `audience` (Auth0's resource parameter), as sent.
    pub audience: Option<String>,
    /// Whether the request carried a `DPoP` header.
    pub dpop_proof: bool,
    /// `ok` or the OAuth error code returned.
    pub outcome: String,
}

impl Stats {
    pub(crate) fn hit(&mut self, endpoint: Endpoint, method: &str, path: &str, http2: bool) {
        self.http2_requests += u64::from(http2);
        *self
            .endpoints
            .entry(endpoint.as_str().to_owned())
            .or_default() += 1;
        *self.paths.entry(format!("{method} {path}")).or_default() += 1;
    }

    pub(crate) fn log_authorize(&mut self, seen: AuthorizeSeen) {
        if self.authorize_log.len() == LOG_LEN {
            self.authorize_log.pop_front();
        }
        self.authorize_log.push_back(seen);
    }

    pub(crate) fn log_token(&mut self, seen: TokenSeen) {
        if seen.outcome != "ok" {
            self.token_errors += 1;
        }
        if self.token_log.len() == LOG_LEN {
            self.token_log.pop_front();
        }
        self.token_log.push_back(seen);
    }

    /// Requests seen by a named endpoint.
    pub fn endpoint(&self, endpoint: Endpoint) -> u64 {
        self.endpoints.get(endpoint.as_str()).copied().unwrap_or(0)
    }

    /// Requests seen for `METHOD path`.
    pub fn path(&self, method_and_path: &str) -> u64 {
        self.paths.get(method_and_path).copied().unwrap_or(0)
    }
}
