//! Results as text for people (stdout) and as a JSON document for scripts.
//! The JSON is written by hand (no serde); the tests parse it back with simd-json.

use std::fmt::Write;

use crate::args::{IoMode, PipeliningMode, SmtpConfig};
use crate::run::RunResult;

/// Accepted (2xx) messages per second of elapsed time.
pub fn throughput(result: &RunResult) -> f64 {
    let secs = result.elapsed.as_secs_f64();
    if secs > 0.0 {
        result.stats.ok as f64 / secs
    } else {
        0.0
    }
}

/// `yes`, `no` or `mixed`: what the sessions actually did.
pub fn pipelining_used(result: &RunResult) -> &'static str {
    match (
        result.stats.sessions_pipelined,
        result.stats.sessions_unpipelined,
    ) {
        (0, _) => "no",
        (_, 0) => "yes",
        _ => "mixed",
    }
}

/// The human summary; the first four lines have a fixed shape for scripts.
pub fn human(cfg: &SmtpConfig, result: &RunResult) -> String {
    let s = &result.stats;
    let p = s.latency.percentiles();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "smtp {}  connections={} size={} rcpts={} pipelining={}",
        cfg.target_text,
        cfg.connections,
        cfg.size_bytes,
        cfg.recipients,
        pipelining_used(result)
    );
    let _ = writeln!(
        out,
        "sent={} ok(2xx)={} tempfail(4xx)={} permfail(5xx)={} errors={} elapsed={:.3}s",
        s.sent,
        s.ok,
        s.tempfail,
        s.permfail,
        s.errors,
        result.elapsed.as_secs_f64()
    );
    let _ = writeln!(out, "throughput={:.1} msg/s", throughput(result));
    let _ = writeln!(
        out,
        "data->250 latency us: p50={} p90={} p99={} p99.9={} max={}",
        p.p50_us, p.p90_us, p.p99_us, p.p99_9_us, p.max_us
    );
    let _ = writeln!(
        out,
        "aborted={} connects={} io={} threads={}",
        s.aborted,
        s.connects,
        io_name(cfg.io),
        cfg.threads
    );
    if let Some(error) = &s.first_error {
        let _ = writeln!(out, "first error: {error}");
    }
    out
}

/// The JSON document: config, counts, elapsed, throughput, latency percentiles.
pub fn json(cfg: &SmtpConfig, result: &RunResult) -> String {
    let s = &result.stats;
    let p = s.latency.percentiles();
    let mut j = JsonWriter::default();
    j.open_object(None);
    j.string("tool", "ringmail-loadgen");
    j.string("version", env!("CARGO_PKG_VERSION"));
    j.string("protocol", "smtp");
    j.open_object(Some("config"));
    j.string("target", &cfg.target_text);
    j.string("target_addr", &cfg.target.to_string());
    j.number("connections", u64::from(cfg.connections));
    j.number("messages", cfg.messages);
    match cfg.per_connection {
        Some(n) => j.number("per_connection", n),
        None => j.null("per_connection"),
    }
    j.number("size_bytes", cfg.size_bytes as u64);
    j.number("recipients", u64::from(cfg.recipients));
    j.string("from", &cfg.from);
    j.open_array("to");
    for to in &cfg.to {
        j.item_string(to);
    }
    j.close_array();
    j.string("pipelining", pipelining_name(cfg.pipelining));
    j.number("duration_secs", cfg.duration.as_secs());
    j.number("threads", cfg.threads as u64);
    j.string("io", io_name(cfg.io));
    j.string("helo", &cfg.helo);
    j.boolean("allow_remote", cfg.allow_remote);
    j.close_object();
    j.string("pipelining_used", pipelining_used(result));
    j.number("sent", s.sent);
    j.number("ok_2xx", s.ok);
    j.number("tempfail_4xx", s.tempfail);
    j.number("permfail_5xx", s.permfail);
    j.number("errors", s.errors);
    j.number("aborted", s.aborted);
    j.number("connects", s.connects);
    j.number("message_bytes", s.message_bytes);
    j.float("elapsed_secs", result.elapsed.as_secs_f64(), 6);
    j.float("throughput_msgs_per_sec", throughput(result), 1);
    j.open_object(Some("latency_us"));
    j.string("measured", "end of DATA written -> final reply");
    j.number("count", p.count);
    j.number("min", p.min_us);
    j.number("mean", p.mean_us);
    j.number("p50", p.p50_us);
    j.number("p90", p.p90_us);
    j.number("p99", p.p99_us);
    j.number("p99_9", p.p99_9_us);
    j.number("max", p.max_us);
    j.close_object();
    match &s.first_error {
        Some(e) => j.string("first_error", e),
        None => j.null("first_error"),
    }
    j.close_object();
    j.finish()
}

