//! A run's results as text for people ([`human`]) and as a JSON document for
//! scripts and later comparisons ([`json`], read back by [`parse_json`]).
//!
//! Both start from the protocol-neutral [`Outcome`]. The JSON is built as a
//! simd-json [`OwnedValue`] and encoded by simd-json; reading it back gives a
//! [`RunSummary`]: what `compare` and the HTML report need (counts,
//! percentiles, a thinned latency CDF per operation, the throughput timeline).
//! A [`RunSummary`] made directly from an [`Outcome`] equals the one parsed
//! back from its JSON (the round trip is exact: floats are written in full).

use std::fmt::Write as _;

use simd_json::prelude::*;
use simd_json::{owned::Object, OwnedValue, StaticNode};

use crate::histogram::{LatencyHistogram, Percentiles};
use crate::outcome::{Outcome, Timeline, TIMELINE_BUCKETS_MAX};

/// Most points of a latency CDF written per operation.
pub const CDF_POINTS_MAX: usize = 200;
/// Largest JSON file `compare` reads. [`json`] writes far less: at most ~10
/// operations (IMAP has 9) of ≤ [`CDF_POINTS_MAX`] CDF points of ≤ 48 bytes
/// each (≤ 94 KiB), a timeline of ≤ [`TIMELINE_BUCKETS_MAX`] counts of ≤ 21
/// bytes (≤ 74 KiB) and the settings: ~200 KiB. Even [`OPS_MAX`] operations
/// with full CDFs of the widest numbers (2.5 MiB) fit: see the test
/// `largest_document_the_writer_can_produce_fits_the_read_limit`.
pub const JSON_BYTES_MAX: usize = 4 << 20;
/// Most operations, CDF points and config entries accepted when reading.
pub const OPS_MAX: usize = 256;
pub const CDF_POINTS_READ_MAX: usize = 4 * CDF_POINTS_MAX;
pub const CONFIG_ENTRIES_MAX: usize = 4_096;
/// Longest string field accepted when reading (labels, errors, config values).
pub const STRING_BYTES_MAX: usize = 64 << 10;

/// The `tool` field of every document this crate writes.
pub const TOOL_NAME: &str = "ringmail-loadgen";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("not valid JSON: {0}")]
    Syntax(#[from] simd_json::Error),
    #[error("not a {TOOL_NAME} result: field `{field}` {reason}")]
    Field { field: String, reason: &'static str },
}

fn field_error(field: impl Into<String>, reason: &'static str) -> ReportError {
    ReportError::Field {
        field: field.into(),
        reason,
    }
}

/// One point of a latency CDF: `fraction` of the operations took at most `latency_us`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CdfPoint {
    pub latency_us: u64,
    pub fraction: f64,
}

/// One operation kind as reported.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSummary {
    pub name: String,
    pub ok: u64,
    pub tempfail: u64,
    pub permfail: u64,
    pub aborted: u64,
    pub latency: Percentiles,
    /// Increasing in both coordinates, last fraction exactly 1.0; empty when
    /// nothing completed.
    pub cdf: Vec<CdfPoint>,
}

impl OpSummary {
    pub fn completed(&self) -> u64 {
        self.ok + self.tempfail + self.permfail
    }

    /// Started: completed or aborted.
    pub fn started(&self) -> u64 {
        self.completed() + self.aborted
    }
}

/// What the reports and `compare` know about one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Version of the loadgen that wrote it.
    pub version: String,
    pub protocol: String,
    pub label: String,
    pub target: String,
    pub config: Vec<(String, String)>,
    pub started_unix_ms: u64,
    pub elapsed_secs: f64,
    pub headline: String,
    pub headline_rate: f64,
    pub connects: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub ops: Vec<OpSummary>,
    pub timeline: Timeline,
}

impl RunSummary {
    pub fn from_outcome(outcome: &Outcome) -> Self {
        Self {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: outcome.protocol.clone(),
            label: outcome.label.clone(),
            target: outcome.target.clone(),
            config: outcome.config.clone(),
            started_unix_ms: outcome.started_unix_ms,
            elapsed_secs: outcome.elapsed.as_secs_f64(),
            headline: outcome.headline.clone(),
            headline_rate: outcome.headline_rate(),
            connects: outcome.connects,
            errors: outcome.errors,
            first_error: outcome.first_error.clone(),
            ops: outcome
                .ops
                .iter()
                .map(|op| OpSummary {
                    name: op.name.clone(),
                    ok: op.ok,
                    tempfail: op.tempfail,
                    permfail: op.permfail,
                    aborted: op.aborted,
                    latency: op.latency.percentiles(),
                    cdf: cdf(&op.latency, CDF_POINTS_MAX),
                })
                .collect(),
            timeline: outcome.timeline.clone(),
        }
    }

