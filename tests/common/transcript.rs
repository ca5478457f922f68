//! The transcript runner of the integration tests (format: `tests/transcripts/README`), shared
//! by `tests/transcripts.rs` (SMTP and IMAP files) and `tests/pop3_clients.rs` (POP3 files):
//! `C:` sends the text + CRLF, `C~:` sends exact bytes with the escapes `\r \n \t \\ \xNN`
//! and `\{N:text}`, `S:` expects exactly one line (`{*}` matches any run of bytes other than
//! CR and LF), `S! close` expects the server to close the connection, `C! reconnect` opens a
//! new connection to the same server, `C! starttls` starts TLS on this connection (a rustls
//! client trusting the server's certificate; everything after it is encrypted). Consecutive
//! `C` lines are sent in one write when the next `S` line (or `C!` directive) is reached, so
//! a block of client lines arrives pipelined, as written: bytes after a STARTTLS command in
//! the same block go out in the clear in the same write, and whatever the server answers to
//! them makes the file fail (a line no `S:` expects, or garbage in the TLS handshake). Each
//! test file checks its own greeting on top of [`parse_lines`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{show, IO_TIMEOUT};

/// Worker threads running transcript files (each with its own 2-core server).
const RUNNER_THREADS: usize = 2;
/// How long to wait for output that no `S:` line expects, after the last line of a file.
const EXTRA_OUTPUT_WAIT: Duration = Duration::from_millis(300);
/// Most bytes one `\{N:text}` escape may produce.
const REPEAT_BYTES_MAX: usize = 1 << 20;
/// Longest server line the runner reads (longer ones fail as "not ended by CRLF").
const SERVER_LINE_BYTES_MAX: u64 = 4096;
/// The name the client asks for in its TLS handshake: an IP SAN of the generated certificate.
const TLS_SERVER_NAME: &str = "127.0.0.1";

/// One instruction of a transcript, with its 1-based line number in the file
/// (`Reconnect`: `C! reconnect`, a new connection to the same server, IMAP transcripts;
/// `StartTls`: `C! starttls`, the client starts TLS here on the same connection).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Send { line: usize, bytes: Vec<u8> },
    Expect { line: usize, pattern: Vec<u8> },
    Close { line: usize },
    Reconnect { line: usize },
    StartTls { line: usize },
}

/// Decodes `\r \n \t \\ \xNN` and `\{N:text}` (text, without `}`, repeated N times); any
/// other backslash sequence is an error.
pub fn decode_escapes(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = s
                    .get(i + 2..i + 4)
                    .ok_or_else(|| format!("truncated \\x escape at byte {i}"))?;
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad \\x escape {hex:?} at byte {i}"))?;
                out.push(v);
                i += 2;
            }
            Some(b'{') => {
                let close = s[i..]
                    .find('}')
                    .map(|at| i + at)
                    .ok_or_else(|| format!("unterminated \\{{ escape at byte {i}"))?;
                let (count, text) = s[i + 2..close]
                    .split_once(':')
                    .ok_or_else(|| format!("\\{{N:text}} without `:` at byte {i}"))?;
                let count: usize = count
                    .parse()
                    .map_err(|_| format!("bad repeat count {count:?} at byte {i}"))?;
                if text.is_empty() || count.saturating_mul(text.len()) > REPEAT_BYTES_MAX {
                    return Err(format!(
                        "repeat escape at byte {i}: empty or over {REPEAT_BYTES_MAX} bytes"
                    ));
                }
                out.extend(text.as_bytes().repeat(count));
                i = close + 1;
                continue;
            }
            Some(&c) => return Err(format!("unknown escape \\{} at byte {i}", c as char)),
            None => return Err("trailing backslash".into()),
        }
        i += 2;
    }
    Ok(out)
}

/// Parses the directives of a transcript file (any protocol).
pub fn parse_lines(text: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        let arg = |prefix: &str| -> Option<String> {
            let rest = l.strip_prefix(prefix)?;
            Some(rest.strip_prefix(' ').unwrap_or(rest).to_string())
        };
        if let Some(text) = arg("C~:") {
            let bytes = decode_escapes(&text).map_err(|e| format!("line {line}: {e}"))?;
            out.push(Line::Send { line, bytes });
        } else if let Some(text) = arg("C:") {
            let mut bytes = text.into_bytes();
            bytes.extend_from_slice(b"\r\n");
            out.push(Line::Send { line, bytes });
        } else if let Some(text) = arg("S:") {
            out.push(Line::Expect {
                line,
                pattern: text.into_bytes(),
            });
        } else if l.trim_end() == "S! close" {
            out.push(Line::Close { line });
        } else if l.trim_end() == "C! reconnect" {
            out.push(Line::Reconnect { line });
        } else if l.trim_end() == "C! starttls" {
            out.push(Line::StartTls { line });
        } else {
            return Err(format!(
                "line {line}: not a C:, C~:, S:, S! close, C! reconnect, C! starttls or # \
                 line: {l:?}"
            ));
        }
    }
    Ok(out)
}

