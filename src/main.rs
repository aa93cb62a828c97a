//! Entry point: parse the command line, set up logging, dispatch, render the result.
//! All real work lives in the library; this file only connects it to a terminal.

mod cli;
mod options;
mod output;

use anyhow::Result;
use clap::Parser;
use cli::{Cli, Command};
use scrobsync::fixtures::SeedOptions;
use scrobsync::modes::load;
use scrobsync::modes::seed;
use scrobsync::modes::{self, SyncOutcome};
use scrobsync::modes::{backfill, bench, demo, status, verify};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Fewer malloc arenas: the pipeline's threads otherwise each grow their own heap, which
    // measurably raised peak RSS (≈ 370 → 320 MiB on a 1M-row load) for no speed gain.
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_exit(e),
    };
    output::init_logging(cli.verbose, cli.quiet);
    scrobsync::cancel::install();
    let json = cli.command.json();
    let after_interrupt = cli.command.after_interrupt();
    match run(cli.command, cli.quiet) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code: u8 = if e.downcast_ref::<clap::Error>().is_some() {
                2
            } else if e.downcast_ref::<scrobsync::sink::target::InUse>().is_some() {
                // EX_TEMPFAIL: the target is busy; a script can try again later.
                75
            } else if e.downcast_ref::<scrobsync::cancel::Interrupted>().is_some()
                || scrobsync::cancel::requested()
            {
                // Whatever a wait ended with once a signal arrived, the run was interrupted.
                130
            } else {
                1
            };
            let message = match e.downcast_ref::<clap::Error>() {
                Some(usage) => usage_message(usage),
                // What the stopped command leaves, not a list of every command's.
                None if code == 130 => after_interrupt.to_string(),
                None => output::one_line(&format!("{e:#}")),
            };
            match e.downcast_ref::<clap::Error>() {
                Some(usage) => {
                    let _ = usage.print();
                }
                // A mapping file's syntax error keeps TOML's snippet (several lines).
                None if e
                    .downcast_ref::<scrobsync::config::ConfigSyntaxError>()
                    .is_some() =>
                {
                    ewrite(format_args!("error: {e:#}"))
                }
                None => ewrite(format_args!("error: {message}")),
            }
            if json {
                // A script reading stdout gets an answer, never nothing.
                let body = serde_json::json!({ "error": message, "exit_code": code });
                output::write_line(format_args!("{body}"));
            }
            ExitCode::from(code)
        }
    }
}

/// A line on stderr; a closed or full stderr is no reason to panic (`eprintln!` would).
fn ewrite(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The first line of a clap error, without its `error: ` prefix and usage text.
fn usage_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// A command line clap refused (or `--help`/`--version`): clap's own output, and with
/// `--json` one JSON error object on stdout too.
fn usage_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    let _ = e.print();
    if informational {
        return ExitCode::SUCCESS;
    }
    if std::env::args().any(|a| a == "--json") {
        let body = serde_json::json!({ "error": usage_message(&e), "exit_code": 2 });
        output::write_line(format_args!("{body}"));
    }
    ExitCode::from(2)
}

/// Runs a command; the number is the process exit code.
fn run(command: Command, quiet: bool) -> Result<u8> {
    scrobsync::pipeline::failpoint::check_env()?;
    if let Some(src) = command.source() {
        let limit = u64::try_from(src.read_timeout).unwrap_or(0);
        scrobsync::source::conn::session::set_read_timeout(
            (limit > 0).then(|| std::time::Duration::from_micros(limit)),
        );
        scrobsync::source::role::require_read_only(src.require_read_only_role);
    }
    let bar = || output::ProgressBar::new(quiet);
    match command {
        Command::Load(a) => {
            let summary = load::run(&options::load(&a)?, &bar())?;
            output::emit(&summary, a.json, quiet)?;
        }
        Command::Sync(a) => match modes::sync_or_load(&options::sync(&a)?, &bar())? {
            SyncOutcome::Synced(s) => output::emit(&s, a.json, quiet)?,
            SyncOutcome::Loaded(s) => output::emit(&s, a.json, quiet)?,
        },
        Command::Backfill(a) => {
            let summary = backfill::run(&options::backfill(&a)?, &bar())?;
            output::emit(&summary, a.json, quiet)?;
        }
        Command::Verify(a) => {
            let report = verify::run(&options::verify(&a)?, &bar())?;
            output::emit(&report, a.json, quiet)?;
            if !report.all_equal() {
                return Ok(verify::EXIT_DIFFERENT);
            }
        }
        Command::Status(a) => {
            output::emit(&status::run(&a.target, a.runs)?, a.json, quiet)?;
        }
        Command::Bench(a) if a.restore => {
            let n = bench::restore(&options::source(&a.source)?)?;
            if a.json {
                output::write_line(format_args!(
                    "{}",
                    serde_json::json!({"mode": "bench-restore", "plays_put_back": n})
                ));
            } else if !quiet {
                output::write_line(format_args!("put back {n} held plays"));
            }
        }
        Command::Bench(a) => {
            let json = a.json || quiet;
            let report = bench::run(&options::bench(&a)?, &mut |s| {
                if !json {
                    ewrite(format_args!("{s}"));
                }
            })?;
            output::emit(&report, a.json, quiet)?;
        }
        Command::Config(cli::ConfigCommand::Example) => {
            output::write_line(format_args!("{}", scrobsync::config::EXAMPLE.trim_end()));
        }
        Command::Config(cli::ConfigCommand::Check(a)) => {
            let url = options::source(&a.source)?;
            let (table, resolved) = scrobsync::source::mapping::check(&a.config, &url)?;
            output::print_config_check(&table, &resolved, a.json)?;
        }
        Command::Seed(a) => {
            let url = options::source(&a.source)?;
            let opts = SeedOptions {
                rows: a.rows,
                users: a.users,
                seed: a.seed,
            };
            output::emit(&seed::seed(&url, &opts)?, a.json, quiet)?;
        }
        Command::Search(a) => {
            let hits = scrobsync::sink::search::search_file(&a.target, &a.term, a.limit as usize)?;
            output::emit(
                &output::SearchReport {
                    mode: "search",
                    term: a.term.clone(),
                    hits,
                },
                a.json,
                quiet,
            )?;
        }
        Command::Completions(a) => {
            use clap::CommandFactory;
            let shell = match a.shell {
                cli::ShellArg::Bash => clap_complete::Shell::Bash,
                cli::ShellArg::Zsh => clap_complete::Shell::Zsh,
                cli::ShellArg::Fish => clap_complete::Shell::Fish,
                cli::ShellArg::Powershell => clap_complete::Shell::PowerShell,
            };
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "scrobsync", &mut out);
            output::write_line(format_args!("{}", String::from_utf8_lossy(&out).trim_end()));
        }
        Command::Demo(a) => {
            let admin = options::demo_source(&a)?;
            let mut say = |s: &str| {
                if !a.json && !quiet {
                    ewrite(format_args!("{s}"));
                }
            };
            let summary = demo::run(&admin, &a.database, a.rows, &a.target, &bar(), &mut say)?;
            output::emit(&summary, a.json, quiet)?;
            if !a.json && !quiet {
                output::print_demo_answer(&a.target)?;
            }
        }
    }
    Ok(0)
}
