//! One JSON-RPC message as text. The bridge moves messages between a client and a
//! server without needing what is inside them beyond their id and method; parsing
//! each into a `Value` tree and writing it out again cost more than everything else it
//! did with them. A [`Message`] is checked to be JSON once, keeps its id and method,
//! and is written on as it came (on one line: a message that spans lines is written
//! compactly). Unknown fields survive either way.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, de::IgnoredAny};
use serde_json::Value;

/// A JSON-RPC message (or batch), validated, on one line.
///
/// ```rust
/// use keyway::mcp::wire::Message;
///
/// let text = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","x-extra":1}}"#;
/// let m = Message::parse(text.to_owned())?;
/// assert_eq!(m.id(), Some("7")); // the id's JSON text: `7` and `"7"` are different ids
/// assert_eq!(m.method(), Some("tools/call"));
/// assert!(m.is_request());
/// assert_eq!(m.text(), text); // written on as it came, unknown fields included
///
/// let answer = Message::parse(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#.to_owned())?;
/// assert!(answer.answers("7"));
/// assert!(Message::parse("not json".to_owned()).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    text: String,
    /// The id's JSON text (`1`, `"a"`), if it has one that is not null.
    id: Option<String>,
    method: Option<String>,
    /// Whether it carries `result` or `error` (an answer, with an id).
    answer: bool,
    /// For a message that arrived on the event stream of one of our requests: that
    /// request's id (its JSON text). A server sends the requests and notifications
    /// that belong to a request there (MCP 2025-11-25, Streamable HTTP).
    during: Option<String>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Messages carry what people send their tools: not for logs.
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("method", &self.method)
            .field("bytes", &self.text.len())
            .finish()
    }
}

/// The parts of a message keyway reads.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(default, borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

/// A field that is there, whatever its value (null included).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// An id's JSON text as serde_json writes it, so that one id written two ways (`"a"`
/// and `"\u0061"`) is one key; `None` for null. Plain strings and integers, which is
/// what ids are, are already written that way and are taken as they are.
fn id_text(raw: &serde_json::value::RawValue) -> Option<String> {
    let t = raw.get();
    let b = t.as_bytes();
    let plain_string = b.len() >= 2 && b[0] == b'"' && !b[1..b.len() - 1].contains(&b'\\');
    // Up to 18 digits always fits an i64; `-0` and leading zeros are not plain.
    let digits = t.strip_prefix('-').unwrap_or(t);
    let plain_integer = (1..=18).contains(&digits.len())
        && digits.bytes().all(|c| c.is_ascii_digit())
        && (t == "0" || !digits.starts_with('0'));
    if plain_string || plain_integer {
        return Some(t.to_owned());
    }
    match serde_json::from_str::<Value>(t) {
        Ok(Value::Null) | Err(_) => None,
        Ok(v) => Some(v.to_string()),
    }
}

impl Message {
    /// Check `text` is one JSON-RPC object or a batch (an array). Line breaks between
    /// tokens are removed, so the message fits on one line; the text is otherwise kept.
    /// Fails when `text` is not JSON, is JSON with text after it, is neither an object
    /// nor an array, or has a `method` that is not a string.
    pub fn parse(text: String) -> Result<Self, serde_json::Error> {
        let trimmed = text.trim_ascii();
        if trimmed.starts_with('[') {
            let v: Value = serde_json::from_str(trimmed)?;
            return Ok(Self::from_value(&v));
        }
        let peek: Peek<'_> = serde_json::from_str(trimmed)?;
        let id = peek.id.and_then(id_text);
        let method = peek.method.map(Cow::into_owned);
        let answer = peek.result || peek.error;
        // JSON strings cannot hold raw line breaks, so these are whitespace between
        // tokens: the line-per-message framing of stdio needs them gone. They become
        // spaces, and nothing else changes: written out again through a `Value`, a
        // number such as an id of 11111111111.1888877777766 would come back rounded,
        // and the answer to it would match no request.
        let text = if memchr::memchr2(b'\n', b'\r', trimmed.as_bytes()).is_some() {
            trimmed.replace(['\n', '\r'], " ")
        } else if trimmed.len() == text.len() {
            text
        } else {
            trimmed.to_owned()
        };
        Ok(Self {
            text,
            id,
            method,
            answer,
            during: None,
        })
    }