    pub fn op(&self, name: &str) -> Option<&OpSummary> {
        self.ops.iter().find(|op| op.name == name)
    }

    /// Unit of [`RunSummary::headline_rate`]: `msg/s`, `cmd/s`, `retr/s`.
    pub fn headline_unit(&self) -> String {
        headline_unit(&self.protocol, &self.headline)
    }
}

/// Operation names over all `runs`, in first-seen order.
pub fn op_names(runs: &[RunSummary]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for run in runs {
        for op in &run.ops {
            if !names.contains(&op.name.as_str()) {
                names.push(&op.name);
            }
        }
    }
    names
}

/// `msg/s` for SMTP, `cmd/s` for IMAP, `retr/s` for POP3, else `<headline>/s`.
pub fn headline_unit(protocol: &str, headline: &str) -> String {
    match protocol {
        "smtp" => "msg/s".to_owned(),
        "imap" => "cmd/s".to_owned(),
        "pop3" => "retr/s".to_owned(),
        _ => format!("{headline}/s"),
    }
}

/// The latency CDF of `histogram`: one point per non-empty bucket (its upper
/// end, clamped to the exact max), thinned to at most `points_max` points
/// (at least 2) when there are more. Thinning keeps the first and last point,
/// half the budget spread evenly over the fraction axis (the body) and half
/// spread evenly over the "nines" from 99 % to 99.9999 % (the tail).
pub fn cdf(histogram: &LatencyHistogram, points_max: usize) -> Vec<CdfPoint> {
    let total = histogram.count();
    if total == 0 {
        return Vec::new();
    }
    let mut seen = 0u64;
    let all: Vec<CdfPoint> = histogram
        .buckets()
        .map(|bucket| {
            seen += bucket.count;
            CdfPoint {
                latency_us: bucket.high_us,
                // seen == total at the last bucket: exactly 1.0.
                fraction: seen as f64 / total as f64,
            }
        })
        .collect();
    thin(all, points_max.max(2))
}

fn thin(all: Vec<CdfPoint>, points_max: usize) -> Vec<CdfPoint> {
    if all.len() <= points_max {
        return all;
    }
    let body = (points_max - 2) / 2;
    let tail = points_max - 2 - body;
    let mut targets: Vec<f64> = (1..=body).map(|i| i as f64 / body as f64).collect();
    targets.extend((0..tail).map(|j| {
        let nines = 2.0 + 4.0 * j as f64 / tail.max(2).saturating_sub(1) as f64;
        1.0 - 10f64.powf(-nines)
    }));
    let mut keep = vec![false; all.len()];
    keep[0] = true;
    keep[all.len() - 1] = true;
    for target in targets {
        let index = all.partition_point(|p| p.fraction < target);
        if let Some(flag) = keep.get_mut(index) {
            *flag = true;
        }
    }
    all.into_iter()
        .zip(keep)
        .filter_map(|(point, kept)| kept.then_some(point))
        .collect()
}

/// Merged latency of the run's headline: the named op, or every op for `all`.
fn headline_latency(outcome: &Outcome) -> LatencyHistogram {
    let mut merged = LatencyHistogram::new();
    for op in outcome.headline_ops() {
        merged.merge(&op.latency);
    }
    merged
}

