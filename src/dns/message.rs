//! DNS messages, sans-IO: build a query (caller's id, RD, EDNS0 with a 1232-byte payload) and
//! read a response with hickory-proto, checking that it answers *this* query (id, QR, question),
//! mapping the rcode, and following CNAME chains inside the answer section (bounded by
//! [`CNAME_CHAIN_MAX`]). The result is a small owned [`Answer`] with the TTL it may be cached
//! for; the cache and the resolver never see hickory types.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// CNAME hops allowed from a queried name to its records, within one answer and across queries.
pub const CNAME_CHAIN_MAX: usize = 8;
/// Records of the asked type kept from one answer; the rest are ignored.
pub const ANSWER_RECORDS_MAX: usize = 256;
/// The UDP payload we advertise (EDNS0): the 2020 DNS flag day value, no IP fragmentation.
pub const EDNS_PAYLOAD_BYTES: u16 = 1232;
/// Longest domain name in presentation form, without the trailing dot (RFC 1035 §2.3.4).
pub const NAME_BYTES_MAX: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("{name:?} is not a valid domain name: {reason}")]
    BadName { name: String, reason: String },
    #[error("cannot encode the query for {name}: {reason}")]
    Encode { name: String, reason: String },
    #[error("undecodable response for {name}: {reason}")]
    Decode { name: String, reason: String },
    #[error("response id {got} does not match query id {expected}")]
    IdMismatch { expected: u16, got: u16 },
    #[error("response for {name} does not carry the question that was asked")]
    QuestionMismatch { name: String },
    #[error("message for {name} is not a response to a standard query")]
    NotAResponse { name: String },
    #[error("CNAME chain from {name} longer than {CNAME_CHAIN_MAX} hops (or a loop)")]
    CnameChain { name: String },
}

/// The record types the outbound path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Mx,
    A,
    Aaaa,
}

impl RecordKind {
    pub fn record_type(self) -> RecordType {
        match self {
            RecordKind::Mx => RecordType::MX,
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Mx => "MX",
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
        }
    }
}

/// One record of an answer, owned. MX exchanges are lowercase ASCII without the trailing dot;
/// the root (null MX, RFC 7505) is `"."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rdata {
    Mx { preference: u16, exchange: String },
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
}

/// What the DNS says about one (name, type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type (after any CNAMEs in the same answer).
    Records(Vec<Rdata>),
    /// The name is an alias whose target's records were not in the answer: ask again for
    /// `target` (lowercase, no trailing dot).
    Cname(String),
    /// The name exists but has no record of that type.
    NoData,
    /// The name does not exist.
    NxDomain,
}

/// An answer and how long it may be cached (`None`: not cacheable, e.g. a negative answer
/// without an SOA, RFC 2308 §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub answer: Answer,
    pub ttl_s: Option<u32>,
}

/// A server error: try the next server, and if none answers better, a temporary failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFailure {
    ServFail,
    Refused,
    /// FORMERR, NOTIMP or anything else unexpected (the numeric rcode).
    Other(u16),
}

impl std::fmt::Display for ServerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerFailure::ServFail => f.write_str("SERVFAIL"),
            ServerFailure::Refused => f.write_str("REFUSED"),
            ServerFailure::Other(code) => write!(f, "rcode {code}"),
        }
    }
}

/// How one response ends the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Answer(Parsed),
    /// TC set: ask again over TCP.
    Truncated,
    Failed(ServerFailure),
}

/// The question being asked, in the form the checks need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub name: Name,
    pub kind: RecordKind,
}

impl Question {
    pub fn new(name: &str, kind: RecordKind) -> Result<Question, MessageError> {
        Ok(Question {
            name: domain_name(name)?,
            kind,
        })
    }

    /// Lowercase presentation form without the trailing dot.
    pub fn name_text(&self) -> String {
        name_text(&self.name)
    }
}

/// Parses a domain (U-labels are converted to A-labels) into a fully qualified name.
pub fn domain_name(s: &str) -> Result<Name, MessageError> {
    let bad = |reason: &str| MessageError::BadName {
        name: s.chars().take(NAME_BYTES_MAX + 2).collect(),
        reason: reason.to_string(),
    };
    let trimmed = s.strip_suffix('.').unwrap_or(s);
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    if trimmed.len() > NAME_BYTES_MAX * 4 {
        return Err(bad("too long"));
    }
    if trimmed
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'\\')
    {
        return Err(bad("spaces, control characters or escapes"));
    }
    let mut name = Name::from_utf8(trimmed).map_err(|e| bad(&e.to_string()))?;
    name.set_fqdn(true);
    if name_text(&name).len() > NAME_BYTES_MAX {
        return Err(bad("longer than 253 bytes"));
    }
    Ok(name)
}

