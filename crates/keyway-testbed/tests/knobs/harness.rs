//! A small harness that speaks raw HTTP to a testbed: no keyway code on this side, so
//! these tests check the testbed alone.

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use keyway_testbed::{Clock, Knobs, ManualClock, Testbed};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const REDIRECT: &str = "http://127.0.0.1:9/callback";

pub struct Bed {
    pub tb: Testbed,
    pub http: reqwest::Client,
    pub clock: ManualClock,
}

/// Start a testbed with the default knobs changed by `f`, on a manual clock.
pub async fn bed(f: impl FnOnce(&mut Knobs)) -> Bed {
    let mut knobs = Knobs::default();
    f(&mut knobs);
    let clock = ManualClock::new();
    let tb = Testbed::start_with_clock(knobs, Arc::new(clock.clone()) as Arc<dyn Clock>)
        .await
        .expect("testbed starts");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A regression that leaves a request hanging fails the test instead.
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    Bed { tb, http, clock }
}

pub fn challenge_s256() -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(VERIFIER.as_bytes()))
}

/// Query parameters of a URL.
pub fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect()
}

impl Bed {
    pub async fn get(&self, url: &str) -> Response {
        self.http.get(url).send().await.unwrap()
    }

    pub async fn get_json(&self, url: &str) -> (StatusCode, Value) {
        let r = self.get(url).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self.http.post(url).form(form).send().await.unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Register a public client by DCR; returns the registration answer.
    pub async fn register(&self, extra: Value) -> Value {
        let mut body = json!({
            "redirect_uris": ["http://127.0.0.1/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "harness",
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = self
            .http
            .post(self.tb.endpoint_url("register"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "registration");
        r.json().await.unwrap()
    }

    /// The authorization redirect for `client_id` with S256 PKCE; returns the
    /// `Location` query parameters.
    pub async fn authorize(
        &self,
        client_id: &str,
        extra: &[(&str, &str)],
    ) -> HashMap<String, String> {
        let r = self.authorize_raw(client_id, extra).await;
        assert_eq!(r.status(), StatusCode::FOUND, "authorize redirects");
        let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
        assert!(
            location.starts_with("http://127.0.0.1:9/callback?"),
            "{location}"
        );
        query(&location)
    }

    pub async fn authorize_raw(&self, client_id: &str, extra: &[(&str, &str)]) -> Response {
        let challenge = challenge_s256();
        let resource = self.tb.resource().to_owned();
        let mut params: Vec<(&str, &str)> = vec![
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "st4te"),
            ("resource", &resource),
            ("scope", "mcp:tools"),
        ];
        for (k, v) in extra {
            params.retain(|(pk, _)| pk != k);
            if !v.is_empty() {
                params.push((k, v));
            }
        }
        let url = url::Url::parse_with_params(&self.tb.endpoint_url("authorize"), &params).unwrap();
        self.get(url.as_str()).await
    }

    /// Exchange a code for tokens as a public client.
    pub async fn exchange(&self, client_id: &str, code: &str) -> (StatusCode, Value) {
        let resource = self.tb.resource().to_owned();
        self.post_form(
            &self.tb.endpoint_url("token"),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", client_id),
                ("resource", &resource),
            ],
        )
        .await
    }

    /// DCR + authorize + exchange: a public client with tokens.
    pub async fn login(&self) -> (String, Value) {
        let reg = self.register(json!({})).await;
        let id = reg["client_id"].as_str().unwrap().to_owned();
        let q = self.authorize(&id, &[]).await;
        let (status, tokens) = self.exchange(&id, &q["code"]).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        (id, tokens)
    }

    pub async fn refresh(&self, client_id: &str, rt: &str) -> (StatusCode, Value) {
        let resource = self.tb.resource().to_owned();
        self.post_form(
            &self.tb.endpoint_url("token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", client_id),
                ("resource", &resource),
            ],
        )
        .await
    }

    /// POST one JSON-RPC message to the MCP endpoint.
    pub async fn mcp_post(
        &self,
        token: Option<&str>,
        session: Option<&str>,
        body: Value,
    ) -> Response {
        let mut req = self
            .http
            .post(self.tb.mcp_url())
            .header(header::ACCEPT, "application/json, text/event-stream")
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(s) = session {
            req = req
                .header("mcp-session-id", s)
                .header("mcp-protocol-version", "2025-11-25");
        }
        req.send().await.unwrap()
    }

    /// initialize + notifications/initialized; returns the session id.
    pub async fn mcp_session(&self, token: &str) -> String {
        self.mcp_session_with(Some(token), "keyway-testbed").await
    }

    /// A session with the server named `server_name`, with or without a token.
    pub async fn mcp_session_with(&self, token: Option<&str>, server_name: &str) -> String {
        let r = self
            .mcp_post(
                token,
                None,
                json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                    "protocolVersion":"2025-11-25","capabilities":{},
                    "clientInfo":{"name":"harness","version":"0"}}}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let session = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let init = rpc_result(r).await;
        assert_eq!(init["result"]["serverInfo"]["name"], server_name);
        let r = self
            .mcp_post(
                token,
                Some(&session),
                json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        session
    }

    pub async fn call_tool(&self, token: &str, session: &str, tool: &str, args: Value) -> Response {
        self.mcp_post(
            Some(token),
            Some(session),
            json!({"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":tool,"arguments":args}}),
        )
        .await
    }
}

/// The JSON-RPC response in an answer that may be JSON or an event stream.
pub async fn rpc_result(r: Response) -> Value {
    let sse = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap();
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v.get("id").is_some())
        .expect("a JSON-RPC response in the stream")
}

/// Parse a `WWW-Authenticate: Bearer k="v", ...` value into its parameters (the
/// testbed writes simple quoted values).
pub fn bearer_params(r: &Response) -> HashMap<String, String> {
    let v = r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap();
    let rest = v.strip_prefix("Bearer").unwrap().trim();
    rest.split("\", ")
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            (k.trim().to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}