/// The human summary. The first lines have a fixed shape for scripts:
/// ```text
/// smtp 127.0.0.1:2525  connections=20 size=2048 ...
/// sent=100 ok(2xx)=90 tempfail(4xx)=6 permfail(5xx)=3 errors=2 elapsed=1.500s
/// throughput=60.0 msg/s
/// data->250 latency us: p50=500 p90=901 p99=989 p99.9=997 max=1000
/// ```
/// (IMAP/POP3: `done=.. ok=.. tempfail=.. permfail=..` on line 2, `cmd/s` or
/// `retr/s`, and `<headline> latency us:`), then `aborted= connects= errors=`,
/// a table with one row per operation, and the first error if any.
pub fn human(outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = write!(out, "{} {} ", outcome.protocol, outcome.target);
    for (key, value) in &outcome.config {
        if key != "target" {
            let _ = write!(out, " {key}={}", quote_if_needed(value));
        }
    }
    if outcome.label != outcome.target {
        let _ = write!(out, " label={}", quote_if_needed(&outcome.label));
    }
    out.push('\n');

    let (mut ok, mut tempfail, mut permfail, mut aborted, mut started) = (0u64, 0, 0, 0, 0);
    for op in outcome.headline_ops() {
        ok += op.ok;
        tempfail += op.tempfail;
        permfail += op.permfail;
        aborted += op.aborted;
        started += op.started();
    }
    let elapsed = outcome.elapsed.as_secs_f64();
    let smtp = outcome.protocol == "smtp";
    if smtp {
        let _ = writeln!(
            out,
            "sent={started} ok(2xx)={ok} tempfail(4xx)={tempfail} permfail(5xx)={permfail} errors={} elapsed={elapsed:.3}s",
            outcome.errors,
        );
    } else {
        let _ = writeln!(
            out,
            "done={} ok={ok} tempfail={tempfail} permfail={permfail} errors={} elapsed={elapsed:.3}s",
            ok + tempfail + permfail,
            outcome.errors,
        );
    }
    let _ = writeln!(
        out,
        "throughput={:.1} {}",
        outcome.headline_rate(),
        headline_unit(&outcome.protocol, &outcome.headline)
    );
    let p = headline_latency(outcome).percentiles();
    let name = if smtp {
        "data->250"
    } else {
        outcome.headline.as_str()
    };
    let _ = writeln!(
        out,
        "{name} latency us: p50={} p90={} p99={} p99.9={} max={}",
        p.p50_us, p.p90_us, p.p99_us, p.p99_9_us, p.max_us
    );
    let _ = writeln!(
        out,
        "aborted={aborted} connects={} errors={}",
        outcome.connects, outcome.errors
    );
    out.push_str(&op_table(outcome));
    if let Some(error) = &outcome.first_error {
        let _ = writeln!(out, "first error: {}", error.escape_debug());
    }
    out
}

fn quote_if_needed(value: &str) -> String {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        format!("{value:?}")
    } else {
        value.to_owned()
    }
}

/// One row per operation: counts, then latency percentiles in µs.
fn op_table(outcome: &Outcome) -> String {
    const HEADER: [&str; 10] = [
        "ok", "tempfail", "permfail", "aborted", "p50", "p90", "p99", "p99.9", "max", "(us)",
    ];
    let rows: Vec<(String, [u64; 9])> = outcome
        .ops
        .iter()
        .map(|op| {
            let p = op.latency.percentiles();
            (
                op.name.clone(),
                [
                    op.ok,
                    op.tempfail,
                    op.permfail,
                    op.aborted,
                    p.p50_us,
                    p.p90_us,
                    p.p99_us,
                    p.p99_9_us,
                    p.max_us,
                ],
            )
        })
        .collect();
    let name_width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(2);
    let mut widths = [0usize; 9];
    for (i, width) in widths.iter_mut().enumerate() {
        *width = rows
            .iter()
            .map(|r| r.1[i].to_string().len())
            .max()
            .unwrap_or(0)
            .max(HEADER[i].len());
    }
    let mut out = format!("{:<name_width$}", "op");
    for (i, width) in widths.iter().enumerate() {
        let _ = write!(out, "  {:>width$}", HEADER[i]);
    }
    let _ = writeln!(out, "  {}", HEADER[9]);
    for (name, values) in &rows {
        let _ = write!(out, "{name:<name_width$}");
        for (value, width) in values.iter().zip(widths) {
            let _ = write!(out, "  {value:>width$}");
        }
        out.push('\n');
    }
    out
}

fn object(entries: Vec<(&str, OwnedValue)>) -> OwnedValue {
    let mut object = Object::default();
    for (key, value) in entries {
        object.insert(key.to_owned(), value);
    }
    OwnedValue::from(object)
}

/// A config value as JSON: canonical unsigned integers and booleans as such,
/// everything else as a string (so reading it back gives the same text).
fn config_value(text: &str) -> OwnedValue {
    match text {
        "true" => OwnedValue::from(true),
        "false" => OwnedValue::from(false),
        _ => match text.parse::<u64>() {
            Ok(n) if n.to_string() == text => OwnedValue::from(n),
            _ => OwnedValue::from(text),
        },
    }
}

fn percentiles_value(p: &Percentiles) -> Vec<(&'static str, OwnedValue)> {
    vec![
        ("count", p.count.into()),
        ("min", p.min_us.into()),
        ("mean", p.mean_us.into()),
        ("p50", p.p50_us.into()),
        ("p90", p.p90_us.into()),
        ("p99", p.p99_us.into()),
        ("p99_9", p.p99_9_us.into()),
        ("max", p.max_us.into()),
    ]
}

/// Rounds for display-only fields (the exact value is in `headline_rate`).
fn round1(value: f64) -> f64 {
    if value.is_finite() {
        (value * 10.0).round() / 10.0
    } else {
        0.0
    }
}

