//! The authorization code flow of a web server (the team gateway): the person's
//! browser comes back to the server's own URL, not to a loopback listener, and
//! possibly to another process than the one that sent it away. So the flow is two
//! steps: [`Authorizer::begin_web`] gives the URL to send the browser to and a
//! [`WebFlow`] to keep (sealed, in the store); [`Authorizer::finish_web`] takes the
//! callback's query and that flow, and redeems the code.
//!
//! The checks are the loopback flow's: PKCE S256 (refused without it), `state`,
//! `iss` (RFC 9207), the resource indicator, exact redirect URI. Tokens are Bearer
//! (a DPoP key would have to travel with the flow).

use std::time::SystemTime;

use oauth2::{CsrfToken, PkceCodeChallenge};
use serde::{Deserialize, Serialize};
use url::Url;

use super::{Authorizer, cimd_client, guarded_client};
use crate::auth::{
    AuthError, Grant,
    callback::{self, CallbackParams, Expected, Verdict},
    client::{ClientAuth, OAuthClient, RegistrationKind},
    discovery::{self, AuthTarget, MetadataSource, ProblemCode},
    dpop::DpopMode,
    metadata::AuthServerMetadata,
    profile::Quirks,
    registration::{self, Plan},
    scopes, token,
    urls::UrlPolicy,
};

/// A web flow between its two steps: everything [`Authorizer::finish_web`] needs,
/// to be kept sealed (it holds the PKCE verifier) under its `state`.
#[derive(Clone, Serialize, Deserialize)]
pub struct WebFlow {
    /// The authorization server's issuer.
    pub issuer: String,
    /// The resource indicator asked for (RFC 8707).
    pub resource: String,
    /// The redirect URI sent (the code is redeemed with it).
    pub redirect_uri: String,
    /// The client the code is for.
    pub client_id: String,
    /// Where the code is redeemed.
    pub token_endpoint: String,
    /// The scopes asked.
    pub scopes: Vec<String>,
    /// The authorization server's metadata (its `iss` promise, kept with the tokens).
    pub metadata: AuthServerMetadata,
    /// What the provider needs done differently.
    pub quirks: Quirks,
    /// The URL whose class sets the URL rules of the flow's requests: the MCP
    /// server's, or (signing a person in at a known server) the issuer's.
    judged_by: String,
    state: String,
    code_verifier: String,
}

impl std::fmt::Debug for WebFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebFlow")
            .field("issuer", &self.issuer)
            .field("resource", &self.resource)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl WebFlow {
    /// The `state` sent with the authorization request: a secret, the key the flow
    /// is kept under until its callback.
    pub fn state(&self) -> &str {
        &self.state
    }
}

impl Authorizer {
    /// Start a web flow for the MCP server at `mcp_url` after its 401 (with these
    /// `WWW-Authenticate` values): discovery, registration (for `redirect_uri`), and
    /// the authorization URL to send the person's browser to.
    pub async fn begin_web(
        &self,
        mcp_url: &Url,
        www_authenticate: &[String],
        redirect_uri: &str,
    ) -> Result<(Url, WebFlow), AuthError> {
        let policy = UrlPolicy::for_server_resolved(mcp_url, self.options.allow_http).await;
        let flow = Self {
            http: guarded_client(&policy)?,
            policy,
            ..self.clone()
        };
        let (report, target) =
            discovery::discover(&flow.http, mcp_url, www_authenticate, &policy).await;
        flow.reporter.discovered(&report);
        let Some(target) = target else {
            return Err(AuthError::Discovery(Box::new(report)));
        };
        if report.has(ProblemCode::PkceNotAdvertised) || report.has(ProblemCode::NoS256) {
            return Err(AuthError::PkceUnsupported {
                issuer: target.issuer.clone(),
                why: "does not advertise S256 in code_challenge_methods_supported",
            });
        }
        if self.options.dpop == DpopMode::Always {
            return Err(AuthError::Config(
                "a web flow's tokens are Bearer: DPoP cannot be demanded for it".into(),
            ));
        }
        flow.begin_web_at(&target, redirect_uri, mcp_url).await
    }

    /// Start a web flow at a known authorization server (`metadata`) for `resource`,
    /// asking `wanted`: how a web server signs a person in at its own organisation's
    /// server.
    pub async fn begin_web_for(
        &self,
        metadata: &AuthServerMetadata,
        resource: &str,
        wanted: &[String],
        redirect_uri: &str,
    ) -> Result<(Url, WebFlow), AuthError> {
        let target = AuthTarget {
            resource: resource.to_owned(),
            issuer: metadata.issuer.clone(),
            metadata: metadata.clone(),
            source: MetadataSource::ProtectedResource,
            challenge_scope: Some(wanted.to_vec()),
            resource_scopes: None,
        };
        // The operator named this server: its own class sets the rules.
        let issuer = Url::parse(&metadata.issuer)
            .map_err(|_| AuthError::Config(format!("{} is not a URL", metadata.issuer)))?;
        let policy = UrlPolicy::for_server_resolved(&issuer, self.options.allow_http).await;
        let flow = Self {
            http: guarded_client(&policy)?,
            policy,
            ..self.clone()
        };
        flow.begin_web_at(&target, redirect_uri, &issuer).await
    }

