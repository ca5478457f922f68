//! `sink`: a *durable* SMTP sink, the reference a mail server's durable ingest is
//! measured against on a given disk.
//!
//! Postfix's `smtp-sink` answers every message at once and stores nothing: it is the
//! protocol-only ceiling. This sink does the least a server that says "250 = on disk" can
//! do: it appends each message's bytes to one preallocated, zero-filled log file and
//! answers 250 only after a `write` + `fdatasync` that covers them, with group commit
//! (one flush in flight; every message that arrives meanwhile joins the next one). No
//! parsing beyond the commands, no index, no headers added. What it reaches at N
//! connections is what the disk's flush latency allows any such server.
//!
//! `--files 2` adds a second log (one 64-byte index entry per message) written with each
//! batch and flushed *concurrently* with the first: the cost of keeping an index log apart
//! from the message log, as ringmail's store does (blob log + meta log).
//!
//! Shape: one thread per connection (at most `--connections-max`), blocking sockets; the
//! thread that finds no flush in flight writes and flushes the pending batch itself.
//! Limits: command lines 512 bytes, text lines 1000 (RFC 5321 §4.5.3.1), `--size-max`
//! per message, pending batch 64 MiB (back-pressure), idle timeout. The log files are
//! rings (`--log-bytes`): a sink keeps nothing, the bytes only have to reach the disk.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use crate::args::{number, resolve_target, ArgsError};
use crate::mailrun::RawArgs;

pub const SINK_USAGE: &str = "\
usage: ringmail-loadgen sink --listen HOST:PORT --dir DIR [options]

A durable SMTP sink: every message is appended to a log file in DIR and answered
250 only after write + fdatasync (group commit). Serves until killed. Prints
`listening on ADDR` when ready (port 0 picks a free port).

  --listen HOST:PORT       loopback unless --allow-remote
  --dir DIR                where the log files go (created; files sink-0.log, sink-1.log)
  --fsync always|never     never: write without fdatasync (default always)
  --files 1|2              2: also an index log flushed concurrently (default 1)
  --log-bytes N            size of the (zero-filled, reused as a ring) log, default 268435456
  --size-max N             largest message accepted, bytes (default 67108864)
  --connections-max N      more are answered 421 (default 1000)
  --timeout-secs N         idle timeout per connection (default 300)
  --allow-remote           listen on a non-loopback address";

const VALUE_OPTIONS: [&str; 8] = [
    "--listen",
    "--dir",
    "--fsync",
    "--files",
    "--log-bytes",
    "--size-max",
    "--connections-max",
    "--timeout-secs",
];
const FLAG_OPTIONS: [&str; 1] = ["--allow-remote"];

/// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
pub const COMMAND_LINE_BYTES_MAX: usize = 512;
/// Longest text line in DATA, CRLF included (RFC 5321 §4.5.3.1.6).
pub const TEXT_LINE_BYTES_MAX: usize = 1000;
/// Messages waiting for the flush in flight beyond this wait for it to be taken.
pub const PENDING_BYTES_MAX: usize = 64 << 20;
/// Bytes of the second log per message.
pub const INDEX_ENTRY_BYTES: usize = 64;
const LOG_BYTES_MIN: u64 = 1 << 20;
const LOG_BYTES_MAX: u64 = 64 << 30;
const ZERO_CHUNK_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkConfig {
    pub listen: SocketAddr,
    pub dir: PathBuf,
    pub fsync: bool,
    pub files: usize,
    pub log_bytes: u64,
    pub size_max: usize,
    pub connections_max: usize,
    pub timeout_idle: Duration,
}

/// What can stop the sink (a failing connection only ends that connection).
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("log file {path}: {source}")]
    Log { path: PathBuf, source: io::Error },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

