//! The fuzz targets' entry points (`fuzz/`, and the corpus replay in
//! `tests/fuzz_corpus.rs`): each takes bytes a remote server or a local client could
//! send, runs them through the code keyway reads them with, and checks what must hold
//! whatever they are. A broken property panics; that is the finding. Not a stable API.
//!
//! The properties, beyond "no panic, no hang, no unbounded memory":
//! - what a refusal shows is printable and short (a hostile server cannot put
//!   terminal escapes or megabytes into a person's terminal or log);
//! - a successful token or registration answer never shows its secrets in an error;
//! - a parser fed the same bytes in any pieces reads the same (event streams, stdin);
//! - what keyway accepts obeys its rules (a public server's endpoints are https on
//!   public hosts; a code is taken only with this flow's single `state`).

use std::sync::LazyLock;

use serde_json::Value;
use url::Url;

use crate::{
    auth::{
        callback::{self, CallbackParams, Expected, Verdict},
        challenge, device,
        discovery::{self, AuthTarget, DiscoveryReport, MetadataSource},
        dpop::{self, DpopMode, ResourceSignal},
        registration::{self, ClientOptions},
        token,
        urls::{self, HostClass, UrlPolicy},
    },
    mcp::{modern, sse, wire::Message},
    stdio::{Line, LineSplitter},
};

/// One target: bytes in; a panic is a broken property.
pub type Target = fn(&[u8]);

/// Every target, by the name its `fuzz/fuzz_targets/NAME.rs` and corpus use.
pub const TARGETS: &[(&str, Target)] = &[
    ("www_authenticate", www_authenticate),
    ("resource_metadata", resource_metadata),
    ("server_metadata", server_metadata),
    ("registration_answer", registration_answer),
    ("token_answer", token_answer),
    ("callback_query", callback_query),
    ("event_stream", event_stream),
    ("bridge_line", bridge_line),
    ("gateway_message", gateway_message),
];

/// The MCP server the documents are fetched for.
static MCP_URL: LazyLock<Url> = LazyLock::new(|| parse_url("https://mcp.example.com/mcp"));
const ISSUER: &str = "https://as.example.com";

fn parse_url(text: &str) -> Url {
    match Url::parse(text) {
        Ok(u) => u,
        Err(e) => panic!("the fuzz targets' own URL {text}: {e}"),
    }
}

/// Text keyway shows a person (an error, a refusal): printable, and short.
fn shown(what: &str, text: &str) {
    assert!(
        !text.chars().any(crate::text::unshowable),
        "{what} shows a control or format character: {text:?}"
    );
    assert!(
        text.len() <= 4096,
        "{what} shows {} bytes of the peer's text",
        text.len()
    );
}

/// The first byte of `data` as a small choice, and the rest.
fn choose(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((first, rest)) => (*first, rest),
        None => (0, data),
    }
}

/// `WWW-Authenticate` values, one per line of `data`: every challenge parsed, and the
/// readings keyway makes of them agree with each other.
pub fn www_authenticate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let values: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let values_str = || values.iter().map(String::as_str);
    let all = challenge::parse(values_str());
    for c in &all {
        assert!(!c.scheme.is_empty(), "a challenge without a scheme");
        assert_eq!(
            c.scheme,
            c.scheme.to_ascii_lowercase(),
            "schemes are lowercased"
        );
        for (name, _) in &c.params {
            assert!(!name.is_empty(), "a parameter without a name");
            assert_eq!(*name, name.to_ascii_lowercase(), "names are lowercased");
        }
        // Written out again in the standard's form, a challenge reads the same.
        if c.token68.is_none() {
            let mut again = c.scheme.clone();
            for (i, (name, value)) in c.params.iter().enumerate() {
                let quoted = value.replace('\\', "\\\\").replace('"', "\\\"");
                again.push_str(if i == 0 { " " } else { ", " });
                again.push_str(&format!("{name}=\"{quoted}\""));
            }
            let reread = challenge::parse([again.as_str()]);
            assert_eq!(reread.len(), 1, "{again:?} read as {reread:?}");
            assert_eq!(reread[0], *c, "{again:?}");
        }
    }
    let bearer = challenge::bearer(values_str());
    let has = |scheme: &str| all.iter().any(|c| c.scheme == scheme);
    assert_eq!(bearer.is_some(), has("bearer") || has("dpop"));
    let dpop = challenge::dpop(values_str());
    assert_eq!(dpop.is_some(), has("dpop"));
    if challenge::dpop_only(values_str()) {
        assert!(dpop.is_some() && !has("bearer"));
    }
    if challenge::asks_dpop_nonce(values_str()) {
        assert!(dpop.is_some());
    }
    let signal = ResourceSignal::read(&values, None);
    if signal.demands.is_some() {
        assert!(signal.offers);
    }
    for mode in [DpopMode::Auto, DpopMode::Always, DpopMode::Never] {
        if let Err(e) = dpop::decide(mode, Some(&["ES256".to_owned()]), &signal) {
            shown("a DPoP refusal", &e.to_string());
        }
    }
}

