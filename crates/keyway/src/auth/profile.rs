//! Identity-provider profiles: how real authorization servers bend the standard, as
//! data. A profile is picked by the issuer (or named with `--profile`), says why and
//! what it changes, and becomes [`Quirks`]: the few knobs a flow and every later
//! refresh obey. The escape hatches (`--no-resource`, `--authorize-param`,
//! `--token-param`) add to the same [`Quirks`] for providers no profile knows. Pure.

use serde::{Deserialize, Serialize};
use url::Url;

/// Extra request parameters, `KEY=VALUE` pairs. `Debug` shows the keys only: a
/// value may be something only the server should see.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Params(pub Vec<(String, String)>);

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=[redacted]")))
            .finish()
    }
}

impl std::ops::Deref for Params {
    type Target = Vec<(String, String)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Params {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<'a> IntoIterator for &'a Params {
    type Item = &'a (String, String);
    type IntoIter = std::slice::Iter<'a, (String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl From<Vec<(String, String)>> for Params {
    fn from(v: Vec<(String, String)>) -> Self {
        Self(v)
    }
}

/// What a flow does differently from the standard, kept with the credential so a
/// refresh (in any process) does the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Quirks {
    /// Send `resource` (RFC 8707) on the authorization and token requests.
    pub send_resource: bool,
    /// More parameters for the authorization request.
    pub authorize_params: Params,
    /// More parameters for every token request (refresh included).
    pub token_params: Params,
    /// Send the scopes again on refresh (RFC 6749 §6 allows it; Entra needs it).
    pub scope_on_refresh: bool,
    /// Qualify bare scopes with the resource: `mcp:tools` becomes
    /// `RESOURCE/mcp:tools`, and no scope at all `RESOURCE/.default` (Entra v2).
    pub qualify_scopes: bool,
    /// When to ask for `offline_access` (a refresh token).
    pub offline_access: OfflineAccess,
}

impl Default for Quirks {
    fn default() -> Self {
        Self {
            send_resource: true,
            authorize_params: Params::default(),
            token_params: Params::default(),
            scope_on_refresh: false,
            qualify_scopes: false,
            offline_access: OfflineAccess::WhenListed,
        }
    }
}

/// When a flow asks for the `offline_access` scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflineAccess {
    /// When the authorization server lists it in `scopes_supported` (the standard way).
    #[default]
    WhenListed,
    /// Always: servers that need it for a refresh token but do not list it.
    Always,
    /// Never: servers that refuse it (a refresh token comes another way).
    Never,
}

/// The scopes OpenID Connect defines: never qualified with a resource.
const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

impl Quirks {
    /// The scopes to ask for: `offline_access` per [`OfflineAccess`], then qualified
    /// with `resource` when [`qualify_scopes`](Self::qualify_scopes) says so.
    pub fn scopes(
        &self,
        wanted: Vec<String>,
        as_lists_offline: bool,
        resource: &str,
    ) -> Vec<String> {
        let scopes = self.qualified(wanted, resource);
        match self.offline_access {
            OfflineAccess::WhenListed => {
                super::scopes::with_offline_access(scopes, as_lists_offline)
            }
            OfflineAccess::Always => super::scopes::with_offline_access(scopes, true),
            OfflineAccess::Never => scopes
                .into_iter()
                .filter(|s| s != "offline_access")
                .collect(),
        }
    }

    /// The scopes qualified with `resource` when [`qualify_scopes`](Self::qualify_scopes)
    /// says so (for grants without a refresh token: no `offline_access` added).
    pub fn qualified(&self, wanted: Vec<String>, resource: &str) -> Vec<String> {
        let mut scopes = wanted;
        if self.qualify_scopes {
            let base = resource.trim_end_matches('/');
            let bare = |s: &str| !OIDC_SCOPES.contains(&s) && !s.contains('/');
            if !scopes.iter().any(|s| !OIDC_SCOPES.contains(&s.as_str())) {
                scopes.insert(0, format!("{base}/.default"));
            }
            scopes = scopes
                .into_iter()
                .map(|s| if bare(&s) { format!("{base}/{s}") } else { s })
                .collect();
        }
        scopes
    }

