//! Partition-by-date backfill: replace the target's scrobbles of each UTC window `[start, end)`
//! with the source's rows of that window, one SQLite transaction per window.
//!
//! Rows deleted in the source disappear, edited rows are replaced (a row whose `played_at`
//! moved into the window moves with it: facts are upserted by id), and nothing outside the
//! window changes. Rows are normalised against the existing dimensions, so keys stay stable.
//! Each finished window is recorded in `_scrobsync_backfill` inside its own transaction, so
//! `--resume` continues from the first window not done and a kill leaves every window either
//! fully old or fully new. A reader thread fetches the next window while the current one is
//! written.

use super::windows::{split, By};
use super::TableRows;
use crate::normalize::{window_frame, Normalizer};
use crate::progress::Progress;
use crate::sink::state::{self, now_iso, RunRecord};
use crate::sink::{target, writer};
use crate::source::mapping::SourceSpec;
use crate::source::plan::{check_unique_ids_in, plan_full, Slice, SourceTable, TimeRange};
use crate::source::read::{ReadSettings, Reader, ReaderHandle, ReaderKind};
use crate::source::SourceUrl;
use anyhow::{bail, Result};
use arrow::record_batch::RecordBatch;
use serde::Serialize;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub source: SourceUrl,
    pub table: SourceSpec,
    pub target: PathBuf,
    /// Unix seconds, inclusive.
    pub from: i64,
    /// Unix seconds, exclusive.
    pub to: i64,
    pub by: By,
    pub resume: bool,
    pub prune: bool,
    pub partitions: usize,
    pub reader: ReaderKind,
    /// Accept a source other than the target's (`--allow-other-source`).
    pub allow_other_source: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackfillSummary {
    pub mode: &'static str,
    pub source: String,
    pub target: String,
    pub by: By,
    pub from: i64,
    pub to: i64,
    pub windows_total: usize,
    /// Windows skipped because `--resume` found them done.
    pub windows_skipped: usize,
    pub windows_done: usize,
    pub rows_deleted: u64,
    pub rows_written: u64,
    /// Rows whose played_at moved out of the backfilled windows, written into their new place.
    pub rows_moved_out: u64,
    /// New dimension rows; `scrobbles` is the number of facts written.
    pub rows: TableRows,
    /// Facts in the target after the run minus before it.
    pub net_scrobble_change: i64,
    /// Rows removed by `--prune`.
    pub pruned: Option<TableRows>,
    pub seconds: f64,
}

struct WindowRows {
    index: usize,
    batches: Vec<RecordBatch>,
    rows: u64,
}