/// A protected resource metadata document (RFC 9728) fetched for the MCP server.
pub fn resource_metadata(data: &[u8]) {
    let Ok(body) = crate::json::parse(data) else {
        return;
    };
    match discovery::read_resource_metadata(&body, &MCP_URL) {
        Ok(m) => {
            assert!(urls::resource_matches(&m.resource, &MCP_URL));
            assert!(!m.authorization_servers.is_empty());
        }
        Err(refusal) => shown("a metadata refusal", &refusal.to_string()),
    }
    let signal = ResourceSignal::read(&[], body.as_object());
    if signal.demands.is_some() {
        assert!(signal.offers);
    }
    for advertised in [None, Some(&["ES256".to_owned()][..])] {
        if let Err(e) = dpop::decide(DpopMode::Auto, advertised, &signal) {
            shown("a DPoP refusal", &e.to_string());
        }
    }
}

/// An authorization server metadata document (RFC 8414): read, checked as discovery
/// checks it, and planned for as a flow plans.
pub fn server_metadata(data: &[u8]) {
    let Ok(body) = crate::json::parse(data) else {
        return;
    };
    let metadata = match discovery::read_server_metadata(&body, ISSUER) {
        Ok(m) => m,
        Err(refusal) => {
            shown("a metadata refusal", &refusal.to_string());
            return;
        }
    };
    assert_eq!(metadata.issuer, ISSUER);
    let policy = UrlPolicy::for_server(&MCP_URL, false);
    let target = AuthTarget {
        resource: MCP_URL.to_string(),
        issuer: ISSUER.to_owned(),
        metadata: metadata.clone(),
        source: MetadataSource::ProtectedResource,
        challenge_scope: None,
        resource_scopes: None,
    };
    let mut report = DiscoveryReport {
        mcp_url: MCP_URL.to_string(),
        challenge: None,
        steps: Vec::new(),
        protected_resource: None,
        authorization_server: None,
        problems: Vec::new(),
    };
    discovery::check_server(&target, &policy, &mut report);
    for p in &report.problems {
        shown("a discovery problem", &p.message);
    }
    // Whatever endpoint the rules let through is https on a public host.
    for endpoint in [
        &metadata.authorization_endpoint,
        &metadata.token_endpoint,
        &metadata.registration_endpoint,
        &metadata.device_authorization_endpoint,
        &metadata.revocation_endpoint,
    ]
    .into_iter()
    .flatten()
    {
        match policy.check(endpoint) {
            Ok(u) => {
                assert_eq!(u.scheme(), "https", "{endpoint}");
                assert_eq!(urls::host_class(&u), HostClass::Public, "{endpoint}");
            }
            Err(e) => shown("a URL refusal", &e.to_string()),
        }
    }
    if let Err(e) = registration::plan(&ClientOptions::default(), &metadata) {
        shown("a registration refusal", &e.to_string());
    }
    let signal = ResourceSignal::read(&[], None);
    let advertised = metadata.dpop_signing_alg_values_supported.as_deref();
    for mode in [DpopMode::Auto, DpopMode::Always] {
        if let Err(e) = dpop::decide(mode, advertised, &signal) {
            shown("a DPoP refusal", &e.to_string());
        }
    }
}

/// Fails when the error made of `data` shows the secret string field `name`: all of
/// it, or 16 characters of it in a row (errors cut what they show). Only an error
/// that changes when the secret alone changes can show it: the same body with the
/// secret's JSON text replaced by as many other bytes is the control (a server may
/// put the same text in a field errors do show, or a token may look like a message).
fn no_leak(data: &[u8], name: &str, error_for: impl Fn(&[u8]) -> Option<String>) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(secret) = value.get(name).and_then(Value::as_str) else {
        return;
    };
    let Ok(raw) = serde_json::to_string(secret) else {
        return;
    };
    let body = String::from_utf8_lossy(data);
    if secret.len() < 8 || body.matches(raw.as_str()).count() != 1 {
        return;
    }
    let Some(filler) = ['Q', 'Z', 'W'].into_iter().find(|c| !raw.contains(*c)) else {
        return;
    };
    let control = format!("\"{}\"", filler.to_string().repeat(raw.len() - 2));
    let other = body.replace(raw.as_str(), &control);
    let Some(error) = error_for(data) else {
        return;
    };
    if error_for(other.as_bytes()).as_deref() != Some(error.as_str()) {
        assert!(!leaks(&error, secret), "the error shows {name}: {error}");
    }
}