    /// The first scope of `wanted` (named by the server, not the person's
    /// `explicit` ones) that would choose another audience: with `resource` left out,
    /// a scope is the only thing that says what the token is for, so the server may
    /// only name bare scopes, OpenID ones, and scopes under its own `resource`.
    pub fn foreign_scope<'a>(
        &self,
        wanted: &'a [String],
        explicit: Option<&[String]>,
        resource: &str,
    ) -> Option<&'a str> {
        if self.send_resource {
            return None;
        }
        let base = format!("{}/", resource.trim_end_matches('/'));
        wanted
            .iter()
            .find(|s| {
                !explicit.is_some_and(|e| e.contains(s))
                    && !OIDC_SCOPES.contains(&s.as_str())
                    && s.contains('/')
                    && !s.starts_with(&base)
            })
            .map(String::as_str)
    }

    /// The authorization request's parameters that are keyway's own: an extra
    /// parameter may not name them (`scope`: use `--scope`; `resource`:
    /// `--no-resource`).
    pub const AUTHORIZE_RESERVED: [&'static str; 12] = [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "code_challenge",
        "code_challenge_method",
        "scope",
        "resource",
        "dpop_jkt",
        "request",
        "request_uri",
        "response_mode",
    ];

    /// The token request's parameters that are keyway's own.
    pub const TOKEN_RESERVED: [&'static str; 18] = [
        "grant_type",
        "code",
        "code_verifier",
        "redirect_uri",
        "refresh_token",
        "device_code",
        "client_id",
        "client_secret",
        "client_assertion",
        "client_assertion_type",
        "assertion",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "requested_token_type",
        "scope",
        "resource",
    ];
}

/// One identity provider's profile.
#[derive(Debug, PartialEq, Eq)]
pub struct Profile {
    /// The name `--profile` takes (`entra`, `google`, ...).
    pub name: &'static str,
    /// The provider, for people.
    pub provider: &'static str,
    /// What it changes, one line each, for `probe` and the README.
    pub changes: &'static [&'static str],
    /// The issuers it applies to, for people (the test is [`Profile::matches`]).
    pub issuers: &'static str,
}

/// Every profile keyway knows.
pub const PROFILES: [Profile; 6] = [
    Profile {
        name: "entra",
        provider: "Microsoft Entra ID (v2 endpoints)",
        changes: &[
            "no `resource` parameter (AADSTS9010010 / AADSTS901002)",
            "bare scopes qualified with the resource, `RESOURCE/.default` when none (else Entra assumes Microsoft Graph: AADSTS650053)",
            "the scopes sent again on refresh (else the refresh is for Microsoft Graph)",
            "`offline_access` always asked (no refresh token without it)",
        ],
        issuers: "login.microsoftonline.com, login.microsoftonline.us, login.partner.microsoftonline.cn, sts.windows.net, *.ciamlogin.com",
    },
    Profile {
        name: "google",
        provider: "Google",
        changes: &[
            "no `resource` parameter (Google refuses parameters it does not know)",
            "`access_type=offline` and `prompt=consent` on the authorization request (no refresh token without them)",
            "never `offline_access` (an invalid scope at Google)",
        ],
        issuers: "accounts.google.com",
    },
    Profile {
        name: "auth0",
        provider: "Auth0",
        changes: &[
            "`audience=RESOURCE` on the authorization and token requests (else the token is for Auth0's userinfo only)",
            "`offline_access` always asked (no refresh token without it)",
        ],
        issuers: "*.auth0.com",
    },
    Profile {
        name: "okta",
        provider: "Okta",
        changes: &["`offline_access` always asked (no refresh token without it, listed or not)"],
        issuers: "*.okta.com, *.oktapreview.com, *.okta-emea.com, *.okta-gov.com",
    },
    Profile {
        name: "keycloak",
        provider: "Keycloak",
        changes: &[
            "nothing in the requests: its metadata is found by OpenID discovery under the realm path; `resource` is ignored, so the realm needs an audience mapper for this server",
        ],
        issuers: "an issuer path /realms/NAME (or /auth/realms/NAME)",
    },
    Profile {
        name: "github",
        provider: "GitHub",
        changes: &[
            "nothing in the requests: its token endpoint reports errors with HTTP 200, which keyway reads as the errors they are; it has no dynamic registration (pass --client-id)",
        ],
        issuers: "github.com/login/oauth",
    },
];