pub fn parse_sink_args(args: impl Iterator<Item = String>) -> Result<SinkConfig, ArgsError> {
    let mut problems = Vec::new();
    let raw = RawArgs::collect(args, &VALUE_OPTIONS, &FLAG_OPTIONS, &mut problems);
    let single = |name: &str, problems: &mut Vec<String>| raw.single(name, problems);
    let allow_remote = raw.flag("--allow-remote");
    let listen = match single("--listen", &mut problems) {
        Some(text) => resolve_target(&text, allow_remote)
            .map_err(|e| problems.push(e.replace("--target", "--listen")))
            .ok(),
        None => {
            problems.push("--listen HOST:PORT is required".into());
            None
        }
    };
    let dir = single("--dir", &mut problems).map(PathBuf::from);
    if dir.is_none() {
        problems.push("--dir DIR is required".into());
    }
    let fsync = match single("--fsync", &mut problems).as_deref() {
        None | Some("always") => true,
        Some("never") => false,
        Some(other) => {
            problems.push(format!("--fsync `{other}`: expected always or never"));
            true
        }
    };
    let files = number(
        &single("--files", &mut problems),
        "--files",
        1,
        1,
        2,
        &mut problems,
    );
    let log_bytes = number(
        &single("--log-bytes", &mut problems),
        "--log-bytes",
        256 << 20,
        LOG_BYTES_MIN,
        LOG_BYTES_MAX,
        &mut problems,
    );
    let size_max = number(
        &single("--size-max", &mut problems),
        "--size-max",
        64 << 20,
        1,
        1 << 30,
        &mut problems,
    );
    let connections_max = number(
        &single("--connections-max", &mut problems),
        "--connections-max",
        1000,
        1,
        100_000,
        &mut problems,
    );
    let timeout_secs = number(
        &single("--timeout-secs", &mut problems),
        "--timeout-secs",
        300,
        1,
        86_400,
        &mut problems,
    );
    match (listen, dir) {
        (Some(listen), Some(dir)) if problems.is_empty() => Ok(SinkConfig {
            listen,
            dir,
            fsync,
            files: files as usize,
            log_bytes,
            size_max: size_max as usize,
            connections_max: connections_max as usize,
            timeout_idle: Duration::from_secs(timeout_secs),
        }),
        _ => Err(ArgsError::Invalid(problems)),
    }
}

/// Binds, prepares the logs, calls `ready` with the bound address, then serves until the
/// process is killed (or the listener fails).
pub fn run_sink(cfg: &SinkConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), SinkError> {
    let journal = Arc::new(Journal::open(cfg)?);
    let listener = TcpListener::bind(cfg.listen).map_err(|source| SinkError::Listen {
        addr: cfg.listen,
        source,
    })?;
    let local = listener.local_addr().map_err(|source| SinkError::Listen {
        addr: cfg.listen,
        source,
    })?;
    ready(local);
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            continue; // a connection reset before accept: nothing to serve
        };
        if open.fetch_add(1, Ordering::AcqRel) >= cfg.connections_max {
            open.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.write_all(b"421 4.3.2 Too many connections\r\n");
            continue;
        }
        let (journal, count, cfg) = (journal.clone(), open.clone(), cfg.clone());
        let spawned = std::thread::Builder::new()
            .name("sink-conn".into())
            .spawn(move || {
                let _ = Session::new(&cfg, &journal).serve(stream);
                count.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            // Out of threads for now: this connection is closed, the sink goes on.
            open.fetch_sub(1, Ordering::AcqRel);
            eprintln!("ringmail-loadgen sink: no thread for a connection: {e}");
        }
    }
    Ok(())
}

/// The message log (and the optional index log) with group commit.
struct Journal {
    log: Ring,
    index: Option<IndexFlusher>,
    fsync: bool,
    state: Mutex<Pending>,
    changed: Condvar,
}

struct Pending {
    batch: Batch,
    /// A batch is being written and flushed (by the thread that took it).
    flushing: bool,
}

/// The messages waiting for the next flush, and where their outcome will be.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    messages: usize,
    outcome: Arc<OnceLock<Result<(), String>>>,
}

/// One preallocated, zero-filled file written as a ring.
struct Ring {
    file: std::fs::File,
    path: PathBuf,
    bytes: u64,
    offset: Mutex<u64>,
}

/// The second log's writer thread: one request per batch, flushed while the caller
/// flushes the first log.
struct IndexFlusher {
    requests: mpsc::SyncSender<usize>,
    results: Mutex<mpsc::Receiver<Result<(), String>>>,
}

