//! What an access token must say before the gateway serves its bearer: the pure
//! checks shared by both ways of reading a token (a JWT's claims, RFC 9068; an
//! introspection answer, RFC 7662 §2.2, which uses the same names). No I/O; the time
//! is the caller's.

use serde_json::{Map, Value};

use super::Rejection;

/// Who a valid token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Principal {
    /// The authorization server that issued the token (`iss`), exactly as configured.
    pub issuer: String,
    /// The person (or client) the token was issued to (`sub`), unique within `issuer`.
    pub subject: String,
    /// The OAuth client the person used (`client_id`), when the token says.
    pub client_id: Option<String>,
    /// The scopes the token carries (`scope`, or `scp` as some providers write it).
    pub scopes: Vec<String>,
    /// When the token expires, in seconds since the Unix epoch (`exp`).
    pub expires_at: u64,
}

impl Principal {
    /// A principal for the gateway's own token (no authorization server): one
    /// operator, by convention subject `operator` of issuer `keyway`.
    pub fn operator() -> Self {
        Self {
            issuer: "keyway".to_owned(),
            subject: "operator".to_owned(),
            client_id: None,
            scopes: Vec::new(),
            expires_at: u64::MAX,
        }
    }
}

/// What the claims are checked against.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The issuer identifier of the organisation's authorization server.
    pub issuer: &'a str,
    /// The gateway's canonical URL: the token's audience must name it (RFC 8707,
    /// RFC 9068 §4, MCP "Token Audience Binding and Validation").
    pub audience: &'a str,
    /// Scopes every token must carry.
    pub required_scopes: &'a [String],
    /// Seconds since the Unix epoch, now.
    pub now: u64,
    /// Clock skew forgiven on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

/// Check `claims` against `expect`. `iss_optional`: an introspection answer may
/// leave `iss` out (RFC 7662 §2.2); it came from the one server asked, so its
/// absence means that server. A JWT must name its issuer.
pub fn check(
    claims: &Map<String, Value>,
    expect: &Expect<'_>,
    iss_optional: bool,
) -> Result<Principal, Rejection> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer => {}
        None if iss_optional => {}
        _ => return Err(Rejection::Issuer),
    }
    if !audiences(claims.get("aud")).any(|a| a == expect.audience) {
        return Err(Rejection::Audience);
    }
    let exp = seconds(claims.get("exp")).ok_or(Rejection::NoExpiry)?;
    if exp.saturating_add(expect.leeway) <= expect.now {
        return Err(Rejection::Expired);
    }
    if let Some(nbf) = claims.get("nbf") {
        let nbf = seconds(Some(nbf)).ok_or(Rejection::Malformed)?;
        if nbf > expect.now.saturating_add(expect.leeway) {
            return Err(Rejection::NotYetValid);
        }
    }
    // A DPoP-bound token (RFC 9449 §6) proves nothing without its key's proof.
    if claims.get("cnf").and_then(|c| c.get("jkt")).is_some() {
        return Err(Rejection::Bound);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUBJECT => s.clone(),
        _ => return Err(Rejection::NoSubject),
    };
    let scopes = scopes(claims);
    if let Some(missing) = expect
        .required_scopes
        .iter()
        .find(|s| !scopes.iter().any(|have| have == *s))
    {
        return Err(Rejection::Scope(missing.clone()));
    }
    Ok(Principal {
        issuer: expect.issuer.to_owned(),
        subject,
        client_id: claims
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned),
        scopes,
        expires_at: exp,
    })
}

/// The longest subject taken: it keys stored credentials.
pub const MAX_SUBJECT: usize = 255;

/// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
fn audiences(aud: Option<&Value>) -> impl Iterator<Item = &str> {
    let (one, many) = match aud {
        Some(Value::String(s)) => (Some(s.as_str()), None),
        Some(Value::Array(a)) => (None, Some(a.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// A NumericDate (RFC 7519 §2): whole seconds; a fraction is cut, a negative or
/// non-number is no date.
fn seconds(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// `scope` (space-separated, RFC 9068 §2.2.3 and RFC 7662), or `scp` (a list or a
/// string, as Okta and Entra write it).
fn scopes(claims: &Map<String, Value>) -> Vec<String> {
    let split = |s: &str| {
        s.split(' ')
            .filter(|x| !x.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match claims.get("scope").or_else(|| claims.get("scp")) {
        Some(Value::String(s)) => split(s),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn expect(required: &[String]) -> Expect<'_> {
        Expect {
            issuer: "https://id.example",
            audience: "https://gw.example/mcp",
            required_scopes: required,
            now: NOW,
            leeway: 30,
        }
    }

    fn good() -> Map<String, Value> {
        json!({
            "iss": "https://id.example",
            "sub": "alice",
            "aud": ["https://other.example", "https://gw.example/mcp"],
            "exp": NOW + 60,
            "client_id": "c1",
            "scope": "mcp:tools  email",
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn with(key: &str, value: Value) -> Map<String, Value> {
        let mut m = good();
        if value.is_null() {
            m.remove(key);
        } else {
            m.insert(key.into(), value);
        }
        m
    }

    #[test]
    fn a_good_token_names_its_person() {
        let p = check(&good(), &expect(&[]), false).unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.issuer, "https://id.example");
        assert_eq!(p.client_id.as_deref(), Some("c1"));
        assert_eq!(p.scopes, ["mcp:tools", "email"]);
        assert_eq!(p.expires_at, NOW + 60);
    }

    #[test]
    fn issuer_audience_and_time_are_each_refused() {
        let e = expect(&[]);
        let cases = [
            (with("iss", json!("https://id.example/")), Rejection::Issuer),
            (with("iss", Value::Null), Rejection::Issuer),
            (
                with("aud", json!("https://gw.example/mcp/")),
                Rejection::Audience,
            ),
            (
                with("aud", json!(["https://gw.example"])),
                Rejection::Audience,
            ),
            (with("aud", Value::Null), Rejection::Audience),
            (with("exp", json!(NOW - 31)), Rejection::Expired),
            (with("exp", json!("soon")), Rejection::NoExpiry),
            (with("exp", Value::Null), Rejection::NoExpiry),
            (with("nbf", json!(NOW + 31)), Rejection::NotYetValid),
            (with("sub", json!("")), Rejection::NoSubject),
            (with("sub", json!(7)), Rejection::NoSubject),
            (with("sub", json!("x".repeat(256))), Rejection::NoSubject),
            (with("cnf", json!({"jkt": "abc"})), Rejection::Bound),
        ];
        for (claims, want) in cases {
            assert_eq!(check(&claims, &e, false), Err(want.clone()), "{claims:?}");
        }
        // Within the leeway, a clock a little behind is forgiven.
        assert!(check(&with("exp", json!(NOW - 29)), &e, false).is_ok());
        assert!(check(&with("nbf", json!(NOW + 29)), &e, false).is_ok());
        assert!(check(&with("exp", json!((NOW + 5) as f64 + 0.5)), &e, false).is_ok());
    }

    #[test]
    fn introspection_may_leave_the_issuer_out_but_not_name_another() {
        let e = expect(&[]);
        assert!(check(&with("iss", Value::Null), &e, true).is_ok());
        assert_eq!(
            check(&with("iss", json!("https://evil.example")), &e, true),
            Err(Rejection::Issuer)
        );
    }

    #[test]
    fn required_scopes_come_from_scope_or_scp() {
        let need = vec!["mcp:tools".to_owned()];
        assert!(check(&good(), &expect(&need), false).is_ok());
        let scp = with("scope", Value::Null);
        let mut scp = scp;
        scp.insert("scp".into(), json!(["mcp:tools"]));
        assert!(check(&scp, &expect(&need), false).is_ok());
        let need = vec!["admin".to_owned()];
        assert_eq!(
            check(&good(), &expect(&need), false),
            Err(Rejection::Scope("admin".into()))
        );
    }
}
