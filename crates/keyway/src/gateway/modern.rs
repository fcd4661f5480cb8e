//! The gateway as a server of MCP 2026-07-28 (per-request metadata, no session),
//! beside the handshake revisions: which generation a request is, the HTTP request
//! headers a 2026-07-28 request must carry and agree with, and the answer to
//! `server/discover`. No I/O here.

use axum::http::HeaderMap;
use serde_json::{Value, json};

use crate::mcp::modern::{HEADER_MISMATCH, META_PROTOCOL_VERSION, MODERN_VERSION, decode_value};

/// Every revision the gateway speaks downstream, newest first.
pub const SUPPORTED: [&str; 5] = [
    MODERN_VERSION,
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
];

/// The revision a request declares in `params._meta` (a 2026-07-28 request does;
/// a handshake-era one does not).
pub fn revision(params: &Value) -> Option<&str> {
    params.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()
}

/// The error for a request at a revision the gateway does not speak.
pub fn unsupported(requested: &str) -> Value {
    json!({
        "code": crate::mcp::modern::UNSUPPORTED_VERSION,
        "message": format!("protocol revision {requested} is not supported; use 2026-07-28 or the initialize handshake"),
        "data": {"supported": SUPPORTED, "requested": requested},
    })
}

/// Methods of the handshake revisions that 2026-07-28 has not: refused as unknown
/// when a 2026-07-28 request names them.
pub fn handshake_only(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "ping"
            | "logging/setLevel"
            | "resources/subscribe"
            | "resources/unsubscribe"
    )
}

pub use crate::mcp::modern::add_caching_hints;

/// A 2026-07-28 result says what it is: `resultType` (`complete` unless the server
/// said otherwise; a handshake server's results have none).
pub(crate) fn with_result_type(outcome: super::Outcome) -> super::Outcome {
    match outcome {
        super::Outcome::Built(mut v) => {
            if let Some(r) = v.as_object_mut() {
                r.entry("resultType").or_insert(json!("complete"));
            }
            super::Outcome::Built(v)
        }
        super::Outcome::Raw(raw) => {
            let text = raw.get();
            if memchr::memmem::find(text.as_bytes(), b"\"resultType\"").is_some() {
                return super::Outcome::Raw(raw);
            }
            // An object result gets the member first; anything else is left alone.
            let Some(rest) = text.trim_start().strip_prefix('{') else {
                return super::Outcome::Raw(raw);
            };
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            match serde_json::value::RawValue::from_string(format!(
                "{{\"resultType\":\"complete\"{sep}{rest}"
            )) {
                Ok(r) => super::Outcome::Raw(r),
                Err(_) => super::Outcome::Raw(raw),
            }
        }
    }
}

/// The methods a 2026-07-28 `input_required` result asks the client for (joined for
/// a message), or `None` for any other result.
pub(crate) fn input_wanted(result: &super::Outcome) -> Option<String> {
    let parsed;
    let value = match result {
        super::Outcome::Built(v) => v,
        super::Outcome::Raw(raw) => {
            // One scan before any parse: most results are not this.
            memchr::memmem::find(raw.get().as_bytes(), b"input_required")?;
            parsed = serde_json::from_str::<Value>(raw.get()).ok()?;
            &parsed
        }
    };
    if value.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let mut methods: Vec<&str> = value
        .get("inputRequests")
        .and_then(Value::as_object)
        .map(|q| {
            q.values()
                .filter_map(|r| r.get("method")?.as_str())
                .collect()
        })
        .unwrap_or_default();
    methods.sort_unstable();
    methods.dedup();
    Some(if methods.is_empty() {
        "another round".to_owned()
    } else {
        methods.join(", ")
    })
}

/// What the headers of a 2026-07-28 request over HTTP must say, checked against its
/// body (MCP 2026-07-28, Streamable HTTP "Standard headers"): `MCP-Protocol-Version`
/// as its `_meta` says, `Mcp-Method` its method, and `Mcp-Name` the tool or prompt
/// name, or the resource URI, of the requests that name one. `Err`: what disagrees,
/// for a -32020 `HeaderMismatch` error. A handshake-era request (no revision in its
/// `_meta`) must not claim 2026-07-28 in its header either.
pub fn check_headers(headers: &HeaderMap, message: &Value) -> Result<(), Value> {
    let header = |name: &str| headers.get(name).map(|v| v.to_str().map(decode_value));
    let params = message.get("params").unwrap_or(&Value::Null);
    let Some(declared) = revision(params) else {
        // A 2026-07-28 request by its header whose body lacks the metadata: invalid
        // params, as the revision says of a request missing its required `_meta`.
        return match header("mcp-protocol-version") {
            Some(Ok(Some(v))) if crate::mcp::modern::is_modern(&v) => Err(invalid_meta(format!(
                "MCP-Protocol-Version says {v}, but params._meta carries no {META_PROTOCOL_VERSION}"
            ))),
            _ => Ok(()),
        };
    };
    let agree = |name: &str, expected: &str| -> Result<(), Value> {
        match header(name) {
            None => Err(header_mismatch(format!("the {name} header is missing"))),
            Some(Err(_)) | Some(Ok(None)) => Err(header_mismatch(format!(
                "the {name} header is not readable"
            ))),
            Some(Ok(Some(v))) if v == expected => Ok(()),
            Some(Ok(Some(v))) => Err(header_mismatch(format!(
                "the {name} header says {v:?} where the body says {expected:?}"
            ))),
        }
    };
    agree("mcp-protocol-version", declared)?;
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return Ok(());
    };
    agree("mcp-method", method)?;
    let named = match method {
        "tools/call" | "prompts/get" => params.get("name"),
        "resources/read" => params.get("uri"),
        _ => None,
    };
    if let Some(name) = named.and_then(Value::as_str) {
        agree("mcp-name", name)?;
    }
    Ok(())
}

