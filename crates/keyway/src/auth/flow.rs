//! The flows, start to token: discovery, scope selection, registration, then the
//! authorization code grant (PKCE S256, state, resource, iss) through the browser, a
//! pasted answer, or `follow`; the device grant; client credentials.

use std::{
    collections::{HashMap, hash_map::DefaultHasher},
    hash::{Hash, Hasher},
    sync::Arc,
    time::SystemTime,
};

use oauth2::{CsrfToken, PkceCodeChallenge};
use url::Url;

use super::{
    AuthError, AuthOptions, GrantChoice, Reporter,
    browser::{self, BrowserMode},
    callback::{self, Expected, Verdict},
    client::{ClientAuth, OAuthClient, RegistrationKind},
    device,
    discovery::{self, AuthTarget, MetadataSource, ProblemCode},
    dpop::{self as dpop_mod, DpopKey, DpopMode},
    loopback::{Arrived, Expecting, Loopback, Page},
    profile::{self, Quirks},
    registration::{self, Plan, RegistrationStore},
    scopes,
    token::{self, TokenError, TokenType},
    tokens::Grant,
    urls::UrlPolicy,
};

mod web;
pub use web::WebFlow;

/// [`crate::http::guarded`] as an [`AuthError`].
fn guarded_client(policy: &UrlPolicy) -> Result<reqwest::Client, AuthError> {
    crate::http::guarded(policy).map_err(|e| AuthError::Config(e.to_string()))
}

/// Runs authorizations for one caller. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    /// The client of the flow under way: [`crate::http::guarded`] for the class of
    /// the server being authorized (set by [`Authorizer::authorize`]; until then the
    /// strictest, a public server's).
    http: reqwest::Client,
    /// The URL rules of the flow under way (its server's), set with `http`.
    policy: UrlPolicy,
    options: AuthOptions,
    registrations: Arc<dyn RegistrationStore>,
    reporter: Arc<dyn Reporter>,
    pending: Option<Arc<dyn super::PendingFlows>>,
    /// The DPoP key of the flow under way, when it binds its tokens (set by
    /// [`Authorizer::authorize`] once discovery has said what the servers take).
    dpop: Option<Arc<DpopKey>>,
    /// The quirks of the flow under way: its provider's profile and the flags (set by
    /// [`Authorizer::authorize`] once discovery has found the issuer).
    quirks: Quirks,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Step-up bookkeeping: at most [`StepUp::MAX_ATTEMPTS`] authorizations per resource
/// and operation (MCP "Step-Up Authorization Flow"), the first included, until the
/// operation gets through ([`StepUp::done`]).
#[derive(Debug, Default)]
pub struct StepUp {
    attempts: HashMap<(String, String), u32>,
}

impl StepUp {
    /// Authorizations allowed per resource and operation.
    pub const MAX_ATTEMPTS: u32 = 3;

    /// Count one more authorization for `operation` on `resource`; false once the
    /// limit is reached.
    pub fn allow(&mut self, resource: &str, operation: &str) -> bool {
        let n = self
            .attempts
            .entry((resource.to_owned(), operation.to_owned()))
            .or_insert(0);
        if *n >= Self::MAX_ATTEMPTS {
            return false;
        }
        *n += 1;
        true
    }

    /// `operation` on `resource` got through: its count starts again.
    pub fn done(&mut self, resource: &str, operation: &str) {
        self.attempts
            .remove(&(resource.to_owned(), operation.to_owned()));
    }

