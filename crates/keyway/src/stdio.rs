//! stdin and stdout for the stdio bridge and gateway. `tokio::io::stdin()`/`stdout()`
//! hand every read and write to a blocking thread, which costs two thread hand-offs per
//! message; when they are pipes (as an MCP client starts its servers) they are read and
//! written on the runtime itself, non-blocking. Anything else (a terminal, a file) keeps
//! tokio's blocking versions.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite};

/// One line of a client's input (newline-delimited JSON-RPC, MCP's stdio framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line in UTF-8, without its LF (or CR LF).
    Text(String),
    /// A line longer than the limit, skipped as it arrived: `bytes` were dropped
    /// (its LF excluded, a CR before it counted) and none was kept in memory.
    TooLong {
        /// How many bytes the line had.
        bytes: usize,
    },
    /// A line that is not UTF-8 (JSON text is, RFC 8259 §8.1).
    NotUtf8,
}

/// Splits a byte stream into [`Line`]s, holding at most `limit` bytes of a line: a
/// client that never sends a line end costs no more memory than that. Sync, so it
/// is the same code whatever reads the bytes; [`next_line`] reads with it.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    limit: usize,
    /// The length so far of a line past the limit, whose bytes are being dropped.
    over: Option<usize>,
}

impl LineSplitter {
    /// Lines of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            limit,
            over: None,
        }
    }

    /// Take `bytes` up to and including the first LF: how many were taken, and the
    /// line that LF ended.
    pub fn push(&mut self, bytes: &[u8]) -> (usize, Option<Line>) {
        match memchr::memchr(b'\n', bytes) {
            Some(i) => {
                self.keep(&bytes[..i]);
                (i + 1, Some(self.end()))
            }
            None => {
                self.keep(bytes);
                (bytes.len(), None)
            }
        }
    }

    /// The input ended: its last line, if it had bytes after the last LF.
    pub fn finish(&mut self) -> Option<Line> {
        (self.over.is_some() || !self.buf.is_empty()).then(|| self.end())
    }

    fn keep(&mut self, bytes: &[u8]) {
        if let Some(n) = &mut self.over {
            *n += bytes.len();
        } else if self.buf.len() + bytes.len() > self.limit {
            self.over = Some(self.buf.len() + bytes.len());
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn end(&mut self) -> Line {
        if let Some(bytes) = self.over.take() {
            return Line::TooLong { bytes };
        }
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_or(Line::NotUtf8, Line::Text)
    }
}

/// The next line of `reader`; `None` at the end of the input. Cancel-safe, as
/// `tokio::io::Lines::next_line` is: a line half read stays in `lines`.
pub async fn next_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    lines: &mut LineSplitter,
) -> std::io::Result<Option<Line>> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(lines.finish());
        }
        let (used, line) = lines.push(available);
        reader.consume(used);
        if line.is_some() {
            return Ok(line);
        }
    }
}

/// The process's stdin.
pub fn input() -> Box<dyn AsyncRead + Unpin + Send> {
    #[cfg(unix)]
    if let Some(rx) = unix::pipe_in() {
        return Box::new(rx);
    }
    Box::new(tokio::io::stdin())
}

/// The process's stdout.
pub fn output() -> Box<dyn AsyncWrite + Unpin + Send> {
    #[cfg(unix)]
    if let Some(tx) = unix::pipe_out() {
        return Box::new(tx);
    }
    Box::new(tokio::io::stdout())
}

#[cfg(unix)]
mod unix {
    use std::{
        fs::File,
        os::{fd::AsFd, unix::fs::MetadataExt},
    };

    use tokio::net::unix::pipe;

    fn dup(fd: std::os::fd::BorrowedFd<'_>) -> Option<File> {
        fd.try_clone_to_owned().ok().map(File::from)
    }

    /// stdin as a non-blocking pipe reader, if it is a pipe.
    pub(super) fn pipe_in() -> Option<pipe::Receiver> {
        // from_file refuses what is not a FIFO.
        pipe::Receiver::from_file(dup(std::io::stdin().as_fd())?).ok()
    }

    /// stdout as a non-blocking pipe writer, if it is a pipe and stderr is not the same
    /// pipe: non-blocking mode belongs to the pipe's open description, which a shared
    /// stderr would inherit, and a log line on a full pipe would then fail.
    pub(super) fn pipe_out() -> Option<pipe::Sender> {
        let out = dup(std::io::stdout().as_fd())?;
        let err = dup(std::io::stderr().as_fd())?;
        let (o, e) = (out.metadata().ok()?, err.metadata().ok()?);
        if o.dev() == e.dev() && o.ino() == e.ino() {
            return None;
        }
        pipe::Sender::from_file(out).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_stdio_frames_them_whatever_the_reads() {
        let input = b"{\"a\":1}\r\n\n\xff\xfe\n0123456789abcdef\nlast";
        let want = vec![
            Line::Text("{\"a\":1}".into()),
            Line::Text(String::new()),
            Line::NotUtf8,
            Line::TooLong { bytes: 16 },
            Line::Text("last".into()),
        ];
        for piece in 1..=input.len() {
            assert_eq!(
                crate::fuzz::split_lines(input, 10, piece),
                want,
                "reads of {piece} bytes"
            );
        }
    }

    #[tokio::test]
    async fn an_endless_line_holds_no_more_than_the_limit() {
        // Reads of 1 KiB fill the line up to its 64 KiB limit; past it, what was held
        // is given back and the rest is only counted.
        let mut lines = LineSplitter::new(64 << 10);
        let endless = tokio::io::repeat(b'x');
        let mut reader = tokio::io::BufReader::with_capacity(
            1024,
            tokio::io::AsyncReadExt::take(endless, 64 << 20),
        );
        let line = next_line(&mut reader, &mut lines).await.unwrap();
        assert_eq!(line, Some(Line::TooLong { bytes: 64 << 20 }));
        assert_eq!(lines.buf.capacity(), 0);
        assert_eq!(next_line(&mut reader, &mut lines).await.unwrap(), None);
    }
}
