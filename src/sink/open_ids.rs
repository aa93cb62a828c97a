//! Open ids: ids at or below the target's id mark that no scrobble has (yet), kept so that later
//! syncs read them again.
//!
//! Why: an id taken from a sequence before its transaction has an xid — `nextval()` in one
//! statement and the INSERT in a later one (JPA/Hibernate pooled sequences), or a sequence
//! default followed by a slow BEFORE INSERT trigger — is invisible to every snapshot check: no
//! snapshot lists a transaction that has no xid. Another writer commits a higher id, a sync moves
//! the mark past it, and the early id's row commits afterwards, below the mark. Such a row can
//! only take an id that no row has, so the ids missing below the mark are exactly where it can
//! appear: each sync re-reads those of the recent syncs (an index probe per range in
//! PostgreSQL; rows already there are not read at all) and takes what arrived.
//!
//! What it does not do: an open id is given up once it is older than the retention (`--recheck-for`,
//! default one day) and at least one later sync has re-read it. At most [`MAX_RANGES`] ranges
//! are kept: beyond that the closest neighbours are merged, so some ids that rows have are read
//! again too (a cost, not a loss). A full load records the gaps among its newest
//! [`LOAD_TAIL_ROWS`] ids only. Rows that arrive in an id given up or never recorded are found
//! by `verify` (and restored by `verify --repair`).

use anyhow::Result;
use rusqlite::{params, Connection};

/// The table; created with the other state tables.
pub const TABLE_SQL: &str = "
CREATE TABLE IF NOT EXISTS _scrobsync_open_ids(
    lo INTEGER PRIMARY KEY,
    hi INTEGER NOT NULL,
    since INTEGER NOT NULL
);
";

/// How many ranges are kept at most: a sync's re-read is one index probe per range (measured
/// in docs/BENCHMARKS.md, "Open ids").
pub const MAX_RANGES: usize = 20_000;

/// How many of the greatest ids a full load looks between for open ids: a row whose id was
/// taken before the load and is still to commit has one of the newest ids.
pub const LOAD_TAIL_ROWS: i64 = 100_000;

/// An inclusive range of ids that no scrobble has, open since `since` (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRange {
    pub lo: i64,
    pub hi: i64,
    pub since: i64,
}

