//! Default server names (seed rule), pure.

use url::{Host, Url};

/// `localhost-<port>` for loopback; an IP whole; `api.github.com` -> `github`;
/// `render.com` -> `render`; a trailing dot dropped.
pub fn default_name(url: &Url) -> String {
    let port = url.port_or_known_default().unwrap_or(0);
    match url.host() {
        Some(Host::Ipv4(ip)) if ip.is_loopback() => format!("localhost-{port}"),
        Some(Host::Ipv6(ip)) if ip.is_loopback() => format!("localhost-{port}"),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if d == "localhost" || d.ends_with(".localhost") {
                return format!("localhost-{port}");
            }
            let labels: Vec<&str> = d.split('.').filter(|l| !l.is_empty()).collect();
            match labels.len() {
                0 => "mcp".into(),
                1 => labels[0].into(),
                2 => labels[0].into(),
                n => labels[n - 2].into(),
            }
        }
        None => "mcp".into(),
    }
}

/// `name`, or `name-2`, `name-3`... the first not in `taken`.
pub fn unique(name: &str, taken: &[String]) -> String {
    if !taken.iter().any(|t| t == name) {
        return name.to_owned();
    }
    (2..)
        .map(|i| format!("{name}-{i}"))
        .find(|n| !taken.iter().any(|t| t == n))
        .unwrap_or_else(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        default_name(&Url::parse(s).unwrap())
    }

    #[test]
    fn the_seed_rule() {
        assert_eq!(n("http://localhost:3000/mcp"), "localhost-3000");
        assert_eq!(n("http://127.0.0.1:8080/mcp"), "localhost-8080");
        assert_eq!(n("http://[::1]:9/mcp"), "localhost-9");
        assert_eq!(n("https://10.1.2.3/mcp"), "10.1.2.3");
        assert_eq!(n("https://api.github.com/mcp"), "github");
        assert_eq!(n("https://render.com/mcp"), "render");
        assert_eq!(n("https://mcp.example.com./x"), "example");
        assert_eq!(n("https://intranet/mcp"), "intranet");
    }

    #[test]
    fn unique_names() {
        let taken = vec!["github".to_owned(), "github-2".to_owned()];
        assert_eq!(unique("github", &taken), "github-3");
        assert_eq!(unique("render", &taken), "render");
    }
}
