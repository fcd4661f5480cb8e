//! The floor for any bridge or gateway process: the least a separate process between an
//! MCP client and a Streamable HTTP server can cost on this machine. It is the "floor"
//! column of the benchmark, so keyway's numbers can be read against what is possible,
//! not only against the in-process direct client.
//!
//! - `keyway-bench-floor relay URL`: a stdio bridge. One blocking thread: read a line
//!   from stdin, POST it on one kept-alive connection, write each `data:` of the answer
//!   to stdout. The bearer token comes from `KEYWAY_BENCH_FLOOR_TOKEN` (a throwaway
//!   token of the benchmark's loopback testbed). No authorization flow, no reconnects,
//!   no JSON parsing beyond finding the protocol version: nothing a real bridge could
//!   do without.
//! - `keyway-bench-floor relay-async URL`: the same relay on tokio (a current-thread
//!   runtime, non-blocking pipes and socket, one task): what readiness-based I/O costs
//!   by itself, to tell it apart from the layers of a real bridge (`--async-floor`).
//! - `keyway-bench-floor forward UPSTREAM`: an HTTP forwarder on 127.0.0.1 (port 0; the
//!   address is printed on stdout). One blocking thread per client connection, each
//!   with its own upstream connection; requests and answers are copied as they are,
//!   headers included. The least any HTTP gateway costs.
//! - `keyway-bench-floor forward-async UPSTREAM`: the same forwarder on tokio (a
//!   current-thread runtime, one task per client connection): the least a gateway on
//!   readiness-based I/O costs, which is what keyway's gateway is.
//!
//! Both speak only as much HTTP/1.1 as the benchmark's peers need: Content-Length
//! request bodies, Content-Length or chunked answers.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    os::fd::AsFd,
};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["relay", url] => relay(url),
        ["relay-async", url] => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| rt.block_on(relay_async(url.to_owned()))),
        ["forward", upstream] => forward(upstream),
        ["forward-async", upstream] => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| rt.block_on(forward_async(upstream.to_owned()))),
        _ => {
            eprintln!(
                "usage: keyway-bench-floor relay URL | relay-async URL | forward HOST:PORT | forward-async HOST:PORT"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("keyway-bench-floor: {e}");
        std::process::exit(1);
    }
}

fn fail(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// `http://host:port/path` into (`host:port`, `/path`).
fn split_url(url: &str) -> io::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_owned(), path.to_owned()))
}

