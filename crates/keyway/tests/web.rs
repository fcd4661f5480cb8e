//! The settings page's guard and answers, in memory (`oneshot` on the app): every
//! refusal is a 403 and changes nothing. The page in a real browser is tested by
//! `scripts/ui-browser/run`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use keyway::{
    Secret,
    store::{AuthKind, NewServer, OpenOptions, SqliteStore, Store, Transport},
    web::{Ui, UiOptions},
};
use tower::ServiceExt;

/// The port the app believes it is served on (nothing listens: the app is called in
/// memory).
const PORT: u16 = 43_210;
const ORIGIN: &str = "http://127.0.0.1:43210";
const HOST: &str = "127.0.0.1:43210";

struct Page {
    app: Router,
    store: SqliteStore,
    secret: Secret,
    _home: tempfile::TempDir,
}

async fn page() -> Page {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        home.path(),
        OpenOptions {
            use_keychain: false,
        },
    )
    .unwrap();
    store
        .create_server(
            &NewServer {
                id: "s1".into(),
                name: "docs".into(),
                url: "https://docs.example/mcp".into(),
                transport: Transport::Http,
                auth: AuthKind::None,
                headers: Vec::new(),
            },
            None,
        )
        .await
        .unwrap();
    let http = keyway::http::WireClient::new(&Default::default()).unwrap();
    let (ui, secret) = Ui::new(store.clone(), http, UiOptions::default(), PORT);
    Page {
        app: ui.app(),
        store,
        secret,
        _home: home,
    }
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn get(path: &str) -> http::request::Builder {
    Request::builder().uri(path).header(header::HOST, HOST)
}

/// A session: the cookie header value and the page's CSRF token.
async fn login(p: &Page) -> (String, String) {
    let (status, headers, _) = send(
        &p.app,
        get(&format!("/login?k={}", p.secret.expose()))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let (status, _, html) = send(
        &p.app,
        get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let csrf = html
        .split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_owned();
    (cookie, csrf)
}

/// A POST that disables the saved server, as the page would send it.
fn disable(cookie: &str, csrf: &str) -> http::request::Builder {
    Request::builder()
        .method(Method::POST)
        .uri("/servers/s1/disable")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::COOKIE, cookie)
        .header("x-csrf-token", csrf)
        .header(header::ACCEPT, "application/json")
}

async fn still_enabled(p: &Page) -> bool {
    p.store.server("s1").await.unwrap().unwrap().enabled
}

#[tokio::test]
async fn the_page_reads_with_a_session_and_only_with_one() {
    let p = page().await;
    let (status, _, body) = send(&p.app, get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("open the link"), "{body}");
    let (cookie, _) = login(&p).await;
    let (status, headers, html) = send(
        &p.app,
        get("/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("docs") && html.contains("https://docs.example/mcp"));
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn a_replayed_or_wrong_one_time_secret_is_refused() {
    let p = page().await;
    let _ = login(&p).await;
    for k in [p.secret.expose().to_owned(), "guess".to_owned()] {
        let (status, headers, _) = send(
            &p.app,
            get(&format!("/login?k={k}")).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(headers.get(header::SET_COOKIE).is_none());
    }
}

#[tokio::test]
async fn a_wrong_host_or_origin_is_refused_and_changes_nothing() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;
    // DNS rebinding: the browser sends the attacker's host name.
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::HOST, "evil.example:43210".parse().unwrap());
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    // Another site's page posting to the settings page.
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, "http://evil.example".parse().unwrap());
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    // Another local page on another port (another user's tab, say).
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut()
        .insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut().remove(header::ORIGIN);
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    for site in ["cross-site", "same-site", "none"] {
        let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
        req.headers_mut()
            .insert("sec-fetch-site", site.parse().unwrap());
        assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN, "{site}");
    }
    // Reading is refused to other sites too: another port of 127.0.0.1 is same-site
    // (an <img> or a form there carries the cookie), never same-origin.
    for site in ["cross-site", "same-site"] {
        let req = get("/servers/s1/tools")
            .header(header::COOKIE, &cookie)
            .header("sec-fetch-site", site)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN, "{site}");
    }
    // The person typing the address (none) or the page itself (same-origin) may read.
    for site in ["none", "same-origin"] {
        let req = get("/cards")
            .header(header::COOKIE, &cookie)
            .header("sec-fetch-site", site)
            .body(Body::empty())
            .unwrap();
        assert_eq!(send(&p.app, req).await.0, StatusCode::OK, "{site}");
    }
    assert!(still_enabled(&p).await);
    // The same request from the page itself goes through.
    let (status, _, body) =
        send(&p.app, disable(&cookie, &csrf).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!still_enabled(&p).await);
}

#[tokio::test]
async fn a_missing_or_wrong_cookie_or_csrf_token_is_refused_and_changes_nothing() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;
    let cases = [
        disable("keyway_ui_43210=forged", &csrf),
        disable("keyway_ui_43211=whatever", &csrf),
        disable(&cookie, "wrong"),
        disable(&cookie, ""),
    ];
    for req in cases {
        let (status, _, body) = send(&p.app, req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    }
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut().remove("x-csrf-token");
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.headers_mut().remove(header::COOKIE);
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    assert!(still_enabled(&p).await);
    // A form without JavaScript carries the token in its action's query.
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("/servers/s1/disable?csrf={csrf}"))
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&p.app, req).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/");
    assert!(!still_enabled(&p).await);
}

#[tokio::test]
async fn no_cross_origin_request_is_ever_allowed() {
    let p = page().await;
    let (cookie, _) = login(&p).await;
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("/servers/s1/disable")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, "http://evil.example")
        .header(header::COOKIE, &cookie)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = send(&p.app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}

