//! `ringmail-loadgen sink` end to end: the real binary on 127.0.0.1:0 in a temp dir,
//! driven by Python's smtplib, by raw byte transcripts and by the load generator itself.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running sink; killed and its directory removed on drop.
struct Sink {
    child: Child,
    dir: PathBuf,
    addr: String,
}

impl Sink {
    fn start(name: &str, extra: &[&str]) -> Sink {
        let dir = std::env::temp_dir().join(format!(
            "ringmail-loadgen-sink-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmail-loadgen"))
            .args(["sink", "--listen", "127.0.0.1:0", "--log-bytes", "4194304"])
            .arg("--dir")
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the sink");
        let mut first = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut first)
            .expect("read the ready line");
        let addr = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        Sink { child, dir, addr }
    }

    fn log(&self, n: usize) -> Vec<u8> {
        std::fs::read(self.dir.join(format!("sink-{n}.log"))).expect("read the log")
    }

    fn connect(&self) -> Conn {
        let s = TcpStream::connect(&self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        assert!(c.line().starts_with("220 "));
        c
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        l
    }
    /// Sends `bytes`, then reads exactly `replies.len()` reply lines and compares them.
    fn expect(&mut self, bytes: &[u8], replies: &[&str]) {
        self.send(bytes);
        for want in replies {
            assert_eq!(self.line(), format!("{want}\r\n"), "after {bytes:?}");
        }
    }
}

fn starts_with(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && &hay[..needle.len()] == needle
}

#[test]
fn python_smtplib_message_is_in_the_log_after_its_250() {
    let sink = Sink::start("smtplib", &[]);
    let (host, port) = sink.addr.rsplit_once(':').unwrap();
    let script = format!(
        "import smtplib\n\
         s = smtplib.SMTP('{host}', {port}, timeout=10)\n\
         s.ehlo('client.test')\n\
         assert s.has_extn('pipelining') and s.has_extn('size')\n\
         r = s.sendmail('a@client.test', ['b@sink.test', 'c@sink.test'],\n\
             b'Subject: marker-8d1f\\r\\n\\r\\nline one\\r\\n.dotted\\r\\n')\n\
         assert r == {{}}, r\n\
         print(s.noop()[0])\n\
         s.quit()\n"
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "250");
    // Stored as received (smtplib dot-stuffs `.dotted`; a sink does not unstuff), from
    // the ring's start.
    let log = sink.log(0);
    assert!(
        starts_with(
            &log,
            b"Subject: marker-8d1f\r\n\r\nline one\r\n..dotted\r\n"
        ),
        "{:?}",
        String::from_utf8_lossy(&log[..64])
    );
}

#[test]
fn transcript_sequence_limits_and_data_end() {
    let sink = Sink::start("transcript", &["--size-max", "64"]);
    let mut c = sink.connect();
    c.expect(
        b"EHLO x\r\n",
        &[
            "250-sink",
            "250-PIPELINING",
            "250-8BITMIME",
            "250-SIZE 64",
            "250 ENHANCEDSTATUSCODES",
        ],
    );
    c.expect(b"DATA\r\n", &["503 5.5.1 RCPT first"]);
    c.expect(b"RCPT TO:<b@x>\r\n", &["503 5.5.1 MAIL first"]);
    let long = format!("NOOP {}\r\n", "x".repeat(600));
    c.expect(long.as_bytes(), &["500 5.5.2 Line too long"]);
    c.expect(b"NOOP\r\n", &["250 2.0.0 Ok"]);
    // One pipelined group, answered at once.
    c.expect(
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n",
        &[
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ],
    );
    // Neither a bare-LF dot line nor <LF>.<LF> ends the message; <CRLF>.<CRLF> does.
    c.expect(b"a\r\n.\nb\n.\nc\r\n.\r\n", &["250 2.0.0 Ok: on disk"]);
    assert!(starts_with(&sink.log(0), b"a\r\n.\nb\n.\nc\r\n"));
    // Too big for --size-max: 552, nothing stored, the session goes on.
    c.expect(
        b"MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n",
        &[
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ],
    );
    let big = format!("{}\r\n{}\r\n.\r\n", "y".repeat(50), "z".repeat(50));
    c.expect(big.as_bytes(), &["552 5.3.4 Message too big"]);
    let log = sink.log(0);
    assert!(
        !log.windows(10).any(|w| w == b"yyyyyyyyyy"),
        "rejected message stored"
    );
    c.expect(b"MAIL FROM:<a@x>\r\n", &["250 2.1.0 Ok"]);
    c.expect(b"MAIL FROM:<a@x>\r\n", &["503 5.5.1 MAIL already given"]);
    c.expect(
        b"RSET\r\nXYZZ\r\n",
        &["250 2.0.0 Ok", "502 5.5.2 Command not recognized"],
    );
    c.expect(b"QUIT\r\n", &["221 2.0.0 Bye"]);
    let mut rest = Vec::new();
    c.r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "bytes after 221: {rest:?}");
}

#[test]
fn connections_over_the_limit_get_421() {
    let sink = Sink::start("limit", &["--connections-max", "1"]);
    let _first = sink.connect();
    let s = TcpStream::connect(&sink.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line, "421 4.3.2 Too many connections\r\n");
}

#[test]
fn loadgen_against_two_logs_every_message_answered_and_indexed() {
    let sink = Sink::start("loadgen", &["--files", "2"]);
    let json = sink.dir.join("run.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ringmail-loadgen"))
        .args(["smtp", "--target", &sink.addr, "--connections", "4"])
        .args(["--messages", "200", "--size", "1024", "--to", "b@sink.test"])
        .args([
            "--threads",
            "1",
            "--duration-secs",
            "30",
            "--quiet",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run the load generator");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("sent=200 ok(2xx)=200 "), "{text}");
    // One 64-byte entry per message in the second log, then still its zero fill.
    let index = sink.log(1);
    assert!(index[..200 * 64].iter().all(|&b| b == 0x5a));
    assert!(index[200 * 64..201 * 64].iter().all(|&b| b == 0));
    // 200 messages of 1024 bytes (the dot-terminated body as the sink stores it).
    let log = sink.log(0);
    let used = log.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    assert!(
        (200 * 1000..=200 * 1024).contains(&used),
        "{used} bytes used"
    );
    assert!(Path::new(&json).exists());
}
