//! How a person authorizes a per-person server through the team gateway, as
//! themselves. Their call to one of its tools is answered with a link
//! ([`Connector::link`]): 256 random bits, kept hashed and sealed in the store for
//! ten minutes, taken once. Opening it (`GET /connect/{link}`, on any replica):
//!
//! 1. the browser signs in at the organisation's authorization server, for the
//!    gateway (PKCE, `state`, `iss`); the token it brings back must name the person
//!    the link was made for. A link sent to someone else is refused there, so nobody
//!    can make another person's upstream account theirs.
//! 2. the browser goes on to the server's own authorization server, with the
//!    gateway as the OAuth client (its redirect at the gateway's public URL).
//! 3. the code is redeemed, and the tokens stored for that person alone
//!    ([`Store::save_person_credential`]).
//!
//! Every step between redirects is in the store under its `state` (taken once), so
//! the callback may reach any replica. Refresh is then [`StoredTokens::for_person`]'s,
//! once across replicas.
//!
//! [`StoredTokens::for_person`]: crate::store::tokens::StoredTokens::for_person

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use base64::Engine as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use url::Url;

use super::{
    inbound::{Principal, ProtectedResource},
    metrics::{self, FlowStep},
    people::{ConnectLink, ConnectLinks, LinkError},
};
use crate::{
    auth::{
        AuthError, AuthOptions, Authorizer, RegistrationStore, Silent, StoredRegistration, WebFlow,
        metadata::AuthServerMetadata,
    },
    store::{Person, Store, StoreError, tokens::credential_from_grant},
};

/// Where a person's browser comes back from signing in at the organisation's server.
pub const SIGN_IN_CALLBACK: &str = "/oauth/callback/sign-in";
/// Where it comes back from a per-person server's authorization server. Each kind
/// has its own redirect, so a code from one server is never taken for the other's
/// (an authorization server mix-up).
pub const SERVER_CALLBACK: &str = "/oauth/callback/server";
/// Where a link points, relative to the gateway's public MCP URL (`/connect/{link}`).
pub const CONNECT_PATH: &str = "/connect";

/// Why a [`Connector`] could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// The organisation's authorization server's metadata could not be read.
    #[error("the authorization server {issuer} cannot be used to sign people in: {why}")]
    Issuer {
        /// Its issuer.
        issuer: String,
        /// What was wrong.
        why: String,
    },
    /// The gateway's public URL cannot carry the pages.
    #[error("{0}")]
    PublicUrl(String),
}

/// A per-person server, as the connector knows it.
#[derive(Clone, Debug)]
pub struct PerPersonServer {
    /// The stored server's id.
    pub id: String,
    /// Its name (what the person's tools are prefixed with).
    pub name: String,
    /// Its MCP endpoint.
    pub url: Url,
}

