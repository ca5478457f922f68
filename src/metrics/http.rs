//! The scrape endpoint: a minimal HTTP/1.1 server for `GET /metrics`, on core 0 only.
//!
//! [`parse_head`] is sans-IO (bytes in, a request or a verdict out) and [`answer`] builds
//! the whole response; [`start`] is the only I/O: one accept loop on the first core, one
//! task per connection (at most [`CONNECTIONS_MAX`] at once), the request head read within
//! [`TIMEOUT_MS_READ`] and [`HEAD_BYTES_MAX`], one response, `Connection: close`.
//!
//! `GET` (or `HEAD`) `/metrics` answers 200 with the Prometheus text of every core; another
//! method on `/metrics` 405, any other path 404, a malformed or oversized head 400.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::{CoreWiring, MetricsRegistry};
use crate::net::NetError;
use crate::runtime::core::Core;

/// Most bytes of a request head (request line and headers).
pub const HEAD_BYTES_MAX: usize = 8 * 1024;
/// Most header lines.
pub const HEADERS_MAX: usize = 100;
/// The whole head must arrive within this.
pub const TIMEOUT_MS_READ: u64 = 5_000;
/// Writing the answer may take this long.
pub const TIMEOUT_MS_WRITE: u64 = 10_000;
/// Scrape connections served at once; more are closed at once.
pub const CONNECTIONS_MAX: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

/// A request head that parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The target without its query string.
    pub path: String,
}

/// What a complete (or oversized) head gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Request(Request),
    /// Answer 400.
    Bad(&'static str),
}

/// Parses the request head at the start of `buf` (everything received so far). None: the
/// head is not complete yet, read more (never once `buf` holds [`HEAD_BYTES_MAX`] bytes).
pub fn parse_head(buf: &[u8]) -> Option<Parsed> {
    let Some(end) = head_end(buf) else {
        return (buf.len() >= HEAD_BYTES_MAX).then_some(Parsed::Bad("request head too large"));
    };
    Some(parse_complete_head(buf, end))
}

/// Parses the head `buf[..end]` (`end` from [`head_end`]).
fn parse_complete_head(buf: &[u8], end: usize) -> Parsed {
    if end > HEAD_BYTES_MAX {
        return Parsed::Bad("request head too large");
    }
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Parsed::Bad("request head is not UTF-8");
    };
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad("request line is not METHOD TARGET VERSION");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Parsed::Bad("bad method");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Parsed::Bad("bad request target");
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Parsed::Bad("not HTTP/1.0 or HTTP/1.1");
    }
    let mut headers = 0;
    for line in lines.take_while(|l| !l.is_empty()) {
        headers += 1;
        if headers > HEADERS_MAX {
            return Parsed::Bad("too many header lines");
        }
        let Some((name, _value)) = line.split_once(':') else {
            return Parsed::Bad("header line without a colon");
        };
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Parsed::Bad("bad header name");
        }
    }
    let path = target.split('?').next().unwrap_or(target).to_string();
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    Parsed::Request(Request { method, path })
}

/// Length of the head including its blank line (CRLF CRLF, or bare LFs), if complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let scan = &buf[..buf.len().min(HEAD_BYTES_MAX + 4)];
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'\n', &scan[at..]) {
        let nl = at + i;
        let rest = &scan[nl + 1..];
        if rest.starts_with(b"\n") {
            return Some(nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(nl + 3);
        }
        at = nl + 1;
    }
    None
}

/// A complete response: status line, headers and (except for HEAD) the body.
pub fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

/// The answer to what [`parse_head`] gave. `render` is called for a scrape only.
pub fn answer(parsed: &Parsed, render: impl FnOnce() -> String) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match parsed {
        Parsed::Request(r) if r.path == "/metrics" => match r.method {
            Method::Get | Method::Head => response(
                200,
                super::text::CONTENT_TYPE,
                render().as_bytes(),
                r.method == Method::Head,
            ),
            Method::Other => response(405, TEXT, b"only GET and HEAD\n", false),
        },
        Parsed::Request(r) => response(
            404,
            TEXT,
            b"not found; try /metrics\n",
            r.method == Method::Head,
        ),
        Parsed::Bad(why) => response(400, TEXT, format!("bad request: {why}\n").as_bytes(), false),
    }
}

/// Binds `[metrics] listen` on core 0 and serves scrapes there until shutdown; on every
/// other core (or with no address) it does nothing.
pub fn start(core: &Rc<Core>, wiring: &CoreWiring) -> Result<(), NetError> {
    if wiring.core != 0 {
        return Ok(());
    }
    for &addr in wiring.listen.iter() {
        let listener = crate::net::bind(addr)?;
        glommio::spawn_local(accept_loop(listener, core.clone(), wiring.registry.clone())).detach();
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    core: Rc<Core>,
    registry: std::sync::Arc<MetricsRegistry>,
) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            // Never has permits: resolves only when shutdown closes it.
            let _ = core.shutdown.acquire(1).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                eprintln!("ringmail: metrics: accept: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if active.get() >= CONNECTIONS_MAX {
            drop(stream);
            continue;
        }
        active.set(active.get() + 1);
        let active = active.clone();
        let registry = registry.clone();
        glommio::spawn_local(async move {
            let _ = serve(stream, &registry).await;
            active.set(active.get() - 1);
        })
        .detach();
    }
}

