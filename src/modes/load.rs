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
use crate::sink::schema::IndexSet;
use crate::sink::state::{now_iso, RunRecord};
use crate::sink::temp::TempTarget;
use crate::sink::writer::Finish;
use crate::sink::Writer;
use crate::source::checks::explain_infinite;
use crate::source::identity::SourceIdentity;
use crate::source::mapping::SourceSpec;
use crate::source::plan::{plan_full, settled_max_id, Recheck};
use crate::source::read::ReaderKind;
use crate::source::SourceUrl;
use anyhow::{Context, Result};
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
}

/// Runs a full load.
pub fn run(opts: &LoadOptions, progress: &dyn Progress) -> Result<LoadSummary> {
    let started = Instant::now();
    let cpu = Clock::process();
    let started_at = now_iso();
    let temp = TempTarget::new(&opts.target, opts.force)?;

    let _span = tracing::info_span!("load", source = %opts.source).entered();
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
            let plan = plan_full(&mut client, &table, opts.batch_rows)?;
            Ok((client, table, plan, settled))
        })?;
    if settled.is_none() {
        tracing::warn!(
            "writing transactions on the source did not end within {} s; the first sync will re-read every id below the mark",
            SETTLE_WAIT.as_secs()
        );
    }
    let recheck = Recheck::after(plan.snapshot, settled.unwrap_or(i64::MIN), None);
    let windows = plan.windows(opts.partitions);
    let plan_secs = started.elapsed().as_secs_f64();
    let plan_cpu = cpu.seconds();
    tracing::info!(
        hwm = plan.hwm,
        est_rows = plan.est_rows,
        slices = plan.slices.len(),
        windows = windows.len(),
        "planned"
    );
    let nwindows = windows.len();
    let mut writer = Writer::create(temp.path())?;

    progress.stage("loading", Some(Total::about(plan.est_rows, "rows")));
    let mut norm = Normalizer::default();
    let (mut read_secs, mut normalize_secs, mut write_secs) = (0.0, 0.0, 0.0);
    let (mut normalize_cpu, mut write_cpu) = (0.0, 0.0);
    let mut facts_written = 0u64;
    let mut dims_written = [0u64; 4];
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
            Ok(out)
        },
        |out| {
            let t = Instant::now();
            let c = Clock::thread();
            let n = writer
                .write_window(&out)
                .with_context(|| format!("writing {}", temp.path().display()))?;
            facts_written += n as u64;
            for (total, h) in dims_written.iter_mut().zip(out.dims.heights()) {
                *total += h as u64;
            }
            progress.advance(n as u64);
            write_secs += t.elapsed().as_secs_f64();
            write_cpu += c.seconds();
            Ok(n as u64)
        },
    );
    let rows_read = rows_read.map_err(|e| explain_infinite(e, &mut client, &table, plan.hwm))?;
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

    let [users, artists, albums, tracks] = dims_written;
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
        hwm_after: (facts_written > 0).then_some(plan.hwm),
        scrobbles_net: facts_written as i64,
        rows: [users, artists, albums, tracks],
        seconds: started.elapsed().as_secs_f64(),
    };
    let identity = SourceIdentity::of(&opts.source, &table);
    let finished = writer.finish(
        rows_read,
        Finish {
            run: &run,
            source: &identity,
            recheck,
            indexes: opts.indexes,
            fts: opts.fts,
            check: opts.check,
            started,
        },
        progress,
    )?;
    // A Ctrl-C during the index build or the checks stops here: the target stays as it was.
    crate::cancel::check()?;
    progress.stage("replacing the target", None);
    temp.install()?;
    progress.finish();
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
    })
}
