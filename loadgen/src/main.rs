//! `ringmail-loadgen` binary: dispatch on the first word (`smtp`, `imap`,
//! `pop3`, `compare`/`--compare`, `sink`, `help`), run with a live progress line on
//! stderr (unless `--quiet`), print the summary, write `--json` / `--html`.
//!
//! Exit codes: 0 the run completed (even with refusals) or the comparison was
//! printed; 1 nothing could be done (target unreachable), an output file could
//! not be written or an input file could not be read; 2 usage error (every
//! problem listed at once, then the command's usage).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use ringmail_loadgen::args::{parse_args, Command, SMTP_USAGE};
use ringmail_loadgen::compare::{self, CompareCommand, COMPARE_USAGE};
use ringmail_loadgen::outcome::Outcome;
use ringmail_loadgen::output::OutputOptions;
use ringmail_loadgen::progress::{report_until_finished, Progress};
use ringmail_loadgen::report::{self, RunSummary};
use ringmail_loadgen::{html, imap, pop3, run, sink};

const USAGE: &str = "\
usage: ringmail-loadgen COMMAND [options]

commands:
  smtp       SMTP ingest load (messages; TLS, AUTH, open or closed loop)
  imap       IMAP load (weighted command mix, persistent or churning sessions)
  pop3       POP3 load (sessions of STAT/RETR[/DELE])
  sink       a durable SMTP sink to measure against (250 after write + fdatasync)
  compare    side-by-side table of runs saved with --json, optional HTML report
             (also spelled --compare)
  help [COMMAND]

`ringmail-loadgen COMMAND --help` shows the options of COMMAND.";

const EXIT_USAGE: u8 = 2;
const EXIT_FAILED: u8 = 1;

