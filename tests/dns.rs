//! `ringmail dns DOMAIN` against a real DNS server: unbound (apt package `unbound`) started on a
//! free 127.0.0.1 port with a test zone, one instance per test, killed when the test ends.
//! Covers MX with equal and higher preferences (random order among equals), no MX (the domain
//! itself), null MX, NXDOMAIN, a CNAME'd MX host, an MX host with no address, SERVFAIL,
//! REFUSED, an unreachable and a silent server, a truncated UDP answer fetched again over TCP,
//! and address literals (no DNS at all). Nothing queries the system resolver.
//!
//! Skipped loudly when unbound is not installed (.ci/run installs it).

mod common;

use common::unbound::{free_port, Unbound};

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A-records of `big.test`: far over unbound's `max-udp-size: 512`, so only TCP carries them.
const BIG_RECORDS: usize = 100;

/// The test zone, in unbound `local-data` lines.
fn zone() -> String {
    let mut z = String::from(
        r#"
  local-zone: "test." static
  local-data: "test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 300"
  local-data: "two.test. 300 IN MX 10 mx1.two.test."
  local-data: "two.test. 300 IN MX 10 mx2.two.test."
  local-data: "two.test. 300 IN MX 20 mx3.two.test."
  local-data: "mx1.two.test. 300 IN A 192.0.2.1"
  local-data: "mx2.two.test. 300 IN A 192.0.2.2"
  local-data: "mx3.two.test. 300 IN A 192.0.2.3"
  local-data: "mx3.two.test. 300 IN AAAA 2001:db8::3"
  local-data: "nomx.test. 300 IN A 192.0.2.20"
  local-data: "null.test. 300 IN MX 0 ."
  local-data: "cname.test. 300 IN MX 10 mail.cname.test."
  local-data: "mail.cname.test. 300 IN CNAME real.cname.test."
  local-data: "real.cname.test. 300 IN A 192.0.2.30"
  local-data: "unreach.test. 300 IN MX 10 nowhere.test."
  local-zone: "refused.test." always_refuse
  local-zone: "fail.test." transparent
"#,
    );
    for i in 0..BIG_RECORDS {
        z.push_str(&format!(
            "  local-data: \"big.test. 300 IN A 10.0.{}.{}\"\n",
            i / 256,
            i % 256
        ));
    }
    z
}

/// `ringmail dns DOMAIN` with `[dns] servers = [servers...]`: (exit code, stdout).
fn dns(dir: &Path, servers: &[SocketAddr], timeout_ms: u64, domain: &str) -> (i32, String) {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let config: PathBuf = dir.join(format!("dns-{}.toml", list.len()));
    std::fs::write(
        &config,
        format!(
            "[dns]\nservers = [{}]\ntimeout_ms = {timeout_ms}\nattempts = 2\n",
            list.join(", ")
        ),
    )
    .unwrap();
    let run = common::run(
        Command::new(common::bin())
            .arg("dns")
            .arg(domain)
            .arg("--config")
            .arg(&config),
        b"",
    );
    let code = run.status.code().unwrap_or(-1);
    assert!(
        run.stderr.is_empty(),
        "ringmail dns {domain} wrote to stderr: {}",
        run.stderr
    );
    (code, run.stdout_text())
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().collect()
}

#[test]
fn equal_preferences_come_in_random_order_before_the_higher_one() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (mut first_mx1, mut first_mx2) = (false, false);
    // P(one order never shows in 40 fair runs) = 2^-39.
    for _ in 0..40 {
        let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "two.test");
        assert_eq!(code, 0, "{out}");
        let l = lines(&out);
        assert_eq!(l.len(), 3, "{out}");
        let mut top: Vec<&str> = l[..2].to_vec();
        match top[0] {
            "10 mx1.two.test 192.0.2.1" => first_mx1 = true,
            "10 mx2.two.test 192.0.2.2" => first_mx2 = true,
            other => panic!("unexpected first host {other:?}"),
        }
        top.sort_unstable();
        assert_eq!(
            top,
            ["10 mx1.two.test 192.0.2.1", "10 mx2.two.test 192.0.2.2"]
        );
        assert_eq!(l[2], "20 mx3.two.test 192.0.2.3,2001:db8::3", "IPv4 first");
        if first_mx1 && first_mx2 {
            return;
        }
    }
    panic!("equal preferences always came in the same order (mx1 first: {first_mx1})");
}