/// Runs people's authorizations of per-person servers.
pub struct Connector {
    store: Arc<dyn Store>,
    resource: Arc<ProtectedResource>,
    org: AuthServerMetadata,
    authorizer: Authorizer,
    /// The gateway's public MCP URL; the pages are beside it.
    public: Url,
    servers: HashMap<String, PerPersonServer>,
    registrations: Arc<dyn RegistrationStore>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("public", &self.public.as_str())
            .field("servers", &self.servers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// One step of a person's authorization, kept in the store between redirects.
#[derive(Serialize, Deserialize)]
enum Step {
    /// A link, not opened yet.
    Link(Pending),
    /// The browser went to sign in at the organisation's server.
    SignIn(Pending, WebFlow),
    /// The browser went to the server's own authorization server.
    Upstream(Pending, WebFlow),
}

/// Whose authorization of what.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    person: Person,
    server_id: String,
    server: String,
    /// The hash of the browser's cookie, once a browser took the link: every later
    /// step must come from that browser, so a half-done flow sent to someone else
    /// (to put their upstream account under the sender's name) goes nowhere.
    browser: Option<String>,
}

/// The cookie that ties a flow's steps to the browser that opened its link.
const COOKIE: &str = "keyway-connect";
/// Its name over https, where the `__Host-` prefix makes browsers keep it to this
/// origin, with `Secure` and `Path=/`.
const SECURE_COOKIE: &str = "__Host-keyway-connect";

/// Links one person's gateway makes for one server in a minute, at most: a client
/// calling in a loop does not fill the store with them.
const LINKS_PER_MINUTE: usize = 10;

impl Connector {
    /// A connector for `servers`, signing people in at the issuer `resource` trusts.
    /// `public` is the gateway's public MCP URL (the pages and the callback are
    /// beside it); `options` say how the gateway registers as a client (its client
    /// name, a pre-registered client).
    pub async fn start(
        store: Arc<dyn Store>,
        resource: Arc<ProtectedResource>,
        public: Url,
        servers: Vec<PerPersonServer>,
        options: AuthOptions,
    ) -> Result<Arc<Self>, ConnectorError> {
        if public.cannot_be_a_base() {
            return Err(ConnectorError::PublicUrl(format!(
                "{public} cannot have pages beside it"
            )));
        }
        let issuer = resource.issuer().to_owned();
        // The operator named this server: its own class sets the URL rules.
        let issuer_url = Url::parse(&issuer).map_err(|_| ConnectorError::Issuer {
            issuer: issuer.clone(),
            why: "it is not a URL".into(),
        })?;
        let policy = crate::auth::urls::UrlPolicy::for_server(&issuer_url, options.allow_http);
        let http = crate::http::client().map_err(|e| ConnectorError::Issuer {
            issuer: issuer.clone(),
            why: e.to_string(),
        })?;
        let org = crate::auth::discovery::authorization_server(&http, &issuer, &policy)
            .await
            .map_err(|report| ConnectorError::Issuer {
                issuer: issuer.clone(),
                why: report
                    .fatal()
                    .map(|p| p.message.clone())
                    .unwrap_or_else(|| "no usable metadata".into()),
            })?;
        let registrations: Arc<dyn RegistrationStore> = Arc::new(GatewayRegistrations {
            store: store.clone(),
        });
        let authorizer = Authorizer::new(options, registrations.clone(), Arc::new(Silent))
            .map_err(|e| ConnectorError::Issuer {
                issuer: issuer.clone(),
                why: e.to_string(),
            })?;
        Ok(Arc::new(Self {
            store,
            resource,
            org,
            authorizer,
            public,
            servers: servers.into_iter().map(|s| (s.name.clone(), s)).collect(),
            registrations,
        }))
    }

    /// The gateway's client registrations (apart from keyway's own commands'), for
    /// refreshing people's tokens with the client they were issued to.
    pub fn registrations(&self) -> Arc<dyn RegistrationStore> {
        self.registrations.clone()
    }

    /// Whether `server` (a name) is one each person authorizes.
    pub fn is_per_person(&self, server: &str) -> bool {
        self.servers.contains_key(server)
    }

    /// The page at `path`, beside the public MCP URL.
    fn beside(&self, path: &str) -> String {
        // `path` is absolute: the pages sit at the root of the gateway's origin,
        // where its routes are.
        let mut u = self.public.clone();
        u.set_path(path);
        u.set_query(None);
        u.set_fragment(None);
        u.to_string()
    }

    fn secure(&self) -> bool {
        self.public.scheme() == "https"
    }

    fn cookie_name(&self) -> &'static str {
        if self.secure() { SECURE_COOKIE } else { COOKIE }
    }

    /// A new link where `person` authorizes `server`.
    pub async fn link(
        &self,
        person: &Person,
        server: &str,
    ) -> Option<Result<ConnectLink, LinkError>> {
        let s = self.servers.get(server)?;
        let secret = random_id();
        let step = Step::Link(Pending {
            person: person.clone(),
            server_id: s.id.clone(),
            server: s.name.clone(),
            browser: None,
        });
        Some(
            self.keep(&secret, &step)
                .await
                .map(|()| ConnectLink {
                    url: self.beside(&format!("{CONNECT_PATH}/{secret}")),
                    elicitation_id: random_id(),
                })
                .map_err(|e| {
                    tracing::warn!(error = %e, "could not keep a connect link");
                    LinkError::Store
                }),
        )
    }

    async fn keep(&self, key: &str, step: &Step) -> Result<(), StoreError> {
        let pending = match step {
            Step::Link(p) | Step::SignIn(p, _) | Step::Upstream(p, _) => p,
        };
        let data = zeroize::Zeroizing::new(
            serde_json::to_vec(step).map_err(|e| StoreError::Decode(e.to_string()))?,
        );
        self.store
            .put_flow(key, Some(&pending.server_id), &pending.person.issuer, &data)
            .await
    }

