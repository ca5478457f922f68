//! A connection's byte stream, plain or TLS: what the SMTP, IMAP and POP3 drivers read from
//! and write to. STARTTLS turns a plain transport into a TLS one in place
//! ([`Transport::start_tls`]); a hand-over to another core takes it apart
//! ([`Transport::into_parts`]) and rebuilds it there ([`Transport::from_parts`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::tls::{TlsAcceptor, TlsParts, TlsStream};

/// How long a TLS handshake may take before the connection is dropped.
pub const TIMEOUT_MS_HANDSHAKE: u64 = 30_000;

pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.tcp(),
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr().map_err(io::Error::from)
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp()
            .set_read_timeout(timeout)
            .map_err(io::Error::from)
    }

    /// Reads plaintext; 0 at the end of the stream. Cancel-safe for plain streams (glommio's
    /// non-buffered read takes bytes only when it completes); for TLS, ciphertext already
    /// read stays buffered in the stream, so cancelling loses nothing either.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf).await,
            Transport::Tls(t) => t.read(buf).await,
        }
    }

    pub async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(data).await,
            Transport::Tls(t) => t.write_all(data).await,
        }
    }

    pub async fn close(self) {
        match self {
            Transport::Plain(mut s) => {
                let _ = s.close().await;
            }
            Transport::Tls(t) => t.close().await,
        }
    }

    /// The server side of a TLS handshake on a fresh connection (implicit TLS) or after
    /// STARTTLS. The caller has discarded every plaintext byte it buffered.
    pub async fn accept_tls(tcp: TcpStream, acceptor: &TlsAcceptor) -> io::Result<Transport> {
        let conn = acceptor.connection()?;
        tcp.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS_HANDSHAKE)))
            .map_err(io::Error::from)?;
        let stream = TlsStream::accept(tcp, conn).await?;
        Ok(Transport::Tls(Box::new(stream)))
    }

    /// STARTTLS: the handshake on this plain transport. A TLS transport is refused.
    pub async fn start_tls(self, acceptor: &TlsAcceptor) -> io::Result<Transport> {
        match self {
            Transport::Plain(tcp) => Transport::accept_tls(tcp, acceptor).await,
            Transport::Tls(_) => Err(io::Error::other("TLS is already active")),
        }
    }

    /// The client side of STARTTLS (outbound delivery). A TLS transport is refused.
    pub async fn connect_tls(self, conn: rustls::ClientConnection) -> io::Result<Transport> {
        match self {
            Transport::Plain(tcp) => {
                tcp.set_read_timeout(Some(Duration::from_millis(TIMEOUT_MS_HANDSHAKE)))
                    .map_err(io::Error::from)?;
                Ok(Transport::Tls(Box::new(
                    TlsStream::connect(tcp, conn).await?,
                )))
            }
            Transport::Tls(_) => Err(io::Error::other("TLS is already active")),
        }
    }

    pub fn into_parts(self) -> (TcpStream, Option<TlsParts>) {
        match self {
            Transport::Plain(s) => (s, None),
            Transport::Tls(t) => {
                let (tcp, parts) = t.into_parts();
                (tcp, Some(parts))
            }
        }
    }

    pub fn from_parts(tcp: TcpStream, tls: Option<TlsParts>) -> Transport {
        match tls {
            None => Transport::Plain(tcp),
            Some(parts) => Transport::Tls(Box::new(TlsStream::from_parts(tcp, parts))),
        }
    }
}
