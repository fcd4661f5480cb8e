//! Judging an authorization response (RFC 6749 §4.1.2, RFC 9207, MCP "Authorization
//! Response Validation"). Pure: the loopback listener, a pasted URL and the follow
//! mode all come here.

use std::collections::{BTreeSet, HashMap};

use oauth2::AuthorizationCode;

/// The query parameters of one authorization response, decoded: the first value of
/// each name, and which names came more than once (RFC 6749 §3.1: response
/// parameters "MUST NOT be included more than once"). Debug shows the names only:
/// the values hold the authorization code.
#[derive(Clone, Default)]
pub struct CallbackParams {
    values: HashMap<String, String>,
    repeated: BTreeSet<String>,
}

impl CallbackParams {
    /// Decode a query string (`application/x-www-form-urlencoded`; bytes that are
    /// not UTF-8 are replaced, so such a value matches nothing keyway sent).
    pub fn parse(query: &str) -> Self {
        let mut params = Self::default();
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if params.values.contains_key(name.as_ref()) {
                params.repeated.insert(name.into_owned());
            } else {
                params.values.insert(name.into_owned(), value.into_owned());
            }
        }
        params
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// The names that came, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        names.into_iter()
    }

    /// Whether `name` came more than once.
    pub fn repeated(&self, name: &str) -> bool {
        self.repeated.contains(name)
    }
}

impl std::fmt::Debug for CallbackParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.names().collect();
        f.debug_struct("CallbackParams")
            .field("names", &names)
            .field("repeated", &self.repeated)
            .finish()
    }
}

/// The parameters whose repetition makes a response ambiguous.
const SINGLE: [&str; 4] = ["state", "code", "iss", "error"];

/// What the flow recorded before sending the user away.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    /// The `state` sent with the authorization request.
    pub(crate) state: &'a str,
    /// The validated metadata `issuer`, recorded with the verifier.
    pub(crate) issuer: &'a str,
    /// `authorization_response_iss_parameter_supported` was true.
    pub(crate) iss_required: bool,
}

/// The verdict on one callback.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Not ours (no or another `state`): ignore it, keep waiting.
    Ignore,
    /// The authorization code, to redeem at the token endpoint.
    Code(AuthorizationCode),
    /// Ours, and it ends the flow without a code.
    Refused(Refusal),
}

/// Why an authorization response with this flow's `state` gave no code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The response's `iss` is not the issuer the flow started with (RFC 9207 §2.4,
    /// exact string comparison): a mix-up attack, or a misconfigured server.
    #[error(
        "the authorization response came from issuer {got:?}, not {expected:?} (RFC 9207): refusing it"
    )]
    IssMismatch {
        /// The issuer of the authorization server's metadata.
        expected: String,
        /// The `iss` the response carried, made printable.
        got: String,
    },
    /// The server advertised `authorization_response_iss_parameter_supported` and the
    /// response has no `iss` (RFC 9207 §2.4).
    #[error(
        "the authorization server promised an iss parameter (RFC 9207) and the response has none: refusing it"
    )]
    IssMissing,
    /// `error=access_denied` (RFC 6749 §4.1.2.1): the person said no.
    #[error("authorization was declined")]
    Declined,
    /// Any other `error` (RFC 6749 §4.1.2.1).
    #[error("authorization failed: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Failed {
        /// `error`, made printable.
        error: String,
        /// `error_description`, made printable.
        description: Option<String>,
    },
    /// A parameter that decides the outcome came more than once (RFC 6749 §3.1).
    #[error("the authorization response carries {name} more than once: refusing it")]
    Repeated {
        /// The parameter's name.
        name: &'static str,
    },
    /// Neither a `code` nor an `error`.
    #[error("authorization was cancelled: the response has neither a code nor an error")]
    Cancelled,
}

/// The verdict on the query parameters of one authorization response: `state` first
/// (another one is ignored), then `iss` (a mismatch refuses before any `error` field
/// is read), then `error`, then `code`. Ours with a repeated `state`, `code`, `iss`
/// or `error` is refused: which one the server meant cannot be told.
pub(crate) fn judge(expected: &Expected<'_>, params: &CallbackParams) -> Verdict {
    if params.get("state") != Some(expected.state) {
        return Verdict::Ignore;
    }
    if let Some(name) = SINGLE.into_iter().find(|n| params.repeated(n)) {
        return Verdict::Refused(Refusal::Repeated { name });
    }
    // RFC 9207 §2.4: compare first; on a mismatch do not act on error fields at all.
    match params.get("iss") {
        Some(iss) if iss != expected.issuer => {
            return Verdict::Refused(Refusal::IssMismatch {
                expected: expected.issuer.to_owned(),
                got: printable(iss),
            });
        }
        None if expected.iss_required => return Verdict::Refused(Refusal::IssMissing),
        _ => {}
    }
    if let Some(error) = params.get("error") {
        if error == "access_denied" {
            return Verdict::Refused(Refusal::Declined);
        }
        return Verdict::Refused(Refusal::Failed {
            error: printable(error),
            description: params.get("error_description").map(printable),
        });
    }
    match params.get("code") {
        Some(code) if !code.is_empty() => Verdict::Code(AuthorizationCode::new(code.to_owned())),
        _ => Verdict::Refused(Refusal::Cancelled),
    }
}

