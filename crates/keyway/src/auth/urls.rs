//! Pure URL rules of the MCP authorization spec: where metadata lives, what a
//! resource identifier is, which URLs a flow may use. No I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Protected resource metadata locations to try when the challenge names none
/// (RFC 9728 §3.1; MCP 2025-11-25): path-inserted, then the root. Deduplicated.
pub fn prm_well_known(mcp_url: &Url) -> Vec<Url> {
    let mut out = Vec::new();
    let path = mcp_url.path().trim_end_matches('/');
    if !path.is_empty() {
        let mut u = origin_url(mcp_url);
        u.set_path(&format!("/.well-known/oauth-protected-resource{path}"));
        u.set_query(mcp_url.query());
        out.push(u);
    }
    let mut root = origin_url(mcp_url);
    root.set_path("/.well-known/oauth-protected-resource");
    if !out.contains(&root) {
        out.push(root);
    }
    out
}

/// Authorization server metadata locations for an issuer, in the spec's order
/// (MCP 2025-11-25 "Authorization Server Metadata Discovery"): RFC 8414 path-inserted,
/// OpenID path-inserted, OpenID path-appended; without a path, RFC 8414 then OpenID.
pub fn as_metadata_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let at = |p: String| {
        let mut u = origin_url(issuer);
        u.set_path(&p);
        u
    };
    if path.is_empty() {
        vec![
            at("/.well-known/oauth-authorization-server".into()),
            at("/.well-known/openid-configuration".into()),
        ]
    } else {
        vec![
            at(format!("/.well-known/oauth-authorization-server{path}")),
            at(format!("/.well-known/openid-configuration{path}")),
            at(format!("{path}/.well-known/openid-configuration")),
        ]
    }
}

/// `scheme://host[:port]/` of a URL.
pub fn origin_url(u: &Url) -> Url {
    let mut o = u.clone();
    o.set_path("/");
    o.set_query(None);
    o.set_fragment(None);
    let _ = o.set_username("");
    let _ = o.set_password(None);
    o
}

/// `scheme://host[:port]` as a string, without the trailing slash.
pub fn origin_string(u: &Url) -> String {
    u.origin().ascii_serialization()
}

/// The canonical resource identifier of an MCP server URL (RFC 8707, MCP "Canonical
/// Server URI"): lowercase scheme and host (the URL parser does that), no fragment,
/// no userinfo, and no trailing slash on a bare origin.
pub fn canonical_resource(u: &Url) -> String {
    let mut c = u.clone();
    c.set_fragment(None);
    let _ = c.set_username("");
    let _ = c.set_password(None);
    if c.path() == "/" && c.query().is_none() {
        origin_string(&c)
    } else {
        c.to_string()
    }
}

/// Whether a protected resource's `resource` value may describe `mcp_url`: the same
/// origin, and a path that is the MCP URL's path or a segment prefix of it (the exact
/// match RFC 9728 §3.3 asks for, plus the prefix form MCP SDKs accept). A trailing
/// slash makes no difference; a `resource` with a fragment, or that is not a URL,
/// matches nothing. The same test decides where a stored token may be sent
/// ([`Grant::is_for`](super::Grant::is_for)).
///
/// ```
/// use keyway::auth::urls::{canonical_resource, resource_matches};
/// use url::Url;
///
/// let mcp = Url::parse("https://mcp.example.com/tenant/mcp").unwrap();
/// assert!(resource_matches("https://mcp.example.com/tenant/mcp", &mcp));
/// assert!(resource_matches("https://mcp.example.com/tenant/", &mcp)); // segment prefix
/// assert!(resource_matches("https://mcp.example.com", &mcp)); // the whole origin
/// assert!(!resource_matches("https://mcp.example.com/ten", &mcp)); // not a segment
/// assert!(!resource_matches("https://mcp.example.com:444/tenant/mcp", &mcp)); // other origin
/// assert!(!resource_matches("https://evil.example/tenant/mcp", &mcp));
///
/// // What keyway sends as `resource` when there is no protected resource metadata.
/// let bare = Url::parse("HTTPS://MCP.Example.com/#top").unwrap();
/// assert_eq!(canonical_resource(&bare), "https://mcp.example.com");
/// assert_eq!(canonical_resource(&mcp), "https://mcp.example.com/tenant/mcp");
/// ```
pub fn resource_matches(resource: &str, mcp_url: &Url) -> bool {
    let Ok(r) = Url::parse(resource) else {
        return false;
    };
    if r.fragment().is_some() || r.origin() != mcp_url.origin() {
        return false;
    }
    let rp = r.path().trim_end_matches('/');
    let mp = mcp_url.path().trim_end_matches('/');
    rp.is_empty() || mp == rp || mp.starts_with(&format!("{rp}/"))
}