/// Lowercase ASCII presentation form without the trailing dot; the root is `"."`.
pub fn name_text(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    let mut s = name.to_lowercase().to_ascii();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// Encodes a recursive query for `q` with message id `id`.
pub fn build_query(id: u16, q: &Question) -> Result<Vec<u8>, MessageError> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(q.name.clone(), q.kind.record_type()));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD_BYTES);
    m.set_edns(edns);
    m.to_vec().map_err(|e| MessageError::Encode {
        name: q.name_text(),
        reason: e.to_string(),
    })
}

/// Reads a response to query `id` for `q`. A wrong id or question is an error the transport
/// treats as "not our answer" (keep waiting), not as the server's answer.
pub fn parse_response(bytes: &[u8], id: u16, q: &Question) -> Result<Response, MessageError> {
    let m = Message::from_vec(bytes).map_err(|e| MessageError::Decode {
        name: q.name_text(),
        reason: e.to_string(),
    })?;
    if m.metadata.id != id {
        return Err(MessageError::IdMismatch {
            expected: id,
            got: m.metadata.id,
        });
    }
    if m.metadata.message_type != MessageType::Response || m.metadata.op_code != OpCode::Query {
        return Err(MessageError::NotAResponse {
            name: q.name_text(),
        });
    }
    let rcode = m.metadata.response_code;
    let answers_question = m.queries.len() == 1 && {
        let asked = &m.queries[0];
        asked.name().eq_ignore_root_case(&q.name)
            && asked.query_type() == q.kind.record_type()
            && asked.query_class() == DNSClass::IN
    };
    // Servers may drop the question from an error reply; a real answer must carry it.
    let may_lack_question =
        m.queries.is_empty() && !matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain);
    if !answers_question && !may_lack_question {
        return Err(MessageError::QuestionMismatch {
            name: q.name_text(),
        });
    }
    if m.metadata.truncation {
        return Ok(Response::Truncated);
    }
    match rcode {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        ResponseCode::ServFail => return Ok(Response::Failed(ServerFailure::ServFail)),
        ResponseCode::Refused => return Ok(Response::Failed(ServerFailure::Refused)),
        other => return Ok(Response::Failed(ServerFailure::Other(u16::from(other)))),
    }
    Ok(Response::Answer(read_answer(&m, q)?))
}

/// Follows CNAMEs from the question through the answer section, then classifies.
fn read_answer(m: &Message, q: &Question) -> Result<Parsed, MessageError> {
    let want = q.kind.record_type();
    let mut current = q.name.clone();
    let mut ttl_s = u32::MAX;
    let mut hops = 0;
    let in_class = |r: &&Record| r.dns_class == DNSClass::IN;
    loop {
        let mut records = Vec::new();
        for r in m.answers.iter().filter(in_class) {
            if r.record_type() != want || !r.name.eq_ignore_root_case(&current) {
                continue;
            }
            if records.len() == ANSWER_RECORDS_MAX {
                break;
            }
            let data = match &r.data {
                RData::MX(mx) => Rdata::Mx {
                    preference: mx.preference,
                    exchange: name_text(&mx.exchange),
                },
                RData::A(a) => Rdata::A(a.0),
                RData::AAAA(a) => Rdata::Aaaa(a.0),
                _ => continue,
            };
            ttl_s = ttl_s.min(r.ttl);
            records.push(data);
        }
        if !records.is_empty() {
            return Ok(Parsed {
                answer: Answer::Records(records),
                ttl_s: Some(ttl_s),
            });
        }
        let cname = m
            .answers
            .iter()
            .filter(in_class)
            .find_map(|r| match &r.data {
                RData::CNAME(c) if r.name.eq_ignore_root_case(&current) => Some((r.ttl, &c.0)),
                _ => None,
            });
        let Some((ttl, target)) = cname else { break };
        hops += 1;
        if hops > CNAME_CHAIN_MAX {
            return Err(MessageError::CnameChain {
                name: q.name_text(),
            });
        }
        ttl_s = ttl_s.min(ttl);
        current = target.clone();
    }
    let negative_ttl_s = negative_ttl(m).map(|n| n.min(ttl_s));
    let followed = !current.eq_ignore_root_case(&q.name);
    let answer = if m.metadata.response_code == ResponseCode::NXDomain {
        Answer::NxDomain
    } else if followed && negative_ttl_s.is_none() {
        // The server gave the alias but not the target's records: ask for the target.
        return Ok(Parsed {
            answer: Answer::Cname(name_text(&current)),
            ttl_s: Some(ttl_s),
        });
    } else {
        Answer::NoData
    };
    Ok(Parsed {
        answer,
        ttl_s: negative_ttl_s,
    })
}

/// RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM).
fn negative_ttl(m: &Message) -> Option<u32> {
    m.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA};
    use hickory_proto::rr::rdata::{CNAME, MX, SOA};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn reply(id: u16, q: &Question, rcode: ResponseCode) -> Message {
        let mut m = Message::response(id, OpCode::Query);
        m.metadata.response_code = rcode;
        m.metadata.recursion_desired = true;
        m.metadata.recursion_available = true;
        m.add_query(Query::query(q.name.clone(), q.kind.record_type()));
        m
    }

    fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        Record::from_rdata(
            n(zone),
            ttl,
            RData::SOA(SOA::new(
                n("ns.example."),
                n("admin.example."),
                1,
                3600,
                600,
                86400,
                minimum,
            )),
        )
    }

    fn mx(name: &str, ttl: u32, pref: u16, host: &str) -> Record {
        Record::from_rdata(n(name), ttl, RData::MX(MX::new(pref, n(host))))
    }

    fn cname(name: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(n(name), ttl, RData::CNAME(CNAME(n(target))))
    }

    fn a(name: &str, ttl: u32, ip: [u8; 4]) -> Record {
        Record::from_rdata(n(name), ttl, RData::A(A::new(ip[0], ip[1], ip[2], ip[3])))
    }

    fn parse(m: &Message, id: u16, q: &Question) -> Result<Response, MessageError> {
        parse_response(&m.to_vec().unwrap(), id, q)
    }

    #[test]
    fn query_carries_id_rd_question_and_edns() {
        let q = Question::new("Example.ORG.", RecordKind::Mx).unwrap();
        let bytes = build_query(0xbeef, &q).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 0xbeef);
        assert!(m.metadata.recursion_desired);
        assert_eq!(m.metadata.message_type, MessageType::Query);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].query_type(), RecordType::MX);
        assert_eq!(m.queries[0].query_class(), DNSClass::IN);
        assert_eq!(name_text(m.queries[0].name()), "example.org");
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD_BYTES);
    }

    #[test]
    fn names_are_checked_and_normalised() {
        assert_eq!(
            Question::new("MX.Example.com", RecordKind::A)
                .unwrap()
                .name_text(),
            "mx.example.com"
        );
        for bad in ["", ".", "a b.example", "a\u{7f}.example", "x\\.y"] {
            assert!(
                matches!(domain_name(bad), Err(MessageError::BadName { .. })),
                "{bad:?}"
            );
        }
        let label = "a".repeat(63);
        let long = [label.as_str(); 4].join(".");
        assert!(domain_name(&long).is_err(), "255 bytes");
        assert!(domain_name(&"a".repeat(64)).is_err(), "64-byte label");
        // U-labels become A-labels.
        assert_eq!(
            name_text(&domain_name("bücher.example").unwrap()),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn mx_answer_with_min_ttl() {
        let q = Question::new("example.org", RecordKind::Mx).unwrap();
        let mut m = reply(7, &q, ResponseCode::NoError);
        m.add_answer(mx("example.org.", 300, 10, "MX1.example.org."));
        m.add_answer(mx("example.org.", 120, 20, "mx2.example.org."));
        // A record for another name in the answer section is not ours.
        m.add_answer(a("other.example.", 5, [192, 0, 2, 1]));
        let Response::Answer(p) = parse(&m, 7, &q).unwrap() else {
            panic!()
        };
        assert_eq!(p.ttl_s, Some(120));
        assert_eq!(
            p.answer,
            Answer::Records(vec![
                Rdata::Mx {
                    preference: 10,
                    exchange: "mx1.example.org".into()
                },
                Rdata::Mx {
                    preference: 20,
                    exchange: "mx2.example.org".into()
                },
            ])
        );
    }

    #[test]
    fn null_mx_is_the_root() {
        let q = Question::new("null.example", RecordKind::Mx).unwrap();
        let mut m = reply(1, &q, ResponseCode::NoError);
        m.add_answer(Record::from_rdata(
            n("null.example."),
            60,
            RData::MX(MX::new(0, Name::root())),
        ));
        let Response::Answer(p) = parse(&m, 1, &q).unwrap() else {
            panic!()
        };
        assert_eq!(
            p.answer,
            Answer::Records(vec![Rdata::Mx {
                preference: 0,
                exchange: ".".into()
            }])
        );
    }

    #[test]
    fn wrong_id_question_or_direction_is_rejected() {
        let q = Question::new("example.org", RecordKind::A).unwrap();
        let m = reply(9, &q, ResponseCode::NoError);
        assert_eq!(
            parse(&m, 10, &q),
            Err(MessageError::IdMismatch {
                expected: 10,
                got: 9
            })
        );
        let other = Question::new("example.net", RecordKind::A).unwrap();
        assert!(matches!(
            parse(&m, 9, &other),
            Err(MessageError::QuestionMismatch { .. })
        ));
        let other_type = Question::new("example.org", RecordKind::Aaaa).unwrap();
        assert!(matches!(
            parse(&m, 9, &other_type),
            Err(MessageError::QuestionMismatch { .. })
        ));
        // Our own query reflected back is not an answer.
        let query = build_query(9, &q).unwrap();
        assert!(matches!(
            parse_response(&query, 9, &q),
            Err(MessageError::NotAResponse { .. })
        ));
        // A NOERROR without the question is not accepted; a REFUSED without one is.
        let mut bare = Message::response(9, OpCode::Query);
        assert!(matches!(
            parse(&bare, 9, &q),
            Err(MessageError::QuestionMismatch { .. })
        ));
        bare.metadata.response_code = ResponseCode::Refused;
        assert_eq!(
            parse(&bare, 9, &q),
            Ok(Response::Failed(ServerFailure::Refused))
        );
        // The question matches case-insensitively.
        let upper = Question::new("EXAMPLE.org", RecordKind::A).unwrap();
        assert!(parse(&m, 9, &upper).is_ok());
    }

    #[test]
    fn rcodes_map_to_outcomes() {
        let q = Question::new("gone.example", RecordKind::Mx).unwrap();
        let mut nx = reply(3, &q, ResponseCode::NXDomain);
        nx.add_authority(soa("example.", 900, 300));
        assert_eq!(
            parse(&nx, 3, &q),
            Ok(Response::Answer(Parsed {
                answer: Answer::NxDomain,
                ttl_s: Some(300)
            }))
        );
        // Without an SOA a negative answer is not cacheable.
        let nx = reply(3, &q, ResponseCode::NXDomain);
        assert_eq!(
            parse(&nx, 3, &q),
            Ok(Response::Answer(Parsed {
                answer: Answer::NxDomain,
                ttl_s: None
            }))
        );
        for (rcode, want) in [
            (ResponseCode::ServFail, ServerFailure::ServFail),
            (ResponseCode::Refused, ServerFailure::Refused),
            (ResponseCode::FormErr, ServerFailure::Other(1)),
            (ResponseCode::NotImp, ServerFailure::Other(4)),
        ] {
            assert_eq!(
                parse(&reply(3, &q, rcode), 3, &q),
                Ok(Response::Failed(want))
            );
        }
    }

    #[test]
    fn nodata_uses_the_smaller_of_soa_ttl_and_minimum() {
        let q = Question::new("host.example", RecordKind::Mx).unwrap();
        let mut m = reply(4, &q, ResponseCode::NoError);
        m.add_authority(soa("example.", 60, 3600));
        assert_eq!(
            parse(&m, 4, &q),
            Ok(Response::Answer(Parsed {
                answer: Answer::NoData,
                ttl_s: Some(60)
            }))
        );
    }

    #[test]
    fn truncated_answer_asks_for_tcp() {
        let q = Question::new("big.example", RecordKind::A).unwrap();
        let mut m = reply(5, &q, ResponseCode::NoError);
        m.metadata.truncation = true;
        m.add_answer(a("big.example.", 60, [192, 0, 2, 1]));
        assert_eq!(parse(&m, 5, &q), Ok(Response::Truncated));
    }

    #[test]
    fn cname_chain_inside_one_answer_is_followed() {
        let q = Question::new("www.example", RecordKind::Aaaa).unwrap();
        let mut m = reply(6, &q, ResponseCode::NoError);
        m.add_answer(cname("www.example.", 50, "mid.example."));
        m.add_answer(cname("mid.example.", 500, "end.example."));
        m.add_answer(Record::from_rdata(
            n("end.example."),
            400,
            RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        ));
        let Response::Answer(p) = parse(&m, 6, &q).unwrap() else {
            panic!()
        };
        assert_eq!(p.ttl_s, Some(50));
        assert_eq!(
            p.answer,
            Answer::Records(vec![Rdata::Aaaa("2001:db8::1".parse().unwrap())])
        );
    }

    #[test]
    fn cname_without_target_records_is_followed_by_another_query() {
        let q = Question::new("alias.example", RecordKind::Mx).unwrap();
        let mut m = reply(8, &q, ResponseCode::NoError);
        m.add_answer(cname("alias.example.", 70, "Target.Example.NET."));
        assert_eq!(
            parse(&m, 8, &q),
            Ok(Response::Answer(Parsed {
                answer: Answer::Cname("target.example.net".into()),
                ttl_s: Some(70)
            }))
        );
        // With an SOA the server says the target has no such records.
        m.add_authority(soa("example.net.", 900, 30));
        assert_eq!(
            parse(&m, 8, &q),
            Ok(Response::Answer(Parsed {
                answer: Answer::NoData,
                ttl_s: Some(30)
            }))
        );
        // NXDOMAIN after a CNAME is about the target (RFC 6604) and ends the lookup.
        let mut nx = reply(8, &q, ResponseCode::NXDomain);
        nx.add_answer(cname("alias.example.", 70, "gone.example."));
        let Response::Answer(p) = parse(&nx, 8, &q).unwrap() else {
            panic!()
        };
        assert_eq!(p.answer, Answer::NxDomain);
    }

    #[test]
    fn cname_chains_are_bounded_and_loops_end() {
        let q = Question::new("c0.example", RecordKind::A).unwrap();
        let mut m = reply(2, &q, ResponseCode::NoError);
        for i in 0..=CNAME_CHAIN_MAX {
            m.add_answer(cname(
                &format!("c{i}.example."),
                60,
                &format!("c{}.example.", i + 1),
            ));
        }
        m.add_answer(a(
            &format!("c{}.example.", CNAME_CHAIN_MAX + 1),
            60,
            [192, 0, 2, 9],
        ));
        assert!(matches!(
            parse(&m, 2, &q),
            Err(MessageError::CnameChain { .. })
        ));
        // Exactly CNAME_CHAIN_MAX hops is fine.
        let mut ok = reply(2, &q, ResponseCode::NoError);
        for i in 0..CNAME_CHAIN_MAX {
            ok.add_answer(cname(
                &format!("c{i}.example."),
                60,
                &format!("c{}.example.", i + 1),
            ));
        }
        ok.add_answer(a(
            &format!("c{CNAME_CHAIN_MAX}.example."),
            60,
            [192, 0, 2, 9],
        ));
        assert!(matches!(parse(&ok, 2, &q), Ok(Response::Answer(_))));
        // A loop.
        let mut lp = reply(2, &q, ResponseCode::NoError);
        lp.add_answer(cname("c0.example.", 60, "c1.example."));
        lp.add_answer(cname("c1.example.", 60, "c0.example."));
        assert!(matches!(
            parse(&lp, 2, &q),
            Err(MessageError::CnameChain { .. })
        ));
    }

    #[test]
    fn garbage_and_every_truncation_of_a_response_are_errors_not_panics() {
        let q = Question::new("example.org", RecordKind::Mx).unwrap();
        let mut m = reply(11, &q, ResponseCode::NoError);
        m.add_answer(mx("example.org.", 300, 10, "mx.example.org."));
        m.add_authority(soa("example.org.", 300, 300));
        let bytes = m.to_vec().unwrap();
        assert!(matches!(
            parse_response(&bytes, 11, &q),
            Ok(Response::Answer(_))
        ));
        for cut in 0..bytes.len() {
            // Whatever a cut message decodes to, it must not be taken as the full answer.
            if let Ok(Response::Answer(p)) = parse_response(&bytes[..cut], 11, &q) {
                panic!("cut at {cut} parsed as {p:?}");
            }
        }
        assert!(matches!(
            parse_response(&[0xff; 40], 11, &q),
            Err(MessageError::Decode { .. }) | Err(MessageError::IdMismatch { .. })
        ));
    }

    #[test]
    fn answer_records_are_bounded() {
        let q = Question::new("many.example", RecordKind::A).unwrap();
        let mut m = reply(12, &q, ResponseCode::NoError);
        for i in 0..(ANSWER_RECORDS_MAX + 10) {
            m.add_answer(a("many.example.", 60, [10, 0, (i / 256) as u8, i as u8]));
        }
        let Response::Answer(Parsed {
            answer: Answer::Records(r),
            ..
        }) = parse(&m, 12, &q).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.len(), ANSWER_RECORDS_MAX);
    }
}
