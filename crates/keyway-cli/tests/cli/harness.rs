//! Run the built `keyway` with its own home directory, never the user's.

use std::process::{Command, Output, Stdio};

pub struct Keyway {
    pub home: tempfile::TempDir,
}

impl Keyway {
    pub fn new() -> Self {
        Self {
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A `keyway` command with a private home and no inherited log settings.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyway"));
        c.args(args)
            .env("KEYWAY_HOME", self.home.path())
            // Never the user's keychain: the store key goes in a file in the test home.
            .env("KEYWAY_NO_KEYCHAIN", "1")
            .env_remove("KEYWAY_STORE_KEY")
            // Never the user's team store either.
            .env_remove("KEYWAY_STORE")
            .env_remove("PGPASSWORD")
            .env_remove("KEYWAY_TOKEN")
            .env_remove("KEYWAY_CLIENT_SECRET")
            .env_remove("KEYWAY_LOG")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        // The machine's proxy settings would route the loopback testbeds elsewhere.
        for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
            c.env_remove(var).env_remove(var.to_ascii_lowercase());
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Run without blocking the async runtime (for tests that serve a testbed).
    pub async fn run_async(&self, args: &[&str]) -> Output {
        let cmd = self.cmd(args);
        tokio::process::Command::from(cmd).output().await.unwrap()
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// An MCP URL on a loopback port nothing listens on (bound to find it, then let go).
pub fn dead_mcp_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("http://127.0.0.1:{port}/mcp")
}

/// A testbed with the default knobs changed by `f`.
pub async fn testbed(f: impl FnOnce(&mut keyway_testbed::Knobs)) -> keyway_testbed::Testbed {
    let mut k = keyway_testbed::Knobs::default();
    f(&mut k);
    keyway_testbed::Testbed::start(k).await.unwrap()
}

/// The JSON printed on stdout.
pub fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

/// Settings that make output with ports and timings stable for snapshots.
pub fn stable() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    s.add_filter(r"port \d+", "port [PORT]");
    s.add_filter(r"\d+(\.\d+)? ms", "[TIME]");
    s.add_filter(r"keyway-testbed \d+\.\d+\.\d+", "keyway-testbed [VERSION]");
    s.add_filter(r"localhost-\d+", "localhost-[PORT]");
    s.add_filter(r"in \d+ (s|min|h)", "in [TIME]");
    s.add_filter(r"/tmp/[^ \n)]*", "[TMP]");
    s.add_filter(r"tbc_[A-Za-z0-9_-]+", "[CLIENT]");
    s
}

/// An HTTP proxy on loopback for one test, on hyper's server: each request's head is
/// kept ("METHOD TARGET VERSION" and its headers, names in lower case). A `CONNECT`
/// is answered 200 and its tunnel copied to the target, unless `refuse` gives the
/// status to answer every request with; other requests (absolute form) get 502.
/// Returns the proxy's URL (with the credentials proxyuser:proxy-pass) and the heads.
pub async fn http_proxy(
    refuse: Option<u16>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = seen.clone();
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut head =
                        format!("{} {} {:?}\r\n", req.method(), req.uri(), req.version());
                    for (k, v) in req.headers() {
                        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("?")));
                    }
                    seen.lock().unwrap().push(head);
                    let connect = req.method() == hyper::Method::CONNECT;
                    let status = refuse.unwrap_or(if connect { 200 } else { 502 });
                    if status == 200 {
                        let target = req
                            .uri()
                            .authority()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        tokio::spawn(async move {
                            let Ok(upgraded) = hyper::upgrade::on(req).await else {
                                return;
                            };
                            let Ok(mut server) = tokio::net::TcpStream::connect(&target).await
                            else {
                                return;
                            };
                            let _ = tokio::io::copy_bidirectional(
                                &mut TokioIo::new(upgraded),
                                &mut server,
                            )
                            .await;
                        });
                    }
                    let resp = hyper::Response::builder()
                        .status(status)
                        .body(http_body_util::Empty::<bytes::Bytes>::new());
                    async move { resp }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (format!("http://proxyuser:proxy-pass@{addr}"), heads)
}