/// What kind of host a URL names, for the SSRF rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostClass {
    /// This machine: 127.0.0.0/8, ::1, and 0.0.0.0/8 and :: (a connection to them
    /// reaches this machine).
    Loopback,
    /// Addresses that are not on the public internet: private (RFC 1918, unique
    /// local, site-local), shared (CGNAT), special-purpose, reserved, documentation,
    /// benchmarking, multicast.
    Private,
    /// Link-local addresses (cloud metadata lives here).
    LinkLocal,
    /// Public addresses and DNS names.
    Public,
}

impl HostClass {
    /// The kebab-case name, as serialized and displayed (`link-local`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::LinkLocal => "link-local",
            Self::Public => "public",
        }
    }
}

impl std::fmt::Display for HostClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a URL's host as written (a DNS name counts as public: what it
/// resolves to is checked when it is resolved, see [`crate::http::guarded`]).
pub fn host_class(u: &Url) -> HostClass {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip_class(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => ip_class(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => name_class(d),
        None => HostClass::Public,
    }
}

/// The class of a DNS name before it is resolved: the names that are loopback or
/// link-local by definition; every other name is judged by its addresses.
fn name_class(name: &str) -> HostClass {
    let d = name.trim_end_matches('.').to_ascii_lowercase();
    if d == "localhost" || d.ends_with(".localhost") {
        HostClass::Loopback
    } else if d == "metadata.google.internal" || d == "metadata" {
        HostClass::LinkLocal
    } else {
        HostClass::Public
    }
}

/// The class of an address. IPv4 addresses inside IPv6 ones (mapped, translated,
/// compatible, NAT64, 6to4) are judged by the IPv4 address they carry; Teredo counts
/// as private.
///
/// ```
/// use keyway::auth::urls::{HostClass, ip_class};
///
/// let class = |s: &str| ip_class(s.parse().unwrap());
/// assert_eq!(class("127.0.0.1"), HostClass::Loopback);
/// assert_eq!(class("0.0.0.0"), HostClass::Loopback);
/// assert_eq!(class("10.1.2.3"), HostClass::Private);
/// assert_eq!(class("100.64.0.1"), HostClass::Private); // shared address space (CGNAT)
/// assert_eq!(class("169.254.169.254"), HostClass::LinkLocal); // cloud metadata
/// assert_eq!(class("::ffff:192.168.1.1"), HostClass::Private); // IPv4-mapped
/// assert_eq!(class("64:ff9b::7f00:1"), HostClass::Loopback); // NAT64 of 127.0.0.1
/// assert_eq!(class("93.184.215.14"), HostClass::Public);
/// ```
pub fn ip_class(ip: IpAddr) -> HostClass {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

fn v4_class(ip: Ipv4Addr) -> HostClass {
    let [a, b, c, _] = ip.octets();
    // 0.0.0.0/8 ("this network"): a connection to 0.0.0.0 reaches this machine.
    if ip.is_loopback() || a == 0 {
        HostClass::Loopback
    } else if ip.is_link_local() {
        HostClass::LinkLocal
    } else if ip.is_private()
        || (a == 100 && b & 0xc0 == 64) // 100.64.0.0/10, shared (CGNAT)
        || (a == 192 && b == 0 && c == 0) // 192.0.0.0/24, IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // 192.0.2.0/24, documentation
        || (a == 192 && b == 88 && c == 99) // 192.88.99.0/24, former 6to4 relays
        || (a == 198 && b & 0xfe == 18) // 198.18.0.0/15, benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224
    // multicast, reserved, broadcast
    {
        HostClass::Private
    } else {
        HostClass::Public
    }
}

fn v6_class(ip: Ipv6Addr) -> HostClass {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        v4_class(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        ))
    };
    // `::`, like 0.0.0.0, reaches this machine.
    if ip.is_loopback() || ip.is_unspecified() {
        HostClass::Loopback
    } else if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d
        v4_class(v4)
    } else if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        // ::ffff:0:a.b.c.d, IPv4-translated (SIIT)
        embedded(s[6], s[7])
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d, IPv4-compatible (deprecated, still routed by some stacks)
        embedded(s[6], s[7])
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // 64:ff9b::/96, NAT64 of a.b.c.d
        embedded(s[6], s[7])
    } else if s[0] == 0x2002 {
        // 2002::/16, 6to4 of a.b.c.d
        embedded(s[1], s[2])
    } else if s[0] & 0xffc0 == 0xfe80 {
        HostClass::LinkLocal
    } else if s[0] & 0xfe00 == 0xfc00 // fc00::/7, unique local
        || s[0] & 0xffc0 == 0xfec0 // fec0::/10, site-local (deprecated)
        || s[0] & 0xff00 == 0xff00 // multicast
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // 64:ff9b:1::/48, local NAT64
        || (s[0] == 0x2001 && s[1] == 0) // 2001::/32, Teredo (an IPv4 hidden inside)
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[..4] == [0x100, 0, 0, 0]
    // 100::/64, discard
    {
        HostClass::Private
    } else {
        HostClass::Public
    }
}

