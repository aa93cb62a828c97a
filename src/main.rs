//! Entry point: parse the command line, set up logging, dispatch, render the result.
//! All real work lives in the library; this file only connects it to a terminal.

mod cli;
mod output;

use anyhow::{anyhow, bail, Result};
use clap::Parser;
use cli::{Cli, Command};
use scrobsync::modes::load::{self, LoadOptions};
use scrobsync::modes::sync::{self, SyncOptions};
use scrobsync::modes::{backfill, bench, status, verify, windows};
use scrobsync::pipeline::retry::RetryPolicy;
use scrobsync::sink::schema::IndexSet;
use scrobsync::source::mapping::SourceSpec;
use scrobsync::source::seed::{self, SeedOptions};
use scrobsync::source::SourceUrl;
use std::process::ExitCode;

fn main() -> ExitCode {
    // Fewer malloc arenas: the pipeline's threads otherwise each grow their own heap, which
    // measurably raised peak RSS (≈ 370 → 320 MiB on a 1M-row load) for no speed gain.
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    let cli = Cli::parse();
    output::init_logging(cli.verbose);
    scrobsync::cancel::install();
    match run(cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", output::one_line(&format!("{e:#}")));
            if e.downcast_ref::<scrobsync::cancel::Interrupted>().is_some() {
                ExitCode::from(130)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn index_set(s: &str) -> IndexSet {
    if s == "full" {
        IndexSet::Full
    } else {
        IndexSet::Essential
    }
}

/// The source spec from `--config` (the default table without it).
fn spec(m: &cli::MappingArg) -> Result<SourceSpec> {
    Ok(match &m.config {
        Some(path) => SourceSpec::Config(scrobsync::config::load(path)?),
        None => SourceSpec::Default,
    })
}

/// `--source`, then SCROBSYNC_SOURCE (via clap), then DATABASE_URL, then the `PG*` variables
/// alone (as psql takes them); a source given fills its gaps from them too.
fn resolve_source(arg: Option<String>) -> Result<SourceUrl> {
    let raw = match arg.or_else(|| std::env::var("DATABASE_URL").ok()) {
        Some(s) if !s.trim().is_empty() => s,
        _ if ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty())) =>
        {
            String::new()
        }
        _ => bail!("no source given; pass --source postgresql://USER@HOST/DB (or key=value pairs), or set SCROBSYNC_SOURCE, DATABASE_URL or PGHOST/PGDATABASE/PGUSER"),
    };
    SourceUrl::parse(&raw)
}

fn retry(a: &cli::RetryArg) -> RetryPolicy {
    RetryPolicy { retries: a.retries }
}

/// `--partitions`, by default one per two CPUs: each partition keeps a PostgreSQL backend and a
/// decoding thread busy, and the normaliser and writer need CPU too. On 2 cores one partition
/// loaded 5M rows in 17.4 s / 276 MiB, two in 18.9 s / 347 MiB (README, Benchmarks).
fn partitions(arg: Option<u16>) -> usize {
    arg.map(usize::from).unwrap_or_else(|| (cpus() / 2).max(1))
}

fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// Runs a command; the number is the process exit code.
fn run(command: Command) -> Result<u8> {
    match command {
        Command::Backfill(a) => {
            let opts = backfill::BackfillOptions {
                source: resolve_source(a.source.source)?,
                table: spec(&a.mapping)?,
                target: a.target,
                from: windows::parse_date("--from", &a.from)?,
                to: windows::parse_date("--to", &a.to)?,
                by: windows::By::parse(&a.by)?,
                resume: a.resume,
                prune: a.prune,
                partitions: partitions(a.partitions),
                reader: a.reader.parse()?,
                allow_other_source: a.other_source.allow_other_source,
                retry: retry(&a.retry),
            };
            let bar = output::ProgressBar::new();
            let summary = backfill::run(&opts, &bar)?;
            output::print_backfill(&summary, a.json)?;
            Ok(0)
        }
        Command::Verify(a) => {
            let opts = verify::VerifyOptions {
                source: resolve_source(a.source.source)?,
                table: spec(&a.mapping)?,
                target: a.target,
                from: a
                    .from
                    .as_deref()
                    .map(|s| windows::parse_date("--from", s))
                    .transpose()?,
                to: a
                    .to
                    .as_deref()
                    .map(|s| windows::parse_date("--to", s))
                    .transpose()?,
                by: windows::By::parse(&a.by)?,
                repair: a.repair,
                partitions: a.partitions.map(usize::from).unwrap_or_else(cpus),
                allow_other_source: a.other_source.allow_other_source,
                retry: retry(&a.retry),
            };
            let bar = output::ProgressBar::new();
            let report = verify::run(&opts, &bar)?;
            output::print_verify(&report, a.json)?;
            Ok(if report.all_equal() {
                0
            } else {
                verify::EXIT_DIFFERENT
            })
        }
        Command::Load(a) => {
            let opts = LoadOptions {
                source: resolve_source(a.source.source)?,
                table: spec(&a.mapping)?,
                target: a.target,
                partitions: partitions(a.pipeline.partitions),
                batch_rows: a.pipeline.batch_rows as usize,
                indexes: index_set(&a.pipeline.indexes),
                reader: a.pipeline.reader.parse()?,
                force: a.force,
                retry: retry(&a.retry),
            };
            let bar = output::ProgressBar::new();
            let summary = load::run(&opts, &bar)?;
            output::print_load(&summary, a.json)?;
            Ok(0)
        }
        Command::Sync(a) => {
            let cursor = sync::check_cursor_args(&a.cursor, a.lookback.as_deref())?;
            let opts = SyncOptions {
                source: resolve_source(a.source.source)?,
                table: spec(&a.mapping)?,
                target: a.target,
                partitions: partitions(a.pipeline.partitions),
                batch_rows: a.pipeline.batch_rows as usize,
                indexes: index_set(&a.pipeline.indexes),
                reader: a.pipeline.reader.parse()?,
                cursor,
                allow_other_source: a.other_source.allow_other_source,
                retry: retry(&a.retry),
            };
            let bar = output::ProgressBar::new();
            if opts.target.exists() {
                output::print_sync(&sync::run(&opts, &bar)?, a.json)?;
            } else {
                // No target yet: a full load, which the next sync continues from.
                let summary = load::run(
                    &LoadOptions {
                        source: opts.source.clone(),
                        table: opts.table.clone(),
                        target: opts.target.clone(),
                        partitions: opts.partitions,
                        batch_rows: opts.batch_rows,
                        indexes: opts.indexes,
                        reader: opts.reader,
                        force: false,
                        retry: opts.retry,
                    },
                    &bar,
                )?;
                if let sync::Cursor::PlayedAt { .. } = opts.cursor {
                    sync::record_played_at_mark(&opts.target)?;
                }
                output::print_load(&summary, a.json)?;
            }
            Ok(0)
        }
        Command::Status(a) => {
            let s = status::run(&a.target, a.runs)?;
            output::print_status(&s, a.json)?;
            Ok(0)
        }
        Command::Bench(a) => {
            let opts = bench::BenchOptions {
                source: resolve_source(a.source.source)?,
                table: spec(&a.mapping)?,
                config: a.mapping.config.clone(),
                exe: std::env::current_exe()?,
                rows: a.rows,
                repeat: a.repeat as usize,
                partitions: partitions(a.pipeline.partitions),
                batch_rows: a.pipeline.batch_rows as usize,
                indexes: a.pipeline.indexes.clone(),
                reader: a.pipeline.reader.clone(),
                sync_rows: a.sync_rows,
                workdir: a.workdir.unwrap_or_else(std::env::temp_dir),
            };
            let json = a.json;
            let report = bench::run(&opts, &mut |s| {
                if !json {
                    eprintln!("{s}");
                }
            })?;
            output::print_bench(&report, json)?;
            Ok(0)
        }
        Command::Config(cli::ConfigCommand::Example) => {
            print!("{}", scrobsync::config::EXAMPLE);
            Ok(0)
        }
        Command::Config(cli::ConfigCommand::Check(a)) => {
            let cfg = scrobsync::config::load(&a.config)?;
            let url = resolve_source(a.source.source)?;
            let mut client = url.connect_reader()?;
            let (table, resolved) = SourceSpec::Config(cfg).resolve_verbose(&mut client, &url)?;
            output::print_config_check(&table.name, &resolved, a.json)?;
            Ok(0)
        }
        Command::Seed(a) => {
            let url = resolve_source(a.source.source)?;
            let opts = SeedOptions {
                rows: a.rows,
                users: a.users,
                seed: a.seed,
            };
            let summary = seed::seed(&url, &opts)?;
            output::print_seed(&summary, a.json)?;
            Ok(0)
        }
        Command::Demo(a) => {
            let admin = SourceUrl::parse(&a.source)?;
            if a.database.is_empty() || a.database.contains('\0') {
                return Err(anyhow!("--database must be a non-empty name"));
            }
            let url = scrobsync::modes::demo::prepare(&admin, &a.database, a.rows, &mut |s| {
                if !a.json {
                    eprintln!("{s}");
                }
            })?;
            let opts = LoadOptions {
                source: url,
                table: SourceSpec::Default,
                target: a.target,
                partitions: partitions(None),
                batch_rows: 50_000,
                indexes: IndexSet::Essential,
                reader: Default::default(),
                force: false,
                retry: Default::default(),
            };
            let bar = output::ProgressBar::new();
            let summary = load::run(&opts, &bar)?;
            output::print_load(&summary, a.json)?;
            Ok(0)
        }
    }
}