/// Matches a server line (without CRLF) against a pattern in which `{*}` stands for any
/// run of bytes other than CR and LF.
pub fn line_matches(pattern: &[u8], line: &[u8]) -> bool {
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return false;
    }
    let mut parts = Vec::new();
    let mut rest = pattern;
    while let Some(at) = rest.windows(3).position(|w| w == b"{*}") {
        parts.push(&rest[..at]);
        rest = &rest[at + 3..];
    }
    parts.push(rest);
    if parts.len() == 1 {
        return pattern == line;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if line.len() < first.len() + last.len() || !line.starts_with(first) || !line.ends_with(last) {
        return false;
    }
    let mut middle = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        if part.is_empty() {
            continue;
        }
        match middle.windows(part.len()).position(|w| w == *part) {
            Some(at) => middle = &middle[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// The byte stream of one connection: in the clear, then (after `C! starttls`) over TLS.
enum Transport {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}

/// A blocking client connection with read/write timeouts, reading the server line by line.
struct Conn {
    reader: BufReader<Transport>,
}

impl Conn {
    fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            reader: BufReader::new(Transport::Plain(stream)),
        })
    }

    fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Transport::Tls(_))
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.reader.get_ref().tcp().set_read_timeout(Some(t))
    }

    /// Writes all of `bytes` (one write in the clear; over TLS, as few records as fit).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let transport = self.reader.get_mut();
        transport.write_all(bytes)?;
        transport.flush()
    }

    /// One raw line including its terminator; empty at EOF (a reset, or a TLS peer closing
    /// without close_notify, counts as EOF).
    fn read_raw_line(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        match (&mut self.reader)
            .take(SERVER_LINE_BYTES_MAX)
            .read_until(b'\n', &mut buf)
        {
            Ok(_) => Ok(buf),
            Err(e)
                if e.kind() == io::ErrorKind::ConnectionReset
                    || (e.kind() == io::ErrorKind::UnexpectedEof && self.is_tls()) =>
            {
                Ok(buf)
            }
            Err(e) => Err(e),
        }
    }

    /// `C! starttls`: the TLS handshake on this connection, as `name`. Fails if the server
    /// sent bytes that no `S:` line expected (they are buffered in the clear) or if the
    /// handshake fails (for example because plaintext arrived where TLS records belong).
    fn start_tls(self, config: &Arc<ClientConfig>, line: usize) -> Result<Conn, String> {
        if self.is_tls() {
            return Err(format!(
                "line {line}: C! starttls, but TLS is already active"
            ));
        }
        if !self.reader.buffer().is_empty() {
            return Err(format!(
                "line {line}: before C! starttls, the server sent in the clear output that \
                 no S: line expects: `{}`",
                show(self.reader.buffer())
            ));
        }
        let Transport::Plain(mut tcp) = self.reader.into_inner() else {
            unreachable!("checked above");
        };
        let name = ServerName::try_from(TLS_SERVER_NAME)
            .map_err(|e| format!("line {line}: server name {TLS_SERVER_NAME}: {e}"))?;
        let mut tls = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| format!("line {line}: TLS client: {e}"))?;
        while tls.is_handshaking() {
            tls.complete_io(&mut tcp)
                .map_err(|e| format!("line {line}: TLS handshake failed: {e}"))?;
        }
        Ok(Conn {
            reader: BufReader::new(Transport::Tls(Box::new(StreamOwned::new(tls, tcp)))),
        })
    }
}

