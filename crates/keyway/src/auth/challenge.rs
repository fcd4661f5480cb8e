//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1): several challenges per header and
//! across headers, any case for schemes and parameter names, quoted strings with
//! escapes, token68. Pure; never fails: what cannot be parsed is skipped.
//!
//! ```
//! use keyway::auth::challenge;
//!
//! // A 403 asking for more scope, after another scheme's challenge in its own
//! // header; scheme and parameter names in any case.
//! let headers = [
//!     r#"Basic realm="corp""#,
//!     concat!(
//!         r#"BEARER Error="insufficient_scope", scope="files:read files:write", "#,
//!         r#"resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource""#,
//!     ),
//! ];
//! let all = challenge::parse(headers);
//! assert_eq!(all.len(), 2);
//! assert_eq!(all[0].scheme, "basic");
//! assert_eq!(all[0].param("REALM"), Some("corp"));
//!
//! let bearer = challenge::bearer(headers).expect("a Bearer challenge");
//! assert!(bearer.is_insufficient_scope());
//! assert_eq!(
//!     bearer.scope,
//!     Some(vec!["files:read".to_owned(), "files:write".to_owned()])
//! );
//! assert_eq!(
//!     bearer.resource_metadata.as_deref(),
//!     Some("https://mcp.example.com/.well-known/oauth-protected-resource")
//! );
//!
//! // Without a Bearer challenge there is nothing for OAuth to go on.
//! assert!(challenge::bearer(["Basic realm=\"corp\""]).is_none());
//! ```

use std::fmt;

/// One challenge: a scheme with either a token68 or parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercased (`bearer`, `basic`, ...).
    pub scheme: String,
    /// The token68 form of the credentials (`Basic dXNlcjpw==`), as written; `None`
    /// when the challenge has parameters instead.
    pub token68: Option<String>,
    /// Parameters in order, names lowercased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// The first value of a parameter (names are case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What an OAuth challenge says: `Bearer` (RFC 6750 §3, RFC 9728 §5.1) or `DPoP`
/// (RFC 9449 §7.1, the same parameters plus `algs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    /// Whether the challenge is a `DPoP` one (the server wants DPoP-bound tokens).
    pub dpop: bool,
    /// `algs` of a DPoP challenge (RFC 9449 §7.1): the proof algorithms it takes.
    pub algs: Option<Vec<String>>,
    /// `realm` (RFC 6750 §3): the protection space, for display only.
    pub realm: Option<String>,
    /// `resource_metadata` (RFC 9728 §5.1): where the protected resource metadata is;
    /// `None` when absent or empty.
    pub resource_metadata: Option<String>,
    /// `scope`, split on spaces; `None` when absent.
    pub scope: Option<Vec<String>>,
    /// `error` (RFC 6750 §3.1): `invalid_request`, `invalid_token`,
    /// `insufficient_scope`, or whatever else the server sent.
    pub error: Option<String>,
    /// `error_description`: human-readable text from the server, unvetted.
    pub error_description: Option<String>,
}

impl BearerChallenge {
    /// Whether `error` is `insufficient_scope` (RFC 6750 §3.1): the token is good
    /// but lacks a scope, named in [`scope`](Self::scope); MCP's step-up case.
    pub fn is_insufficient_scope(&self) -> bool {
        self.error.as_deref() == Some("insufficient_scope")
    }

    /// Whether `error` is `invalid_token` (RFC 6750 §3.1): the token is expired,
    /// revoked or malformed; refresh or authorize again.
    pub fn is_invalid_token(&self) -> bool {
        self.error.as_deref() == Some("invalid_token")
    }

    fn from_challenge(c: &Challenge) -> Self {
        let text = |name: &str| c.param(name).map(str::to_owned);
        Self {
            dpop: c.scheme == "dpop",
            algs: c
                .param("algs")
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
            realm: text("realm"),
            resource_metadata: text("resource_metadata").filter(|s| !s.is_empty()),
            scope: c
                .param("scope")
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
            error: text("error"),
            error_description: text("error_description"),
        }
    }
}

