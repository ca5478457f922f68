//! `ringmail-loadgen compare a.json b.json [c.json ...] [--html out.html]`
//! (alias `--compare a.json b.json`): reads runs saved with `--json`, prints
//! them side by side (headline rate, ratio to the first run, errors, per
//! operation ok count and p50/p99) and optionally writes the HTML report of
//! all of them. Runs of different protocols may be compared, with a warning.

use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::report::{self, ReportError, RunSummary, JSON_BYTES_MAX};

/// Most runs in one comparison.
pub const RUNS_MAX: usize = 32;

pub const COMPARE_USAGE: &str = "\
usage: ringmail-loadgen compare RUN.json [RUN.json ...] [--html FILE]
       ringmail-loadgen --compare RUN.json [RUN.json ...] [--html FILE]

  RUN.json               a run saved with --json (the first one is the baseline
                         of every ratio); at most 32
  --html FILE            also write a self-contained HTML report of all runs
  -h, --help             this text

Runs of different protocols can be compared; a warning says so.";

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{}", .0.join("\n"))]
    Usage(Vec<String>),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: usize },
    #[error("{}: {source}", path.display())]
    Parse { path: PathBuf, source: ReportError },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareCommand {
    Help,
    Run(CompareArgs),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompareArgs {
    pub files: Vec<PathBuf>,
    pub html_path: Option<PathBuf>,
}

/// Parses the words after `compare` (or `--compare`); every problem at once.
pub fn parse_compare_args(
    args: impl IntoIterator<Item = String>,
) -> Result<CompareCommand, CompareError> {
    let mut args = args.into_iter();
    let mut files = Vec::new();
    let mut html_path: Option<PathBuf> = None;
    let mut problems = Vec::new();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(CompareCommand::Help),
            "--html" => match inline.or_else(|| args.next()) {
                Some(value) if !value.is_empty() => {
                    if html_path.replace(PathBuf::from(value)).is_some() {
                        problems.push("--html given more than once".to_owned());
                    }
                }
                _ => problems.push("--html needs a file name".to_owned()),
            },
            "--" => files.extend(args.by_ref().map(PathBuf::from)),
            _ if name.starts_with('-') && name.len() > 1 => {
                problems.push(format!("unknown option {name}"));
            }
            _ => files.push(PathBuf::from(arg)),
        }
    }
    if files.is_empty() {
        problems.push("no runs to compare: give the JSON files written with --json".to_owned());
    }
    if files.len() > RUNS_MAX {
        problems.push(format!("at most {RUNS_MAX} runs, got {}", files.len()));
    }
    if problems.is_empty() {
        Ok(CompareCommand::Run(CompareArgs { files, html_path }))
    } else {
        Err(CompareError::Usage(problems))
    }
}