/// A TLS client configuration (ring provider, TLS 1.2 and 1.3) that trusts exactly the
/// certificates of the PEM file `cert_pem` (the server's generated self-signed certificate).
pub fn tls_client_config(cert_pem: &Path) -> Result<Arc<ClientConfig>, String> {
    let pem = std::fs::read(cert_pem).map_err(|e| format!("{}: {e}", cert_pem.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("{}: {e}", cert_pem.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable certificate: {e}", cert_pem.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", cert_pem.display()));
    }
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client config: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Fails if the server sends anything within [`EXTRA_OUTPUT_WAIT`].
fn no_extra_output(c: &mut Conn, last_line: usize) -> Result<(), String> {
    c.set_read_timeout(EXTRA_OUTPUT_WAIT)
        .map_err(|e| format!("set_read_timeout: {e}"))?;
    match c.read_raw_line() {
        Ok(extra) if !extra.is_empty() => Err(format!(
            "after line {last_line}: unexpected output that no S: line expects: `{}`",
            show(&extra)
        )),
        _ => Ok(()),
    }
}

/// Plays one transcript against a server on `addr`, without TLS: a `C! starttls` in it
/// fails (use [`play_with_tls`]).
pub fn play_at(lines: &[Line], addr: SocketAddr) -> Result<(), String> {
    play(lines, addr, None)
}

/// Plays one transcript against a server on `addr`; `C! starttls` trusts the certificates of
/// the PEM file `cert_pem` (`Server::cert_path()` for the test servers).
pub fn play_with_tls(lines: &[Line], addr: SocketAddr, cert_pem: &Path) -> Result<(), String> {
    let config = tls_client_config(cert_pem)?;
    play(lines, addr, Some(&config))
}

fn play(lines: &[Line], addr: SocketAddr, tls: Option<&Arc<ClientConfig>>) -> Result<(), String> {
    let mut c = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let mut pending: Vec<u8> = Vec::new();
    let flush = |c: &mut Conn, pending: &mut Vec<u8>, line: usize| -> Result<(), String> {
        if pending.is_empty() {
            return Ok(());
        }
        let r = c.send(pending);
        pending.clear();
        r.map_err(|e| format!("line {line}: sending the client lines before it failed: {e}"))
    };
    let mut last_line = 0;
    let mut closed = false;
    for l in lines {
        match l {
            Line::Send { bytes, line } => {
                if closed {
                    return Err(format!("line {line}: the client sends after S! close"));
                }
                pending.extend_from_slice(bytes);
                last_line = *line;
            }
            Line::Expect { line, pattern } => {
                flush(&mut c, &mut pending, *line)?;
                let got = c.read_raw_line().map_err(|e| {
                    format!(
                        "line {line}: expected `{}`, read failed: {e}",
                        show(pattern)
                    )
                })?;
                if got.is_empty() {
                    return Err(format!(
                        "line {line}: expected `{}`, but the server closed the connection",
                        show(pattern)
                    ));
                }
                let Some(text) = got.strip_suffix(b"\r\n") else {
                    return Err(format!(
                        "line {line}: expected `{}`, got a line not ended by CRLF: `{}`",
                        show(pattern),
                        show(&got)
                    ));
                };
                if !line_matches(pattern, text) {
                    return Err(format!(
                        "line {line}:\n    expected `{}`\n    got      `{}`",
                        show(pattern),
                        show(text)
                    ));
                }
                last_line = *line;
            }
            Line::Close { line } => {
                flush(&mut c, &mut pending, *line)?;
                let extra = c
                    .read_raw_line()
                    .map_err(|e| format!("line {line}: expected the server to close: {e}"))?;
                if !extra.is_empty() {
                    return Err(format!(
                        "line {line}: expected the server to close, got `{}`",
                        show(&extra)
                    ));
                }
                closed = true;
                last_line = *line;
            }
            Line::Reconnect { line } => {
                flush(&mut c, &mut pending, *line)?;
                if !closed {
                    no_extra_output(&mut c, last_line)?;
                }
                c = Conn::connect(addr).map_err(|e| format!("line {line}: reconnect: {e}"))?;
                closed = false;
                last_line = *line;
            }
            Line::StartTls { line } => {
                let Some(config) = tls else {
                    return Err(format!(
                        "line {line}: C! starttls needs the server's certificate: play the \
                         file with play_with_tls"
                    ));
                };
                if closed {
                    return Err(format!("line {line}: C! starttls after S! close"));
                }
                // Client lines right before the directive go out in the clear first.
                flush(&mut c, &mut pending, *line)?;
                c = c.start_tls(config, *line)?;
                last_line = *line;
            }
        }
    }
    flush(&mut c, &mut pending, last_line)?;
    if closed {
        return Ok(());
    }
    // Nothing may follow what the transcript expects.
    no_extra_output(&mut c, last_line)
}

/// The `*.txt` files of `tests/transcripts/<proto>`, sorted; panics if there are none.
pub fn transcript_files_of(proto: &str) -> Vec<PathBuf> {
    let dir = super::manifest_dir().join("tests/transcripts").join(proto);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) => panic!("transcript directory {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no *.txt transcripts in {}: nothing would be tested",
        dir.display()
    );
    files
}

/// Runs `files` with `run` on [`RUNNER_THREADS`] threads; panics naming every failure.
pub fn run_files(files: &[PathBuf], run: fn(&Path) -> Result<(), String>) {
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..RUNNER_THREADS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = files.get(i) else { break };
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let result = std::panic::catch_unwind(|| run(path))
                    .unwrap_or_else(|p| Err(format!("panicked: {}", panic_text(&p))));
                if let Err(e) = result {
                    failures.lock().unwrap().push((name, e));
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    if !failures.is_empty() {
        let mut msg = format!(
            "{} of {} transcript(s) failed: {}\n",
            failures.len(),
            files.len(),
            failures
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, e) in &failures {
            msg.push_str(&format!("\n=== {name}\n{e}\n"));
        }
        panic!("{msg}");
    }
    eprintln!("{} transcript(s) passed", files.len());
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "(non-string panic)".into()
    }
}
