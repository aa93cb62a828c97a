//! Incremental sync: bring an existing target up to date with the new source rows only.
//!
//! By default the mark is the greatest source `id` loaded: a run reads `mark < id <= hwm`, where
//! `hwm` is the source's greatest id at the start of the run, so rows inserted while it runs wait
//! for the next run, and back-dated imports (old `played_at`, new id) are picked up. For sources
//! without a monotonic id, the `played_at` cursor re-reads a lookback window and upserts by id.
//!
//! Everything a run changes — facts, new and updated dimension rows, the new mark and the run
//! log — commits in one SQLite transaction: a failure or a kill leaves the previous state, and
//! the next run completes the work. Updates and deletes of rows at or below the mark are not
//! seen; `backfill` re-loads date ranges for that.

use super::{StageSeconds, TableRows};
use crate::cpu::Clock;
use crate::normalize::frames::InfinitePlayedAt;
use crate::normalize::{window_frame, Normalizer};
use crate::pipeline::commit;
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::{self, Reading};
use crate::progress::{Progress, Total};
use crate::sink::check::{LostRows, Tally};
use crate::sink::schema::IndexSet;
use crate::sink::state::{self, now_iso, RunRecord};
use crate::sink::{facts, open_ids, search, target};
use crate::source::checks::{check_unique_ids_in, explain_infinite};
use crate::source::conn::ReadOnlyClient;
use crate::source::mapping::SourceSpec;
use crate::source::plan::id_range_windows;
use crate::source::plan::{current_xmin, plan, ReadPlan, Recheck, Scope, SourceTable};
use crate::source::query::{TimeRange, PG_MIN_US};
use crate::source::read::ReaderKind;
use crate::source::SourceUrl;
use anyhow::{anyhow, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// How far after the server's clock a played_at may lie and still move the time cursor's mark
/// (clocks of scrobbling clients drift; a day covers any time zone mistake).
const FUTURE_SKEW_SQL: &str = "interval '1 day'";

/// What marks progress between runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// The greatest source id loaded (the default).
    Id,
    /// The greatest `played_at` loaded; each run re-reads `lookback_us` before it and upserts.
    PlayedAt { lookback_us: i64 },
}

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub source: SourceUrl,
    pub table: SourceSpec,
    pub target: PathBuf,
    pub partitions: usize,
    pub batch_rows: usize,
    pub cursor: Cursor,
    /// Indexes of the full load that a sync without target does.
    pub indexes: IndexSet,
    /// What the first load (of a target that does not exist yet) checks.
    pub check: crate::sink::check::CheckLevel,
    pub reader: ReaderKind,
    /// Accept a source other than the target's (`--allow-other-source`).
    pub allow_other_source: bool,
    pub retry: RetryPolicy,
    /// How long ids below the mark that no row has are read again (`--recheck-for`, seconds;
    /// see `sink::open_ids`).
    pub recheck_for_s: i64,
}

/// Result of an incremental run (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct SyncSummary {
    pub mode: &'static str,
    pub source: String,
    pub target: String,
    pub cursor: &'static str,
    pub mark_before: Option<i64>,
    pub mark_after: Option<i64>,
    /// The marks as text (exact in every JSON reader).
    pub mark_before_text: Option<String>,
    pub mark_after_text: Option<String>,
    /// With the played_at cursor: the marks (Unix microseconds) as RFC 3339 text.
    pub mark_before_rfc3339: Option<String>,
    pub mark_after_rfc3339: Option<String>,
    /// Rows added per table (scrobbles replaced by an upsert are not counted).
    pub rows: TableRows,
    /// Existing dimension rows whose NULL mbid/duration got filled.
    pub dimension_rows_updated: u64,
    pub rows_read: u64,
    /// Scrobbles found in ids below the mark that earlier runs found empty (rows whose ids were
    /// taken before an earlier run and committed after it).
    pub late_rows: u64,
    /// Transient source faults survived by retrying.
    pub retries: u64,
    pub seconds: StageSeconds,
    /// CPU seconds (user + system) of this process per stage; `read` is the reader's threads
    /// and the rest (the commit among it), `total` the whole run's.
    pub cpu_seconds: StageSeconds,
}

/// Parses a duration such as `90s`, `15m`, `2h`, `7d` or `1h30m` into microseconds.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || {
        anyhow!(
            "invalid duration '{text}'; use a number with a unit, e.g. 30s, 15m, 2h, 7d or 1h30m"
        )
    };
    if text.trim() == "0" {
        return Ok(0);
    }
    let mut total: i64 = 0;
    let mut num = String::new();
    let mut any = false;
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit * 1_000_000)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(total)
}

