//! `--idp-quirks`: what an authorization request is granted, or why it is refused,
//! when the authorization server imitates a real identity provider (and, without
//! quirks, the standard checks). The handlers (authorize, device authorization, the
//! token grants) apply the verdicts and count the refusals; GitHub's reshaped token
//! answers are in [`github`]. The rules read only the request and the knobs.

use std::collections::HashMap;

use super::{check_resource, requested_scopes};
use crate::{db::QuirkGrant, knobs::IdpQuirks, shared::Shared};

pub(crate) mod github;

/// The scopes OpenID Connect defines: accepted by every provider but GitHub, and
/// never qualified with a resource at Entra.
pub(crate) const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// Microsoft Graph's application id: the resource Entra takes a bare scope for.
pub(crate) const GRAPH: &str = "00000003-0000-0000-c000-000000000000";

/// Entra's answer to `resource` on an authorization request.
pub(crate) const ENTRA_RESOURCE_AUTHORIZE: &str = "AADSTS9010010: The resource parameter \
     provided in the request doesn't match with the requested scopes.";
/// Entra's answer to `resource` on a token request.
pub(crate) const ENTRA_RESOURCE_TOKEN: &str =
    "AADSTS901002: The 'resource' request parameter is not supported.";
/// Entra's answer to an authorization request without `scope`.
pub(crate) const ENTRA_NO_SCOPE: &str =
    "AADSTS900144: The request body must contain the following parameter: 'scope'.";
/// Google's answer to `resource`, on either endpoint.
pub(crate) const GOOGLE_RESOURCE: &str = "Parameter not allowed for this message type: resource";
/// Google's answer to the `offline_access` scope.
pub(crate) const GOOGLE_OFFLINE_ACCESS: &str =
    "Some requested scopes were invalid. {invalid=[offline_access]}";

/// Entra's answer to a scope that is not on the resource it names (or, bare, on
/// Microsoft Graph).
pub(crate) fn entra_unknown_scope(scope: &str, resource: &str) -> String {
    format!(
        "AADSTS650053: The application asked for scope '{scope}' that doesn't exist on the \
         resource '{resource}'."
    )
}

/// A refused request: the OAuth error code and description, and whether a quirk rule
/// refused it (counted in `quirk_refusals`) rather than the standard checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub error: &'static str,
    pub description: String,
    pub by_quirk: bool,
}

impl Refused {
    fn standard(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
            by_quirk: false,
        }
    }

    pub(crate) fn quirk(error: &'static str, description: impl Into<String>) -> Self {
        Self {
            error,
            description: description.into(),
            by_quirk: true,
        }
    }
}

/// What an authorization request (front channel or device), or a client_credentials
/// request, is granted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The scopes tokens carry (what the MCP endpoint's scope checks see).
    pub scope: Vec<String>,
    /// The resource tokens are bound to.
    pub resource: Option<String>,
    pub quirks: QuirkGrant,
}

/// The request's parameters, by name.
pub(crate) type Params = HashMap<String, String>;

/// What the request `p` is granted, or why it is refused. Without quirks: the
/// standard `resource` (RFC 8707) and `scope` checks.
pub(crate) fn grant(shared: &Shared, p: &Params) -> Result<Grant, Refused> {
    let get = |k: &str| p.get(k).map(String::as_str);
    let r = &shared.urls.resource;
    let standard_resource = || {
        check_resource(shared, get("resource"))
            .map(|()| get("resource").map(str::to_owned))
            .map_err(|e| Refused::standard("invalid_target", e))
    };
    let scopes = || {
        requested_scopes(shared, get("scope")).map_err(|e| Refused::standard("invalid_scope", e))
    };
    let offline = |scope: &[String]| QuirkGrant {
        refresh_allowed: scope.iter().any(|s| s == "offline_access"),
        scope_shown: None,
    };
    let Some(quirk) = shared.knobs.idp_quirks else {
        let resource = standard_resource()?;
        return Ok(Grant {
            scope: scopes()?,
            resource,
            quirks: QuirkGrant::default(),
        });
    };
    match quirk {
        IdpQuirks::Entra => {
            if p.contains_key("resource") {
                return Err(Refused::quirk("invalid_target", ENTRA_RESOURCE_AUTHORIZE));
            }
            let asked = split(get("scope"));
            if asked.is_empty() {
                return Err(Refused::quirk("invalid_request", ENTRA_NO_SCOPE));
            }
            let known = &shared.knobs.as_scopes.0;
            let entra = entra_scopes(r, known, &resource_scopes(shared), &asked)?;
            Ok(Grant {
                quirks: QuirkGrant {
                    scope_shown: Some(asked),
                    ..offline(&entra.carried)
                },
                scope: entra.carried,
                resource: Some(if entra.for_resource { r } else { GRAPH }.to_owned()),
            })
        }
        IdpQuirks::Google => {
            if p.contains_key("resource") {
                return Err(Refused::quirk("invalid_request", GOOGLE_RESOURCE));
            }
            if split(get("scope")).iter().any(|s| s == "offline_access") {
                return Err(Refused::quirk("invalid_scope", GOOGLE_OFFLINE_ACCESS));
            }
            let consent = get("prompt").is_some_and(|p| p.split(' ').any(|v| v == "consent"));
            Ok(Grant {
                scope: scopes()?,
                resource: Some(r.clone()),
                quirks: QuirkGrant {
                    refresh_allowed: get("access_type") == Some("offline") && consent,
                    scope_shown: None,
                },
            })
        }
        IdpQuirks::Auth0 => {
            let scope = scopes()?;
            // `resource` means nothing to Auth0; `audience` picks the API, and without
            // it the token is good for the userinfo endpoint only.
            let resource = match get("audience") {
                Some(audience) => audience.to_owned(),
                None => format!("{}/userinfo", shared.urls.issuer),
            };
            Ok(Grant {
                quirks: offline(&scope),
                scope,
                resource: Some(resource),
            })
        }
        IdpQuirks::Okta => {
            let resource = standard_resource()?;
            let scope = scopes()?;
            Ok(Grant {
                quirks: offline(&scope),
                scope,
                resource,
            })
        }
        IdpQuirks::Keycloak => Ok(Grant {
            scope: scopes()?,
            resource: Some(r.clone()),
            quirks: QuirkGrant::default(),
        }),
        IdpQuirks::Github => {
            let resource = standard_resource()?;
            Ok(Grant {
                scope: scopes()?,
                resource,
                quirks: QuirkGrant::default(),
            })
        }
    }
}

