//! Listeners and connections.
//!
//! Every core binds every listen address itself (glommio sets SO_REUSEPORT), so the kernel
//! spreads connections across cores and no core ever hands a socket to another. Before the
//! cores start, [`precheck`] test-binds each address the way the cores will (so a process that
//! holds the port without SO_REUSEPORT is reported), takes a per-port lock (so another ringmail,
//! which SO_REUSEPORT alone would let in silently, is refused), and turns port 0 into a
//! concrete port that every core then shares.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use glommio::net::TcpListener;

use crate::runtime::core::Core;

pub mod tls;
pub mod transport;

use transport::Transport;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: io::Error,
        hint: &'static str,
    },
    #[error("cannot lock port {addr}: {path}: {source}")]
    Lock {
        addr: SocketAddr,
        path: std::path::PathBuf,
        source: io::Error,
    },
}

fn bind_error(addr: SocketAddr, source: io::Error) -> NetError {
    let hint = match source.kind() {
        io::ErrorKind::AddrInUse => " (another process, perhaps another ringmail, holds this port)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        io::ErrorKind::AddrNotAvailable => " (no interface has this address)",
        _ => "",
    };
    NetError::Bind { addr, source, hint }
}

/// Ephemeral ports tried for one port-0 listener whose lock another process holds.
const PORT_ZERO_TRIES_MAX: usize = 20;

/// Held for the life of the process: one flock per listening port, so a second ringmail on the
/// same machine cannot silently join our SO_REUSEPORT group.
pub struct PortLocks {
    _files: Vec<std::fs::File>,
}

/// Checks every address can be bound the way the cores will bind it, resolves port 0, and
/// takes the per-port locks. Returns the concrete addresses.
///
/// A fixed port is test-bound with SO_REUSEADDR and SO_REUSEPORT, like the real listeners: a
/// plain bind would be refused for a minute after any loaded run, because the accepted
/// connections' TIME_WAIT sockets inherit the listener's SO_REUSEPORT. A process that holds the
/// port without SO_REUSEPORT still makes this bind fail; another ringmail is caught by the lock.
pub fn precheck(addrs: &[SocketAddr]) -> Result<(Vec<SocketAddr>, PortLocks), NetError> {
    let mut out = Vec::with_capacity(addrs.len());
    let mut files = Vec::with_capacity(addrs.len());
    // Port-0 probes stay bound until every address is resolved: released at once, the
    // kernel could hand the same port to the next port-0 listener of this very list (SMTP,
    // IMAP and POP3 all on port 0), whose lock would then collide with our own.
    let mut probes = Vec::new();
    for &addr in addrs {
        if addr.port() != 0 {
            test_bind_reuseport(addr).map_err(|e| bind_error(addr, e))?;
            files.push(lock_port(addr)?);
            out.push(addr);
            continue;
        }
        // A fresh ephemeral port: nothing can be in TIME_WAIT on it. It can still be one that
        // another ringmail starting at this moment has just resolved and locked but not bound
        // yet (its probe released, its cores not started): port 0 means any port, so a port
        // whose lock is taken is skipped, and its probe released at once: the other ringmail's
        // cores are about to bind that port.
        let mut tries = 0;
        let (concrete, lock) = loop {
            let l = std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, e))?;
            let local = l.local_addr().map_err(|e| bind_error(addr, e))?;
            match lock_port(local) {
                Ok(lock) => {
                    probes.push(l);
                    break (local, lock);
                }
                Err(e) if tries >= PORT_ZERO_TRIES_MAX => return Err(e),
                Err(_) => tries += 1,
            }
        };
        files.push(lock);
        out.push(concrete);
    }
    drop(probes);
    Ok((out, PortLocks { _files: files }))
}

fn lock_port(addr: SocketAddr) -> Result<std::fs::File, NetError> {
    use std::os::fd::AsRawFd;
    let name = format!("ringmail-port-{}-{}.lock", addr.ip(), addr.port()).replace(':', "_");
    let path = std::env::temp_dir().join(name);
    // flock needs no write access: a lock file another user created (e.g. root's, 0644) is
    // opened read-only.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .or_else(|e| match e.kind() {
            io::ErrorKind::PermissionDenied => std::fs::File::open(&path),
            _ => Err(e),
        })
        .map_err(|source| NetError::Lock {
            addr,
            path: path.clone(),
            source,
        })?;
    // SAFETY: flock on an owned descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(bind_error(
            addr,
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another ringmail holds {}", path.display()),
            ),
        ));
    }
    Ok(file)
}

/// Binds (without listening) a socket with SO_REUSEADDR + SO_REUSEPORT, then closes it.
fn test_bind_reuseport(addr: SocketAddr) -> io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2); the descriptor is owned by `sock` below and closed on drop.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
        // SAFETY: valid fd, option value points to a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: valid fd and a properly sized sockaddr_in.
            unsafe {
                libc::bind(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: valid fd and a properly sized sockaddr_in6.
            unsafe {
                libc::bind(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                )
            }
        }
    };
    let result = if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    drop(sock);
    result
}

