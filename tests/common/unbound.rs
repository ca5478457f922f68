//! A real DNS server for tests: unbound (apt package `unbound`) on a free 127.0.0.1 port,
//! serving a zone given as unbound `local-data` lines; killed (our own child, by pid) on drop.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const UNBOUND: &str = "/usr/sbin/unbound";
/// How long unbound may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A port on 127.0.0.1 with nothing on it (UDP and TCP), for now.
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running unbound; killed (by its pid, as our own child) on drop.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Unbound {
    /// `None` when unbound is not installed.
    pub fn start(zone: &str) -> Option<Unbound> {
        if !Path::new(UNBOUND).exists() {
            eprintln!("SKIPPED: {UNBOUND} is not installed (apt package `unbound`, see .ci/run)");
            return None;
        }
        let mut last = String::new();
        for _ in 0..3 {
            match Unbound::try_start(zone) {
                Ok(u) => return Some(u),
                Err(e) => last = e,
            }
        }
        panic!("unbound did not start: {last}");
    }

    fn try_start(zone: &str) -> Result<Unbound, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // SERVFAIL quickly: fail.test is forwarded to a port where nothing answers, and unbound
        // is told not to retry for long.
        let dead = free_port();
        let conf = format!(
            r#"server:
  interface: 127.0.0.1
  port: {port}
  do-ip4: yes
  do-ip6: no
  do-udp: yes
  do-tcp: yes
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  do-not-query-localhost: no
  outbound-msg-retry: 0
  infra-cache-max-rtt: 100
  infra-keep-probing: no
  max-udp-size: 512
{zone}
forward-zone:
  name: "fail.test."
  forward-addr: 127.0.0.1@{dead}
remote-control:
  control-enable: no
"#,
            dir = dir.path().display(),
            zone = zone,
        );
        let conf_path = dir.path().join("unbound.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.path().join("unbound.log")).unwrap();
        let child = Command::new(UNBOUND)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {UNBOUND}: {e}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut u = Unbound { child, addr, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = u.child.try_wait() {
                return Err(format!("exited {status}: {}", u.log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return Ok(u);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "not listening after {START_TIMEOUT:?}: {}",
            u.log()
        ))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