#[test]
fn no_mx_means_the_domain_itself() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "NoMX.test.");
    assert_eq!((code, out.as_str()), (0, "0 nomx.test 192.0.2.20\n"));
}

#[test]
fn null_mx_fails_permanently() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "null.test");
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out,
        "permanent: null.test does not accept mail (null MX, RFC 7505)\n"
    );
}

#[test]
fn nxdomain_fails_permanently() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "gone.test");
    assert_eq!(code, 2, "{out}");
    assert_eq!(out, "permanent: gone.test: no such domain (NXDOMAIN)\n");
}

#[test]
fn a_cnamed_mx_host_is_followed() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "cname.test");
    assert_eq!((code, out.as_str()), (0, "10 mail.cname.test 192.0.2.30\n"));
}

#[test]
fn an_mx_host_without_address_is_a_permanent_failure_for_that_host() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "unreach.test");
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out,
        "10 nowhere.test permanent: nowhere.test: no such domain (NXDOMAIN)\n"
    );
}

#[test]
fn servfail_is_temporary() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let started = Instant::now();
    let (code, out) = dns(u.dir.path(), &[u.addr], 3000, "x.fail.test");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("temporary: "), "{out}");
    assert!(out.contains("SERVFAIL"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(15), "{out}");
}

#[test]
fn refused_is_temporary() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "refused.test");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("temporary: ") && out.contains("REFUSED"),
        "{out}"
    );
}

#[test]
fn a_truncated_answer_is_fetched_again_over_tcp() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let (code, out) = dns(u.dir.path(), &[u.addr], 2000, "big.test");
    assert_eq!(code, 0, "{out}");
    let l = lines(&out);
    assert_eq!(l.len(), 1, "{out}");
    let addrs = l[0].strip_prefix("0 big.test ").expect(&out);
    let mut got: Vec<&str> = addrs.split(',').collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..BIG_RECORDS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "all {BIG_RECORDS} records, which UDP cannot carry"
    );
}

#[test]
fn the_next_server_answers_when_the_first_is_unreachable() {
    let Some(u) = Unbound::start(&zone()) else {
        return;
    };
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (code, out) = dns(u.dir.path(), &[closed, u.addr], 2000, "nomx.test");
    assert_eq!((code, out.as_str()), (0, "0 nomx.test 192.0.2.20\n"));
}

#[test]
fn an_unreachable_server_is_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    let (code, out) = dns(dir.path(), &[closed], 2000, "example.test");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("temporary: "), "{out}");
    // Port unreachable ends each try at once, long before the 2 s timeout.
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
}

#[test]
fn a_silent_server_times_out_as_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let started = Instant::now();
    let (code, out) = dns(dir.path(), &[addr], 200, "example.test");
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("timed out after 200 ms"), "{out}");
    // Two attempts of 200 ms, plus the process start.
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
    drop(silent);
}

#[test]
fn address_literals_skip_dns() {
    let dir = tempfile::tempdir().unwrap();
    // The only server is unreachable: any query would fail.
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (code, out) = dns(dir.path(), &[closed], 2000, "[192.0.2.7]");
    assert_eq!((code, out.as_str()), (0, "0 [192.0.2.7] 192.0.2.7\n"));
    let (code, out) = dns(dir.path(), &[closed], 2000, "[IPv6:2001:db8::7]");
    assert_eq!(
        (code, out.as_str()),
        (0, "0 [IPv6:2001:db8::7] 2001:db8::7\n")
    );
    let (code, out) = dns(dir.path(), &[closed], 2000, "[300.1.1.1]");
    assert_eq!(code, 2, "{out}");
    assert!(out.starts_with("permanent: "), "{out}");
}
