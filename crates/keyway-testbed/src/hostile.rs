//! Hostile answers (`--hostile ENDPOINT:KIND`): what a malicious or broken server
//! sends to a client that trusts it too much. All but the redirects are made from the
//! real answer, so headers and session ids stay what the client expects, and only
//! the part under test is wrong.

use std::sync::Arc;

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::Request,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures::{Stream, StreamExt};
use serde_json::Value;

use crate::{
    faults::ConnectionKill,
    knobs::HostileKind,
    shared::{Counter, Shared},
};

/// Bodies larger than this are not rewritten (the real answers are far smaller).
const MAX_SOURCE: usize = 64 * 1024 * 1024;

/// Each chunk of an endless answer: big enough that a client reading megabytes
/// costs the server little, small enough to be sent as soon as there is room.
const ENDLESS_CHUNK: usize = 16 * 1024;

/// Nesting of `deep`: far beyond what a parser that recurses survives (serde_json
/// stops at 128), yet only 200,000 bytes.
const DEPTH: usize = 100_000;

/// The answer to a request of an endpoint with `--hostile`.
pub(crate) async fn answer(
    kind: &HostileKind,
    shared: &Arc<Shared>,
    req: Request,
    next: Next,
) -> Response {
    *shared
        .stats()
        .hostile_answers
        .entry(kind.as_str().to_owned())
        .or_default() += 1;
    match kind {
        // A redirecting server does not do what was asked first.
        HostileKind::Redirect(url) => redirect(url),
        HostileKind::RedirectLoop => {
            redirect(req.uri().path_and_query().map_or("/", |pq| pq.as_str()))
        }
        HostileKind::Endless => endless(next.run(req).await, shared.endless_stopped.clone()),
        HostileKind::Deep => deep(next.run(req).await),
        HostileKind::NotUtf8 => {
            // Only the first string of the whole answer is spoiled.
            let mut done = false;
            rewrite(next.run(req).await, move |json, last_resort| {
                if done {
                    return None;
                }
                let spoiled = not_utf8(json, last_resort)?;
                done = true;
                Some(spoiled)
            })
            .await
        }
        HostileKind::DuplicateKeys => {
            rewrite(next.run(req).await, |json, _| duplicate_keys(json)).await
        }
        HostileKind::CloseMidBody => {
            let kill = req.extensions().get::<ConnectionKill>().cloned();
            close_mid_body(next.run(req).await, kill).await
        }
    }
}

/// 307 (the method and body are sent again) to `location`.
fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(location) => (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        // `HostileKind::from_str` refuses such URLs, and a path is always a valid
        // header value; a `Knobs` built in code may still carry one.
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// Bumps its counter when the endless body holding it is dropped.
struct Stopped(Arc<Counter>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.bump();
    }
}

