//! Replacing time windows of the target with the source's rows: the sink policy that `backfill`
//! and `verify --repair` share. Each window is one SQLite transaction: its scrobbles are
//! deleted, the source's rows of the window are upserted (normalised against the existing
//! dimensions, so keys stay stable), rows that left the window for another `played_at` are
//! written into their new place, and the window is recorded as done — or, on any failure, the
//! window stays as it was.

use crate::normalize::{window_frame, Normalizer};
use crate::pipeline::commit::{self, Written};
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::{self, Reading};
use crate::progress::{Progress, Total};
use crate::sink::check::{LostRows, Tally};
use crate::sink::target::{self, Target};
use crate::sink::{facts, search, state};
use crate::source::checks::{check_unique_ids_in, warn_without_played_at_index};
use crate::source::mapping::SourceTable;
use crate::source::plan::partition_slices;
use crate::source::query::{Filter, TimeRange, WindowSpec};
use crate::source::read::ReaderKind;
use crate::source::SourceUrl;
use anyhow::Result;
use std::collections::HashSet;

/// How windows are read.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    pub partitions: usize,
    pub reader: ReaderKind,
    pub retry: RetryPolicy,
}

/// What the windows of one run added up to.
#[derive(Debug, Default)]
pub struct WindowTotals {
    pub done: usize,
    pub deleted: u64,
    pub written: u64,
    /// Rows whose played_at moved out of their old window: written into their new one.
    pub moved_out: u64,
    pub new_rows: [u64; 4],
}

/// The job key under which windows are recorded: the same arguments resume the same job.
pub fn job_key(from: i64, to: i64, by: super::windows::By) -> String {
    format!("{from}|{to}|{}", by.name())
}

/// Replaces the given windows `[start, end)` (Unix seconds, ascending) one transaction each,
/// recording each under `job`.
pub fn replace_windows(
    target: &Target,
    source: &SourceUrl,
    table: &SourceTable,
    windows: &[(i64, i64)],
    read: ReadSettings,
    job: &str,
    progress: &dyn Progress,
) -> Result<WindowTotals> {
    let mut totals = WindowTotals::default();
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        return Ok(totals);
    };
    let range = TimeRange::half_open(
        first.0.saturating_mul(1_000_000),
        last.1.saturating_mul(1_000_000),
    );
    // Id slices of the whole table, the same for every window, read in parallel.
    let slices = pipeline::step(read.retry, "planning the windows", progress, || {
        let mut client = source.connect_reader()?;
        warn_without_played_at_index(&mut client, table);
        check_unique_ids_in(&mut client, table, &range)?;
        partition_slices(&mut client, table, read.partitions)
    })?;
    let specs: Vec<WindowSpec> = windows
        .iter()
        .map(|&(start, end)| WindowSpec {
            slices: slices.clone(),
            filter: Filter::played_at(TimeRange::half_open(
                start.saturating_mul(1_000_000),
                end.saturating_mul(1_000_000),
            )),
        })
        .collect();
    let mut norm = Normalizer::new(target.registry()?);
    progress.stage(
        "backfilling",
        Some(Total::exact(windows.len() as u64, "windows")),
    );
    let reading = Reading::new(source, table, read.reader, 50_000, read.retry);
    let rows_read = commit::per_window(target, reading, specs, progress, |conn, w, follow| {
        let (start, end) = windows[w.index];
        let keys_before = search::max_keys(conn)?;
        let mut tally = Tally::begin(conn)?;
        let gone = facts::delete_window(conn, (start, end))?;
        let deleted = gone.len() as u64;
        let df = window_frame(w.batches)?;
        let out = norm.window(&df, &mut target::TargetResolver::new(conn))?;
        let written = tally.write(conn, &out)? as u64;
        let mut new_rows = out.dims.heights();
        // Rows that left the window but not the source moved to another played_at: they go
        // to their new window, wherever that is.
        let kept: HashSet<i64> = out
            .facts
            .column("scrobble_id")?
            .i64()?
            .into_no_null_iter()
            .collect();
        let left: Vec<i64> = gone.into_iter().filter(|id| !kept.contains(id)).collect();
        let mut moved = 0;
        if !left.is_empty() {
            let df = window_frame(follow.read_ids(&left)?)?;
            let out = norm.window(&df, &mut target::TargetResolver::new(conn))?;
            moved = tally.write(conn, &out)? as u64;
            for (n, h) in new_rows.iter_mut().zip(out.dims.heights()) {
                *n += h;
            }
        }
        // The window now holds exactly the rows read for it (a row upserted from another
        // window moved here; none may be lost or doubled).
        let now = facts::count_window(conn, (start, end))?;
        if now as u64 != w.rows {
            return Err(LostRows(format!(
                "the window from {} holds {now} rows after the {} rows read for it were written: the source changed meanwhile, or a trigger of other software on the target changed them; the window was not changed: run the backfill again (with --resume to skip the windows already done)",
                super::rfc3339_s(start).unwrap_or_else(|| start.to_string()),
                w.rows
            ))
            .into());
        }
        tally.check(conn, new_rows.map(|n| n as u64), deleted)?;
        search::add_after(conn, keys_before)?;
        state::backfill_window_done(conn, job, (start, end), deleted, written)?;
        totals.done += 1;
        totals.deleted += deleted;
        totals.written += written;
        totals.moved_out += moved;
        for (t, h) in totals.new_rows.iter_mut().zip(new_rows) {
            *t += h as u64;
        }
        tracing::info!(window = start, deleted, written, moved, "window replaced");
        progress.stage(
            &format!(
                "backfilling ({} rows)",
                crate::progress::thousands(totals.written)
            ),
            Some(Total::exact(windows.len() as u64, "windows")),
        );
        progress.advance(1);
        Ok(Written {
            rows: written,
            followed: moved,
        })
    });
    progress.finish();
    rows_read?;
    Ok(totals)
}
