//! Scope selection (MCP "Scope Selection Strategy", "Step-Up Authorization Flow",
//! "Refresh Tokens"). Pure.

/// The scopes of a first authorization: explicit ones if given; else the challenge's
/// `scope` (authoritative); else all of the PRM's `scopes_supported`; else none.
pub fn initial(
    explicit: Option<&[String]>,
    challenge: Option<&[String]>,
    resource_scopes: Option<&[String]>,
) -> Vec<String> {
    explicit
        .or(challenge.filter(|c| !c.is_empty()))
        .or(resource_scopes)
        .map(dedup)
        .unwrap_or_default()
}

/// Add `offline_access` when the authorization server lists it (never because the
/// resource does) and something else is asked for: asking for nothing but a refresh
/// token would change what the scope parameter means.
pub fn with_offline_access(mut scopes: Vec<String>, as_lists_offline_access: bool) -> Vec<String> {
    if as_lists_offline_access
        && !scopes.is_empty()
        && !scopes.iter().any(|s| s == "offline_access")
    {
        scopes.push("offline_access".into());
    }
    scopes
}

/// The union of previously requested and newly challenged scopes, order kept.
pub fn union(previous: &[String], challenged: &[String]) -> Vec<String> {
    dedup(&[previous, challenged].concat())
}

fn dedup(scopes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scopes {
        if !s.is_empty() && !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn challenge_then_supported_then_nothing() {
        assert_eq!(initial(None, Some(&v("a")), Some(&v("a b c"))), v("a"));
        assert_eq!(initial(None, None, Some(&v("a b c"))), v("a b c"));
        assert_eq!(initial(None, Some(&[]), Some(&v("x"))), v("x"));
        assert!(initial(None, None, None).is_empty());
        assert_eq!(initial(Some(&v("z")), Some(&v("a")), None), v("z"));
    }

    #[test]
    fn offline_access_only_when_the_as_lists_it() {
        assert_eq!(with_offline_access(v("a"), true), v("a offline_access"));
        assert_eq!(with_offline_access(v("a"), false), v("a"));
        assert!(with_offline_access(vec![], true).is_empty());
        assert_eq!(
            with_offline_access(v("offline_access a"), true),
            v("offline_access a")
        );
    }

    #[test]
    fn union_keeps_order_and_drops_repeats() {
        assert_eq!(union(&v("a b"), &v("b c")), v("a b c"));
    }
}