/// Whether `text` holds `secret`, or 16 characters of it in a row (errors cut what
/// they show, so a leak may be a piece).
fn leaks(text: &str, secret: &str) -> bool {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 16 {
        return text.contains(secret);
    }
    chars
        .windows(16)
        .any(|w| text.contains(&w.iter().collect::<String>()))
}

/// A registration endpoint's answer (RFC 7591 §3.2); the first byte picks the
/// status.
pub fn registration_answer(data: &[u8]) {
    let (pick, body) = choose(data);
    let status = [201, 200, 400, 401, 500][usize::from(pick) % 5];
    let endpoint = parse_url("https://as.example.com/register");
    let metadata = crate::auth::metadata::AuthServerMetadata {
        issuer: ISSUER.to_owned(),
        ..Default::default()
    };
    let redirect = ["http://127.0.0.1:9/callback".to_owned()];
    let policy = UrlPolicy::for_server(&MCP_URL, false);
    match registration::read_answer(status, body, &endpoint, &metadata, &redirect, &policy) {
        Ok(r) => {
            assert!((200..300).contains(&status));
            assert!(!r.client_id.is_empty());
            // The management URI and its token go nowhere but the server's own origin.
            if let Some(m) = &r.extras.management {
                let u = parse_url(&m.uri);
                assert_eq!(u.origin(), endpoint.origin(), "{}", m.uri);
            }
        }
        Err(e) => {
            let text = e.to_string();
            shown("a registration error", &text);
            if (200..300).contains(&status) {
                let error_for = |b: &[u8]| {
                    registration::read_answer(status, b, &endpoint, &metadata, &redirect, &policy)
                        .err()
                        .map(|e| e.to_string())
                };
                for name in ["client_secret", "registration_access_token"] {
                    no_leak(body, name, error_for);
                }
            }
        }
    }
}

/// A token endpoint's answer (RFC 6749 §5), and a device authorization endpoint's
/// (RFC 8628 §3.2); the first byte picks the status and whether a DPoP proof went.
pub fn token_answer(data: &[u8]) {
    let (pick, body) = choose(data);
    let status = [200, 201, 400, 401, 500][usize::from(pick) % 5];
    let proved = pick & 0x80 != 0;
    match token::parse_response(status, body, proved) {
        Ok(t) => {
            assert!((200..300).contains(&status));
            assert!(!t.access_token.secret().is_empty());
            assert!(proved || t.token_type == token::TokenType::Bearer);
        }
        Err(e) => {
            let text = e.to_string();
            shown("a token error", &text);
            if (200..300).contains(&status) {
                let error_for = |b: &[u8]| {
                    token::parse_response(status, b, proved)
                        .err()
                        .map(|e| e.to_string())
                };
                for name in ["access_token", "refresh_token", "id_token"] {
                    no_leak(body, name, error_for);
                }
            }
        }
    }
    match device::read_start(status, body) {
        Ok(start) => {
            assert!((1..=60).contains(&start.interval.as_secs()));
            shown("a user code", &start.user_code);
            shown("a verification URI", &start.verification_uri);
        }
        Err(e) => {
            let text = e.to_string();
            shown("a device error", &text);
            let error_for = |b: &[u8]| device::read_start(status, b).err().map(|e| e.to_string());
            if (200..300).contains(&status) {
                no_leak(body, "device_code", error_for);
            }
        }
    }
}

/// The query of a request to the loopback callback.
pub fn callback_query(data: &[u8]) {
    let query = String::from_utf8_lossy(data);
    let params = CallbackParams::parse(&query);
    for iss_required in [false, true] {
        let expected = Expected {
            state: "s-123",
            issuer: ISSUER,
            iss_required,
        };
        match callback::judge(&expected, &params) {
            Verdict::Ignore => assert_ne!(params.get("state"), Some("s-123")),
            Verdict::Code(code) => {
                assert_eq!(params.get("state"), Some("s-123"));
                for name in ["state", "code", "iss", "error"] {
                    assert!(!params.repeated(name), "{name} repeated");
                }
                assert!(params.get("error").is_none());
                assert_eq!(Some(code.secret().as_str()), params.get("code"));
                if iss_required || params.get("iss").is_some() {
                    assert_eq!(params.get("iss"), Some(ISSUER));
                }
            }
            Verdict::Refused(r) => shown("a callback refusal", &r.to_string()),
        }
    }
    // Debug shows the names and which repeat, never a value (the code is one).
    let names: Vec<&str> = params.names().collect();
    let repeated: std::collections::BTreeSet<&str> = names
        .iter()
        .copied()
        .filter(|n| params.repeated(n))
        .collect();
    assert_eq!(
        format!("{params:?}"),
        format!("CallbackParams {{ names: {names:?}, repeated: {repeated:?} }}")
    );
}

