//! Planning a read: the high-water mark, balanced id slices, and windows of slices.
//!
//! Slices are cut at sampled quantiles of `id`, not evenly between min and max, because real
//! ids are sparse and skewed: an even split would put nearly all rows into one slice. Every
//! slice is bounded by the high-water mark taken once at the start, so rows inserted while a
//! run is going wait for the next run instead of making slices inconsistent.

use super::conn::ReadOnlyClient;
use anyhow::{bail, Context, Result};

pub use super::mapping::SourceTable;
pub use super::query::{Filter, Slice, TimeRange, WindowSpec};

/// What a run will read: all ids in `[min_id, hwm]` that pass `filter`, cut into slices.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    /// The condition every read query carries besides its id slice.
    pub filter: Filter,
    pub min_id: i64,
    /// The high-water mark: the greatest id this run reads.
    pub hwm: i64,
    /// Estimated number of rows (exact for small tables).
    pub est_rows: u64,
    pub slices: Vec<Slice>,
    /// The snapshot the high-water mark was taken in.
    pub snapshot: Snapshot,
}

/// What PostgreSQL's snapshot said about writing transactions when the mark was taken: those
/// with xids in `[xmin, xmax)` may still have been running, invisible, and may commit rows with
/// ids below the mark later.
///
/// `xmin` is the snapshot's (`pg_current_snapshot()`); `xmax` is *not* the snapshot's, which is
/// only one past the newest *completed* xid: a transaction that took its xid after that one and
/// was still running lies above it and in no list. `xmax` is an xid assigned after the snapshot
/// was taken (see [`xid_after`]), so every transaction running then has a smaller one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub xmin: i64,
    pub xmax: i64,
}

/// An xid greater than that of every transaction running before this call: one assigned now, to
/// this statement's own read-only transaction (rolled back at once; nothing is written). Where
/// no xid can be assigned (a standby), the snapshot's own bound `fallback`, with a warning.
fn xid_after(client: &mut ReadOnlyClient, fallback: i64) -> i64 {
    match client.query_one("SELECT pg_current_xact_id()::text::int8", &[]) {
        Ok(row) => row.get::<_, i64>(0).max(fallback),
        Err(e) => {
            tracing::warn!(
                "cannot take a transaction id on the source ({e}); rows that transactions                  running now commit later below the mark are found only if they are older                  than the newest finished one"
            );
            fallback
        }
    }
}

impl Snapshot {
    /// Some writing transaction was in progress.
    pub fn had_writers_in_flight(&self) -> bool {
        self.xmin < self.xmax
    }
}

/// Rows an id mark may have passed by: a transaction still running when the mark was taken can
/// commit, later, rows with ids below the mark (ids come from a sequence in the order they are
/// taken, not in the order transactions commit). A pending re-check says: rows with an id above
/// `after_id` may still be missing until every transaction older than `until_xmin` has ended;
/// the first sync that starts after that re-reads them (upserted, so rows already there are
/// simply written again).
///
/// Why `after_id` is a safe bound: a transaction running at a mark's snapshot either was running
/// at the previous mark's snapshot too (and is covered by the re-check recorded then), or started
/// after it, so every id it takes is greater than the previous mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recheck {
    pub after_id: i64,
    pub until_xmin: i64,
}

impl Recheck {
    /// The re-check a mark taken in `snapshot` needs, with `after_id` the mark before it (or
    /// the greatest id from before every transaction running then), merged with one that is
    /// still pending.
    pub fn after(snapshot: Snapshot, after_id: i64, pending: Option<Recheck>) -> Option<Recheck> {
        let fresh = snapshot.had_writers_in_flight().then_some(Recheck {
            after_id,
            until_xmin: snapshot.xmax,
        });
        match (pending, fresh) {
            (Some(a), Some(b)) => Some(Recheck {
                after_id: a.after_id.min(b.after_id),
                until_xmin: a.until_xmin.max(b.until_xmin),
            }),
            (a, b) => a.or(b),
        }
    }

    /// Whether every transaction it waits for has ended by `snapshot`.
    pub fn is_due(&self, snapshot: Snapshot) -> bool {
        snapshot.xmin >= self.until_xmin
    }
}

/// Partition queries read in parallel per window unless told otherwise: half the CPUs (the
/// other half decode, normalise and write), at least one.
pub fn default_partitions() -> usize {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    (cpus / 2).max(1)
}