impl Journal {
    fn open(cfg: &SinkConfig) -> Result<Journal, SinkError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|source| SinkError::Log {
            path: cfg.dir.clone(),
            source,
        })?;
        let log = Ring::create(&cfg.dir.join("sink-0.log"), cfg.log_bytes)?;
        let index = if cfg.files == 2 {
            let bytes = (cfg.log_bytes / 16).max(LOG_BYTES_MIN);
            let ring = Ring::create(&cfg.dir.join("sink-1.log"), bytes)?;
            Some(IndexFlusher::start(ring, cfg.fsync)?)
        } else {
            None
        };
        Ok(Journal {
            log,
            index,
            fsync: cfg.fsync,
            state: Mutex::new(Pending {
                batch: Batch::default(),
                flushing: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// Returns once `message` is written (and flushed, with `fsync`), or why not.
    fn commit(&self, message: &[u8]) -> Result<(), String> {
        let mut st = self.lock();
        while !st.batch.bytes.is_empty() && st.batch.bytes.len() + message.len() > PENDING_BYTES_MAX
        {
            st = self.wait(st);
        }
        st.batch.bytes.extend_from_slice(message);
        st.batch.messages += 1;
        let outcome = st.batch.outcome.clone();
        loop {
            if let Some(done) = outcome.get() {
                return done.clone();
            }
            if !st.flushing {
                // Ours is the pending batch (a taken one is in flight or done): lead it.
                let batch = std::mem::take(&mut st.batch);
                st.flushing = true;
                drop(st);
                self.changed.notify_all(); // room for those held back by PENDING_BYTES_MAX
                let done = self.write_batch(&batch.bytes, batch.messages);
                let _ = batch.outcome.set(done.clone());
                self.lock().flushing = false;
                self.changed.notify_all();
                return done;
            }
            st = self.wait(st);
        }
    }

    fn write_batch(&self, bytes: &[u8], messages: usize) -> Result<(), String> {
        if let Some(index) = &self.index {
            index.request(messages)?;
        }
        let mine = self.log.append(bytes, self.fsync);
        let other = match &self.index {
            Some(index) => index.result(),
            None => Ok(()),
        };
        mine.and(other)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means a connection thread panicked; the state is plain data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(
        &self,
        g: std::sync::MutexGuard<'a, Pending>,
    ) -> std::sync::MutexGuard<'a, Pending> {
        self.changed.wait(g).unwrap_or_else(|e| e.into_inner())
    }
}

impl Ring {
    fn create(path: &Path, bytes: u64) -> Result<Ring, SinkError> {
        let err = |source| SinkError::Log {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .map_err(err)?;
        // Written zeros (not fallocate): later writes overwrite allocated, synced blocks,
        // so an fdatasync needs no journal commit, as in ringmail's store.
        let zeros = vec![0u8; ZERO_CHUNK_BYTES];
        let mut at = 0u64;
        while at < bytes {
            let n = (bytes - at).min(ZERO_CHUNK_BYTES as u64) as usize;
            file.write_all_at(&zeros[..n], at).map_err(err)?;
            at += n as u64;
        }
        file.sync_all().map_err(err)?;
        Ok(Ring {
            file,
            path: path.to_path_buf(),
            bytes,
            offset: Mutex::new(0),
        })
    }

    /// Writes `data` at the ring's offset (wrapping), then fdatasync when `sync`.
    fn append(&self, data: &[u8], sync: bool) -> Result<(), String> {
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let mut rest = data;
        while !rest.is_empty() {
            let n = rest.len().min((self.bytes - *offset) as usize);
            self.file
                .write_all_at(&rest[..n], *offset)
                .map_err(|e| format!("{}: write: {e}", self.path.display()))?;
            rest = &rest[n..];
            *offset = (*offset + n as u64) % self.bytes;
        }
        if sync {
            self.file
                .sync_data()
                .map_err(|e| format!("{}: fdatasync: {e}", self.path.display()))?;
        }
        Ok(())
    }
}

impl IndexFlusher {
    fn start(ring: Ring, fsync: bool) -> Result<IndexFlusher, SinkError> {
        let (requests, rx) = mpsc::sync_channel::<usize>(1);
        let (tx, results) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("sink-index".into())
            .spawn(move || {
                let mut entries = Vec::new();
                for messages in rx {
                    entries.clear();
                    entries.resize(messages * INDEX_ENTRY_BYTES, 0x5a);
                    let done = ring.append(&entries, fsync);
                    if tx.send(done).is_err() {
                        return;
                    }
                }
            })
            .map_err(SinkError::Thread)?;
        Ok(IndexFlusher {
            requests,
            results: Mutex::new(results),
        })
    }

    fn request(&self, messages: usize) -> Result<(), String> {
        self.requests
            .send(messages)
            .map_err(|_| "index log writer stopped".to_string())
    }

    fn result(&self) -> Result<(), String> {
        let results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        match results.recv() {
            Ok(r) => r,
            Err(_) => Err("index log writer stopped".into()),
        }
    }
}

/// One line read with a limit.
enum Line {
    /// The line, with its line end, is in the buffer.
    Complete,
    /// Longer than the limit: the rest up to LF was read and dropped.
    TooLong,
    /// The peer closed the connection.
    Closed,
}

/// Reads up to and including the next LF into `line`, at most `max` bytes kept.
fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<Line> {
    line.clear();
    let mut too_long = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok(Line::Closed);
        }
        let (take, end) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if !too_long && line.len() + take <= max {
            line.extend_from_slice(&available[..take]);
        } else {
            too_long = true;
            line.clear();
        }
        r.consume(take);
        if end {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            });
        }
    }
}

