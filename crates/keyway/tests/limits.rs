//! Limits and faults (issue 20): what a slow or hostile peer cannot make keyway do.
//! Each of keyway's listeners against a slowloris client; keyway as a client against
//! the testbed's hostile answers is in `tests/limits/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "limits/hostile.rs"]
mod hostile;

use std::{net::SocketAddr, time::Duration};

use keyway::{
    Secret,
    gateway::{
        Gateway,
        edge::{self, EdgeLimits},
        http::Guard,
    },
    store::{OpenOptions, SqliteStore},
    web::{Ui, UiOptions},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};

/// The header timeout of every listener (`EdgeLimits::default`); a drip is seen
/// closed within two more steps of the clock.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A slowloris client: a request's head, then one more header byte for each second
/// the test's paused clock is moved on, never finished. Returns how long, on that
/// clock, the listener took to close the connection; fails if it answered or never
/// closed in ten minutes of dripping. The bytes are written raw on purpose: no HTTP
/// client (hyper, reqwest) can send half a header and stop, which is the attack.
async fn drip(addr: SocketAddr, path: &str) -> Duration {
    let stream = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    let closed = read.read_to_end(&mut answer);
    let dripping = async {
        for _ in 0..600 {
            if write.write_all(b"a").await.is_err() {
                // Refused: the listener has closed its side.
                return;
            }
            // The clock is paused: moved on by hand, nothing waits in real time.
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        panic!("the listener kept a dripping connection open for ten minutes");
    };
    tokio::pin!(closed);
    tokio::select! {
        _ = &mut closed => {}
        () = dripping => { let _ = closed.await; }
    }
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        !text.starts_with("HTTP/1.1 2"),
        "an unfinished request was served: {text}"
    );
    took
}

/// A complete request still gets an answer beside the slow one: its status.
async fn answers(addr: SocketAddr, path: &str) -> u16 {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(start_paused = true)]
async fn the_callback_listener_closes_a_slowloris_connection() {
    let listener = keyway::auth::loopback::Loopback::bind(0, "the-state")
        .await
        .unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], listener.port()).into();
    let took = drip(addr, "/callback?state=the-state&code=c").await;
    assert!(took <= HEADER_TIMEOUT + Duration::from_secs(2), "{took:?}");
    // The listener still answers (another flow's callback: refused), and the flow's
    // own callback still arrives.
    assert_eq!(answers(addr, "/callback?state=other&code=c").await, 400);
    let mut listener = listener;
    let own = tokio::spawn(async move {
        let arrived = listener
            .next(Duration::from_secs(30))
            .await
            .expect("the callback");
        assert_eq!(arrived.params.get("code"), Some("the-code"));
        let _ = arrived.reply.send(keyway::auth::loopback::Page::Done);
    });
    assert_eq!(
        answers(addr, "/callback?state=the-state&code=the-code").await,
        200
    );
    own.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_gateway_closes_a_slowloris_connection() {
    let gw = Gateway::start(Vec::new()).await;
    let listener = edge::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = EdgeLimits::default();
    let app = keyway::gateway::http::app(
        gw,
        Guard::for_addr(addr, Secret::new("gateway-token"), &[]),
        limits,
    );
    tokio::spawn(edge::serve(
        listener,
        app,
        limits,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let took = drip(addr, "/mcp").await;
    assert!(took <= HEADER_TIMEOUT + Duration::from_secs(2), "{took:?}");
    // Without the token: refused, but answered.
    assert_eq!(answers(addr, "/mcp").await, 401);
}

#[tokio::test(start_paused = true)]
async fn the_settings_page_closes_a_slowloris_connection() {
    let home = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        home.path(),
        OpenOptions {
            use_keychain: false,
        },
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = keyway::http::WireClient::new(&Default::default()).unwrap();
    let options = UiOptions {
        idle_exit: None,
        ..UiOptions::default()
    };
    let (ui, _secret) = Ui::new(store, http, options, addr.port());
    tokio::spawn(ui.serve(listener, std::future::pending()));
    let took = drip(addr, "/").await;
    assert!(took <= HEADER_TIMEOUT + Duration::from_secs(2), "{took:?}");
    // Without the link's secret: refused, but answered.
    let status = answers(addr, "/").await;
    assert!((200..500).contains(&status), "{status}");
}
