//! The DNS stub resolver of the outbound path: where to deliver mail for a domain.
//!
//! - [`message`]     — sans-IO: build a query, check and read a response (hickory-proto),
//!   rcodes, truncation, CNAME chains within one answer.
//! - [`cache`]       — the per-core answer cache: TTLs clamped, negative caching, bounded.
//! - [`transport`]   — glommio UDP per try, TCP on truncation, timeouts, retries over servers.
//! - [`resolv_conf`] — the default servers, from /etc/resolv.conf.
//! - [`cli`]         — `ringmail dns DOMAIN`: the route and addresses as the sender sees them.
//!
//! [`Resolver`] (one per core, shared as `Rc`) answers the two questions the sender asks:
//! [`Resolver::mx_route`] (RFC 5321 §5.1: MX hosts by preference, random among equals; no MX →
//! the domain itself; null MX, RFC 7505 → permanent failure) and [`Resolver::addresses`]
//! (A then AAAA). Address literals (`[192.0.2.1]`, `[IPv6:2001:db8::1]`) skip DNS. Errors say
//! whether they are permanent ([`RouteError::is_permanent`]): NXDOMAIN, null MX, no address
//! are; SERVFAIL, REFUSED, timeouts are not.

pub mod cache;
pub mod cli;
pub mod message;
pub mod resolv_conf;
#[cfg(test)]
mod test_server;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::DnsConfig;

use self::cache::Cache;
use self::message::{Answer, MessageError, Question, Rdata, RecordKind, CNAME_CHAIN_MAX};
use self::transport::{Settings, TransportError};

/// MX hosts kept in a route (after sorting); the sender tries only the first few anyway.
pub const MX_HOSTS_MAX: usize = 16;

/// One host to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    pub preference: u16,
    /// Lowercase, no trailing dot; an address literal (`[192.0.2.1]`) as given.
    pub host: String,
}

/// Why there is no route (or no address) for a domain or host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("{0} does not accept mail (null MX, RFC 7505)")]
    NullMx(String),
    #[error("{0}: no such domain (NXDOMAIN)")]
    NoSuchDomain(String),
    #[error("{0}: no A or AAAA address")]
    NoAddresses(String),
    #[error("{0}")]
    BadName(String),
    #[error("DNS: {0}")]
    Temporary(String),
}

impl RouteError {
    /// Permanent: bounce now. Otherwise retry later.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, RouteError::Temporary(_))
    }
}

/// Errors of setting up a resolver.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot read {path}: {source} (set [dns] servers)")]
    ResolvConf {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} names no usable nameserver (set [dns] servers)")]
    NoServers { path: String },
}

/// The per-core stub resolver. Interior mutability only (`&self` methods), never a borrow held
/// across an await: share it as `Rc<Resolver>`.
#[derive(Debug)]
pub struct Resolver {
    settings: Settings,
    cache: RefCell<Cache>,
    rng: Cell<u64>,
}

impl Resolver {
    /// Servers from the config, or else from /etc/resolv.conf.
    pub fn new(config: &DnsConfig) -> Result<Resolver, DnsError> {
        let servers = match &config.servers {
            Some(list) => list.clone(),
            None => system_servers(Path::new(resolv_conf::RESOLV_CONF))?,
        };
        Ok(Resolver::with_servers(servers, config))
    }

    /// With an explicit server list (tests, or servers already resolved once per process).
    pub fn with_servers(servers: Vec<SocketAddr>, config: &DnsConfig) -> Resolver {
        Resolver {
            settings: Settings {
                servers,
                timeout: Duration::from_millis(config.timeout_ms),
                attempts: config.attempts,
            },
            cache: RefCell::new(Cache::new(config.cache_entries_max)),
            rng: Cell::new(random_u64()),
        }
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.settings.servers
    }