fn io_name(io: IoMode) -> &'static str {
    match io {
        IoMode::Epoll => "epoll",
        IoMode::Blocking => "blocking",
    }
}

fn pipelining_name(mode: PipeliningMode) -> &'static str {
    match mode {
        PipeliningMode::Auto => "auto",
        PipeliningMode::Always => "always",
        PipeliningMode::Never => "never",
    }
}

/// Appends JSON tokens, inserting commas; one flag suffices because a nested
/// container is itself a value of its parent.
#[derive(Default)]
struct JsonWriter {
    out: String,
    needs_comma: bool,
}

impl JsonWriter {
    fn key(&mut self, key: Option<&str>) {
        if self.needs_comma {
            self.out.push(',');
        }
        if let Some(key) = key {
            push_json_string(&mut self.out, key);
            self.out.push(':');
        }
        self.needs_comma = true;
    }

    fn open_object(&mut self, key: Option<&str>) {
        self.key(key);
        self.out.push('{');
        self.needs_comma = false;
    }

    fn close_object(&mut self) {
        self.out.push('}');
        self.needs_comma = true;
    }

    fn open_array(&mut self, key: &str) {
        self.key(Some(key));
        self.out.push('[');
        self.needs_comma = false;
    }

    fn close_array(&mut self) {
        self.out.push(']');
        self.needs_comma = true;
    }

    fn string(&mut self, key: &str, value: &str) {
        self.key(Some(key));
        push_json_string(&mut self.out, value);
    }

    fn item_string(&mut self, value: &str) {
        self.key(None);
        push_json_string(&mut self.out, value);
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(Some(key));
        let _ = write!(self.out, "{value}");
    }

    fn float(&mut self, key: &str, value: f64, decimals: usize) {
        self.key(Some(key));
        let value = if value.is_finite() { value } else { 0.0 };
        let _ = write!(self.out, "{value:.decimals$}");
    }

    fn boolean(&mut self, key: &str, value: bool) {
        self.key(Some(key));
        self.out.push_str(if value { "true" } else { "false" });
    }

    fn null(&mut self, key: &str) {
        self.key(Some(key));
        self.out.push_str("null");
    }

    fn finish(mut self) -> String {
        self.out.push('\n');
        self.out
    }
}

