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

use super::replace::{job_key, replace_windows, ReadSettings};
use super::windows::{split, By};
use super::TableRows;
use crate::pipeline::retry::RetryPolicy;
use crate::progress::Progress;
use crate::sink::state::{self, now_iso, RunRecord};
use crate::sink::{facts, target};
use crate::source::mapping::SourceSpec;
use crate::source::read::ReaderKind;
use crate::source::SourceUrl;
use anyhow::{bail, Result};
use serde::Serialize;
use std::path::PathBuf;
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
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackfillSummary {
    pub mode: &'static str,
    pub source: String,
    pub target: String,
    pub by: By,
    pub from: i64,
    pub to: i64,
    pub from_rfc3339: Option<String>,
    pub to_rfc3339: Option<String>,
    pub windows_total: usize,
    /// Windows skipped because `--resume` found them done.
    pub windows_skipped: usize,
    pub windows_done: usize,
    pub rows_deleted: u64,
    pub rows_written: u64,
    /// Rows whose played_at moved out of the backfilled windows, written into their new place.
    pub rows_moved_out: u64,
    /// Transient source faults survived by retrying.
    pub retries: u64,
    /// New dimension rows; `scrobbles` is the number of facts written.
    pub rows: TableRows,
    /// Facts in the target after the run minus before it.
    pub net_scrobble_change: i64,
    /// Rows removed by `--prune`.
    pub pruned: Option<TableRows>,
    pub seconds: f64,
}

/// Deletes dimension rows no fact references any more (see `facts::prune`).
fn prune(target: &target::Target) -> Result<TableRows> {
    let [users, artists, albums, tracks] = target.write(facts::prune)?;
    Ok(TableRows {
        users,
        artists,
        albums,
        tracks,
        scrobbles: 0,
    })
}

/// `--resume` with arguments that match no interrupted job while another one is recorded: the
/// user most likely changed `--by` or a date, which would silently start a new job.
fn refuse_other_resume(others: &[String]) -> Result<()> {
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
    let table = crate::pipeline::step(opts.retry, "resolving the source", progress, || {
        opts.table
            .resolve(&mut opts.source.connect_reader()?, &opts.source)
    })?;

    let job = job_key(opts.from, opts.to, opts.by);
    let all = split(opts.from, opts.to, opts.by);
    let (other_source, pending) = target.write(|conn| {
        let other_source = state::check_source(
            conn,
            &opts.target,
            &opts.source,
            &table,
            opts.allow_other_source,
        )?;
        let done = state::backfill_done(conn, &job)?;
        let finished = all.iter().filter(|w| done.contains(&w.0)).count();
        let pending: Vec<(i64, i64)> = if opts.resume {
            if done.is_empty() {
                refuse_other_resume(&state::backfill_other_jobs(conn, &job)?)?;
            }
            if finished == all.len() {
                tracing::warn!(
                    "nothing to resume: all {} windows of this backfill have finished; run it without --resume to load them again",
                    all.len()
                );
            }
            all.iter()
                .copied()
                .filter(|w| !done.contains(&w.0))
                .collect()
        } else {
            if finished > 0 && finished < all.len() {
                tracing::warn!(
                    "an interrupted backfill of these dates had finished {finished} of {} windows; this run loads them all again (--resume would continue with the rest)",
                    all.len()
                );
            }
            state::backfill_clear(conn, &job)?;
            all.clone()
        };
        Ok((other_source, pending))
    })?;
    let facts_before = target.read(facts::count)?;
    let totals = replace_windows(
        &target,
        &opts.source,
        &table,
        &pending,
        ReadSettings {
            partitions: opts.partitions,
            reader: opts.reader,
            retry: opts.retry,
        },
        &job,
        progress,
    )?;
    let pruned = if opts.prune {
        Some(prune(&target)?)
    } else {
        None
    };
    let facts_after = target.read(facts::count)?;
    let [users, artists, albums, tracks] = totals.new_rows;
    let seconds = started.elapsed().as_secs_f64();
    let source = other_source.unwrap_or_else(|| opts.source.redacted().to_string());
    let record = RunRecord {
        mode: "backfill",
        source: &source,
        started_at,
        outcome: "ok",
        hwm_before: None,
        hwm_after: None,
        scrobbles_net: facts_after - facts_before,
        rows: [users, artists, albums, tracks],
        seconds,
    };
    target.read(|conn| state::record_run(conn, &record))?;
    Ok(BackfillSummary {
        mode: "backfill",
        source: opts.source.redacted().to_string(),
        target: opts.target.display().to_string(),
        by: opts.by,
        from: opts.from,
        to: opts.to,
        from_rfc3339: super::rfc3339_s(opts.from),
        to_rfc3339: super::rfc3339_s(opts.to),
        windows_total: all.len(),
        windows_skipped: all.len() - pending.len(),
        windows_done: totals.done,
        rows_deleted: totals.deleted,
        rows_written: totals.written,
        rows_moved_out: totals.moved_out,
        retries: crate::pipeline::retry::count(),
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
