//! Moving a connection to the core that owns the mailboxes it works on.
//!
//! Every user's mailboxes live on one core ([`placement::owner_core`]). Connections are
//! accepted on whichever core the kernel picked (SO_REUSEPORT). An SMTP session moves when
//! a message's local recipients all belong to another core (and nobody is remote), with
//! the transaction, before its delivery (`smtp::server`). IMAP and POP3 run the pre-login
//! dialogue where they were accepted; once the credentials check out, the session hands
//! itself over: a duplicate of the socket's descriptor plus the session state (user, unread input,
//! protocol-specific resume data) go to the owner core over the mesh, the original stream is
//! dropped here, and the owner serves the connection from then on. Every mailbox operation is
//! then local to the core that owns the data: no cross-core request per command, and two
//! sessions of the same user (IDLE in one, APPEND in the other) are on the same core, so
//! change notification is a local wake-up.
//!
//! The owner replies to the login command itself (after it took, for POP3, the maildrop
//! lock), so the client sees the login succeed only once its session is ready.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;

use glommio::net::TcpStream;

use crate::net::tls::TlsParts;
use crate::net::transport::Transport;
use crate::net::{ConnectionGuard, Protocol};
use crate::runtime::core::Core;
use crate::runtime::placement::owner_core;

/// The state a session carries to the owner core.
#[derive(Debug)]
pub struct Handoff {
    /// Normalized address of the logged-in user.
    pub user: String,
    /// Bytes read from the client but not consumed yet (pipelined commands).
    pub input: Vec<u8>,
    pub resume: Resume,
    /// The TLS session of an encrypted connection (rustls state and unread ciphertext),
    /// filled in by [`Core::hand_over`].
    pub tls: Option<TlsParts>,
}

/// Protocol-specific state.
#[derive(Debug)]
pub enum Resume {
    Imap(crate::imap::server::Resume),
    Pop3(crate::pop3::server::Resume),
    /// A session with a transaction to deliver on the owner (`user` is one of its local
    /// recipients).
    Smtp(Box<crate::smtp::server::Resume>),
}

impl Resume {
    fn protocol(&self) -> Protocol {
        match self {
            Resume::Imap(_) => Protocol::Imap,
            Resume::Pop3(_) => Protocol::Pop3,
            Resume::Smtp(r) => r.protocol(),
        }
    }
}

impl Core {
    /// The core that owns `user`'s mailboxes.
    pub fn owner_of(&self, user: &str) -> usize {
        owner_core(user, self.cores)
    }

    /// Continues the session on the owner core of `handoff.user` (here, if this is it).
    /// The caller's task ends after this returns: the connection is no longer its.
    pub async fn hand_over(self: &Rc<Self>, stream: Transport, mut handoff: Handoff) {
        let owner = self.owner_of(&handoff.user);
        if owner == self.index {
            self.adopt(stream, Box::new(handoff));
            return;
        }
        let (stream, tls) = stream.into_parts();
        handoff.tls = tls;
        // SAFETY: dup of a descriptor we own; the result is owned by the OwnedFd.
        let dup = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            eprintln!(
                "ringmail: core {}: cannot hand a connection to core {owner}: {}",
                self.index,
                std::io::Error::last_os_error()
            );
            return;
        }
        // SAFETY: `dup` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(dup) };
        // Our descriptor closes here; the socket lives on in `fd`.
        drop(stream);
        if !self.mesh.adopt_remote(owner, fd, Box::new(handoff)).await {
            eprintln!(
                "ringmail: core {}: core {owner} is unreachable; connection closed",
                self.index
            );
        }
    }

    /// Starts serving a handed-over connection on this core.
    pub fn adopt_fd(self: &Rc<Self>, fd: OwnedFd, handoff: Box<Handoff>) {
        // SAFETY: the descriptor is a connected TCP socket handed to us with ownership.
        let stream = unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) };
        let mut handoff = handoff;
        let tls = handoff.tls.take();
        self.adopt(Transport::from_parts(stream, tls), handoff);
    }

    fn adopt(self: &Rc<Self>, stream: Transport, handoff: Box<Handoff>) {
        let core = self.clone();
        glommio::spawn_local(async move {
            let _guard = ConnectionGuard::new(&core, handoff.resume.protocol());
            let handoff = *handoff;
            match handoff.resume {
                Resume::Imap(resume) => {
                    crate::imap::server::serve_user(
                        stream,
                        core.clone(),
                        handoff.user,
                        handoff.input,
                        resume,
                    )
                    .await
                }
                Resume::Pop3(_) => {
                    crate::pop3::server::serve_user(stream, core.clone(), handoff).await
                }
                Resume::Smtp(resume) => {
                    crate::smtp::server::resume(stream, core.clone(), handoff.input, *resume).await
                }
            }
        })
        .detach();
    }
}

/// Runs until the mesh closes: starts every connection other cores hand to this one.
pub async fn adoption_loop(core: Rc<Core>) {
    let Some(rx) = core.mesh.take_adoptions() else {
        return;
    };
    while let Some((fd, handoff)) = rx.recv().await {
        core.adopt_fd(fd, handoff);
    }
}