impl Profile {
    /// The profile `--profile NAME` names.
    pub fn named(name: &str) -> Option<&'static Profile> {
        PROFILES.iter().find(|p| p.name == name)
    }

    /// The profile for `issuer`, with why it applies: picked by the issuer's host (and
    /// path, for Keycloak).
    pub fn for_issuer(issuer: &str) -> Option<(&'static Profile, String)> {
        let url = Url::parse(issuer).ok()?;
        let host = url.host_str()?.to_ascii_lowercase();
        let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
        let name = if [
            "login.microsoftonline.com",
            "login.microsoftonline.us",
            "login.partner.microsoftonline.cn",
            "sts.windows.net",
        ]
        .contains(&host.as_str())
            || host.ends_with(".ciamlogin.com")
        {
            "entra"
        } else if host == "accounts.google.com" {
            "google"
        } else if under("auth0.com") {
            "auth0"
        } else if [
            "okta.com",
            "oktapreview.com",
            "okta-emea.com",
            "okta-gov.com",
        ]
        .iter()
        .any(|d| under(d))
        {
            "okta"
        } else if host == "github.com" && url.path().starts_with("/login/oauth") {
            "github"
        } else if url.path().starts_with("/realms/") || url.path().starts_with("/auth/realms/") {
            "keycloak"
        } else {
            return None;
        };
        let profile = Self::named(name)?;
        let why = if name == "keycloak" {
            format!("the issuer's path {} is a Keycloak realm", url.path())
        } else {
            format!("the issuer is on {host}")
        };
        Some((profile, why))
    }

    /// The quirks this profile sets, for a flow for `resource`.
    pub fn quirks(&self, resource: &str) -> Quirks {
        let mut q = Quirks::default();
        match self.name {
            "entra" => {
                q.send_resource = false;
                q.qualify_scopes = true;
                q.scope_on_refresh = true;
                q.offline_access = OfflineAccess::Always;
            }
            "google" => {
                q.send_resource = false;
                q.offline_access = OfflineAccess::Never;
                q.authorize_params = vec![
                    ("access_type".into(), "offline".into()),
                    ("prompt".into(), "consent".into()),
                ]
                .into();
            }
            "auth0" => {
                q.offline_access = OfflineAccess::Always;
                q.authorize_params = vec![("audience".into(), resource.to_owned())].into();
                q.token_params = vec![("audience".into(), resource.to_owned())].into();
            }
            "okta" => q.offline_access = OfflineAccess::Always,
            _ => {}
        }
        q
    }
}

/// Which profile a flow uses (`--profile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ProfileChoice {
    /// The one the issuer matches, if any.
    #[default]
    Auto,
    /// None, whatever the issuer.
    Off,
    /// This one, whatever the issuer (for a provider behind a custom domain).
    Named(&'static Profile),
}

/// A `--profile` value that names no profile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no profile {:?}: use auto, none, or one of {}", .0, profile_names())]
pub struct UnknownProfile(pub String);

/// The names `--profile` takes, for messages.
fn profile_names() -> String {
    PROFILES
        .iter()
        .map(|p| p.name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::str::FromStr for ProfileChoice {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::Off),
            name => Profile::named(name)
                .map(Self::Named)
                .ok_or_else(|| UnknownProfile(name.to_owned())),
        }
    }
}

