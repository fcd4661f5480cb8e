//! What MCP 2026-07-28 ("modern", per-request metadata) asks of a Streamable HTTP
//! client beyond the body, decided without I/O: the request metadata headers
//! (`MCP-Protocol-Version`, `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*` from a tool's
//! `x-mcp-header` annotations), their value encoding, which tools to drop for invalid
//! annotations, and which JSON-RPC errors identify a modern server.
//!
//! rmcp 3.11 has the same rules in `transport::common::mcp_headers`, but they are
//! `pub(crate)` and tied to its own HTTP client; keyway's wire (hyper) needs them on
//! raw messages it forwards as well as on rmcp's.

use std::collections::HashMap;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::wire::Message;
use crate::auth::callback::printable;

/// The revision with per-request metadata that keyway speaks.
pub const MODERN_VERSION: &str = "2026-07-28";

/// `_meta` key of the protocol revision a modern request uses.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities on a modern request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the client's name and version on a modern request.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";

/// `_meta` key of the log level a modern request asks for.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";

/// The `_meta` keys of modern request metadata: what a server of the handshake
/// revisions must not get (its wire would take the request for a modern one).
pub const REQUEST_METADATA: [&str; 4] = [
    META_PROTOCOL_VERSION,
    META_CLIENT_CAPABILITIES,
    META_CLIENT_INFO,
    META_LOG_LEVEL,
];

/// `params` without the modern request metadata in their `_meta` (the rest of it,
/// a progress token say, stays).
pub fn strip_request_metadata(params: &mut serde_json::Value) {
    if let Some(meta) = params
        .get_mut("_meta")
        .and_then(serde_json::Value::as_object_mut)
    {
        meta.retain(|k, _| !REQUEST_METADATA.contains(&k.as_str()));
    }
}

/// The caching hints a 2026-07-28 list or `resources/read` result must carry, where
/// it has none (a handshake server's, or the gateway's own merged lists): not to be
/// kept, and not to be shared.
pub fn add_caching_hints(result: &mut serde_json::Value) {
    if let Some(r) = result.as_object_mut() {
        r.entry("ttlMs").or_insert(serde_json::json!(0));
        r.entry("cacheScope")
            .or_insert(serde_json::json!("private"));
    }
}