/// The head of an HTTP message: its lines (start line first) and its length in bytes.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<String>>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(fail("the connection closed inside a head"))
            };
        }
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Ok(Some(lines));
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// How an answer's body is framed.
enum Body {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

fn body_of(head: &[String], request: bool) -> Body {
    let status: u16 = head[0]
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if header(head, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        return Body::Chunked;
    }
    if let Some(n) = header(head, "content-length").and_then(|n| n.parse().ok()) {
        return Body::Length(n);
    }
    if request || status == 204 || status == 304 || (100..200).contains(&status) {
        Body::None
    } else {
        Body::UntilClose
    }
}

/// The size a chunk-size line gives (extensions after `;` ignored).
fn chunk_size(line: &str) -> io::Result<usize> {
    usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
        .map_err(|_| fail(format!("a bad chunk size: {line:?}")))
}

/// A head's lines, as they go on the wire, into `out`.
fn write_head(lines: &[String], out: &mut Vec<u8>) {
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Read one chunk of a chunked body: its bytes and, for copying, its framing line. The
/// last chunk (empty) is read with the trailer section that ends the body.
fn read_chunk(r: &mut impl BufRead) -> io::Result<(String, Vec<u8>)> {
    let mut size_line = String::new();
    r.read_line(&mut size_line)?;
    let size = chunk_size(&size_line)?;
    if size == 0 {
        loop {
            let mut trailer = String::new();
            if r.read_line(&mut trailer)? == 0 || trailer.trim().is_empty() {
                return Ok((size_line, Vec::new()));
            }
        }
    }
    let mut data = vec![0; size + 2];
    r.read_exact(&mut data)?;
    data.truncate(size);
    Ok((size_line, data))
}

// ------------------------------------------------------------------------ relay

/// A POST of `body` (one JSON-RPC message) to `path`, into `out`.
fn post_request(
    out: &mut Vec<u8>,
    path: &str,
    authority: &str,
    body: &str,
    token: &Option<String>,
    session: &Option<String>,
    protocol: &Option<String>,
) -> io::Result<()> {
    out.clear();
    write!(
        out,
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n",
        body.len()
    )?;
    if let Some(t) = token {
        write!(out, "authorization: Bearer {t}\r\n")?;
    }
    if let Some(s) = session {
        write!(out, "mcp-session-id: {s}\r\n")?;
    }
    if let Some(p) = protocol {
        write!(out, "mcp-protocol-version: {p}\r\n")?;
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Ok(())
}

/// The message a line of an answer body carries: a `data:` line of an event stream, or
/// a plain JSON answer (a line of its own). The first protocol version seen is kept.
fn answer_line<'a>(line: &'a str, protocol: &mut Option<String>) -> Option<&'a str> {
    let line = line.trim_end();
    let data = match line.strip_prefix("data:") {
        Some(d) => d.trim(),
        None if line.starts_with('{') || line.starts_with('[') => line,
        None => return None,
    };
    if data.is_empty() {
        return None;
    }
    if protocol.is_none()
        && let Some(v) = data.split("\"protocolVersion\":\"").nth(1)
    {
        *protocol = v.split('"').next().map(str::to_owned);
    }
    Some(data)
}

fn relay(url: &str) -> io::Result<()> {
    let (authority, path) = split_url(url)?;
    let token = std::env::var("KEYWAY_BENCH_FLOOR_TOKEN").ok();
    let stream = TcpStream::connect(&authority)?;
    stream.set_nodelay(true)?;
    let mut upstream_w = stream.try_clone()?;
    let mut upstream = BufReader::new(stream);
    let stdin = io::stdin();
    let mut stdin = stdin.lock();
    let mut stdout = io::stdout().lock();
    let mut session: Option<String> = None;
    let mut protocol: Option<String> = None;
    let mut line = String::new();
    let mut request = Vec::with_capacity(1024);
    loop {
        line.clear();
        if stdin.read_line(&mut line)? == 0 {
            break;
        }
        let body = line.trim();
        if body.is_empty() {
            continue;
        }
        post_request(
            &mut request,
            &path,
            &authority,
            body,
            &token,
            &session,
            &protocol,
        )?;
        upstream_w.write_all(&request)?;
        let head = read_head(&mut upstream)?.ok_or_else(|| fail("the server closed"))?;
        if let Some(s) = header(&head, "mcp-session-id") {
            session = Some(s.to_owned());
        }
        let mut pending = Vec::new();
        let mut emit = |bytes: &[u8], out: &mut dyn Write| -> io::Result<()> {
            pending.extend_from_slice(bytes);
            // Complete lines only; every `data:` line is one message.
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let l: Vec<u8> = pending.drain(..=end).collect();
                let l = String::from_utf8_lossy(&l);
                let Some(data) = answer_line(&l, &mut protocol) else {
                    continue;
                };
                out.write_all(data.as_bytes())?;
                out.write_all(b"\n")?;
                out.flush()?;
            }
            Ok(())
        };
        match body_of(&head, false) {
            Body::None => {}
            Body::Length(n) => {
                let mut data = vec![0; n];
                upstream.read_exact(&mut data)?;
                data.push(b'\n');
                emit(&data, &mut stdout)?;
            }
            Body::Chunked => loop {
                let (_, data) = read_chunk(&mut upstream)?;
                if data.is_empty() {
                    break;
                }
                emit(&data, &mut stdout)?;
            },
            Body::UntilClose => return Err(fail("an answer without a length")),
        }
    }
    if let Some(s) = session {
        let mut t = String::new();
        if let Some(tok) = &token {
            t = format!("authorization: Bearer {tok}\r\n");
        }
        write!(
            upstream_w,
            "DELETE {path} HTTP/1.1\r\nhost: {authority}\r\nmcp-session-id: {s}\r\n{t}content-length: 0\r\n\r\n"
        )?;
        let _ = read_head(&mut upstream);
    }
    Ok(())
}

// ------------------------------------------------------------------ relay-async

