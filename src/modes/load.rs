//! Full load: read every source row up to a high-water mark into a fresh SQLite file, check
//! it, and only then rename it over the target. A failure at any point leaves the target as it
//! was and removes the temporary file.

use super::{StageSeconds, TableRows};
use crate::cpu::Clock;
use crate::normalize::registry::NoResolver;
use crate::normalize::{window_frame, Normalizer};
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::{self, Reading};
use crate::progress::{Progress, Total};
use crate::sink::check::CheckLevel;
use crate::sink::resume::{LoadProgress, Phase};
use crate::sink::schema::IndexSet;
use crate::sink::state::{now_iso, RunRecord};
use crate::sink::temp::TempTarget;
use crate::sink::writer::Finish;
use crate::sink::Writer;
use crate::source::checks::explain_infinite;
use crate::source::identity::SourceIdentity;
use crate::source::mapping::SourceSpec;
use crate::source::plan::{plan_full, settled_max_id, Recheck, Scope};
use crate::source::read::ReaderKind;
use crate::source::SourceUrl;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// How long a load waits for writing transactions on the source that are running when it
/// starts, so that the ids they commit later can be re-checked from a tight bound.
const SETTLE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What `scrobsync load` needs; built by the CLI, never parsed here.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub source: SourceUrl,
    pub table: SourceSpec,
    pub target: PathBuf,
    /// Partition queries read in parallel per window.
    pub partitions: usize,
    /// Rows per partition query (so a window holds about `partitions × batch_rows` rows).
    pub batch_rows: usize,
    /// Which indexes to build.
    pub indexes: IndexSet,
    /// Which reader decodes the source rows.
    pub reader: ReaderKind,
    /// Replace whatever is at `target`, even if it is not a scrobsync target.
    pub force: bool,
    /// Build the full-text search index over artist, album and track names.
    pub fts: bool,
    /// How much the new file is checked before it replaces the target.
    pub check: CheckLevel,
    pub retry: RetryPolicy,
    /// Continue the interrupted load of the target (see [`crate::sink::resume`]).
    pub resume: bool,
}

/// The machine-readable result of a load (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub mode: &'static str,
    pub source: String,
    pub target: String,
    pub high_water_mark: Option<i64>,
    /// The same, as text (exact in every JSON reader).
    pub high_water_mark_text: Option<String>,
    pub partitions: usize,
    pub windows: usize,
    pub rows: TableRows,
    /// Transient source faults survived by retrying.
    pub retries: u64,
    pub seconds: StageSeconds,
    /// CPU seconds (user + system) of this process per stage; `read` is the reader's threads
    /// and the rest, `total` the whole run's.
    pub cpu_seconds: StageSeconds,
    pub rows_per_second: f64,
    /// When resumed: the rows the interrupted run(s) had written, which this run kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_rows: Option<u64>,
}

/// How often a load makes a durable point while rows stream in (see [`crate::sink::resume`]).
/// Each costs a commit with two fsyncs; `SCROBSYNC_DURABLE_SECONDS` changes it (0: after
/// every window).
const DURABLE_EVERY: f64 = 2.0;

