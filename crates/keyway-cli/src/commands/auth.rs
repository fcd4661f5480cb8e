//! Shared by every command that may authorize: the flags turned into options, the
//! reporter that tells the person what to do, and authorization errors turned into
//! exit codes with hints.

use std::{io::Write, sync::Arc, time::Duration};

use anyhow::Context;
use keyway::{
    Secret,
    auth::{
        AuthError, AuthMethod, AuthOptions, BrowserMode, ClientAuth, ClientOptions,
        DiscoveryReport, GrantChoice, OAuthClient, RegistrationKind, Reporter, SigningKey,
        dpop::DpopMode, enterprise::IdentityProvider,
    },
};

use crate::{
    cli::{AuthArgs, BrowserArg, CallbackHostArg, ClientAuthArg},
    exit::{CliError, ExitStatus},
};

pub fn options(a: &AuthArgs) -> Result<AuthOptions, CliError> {
    let client_secret = a.client_secret.as_deref().map(read_secret).transpose()?;
    let private_key = match &a.private_key {
        Some(path) => {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading the private key {}", path.display()))?;
            Some(
                SigningKey::from_pem(&Secret::new(pem), a.signing_alg.as_deref())
                    .map_err(|e| usage(format!("--private-key {}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    if a.client_credentials && client_secret.is_none() && private_key.is_none() {
        return Err(usage(
            "--client-credentials needs --client-secret (or KEYWAY_CLIENT_SECRET) or --private-key"
                .into(),
        ));
    }
    if let Some(url) = &a.client_metadata_url {
        let ok = url::Url::parse(url)
            .is_ok_and(|u| u.scheme() == "https" && u.path() != "/" && u.fragment().is_none());
        if !ok {
            return Err(usage(format!(
                "--client-metadata-url {url}: must be an https URL with a path and no fragment"
            )));
        }
    }
    let idp = match (&a.idp_token_endpoint, &a.id_token) {
        (Some(endpoint), Some(id_token)) => {
            let idp_secret = a
                .idp_client_secret
                .as_deref()
                .map(read_secret)
                .transpose()?;
            let client_id = a
                .idp_client_id
                .clone()
                .or_else(|| a.client_id.clone())
                .unwrap_or_default();
            Some(IdentityProvider {
                token_endpoint: endpoint.clone(),
                client: OAuthClient {
                    client_id,
                    auth: match idp_secret {
                        Some(s) => ClientAuth::SecretBasic(oauth2::ClientSecret::new(
                            s.expose().to_owned(),
                        )),
                        None => ClientAuth::None,
                    },
                    kind: RegistrationKind::Preregistered,
                    issuer: endpoint.clone(),
                    redirect_uris: Vec::new(),
                },
                id_token: read_secret(id_token)?,
            })
        }
        _ => None,
    };
    Ok(AuthOptions {
        client: ClientOptions {
            client_id: a.client_id.clone(),
            client_secret,
            auth_method: a.client_auth.map(|m| match m {
                ClientAuthArg::None => AuthMethod::None,
                ClientAuthArg::ClientSecretBasic => AuthMethod::ClientSecretBasic,
                ClientAuthArg::ClientSecretPost => AuthMethod::ClientSecretPost,
                ClientAuthArg::PrivateKeyJwt => AuthMethod::PrivateKeyJwt,
            }),
            private_key,
            client_metadata_url: a.client_metadata_url.clone(),
        },
        grant: if idp.is_some() {
            GrantChoice::EnterpriseManaged
        } else if a.assertion.is_some() {
            GrantChoice::JwtBearer
        } else if a.client_credentials {
            GrantChoice::ClientCredentials
        } else if a.device {
            GrantChoice::Device
        } else {
            GrantChoice::Auto
        },
        browser: match a.browser {
            BrowserArg::System => BrowserMode::System,
            BrowserArg::None => BrowserMode::None,
            BrowserArg::Follow => BrowserMode::Follow,
        },
        scopes: a
            .scope
            .as_ref()
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
        callback_port: a.callback_port,
        callback_host: match a.callback_host {
            CallbackHostArg::Ip => keyway::auth::CallbackHost::Ip,
            CallbackHostArg::Localhost => keyway::auth::CallbackHost::Localhost,
        },
        callback_timeout: Duration::from_secs(a.auth_timeout.max(1)),
        allow_http: a.allow_http,
        client_name: "keyway".into(),
        registration_metadata: match &a.registration_metadata {
            None => Default::default(),
            Some(v) => {
                let text = match v.strip_prefix('@') {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| {
                        super::store::usage(format!("--registration-metadata {v}: {e}"))
                    })?,
                    None => v.clone(),
                };
                keyway::auth::registration_metadata(&text)
                    .map_err(|e| super::store::usage(format!("--registration-metadata: {e}")))?
            }
        },
        idp,
        assertion: a.assertion.as_deref().map(read_secret).transpose()?,
        allow_paste: true,
        opener: None,
        callbacks: None,
        dpop: match a.dpop {
            crate::cli::DpopArg::Auto => DpopMode::Auto,
            crate::cli::DpopArg::Always => DpopMode::Always,
            crate::cli::DpopArg::Never => DpopMode::Never,
        },
        profile: a.profile.clone(),
        no_resource: a.no_resource,
        authorize_params: a.authorize_param.clone().into(),
        token_params: token_params(&a.token_param)?.into(),
        remembered: None,
    })
}

/// `--token-param KEY=@FILE` reads the value from a file (trailing newline dropped),
/// so a secret one need not be in the process list.
fn token_params(params: &[(String, String)]) -> Result<Vec<(String, String)>, CliError> {
    params
        .iter()
        .map(|(k, v)| match v.strip_prefix('@') {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| (k.clone(), text.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| usage(format!("--token-param {k}=@{path}: {e}"))),
            None => Ok((k.clone(), v.clone())),
        })
        .collect()
}

/// `@FILE` reads the secret from a file (trailing newline dropped).
fn read_secret(v: &str) -> Result<Secret, CliError> {
    match v.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the client secret from {path}"))?;
            Ok(Secret::new(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        None => Ok(Secret::new(v.to_owned())),
    }
}

fn usage(msg: String) -> CliError {
    CliError::failure(anyhow::anyhow!(msg)).with_status(ExitStatus::Usage)
}

/// Tells the person on stderr what the flow needs from them. The URL and the device
/// code are shown even with -q: without them nothing can proceed.
pub struct StderrReporter {
    pub quiet: bool,
    /// The spinner while the browser is out (until the flow ends).
    browser: std::sync::Mutex<Option<crate::progress::Waiting>>,
}

impl std::fmt::Debug for StderrReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StderrReporter")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl StderrReporter {
    fn say(&self, always: bool, text: &str) {
        if always || !self.quiet {
            crate::progress::suspend(|| {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{text}");
            });
        }
    }

    fn browser(&self) -> std::sync::MutexGuard<'_, Option<crate::progress::Waiting>> {
        self.browser.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reporter for StderrReporter {
    fn discovered(&self, r: &DiscoveryReport) {
        if let Some(s) = &r.authorization_server {
            self.say(false, &format!("keyway: authorization server {}", s.issuer));
        }
        for p in r.problems.iter().filter(|p| !p.fatal) {
            tracing::info!(problem = ?p.code, "{}", p.message);
        }
    }
    fn registered(&self, kind: RegistrationKind, client_id: &str) {
        let how = match kind {
            RegistrationKind::Dynamic => "registered dynamically",
            RegistrationKind::MetadataDocument => "using the client ID metadata document",
            RegistrationKind::Preregistered => "using the pre-registered client",
        };
        self.say(false, &format!("keyway: {how} (client {client_id})"));
    }
    fn authorization_url(&self, url: &str, opened: bool) {
        if opened {
            self.say(
                false,
                &format!("keyway: opened your browser. If it did not appear, open:\n\n  {url}\n"),
            );
            *self.browser() = Some(crate::progress::Waiting::start(
                "waiting for you to finish in the browser (Ctrl-C gives up)",
            ));
        } else {
            self.say(
                true,
                &format!("keyway: open this URL in a browser to authorize:\n\n  {url}\n"),
            );
        }
    }
    fn waiting_for_paste(&self) {
        self.say(true, "keyway: waiting for the browser; or paste the URL it ends on (or the code) here and press Enter");
    }
    fn device_code(&self, uri: &str, complete: Option<&str>, code: &str) {
        let mut text = format!("keyway: to authorize, visit {uri} and enter the code {code}");
        if let Some(c) = complete {
            text.push_str(&format!("\n        (or open {c})"));
        }
        self.say(true, &text);
    }
    fn authorized(&self, issuer: &str, scopes: &[String]) {
        self.browser().take();
        let s = if scopes.is_empty() {
            String::new()
        } else {
            format!(" (scopes: {})", scopes.join(" "))
        };
        self.say(false, &format!("keyway: authorized by {issuer}{s}"));
    }
    fn note(&self, message: &str) {
        self.say(false, &format!("keyway: {message}"));
    }
}

pub fn reporter(quiet: bool) -> Arc<dyn Reporter> {
    Arc::new(StderrReporter {
        quiet,
        browser: std::sync::Mutex::new(None),
    })
}

/// A session's failure as a CLI error: the exit status and the next step it calls for.
pub fn client_error(e: keyway::client::ClientError) -> CliError {
    use keyway::client::ClientError as E;
    match e {
        E::Authorization(e) => error(e),
        E::Store(e) => super::store::store_error(e),
        E::Connect(e) => CliError::connect(e),
        E::Disabled { ref name } => {
            let hint = format!("keyway enable {name}");
            CliError::failure(e).with_hint(hint)
        }
        E::TokenMissing { ref name, .. } => {
            let hint = format!("give it one: keyway set-token {name}");
            CliError::failure(e)
                .with_status(ExitStatus::AuthorizationNeeded)
                .with_hint(hint)
        }
        E::TokenRejected { saved, ref server } => {
            let hint = if saved {
                format!("get a new token from the server's operator, then keyway set-token {server}")
            } else {
                "get a new token and pass it again".to_owned()
            };
            CliError::failure(e)
                .with_status(ExitStatus::AuthorizationNeeded)
                .with_hint(hint)
        }
        E::StillUnauthorized { .. } => CliError::failure(e)
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint("the server rejects the tokens its own authorization server issues; check its configuration"),
        E::Forbidden { .. } => CliError::failure(e)
            .with_hint("this is not a scope problem keyway can fix by authorizing again"),
        E::SignInLimit { .. } | E::AuthorizeWait { .. } => CliError::failure(e)
            .with_status(ExitStatus::AuthorizationNeeded)
            .with_hint("run `keyway authorize` for it in a terminal (or check the server)"),
        e => CliError::failure(e),
    }
}

/// An authorization error as a CLI error: exit 3 with what to do next.
pub fn error(e: AuthError) -> CliError {
    let hint: Option<String> = match &e {
        AuthError::Discovery(report) => report.fatal().map(|p| hint_for(p.code)),
        AuthError::PkceUnsupported { .. } => Some("the server's authorization server must support PKCE S256; ask its operator, or use an access token".into()),
        AuthError::InsecureUrl { .. } => Some("keyway only sends a flow to https (http on loopback), and never to an address the server itself is not on; --allow-http permits plain http for development".into()),
        AuthError::NoRegistration { .. } => Some("pass a pre-registered --client-id (and --client-secret), or use an access token the server's operator gives you".into()),
        AuthError::Registration { .. } => Some("the authorization server refused dynamic registration; pre-register a client and pass --client-id".into()),
        AuthError::Callback(_) => Some("the authorization response did not check out; nothing was stored. Try again, and report it if it repeats".into()),
        AuthError::Declined => Some("run the command again and approve the request".into()),
        AuthError::Timeout { .. } => Some("run the command again and finish in the browser sooner, or raise --auth-timeout; without a browser here use --browser none or --device".into()),
        AuthError::Browser(_) => Some("use --browser none to paste the redirect by hand, or --device".into()),
        AuthError::Listener(_) => Some("free the port or drop --callback-port".into()),
        AuthError::Token(t) if t.code() == Some("invalid_client") => {
            Some("the authorization server does not accept this client: check --client-id, --client-secret and --client-auth".into())
        }
        AuthError::Token(keyway::auth::token::TokenError::Dpop(_))
        | AuthError::DpopUnusable(_)
        | AuthError::DpopKey(_)
        | AuthError::BearerIssued { .. } => Some("nothing stored was changed; --dpop never uses plain Bearer tokens where the MCP server takes them, --dpop always insists on bound ones. Report it to the server's operator if it repeats".into()),
        AuthError::Token(t) if t.code() == Some("invalid_dpop_proof") => Some("the authorization server refused keyway's DPoP proof; nothing stored was changed. Try --dpop never if the MCP server takes Bearer tokens".into()),
        AuthError::Token(_) => Some("the authorization server refused the token request; run again, and report it if it repeats".into()),
        AuthError::StepUpExhausted { .. } => Some("the server keeps asking for more scopes; your account may lack the permission".into()),
        AuthError::Config(_) => None,
        _ => None,
    };
    let status = match &e {
        AuthError::Config(_) | AuthError::Param(_) => ExitStatus::Usage,
        _ => ExitStatus::AuthorizationNeeded,
    };
    let mut err = CliError::failure(e).with_status(status);
    if let Some(h) = hint {
        err = err.with_hint(h);
    }
    err
}

fn hint_for(code: keyway::auth::ProblemCode) -> String {
    use keyway::auth::ProblemCode as P;
    match code {
        P::ResourceMismatch => "the server's metadata claims to be another server; it may be misconfigured or hostile. Nothing was sent to it".into(),
        P::IssuerMismatch => "the authorization server's metadata names another issuer (RFC 8414 §3.3); it is misconfigured or hostile. Nothing was sent to it".into(),
        P::InsecureUrl => "keyway only follows https (and http on loopback); --allow-http permits http for development".into(),
        P::AuthServerMetadataMissing | P::NoAuthorizationServers => "the server names no reachable authorization server; use an access token if you have one".into(),
        P::MissingEndpoint => "the authorization server metadata is incomplete; ask the server's operator".into(),
        _ => "run with -v to see every URL keyway tried".into(),
    }
}