/// Whether a 2026-07-28 result of `method` carries caching hints.
pub fn takes_caching_hints(method: &str) -> bool {
    matches!(
        method,
        "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// A handshake server's own request (`elicitation/create`, ...) as a 2026-07-28 input
/// request: its method and params, less the server's progress token for it (nothing
/// the client could report on).
pub fn input_request(request: &serde_json::Value) -> serde_json::Value {
    let mut q = serde_json::json!({"method": request.get("method")});
    if let Some(p) = request.get("params") {
        let mut p = p.clone();
        if let Some(meta) = p
            .get_mut("_meta")
            .and_then(serde_json::Value::as_object_mut)
        {
            meta.remove("progressToken");
            if meta.is_empty()
                && let Some(o) = p.as_object_mut()
            {
                o.remove("_meta");
            }
        }
        q["params"] = p;
    }
    q
}

/// `_meta` key of the subscription a `subscriptions/listen` notification belongs to.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The list-change filters of `subscriptions/listen`: the filter's field, the
/// notification it lets through, and the capability a server offers it under.
pub const LIST_CHANGES: &[(&str, &str, &str)] = &[
    (
        "toolsListChanged",
        "notifications/tools/list_changed",
        "tools",
    ),
    (
        "promptsListChanged",
        "notifications/prompts/list_changed",
        "prompts",
    ),
    (
        "resourcesListChanged",
        "notifications/resources/list_changed",
        "resources",
    ),
];

/// Most resources one `subscriptions/listen` may name (keyway follows each at the
/// server).
pub const MAX_LISTEN_RESOURCES: usize = 100;

/// How long keyway keeps a server's request waiting for a 2026-07-28 client to come
/// back with its answers (a multi round-trip round keyway made of it).
pub const PARK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Such rounds waiting for their clients at once; beyond, a server's question is
/// refused.
pub const MAX_WAITING_ROUNDS: usize = 256;

/// A server's questions queued for one request at once; beyond, they are refused.
pub const MAX_QUEUED_QUESTIONS: usize = 16;

/// The prefix of the `requestState`s keyway issues for such rounds.
pub const ROUND_STATE: &str = "keyway-round-";

/// The client capability a server's request (an input request) needs.
pub fn input_capability(method: &str) -> Option<&'static str> {
    match method {
        "elicitation/create" => Some("elicitation"),
        "sampling/createMessage" => Some("sampling"),
        "roots/list" => Some("roots"),
        _ => None,
    }
}

/// What a request is about: the tool or prompt it names, or the resource (a
/// round's retry must be about the same).
pub fn request_subject(params: &serde_json::Value) -> Option<String> {
    params
        .get("name")
        .or_else(|| params.get("uri"))
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
}

/// Tag a notification with the subscription it is sent on.
pub fn tag_subscription(notification: &mut serde_json::Value, id: &serde_json::Value) {
    if !notification
        .get("params")
        .is_some_and(serde_json::Value::is_object)
    {
        notification["params"] = serde_json::json!({});
    }
    let params = &mut notification["params"];
    if !params
        .get("_meta")
        .is_some_and(serde_json::Value::is_object)
    {
        params["_meta"] = serde_json::json!({});
    }
    params["_meta"][META_SUBSCRIPTION_ID] = id.clone();
}

/// The error for a `requestState` of keyway's that names no waiting round of the
/// request it came with.
pub fn unknown_round() -> serde_json::Value {
    serde_json::json!({"code": -32602, "message":
        "requestState was not issued by keyway for this request (tampered with, used twice, expired, or sent with another request): send the request again without it"})
}

/// `HeaderMismatch`: headers missing or not matching the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// `MissingRequiredClientCapability`.
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
/// `UnsupportedProtocolVersion`, with `data.supported`.
pub const UNSUPPORTED_VERSION: i64 = -32022;

const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

/// Whether a JSON-RPC error code is one only a modern server sends (so a 4xx carrying
/// it comes from a modern server, not a legacy one refusing an unknown request).
pub fn is_modern_error(code: i64) -> bool {
    matches!(
        code,
        HEADER_MISMATCH | MISSING_CLIENT_CAPABILITY | UNSUPPORTED_VERSION
    )
}

/// Whether a revision is a modern one (no `initialize`; dated revisions compare as
/// text).
pub fn is_modern(version: &str) -> bool {
    version >= MODERN_VERSION
}

/// Whether a message's text holds the `_meta` key of a modern request's revision (a
/// handshake-era message, which does not, costs one scan and no parse).
pub fn may_be_modern(message: &Message) -> bool {
    memchr::memmem::find(message.text().as_bytes(), META_PROTOCOL_VERSION.as_bytes()).is_some()
}

/// A header value as MCP 2026-07-28 "Value Encoding" writes it: as it is when it is
/// visible ASCII and spaces with none at either end (and not itself in the sentinel
/// form), else `=?base64?{UTF-8 in base64}?=`.
pub fn encode_value(text: &str) -> HeaderValue {
    let sentinel = text.starts_with("=?base64?") && text.ends_with("?=");
    let plain = text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || (0x21..=0x7e).contains(&b))
        && !text.starts_with([' ', '\t'])
        && !text.ends_with([' ', '\t'])
        && !sentinel;
    let encoded;
    let out = if plain {
        text
    } else {
        encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
        );
        &encoded
    };
    // Visible ASCII, spaces and tabs, or base64 text: always a header value.
    HeaderValue::from_str(out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A header value as [`encode_value`] wrote it, read back: the text of the sentinel
/// form `=?base64?…?=`, or the value as it is. `None` when the sentinel form does not
/// hold base64 of UTF-8.
pub fn decode_value(value: &str) -> Option<String> {
    match value
        .strip_prefix("=?base64?")
        .and_then(|v| v.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok()),
        None => Some(value.trim_matches([' ', '\t']).to_owned()),
    }
}

