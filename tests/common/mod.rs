//! Shared helpers of ringmail's integration tests (each `tests/*.rs` declares `mod common;`).
//!
//! Owns: [`Server`], a real `ringmail serve` process in its own temp dir (config written
//! there, users added with `ringmail user add`, started, stopped with SIGTERM, killed with
//! SIGKILL, restarted on the same data dir, exported); [`Proc`], a child process whose output
//! is captured line by line by reader threads; [`run`], a one-shot command with a deadline;
//! [`parse_mboxrd`] and [`strip_trace`], which turn `ringmail export` output back into the
//! bytes a client sent; and [`SmtpClient`], a tiny blocking std::net SMTP client.
//!
//! Everything is bounded in time: no helper can hang a test, and a `Server` or `Proc` that is
//! still running when dropped (a test panicked) is killed with SIGKILL and reaped.

#![allow(dead_code)] // Every test binary uses a different subset of these helpers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub mod transcript;
pub mod unbound;

/// Host name every test server announces.
pub const HOSTNAME: &str = "mx.example.test";
/// Mailboxes every test server has, with their passwords.
pub const USERS: [(&str, &str); 2] = [
    ("alice@example.test", "alice-Pa55word-7f3a"),
    ("bob@example.test", "bob-Pa55word-c91e"),
];
pub const ALICE: &str = "alice@example.test";
pub const BOB: &str = "bob@example.test";

/// How long `serve` may take to print `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `serve` may take to exit after SIGTERM (drain is 3 s in the test config).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a one-shot command (`user add`, `export`, `check-config`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Read and write timeout of every test socket.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest reply line the SMTP client accepts.
const REPLY_LINE_BYTES_MAX: u64 = 4096;
/// Most lines of one multi-line reply.
const REPLY_LINES_MAX: usize = 64;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringmail")
}

/// The repository root (for `tests/transcripts`, `tests/clients`).
pub fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Config

/// The test configuration of the brief, as a TOML table (`data_dir` filled in).
pub fn base_config(data_dir: &Path) -> toml::Table {
    let text = format!(
        r#"
[server]
hostname = "{HOSTNAME}"
data_dir = "{}"
timeout_ms_drain = 3000
[smtp]
listen = ["127.0.0.1:0"]
max_message_bytes = 10000
max_recipients = 3
[submission]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
[imap]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
line_bytes_max = 8192
allow_plaintext_auth = true
[pop3]
listen = ["127.0.0.1:0"]
listen_tls = ["127.0.0.1:0"]
allow_plaintext_auth = true
[auth]
failure_delay_ms = 200
[domains]
local = ["example.test"]
[store]
fsync = "always"
"#,
        data_dir.display()
    );
    match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => panic!("base config does not parse: {e}\n{text}"),
    }
}

