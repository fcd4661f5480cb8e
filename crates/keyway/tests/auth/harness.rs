use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::BoxFuture;
use keyway::auth::{
    AuthOptions, Authorizer, BrowserError, BrowserMode, MemoryRegistrations, Opener,
    RegistrationStore, Silent,
};
use keyway_testbed::{Knobs, Testbed};
use url::Url;

pub async fn testbed(f: impl FnOnce(&mut Knobs)) -> Testbed {
    let mut k = Knobs::default();
    f(&mut k);
    Testbed::start(k).await.unwrap()
}

pub fn http() -> keyway::http::WireClient {
    keyway::http::WireClient::new(&Default::default()).unwrap()
}

/// Options for servers that approve at once: keyway follows the redirects itself.
pub fn follow() -> AuthOptions {
    AuthOptions {
        browser: BrowserMode::Follow,
        callback_timeout: Duration::from_secs(20),
        ..AuthOptions::default()
    }
}

pub fn authorizer(options: AuthOptions) -> Authorizer {
    authorizer_with(options, Arc::new(MemoryRegistrations::default()))
}

pub fn authorizer_with(options: AuthOptions, regs: Arc<dyn RegistrationStore>) -> Authorizer {
    Authorizer::new(options, regs, Arc::new(Silent)).unwrap()
}

/// The `WWW-Authenticate` values an unauthenticated request gets.
pub async fn challenge(tb: &Testbed) -> Vec<String> {
    let r = reqwest::Client::new()
        .post(tb.mcp_url())
        .header("accept", "application/json, text/event-stream")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    r.headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

pub fn url(tb: &Testbed) -> Url {
    Url::parse(tb.mcp_url()).unwrap()
}

/// An opener standing in for a person at a browser: it records every URL it is
/// asked to open and runs `script` on it.
#[derive(Clone)]
pub struct ScriptedBrowser {
    pub opened: Arc<Mutex<Vec<String>>>,
    script: Arc<dyn Fn(Url) -> BoxFuture<'static, Result<(), String>> + Send + Sync>,
}

impl std::fmt::Debug for ScriptedBrowser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedBrowser")
    }
}

impl ScriptedBrowser {
    pub fn new(
        script: impl Fn(Url) -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            opened: Arc::default(),
            script: Arc::new(script),
        }
    }

    pub fn opened(&self) -> Vec<String> {
        self.opened.lock().unwrap().clone()
    }

    pub fn options(&self) -> AuthOptions {
        AuthOptions {
            browser: BrowserMode::System,
            opener: Some(Arc::new(self.clone())),
            callback_timeout: Duration::from_secs(20),
            ..AuthOptions::default()
        }
    }
}

impl Opener for ScriptedBrowser {
    fn open<'a>(&'a self, url: &'a Url) -> BoxFuture<'a, Result<(), BrowserError>> {
        self.opened.lock().unwrap().push(url.to_string());
        let script = (self.script)(url.clone());
        Box::pin(async move { script.await.map_err(BrowserError::from) })
    }
}

/// GET without following redirects; the `Location`.
pub async fn location_of(url: &str) -> String {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(url).send().await.unwrap();
    assert_eq!(r.status(), 302, "{url}");
    r.headers()["location"].to_str().unwrap().to_owned()
}