/// The profile `choice` picks for `issuer`, with why.
pub fn choose(choice: &ProfileChoice, issuer: &str) -> Option<(&'static Profile, String)> {
    match choice {
        ProfileChoice::Auto => Profile::for_issuer(issuer),
        ProfileChoice::Off => None,
        ProfileChoice::Named(p) => Some((p, "named with --profile".to_owned())),
    }
}

/// Which request an extra parameter is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamFor {
    /// `--authorize-param`.
    Authorize,
    /// `--token-param`.
    Token,
}

/// Why an extra parameter is refused ([`check_param`], [`parse_param`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// Not `KEY=VALUE`.
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// The key is empty.
    #[error("a parameter needs a name")]
    EmptyKey,
    /// One of keyway's own parameters for that request, with what to use instead.
    #[error("{key} is keyway's to set{instead}")]
    Reserved {
        /// The key.
        key: String,
        /// What to use instead, as a parenthesis (or nothing).
        instead: &'static str,
    },
}

/// Check an extra parameter: the key not empty, and not one of keyway's own for that
/// request ([`Quirks::AUTHORIZE_RESERVED`], [`Quirks::TOKEN_RESERVED`]). `Err` says
/// what to use instead.
pub fn check_param(kind: ParamFor, key: &str) -> Result<(), ParamError> {
    if key.trim().is_empty() {
        return Err(ParamError::EmptyKey);
    }
    let reserved: &[&str] = match kind {
        ParamFor::Authorize => &Quirks::AUTHORIZE_RESERVED,
        ParamFor::Token => &Quirks::TOKEN_RESERVED,
    };
    if reserved.contains(&key) {
        return Err(ParamError::Reserved {
            key: key.to_owned(),
            instead: match key {
                "resource" => " (--no-resource leaves it out)",
                "scope" => " (--scope chooses the scopes)",
                _ => "",
            },
        });
    }
    Ok(())
}