/// A server-chosen string made safe to show: nothing a terminal would act on, at
/// most 200 characters.
pub(crate) fn printable(s: &str) -> String {
    crate::text::shown(s, 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> CallbackParams {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        CallbackParams::parse(&query)
    }

    const ISS: &str = "https://as.example/t";

    fn exp(required: bool) -> Expected<'static> {
        Expected {
            state: "s1",
            issuer: ISS,
            iss_required: required,
        }
    }

    #[test]
    fn the_iss_table_of_the_spec() {
        let ok = params(&[("state", "s1"), ("code", "c"), ("iss", ISS)]);
        assert!(matches!(judge(&exp(true), &ok), Verdict::Code(_)));
        let missing = params(&[("state", "s1"), ("code", "c")]);
        assert!(matches!(
            judge(&exp(true), &missing),
            Verdict::Refused(Refusal::IssMissing)
        ));
        assert!(matches!(judge(&exp(false), &missing), Verdict::Code(_)));
        let ok = params(&[("state", "s1"), ("code", "c"), ("iss", ISS)]);
        assert!(matches!(judge(&exp(false), &ok), Verdict::Code(_)));
        for wrong in [
            "https://as.example/t/",
            "HTTPS://as.example/t",
            "https://as.example:443/t",
            "https://as.example/%74",
            "https://evil.example",
        ] {
            let p = params(&[("state", "s1"), ("code", "c"), ("iss", wrong)]);
            assert!(
                matches!(
                    judge(&exp(false), &p),
                    Verdict::Refused(Refusal::IssMismatch { .. })
                ),
                "{wrong}"
            );
        }
    }

    #[test]
    fn a_mismatched_iss_hides_the_error_fields() {
        let p = params(&[
            ("state", "s1"),
            ("iss", "https://evil.example"),
            ("error", "access_denied"),
        ]);
        assert!(matches!(
            judge(&exp(false), &p),
            Verdict::Refused(Refusal::IssMismatch { .. })
        ));
    }

    #[test]
    fn a_parameter_that_decides_the_outcome_must_come_once() {
        for (query, name) in [
            ("state=s1&code=a&code=b", "code"),
            ("state=s1&state=s1&code=a", "state"),
            ("state=s1&code=a&iss=x&iss=y", "iss"),
            ("state=s1&error=a&error=b&code=c", "error"),
        ] {
            let p = CallbackParams::parse(query);
            assert!(
                matches!(judge(&exp(false), &p), Verdict::Refused(Refusal::Repeated { name: n }) if n == name),
                "{query}"
            );
        }
        // Another flow's, even repeated: not ours to refuse.
        let p = CallbackParams::parse("state=other&state=s1&code=a");
        assert!(matches!(judge(&exp(false), &p), Verdict::Ignore));
        // Other parameters may repeat.
        let p = CallbackParams::parse("state=s1&code=a&x=1&x=2");
        assert!(matches!(judge(&exp(false), &p), Verdict::Code(_)));
        // Debug names the parameters, never the code.
        let shown = format!("{p:?}");
        assert!(
            shown.contains("code") && !shown.contains("\"a\""),
            "{shown}"
        );
    }

    #[test]
    fn unknown_state_is_ignored() {
        for p in [
            params(&[("code", "c")]),
            params(&[("state", "other"), ("code", "c")]),
        ] {
            assert!(matches!(judge(&exp(false), &p), Verdict::Ignore));
        }
    }

    #[test]
    fn errors_and_cancellation() {
        let p = params(&[("state", "s1"), ("error", "access_denied")]);
        assert!(matches!(
            judge(&exp(false), &p),
            Verdict::Refused(Refusal::Declined)
        ));
        let p = params(&[
            ("state", "s1"),
            ("error", "server_error"),
            ("error_description", "bad\u{1b}[31m day"),
        ]);
        let Verdict::Refused(r) = judge(&exp(false), &p) else {
            panic!()
        };
        assert_eq!(
            r.to_string(),
            "authorization failed: server_error (bad[31m day)"
        );
        let p = params(&[("state", "s1")]);
        assert!(matches!(
            judge(&exp(false), &p),
            Verdict::Refused(Refusal::Cancelled)
        ));
    }
}