/// `resource` on a token request (any grant): refused by Entra and Google, ignored by
/// Auth0 and Keycloak (taken out of `p`), checked as usual otherwise.
pub(crate) fn token_resource(shared: &Shared, p: &mut Params) -> Result<(), Refused> {
    match shared.knobs.idp_quirks {
        Some(IdpQuirks::Entra) if p.contains_key("resource") => {
            Err(Refused::quirk("invalid_target", ENTRA_RESOURCE_TOKEN))
        }
        Some(IdpQuirks::Google) if p.contains_key("resource") => {
            Err(Refused::quirk("invalid_request", GOOGLE_RESOURCE))
        }
        Some(IdpQuirks::Auth0 | IdpQuirks::Keycloak) => {
            p.remove("resource");
            Ok(())
        }
        _ => Ok(()),
    }
}

/// The scopes a refresh_token grant asks for: `None` keeps the grant's own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RefreshScope {
    /// As tokens carry them.
    pub scope: Vec<String>,
    /// As the token response names them (Entra: as requested).
    pub shown: Option<Vec<String>>,
}

/// The scopes of a refresh of a grant of `granted`. Entra needs `scope` (without it,
/// it refreshes for Microsoft Graph, where the grant's scopes do not exist) and reads
/// it as on the authorization request, `R/.default` meaning what was granted.
pub(crate) fn refresh_scope(
    shared: &Shared,
    granted: &[String],
    asked: Option<&str>,
) -> Result<Option<RefreshScope>, Refused> {
    let entra = shared.knobs.idp_quirks == Some(IdpQuirks::Entra);
    match asked {
        None if entra => {
            let named = granted
                .iter()
                .find(|s| !OIDC_SCOPES.contains(&s.as_str()))
                .map_or(".default", String::as_str);
            Err(Refused::quirk(
                "invalid_scope",
                entra_unknown_scope(named, GRAPH),
            ))
        }
        None => Ok(None),
        Some(s) if entra => {
            let asked = split(Some(s));
            let of_resource: Vec<String> = granted
                .iter()
                .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
                .cloned()
                .collect();
            let known = &shared.knobs.as_scopes.0;
            let entra = entra_scopes(&shared.urls.resource, known, &of_resource, &asked)?;
            Ok(Some(RefreshScope {
                scope: entra.carried,
                shown: Some(asked),
            }))
        }
        Some(s) => {
            if shared.knobs.idp_quirks == Some(IdpQuirks::Google)
                && split(Some(s)).iter().any(|s| s == "offline_access")
            {
                return Err(Refused::quirk("invalid_scope", GOOGLE_OFFLINE_ACCESS));
            }
            let scope = requested_scopes(shared, Some(s))
                .map_err(|e| Refused::standard("invalid_scope", e))?;
            Ok(Some(RefreshScope { scope, shown: None }))
        }
    }
}

/// Whether the quirks accept the OpenID Connect scopes whatever `--as-scopes` says:
/// every provider does but GitHub.
pub(crate) fn takes_oidc_scopes(quirk: Option<IdpQuirks>) -> bool {
    quirk.is_some_and(|q| q != IdpQuirks::Github)
}

/// Whether the AS metadata leaves `offline_access` out of `scopes_supported`: Google
/// refuses it, Okta takes it without saying so.
pub(crate) fn hides_offline_access(quirk: Option<IdpQuirks>) -> bool {
    matches!(quirk, Some(IdpQuirks::Google | IdpQuirks::Okta))
}