fn finite(value: f64) -> f64 {
    if value.is_finite() {
        value
    } else {
        0.0
    }
}

/// The JSON document of a run (one line, ends with a newline).
pub fn json(outcome: &Outcome) -> String {
    let summary = RunSummary::from_outcome(outcome);
    let mut doc = summary_value(&summary);
    if summary.protocol == "smtp" {
        if let (Some(message), OwnedValue::Object(top)) = (summary.op("message"), &mut doc) {
            // The keys scripts read before the other protocols existed.
            top.insert("sent".into(), message.started().into());
            top.insert("ok_2xx".into(), message.ok.into());
            top.insert("tempfail_4xx".into(), message.tempfail.into());
            top.insert("permfail_5xx".into(), message.permfail.into());
            top.insert("aborted".into(), message.aborted.into());
            top.insert(
                "throughput_msgs_per_sec".into(),
                round1(summary.headline_rate).into(),
            );
            let mut latency = vec![("measured", "end of DATA written -> final reply".into())];
            latency.extend(percentiles_value(&message.latency));
            top.insert("latency_us".into(), object(latency));
        }
    }
    let mut text = doc.encode();
    text.push('\n');
    text
}

fn summary_value(s: &RunSummary) -> OwnedValue {
    let mut config = Object::default();
    for (key, value) in &s.config {
        config.insert(key.clone(), config_value(value));
    }
    let ops: Vec<OwnedValue> = s
        .ops
        .iter()
        .map(|op| {
            let cdf: Vec<OwnedValue> = op
                .cdf
                .iter()
                .map(|p| {
                    OwnedValue::from(vec![
                        OwnedValue::from(p.latency_us),
                        OwnedValue::from(finite(p.fraction)),
                    ])
                })
                .collect::<Vec<OwnedValue>>();
            object(vec![
                ("name", op.name.as_str().into()),
                ("ok", op.ok.into()),
                ("tempfail", op.tempfail.into()),
                ("permfail", op.permfail.into()),
                ("aborted", op.aborted.into()),
                ("completed", op.completed().into()),
                ("latency_us", object(percentiles_value(&op.latency))),
                ("cdf", OwnedValue::from(cdf)),
            ])
        })
        .collect();
    let first_error = match &s.first_error {
        Some(e) => OwnedValue::from(e.as_str()),
        None => OwnedValue::from(StaticNode::Null),
    };
    object(vec![
        ("tool", TOOL_NAME.into()),
        ("version", s.version.as_str().into()),
        ("protocol", s.protocol.as_str().into()),
        ("label", s.label.as_str().into()),
        ("target", s.target.as_str().into()),
        ("config", OwnedValue::from(config)),
        ("started_unix_ms", s.started_unix_ms.into()),
        ("elapsed_secs", finite(s.elapsed_secs).into()),
        ("headline", s.headline.as_str().into()),
        ("headline_unit", s.headline_unit().into()),
        ("headline_rate", finite(s.headline_rate).into()),
        ("connects", s.connects.into()),
        ("errors", s.errors.into()),
        ("first_error", first_error),
        ("ops", OwnedValue::from(ops)),
        (
            "timeline",
            object(vec![
                ("interval_ms", s.timeline.interval_ms.into()),
                (
                    "counts",
                    OwnedValue::from(
                        s.timeline
                            .counts
                            .iter()
                            .map(|&n| OwnedValue::from(n))
                            .collect::<Vec<OwnedValue>>(),
                    ),
                ),
            ]),
        ),
    ])
}