/// A `KEY=VALUE` parameter of `--authorize-param` / `--token-param`, checked with
/// [`check_param`].
pub fn parse_param(kind: ParamFor, text: &str) -> Result<(String, String), ParamError> {
    let Some((k, v)) = text.split_once('=') else {
        return Err(ParamError::NotKeyValue(text.to_owned()));
    };
    let k = k.trim();
    check_param(kind, k)?;
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn issuers_pick_their_profile() {
        let cases = [
            (
                "https://login.microsoftonline.com/72f988bf/v2.0",
                Some("entra"),
            ),
            ("https://sts.windows.net/72f988bf/", Some("entra")),
            (
                "https://contoso.ciamlogin.com/contoso.onmicrosoft.com/v2.0",
                Some("entra"),
            ),
            ("https://accounts.google.com", Some("google")),
            ("https://dev-abc.us.auth0.com/", Some("auth0")),
            ("https://example.okta.com/oauth2/default", Some("okta")),
            ("https://example.oktapreview.com", Some("okta")),
            ("https://sso.example.com/realms/acme", Some("keycloak")),
            ("https://sso.example.com/auth/realms/acme", Some("keycloak")),
            ("https://github.com/login/oauth", Some("github")),
            ("https://github.com/other", None),
            ("https://auth0.com.evil.example", None),
            ("https://notokta.com", None),
            ("https://as.example.com", None),
            ("not a url", None),
        ];
        for (issuer, want) in cases {
            assert_eq!(
                Profile::for_issuer(issuer).map(|(p, _)| p.name),
                want,
                "{issuer}"
            );
        }
        let (_, why) = Profile::for_issuer("https://accounts.google.com").unwrap();
        assert_eq!(why, "the issuer is on accounts.google.com");
    }

    #[test]
    fn entra_qualifies_scopes_and_asks_for_a_refresh_token() {
        let q = Profile::named("entra")
            .unwrap()
            .quirks("https://r.example/mcp");
        assert!(!q.send_resource && q.scope_on_refresh);
        assert_eq!(
            q.scopes(v("mcp:tools openid"), false, "https://r.example/mcp"),
            v("https://r.example/mcp/mcp:tools openid offline_access")
        );
        assert_eq!(
            q.scopes(vec![], false, "https://r.example/mcp/"),
            v("https://r.example/mcp/.default offline_access")
        );
        // Already qualified scopes stay as they are.
        assert_eq!(
            q.scopes(
                v("api://app/user_impersonation"),
                false,
                "https://r.example/mcp"
            ),
            v("api://app/user_impersonation offline_access")
        );
    }

    #[test]
    fn without_resource_the_server_may_not_pick_another_audience() {
        let q = Profile::named("entra")
            .unwrap()
            .quirks("https://r.example/mcp");
        let r = "https://r.example/mcp";
        assert_eq!(q.foreign_scope(&v("mcp:tools openid"), None, r), None);
        assert_eq!(
            q.foreign_scope(&v("https://r.example/mcp/files.read"), None, r),
            None
        );
        assert_eq!(
            q.foreign_scope(&v("a https://graph.microsoft.com/Mail.Read"), None, r),
            Some("https://graph.microsoft.com/Mail.Read")
        );
        assert_eq!(
            q.foreign_scope(&v("api://other/user_impersonation"), None, r),
            Some("api://other/user_impersonation")
        );
        // The person's own --scope is theirs to choose.
        let mine = v("api://other/user_impersonation");
        assert_eq!(q.foreign_scope(&mine, Some(&mine), r), None);
        // With resource sent, the audience is bound by it.
        assert_eq!(Quirks::default().foreign_scope(&mine, None, r), None);
    }

    #[test]
    fn google_and_auth0_add_their_parameters() {
        let g = Profile::named("google").unwrap().quirks("https://r/mcp");
        assert_eq!(
            g.scopes(v("a offline_access"), true, "https://r/mcp"),
            v("a")
        );
        assert!(
            g.authorize_params
                .contains(&("prompt".into(), "consent".into()))
        );
        let a = Profile::named("auth0").unwrap().quirks("https://r/mcp");
        assert_eq!(
            *a.token_params,
            [("audience".to_owned(), "https://r/mcp".to_owned())]
        );
        assert!(
            !format!("{a:?}").contains("https://r/mcp"),
            "values are redacted"
        );
        assert_eq!(
            a.scopes(v("a"), false, "https://r/mcp"),
            v("a offline_access")
        );
        assert_eq!(
            Quirks::default().scopes(v("a"), false, "https://r/mcp"),
            v("a")
        );
    }

    #[test]
    fn choices_and_params_parse_with_clear_refusals() {
        assert_eq!("auto".parse::<ProfileChoice>(), Ok(ProfileChoice::Auto));
        assert_eq!("none".parse::<ProfileChoice>(), Ok(ProfileChoice::Off));
        assert!(
            matches!("entra".parse::<ProfileChoice>(), Ok(ProfileChoice::Named(p)) if p.name == "entra")
        );
        assert!(
            "azure"
                .parse::<ProfileChoice>()
                .unwrap_err()
                .to_string()
                .contains("entra, google")
        );
        use ParamFor::*;
        assert_eq!(
            parse_param(Token, "audience=x=y"),
            Ok(("audience".into(), "x=y".into()))
        );
        assert!(parse_param(Authorize, "novalue").is_err());
        assert!(parse_param(Authorize, "=v").is_err());
        assert!(
            parse_param(Authorize, "state=x")
                .unwrap_err()
                .to_string()
                .contains("keyway's")
        );
        assert!(
            parse_param(Token, "resource=x")
                .unwrap_err()
                .to_string()
                .contains("--no-resource")
        );
        assert!(parse_param(Token, "refresh_token=x").is_err());
        assert!(parse_param(Token, "client_assertion=x").is_err());
        assert!(
            parse_param(Authorize, "scope=x")
                .unwrap_err()
                .to_string()
                .contains("--scope")
        );
        assert!(parse_param(Authorize, "prompt=consent").is_ok());
    }
}
