//! Bounded metadata fetches: a size cap, a timeout, redirects followed only within
//! the same origin (re-checked at every hop), and every exchange recorded.

use std::time::Duration;

use reqwest::{StatusCode, header};
use serde_json::Value;
use url::Url;

use super::urls::UrlPolicy;

/// Largest metadata document keyway reads.
pub const MAX_METADATA_BYTES: usize = 512 * 1024;
/// Time for one metadata request.
pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REDIRECTS: usize = 3;

/// What one GET came back with.
#[derive(Debug)]
pub(crate) enum Fetched {
    /// 2xx with a JSON body.
    Json { status: u16, body: Value },
    /// An answer that is not usable JSON metadata.
    Status { status: u16, detail: String },
    /// No answer.
    Failed { detail: String },
}

pub(crate) async fn get_json(http: &reqwest::Client, url: &Url, policy: &UrlPolicy) -> Fetched {
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let sent = http
            .get(current.clone())
            .header(header::ACCEPT, "application/json")
            .header(
                "MCP-Protocol-Version",
                crate::mcp::PROTOCOL_VERSION.to_string(),
            )
            .timeout(METADATA_TIMEOUT)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                return Fetched::Failed {
                    detail: describe(&e),
                };
            }
        };
        let status = resp.status();
        if status.is_redirection() {
            let Some(next) = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| current.join(l).ok())
            else {
                return Fetched::Status {
                    status: status.as_u16(),
                    detail: "redirect without a usable Location".into(),
                };
            };
            if next.origin() != current.origin() {
                return Fetched::Status {
                    status: status.as_u16(),
                    detail: format!("redirects to another origin ({next}); not followed"),
                };
            }
            if let Err(e) = policy.check_url(&next) {
                return Fetched::Status {
                    status: status.as_u16(),
                    detail: e.to_string(),
                };
            }
            current = next;
            continue;
        }
        let body = match read_capped(resp, MAX_METADATA_BYTES).await {
            Ok(b) => b,
            Err(detail) => {
                return Fetched::Status {
                    status: status.as_u16(),
                    detail,
                };
            }
        };
        if status != StatusCode::OK {
            return Fetched::Status {
                status: status.as_u16(),
                detail: snippet(&body),
            };
        }
        return match crate::json::parse(&body) {
            Ok(v @ Value::Object(_)) => Fetched::Json {
                status: status.as_u16(),
                body: v,
            },
            Ok(_) => Fetched::Status {
                status: status.as_u16(),
                detail: "not a JSON object".into(),
            },
            Err(e) => Fetched::Status {
                status: status.as_u16(),
                detail: format!("not JSON: {e}"),
            },
        };
    }
    Fetched::Status {
        status: 0,
        detail: format!("more than {MAX_REDIRECTS} redirects"),
    }
}

/// Read a body, refusing more than `limit` bytes (whatever Content-Length says).
pub(crate) async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    crate::http::reply::Reply::from_reqwest(resp, None)
        .read_capped(limit)
        .await
        .map_err(|e| e.to_string())
}

pub(crate) use crate::http::reply::{describe, snippet};
