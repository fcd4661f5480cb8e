//! Tools from many servers under one namespace (seed rules): each server's prefix is
//! its name lowercased with non-alphanumerics as `_` (empty: `mcp`); clashing prefixes
//! get `_2`, `_3` (a generated prefix is reserved too); tools are `prefix__tool`, and
//! a name already taken is skipped (the first server wins). Pure.

use std::collections::HashSet;

/// The separator between a server's prefix and a tool name.
pub const SEPARATOR: &str = "__";

/// A server's base prefix.
pub fn base_prefix(name: &str) -> String {
    let p: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if p.chars().all(|c| c == '_') {
        "mcp".into()
    } else {
        p
    }
}

/// Prefixes for servers in order, unique.
pub fn prefixes<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut taken: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for name in names {
        let base = base_prefix(name);
        let mut candidate = base.clone();
        let mut n = 2;
        while taken.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        taken.insert(candidate.clone());
        out.push(candidate);
    }
    out
}

/// One merged tool: its exposed name and where it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The exposed name: `prefix__tool`.
    pub name: String,
    /// Index of the server in the input.
    pub server: usize,
    /// The tool's name on its server.
    pub tool: String,
}

/// Merge `(prefix, tools)` per server, in server order; first wins on a clash.
pub fn merge(servers: &[(String, Vec<String>)]) -> Vec<Merged> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, (prefix, tools)) in servers.iter().enumerate() {
        for t in tools {
            let name = format!("{prefix}{SEPARATOR}{t}");
            if seen.insert(name.clone()) {
                out.push(Merged {
                    name,
                    server: i,
                    tool: t.clone(),
                });
            }
        }
    }
    out
}

/// Split an exposed name back into (prefix, tool).
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_seed() {
        assert_eq!(base_prefix("GitHub Prod"), "github_prod");
        assert_eq!(base_prefix("---"), "mcp");
        assert_eq!(base_prefix(""), "mcp");
        assert_eq!(
            prefixes(["a b", "a-b", "a_b_2", "x"]),
            ["a_b", "a_b_2", "a_b_2_2", "x"]
        );
        assert_eq!(prefixes(["", "!"]), ["mcp", "mcp_2"]);
    }

    #[test]
    fn first_wins() {
        let servers = vec![
            ("a".to_owned(), vec!["t".to_owned(), "u".to_owned()]),
            ("a".to_owned(), vec!["t".to_owned()]),
            ("b".to_owned(), vec!["t".to_owned()]),
        ];
        let m = merge(&servers);
        let names: Vec<_> = m.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(names, ["a__t", "a__u", "b__t"]);
        assert_eq!(m[2].server, 2);
        assert_eq!(split("a__t"), Some(("a", "t")));
    }
}
