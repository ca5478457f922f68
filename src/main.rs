//! The `ringmail` command: serve, check-config, user add/list/del, alias add/list/del, export,
//! queue list, dns.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use ringmail::accounts::{normalize_address, Accounts, Secret};
use ringmail::aliases::Aliases;
use ringmail::config::Config;
use ringmail::store::StoreError;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
usage:
  ringmail serve [--config FILE]                 run the server (built-in defaults without --config)
  ringmail check-config --config FILE            validate a config file
  ringmail user add ADDRESS --password-stdin [--config FILE]
  ringmail user list [--config FILE]
  ringmail user del ADDRESS [--config FILE]
  ringmail alias add ALIAS TARGET... [--config FILE]   ALIAS is local@domain or @domain (catch-all)
  ringmail alias del ALIAS [TARGET] [--config FILE]    one target, or the whole alias
  ringmail alias list [--config FILE]
  ringmail export ADDRESS [--mailbox INBOX] [--config FILE]   mailbox as mboxrd on stdout
  ringmail queue list [--json] [--config FILE]   outbound queue: id, sender, recipients, attempts, next try, last error
  ringmail queue flush [--config FILE]           retry every deferred message now (running server)
  ringmail queue delete ID [--config FILE]       remove a message from the queue, telling nobody
  ringmail queue bounce ID [--config FILE]       fail a message now and bounce it to its sender
  ringmail dns DOMAIN [--config FILE]            MX route and addresses as the sender sees them
                                                 (exit 0 ok, 1 temporary, 2 permanent failure)
  ringmail tune --check [--config FILE]          host checks for the [cores] settings, with fixes
                                                 (exit 1 when a check fails)
  ringmail --version";

/// Parsed command line: positional words and the few options ringmail knows.
struct Args {
    words: Vec<String>,
    config: Option<PathBuf>,
    mailbox: Option<String>,
    password_stdin: bool,
    json: bool,
    check: bool,
}

fn parse_args(argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        words: Vec::new(),
        config: None,
        mailbox: None,
        password_stdin: false,
        json: false,
        check: false,
    };
    let mut it = argv.peekable();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" | "-c" => {
                args.config = Some(it.next().ok_or("--config needs a file")?.into());
            }
            "--mailbox" => args.mailbox = Some(it.next().ok_or("--mailbox needs a name")?),
            "--password-stdin" => args.password_stdin = true,
            "--json" => args.json = true,
            "--check" => args.check = true,
            s if s.starts_with("--config=") => args.config = Some(s["--config=".len()..].into()),
            s if s.starts_with("--mailbox=") => args.mailbox = Some(s["--mailbox=".len()..].into()),
            s if s.starts_with('-')
                && s.len() > 1
                && !matches!(s, "-h" | "--help" | "--version") =>
            {
                return Err(format!("unknown option {s}"));
            }
            _ => args.words.push(a),
        }
    }
    Ok(args)
}

fn load_config(path: &Option<PathBuf>) -> Result<Config, String> {
    let config = match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string())?,
        None => Config::defaults(),
    };
    for k in &config.unknown_keys {
        eprintln!("ringmail: warning: unknown config key {k} (ignored)");
    }
    for w in &config.warnings {
        eprintln!("ringmail: warning: {w}");
    }
    Ok(config)
}