struct Session<'a> {
    cfg: &'a SinkConfig,
    journal: &'a Journal,
    out: Vec<u8>,
    mail: bool,
    recipients: usize,
}

impl<'a> Session<'a> {
    fn new(cfg: &'a SinkConfig, journal: &'a Journal) -> Session<'a> {
        Session {
            cfg,
            journal,
            out: Vec::with_capacity(1024),
            mail: false,
            recipients: 0,
        }
    }

    fn serve(&mut self, stream: TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.cfg.timeout_idle))?;
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::with_capacity(64 << 10, stream);
        writer.write_all(b"220 sink ESMTP ringmail-loadgen durable sink\r\n")?;
        let mut line = Vec::with_capacity(COMMAND_LINE_BYTES_MAX);
        let mut message = Vec::new();
        loop {
            let read = match read_line(&mut reader, &mut line, COMMAND_LINE_BYTES_MAX) {
                Ok(read) => read,
                Err(e) if is_timeout(&e) => {
                    self.out.extend_from_slice(b"421 4.4.2 Idle timeout\r\n");
                    return writer.write_all(&self.out);
                }
                Err(e) => return Err(e),
            };
            let quit = match read {
                Line::Closed => return Ok(()),
                Line::TooLong => {
                    self.reply("500 5.5.2 Line too long");
                    false
                }
                Line::Complete => {
                    let verb = line.get(..4).map(<[u8]>::to_ascii_uppercase);
                    match verb.as_deref().unwrap_or(b"") {
                        b"EHLO" => self.handle_ehlo(),
                        b"HELO" => self.reply("250 sink"),
                        b"MAIL" => self.handle_mail(),
                        b"RCPT" => self.handle_rcpt(),
                        b"DATA" => {
                            self.handle_data(&mut reader, &mut writer, &mut line, &mut message)?
                        }
                        b"RSET" => self.handle_rset(),
                        b"NOOP" => self.reply("250 2.0.0 Ok"),
                        b"VRFY" => self.reply("252 2.1.5 Cannot verify"),
                        b"QUIT" => {
                            self.reply("221 2.0.0 Bye");
                            true
                        }
                        _ => self.reply("502 5.5.2 Command not recognized"),
                    }
                }
            };
            // Pipelining: answer a group at once, when nothing more of it is buffered.
            if quit || reader.buffer().is_empty() {
                writer.write_all(&self.out)?;
                self.out.clear();
            }
            if quit {
                return Ok(());
            }
        }
    }

    fn reply(&mut self, text: &str) -> bool {
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        false
    }

    fn handle_ehlo(&mut self) -> bool {
        let text = format!(
            "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE {}\r\n250 ENHANCEDSTATUSCODES",
            self.cfg.size_max
        );
        self.reset();
        self.reply(&text)
    }

    fn handle_mail(&mut self) -> bool {
        if self.mail {
            return self.reply("503 5.5.1 MAIL already given");
        }
        self.mail = true;
        self.reply("250 2.1.0 Ok")
    }

    fn handle_rcpt(&mut self) -> bool {
        if !self.mail {
            return self.reply("503 5.5.1 MAIL first");
        }
        self.recipients += 1;
        self.reply("250 2.1.5 Ok")
    }

    fn handle_rset(&mut self) -> bool {
        self.reset();
        self.reply("250 2.0.0 Ok")
    }

    fn reset(&mut self) {
        self.mail = false;
        self.recipients = 0;
    }

    /// 354, the message up to `<CRLF>.<CRLF>` (only that ends it), then the commit and
    /// the final reply.
    fn handle_data(
        &mut self,
        reader: &mut impl BufRead,
        writer: &mut TcpStream,
        line: &mut Vec<u8>,
        message: &mut Vec<u8>,
    ) -> io::Result<bool> {
        if self.recipients == 0 {
            return Ok(self.reply("503 5.5.1 RCPT first"));
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>");
        writer.write_all(&self.out)?;
        self.out.clear();
        message.clear();
        let (mut too_big, mut too_long) = (false, false);
        loop {
            match read_line(reader, line, TEXT_LINE_BYTES_MAX)? {
                Line::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                Line::TooLong => too_long = true,
                Line::Complete if line.as_slice() == b".\r\n" => break,
                Line::Complete => {
                    if message.len() + line.len() > self.cfg.size_max {
                        too_big = true;
                    } else if !too_big && !too_long {
                        message.extend_from_slice(line);
                    }
                }
            }
        }
        self.reset();
        if too_long {
            return Ok(self.reply("500 5.5.6 Text line too long"));
        }
        if too_big {
            return Ok(self.reply("552 5.3.4 Message too big"));
        }
        Ok(match self.journal.commit(message) {
            Ok(()) => self.reply("250 2.0.0 Ok: on disk"),
            Err(_) => self.reply("451 4.3.0 Write failed"),
        })
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<SinkConfig, ArgsError> {
        parse_sink_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults_and_required_options() {
        let c = parse(&["--listen", "127.0.0.1:0", "--dir", "/tmp/x"]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:0".parse().unwrap());
        assert!(c.fsync);
        assert_eq!(
            (c.files, c.log_bytes, c.connections_max),
            (1, 256 << 20, 1000)
        );
        let Err(ArgsError::Invalid(problems)) = parse(&[]) else {
            panic!("accepted no options");
        };
        assert_eq!(
            problems,
            ["--listen HOST:PORT is required", "--dir DIR is required"]
        );
    }

    #[test]
    fn bad_values_are_all_reported() {
        let Err(ArgsError::Invalid(problems)) = parse(&[
            "--listen",
            "192.0.2.1:25",
            "--dir",
            "d",
            "--fsync",
            "sometimes",
            "--files",
            "3",
        ]) else {
            panic!("accepted bad values");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("refusing non-loopback"));
        assert!(problems[1].contains("--fsync `sometimes`"));
        assert!(problems[2].contains("--files `3`"));
    }

    #[test]
    fn read_line_limits_and_line_ends() {
        let mut input: &[u8] = b"short\r\nxxxxxxxxxxxx\r\n.\n";
        let mut line = Vec::new();
        assert!(matches!(
            read_line(&mut input, &mut line, 8),
            Ok(Line::Complete)
        ));
        assert_eq!(line, b"short\r\n");
        assert!(matches!(
            read_line(&mut input, &mut line, 8),
            Ok(Line::TooLong)
        ));
        assert!(matches!(
            read_line(&mut input, &mut line, 8),
            Ok(Line::Complete)
        ));
        assert_eq!(line, b".\n", "a bare-LF dot line is a line, not the end");
        assert!(matches!(
            read_line(&mut input, &mut line, 8),
            Ok(Line::Closed)
        ));
    }
}
