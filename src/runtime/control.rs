//! The operator's line into a running server: `ringmail queue flush|delete|bounce` connect to
//! `data_dir/control.sock` (a Unix socket, mode 0600), send one request line and read one
//! reply line.
//!
//! The main thread serves the socket (it already wakes every 50 ms for signals): each
//! connection gets a short-lived thread (at most [`CONNECTIONS_MAX`] at once) that reads the
//! request, hands it to the core that owns the queue entry (every core for `flush`) over that
//! core's channel, and waits for the answers ([`TIMEOUT_MS_REPLY`] at most). A core drains its
//! channel in its housekeeping loop and answers from its own task, so the queue is only ever
//! written by its owner core.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::store::parse_queue_id;
use crate::store::queue::queue_owner;

/// The socket's name in the data dir.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Longest request line.
pub const REQUEST_BYTES_MAX: usize = 256;
/// Longest answer the CLI reads.
const ANSWER_BYTES_MAX: u64 = 64 * 1024;
/// How long a request may wait for the cores' answers.
pub const TIMEOUT_MS_REPLY: u64 = 10_000;
/// Control connections served at once; more are answered "busy".
pub const CONNECTIONS_MAX: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot listen on {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("ringmail is not running on {path} ({source}); queue changes are made by the running server")]
    NotRunning { path: PathBuf, source: io::Error },
    #[error("control request failed: {0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Refused(String),
}

/// What an operator asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlOp {
    /// Retry every deferred recipient now.
    Flush,
    /// Remove an entry without telling anyone.
    Delete(u64),
    /// Fail every unfinished recipient of an entry now and bounce it to the sender.
    Bounce(u64),
}

/// A request on its way to a core, with where the answer goes.
pub struct ControlRequest {
    pub op: ControlOp,
    pub reply: mpsc::Sender<Result<String, String>>,
}

/// `flush`, `delete ID`, `bounce ID`.
pub fn parse_request(line: &str) -> Result<ControlOp, String> {
    let mut words = line.split_ascii_whitespace();
    let op = match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, None) => ControlOp::Flush,
        (Some(verb @ ("delete" | "bounce")), Some(id), None) => {
            let id = parse_queue_id(id).ok_or_else(|| format!("not a queue id: {id:?}"))?;
            if verb == "delete" {
                ControlOp::Delete(id)
            } else {
                ControlOp::Bounce(id)
            }
        }
        _ => {
            return Err(format!(
                "unknown request {line:?} (flush | delete ID | bounce ID)"
            ))
        }
    };
    Ok(op)
}

/// The server side, owned by the main thread.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    cores: Arc<Vec<mpsc::Sender<ControlRequest>>>,
    busy: Arc<AtomicUsize>,
}

impl ControlServer {
    /// Binds `data_dir/control.sock` (a stale socket of a dead server is replaced: the data
    /// dir lock is already ours).
    pub fn bind(
        data_dir: &Path,
        cores: Vec<mpsc::Sender<ControlRequest>>,
    ) -> Result<ControlServer, ControlError> {
        let path = data_dir.join(CONTROL_SOCKET);
        let bind_err = |source| ControlError::Bind {
            path: path.clone(),
            source,
        };
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(ControlServer {
            listener,
            path,
            cores: Arc::new(cores),
            busy: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Serves every connection waiting now; never blocks.
    pub fn poll(&self) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.busy.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
                self.busy.fetch_sub(1, Ordering::AcqRel);
                let mut s = stream;
                let _ = s.write_all(b"error busy, try again\n");
                continue;
            }
            let cores = self.cores.clone();
            let busy = self.busy.clone();
            let spawned = std::thread::Builder::new()
                .name("ringmail-control".into())
                .spawn(move || {
                    let _ = serve_one(stream, &cores);
                    busy.fetch_sub(1, Ordering::AcqRel);
                });
            if spawned.is_err() {
                self.busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, cores: &[mpsc::Sender<ControlRequest>]) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(REQUEST_BYTES_MAX as u64)).read_line(&mut line)?;
    let answer = match parse_request(line.trim()) {
        Err(e) => Err(e),
        Ok(op) => dispatch(op, cores),
    };
    let mut out = &stream;
    match answer {
        Ok(text) => writeln!(out, "ok {}", text.replace('\n', " ")),
        Err(text) => writeln!(out, "error {}", text.replace('\n', " ")),
    }
}

/// Sends `op` to the core(s) concerned and collects their answers.
fn dispatch(op: ControlOp, cores: &[mpsc::Sender<ControlRequest>]) -> Result<String, String> {
    let targets: Vec<usize> = match op {
        ControlOp::Flush => (0..cores.len()).collect(),
        ControlOp::Delete(id) | ControlOp::Bounce(id) => vec![queue_owner(id, cores.len())],
    };
    let (tx, rx) = mpsc::channel();
    for &core in &targets {
        let request = ControlRequest {
            op,
            reply: tx.clone(),
        };
        cores
            .get(core)
            .ok_or_else(|| format!("no core {core}"))?
            .send(request)
            .map_err(|_| format!("core {core} is not running"))?;
    }
    drop(tx);
    let deadline = std::time::Instant::now() + Duration::from_millis(TIMEOUT_MS_REPLY);
    let mut texts = Vec::new();
    for _ in &targets {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ok(text)) => texts.push(text),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("no answer from the server within 10 s".into()),
        }
    }
    Ok(texts.join("; "))
}