/// Reads a document written by [`json`] (simd-json parses `bytes` in place).
/// The caller bounds its size (`compare` reads at most [`JSON_BYTES_MAX`] bytes).
pub fn parse_json(bytes: &mut [u8]) -> Result<RunSummary, ReportError> {
    let doc = simd_json::to_owned_value(bytes)?;
    if doc.get_str("tool") != Some(TOOL_NAME) {
        return Err(field_error("tool", "is missing or names another tool"));
    }
    let ops_value = doc
        .get_array("ops")
        .ok_or_else(|| field_error("ops", "is missing or not an array"))?;
    if ops_value.len() > OPS_MAX {
        return Err(field_error("ops", "has too many entries"));
    }
    let mut ops = Vec::with_capacity(ops_value.len());
    for (i, op) in ops_value.iter().enumerate() {
        ops.push(parse_op(op, &format!("ops[{i}]"))?);
    }
    let timeline_value = doc
        .get("timeline")
        .ok_or_else(|| field_error("timeline", "is missing"))?;
    let interval_ms = u64_field(timeline_value, "interval_ms", "timeline.interval_ms")?;
    if interval_ms == 0 {
        return Err(field_error("timeline.interval_ms", "is zero"));
    }
    let counts_value = timeline_value
        .get_array("counts")
        .ok_or_else(|| field_error("timeline.counts", "is missing or not an array"))?;
    if counts_value.len() > TIMELINE_BUCKETS_MAX {
        return Err(field_error("timeline.counts", "has too many entries"));
    }
    let counts = counts_value
        .iter()
        .map(|v| {
            v.as_u64()
                .ok_or_else(|| field_error("timeline.counts", "holds a non-count"))
        })
        .collect::<Result<Vec<u64>, _>>()?;
    let config = match doc.get("config") {
        None => Vec::new(),
        Some(value) => {
            let object = value
                .as_object()
                .ok_or_else(|| field_error("config", "is not an object"))?;
            if object.len() > CONFIG_ENTRIES_MAX {
                return Err(field_error("config", "has too many entries"));
            }
            object
                .iter()
                .map(|(k, v)| (k.clone(), config_text(v)))
                .collect()
        }
    };
    let first_error = match doc.get("first_error") {
        None => None,
        Some(v) if v.is_null() => None,
        Some(_) => Some(string_field(&doc, "first_error", "first_error")?),
    };
    Ok(RunSummary {
        version: string_field(&doc, "version", "version")?,
        protocol: string_field(&doc, "protocol", "protocol")?,
        label: string_field(&doc, "label", "label")?,
        target: string_field(&doc, "target", "target")?,
        config,
        started_unix_ms: u64_field(&doc, "started_unix_ms", "started_unix_ms")?,
        elapsed_secs: f64_field(&doc, "elapsed_secs", "elapsed_secs")?,
        headline: string_field(&doc, "headline", "headline")?,
        headline_rate: f64_field(&doc, "headline_rate", "headline_rate")?,
        connects: u64_field(&doc, "connects", "connects")?,
        errors: u64_field(&doc, "errors", "errors")?,
        first_error,
        ops,
        timeline: Timeline {
            interval_ms,
            counts,
        },
    })
}

fn parse_op(op: &OwnedValue, path: &str) -> Result<OpSummary, ReportError> {
    let latency_value = op
        .get("latency_us")
        .ok_or_else(|| field_error(format!("{path}.latency_us"), "is missing"))?;
    let p = |key: &str| u64_field(latency_value, key, &format!("{path}.latency_us.{key}"));
    let latency = Percentiles {
        count: p("count")?,
        min_us: p("min")?,
        mean_us: p("mean")?,
        p50_us: p("p50")?,
        p90_us: p("p90")?,
        p99_us: p("p99")?,
        p99_9_us: p("p99_9")?,
        max_us: p("max")?,
    };
    let cdf_path = format!("{path}.cdf");
    let cdf_value = op
        .get_array("cdf")
        .ok_or_else(|| field_error(cdf_path.clone(), "is missing or not an array"))?;
    if cdf_value.len() > CDF_POINTS_READ_MAX {
        return Err(field_error(cdf_path, "has too many points"));
    }
    let mut cdf = Vec::with_capacity(cdf_value.len());
    for point in cdf_value.iter() {
        let pair = point.as_array().filter(|a| a.len() == 2);
        let parsed = pair.and_then(|a| Some((a[0].as_u64()?, a[1].cast_f64()?)));
        let Some((latency_us, fraction)) = parsed else {
            return Err(field_error(
                cdf_path,
                "holds a point that is not [latency_us, fraction]",
            ));
        };
        if !(0.0..=1.0).contains(&fraction) {
            return Err(field_error(cdf_path, "holds a fraction outside 0..1"));
        }
        cdf.push(CdfPoint {
            latency_us,
            fraction,
        });
    }
    Ok(OpSummary {
        name: string_field(op, "name", &format!("{path}.name"))?,
        ok: u64_field(op, "ok", &format!("{path}.ok"))?,
        tempfail: u64_field(op, "tempfail", &format!("{path}.tempfail"))?,
        permfail: u64_field(op, "permfail", &format!("{path}.permfail"))?,
        aborted: u64_field(op, "aborted", &format!("{path}.aborted"))?,
        latency,
        cdf,
    })
}

fn u64_field(value: &OwnedValue, key: &str, path: &str) -> Result<u64, ReportError> {
    value
        .get_u64(key)
        .ok_or_else(|| field_error(path, "is missing or not an unsigned integer"))
}