/// The open ranges, in id order.
pub fn load(conn: &Connection) -> Result<Vec<OpenRange>> {
    let mut s = conn.prepare("SELECT lo, hi, since FROM _scrobsync_open_ids ORDER BY lo")?;
    let rows = s.query_map([], |r| {
        Ok(OpenRange {
            lo: r.get(0)?,
            hi: r.get(1)?,
            since: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The open ranges that lie at or below `upto` (clipped to it): ids above it are read anyway.
pub fn at_or_below(conn: &Connection, upto: i64) -> Result<Vec<(i64, i64)>> {
    Ok(load(conn)?
        .into_iter()
        .filter(|r| r.lo <= upto)
        .map(|r| (r.lo, r.hi.min(upto)))
        .collect())
}

/// Scrobbles the target holds inside `ranges`.
pub fn present_in(conn: &Connection, ranges: &[(i64, i64)]) -> Result<u64> {
    let mut s =
        conn.prepare_cached("SELECT count(*) FROM scrobbles WHERE scrobble_id BETWEEN ?1 AND ?2")?;
    let mut n = 0u64;
    for &(lo, hi) in ranges {
        n += s.query_row([lo, hi], |r| r.get::<_, i64>(0))? as u64;
    }
    Ok(n)
}

/// The ids in `[lo, hi]` that no scrobble has, as ranges.
pub fn gaps(conn: &Connection, lo: i64, hi: i64) -> Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    if lo > hi {
        return Ok(out);
    }
    let mut s = conn.prepare_cached(
        "SELECT scrobble_id FROM scrobbles WHERE scrobble_id BETWEEN ?1 AND ?2 ORDER BY scrobble_id",
    )?;
    let mut rows = s.query([lo, hi])?;
    // `next` is the smallest id not yet known to be taken (i128: hi may be i64::MAX).
    let mut next = lo as i128;
    while let Some(r) = rows.next()? {
        let id: i64 = r.get(0)?;
        if (id as i128) > next {
            out.push((next as i64, id - 1));
        }
        next = id as i128 + 1;
    }
    if next <= hi as i128 {
        out.push((next as i64, hi));
    }
    Ok(out)
}

/// After a run that read every id in `(after, upto]` (None: nothing new was read): the ranges
/// kept so far, less the ids that rows have filled and those given up, plus the gaps of the new
/// range. Ranges older than `keep_s` seconds are given up here, after the run re-read them.
pub fn refresh(
    conn: &Connection,
    read: Option<(i64, i64)>,
    now: i64,
    keep_s: i64,
) -> Result<usize> {
    let mut kept = Vec::new();
    let stored = load(conn)?;
    // Every stored range, given up or not: a re-read of ids below the mark must neither renew
    // a range given up nor record again one that is kept.
    let old: Vec<(i64, i64)> = stored.iter().map(|r| (r.lo, r.hi)).collect();
    for r in stored {
        if now.saturating_sub(r.since) > keep_s {
            continue;
        }
        for (lo, hi) in gaps(conn, r.lo, r.hi)? {
            kept.push(OpenRange {
                lo,
                hi,
                since: r.since,
            });
        }
    }
    if let Some((after, upto)) = read {
        let start = match after.checked_add(1) {
            Some(s) => s,
            None => upto.saturating_add(1),
        };
        for (lo, hi) in gaps(conn, start, upto)? {
            for (lo, hi) in subtract(lo, hi, &old) {
                kept.push(OpenRange { lo, hi, since: now });
            }
        }
    }
    store(conn, kept)
}

/// A full load's open ids: the gaps between the greatest [`LOAD_TAIL_ROWS`] ids it wrote.
pub fn record_after_load(conn: &Connection, now: i64) -> Result<usize> {
    let tail: Option<i64> = conn.query_row(
        "SELECT min(scrobble_id) FROM (SELECT scrobble_id FROM scrobbles ORDER BY scrobble_id DESC LIMIT ?1)",
        // One more than the tail: the gap below its oldest id counts too.
        [LOAD_TAIL_ROWS + 1],
        |r| r.get(0),
    )?;
    let max: Option<i64> =
        conn.query_row("SELECT max(scrobble_id) FROM scrobbles", [], |r| r.get(0))?;
    conn.execute("DELETE FROM _scrobsync_open_ids", [])?;
    match (tail, max) {
        (Some(lo), Some(hi)) => refresh(conn, Some((lo, hi)), now, i64::MAX),
        _ => Ok(0),
    }
}

/// `[lo, hi]` less every range of `sorted` (disjoint, in order).
fn subtract(lo: i64, hi: i64, sorted: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = lo as i128;
    for &(a, b) in sorted {
        if (b as i128) < start || a > hi {
            continue;
        }
        if (a as i128) > start {
            out.push((start as i64, a - 1));
        }
        start = b as i128 + 1;
    }
    if start <= hi as i128 {
        out.push((start as i64, hi));
    }
    out
}

/// At most `max` ranges covering every id of `ranges` (sorted, disjoint): where there are more,
/// the neighbours closest together are merged (the ids between them, which rows have, are then
/// read again too and written unchanged — a cost, never a loss). A merged range is as young as
/// its youngest part.
fn merge_to(ranges: Vec<OpenRange>, max: usize) -> Vec<OpenRange> {
    if ranges.len() <= max {
        return ranges;
    }
    let excess = ranges.len() - max.max(1);
    // Boundaries (between range i and i+1) by the number of ids between them, smallest first.
    let mut by_gap: Vec<usize> = (0..ranges.len() - 1).collect();
    by_gap.sort_by_key(|&i| (ranges[i + 1].lo as i128 - ranges[i].hi as i128, i));
    let mut merge = vec![false; ranges.len()];
    for &i in &by_gap[..excess] {
        merge[i] = true;
    }
    let mut out: Vec<OpenRange> = Vec::with_capacity(max);
    for (i, r) in ranges.into_iter().enumerate() {
        match out.last_mut() {
            Some(last) if i > 0 && merge[i - 1] => {
                last.hi = r.hi;
                last.since = last.since.max(r.since);
            }
            _ => out.push(r),
        }
    }
    tracing::info!(
        excess,
        "open id ranges merged with their nearest neighbours to keep {max}"
    );
    out
}

/// Replaces the stored ranges with `ranges`, merged to at most [`MAX_RANGES`].
fn store(conn: &Connection, mut ranges: Vec<OpenRange>) -> Result<usize> {
    ranges.sort_by_key(|r| r.lo);
    let ranges = merge_to(ranges, MAX_RANGES);
    conn.execute("DELETE FROM _scrobsync_open_ids", [])?;
    let mut s =
        conn.prepare_cached("INSERT INTO _scrobsync_open_ids(lo, hi, since) VALUES (?1, ?2, ?3)")?;
    for r in &ranges {
        s.execute(params![r.lo, r.hi, r.since])?;
    }
    Ok(ranges.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(ids: &[i64]) -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch("CREATE TABLE scrobbles(scrobble_id INTEGER PRIMARY KEY);")
            .unwrap();
        c.execute_batch(TABLE_SQL).unwrap();
        for id in ids {
            c.execute("INSERT INTO scrobbles VALUES (?1)", [id])
                .unwrap();
        }
        c
    }

    #[test]
    fn gaps_between_and_around_ids() {
        let c = target(&[3, 4, 7, i64::MAX]);
        assert_eq!(gaps(&c, 1, 9).unwrap(), vec![(1, 2), (5, 6), (8, 9)]);
        assert_eq!(gaps(&c, 3, 4).unwrap(), vec![]);
        assert_eq!(gaps(&c, 8, i64::MAX).unwrap(), vec![(8, i64::MAX - 1)]);
        assert_eq!(gaps(&c, 5, 4).unwrap(), vec![]);
    }

    #[test]
    fn refresh_keeps_unfilled_ids_until_given_up() {
        let c = target(&[1, 2, 5, 9]);
        // A sync read (0, 9]: 3-4 and 6-8 are open.
        assert_eq!(refresh(&c, Some((0, 9)), 100, 50).unwrap(), 2);
        c.execute("INSERT INTO scrobbles VALUES (4), (7)", [])
            .unwrap();
        // The next sync read (9, 12] and found 4 and 7: 3, 6, 8 and 10-12 stay open.
        c.execute("INSERT INTO scrobbles VALUES (12)", []).unwrap();
        refresh(&c, Some((9, 12)), 120, 50).unwrap();
        let got: Vec<(i64, i64, i64)> = load(&c)
            .unwrap()
            .iter()
            .map(|r| (r.lo, r.hi, r.since))
            .collect();
        assert_eq!(
            got,
            vec![(3, 3, 100), (6, 6, 100), (8, 8, 100), (10, 11, 120)]
        );
        assert_eq!(
            at_or_below(&c, 10).unwrap(),
            vec![(3, 3), (6, 6), (8, 8), (10, 10)]
        );
        assert_eq!(present_in(&c, &[(1, 4), (9, 9)]).unwrap(), 4);
        // Later the old ones are given up; the newer stay.
        refresh(&c, None, 160, 50).unwrap();
        assert_eq!(at_or_below(&c, 100).unwrap(), vec![(10, 11)]);
    }

    #[test]
    fn a_load_records_the_gaps_of_its_newest_ids() {
        let c = target(&[-5, 1, 2, 4, 8]);
        record_after_load(&c, 7).unwrap();
        assert_eq!(at_or_below(&c, 8).unwrap(), vec![(-4, 0), (3, 3), (5, 7)]);
        let empty = target(&[]);
        assert_eq!(record_after_load(&empty, 7).unwrap(), 0);
    }

    #[test]
    fn subtracting_ranges() {
        assert_eq!(subtract(1, 10, &[(3, 4), (8, 20)]), vec![(1, 2), (5, 7)]);
        assert_eq!(subtract(1, 10, &[]), vec![(1, 10)]);
        assert_eq!(subtract(5, 6, &[(1, 10)]), vec![]);
    }

    #[test]
    fn too_many_ranges_are_merged_never_dropped() {
        let ids: Vec<i64> = (0..(MAX_RANGES as i64 + 10)).map(|i| i * 2).collect();
        let c = target(&ids);
        let hi = *ids.last().unwrap();
        assert_eq!(refresh(&c, Some((-1, hi)), 1, 10).unwrap(), MAX_RANGES);
        let kept = load(&c).unwrap();
        // Every open id is still covered: the first and the last, and all between.
        assert_eq!(kept[0].lo, 1);
        assert_eq!(kept.last().unwrap().hi, hi - 1);
        let covered = |id: i64| kept.iter().any(|r| r.lo <= id && id <= r.hi);
        assert!((0..hi).filter(|i| i % 2 == 1).all(covered));
        // The closest neighbours go together first.
        let r = |lo, hi| OpenRange { lo, hi, since: 1 };
        let merged = merge_to(vec![r(1, 1), r(3, 3), r(100, 100), r(1000, 1000)], 3);
        assert_eq!(
            merged.iter().map(|r| (r.lo, r.hi)).collect::<Vec<_>>(),
            vec![(1, 3), (100, 100), (1000, 1000)]
        );
    }
}
