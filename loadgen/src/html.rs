//! The HTML report: ONE self-contained file for one run (`--html`) or several
//! (`compare --html`). Inline CSS and inline SVG plots drawn here (no script,
//! no network, no external fonts), so it opens from a mail attachment or an
//! air-gapped host. Sections: the runs and their settings, headline figures
//! (with the ratio to the first run), a per-operation table, "throughput over
//! time" (one line per run) and a "latency CDF" per operation (log-scaled
//! latency axis, one line per run), each plot with its legend.
//!
//! Every string that comes from a run (labels, targets, settings, errors, op
//! names) goes through [`escape`].

use std::fmt::Write as _;

use crate::compare::ratio;
use crate::report::{op_names, CdfPoint, RunSummary};

/// Line colours, one per run (repeated with dashes after the eighth run).
const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const DASHES: [&str; 3] = ["", "6 3", "2 3"];

/// Plot geometry, in SVG user units.
const PLOT_WIDTH: f64 = 760.0;
const PLOT_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 72.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 16.0;
const MARGIN_BOTTOM: f64 = 48.0;
/// Legend rows under the plot.
const LEGEND_ROW: f64 = 16.0;
const LEGEND_PADDING: f64 = 12.0;

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1000px;padding:0 1em;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}
.swatch{display:inline-block;width:1.6em;height:.3em;vertical-align:middle;margin-right:.4em}
.err{color:#a00;word-break:break-all}
svg{max-width:100%;height:auto;background:#fff}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#333}
.grid{stroke:#e6e6e6;stroke-width:1}
.axis{stroke:#888;stroke-width:1}
footer{margin-top:3em;color:#777;font-size:.8em}
";

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // NUL is not allowed in HTML at all: the replacement character.
            '\0' => out.push_str("&#xfffd;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "&#x{:x};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A linear axis: `domain` (data units) → `range` (SVG units).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearScale {
    pub domain: (f64, f64),
    pub range: (f64, f64),
}

impl LinearScale {
    /// From 0 to a "nice" value ≥ `max` (1, 2 or 5 × 10^k steps, about `ticks` of them).
    pub fn nice_from_zero(max: f64, ticks: usize, range: (f64, f64)) -> Self {
        let max = if max.is_finite() && max > 0.0 {
            max
        } else {
            1.0
        };
        let step = nice_step(max / ticks.max(1) as f64);
        Self {
            domain: (0.0, (max / step).ceil() * step),
            range,
        }
    }

    pub fn map(&self, value: f64) -> f64 {
        let (d0, d1) = self.domain;
        let (r0, r1) = self.range;
        if d1 == d0 {
            return r0;
        }
        r0 + (value - d0) / (d1 - d0) * (r1 - r0)
    }

    /// Ticks at multiples of a nice step inside the domain.
    pub fn ticks(&self, count: usize) -> Vec<f64> {
        let (d0, d1) = self.domain;
        if d1 <= d0 {
            return vec![d0];
        }
        let step = nice_step((d1 - d0) / count.max(1) as f64);
        let first = (d0 / step).ceil() as i64;
        let last = (d1 / step + 1e-9).floor() as i64;
        (first..=last).map(|i| i as f64 * step).collect()
    }
}

/// The smallest 1, 2 or 5 × 10^k that is ≥ `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * magnitude >= raw * (1.0 - 1e-12) {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

/// A log10 axis over whole decades: the data range widened to powers of ten.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogScale {
    /// Powers of ten, `domain.0 < domain.1`.
    pub domain: (f64, f64),
    pub range: (f64, f64),
}

impl LogScale {
    /// Covers `[low, high]` (values below 1 count as 1).
    pub fn covering(low: f64, high: f64, range: (f64, f64)) -> Self {
        let low = if low.is_finite() { low.max(1.0) } else { 1.0 };
        let high = if high.is_finite() { high.max(low) } else { low };
        let d0 = 10f64.powf(low.log10().floor());
        let mut d1 = 10f64.powf(high.log10().ceil());
        if d1 <= d0 {
            d1 = d0 * 10.0;
        }
        Self {
            domain: (d0, d1),
            range,
        }
    }

    pub fn map(&self, value: f64) -> f64 {
        let (d0, d1) = (self.domain.0.log10(), self.domain.1.log10());
        let v = value.max(self.domain.0 * 1e-3).log10();
        let (r0, r1) = self.range;
        r0 + (v - d0) / (d1 - d0) * (r1 - r0)
    }

    /// Every power of ten in the domain.
    pub fn ticks(&self) -> Vec<f64> {
        let first = self.domain.0.log10().round() as i32;
        let last = self.domain.1.log10().round() as i32;
        (first..=last).map(|k| 10f64.powi(k)).collect()
    }
}

/// `1 µs`, `100 µs`, `1 ms`, `2.5 ms`, `10 s`.
pub fn format_us(us: f64) -> String {
    let (value, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text} {unit}")
}

/// A plain number for axis labels: `0`, `2.5`, `15000`.
fn format_number(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time in milliseconds.
pub fn format_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (≥ 0).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn color(run: usize) -> &'static str {
    PALETTE[run % PALETTE.len()]
}

fn dash(run: usize) -> &'static str {
    DASHES[(run / PALETTE.len()) % DASHES.len()]
}

fn swatch(run: usize) -> String {
    format!(
        "<span class=\"swatch\" style=\"background:{}\"></span>",
        color(run)
    )
}

/// The report for `runs` (the first is the baseline of every ratio).
pub fn render(runs: &[RunSummary]) -> String {
    let labels: Vec<String> = runs.iter().map(|r| r.label.clone()).collect();
    let title = format!("ringmail-loadgen: {}", labels.join(" vs "));
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    if runs.is_empty() {
        out.push_str("<p>No runs.</p>\n</body>\n</html>\n");
        return out;
    }
    runs_section(&mut out, runs);
    settings_section(&mut out, runs);
    headline_section(&mut out, runs);
    ops_section(&mut out, runs);
    out.push_str("<h2>Throughput over time</h2>\n");
    out.push_str(&throughput_plot(runs));
    for op in op_names(runs) {
        let _ = writeln!(out, "<h2>Latency CDF: {}</h2>", escape(op));
        out.push_str(&cdf_plot(runs, op));
    }
    let _ = write!(
        out,
        "<footer>Written by ringmail-loadgen {}. Latency: request sent → final reply, \
         HDR-style histogram (within 1 %).</footer>\n</body>\n</html>\n",
        escape(env!("CARGO_PKG_VERSION"))
    );
    out
}

fn runs_section(out: &mut String, runs: &[RunSummary]) {
    out.push_str(
        "<h2>Runs</h2>\n<table>\n<tr><th>run</th><th>protocol</th><th>target</th>\
         <th>started</th><th>elapsed</th><th>loadgen</th></tr>\n",
    );
    for (i, run) in runs.iter().enumerate() {
        let _ = writeln!(
            out,
            "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{:.3} s</td><td>{}</td></tr>",
            swatch(i),
            escape(&run.label),
            escape(&run.protocol),
            escape(&run.target),
            format_unix_ms(run.started_unix_ms),
            run.elapsed_secs,
            escape(&run.version)
        );
    }
    out.push_str("</table>\n");
}

/// One row per setting (the union over runs, in first-seen order), one column per run.
fn settings_section(out: &mut String, runs: &[RunSummary]) {
    let mut keys: Vec<&str> = Vec::new();
    for run in runs {
        for (key, _) in &run.config {
            if !keys.contains(&key.as_str()) {
                keys.push(key);
            }
        }
    }
    if keys.is_empty() {
        return;
    }
    out.push_str("<h2>Settings</h2>\n<table>\n<tr><th>setting</th>");
    for (i, run) in runs.iter().enumerate() {
        let _ = write!(out, "<th>{}{}</th>", swatch(i), escape(&run.label));
    }
    out.push_str("</tr>\n");
    for key in keys {
        let _ = write!(out, "<tr><td>{}</td>", escape(key));
        let values: Vec<Option<&str>> = runs
            .iter()
            .map(|run| {
                run.config
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            })
            .collect();
        let differs = values.iter().any(|v| *v != values[0]);
        for value in values {
            let text = value.map_or_else(|| "–".to_owned(), escape);
            if differs {
                let _ = write!(out, "<td><b>{text}</b></td>");
            } else {
                let _ = write!(out, "<td>{text}</td>");
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn headline_section(out: &mut String, runs: &[RunSummary]) {
    out.push_str(
        "<h2>Headline</h2>\n<table>\n<tr><th>run</th><th>measures</th><th>rate</th>\
         <th>vs first</th><th>connects</th><th>errors</th><th>first error</th></tr>\n",
    );
    let base = runs[0].headline_rate;
    for (i, run) in runs.iter().enumerate() {
        let vs =
            ratio(run.headline_rate, base).map_or_else(|| "–".to_owned(), |r| format!("{r:.2}×"));
        let _ = writeln!(
            out,
            "<tr><td>{}{}</td><td>{}</td><td class=\"n\">{:.1} {}</td><td class=\"n\">{vs}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"err\">{}</td></tr>",
            swatch(i),
            escape(&run.label),
            escape(&run.headline),
            run.headline_rate,
            escape(&run.headline_unit()),
            run.connects,
            run.errors,
            run.first_error.as_deref().map_or_else(String::new, escape)
        );
    }
    out.push_str("</table>\n");
}

fn ops_section(out: &mut String, runs: &[RunSummary]) {
    out.push_str(
        "<h2>Operations</h2>\n<table>\n<tr><th>operation</th><th>run</th><th>ok</th>\
         <th>tempfail</th><th>permfail</th><th>aborted</th><th>p50</th><th>p90</th>\
         <th>p99</th><th>p99.9</th><th>max</th></tr>\n",
    );
    for name in op_names(runs) {
        for (i, run) in runs.iter().enumerate() {
            let Some(op) = run.op(name) else { continue };
            let p = &op.latency;
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td>",
                escape(name),
                swatch(i),
                escape(&run.label),
                op.ok,
                op.tempfail,
                op.permfail,
                op.aborted
            );
            for us in [p.p50_us, p.p90_us, p.p99_us, p.p99_9_us, p.max_us] {
                let _ = write!(out, "<td class=\"n\">{}</td>", format_us(us as f64));
            }
            out.push_str("</tr>\n");
        }
    }
    out.push_str("</table>\n");
}

/// Plot frame: x from MARGIN_LEFT to width − MARGIN_RIGHT, y from bottom up.
fn x_range() -> (f64, f64) {
    (MARGIN_LEFT, PLOT_WIDTH - MARGIN_RIGHT)
}

fn y_range() -> (f64, f64) {
    (PLOT_HEIGHT - MARGIN_BOTTOM, MARGIN_TOP)
}

/// Opens a plot with room below the axes for a legend of `runs` entries.
fn svg_open(out: &mut String, title: &str, runs: usize) {
    let height = PLOT_HEIGHT + LEGEND_PADDING + LEGEND_ROW * runs as f64;
    let _ = writeln!(
        out,
        "<svg viewBox=\"0 0 {PLOT_WIDTH} {height}\" \
         width=\"{PLOT_WIDTH}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">",
        escape(title)
    );
}

fn x_tick(out: &mut String, x: f64, label: &str) {
    let (y0, y1) = y_range();
    let _ = writeln!(
        out,
        "<line class=\"grid\" x1=\"{x:.1}\" y1=\"{y0:.1}\" x2=\"{x:.1}\" y2=\"{y1:.1}\"/>\
         <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        y0 + 16.0,
        escape(label)
    );
}

fn y_tick(out: &mut String, y: f64, label: &str) {
    let (x0, x1) = x_range();
    let _ = writeln!(
        out,
        "<line class=\"grid\" x1=\"{x0:.1}\" y1=\"{y:.1}\" x2=\"{x1:.1}\" y2=\"{y:.1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
        x0 - 6.0,
        y + 4.0,
        escape(label)
    );
}

fn axes(out: &mut String, x_title: &str, y_title: &str) {
    let (x0, x1) = x_range();
    let (y0, y1) = y_range();
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\"/>\
         <line class=\"axis\" x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text transform=\"translate(14 {:.1}) rotate(-90)\" text-anchor=\"middle\">{}</text>",
        (x0 + x1) / 2.0,
        PLOT_HEIGHT - 8.0,
        escape(x_title),
        (y0 + y1) / 2.0,
        escape(y_title)
    );
}

fn polyline(out: &mut String, run: usize, points: &[(f64, f64)]) {
    if points.is_empty() {
        return;
    }
    let mut coords = String::new();
    for (x, y) in points {
        let _ = write!(coords, "{x:.1},{y:.1} ");
    }
    let dasharray = match dash(run) {
        "" => String::new(),
        d => format!(" stroke-dasharray=\"{d}\""),
    };
    let _ = writeln!(
        out,
        "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{dasharray} points=\"{}\"/>",
        color(run),
        coords.trim_end()
    );
    if points.len() == 1 {
        let (x, y) = points[0];
        let _ = writeln!(
            out,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"/>",
            color(run)
        );
    }
}

/// Legend under the plot, one line per run (labels can be long; the plot stays clear).
fn legend(out: &mut String, runs: &[RunSummary]) {
    let (x, _) = x_range();
    for (i, run) in runs.iter().enumerate() {
        let y = PLOT_HEIGHT + 4.0 + LEGEND_ROW * i as f64;
        let dasharray = match dash(i) {
            "" => String::new(),
            d => format!(" stroke-dasharray=\"{d}\""),
        };
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{}\" \
             stroke-width=\"3\"{dasharray}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x + 24.0,
            color(i),
            x + 30.0,
            y + 4.0,
            escape(&run.label)
        );
    }
}

/// Completions per second of each run's headline operation, per timeline interval.
pub fn throughput_plot(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    let series: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|run| {
            let half = run.timeline.interval_ms as f64 / 2000.0;
            let step = run.timeline.interval_ms as f64 / 1000.0;
            run.timeline
                .rates_per_sec()
                .enumerate()
                .map(|(i, rate)| (i as f64 * step + half, rate))
                .collect()
        })
        .collect();
    let secs_max = runs
        .iter()
        .map(|r| {
            (r.timeline.counts.len() as f64 * r.timeline.interval_ms as f64 / 1000.0)
                .max(r.elapsed_secs)
        })
        .fold(0.0, f64::max);
    let rate_max = series.iter().flatten().map(|p| p.1).fold(0.0, f64::max);
    let x = LinearScale::nice_from_zero(secs_max, 8, x_range());
    let y = LinearScale::nice_from_zero(rate_max, 5, y_range());
    svg_open(&mut out, "throughput over time", runs.len());
    for t in x.ticks(8) {
        x_tick(&mut out, x.map(t), &format_number(t));
    }
    for r in y.ticks(5) {
        y_tick(&mut out, y.map(r), &format_number(r));
    }
    let unit = runs
        .first()
        .map_or_else(String::new, RunSummary::headline_unit);
    axes(&mut out, "seconds since start", &unit);
    for (i, points) in series.iter().enumerate() {
        let mapped: Vec<(f64, f64)> = points.iter().map(|&(t, r)| (x.map(t), y.map(r))).collect();
        polyline(&mut out, i, &mapped);
    }
    legend(&mut out, runs);
    out.push_str("</svg>\n");
    if series.iter().all(Vec::is_empty) {
        out.push_str("<p>No completions were recorded over time.</p>\n");
    }
    out
}

/// Fraction of operations `op` done within a latency, log latency axis.
pub fn cdf_plot(runs: &[RunSummary], op: &str) -> String {
    let mut out = String::new();
    fn points<'a>(run: &'a RunSummary, op: &str) -> &'a [CdfPoint] {
        run.op(op).map_or(&[][..], |o| &o.cdf[..])
    }
    let low = runs
        .iter()
        .filter_map(|r| points(r, op).first())
        .map(|p| p.latency_us as f64)
        .fold(f64::INFINITY, f64::min);
    let high = runs
        .iter()
        .filter_map(|r| points(r, op).last())
        .map(|p| p.latency_us as f64)
        .fold(0.0, f64::max);
    let x = LogScale::covering(low, high, x_range());
    let y = LinearScale {
        domain: (0.0, 1.0),
        range: y_range(),
    };
    svg_open(&mut out, &format!("latency CDF of {op}"), runs.len());
    for t in x.ticks() {
        x_tick(&mut out, x.map(t), &format_us(t));
    }
    for f in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        y_tick(
            &mut out,
            y.map(f),
            &format!("{}%", format_number(f * 100.0)),
        );
    }
    axes(&mut out, "latency (log scale)", "fraction done within");
    for (i, run) in runs.iter().enumerate() {
        // Steps: the fraction holds until the next bucket's latency.
        let mut mapped = Vec::new();
        let mut previous = 0.0;
        for p in points(run, op) {
            let px = x.map(p.latency_us.max(1) as f64);
            mapped.push((px, y.map(previous)));
            mapped.push((px, y.map(p.fraction)));
            previous = p.fraction;
        }
        polyline(&mut out, i, &mapped);
    }
    legend(&mut out, runs);
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Percentiles;
    use crate::outcome::Timeline;
    use crate::report::OpSummary;

    fn run(label: &str, rate: f64) -> RunSummary {
        RunSummary {
            version: "0.1.0".into(),
            protocol: "smtp".into(),
            label: label.into(),
            target: "127.0.0.1:25".into(),
            config: vec![("connections".into(), "20".into())],
            started_unix_ms: 0,
            elapsed_secs: 2.0,
            headline: "message".into(),
            headline_rate: rate,
            connects: 20,
            errors: 0,
            first_error: Some("bad <reply> & \"quote\"".into()),
            ops: vec![OpSummary {
                name: "message".into(),
                ok: 10,
                tempfail: 0,
                permfail: 0,
                aborted: 0,
                latency: Percentiles::default(),
                cdf: vec![
                    CdfPoint {
                        latency_us: 40,
                        fraction: 0.5,
                    },
                    CdfPoint {
                        latency_us: 3_000,
                        fraction: 1.0,
                    },
                ],
            }],
            timeline: Timeline {
                interval_ms: 100,
                counts: vec![1, 2, 3],
            },
        }
    }

    #[test]
    fn escape_covers_markup_quotes_and_controls() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
        assert_eq!(escape("a\u{1}b\0"), "a&#x1;b&#xfffd;");
        assert_eq!(escape("plain µs"), "plain µs");
    }

    #[test]
    fn every_string_from_a_run_is_escaped() {
        let mut evil = run("<script>alert(1)</script> & co", 5.0);
        evil.ops[0].name = "<b>op".into();
        evil.config.push(("<k>".into(), "<v>".into()));
        let html = render(&[run("base", 10.0), evil]);
        assert!(!html.contains("<script>"), "unescaped label");
        assert!(!html.contains("<b>op") && !html.contains("<k>") && !html.contains("<v>"));
        assert!(!html.contains("<reply>"), "unescaped error");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"));
        assert!(html.contains("bad &lt;reply&gt; &amp; &quot;quote&quot;"));
        // No script, no reference to anything on the network (inline SVG needs no xmlns in HTML).
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    #[test]
    fn report_has_every_section_and_a_line_per_run_in_each_plot() {
        let html = render(&[run("a", 10.0), run("b", 5.0)]);
        for needle in [
            "<h2>Runs</h2>",
            "<h2>Settings</h2>",
            "<h2>Headline</h2>",
            "<h2>Operations</h2>",
            "<h2>Throughput over time</h2>",
            "<h2>Latency CDF: message</h2>",
            "0.50×",
            "1.00×",
            "1970-01-01 00:00:00 UTC",
        ] {
            assert!(html.contains(needle), "missing {needle}");
        }
        // 2 plots × 2 runs.
        assert_eq!(html.matches("<polyline").count(), 4);
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn log_scale_spans_whole_decades_with_a_tick_per_decade() {
        let scale = LogScale::covering(30.0, 25_000.0, (0.0, 400.0));
        assert_eq!(scale.domain, (10.0, 100_000.0));
        assert_eq!(scale.ticks(), [10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]);
        let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(near(scale.map(10.0), 0.0));
        assert!(near(scale.map(100.0), 100.0));
        assert!(near(scale.map(1_000.0), 200.0));
        assert!(near(scale.map(100_000.0), 400.0));
        // Equal steps per decade, not per unit.
        assert!(near(scale.map(300.0) - scale.map(30.0), 100.0));
        // One value, or values below 1, still give a usable decade.
        let one = LogScale::covering(1_000.0, 1_000.0, (0.0, 1.0));
        assert_eq!(one.domain, (1_000.0, 10_000.0));
        assert_eq!(LogScale::covering(0.0, 0.0, (0.0, 1.0)).domain, (1.0, 10.0));
    }

    #[test]
    fn linear_scale_has_nice_ticks_and_flips_for_svg_y() {
        let scale = LinearScale::nice_from_zero(27_431.0, 5, (300.0, 20.0));
        assert_eq!(scale.domain, (0.0, 30_000.0));
        assert_eq!(scale.ticks(5), [0.0, 10_000.0, 20_000.0, 30_000.0]);
        assert_eq!(scale.map(0.0), 300.0);
        assert_eq!(scale.map(30_000.0), 20.0);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(6_000.0), 10_000.0);
        assert_eq!(
            LinearScale::nice_from_zero(0.0, 5, (0.0, 1.0)).domain,
            (0.0, 1.0)
        );
    }

    #[test]
    fn formats_latencies_and_dates() {
        assert_eq!(format_us(1.0), "1 µs");
        assert_eq!(format_us(100.0), "100 µs");
        assert_eq!(format_us(1_000.0), "1 ms");
        assert_eq!(format_us(2_500.0), "2.5 ms");
        assert_eq!(format_us(10_000_000.0), "10 s");
        assert_eq!(format_unix_ms(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_unix_ms(1_795_000_000_123), "2026-11-18 11:06:40 UTC");
    }
}