/// Reads each window's rows in turn (one partition query per id slice, all carrying the
/// window's `played_at` condition) on a thread of its own, one window ahead of the writer.
fn spawn_reader(
    mut reader: Reader,
    url: SourceUrl,
    table: SourceTable,
    windows: Vec<(i64, i64)>,
    partitions: usize,
) -> (Receiver<Result<WindowRows>>, ReaderHandle) {
    let (tx, rx) = sync_channel(1);
    let handle = ReaderHandle::spawn("scrobsync-backfill-read", move |counter| {
        let run = || -> Result<()> {
            let mut client = url.connect_reader()?;
            // Id slices of the whole table, computed once: every window reads them in parallel.
            let est = plan_full(&mut client, &table, usize::MAX)?.est_rows.max(1) as usize;
            let slices = plan_full(&mut client, &table, est.div_ceil(partitions.max(1)))?.slices;
            for (index, (start, end)) in windows.into_iter().enumerate() {
                let range = TimeRange::half_open(
                    start.saturating_mul(1_000_000),
                    end.saturating_mul(1_000_000),
                );
                let batches = if slices.is_empty() {
                    Vec::new()
                } else {
                    reader.read_window(&table, &format!(" AND {}", range.sql()), &slices)?
                };
                counter.add(&batches);
                let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
                if tx
                    .send(Ok(WindowRows {
                        index,
                        batches,
                        rows,
                    }))
                    .is_err()
                {
                    return Ok(());
                }
                crate::failpoint::reader_panic(index + 1);
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.send(Err(e));
        }
    });
    (rx, handle)
}

/// What the windows of one backfill run added up to.
#[derive(Debug, Default)]
pub(crate) struct WindowTotals {
    pub done: usize,
    pub deleted: u64,
    pub written: u64,
    /// Rows whose played_at moved out of their old window: written into their new one.
    pub moved_out: u64,
    pub new_rows: [u64; 4],
}

/// Source rows with the given ids, wherever their played_at now lies.
fn read_ids(reader: &mut Reader, table: &SourceTable, ids: &[i64]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(10_000) {
        let list: Vec<String> = chunk.iter().map(|i| i.to_string()).collect();
        out.extend(reader.read_window(
            table,
            &format!(" AND id IN ({})", list.join(",")),
            &[Slice {
                lo: i64::MIN,
                hi: i64::MAX,
            }],
        )?);
    }
    Ok(out)
}

/// Replaces the given windows one transaction each, recording each under `job`.
pub(crate) fn replace_windows(
    target: &target::Target,
    source: &SourceUrl,
    table: &SourceTable,
    windows: &[(i64, i64)],
    read: ReadSettings,
    job: &str,
    progress: &dyn Progress,
) -> Result<WindowTotals> {
    let mut totals = WindowTotals::default();
    if windows.is_empty() {
        return Ok(totals);
    }
    let conn = &target.conn;
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        let range = TimeRange::half_open(
            first.0.saturating_mul(1_000_000),
            last.1.saturating_mul(1_000_000),
        );
        check_unique_ids_in(&mut source.connect_reader()?, table, &range)?;
    }
    let mut norm = Normalizer::new(target::registry_for(conn)?);
    let mut follow = Reader::new(read.reader, source.clone(), 1024);
    progress.stage("windows backfilled", Some(windows.len() as u64));
    let (rx, reader) = spawn_reader(
        Reader::new(read.reader, source.clone(), 50_000),
        source.clone(),
        table.clone(),
        windows.to_vec(),
        read.partitions,
    );
    let mut outcome = Ok(());
    for msg in rx.iter() {
        let step = (|| -> Result<()> {
            crate::cancel::check()?;
            let w = msg?;
            let (start, end) = windows[w.index];
            let (deleted, written, moved) = target.write(|conn| -> Result<(u64, u64, u64)> {
                let gone: Vec<i64> = conn
                    .prepare(
                        "DELETE FROM scrobbles WHERE played_at >= ?1 AND played_at < ?2
                         RETURNING scrobble_id",
                    )?
                    .query_map([start, end], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let deleted = gone.len() as u64;
                let df = window_frame(w.batches)?;
                let out = norm.window(&df, &mut target::TargetResolver { conn })?;
                let written = writer::write_window(conn, &out, true)? as u64;
                // Rows that left the window but not the source moved to another played_at:
                // they go to their new window, wherever that is.
                let kept: HashSet<i64> = out
                    .facts
                    .column("scrobble_id")?
                    .i64()?
                    .into_no_null_iter()
                    .collect();
                let left: Vec<i64> = gone.into_iter().filter(|id| !kept.contains(id)).collect();
                let mut moved = 0;
                if !left.is_empty() {
                    let batches = read_ids(&mut follow, table, &left)?;
                    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                    let df = window_frame(batches)?;
                    let out = norm.window(&df, &mut target::TargetResolver { conn })?;
                    moved = writer::write_window(conn, &out, true)? as u64;
                    if moved != rows as u64 {
                        bail!("internal error: {rows} moved rows read but {moved} written; the window was not changed");
                    }
                    for (t, h) in totals.new_rows.iter_mut().zip(out.dims.heights()) {
                        *t += h as u64;
                    }
                }
                // The window now holds exactly the rows read for it (a row upserted from
                // another window moved here; none may be lost or doubled).
                let now: i64 = conn.query_row(
                    "SELECT count(*) FROM scrobbles WHERE played_at >= ?1 AND played_at < ?2",
                    [start, end],
                    |r| r.get(0),
                )?;
                if written != w.rows || now as u64 != w.rows {
                    bail!(
                        "internal error: {} rows read for the window but {written} written and {now} in it; the window was not changed",
                        w.rows
                    );
                }
                for (t, h) in totals.new_rows.iter_mut().zip(out.dims.heights()) {
                    *t += h as u64;
                }
                state::backfill_window_done(conn, job, (start, end), deleted, written)?;
                crate::failpoint::in_transaction(totals.done + 1, conn);
                Ok((deleted, written, moved))
            })?;
            totals.done += 1;
            totals.deleted += deleted;
            totals.written += written;
            totals.moved_out += moved;
            tracing::info!(window = start, deleted, written, moved, "window replaced");
            progress.stage(
                &format!("windows backfilled ({} rows written)", totals.written),
                Some(windows.len() as u64),
            );
            progress.advance(1);
            crate::failpoint::after_window(totals.done);
            Ok(())
        })();
        if step.is_err() {
            outcome = step;
            break;
        }
    }
    drop(rx);
    let reader_rows = reader.finish();
    progress.finish();
    outcome?;
    let reader_rows = reader_rows?;
    if reader_rows != totals.written {
        bail!(
            "internal error: {reader_rows} rows read but {} written",
            totals.written
        );
    }
    Ok(totals)
}

/// Deletes dimension rows no fact references any more, remembering the greatest keys so they
/// are never handed out again.
fn prune(target: &target::Target) -> Result<TableRows> {
    target.write(|conn| -> Result<TableRows> {
        for (t, k) in [
            ("users", "user_id"),
            ("artists", "artist_id"),
            ("albums", "album_id"),
            ("tracks", "track_id"),
        ] {
            let max: i64 =
                conn.query_row(&format!("SELECT ifnull(max({k}), 0) FROM {t}"), [], |r| {
                    r.get(0)
                })?;
            let kept = state::get(conn, &format!("max_{k}"))?
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            state::set(conn, &format!("max_{k}"), &max.max(kept).to_string())?;
        }
        let tracks = conn.execute(
            "DELETE FROM tracks WHERE track_id NOT IN (SELECT track_id FROM scrobbles)",
            [],
        )? as u64;
        let albums = conn.execute(
            "DELETE FROM albums WHERE album_id NOT IN
                 (SELECT album_id FROM tracks WHERE album_id IS NOT NULL)",
            [],
        )? as u64;
        let artists = conn.execute(
            "DELETE FROM artists WHERE artist_id NOT IN (SELECT artist_id FROM tracks)
                 AND artist_id NOT IN (SELECT artist_id FROM albums)",
            [],
        )? as u64;
        let users = conn.execute(
            "DELETE FROM users WHERE user_id NOT IN (SELECT user_id FROM scrobbles)",
            [],
        )? as u64;
        Ok(TableRows {
            users,
            artists,
            albums,
            tracks,
            scrobbles: 0,
        })
    })
}

/// `--resume` with arguments that match no interrupted job while another one is recorded: the
/// user most likely changed `--by` or a date, which would silently start a new job.
fn refuse_other_resume(conn: &rusqlite::Connection, job: &str) -> Result<()> {
    let others: Vec<String> = conn
        .prepare(
            "SELECT DISTINCT job FROM _scrobsync_backfill WHERE job <> ?1 AND job NOT LIKE 'repair:%'",
        )?
        .query_map([job], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let described: Vec<String> = others
        .iter()
        .filter_map(|j| {
            let mut p = j.split('|');
            let from = p.next()?.parse::<i64>().ok()?;
            let to = p.next()?.parse::<i64>().ok()?;
            let by = p.next()?;
            let day = |s: i64| {
                chrono::DateTime::from_timestamp(s, 0).map_or(s.to_string(), |d| {
                    d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                })
            };
            Some(format!("--from {} --to {} --by {by}", day(from), day(to)))
        })
        .collect();
    if let Some(first) = described.first() {
        bail!(
            "nothing to resume with these arguments; the target has an interrupted backfill with {first}: give those with --resume, or drop --resume to start this one"
        );
    }
    Ok(())
}

/// The job key under which windows are recorded: the same arguments resume the same job.
pub fn job_key(from: i64, to: i64, by: By) -> String {
    format!("{from}|{to}|{}", by.name())
}

pub fn run(opts: &BackfillOptions, progress: &dyn Progress) -> Result<BackfillSummary> {
    super::windows::check_range(opts.from, opts.to)?;
    let started = Instant::now();
    let started_at = now_iso();
    if !opts.target.exists() {
        anyhow::bail!(
            "target {} does not exist; create it with `scrobsync load` first",
            opts.target.display()
        );
    }
    let target = target::open(&opts.target)?;
    let conn = &target.conn;
    let mut client = opts.source.connect_reader()?;
    let table = opts.table.resolve(&mut client, &opts.source)?;
    drop(client);

    let job = job_key(opts.from, opts.to, opts.by);
    let all = split(opts.from, opts.to, opts.by);
    let (other_source, pending) = target.write(|conn| {
        let other_source = super::check_source(
            conn,
            &opts.target,
            &opts.source,
            &table,
            opts.allow_other_source,
        )?;
        let pending: Vec<(i64, i64)> = if opts.resume {
            let done = state::backfill_done(conn, &job)?;
            if done.is_empty() {
                refuse_other_resume(conn, &job)?;
            }
            all.iter()
                .copied()
                .filter(|w| !done.contains(&w.0))
                .collect()
        } else {
            state::backfill_clear(conn, &job)?;
            all.clone()
        };
        Ok((other_source, pending))
    })?;
    let facts_before: i64 = conn.query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?;
    let totals = replace_windows(
        &target,
        &opts.source,
        &table,
        &pending,
        ReadSettings {
            partitions: opts.partitions,
            reader: opts.reader,
        },
        &job,
        progress,
    )?;
    let pruned = if opts.prune {
        Some(prune(&target)?)
    } else {
        None
    };
    let facts_after: i64 = conn.query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?;
    let [users, artists, albums, tracks] = totals.new_rows;
    let seconds = started.elapsed().as_secs_f64();
    let source = other_source.unwrap_or_else(|| opts.source.redacted().to_string());
    state::record_run(
        conn,
        &RunRecord {
            mode: "backfill",
            source: &source,
            started_at,
            outcome: "ok",
            hwm_before: None,
            hwm_after: None,
            scrobbles_net: facts_after - facts_before,
            rows: [users, artists, albums, tracks],
            seconds,
        },
    )?;
    Ok(BackfillSummary {
        mode: "backfill",
        source: opts.source.redacted().to_string(),
        target: opts.target.display().to_string(),
        by: opts.by,
        from: opts.from,
        to: opts.to,
        windows_total: all.len(),
        windows_skipped: all.len() - pending.len(),
        windows_done: totals.done,
        rows_deleted: totals.deleted,
        rows_written: totals.written,
        rows_moved_out: totals.moved_out,
        rows: TableRows {
            users,
            artists,
            albums,
            tracks,
            scrobbles: totals.written,
        },
        net_scrobble_change: facts_after - facts_before,
        pruned,
        seconds,
    })
}
