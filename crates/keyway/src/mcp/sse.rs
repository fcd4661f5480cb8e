//! Server-sent events read from an answer's body, as the HTML standard's "event stream
//! interpretation" says: lines end with CRLF, LF or CR; `data` lines of one event are
//! joined with LF; a blank line dispatches the event; a line starting with `:` is a
//! comment; one leading BOM is skipped; an event cut off by the end of the stream is
//! dropped. keyway keeps the event type and its data, the last event ID (an `id`
//! field, taken when its event ends, as the standard says: also from an event with no
//! data, such as the priming event of MCP 2025-11-25) and the reconnection time (a
//! `retry` field of digits), so a stream that ends early can be resumed.
//!
//! Every message of the bridge and the gateway comes through here. The parser works
//! on the bytes as they arrive, keeps one buffer per stream and allocates only the
//! data of each event, and refuses to hold more than [`MAX_EVENT`] bytes for one event
//! whatever a server sends.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use futures::Stream;

use crate::http::reply::{BodyError, ByteStream};

/// The most one event (its lines and its data) may take.
pub const MAX_EVENT: usize = 16 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sse {
    /// The `event` field, if the event had one (the standard's default is "message").
    pub event: Option<String>,
    /// The `data` lines, joined with LF.
    pub data: String,
}

/// Why a stream of events ended early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error(transparent)]
    Body(BodyError),
    #[error("an event larger than {} MiB", MAX_EVENT / (1024 * 1024))]
    TooLarge,
}

/// The incremental parser: bytes in, events out.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes not yet parsed (an incomplete line at most, once [`Parser::next`] has
    /// returned `None`).
    buf: Vec<u8>,
    /// Where the unparsed bytes in `buf` start.
    at: usize,
    /// How many bytes from `at` on are known to hold no line end: a line that
    /// arrives in many pieces is searched once, not once per piece (a hostile line
    /// of 16 MiB would otherwise cost gigabytes of searching).
    searched: usize,
    /// The last line ended with CR: an LF right after it belongs to that line end.
    after_cr: bool,
    /// The stream's first bytes have been checked for a BOM.
    started: bool,
    event: Option<String>,
    data: Vec<u8>,
    /// Whether a `data` field was seen (an event with none is not dispatched).
    has_data: bool,
    /// The last `id` field's value (the standard's "last event ID buffer").
    id_buffer: Option<String>,
    /// Whether an `id` field came since the last blank line.
    id_seen: bool,
    /// The last event ID of the stream, set when an event ends.
    last_id: Option<String>,
    /// The reconnection time the server asked for, in milliseconds.
    retry: Option<u64>,
}

impl Parser {
    /// Add bytes from the stream.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            self.searched = 0;
        }
        if self.buf.len() - self.at + bytes.len() + self.data.len() > MAX_EVENT {
            return Err(SseError::TooLarge);
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete event from what was fed, if there is one.
    pub fn next(&mut self) -> Option<Sse> {
        if !self.started {
            if self.buf.len() - self.at < 3 && b"\xEF\xBB\xBF".starts_with(&self.buf[self.at..]) {
                // Perhaps a BOM still arriving.
                return None;
            }
            self.started = true;
            if self.buf[self.at..].starts_with(b"\xEF\xBB\xBF") {
                self.at += 3;
            }
        }
        loop {
            if self.after_cr && self.at < self.buf.len() {
                if self.buf[self.at] == b'\n' {
                    self.at += 1;
                }
                self.after_cr = false;
            }
            let rest = &self.buf[self.at..];
            let Some(found) = memchr::memchr2(b'\n', b'\r', &rest[self.searched..]) else {
                self.searched = rest.len();
                // Lines that ended no event still give their space back.
                self.compact();
                return None;
            };
            let end = self.searched + found;
            self.searched = 0;
            self.after_cr = rest[end] == b'\r';
            let (start, line_end) = (self.at, self.at + end);
            self.at = line_end + 1;
            if let Some(event) = self.line(start, line_end) {
                self.compact();
                return Some(event);
            }
        }
    }

    /// The ID of the last event that ended (`None`: the server sent none, or an empty
    /// one, which resets it).
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The reconnection time the server set with `retry`, if it did.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.retry.map(std::time::Duration::from_millis)
    }

    /// Give back the space of parsed bytes once they are a good part of the buffer.
    fn compact(&mut self) {
        if self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        } else if self.at > 4096 && self.at * 2 > self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
    }

    /// Interpret `buf[start..end]`, one line; a blank line may dispatch an event.
    fn line(&mut self, start: usize, end: usize) -> Option<Sse> {
        let line = &self.buf[start..end];
        if line.is_empty() {
            if std::mem::take(&mut self.id_seen) {
                self.last_id = self.id_buffer.clone().filter(|id| !id.is_empty());
            }
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return None;
            }
            let data = std::mem::take(&mut self.data);
            let data = String::from_utf8(data)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            return Some(Sse { event, data });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.has_data = true;
                self.data.extend_from_slice(value);
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            // An id with a NUL is ignored, as the standard says.
            b"id" if !value.contains(&0) => {
                self.id_buffer = Some(String::from_utf8_lossy(value).into_owned());
                self.id_seen = true;
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Digits past u64 are a server's nonsense: the longest wait there is.
                self.retry = Some(
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(u64::MAX),
                );
            }
            // Other fields are ignored, as the standard says.
            _ => {}
        }
        None
    }
}

