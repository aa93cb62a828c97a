//! Parsed arguments → the options of each mode. Every conversion that can fail happens here
//! (the source, the mapping file, the cursor), so the core only ever sees typed options.

use crate::cli;
use anyhow::Result;
use scrobsync::modes::backfill::BackfillOptions;
use scrobsync::modes::bench::BenchOptions;
use scrobsync::modes::load::LoadOptions;
use scrobsync::modes::sync::{Cursor, SyncOptions};
use scrobsync::modes::verify::VerifyOptions;
use scrobsync::modes::windows::By;
use scrobsync::pipeline::retry::RetryPolicy;
use scrobsync::sink::check::CheckLevel;
use scrobsync::sink::schema::IndexSet;
use scrobsync::source::mapping::SourceSpec;
use scrobsync::source::read::ReaderKind;
use scrobsync::source::SourceUrl;

impl From<cli::IndexesArg> for IndexSet {
    fn from(a: cli::IndexesArg) -> Self {
        match a {
            cli::IndexesArg::Essential => IndexSet::Essential,
            cli::IndexesArg::Full => IndexSet::Full,
        }
    }
}

impl From<cli::CheckArg> for CheckLevel {
    fn from(a: cli::CheckArg) -> Self {
        match a {
            cli::CheckArg::Fast => CheckLevel::Fast,
            cli::CheckArg::Full => CheckLevel::Full,
        }
    }
}

impl From<cli::ReaderArg> for ReaderKind {
    fn from(a: cli::ReaderArg) -> Self {
        match a {
            cli::ReaderArg::Copy => ReaderKind::Copy,
            cli::ReaderArg::Connectorx => ReaderKind::Connectorx,
        }
    }
}

impl From<cli::ByArg> for By {
    fn from(a: cli::ByArg) -> Self {
        match a {
            cli::ByArg::Day => By::Day,
            cli::ByArg::Week => By::Week,
            cli::ByArg::Month => By::Month,
        }
    }
}

/// The name clap knows a value by (to pass it on to a child process).
pub fn value_name(v: impl clap::ValueEnum) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The source spec from `--config` (the default table without it).
pub fn spec(m: &cli::MappingArg) -> Result<SourceSpec> {
    Ok(match &m.config {
        Some(path) => SourceSpec::Config(scrobsync::config::load(path)?),
        None => SourceSpec::Default,
    })
}

/// `--source`, then SCROBSYNC_SOURCE (via clap), then DATABASE_URL, then the `PG*` variables
/// alone (as psql takes them); a source given fills its gaps from them too. The password
/// command (`--password-command`) runs here, once, if nothing else gives a password.
pub fn source(a: &cli::SourceArg) -> Result<SourceUrl> {
    let raw = match a.source.clone().or_else(|| std::env::var("DATABASE_URL").ok()) {
        Some(s) if !s.trim().is_empty() => s,
        _ if ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty())) =>
        {
            String::new()
        }
        _ => return Err(usage(
            clap::error::ErrorKind::MissingRequiredArgument,
            "no source given; pass --source postgresql://USER@HOST/DB (or key=value pairs), or set SCROBSYNC_SOURCE, DATABASE_URL, PGSERVICE or PGHOST/PGDATABASE/PGUSER",
        )),
    };
    SourceUrl::parse_with(&raw, a.password.password_command.as_deref())
}

/// `demo`'s `--source` (the server the demo database is created on), with its password command.
pub fn demo_source(a: &cli::DemoArgs) -> Result<SourceUrl> {
    SourceUrl::parse_with(&a.source, a.password.password_command.as_deref())
}

/// `--partitions`, by default one per two CPUs: each partition keeps a PostgreSQL backend and a
/// decoding thread busy, and the normaliser and writer need CPU too. On 2 cores one partition
/// loaded 5M rows in 17.4 s / 276 MiB, two in 18.9 s / 347 MiB (docs/BENCHMARKS.md).
pub fn partitions(arg: Option<u16>) -> usize {
    arg.map(usize::from)
        .unwrap_or_else(scrobsync::source::plan::default_partitions)
}

/// The CPUs this process may use (verify's default workers: PostgreSQL only streams there).
fn cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

fn retry(a: &cli::RetryArg) -> RetryPolicy {
    RetryPolicy { retries: a.retries }
}