fn f64_field(value: &OwnedValue, key: &str, path: &str) -> Result<f64, ReportError> {
    value
        .get(key)
        .and_then(|v| v.cast_f64())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| field_error(path, "is missing or not a non-negative number"))
}

fn string_field(value: &OwnedValue, key: &str, path: &str) -> Result<String, ReportError> {
    let text = value
        .get_str(key)
        .ok_or_else(|| field_error(path, "is missing or not a string"))?;
    if text.len() > STRING_BYTES_MAX {
        return Err(field_error(path, "is too long"));
    }
    Ok(text.to_owned())
}

/// The text form of a config value (the inverse of [`config_value`]).
fn config_text(value: &OwnedValue) -> String {
    if let Some(text) = value.as_str() {
        return text.to_owned();
    }
    if let Some(b) = value.as_bool() {
        return b.to_string();
    }
    if let Some(n) = value.as_u64() {
        return n.to_string();
    }
    if value.is_null() {
        return String::new();
    }
    value.encode()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn smtp_outcome() -> Outcome {
        let mut o = Outcome {
            protocol: "smtp".into(),
            label: "ringmail \"fsync\"".into(),
            target: "127.0.0.1:2525".into(),
            config: vec![
                ("connections".into(), "20".into()),
                ("size_bytes".into(), "2048".into()),
                ("pipelining_used".into(), "yes".into()),
                ("allow_remote".into(), "false".into()),
                ("rate".into(), "0.5".into()),
                ("padded".into(), "007".into()),
                ("from".into(), "sender@load.test".into()),
            ],
            started_unix_ms: 1_795_000_000_123,
            elapsed: Duration::from_millis(1500),
            headline: "message".into(),
            ops: Vec::new(),
            timeline: Timeline::for_duration(Duration::from_secs(10)),
            connects: 20,
            errors: 2,
            first_error: Some("reset by \"peer\"\n\u{1}".into()),
        };
        let message = o.op_mut("message");
        message.ok = 90;
        message.tempfail = 6;
        message.permfail = 3;
        message.aborted = 1;
        for v in 1..=1000 {
            message.latency.record(v);
        }
        let setup = o.op_mut("session_setup");
        setup.ok = 20;
        for v in 0..20 {
            setup.latency.record(100 + v * 37);
        }
        o.timeline.counts = vec![10, 30, 0, 50];
        o
    }

    #[test]
    fn largest_document_the_writer_can_produce_fits_the_read_limit() {
        // Worse than any run: OPS_MAX operations (a protocol has at most 9),
        // each with CDF_POINTS_MAX points and every number at its widest, and
        // a full timeline of 20-digit counts.
        let mut summary = RunSummary::from_outcome(&smtp_outcome());
        let widest = Percentiles {
            count: u64::MAX,
            min_us: u64::MAX,
            mean_us: u64::MAX,
            p50_us: u64::MAX,
            p90_us: u64::MAX,
            p99_us: u64::MAX,
            p99_9_us: u64::MAX,
            max_us: u64::MAX,
        };
        let point = CdfPoint {
            latency_us: u64::MAX,
            fraction: 1.0 / 3.0 * 1e-300,
        };
        summary.ops.resize(
            OPS_MAX,
            OpSummary {
                name: "session_setup_".into(),
                // `completed` (their sum) must not overflow.
                ok: u64::MAX / 4,
                tempfail: u64::MAX / 4,
                permfail: u64::MAX / 4,
                aborted: u64::MAX / 4,
                latency: widest,
                cdf: vec![point; CDF_POINTS_MAX],
            },
        );
        summary.timeline.counts = vec![u64::MAX; TIMELINE_BUCKETS_MAX];
        let text = summary_value(&summary).encode();
        // `json` adds the SMTP keys of the `message` op: well under 1 KiB.
        assert!(text.len() + 1024 <= JSON_BYTES_MAX, "{} bytes", text.len());
        let parsed = parse_json(&mut text.into_bytes()).unwrap();
        assert_eq!(parsed.ops.len(), OPS_MAX);
        assert_eq!(parsed.ops[OPS_MAX - 1].cdf.len(), CDF_POINTS_MAX);
    }

    #[test]
    fn human_summary_keeps_the_smtp_lines_scripts_grep() {
        let text = human(&smtp_outcome());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "smtp 127.0.0.1:2525  connections=20 size_bytes=2048 pipelining_used=yes \
             allow_remote=false rate=0.5 padded=007 from=sender@load.test label=\"ringmail \\\"fsync\\\"\""
        );
        assert_eq!(
            lines[1],
            "sent=100 ok(2xx)=90 tempfail(4xx)=6 permfail(5xx)=3 errors=2 elapsed=1.500s"
        );
        assert_eq!(lines[2], "throughput=60.0 msg/s");
        assert_eq!(
            lines[3],
            "data->250 latency us: p50=500 p90=901 p99=989 p99.9=997 max=1000"
        );
        assert_eq!(lines[4], "aborted=1 connects=20 errors=2");
        assert!(
            lines[5].starts_with("op             ok  tempfail"),
            "{}",
            lines[5]
        );
        assert!(lines[5].ends_with("max  (us)"), "{}", lines[5]);
        let message: Vec<&str> = lines[6].split_whitespace().collect();
        assert_eq!(
            message,
            ["message", "90", "6", "3", "1", "500", "901", "989", "997", "1000"]
        );
        assert!(lines[7].starts_with("session_setup  20"), "{}", lines[7]);
        assert_eq!(lines[8], "first error: reset by \\\"peer\\\"\\n\\u{1}");
    }

    #[test]
    fn human_summary_names_the_unit_of_each_protocol() {
        let mut o = smtp_outcome();
        o.protocol = "imap".into();
        o.headline = "all".into();
        let text = human(&o);
        let lines: Vec<&str> = text.lines().collect();
        // All ops: 110 ok of 1.5 s.
        assert_eq!(lines[2], "throughput=73.3 cmd/s");
        assert!(
            lines[1].starts_with("done=119 ok=110 tempfail=6 permfail=3 errors=2"),
            "{}",
            lines[1]
        );
        assert!(lines[3].starts_with("all latency us: p50="), "{}", lines[3]);
        o.protocol = "pop3".into();
        o.headline = "retr".into();
        o.op_mut("retr").ok = 3;
        assert_eq!(human(&o).lines().nth(2), Some("throughput=2.0 retr/s"));
    }

    #[test]
    fn json_round_trips_every_field() {
        let outcome = smtp_outcome();
        let mut text = json(&outcome).into_bytes();
        assert!(text.ends_with(b"}\n"));
        let parsed = parse_json(&mut text).unwrap();
        let expected = RunSummary::from_outcome(&outcome);
        assert_eq!(parsed, expected);
        // And by hand, so a bug shared by both sides would still show.
        assert_eq!(parsed.label, "ringmail \"fsync\"");
        assert_eq!(parsed.headline_rate, 60.0);
        assert_eq!(parsed.elapsed_secs, 1.5);
        assert_eq!(parsed.started_unix_ms, 1_795_000_000_123);
        assert_eq!(
            parsed.first_error.as_deref(),
            Some("reset by \"peer\"\n\u{1}")
        );
        assert_eq!(parsed.timeline.counts, [10, 30, 0, 50]);
        assert_eq!(parsed.timeline.interval_ms, 100);
        let message = parsed.op("message").unwrap();
        assert_eq!(
            (
                message.ok,
                message.tempfail,
                message.permfail,
                message.aborted
            ),
            (90, 6, 3, 1)
        );
        assert_eq!(message.latency.p99_us, 989);
        assert_eq!(message.latency.count, 1000);
        assert_eq!(
            message.cdf.last().map(|p| (p.latency_us, p.fraction)),
            Some((1000, 1.0))
        );
        assert_eq!(parsed.op("session_setup").unwrap().cdf.len(), 20);
        let config: Vec<(&str, &str)> = parsed
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(config.contains(&("padded", "007")));
        assert!(config.contains(&("rate", "0.5")));
    }

    #[test]
    fn json_keeps_the_smtp_keys_and_types_scripts_read() {
        let mut text = json(&smtp_outcome()).into_bytes();
        let doc = simd_json::to_owned_value(&mut text).unwrap();
        assert_eq!(doc.get_str("tool"), Some("ringmail-loadgen"));
        assert_eq!(doc.get_u64("sent"), Some(100));
        assert_eq!(doc.get_u64("ok_2xx"), Some(90));
        assert_eq!(doc.get_u64("tempfail_4xx"), Some(6));
        assert_eq!(doc.get_u64("permfail_5xx"), Some(3));
        assert_eq!(doc.get_u64("aborted"), Some(1));
        assert_eq!(doc.get_f64("throughput_msgs_per_sec"), Some(60.0));
        assert_eq!(doc.get_str("headline_unit"), Some("msg/s"));
        let latency = doc.get("latency_us").unwrap();
        assert_eq!(latency.get_u64("count"), Some(1000));
        assert_eq!(latency.get_u64("p50"), Some(500));
        assert_eq!(latency.get_u64("p99"), Some(989));
        let config = doc.get("config").unwrap();
        assert_eq!(config.get_u64("size_bytes"), Some(2048));
        assert_eq!(config.get_bool("allow_remote"), Some(false));
        assert_eq!(config.get_str("padded"), Some("007"));
        assert_eq!(config.get_str("rate"), Some("0.5"));
        let ops = doc.get_array("ops").unwrap();
        assert_eq!(ops[0].get_u64("completed"), Some(99));
    }

    #[test]
    fn json_of_other_protocols_has_no_smtp_keys_and_empty_runs_are_valid() {
        let mut o = smtp_outcome();
        o.protocol = "pop3".into();
        o.headline = "retr".into();
        o.ops.clear();
        o.op_mut("retr");
        o.elapsed = Duration::ZERO;
        o.first_error = None;
        o.timeline.counts.clear();
        let mut text = json(&o).into_bytes();
        let doc = simd_json::to_owned_value(&mut text.clone()).unwrap();
        assert!(doc.get("ok_2xx").is_none());
        assert!(doc.get("first_error").unwrap().is_null());
        let parsed = parse_json(&mut text).unwrap();
        assert_eq!(parsed.headline_rate, 0.0);
        assert!(parsed.op("retr").unwrap().cdf.is_empty());
        assert_eq!(parsed.first_error, None);
        assert_eq!(parsed, RunSummary::from_outcome(&o));
    }

    #[test]
    fn parse_json_rejects_what_it_cannot_use() {
        let mut garbage = b"{\"tool\": ".to_vec();
        assert!(matches!(
            parse_json(&mut garbage),
            Err(ReportError::Syntax(_))
        ));
        let mut other = br#"{"tool":"other","ops":[]}"#.to_vec();
        assert!(matches!(
            parse_json(&mut other),
            Err(ReportError::Field { .. })
        ));
        let good = json(&smtp_outcome());
        let mut missing = good.replace("\"headline_rate\"", "\"x\"").into_bytes();
        let error = parse_json(&mut missing).unwrap_err().to_string();
        assert!(error.contains("headline_rate"), "{error}");
        let mut bad_cdf = good
            .replacen("\"cdf\":[[", "\"cdf\":[[\"x\",", 1)
            .into_bytes();
        let error = parse_json(&mut bad_cdf).unwrap_err().to_string();
        assert!(error.contains("ops[0].cdf"), "{error}");
    }

    fn check_cdf(points: &[CdfPoint], max: usize) {
        assert!(!points.is_empty());
        assert!(points.len() <= max, "{} points", points.len());
        assert!(points
            .windows(2)
            .all(|w| w[0].latency_us < w[1].latency_us && w[0].fraction < w[1].fraction));
        assert_eq!(points.last().unwrap().fraction, 1.0);
    }

    #[test]
    fn cdf_is_monotonic_ends_at_one_and_is_bounded() {
        let mut histogram = LatencyHistogram::new();
        assert!(cdf(&histogram, CDF_POINTS_MAX).is_empty());
        // Spread over many octaves: ~2000 non-empty buckets.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let octave = x % 24;
            histogram.record((1 << octave) + (x >> 40) % (1 << octave));
        }
        let full = cdf(&histogram, usize::MAX);
        assert!(full.len() > 1_000, "{}", full.len());
        check_cdf(&full, usize::MAX);
        for max in [2, 3, 10, CDF_POINTS_MAX] {
            let thinned = cdf(&histogram, max);
            check_cdf(&thinned, max);
            assert_eq!(thinned[0], full[0]);
            // Every kept point is a point of the full CDF.
            assert!(thinned.iter().all(|p| full.contains(p)));
        }
        let thinned = cdf(&histogram, CDF_POINTS_MAX);
        assert!(thinned.len() > CDF_POINTS_MAX / 2, "{}", thinned.len());
        // The tail is kept: some point between p99.9 and p100 (exclusive).
        assert!(thinned
            .iter()
            .any(|p| p.fraction >= 0.999 && p.fraction < 1.0));
        assert_eq!(thinned.last().unwrap().latency_us, histogram.max_us());
    }

    #[test]
    fn cdf_of_few_buckets_is_exact() {
        let mut histogram = LatencyHistogram::new();
        for v in [10, 10, 10, 20] {
            histogram.record(v);
        }
        let points = cdf(&histogram, CDF_POINTS_MAX);
        assert_eq!(
            points,
            [
                CdfPoint {
                    latency_us: 10,
                    fraction: 0.75
                },
                CdfPoint {
                    latency_us: 20,
                    fraction: 1.0
                }
            ]
        );
    }
}