impl fmt::Display for BearerChallenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.dpop { "DPoP" } else { "Bearer" })?;
        let mut sep = " ";
        let mut field = |f: &mut fmt::Formatter<'_>, k: &str, v: &str| -> fmt::Result {
            write!(f, "{sep}{k}=\"{v}\"")?;
            sep = ", ";
            Ok(())
        };
        if let Some(e) = &self.error {
            field(f, "error", e)?;
        }
        if let Some(s) = &self.scope {
            field(f, "scope", &s.join(" "))?;
        }
        if let Some(r) = &self.resource_metadata {
            field(f, "resource_metadata", r)?;
        }
        Ok(())
    }
}

/// Every challenge in the given `WWW-Authenticate` header values, in order. Never
/// fails: text that is not a challenge is skipped.
pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    values.into_iter().flat_map(parse_one).collect()
}

/// The first `Bearer` challenge among the header values, if any (a scheme named
/// `bearer` in any case, with or without parameters); else the first `DPoP` one (a
/// server that takes only DPoP-bound tokens, RFC 9449 §7.1).
pub fn bearer<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
    let all = parse(values);
    all.iter()
        .find(|c| c.scheme == "bearer")
        .or_else(|| all.iter().find(|c| c.scheme == "dpop"))
        .map(BearerChallenge::from_challenge)
}

/// The first `DPoP` challenge among the header values (RFC 9449 §7.1), if any.
pub fn dpop<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<BearerChallenge> {
    parse(values)
        .iter()
        .find(|c| c.scheme == "dpop")
        .map(BearerChallenge::from_challenge)
}

/// Whether the `DPoP` challenge among the header values asks for a server-provided
/// nonce (`error="use_dpop_nonce"`, RFC 9449 §9).
pub fn asks_dpop_nonce<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    dpop(values).is_some_and(|c| c.error.as_deref() == Some("use_dpop_nonce"))
}

/// Whether the challenges ask only for DPoP (a `DPoP` challenge and no `Bearer` one).
pub fn dpop_only<'a>(values: impl IntoIterator<Item = &'a str>) -> bool {
    let all = parse(values);
    all.iter().any(|c| c.scheme == "dpop") && !all.iter().any(|c| c.scheme == "bearer")
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#'
                | '$'
                | '%'
                | '&'
                | '\''
                | '*'
                | '+'
                | '-'
                | '.'
                | '^'
                | '_'
                | '`'
                | '|'
                | '~'
        )
}

/// RFC 9110 §11.2 `token68` characters, before its trailing `=`s.
fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '+' | '/')
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.bump();
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.bump();
        }
    }

    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    /// A quoted string (the opening quote already seen); an unterminated one ends at
    /// the end of the header.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.bump() {
                        out.push(escaped);
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// Whether the text ahead is `token BWS "="` but not a token68's trailing `=`s.
    fn at_param(&self) -> bool {
        let rest = &self.s[self.pos..];
        let name_len = rest.find(|c: char| !is_tchar(c)).unwrap_or(rest.len());
        if name_len == 0 {
            return false;
        }
        let after = rest[name_len..].trim_start_matches([' ', '\t']);
        after.starts_with('=')
            && !after[1..]
                .trim_start_matches([' ', '\t'])
                .starts_with(['=', ','])
            && !after[1..].trim().is_empty()
    }
}