    /// How many authorizations [`allow`](Self::allow) has counted for `operation` on
    /// `resource`.
    pub fn attempts(&self, resource: &str, operation: &str) -> u32 {
        self.attempts
            .get(&(resource.to_owned(), operation.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

impl Authorizer {
    /// Every request a flow makes goes through a client that refuses addresses its
    /// server may not send keyway to ([`crate::http::guarded`]): none is injected.
    /// Fails with [`AuthError::Config`] when that client cannot be built.
    pub fn new(
        options: AuthOptions,
        registrations: Arc<dyn RegistrationStore>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<Self, AuthError> {
        let strictest = UrlPolicy {
            server: super::urls::HostClass::Public,
            allow_http: false,
        };
        Ok(Self {
            http: guarded_client(&strictest)?,
            policy: strictest,
            options,
            registrations,
            reporter,
            pending: None,
            dpop: None,
            quirks: Quirks::default(),
        })
    }

    /// What the flow's token requests add: its DPoP key and its quirks.
    fn extras(&self) -> token::Extras<'_> {
        token::Extras {
            dpop: self.dpop.as_deref(),
            quirks: Some(&self.quirks),
        }
    }

    /// Record each authorization code flow in `pending` while it waits for its callback.
    pub fn with_pending_flows(mut self, pending: Arc<dyn super::PendingFlows>) -> Self {
        self.pending = Some(pending);
        self
    }

    /// This authorizer, applying `quirks` (a saved server's last ones) when its own
    /// options name none.
    pub fn remembering(&self, quirks: Quirks) -> Self {
        let mut this = self.clone();
        this.options.remembered = Some(quirks);
        this
    }

    /// The options this authorizer was made with.
    pub fn options(&self) -> &AuthOptions {
        &self.options
    }

    /// Authorize for `mcp_url` after a 401 (or a 403 insufficient_scope) whose
    /// `WWW-Authenticate` values are given. With `previous_scopes` (the scopes asked
    /// last time), the scopes asked are their union with the challenge's (step-up).
    ///
    /// The grant is bound to the resource, issuer and client it was obtained for. Fails
    /// with [`AuthError::Discovery`] when discovery selects no authorization server,
    /// else with whatever stopped the grant chosen by [`AuthOptions::grant`].
    pub async fn authorize(
        &self,
        mcp_url: &Url,
        www_authenticate: &[String],
        previous_scopes: Option<&[String]>,
    ) -> Result<Grant, AuthError> {
        let policy = UrlPolicy::for_server_resolved(mcp_url, self.options.allow_http).await;
        let flow = Self {
            http: guarded_client(&policy)?,
            policy,
            ..self.clone()
        };
        flow.authorize_under(mcp_url, www_authenticate, previous_scopes, policy)
            .await
    }

    async fn authorize_under(
        &self,
        mcp_url: &Url,
        www_authenticate: &[String],
        previous_scopes: Option<&[String]>,
        policy: UrlPolicy,
    ) -> Result<Grant, AuthError> {
        let (report, target) =
            discovery::discover(&self.http, mcp_url, www_authenticate, &policy).await;
        self.reporter.discovered(&report);
        let Some(target) = target else {
            return Err(AuthError::Discovery(Box::new(report)));
        };

        // DPoP: what the authorization server advertises, and whether the MCP server
        // challenged with DPoP alone.
        let signal = dpop_mod::ResourceSignal::read(
            www_authenticate,
            report
                .protected_resource
                .as_ref()
                .map(|found| &found.metadata.extra),
        );
        let resource_demands = signal.demands.clone();
        let advertised = target.metadata.dpop_signing_alg_values_supported.as_deref();
        let use_dpop = dpop_mod::decide(self.options.dpop, advertised, &signal)?;
        if !use_dpop && self.options.dpop == DpopMode::Auto && signal.offers && advertised.is_some()
        {
            self.reporter.note(
                "the authorization server offers DPoP, but not with ES256: using Bearer tokens",
            );
        }
        let dpop = if use_dpop {
            Some(Arc::new(DpopKey::generate().map_err(AuthError::DpopKey)?))
        } else {
            None
        };
        let quirks = self.quirks_for(&target)?;
        let this = Self {
            dpop,
            quirks,
            ..self.clone()
        };
        let grant = this
            .grant_for(&target, &report, &policy, previous_scopes)
            .await?;
        if this.dpop.is_some() && grant.token_type == TokenType::Bearer {
            if self.options.dpop == DpopMode::Always || resource_demands.is_some() {
                return Err(AuthError::BearerIssued {
                    issuer: grant.issuer,
                    resource_demands: resource_demands.is_some(),
                });
            }
            self.reporter.note(
                "the authorization server issued a Bearer token despite the DPoP proof; it is sent as Bearer",
            );
        }
        self.reporter
            .authorized(&grant.issuer, &grant.requested_scopes);
        Ok(grant)
    }

    /// The quirks of a flow for `target`: its provider's profile (reported), then the
    /// flags (`--no-resource`, `--authorize-param`, `--token-param`), which win.
    fn quirks_for(&self, target: &AuthTarget) -> Result<Quirks, AuthError> {
        let o = &self.options;
        for (kind, params) in [
            (profile::ParamFor::Authorize, &o.authorize_params),
            (profile::ParamFor::Token, &o.token_params),
        ] {
            for (k, _) in params {
                profile::check_param(kind, k)?;
            }
        }
        let named_none = o.profile == profile::ProfileChoice::Auto
            && !o.no_resource
            && o.authorize_params.is_empty()
            && o.token_params.is_empty();
        if named_none && let Some(q) = &o.remembered {
            self.reporter
                .note("using the quirks this server was authorized with before");
            return Ok(q.clone());
        }
        let mut q = match profile::choose(&o.profile, &target.issuer) {
            Some((p, why)) => {
                self.reporter.note(&format!(
                    "using the {} profile ({why}): {}",
                    p.name,
                    p.changes.join("; ")
                ));
                p.quirks(&target.resource)
            }
            None => Quirks::default(),
        };
        if o.no_resource {
            q.send_resource = false;
        }
        let merge = |into: &mut Vec<(String, String)>, extra: &[(String, String)]| {
            into.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
            into.extend(extra.iter().cloned());
        };
        merge(&mut q.authorize_params, &o.authorize_params);
        merge(&mut q.token_params, &o.token_params);
        Ok(q)
    }

    /// The grant [`AuthOptions::grant`] names, after discovery found `target`.
    async fn grant_for(
        &self,
        target: &AuthTarget,
        report: &discovery::DiscoveryReport,
        policy: &UrlPolicy,
        previous_scopes: Option<&[String]>,
    ) -> Result<Grant, AuthError> {
        let challenged = target.challenge_scope.clone().unwrap_or_default();
        let wanted = match previous_scopes {
            Some(p) => scopes::union(p, &challenged),
            None => scopes::initial(
                self.options.scopes.as_deref(),
                target.challenge_scope.as_deref(),
                target.resource_scopes.as_deref(),
            ),
        };

        if let Some(scope) =
            self.quirks
                .foreign_scope(&wanted, self.options.scopes.as_deref(), &target.resource)
        {
            return Err(AuthError::ForeignScope {
                scope: super::callback::printable(scope),
                resource: target.resource.clone(),
            });
        }
        let grant = match self.options.grant {
            GrantChoice::ClientCredentials => self.client_credentials(target, policy, wanted).await,
            GrantChoice::Device => self.device(target, policy, wanted).await,
            GrantChoice::EnterpriseManaged => self.enterprise(target, policy, wanted).await,
            GrantChoice::JwtBearer => self.jwt_bearer(target, policy, wanted).await,
            GrantChoice::Auto => {
                let no_browser = self.options.browser == BrowserMode::System
                    && self.options.opener.is_none()
                    && !browser::browser_available();
                let has_device = target.metadata.device_authorization_endpoint.is_some();
                if has_device && target.metadata.authorization_endpoint.is_none() {
                    self.reporter.note(
                        "the authorization server offers only the device authorization grant",
                    );
                    self.device(target, policy, wanted).await
                } else if no_browser && has_device {
                    self.reporter.note(
                        "no browser can be opened here; using the device authorization grant",
                    );
                    self.device(target, policy, wanted).await
                } else {
                    self.code_flow(target, report, policy, wanted).await
                }
            }
        }?;
        let mut grant = grant;
        grant.as_metadata = Some(target.metadata.clone());
        grant.quirks = self.quirks.clone();
        Ok(grant)
    }

    fn token_endpoint(&self, t: &AuthTarget, policy: &UrlPolicy) -> Result<String, AuthError> {
        let raw = t.metadata.token_endpoint.as_deref().unwrap_or_default();
        Ok(policy
            .check(raw)
            .map_err(AuthError::refused("token_endpoint"))?
            .to_string())
    }

    async fn client_credentials(
        &self,
        t: &AuthTarget,
        policy: &UrlPolicy,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        let client = registration::preregistered(&self.options.client, &t.metadata)?;
        if matches!(client.auth, ClientAuth::None) {
            return Err(AuthError::Config(
                "client credentials need a confidential client: pass --client-secret or --private-key".into(),
            ));
        }
        let token_endpoint = self.token_endpoint(t, policy)?;
        let form = vec![("grant_type", "client_credentials".to_owned())];
        self.direct_grant(t, token_endpoint, client, form, wanted)
            .await
    }

    /// RFC 7523 §2.1 with a workload's own JWT. Errors surface as they are: no retry,
    /// no switching to another grant.
    async fn jwt_bearer(
        &self,
        t: &AuthTarget,
        policy: &UrlPolicy,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        let Some(assertion) = &self.options.assertion else {
            return Err(AuthError::Config(
                "the jwt-bearer grant needs --assertion".into(),
            ));
        };
        let token_endpoint = self.token_endpoint(t, policy)?;
        let client = registration::preregistered(&self.options.client, &t.metadata)?;
        let form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned(),
            ),
            ("assertion", assertion.expose().to_owned()),
        ];
        self.direct_grant(t, token_endpoint, client, form, wanted)
            .await
    }

    /// A grant made at the token endpoint alone (no user, no redirect): `form` names
    /// the grant; the resource and the scope are added here.
    async fn direct_grant(
        &self,
        t: &AuthTarget,
        token_endpoint: String,
        client: OAuthClient,
        mut form: Vec<(&'static str, String)>,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        let wanted = self.quirks.qualified(wanted, &t.resource);
        form.push(("resource", t.resource.clone()));
        if !wanted.is_empty() {
            form.push(("scope", wanted.join(" ")));
        }
        let now = SystemTime::now();
        let r = token::request(
            &self.http,
            &token_endpoint,
            &t.issuer,
            &client,
            form,
            now,
            self.extras(),
        )
        .await?;
        Ok(Grant::from_response(
            r,
            wanted,
            t,
            token_endpoint,
            client,
            now,
            self.dpop.clone(),
        ))
    }

    async fn enterprise(
        &self,
        t: &AuthTarget,
        policy: &UrlPolicy,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        let Some(idp) = &self.options.idp else {
            return Err(AuthError::Config(
                "enterprise-managed authorization needs the identity provider flags".into(),
            ));
        };
        // The user named the identity provider: https (or http on this machine, or with
        // --allow-http), wherever it is.
        let idp_url = Url::parse(&idp.token_endpoint).map_err(|_| {
            AuthError::refused("identity provider's token endpoint")(
                super::urls::UrlRefusal::NotAUrl {
                    url: idp.token_endpoint.clone(),
                },
            )
        })?;
        super::urls::may_carry_secrets(&idp_url, policy.allow_http)
            .map_err(AuthError::refused("identity provider's token endpoint"))?;
        let token_endpoint = self.token_endpoint(t, policy)?;
        let client = registration::preregistered(&self.options.client, &t.metadata)?;
        let r = super::enterprise::run(
            &self.http,
            idp,
            &t.issuer,
            &token_endpoint,
            &client,
            &t.resource,
            &wanted,
            self.extras(),
        )
        .await?;
        Ok(Grant::from_response(
            r,
            wanted,
            t,
            token_endpoint,
            client,
            SystemTime::now(),
            self.dpop.clone(),
        ))
    }

    async fn device(
        &self,
        t: &AuthTarget,
        policy: &UrlPolicy,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        let Some(endpoint) = t.metadata.device_authorization_endpoint.as_deref() else {
            return Err(AuthError::Config(format!(
                "the authorization server {} does not offer the device authorization grant",
                t.issuer
            )));
        };
        let endpoint = policy
            .check(endpoint)
            .map_err(AuthError::refused("device_authorization_endpoint"))?
            .to_string();
        let token_endpoint = self.token_endpoint(t, policy)?;
        let wanted = self.quirks.scopes(
            wanted,
            t.metadata.lists_scope("offline_access"),
            &t.resource,
        );
        let client = match registration::plan(&self.options.client, &t.metadata)? {
            Plan::Preregistered => registration::preregistered(&self.options.client, &t.metadata)?,
            Plan::MetadataDocument(url) => cimd_client(&url, &t.issuer),
            Plan::Dynamic(reg) => {
                let stored = self
                    .registration_for(
                        t,
                        &reg,
                        "http://127.0.0.1/callback",
                        &["http://127.0.0.1/callback".to_owned()],
                        &[
                            "authorization_code",
                            "refresh_token",
                            "urn:ietf:params:oauth:grant-type:device_code",
                        ],
                    )
                    .await?;
                stored.client()
            }
        };
        let r = device::run(
            &self.http,
            &endpoint,
            &token_endpoint,
            &t.issuer,
            &client,
            &wanted,
            &t.resource,
            self.reporter.as_ref(),
            self.extras(),
        )
        .await?;
        Ok(Grant::from_response(
            r,
            wanted,
            t,
            token_endpoint,
            client,
            SystemTime::now(),
            self.dpop.clone(),
        ))
    }

    /// The stored dynamic registration for this issuer if it fits `redirect_uri`,
    /// else a new one (saved) for `redirect_uris`.
    async fn registration_for(
        &self,
        t: &AuthTarget,
        endpoint: &str,
        redirect_uri: &str,
        redirect_uris: &[String],
        grant_types: &[&str],
    ) -> Result<registration::StoredRegistration, AuthError> {
        if let Some(r) = self.registrations.load(&t.issuer).await?
            && r.kind == RegistrationKind::Dynamic
            && r.redirect_uris.iter().any(|u| u == redirect_uri)
        {
            return Ok(r);
        }
        let r = registration::register(
            &self.http,
            &self.policy,
            endpoint,
            &t.metadata,
            &self.options.client_name,
            redirect_uris,
            grant_types,
            &self.options.registration_metadata,
        )
        .await?;
        self.registrations.save(&r).await?;
        self.reporter
            .registered(RegistrationKind::Dynamic, &r.client_id);
        Ok(r)
    }

    /// A listener and a dynamic client whose registered redirect it serves. With the
    /// caller's own callback server ([`super::AuthOptions::callbacks`]), that server,
    /// unless a dynamic registration is stored for this issuer without its redirect
    /// URI: that registration is reused on one of its own loopback ports rather than
    /// replaced (a new page port would register again at every start, and the other
    /// servers of the issuer would lose the client their tokens were issued to).
    /// Otherwise a loopback listener on a port of the stored registration if one is
    /// free, else one of this server's stable ports (all of them registered, so the
    /// next flow finds one free), else any.
    async fn dynamic_client(
        &self,
        t: &AuthTarget,
        endpoint: &str,
        state: &str,
    ) -> Result<(Listener, OAuthClient), AuthError> {
        let stored = self
            .registrations
            .load(&t.issuer)
            .await?
            .filter(|r| r.kind == RegistrationKind::Dynamic);
        let shared = self.shared_callbacks().filter(|callbacks| {
            stored.as_ref().is_none_or(|r| {
                r.redirect_uris
                    .iter()
                    .any(|u| u == callbacks.redirect_uri())
            })
        });
        let listener = match shared {
            Some(callbacks) => Listener::Shared(callbacks.expect(state)),
            None => Listener::Own(self.own_listener(t, stored.as_ref(), state).await?),
        };
        let redirect_uri = listener.redirect_uri(super::CallbackHost::Ip);
        // The stable ports are registered too (unless an exact port was asked), so
        // later flows for this server find one of theirs in the same registration.
        let mut redirect_uris = vec![redirect_uri.clone()];
        if self.options.callback_port.is_none() {
            for port in stable_ports(&t.issuer, &t.resource) {
                let uri = format!("http://127.0.0.1:{port}{}", super::loopback::CALLBACK_PATH);
                if !redirect_uris.contains(&uri) {
                    redirect_uris.push(uri);
                }
            }
        }
        let client = self
            .registration_for(
                t,
                endpoint,
                &redirect_uri,
                &redirect_uris,
                &["authorization_code", "refresh_token"],
            )
            .await?
            .client();
        Ok((listener, client))
    }

    /// A loopback listener of the flow's own: the asked port, else a port `stored`
    /// registered, else a stable port, else any.
    async fn own_listener(
        &self,
        t: &AuthTarget,
        stored: Option<&registration::StoredRegistration>,
        state: &str,
    ) -> Result<Loopback, AuthError> {
        let ports: Vec<u16> = match self.options.callback_port {
            Some(p) => vec![p],
            None => stored
                .iter()
                .flat_map(|r| r.redirect_uris.iter())
                .filter_map(|u| Url::parse(u).ok())
                .filter(|u| {
                    u.host_str() == Some("127.0.0.1") && u.path() == super::loopback::CALLBACK_PATH
                })
                .filter_map(|u| u.port())
                .chain(stable_ports(&t.issuer, &t.resource))
                .collect(),
        };
        for port in &ports {
            match Loopback::bind(*port, state).await {
                Ok(l) => return Ok(l),
                Err(e) => tracing::debug!(port, error = %e, "callback port busy"),
            }
        }
        if self.options.callback_port.is_some() {
            return Err(AuthError::Listener(format!(
                "127.0.0.1:{} is in use",
                ports[0]
            )));
        }
        Loopback::bind(0, state)
            .await
            .map_err(|e| AuthError::Listener(e.to_string()))
    }

    /// The caller's own callback server, when it has one and no exact port is asked.
    fn shared_callbacks(&self) -> Option<&super::loopback::Callbacks> {
        match self.options.callback_port {
            Some(_) => None,
            None => self.options.callbacks.as_ref(),
        }
    }

    async fn code_flow(
        &self,
        t: &AuthTarget,
        report: &discovery::DiscoveryReport,
        policy: &UrlPolicy,
        wanted: Vec<String>,
    ) -> Result<Grant, AuthError> {
        // MCP "Authorization Code Protection": refuse without advertised S256. The
        // 2025-03-26 default endpoints have no metadata to advertise anything.
        if t.source != MetadataSource::LegacyDefaults {
            if report.has(ProblemCode::PkceNotAdvertised) {
                return Err(AuthError::PkceUnsupported {
                    issuer: t.issuer.clone(),
                    why: "does not advertise code_challenge_methods_supported",
                });
            }
            if report.has(ProblemCode::NoS256) {
                return Err(AuthError::PkceUnsupported {
                    issuer: t.issuer.clone(),
                    why: "does not support S256",
                });
            }
        }
        let Some(auth_endpoint) = t.metadata.authorization_endpoint.as_deref() else {
            return Err(AuthError::Config(format!(
                "the authorization server {} has no authorization_endpoint",
                t.issuer
            )));
        };
        let auth_endpoint = policy
            .check(auth_endpoint)
            .map_err(AuthError::refused("authorization_endpoint"))?;
        let token_endpoint = self.token_endpoint(t, policy)?;
        let wanted = self.quirks.scopes(
            wanted,
            t.metadata.lists_scope("offline_access"),
            &t.resource,
        );

        // One retry: a dynamic client the server no longer knows is registered anew.
        let mut retried = false;
        loop {
            let result = self
                .code_flow_once(t, &auth_endpoint, &token_endpoint, policy, &wanted)
                .await;
            match result {
                Err(AuthError::Token(TokenError::OAuth { ref error, .. }))
                    if error == "invalid_client" && !retried =>
                {
                    if let Some(r) = self.registrations.load(&t.issuer).await?
                        && r.kind == RegistrationKind::Dynamic
                    {
                        self.reporter.note("the authorization server no longer knows keyway's client; registering again");
                        self.registrations.forget(&t.issuer).await?;
                        retried = true;
                        continue;
                    }
                    return result;
                }
                other => return other,
            }
        }
    }

    async fn code_flow_once(
        &self,
        t: &AuthTarget,
        auth_endpoint: &Url,
        token_endpoint: &str,
        policy: &UrlPolicy,
        wanted: &[String],
    ) -> Result<Grant, AuthError> {
        let state = CsrfToken::new_random();
        let plan = registration::plan(&self.options.client, &t.metadata)?;
        let dynamic = matches!(plan, Plan::Dynamic(_));
        let (mut listener, client) = match plan {
            Plan::Dynamic(endpoint) => self.dynamic_client(t, &endpoint, state.secret()).await?,
            other => {
                let listener =
                    match self.shared_callbacks() {
                        Some(callbacks) => Listener::Shared(callbacks.expect(state.secret())),
                        None => {
                            let port = self.options.callback_port.unwrap_or(0);
                            Listener::Own(Loopback::bind(port, state.secret()).await.map_err(
                                |e| AuthError::Listener(format!("127.0.0.1:{port}: {e}")),
                            )?)
                        }
                    };
                let client = match other {
                    Plan::MetadataDocument(url) => cimd_client(&url, &t.issuer),
                    _ => registration::preregistered(&self.options.client, &t.metadata)?,
                };
                (listener, client)
            }
        };
        let redirect_uri = if dynamic {
            listener.redirect_uri(super::CallbackHost::Ip)
        } else {
            listener.redirect_uri(self.options.callback_host)
        };

        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let url = self.authorization_url(
            auth_endpoint,
            &client.client_id,
            &redirect_uri,
            wanted,
            state.secret(),
            &challenge,
            &t.resource,
        );
        let expected = Expected {
            state: state.secret(),
            issuer: &t.metadata.issuer,
            iss_required: t.metadata.iss_parameter_required(),
        };
        if let Some(p) = &self.pending {
            let flow = super::PendingFlow {
                issuer: t.issuer.clone(),
                resource: t.resource.clone(),
                redirect_uri: redirect_uri.clone(),
                client_id: client.client_id.clone(),
                token_endpoint: token_endpoint.to_owned(),
                scopes: wanted.to_vec(),
                code_verifier: verifier.secret().clone(),
                started_at: SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
            };
            p.begin(state.secret(), &flow).await?;
        }
        let code = self
            .obtain_code(&url, &redirect_uri, &mut listener, &expected, *policy)
            .await;
        if let Some(p) = &self.pending
            && let Err(e) = p.end(state.secret()).await
        {
            tracing::warn!(error = %e, "could not forget a finished authorization flow");
        }
        let code = code?;
        drop(listener);

        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.secret().clone()),
            ("redirect_uri", redirect_uri.clone()),
            ("code_verifier", verifier.secret().clone()),
            ("resource", t.resource.clone()),
        ];
        let now = SystemTime::now();
        let r = token::request(
            &self.http,
            token_endpoint,
            &t.issuer,
            &client,
            form,
            now,
            self.extras(),
        )
        .await?;
        Ok(Grant::from_response(
            r,
            wanted.to_vec(),
            t,
            token_endpoint.to_owned(),
            client,
            now,
            self.dpop.clone(),
        ))
    }

    /// The authorization request (RFC 6749 §4.1.1 with PKCE, RFC 8707's `resource`
    /// unless the provider refuses it, the provider's own parameters, and RFC 9449's
    /// `dpop_jkt` when the code is to be bound).
    #[allow(clippy::too_many_arguments)]
    fn authorization_url(
        &self,
        auth_endpoint: &Url,
        client_id: &str,
        redirect_uri: &str,
        wanted: &[String],
        state: &str,
        challenge: &PkceCodeChallenge,
        resource: &str,
    ) -> Url {
        let mut url = auth_endpoint.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", client_id);
            q.append_pair("redirect_uri", redirect_uri);
            if !wanted.is_empty() {
                q.append_pair("scope", &wanted.join(" "));
            }
            q.append_pair("state", state);
            q.append_pair("code_challenge", challenge.as_str());
            q.append_pair("code_challenge_method", challenge.method().as_str());
            if self.quirks.send_resource {
                q.append_pair("resource", resource);
            }
            for (k, v) in &self.quirks.authorize_params {
                if !profile::Quirks::AUTHORIZE_RESERVED.contains(&k.as_str()) {
                    q.append_pair(k, v);
                }
            }
            // RFC 9449 §10: the code is bound to the key that will redeem it.
            if let Some(key) = &self.dpop {
                q.append_pair("dpop_jkt", key.thumbprint());
            }
        }
        url
    }