/// One connection: read the head, answer, close.
async fn serve(mut stream: TcpStream, registry: &MetricsRegistry) -> io::Result<()> {
    stream
        .set_write_timeout(Some(Duration::from_millis(TIMEOUT_MS_WRITE)))
        .map_err(io::Error::from)?;
    let deadline = std::time::Instant::now() + Duration::from_millis(TIMEOUT_MS_READ);
    let mut buf = vec![0u8; HEAD_BYTES_MAX];
    let mut len = 0;
    let parsed = loop {
        // Some once `len` reaches the buffer's size: a read below always has room.
        if let Some(parsed) = parse_head(&buf[..len]) {
            break parsed;
        }
        // Each read may take only what is left of the whole head's time.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(io::Error::from)?;
        match stream.read(&mut buf[len..]).await {
            Ok(0) => return Ok(()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(()),
            Err(e) => return Err(e),
        }
    };
    let out = answer(&parsed, || registry.render());
    stream.write_all(&out).await?;
    stream.flush().await?;
    stream.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str) -> Parsed {
        Parsed::Request(Request {
            method,
            path: path.into(),
        })
    }

    fn parse_whole(buf: &[u8]) -> Parsed {
        parse_head(buf).unwrap_or_else(|| panic!("incomplete: {buf:?}"))
    }

    /// Feeds `input` one prefix at a time, as reads may split it: every prefix short of
    /// the head's end is incomplete (None), the first that holds the head gives `want`, and so
    /// does every longer one.
    fn at_every_split(input: &[u8], head_len: usize, want: &Parsed) {
        for n in 0..=input.len() {
            let got = parse_head(&input[..n]);
            if n < head_len {
                assert_eq!(got, None, "prefix {n} of {input:?}");
            } else {
                assert_eq!(got.as_ref(), Some(want), "prefix {n} of {input:?}");
            }
        }
    }

    #[test]
    fn a_scrape_parses_at_every_split() {
        let input = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9187\r\nUser-Agent: curl/8\r\nAccept: */*\r\n\r\n";
        at_every_split(input, input.len(), &request(Method::Get, "/metrics"));
        // Whatever follows the head (a body, a pipelined request) is not ours to read.
        let mut more = input.to_vec();
        more.extend_from_slice(b"GET /other HTTP/1.1\r\n\r\n");
        at_every_split(&more, input.len(), &request(Method::Get, "/metrics"));
    }

    #[test]
    fn bare_lf_heads_and_query_strings_parse() {
        let input = b"HEAD /metrics?name[]=x HTTP/1.0\nHost: a\n\n";
        at_every_split(input, input.len(), &request(Method::Head, "/metrics"));
        let input = b"GET /other HTTP/1.1\r\n\r\n";
        at_every_split(input, input.len(), &request(Method::Get, "/other"));
    }

    #[test]
    fn malformed_heads_are_bad_requests_at_every_split() {
        for input in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET http://x/metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/2.0\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n",
            b"GET /metrics HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET /m\xffetrics HTTP/1.1\r\n\r\n",
            b"\r\n\r\n",
        ] {
            let got = parse_whole(input);
            assert!(matches!(got, Parsed::Bad(_)), "{input:?}: {got:?}");
            at_every_split(input, input.len(), &got);
        }
    }

    #[test]
    fn a_head_that_never_ends_is_bad_once_it_reaches_the_limit() {
        let mut input = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while input.len() < HEAD_BYTES_MAX {
            input.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        assert_eq!(parse_head(&input[..HEAD_BYTES_MAX - 1]), None);
        assert!(matches!(
            parse_head(&input[..HEAD_BYTES_MAX]),
            Some(Parsed::Bad("request head too large"))
        ));
        // Too many header lines, within the byte limit.
        let mut input = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for _ in 0..=HEADERS_MAX {
            input.extend_from_slice(b"A: b\r\n");
        }
        input.extend_from_slice(b"\r\n");
        assert_eq!(parse_whole(&input), Parsed::Bad("too many header lines"));
    }

    fn status_and_body(out: &[u8]) -> (String, String) {
        let text = String::from_utf8(out.to_vec()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.lines().next().unwrap().to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(head.contains("\r\nConnection: close"), "{head}");
        // HEAD: the length of the body a GET would get, and no body.
        assert!(length == body.len() || body.is_empty(), "{text}");
        (status, body.to_string())
    }

    #[test]
    fn answers_200_404_405_and_400() {
        let render = || "x_total 1\n".to_string();
        let (s, b) = status_and_body(&answer(&request(Method::Get, "/metrics"), render));
        assert_eq!((s.as_str(), b.as_str()), ("HTTP/1.1 200 OK", "x_total 1\n"));
        let out = answer(&request(Method::Get, "/metrics"), render);
        assert!(String::from_utf8_lossy(&out)
            .contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
        let (s, b) = status_and_body(&answer(&request(Method::Head, "/metrics"), render));
        assert_eq!((s.as_str(), b.as_str()), ("HTTP/1.1 200 OK", ""));
        let (s, _) = status_and_body(&answer(&request(Method::Get, "/other"), || {
            panic!("no scrape for a 404")
        }));
        assert_eq!(s, "HTTP/1.1 404 Not Found");
        let (s, _) = status_and_body(&answer(&request(Method::Other, "/metrics"), || {
            panic!("no scrape for a 405")
        }));
        assert_eq!(s, "HTTP/1.1 405 Method Not Allowed");
        let (s, b) = status_and_body(&answer(
            &parse_whole(b"BREW /pot HTCPCP/1.0\r\n\r\n"),
            || panic!("no scrape for a 400"),
        ));
        assert_eq!(s, "HTTP/1.1 400 Bad Request");
        assert!(b.starts_with("bad request: "), "{b}");
    }
}
