//! Minimal level-triggered epoll(7) wrapper for the per-core event loop: the
//! only `unsafe` in the crate, each call a thin syscall with its contract noted.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Most events taken from the kernel per wait.
pub const EVENTS_MAX: usize = 256;

/// Readiness reported for one registered socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub token: u64,
    pub readable: bool,
    pub writable: bool,
    /// Error or hang-up: a read reports what happened.
    pub failed: bool,
}

pub struct Poller {
    epoll: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointers; a negative result is an error.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self {
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_MAX],
        })
    }

    /// Starts watching `fd` for input (and output when `writable`).
    pub fn add(&self, fd: RawFd, token: u64, writable: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_ADD, fd, token, writable)
    }

    /// Changes the interest of a watched `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, writable: bool) -> io::Result<()> {
        self.control(libc::EPOLL_CTL_MOD, fd, token, writable)
    }

    fn control(&self, op: libc::c_int, fd: RawFd, token: u64, writable: bool) -> io::Result<()> {
        let mut interest = libc::EPOLLIN | libc::EPOLLRDHUP;
        if writable {
            interest |= libc::EPOLLOUT;
        }
        let mut event = libc::epoll_event {
            events: interest as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call;
        // the kernel copies it. Bad fds are reported as errors, not UB.
        let rc = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut event) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms` and appends the ready sockets to `out` (cleared first).
    pub fn wait(&mut self, out: &mut Vec<Event>, timeout_ms: i32) -> io::Result<()> {
        out.clear();
        // SAFETY: the pointer and length describe `self.events`, which outlives
        // the call; the kernel writes at most `EVENTS_MAX` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                self.events.as_mut_ptr(),
                EVENTS_MAX as libc::c_int,
                timeout_ms,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(error);
        }
        for event in &self.events[..n as usize] {
            // Copy out of the (packed on x86_64) struct before use.
            let (flags, token) = (event.events, event.u64);
            out.push(Event {
                token,
                readable: flags & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                writable: flags & libc::EPOLLOUT as u32 != 0,
                failed: flags & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn reports_readable_and_writable_with_tokens() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut poller = Poller::new().unwrap();
        let mut events = Vec::new();
        poller.add(client.as_raw_fd(), 7, false).unwrap();
        poller.wait(&mut events, 0).unwrap();
        assert!(events.is_empty(), "nothing to read yet: {events:?}");
        server.write_all(b"220 hi\r\n").unwrap();
        poller.wait(&mut events, 1000).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 7);
        assert!(events[0].readable && !events[0].writable);
        poller.modify(client.as_raw_fd(), 9, true).unwrap();
        poller.wait(&mut events, 1000).unwrap();
        assert_eq!(events[0].token, 9);
        assert!(events[0].writable);
        assert!(poller.add(-1, 1, false).is_err());
    }
}
