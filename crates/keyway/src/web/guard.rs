//! Who may use the settings page: the browser that opened keyway's one-time link,
//! at the address keyway printed. Every request passes [`check`] (a layer over every
//! route, so none can skip it): the Host and Origin must be the page's own, a session
//! cookie must be one keyway issued, and a request that changes anything must carry
//! the session's CSRF token and come from the page itself. No CORS: nothing is ever
//! allowed to another origin.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::Secret;

/// The header a request that changes something carries its CSRF token in (forms
/// without JavaScript carry it as the `csrf` query parameter instead).
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Sessions of one settings page: the one-time link, and the sessions it opened.
pub struct Sessions {
    port: u16,
    /// SHA-256 of the one-time secret until it is used.
    login: Mutex<Option<[u8; 32]>>,
    /// Session cookie digest -> that session's CSRF token.
    open: Mutex<HashMap<[u8; 32], Arc<Secret>>>,
    /// The user keyway runs as: connections owned by anyone else are refused.
    own_uid: Option<u32>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A session the request proved it holds: its CSRF token, for the page.
#[derive(Clone, Debug)]
pub struct SessionCsrf(pub Arc<Secret>);

fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// Sessions for a page on 127.0.0.1:`port`, and the one-time secret of its link.
    pub fn new(port: u16) -> (Self, Secret) {
        let secret = random_token();
        let sessions = Self {
            port,
            login: Mutex::new(Some(digest(&secret))),
            open: Mutex::default(),
            own_uid: super::peer::own_uid(),
        };
        (sessions, Secret::new(secret))
    }

    /// The name of the session cookie. Cookies are not kept apart by port, so each
    /// page's has its own name.
    pub fn cookie_name(&self) -> String {
        format!("keyway_ui_{}", self.port)
    }

    /// Trade the one-time secret for a session: the `Set-Cookie` value, or `None` when
    /// the secret is wrong or was used already.
    pub fn exchange(&self, secret: &str) -> Option<String> {
        {
            let mut login = self.login.lock().ok()?;
            let expected = (*login)?;
            if !same(&expected, &digest(secret)) {
                return None;
            }
            *login = None;
        }
        let cookie = random_token();
        let csrf = Arc::new(Secret::new(random_token()));
        self.open.lock().ok()?.insert(digest(&cookie), csrf);
        Some(format!(
            "{}={cookie}; Path=/; HttpOnly; SameSite=Strict",
            self.cookie_name()
        ))
    }

    /// The session whose cookie `headers` carry.
    fn session(&self, headers: &HeaderMap) -> Option<Arc<Secret>> {
        let name = self.cookie_name();
        let value = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_owned())?;
        let key = digest(&value);
        let open = self.open.lock().ok()?;
        open.iter()
            .find(|(k, _)| same(k.as_slice(), &key))
            .map(|(_, csrf)| csrf.clone())
    }

    fn host_ok(&self, headers: &HeaderMap) -> bool {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        host == format!("127.0.0.1:{}", self.port) || host == format!("localhost:{}", self.port)
    }

    fn origin_ok(&self, origin: &str) -> bool {
        origin == format!("http://127.0.0.1:{}", self.port)
            || origin == format!("http://localhost:{}", self.port)
    }
}

fn refuse(why: &'static str) -> Response {
    let mut r = (StatusCode::FORBIDDEN, format!("forbidden: {why}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    harden(r)
}

/// Headers every answer carries: no framing, no sniffing, no referrer to other sites, no caching,
/// and a content security policy that allows only the page's own files.
pub fn harden(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with no referrer at all, Chromium sends
    // `Origin: null` on the page's own form posts, which the guard must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Paths that need no session: the one-time link itself, and the authorization
/// server's redirect back (a top-level navigation from another site, which carries no
/// SameSite=Strict cookie; the flow's unguessable single-use `state` guards it).
fn open_path(path: &str) -> bool {
    path == "/login" || path == crate::auth::loopback::CALLBACK_PATH
}

/// The guard, as a middleware over every route.
pub async fn check(
    State(sessions): State<Arc<Sessions>>,
    mut req: Request,
    next: Next,
) -> Response {
    let headers = req.headers();
    if !sessions.host_ok(headers) {
        return refuse("this page answers only at the address keyway printed");
    }
    // Another user of this machine, whatever cookie it holds (see `peer`).
    if let Some(super::peer::PeerOwner(Some(uid))) = req.extensions().get().copied()
        && sessions.own_uid.is_some_and(|me| me != uid)
    {
        return refuse("this page answers only the user who started keyway ui");
    }
    let origin = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or(""));
    if let Some(o) = origin
        && !sessions.origin_ok(o)
    {
        return refuse("requests from other sites are refused");
    }
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if *req.method() == Method::OPTIONS {
        return refuse("no cross-origin requests");
    }
    if open_path(req.uri().path()) {
        if changes {
            return refuse("read-only path");
        }
        return harden(next.run(req).await);
    }
    let Some(csrf) = sessions.session(headers) else {
        return refuse("no session: open the link `keyway ui` printed (each link works once)");
    };
    // A browser says where a request comes from: the page itself, or the person
    // (typed, bookmarked). Another site, even another port of 127.0.0.1 (same-site,
    // not same-origin), is refused before anything is read or done.
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if let Some(site) = site
        && site != "same-origin"
        && (changes || site != "none")
    {
        return refuse("requests from other sites are refused");
    }
    if changes {
        // A browser always says where a POST comes from; the page's own, or nothing.
        if origin.is_none() {
            return refuse("a change must come from the settings page");
        }
        let given = headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| {
                req.uri().query().and_then(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "csrf")
                        .map(|(_, v)| v.into_owned())
                })
            });
        if !given.is_some_and(|g| same(g.as_bytes(), csrf.expose().as_bytes())) {
            return refuse("missing or wrong CSRF token: reload the page");
        }
    }
    req.extensions_mut().insert(SessionCsrf(csrf));
    harden(next.run(req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_time_secret_opens_one_session() {
        let (s, secret) = Sessions::new(4000);
        assert!(s.exchange("wrong").is_none());
        let cookie = s.exchange(secret.expose()).expect("first use");
        assert!(cookie.starts_with("keyway_ui_4000="));
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        assert!(s.exchange(secret.expose()).is_none(), "replayed");
        let value = cookie
            .split(';')
            .next()
            .and_then(|kv| kv.split_once('='))
            .map(|(_, v)| v.to_owned())
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; keyway_ui_4000={value}")).unwrap(),
        );
        assert!(s.session(&h).is_some());
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("keyway_ui_4001={value}")).unwrap(),
        );
        assert!(s.session(&h).is_none(), "another page's cookie name");
    }

    #[test]
    fn hosts_and_origins_are_the_pages_own() {
        let (s, _) = Sessions::new(4000);
        let host = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_str(v).unwrap());
            s.host_ok(&h)
        };
        assert!(host("127.0.0.1:4000"));
        assert!(host("localhost:4000"));
        assert!(!host("127.0.0.1:4001"));
        assert!(!host("evil.example:4000"));
        assert!(!host("127.0.0.1"));
        assert!(s.origin_ok("http://127.0.0.1:4000"));
        assert!(!s.origin_ok("null"));
        assert!(!s.origin_ok("http://127.0.0.1:4001"));
        assert!(!s.origin_ok("https://127.0.0.1:4000"));
    }
}
