//! keyway-testbed: a real OAuth 2.1 authorization server and a protected MCP server
//! (Streamable HTTP) on 127.0.0.1, with a knob for every behaviour a client must cope
//! with, and counters that show what the client did. DPoP (RFC 9449) is a knob too:
//! `--dpop` (proofs, bound tokens), `--dpop-nonce`, `--dpop-refuse-proofs`,
//! `--dpop-spurious-replays`, `--dpop-resource-only`. `--idp-quirks NAME` makes the
//! authorization server behave like a real identity provider (`entra`, `google`,
//! `auth0`, `okta`, `keycloak`, `github`) where MCP clients trip over it: Entra's
//! refused `resource` and resource-qualified scopes, Google's `access_type=offline`,
//! Auth0's `audience`, offline_access that is needed but not advertised, Keycloak's
//! realm path and OpenID-only metadata, GitHub's errors with HTTP 200. Dynamic
//! registrations can be read and deleted (RFC 7592) unless
//! `--no-registration-management`; pre-registered clients may authenticate with
//! private_key_jwt (RFC 7523, [`ClientSpec::private_key_jwt`]). `--hostile
//! ENDPOINT:KIND` ([`HostileKind`]) makes every answer of an endpoint hostile (endless,
//! 100,000 deep, not UTF-8, duplicate keys, cut mid-body, redirected), and
//! `--h2-goaway-after N` tells HTTP/2 connections to go away mid-request. Every grant
//! is for a person (`login_hint`, else `--subject`; the client itself for
//! client_credentials), the `sub` introspection tells; `--jwt-access-tokens` issues
//! access tokens as JWTs (RFC 9068) that verify against the jwks endpoint, whose key
//! [`Testbed::rotate_signing_key`] rotates.
//!
//! ```no_run
//! # async fn demo() -> Result<(), keyway_testbed::TestbedError> {
//! use keyway_testbed::{Knobs, Testbed};
//! let mut knobs = Knobs::default();
//! knobs.token_lifetime = 2;
//! let testbed = Testbed::start(knobs).await?;
//! println!("MCP at {}, issuer {}", testbed.mcp_url(), testbed.issuer());
//! # Ok(()) }
//! ```

// Handlers return ready-made error responses; boxing them would only add noise.
#![allow(clippy::result_large_err)]

mod authz;
mod clock;
mod db;
mod dpop;
mod faults;
mod fixture;
mod hostile;
mod interactive;
mod knobs;
mod legacy;
pub mod postgres;
mod resource;
mod serve;
mod shared;
mod signing;
mod stats;
mod tools;

/// The names of the MCP server's tools, sorted as `tools/list` gives them.
pub const TOOL_NAMES: [&str; 9] = [
    "add",
    "admin_only",
    "ask_name",
    "echo",
    "list_roots",
    "sample",
    "slow",
    "touch",
    "two_rounds",
];

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{Json, Router, http::StatusCode, middleware, response::IntoResponse};
use serde::Serialize;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

pub use crate::{
    clock::{Clock, ManualClock, SystemClock},
    knobs::{
        ClientSpec, Endpoint, EndpointFault, Fixture, HostileAnswer, HostileKind, IdpQuirks,
        IssMode, Knobs, McpRevision, MetadataDoc, PkceAdvertised, PrmLocation, ScopeList,
        TokenAuthMethod,
    },
    signing::SigningError,
    stats::{AuthorizeSeen, Stats, TokenSeen},
};
use crate::{
    db::NewAccess,
    faults::RouteTable,
    shared::{Shared, Urls},
    signing::SigningKeys,
};

/// Why a testbed could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestbedError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid knob: {0}")]
    InvalidKnob(String),
    /// The authorization server's signing key could not be made.
    #[error("cannot make a signing key: {0}")]
    SigningKey(#[source] SigningError),
}

/// Where a running testbed can be reached; printed by `keyway testbed`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Announcement {
    pub mcp_url: String,
    pub issuer: String,
    pub stats_url: String,
}

/// A running testbed. Dropping it stops it.
#[derive(Debug)]
pub struct Testbed {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Testbed {
    /// Start on the real clock.
    pub async fn start(knobs: Knobs) -> Result<Self, TestbedError> {
        Self::start_with_clock(knobs, Arc::new(SystemClock)).await
    }