    /// Where to deliver mail for `domain`, in the order to try.
    pub async fn mx_route(&self, domain: &str) -> Result<Vec<MxHost>, RouteError> {
        if let Some(literal) = address_literal(domain) {
            literal?;
            return Ok(vec![MxHost {
                preference: 0,
                host: domain.to_string(),
            }]);
        }
        let q = Question::new(domain, RecordKind::Mx).map_err(bad_name)?;
        let name = q.name_text();
        match self.lookup(q).await? {
            Answer::NxDomain => Err(RouteError::NoSuchDomain(name)),
            // RFC 5321 §5.1: no MX, the domain itself is the only host (implicit MX).
            // (`lookup` follows CNAMEs, so `Cname` does not come back from it.)
            Answer::NoData | Answer::Cname(_) => Ok(vec![MxHost {
                preference: 0,
                host: name,
            }]),
            Answer::Records(records) => {
                let mut rng = self.rng.get();
                let route = route_from_mx(&name, &records, &mut rng);
                self.rng.set(rng);
                route
            }
        }
    }

    /// The addresses of one host, IPv4 first. A temporary failure of one family does not hide
    /// the other family's addresses.
    pub async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, RouteError> {
        if let Some(literal) = address_literal(host) {
            return literal.map(|ip| vec![ip]);
        }
        let q4 = Question::new(host, RecordKind::A).map_err(bad_name)?;
        let q6 = Question::new(host, RecordKind::Aaaa).map_err(bad_name)?;
        let name = q4.name_text();
        let (v4, v6) = futures_lite::future::zip(self.lookup(q4), self.lookup(q6)).await;
        let mut out = Vec::new();
        for answer in [&v4, &v6] {
            if let Ok(Answer::Records(records)) = answer {
                out.extend(records.iter().filter_map(|r| match r {
                    Rdata::A(ip) => Some(IpAddr::V4(*ip)),
                    Rdata::Aaaa(ip) => Some(IpAddr::V6(*ip)),
                    Rdata::Mx { .. } => None,
                }));
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        match (v4, v6) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            (Ok(Answer::NxDomain), Ok(Answer::NxDomain)) => Err(RouteError::NoSuchDomain(name)),
            _ => Err(RouteError::NoAddresses(name)),
        }
    }

    /// One (name, type) through the cache, following CNAMEs across queries (bounded).
    async fn lookup(&self, q: Question) -> Result<Answer, RouteError> {
        let original = q.name_text();
        let mut q = q;
        for _ in 0..=CNAME_CHAIN_MAX {
            let name = q.name_text();
            let cached = self.cache.borrow_mut().get(&name, q.kind, Instant::now());
            let answer = match cached {
                Some(a) => a,
                None => {
                    let mut next_id = random_u16;
                    let parsed = transport::query(&self.settings, &q, &mut next_id)
                        .await
                        .map_err(|e| transport_error(&original, e))?;
                    if let Some(ttl_s) = parsed.ttl_s {
                        self.cache.borrow_mut().insert(
                            &name,
                            q.kind,
                            parsed.answer.clone(),
                            ttl_s,
                            Instant::now(),
                        );
                    }
                    parsed.answer
                }
            };
            match answer {
                Answer::Cname(target) => {
                    q = Question::new(&target, q.kind).map_err(bad_name)?;
                }
                other => return Ok(other),
            }
        }
        Err(RouteError::Temporary(format!(
            "{original}: CNAME chain longer than {CNAME_CHAIN_MAX} hops (or a loop)"
        )))
    }
}

/// The route from an MX answer: null MX check, sorted by preference, random among equals
/// (`rng` is a splitmix64 state), duplicates dropped, at most [`MX_HOSTS_MAX`].
pub fn route_from_mx(
    domain: &str,
    records: &[Rdata],
    rng: &mut u64,
) -> Result<Vec<MxHost>, RouteError> {
    let mut hosts: Vec<MxHost> = records
        .iter()
        .filter_map(|r| match r {
            Rdata::Mx {
                preference,
                exchange,
            } => Some(MxHost {
                preference: *preference,
                host: exchange.clone(),
            }),
            _ => None,
        })
        .collect();
    // RFC 7505: a single MX whose exchange is the root. A "." beside real hosts is ignored.
    if hosts.len() == 1 && hosts[0].host == "." {
        return Err(RouteError::NullMx(domain.to_string()));
    }
    hosts.retain(|h| h.host != ".");
    if hosts.is_empty() {
        return Ok(vec![MxHost {
            preference: 0,
            host: domain.to_string(),
        }]);
    }
    hosts.sort_by_key(|h| h.preference);
    let mut seen: Vec<String> = Vec::with_capacity(hosts.len());
    hosts.retain(|h| {
        let fresh = !seen.contains(&h.host);
        if fresh {
            seen.push(h.host.clone());
        }
        fresh
    });
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = hosts[start..]
            .iter()
            .position(|h| h.preference != pref)
            .map_or(hosts.len(), |i| start + i);
        // Fisher–Yates over the equal-preference group.
        for i in (start + 1..end).rev() {
            let j = start + below(rng, (i - start + 1) as u64) as usize;
            hosts.swap(i, j);
        }
        start = end;
    }
    hosts.truncate(MX_HOSTS_MAX);
    Ok(hosts)
}