/// Why a URL may not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlRefusal {
    /// The text does not parse as a URL, or has no host.
    #[error("{url:?} is not a URL")]
    NotAUrl {
        /// The text, [`redacted_str`] when [`UrlPolicy::check`] refused it.
        url: String,
    },
    /// A scheme other than `https` and `http`.
    #[error("{url} uses the {scheme}: scheme; only https (and http on loopback) is allowed")]
    Scheme {
        /// The URL, [`redacted`].
        url: String,
        /// The scheme it uses.
        scheme: String,
    },
    /// `http` to a host that is not loopback, without `allow_http`.
    #[error(
        "{url} uses plain http on a non-loopback host; https is required (--allow-http permits it for development)"
    )]
    PlainHttp {
        /// The URL, [`redacted`].
        url: String,
    },
    /// A host in a class the policy does not allow ([`UrlPolicy::allows`]).
    #[error(
        "{url} points at a {class} address, which a server that is not there itself may not send keyway to"
    )]
    Private {
        /// The URL, [`redacted`].
        url: String,
        /// The class of its host.
        class: HostClass,
    },
    /// A user name or password in the URL.
    #[error("{url} carries credentials in the URL")]
    Userinfo {
        /// The URL, [`redacted`] (so without them).
        url: String,
    },
    /// The name resolved only to addresses the rules refuse.
    #[error("{url}: {detail}")]
    Addresses {
        /// The URL, [`redacted`].
        url: String,
        /// What the guarded resolver refused, and why.
        detail: String,
    },
}

/// A URL as errors show it: without user and password, with its query replaced (an
/// API key often rides there), and at most 200 characters.
pub fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    if u.query().is_some() {
        u.set_query(Some("…"));
    }
    u.set_fragment(None);
    // A URL is ASCII once parsed; a server's may still be megabytes long.
    let text = u.to_string();
    match text.char_indices().nth(MAX_SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The most characters of a URL an error shows.
const MAX_SHOWN: usize = 200;

/// [`redacted`] for text that may not parse: then at most its first 60 characters
/// before any `?`.
pub fn redacted_str(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(u) => redacted(&u),
        Err(_) => {
            let head = raw.split(['?', '#']).next().unwrap_or_default();
            head.chars().take(60).collect()
        }
    }
}

