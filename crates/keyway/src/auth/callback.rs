//! Judging an authorization response (RFC 6749 §4.1.2, RFC 9207, MCP "Authorization
//! Response Validation"). Pure: the loopback listener, a pasted URL and the follow
//! mode all come here.

use std::collections::HashMap;

use oauth2::AuthorizationCode;

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
    /// Neither a `code` nor an `error`.
    #[error("authorization was cancelled: the response has neither a code nor an error")]
    Cancelled,
}

/// The verdict on the query parameters of one authorization response: `state` first
/// (another one is ignored), then `iss` (a mismatch refuses before any `error` field
/// is read), then `error`, then `code`.
pub(crate) fn judge(expected: &Expected<'_>, params: &HashMap<String, String>) -> Verdict {
    if params.get("state").map(String::as_str) != Some(expected.state) {
        return Verdict::Ignore;
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
            description: params.get("error_description").map(|d| printable(d)),
        });
    }
    match params.get("code") {
        Some(code) if !code.is_empty() => Verdict::Code(AuthorizationCode::new(code.clone())),
        _ => Verdict::Refused(Refusal::Cancelled),
    }
}

/// A server-chosen string made safe to show: no control characters, bounded.
pub(crate) fn printable(s: &str) -> String {
    let cleaned: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        format!("{cleaned}…")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
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