/// The CLI side: sends `line`, returns the server's answer text.
pub fn request(data_dir: &Path, line: &str) -> Result<String, ControlError> {
    let path = data_dir.join(CONTROL_SOCKET);
    let stream = UnixStream::connect(&path).map_err(|source| ControlError::NotRunning {
        path: data_dir.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS_REPLY + 2000)))?;
    let mut out = &stream;
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new((&stream).take(ANSWER_BYTES_MAX)).read_line(&mut answer)?;
    let answer = answer.trim_end();
    match answer.split_once(' ') {
        Some(("ok", text)) => Ok(text.to_string()),
        Some(("error", text)) => Err(ControlError::Refused(text.to_string())),
        _ if answer == "ok" => Ok(String::new()),
        _ => Err(ControlError::Refused(format!(
            "unexpected answer {answer:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse_request("flush"), Ok(ControlOp::Flush));
        let id = parse_queue_id("1-2A").unwrap();
        assert_eq!(parse_request("delete 1-2A"), Ok(ControlOp::Delete(id)));
        assert_eq!(parse_request("bounce  1-2A "), Ok(ControlOp::Bounce(id)));
        for bad in [
            "",
            "flush now",
            "delete",
            "delete x",
            "bounce 1-2A 3",
            "rm 1-2A",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake core answers over its channel: the request goes to the owner, the answer back.
    #[test]
    fn a_request_reaches_the_owner_core_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (tx0, rx0) = mpsc::channel::<ControlRequest>();
        let (tx1, rx1) = mpsc::channel::<ControlRequest>();
        let server = ControlServer::bind(dir.path(), vec![tx0, tx1]).unwrap();
        let mode = std::fs::metadata(dir.path().join(CONTROL_SOCKET))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let fake_core = |rx: mpsc::Receiver<ControlRequest>, name: &'static str| {
            std::thread::spawn(move || {
                while let Ok(r) = rx.recv() {
                    let _ = r.reply.send(Ok(format!("{name} {:?}", r.op)));
                }
            })
        };
        let cores = [fake_core(rx0, "core0"), fake_core(rx1, "core1")];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    server.poll();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let id = parse_queue_id("1-7").unwrap();
        let answer = request(dir.path(), "delete 1-7").unwrap();
        assert_eq!(answer, format!("core1 Delete({id})"));
        let answer = request(dir.path(), "flush").unwrap();
        assert!(
            answer.contains("core0 Flush") && answer.contains("core1 Flush"),
            "{answer}"
        );
        match request(dir.path(), "explode") {
            Err(ControlError::Refused(e)) => assert!(e.contains("unknown request"), "{e}"),
            other => panic!("{other:?}"),
        }
        stop.store(true, Ordering::Relaxed);
        poller.join().unwrap();
        for c in cores {
            c.join().unwrap();
        }
        // The server is gone: the socket file is removed and the CLI says so.
        match request(dir.path(), "flush") {
            Err(ControlError::NotRunning { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