/// After the full load that a first `sync --cursor played_at` does: the mark is the newest
/// `played_at` loaded.
pub fn record_played_at_mark(path: &std::path::Path) -> Result<()> {
    let target = target::open(path)?;
    target.write(|conn| {
        if let Some(m) = facts::newest_played_at(conn)? {
            state::set(
                conn,
                "played_at_mark",
                &m.saturating_mul(1_000_000).to_string(),
            )?;
        }
        Ok(())
    })
}

/// What a sync reads, planned against the source and the target's marks.
struct SyncPlan {
    client: ReadOnlyClient,
    table: SourceTable,
    plan: ReadPlan,
    mark_key: &'static str,
    /// The mark as stored when planning (to notice another run's commit before ours).
    stored_mark: Option<i64>,
    mark_before: Option<i64>,
    mark_after: Option<i64>,
    /// Ids above this are read (below the mark when a re-check is due).
    read_after: i64,
    recheck: Option<Recheck>,
    /// Ids at or below `read_after` that no row had at earlier runs, read again.
    open: Vec<(i64, i64)>,
}

/// Runs an incremental sync of an existing target (a missing target gets a full load first;
/// the CLI does that with `load`).
pub fn run(opts: &SyncOptions, progress: &dyn Progress) -> Result<SyncSummary> {
    let started = Instant::now();
    let cpu = Clock::process();
    let started_at = now_iso();
    let target = target::open(&opts.target)?;
    let SyncPlan {
        mut client,
        table,
        plan,
        mark_key,
        stored_mark,
        mark_before,
        mark_after,
        read_after,
        recheck,
        open,
    } = {
        progress.stage("planning the sync", None);
        pipeline::step(opts.retry, "planning the sync", progress, || {
            plan_sync(opts, &target)
        })?
    };
    let by_time = matches!(opts.cursor, Cursor::PlayedAt { .. });
    let plan_secs = started.elapsed().as_secs_f64();
    let plan_cpu = cpu.seconds();
    tracing::info!(
        ?mark_before,
        ?mark_after,
        est_rows = plan.est_rows,
        "sync planned"
    );
    // Facts are upserted (a backfill may already hold rows above the mark, a re-check reads
    // rows below it). Rows added are the rows read minus those already present: with the id
    // cursor a primary-key range count of the ids read; with the time cursor the table count,
    // before and after.
    let hwm = plan.hwm;
    // Open ids first (they lie below every new id, so keys stay in id order), then the new rows.
    let mut windows = id_range_windows(&open);
    let open_windows = windows.len();
    windows.extend(plan.windows(opts.partitions));
    let result = target.write(|conn| -> Result<SyncSummary> {
        let present = || -> Result<i64> {
            match opts.cursor {
                Cursor::Id => facts::count_ids(conn, read_after, hwm),
                Cursor::PlayedAt { .. } => facts::count(conn),
            }
        };
        let other_source =
            state::check_source(conn, &opts.target, &opts.source, &table, opts.allow_other_source)?;
        // Another sync may have committed while this one planned (before its lock).
        if state::mark(conn, mark_key)? != stored_mark {
            return Err(target::InUse::new(
                "another run changed the target's mark while this sync was planning; run it again",
            )
            .into());
        }
        let facts_before = present()?;
        let mut tally = Tally::begin(conn)?;
        let late_before = open_ids::present_in(conn, &open)?;
        let keys_before = search::max_keys(conn)?;
        let mut norm = Normalizer::new(target::registry_for(conn)?);
        let mut resolver = target::TargetResolver::new(conn);
        progress.stage("syncing", Some(Total::about(plan.est_rows, "rows")));
        let (mut read_s, mut norm_s, mut write_s, mut rows_read) = (0.0, 0.0, 0.0, 0u64);
        let (mut norm_cpu, mut write_cpu) = (0.0, 0.0);
        let (mut new_rows, mut fills) = ([0u64; 4], 0u64);
        let mut open_rows_read = 0u64;
        let reading = Reading::new(&opts.source, &table, opts.reader, opts.batch_rows, opts.retry);
        let reader_rows = commit::into_transaction(conn, reading, windows, progress, |conn, window| {
                read_s += window.read_time.as_secs_f64();
                let t = Instant::now();
                let c = Clock::thread();
                let df = window_frame(window.batches)?;
                let out = norm.window(&df, &mut resolver)?;
                norm_s += t.elapsed().as_secs_f64();
                norm_cpu += c.seconds();
                let t = Instant::now();
                let c = Clock::thread();
                let n = tally.write(conn, &out)?;
                tracing::debug!(
                    seconds = t.elapsed().as_secs_f64(),
                    rows = n,
                    "window written"
                );
                for (total, h) in new_rows.iter_mut().zip(out.dims.heights()) {
                    *total += h as u64;
                }
                fills += out.fills.fills();
                write_s += t.elapsed().as_secs_f64();
                write_cpu += c.seconds();
                rows_read += n as u64;
                if window.index < open_windows {
                    open_rows_read += n as u64;
                }
                progress.advance(n as u64);
                Ok(n as u64)
            });
        progress.finish();
        let reader_rows =
            reader_rows.map_err(|e| explain_infinite(e, &mut client, &table, plan.hwm))?;
        let t = Instant::now();
        let c = Clock::thread();
        let late_rows = open_ids::present_in(conn, &open)?.saturating_sub(late_before);
        let added_facts = match opts.cursor {
            Cursor::Id => {
                // Every source row of the ids read is now in the target, each once. (The
                // target may hold more in that range: rows a backfill or an earlier run wrote
                // that the source has deleted since; sync does not delete.)
                let now = present()?;
                let in_open = open_ids::present_in(conn, &open)?;
                let new_rows_read = reader_rows - open_rows_read;
                if (now as u64) < new_rows_read || in_open < open_rows_read {
                    return Err(LostRows(format!("the target holds {now} scrobbles of the new ids and {in_open} of the open ones, but {new_rows_read} and {open_rows_read} were read: rows were lost on the way; nothing was committed (unless a trigger of other software on the target explains it, please report this)")).into());
                }
                (now - facts_before).max(0) as u64 + late_rows
            }
            Cursor::PlayedAt { .. } => (present()? - facts_before).max(0) as u64,
        };
        tally.check(conn, new_rows, 0)?;
        let [users, artists, albums, tracks] = new_rows;
        if let Some(m) = mark_after {
            state::set(conn, mark_key, &m.to_string())?;
        }
        state::set_recheck(conn, recheck)?;
        if !by_time {
            let read = Some((read_after, plan.hwm)).filter(|(a, h)| h > a);
            open_ids::refresh(conn, read, state::unix_now(), opts.recheck_for_s)?;
        }
        search::add_after(conn, keys_before)?;
        // A Ctrl-C that came after the last window still stops the run before its commit.
        crate::cancel::check()?;
        let source = other_source.unwrap_or_else(|| opts.source.redacted().to_string());
        state::record_run(
            conn,
            &RunRecord {
                mode: if by_time { "sync-played_at" } else { "sync" },
                source: &source,
                started_at: started_at.clone(),
                outcome: "ok",
                hwm_before: mark_before,
                hwm_after: mark_after,
                scrobbles_net: added_facts as i64,
                rows: [users, artists, albums, tracks],
                seconds: started.elapsed().as_secs_f64(),
            },
        )?;
        write_s += t.elapsed().as_secs_f64();
        write_cpu += c.seconds();
        Ok(SyncSummary {
            mode: "sync",
            source: opts.source.redacted().to_string(),
            target: opts.target.display().to_string(),
            cursor: if by_time { "played_at" } else { "id" },
            mark_before,
            mark_after,
            mark_before_text: super::id_text(mark_before),
            mark_after_text: super::id_text(mark_after),
            mark_before_rfc3339: mark_before
                .filter(|_| by_time)
                .and_then(super::rfc3339_us),
            mark_after_rfc3339: mark_after.filter(|_| by_time).and_then(super::rfc3339_us),
            rows: TableRows {
                users,
                artists,
                albums,
                tracks,
                scrobbles: added_facts,
            },
            dimension_rows_updated: fills,
            rows_read,
            late_rows,
            retries: pipeline::retry::count(),
            seconds: StageSeconds {
                plan: plan_secs,
                read: read_s,
                normalize: norm_s,
                write: write_s,
                ..StageSeconds::default()
            },
            cpu_seconds: StageSeconds {
                plan: plan_cpu,
                normalize: norm_cpu,
                write: write_cpu,
                ..StageSeconds::default()
            },
        })
    });
    let mut s = result?;
    s.seconds.total = started.elapsed().as_secs_f64();
    s.cpu_seconds.total = cpu.seconds();
    s.cpu_seconds = s.cpu_seconds.clone().cpu_read_as_rest();
    // The run log was written inside the transaction, before its commit: it gets the same
    // total as the summary (a failure here leaves the slightly smaller one).
    if let Err(e) = target.read(|c| state::set_last_run_seconds(c, s.seconds.total)) {
        tracing::debug!(error = %e, "could not update the run log's time");
    }
    Ok(s)
}

