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

/// Tools to leave out (`--ignore-tool`, as mcp-remote has it): patterns where `*`
/// stands for any run of characters (`delete_*`, `*admin*`); the rest must match
/// exactly, case included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolFilter {
    patterns: Vec<String>,
}

impl ToolFilter {
    /// A filter leaving out the tools that match any of `patterns`.
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }

    /// Whether it leaves out nothing.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the tool `name` is left out.
    pub fn ignores(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob(p, name))
    }
}

/// `*`-only glob matching, linear in practice (the usual backtrack to the last star).
fn glob(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// Split an exposed name back into (prefix, tool).
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_filters_match_stars_and_exact_names() {
        let f = ToolFilter::new([
            "delete_*".to_owned(),
            "*admin*".to_owned(),
            "echo".to_owned(),
        ]);
        for ignored in ["delete_repo", "delete_", "admin_only", "my_admin", "echo"] {
            assert!(f.ignores(ignored), "{ignored}");
        }
        for kept in ["echo2", "Echo", "undelete_repo", "add", ""] {
            assert!(!f.ignores(kept), "{kept}");
        }
        assert!(ToolFilter::new(["*".to_owned()]).ignores("anything"));
        assert!(ToolFilter::new(["a*b*c".to_owned()]).ignores("aXbYbZc"));
        assert!(!ToolFilter::new(["a*b*c".to_owned()]).ignores("aXbYbZ"));
        assert!(ToolFilter::default().is_empty());
        assert!(!ToolFilter::default().ignores("x"));
    }

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