    /// Get the person to `url` and wait for the code, per the browser mode.
    async fn obtain_code(
        &self,
        url: &Url,
        redirect_uri: &str,
        listener: &mut Listener,
        expected: &Expected<'_>,
        policy: UrlPolicy,
    ) -> Result<oauth2::AuthorizationCode, AuthError> {
        let timeout = self.options.callback_timeout;
        let mut paste = None;
        let mut follow = None;
        let mut opening: Option<futures::future::BoxFuture<'_, Result<(), browser::BrowserError>>> =
            None;
        match self.options.browser {
            BrowserMode::Follow => {
                let (u, r) = (url.clone(), redirect_uri.to_owned());
                follow = Some(tokio::spawn(async move {
                    browser::follow(&u, &r, policy).await
                }));
            }
            BrowserMode::System
                if self.options.opener.is_some() || browser::browser_available() =>
            {
                // Opening runs beside the wait: an opener may only return once the
                // page is done, and the callback must be answered meanwhile.
                opening = Some(match &self.options.opener {
                    Some(opener) => opener.open(url),
                    None => Box::pin(browser::open_system(url)),
                });
            }
            BrowserMode::System | BrowserMode::None if !self.options.allow_paste => {
                // No browser, and stdin is not free (a proxy's client owns it): the
                // listener stays open until the timeout, for a browser on this machine
                // or one whose port is forwarded here.
                self.reporter.authorization_url(url.as_str(), false);
                self.reporter.note(&headless_note(redirect_uri, timeout));
            }
            BrowserMode::System | BrowserMode::None => {
                self.reporter.authorization_url(url.as_str(), false);
                self.reporter.waiting_for_paste();
                paste = Some(browser::stdin_lines());
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                opened = poll_opening(&mut opening), if opening.is_some() => {
                    opening = None;
                    if let Err(e) = &opened {
                        tracing::info!(error = %e, "could not open a browser");
                    }
                    self.reporter.authorization_url(url.as_str(), opened.is_ok());
                    if opened.is_err() {
                        if !self.options.allow_paste {
                            self.reporter.note(&headless_note(redirect_uri, timeout));
                            continue;
                        }
                        self.reporter.waiting_for_paste();
                        paste = Some(browser::stdin_lines());
                    }
                }
                arrived = listener.next(remaining) => {
                    let Some(arrived) = arrived else {
                        return Err(AuthError::Timeout { waited: timeout, what: "the browser to come back" });
                    };
                    match callback::judge(expected, &arrived.params) {
                        Verdict::Ignore => { let _ = arrived.reply.send(Page::Failed("not this sign-in".into())); }
                        Verdict::Code(code) => {
                            let _ = arrived.reply.send(Page::Done);
                            return Ok(code);
                        }
                        Verdict::Refused(r) => {
                            let _ = arrived.reply.send(Page::Failed(r.to_string()));
                            return Err(r.into());
                        }
                    }
                }
                line = recv_line(&mut paste), if paste.is_some() => {
                    let Some(line) = line else { paste = None; continue };
                    match pasted(&line, expected) {
                        Some(Ok(code)) => return Ok(code),
                        Some(Err(r)) => return Err(r.into()),
                        None => self.reporter.note("that is not the redirect URL of this sign-in; paste the whole URL the browser ended on"),
                    }
                }
                done = join_follow(&mut follow), if follow.is_some() => {
                    match done {
                        // The callback, if any, is already queued at the listener.
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(AuthError::Browser(e.to_string())),
                        Err(e) => return Err(AuthError::Browser(e.to_string())),
                    }
                    if let Some(arrived) = listener.next(std::time::Duration::from_millis(0)).await {
                        // Same handling as above, inline for the queued callback.
                        return match callback::judge(expected, &arrived.params) {
                            Verdict::Code(code) => { let _ = arrived.reply.send(Page::Done); Ok(code) }
                            Verdict::Refused(r) => { let _ = arrived.reply.send(Page::Failed(r.to_string())); Err(r.into()) }
                            Verdict::Ignore => Err(AuthError::Browser("the authorization server redirected back with another state".into())),
                        };
                    }
                    return Err(AuthError::Browser(
                        "the authorization server did not redirect back without a person; use --browser system or none".into(),
                    ));
                }
            }
        }
    }
}