/// 200 and a body that never ends. The chunks are made only when hyper asks for the
/// next one (when the client has room for it), and the stream is dropped with the
/// connection, so a client that hangs up stops it.
fn endless(resp: Response, stopped: Arc<Counter>) -> Response {
    let (mut parts, _real_body) = resp.into_parts();
    let prefix: &[u8] = if is_event_stream(&parts.headers) {
        b"data: "
    } else {
        b"{\"x\":\""
    };
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .entry(header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/json"));
    let mut first = prefix.to_vec();
    first.resize(ENDLESS_CHUNK, b'x');
    let rest = Bytes::from(vec![b'x'; ENDLESS_CHUNK]);
    let guard = Stopped(stopped);
    let stream = futures::stream::once(async move { Bytes::from(first) })
        .chain(futures::stream::repeat(rest))
        .map(move |chunk| {
            let _held = &guard;
            Ok::<_, std::convert::Infallible>(chunk)
        });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// The real status and headers, and 100,000 nested arrays for a body.
fn deep(resp: Response) -> Response {
    let (mut parts, _real_body) = resp.into_parts();
    let mut body = vec![b'['; DEPTH];
    body.resize(2 * DEPTH, b']');
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

/// The real answer with its JSON changed by `change` (which gives `None` to leave a
/// piece as it is): the whole body, or each `data:` line of an event stream, which
/// is rewritten as it streams (a GET stream never ends). `change` is told when it
/// sees a whole body, its last chance to change anything.
async fn rewrite<F>(resp: Response, mut change: F) -> Response
where
    F: FnMut(&[u8], bool) -> Option<Vec<u8>> + Send + 'static,
{
    let (mut parts, body) = resp.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if is_event_stream(&parts.headers) {
        let lines = map_data_lines(body.into_data_stream(), move |json| change(json, false));
        return Response::from_parts(parts, Body::from_stream(lines));
    }
    let Ok(bytes) = to_bytes(body, MAX_SOURCE).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let body = change(&bytes, true).unwrap_or_else(|| bytes.to_vec());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, Body::from(body))
}

/// An event stream with the payload of each `data:` line passed through `change`.
/// Lines are whole before they are changed, however the chunks cut them.
fn map_data_lines<S, F>(
    inner: S,
    change: F,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, axum::Error>> + Send + Unpin + 'static,
    F: FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static,
{
    futures::stream::unfold(
        (Some(inner), Vec::new(), change),
        |(inner, mut pending, mut change)| async move {
            let mut inner = inner?;
            loop {
                match inner.next().await {
                    Some(Ok(chunk)) => {
                        pending.extend_from_slice(&chunk);
                        let whole = pending
                            .iter()
                            .rposition(|&b| b == b'\n')
                            .map_or(0, |i| i + 1);
                        if whole == 0 {
                            continue;
                        }
                        let lines: Vec<u8> = pending.drain(..whole).collect();
                        let out = change_data_lines(&lines, &mut change);
                        return Some((Ok(Bytes::from(out)), (Some(inner), pending, change)));
                    }
                    Some(Err(e)) => return Some((Err(e), (None, pending, change))),
                    None if pending.is_empty() => return None,
                    None => {
                        let out = change_data_lines(&pending, &mut change);
                        return Some((Ok(Bytes::from(out)), (None, Vec::new(), change)));
                    }
                }
            }
        },
    )
}

/// `text` (whole lines, the last one perhaps without its end) with every `data:`
/// payload passed through `change`.
fn change_data_lines(text: &[u8], change: &mut impl FnMut(&[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 64);
    for line in text.split_inclusive(|&b| b == b'\n') {
        let content = line.trim_ascii_end();
        let end = &line[content.len()..];
        let changed = content
            .strip_prefix(b"data:")
            .map(|payload| payload.strip_prefix(b" ").unwrap_or(payload))
            .and_then(&mut *change);
        match changed {
            Some(json) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(&json);
                out.extend_from_slice(end);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// `json` with 0xFF 0xFE just inside its first string value (a key when there is
/// none). With nothing to put them in, `None`, unless this is the `last_resort`:
/// then they go at the end, as the answer must not be UTF-8 either way.
fn not_utf8(json: &[u8], last_resort: bool) -> Option<Vec<u8>> {
    let at = match first_string(json) {
        Some(at) => at,
        None if last_resort => json.len(),
        None => return None,
    };
    let mut out = Vec::with_capacity(json.len() + 2);
    out.extend_from_slice(&json[..at]);
    out.extend_from_slice(&[0xFF, 0xFE]);
    out.extend_from_slice(&json[at..]);
    Some(out)
}

/// Where the first string value of `json` starts (just after its opening quote); if
/// every string is an object key, where the first key starts.
fn first_string(json: &[u8]) -> Option<usize> {
    let mut first_key = None;
    let mut i = 0;
    while i < json.len() {
        if json.get(i) != Some(&b'"') {
            i += 1;
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&b) = json.get(end) {
            match b {
                b'"' => break,
                b'\\' => end += 2,
                _ => end += 1,
            }
        }
        let next = json
            .get(end + 1..)
            .and_then(|rest| rest.iter().find(|b| !b.is_ascii_whitespace()));
        if next != Some(&b':') {
            return Some(start);
        }
        first_key.get_or_insert(start);
        i = end + 1;
    }
    first_key
}

/// A JSON object with its first member written again at the end, with another
/// value: `"duplicate-"` before a string, else `"duplicate"`. `None` for anything but
/// an object with a member.
fn duplicate_keys(json: &[u8]) -> Option<Vec<u8>> {
    let text = json.trim_ascii();
    let open = text.strip_suffix(b"}")?;
    let members = open.strip_prefix(b"{")?.trim_ascii_start();
    let mut keys = serde_json::Deserializer::from_slice(members).into_iter::<String>();
    keys.next()?.ok()?;
    // The key exactly as the answer wrote it (escapes and all).
    let key = members.get(..keys.byte_offset())?;
    let after_key = members.get(keys.byte_offset()..)?.trim_ascii_start();
    let value = serde_json::Deserializer::from_slice(after_key.strip_prefix(b":")?)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    let other = match value {
        Value::String(s) => Value::String(format!("duplicate-{s}")),
        _ => Value::String("duplicate".into()),
    };
    let mut out = open.to_vec();
    out.push(b',');
    out.extend_from_slice(key);
    out.push(b':');
    out.extend_from_slice(&serde_json::to_vec(&other).ok()?);
    out.push(b'}');
    Some(out)
}

/// The real headers (with the real Content-Length, when the answer has one) and half
/// the body, then the connection closes. An event stream, whose length no one
/// knows, gets half its first event with data (after any that has none, such as the
/// priming event of MCP's Streamable HTTP, which is sent whole).
async fn close_mid_body(resp: Response, kill: Option<ConnectionKill>) -> Response {
    let (mut parts, body) = resp.into_parts();
    if is_event_stream(&parts.headers) {
        let mut inner = body.into_data_stream();
        let half = async move {
            let mut sent = Vec::new();
            // Where the event being read starts.
            let mut start = 0;
            let keep = loop {
                if let Some(end) = sent.get(start..).and_then(event_end) {
                    let event = sent.get(start..start + end).unwrap_or_default();
                    if has_data(event) {
                        break start + end / 2;
                    }
                    start += end;
                    continue;
                }
                let Some(Ok(chunk)) = inner.next().await else {
                    break start + (sent.len() - start) / 2;
                };
                sent.extend_from_slice(&chunk);
            };
            sent.truncate(keep);
            Ok(Bytes::from(sent))
        };
        let stream = futures::stream::once(half).chain(futures::stream::once(cut(kill)));
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let Ok(bytes) = to_bytes(body, MAX_SOURCE).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    let stream =
        futures::stream::once(async move { Ok(half) }).chain(futures::stream::once(cut(kill)));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Where the first event of an event stream ends (after its blank line).
fn event_end(stream: &[u8]) -> Option<usize> {
    let lf = stream.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
    lf.into_iter().chain(crlf).min()
}

/// Whether an event has a `data:` line with something in it.
fn has_data(event: &[u8]) -> bool {
    event.split(|&b| b == b'\n').any(|line| {
        line.strip_prefix(b"data:")
            .is_some_and(|payload| !payload.trim_ascii().is_empty())
    })
}

/// Close the connection the body is sent on, and never give another chunk. Polled
/// after the first half was handed to hyper: the accept loop flushes it before it
/// drops the socket. Without an accept loop of ours (no kill switch), a body error
/// makes hyper abort the connection instead.
async fn cut(kill: Option<ConnectionKill>) -> Result<Bytes, std::io::Error> {
    match kill {
        Some(kill) => {
            kill.0.cancel();
            std::future::pending().await
        }
        None => Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "--hostile close-mid-body",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_utf8_spoils_the_first_string_value() {
        let out = not_utf8(br#"{"access_token":"a","n":1}"#, true).unwrap();
        assert_eq!(out, b"{\"access_token\":\"\xFF\xFEa\",\"n\":1}");
        assert!(std::str::from_utf8(&out).is_err());
        let out = not_utf8(br#"{"a" : 1, "b\"c": "d"}"#, true).unwrap();
        assert_eq!(out, b"{\"a\" : 1, \"b\\\"c\": \"\xFF\xFEd\"}");
        // Only keys: the first key.
        let out = not_utf8(br#"{"a":1}"#, true).unwrap();
        assert_eq!(out, b"{\"\xFF\xFEa\":1}");
        assert_eq!(not_utf8(b"[1]", false), None);
        assert_eq!(not_utf8(b"[1]", true).unwrap(), b"[1]\xFF\xFE");
    }

    #[test]
    fn duplicate_keys_repeat_the_first_member() {
        let out = duplicate_keys(br#"{"access_token":"a","n":1}"#).unwrap();
        assert_eq!(
            out,
            br#"{"access_token":"a","n":1,"access_token":"duplicate-a"}"#
        );
        let out = duplicate_keys(b" { \"id\" : 7 } \n").unwrap();
        assert_eq!(out, br#"{ "id" : 7 ,"id":"duplicate"}"#);
        let out = duplicate_keys(br#"{"a\"b":{"c":1}}"#).unwrap();
        assert_eq!(out, br#"{"a\"b":{"c":1},"a\"b":"duplicate"}"#);
        assert_eq!(duplicate_keys(b"{}"), None);
        assert_eq!(duplicate_keys(b"[1]"), None);
    }

    #[test]
    fn data_lines_are_changed_whole_and_others_kept() {
        let mut change = |json: &[u8]| duplicate_keys(json);
        let out = change_data_lines(
            b"id: 0\ndata: {\"a\":\"b\"}\r\n\ndata:\n: c\ndata:{\"x\":1}",
            &mut change,
        );
        assert_eq!(
            out,
            b"id: 0\ndata: {\"a\":\"b\",\"a\":\"duplicate-b\"}\r\n\ndata:\n: c\ndata: {\"x\":1,\"x\":\"duplicate\"}"
        );
        assert_eq!(event_end(b"data: a\n\ndata: b\n\n"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
        assert!(!has_data(b"data: \nid: 0\nretry: 3000\n\n"));
        assert!(has_data(b"id: 1\ndata: {}\n\n"));
    }
}