/// The rules every URL of a flow obeys (MCP "Communication Security", SBP SSRF):
/// https, or http on a loopback host (or anywhere with `allow_http`); no userinfo;
/// no loopback, private or link-local address unless the MCP server itself is in
/// that range. Addresses a name resolves to obey the same classes
/// ([`crate::http::guarded`]).
///
/// ```
/// use keyway::auth::urls::{HostClass, UrlPolicy, UrlRefusal};
/// use url::Url;
///
/// let mcp = Url::parse("https://mcp.example.com/mcp").unwrap();
/// let policy = UrlPolicy::for_server(&mcp, false);
/// assert_eq!(policy.server, HostClass::Public);
///
/// assert!(policy.check("https://auth.example.com/token").is_ok());
/// // A public server's metadata may not send keyway to cloud metadata, to this
/// // machine, over plain http, or with credentials in the URL.
/// assert!(matches!(
///     policy.check("https://169.254.169.254/latest"),
///     Err(UrlRefusal::Private { class: HostClass::LinkLocal, .. })
/// ));
/// assert!(matches!(
///     policy.check("https://127.0.0.1/token"),
///     Err(UrlRefusal::Private { class: HostClass::Loopback, .. })
/// ));
/// assert!(matches!(
///     policy.check("http://auth.example.com/token"),
///     Err(UrlRefusal::PlainHttp { .. })
/// ));
/// assert!(matches!(
///     policy.check("https://user:pw@auth.example.com/token"),
///     Err(UrlRefusal::Userinfo { .. })
/// ));
///
/// // A server on this machine may use its neighbours, and plain http to them.
/// let local_mcp = Url::parse("http://127.0.0.1:3000/mcp").unwrap();
/// let local = UrlPolicy::for_server(&local_mcp, false);
/// assert!(local.check("http://localhost:9000/token").is_ok());
/// assert!(local.allows(HostClass::Private));
/// assert!(!local.allows(HostClass::LinkLocal));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlPolicy {
    /// The MCP server's host class: URLs may reach "down" to it, not further.
    pub server: HostClass,
    /// Allow plain http to any host, not only loopback (`--allow-http`, development).
    pub allow_http: bool,
}

impl UrlPolicy {
    /// The policy for a server, judged by its URL as written: a DNS name counts as
    /// public. [`UrlPolicy::for_server_resolved`] looks the name up.
    pub fn for_server(mcp_url: &Url, allow_http: bool) -> Self {
        Self {
            server: host_class(mcp_url),
            allow_http,
        }
    }

    /// The policy for a server whose host may be a DNS name: a name whose addresses
    /// are all inside a private network makes a private server (its metadata and
    /// authorization server may be its neighbours); any public address, or no answer,
    /// makes a public one. A name never makes a loopback or link-local server: its DNS
    /// could answer this lookup differently from the one the connection used
    /// (rebinding), and this machine and cloud metadata are not worth that risk. Use
    /// `localhost` or an address for a server on this machine.
    pub async fn for_server_resolved(mcp_url: &Url, allow_http: bool) -> Self {
        let mut policy = Self::for_server(mcp_url, allow_http);
        if let Some(url::Host::Domain(d)) = mcp_url.host()
            && name_class(d) == HostClass::Public
        {
            let port = mcp_url.port_or_known_default().unwrap_or(443);
            if let Ok(addrs) = tokio::net::lookup_host((d, port)).await {
                let most_public = addrs.map(|a| ip_class(a.ip())).max();
                if most_public.is_some_and(|c| c != HostClass::Public) {
                    policy.server = HostClass::Private;
                }
            }
        }
        policy
    }

    /// Whether an address of `class` may be used: public always; a loopback server
    /// may use loopback and private peers; a private one, private peers; link-local
    /// only by a link-local server.
    pub fn allows(&self, class: HostClass) -> bool {
        match class {
            HostClass::Public => true,
            HostClass::Loopback => self.server == HostClass::Loopback,
            HostClass::Private => matches!(self.server, HostClass::Loopback | HostClass::Private),
            HostClass::LinkLocal => self.server == HostClass::LinkLocal,
        }
    }