/// Where a flow's callback arrives: its own loopback listener, or the caller's
/// server ([`super::loopback::Callbacks`]).
enum Listener {
    Own(Loopback),
    Shared(Expecting),
}

impl Listener {
    /// The redirect URI to register and send; `host` names the loopback listener's
    /// address (a shared server's URI is used as the caller gave it).
    fn redirect_uri(&self, host: super::CallbackHost) -> String {
        match self {
            Self::Own(l) if host == super::CallbackHost::Ip => l.redirect_uri(),
            Self::Own(l) => l.redirect_uri_with(host),
            Self::Shared(e) => e.redirect_uri(),
        }
    }

    async fn next(&mut self, timeout: std::time::Duration) -> Option<Arrived> {
        match self {
            Self::Own(l) => l.next(timeout).await,
            Self::Shared(e) => e.next(timeout).await,
        }
    }
}

/// What to do when no browser opens here and stdin is taken: the URL works in a
/// browser on this machine, or on another once the callback port is forwarded.
fn headless_note(redirect_uri: &str, timeout: std::time::Duration) -> String {
    let port = Url::parse(redirect_uri)
        .ok()
        .and_then(|u| u.port())
        .map(|p| p.to_string())
        .unwrap_or_else(|| "PORT".into());
    format!(
        "no browser opens here: open the URL above in a browser on this machine, or on another after forwarding the callback port (ssh -L {port}:127.0.0.1:{port} THIS-HOST); waiting {} s for it",
        timeout.as_secs()
    )
}

