//! Test support: a programmable DNS server on 127.0.0.1 (std UDP on a thread) answering each
//! query with whatever the test's function builds, counting the queries it gets.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};

pub struct TestServer {
    pub addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

impl TestServer {
    /// `answer(name, type)` gives the rcode and answer records; `None` stays silent.
    pub fn start(
        answer: impl Fn(&str, RecordType) -> Option<(ResponseCode, Vec<Record>)> + Send + 'static,
    ) -> TestServer {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let seen = queries.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                seen.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let q = &query.queries[0];
                let name = q.name().to_lowercase().to_ascii();
                let Some((rcode, records)) = answer(name.trim_end_matches('.'), q.query_type())
                else {
                    continue;
                };
                let mut m = Message::response(query.metadata.id, query.metadata.op_code);
                m.metadata.response_code = rcode;
                m.add_queries(query.queries.clone());
                m.add_answers(records);
                let _ = udp.send_to(&m.to_vec().unwrap(), from);
            }
        });
        TestServer { addr, queries }
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

pub fn record(name: &str, data: RData) -> Record {
    Record::from_rdata(Name::from_ascii(name).unwrap(), 300, data)
}