/// One `x-mcp-header` annotation: the header's name part and where its value sits in
/// the arguments (a chain of `properties` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamHeader {
    header: HeaderName,
    path: Vec<String>,
}

/// The `x-mcp-header` annotations of the tools a server listed, by tool name.
#[derive(Clone, Debug, Default)]
pub struct ToolHeaders {
    by_tool: HashMap<String, Vec<ParamHeader>>,
    /// Tools left out of the last answer, with the reason.
    rejected: HashMap<String, InvalidAnnotation>,
    /// Whether a `tools/list` answer has been seen.
    listed: bool,
}

/// A tool left out of a `tools/list` answer, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedTool {
    /// The tool's name.
    pub name: String,
    /// What is wrong with its annotations.
    pub reason: InvalidAnnotation,
}

/// What makes a tool's `x-mcp-header` annotations invalid (MCP 2026-07-28, "Custom
/// Headers from Tool Parameters"). `at` is the property's path, dot-separated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidAnnotation {
    /// On the schema itself rather than a property.
    #[error("x-mcp-header annotates the schema root, not a property")]
    OnRoot,
    /// Under `items`, a composition, a condition or a `$ref`.
    #[error("an x-mcp-header sits off a chain of `properties` from the root")]
    OffChain,
    /// Not a string.
    #[error("property `{at}`: x-mcp-header is not a string")]
    NotString {
        /// The property's path.
        at: String,
    },
    /// The empty string.
    #[error("property `{at}`: x-mcp-header is empty")]
    Empty {
        /// The property's path.
        at: String,
    },
    /// Not an HTTP token.
    #[error("property `{at}`: x-mcp-header `{name}` is not an HTTP token")]
    NotToken {
        /// The property's path.
        at: String,
        /// The annotation's value.
        name: String,
    },
    /// Used by another property too (names compare case-insensitively).
    #[error("property `{at}`: x-mcp-header `{name}` is used twice")]
    Duplicate {
        /// The property's path.
        at: String,
        /// The annotation's value.
        name: String,
    },
    /// On a property that is not a string, integer or boolean.
    #[error("property `{at}`: x-mcp-header needs type string, integer or boolean")]
    NotPrimitive {
        /// The property's path.
        at: String,
    },
}

/// Tools per server that keyway remembers annotations for, at most (a hostile server
/// listing millions of tools does not grow memory without bound).
const MAX_TOOLS: usize = 10_000;