/// The current snapshot and the greatest id in it (one statement, so both describe one moment).
pub fn snapshot_and_max_id(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
) -> Result<(Snapshot, Option<i64>)> {
    let row = client
        .query_one(
            &format!(
                "SELECT pg_snapshot_xmin(s)::text::int8, pg_snapshot_xmax(s)::text::int8, \
                        (SELECT max(id)::int8 FROM {}) FROM pg_current_snapshot() AS s",
                table.sql_name()
            ),
            &[],
        )
        .context("cannot read the source's snapshot")?;
    let xmax = xid_after(client, row.get(1));
    Ok((
        Snapshot {
            xmin: row.get(0),
            xmax,
        },
        row.get(2),
    ))
}

/// The oldest writing transaction still running (or the next xid when none is).
pub fn current_xmin(client: &mut ReadOnlyClient) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::int8",
            &[],
        )
        .context("cannot read the source's snapshot")?
        .get(0))
}

/// For a full load: the greatest id from before every writing transaction that may still be
/// running when the load takes its mark — waiting up to `wait` for transactions that were
/// running at the start to end. `None` when they did not end in time (then everything is
/// re-checked).
pub fn settled_max_id(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    wait: std::time::Duration,
) -> Result<Option<i64>> {
    let (start, max_id) = snapshot_and_max_id(client, table)?;
    let max_id = max_id.unwrap_or(i64::MIN);
    if !start.had_writers_in_flight() {
        return Ok(Some(max_id));
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        if current_xmin(client)? >= start.xmax {
            return Ok(Some(max_id));
        }
        if std::time::Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

impl ReadPlan {
    /// Groups consecutive slices into windows of `partitions` slices, read in parallel.
    pub fn windows(&self, partitions: usize) -> Vec<WindowSpec> {
        self.slices
            .chunks(partitions.max(1))
            .map(|c| WindowSpec {
                slices: c.to_vec(),
                filter: self.filter.clone(),
            })
            .collect()
    }
}

/// Id ranges read per window: each is an index probe, and the window's SQL lists them.
const RANGES_PER_WINDOW: usize = 20_000;

/// Ranges written as `BETWEEN` terms per window. PostgreSQL rechecks every row a bitmap scan
/// finds against every term of the OR, so a statement's cost grows with rows × terms
/// (measured on 5M rows: 100 terms 0.9 s, 1,000 terms 7.6 s; 20,000 terms ran for more than
/// 20 minutes and ignored cancel requests). Listed ids cost one hashed array lookup per row.
const WIDE_RANGES_PER_WINDOW: usize = 32;

/// Windows that read the ids in `ranges` (inclusive, disjoint, in order): a sync's open ids.
pub fn id_range_windows(ranges: &[(i64, i64)]) -> Vec<WindowSpec> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut wide = 0;
    for (i, &(lo, hi)) in ranges.iter().enumerate() {
        let is_wide = !super::query::listed(lo, hi);
        if i > start
            && (i - start == RANGES_PER_WINDOW || (is_wide && wide == WIDE_RANGES_PER_WINDOW))
        {
            out.push(&ranges[start..i]);
            start = i;
            wide = 0;
        }
        wide += usize::from(is_wide);
    }
    if start < ranges.len() {
        out.push(&ranges[start..]);
    }
    out.into_iter()
        .map(|c| WindowSpec {
            slices: vec![Slice {
                lo: c[0].0,
                hi: c[c.len() - 1].1,
            }],
            filter: Filter::id_ranges(c.to_vec()),
        })
        .collect()
}

/// Cuts `[min, max]` at the given cut points into contiguous, non-overlapping slices.
/// A cut `c` ends a slice at `c` (inclusive); cuts outside `[min, max)` and duplicates are
/// ignored, so sampled quantiles can be passed as they are.
pub fn cut_slices(min: i64, max: i64, cuts: &[i64]) -> Vec<Slice> {
    if min > max {
        return Vec::new();
    }
    let mut cuts: Vec<i64> = cuts
        .iter()
        .copied()
        .filter(|&c| c >= min && c < max)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lo = min;
    for c in cuts {
        out.push(Slice { lo, hi: c });
        lo = c + 1;
    }
    out.push(Slice { lo, hi: max });
    out
}

/// Above this estimated size the quantiles come from a block sample instead of every id (the
/// exact count and quantiles of 1M ids took 0.39 s, a tenth of a 1M-row load).
const EXACT_QUANTILE_ROWS: f64 = 250_000.0;
/// How many sampled ids a block sample aims for: enough that a slice of 50,000 rows comes out
/// within about a tenth of its size (the cuts only balance the reads; every id between the
/// first and the mark is read whatever they are).
const SAMPLE_TARGET: f64 = 100_000.0;

/// Which rows a run reads.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only ids greater than this (the stored mark of an incremental run).
    pub after_id: Option<i64>,
    /// Only rows with `played_at` in this range.
    pub played_at: Option<TimeRange>,
}

