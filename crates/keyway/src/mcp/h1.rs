//! The HTTP/1.1 an MCP POST needs from the client side (RFC 9112): the request head
//! written out, the answer's head read with `httparse`, and its body delimited by
//! Content-Length, chunked transfer coding or the end of the connection. Everything
//! is bounded: a head past [`MAX_HEAD`], a chunk-size or trailer line past
//! [`MAX_LINE`], conflicting lengths and malformed chunks are errors, never guesses.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

/// Largest answer head read (status line and headers).
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size line or trailer line.
pub const MAX_LINE: usize = 4 * 1024;
/// Most header fields in an answer.
const MAX_HEADERS: usize = 128;

/// The answer headers an MCP client acts on; [`parse_head`] keeps these and passes
/// over the rest (dates, caching, server banners...), which would cost an allocation
/// each for nothing. A field added here is read in `mcp::wire` or `mcp::post`.
static KEPT: [HeaderName; 6] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("mcp-session-id"),
];

/// The request head for a POST of `length` bytes to `target` on `host` (written first,
/// as RFC 9112 §3.2 asks).
pub fn request_head(
    target: &str,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
    length: usize,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"content-length: ");
    // Writing to a Vec cannot fail.
    let _ = std::io::Write::write_fmt(out, format_args!("{length}\r\n\r\n"));
}

/// An answer's head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request once the body is read.
    pub keep_alive: bool,
}

/// How the body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// The server closes the connection.
    Close,
}

/// Parse an answer's head from the front of `buf`. `Ok(None)`: more bytes are needed.
/// On success the head's bytes are taken off `buf`. Informational (1xx) answers are
/// skipped: they are followed by the real one.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, String> {
    loop {
        // Slots httparse fills itself: not zeroed first (4 KiB per answer).
        let mut slots =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let used = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
        {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(format!("the server's answer head is over {MAX_HEAD} bytes"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("the server's answer is not HTTP/1.1: {e}")),
        };
        if used > MAX_HEAD {
            return Err(format!("the server's answer head is over {MAX_HEAD} bytes"));
        }
        let code = resp.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| format!("the server answered with status {code}, which is not one"))?;
        let version = resp.version.unwrap_or(1);
        // httparse checked every name and value against RFC 9110's grammar.
        let mut headers = HeaderMap::with_capacity(KEPT.len());
        for h in resp.headers.iter() {
            let Some(name) = KEPT
                .iter()
                .find(|k| k.as_str().eq_ignore_ascii_case(h.name))
            else {
                continue;
            };
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| format!("the server sent a bad value for {name}"))?;
            headers.append(name.clone(), value);
        }
        buf.advance(used);
        if status.is_informational() {
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return Err("the server switched protocols on a POST".into());
            }
            continue;
        }
        let (framing, framing_keeps) = framing(status, &headers)?;
        let keep_alive = framing_keeps && keeps_alive(version, &headers);
        return Ok(Some(Head {
            status,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 §6.3 for an answer to a POST. The flag says whether the framing allows
/// reusing the connection.
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<(Framing, bool), String> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), true));
    }
    let mut codings = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(|c| c.trim_ascii())
        .filter(|c| !c.is_empty())
        .peekable();
    if codings.peek().is_some() {
        let chunked = codings
            .last()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"));
        // With a Content-Length beside it the message may have been smuggled: read
        // this one by its transfer coding and use the connection no more.
        let clean = headers.get(header::CONTENT_LENGTH).is_none();
        return Ok(if chunked {
            (Framing::Chunked, clean)
        } else {
            (Framing::Close, false)
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = (!part.is_empty() && part.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(part).ok()?.parse::<u64>().ok())
                .flatten()
                .ok_or("the server sent a Content-Length that is not a number")?;
            if length.is_some_and(|l| l != n) {
                return Err("the server sent two different Content-Lengths".into());
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// Persistence (RFC 9112 §9.3): HTTP/1.1 unless `Connection: close`; HTTP/1.0 only
/// with `Connection: keep-alive`.
fn keeps_alive(version: u8, headers: &HeaderMap) -> bool {
    let has = |option: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|o| o.trim_ascii().eq_ignore_ascii_case(option.as_bytes()))
    };
    if version == 0 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// Where a chunked body's decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this much left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (this many bytes of them so far) up to the
    /// empty line.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// What one step of the chunked decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body bytes.
    Data(Bytes),
    /// Progress without data (a size line, a CRLF, a trailer line).
    Progress,
    /// More input is needed.
    NeedMore,
    /// The body is complete.
    Done,
}

impl Chunked {
    /// Decode what `buf` holds, one step.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, String> {
        match *self {
            Self::Done => Ok(Step::Done),
            Self::Size => {
                let Some(end) = line_end(buf)? else {
                    return Ok(Step::NeedMore);
                };
                let size = chunk_size(&buf[..end])?;
                buf.advance(end + 2);
                *self = if size == 0 {
                    Self::Trailers(0)
                } else {
                    Self::Data(size)
                };
                Ok(Step::Progress)
            }
            Self::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::NeedMore);
                }
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let data = take(buf, n);
                let left = left - n as u64;
                *self = if left == 0 {
                    Self::DataEnd
                } else {
                    Self::Data(left)
                };
                Ok(Step::Data(data))
            }
            Self::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("a chunk of the server's answer did not end with CRLF".into());
                }
                buf.advance(2);
                *self = Self::Size;
                Ok(Step::Progress)
            }
            Self::Trailers(seen) => {
                let Some(end) = line_end(buf)? else {
                    return Ok(Step::NeedMore);
                };
                buf.advance(end + 2);
                if end == 0 {
                    *self = Self::Done;
                    return Ok(Step::Done);
                }
                let seen = seen + end + 2;
                if seen > MAX_HEAD {
                    return Err(format!(
                        "the server's answer has over {MAX_HEAD} bytes of trailers"
                    ));
                }
                *self = Self::Trailers(seen);
                Ok(Step::Progress)
            }
        }
    }
}

