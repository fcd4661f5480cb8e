//! HTTP answers as both the authorization code ([`crate::auth`]) and the MCP client
//! ([`crate::mcp`]) read them: the status, the headers and a body that arrives in
//! pieces, bounded in size and, where asked, in the time between two pieces. Shared
//! here, below both, so neither depends on the other for it.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, StatusCode, header};

/// Why reading a body stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The connection broke (reset, closed early, an HTTP/2 stream reset or GOAWAY).
    #[error("reading the answer failed: {0}")]
    Broken(String),
    /// Nothing arrived for the idle limit.
    #[error("nothing arrived for {} s (the idle limit)", .0.as_secs())]
    Idle(Duration),
    /// More than the size limit.
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// An answer's body, as it arrives.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, BodyError>> + Send>>;

/// An HTTP answer whose body is read as it is consumed.
pub struct Reply {
    /// The status code.
    pub status: StatusCode,
    /// The answer's headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: ByteStream,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reply")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl Reply {
    /// A reqwest answer, its body ending with [`BodyError::Idle`] once nothing has
    /// arrived for `idle` (`None`: no limit).
    pub fn from_reqwest(mut resp: reqwest::Response, idle: Option<Duration>) -> Self {
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| BodyError::Broken(describe(&e))));
        Self {
            status,
            headers,
            body: limited(body, idle),
        }
    }

    /// A hyper answer ([`super::WireClient`]'s), as [`Reply::from_reqwest`].
    pub fn from_hyper(resp: http::Response<hyper::body::Incoming>, idle: Option<Duration>) -> Self {
        use http_body_util::BodyExt;
        let (head, body) = resp.into_parts();
        let body = body
            .into_data_stream()
            .map(|r| r.map_err(|e| BodyError::Broken(describe(&e))));
        Self {
            status: head.status,
            headers: head.headers,
            body: limited(body, idle),
        }
    }

    /// A header's value, if it is text.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The whole body, refused past `limit` bytes (whatever Content-Length says).
    pub async fn read_capped(mut self, limit: usize) -> Result<Vec<u8>, BodyError> {
        if self
            .header(header::CONTENT_LENGTH)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
        {
            return Err(BodyError::TooLarge(limit));
        }
        let mut body = Vec::new();
        while let Some(chunk) = self.body.next().await {
            let chunk = chunk?;
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// `body`, ending with [`BodyError::Idle`] once nothing has arrived for `idle`.
fn limited(
    body: impl Stream<Item = Result<Bytes, BodyError>> + Send + Unpin + 'static,
    idle: Option<Duration>,
) -> ByteStream {
    match idle {
        Some(limit) => Box::pin(IdleLimit::new(body, limit)),
        None => Box::pin(body),
    }
}

/// A body that fails with [`BodyError::Idle`] when nothing arrives for its limit: a
/// connection a NAT or a dead server dropped without a word would otherwise be waited
/// on until the operating system gives up (about 15 minutes on Linux).
struct IdleLimit<S> {
    inner: S,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl<S> IdleLimit<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            done: false,
        }
    }
}

impl<S> Stream for IdleLimit<S>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Unpin,
{
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                let deadline = tokio::time::Instant::now() + this.limit;
                this.timer.as_mut().reset(deadline);
                if item.is_none() {
                    this.done = true;
                }
                Poll::Ready(item)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    Poll::Ready(Some(Err(BodyError::Idle(this.limit))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// The start of a body, printable, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let clean: String = text
        .chars()
        .map(|c| if crate::text::unshowable(c) { ' ' } else { c })
        .collect();
    clean.trim().to_owned()
}

/// An error and its causes on one line (each cause once).
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends one piece and then nothing ends with the idle error once the
    /// (paused, so instant) clock passes the limit, and not before.
    #[tokio::test(start_paused = true)]
    async fn a_silent_body_ends_at_the_idle_limit() {
        let pieces =
            futures::stream::iter([Ok(Bytes::from_static(b"a"))]).chain(futures::stream::pending());
        let mut body = IdleLimit::new(Box::pin(pieces), Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        assert_eq!(body.next().await, Some(Ok(Bytes::from_static(b"a"))));
        assert_eq!(
            body.next().await,
            Some(Err(BodyError::Idle(Duration::from_secs(30))))
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        assert_eq!(body.next().await, None);
    }

    #[test]
    fn snippets_are_short_and_printable() {
        assert_eq!(snippet(b"  a\nb\x07c  "), "a b c");
        assert_eq!(snippet(&[b'x'; 500]).len(), 200);
    }
}