/// Binds one core's listener (SO_REUSEPORT, set by glommio).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, NetError> {
    TcpListener::bind(addr).map_err(|e| {
        let source = match e {
            glommio::GlommioError::IoError(e) => e,
            other => io::Error::other(other.to_string()),
        };
        bind_error(addr, source)
    })
}

/// The protocols ringmail serves. Submission is SMTP with its own rules (AUTH before MAIL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Smtp,
    Submission,
    Imap,
    Pop3,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Smtp,
        Protocol::Submission,
        Protocol::Imap,
        Protocol::Pop3,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
        }
    }
}

/// One kind of listener: a protocol, plain (STARTTLS where offered) or implicit TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub implicit_tls: bool,
}

impl Listener {
    /// `smtp`, `submission`, `submissions`, `imap`, `imaps`, `pop3`, `pop3s`: as printed at
    /// start (`<name> listening on <addr>`).
    pub fn name(self) -> &'static str {
        match (self.protocol, self.implicit_tls) {
            (Protocol::Smtp, false) => "smtp",
            (Protocol::Smtp, true) => "smtps",
            (Protocol::Submission, false) => "submission",
            (Protocol::Submission, true) => "submissions",
            (Protocol::Imap, false) => "imap",
            (Protocol::Imap, true) => "imaps",
            (Protocol::Pop3, false) => "pop3",
            (Protocol::Pop3, true) => "pop3s",
        }
    }
}

/// Accepts until shutdown; each connection becomes a session task on this core (in the task
/// queue of the accept loop). A connection beyond its protocol's per-core limit, or beyond
/// `connections_max` (this core's `[cores] connections_max`, every protocol together), gets
/// the protocol's "too many connections" answer and is closed.
pub async fn accept_loop(
    listener: TcpListener,
    core: Rc<Core>,
    kind: Listener,
    connections_max: usize,
) {
    let protocol = kind.protocol;
    loop {
        let accepted = future::or(async { Some(listener.accept().await) }, async {
            // The semaphore never has permits: this resolves only when it is closed.
            let _ = core.shutdown.acquire(1).await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                // EMFILE and friends: back off briefly instead of spinning.
                eprintln!("ringmail: core {}: accept: {e}", core.index);
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("ringmail: core {}: TCP_NODELAY: {e}", core.index);
        }
        core.metrics.connection_accepted(protocol);
        let core = core.clone();
        glommio::spawn_local(async move {
            let _guard = ConnectionGuard::new(&core, protocol);
            let max = match protocol {
                Protocol::Smtp | Protocol::Submission => core.config.smtp.connections_per_core_max,
                Protocol::Imap => core.config.imap.connections_per_core_max,
                Protocol::Pop3 => core.config.pop3.connections_per_core_max,
            };
            let transport = if kind.implicit_tls {
                let Some(tls) = core.tls.as_ref() else {
                    return;
                };
                match Transport::accept_tls(stream, tls).await {
                    Ok(t) => t,
                    // A failed handshake (scanner, wrong protocol, untrusted certificate on
                    // the client side) is routine: no log line per attempt.
                    Err(_) => return,
                }
            } else {
                Transport::Plain(stream)
            };
            if core.protocol_connections(protocol) > max || core.connections() > connections_max {
                core.metrics.connection_refused(protocol);
                refuse(transport, &core, protocol).await;
                return;
            }
            match protocol {
                Protocol::Smtp | Protocol::Submission => {
                    crate::smtp::server::serve(transport, &core, protocol).await
                }
                Protocol::Imap => crate::imap::server::serve(transport, core.clone()).await,
                Protocol::Pop3 => crate::pop3::server::serve(transport, core.clone()).await,
            }
        })
        .detach();
    }
}

async fn refuse(mut stream: Transport, core: &Core, protocol: Protocol) {
    let msg = match protocol {
        Protocol::Smtp | Protocol::Submission => format!(
            "421 4.7.0 {} Error: too many connections, try again later\r\n",
            core.config.server.hostname
        ),
        Protocol::Imap => "* BYE [UNAVAILABLE] Too many connections, try again later\r\n".into(),
        Protocol::Pop3 => "-ERR [SYS/TEMP] Too many connections, try again later\r\n".into(),
    };
    let _ = stream.write_all(msg.as_bytes()).await;
    stream.close().await;
}

/// Counts a connection (in its protocol's count on the core) for as long as it lives.
pub struct ConnectionGuard<'a> {
    core: &'a Core,
    protocol: Protocol,
}

impl<'a> ConnectionGuard<'a> {
    pub fn new(core: &'a Core, protocol: Protocol) -> Self {
        core.metrics.connection_opened(protocol);
        ConnectionGuard { core, protocol }
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.core.metrics.connection_closed(self.protocol);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: SMTP, IMAP and POP3 all on port 0 once got the same ephemeral port from
    /// the kernel (the probe was released before the next one), and the second port lock
    /// collided with our own first one: serve refused to start.
    #[test]
    fn port_zero_listeners_of_one_list_get_distinct_ports() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let addrs = vec![any; 50];
        let (resolved, _locks) = precheck(&addrs).unwrap();
        let mut ports: Vec<u16> = resolved.iter().map(|a| a.port()).collect();
        assert!(ports.iter().all(|&p| p != 0));
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 50, "every port-0 listener gets its own port");
    }
}