/// Every scope the resource has (what Entra's `R/.default` grants): the AS's scopes
/// but the OpenID ones, or the protected resource metadata's when the AS lists none.
fn resource_scopes(shared: &Shared) -> Vec<String> {
    let k = &shared.knobs;
    let listed = if k.as_scopes.is_empty() {
        &k.scopes_supported.0
    } else {
        &k.as_scopes.0
    };
    listed
        .iter()
        .filter(|s| !OIDC_SCOPES.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// Entra's reading of a scope list.
#[derive(Debug, PartialEq, Eq)]
struct EntraScopes {
    /// What tokens carry: the OpenID scopes and the unqualified names.
    carried: Vec<String>,
    /// Whether a scope named the resource (else the token would be for Graph).
    for_resource: bool,
}

/// Read `asked` as Entra does: an OpenID scope as it is, `R/NAME` as NAME (refused when
/// `known` is not empty and lacks it), `R/.default` as `default`; a scope qualified by
/// another resource names an unknown application, a bare one is taken for Graph.
fn entra_scopes(
    resource: &str,
    known: &[String],
    default: &[String],
    asked: &[String],
) -> Result<EntraScopes, Refused> {
    let prefix = format!("{}/", resource.trim_end_matches('/'));
    let mut carried: Vec<String> = Vec::new();
    let mut keep = |s: &str| {
        if !carried.iter().any(|c| c == s) {
            carried.push(s.to_owned());
        }
    };
    let mut for_resource = false;
    for scope in asked {
        if OIDC_SCOPES.contains(&scope.as_str()) {
            keep(scope);
        } else if let Some(name) = scope.strip_prefix(&prefix) {
            for_resource = true;
            if name == ".default" {
                default.iter().for_each(|s| keep(s));
            } else if known.is_empty() || known.iter().any(|k| k == name) {
                keep(name);
            } else {
                return Err(Refused::quirk(
                    "invalid_scope",
                    entra_unknown_scope(name, resource),
                ));
            }
        } else if let Some((other, _)) = scope.rsplit_once('/')
            && other.contains(':')
        {
            return Err(Refused::quirk(
                "invalid_scope",
                format!(
                    "AADSTS500011: The resource principal named {other} was not found in the \
                     tenant named keyway-testbed. This can happen if the application has not \
                     been installed by the administrator of the tenant or consented to by any \
                     user in the tenant. You might have sent your authentication request to \
                     the wrong tenant."
                ),
            ));
        } else {
            return Err(Refused::quirk(
                "invalid_scope",
                entra_unknown_scope(scope, GRAPH),
            ));
        }
    }
    Ok(EntraScopes {
        carried,
        for_resource,
    })
}

fn split(scope: Option<&str>) -> Vec<String> {
    scope
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "http://127.0.0.1:1000/mcp";

    fn v(s: &str) -> Vec<String> {
        split(Some(s))
    }

    fn read(asked: &str) -> Result<EntraScopes, Refused> {
        let known = v("mcp:tools mcp:admin offline_access");
        entra_scopes(R, &known, &v("mcp:tools mcp:admin"), &v(asked))
    }

    #[test]
    fn entra_unqualifies_scopes_of_the_resource() {
        let e = read(&format!("{R}/mcp:tools openid offline_access")).unwrap();
        assert_eq!(e.carried, v("mcp:tools openid offline_access"));
        assert!(e.for_resource);
        let e = read(&format!("{R}/.default {R}/mcp:tools")).unwrap();
        assert_eq!(e.carried, v("mcp:tools mcp:admin"), "no duplicates");
        let e = read("openid profile").unwrap();
        assert!(!e.for_resource, "OpenID scopes alone are for Graph");
        // A trailing slash on the resource does not double the separator.
        let e = entra_scopes(&format!("{R}/"), &[], &[], &v(&format!("{R}/x"))).unwrap();
        assert_eq!(e.carried, v("x"));
    }

    #[test]
    fn entra_refuses_bare_unknown_and_foreign_scopes() {
        let bare = read("mcp:tools").unwrap_err();
        assert_eq!(bare.error, "invalid_scope");
        assert!(bare.by_quirk);
        assert_eq!(
            bare.description,
            "AADSTS650053: The application asked for scope 'mcp:tools' that doesn't exist on \
             the resource '00000003-0000-0000-c000-000000000000'."
        );
        let unknown = read(&format!("{R}/nope")).unwrap_err();
        assert_eq!(unknown.description, entra_unknown_scope("nope", R));
        let foreign = read("api://other-app/user_impersonation").unwrap_err();
        assert!(
            foreign
                .description
                .starts_with("AADSTS500011: The resource principal named api://other-app was"),
            "{}",
            foreign.description
        );
    }

    #[test]
    fn only_google_and_okta_hide_offline_access_and_github_alone_ignores_oidc() {
        let all = <IdpQuirks as clap::ValueEnum>::value_variants();
        let hiding: Vec<_> = all
            .iter()
            .filter(|q| hides_offline_access(Some(**q)))
            .collect();
        assert_eq!(hiding, [&IdpQuirks::Google, &IdpQuirks::Okta]);
        assert!(!hides_offline_access(None));
        assert!(!takes_oidc_scopes(None) && !takes_oidc_scopes(Some(IdpQuirks::Github)));
        assert!(takes_oidc_scopes(Some(IdpQuirks::Keycloak)));
    }
}