fn parse_one(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut cur = Cursor { s: header, pos: 0 };
    loop {
        cur.skip_ws_and_commas();
        if cur.peek().is_none() {
            break;
        }
        let scheme = cur.token();
        if scheme.is_empty() {
            // Not a token: skip one character and resynchronise.
            cur.bump();
            continue;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            token68: None,
            params: Vec::new(),
        };
        cur.skip_ws();
        // token68 (e.g. `Basic dXNlcjpw==`): chars of the token68 set, then `=`s, then
        // the end or a comma.
        if !cur.at_param() {
            let rest = &cur.s[cur.pos..];
            let body_len = rest
                .find(|c: char| !is_token68_char(c))
                .unwrap_or(rest.len());
            let pad_len = rest[body_len..]
                .find(|c: char| c != '=')
                .unwrap_or(rest.len() - body_len);
            let end = body_len + pad_len;
            let after = rest[end..].trim_start_matches([' ', '\t']);
            if body_len > 0 && (after.is_empty() || after.starts_with(',')) {
                challenge.token68 = Some(rest[..end].to_owned());
                cur.pos += end;
            }
        }
        // Parameters until the next scheme (a token not followed by `=`). The names
        // seen are kept in a set: looked up in the list, a header of 16,000 `a=b,`
        // pairs cost a quadratic 10^8 comparisons (found by fuzz/ www_authenticate,
        // which ran 20 to 80 times slower than the other targets).
        let mut seen = std::collections::HashSet::new();
        loop {
            cur.skip_ws_and_commas();
            if cur.peek().is_none() || !cur.at_param() {
                break;
            }
            let name = cur.token().to_ascii_lowercase();
            cur.skip_ws();
            cur.bump(); // '='
            cur.skip_ws();
            let value = if cur.peek() == Some('"') {
                cur.bump();
                cur.quoted()
            } else {
                cur.token().to_owned()
            };
            // A repeated parameter is invalid (RFC 9110 §11.2); the first one counts.
            if seen.insert(name.clone()) {
                challenge.params.push((name, value));
            }
        }
        out.push(challenge);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_bearer_among_several_challenges() {
        let h = r#"Basic realm="x", Bearer resource_metadata="https://a.example/prm", scope="a b""#;
        let all = parse([h]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].scheme, "basic");
        assert_eq!(all[0].param("realm"), Some("x"));
        let b = bearer([h]).unwrap();
        assert_eq!(
            b.resource_metadata.as_deref(),
            Some("https://a.example/prm")
        );
        assert_eq!(b.scope, Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn scheme_and_names_are_case_insensitive_and_quotes_unescape() {
        let h = r#"BEARER Error="insufficient_scope", SCOPE=admin, Error_Description="say \"no\", twice""#;
        let b = bearer([h]).unwrap();
        assert!(b.is_insufficient_scope());
        assert_eq!(b.scope, Some(vec!["admin".into()]));
        assert_eq!(b.error_description.as_deref(), Some(r#"say "no", twice"#));
    }

    #[test]
    fn challenges_across_headers_and_token68() {
        let all = parse(["Basic dXNlcjpwYXNz==, Negotiate", r#"Bearer realm="r""#]);
        let schemes: Vec<_> = all.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "negotiate", "bearer"]);
        assert_eq!(all[0].token68.as_deref(), Some("dXNlcjpwYXNz=="));
        assert_eq!(
            bearer(["Negotiate abc", "bearer"]).unwrap(),
            BearerChallenge::default()
        );
    }

    #[test]
    fn commas_inside_quotes_do_not_split() {
        let b = bearer([r#"Bearer scope="a,b", resource_metadata="https://x/y?a=1,2""#]).unwrap();
        assert_eq!(b.scope, Some(vec!["a,b".into()]));
        assert_eq!(b.resource_metadata.as_deref(), Some("https://x/y?a=1,2"));
    }

    #[test]
    fn garbage_does_not_panic() {
        for h in [
            "",
            ",,,",
            "=",
            "\"",
            "Bearer =",
            "Bearer a=\"unterminated",
            "Bearer a=",
            "é Bearer x=y",
            "Bearer ,,, scope=\"x\"",
        ] {
            let _ = parse([h]);
            let _ = bearer([h]);
        }
        assert_eq!(
            bearer(["Bearer ,,, scope=\"x\""]).unwrap().scope,
            Some(vec!["x".into()])
        );
        assert!(bearer(["Basic realm=x"]).is_none());
    }

    #[test]
    fn repeated_params_keep_the_first() {
        let b = bearer([r#"Bearer scope="a", scope="b""#]).unwrap();
        assert_eq!(b.scope, Some(vec!["a".into()]));
    }

    #[test]
    fn dpop_challenges_stand_in_for_bearer_and_carry_their_nonce_request() {
        let only = [r#"DPoP algs="ES256 PS256", resource_metadata="https://r/prm""#];
        let b = bearer(only).unwrap();
        assert!(b.dpop);
        assert_eq!(b.algs, Some(vec!["ES256".into(), "PS256".into()]));
        assert_eq!(b.resource_metadata.as_deref(), Some("https://r/prm"));
        assert!(dpop_only(only));
        assert!(b.to_string().starts_with("DPoP "));
        let both = [r#"Bearer scope="s""#, r#"DPoP error="use_dpop_nonce""#];
        assert!(
            !bearer(both).unwrap().dpop,
            "Bearer comes first when both are offered"
        );
        assert!(!dpop_only(both));
        assert!(asks_dpop_nonce(both));
        assert!(!asks_dpop_nonce([r#"Bearer error="use_dpop_nonce""#]));
        assert!(!asks_dpop_nonce([r#"DPoP error="invalid_token""#]));
    }
}