    async fn begin_web_at(
        &self,
        t: &AuthTarget,
        redirect_uri: &str,
        judged_by: &Url,
    ) -> Result<(Url, WebFlow), AuthError> {
        let methods = t.metadata.code_challenge_methods_supported.as_deref();
        if !methods.is_some_and(|m| m.iter().any(|m| m == "S256")) {
            return Err(AuthError::PkceUnsupported {
                issuer: t.issuer.clone(),
                why: "does not advertise S256 in code_challenge_methods_supported",
            });
        }
        let quirks = self.quirks_for(t)?;
        let this = Self {
            quirks,
            dpop: None,
            ..self.clone()
        };
        let Some(auth_endpoint) = t.metadata.authorization_endpoint.as_deref() else {
            return Err(AuthError::Config(format!(
                "the authorization server {} has no authorization_endpoint",
                t.issuer
            )));
        };
        let auth_endpoint = this
            .policy
            .check(auth_endpoint)
            .map_err(AuthError::refused("authorization_endpoint"))?;
        let token_endpoint = this.token_endpoint(t, &this.policy)?;
        let wanted = scopes::initial(
            this.options.scopes.as_deref(),
            t.challenge_scope.as_deref(),
            t.resource_scopes.as_deref(),
        );
        let wanted = this.quirks.scopes(
            wanted,
            t.metadata.lists_scope("offline_access"),
            &t.resource,
        );
        let client = match registration::plan(&this.options.client, &t.metadata)? {
            Plan::Preregistered => registration::preregistered(&this.options.client, &t.metadata)?,
            Plan::MetadataDocument(url) => cimd_client(&url, &t.issuer),
            Plan::Dynamic(endpoint) => this
                .registration_for(
                    t,
                    &endpoint,
                    redirect_uri,
                    &[redirect_uri.to_owned()],
                    &["authorization_code", "refresh_token"],
                )
                .await?
                .client(),
        };
        let state = CsrfToken::new_random();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let url = this.authorization_url(
            &auth_endpoint,
            &client.client_id,
            redirect_uri,
            &wanted,
            state.secret(),
            &challenge,
            &t.resource,
        );
        Ok((
            url,
            WebFlow {
                issuer: t.issuer.clone(),
                resource: t.resource.clone(),
                redirect_uri: redirect_uri.to_owned(),
                client_id: client.client_id,
                token_endpoint,
                scopes: wanted,
                metadata: t.metadata.clone(),
                quirks: this.quirks,
                judged_by: judged_by.to_string(),
                state: state.secret().clone(),
                code_verifier: verifier.secret().clone(),
            },
        ))
    }

    /// Finish `flow` with the query its callback came with: the `state` and `iss`
    /// checked, the code redeemed. An error names what the server answered.
    pub async fn finish_web(&self, flow: &WebFlow, query: &str) -> Result<Grant, AuthError> {
        let expected = Expected {
            state: &flow.state,
            issuer: &flow.metadata.issuer,
            iss_required: flow.metadata.iss_parameter_required(),
        };
        let code = match callback::judge(&expected, &CallbackParams::parse(query)) {
            Verdict::Code(code) => code,
            Verdict::Refused(r) => return Err(r.into()),
            Verdict::Ignore => {
                return Err(AuthError::Browser(
                    "the callback is not this flow's (its state differs)".into(),
                ));
            }
        };
        let judged_by = Url::parse(&flow.judged_by)
            .map_err(|_| AuthError::Config(format!("{} is not a URL", flow.judged_by)))?;
        let policy = UrlPolicy::for_server_resolved(&judged_by, self.options.allow_http).await;
        let this = Self {
            http: guarded_client(&policy)?,
            policy,
            quirks: flow.quirks.clone(),
            dpop: None,
            ..self.clone()
        };
        let token_endpoint = policy
            .check(&flow.token_endpoint)
            .map_err(AuthError::refused("token_endpoint"))?
            .to_string();
        let client = this.client_named(flow).await?;
        let form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.secret().clone()),
            ("redirect_uri", flow.redirect_uri.clone()),
            ("code_verifier", flow.code_verifier.clone()),
            ("resource", flow.resource.clone()),
        ];
        let now = SystemTime::now();
        let r = token::request(
            &this.http,
            &token_endpoint,
            &flow.issuer,
            &client,
            form,
            now,
            this.extras(),
        )
        .await?;
        let target = AuthTarget {
            resource: flow.resource.clone(),
            issuer: flow.issuer.clone(),
            metadata: flow.metadata.clone(),
            source: MetadataSource::ProtectedResource,
            challenge_scope: None,
            resource_scopes: None,
        };
        let mut grant = Grant::from_response(
            r,
            flow.scopes.clone(),
            &target,
            token_endpoint,
            client,
            now,
            None,
        );
        grant.as_metadata = Some(flow.metadata.clone());
        grant.quirks = flow.quirks.clone();
        Ok(grant)
    }

    /// The client `flow` was started with, with its secret: the pre-registered one
    /// of the options, else the stored registration, else a public client.
    async fn client_named(&self, flow: &WebFlow) -> Result<OAuthClient, AuthError> {
        if self.options.client.client_id.as_deref() == Some(flow.client_id.as_str()) {
            return registration::preregistered(&self.options.client, &flow.metadata);
        }
        if let Some(r) = self.registrations.load(&flow.issuer).await?
            && r.client_id == flow.client_id
        {
            return Ok(r.client());
        }
        Ok(OAuthClient {
            client_id: flow.client_id.clone(),
            auth: ClientAuth::None,
            kind: if flow.client_id.starts_with("https://") {
                RegistrationKind::MetadataDocument
            } else {
                RegistrationKind::Dynamic
            },
            issuer: flow.issuer.clone(),
            redirect_uris: vec![flow.redirect_uri.clone()],
        })
    }
}
