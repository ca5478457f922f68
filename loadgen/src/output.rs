//! Output options every load command takes (`smtp`, `imap`, `pop3`):
//! `--json FILE`, `--html FILE`, `--label NAME`, `--quiet` (no progress line).
//! Each command's argument parser offers its unknown flags to
//! [`OutputOptions::take`] before calling them unknown.

use std::path::PathBuf;

/// Longest `--label`.
pub const LABEL_BYTES_MAX: usize = 64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputOptions {
    pub json_path: Option<PathBuf>,
    pub html_path: Option<PathBuf>,
    /// Name of this run in reports and comparisons (default: the target).
    pub label: Option<String>,
    /// No live progress line.
    pub quiet: bool,
}

impl OutputOptions {
    /// Consumes `name` (with its value: `inline` from `--name=value`, else the
    /// next argument) when it is an output option; returns false otherwise.
    /// Problems are appended to `problems`.
    pub fn take(
        &mut self,
        name: &str,
        inline: Option<String>,
        args: &mut dyn Iterator<Item = String>,
        problems: &mut Vec<String>,
    ) -> bool {
        match name {
            "--quiet" => {
                if inline.is_some() {
                    problems.push(format!("{name} takes no value"));
                }
                self.quiet = true;
                true
            }
            "--json" | "--html" | "--label" => {
                let Some(value) = inline.or_else(|| args.next()) else {
                    problems.push(format!("{name} needs a value"));
                    return true;
                };
                if value.is_empty() {
                    problems.push(format!("{name} needs a non-empty value"));
                    return true;
                }
                let taken = match name {
                    "--json" => self.json_path.replace(PathBuf::from(value)).is_some(),
                    "--html" => self.html_path.replace(PathBuf::from(value)).is_some(),
                    _ => {
                        if value.len() > LABEL_BYTES_MAX || value.chars().any(char::is_control) {
                            problems.push(format!(
                                "--label: at most {LABEL_BYTES_MAX} bytes, no control characters"
                            ));
                        }
                        self.label.replace(value).is_some()
                    }
                };
                if taken {
                    problems.push(format!("{name} given more than once"));
                }
                true
            }
            _ => false,
        }
    }
}

/// The usage lines for these options, for each command's help text.
pub const OUTPUT_USAGE: &str = "  --json FILE            also write the results as JSON
  --html FILE            also write a self-contained HTML report (plots, no network needed)
  --label NAME           name of this run in reports and --compare (default: the target)
  --quiet                no live progress line on stderr";

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> (OutputOptions, Vec<String>, Vec<String>) {
        let mut out = OutputOptions::default();
        let mut problems = Vec::new();
        let mut rest = Vec::new();
        let mut it = args.iter().map(|s| s.to_string());
        while let Some(arg) = it.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            if !out.take(&name, inline, &mut it, &mut problems) {
                rest.push(arg);
            }
        }
        (out, problems, rest)
    }

    #[test]
    fn takes_its_options_and_leaves_the_rest() {
        let (out, problems, rest) = parse(&[
            "--json",
            "a.json",
            "--target",
            "x",
            "--html=r.html",
            "--label",
            "ringmail",
            "--quiet",
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rest, ["--target", "x"]);
        assert_eq!(out.json_path, Some(PathBuf::from("a.json")));
        assert_eq!(out.html_path, Some(PathBuf::from("r.html")));
        assert_eq!(out.label.as_deref(), Some("ringmail"));
        assert!(out.quiet);
    }

    #[test]
    fn reports_every_problem() {
        let (_, problems, _) = parse(&[
            "--json",
            "a",
            "--json",
            "b",
            "--quiet=1",
            "--label",
            "a\tb",
            "--html",
        ]);
        assert_eq!(problems.len(), 4, "{problems:?}");
    }
}