fn push_json_string(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse_args, Command};
    use crate::stats::Stats;
    use simd_json::prelude::*;
    use std::time::Duration;

    fn config() -> SmtpConfig {
        let args = [
            "smtp",
            "--target",
            "127.0.0.1:2525",
            "--to",
            "a@x.test",
            "--to",
            "b@x.test",
            "--per-connection",
            "5",
        ];
        match parse_args(args, 2).unwrap() {
            Command::Smtp(c) => *c,
            Command::Help => unreachable!(),
        }
    }

    fn result() -> RunResult {
        let mut stats = Stats {
            sent: 100,
            ok: 90,
            tempfail: 6,
            permfail: 3,
            aborted: 1,
            errors: 2,
            connects: 20,
            sessions_pipelined: 20,
            message_bytes: 99 * 2048,
            ..Stats::default()
        };
        for v in 1..=1000 {
            stats.latency.record(v);
        }
        stats.first_error = Some("reset by \"peer\"\n\u{1}".into());
        RunResult {
            stats,
            elapsed: Duration::from_millis(1500),
        }
    }

    #[test]
    fn human_summary_has_the_documented_lines() {
        let text = human(&config(), &result());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "smtp 127.0.0.1:2525  connections=20 size=2048 rcpts=1 pipelining=yes"
        );
        assert_eq!(
            lines[1],
            "sent=100 ok(2xx)=90 tempfail(4xx)=6 permfail(5xx)=3 errors=2 elapsed=1.500s"
        );
        assert_eq!(lines[2], "throughput=60.0 msg/s");
        // Values 1..=1000: exact below 256 µs, then buckets of 2 and 4 µs.
        assert_eq!(
            lines[3],
            "data->250 latency us: p50=500 p90=901 p99=989 p99.9=997 max=1000"
        );
        assert_eq!(lines[4], "aborted=1 connects=20 io=epoll threads=2");
        assert!(lines[5].starts_with("first error: reset by"));
    }

    #[test]
    fn json_parses_back_with_the_same_numbers() {
        let mut text = json(&config(), &result()).into_bytes();
        let doc = simd_json::to_owned_value(&mut text).expect("valid JSON");
        assert_eq!(doc.get_str("tool"), Some("ringmail-loadgen"));
        assert_eq!(doc.get_u64("sent"), Some(100));
        assert_eq!(doc.get_u64("ok_2xx"), Some(90));
        assert_eq!(doc.get_u64("tempfail_4xx"), Some(6));
        assert_eq!(doc.get_u64("permfail_5xx"), Some(3));
        assert_eq!(doc.get_u64("errors"), Some(2));
        assert_eq!(doc.get_u64("aborted"), Some(1));
        assert_eq!(doc.get_str("pipelining_used"), Some("yes"));
        assert_eq!(doc.get_f64("elapsed_secs"), Some(1.5));
        assert_eq!(doc.get_f64("throughput_msgs_per_sec"), Some(60.0));
        assert_eq!(doc.get_str("first_error"), Some("reset by \"peer\"\n\u{1}"));
        let latency = doc.get("latency_us").unwrap();
        assert_eq!(latency.get_u64("count"), Some(1000));
        assert_eq!(latency.get_u64("p50"), Some(500));
        assert_eq!(latency.get_u64("p90"), Some(901));
        assert_eq!(latency.get_u64("p99"), Some(989));
        assert_eq!(latency.get_u64("p99_9"), Some(997));
        assert_eq!(latency.get_u64("mean"), Some(500));
        assert_eq!(latency.get_u64("max"), Some(1000));
        let config = doc.get("config").unwrap();
        assert_eq!(config.get_str("target"), Some("127.0.0.1:2525"));
        assert_eq!(config.get_u64("per_connection"), Some(5));
        assert_eq!(config.get_u64("size_bytes"), Some(2048));
        assert_eq!(config.get_str("pipelining"), Some("auto"));
        assert_eq!(config.get_bool("allow_remote"), Some(false));
        let to = config.get_array("to").unwrap();
        assert_eq!(
            to.iter().map(|v| v.as_str().unwrap()).collect::<Vec<_>>(),
            ["a@x.test", "b@x.test"]
        );
    }

    #[test]
    fn json_of_an_empty_run_is_valid_with_nulls() {
        let mut cfg = config();
        cfg.per_connection = None;
        let empty = RunResult {
            stats: Stats::default(),
            elapsed: Duration::ZERO,
        };
        let mut text = json(&cfg, &empty).into_bytes();
        let doc = simd_json::to_owned_value(&mut text).expect("valid JSON");
        assert!(doc
            .get("config")
            .unwrap()
            .get("per_connection")
            .unwrap()
            .is_null());
        assert!(doc.get("first_error").unwrap().is_null());
        assert_eq!(doc.get_f64("throughput_msgs_per_sec"), Some(0.0));
        assert_eq!(doc.get_str("pipelining_used"), Some("no"));
    }
}