/// `println!` that ignores a closed stdout (`... --help | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `print!` likewise.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(command) = args.first() else {
        eprintln!("ringmail-loadgen: missing command\n\n{USAGE}");
        return ExitCode::from(EXIT_USAGE);
    };
    let rest = args[1..].iter().cloned();
    match command.as_str() {
        "help" | "-h" | "--help" => help(args.get(1).map(String::as_str)),
        "smtp" => smtp(&args, cpus),
        "imap" => imap(rest, cpus),
        "pop3" => pop3(rest, cpus),
        "compare" | "--compare" => compare(rest),
        "sink" => sink(rest),
        other => {
            eprintln!("ringmail-loadgen: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn help(topic: Option<&str>) -> ExitCode {
    match topic {
        None => out!("{USAGE}"),
        Some("smtp") => out!("{SMTP_USAGE}"),
        Some("imap") => out!("{}", imap::IMAP_USAGE),
        Some("pop3") => out!("{}", pop3::POP3_USAGE),
        Some("compare") => out!("{COMPARE_USAGE}"),
        Some("sink") => out!("{}", sink::SINK_USAGE),
        Some(other) => {
            eprintln!("ringmail-loadgen: no help for `{other}`\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    ExitCode::SUCCESS
}

fn usage_error(problems: &str, usage: &str) -> ExitCode {
    eprintln!("ringmail-loadgen: {problems}\n\n{usage}");
    ExitCode::from(EXIT_USAGE)
}

/// `args` includes the word `smtp`: the SMTP parser expects it.
fn smtp(args: &[String], cpus: usize) -> ExitCode {
    match parse_args(args.iter().cloned(), cpus) {
        Ok(Command::Help) => {
            out!("{SMTP_USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Smtp(cfg)) => load(&cfg.output, Some(cfg.messages), |progress| {
            run::run_smtp(&cfg, progress)
        }),
        Err(e) => usage_error(&e.to_string(), SMTP_USAGE),
    }
}

/// Serves until killed; exit 1 if it cannot start or its listener fails.
fn sink(args: impl Iterator<Item = String>) -> ExitCode {
    let args: Vec<String> = args.collect();
    if wants_help(&args) {
        out!("{}", sink::SINK_USAGE);
        return ExitCode::SUCCESS;
    }
    let cfg = match sink::parse_sink_args(args.into_iter()) {
        Ok(cfg) => cfg,
        Err(e) => return usage_error(&e.to_string(), sink::SINK_USAGE),
    };
    match sink::run_sink(&cfg, |addr| out!("listening on {addr}")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmail-loadgen sink: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Their parsers have no `--help`: asked for anywhere, it wins.
fn wants_help(args: &[String]) -> bool {
    args.iter().any(|a| a == "-h" || a == "--help")
}

fn imap(args: impl Iterator<Item = String>, cpus: usize) -> ExitCode {
    let args: Vec<String> = args.collect();
    if wants_help(&args) {
        out!("{}", imap::IMAP_USAGE);
        return ExitCode::SUCCESS;
    }
    match imap::parse_imap_args(args.into_iter(), cpus) {
        Ok(cfg) => load(&cfg.output, Some(cfg.commands), |progress| {
            imap::run_imap(&cfg, progress)
        }),
        Err(e) => usage_error(&e.to_string(), imap::IMAP_USAGE),
    }
}

/// No total on the progress line: it counts every POP3 command, `--sessions` counts sessions.
fn pop3(args: impl Iterator<Item = String>, cpus: usize) -> ExitCode {
    let args: Vec<String> = args.collect();
    if wants_help(&args) {
        out!("{}", pop3::POP3_USAGE);
        return ExitCode::SUCCESS;
    }
    match pop3::parse_pop3_args(args.into_iter(), cpus) {
        Ok(cfg) => load(&cfg.output, None, |progress| pop3::run_pop3(&cfg, progress)),
        Err(e) => usage_error(&e.to_string(), pop3::POP3_USAGE),
    }
}

/// Calls [`Progress::finish`] when dropped, so the reporter thread also
/// stops when the run panics (the scope would otherwise wait for it forever).
struct FinishOnDrop<'a>(&'a Progress);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Runs one load with the progress reporter beside it, prints the summary,
/// writes the requested files and picks the exit code.
fn load(
    output: &OutputOptions,
    total: Option<u64>,
    run: impl FnOnce(&Progress) -> Outcome,
) -> ExitCode {
    let progress = Progress::default();
    let start = Instant::now();
    let outcome = std::thread::scope(|scope| {
        if !output.quiet {
            scope.spawn(|| report_until_finished(&progress, start, total));
        }
        let _finish = FinishOnDrop(&progress);
        run(&progress)
    });
    out_raw!("{}", report::human(&outcome));
    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &output.json_path {
        if !write_file(path, &report::json(&outcome)) {
            code = ExitCode::from(EXIT_FAILED);
        }
    }
    if let Some(path) = &output.html_path {
        let summary = RunSummary::from_outcome(&outcome);
        if !write_file(path, &html::render(std::slice::from_ref(&summary))) {
            code = ExitCode::from(EXIT_FAILED);
        }
    }
    // Nothing of the headline operation (or of any, for `all`) was even started.
    let started: u64 = outcome.headline_ops().map(|op| op.started()).sum();
    if started == 0 && outcome.errors > 0 {
        let why = outcome
            .first_error
            .as_deref()
            .unwrap_or("connection failed");
        eprintln!("ringmail-loadgen: nothing sent: {why}");
        code = ExitCode::from(EXIT_FAILED);
    }
    code
}

fn write_file(path: &Path, text: &str) -> bool {
    match std::fs::write(path, text) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("ringmail-loadgen: cannot write {}: {e}", path.display());
            false
        }
    }
}

fn compare(args: impl Iterator<Item = String>) -> ExitCode {
    let cmd = match compare::parse_compare_args(args) {
        Ok(CompareCommand::Help) => {
            out!("{COMPARE_USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(CompareCommand::Run(cmd)) => cmd,
        Err(e) => return usage_error(&e.to_string(), COMPARE_USAGE),
    };
    let runs = match compare::load_all(&cmd.files) {
        Ok(runs) => runs,
        Err(errors) => {
            for e in errors {
                eprintln!("ringmail-loadgen: {e}");
            }
            return ExitCode::from(EXIT_FAILED);
        }
    };
    for warning in compare::warnings(&runs) {
        eprintln!("ringmail-loadgen: {warning}");
    }
    out_raw!("{}", compare::table(&runs));
    if let Some(path) = &cmd.html_path {
        if !write_file(path, &html::render(&runs)) {
            return ExitCode::from(EXIT_FAILED);
        }
    }
    ExitCode::SUCCESS
}