    /// Parse `raw` and apply [`check_url`](Self::check_url); the parsed URL when the
    /// rules allow it. Fails with [`UrlRefusal::NotAUrl`] when it does not parse.
    pub fn check(&self, raw: &str) -> Result<Url, UrlRefusal> {
        let url = Url::parse(raw).map_err(|_| UrlRefusal::NotAUrl {
            url: redacted_str(raw),
        })?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Whether a flow may use `url`, judged as written (no DNS lookup): no userinfo,
    /// https or allowed http, a host, and a host class the policy [`allows`](Self::allows).
    /// The refusal names the first rule broken, with the URL [`redacted`].
    pub fn check_url(&self, url: &Url) -> Result<(), UrlRefusal> {
        let shown = || redacted(url);
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Userinfo { url: shown() });
        }
        check_scheme(url, self.allow_http)?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlRefusal::NotAUrl { url: shown() });
        }
        let class = host_class(url);
        if self.allows(class) {
            Ok(())
        } else {
            Err(UrlRefusal::Private {
                url: shown(),
                class,
            })
        }
    }
}

/// https, or http to a loopback host (anywhere with `allow_http`).
fn check_scheme(url: &Url, allow_http: bool) -> Result<(), UrlRefusal> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || host_class(url) == HostClass::Loopback => Ok(()),
        "http" => Err(UrlRefusal::PlainHttp { url: redacted(url) }),
        other => Err(UrlRefusal::Scheme {
            url: redacted(url),
            scheme: other.to_owned(),
        }),
    }
}