impl ToolHeaders {
    /// Learn the annotations of a `tools/list` result's tools, and take out the tools
    /// whose annotations are invalid (MCP 2026-07-28: a client on Streamable HTTP must
    /// exclude them). Returns what was taken out.
    pub fn learn(&mut self, result: &mut Value) -> Vec<RejectedTool> {
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return Vec::new();
        };
        let mut rejected = Vec::new();
        self.listed = true;
        tools.retain(|tool| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
            let schema = tool.get("inputSchema");
            match schema.map(annotations).unwrap_or(Ok(Vec::new())) {
                Ok(found) => {
                    if found.is_empty() {
                        self.by_tool.remove(name);
                    } else if self.by_tool.len() < MAX_TOOLS || self.by_tool.contains_key(name) {
                        self.by_tool.insert(name.to_owned(), found);
                    }
                    true
                }
                Err(reason) => {
                    if self.rejected.len() < MAX_TOOLS {
                        self.rejected.insert(name.to_owned(), reason.clone());
                    }
                    rejected.push(RejectedTool {
                        name: name.to_owned(),
                        reason,
                    });
                    self.by_tool.remove(name);
                    false
                }
            }
        });
        rejected
    }

    /// Whether a `tools/list` answer has been seen (so the annotations are known).
    pub fn listed(&self) -> bool {
        self.listed
    }

    /// Why `tool` was left out of a `tools/list` answer, if it was.
    pub fn rejected(&self, tool: &str) -> Option<&InvalidAnnotation> {
        self.rejected.get(tool)
    }

    /// Whether `tool` has arguments that go into headers.
    pub fn annotated(&self, tool: &str) -> bool {
        self.by_tool
            .get(tool)
            .is_some_and(|found| !found.is_empty())
    }

    /// The `Mcp-Param-*` headers of a `tools/call` with these `arguments`: one per
    /// annotated property that has a value there (a null or absent one has none).
    pub fn headers(&self, tool: &str, arguments: Option<&Value>) -> Vec<(HeaderName, HeaderValue)> {
        let Some(found) = self.by_tool.get(tool) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(found.len());
        for p in found {
            let mut at = arguments;
            for key in &p.path {
                at = at.and_then(|v| v.get(key));
            }
            let text = match at {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::Number(n)) => n.to_string(),
                _ => continue,
            };
            out.push((p.header.clone(), encode_value(&text)));
        }
        out
    }
}

/// A tool input schema's `x-mcp-header` annotations, or why they are invalid.
fn annotations(schema: &Value) -> Result<Vec<ParamHeader>, InvalidAnnotation> {
    if schema.get("x-mcp-header").is_some() {
        return Err(InvalidAnnotation::OnRoot);
    }
    let mut found = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    walk(schema, &mut Vec::new(), &mut found, &mut seen)?;
    if stray(schema, true) {
        return Err(InvalidAnnotation::OffChain);
    }
    Ok(found)
}

/// Every annotation on a `properties` chain from `schema`.
fn walk(
    schema: &Value,
    path: &mut Vec<String>,
    found: &mut Vec<ParamHeader>,
    seen: &mut Vec<String>,
) -> Result<(), InvalidAnnotation> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, prop) in props {
        path.push(key.clone());
        if let Some(h) = prop.get("x-mcp-header") {
            // The server's own words, shown in errors: printable and bounded.
            let at = printable(&path.join("."));
            let Some(name) = h.as_str() else {
                return Err(InvalidAnnotation::NotString { at });
            };
            if name.is_empty() {
                return Err(InvalidAnnotation::Empty { at });
            }
            let token = name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let header = HeaderName::try_from(format!("mcp-param-{name}"));
            let (true, Ok(header)) = (token, header) else {
                let name = printable(name);
                return Err(InvalidAnnotation::NotToken { at, name });
            };
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                let name = printable(name);
                return Err(InvalidAnnotation::Duplicate { at, name });
            }
            let primitive = match prop.get("type") {
                Some(Value::String(t)) => matches!(t.as_str(), "string" | "integer" | "boolean"),
                _ => false,
            };
            if !primitive {
                return Err(InvalidAnnotation::NotPrimitive { at });
            }
            seen.push(lower);
            found.push(ParamHeader {
                header,
                path: path.clone(),
            });
        }
        walk(prop, path, found, seen)?;
        path.pop();
    }
    Ok(())
}

/// Whether an `x-mcp-header` appears anywhere but on a property reached by
/// `properties` keys alone (`on_chain`: `schema` is such a property or the root).
fn stray(schema: &Value, on_chain: bool) -> bool {
    match schema {
        Value::Object(map) => map.iter().any(|(k, v)| match k.as_str() {
            "x-mcp-header" => !on_chain,
            "properties" => match v.as_object() {
                Some(props) if on_chain => props.values().any(|p| stray(p, true)),
                Some(props) => props.values().any(|p| stray(p, false)),
                None => stray(v, false),
            },
            _ => stray(v, false),
        }),
        Value::Array(items) => items.iter().any(|v| stray(v, false)),
        _ => false,
    }
}

