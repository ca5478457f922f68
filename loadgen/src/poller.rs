//! Minimal level-triggered epoll(7) wrapper for the per-core event loop: the
//! only `unsafe` in the crate, each call a thin syscall with its contract noted.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

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
    /// The kernel said ENOSYS to `epoll_pwait2` once: use `epoll_wait` from then on.
    no_pwait2: bool,
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
            no_pwait2: false,
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
        self.collect(n, out)
    }

    /// Like [`Poller::wait`] with a nanosecond timeout (`epoll_pwait2`, Linux 5.11), so an
    /// open-loop schedule wakes on time without spinning. On a kernel without it: whole
    /// milliseconds through `epoll_wait`, then the rest in one sleep when nothing came.
    pub fn wait_precise(&mut self, out: &mut Vec<Event>, timeout: Duration) -> io::Result<()> {
        if !self.no_pwait2 {
            out.clear();
            let ts = libc::timespec {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
            };
            // SAFETY: as in `wait`; `ts` lives across the call and a null sigmask means
            // the thread's mask is left as it is.
            let n = unsafe {
                libc::epoll_pwait2(
                    self.epoll.as_raw_fd(),
                    self.events.as_mut_ptr(),
                    EVENTS_MAX as libc::c_int,
                    &ts,
                    std::ptr::null(),
                )
            };
            if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                return self.collect(n, out);
            }
            self.no_pwait2 = true;
        }
        let whole_ms = (timeout.as_micros() / 1000).min(i32::MAX as u128) as i32;
        self.wait(out, whole_ms)?;
        if out.is_empty() {
            std::thread::sleep(timeout.saturating_sub(Duration::from_millis(whole_ms as u64)));
        }
        Ok(())
    }

    /// Turns an epoll return value into events (or the error; EINTR is no event).
    fn collect(&mut self, n: libc::c_int, out: &mut Vec<Event>) -> io::Result<()> {
        out.clear();
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

    #[test]
    fn a_precise_wait_sleeps_its_sub_millisecond_timeout_and_reports_ready_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let mut poller = Poller::new().unwrap();
        let mut events = Vec::new();
        poller.add(client.as_raw_fd(), 3, false).unwrap();
        // Nothing ready: it returns empty, and not before its timeout (1.5 ms: not a
        // whole number of milliseconds, which epoll_wait alone could not express).
        let timeout = Duration::from_micros(1_500);
        let started = std::time::Instant::now();
        poller.wait_precise(&mut events, timeout).unwrap();
        assert!(events.is_empty(), "{events:?}");
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        server.write_all(b"+OK\r\n").unwrap();
        poller
            .wait_precise(&mut events, Duration::from_secs(5))
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].token, 3);
        assert!(events[0].readable);
    }
}
