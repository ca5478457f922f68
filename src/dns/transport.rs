//! Sending a query and getting its answer: glommio UDP, TCP when the answer is truncated.
//!
//! One UDP socket per try, bound to an ephemeral port the kernel picks at random and connected
//! to the server: a fresh source port and a random id per query is the standard defence against
//! off-path spoofing (a per-core socket would keep one port for every query and would need
//! demultiplexing by id), the connected socket only receives datagrams from that server and
//! reports ICMP port-unreachable at once, and the cost (a socket per lookup) is nothing next
//! to the SMTP connection the lookup is for. The socket is made with std (no SO_REUSEPORT,
//! which glommio's `UdpSocket::bind` sets and which could let two sockets share a port).
//!
//! Tries go round the servers in configured order, `attempts` rounds, each try bounded by
//! `timeout`; SERVFAIL, REFUSED and other server errors move on to the next server. A datagram
//! that does not answer our query (wrong id, wrong question, undecodable) is dropped and the
//! try keeps waiting, up to [`STRAY_DATAGRAMS_MAX`]. A truncated answer is asked again over TCP
//! (RFC 7766: 2-byte length prefix) within the same try's time budget plus one timeout.

use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpStream, UdpSocket};

use super::message::{self, MessageError, Parsed, Question, Response, ServerFailure};

/// Largest UDP answer read (we advertise [`message::EDNS_PAYLOAD_BYTES`]; a larger datagram
/// is cut and then fails to decode).
pub const UDP_ANSWER_BYTES_MAX: usize = 4096;
/// Datagrams that are not our answer, dropped within one try before it gives up.
pub const STRAY_DATAGRAMS_MAX: usize = 16;
/// Servers tried per round.
pub const SERVERS_MAX: usize = 8;

/// Where and how to ask.
#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<SocketAddr>,
    pub timeout: Duration,
    pub attempts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("no DNS server answered for {name} {kind} after {tries} tries; last: {last}")]
    NoAnswer {
        name: String,
        kind: &'static str,
        tries: u32,
        last: String,
    },
    /// The query could not be built, or a server's answer was unusable in a way another server
    /// would not fix (a CNAME chain too long).
    #[error(transparent)]
    Message(#[from] MessageError),
}

/// Why one try failed.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("{op}: {source}")]
    Io {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("timed out after {0} ms")]
    Timeout(u128),
    #[error("{0} datagrams that were not our answer")]
    Strays(usize),
    #[error("{0}")]
    Server(ServerFailure),
    #[error("TCP answer: {0}")]
    BadTcpAnswer(MessageError),
    #[error("truncated answer over TCP")]
    TruncatedOverTcp,
}

/// Asks the servers for `q` until one answers. `next_id` gives each try a fresh random id.
pub async fn query(
    settings: &Settings,
    q: &Question,
    next_id: &mut dyn FnMut() -> u16,
) -> Result<Parsed, TransportError> {
    let mut tries = 0;
    let mut last = String::from("no servers configured");
    for _ in 0..settings.attempts {
        for server in settings.servers.iter().take(SERVERS_MAX) {
            tries += 1;
            let id = next_id();
            match exchange(*server, q, id, settings.timeout).await {
                Ok(parsed) => return Ok(parsed),
                Err(Fatal::Message(e)) => return Err(e.into()),
                Err(Fatal::Try(e)) => last = format!("{server}: {e}"),
            }
        }
    }
    Err(TransportError::NoAnswer {
        name: q.name_text(),
        kind: q.kind.as_str(),
        tries,
        last,
    })
}

enum Fatal {
    /// Stop asking: see [`TransportError::Message`].
    Message(MessageError),
    /// Try the next server.
    Try(TryError),
}

impl From<TryError> for Fatal {
    fn from(e: TryError) -> Fatal {
        Fatal::Try(e)
    }
}

/// One try against one server: UDP, then TCP if truncated.
async fn exchange(
    server: SocketAddr,
    q: &Question,
    id: u16,
    timeout: Duration,
) -> Result<Parsed, Fatal> {
    let query = message::build_query(id, q).map_err(Fatal::Message)?;
    let response = with_timeout(timeout, udp_exchange(server, &query, q, id)).await?;
    let response = match response {
        Response::Truncated => with_timeout(timeout, tcp_exchange(server, &query, q, id))
            .await
            .map_err(|e| match e {
                Fatal::Try(TryError::BadTcpAnswer(m @ MessageError::CnameChain { .. })) => {
                    Fatal::Message(m)
                }
                e => e,
            })?,
        r => r,
    };
    match response {
        Response::Answer(parsed) => Ok(parsed),
        Response::Failed(f) => Err(TryError::Server(f).into()),
        Response::Truncated => Err(TryError::TruncatedOverTcp.into()),
    }
}

