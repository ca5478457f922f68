//! The Prometheus text exposition format 0.0.4: a pure rendering of the cores' counters.
//!
//! Every family gets `# HELP` and `# TYPE` once, then one sample per core (and per
//! protocol, op, log or result) with a `core="N"` label. Latencies are kept in µs and shown
//! in seconds (Prometheus' base unit), as exact decimals: no float rounding in `le` or
//! `_sum`. Histogram buckets are cumulative; `_count` equals the `+Inf` bucket.

use std::fmt::Write;
use std::sync::Arc;

use super::{CoreMetrics, Histogram, ImapOp, OutboundResult, StoreLog};
use crate::net::Protocol;

/// The `Content-Type` of a scrape answer.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// How a histogram's values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Kept in µs, shown in seconds.
    MicrosAsSeconds,
    /// A plain count.
    Count,
}

/// `us` µs as seconds, exactly: `2500` → `0.0025`, `3000000` → `3`.
pub fn micros_as_seconds(us: u64) -> String {
    let (whole, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:06}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn show(v: u64, unit: Unit) -> String {
    match unit {
        Unit::MicrosAsSeconds => micros_as_seconds(v),
        Unit::Count => v.to_string(),
    }
}

/// A label value with `\`, `"` and newline escaped.
pub fn escape_label_value(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text with `\` and newline escaped.
fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Builds exposition text line by line.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

impl TextWriter {
    pub fn new() -> TextWriter {
        TextWriter::default()
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// `# HELP` and `# TYPE` of family `name`.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_help(help, &mut self.out);
        self.out.push('\n');
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    /// One sample line: `name{l="v",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: &str) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_label_value(v, &mut self.out);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(value);
        self.out.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` lines of one histogram.
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram, unit: Unit) {
        let (counts, sum) = h.read();
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        for (i, count) in counts.iter().enumerate() {
            cumulative += count;
            let le = match h.bounds().get(i) {
                Some(&b) => show(b, unit),
                None => "+Inf".to_string(),
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, &cumulative.to_string());
        }
        self.sample(&format!("{name}_sum"), labels, &show(sum, unit));
        self.sample(&format!("{name}_count"), labels, &cumulative.to_string());
    }
}

/// One family: a sample (or histogram) per core and per label set.
fn per_core(
    w: &mut TextWriter,
    cores: &[Arc<CoreMetrics>],
    name: &str,
    kind: Kind,
    help: &str,
    each: impl Fn(&mut TextWriter, &str, &CoreMetrics),
) {
    w.family(name, kind, help);
    for (i, m) in cores.iter().enumerate() {
        each(w, &i.to_string(), m);
    }
}

/// The exposition text of every core's counters (`cores[i]` is core `i`).
pub fn render(cores: &[Arc<CoreMetrics>]) -> String {
    let mut w = TextWriter::new();
    let protocol_family =
        |w: &mut TextWriter,
         name: &str,
         kind: Kind,
         help: &str,
         pick: fn(&CoreMetrics) -> &[super::Cell64; 4]| {
            per_core(w, cores, name, kind, help, |w, core, m| {
                for p in Protocol::ALL {
                    let v = pick(m)[p.index()].get().to_string();
                    w.sample(name, &[("core", core), ("protocol", p.name())], &v);
                }
            });
        };
    protocol_family(
        &mut w,
        "ringmail_connections_accepted_total",
        Kind::Counter,
        "Connections accepted by the listeners.",
        |m| &m.connections_accepted,
    );
    protocol_family(
        &mut w,
        "ringmail_connections_open",
        Kind::Gauge,
        "Connections open now (a logged-in IMAP/POP3 connection counts on its owner core).",
        |m| &m.connections_open,
    );
    protocol_family(
        &mut w,
        "ringmail_connections_refused_total",
        Kind::Counter,
        "Connections refused over the per-core connection limit.",
        |m| &m.connections_refused,
    );
    protocol_family(
        &mut w,
        "ringmail_auth_failures_total",
        Kind::Counter,
        "Failed logins (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3).",
        |m| &m.auth_failures,
    );
    let plain =
        |w: &mut TextWriter, name: &str, kind: Kind, help: &str, pick: fn(&CoreMetrics) -> u64| {
            per_core(w, cores, name, kind, help, |w, core, m| {
                w.sample(name, &[("core", core)], &pick(m).to_string());
            });
        };
    plain(
        &mut w,
        "ringmail_smtp_messages_accepted_total",
        Kind::Counter,
        "SMTP transactions answered 250 after DATA or BDAT (message stored).",
        |m| m.smtp_accepted.get(),
    );
    plain(
        &mut w,
        "ringmail_smtp_messages_rejected_total",
        Kind::Counter,
        "SMTP transactions refused after DATA or BDAT (storage full or failed).",
        |m| m.smtp_rejected.get(),
    );
    let name = "ringmail_smtp_replies_total";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Counter,
        "Final SMTP replies sent, by class (4xx and 5xx: every refusal, at MAIL, RCPT, DATA or a syntax error).",
        |w, core, m| {
            for (class, n) in ["2xx", "3xx", "4xx", "5xx"].iter().zip(&m.smtp_replies) {
                w.sample(name, &[("core", core), ("class", class)], &n.get().to_string());
            }
        },
    );
    plain(
        &mut w,
        "ringmail_smtp_message_bytes_total",
        Kind::Counter,
        "Bytes of accepted SMTP messages (as stored, trace headers included).",
        |m| m.smtp_bytes.get(),
    );
    let name = "ringmail_smtp_data_reply_seconds";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Histogram,
        "End of data to the 250 reply: the message durable in every owner's store.",
        |w, core, m| {
            w.histogram(
                name,
                &[("core", core)],
                &m.smtp_data_us,
                Unit::MicrosAsSeconds,
            )
        },
    );
    let name = "ringmail_store_batch_records";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Histogram,
        "Records per group commit (one write and one fdatasync); the count is the number of commits.",
        |w, core, m| {
            for log in StoreLog::ALL {
                let h = &m.store[log as usize].batch_records;
                w.histogram(name, &[("core", core), ("log", log.name())], h, Unit::Count);
            }
        },
    );
    let name = "ringmail_store_written_bytes_total";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Counter,
        "Bytes of durable group commits.",
        |w, core, m| {
            for log in StoreLog::ALL {
                let v = m.store[log as usize].bytes_written.get().to_string();
                w.sample(name, &[("core", core), ("log", log.name())], &v);
            }
        },
    );
    let name = "ringmail_store_fsync_seconds";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Histogram,
        "fdatasync latency of the store logs.",
        |w, core, m| {
            for log in StoreLog::ALL {
                let h = &m.store[log as usize].fsync_us;
                w.histogram(
                    name,
                    &[("core", core), ("log", log.name())],
                    h,
                    Unit::MicrosAsSeconds,
                );
            }
        },
    );
    let name = "ringmail_imap_commands_total";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Counter,
        "IMAP commands parsed, by command.",
        |w, core, m| {
            for op in ImapOp::ALL {
                let v = m.imap_commands[op as usize].get().to_string();
                w.sample(name, &[("core", core), ("op", op.name())], &v);
            }
        },
    );
    let name = "ringmail_imap_command_seconds";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Histogram,
        "IMAP command handling time, parsed to done (IDLE is not timed).",
        |w, core, m| {
            for op in ImapOp::ALL.into_iter().filter(|&op| op != ImapOp::Idle) {
                let h = &m.imap_command_us[op as usize];
                w.histogram(
                    name,
                    &[("core", core), ("op", op.name())],
                    h,
                    Unit::MicrosAsSeconds,
                );
            }
        },
    );
    plain(
        &mut w,
        "ringmail_pop3_messages_retrieved_total",
        Kind::Counter,
        "Messages read by POP3 RETR or TOP.",
        |m| m.pop3_retrieved.get(),
    );
    plain(
        &mut w,
        "ringmail_pop3_messages_deleted_total",
        Kind::Counter,
        "Messages deleted by POP3 sessions (DELE, committed at QUIT).",
        |m| m.pop3_deleted.get(),
    );
    plain(
        &mut w,
        "ringmail_outbound_queue_entries",
        Kind::Gauge,
        "Entries in the core's outbound queue (at its sender's last pass).",
        |m| m.outbound_queue_entries.get(),
    );
    let name = "ringmail_outbound_recipients_total";
    per_core(
        &mut w,
        cores,
        name,
        Kind::Counter,
        "Outcomes of outbound delivery attempts, per recipient.",
        |w, core, m| {
            for r in OutboundResult::ALL {
                let v = m.outbound_recipients[r as usize].get().to_string();
                w.sample(name, &[("core", core), ("result", r.name())], &v);
            }
        },
    );
    plain(
        &mut w,
        "ringmail_mesh_deliveries_sent_total",
        Kind::Counter,
        "Deliveries sent over the mesh to the core that owns a recipient.",
        |m| m.mesh_deliveries_sent.get(),
    );
    plain(
        &mut w,
        "ringmail_smtp_sessions_moved_total",
        Kind::Counter,
        "SMTP sessions handed, with a message, to the core that owns its recipients.",
        |m| m.smtp_sessions_moved.get(),
    );
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{MetricsRegistry, LATENCY_BUCKETS_US};
    use std::time::Duration;

    /// The lines of family `name` (its HELP line up to the next HELP line).
    fn block<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
        let start = format!("# HELP {name} ");
        let mut lines = text.lines().skip_while(|l| !l.starts_with(&start));
        let first = lines.next().expect("family present");
        std::iter::once(first)
            .chain(lines.take_while(|l| !l.starts_with("# HELP ")))
            .collect()
    }

    fn two_cores() -> Arc<MetricsRegistry> {
        let r = MetricsRegistry::new(2);
        let (c0, c1) = (&r.cores()[0], &r.cores()[1]);
        c0.smtp_delivered(true, 1000, Duration::from_micros(90));
        c0.smtp_delivered(true, 2000, Duration::from_micros(2400));
        c1.smtp_delivered(true, 500, Duration::from_micros(250_000));
        c1.smtp_delivered(false, 7, Duration::from_micros(1));
        c0.connection_accepted(Protocol::Smtp);
        c1.connection_accepted(Protocol::Pop3);
        c1.connection_accepted(Protocol::Pop3);
        c0.store_batch(StoreLog::Meta, 3, 96);
        c0.smtp_replies(b"250 2.1.0 Ok\r\n550 5.1.1 unknown user\r\n");
        r
    }

    #[test]
    fn counters_of_two_cores_render_exactly() {
        let text = two_cores().render();
        assert_eq!(
            block(&text, "ringmail_smtp_messages_accepted_total"),
            [
                "# HELP ringmail_smtp_messages_accepted_total SMTP transactions answered 250 after DATA or BDAT (message stored).",
                "# TYPE ringmail_smtp_messages_accepted_total counter",
                "ringmail_smtp_messages_accepted_total{core=\"0\"} 2",
                "ringmail_smtp_messages_accepted_total{core=\"1\"} 1",
            ]
        );
        assert_eq!(
            block(&text, "ringmail_connections_accepted_total")[2..],
            [
                "ringmail_connections_accepted_total{core=\"0\",protocol=\"smtp\"} 1",
                "ringmail_connections_accepted_total{core=\"0\",protocol=\"submission\"} 0",
                "ringmail_connections_accepted_total{core=\"0\",protocol=\"imap\"} 0",
                "ringmail_connections_accepted_total{core=\"0\",protocol=\"pop3\"} 0",
                "ringmail_connections_accepted_total{core=\"1\",protocol=\"smtp\"} 0",
                "ringmail_connections_accepted_total{core=\"1\",protocol=\"submission\"} 0",
                "ringmail_connections_accepted_total{core=\"1\",protocol=\"imap\"} 0",
                "ringmail_connections_accepted_total{core=\"1\",protocol=\"pop3\"} 2",
            ]
        );
        assert_eq!(
            block(&text, "ringmail_smtp_replies_total")[2..],
            [
                "ringmail_smtp_replies_total{core=\"0\",class=\"2xx\"} 1",
                "ringmail_smtp_replies_total{core=\"0\",class=\"3xx\"} 0",
                "ringmail_smtp_replies_total{core=\"0\",class=\"4xx\"} 0",
                "ringmail_smtp_replies_total{core=\"0\",class=\"5xx\"} 1",
                "ringmail_smtp_replies_total{core=\"1\",class=\"2xx\"} 0",
                "ringmail_smtp_replies_total{core=\"1\",class=\"3xx\"} 0",
                "ringmail_smtp_replies_total{core=\"1\",class=\"4xx\"} 0",
                "ringmail_smtp_replies_total{core=\"1\",class=\"5xx\"} 0",
            ]
        );
        assert_eq!(
            block(&text, "ringmail_smtp_message_bytes_total")[2..],
            [
                "ringmail_smtp_message_bytes_total{core=\"0\"} 3000",
                "ringmail_smtp_message_bytes_total{core=\"1\"} 500",
            ]
        );
    }

    #[test]
    fn histograms_of_two_cores_render_exactly() {
        let text = two_cores().render();
        let want = "\
# HELP ringmail_smtp_data_reply_seconds End of data to the 250 reply: the message durable in every owner's store.
# TYPE ringmail_smtp_data_reply_seconds histogram
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.0001\"} 1
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.00025\"} 1
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.0005\"} 1
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.001\"} 1
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.0025\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.005\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.01\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.025\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"0.1\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"0\",le=\"+Inf\"} 2
ringmail_smtp_data_reply_seconds_sum{core=\"0\"} 0.00249
ringmail_smtp_data_reply_seconds_count{core=\"0\"} 2
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.0001\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.00025\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.0005\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.001\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.0025\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.005\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.01\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.025\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"0.1\"} 0
ringmail_smtp_data_reply_seconds_bucket{core=\"1\",le=\"+Inf\"} 1
ringmail_smtp_data_reply_seconds_sum{core=\"1\"} 0.25
ringmail_smtp_data_reply_seconds_count{core=\"1\"} 1";
        assert_eq!(
            block(&text, "ringmail_smtp_data_reply_seconds").join("\n"),
            want
        );
        let records = block(&text, "ringmail_store_batch_records");
        let meta0: Vec<&str> = records
            .iter()
            .copied()
            .filter(|l| l.contains("core=\"0\",log=\"meta\""))
            .collect();
        assert_eq!(
            meta0,
            [
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"1\"} 0",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"2\"} 0",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"4\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"8\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"16\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"32\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"64\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"128\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"256\"} 1",
                "ringmail_store_batch_records_bucket{core=\"0\",log=\"meta\",le=\"+Inf\"} 1",
                "ringmail_store_batch_records_sum{core=\"0\",log=\"meta\"} 3",
                "ringmail_store_batch_records_count{core=\"0\",log=\"meta\"} 1",
            ]
        );
    }

    /// Every line is a comment or `name{labels} value`, every family is announced once
    /// before its samples, and every sample belongs to the family announced last.
    #[test]
    fn the_whole_text_is_well_formed() {
        let text = two_cores().render();
        assert!(text.ends_with('\n'));
        let mut families = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(families.insert(name.to_string()), "{name} announced twice");
                current = name.to_string();
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "value of {line}"
            );
            let name = series.split('{').next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|b| *b == current))
                .unwrap_or(name);
            assert_eq!(base, current, "{line}");
            assert!(
                series.ends_with('}') && series.contains("core=\""),
                "{line}"
            );
        }
        assert!(families.len() >= 15);
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let mut w = TextWriter::new();
        w.family("x_total", Kind::Counter, "a \\ back\nslash");
        w.sample(
            "x_total",
            &[("path", "C:\\dir \"q\"\nnext"), ("k", "ü")],
            "1",
        );
        w.sample("y", &[], "2");
        assert_eq!(
            w.finish(),
            "# HELP x_total a \\\\ back\\nslash\n\
             # TYPE x_total counter\n\
             x_total{path=\"C:\\\\dir \\\"q\\\"\\nnext\",k=\"ü\"} 1\n\
             y 2\n"
        );
    }

    #[test]
    fn micros_render_as_exact_seconds() {
        for (us, s) in [
            (0, "0"),
            (1, "0.000001"),
            (100, "0.0001"),
            (2500, "0.0025"),
            (1_000_000, "1"),
            (3_250_000, "3.25"),
        ] {
            assert_eq!(micros_as_seconds(us), s);
        }
        for b in LATENCY_BUCKETS_US {
            let shown: f64 = micros_as_seconds(b).parse().unwrap();
            assert!((shown * 1e6 - b as f64).abs() < 1e-6);
        }
    }
}