/// Plans a full read of `table`: high-water mark, row estimate and balanced slices of about
/// `rows_per_slice` rows each.
pub fn plan_full(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    rows_per_slice: usize,
) -> Result<ReadPlan> {
    plan(client, table, &Scope::default(), rows_per_slice)
}

/// Id slices of the whole table for `partitions` parallel queries (backfill and verify read
/// every time window through the same slices).
pub fn partition_slices(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    partitions: usize,
) -> Result<Vec<Slice>> {
    let est = plan_full(client, table, usize::MAX)?.est_rows.max(1) as usize;
    Ok(plan_full(client, table, est.div_ceil(partitions.max(1)))?.slices)
}

/// Plans a read of the rows of `table` in `scope`.
pub fn plan(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    scope: &Scope,
    rows_per_slice: usize,
) -> Result<ReadPlan> {
    let t = table.sql_name();
    let filter = Filter {
        played_at: scope.played_at,
        ..Filter::default()
    };
    let played_at = match &scope.played_at {
        Some(r) => format!(" AND {}", r.sql()),
        None => String::new(),
    };
    let range_err = || format!("cannot read id range of '{}'", table.name);
    // The mark, the NULL-id count and the snapshot in one statement, so all three describe the
    // same moment. (`id IS NULL` is answered by the id index where there is one.)
    let row = client
        .query_one(
            &format!(
                "SELECT (SELECT max(id)::int8 FROM {t}), (SELECT count(*) FROM {t} WHERE id IS NULL), \
                        pg_snapshot_xmin(s)::text::int8, pg_snapshot_xmax(s)::text::int8 \
                 FROM pg_current_snapshot() AS s"
            ),
            &[],
        )
        .with_context(range_err)?;
    let hwm: Option<i64> = row.get(0);
    let nulls: i64 = row.get(1);
    if nulls > 0 {
        bail!(
            "the source has {nulls} row(s) with a NULL id; ids must be unique, non-NULL integers: give those rows ids (or leave them out in a mapping) and run again"
        );
    }
    let snapshot = Snapshot {
        xmin: row.get(2),
        xmax: xid_after(client, row.get(3)),
    };
    let empty = |hwm: i64| ReadPlan {
        filter: filter.clone(),
        min_id: 0,
        hwm,
        est_rows: 0,
        slices: Vec::new(),
        snapshot,
    };
    // An empty source has no greatest id: the smallest, so that no mark moves on it.
    let Some(hwm) = hwm else {
        return Ok(empty(i64::MIN));
    };
    let lower = match scope.after_id {
        Some(a) => format!(" AND id > {a}"),
        None => String::new(),
    };
    let range = format!("id <= {hwm}{lower}{played_at}");
    // Spelled as an ordered LIMIT 1 so that it stops at the first row even when the planner
    // believes the range holds one row (new ids beyond the statistics) and would otherwise
    // aggregate the whole range.
    let min_id: Option<i64> = client
        .query_opt(
            &format!("SELECT id::int8 FROM {t} WHERE {range} ORDER BY id LIMIT 1"),
            &[],
        )
        .with_context(range_err)?
        .map(|r| r.get(0));
    let Some(min_id) = min_id else {
        return Ok(empty(hwm));
    };
    // An incremental part whose id span alone fits one slice needs neither a count nor cuts:
    // the span bounds the rows. (Counting freshly inserted rows visits each heap tuple.)
    let span = (hwm as i128 - min_id as i128 + 1) as u128;
    if scope.after_id.is_some() && span <= rows_per_slice.max(1) as u128 {
        return Ok(ReadPlan {
            filter,
            min_id,
            hwm,
            est_rows: span as u64,
            slices: cut_slices(min_id, hwm, &[]),
            snapshot,
        });
    }
    let reltuples: f64 = match &table.stats_table {
        Some(name) => client
            .query_one(
                // The analysed density times the table's pages now, as PostgreSQL's planner
                // estimates: a table that grew since its last ANALYZE is not taken for its old
                // size (which would make each slice that many times larger).
                "SELECT coalesce((SELECT CASE WHEN reltuples >= 0 AND relpages > 0 \
                                         THEN reltuples::float8 / relpages \
                                              * (pg_relation_size(oid) / current_setting('block_size')::float8) END \
                                  FROM pg_class WHERE oid = to_regclass($1)), -1)",
                &[name],
            )
            .map(|r| r.get(0))
            .unwrap_or(-1.0),
        None => -1.0,
    };

    let pct = ((SAMPLE_TARGET / reltuples.max(1.0)) * 100.0).clamp(0.01, 100.0);
    let sampled = table.sampled(pct);
    let (mut est_rows, from) = match sampled {
        Some(sampled)
            if reltuples >= EXACT_QUANTILE_ROWS
                && scope.played_at.is_none()
                && scope.after_id.is_none() =>
        {
            (reltuples as u64, sampled)
        }
        // Small, never analysed, a query, or an incremental part: count exactly.
        _ => {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {t} WHERE {range}"), &[])
                .context("counting source rows failed")?
                .get(0);
            (n as u64, t.clone())
        }
    };
    let is_sampled = from != t;
    // The quantiles of `nslices` equal parts, and how many ids they were taken from.
    let mut quantiles = |nslices: usize| -> Result<(Vec<i64>, i64)> {
        let fractions: Vec<f64> = (1..nslices).map(|i| i as f64 / nslices as f64).collect();
        let row = client
            .query_one(
                &format!(
                    "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY id)::int8[], count(*) \
                     FROM (SELECT id FROM {from} WHERE {range}) s"
                ),
                &[&fractions],
            )
            .context("sampling id quantiles")?;
        let cuts: Option<Vec<Option<i64>>> = row.get(0);
        Ok((
            cuts.unwrap_or_default().into_iter().flatten().collect(),
            row.get(1),
        ))
    };
    let slices_for = |rows: u64| (rows as usize).div_ceil(rows_per_slice.max(1)).max(1);
    let mut nslices = slices_for(est_rows);
    let cuts = if is_sampled {
        // Statistics can be far behind the table (rows added into space a VACUUM freed leave
        // its pages, and so the estimate, as they were): the sample's own size says how many
        // rows there are now; with many more, cut again into that many slices.
        let (cuts, n) = quantiles(nslices)?;
        let from_sample = (n.max(0) as f64 * 100.0 / pct) as u64;
        if from_sample > est_rows + est_rows / 4 {
            est_rows = from_sample;
            nslices = slices_for(est_rows);
            quantiles(nslices)?.0
        } else {
            cuts
        }
    } else if nslices > 1 {
        quantiles(nslices)?.0
    } else {
        Vec::new()
    };
    tracing::debug!(
        est_rows,
        slices = nslices,
        sampled = is_sampled,
        "read planned"
    );
    Ok(ReadPlan {
        filter,
        min_id,
        hwm,
        est_rows,
        slices: cut_slices(min_id, hwm, &cuts),
        snapshot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_id_windows_keep_few_between_terms_and_every_range_in_order() {
        // 100 wide ranges among 30,000 single ids
        let mut ranges = Vec::new();
        for i in 0..30_100i64 {
            let lo = i * 1_000;
            ranges.push(if i % 301 == 0 {
                (lo, lo + 500)
            } else {
                (lo, lo)
            });
        }
        let windows = id_range_windows(&ranges);
        let mut back = Vec::new();
        for w in &windows {
            let r = w.filter.ranges.as_ref().unwrap();
            let wide = r.iter().filter(|&&(lo, hi)| hi - lo >= 16).count();
            assert!(wide <= WIDE_RANGES_PER_WINDOW && r.len() <= RANGES_PER_WINDOW);
            assert_eq!((w.slices[0].lo, w.slices[0].hi), (r[0].0, r[r.len() - 1].1));
            back.extend_from_slice(r);
        }
        assert_eq!(back, ranges);
        assert!(windows.len() >= 4, "{}", windows.len());
        assert!(id_range_windows(&[]).is_empty());
    }

    #[test]
    fn slices_are_contiguous_and_cover_the_range() {
        let s = cut_slices(1, 100, &[10, 50, 50, 200, -5, 100]);
        assert_eq!(
            s,
            vec![
                Slice { lo: 1, hi: 10 },
                Slice { lo: 11, hi: 50 },
                Slice { lo: 51, hi: 100 }
            ]
        );
    }

    #[test]
    fn extreme_ids_do_not_overflow() {
        let s = cut_slices(i64::MIN, i64::MAX, &[0]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            Slice {
                lo: i64::MIN,
                hi: 0
            }
        );
        assert_eq!(
            s[1],
            Slice {
                lo: 1,
                hi: i64::MAX
            }
        );
        assert!(cut_slices(5, 4, &[]).is_empty());
        assert_eq!(cut_slices(7, 7, &[7]), vec![Slice { lo: 7, hi: 7 }]);
    }

    #[test]
    fn windows_group_slices_in_order() {
        let plan = ReadPlan {
            filter: Filter::default(),
            min_id: 1,
            hwm: 50,
            est_rows: 50,
            slices: cut_slices(1, 50, &[10, 20, 30, 40]),
            snapshot: Snapshot::default(),
        };
        let w = plan.windows(2);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].slices[0].lo, 1);
        assert_eq!(w[2].slices[0], Slice { lo: 41, hi: 50 });
    }
}