/// The first `n` bytes of `buf`, copied out. A slice split off would share the
/// buffer's allocation, and the next read would then need a new one: for the small
/// messages of MCP, one copy costs less than that allocation (and the
/// consolidation of the allocator's free lists it sets off).
pub fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    let data = Bytes::copy_from_slice(&buf[..n]);
    buf.advance(n);
    data
}

/// Where the CRLF-terminated line at the front of `buf` ends (its length without the
/// CRLF), once it is all there.
fn line_end(buf: &[u8]) -> Result<Option<usize>, String> {
    match memchr::memmem::find(buf, b"\r\n") {
        Some(end) if end > MAX_LINE => Err(format!(
            "a line in the server's chunked answer is over {MAX_LINE} bytes"
        )),
        Some(end) => Ok(Some(end)),
        None if buf.len() > MAX_LINE => Err(format!(
            "a line in the server's chunked answer is over {MAX_LINE} bytes"
        )),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ; chunk-ext ]` into the size.
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 16 || !(rest.is_empty() || rest[0] == b';') {
        return Err(format!(
            "the server sent a bad chunk size {:?}",
            String::from_utf8_lossy(&line[..line.len().min(40)])
        ));
    }
    line[..digits].iter().try_fold(0u64, |n, b| {
        let d = u64::from((*b as char).to_digit(16).unwrap_or(0));
        n.checked_mul(16)
            .and_then(|n| n.checked_add(d))
            .ok_or_else(|| "the server sent a chunk size past 2^64".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, String> {
        parse_head(&mut BytesMut::from(text))
    }

    #[test]
    fn request_heads_carry_the_headers_and_the_length() {
        let headers = [(header::ACCEPT, HeaderValue::from_static("application/json"))];
        let mut out = Vec::new();
        let host = HeaderValue::from_static("127.0.0.1:8");
        request_head("/mcp?x=1", &host, &headers, 12, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /mcp?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8\r\naccept: application/json\r\ncontent-length: 12\r\n\r\n"
        );
    }

    #[test]
    fn heads_are_read_once_complete_and_framed_as_the_rfc_says() {
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n")
                .unwrap()
                .is_none()
        );
        let mut buf = BytesMut::from("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (StatusCode::OK, Framing::Length(2), true)
        );
        assert_eq!(&buf[..], b"{}");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        // Both: chunked wins, and the connection is not used again.
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
        let h = head("HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), false));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 0\r\nconnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        // The same length twice is one length; two lengths are an error.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n")
                .unwrap_err()
                .contains("two different")
        );
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: -3\r\n\r\n")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999999\r\n\r\n").is_err()
        );
    }

    #[test]
    fn only_the_headers_an_mcp_client_reads_are_kept() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 200 OK\r\nDate: Fri, 27 Nov 2026 03:00:00 GMT\r\nServer: x\r\nMcp-Session-Id: s1\r\nContent-Type: text/event-stream\r\nX-Custom: y\r\nWWW-Authenticate: Bearer a\r\nWWW-Authenticate: Basic b\r\nContent-Length: 0\r\n\r\n",
        );
        let head = parse_head(&mut buf).unwrap().unwrap();
        let mut names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "content-length",
                "content-type",
                "mcp-session-id",
                "www-authenticate"
            ]
        );
        assert_eq!(head.headers["mcp-session-id"], "s1");
        assert_eq!(
            head.headers
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .count(),
            2
        );
    }

    #[test]
    fn informational_answers_are_skipped_and_junk_refused() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 103 Early Hints\r\nlink: </x>\r\n\r\nHTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n",
        );
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::UNAUTHORIZED);
        assert!(buf.is_empty());
        assert!(
            head("SSH-2.0-OpenSSH\r\n\r\n")
                .unwrap_err()
                .contains("not HTTP/1.1")
        );
        assert!(head("HTTP/1.1 101 Switching\r\n\r\n").is_err());
        assert!(head("HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD + 1));
        assert!(head(&huge).unwrap_err().contains("over"));
        let many: String = (0..200).map(|i| format!("x{i}: y\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).is_err());
    }

    fn decode(input: &[&str]) -> Result<(Vec<u8>, bool), String> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece.as_bytes());
            loop {
                match state.step(&mut buf)? {
                    Step::Data(d) => body.extend_from_slice(&d),
                    Step::Progress => {}
                    Step::NeedMore => break,
                    Step::Done => return Ok((body, buf.is_empty())),
                }
            }
        }
        Ok((body, false))
    }

    #[test]
    fn chunked_bodies_decode_across_any_split() {
        let whole = "5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nx-trailer: y\r\n\r\n";
        for cut in 0..whole.len() {
            let (body, done) = decode(&[&whole[..cut], &whole[cut..]]).unwrap();
            assert_eq!(
                (body.as_slice(), done),
                (&b"hello world"[..], true),
                "cut at {cut}"
            );
        }
        assert_eq!(
            decode(&["A\r\n0123456789\r\n0\r\n\r\n"]).unwrap().0,
            b"0123456789"
        );
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            "zz\r\n",
            "\r\n",
            "5x\r\nhello\r\n",
            "5\r\nhelloXX0\r\n\r\n",
            "11111111111111111\r\n",
            "-1\r\n",
        ] {
            assert!(decode(&[bad]).is_err(), "{bad:?}");
        }
        assert!(decode(&["FFFFFFFFFFFFFFFF\r\n"]).is_ok());
        let long = format!("5;{}\r\n", "e".repeat(MAX_LINE));
        assert!(decode(&[&long]).is_err());
        let endless = format!("0\r\n{}", "t: y\r\n".repeat(MAX_HEAD / 6 + 2));
        assert!(decode(&[&endless]).is_err());
    }
}