/// [`relay`]'s logic, the same bytes in and out, on a tokio current-thread runtime.
async fn relay_async(url: String) -> io::Result<()> {
    let (authority, path) = split_url(&url)?;
    let (authority, path) = (authority.as_str(), path.as_str());
    let token = std::env::var("KEYWAY_BENCH_FLOOR_TOKEN").ok();
    let stream = tokio::net::TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (r, mut up_w) = stream.into_split();
    let mut up = tokio::io::BufReader::new(r);
    let stdin = tokio::net::unix::pipe::Receiver::from_file(std::fs::File::from(
        std::io::stdin().as_fd().try_clone_to_owned()?,
    ))?;
    let mut stdout = tokio::net::unix::pipe::Sender::from_file(std::fs::File::from(
        std::io::stdout().as_fd().try_clone_to_owned()?,
    ))?;
    let mut stdin = tokio::io::BufReader::new(stdin);
    let (mut session, mut protocol): (Option<String>, Option<String>) = (None, None);
    let mut line = String::new();
    let mut request = Vec::with_capacity(1024);
    loop {
        line.clear();
        if stdin.read_line(&mut line).await? == 0 {
            break;
        }
        let body = line.trim();
        if body.is_empty() {
            continue;
        }
        post_request(
            &mut request,
            path,
            authority,
            body,
            &token,
            &session,
            &protocol,
        )?;
        up_w.write_all(&request).await?;
        let mut chunked = false;
        let mut length = None;
        loop {
            let mut h = String::new();
            up.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let lower = h.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("mcp-session-id:") {
                session = Some(h[h.len() - v.trim().len()..].to_owned());
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
        }
        let mut emit = |data: &[u8], out: &mut Vec<u8>| {
            for l in data.split(|&b| b == b'\n') {
                let l = String::from_utf8_lossy(l);
                let Some(d) = answer_line(&l, &mut protocol) else {
                    continue;
                };
                out.extend_from_slice(d.as_bytes());
                out.push(b'\n');
            }
        };
        let mut out = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                up.read_line(&mut size).await?;
                let n = chunk_size(&size)?;
                if n == 0 {
                    let mut t = String::new();
                    up.read_line(&mut t).await?;
                    break;
                }
                let mut data = vec![0; n + 2];
                up.read_exact(&mut data).await?;
                out.clear();
                emit(&data[..n], &mut out);
                stdout.write_all(&out).await?;
            }
        } else if let Some(n) = length {
            let mut data = vec![0; n];
            up.read_exact(&mut data).await?;
            emit(&data, &mut out);
            stdout.write_all(&out).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------- forward

fn forward(upstream: &str) -> io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("http://{}", listener.local_addr()?);
    io::stdout().flush()?;
    for client in listener.incoming() {
        let client = client?;
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            if let Err(e) = forward_connection(client, &upstream) {
                eprintln!("keyway-bench-floor: a connection ended: {e}");
            }
        });
    }
    Ok(())
}

fn forward_connection(client: TcpStream, upstream: &str) -> io::Result<()> {
    client.set_nodelay(true)?;
    let mut client_w = client.try_clone()?;
    let mut client = BufReader::new(client);
    let server = TcpStream::connect(upstream)?;
    server.set_nodelay(true)?;
    let mut server_w = server.try_clone()?;
    let mut server = BufReader::new(server);
    let mut buf = Vec::with_capacity(4096);
    while let Some(head) = read_head(&mut client)? {
        buf.clear();
        write_head(&head, &mut buf);
        if let Body::Length(n) = body_of(&head, true) {
            let at = buf.len();
            buf.resize(at + n, 0);
            client.read_exact(&mut buf[at..])?;
        }
        server_w.write_all(&buf)?;
        let answer = read_head(&mut server)?.ok_or_else(|| fail("the upstream closed"))?;
        buf.clear();
        write_head(&answer, &mut buf);
        match body_of(&answer, false) {
            Body::None => client_w.write_all(&buf)?,
            Body::Length(n) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                server.read_exact(&mut buf[at..])?;
                client_w.write_all(&buf)?;
            }
            Body::Chunked => {
                // Copy each chunk as it comes (an event stream may stay open).
                client_w.write_all(&buf)?;
                loop {
                    let (size_line, data) = read_chunk(&mut server)?;
                    buf.clear();
                    buf.extend_from_slice(size_line.as_bytes());
                    buf.extend_from_slice(&data);
                    buf.extend_from_slice(b"\r\n");
                    client_w.write_all(&buf)?;
                    if data.is_empty() {
                        break;
                    }
                }
            }
            Body::UntilClose => {
                client_w.write_all(&buf)?;
                io::copy(&mut server, &mut client_w)?;
                return Ok(());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- forward-async

/// [`forward`] on a tokio current-thread runtime.
async fn forward_async(upstream: String) -> io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("http://{}", listener.local_addr()?);
    io::stdout().flush()?;
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            if let Err(e) = forward_connection_async(client, &upstream).await {
                eprintln!("keyway-bench-floor: a connection ended: {e}");
            }
        });
    }
}

/// An HTTP/1.1 head from `r` into `out` as it came (its lines and the blank line):
/// false when the connection ended before one began. Its framing is returned through
/// `body`, for requests when `request`.
async fn copy_head_async(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    out: &mut Vec<u8>,
    request: bool,
) -> io::Result<Option<Body>> {
    let mut lines: Vec<String> = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err(fail("the connection closed inside a head"))
            };
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            write_head(&lines, out);
            return Ok(Some(body_of(&lines, request)));
        }
        lines.push(line.to_owned());
    }
}