    async fn take(&self, key: &str) -> Result<Option<Step>, StoreError> {
        let Some(data) = self.store.take_flow(key).await? else {
            return Ok(None);
        };
        let data = zeroize::Zeroizing::new(data);
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| StoreError::Decode(e.to_string()))
    }

    /// `POST /connect/{link}` (the button of the page a GET shows, so a link
    /// previewer does not spend it): the link taken, the browser given its cookie,
    /// and sent to sign in.
    async fn open(&self, secret: &str, headers: &HeaderMap) -> Response {
        let mut step = match self.take(secret).await {
            Ok(Some(Step::Link(p))) => p,
            Ok(_) => return spent(),
            Err(e) => return trouble(&e),
        };
        metrics::record_flow(&step.server, FlowStep::Started);
        // One cookie for every flow of this browser: two links opened side by side
        // both go on.
        let browser = self.browser_cookie(headers).unwrap_or_else(random_id);
        step.browser = Some(hash(&browser));
        let scopes = self.resource.required_scopes().to_vec();
        let response = match self
            .authorizer
            .begin_web_for(
                &self.org,
                self.resource.resource(),
                &scopes,
                &self.beside(SIGN_IN_CALLBACK),
            )
            .await
        {
            Ok((url, flow)) => {
                let state = flow.state().to_owned();
                self.go(&state, &Step::SignIn(step, flow), &url).await
            }
            Err(e) => return self.failed(&step, "signing you in could not start", &e),
        };
        self.with_cookie(response, &browser)
    }

    /// The browser's cookie of this gateway, if it sent one.
    fn browser_cookie(&self, headers: &HeaderMap) -> Option<String> {
        let name = self.cookie_name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, v)| *k == name && (16..=64).contains(&v.len()))
            .map(|(_, v)| v.to_owned())
    }

    fn with_cookie(&self, mut response: Response, value: &str) -> Response {
        let cookie = format!(
            "{}={value}; Path=/; Max-Age=600; HttpOnly; SameSite=Lax{}",
            self.cookie_name(),
            if self.secure() { "; Secure" } else { "" }
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
        response
    }

    /// Keep `step` under `state` and send the browser to `url`.
    async fn go(&self, state: &str, step: &Step, url: &Url) -> Response {
        if let Err(e) = self.keep(state, step).await {
            return trouble(&e);
        }
        redirect(url.as_str())
    }

    /// `GET` at a callback: the step its `state` names, taken, and carried on when
    /// it is that callback's kind and comes from the browser that opened the link.
    async fn came_back(&self, sign_in: bool, headers: &HeaderMap, query: &str) -> Response {
        let state = url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned());
        let Some(state) = state.filter(|s| !s.is_empty() && s.len() <= 512) else {
            return page(
                StatusCode::BAD_REQUEST,
                "Not a sign-in",
                "This page is where a sign-in comes back, and this request is not one.",
            );
        };
        let step = match self.take(&state).await {
            Ok(Some(step)) => step,
            Ok(None) => return spent(),
            Err(e) => return trouble(&e),
        };
        let (p, flow, at_sign_in) = match step {
            Step::SignIn(p, flow) => (p, flow, true),
            Step::Upstream(p, flow) => (p, flow, false),
            Step::Link(_) => return spent(),
        };
        if at_sign_in != sign_in {
            tracing::warn!(server = %p.server, "a callback came to the other kind's redirect; refused");
            return self.refused(&p, "the answer came back to the wrong place");
        }
        let same_browser = match (&p.browser, self.browser_cookie(headers)) {
            (Some(expected), Some(sent)) => constant_eq(expected, &hash(&sent)),
            _ => false,
        };
        if !same_browser {
            tracing::warn!(server = %p.server, person = %p.person.tag(), "a connect flow came back in another browser; refused");
            return self.refused(
                &p,
                "this page was reached in another browser than the one that opened the link",
            );
        }
        if at_sign_in {
            self.signed_in(p, flow, query).await
        } else {
            self.authorized(p, flow, query).await
        }
    }

    /// Back from the organisation's server: the person must be the link's.
    async fn signed_in(&self, p: Pending, flow: WebFlow, query: &str) -> Response {
        let grant = match self.authorizer.finish_web(&flow, query).await {
            Ok(g) => g,
            Err(e) => return self.failed(&p, "signing you in failed", &e),
        };
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", grant.access_token.secret());
        let Ok(value) = HeaderValue::from_str(&bearer) else {
            return self.refused(&p, "the sign-in gave a token the gateway cannot read");
        };
        headers.insert(header::AUTHORIZATION, value);
        let who: Principal = match self.resource.authenticate(&headers).await {
            Ok(who) => who,
            Err(r) => {
                tracing::info!(server = %p.server, error = %r, "a sign-in for a connect link gave a token the gateway refuses");
                return self.refused(&p, "the sign-in gave a token the gateway does not accept");
            }
        };
        if who.issuer != p.person.issuer || who.subject != p.person.subject {
            tracing::warn!(server = %p.server, person = %p.person.tag(), "a connect link was opened by someone else; refused");
            metrics::record_flow(&p.server, FlowStep::Refused);
            return page(
                StatusCode::FORBIDDEN,
                "This link is someone else's",
                "The link was made for another person, so it was not used. Ask your MCP client for a link of your own: call the tool again.",
            );
        }
        // By id: the tokens are stored under it, for the URL this replica knows it by.
        let Some(server) = self.servers.values().find(|s| s.id == p.server_id) else {
            return self.refused(&p, "the server is no longer one people authorize here");
        };
        match self
            .authorizer
            .begin_web(&server.url, &[], &self.beside(SERVER_CALLBACK))
            .await
        {
            Ok((url, flow)) => {
                let state = flow.state().to_owned();
                self.go(&state, &Step::Upstream(p, flow), &url).await
            }
            Err(e) => self.failed(&p, "its authorization could not start", &e),
        }
    }

    /// Back from the server's authorization server: the tokens are the person's.
    async fn authorized(&self, p: Pending, flow: WebFlow, query: &str) -> Response {
        let grant = match self.authorizer.finish_web(&flow, query).await {
            Ok(g) => g,
            Err(e) => return self.failed(&p, "the authorization failed", &e),
        };
        let credential = crate::store::Credential::OAuth(Box::new(credential_from_grant(&grant)));
        if let Err(e) = self
            .store
            .save_person_credential(&p.server_id, &p.person, &credential, None)
            .await
        {
            return trouble(&e);
        }
        metrics::record_flow(&p.server, FlowStep::Completed);
        tracing::info!(server = %p.server, person = %p.person.tag(), "a person connected their account");
        page(
            StatusCode::OK,
            &format!("{} is connected", p.server),
            &format!(
                "Your {} account is connected to the gateway. Go back to your MCP client and call the tool again; you can close this page.",
                p.server
            ),
        )
    }

    fn failed(&self, p: &Pending, what: &str, e: &AuthError) -> Response {
        tracing::info!(server = %p.server, error = %e, "{what}");
        metrics::record_flow(&p.server, FlowStep::Refused);
        page(
            StatusCode::BAD_GATEWAY,
            &format!("Connecting {} did not work", p.server),
            &format!("{what}: {e}. Call the tool again for a new link."),
        )
    }

    fn refused(&self, p: &Pending, why: &str) -> Response {
        metrics::record_flow(&p.server, FlowStep::Refused);
        page(
            StatusCode::FORBIDDEN,
            &format!("Connecting {} did not work", p.server),
            &format!("{why}. Call the tool again for a new link."),
        )
    }

    /// The routes of the pages: outside the gateway's guard (a browser carries no
    /// token; the link and the `state` are the secrets).
    pub fn routes(self: &Arc<Self>) -> Router {
        let callback = |sign_in: bool| {
            axum::routing::get(
                move |State(c): State<Arc<Self>>, headers: HeaderMap, RawQuery(q): RawQuery| async move {
                    c.came_back(sign_in, &headers, q.as_deref().unwrap_or_default())
                        .await
                },
            )
        };
        Router::new()
            .route(
                &format!("{CONNECT_PATH}/{{link}}"),
                axum::routing::get(|Path(link): Path<String>| async move {
                    if link.len() > 128 {
                        return spent();
                    }
                    confirm()
                })
                .post(
                    |State(c): State<Arc<Self>>, Path(link): Path<String>, headers: HeaderMap| async move {
                        if link.len() > 128 {
                            return spent();
                        }
                        c.open(&link, &headers).await
                    },
                ),
            )
            .route(SIGN_IN_CALLBACK, callback(true))
            .route(SERVER_CALLBACK, callback(false))
            .with_state(self.clone())
    }

    /// The links of `person`, for their gateway.
    pub fn for_person(self: &Arc<Self>, person: Person) -> Arc<dyn ConnectLinks> {
        Arc::new(PersonLinks {
            connector: self.clone(),
            person,
            made: std::sync::Mutex::default(),
        })
    }
}