/// `Some` when `s` is an address literal (RFC 5321 §4.1.3): `[192.0.2.1]` or
/// `[IPv6:2001:db8::1]`; `Some(Err)` when it is bracketed but not a valid one.
pub fn address_literal(s: &str) -> Option<Result<IpAddr, RouteError>> {
    let inner = s.strip_prefix('[')?.strip_suffix(']');
    let bad = || RouteError::BadName(format!("{s:?} is not a valid address literal"));
    let Some(inner) = inner else {
        return Some(Err(bad()));
    };
    let parsed = match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..]
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    };
    Some(parsed.ok_or_else(bad))
}

fn bad_name(e: MessageError) -> RouteError {
    RouteError::BadName(e.to_string())
}

fn transport_error(name: &str, e: TransportError) -> RouteError {
    match e {
        TransportError::Message(MessageError::BadName { .. }) => RouteError::BadName(e.to_string()),
        e => RouteError::Temporary(format!("{name}: {e}")),
    }
}

fn system_servers(path: &Path) -> Result<Vec<SocketAddr>, DnsError> {
    let servers = resolv_conf::load(path).map_err(|source| DnsError::ResolvConf {
        path: path.display().to_string(),
        source,
    })?;
    if servers.is_empty() {
        return Err(DnsError::NoServers {
            path: path.display().to_string(),
        });
    }
    Ok(servers)
}

/// splitmix64: uniform enough to shuffle hosts, not for anything secret.
fn next_u64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A number in `0..n` (n ≥ 1; the modulo bias is negligible for n this small).
fn below(state: &mut u64, n: u64) -> u64 {
    next_u64(state) % n.max(1)
}

/// Bytes from the kernel's CSPRNG (getrandom(2)); a time-based fallback if it fails.
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // SAFETY: getrandom writes at most `buf.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() != Some(N) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut state = nanos ^ u64::from(std::process::id());
        for chunk in buf.chunks_mut(8) {
            let v = next_u64(&mut state).to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    buf
}

/// A query id: unpredictable, from the kernel, per query.
fn random_u16() -> u16 {
    u16::from_le_bytes(random_bytes::<2>())
}

