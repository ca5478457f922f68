//! `ringmail-loadgen` binary: parse arguments, run, print, set the exit code
//! (0 run completed, 1 target unreachable or output not written, 2 usage error).

use std::process::ExitCode;

use ringmail_loadgen::args::{parse_args, Command, USAGE};
use ringmail_loadgen::{report, run};

fn main() -> ExitCode {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let cfg = match parse_args(std::env::args().skip(1), cpus) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Smtp(cfg)) => cfg,
        Err(e) => {
            eprintln!("ringmail-loadgen: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = run::run(&cfg);
    print!("{}", report::human(&cfg, &result));
    let mut code = ExitCode::SUCCESS;
    if let Some(path) = &cfg.json_path {
        if let Err(e) = std::fs::write(path, report::json(&cfg, &result)) {
            eprintln!("ringmail-loadgen: cannot write {}: {e}", path.display());
            code = ExitCode::from(1);
        }
    }
    if result.stats.sent == 0 && result.stats.errors > 0 {
        let why = result
            .stats
            .first_error
            .as_deref()
            .unwrap_or("connection failed");
        eprintln!("ringmail-loadgen: nothing sent: {why}");
        code = ExitCode::from(1);
    }
    code
}