async fn forward_connection_async(client: tokio::net::TcpStream, upstream: &str) -> io::Result<()> {
    client.set_nodelay(true)?;
    let (client_r, mut client_w) = client.into_split();
    let mut client = tokio::io::BufReader::new(client_r);
    let server = tokio::net::TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let (server_r, mut server_w) = server.into_split();
    let mut server = tokio::io::BufReader::new(server_r);
    let mut buf = Vec::with_capacity(4096);
    loop {
        buf.clear();
        let Some(body) = copy_head_async(&mut client, &mut buf, true).await? else {
            return Ok(());
        };
        if let Body::Length(n) = body {
            let at = buf.len();
            buf.resize(at + n, 0);
            client.read_exact(&mut buf[at..]).await?;
        }
        server_w.write_all(&buf).await?;
        buf.clear();
        let body = copy_head_async(&mut server, &mut buf, false)
            .await?
            .ok_or_else(|| fail("the upstream closed"))?;
        match body {
            Body::None => client_w.write_all(&buf).await?,
            Body::Length(n) => {
                let at = buf.len();
                buf.resize(at + n, 0);
                server.read_exact(&mut buf[at..]).await?;
                client_w.write_all(&buf).await?;
            }
            Body::Chunked => {
                // Each chunk as it comes, the head with the first (an event stream may
                // stay open).
                loop {
                    let mut size_line = String::new();
                    server.read_line(&mut size_line).await?;
                    let size = chunk_size(&size_line)?;
                    buf.extend_from_slice(size_line.as_bytes());
                    if size == 0 {
                        loop {
                            let mut trailer = String::new();
                            let n = server.read_line(&mut trailer).await?;
                            buf.extend_from_slice(trailer.as_bytes());
                            if n == 0 || trailer.trim().is_empty() {
                                break;
                            }
                        }
                        client_w.write_all(&buf).await?;
                        break;
                    }
                    let at = buf.len();
                    buf.resize(at + size + 2, 0);
                    server.read_exact(&mut buf[at..]).await?;
                    client_w.write_all(&buf).await?;
                    buf.clear();
                }
            }
            Body::UntilClose => {
                client_w.write_all(&buf).await?;
                tokio::io::copy(&mut server, &mut client_w).await?;
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn urls_split_into_authority_and_path() {
        let (a, p) = split_url("http://127.0.0.1:8080/mcp?x=1").expect("a URL");
        assert_eq!((a.as_str(), p.as_str()), ("127.0.0.1:8080", "/mcp?x=1"));
        assert_eq!(split_url("http://h:1").expect("a URL").1, "/");
        assert!(split_url("https://h/mcp").is_err());
    }

    #[test]
    fn chunks_and_the_last_chunk_with_its_trailers() {
        let mut r: &[u8] = b"5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let (line, data) = read_chunk(&mut r).expect("a chunk");
        assert_eq!((line.as_str(), data.as_slice()), ("5\r\n", &b"hello"[..]));
        let (_, last) = read_chunk(&mut r).expect("the last chunk");
        assert!(last.is_empty());
        assert_eq!(r, b"NEXT", "the body ends after the trailers");
        assert!(read_chunk(&mut &b"zz\r\n"[..]).is_err());
    }

    #[test]
    fn framing_of_answers_and_requests() {
        let chunked = head(&["HTTP/1.1 200 OK", "Transfer-Encoding: chunked"]);
        assert!(matches!(body_of(&chunked, false), Body::Chunked));
        let sized = head(&["HTTP/1.1 200 OK", "content-length: 12"]);
        assert!(matches!(body_of(&sized, false), Body::Length(12)));
        let accepted = head(&["HTTP/1.1 204 No Content"]);
        assert!(matches!(body_of(&accepted, false), Body::None));
        let open = head(&["HTTP/1.1 200 OK"]);
        assert!(matches!(body_of(&open, false), Body::UntilClose));
        let get = head(&["GET /mcp HTTP/1.1", "host: x"]);
        assert!(matches!(body_of(&get, true), Body::None));
        let mut r: &[u8] = b"\r\nPOST / HTTP/1.1\r\nA: b\r\n\r\n";
        let h = read_head(&mut r).expect("a head").expect("not the end");
        assert_eq!(header(&h, "a"), Some("b"));
        assert!(read_head(&mut &b""[..]).expect("the end").is_none());
    }
}
