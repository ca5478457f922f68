//! The default name servers: the `nameserver` lines of /etc/resolv.conf (port 53), read by
//! ourselves and bounded. Everything else in the file (search, options, sortlist) is ignored:
//! the outbound path looks up fully qualified names only, with its own timeout and attempts.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// glibc's MAXNS: later `nameserver` lines are ignored, as the C library does.
pub const NAMESERVERS_MAX: usize = 3;
/// Bytes of the file read; the rest is ignored.
pub const FILE_BYTES_MAX: u64 = 64 * 1024;

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The name servers named in resolv.conf text, in file order, at most [`NAMESERVERS_MAX`].
/// Lines that do not parse are skipped (as the C library does), including IPv6 link-local
/// addresses with a `%zone`, which cannot be used without an interface index.
pub fn parse(text: &str) -> Vec<SocketAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_ascii_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        let server = SocketAddr::new(ip, 53);
        if !servers.contains(&server) {
            servers.push(server);
        }
        if servers.len() == NAMESERVERS_MAX {
            break;
        }
    }
    servers
}

/// Reads and parses a resolv.conf file (the first [`FILE_BYTES_MAX`] bytes).
pub fn load(path: &Path) -> std::io::Result<Vec<SocketAddr>> {
    let file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    file.take(FILE_BYTES_MAX).read_to_end(&mut bytes)?;
    Ok(parse(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nameservers_in_order_with_port_53() {
        let text = "# generated\nsearch example.com\nnameserver 10.0.0.1\n\
                    options timeout:1 attempts:3\nnameserver   2001:db8::53 # v6\n";
        assert_eq!(
            parse(text),
            vec![sa("10.0.0.1:53"), sa("[2001:db8::53]:53")]
        );
    }

    #[test]
    fn comments_garbage_and_duplicates_are_skipped() {
        let text = "; nameserver 10.9.9.9\n#nameserver 10.8.8.8\nnameserver\n\
                    nameserver not-an-ip\nnameserver fe80::1%eth0\nnameservers 10.7.7.7\n\
                    nameserver 10.0.0.2;comment\nnameserver 10.0.0.2\n\tnameserver\t10.0.0.3\n";
        assert_eq!(parse(text), vec![sa("10.0.0.2:53"), sa("10.0.0.3:53")]);
        assert!(parse("").is_empty());
    }

    #[test]
    fn at_most_three_like_libc() {
        let text: String = (1..=6)
            .map(|i| format!("nameserver 10.0.0.{i}\n"))
            .collect();
        assert_eq!(
            parse(&text),
            vec![sa("10.0.0.1:53"), sa("10.0.0.2:53"), sa("10.0.0.3:53")]
        );
    }

    #[test]
    fn file_reading_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        // A huge first line pushes the nameserver past the bound.
        let mut text = "#".repeat(FILE_BYTES_MAX as usize);
        text.push_str("\nnameserver 10.0.0.1\n");
        std::fs::write(&path, &text).unwrap();
        assert!(load(&path).unwrap().is_empty());
        std::fs::write(&path, "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(load(&path).unwrap(), vec![sa("127.0.0.1:53")]);
        assert!(load(&dir.path().join("missing")).is_err());
    }
}