fn durable_every() -> f64 {
    std::env::var("SCROBSYNC_DURABLE_SECONDS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(DURABLE_EVERY)
}

/// What must match for a temporary file to be continued: the index set and the search index.
fn options_text(opts: &LoadOptions) -> String {
    let indexes = match opts.indexes {
        crate::sink::schema::IndexSet::Essential => "essential",
        crate::sink::schema::IndexSet::Full => "full",
    };
    format!(
        "--indexes {indexes}{}",
        if opts.fts { " --fts" } else { "" }
    )
}

/// The object ids of the source database and of the table read (see
/// [`LoadProgress::source_oids`]).
fn source_oids(
    client: &mut crate::source::conn::ReadOnlyClient,
    table: &crate::source::mapping::SourceTable,
) -> Result<String> {
    let row = client
        .query_one(
            "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())::int8, \
                    to_regclass($1::text)::oid::int8",
            &[&table.stats_table],
        )
        .context("cannot read the source's object ids")?;
    let (db, rel): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    Ok(format!(
        "database {} table {}",
        db.map_or("-".into(), |v| v.to_string()),
        rel.map_or("-".into(), |v| v.to_string())
    ))
}

/// Why `load --resume` would not continue a temporary file (which stays for another try).
#[derive(Debug)]
struct ResumeRefused(String);

impl std::fmt::Display for ResumeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ResumeRefused {}

/// Runs a full load, or continues an interrupted one (`resume`). An interrupted run keeps its
/// temporary file for `load --resume`; any other failure removes it.
pub fn run(opts: &LoadOptions, progress: &dyn Progress) -> Result<LoadSummary> {
    let started = Instant::now();
    let cpu = Clock::process();
    let (mut temp, record) = if opts.resume {
        let (t, r) = TempTarget::resume(&opts.target, opts.force)?;
        (t, Some(r))
    } else {
        (TempTarget::new(&opts.target, opts.force)?, None)
    };
    let out = load_into(opts, progress, &temp, record, started, cpu);
    if let Err(e) = &out {
        // A resumed load's file stays whatever stopped it (a source not up yet after a crash,
        // say): it rolled back to its last durable point, and a plain load removes it.
        if opts.resume || crate::cancel::requested() || e.downcast_ref::<ResumeRefused>().is_some()
        {
            temp.keep();
        }
    }
    let out = out?;
    temp.install()?;
    progress.finish();
    Ok(out)
}

/// Refuses to continue `record` when the source, the mapping or the options differ from the
/// interrupted run's, or when rows it read have changed on the source since.
fn check_resumable(
    opts: &LoadOptions,
    record: &LoadProgress,
    identity: &SourceIdentity,
    client: &mut crate::source::conn::ReadOnlyClient,
    table: &crate::source::mapping::SourceTable,
) -> Result<()> {
    let again = "run a plain load (without --resume) to start over";
    if identity.to_state() != record.source_identity {
        let was = SourceIdentity::from_state(&record.source_identity);
        let what = match &was {
            Some(w) if w.mapping != identity.mapping => "the mapping (or the source table)",
            _ => "the source (server, database or table)",
        };
        bail!(
            "cannot resume: {what} differs from the interrupted load's ({}); give the same --source and --config, or {again}",
            record.source
        );
    }
    if options_text(opts) != record.options {
        bail!(
            "cannot resume: the interrupted load was started with {} and this one with {}; give the same --indexes and --fts, or {again}",
            record.options,
            options_text(opts)
        );
    }
    let oids = source_oids(client, table)?;
    if oids != record.source_oids {
        bail!(
            "cannot resume: the source database or table was made anew since the interrupted load read it ({} then, {oids} now); {again}",
            record.source_oids
        );
    }
    if let Some(through) = record.through_id {
        let seen =
            crate::source::changes::rows_since(client, table, through, record.snapshot_xmin)?;
        if seen.newer > 0 || seen.rows != record.facts {
            bail!(
                "cannot resume: the source changed below id {through} since the interrupted load read it ({} rows there now where {} were read, {} of them written since); {again}",
                seen.rows,
                record.facts,
                seen.newer
            );
        }
    }
    Ok(())
}

fn load_into(
    opts: &LoadOptions,
    progress: &dyn Progress,
    temp: &TempTarget,
    record: Option<LoadProgress>,
    started: Instant,
    cpu: Clock,
) -> Result<LoadSummary> {
    let started_at = record
        .as_ref()
        .map_or_else(now_iso, |r| r.started_at.clone());
    let resumed_rows = record.as_ref().map(|r| r.facts);

    let _span = tracing::info_span!("load", source = %opts.source).entered();
    // Where an interrupted load continues: after the ids it wrote, or, once it had read every
    // row, with no read at all (rows added to the source since wait for the next sync, as
    // rows added after any load's mark do).
    let finishing = record.as_ref().is_some_and(|r| r.phase == Phase::Finishing);
    let after_id = record.as_ref().and_then(|r| r.through_id);
    progress.stage("planning the read", None);
    let (mut client, table, plan, settled) =
        pipeline::step(opts.retry, "planning the read", progress, || {
            let mut client = opts.source.connect_reader()?;
            let table = opts.table.resolve(&mut client, &opts.source)?;
            table.check_stable_ids(&mut client, &opts.source)?;
            // Rows of transactions still running when the mark is taken are re-checked by
            // the first sync (see `Recheck`); waiting briefly for the ones running now gives
            // that a tight bound.
            let settled = settled_max_id(&mut client, &table, SETTLE_WAIT)?;
            let plan = match after_id {
                None => plan_full(&mut client, &table, opts.batch_rows)?,
                Some(a) => crate::source::plan::plan(
                    &mut client,
                    &table,
                    &Scope {
                        after_id: Some(a),
                        ..Scope::default()
                    },
                    opts.batch_rows,
                )?,
            };
            Ok((client, table, plan, settled))
        })?;
    let identity = SourceIdentity::of(&opts.source, &table);
    if let Some(r) = &record {
        // After the plan: its snapshot is the one the next resume compares with, so a row
        // changed between the two is caught by this check or by that one.
        check_resumable(opts, r, &identity, &mut client, &table)
            .map_err(|e| anyhow::Error::new(ResumeRefused(format!("{e:#}"))))?;
        tracing::info!(progress = %r.describe(), "resuming an interrupted load");
    }
    if settled.is_none() && !finishing {
        tracing::warn!(
            "writing transactions on the source did not end within {} s; the first sync will re-read every id below the mark",
            SETTLE_WAIT.as_secs()
        );
    }
    let recheck = Recheck::after(plan.snapshot, settled.unwrap_or(i64::MIN), None);
    let windows = if finishing {
        Vec::new()
    } else {
        plan.windows(opts.partitions)
    };
    let his: Vec<i64> = windows
        .iter()
        .map(|w| w.slices.last().map_or(i64::MIN, |s| s.hi))
        .collect();
    let hwm = match &record {
        Some(r) if finishing => r.hwm.unwrap_or(i64::MIN),
        // A resumed read with nothing left keeps the mark of the rows it has.
        Some(r) if plan.slices.is_empty() => r.through_id.unwrap_or(i64::MIN).max(plan.hwm),
        _ => plan.hwm,
    };
    let plan_secs = started.elapsed().as_secs_f64();
    let plan_cpu = cpu.seconds();
    tracing::info!(
        hwm,
        est_rows = plan.est_rows,
        slices = plan.slices.len(),
        windows = windows.len(),
        "planned"
    );
    let nwindows = windows.len();
    let (mut writer, mut norm, mut record) = match record {
        Some(mut r) => {
            let writer = Writer::resume(temp.path(), &r)?;
            progress.stage("reading back the interrupted load's keys", None);
            let registry = if finishing {
                Default::default()
            } else {
                crate::sink::resume::registry_of(writer.connection())
                    .context("reading back the interrupted load's keys")?
            };
            r.snapshot_xmin = plan.snapshot.xmin;
            (writer, Normalizer { registry }, r)
        }
        None => {
            let mut writer = Writer::create(temp.path())?;
            let r = LoadProgress {
                source_identity: identity.to_state(),
                source: opts.source.redacted().to_string(),
                source_oids: source_oids(&mut client, &table)?,
                options: options_text(opts),
                snapshot_xmin: plan.snapshot.xmin,
                phase: Phase::Streaming,
                through_id: None,
                hwm: None,
                facts: 0,
                dims: [0; 4],
                windows: 0,
                started_at: started_at.clone(),
                summaries_done: false,
                fts_done: false,
            };
            writer.durable(&r)?;
            (writer, Normalizer::default(), r)
        }
    };

    progress.stage("loading", Some(Total::about(plan.est_rows, "rows")));
    let (mut read_secs, mut normalize_secs, mut write_secs) = (0.0, 0.0, 0.0);
    let (mut normalize_cpu, mut write_cpu) = (0.0, 0.0);
    let every = durable_every();
    let mut durable_at = Instant::now();
    // Whether the open transaction ends at a window's end (no window half written).
    let mut whole = true;
    let reading = Reading::new(
        &opts.source,
        &table,
        opts.reader,
        opts.batch_rows,
        opts.retry,
    );
    // The normaliser on the stage thread, the writer on this one.
    let rows_read = pipeline::run_staged(
        reading,
        windows,
        progress,
        |w| {
            read_secs += w.read_time.as_secs_f64();
            let t = Instant::now();
            let c = Clock::thread();
            let df = window_frame(w.batches)?;
            let out = norm.window(&df, &mut NoResolver)?;
            normalize_secs += t.elapsed().as_secs_f64();
            normalize_cpu += c.seconds();
            Ok((w.index, out))
        },
        |(index, out)| {
            let t = Instant::now();
            let c = Clock::thread();
            whole = false;
            let n = writer
                .write_window(&out)
                .with_context(|| format!("writing {}", temp.path().display()))?;
            record.facts += n as u64;
            for (total, h) in record.dims.iter_mut().zip(out.dims.heights()) {
                *total += h as u64;
            }
            record.windows += 1;
            record.through_id = Some(his[index]);
            whole = true;
            if durable_at.elapsed().as_secs_f64() >= every {
                writer
                    .durable(&record)
                    .with_context(|| format!("writing {}", temp.path().display()))?;
                durable_at = Instant::now();
            }
            progress.advance(n as u64);
            write_secs += t.elapsed().as_secs_f64();
            write_cpu += c.seconds();
            Ok(n as u64)
        },
    );
    if rows_read.is_err() && crate::cancel::requested() && whole {
        // Interrupted between windows: what is written is kept for `load --resume`.
        if let Err(e) = writer.durable(&record) {
            tracing::debug!("no durable point at the interrupt: {e:#}");
        }
    }
    let rows_read = rows_read.map_err(|e| explain_infinite(e, &mut client, &table, hwm))?;
    let [users, artists, albums, tracks] = norm.registry.counts();
    tracing::info!(
        users,
        artists,
        albums,
        tracks,
        key_maps_mib = norm.registry.approx_bytes() as f64 / (1 << 20) as f64,
        "dimension key maps"
    );
    drop(norm);

    let facts_written = record.facts;
    let [users, artists, albums, tracks] = record.dims;
    let rows = TableRows {
        users,
        artists,
        albums,
        tracks,
        scrobbles: facts_written,
    };
    let run = RunRecord {
        mode: "load",
        source: opts.source.redacted(),
        started_at,
        outcome: "ok",
        hwm_before: None,
        hwm_after: (facts_written > 0).then_some(hwm),
        scrobbles_net: facts_written as i64,
        rows: [users, artists, albums, tracks],
        seconds: started.elapsed().as_secs_f64(),
    };
    let expected = resumed_rows.unwrap_or(0) + rows_read;
    let finished = writer.finish(
        expected,
        Finish {
            run: &run,
            source: &identity,
            recheck,
            indexes: opts.indexes,
            fts: opts.fts,
            check: opts.check,
            started,
            progress: Some(record),
        },
        progress,
    )?;
    // A Ctrl-C during the index build or the checks stops here: the target stays as it was.
    crate::cancel::check()?;
    progress.stage("replacing the target", None);
    let total = finished.total;

    Ok(LoadSummary {
        mode: "load",
        source: opts.source.redacted().to_string(),
        target: opts.target.display().to_string(),
        high_water_mark: run.hwm_after,
        high_water_mark_text: super::id_text(run.hwm_after),
        partitions: opts.partitions,
        windows: nwindows,
        rows,
        retries: pipeline::retry::count(),
        seconds: StageSeconds {
            plan: plan_secs,
            read: read_secs,
            normalize: normalize_secs,
            write: write_secs,
            index: finished.index,
            check: finished.check,
            total,
        },
        cpu_seconds: StageSeconds {
            plan: plan_cpu,
            normalize: normalize_cpu,
            write: write_cpu,
            index: finished.index_cpu,
            check: finished.check_cpu,
            total: cpu.seconds(),
            ..StageSeconds::default()
        }
        .cpu_read_as_rest(),
        rows_per_second: if total > 0.0 {
            facts_written as f64 / total
        } else {
            0.0
        },
        resumed_rows,
    })
}