fn random_u64() -> u64 {
    u64::from_le_bytes(random_bytes::<8>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(pref: u16, host: &str) -> Rdata {
        Rdata::Mx {
            preference: pref,
            exchange: host.into(),
        }
    }

    fn hosts(route: &[MxHost]) -> Vec<&str> {
        route.iter().map(|h| h.host.as_str()).collect()
    }

    #[test]
    fn route_is_sorted_by_preference() {
        let mut rng = 1;
        let route = route_from_mx(
            "example.org",
            &[mx(30, "c"), mx(10, "a"), mx(20, "b")],
            &mut rng,
        )
        .unwrap();
        assert_eq!(hosts(&route), ["a", "b", "c"]);
        assert_eq!(
            route.iter().map(|h| h.preference).collect::<Vec<_>>(),
            [10, 20, 30]
        );
    }

    #[test]
    fn equal_preferences_come_in_random_order_and_never_cross_groups() {
        let records = [mx(10, "a"), mx(10, "b"), mx(20, "z"), mx(5, "first")];
        let mut rng = random_u64();
        let (mut ab, mut ba) = (0, 0);
        for _ in 0..200 {
            let route = route_from_mx("example.org", &records, &mut rng).unwrap();
            match hosts(&route).as_slice() {
                ["first", "a", "b", "z"] => ab += 1,
                ["first", "b", "a", "z"] => ba += 1,
                other => panic!("bad order {other:?}"),
            }
        }
        // P(one order never appears in 200 fair draws) = 2^-199.
        assert!(ab > 0 && ba > 0, "ab {ab} ba {ba}");
        assert!(ab > 50 && ba > 50, "far from uniform: ab {ab} ba {ba}");
    }

    #[test]
    fn three_equal_hosts_reach_every_order() {
        let records = [mx(10, "a"), mx(10, "b"), mx(10, "c")];
        let mut rng = 42;
        let mut orders = std::collections::HashSet::new();
        for _ in 0..300 {
            let route = route_from_mx("example.org", &records, &mut rng).unwrap();
            orders.insert(hosts(&route).concat());
        }
        assert_eq!(orders.len(), 6, "{orders:?}");
    }

    #[test]
    fn null_mx_is_permanent_unless_beside_real_hosts() {
        let mut rng = 3;
        let err = route_from_mx("null.example", &[mx(0, ".")], &mut rng).unwrap_err();
        assert_eq!(err, RouteError::NullMx("null.example".into()));
        assert!(err.is_permanent());
        let route = route_from_mx("odd.example", &[mx(0, "."), mx(10, "mx")], &mut rng).unwrap();
        assert_eq!(hosts(&route), ["mx"]);
    }

    #[test]
    fn duplicates_are_dropped_and_routes_bounded() {
        let mut rng = 9;
        let route = route_from_mx("d.example", &[mx(20, "mx"), mx(10, "mx")], &mut rng).unwrap();
        assert_eq!(
            route,
            vec![MxHost {
                preference: 10,
                host: "mx".into()
            }]
        );
        let many: Vec<Rdata> = (0..40).map(|i| mx(i, &format!("mx{i}"))).collect();
        let route = route_from_mx("d.example", &many, &mut rng).unwrap();
        assert_eq!(route.len(), MX_HOSTS_MAX);
        assert_eq!(route[0].host, "mx0");
    }

    #[test]
    fn address_literals() {
        assert_eq!(
            address_literal("[192.0.2.1]"),
            Some(Ok("192.0.2.1".parse().unwrap()))
        );
        assert_eq!(
            address_literal("[IPv6:2001:db8::1]"),
            Some(Ok("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            address_literal("[ipv6:::1]"),
            Some(Ok("::1".parse().unwrap()))
        );
        assert_eq!(address_literal("example.org"), None);
        for bad in [
            "[2001:db8::1]",
            "[192.0.2.300]",
            "[192.0.2.1",
            "[]",
            "[IPv6:x]",
        ] {
            assert!(
                matches!(address_literal(bad), Some(Err(RouteError::BadName(_)))),
                "{bad}"
            );
        }
    }

    #[test]
    fn permanence() {
        for e in [
            RouteError::NullMx("a".into()),
            RouteError::NoSuchDomain("a".into()),
            RouteError::NoAddresses("a".into()),
            RouteError::BadName("a".into()),
        ] {
            assert!(e.is_permanent(), "{e}");
        }
        assert!(!RouteError::Temporary("SERVFAIL".into()).is_permanent());
    }

    #[test]
    fn system_servers_need_a_nameserver() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "search example\n").unwrap();
        assert!(matches!(
            system_servers(&path),
            Err(DnsError::NoServers { .. })
        ));
        std::fs::write(&path, "nameserver 192.0.2.53\n").unwrap();
        assert_eq!(
            system_servers(&path).unwrap(),
            vec!["192.0.2.53:53".parse::<SocketAddr>().unwrap()]
        );
        assert!(matches!(
            system_servers(&dir.path().join("none")),
            Err(DnsError::ResolvConf { .. })
        ));
    }

    mod resolver {
        use super::super::test_server::{record, TestServer};
        use super::super::*;
        use hickory_proto::op::ResponseCode;
        use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX};
        use hickory_proto::rr::{Name, RData, RecordType};

        fn run<T: Send + 'static>(
            server: SocketAddr,
            f: impl FnOnce(Resolver) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
                + Send
                + 'static,
        ) -> T {
            let config = DnsConfig {
                servers: Some(vec![server]),
                timeout_ms: 200,
                attempts: 1,
                cache_entries_max: 100,
            };
            let resolver = Resolver::new(&config).unwrap();
            glommio::LocalExecutorBuilder::default()
                .io_memory(64 << 10)
                .spawn(move || f(resolver))
                .unwrap()
                .join()
                .unwrap()
        }

        fn name(s: &str) -> Name {
            Name::from_ascii(s).unwrap()
        }

        /// A small zone: MX, CNAMEs answered one hop at a time, a loop, failures.
        fn zone(n: &str, t: RecordType) -> Option<(ResponseCode, Vec<hickory_proto::rr::Record>)> {
            let ok = |r| Some((ResponseCode::NoError, r));
            match (n, t) {
                ("two.example", RecordType::MX) => ok(vec![
                    record(
                        "two.example.",
                        RData::MX(MX::new(10, name("mx.two.example."))),
                    ),
                    record(
                        "two.example.",
                        RData::MX(MX::new(20, name("b.two.example."))),
                    ),
                ]),
                ("alias.example", RecordType::MX) => ok(vec![record(
                    "alias.example.",
                    RData::CNAME(CNAME(name("two.example."))),
                )]),
                ("loop1.example", _) => ok(vec![record(
                    "loop1.example.",
                    RData::CNAME(CNAME(name("loop2.example."))),
                )]),
                ("loop2.example", _) => ok(vec![record(
                    "loop2.example.",
                    RData::CNAME(CNAME(name("loop1.example."))),
                )]),
                ("mx.two.example", RecordType::A) => ok(vec![record(
                    "mx.two.example.",
                    RData::A(A::new(192, 0, 2, 1)),
                )]),
                ("mx.two.example", RecordType::AAAA) => ok(vec![record(
                    "mx.two.example.",
                    RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
                )]),
                ("v4only.example", RecordType::A) => ok(vec![record(
                    "v4only.example.",
                    RData::A(A::new(192, 0, 2, 4)),
                )]),
                ("v4only.example", RecordType::AAAA) => Some((ResponseCode::ServFail, vec![])),
                ("flaky.example", RecordType::A) => Some((ResponseCode::ServFail, vec![])),
                ("flaky.example", RecordType::AAAA) => ok(vec![]),
                ("bare.example", _) => ok(vec![]),
                ("refused.example", _) => Some((ResponseCode::Refused, vec![])),
                ("silent.example", _) => None,
                _ => Some((ResponseCode::NXDomain, vec![])),
            }
        }

        #[test]
        fn mx_route_and_the_cache() {
            let server = TestServer::start(zone);
            let (route, again) = run(server.addr, |r| {
                Box::pin(async move {
                    let first = r.mx_route("Two.Example.").await;
                    let again = r.mx_route("two.example").await;
                    (first, again)
                })
            });
            let route = route.unwrap();
            assert_eq!(
                route,
                vec![
                    MxHost {
                        preference: 10,
                        host: "mx.two.example".into()
                    },
                    MxHost {
                        preference: 20,
                        host: "b.two.example".into()
                    },
                ]
            );
            assert_eq!(again.unwrap(), route);
            assert_eq!(server.queries(), 1, "the second lookup came from the cache");
        }

        #[test]
        fn cnames_are_followed_across_queries_and_loops_end() {
            let server = TestServer::start(zone);
            let (alias, looped) = run(server.addr, |r| {
                Box::pin(async move {
                    (
                        r.mx_route("alias.example").await,
                        r.mx_route("loop1.example").await,
                    )
                })
            });
            assert_eq!(alias.unwrap()[0].host, "mx.two.example");
            let e = looped.unwrap_err();
            assert!(!e.is_permanent(), "{e}");
            assert!(e.to_string().contains("CNAME chain"), "{e}");
            // alias + two, then loop1 and loop2 once each (the rest from the cache).
            assert_eq!(server.queries(), 4);
        }

        #[test]
        fn outcomes_map_to_permanent_and_temporary() {
            let server = TestServer::start(zone);
            let results = run(server.addr, |r| {
                Box::pin(async move {
                    vec![
                        r.mx_route("bare.example").await.map(|h| format!("{h:?}")),
                        r.mx_route("gone.example").await.map(|h| format!("{h:?}")),
                        r.mx_route("refused.example")
                            .await
                            .map(|h| format!("{h:?}")),
                        r.mx_route("silent.example").await.map(|h| format!("{h:?}")),
                        r.mx_route("[192.0.2.9]").await.map(|h| format!("{h:?}")),
                        r.mx_route("bad name.example")
                            .await
                            .map(|h| format!("{h:?}")),
                    ]
                })
            });
            assert_eq!(
                results[0],
                Ok(format!(
                    "{:?}",
                    vec![MxHost {
                        preference: 0,
                        host: "bare.example".into()
                    }]
                ))
            );
            assert_eq!(
                results[1],
                Err(RouteError::NoSuchDomain("gone.example".into()))
            );
            assert!(matches!(&results[2], Err(RouteError::Temporary(m)) if m.contains("REFUSED")));
            assert!(
                matches!(&results[3], Err(RouteError::Temporary(m)) if m.contains("timed out"))
            );
            assert!(results[4].as_ref().unwrap().contains("[192.0.2.9]"));
            assert!(matches!(&results[5], Err(RouteError::BadName(_))));
        }

        #[test]
        fn addresses_ipv4_first_and_partial_failures() {
            let server = TestServer::start(zone);
            let results = run(server.addr, |r| {
                Box::pin(async move {
                    vec![
                        r.addresses("mx.two.example").await,
                        r.addresses("v4only.example").await,
                        r.addresses("flaky.example").await,
                        r.addresses("bare.example").await,
                        r.addresses("gone.example").await,
                        r.addresses("[IPv6:2001:db8::5]").await,
                    ]
                })
            });
            let ip = |s: &str| s.parse::<IpAddr>().unwrap();
            assert_eq!(results[0], Ok(vec![ip("192.0.2.1"), ip("2001:db8::1")]));
            assert_eq!(
                results[1],
                Ok(vec![ip("192.0.2.4")]),
                "SERVFAIL on AAAA only"
            );
            assert!(matches!(&results[2], Err(RouteError::Temporary(_))));
            assert_eq!(
                results[3],
                Err(RouteError::NoAddresses("bare.example".into()))
            );
            assert_eq!(
                results[4],
                Err(RouteError::NoSuchDomain("gone.example".into()))
            );
            assert_eq!(results[5], Ok(vec![ip("2001:db8::5")]));
        }
    }

    #[test]
    fn random_ids_vary() {
        let ids: std::collections::HashSet<u16> = (0..64).map(|_| random_u16()).collect();
        assert!(ids.len() > 32, "{}", ids.len());
    }
}