#[tokio::test]
async fn a_callback_for_no_flow_consumes_nothing_and_needs_no_session() {
    let p = page().await;
    let (status, _, body) = send(
        &p.app,
        get("/callback?code=x&state=nobody")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not waiting for this sign-in"), "{body}");
    // But it answers only at the page's own address, like everything else.
    let req = Request::builder()
        .uri("/callback?code=x&state=nobody")
        .header(header::HOST, "evil.example")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_url_that_is_not_http_gets_a_clear_message() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;
    for (url, says) in [
        ("ftp://files.example/mcp", "not an http(s) URL"),
        ("javascript:alert(1)", "not an http(s) URL"),
        ("not a url", "is not a URL"),
    ] {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/probe")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, &cookie)
            .header("x-csrf-token", &csrf)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!(
                "url={}",
                url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
            )))
            .unwrap();
        let (status, _, body) = send(&p.app, req).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(v["error"].as_str().unwrap().contains(says), "{url}: {body}");
        assert!(v["hint"].as_str().is_some());
    }
}

#[tokio::test]
async fn removing_needs_a_confirmation() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;
    let remove = |body: &'static str| {
        Request::builder()
            .method(Method::POST)
            .uri("/servers/s1/remove")
            .header(header::HOST, HOST)
            .header(header::ORIGIN, ORIGIN)
            .header(header::COOKIE, &cookie)
            .header("x-csrf-token", &csrf)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(body))
            .unwrap()
    };
    let (status, _, _) = send(&p.app, remove("")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(p.store.server("s1").await.unwrap().is_some());
    let (status, _, body) = send(&p.app, remove("confirm=yes")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(p.store.server("s1").await.unwrap().is_none());
}

/// A probe request to the page, as its script sends it.
fn probe_request(cookie: &str, csrf: &str, url: &str) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri("/probe")
        .header(header::HOST, HOST)
        .header(header::ORIGIN, ORIGIN)
        .header(header::COOKIE, cookie)
        .header("x-csrf-token", csrf)
        .header(header::ACCEPT, "application/json")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "url={}",
            url::form_urlencoded::byte_serialize(url.as_bytes()).collect::<String>()
        )))
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_server_or_one_that_answers_garbage_gets_a_reason() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;

    // Nothing listens: the port of a listener just closed.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_url = format!(
        "http://127.0.0.1:{}/mcp",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (status, _, body) = send(&p.app, probe_request(&cookie, &csrf, &closed_url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["class"], "unreachable", "{body}");
    assert!(!v["detail"].as_str().unwrap_or("").is_empty(), "{body}");
    assert!(!v["next_step"].as_str().unwrap_or("").is_empty(), "{body}");

    // A server that answers every request with a page that is not MCP. (A real HTTP
    // server of our own: no part of keyway's testbed answers like this.)
    let garbage = axum::Router::new().fallback(|| async {
        (
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body>Welcome to nginx!</body></html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!(
        "http://127.0.0.1:{}/mcp",
        listener.local_addr().unwrap().port()
    );
    let server = tokio::spawn(async move { axum::serve(listener, garbage).await });
    let (status, _, body) = send(&p.app, probe_request(&cookie, &csrf, &garbage_url)).await;
    server.abort();
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["class"], "error", "{body}");
    assert!(!v["detail"].as_str().unwrap_or("").is_empty(), "{body}");
    assert!(
        !body.contains("panicked") && !body.contains("backtrace"),
        "{body}"
    );
}

#[tokio::test]
async fn closing_the_last_tab_ends_the_page() {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        home.path(),
        OpenOptions {
            use_keychain: false,
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let http = keyway::http::WireClient::new(&Default::default()).unwrap();
    let options = UiOptions {
        idle_exit: Some(std::time::Duration::from_millis(200)),
        ..UiOptions::default()
    };
    let (ui, secret) = Ui::new(store, http, options, port);
    let link = ui.login_url(&secret);
    let served = tokio::spawn(ui.serve(listener, std::future::pending()));

    // A browser: the link, then the page's event stream.
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = client.get(link.expose()).send().await.unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    let mut events = client
        .get(format!("http://127.0.0.1:{port}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), reqwest::StatusCode::OK);
    let first = events.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: cards"));
    assert!(!served.is_finished(), "a tab is open");

    // The tab closes: the page ends by itself.
    drop(events);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), served)
        .await
        .expect("the page ends once its last tab closed");
    ended.unwrap().unwrap();
}

#[tokio::test]
async fn a_connection_of_another_user_of_this_machine_is_refused_whatever_it_carries() {
    let p = page().await;
    let (cookie, csrf) = login(&p).await;
    let me = keyway::web::peer::own_uid();
    let Some(me) = me else {
        return; // Not known on this system: the cookie alone decides there.
    };
    // The edge tags each connection with the owner of its other end (read from the
    // kernel); here the tag is set by hand, as no second user exists in a test.
    let stranger = me.wrapping_add(1);
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(keyway::web::peer::PeerOwner(Some(stranger)));
    let (status, _, body) = send(&p.app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("only the user who started"), "{body}");
    assert!(still_enabled(&p).await);
    let mut req = get("/")
        .header(header::COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(keyway::web::peer::PeerOwner(Some(stranger)));
    assert_eq!(send(&p.app, req).await.0, StatusCode::FORBIDDEN);
    // Our own connections pass.
    let mut req = disable(&cookie, &csrf).body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(keyway::web::peer::PeerOwner(Some(me)));
    assert_eq!(send(&p.app, req).await.0, StatusCode::OK);
}