/// The events of an answer's body.
pub struct SseStream {
    body: ByteStream,
    parser: Parser,
    done: bool,
}

impl std::fmt::Debug for SseStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseStream")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl SseStream {
    pub fn new(body: ByteStream) -> Self {
        Self {
            body,
            parser: Parser::default(),
            done: false,
        }
    }

    /// A stream resuming one whose last event ID was `last_id`: it keeps that ID until
    /// the server sends another.
    pub fn resuming(body: ByteStream, last_id: Option<String>) -> Self {
        let mut s = Self::new(body);
        s.parser.last_id = last_id;
        s
    }

    /// The ID of the last event that ended.
    pub fn last_event_id(&self) -> Option<&str> {
        self.parser.last_event_id()
    }

    /// The reconnection time the server set.
    pub fn retry(&self) -> Option<std::time::Duration> {
        self.parser.retry()
    }
}

impl Stream for SseStream {
    type Item = Result<Sse, SseError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(event) = this.parser.next() {
                return Poll::Ready(Some(Ok(event)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if let Err(e) = this.parser.feed(&bytes) {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(SseError::Body(e))));
                }
                // What is left is an incomplete event: dropped, as the standard says.
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], pieces: &[usize]) -> Vec<Sse> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        let mut at = 0;
        for &n in pieces.iter().chain(std::iter::once(&input.len())) {
            let end = (at + n).min(input.len());
            p.feed(&input[at..end]).expect("within the limit");
            at = end;
            while let Some(e) = p.next() {
                out.push(e);
            }
        }
        out
    }

    fn parse(input: &[u8]) -> Vec<Sse> {
        parse_in_pieces(input, &[])
    }

    fn ev(event: Option<&str>, data: &str) -> Sse {
        Sse {
            event: event.map(str::to_owned),
            data: data.to_owned(),
        }
    }

    #[test]
    fn events_as_mcp_servers_send_them() {
        let input = b"event: message\ndata: {\"id\":1}\n\nid: 7\ndata: {\"id\":2}\n\n";
        assert_eq!(
            parse(input),
            vec![ev(Some("message"), "{\"id\":1}"), ev(None, "{\"id\":2}")]
        );
    }

    #[test]
    fn every_line_ending_and_every_split_point() {
        let expected = vec![ev(Some("x"), "a\nb"), ev(None, "c")];
        for eol in ["\n", "\r\n", "\r"] {
            let input =
                format!("event: x{eol}data: a{eol}data:b{eol}{eol}: note{eol}data: c{eol}{eol}");
            let input = input.as_bytes();
            assert_eq!(parse(input), expected, "{eol:?}");
            // Cut in two at every point, and byte by byte.
            for cut in 0..=input.len() {
                assert_eq!(parse_in_pieces(input, &[cut]), expected, "{eol:?} at {cut}");
            }
            assert_eq!(parse_in_pieces(input, &vec![1; input.len()]), expected);
        }
    }

    #[test]
    fn fields_as_the_standard_reads_them() {
        // One space after the colon is dropped, no more; a field without a colon has an
        // empty value; unknown fields are ignored (id and retry are not data); a BOM
        // is skipped.
        let input =
            b"\xEF\xBB\xBFdata:  two spaces\n\ndata\ndata\n\nfoo: bar\nretry: 10\ndata: x\n\n";
        assert_eq!(
            parse(input),
            vec![ev(None, " two spaces"), ev(None, "\n"), ev(None, "x")]
        );
        // A BOM split over pieces is still skipped.
        assert_eq!(parse_in_pieces(input, &[1, 1, 1]).len(), 3);
    }

    #[test]
    fn the_last_event_id_and_the_reconnection_time() {
        let mut p = Parser::default();
        // The priming event of MCP 2025-11-25: an id and empty data.
        p.feed(b"id: prime-1\ndata:\n\n").unwrap();
        while p.next().is_some() {}
        assert_eq!(p.last_event_id(), Some("prime-1"));
        assert_eq!(p.retry(), None);
        // Taken when the event ends, not before.
        p.feed(b"retry: 1500\nid: 2\ndata: {}\n").unwrap();
        assert!(p.next().is_none());
        assert_eq!(p.last_event_id(), Some("prime-1"));
        assert_eq!(p.retry(), Some(std::time::Duration::from_millis(1500)));
        p.feed(b"\n").unwrap();
        assert!(p.next().is_some());
        assert_eq!(p.last_event_id(), Some("2"));
        // An event without an id keeps the last one; an empty id resets it; an id with
        // a NUL and a retry that is not digits are ignored.
        p.feed(b"data: x\n\nretry: 1s\nid: a\0b\ndata: y\n\n")
            .unwrap();
        while p.next().is_some() {}
        assert_eq!(p.last_event_id(), Some("2"));
        assert_eq!(p.retry(), Some(std::time::Duration::from_millis(1500)));
        p.feed(b"id\ndata: z\n\n").unwrap();
        while p.next().is_some() {}
        assert_eq!(p.last_event_id(), None);
    }

    #[test]
    fn events_without_data_and_unfinished_ones_are_not_dispatched() {
        assert_eq!(parse(b"event: ping\n\n: keep-alive\n\n"), vec![]);
        // The event type does not leak into the next event.
        assert_eq!(parse(b"event: ping\n\ndata: d\n\n"), vec![ev(None, "d")]);
        // No blank line at the end: nothing.
        assert_eq!(parse(b"data: cut off"), vec![]);
        assert_eq!(parse(b"data: cut off\n"), vec![]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(parse(b"data: a\xFFb\n\n"), vec![ev(None, "a\u{FFFD}b")]);
    }

    #[test]
    fn a_hostile_stream_cannot_grow_memory_without_bound() {
        let mut p = Parser::default();
        let line = vec![b'a'; 1024 * 1024];
        p.feed(b"data: ").expect("small");
        let mut refused = false;
        for _ in 0..20 {
            if p.feed(&line).is_err() {
                refused = true;
                break;
            }
            assert!(p.next().is_none());
        }
        assert!(refused, "a 20 MiB line is refused");

        // Data spread over many lines counts too.
        let mut p = Parser::default();
        let mut refused = false;
        for _ in 0..20 {
            let mut chunk = b"data: ".to_vec();
            chunk.extend_from_slice(&line);
            chunk.push(b'\n');
            if p.feed(&chunk).is_err() {
                refused = true;
                break;
            }
            assert!(p.next().is_none());
        }
        assert!(refused, "20 MiB of data lines are refused");
    }

    #[test]
    fn a_line_in_many_pieces_is_searched_once() {
        let mut p = Parser::default();
        p.feed(b"data: ").unwrap();
        assert!(p.next().is_none());
        for n in 1..=1000 {
            p.feed(&[b'x'; 64]).unwrap();
            assert!(p.next().is_none());
            // Only the new piece was searched: what came before is known line-free.
            assert_eq!(p.searched, 6 + 64 * n);
        }
        p.feed(b"\n\n").unwrap();
        assert_eq!(p.next().map(|e| e.data.len()), Some(64_000));
        assert_eq!(p.searched, 0);
    }

    #[test]
    fn lines_that_end_no_event_give_their_space_back() {
        // Comments and fields forever, each arriving split across reads, and never
        // a blank line: the buffer holds about one line, not the stream.
        let mut p = Parser::default();
        for _ in 0..20_000 {
            p.feed(b"tail\n: a comment that arrives in two reads, over and over ")
                .unwrap();
            assert!(p.next().is_none());
            p.feed(b"...\nevent: x\nhead-of-").unwrap();
            assert!(p.next().is_none());
        }
        assert!(p.buf.capacity() < 64 * 1024, "{}", p.buf.capacity());
    }

    #[test]
    fn the_buffer_does_not_grow_over_a_long_stream() {
        let mut p = Parser::default();
        for i in 0..10_000 {
            p.feed(format!("data: {i}\n\n").as_bytes()).expect("small");
            assert_eq!(p.next().map(|e| e.data), Some(i.to_string()));
        }
        assert!(p.buf.capacity() < 1024, "{}", p.buf.capacity());
    }
}