struct PersonLinks {
    connector: Arc<Connector>,
    person: Person,
    /// When links were made in the last minute, by server.
    made: std::sync::Mutex<HashMap<String, std::collections::VecDeque<std::time::Instant>>>,
}

impl PersonLinks {
    /// Count one more link for `server`, unless the minute's are all made.
    fn allow(&self, server: &str) -> bool {
        let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
        let times = made.entry(server.to_owned()).or_default();
        let minute = std::time::Duration::from_secs(60);
        while times.front().is_some_and(|t| t.elapsed() > minute) {
            times.pop_front();
        }
        if times.len() >= LINKS_PER_MINUTE {
            return false;
        }
        times.push_back(std::time::Instant::now());
        true
    }
}

impl ConnectLinks for PersonLinks {
    fn link<'a>(
        &'a self,
        server: &'a str,
    ) -> BoxFuture<'a, Option<Result<ConnectLink, LinkError>>> {
        Box::pin(async move {
            if !self.connector.is_per_person(server) {
                return None;
            }
            if !self.allow(server) {
                return Some(Err(LinkError::TooMany(LINKS_PER_MINUTE)));
            }
            self.connector.link(&self.person, server).await
        })
    }

    fn covers(&self, server: &str) -> bool {
        self.connector.is_per_person(server)
    }
}