    /// Start with an injected clock (a [`ManualClock`] lets tests expire tokens).
    /// Both listeners are bound when this returns: the testbed is ready.
    pub async fn start_with_clock(
        knobs: Knobs,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, TestbedError> {
        validate(&knobs)?;
        let tls = match (&knobs.tls_cert, &knobs.tls_key) {
            (Some(cert), Some(key)) => {
                Some(serve::tls_acceptor(cert, key).map_err(TestbedError::InvalidKnob)?)
            }
            _ => None,
        };
        let rs = bind(knobs.port).await?;
        let as_ = if knobs.shared_origin {
            None
        } else {
            Some(bind(knobs.as_port).await?)
        };
        let rs_addr = local_addr(&rs, knobs.port)?;
        let as_addr = match &as_ {
            Some(l) => local_addr(l, knobs.as_port)?,
            None => rs_addr,
        };
        let urls = Urls::new(&knobs, rs_addr, as_addr);
        let signing = SigningKeys::generate().map_err(TestbedError::SigningKey)?;
        let shared = Arc::new(Shared::new(knobs, clock, urls, signing));
        let shutdown = CancellationToken::new();
        let mcp_listener = serve::Listener {
            tls: tls.clone(),
            mcp: true,
        };

        let (rs_router, rs_table) = resource::routes(&shared, shutdown.child_token());
        let (as_router, as_table) = authz::routes(&shared);
        let mut tasks = Vec::new();
        if let Some(as_listener) = as_ {
            let app = finish(&shared, as_router, as_table)?;
            tasks.push(tokio::spawn(serve::serve(
                as_listener,
                app,
                shutdown.clone(),
                serve::Listener::default(),
                shared.clone(),
            )));
            let app = finish(&shared, rs_router, rs_table)?;
            tasks.push(tokio::spawn(serve::serve(
                rs,
                app,
                shutdown.clone(),
                mcp_listener,
                shared.clone(),
            )));
        } else {
            let mut table = rs_table;
            for (path, _) in &as_table {
                if table.iter().any(|(p, _)| p == path) {
                    return Err(TestbedError::InvalidKnob(format!(
                        "with --shared-origin, {path} is both an MCP server and an authorization server path"
                    )));
                }
            }
            table.extend(as_table);
            let app = finish(&shared, rs_router.merge(as_router), table)?;
            tasks.push(tokio::spawn(serve::serve(
                rs,
                app,
                shutdown.clone(),
                mcp_listener,
                shared.clone(),
            )));
        }
        Ok(Self {
            shared,
            shutdown,
            tasks,
        })
    }

    /// The MCP endpoint, e.g. `http://127.0.0.1:41234/mcp`.
    pub fn mcp_url(&self) -> &str {
        &self.shared.urls.mcp_url
    }

    /// The authorization server's issuer identifier.
    pub fn issuer(&self) -> &str {
        &self.shared.urls.issuer
    }

    /// The resource identifier tokens for this server must be bound to.
    pub fn resource(&self) -> &str {
        &self.shared.urls.resource
    }

    /// The legacy HTTP+SSE endpoint (with `--legacy-sse`).
    pub fn sse_url(&self) -> String {
        format!("{}{}", self.shared.urls.rs_origin, legacy::SSE_PATH)
    }

    /// Origin of the MCP listener, e.g. `http://127.0.0.1:41234`.
    pub fn rs_origin(&self) -> &str {
        &self.shared.urls.rs_origin
    }

    /// Origin of the authorization server listener.
    pub fn as_origin(&self) -> &str {
        &self.shared.urls.as_origin
    }

    /// Where the protected resource metadata is served, if the knobs serve it.
    pub fn prm_url(&self) -> Option<String> {
        self.shared.urls.prm_url()
    }

    /// URL of an authorization server endpoint (`authorize`, `token`, `register`,
    /// `revoke`, `introspect`, `device_authorization`, `device`, `jwks`).
    pub fn endpoint_url(&self, name: &str) -> String {
        self.shared.urls.endpoint_url(name)
    }

    pub fn stats_url(&self) -> String {
        format!("{}{}", self.shared.urls.rs_origin, resource::STATS_PATH)
    }

    pub fn announcement(&self) -> Announcement {
        Announcement {
            mcp_url: self.mcp_url().to_owned(),
            issuer: self.issuer().to_owned(),
            stats_url: self.stats_url(),
        }
    }

    pub fn knobs(&self) -> &Knobs {
        &self.shared.knobs
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.shared.snapshot()
    }

    /// Returns once `n` `slow` calls in all have started.
    pub async fn slow_calls_start(&self, n: u64) {
        self.shared.tools.started.reach(n).await;
    }

    /// Returns once `n` `slow` calls in all were cancelled by their client.
    pub async fn cancelled_calls_reach(&self, n: u64) {
        self.shared.tools.cancelled.reach(n).await;
    }

    /// Returns once `n` `resources/unsubscribe` requests in all were served.
    pub async fn unsubscribes_reach(&self, n: u64) {
        self.shared.tools.unsubscribes.reach(n).await;
    }

    /// Returns once `n` endless answers (`--hostile ENDPOINT:endless`) in all have
    /// stopped, as each does when its client hangs up.
    pub async fn endless_answers_stop(&self, n: u64) {
        self.shared.endless_stopped.reach(n).await;
    }

    /// Drop the connection of the next MCP request without an answer, and forget
    /// every session (as `--drop-after` does), once.
    pub fn drop_next_request(&self) {
        self.shared
            .drop_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Make the jwks endpoint answer 503 (a key server that is down), or recover.
    /// Its requests are still counted.
    pub fn set_keys_down(&self, down: bool) {
        self.shared
            .keys_down
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// Make the MCP endpoint hang (accept requests and never answer), or recover.
    pub fn set_hung(&self, hung: bool) {
        self.shared
            .hung
            .store(hung, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every secret the testbed issued or received so far: access and refresh
    /// tokens, authorization codes, client secrets, PKCE verifiers.
    pub fn secrets(&self) -> Vec<String> {
        self.shared.db().secrets.clone()
    }

    /// Mint an access token for this server with `scope` (space separated), as if an
    /// administrator had issued a static API token to the `--subject` person. It
    /// expires per `--token-lifetime`; with `--jwt-access-tokens` it is a JWT.
    pub fn mint_access_token(&self, scope: &str) -> String {
        self.mint(&self.shared.knobs.subject, scope, None, None)
    }

    /// Mint an access token for `subject` with `scope` (space separated) for
    /// `resource` (`None`: this server's own, [`Testbed::resource`]), as
    /// [`Testbed::mint_access_token`] does. A token for another resource is what
    /// this authorization server would give a client of that other server (its `aud`
    /// is that resource); this server's MCP endpoint refuses it unless
    /// `--no-audience-binding`.
    pub fn mint_access_token_for(
        &self,
        subject: &str,
        scope: &str,
        resource: Option<&str>,
    ) -> String {
        self.mint(subject, scope, resource, None)
    }

    /// Mint an access token bound to the DPoP key with thumbprint `jkt` (RFC 7638,
    /// SHA-256), as [`Testbed::mint_access_token`] does for a bearer token.
    pub fn mint_dpop_bound_access_token(&self, scope: &str, jkt: &str) -> String {
        self.mint(&self.shared.knobs.subject, scope, None, Some(jkt))
    }

    /// The `kid` of the key that signs JWT access tokens now (`--jwt-access-tokens`).
    pub fn signing_kid(&self) -> String {
        self.shared.signing.current_kid()
    }

    /// Rotate the authorization server's signing key: a new key (with a new `kid`)
    /// signs JWT access tokens from now on, and the jwks endpoint lists it first.
    /// With `keep_old` the keys listed until now stay listed after it (tokens they
    /// signed still verify); without, only the new key is listed.
    pub fn rotate_signing_key(&self, keep_old: bool) {
        if let Err(e) = self.shared.signing.rotate(keep_old) {
            // Cannot happen: making a P-256 key fails only when the random source
            // does, and aws-lc aborts the process then rather than return; the start
            // of this testbed made one the same way.
            panic!("the testbed could not make a new signing key: {e}");
        }
    }

    fn mint(
        &self,
        subject: &str,
        scope: &str,
        resource: Option<&str>,
        jkt: Option<&str>,
    ) -> String {
        let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
        let new = NewAccess {
            client_id: MINTED_CLIENT_ID,
            subject,
            scope: &scopes,
            resource: Some(resource.unwrap_or(&self.shared.urls.resource)),
            family: None,
            jkt,
        };
        let mut db = self.shared.db();
        match self.shared.mint_access(&mut db, &new) {
            Ok(token) => token,
            // Signing cannot fail: the key signed once when it was made (so it parses
            // and signs), the claims are strings and numbers (serde_json writes them),
            // and aws-lc aborts rather than return when its random source fails.
            Err(e) => panic!("the testbed could not sign an access token: {e}"),
        }
    }

    /// The DPoP nonce proofs must carry now (with `--dpop-nonce`).
    pub fn dpop_nonce(&self) -> Option<String> {
        self.shared.dpop.nonce()
    }

    /// Issue a new DPoP nonce now; the current one stays good until the next
    /// rotation (as after `--dpop-nonce-rotate` accepted proofs).
    pub fn rotate_dpop_nonce(&self) {
        self.shared.dpop.rotate_nonce();
    }

    /// Stop serving and wait for the listeners to close.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The `client_id` of tokens minted by [`Testbed::mint_access_token`] and its kin.
const MINTED_CLIENT_ID: &str = "testbed-minted";

/// Connections the kernel queues for the testbed before it accepts them. tokio's
/// `TcpListener::bind` asks for 128; a client that opens a few hundred connections at
/// once (the benchmark's 1,000 calls after a token expired) then overflows the queue,
/// and every dropped connection waits out a one-second SYN retransmission. Servers
/// people run ask for more (node and nginx 511, Go the system's maximum).
const BACKLOG: u32 = 1024;

async fn bind(port: u16) -> Result<TcpListener, TestbedError> {
    let bind = || {
        let socket = tokio::net::TcpSocket::new_v4()?;
        // As TcpListener::bind does: a restarted testbed can take its port back.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        socket.listen(BACKLOG)
    };
    bind().map_err(|source| TestbedError::Bind { port, source })
}

fn local_addr(l: &TcpListener, port: u16) -> Result<SocketAddr, TestbedError> {
    l.local_addr()
        .map_err(|source| TestbedError::Bind { port, source })
}

/// Paths become axum routes: refuse what axum would read as a pattern, or panic on.
fn validate(k: &Knobs) -> Result<(), TestbedError> {
    for (name, path) in [
        ("--mcp-path", &k.mcp_path),
        ("--prm-custom-path", &k.prm_custom_path),
        ("--issuer-path", &k.issuer_path),
    ] {
        if path
            .chars()
            .any(|c| matches!(c, '{' | '}' | '*' | '?' | '#') || c.is_whitespace())
        {
            return Err(TestbedError::InvalidKnob(format!(
                "{name} {path:?}: use a plain path"
            )));
        }
    }
    if !knobs::valid_subject(&k.subject) {
        return Err(TestbedError::InvalidKnob(format!(
            "--subject {:?}: use 1 to 64 ASCII letters, digits and -_.@",
            k.subject
        )));
    }
    let dpop_at_as = k.dpop
        || k.dpop_nonce
        || k.dpop_nonce_loop
        || k.dpop_refuse_proofs
        || k.dpop_spurious_replays > 0;
    if k.dpop_resource_only && dpop_at_as {
        return Err(TestbedError::InvalidKnob(
            "--dpop-resource-only is the server whose authorization server knows nothing \
             of DPoP: it goes with none of --dpop, --dpop-nonce, --dpop-nonce-loop, \
             --dpop-refuse-proofs, --dpop-spurious-replays"
                .into(),
        ));
    }
    for c in &k.clients {
        if let Some(pem) = &c.public_key_pem {
            crate::authz::assertion_key(pem)
                .map_err(|e| TestbedError::InvalidKnob(format!("client {:?}: {e}", c.id)))?;
        } else if c.auth == TokenAuthMethod::PrivateKeyJwt {
            return Err(TestbedError::InvalidKnob(format!(
                "client {:?}: private_key_jwt needs the client's public key",
                c.id
            )));
        }
    }
    if k.mcp_path.trim_matches('/').is_empty() {
        return Err(TestbedError::InvalidKnob(
            "--mcp-path must not be the root".into(),
        ));
    }
    Ok(())
}

/// Add the fallback and the counting/fault layer, then bind the state.
fn finish(
    shared: &Arc<Shared>,
    router: Router<Arc<Shared>>,
    table: Vec<(String, Endpoint)>,
) -> Result<Router, TestbedError> {
    let table: RouteTable = table.into_iter().collect::<HashMap<_, _>>();
    Ok(router
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({"error": "not_found"})),
            )
                .into_response()
        })
        .layer(middleware::from_fn_with_state(
            (shared.clone(), Arc::new(table)),
            faults::faults,
        ))
        .with_state(shared.clone()))
}