    /// A request keyway writes itself, with the string `id`: serde_json writes it out
    /// in one buffer, as JSON on one line, and it is not parsed again.
    pub fn request(id: &str, method: &str, params: &Value) -> Self {
        #[derive(serde::Serialize)]
        struct Request<'a> {
            jsonrpc: &'static str,
            id: &'a str,
            method: &'a str,
            params: &'a Value,
        }
        let mut text = Vec::with_capacity(256);
        let request = Request {
            jsonrpc: "2.0",
            id,
            method,
            params,
        };
        // Writing a Value to a Vec cannot fail (its map keys are strings).
        let _ = serde_json::to_writer(&mut text, &request);
        let mut id_json = Vec::with_capacity(id.len() + 2);
        let _ = serde_json::to_writer(&mut id_json, id);
        Self {
            // serde_json writes UTF-8.
            text: String::from_utf8(text).unwrap_or_default(),
            id: Some(String::from_utf8(id_json).unwrap_or_default()),
            method: Some(method.to_owned()),
            answer: false,
            during: None,
        }
    }

    /// The message for a value.
    pub fn from_value(v: &Value) -> Self {
        Self {
            text: v.to_string(),
            id: v.get("id").filter(|id| !id.is_null()).map(Value::to_string),
            method: v.get("method").and_then(Value::as_str).map(str::to_owned),
            answer: v.get("result").is_some() || v.get("error").is_some(),
            during: None,
        }
    }

    /// The message as JSON text, on one line.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The message as JSON text, on one line, without a copy.
    pub fn into_text(self) -> String {
        self.text
    }

    /// The message as a value (parsed again).
    pub fn value(&self) -> Value {
        // Checked to be JSON when the message was made.
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The id's JSON text (`1` and `"1"` stay apart), when there is one.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The method, for a request or a notification; `None` for an answer or a batch.
    pub fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// A request: a method and an id.
    pub fn is_request(&self) -> bool {
        self.method.is_some() && self.id.is_some()
    }

    /// Whether this is the answer (result or error) to the request whose id's JSON
    /// text is `key`.
    pub fn answers(&self, key: &str) -> bool {
        self.method.is_none() && self.answer && self.id.as_deref() == Some(key)
    }

    /// An answer (no method, an id, and a result or an error).
    pub fn is_answer(&self) -> bool {
        self.method.is_none() && self.answer && self.id.is_some()
    }

    /// The id (JSON text) of our request on whose event stream this message came,
    /// if it came on one: what the server sent it in the course of.
    pub fn during(&self) -> Option<&str> {
        self.during.as_deref()
    }

    /// Note the request on whose event stream this message came.
    pub(crate) fn arrived_during(mut self, request: Option<&str>) -> Self {
        self.during = request.map(str::to_owned);
        self
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn requests_keyway_writes_read_back_the_same() {
        let params =
            json!({"name": "a \"quoted\" tool", "arguments": {"n": 1, "s": "line\nbreak"}});
        let m = Message::request("gw-7", "tools/call", &params);
        assert!(!m.text().contains('\n'), "on one line: {}", m.text());
        let again = Message::parse(m.text().to_owned()).expect("JSON");
        assert_eq!(again, m, "the id, method and text agree with a parse");
        assert_eq!(m.id(), Some("\"gw-7\""));
        assert!(m.is_request());
        assert_eq!(m.value()["params"], params);
    }

    #[test]
    fn messages_keep_their_text_id_and_method() {
        let text = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"x":"a\nb","unknown":[1,2]}}"#;
        let m = Message::parse(text.to_owned()).unwrap();
        assert_eq!(m.text(), text);
        assert_eq!(
            (m.id(), m.method(), m.is_request()),
            (Some("7"), Some("tools/call"), true)
        );
        assert_eq!(m.value()["params"]["unknown"], json!([1, 2]));
        let m = Message::parse(r#" {"jsonrpc":"2.0","id":"7","result":null} "#.to_owned()).unwrap();
        assert_eq!(
            (m.id(), m.is_answer(), m.answers("\"7\""), m.answers("7")),
            (Some("\"7\""), true, true, false)
        );
        assert_eq!(m.text(), r#"{"jsonrpc":"2.0","id":"7","result":null}"#);
        let m = Message::parse(
            r#"{"jsonrpc":"2.0","method":"notifications/\u0070rogress"}"#.to_owned(),
        )
        .unwrap();
        assert_eq!(
            (m.id(), m.method(), m.is_answer()),
            (None, Some("notifications/progress"), false)
        );
        // Line breaks between tokens go: one message per line.
        let m = Message::parse(
            "{\n  \"jsonrpc\": \"2.0\",\r\n  \"id\": 1, \"result\": {}\n}".to_owned(),
        )
        .unwrap();
        assert!(!m.text().contains(['\n', '\r']), "{}", m.text());
        assert_eq!(m.value(), json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        assert_eq!(m.id(), Message::from_value(&m.value()).id());
        // ... and nothing else changes: an id that a Value would round keeps its text,
        // and reads as the same id again (found by fuzz/ bridge_line).
        let m = Message::parse(
            "{\"jsonrpc\":\"2.0\",\"id\":11111111111.1888877777766,\r\n\"method\":\"x\"}"
                .to_owned(),
        )
        .unwrap();
        assert!(
            m.text().contains("11111111111.1888877777766"),
            "{}",
            m.text()
        );
        let again = Message::parse(m.text().to_owned()).unwrap();
        assert_eq!(again.id(), m.id());
        // Batches pass; what is not JSON-RPC-shaped JSON does not.
        let m = Message::parse(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_owned()).unwrap();
        assert_eq!((m.id(), m.method()), (None, None));
        for bad in [
            "",
            "{",
            "nope",
            "1",
            r#""s""#,
            r#"{"id":1} x"#,
            r#"{"method":5}"#,
        ] {
            assert!(Message::parse(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_id_is_one_key_however_it_is_written() {
        for id in [
            "7",
            "-7",
            "0",
            "-0",
            "1.50",
            "1e3",
            "123456789012345678",
            "123456789012345678901234",
            r#""a""#,
            r#""\u0061""#,
            r#""a\"b""#,
            r#""é""#,
            "null",
        ] {
            let m = Message::parse(format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"ping"}}"#));
            let m = m.unwrap_or_else(|e| panic!("{id}: {e}"));
            let v: Value = serde_json::from_str(id).unwrap();
            let expected = (!v.is_null()).then(|| v.to_string());
            assert_eq!(
                m.id().map(str::to_owned),
                expected,
                "{id} as serde_json writes it"
            );
        }
        let m = Message::parse(r#"{"jsonrpc":"2.0","id":"\u0061","result":1}"#.to_owned());
        assert!(m.unwrap().answers(r#""a""#));
        // Whitespace around an id is not part of it.
        let m = Message::parse(r#"{"jsonrpc":"2.0","id" :  7 ,"result":1}"#.to_owned());
        assert_eq!(m.unwrap().id(), Some("7"));
    }

    #[test]
    fn debug_shows_no_content() {
        let m = Message::parse(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"secret":"hunter2"}}"#
                .to_owned(),
        )
        .unwrap();
        assert!(!format!("{m:?}").contains("hunter2"));
    }
}