async fn poll_opening(
    opening: &mut Option<futures::future::BoxFuture<'_, Result<(), browser::BrowserError>>>,
) -> Result<(), browser::BrowserError> {
    match opening {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn recv_line(rx: &mut Option<tokio::sync::mpsc::Receiver<String>>) -> Option<String> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

async fn join_follow(
    task: &mut Option<tokio::task::JoinHandle<Result<u16, browser::BrowserError>>>,
) -> Result<Result<u16, browser::BrowserError>, tokio::task::JoinError> {
    match task {
        Some(t) => t.await,
        None => std::future::pending().await,
    }
}

/// A pasted answer: the whole redirect URL (judged like a callback), or a bare code
/// when the server does not promise `iss` (there is nothing else to check then).
fn pasted(
    line: &str,
    expected: &Expected<'_>,
) -> Option<Result<oauth2::AuthorizationCode, callback::Refusal>> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if let Ok(u) = Url::parse(line) {
        let params = callback::CallbackParams::parse(u.query().unwrap_or_default());
        return match callback::judge(expected, &params) {
            Verdict::Ignore => None,
            Verdict::Code(c) => Some(Ok(c)),
            Verdict::Refused(r) => Some(Err(r)),
        };
    }
    if expected.iss_required || line.contains(char::is_whitespace) {
        return None;
    }
    Some(Ok(oauth2::AuthorizationCode::new(line.to_owned())))
}

fn cimd_client(url: &str, issuer: &str) -> OAuthClient {
    OAuthClient {
        client_id: url.to_owned(),
        auth: ClientAuth::None,
        kind: RegistrationKind::MetadataDocument,
        issuer: issuer.to_owned(),
        redirect_uris: Vec::new(),
    }
}

/// Callback ports that stay the same for one server (so an exact-match redirect
/// registration keeps working), in the dynamic range: three, so one being taken by
/// another program does not force a new registration.
pub fn stable_ports(issuer: &str, resource: &str) -> [u16; 3] {
    [0u8, 1, 2].map(|i| {
        let mut h = DefaultHasher::new();
        (issuer, resource, i).hash(&mut h);
        49152 + (h.finish() % 16384) as u16
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_up_stops_at_three_per_resource_and_operation() {
        let mut s = StepUp::default();
        assert!((0..3).all(|_| s.allow("r", "tools/call admin")));
        assert!(!s.allow("r", "tools/call admin"));
        assert!(s.allow("r", "tools/call other"));
        assert!(s.allow("r2", "tools/call admin"));
        // An operation that got through starts again.
        s.done("r", "tools/call admin");
        assert!(s.allow("r", "tools/call admin"));
    }

    #[test]
    fn pasted_answers() {
        let e = Expected {
            state: "s",
            issuer: "https://as",
            iss_required: false,
        };
        assert!(matches!(
            pasted("http://127.0.0.1:1/callback?code=c&state=s", &e),
            Some(Ok(_))
        ));
        assert!(pasted("http://127.0.0.1:1/callback?code=c&state=x", &e).is_none());
        assert!(matches!(pasted("abc123", &e), Some(Ok(_))));
        let strict = Expected {
            iss_required: true,
            ..e
        };
        assert!(
            pasted("abc123", &strict).is_none(),
            "a bare code cannot prove iss"
        );
        assert!(pasted("   ", &strict).is_none());
    }

    #[test]
    fn stable_ports_are_stable_and_dynamic() {
        let a = stable_ports("https://as", "https://r");
        assert_eq!(a, stable_ports("https://as", "https://r"));
        assert!(a.iter().all(|p| *p >= 49152));
        assert_ne!(a, stable_ports("https://as", "https://other"));
    }
}