/// An event stream (text/event-stream), read whole and read in the pieces the first
/// byte picks: the same events, the same last event ID and reconnection time.
pub fn event_stream(data: &[u8]) {
    let (pick, stream) = choose(data);
    let piece = usize::from(pick % 17) + 1;
    let whole = read_events(stream, &[stream.len().max(1)]);
    let pieces = read_events(stream, &[piece, 1, piece * 3]);
    assert_eq!(whole, pieces, "read whole and in pieces of {piece}");
}

type Events = (
    Vec<(Option<String>, String)>,
    Option<String>,
    Option<std::time::Duration>,
    bool,
);

fn read_events(stream: &[u8], sizes: &[usize]) -> Events {
    let mut parser = sse::Parser::default();
    let mut events = Vec::new();
    let mut at = 0;
    let mut too_large = false;
    for size in sizes.iter().cycle() {
        if at >= stream.len() {
            break;
        }
        let end = (at + size).min(stream.len());
        if parser.feed(&stream[at..end]).is_err() {
            too_large = true;
            break;
        }
        at = end;
        while let Some(e) = parser.next() {
            events.push((e.event, e.data));
        }
    }
    let last = parser.last_event_id().map(str::to_owned);
    (events, last, parser.retry(), too_large)
}

/// The bridge's stdin: lines (read whole and in pieces alike, none longer than the
/// limit kept), each a JSON-RPC message or a parse error.
pub fn bridge_line(data: &[u8]) {
    let (pick, input) = choose(data);
    let limit = usize::from(pick) * 4 + 16;
    let whole = split_lines(input, limit, input.len().max(1));
    let pieces = split_lines(input, limit, usize::from(pick % 7) + 1);
    assert_eq!(whole, pieces, "stdin read whole and in pieces");
    for line in whole {
        let text = match line {
            Line::Text(text) => text,
            Line::TooLong { bytes } => {
                assert!(bytes > limit);
                continue;
            }
            Line::NotUtf8 => continue,
        };
        assert!(text.len() <= limit && !text.contains('\n'));
        let Ok(message) = Message::parse(text) else {
            continue;
        };
        // One message, one line: stdio framing holds whatever the client wrote.
        assert!(
            !message.text().contains(['\n', '\r']),
            "{:?}",
            message.text()
        );
        let again = match Message::parse(message.text().to_owned()) {
            Ok(m) => m,
            Err(e) => panic!("keyway's own text of a message does not parse: {e}"),
        };
        assert_eq!(again.id(), message.id());
        assert_eq!(again.method(), message.method());
        assert_eq!(again.is_request(), message.is_request());
        let _ = modern::may_be_modern(&message);
        let _ = modern::request_headers(&message, &modern::ToolHeaders::default());
    }
}

/// `input` split into lines of at most `limit` bytes, fed `piece` bytes at a time.
pub(crate) fn split_lines(input: &[u8], limit: usize, piece: usize) -> Vec<Line> {
    let mut lines = LineSplitter::new(limit);
    let mut out = Vec::new();
    for chunk in input.chunks(piece) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (used, line) = lines.push(rest);
            rest = &rest[used..];
            out.extend(line);
        }
    }
    out.extend(lines.finish());
    out
}

/// A message through the gateway: header lines (`name: value`), a blank line, and
/// a JSON body. Read strictly, its headers checked against its body, a `tools/list`
/// answer's annotations learned and a call's `Mcp-Param-*` headers made from them.
pub fn gateway_message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or(("", &text));
    let mut headers = http::HeaderMap::new();
    for line in head.lines() {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.trim().as_bytes()),
                http::HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
        // Every header value keyway writes reads back as the text it encoded.
        let encoded = modern::encode_value(line);
        let decoded = encoded.to_str().ok().and_then(modern::decode_value);
        assert_eq!(decoded.as_deref(), Some(line), "{encoded:?}");
    }
    let Ok(mut value) = crate::json::parse_str(body) else {
        return;
    };
    if let Err(error) = crate::gateway::modern::check_headers(&headers, &value) {
        assert!(
            error.get("code").and_then(Value::as_i64).is_some(),
            "{error}"
        );
    }
    let mut tools = modern::ToolHeaders::default();
    if let Some(result) = value.get_mut("result") {
        for rejected in tools.learn(result) {
            shown("a rejected tool", &rejected.reason.to_string());
        }
    }
    if let Ok(message) = Message::parse(body.to_owned()) {
        for (name, value) in modern::request_headers(&message, &tools).unwrap_or_default() {
            assert!(name.as_str().starts_with("mcp-"), "{name}");
            assert!(value.to_str().is_ok(), "{name} is not visible ASCII");
        }
    }
}
