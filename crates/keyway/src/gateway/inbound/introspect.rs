//! Access tokens the gateway cannot read itself (opaque ones), asked about at the
//! authorization server's introspection endpoint (RFC 7662), as a client of its own.
//! Answers are kept for [`KEEP_FOR`] (an inactive token never becomes active; an
//! active one is still checked against its `exp` on every request), so a person's
//! requests cost one introspection per half minute, not one each.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, SystemTime},
};

use reqwest::header;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use url::Url;

use super::Rejection;
use crate::auth::{
    OAuthClient,
    fetch::{METADATA_TIMEOUT, describe, read_capped},
};

/// How long an answer is kept.
pub const KEEP_FOR: Duration = Duration::from_secs(30);
/// The most answers kept.
const MAX_KEPT: usize = 10_000;
/// The largest introspection answer read.
const MAX_ANSWER: usize = 64 * 1024;
/// Introspection requests under way at once: tokens nobody has seen make one each,
/// and strangers can send those; the server is not to be flooded on their account.
const AT_ONCE: usize = 8;

/// The gateway's client at the introspection endpoint.
#[derive(Debug)]
pub struct Introspector {
    http: reqwest::Client,
    endpoint: Url,
    client: OAuthClient,
    kept: std::sync::Mutex<HashMap<[u8; 32], Kept>>,
    at_once: tokio::sync::Semaphore,
    calls: AtomicU64,
}

#[derive(Debug)]
struct Kept {
    /// `None`: the server said the token is not active.
    claims: Option<Map<String, Value>>,
    until: Instant,
}

impl Introspector {
    /// Ask `endpoint`, authenticating as `client`.
    pub fn new(http: reqwest::Client, endpoint: Url, client: OAuthClient) -> Self {
        Self {
            http,
            endpoint,
            client,
            kept: Default::default(),
            at_once: tokio::sync::Semaphore::new(AT_ONCE),
            calls: AtomicU64::new(0),
        }
    }

    /// How many introspection requests were sent.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The claims of an active `token` (at `now`, for a client assertion's dates).
    pub async fn claims(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Map<String, Value>, Rejection> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(kept) = self.lock().get(&key)
            && kept.until > Instant::now()
        {
            return kept.claims.clone().ok_or(Rejection::Inactive);
        }
        let claims = {
            // Never closed, so acquiring fails only if it were.
            let _turn = self
                .at_once
                .acquire()
                .await
                .map_err(|_| Rejection::Unavailable("introspection closed".into()))?;
            self.ask(token, now).await?
        };
        {
            let mut kept = self.lock();
            if kept.len() >= MAX_KEPT {
                // Make room: the lapsed answers first, then the refusals (junk
                // tokens), and only then the people's.
                let now = Instant::now();
                kept.retain(|_, k| k.until > now);
                if kept.len() >= MAX_KEPT {
                    kept.retain(|_, k| k.claims.is_some());
                }
                if kept.len() >= MAX_KEPT {
                    kept.clear();
                }
            }
            kept.insert(
                key,
                Kept {
                    claims: claims.clone(),
                    until: Instant::now() + KEEP_FOR,
                },
            );
        }
        claims.ok_or(Rejection::Inactive)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Kept>> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One introspection request: `Some(claims)` for an active token, `None` for
    /// one the server says is not.
    async fn ask(
        &self,
        token: &str,
        now: SystemTime,
    ) -> Result<Option<Map<String, Value>>, Rejection> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let unavailable = |detail: String| {
            Rejection::Unavailable(format!("introspection at {}: {detail}", self.endpoint))
        };
        let mut form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let req = self
            .http
            .post(self.endpoint.clone())
            .header(header::ACCEPT, "application/json")
            .timeout(METADATA_TIMEOUT);
        let req = self
            .client
            .authenticate(req, &mut form, self.endpoint.as_str(), now)
            .map_err(|e| unavailable(e.to_string()))?;
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        let status = resp.status();
        let body = read_capped(resp, MAX_ANSWER).await.map_err(unavailable)?;
        if !status.is_success() {
            return Err(unavailable(format!(
                "HTTP {}: {}",
                status.as_u16(),
                crate::auth::fetch::snippet(&body)
            )));
        }
        let answer: Map<String, Value> = crate::json::parse(&body)
            .ok()
            .and_then(|v| match v {
                Value::Object(m) => Some(m),
                _ => None,
            })
            .ok_or_else(|| unavailable("the answer is not a JSON object".into()))?;
        match answer.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => return Ok(None),
            _ => return Err(unavailable("the answer has no boolean \"active\"".into())),
        }
        // `token_type_hint` is only a hint: a server may answer for a refresh or ID
        // token it was given instead (Hydra's `token_use`, Keycloak's `typ`).
        let text = |k: &str| answer.get(k).and_then(Value::as_str);
        let other_use = text("token_use").is_some_and(|u| u != "access_token")
            || text("typ").is_some_and(|t| {
                matches!(
                    t.to_ascii_lowercase().as_str(),
                    "refresh" | "offline" | "id"
                )
            })
            || text("token_type").is_some_and(|t| t.eq_ignore_ascii_case("refresh_token"));
        if other_use {
            return Err(Rejection::NotAccessToken);
        }
        Ok(Some(answer))
    }
}
