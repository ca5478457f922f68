//! Listeners and connections.
//!
//! Every core binds every listen address itself (glommio sets SO_REUSEPORT), so the kernel
//! spreads connections across cores and no core ever hands a socket to another. Before the
//! cores start, [`precheck`] binds each address once *without* SO_REUSEPORT: that fails if
//! anything (another ringmail included) holds the port, which SO_REUSEPORT alone would hide,
//! and it turns port 0 into a concrete port that every core then shares.

use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use futures_lite::future;
use glommio::net::{TcpListener, TcpStream};

use crate::runtime::core::Core;

/// Read buffer of one connection. A command line is ≤ 512 bytes, a DATA text line ≤ 1000:
/// the session consumes data as it arrives, so this bounds memory per connection.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on {addr}: {source}{hint}")]
    Bind {
        addr: SocketAddr,
        source: io::Error,
        hint: &'static str,
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

/// Checks every address is free and resolves port 0. Returns the concrete addresses.
pub fn precheck(addrs: &[SocketAddr]) -> Result<Vec<SocketAddr>, NetError> {
    let mut out = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        // std's listener sets SO_REUSEADDR (TIME_WAIT is fine) but not SO_REUSEPORT.
        let l = std::net::TcpListener::bind(addr).map_err(|e| bind_error(addr, e))?;
        out.push(l.local_addr().map_err(|e| bind_error(addr, e))?);
    }
    Ok(out)
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

/// Accepts until shutdown; each connection becomes a session task on this core.
pub async fn accept_loop(listener: TcpListener, core: Rc<Core>) {
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
        let core = core.clone();
        glommio::spawn_local(async move {
            let _guard = ConnectionGuard::new(&core);
            if core.connections.get() > core.config.smtp.connections_per_core_max {
                refuse(stream, &core).await;
                return;
            }
            crate::smtp::server::serve(stream, &core).await;
        })
        .detach();
    }
}

async fn refuse(mut stream: TcpStream, core: &Core) {
    use futures_lite::AsyncWriteExt;
    let msg = format!(
        "421 4.7.0 {} Error: too many connections, try again later\r\n",
        core.config.server.hostname
    );
    let _ = stream.write_all(msg.as_bytes()).await;
    let _ = stream.close().await;
}

/// Counts a connection for as long as it lives.
struct ConnectionGuard<'a> {
    core: &'a Core,
}

impl<'a> ConnectionGuard<'a> {
    fn new(core: &'a Core) -> Self {
        core.connections.set(core.connections.get() + 1);
        ConnectionGuard { core }
    }
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.core.connections.set(self.core.connections.get() - 1);
    }
}
