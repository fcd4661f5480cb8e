//! The direct client's own authorization, the shortest path the MCP authorization spec
//! allows: the 401's resource metadata, the authorization server's metadata, dynamic
//! registration, an authorization request with PKCE S256 whose redirect is read rather
//! than followed (the testbed approves at once), and the code exchange.

use anyhow::{Context, Result, anyhow, bail};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::Rng;
use reqwest::header::{LOCATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::Url;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// An access token for the MCP server at `mcp_url`.
pub async fn authorize(http: &reqwest::Client, mcp_url: &str) -> Result<String> {
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    // 1. The challenge names the protected resource metadata.
    let resp = http
        .post(mcp_url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": crate::initialize_params()}))
        .send()
        .await?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        bail!("expected 401 from {mcp_url}, got {}", resp.status());
    }
    let challenge = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let prm_url = challenge
        .split("resource_metadata=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow!("no resource_metadata in {challenge:?}"))?;
    let prm: Value = http.get(prm_url).send().await?.json().await?;
    let resource = prm["resource"].as_str().context("PRM without resource")?;
    let issuer = prm["authorization_servers"][0]
        .as_str()
        .context("PRM without authorization_servers")?;
    // 2. RFC 8414 metadata.
    let issuer_url = Url::parse(issuer)?;
    let mut meta_url = issuer_url.clone();
    let path = issuer_url.path().trim_end_matches('/');
    meta_url.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let meta: Value = http.get(meta_url).send().await?.json().await?;
    let endpoint = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("metadata without {name}"))
    };
    // 3. Dynamic registration.
    let reg: Value = http
        .post(endpoint("registration_endpoint")?)
        .json(&json!({
            "client_name": "keyway-bench direct client",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let client_id = reg["client_id"].as_str().context("no client_id")?;
    // 4. Authorization request with PKCE.
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let verifier = URL_SAFE_NO_PAD.encode(raw);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let mut auth_url = Url::parse(&endpoint("authorization_endpoint")?)?;
    auth_url
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", REDIRECT)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "bench")
        .append_pair("resource", resource);
    let resp = no_redirects.get(auth_url).send().await?;
    let location = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("the authorization endpoint did not redirect"))?;
    let code = Url::parse(location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| anyhow!("no code in the redirect"))?;
    // 5. The code exchange.
    let tokens: Value = http
        .post(endpoint("token_endpoint")?)
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("client_id", client_id),
            ("code_verifier", &verifier),
            ("resource", resource),
        ])
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    tokens["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("no access_token in the token response")
}