/// The headers of a modern request on Streamable HTTP, or `None` for a request that
/// declares no revision in `params._meta` (a handshake-era one): `MCP-Protocol-Version`
/// (as its `_meta` says), `Mcp-Method`, `Mcp-Name` for the methods that name
/// something, and `Mcp-Param-*` for a `tools/call` of an annotated tool. The message
/// is parsed once; [`may_be_modern`] tells first, without parsing, whether to.
pub fn request_headers(
    message: &Message,
    tools: &ToolHeaders,
) -> Option<Vec<(HeaderName, HeaderValue)>> {
    use serde_json::value::RawValue;
    /// The members read, each as raw text: the rest of the message is skipped, not
    /// built into values (a tool's arguments can be most of it).
    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        params: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(rename = "_meta", borrow)]
        meta: Option<&'a RawValue>,
        #[serde(borrow)]
        name: Option<&'a RawValue>,
        #[serde(borrow)]
        uri: Option<&'a RawValue>,
        #[serde(borrow)]
        arguments: Option<&'a RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Meta<'a> {
        #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
        version: Option<&'a RawValue>,
    }
    /// A raw member that is a string, unescaped.
    fn string(raw: Option<&RawValue>) -> Option<std::borrow::Cow<'_, str>> {
        serde_json::from_str(raw?.get()).ok()
    }
    let request: Request<'_> = serde_json::from_str(message.text()).ok()?;
    // A `params` or `_meta` that is not an object declares no revision.
    let params: Params<'_> = serde_json::from_str(request.params?.get()).ok()?;
    let meta: Meta<'_> = serde_json::from_str(params.meta?.get()).ok()?;
    let version = string(meta.version)?;
    let mut out = Vec::with_capacity(4);
    // A revision is a date: anything but visible ASCII is not one (and would not be
    // a header a server can read).
    if version.bytes().all(|b| b.is_ascii_graphic())
        && let Ok(v) = HeaderValue::from_str(&version)
    {
        out.push((HeaderName::from_static("mcp-protocol-version"), v));
    }
    let Some(method) = message.method() else {
        return Some(out);
    };
    out.push((MCP_METHOD, encode_value(method)));
    let named = match method {
        "tools/call" | "prompts/get" => params.name,
        "resources/read" => params.uri,
        _ => None,
    };
    if let Some(name) = string(named) {
        out.push((MCP_NAME, encode_value(&name)));
        if method == "tools/call" && tools.annotated(&name) {
            let arguments: Option<Value> = params
                .arguments
                .and_then(|a| serde_json::from_str(a.get()).ok());
            out.extend(tools.headers(&name, arguments.as_ref()));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_encoded_as_the_spec_examples_show() {
        assert_eq!(encode_value("us-west1"), "us-west1");
        assert_eq!(
            encode_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(encode_value(" padded "), "=?base64?IHBhZGRlZCA=?=");
        for text in ["us-west1", "Hello, 世界", " padded ", "=?base64?literal?="] {
            let sent = encode_value(text);
            assert_eq!(decode_value(sent.to_str().unwrap()).as_deref(), Some(text));
        }
        assert_eq!(decode_value("=?base64?not base64!?="), None);
        assert_eq!(encode_value("line1\nline2"), "=?base64?bGluZTEKbGluZTI=?=");
        assert_eq!(
            encode_value("=?base64?literal?="),
            "=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?="
        );
    }

    fn list(tools: Value) -> Value {
        json!({ "tools": tools })
    }

    #[test]
    fn a_revision_that_is_not_visible_ascii_sends_no_version_header() {
        // Found by fuzz/ gateway_message: obs-text is a valid header value to http,
        // but no revision, and not one a server can read as text.
        for (version, sent) in [("2026-07-28", true), ("2026-07-28é", false), ("a b", false)] {
            let text = json!({"jsonrpc": "2.0", "id": 1, "method": "ping",
                "params": {"_meta": {META_PROTOCOL_VERSION: version}}})
            .to_string();
            let headers =
                request_headers(&Message::parse(text).unwrap(), &ToolHeaders::default()).unwrap();
            let has = headers.iter().any(|(n, _)| n == "mcp-protocol-version");
            assert_eq!(has, sent, "{version}");
            assert!(headers.iter().all(|(_, v)| v.to_str().is_ok()));
        }
    }

    #[test]
    fn invalid_annotations_drop_their_tool_and_keep_the_rest() {
        let mut result = list(json!([
            {"name": "ok", "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "x-mcp-header": "Region"},
                "nested": {"type": "object", "properties": {
                    "n": {"type": "integer", "x-mcp-header": "N"}}}}}},
            {"name": "empty", "inputSchema": {"properties": {"a": {"type": "string", "x-mcp-header": ""}}}},
            {"name": "number", "inputSchema": {"properties": {"a": {"type": "number", "x-mcp-header": "A"}}}},
            {"name": "dup", "inputSchema": {"properties": {
                "a": {"type": "string", "x-mcp-header": "X"},
                "b": {"type": "string", "x-mcp-header": "x"}}}},
            {"name": "space", "inputSchema": {"properties": {"a": {"type": "string", "x-mcp-header": "A B"}}}},
            {"name": "items", "inputSchema": {"properties": {"a": {"type": "array",
                "items": {"type": "string", "x-mcp-header": "I"}}}}},
            {"name": "oneof", "inputSchema": {"oneOf": [{"properties": {"a": {"type": "string", "x-mcp-header": "O"}}}]}},
            {"name": "root", "inputSchema": {"x-mcp-header": "R"}},
            {"name": "plain", "inputSchema": {"type": "object"}}
        ]));
        let mut tools = ToolHeaders::default();
        let rejected = tools.learn(&mut result);
        let names: Vec<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            rejected[0].reason,
            InvalidAnnotation::Empty { at: "a".into() }
        );
        assert_eq!(rejected[6].reason, InvalidAnnotation::OnRoot);
        assert_eq!(rejected[4].reason, InvalidAnnotation::OffChain);
        assert_eq!(
            tools.rejected("dup").map(|r| r.to_string()).as_deref(),
            Some("property `b`: x-mcp-header `x` is used twice")
        );
        assert_eq!(
            names,
            ["empty", "number", "dup", "space", "items", "oneof", "root"]
        );
        let kept: Vec<&str> = result["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["ok", "plain"]);

        let h = tools.headers("ok", Some(&json!({"region": "eu", "nested": {"n": 42}})));
        assert_eq!(h.len(), 2);
        assert!(h.contains(&(
            HeaderName::from_static("mcp-param-region"),
            HeaderValue::from_static("eu")
        )));
        assert!(h.contains(&(
            HeaderName::from_static("mcp-param-n"),
            HeaderValue::from_static("42")
        )));
        // Null or absent: no header.
        assert!(
            tools
                .headers("ok", Some(&json!({"region": null})))
                .is_empty()
        );
        assert!(tools.headers("plain", Some(&json!({"a": 1}))).is_empty());
    }

    #[test]
    fn a_modern_request_names_its_method_and_target() {
        let m = Message::parse(
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                "params": {"uri": "file:///ä", "_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}})
            .to_string(),
        )
        .unwrap();
        let h = request_headers(&m, &ToolHeaders::default()).unwrap();
        let get = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("mcp-protocol-version").unwrap(), "2026-07-28");
        assert_eq!(get("mcp-method").unwrap(), "resources/read");
        assert_eq!(get("mcp-name").unwrap(), "=?base64?ZmlsZTovLy/DpA==?=");

        let legacy =
            Message::parse(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#.into()).unwrap();
        assert_eq!(request_headers(&legacy, &ToolHeaders::default()), None);
    }
}