async fn with_timeout<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = Result<T, Fatal>>,
) -> Result<T, Fatal> {
    futures_lite::future::or(work, async {
        glommio::timer::sleep(timeout).await;
        Err(Fatal::Try(TryError::Timeout(timeout.as_millis())))
    })
    .await
}

fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Fatal {
    move |source| Fatal::Try(TryError::Io { op, source })
}

fn glommio_io(op: &'static str) -> impl FnOnce(glommio::GlommioError<()>) -> Fatal {
    move |e| {
        Fatal::Try(TryError::Io {
            op,
            source: e.into(),
        })
    }
}

async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    q: &Question,
    id: u16,
) -> Result<Response, Fatal> {
    let local: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let std_socket = StdUdpSocket::bind(local).map_err(io("UDP bind"))?;
    let fd = std_socket.into_raw_fd();
    // SAFETY: `fd` is a UDP socket we own (just released by `into_raw_fd`), handed over once;
    // the glommio socket closes it on drop.
    let mut socket = unsafe { UdpSocket::from_raw_fd(fd) };
    socket.set_buffer_size(UDP_ANSWER_BYTES_MAX);
    socket
        .connect(server)
        .await
        .map_err(glommio_io("UDP connect"))?;
    socket.send(query).await.map_err(glommio_io("UDP send"))?;
    let mut buf = vec![0u8; UDP_ANSWER_BYTES_MAX];
    for _ in 0..STRAY_DATAGRAMS_MAX {
        let n = socket
            .recv(&mut buf)
            .await
            .map_err(glommio_io("UDP recv"))?;
        match message::parse_response(&buf[..n], id, q) {
            Ok(r) => return Ok(r),
            Err(e @ MessageError::CnameChain { .. }) => return Err(Fatal::Message(e)),
            // Not an answer to this query (or garbage): keep listening.
            Err(_) => continue,
        }
    }
    Err(TryError::Strays(STRAY_DATAGRAMS_MAX).into())
}

async fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    q: &Question,
    id: u16,
) -> Result<Response, Fatal> {
    let mut stream = TcpStream::connect(server)
        .await
        .map_err(glommio_io("TCP connect"))?;
    let len = u16::try_from(query.len()).map_err(|_| {
        Fatal::Message(MessageError::Encode {
            name: q.name_text(),
            reason: "query longer than 65535 bytes".into(),
        })
    })?;
    let mut framed = Vec::with_capacity(2 + query.len());
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io("TCP write"))?;
    stream.flush().await.map_err(io("TCP write"))?;
    let mut len = [0u8; 2];
    stream
        .read_exact(&mut len)
        .await
        .map_err(io("TCP read length"))?;
    // At most 65535 bytes by construction of the prefix.
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream
        .read_exact(&mut answer)
        .await
        .map_err(io("TCP read answer"))?;
    message::parse_response(&answer, id, q).map_err(|e| Fatal::Try(TryError::BadTcpAnswer(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::message::{Answer, Rdata, RecordKind};
    use hickory_proto::op::{Message, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    use std::io::{Read, Write};
    use std::net::{TcpListener, UdpSocket as StdUdp};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// What the fake server does with the n-th UDP query it gets.
    #[derive(Clone, Copy)]
    enum Act {
        Answer,
        Stray,
        Truncate,
        ServFail,
        Silent,
    }

    fn reply_to(query: &Message, rcode: ResponseCode, records: usize) -> Message {
        let mut m = Message::response(query.metadata.id, query.metadata.op_code);
        m.metadata.response_code = rcode;
        m.add_queries(query.queries.clone());
        let name = query.queries[0].name().clone();
        for i in 0..records {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A::new(192, 0, 2, i as u8)),
            ));
        }
        m
    }

    /// A UDP (+ TCP on the same port) server acting out `acts` in turn; counts UDP queries.
    fn fake_server(acts: Vec<Act>, records: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let udp = StdUdp::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            for act in acts {
                let Ok((n, from)) = udp.recv_from(&mut buf) else {
                    return;
                };
                seen.fetch_add(1, Ordering::SeqCst);
                let query = Message::from_vec(&buf[..n]).unwrap();
                let send = |m: &Message| {
                    udp.send_to(&m.to_vec().unwrap(), from).unwrap();
                };
                match act {
                    Act::Answer => send(&reply_to(&query, ResponseCode::NoError, records)),
                    Act::Stray => {
                        let mut wrong = reply_to(&query, ResponseCode::NoError, 1);
                        wrong.metadata.id = query.metadata.id.wrapping_add(1);
                        send(&wrong);
                        udp.send_to(b"garbage", from).unwrap();
                        send(&reply_to(&query, ResponseCode::NoError, records));
                    }
                    Act::ServFail => send(&reply_to(&query, ResponseCode::ServFail, 0)),
                    Act::Silent => {}
                    Act::Truncate => {
                        let mut tc = reply_to(&query, ResponseCode::NoError, 0);
                        tc.metadata.truncation = true;
                        send(&tc);
                        let (mut s, _) = tcp.accept().unwrap();
                        let mut len = [0u8; 2];
                        s.read_exact(&mut len).unwrap();
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        s.read_exact(&mut q).unwrap();
                        let q = Message::from_vec(&q).unwrap();
                        let full = reply_to(&q, ResponseCode::NoError, records)
                            .to_vec()
                            .unwrap();
                        let mut framed = (full.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&full);
                        s.write_all(&framed).unwrap();
                    }
                }
            }
        });
        (addr, count)
    }

    fn run<T: Send + 'static>(
        f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>> + Send + 'static,
    ) -> T {
        glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    fn ask(servers: Vec<SocketAddr>, timeout_ms: u64, attempts: u32) -> Result<Parsed, String> {
        run(move || {
            Box::pin(async move {
                let settings = Settings {
                    servers,
                    timeout: Duration::from_millis(timeout_ms),
                    attempts,
                };
                let q = Question::new("host.example", RecordKind::A).unwrap();
                let mut id = 0x1234u16;
                let mut next_id = || {
                    id = id.wrapping_add(7);
                    id
                };
                query(&settings, &q, &mut next_id)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    }

    fn addresses(p: &Parsed) -> usize {
        match &p.answer {
            Answer::Records(r) => r.iter().filter(|r| matches!(r, Rdata::A(_))).count(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn udp_answer() {
        let (server, count) = fake_server(vec![Act::Answer], 2);
        let p = ask(vec![server], 2000, 1).unwrap();
        assert_eq!(addresses(&p), 2);
        assert_eq!(p.ttl_s, Some(60));
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn stray_datagrams_are_skipped() {
        let (server, _) = fake_server(vec![Act::Stray], 1);
        assert_eq!(addresses(&ask(vec![server], 2000, 1).unwrap()), 1);
    }

    #[test]
    fn truncated_answers_are_fetched_over_tcp() {
        // 150 A records do not fit in 1232 bytes: only TCP can carry them.
        let (server, _) = fake_server(vec![Act::Truncate], 150);
        assert_eq!(addresses(&ask(vec![server], 2000, 1).unwrap()), 150);
    }

    #[test]
    fn servfail_moves_on_to_the_next_server() {
        let (bad, bad_count) = fake_server(vec![Act::ServFail], 0);
        let (good, _) = fake_server(vec![Act::Answer], 1);
        assert_eq!(addresses(&ask(vec![bad, good], 2000, 1).unwrap()), 1);
        assert_eq!(bad_count.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn silence_times_out_and_attempts_go_round_the_servers() {
        let (first, first_count) = fake_server(vec![Act::Silent, Act::Silent], 0);
        let (second, second_count) = fake_server(vec![Act::ServFail, Act::Answer], 1);
        let started = std::time::Instant::now();
        let p = ask(vec![first, second], 150, 2).unwrap();
        assert_eq!(addresses(&p), 1);
        // first (timeout), second (SERVFAIL), first (timeout), second (answer).
        assert_eq!(first_count.load(Ordering::SeqCst), 2);
        assert_eq!(second_count.load(Ordering::SeqCst), 2);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn nobody_answering_is_an_error_naming_the_last_failure() {
        let (silent, _) = fake_server(vec![Act::Silent, Act::Silent], 0);
        let started = std::time::Instant::now();
        let e = ask(vec![silent], 100, 2).unwrap_err();
        assert!(e.contains("after 2 tries"), "{e}");
        assert!(e.contains("timed out after 100 ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // A port where nothing listens: ICMP port unreachable ends each try at once.
        let closed = StdUdp::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let started = std::time::Instant::now();
        let e = ask(vec![closed], 2000, 2).unwrap_err();
        assert!(e.contains("UDP"), "{e}");
        assert!(started.elapsed() < Duration::from_millis(1500), "{e}");
    }
}