/// The JSON-RPC error object of a header check that failed.
pub fn header_mismatch(why: String) -> Value {
    json!({"code": HEADER_MISMATCH, "message": why})
}

/// The JSON-RPC error object of a 2026-07-28 request whose `_meta` lacks what the
/// revision requires.
pub fn invalid_meta(why: String) -> Value {
    json!({"code": -32602, "message": why})
}

/// What a 2026-07-28 request's `_meta` must hold beside its revision: the client's
/// capabilities (its name is a SHOULD, so it may be missing).
pub fn check_meta(params: &Value) -> Result<(), Value> {
    match params.pointer("/_meta/io.modelcontextprotocol~1clientCapabilities") {
        Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(invalid_meta(
            "params._meta io.modelcontextprotocol/clientCapabilities must be an object".into(),
        )),
        None => Err(invalid_meta(
            "params._meta must carry io.modelcontextprotocol/clientCapabilities".into(),
        )),
    }
}

/// The HTTP status of a 2026-07-28 answer carrying JSON-RPC error `code` (Streamable
/// HTTP, 2026-07-28): 404 for a method the server does not have, 400 for a request it
/// cannot take as it is, 200 for the rest.
pub fn error_status(code: i64) -> u16 {
    match code {
        -32601 => 404,
        -32700 | -32600 | -32602 | HEADER_MISMATCH | -32021 | -32022 => 400,
        _ => 200,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn call(name: &str) -> Value {
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": name, "arguments": {},
            "_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}})
    }

    #[test]
    fn the_headers_must_agree_with_the_body() {
        let good = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "a__echo"),
        ];
        assert_eq!(check_headers(&headers(&good), &call("a__echo")), Ok(()));
        // The name in the encoded form means the same.
        let encoded = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?w6Q=?="),
        ];
        assert_eq!(check_headers(&headers(&encoded), &call("ä")), Ok(()));
        for (missing, _) in good {
            let fewer: Vec<_> = good
                .iter()
                .copied()
                .filter(|(k, _)| *k != missing)
                .collect();
            let err = check_headers(&headers(&fewer), &call("a__echo")).unwrap_err();
            assert_eq!(err["code"], -32020);
            assert!(err["message"].as_str().unwrap().contains(missing), "{err}");
        }
        let wrong = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "a__other"),
        ];
        assert!(check_headers(&headers(&wrong), &call("a__echo")).is_err());
        let wrong_method = [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/list"),
            ("mcp-name", "a__echo"),
        ];
        assert!(check_headers(&headers(&wrong_method), &call("a__echo")).is_err());
        // A handshake request has nothing to agree with, unless it claims 2026-07-28.
        let old = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
        assert_eq!(
            check_headers(&headers(&[("mcp-protocol-version", "2025-11-25")]), &old),
            Ok(())
        );
        let lacking = check_headers(&headers(&[("mcp-protocol-version", "2026-07-28")]), &old);
        assert_eq!(
            lacking.unwrap_err()["code"],
            -32602,
            "missing _meta is invalid params"
        );
    }

    #[test]
    fn the_meta_needs_the_client_capabilities_not_its_name() {
        assert!(
            check_meta(&json!({"_meta": {"io.modelcontextprotocol/clientCapabilities": {}}}))
                .is_ok()
        );
        assert_eq!(
            check_meta(&json!({"_meta": {}})).unwrap_err()["code"],
            -32602
        );
        assert_eq!(error_status(-32601), 404);
        assert_eq!(error_status(-32022), 400);
        assert_eq!(error_status(-32603), 200);
    }

    #[test]
    fn a_2026_result_says_it_is_complete_unless_it_says_otherwise() {
        use crate::gateway::Outcome;
        let raw =
            |t: &str| Outcome::Raw(serde_json::value::RawValue::from_string(t.into()).unwrap());
        let text = |o: Outcome| match o {
            Outcome::Raw(r) => serde_json::from_str::<Value>(r.get()).unwrap(),
            Outcome::Built(v) => v,
        };
        assert_eq!(
            text(with_result_type(raw(r#"{"content":[]}"#))),
            json!({"resultType": "complete", "content": []})
        );
        assert_eq!(
            text(with_result_type(raw("{}"))),
            json!({"resultType": "complete"})
        );
        let asks = r#"{"resultType":"input_required","requestState":"s"}"#;
        assert_eq!(
            text(with_result_type(raw(asks))),
            serde_json::from_str::<Value>(asks).unwrap()
        );
        assert_eq!(
            text(with_result_type(Outcome::Built(json!({"tools": []}))))["resultType"],
            "complete"
        );
    }

    #[test]
    fn a_request_declares_its_revision_in_meta() {
        assert_eq!(revision(&call("x")["params"]), Some("2026-07-28"));
        assert_eq!(revision(&json!({"name": "x"})), None);
        assert_eq!(
            revision(&json!({"_meta": {META_PROTOCOL_VERSION: 7}})),
            None
        );
        let e = unsupported("2099-01-01");
        assert_eq!(e["code"], -32022);
        assert_eq!(e["data"]["supported"][0], "2026-07-28");
    }
}