/// Merges `overrides` (TOML text, e.g. `"[smtp]\nmax_message_bytes = 100000"`) into `base`:
/// keys of a section replace the same keys, other keys of the section stay.
pub fn merge_toml(base: &mut toml::Table, overrides: &str) {
    let over: toml::Table = match overrides.parse() {
        Ok(t) => t,
        Err(e) => panic!("config overrides do not parse: {e}\n{overrides}"),
    };
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(section)), toml::Value::Table(new)) => {
                for (k, v) in new {
                    section.insert(k, v);
                }
            }
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Writes the test config (with `overrides` merged) to `dir/ringmail.toml`.
pub fn write_config(dir: &Path, data_dir: &Path, overrides: &str) -> PathBuf {
    let mut table = base_config(data_dir);
    merge_toml(&mut table, overrides);
    let text = match toml::to_string(&table) {
        Ok(t) => t,
        Err(e) => panic!("cannot serialise config: {e}"),
    };
    let path = dir.join("ringmail.toml");
    std::fs::write(&path, text).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Output of one stream of a child, captured line by line.
#[derive(Default)]
struct Captured {
    state: Mutex<CapturedState>,
    changed: Condvar,
}

#[derive(Default)]
struct CapturedState {
    lines: Vec<String>,
    closed: bool,
}

impl Captured {
    fn start(stream: impl Read + Send + 'static) -> Arc<Captured> {
        let cap = Arc::new(Captured::default());
        let c = cap.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf)
                            .trim_end_matches(['\n', '\r'])
                            .to_string();
                        c.state.lock().unwrap().lines.push(line);
                        c.changed.notify_all();
                    }
                }
            }
            c.state.lock().unwrap().closed = true;
            c.changed.notify_all();
        });
        cap
    }

    fn text(&self) -> String {
        let s = self.state.lock().unwrap();
        let mut t = s.lines.join("\n");
        if !t.is_empty() {
            t.push('\n');
        }
        t
    }

    /// Waits until a line from index `from` on satisfies `pred`; returns its index and text.
    /// `None` when the stream closed or `timeout` passed first.
    fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut s = self.state.lock().unwrap();
        let mut next = from;
        loop {
            while next < s.lines.len() {
                if pred(&s.lines[next]) {
                    return Some((next, s.lines[next].clone()));
                }
                next += 1;
            }
            let now = Instant::now();
            if s.closed || now >= deadline {
                return None;
            }
            s = self.changed.wait_timeout(s, deadline - now).unwrap().0;
        }
    }
}

/// A running child whose stdout and stderr are captured. Killed (SIGKILL) and reaped on drop.
pub struct Proc {
    child: Child,
    out: Arc<Captured>,
    err: Arc<Captured>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `cmd` with stdin closed and stdout/stderr piped.
    pub fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let out = Captured::start(child.stdout.take().unwrap());
        let err = Captured::start(child.stderr.take().unwrap());
        Proc {
            child,
            out,
            err,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stdout(&self) -> String {
        self.out.text()
    }

    pub fn stderr(&self) -> String {
        self.err.text()
    }

    /// Both streams, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits for a stdout line (from line index `from` on) satisfying `pred`.
    pub fn wait_stdout_line(
        &self,
        from: usize,
        timeout: Duration,
        pred: &dyn Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        self.out.wait_line(from, timeout, pred)
    }

    /// Sends `sig` unless the child was already reaped.
    pub fn signal(&mut self, sig: i32) {
        if self.try_status().is_some() {
            return;
        }
        // SAFETY: kill(2) on the pid of our own unreaped child.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(
            rc,
            0,
            "kill({}, {sig}): {}",
            self.pid(),
            io::Error::last_os_error()
        );
    }

    /// The exit status if the child has exited (reaps it).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits at most `timeout` for the child to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                // Let the reader threads collect the last output.
                let _ = self
                    .out
                    .wait_line(usize::MAX, Duration::from_secs(2), &|_| false);
                let _ = self
                    .err
                    .wait_line(usize::MAX, Duration::from_secs(2), &|_| false);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) -> ExitStatus {
        self.signal(libc::SIGKILL);
        match self.wait_exit(STOP_TIMEOUT) {
            Some(s) => s,
            None => panic!("pid {} survived SIGKILL", self.pid()),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Result of a one-shot command.
pub struct Run {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Panics with the output unless the command exited 0.
    pub fn assert_ok(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed ({}):\n--- stdout ---\n{}--- stderr ---\n{}",
            self.status,
            self.stdout_text(),
            self.stderr
        );
    }
}

/// Runs `cmd` to completion with `stdin` fed to it, killing it after [`COMMAND_TIMEOUT`].
pub fn run(cmd: &mut Command, stdin: &[u8]) -> Run {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let stdout = out_reader.join().unwrap();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap()).into_owned();
    Run {
        status,
        stdout,
        stderr,
    }
}