/// Plans a sync: resolves the source, reads the marks, and plans the read (retried as a whole).
fn plan_sync(opts: &SyncOptions, target: &target::Target) -> Result<SyncPlan> {
    let mut client = opts.source.connect_reader()?;
    let table = opts.table.resolve(&mut client, &opts.source)?;
    // A re-check of ids below the mark that is due now (see `Recheck`): read from its bound.
    let pending = target.read(state::recheck)?;
    let recheck_due = match (opts.cursor, pending) {
        (Cursor::Id, Some(r)) => current_xmin(&mut client)? >= r.until_xmin,
        _ => false,
    };
    let (scope, mark_key, mark_before, new_mark) = match opts.cursor {
        Cursor::Id => {
            let mark = target.read(|c| state::mark(c, "hwm"))?;
            let after_id = match (mark, pending) {
                (Some(m), Some(r)) if recheck_due => {
                    tracing::info!(
                        from_id = r.after_id,
                        "re-reading ids below the mark that transactions running at the last sync may have committed"
                    );
                    Some(r.after_id.min(m))
                }
                _ => mark,
            };
            let scope = Scope {
                after_id,
                ..Scope::default()
            };
            (scope, "hwm", mark, None)
        }
        Cursor::PlayedAt { lookback_us } => {
            let mark = match target.read(|c| state::mark(c, "played_at_mark"))? {
                Some(m) => Some(m),
                // No mark yet: the newest play of the target, not counting rows dated after
                // the clock (plus a day), which must not move the mark either.
                None => target
                    .read(facts::newest_played_at)?
                    .map(|s| s.saturating_mul(1_000_000)),
            };
            // The newest played_at up to the server's clock plus FUTURE_SKEW: one row dated
            // 2099 must not move the mark past every row played today.
            let row = client
                .query_one(
                    &format!(
                        "SELECT (extract(epoch FROM max(played_at) FILTER (WHERE isfinite(played_at) AND played_at <= now() + {FUTURE_SKEW_SQL})) * 1000000)::int8, \
                                count(*) FILTER (WHERE isfinite(played_at) AND played_at > now() + {FUTURE_SKEW_SQL}), \
                                count(*) FILTER (WHERE NOT isfinite(played_at)) \
                         FROM {}",
                        table.sql_name()
                    ),
                    &[],
                )
                .context("cannot read the newest played_at")?;
            let (src_max, future, infinite): (Option<i64>, i64, i64) =
                (row.get(0), row.get(1), row.get(2));
            if infinite > 0 {
                return Err(explain_infinite(
                    InfinitePlayedAt { ids: Vec::new() }.into(),
                    &mut client,
                    &table,
                    i64::MAX,
                ));
            }
            if future > 0 {
                tracing::warn!(
                    "{future} source row(s) have a played_at more than a day after the server's clock; \
                     the played_at cursor reaches them only then (load them now with backfill)"
                );
            }
            // From (mark − lookback), inclusive, up to the newest played_at; with nothing to read
            // (an empty source), the mark stays.
            let hi = src_max.or(mark);
            let range = match (hi, mark) {
                (None, _) => TimeRange::half_open(0, 0),
                (Some(h), None) => TimeRange::from_until(PG_MIN_US, h),
                (Some(h), Some(m)) => {
                    TimeRange::from_until(m.saturating_sub(lookback_us).max(PG_MIN_US), h)
                }
            };
            // Ids repeated inside and outside the range would be merged by the upserts.
            check_unique_ids_in(&mut client, &table, &range)?;
            let scope = Scope {
                played_at: Some(range),
                ..Scope::default()
            };
            let new_mark = match (hi, mark) {
                (Some(h), Some(m)) => Some(h.max(m)),
                (h, m) => h.or(m),
            };
            (scope, "played_at_mark", mark, new_mark)
        }
    };
    let plan = plan(&mut client, &table, &scope, opts.batch_rows)?;
    let mark_after = match opts.cursor {
        Cursor::Id => Some(mark_before.map_or(plan.hwm, |m| m.max(plan.hwm)))
            .filter(|_| mark_before.is_some() || !plan.slices.is_empty()),
        Cursor::PlayedAt { .. } => new_mark,
    };
    let read_after = scope.after_id.unwrap_or(i64::MIN);
    let open = match (opts.cursor, scope.after_id) {
        (Cursor::Id, Some(after)) => target.read(|c| open_ids::at_or_below(c, after))?,
        _ => Vec::new(),
    };
    let recheck = match opts.cursor {
        Cursor::Id => Recheck::after(
            plan.snapshot,
            mark_before.unwrap_or(i64::MIN),
            pending.filter(|_| !recheck_due),
        ),
        Cursor::PlayedAt { .. } => pending,
    };
    Ok(SyncPlan {
        stored_mark: target.read(|c| state::mark(c, mark_key))?,
        client,
        table,
        read_after,
        open,
        plan,
        mark_key,
        mark_before,
        mark_after,
        recheck,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000_000);
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400_000_000);
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        for bad in ["", "10", "5x", "h", "-3m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
