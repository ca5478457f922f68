//! One connection's byte pipe between a socket and the sans-IO [`Client`]:
//! plain TCP, or rustls over the same socket once TLS starts (at connect for
//! `--tls`, after the `220` to STARTTLS for `--starttls`). Works on
//! non-blocking sockets (the epoll driver: "would block" means "wait for the
//! next event") and on blocking sockets with a read timeout (the blocking
//! driver: a timeout means "nothing yet").
//!
//! With TLS, the client's bytes are handed to rustls only when the previous
//! ciphertext has reached the kernel, and [`Client::on_written`] is called when
//! the ciphertext carrying them has been written, so the end-of-DATA time
//! stamp means the same with and without TLS.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use rustls::ClientConnection;

use crate::client::Client;
use crate::tls::TlsContext;

/// What one read produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// This many plaintext bytes are at the start of the buffer.
    Data(usize),
    /// Nothing to read now (would block, timed out, or TLS records without
    /// application data, such as handshake messages).
    Nothing,
    /// The server closed the connection.
    Eof,
}

pub struct Transport {
    stream: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Client bytes taken by rustls whose ciphertext is not fully written yet.
    plain_pending: usize,
    /// Decrypted bytes rustls holds that were not read yet.
    plain_buffered: usize,
    handshake_reported: bool,
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

impl Transport {
    pub fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            tls: None,
            plain_pending: 0,
            plain_buffered: 0,
            handshake_reported: false,
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Starts the TLS handshake; every byte from now on is TLS.
    pub fn start_tls(&mut self, ctx: &TlsContext) -> Result<(), rustls::Error> {
        self.tls = Some(Box::new(ctx.connection()?));
        self.plain_pending = 0;
        self.plain_buffered = 0;
        self.handshake_reported = false;
        Ok(())
    }

    /// True exactly once: right after the TLS handshake finished.
    pub fn take_handshake_done(&mut self) -> bool {
        let done = self.tls.as_ref().is_some_and(|tls| !tls.is_handshaking());
        if done && !self.handshake_reported {
            self.handshake_reported = true;
            return true;
        }
        false
    }

    /// Decrypted bytes are waiting: call [`Transport::read`] again before
    /// waiting for the socket.
    pub fn has_buffered_input(&self) -> bool {
        self.plain_buffered > 0
    }

    /// Reads once from the socket (or from what TLS already decrypted).
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Input> {
        let Some(tls) = self.tls.as_mut() else {
            return match self.stream.read(buf) {
                Ok(0) => Ok(Input::Eof),
                Ok(n) => Ok(Input::Data(n)),
                Err(e) if would_block(&e) => Ok(Input::Nothing),
                Err(e) => Err(e),
            };
        };
        if self.plain_buffered == 0 {
            match tls.read_tls(&mut self.stream) {
                Ok(0) => return Ok(Input::Eof),
                Ok(_) => {}
                Err(e) if would_block(&e) => return Ok(Input::Nothing),
                Err(e) => return Err(e),
            }
            let state = tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            self.plain_buffered = state.plaintext_bytes_to_read();
            if self.plain_buffered == 0 {
                return Ok(if state.peer_has_closed() {
                    Input::Eof
                } else {
                    Input::Nothing
                });
            }
        }
        match tls.reader().read(buf) {
            Ok(0) => Ok(Input::Eof),
            Ok(n) => {
                self.plain_buffered = self.plain_buffered.saturating_sub(n);
                Ok(Input::Data(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.plain_buffered = 0;
                Ok(Input::Nothing)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes what `client` queued (and pending TLS records) until done or
    /// the socket would block. Returns true when bytes are still waiting
    /// (the driver should wait for the socket to become writable).
    pub fn flush(&mut self, client: &mut Client) -> io::Result<bool> {
        let Some(tls) = self.tls.as_mut() else {
            while !client.output().is_empty() {
                match self.stream.write(client.output()) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(n) => client.on_written(n, Instant::now()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            return Ok(false);
        };
        loop {
            if self.plain_pending == 0 && !tls.is_handshaking() && !client.output().is_empty() {
                self.plain_pending = tls.writer().write(client.output())?;
                if self.plain_pending == 0 && !tls.wants_write() {
                    // rustls' buffer is full and nothing can drain it now.
                    return Ok(true);
                }
            }
            if tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) => return Err(e),
                }
            }
            if self.plain_pending > 0 {
                client.on_written(std::mem::take(&mut self.plain_pending), Instant::now());
                continue;
            }
            return Ok(false);
        }
    }
}