/// Whether a static token or a configured header may be sent to `url`: over https,
/// or plain http to a loopback host, or anywhere with `allow_http` (development).
pub fn may_carry_secrets(url: &Url, allow_http: bool) -> Result<(), UrlRefusal> {
    check_scheme(url, allow_http)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn prm_locations_insert_the_path_then_the_root() {
        let got: Vec<String> = prm_well_known(&u("https://a.example/x/mcp/"))
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "https://a.example/.well-known/oauth-protected-resource/x/mcp",
                "https://a.example/.well-known/oauth-protected-resource"
            ]
        );
        assert_eq!(prm_well_known(&u("https://a.example")).len(), 1);
        assert_eq!(
            prm_well_known(&u("https://a.example/mcp?t=1"))[0].as_str(),
            "https://a.example/.well-known/oauth-protected-resource/mcp?t=1"
        );
    }

    #[test]
    fn as_metadata_order_follows_the_spec() {
        let got: Vec<String> = as_metadata_urls(&u("https://a.example/t1"))
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "https://a.example/.well-known/oauth-authorization-server/t1",
                "https://a.example/.well-known/openid-configuration/t1",
                "https://a.example/t1/.well-known/openid-configuration",
            ]
        );
        let got: Vec<String> = as_metadata_urls(&u("https://a.example/"))
            .iter()
            .map(Url::to_string)
            .collect();
        assert_eq!(
            got,
            [
                "https://a.example/.well-known/oauth-authorization-server",
                "https://a.example/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn canonical_resources() {
        assert_eq!(
            canonical_resource(&u("HTTPS://MCP.Example.com/")),
            "https://mcp.example.com"
        );
        assert_eq!(
            canonical_resource(&u("https://mcp.example.com:8443")),
            "https://mcp.example.com:8443"
        );
        assert_eq!(
            canonical_resource(&u("https://mcp.example.com/mcp#frag")),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(
            canonical_resource(&u("https://u:p@mcp.example.com/mcp")),
            "https://mcp.example.com/mcp"
        );
    }

    #[test]
    fn resource_matching_is_same_origin_and_segment_prefix() {
        let m = u("https://a.example/api/mcp");
        assert!(resource_matches("https://a.example/api/mcp", &m));
        assert!(resource_matches("https://a.example/api", &m));
        assert!(resource_matches("https://a.example", &m));
        assert!(resource_matches("https://a.example/", &m));
        assert!(!resource_matches("https://a.example/ap", &m));
        assert!(!resource_matches("https://evil.example.com/api/mcp", &m));
        assert!(!resource_matches("http://a.example/api/mcp", &m));
        assert!(!resource_matches("https://a.example:444/api/mcp", &m));
        assert!(!resource_matches("https://a.example/api/mcp#x", &m));
        assert!(!resource_matches("not a url", &m));
    }

    #[test]
    fn host_classes_cover_the_tricky_forms() {
        for (s, c) in [
            ("http://127.0.0.1/", HostClass::Loopback),
            ("http://0177.0.0.1/", HostClass::Loopback),
            ("http://[::1]/", HostClass::Loopback),
            ("http://[::ffff:127.0.0.1]/", HostClass::Loopback),
            ("http://foo.localhost/", HostClass::Loopback),
            ("http://10.0.0.1/", HostClass::Private),
            ("http://[fd00::1]/", HostClass::Private),
            ("http://169.254.169.254/", HostClass::LinkLocal),
            ("http://[::ffff:169.254.169.254]/", HostClass::LinkLocal),
            ("http://[fe80::1]/", HostClass::LinkLocal),
            ("http://metadata.google.internal/", HostClass::LinkLocal),
            ("https://example.com/", HostClass::Public),
            ("http://8.8.8.8/", HostClass::Public),
            ("http://[2606:4700::1111]/", HostClass::Public),
            // The ranges a review found missing.
            ("http://100.64.0.1/", HostClass::Private),
            ("http://100.127.255.254/", HostClass::Private),
            ("http://100.128.0.1/", HostClass::Public),
            ("http://192.0.0.8/", HostClass::Private),
            ("http://198.18.0.1/", HostClass::Private),
            ("http://224.0.0.1/", HostClass::Private),
            ("http://255.255.255.255/", HostClass::Private),
            ("http://0.0.0.0/", HostClass::Loopback),
            ("http://0.1.2.3/", HostClass::Loopback),
            ("http://[64:ff9b::7f00:1]/", HostClass::Loopback),
            ("http://[64:ff9b::a9fe:a9fe]/", HostClass::LinkLocal),
            ("http://[64:ff9b::a00:1]/", HostClass::Private),
            ("http://[64:ff9b::808:808]/", HostClass::Public),
            ("http://[64:ff9b:1::1]/", HostClass::Private),
            ("http://[2002:7f00:1::1]/", HostClass::Loopback),
            ("http://[2002:a9fe:a9fe::1]/", HostClass::LinkLocal),
            ("http://[2002:c0a8:101::1]/", HostClass::Private),
            ("http://[2002:808:808::1]/", HostClass::Public),
            ("http://[::7f00:1]/", HostClass::Loopback),
            ("http://[::a9fe:a9fe]/", HostClass::LinkLocal),
            ("http://[::a00:1]/", HostClass::Private),
            ("http://[fec0::1]/", HostClass::Private),
            ("http://[ff02::1]/", HostClass::Private),
            (
                "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
                HostClass::Private,
            ),
            ("http://[::]/", HostClass::Loopback),
            ("http://[::ffff:0.0.0.0]/", HostClass::Loopback),
            ("http://[::ffff:0:7f00:1]/", HostClass::Loopback),
            ("http://[::ffff:0:a00:1]/", HostClass::Private),
            ("http://192.88.99.1/", HostClass::Private),
        ] {
            assert_eq!(host_class(&u(s)), c, "{s}");
        }
    }

    #[test]
    fn the_url_policy_refuses_what_the_spec_forbids() {
        let public = UrlPolicy::for_server(&u("https://mcp.example.com/mcp"), false);
        assert!(public.check("https://as.example.com/authorize").is_ok());
        for bad in [
            "javascript:alert(1)",
            "data:text/html,hi",
            "file:///etc/passwd",
            "vbscript:x",
            "http://as.example.com/authorize",
            "https://169.254.169.254/latest",
            "https://10.0.0.1/x",
            "https://127.0.0.1/x",
            "https://0.0.0.0/x",
            "https://[::]/x",
            "https://100.64.0.1/x",
            "https://[64:ff9b::a9fe:a9fe]/x",
            "https://user:pw@as.example.com/x",
            "not a url",
        ] {
            assert!(public.check(bad).is_err(), "{bad}");
        }
        let local = UrlPolicy::for_server(&u("http://127.0.0.1:9/mcp"), false);
        assert!(local.check("http://127.0.0.1:10/authorize").is_ok());
        assert!(local.check("http://localhost:10/authorize").is_ok());
        assert!(local.check("http://as.example.com/authorize").is_err());
        assert!(local.check("https://169.254.169.254/").is_err());
        let dev = UrlPolicy::for_server(&u("http://10.1.2.3/mcp"), true);
        assert!(dev.check("http://10.1.2.4/token").is_ok());
    }
}