/// Reads and parses one saved run (at most [`JSON_BYTES_MAX`] bytes).
pub fn load(path: &Path) -> Result<RunSummary, CompareError> {
    let read_error = |source| CompareError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(JSON_BYTES_MAX as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > JSON_BYTES_MAX {
        return Err(CompareError::TooLarge {
            path: path.to_owned(),
            max: JSON_BYTES_MAX,
        });
    }
    report::parse_json(&mut bytes).map_err(|source| CompareError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Loads every file; the runs in order, or every problem.
pub fn load_all(paths: &[PathBuf]) -> Result<Vec<RunSummary>, Vec<CompareError>> {
    let mut runs = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for path in paths {
        match load(path) {
            Ok(run) => runs.push(run),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(runs)
    } else {
        Err(errors)
    }
}

/// `value / base`, or `None` when the base is zero (or not a number).
pub fn ratio(value: f64, base: f64) -> Option<f64> {
    let r = value / base;
    (base > 0.0 && r.is_finite()).then_some(r)
}

/// What the reader should know before trusting the table.
pub fn warnings(runs: &[RunSummary]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(first) = runs.first() else {
        return out;
    };
    for run in &runs[1..] {
        if run.protocol != first.protocol {
            out.push(format!(
                "warning: different protocols: {} is {}, {} is {}",
                printable(&first.label),
                printable(&first.protocol),
                printable(&run.label),
                printable(&run.protocol)
            ));
        } else if run.headline != first.headline {
            out.push(format!(
                "warning: different headline operations: {} measures {}, {} measures {}",
                printable(&first.label),
                printable(&first.headline),
                printable(&run.label),
                printable(&run.headline)
            ));
        }
    }
    let mut labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
    labels.sort_unstable();
    if labels.windows(2).any(|w| w[0] == w[1]) {
        out.push("warning: several runs have the same label (set --label)".to_owned());
    }
    out
}

/// Control characters shown as `?` so a crafted file cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The side-by-side table: one column per run, one row per figure.
pub fn table(runs: &[RunSummary]) -> String {
    const MISSING: &str = "-";
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: &str, cell: &dyn Fn(&RunSummary) -> String| {
        rows.push((name.to_owned(), runs.iter().map(cell).collect()));
    };
    row("run", &|r| printable(&r.label));
    row("protocol", &|r| printable(&r.protocol));
    row("target", &|r| printable(&r.target));
    row("elapsed s", &|r| format!("{:.3}", r.elapsed_secs));
    row("headline", &|r| printable(&r.headline));
    row("rate", &|r| {
        format!("{:.1} {}", r.headline_rate, printable(&r.headline_unit()))
    });
    let base = runs.first().map_or(0.0, |r| r.headline_rate);
    row("vs first", &|r| {
        ratio(r.headline_rate, base).map_or_else(|| MISSING.to_owned(), |x| format!("{x:.2}x"))
    });
    row("connects", &|r| r.connects.to_string());
    row("errors", &|r| r.errors.to_string());
    for name in report::op_names(runs) {
        let op_cell = |f: fn(&report::OpSummary) -> String| {
            move |r: &RunSummary| r.op(name).map_or_else(|| MISSING.to_owned(), f)
        };
        let title = printable(name);
        row(&format!("{title} ok"), &op_cell(|op| op.ok.to_string()));
        row(
            &format!("{title} failed"),
            &op_cell(|op| (op.tempfail + op.permfail + op.aborted).to_string()),
        );
        row(
            &format!("{title} p50 us"),
            &op_cell(|op| op.latency.p50_us.to_string()),
        );
        row(
            &format!("{title} p99 us"),
            &op_cell(|op| op.latency.p99_us.to_string()),
        );
    }
    let name_width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.1[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (name, cells) in &rows {
        let _ = write!(out, "{name:<name_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(out, "  {cell:>width$}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Percentiles;
    use crate::outcome::Timeline;
    use crate::report::OpSummary;

    fn args(words: &[&str]) -> Result<CompareCommand, CompareError> {
        parse_compare_args(words.iter().map(|s| s.to_string()))
    }

    fn run(label: &str, protocol: &str, rate: f64, p50: u64) -> RunSummary {
        RunSummary {
            version: "0.1.0".into(),
            protocol: protocol.into(),
            label: label.into(),
            target: "127.0.0.1:25".into(),
            config: Vec::new(),
            started_unix_ms: 0,
            elapsed_secs: 1.0,
            headline: "message".into(),
            headline_rate: rate,
            connects: 1,
            errors: 3,
            first_error: None,
            ops: vec![OpSummary {
                name: "message".into(),
                ok: 7,
                tempfail: 1,
                permfail: 2,
                aborted: 3,
                latency: Percentiles {
                    p50_us: p50,
                    p99_us: p50 * 3,
                    ..Percentiles::default()
                },
                cdf: Vec::new(),
            }],
            timeline: Timeline {
                interval_ms: 100,
                counts: Vec::new(),
            },
        }
    }

    fn cells<'a>(table: &'a str, row: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row} in\n{table}"));
        line[row.len()..].split_whitespace().collect()
    }

    #[test]
    fn parses_files_and_html_in_any_order() {
        assert_eq!(
            args(&["a.json", "--html", "r.html", "b.json"]).unwrap(),
            CompareCommand::Run(CompareArgs {
                files: vec!["a.json".into(), "b.json".into()],
                html_path: Some("r.html".into()),
            })
        );
        assert_eq!(
            args(&["--html=r.html", "a.json", "--", "--odd.json"]).unwrap(),
            CompareCommand::Run(CompareArgs {
                files: vec!["a.json".into(), "--odd.json".into()],
                html_path: Some("r.html".into()),
            })
        );
        assert_eq!(args(&["a.json", "--help"]).unwrap(), CompareCommand::Help);
    }

    #[test]
    fn reports_every_usage_problem() {
        let Err(CompareError::Usage(problems)) = args(&["--bogus", "--html", "a", "--html"]) else {
            panic!("expected usage errors");
        };
        assert_eq!(problems.len(), 3, "{problems:?}");
        let many: Vec<String> = (0..=RUNS_MAX).map(|i| format!("{i}.json")).collect();
        assert!(matches!(
            parse_compare_args(many),
            Err(CompareError::Usage(p)) if p.len() == 1
        ));
    }

    #[test]
    fn table_has_ratios_to_the_first_run() {
        let runs = [
            run("ringmail", "smtp", 30_000.0, 300),
            run("postfix", "smtp", 750.0, 9_000),
            run("down", "smtp", 0.0, 0),
        ];
        let text = table(&runs);
        assert_eq!(cells(&text, "run"), ["ringmail", "postfix", "down"]);
        assert_eq!(cells(&text, "vs first"), ["1.00x", "0.03x", "0.00x"]);
        assert_eq!(
            cells(&text, "rate"),
            ["30000.0", "msg/s", "750.0", "msg/s", "0.0", "msg/s"]
        );
        assert_eq!(cells(&text, "message p50 us"), ["300", "9000", "0"]);
        assert_eq!(cells(&text, "message p99 us"), ["900", "27000", "0"]);
        assert_eq!(cells(&text, "message failed"), ["6", "6", "6"]);
        assert_eq!(cells(&text, "errors"), ["3", "3", "3"]);
        // A zero baseline has no ratios.
        let text = table(&[run("zero", "smtp", 0.0, 1), run("x", "smtp", 5.0, 1)]);
        assert_eq!(cells(&text, "vs first"), ["-", "-"]);
        assert_eq!(ratio(3.0, 4.0), Some(0.75));
        assert_eq!(ratio(1.0, f64::NAN), None);
    }

    #[test]
    fn ops_missing_from_a_run_show_a_dash_and_mismatches_are_warned() {
        let mut imap = run("dovecot", "imap", 10.0, 5);
        imap.ops[0].name = "fetch".into();
        imap.label = "a\u{1b}[31m".into();
        let runs = [run("ringmail", "smtp", 20.0, 5), imap];
        let text = table(&runs);
        assert_eq!(cells(&text, "message ok"), ["7", "-"]);
        assert_eq!(cells(&text, "fetch ok"), ["-", "7"]);
        assert!(!text.contains('\u{1b}'));
        let w = warnings(&runs);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("different protocols") && w[0].contains("imap"));
        assert!(warnings(&[run("a", "smtp", 1.0, 1), run("b", "smtp", 1.0, 1)]).is_empty());
        assert_eq!(
            warnings(&[run("a", "smtp", 1.0, 1), run("a", "smtp", 1.0, 1)]).len(),
            1
        );
    }

    #[test]
    fn load_says_which_file_failed_and_why() {
        let dir = std::env::temp_dir().join(format!("loadgen-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.json");
        std::fs::write(&bad, b"{not json").unwrap();
        let missing = dir.join("missing.json");
        let errors = load_all(&[bad.clone(), missing.clone()]).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(matches!(&errors[0], CompareError::Parse { path, .. } if *path == bad));
        assert!(matches!(&errors[1], CompareError::Read { path, .. } if *path == missing));
        assert!(errors[1].to_string().contains("missing.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