fn run() -> Result<(), String> {
    let args = parse_args(std::env::args().skip(1))?;
    let words: Vec<&str> = args.words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["serve"] => {
            let config = load_config(&args.config)?;
            println!(
                "ringmail {}: hostname {}, data dir {}, local domains {}",
                env!("CARGO_PKG_VERSION"),
                config.server.hostname,
                config.server.data_dir.display(),
                config.domains.local.join(", ")
            );
            ringmail::runtime::serve(config).map_err(|e| e.to_string())
        }
        ["check-config"] => {
            let Some(path) = &args.config else {
                return Err("check-config needs --config FILE".into());
            };
            let config = load_config(&Some(path.clone()))?;
            println!(
                "{}: ok ({} listener(s), {} local domain(s))",
                path.display(),
                config.smtp.listen.len(),
                config.domains.local.len()
            );
            Ok(())
        }
        ["user", "add", address] => {
            if !args.password_stdin {
                return Err("user add needs --password-stdin (the password is read from standard input, never from the command line)".into());
            }
            let config = load_config(&args.config)?;
            let mut line = String::new();
            io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            let password = Secret::new(line.trim_end_matches(['\n', '\r']).to_string());
            let addr = Accounts::add(&config.server.data_dir, address, &password)
                .map_err(|e| e.to_string())?;
            let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
            if !config.domains.local.iter().any(|d| d == domain) {
                eprintln!(
                    "ringmail: warning: {domain} is not in [domains] local, so mail for {addr} will be refused"
                );
            }
            println!("added {addr}");
            Ok(())
        }
        ["user", "list"] => {
            let config = load_config(&args.config)?;
            let table = Accounts::load(&config.server.data_dir).map_err(|e| e.to_string())?;
            let stdout = io::stdout();
            let mut out = stdout.lock();
            for a in table.addresses() {
                writeln!(out, "{a}").map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        ["user", "del", address] => {
            let config = load_config(&args.config)?;
            let addr =
                Accounts::delete(&config.server.data_dir, address).map_err(|e| e.to_string())?;
            println!("deleted {addr} (its stored mail is kept)");
            Ok(())
        }
        ["alias", "add", alias, targets @ ..] if !targets.is_empty() => {
            let config = load_config(&args.config)?;
            let added = Aliases::add(
                &config.server.data_dir,
                alias,
                targets,
                &config.domains.local,
            )
            .map_err(|e| e.to_string())?;
            for w in &added.warnings {
                eprintln!("ringmail: warning: {w} (mail for it will bounce until it exists)");
            }
            println!("added {} -> {}", added.alias, added.targets.join(", "));
            Ok(())
        }
        ["alias", "del", alias, target @ ..] if target.len() <= 1 => {
            let config = load_config(&args.config)?;
            let data_dir = &config.server.data_dir;
            let (key, removed) = Aliases::delete(data_dir, alias, target.first().copied())
                .map_err(|e| e.to_string())?;
            println!("deleted {key} -> {}", removed.join(", "));
            if let Ok(table) = Aliases::load(data_dir) {
                if !table.contains(&key) {
                    for r in table.referrers(&key) {
                        eprintln!("ringmail: warning: alias {r} still names {key} as a target");
                    }
                }
            }
            Ok(())
        }
        ["alias", "list"] => {
            let config = load_config(&args.config)?;
            let table = Aliases::load(&config.server.data_dir).map_err(|e| e.to_string())?;
            let stdout = io::stdout();
            let mut out = stdout.lock();
            for (alias, target) in table.pairs() {
                writeln!(out, "{alias}\t{target}").map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        ["export", address] => {
            let config = load_config(&args.config)?;
            let user = normalize_address(address).map_err(|e| e.to_string())?;
            let mailbox = args.mailbox.as_deref().unwrap_or("INBOX");
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            let n = match ringmail::store::export::export_mboxrd(
                &config.server.data_dir,
                &user,
                mailbox,
                &mut out,
            ) {
                Ok(n) => n,
                // A known user's INBOX exists before its first message arrives (as in IMAP).
                Err(StoreError::NoSuchMailbox { .. })
                    if mailbox.eq_ignore_ascii_case("INBOX")
                        && Accounts::load(&config.server.data_dir)
                            .map_err(|e| e.to_string())?
                            .contains(&user) =>
                {
                    0
                }
                Err(e) => return Err(e.to_string()),
            };
            out.flush().map_err(|e| e.to_string())?;
            eprintln!("exported {n} message(s) from {user} {mailbox}");
            Ok(())
        }
        ["queue", "list"] => {
            // Offline and read-only like `export`: safe while a server runs.
            let config = load_config(&args.config)?;
            let entries = ringmail::store::queue::list_offline(&config.server.data_dir)
                .map_err(|e| e.to_string())?;
            let stdout = io::stdout();
            let mut out = io::BufWriter::new(stdout.lock());
            if args.json {
                writeln!(out, "{}", ringmail::outbound::admin::list_json(&entries))
                    .map_err(|e| e.to_string())?;
            } else {
                for e in &entries {
                    writeln!(out, "{}", ringmail::store::queue::list_line(e))
                        .map_err(|e| e.to_string())?;
                }
            }
            out.flush().map_err(|e| e.to_string())?;
            eprintln!("{} queued message(s)", entries.len());
            Ok(())
        }
        ["queue", op @ ("flush" | "delete" | "bounce"), rest @ ..] => {
            // Done by the running server (the owner core writes the queue records).
            let config = load_config(&args.config)?;
            let line = std::iter::once(*op)
                .chain(rest.iter().copied())
                .collect::<Vec<_>>()
                .join(" ");
            let answer = ringmail::runtime::control::request(&config.server.data_dir, &line)
                .map_err(|e| e.to_string())?;
            println!("{answer}");
            Ok(())
        }
        ["dns", domain] => {
            let config = load_config(&args.config)?;
            let report = ringmail::dns::cli::run(&config.dns, domain).map_err(|e| e.to_string())?;
            print!("{}", report.text);
            io::stdout().flush().map_err(|e| e.to_string())?;
            if report.exit_code != 0 {
                std::process::exit(i32::from(report.exit_code));
            }
            Ok(())
        }
        ["tune"] if args.check => {
            let config = load_config(&args.config)?;
            let report = ringmail::tune::run(&config);
            print!("{report}");
            io::stdout().flush().map_err(|e| e.to_string())?;
            if report.failed() {
                std::process::exit(1);
            }
            Ok(())
        }
        ["--version"] | ["version"] => {
            println!("ringmail {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        [] | ["-h"] | ["--help"] | ["help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmail: {e}");
            ExitCode::FAILURE
        }
    }
}