/// Standard base64 (RFC 4648) of `bytes`, for AUTH PLAIN tokens.
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                ABC[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// `ringmail ARGS...` run to completion.
pub fn ringmail(args: &[&str], stdin: &[u8]) -> Run {
    run(Command::new(bin()).args(args), stdin)
}

/// `ringmail user add ADDR --password-stdin --config F`, asserted to succeed.
pub fn add_user(config: &Path, address: &str, password: &str) {
    let r = ringmail(
        &[
            "user",
            "add",
            address,
            "--password-stdin",
            "--config",
            config.to_str().unwrap(),
        ],
        format!("{password}\n").as_bytes(),
    );
    r.assert_ok(&format!("user add {address}"));
}

/// The `users` file that `ringmail user add` writes for [`USERS`]. Made once per test
/// process with the real command, then copied into each server's data dir: an argon2id hash
/// costs ~0.4 s in a debug build, and a test run starts dozens of servers.
pub fn users_file() -> &'static [u8] {
    static USERS_FILE: OnceLock<Vec<u8>> = OnceLock::new();
    USERS_FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config = write_config(dir.path(), &data_dir, "");
        for (addr, pw) in USERS {
            add_user(&config, addr, pw);
        }
        std::fs::read(data_dir.join("users")).unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// Server

/// One `ringmail serve` in its own temp dir.
pub struct Server {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    proc: Option<Proc>,
    port: u16,
    imap_port: u16,
    pop3_port: u16,
    /// Every listener of the current run: (name as printed by serve, port).
    listeners: Vec<(String, u16)>,
    /// How many times serve was started on this data dir.
    pub starts: usize,
}

impl Server {
    /// Writes the test config with `overrides` merged in, gives it alice and bob (the users
    /// file of [`users_file`]), starts serve and waits for `ready`.
    pub fn start(overrides: &str) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("ringmail-test-")
            .tempdir()
            .unwrap();
        let data_dir = dir.path().join("data");
        let config_path = write_config(dir.path(), &data_dir, overrides);
        std::fs::create_dir_all(&data_dir).unwrap();
        std::fs::write(data_dir.join("users"), users_file()).unwrap();
        let mut s = Server {
            dir,
            config_path,
            data_dir,
            proc: None,
            port: 0,
            imap_port: 0,
            pop3_port: 0,
            listeners: Vec::new(),
            starts: 0,
        };
        s.launch();
        s
    }

    /// The port of the (first) SMTP listener of the current run.
    pub fn port(&self) -> u16 {
        assert!(self.port != 0, "server is not running");
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// The port of the (first) IMAP listener of the current run.
    pub fn imap_port(&self) -> u16 {
        assert!(
            self.imap_port != 0,
            "server is not running or has no IMAP listener"
        );
        self.imap_port
    }

    /// The port of the (first) POP3 listener of the current run.
    pub fn pop3_port(&self) -> u16 {
        assert!(
            self.pop3_port != 0,
            "server is not running or has no POP3 listener"
        );
        self.pop3_port
    }

    /// The port of the first listener named `name` (`submission`, `submissions`, `imaps`,
    /// `pop3s`, ... as serve prints them).
    pub fn listener_port(&self, name: &str) -> u16 {
        match self.listeners.iter().find(|(n, _)| n == name) {
            Some((_, port)) => *port,
            None => panic!("server is not running or has no {name} listener"),
        }
    }

    /// The generated self-signed certificate (PEM) the TLS listeners serve by default.
    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls").join("self-signed-cert.pem")
    }

    pub fn config_str(&self) -> &str {
        self.config_path.to_str().unwrap()
    }

    /// The running process.
    pub fn proc(&mut self) -> &mut Proc {
        match self.proc.as_mut() {
            Some(p) => p,
            None => panic!("server is not running"),
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.proc.as_mut() {
            Some(p) => p.try_status().is_none(),
            None => false,
        }
    }

    /// Starts serve on the existing config and data dir; waits for `ready`.
    fn launch(&mut self) {
        assert!(self.proc.is_none(), "server already running");
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--config", self.config_str()])
            .current_dir(self.dir.path());
        let p = Proc::spawn(&mut cmd);
        self.starts += 1;
        let ready = p.wait_stdout_line(0, READY_TIMEOUT, &|l| l.starts_with("ready"));
        if ready.is_none() {
            let mut p = p;
            let status = p.wait_exit(Duration::from_millis(200));
            let out = p.output();
            drop(p);
            panic!(
                "serve (start #{}) did not print `ready` within {READY_TIMEOUT:?} (exit: {status:?})\n{out}",
                self.starts
            );
        }
        let port = p
            .wait_stdout_line(0, Duration::ZERO, &|l| {
                l.starts_with("smtp listening on 127.0.0.1:")
            })
            .and_then(|(_, l)| {
                l.rsplit(':')
                    .next()
                    .and_then(|p| p.trim().parse::<u16>().ok())
            });
        match port {
            Some(port) if port != 0 => self.port = port,
            _ => panic!(
                "serve printed `ready` without a `smtp listening on 127.0.0.1:PORT` line\n{}",
                p.output()
            ),
        }
        let other = |proto: &str| {
            let prefix = format!("{proto} listening on 127.0.0.1:");
            p.wait_stdout_line(0, Duration::ZERO, &|l| l.starts_with(&prefix))
                .and_then(|(_, l)| {
                    l.rsplit(':')
                        .next()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                })
                .unwrap_or(0)
        };
        self.imap_port = other("imap");
        self.pop3_port = other("pop3");
        self.listeners = p
            .stdout()
            .lines()
            .filter_map(|l| {
                let (name, addr) = l.split_once(" listening on ")?;
                let port = addr.rsplit(':').next()?.trim().parse().ok()?;
                Some((name.to_string(), port))
            })
            .collect();
        self.proc = Some(p);
    }

    /// SIGTERM; the server must exit 0 within [`STOP_TIMEOUT`]. Returns its stdout.
    pub fn stop(&mut self) -> String {
        match self.try_stop() {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Server::stop`], as a `Result` (for runners that collect failures).
    pub fn try_stop(&mut self) -> Result<String, String> {
        let mut p = match self.proc.take() {
            Some(p) => p,
            None => return Err("stop: server is not running".into()),
        };
        self.port = 0;
        self.imap_port = 0;
        self.pop3_port = 0;
        self.listeners.clear();
        p.signal(libc::SIGTERM);
        Self::wait_stopped(p)
    }

    /// After a SIGTERM sent through [`Server::proc`]: the server must exit 0 within
    /// [`STOP_TIMEOUT`]. Returns its stdout.
    pub fn wait_for_exit(&mut self) -> Result<String, String> {
        let p = match self.proc.take() {
            Some(p) => p,
            None => return Err("wait_for_exit: server is not running".into()),
        };
        self.port = 0;
        self.imap_port = 0;
        self.pop3_port = 0;
        self.listeners.clear();
        Self::wait_stopped(p)
    }

    fn wait_stopped(mut p: Proc) -> Result<String, String> {
        match p.wait_exit(STOP_TIMEOUT) {
            Some(s) if s.success() => Ok(p.stdout()),
            Some(s) => Err(format!(
                "serve exited with {s} after SIGTERM\n{}",
                p.output()
            )),
            None => Err(format!(
                "serve did not exit within {STOP_TIMEOUT:?} after SIGTERM\n{}",
                p.output()
            )),
        }
    }

    /// SIGKILL (a crash): no drain, no flush.
    pub fn kill9(&mut self) {
        let mut p = match self.proc.take() {
            Some(p) => p,
            None => panic!("kill9: server is not running"),
        };
        self.port = 0;
        self.imap_port = 0;
        self.pop3_port = 0;
        self.listeners.clear();
        let status = p.kill9();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "serve exited by itself before SIGKILL ({status})\n{}",
            p.output()
        );
    }

    /// Starts serve again on the same config and data dir (after `stop` or `kill9`).
    pub fn restart(&mut self) {
        self.launch();
    }

    /// `ringmail export ADDR --config F`, parsed into messages (bytes as stored).
    pub fn export(&self, address: &str) -> Vec<Vec<u8>> {
        let r = ringmail(&["export", address, "--config", self.config_str()], b"");
        r.assert_ok(&format!("export {address}"));
        match parse_mboxrd(&r.stdout) {
            Ok(m) => m,
            Err(e) => panic!(
                "export {address}: not mboxrd: {e}\n{}",
                String::from_utf8_lossy(&r.stdout)
            ),
        }
    }

    /// Delivers `messages` from `from` to `to` over one SMTP connection (EHLO client.test);
    /// every one must be accepted with 250.
    pub fn deliver<M: AsRef<[u8]>>(&self, from: &str, to: &str, messages: &[M]) {
        let mut c = self.connect();
        c.expect("EHLO client.test", 250);
        for (i, m) in messages.iter().enumerate() {
            let r = c
                .send_mail(from, &[to], m.as_ref())
                .unwrap_or_else(|e| panic!("delivering message {i} to {to}: {e}"));
            assert_eq!(r.code, 250, "delivering message {i} to {to}: {r:?}");
        }
        c.quit();
    }

    /// A new SMTP connection to this server, greeting read and checked.
    pub fn connect(&self) -> SmtpClient {
        let mut c = SmtpClient::connect(self.addr())
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.addr()));
        let g = c.read_reply().unwrap();
        assert_eq!(g.code, 220, "greeting: {g:?}");
        c
    }

    /// Current stdout and stderr of the running server.
    pub fn output(&self) -> String {
        match &self.proc {
            Some(p) => p.output(),
            None => "(not running)".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// mboxrd and trace headers

/// Splits `ringmail export` output into the messages as stored: a message starts after a
/// `From ` line that opens the file or follows an empty line; one added `\n` before the
/// separator (or the end) is dropped, plus one more if the message then ends in a bare `\n`
/// (the one export added to a message not ending in `\n`: stored messages end in CRLF); a
/// line `>...>From ` loses one `>`.
pub fn parse_mboxrd(data: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        lines.push(&rest[..end]);
        rest = &rest[end..];
    }
    if lines.last().is_some_and(|l| !l.ends_with(b"\n")) {
        return Err("output does not end with a newline".into());
    }
    let mut starts = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with(b"From ") && (i == 0 || lines[i - 1] == b"\n") {
            starts.push(i);
        } else if i == 0 {
            return Err(format!(
                "first line is not a `From ` line: {:?}",
                String::from_utf8_lossy(l)
            ));
        }
    }
    let mut messages = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        let body = &lines[s + 1..end];
        if body.last() != Some(&&b"\n"[..]) {
            return Err(format!(
                "message {} (line {}) does not end with an empty line",
                k + 1,
                s + 1
            ));
        }
        let mut msg = Vec::new();
        for l in &body[..body.len() - 1] {
            let gts = l.iter().take_while(|&&b| b == b'>').count();
            if gts > 0 && l[gts..].starts_with(b"From ") {
                msg.extend_from_slice(&l[1..]);
            } else {
                msg.extend_from_slice(l);
            }
        }
        if msg.ends_with(b"\n") && !msg.ends_with(b"\r\n") {
            msg.pop();
        }
        messages.push(msg);
    }
    Ok(messages)
}

/// The trace headers the server prepended, and the message as the client sent it.
pub struct Traced<'a> {
    /// The reverse-path inside `Return-Path: <...>`.
    pub return_path: String,
    /// The whole folded `Received:` header, CRLFs included.
    pub received: String,
    pub body: &'a [u8],
}

/// Splits `Return-Path: <...>\r\n` and the folded `Received:` header off a stored message.
pub fn split_trace(stored: &[u8]) -> Result<Traced<'_>, String> {
    let show = || String::from_utf8_lossy(&stored[..stored.len().min(400)]).into_owned();
    let line_end = |from: usize| -> Result<usize, String> {
        stored[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i + 2)
            .ok_or_else(|| format!("no CRLF after byte {from}: {}", show()))
    };
    if !stored.starts_with(b"Return-Path: <") {
        return Err(format!("does not start with `Return-Path: <`: {}", show()));
    }
    let rp_end = line_end(0)?;
    let rp_line = &stored[..rp_end - 2];
    if !rp_line.ends_with(b">") {
        return Err(format!(
            "Return-Path line does not end with `>`: {}",
            show()
        ));
    }
    let return_path =
        String::from_utf8_lossy(&rp_line[b"Return-Path: <".len()..rp_line.len() - 1]).into_owned();
    if !stored[rp_end..].starts_with(b"Received: from ") {
        return Err(format!(
            "no `Received: from ` after Return-Path: {}",
            show()
        ));
    }
    let mut end = line_end(rp_end)?;
    while end < stored.len() && (stored[end] == b' ' || stored[end] == b'\t') {
        end = line_end(end)?;
    }
    Ok(Traced {
        return_path,
        received: String::from_utf8_lossy(&stored[rp_end..end]).into_owned(),
        body: &stored[end..],
    })
}

/// The message without the prepended trace headers; panics with context if they are missing.
pub fn strip_trace(stored: &[u8]) -> &[u8] {
    match split_trace(stored) {
        Ok(t) => t.body,
        Err(e) => panic!("stored message: {e}"),
    }
}

/// RFC 5321 4.5.2 dot-stuffing of a message that ends in CRLF, plus the `.\r\n` terminator.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    assert!(message.is_empty() || message.ends_with(b"\r\n"));
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// Asserts two byte strings are equal; on failure shows where they first differ.
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(60);
    panic!(
        "{what}: bytes differ at offset {at} (got {} bytes, want {}):\n    got  ...{}...\n    want ...{}...",
        got.len(),
        want.len(),
        show(&got[from..got.len().min(at + 60)]),
        show(&want[from..want.len().min(at + 60)])
    );
}

/// Byte strings shown readably in assertion messages.
pub fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

// ---------------------------------------------------------------------------------------------
// SMTP client

/// One SMTP reply: its code and its lines (without CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line after the code and separator.
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", |l| l.get(4..).unwrap_or(""))
    }
}

/// A blocking SMTP client over std::net with read/write timeouts.
pub struct SmtpClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl SmtpClient {
    pub fn connect(addr: SocketAddr) -> io::Result<SmtpClient> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(SmtpClient { stream, reader })
    }

    pub fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One raw line including its terminator; empty at EOF (a reset counts as EOF).
    pub fn read_raw_line(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        match (&mut self.reader)
            .take(REPLY_LINE_BYTES_MAX)
            .read_until(b'\n', &mut buf)
        {
            Ok(_) => Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(buf),
            Err(e) => Err(e),
        }
    }

    /// Bytes already buffered but not yet read as lines.
    pub fn buffered(&self) -> &[u8] {
        self.reader.buffer()
    }

    /// One complete (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let raw = self.read_raw_line()?;
            if raw.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("connection closed after reply lines {lines:?}"),
                ));
            }
            let line = String::from_utf8_lossy(&raw);
            let Some(line) = line.strip_suffix("\r\n") else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("reply line not ended by CRLF: {line:?}"),
                ));
            };
            let b = line.as_bytes();
            let code = line.get(..3).and_then(|c| c.parse::<u16>().ok());
            let (Some(code), true) = (code, b.len() == 3 || matches!(b[3], b' ' | b'-')) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("malformed reply line {line:?}"),
                ));
            };
            let more = b.len() > 3 && b[3] == b'-';
            lines.push(line.to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
            if lines.len() >= REPLY_LINES_MAX {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {REPLY_LINES_MAX} reply lines"),
                ));
            }
        }
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> io::Result<Reply> {
        self.send(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Sends `line` + CRLF and asserts the reply code.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self
            .cmd(line)
            .unwrap_or_else(|e| panic!("`{line}`: no reply: {e}"));
        assert_eq!(r.code, code, "`{line}` answered {r:?}");
        r
    }

    /// True when the server closed the connection (EOF or reset) within the read timeout;
    /// false when it sent more bytes instead.
    pub fn closed(&mut self) -> io::Result<bool> {
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// MAIL/RCPT.../DATA, the dot-stuffed message and `.`: the final reply, or the first
    /// reply that was not the expected 250/354 (RCPT failures included).
    pub fn send_mail(&mut self, from: &str, to: &[&str], message: &[u8]) -> io::Result<Reply> {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"))?;
        if r.code != 250 {
            return Ok(r);
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"))?;
            if r.code != 250 {
                return Ok(r);
            }
        }
        let r = self.cmd("DATA")?;
        if r.code != 354 {
            return Ok(r);
        }
        self.send(&dot_stuff(message))?;
        self.read_reply()
    }

    /// Closes both directions of the connection (a client that drops it without QUIT).
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Both)
    }

    /// QUIT (best effort) and close.
    pub fn quit(mut self) {
        let _ = self.cmd("QUIT");
        let _ = self.shutdown();
    }
}

/// A message with the given Message-ID and body text, CRLF line ends.
pub fn make_message(from: &str, to: &str, message_id: &str, body: &str) -> Vec<u8> {
    let mut m = format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: test {message_id}\r\nMessage-ID: <{message_id}>\r\n\r\n"
    );
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// The Message-ID (without brackets) of a message, if it has one.
pub fn message_id(message: &[u8]) -> Option<String> {
    for line in message.split(|&b| b == b'\n') {
        if line == b"\r" || line.is_empty() {
            return None; // end of the header
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with(b"message-id:") {
            let v = String::from_utf8_lossy(&line[b"message-id:".len()..]);
            let v = v.trim().trim_start_matches('<').trim_end_matches('>');
            return Some(v.to_string());
        }
    }
    None
}

#[cfg(test)]
mod self_tests {
    use super::*;

    #[test]
    fn base64_rfc4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn mboxrd_round_trip_of_quoted_lines() {
        let out = b"From a@b Sun Nov 22 03:45:16 2026\nReturn-Path: <a@b>\r\nX: 1\r\n\r\n>From here\r\n>>From there\r\nFrom? no\r\n\nFrom <> Sun Nov 22 03:45:17 2026\nno newline at end\n\n";
        let m = parse_mboxrd(out).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            b"Return-Path: <a@b>\r\nX: 1\r\n\r\nFrom here\r\n>From there\r\nFrom? no\r\n".to_vec()
        );
        assert_eq!(m[1], b"no newline at end".to_vec());
        assert!(parse_mboxrd(b"").unwrap().is_empty());
        assert!(parse_mboxrd(b"garbage\n").is_err());
    }

    #[test]
    fn trace_split() {
        let s = b"Return-Path: <a@b.test>\r\nReceived: from x ([127.0.0.1])\r\n\tby mx (ringmail) with ESMTP id 1\r\n\tfor <c@d>; date\r\nSubject: s\r\n\r\nbody\r\n";
        let t = split_trace(s).unwrap();
        assert_eq!(t.return_path, "a@b.test");
        assert!(t.received.ends_with("date\r\n"));
        assert_eq!(t.body, b"Subject: s\r\n\r\nbody\r\n");
        assert!(split_trace(b"Subject: s\r\n").is_err());
    }

    #[test]
    fn stuffing() {
        assert_eq!(
            dot_stuff(b".a\r\nb.\r\n.\r\n"),
            b"..a\r\nb.\r\n..\r\n.\r\n".to_vec()
        );
    }
}