pub fn load(a: &cli::LoadArgs) -> Result<LoadOptions> {
    Ok(LoadOptions {
        source: source(&a.source)?,
        table: spec(&a.mapping)?,
        target: a.target.clone(),
        partitions: partitions(a.pipeline.partitions),
        batch_rows: a.pipeline.batch_rows as usize,
        indexes: a.pipeline.indexes.into(),
        reader: a.pipeline.reader.into(),
        force: a.force,
        fts: a.fts,
        check: a.pipeline.check.into(),
        retry: retry(&a.retry),
        resume: a.resume,
    })
}

/// `--cursor` with `--lookback` (clap already requires the lookback with played_at).
fn cursor(a: &cli::SyncArgs) -> Result<Cursor> {
    match (a.cursor, a.lookback) {
        (cli::CursorArg::Id, None) => Ok(Cursor::Id),
        (cli::CursorArg::Id, Some(_)) => Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--lookback only applies to --cursor played_at",
        )),
        (cli::CursorArg::PlayedAt, Some(lookback_us)) => Ok(Cursor::PlayedAt { lookback_us }),
        (cli::CursorArg::PlayedAt, None) => Err(usage(
            clap::error::ErrorKind::MissingRequiredArgument,
            "--cursor played_at needs --lookback, e.g. --lookback 1d",
        )),
    }
}

/// A usage error found after parsing: printed by clap's rules (exit code 2).
pub fn usage(kind: clap::error::ErrorKind, msg: &str) -> anyhow::Error {
    use clap::CommandFactory;
    anyhow::Error::new(cli::Cli::command().error(kind, msg))
}

pub fn sync(a: &cli::SyncArgs) -> Result<SyncOptions> {
    Ok(SyncOptions {
        cursor: cursor(a)?,
        source: source(&a.source)?,
        table: spec(&a.mapping)?,
        target: a.target.clone(),
        partitions: partitions(a.pipeline.partitions),
        batch_rows: a.pipeline.batch_rows as usize,
        indexes: a.pipeline.indexes.into(),
        reader: a.pipeline.reader.into(),
        check: a.pipeline.check.into(),
        allow_other_source: a.other_source.allow_other_source,
        retry: retry(&a.retry),
        recheck_for_s: a.recheck_for / 1_000_000,
    })
}

/// `--from` before `--to`, as a usage error.
fn range(from: Option<i64>, to: Option<i64>) -> Result<()> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => Err(usage(
            clap::error::ErrorKind::ValueValidation,
            "--from must be before --to (the range is [from, to), half-open)",
        )),
        _ => Ok(()),
    }
}

/// The full load a `sync` does when its target does not exist yet.
pub fn backfill(a: &cli::BackfillArgs) -> Result<BackfillOptions> {
    range(Some(a.from), Some(a.to))?;
    Ok(BackfillOptions {
        source: source(&a.source)?,
        table: spec(&a.mapping)?,
        target: a.target.clone(),
        from: a.from,
        to: a.to,
        by: a.by.into(),
        resume: a.resume,
        prune: a.prune,
        partitions: partitions(a.partitions),
        reader: a.reader.into(),
        allow_other_source: a.other_source.allow_other_source,
        retry: retry(&a.retry),
    })
}

pub fn verify(a: &cli::VerifyArgs) -> Result<VerifyOptions> {
    range(a.from, a.to)?;
    if a.attributes && (a.from.is_some() || a.to.is_some()) {
        return Err(usage(
            clap::error::ErrorKind::ArgumentConflict,
            "--attributes compares whole artists, albums and tracks, over the whole range: \
             leave out --from and --to",
        ));
    }
    Ok(VerifyOptions {
        source: source(&a.source)?,
        table: spec(&a.mapping)?,
        target: a.target.clone(),
        from: a.from,
        to: a.to,
        by: a.by.into(),
        repair: a.repair,
        attributes: a.attributes,
        partitions: a.partitions.map(usize::from).unwrap_or_else(cpus),
        allow_other_source: a.other_source.allow_other_source,
        retry: retry(&a.retry),
    })
}

pub fn bench(a: &cli::BenchArgs) -> Result<BenchOptions> {
    Ok(BenchOptions {
        source: source(&a.source)?,
        table: spec(&a.mapping)?,
        config: a.mapping.config.clone(),
        exe: match &a.exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        },
        rows: a.rows,
        repeat: a.repeat as usize,
        partitions: partitions(a.pipeline.partitions),
        batch_rows: a.pipeline.batch_rows as usize,
        indexes: value_name(a.pipeline.indexes),
        reader: value_name(a.pipeline.reader),
        check: value_name(a.pipeline.check),
        sync_rows: a.sync_rows,
        verify: !a.skip_verify,
        workdir: a.workdir.clone().unwrap_or_else(std::env::temp_dir),
    })
}