/// The page a link shows before anything is spent: a button that posts to it.
fn confirm() -> Response {
    page_with(
        StatusCode::OK,
        "Connect your account",
        "Your MCP client sent you here to connect one of the gateway's servers to your own account: you will sign in, then allow access.",
        "<form method=\"post\"><button type=\"submit\" style=\"font-size:1em;padding:.5em 1em\">Continue</button></form>",
    )
}

/// SHA-256 of `s`, base64url.
fn hash(s: &str) -> String {
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Equal, in time that does not depend on where they differ.
fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// 256 random bits, base64url.
fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn redirect(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, v), (header::CACHE_CONTROL, no_store())],
        )
            .into_response(),
        Err(_) => page(
            StatusCode::BAD_GATEWAY,
            "Cannot go on",
            "The authorization server's address cannot be sent to a browser.",
        ),
    }
}

fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store")
}

fn spent() -> Response {
    page(
        StatusCode::GONE,
        "This link was used or has expired",
        "A link works once, for ten minutes. Call the tool again in your MCP client for a new one.",
    )
}

fn trouble(e: &StoreError) -> Response {
    tracing::warn!(error = %e, "a connect page could not use the store");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The gateway cannot go on now",
        "Its store did not answer. Try again in a moment, with a new link from your MCP client.",
    )
}

/// A small page: a title and a sentence, escaped, not cached, not framed.
fn page(status: StatusCode, title: &str, text: &str) -> Response {
    page_with(status, title, text, "")
}

/// [`page`] with `html` after the sentence: markup of the gateway's own, never
/// anything from a request or a server.
fn page_with(status: StatusCode, title: &str, text: &str, html: &'static str) -> Response {
    let escape = crate::web::page::escape;
    let body = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <meta name=\"viewport\" content=\"width=device-width\"></head>\
         <body style=\"font-family:system-ui,sans-serif;max-width:36em;margin:3em auto;line-height:1.5\">\
         <h1 style=\"font-size:1.4em\">{t}</h1><p>{x}</p>{html}</body></html>",
        t = escape(title),
        x = escape(text)
    );
    (
        status,
        [
            (header::CACHE_CONTROL, no_store()),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
                ),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        Html(body),
    )
        .into_response()
}

/// The gateway's client registrations, kept apart from the ones keyway's own
/// commands make on the same store (those redirect to this machine's loopback; the
/// gateway's to its public URL): the same issuer's two clients never replace each
/// other.
#[derive(Debug)]
struct GatewayRegistrations {
    store: Arc<dyn Store>,
}

impl GatewayRegistrations {
    fn key(issuer: &str) -> String {
        format!("{issuer}#keyway-gateway")
    }
}

#[async_trait::async_trait]
impl RegistrationStore for GatewayRegistrations {
    async fn load(&self, issuer: &str) -> Result<Option<StoredRegistration>, AuthError> {
        Ok(self.store.load(&Self::key(issuer)).await?.map(|mut r| {
            r.issuer = issuer.to_owned();
            r
        }))
    }

    async fn save(&self, registration: &StoredRegistration) -> Result<(), AuthError> {
        let mut r = registration.clone();
        r.issuer = Self::key(&r.issuer);
        self.store.save(&r).await
    }

    async fn forget(&self, issuer: &str) -> Result<(), AuthError> {
        self.store.forget(&Self::key(issuer)).await
    }
}
