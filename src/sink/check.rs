//! The checks a new file passes before it may replace the user's target.
//!
//! The default ([`CheckLevel::Fast`]) costs what the data costs. The keys are scrobsync's own,
//! so their soundness is proved as the rows are written ([`KeyBounds::admit`]): every window's
//! new dimension rows must continue their table's keys without a gap, and every reference a
//! row carries (a fact's user and track, an album's artist, a track's artist and album, an
//! attribute fill's row) must be a key already admitted. At the end the file itself must agree:
//! each dimension table holds exactly the keys 1..=max that were admitted (`count(*) =
//! max(key)`, `min(key) = 1`), and the fact table holds exactly the rows the reader counted.
//! Together that proves every reference the writer was given valid, in O(rows) instead of
//! `foreign_key_check`'s b-tree probe per row; rows read back from both ends of each table
//! confirm that those values are what the file holds.
//!
//! [`CheckLevel::Full`] adds SQLite's own `foreign_key_check` and `integrity_check` (O(n log n),
//! about a quarter of a 50M-row load), for users who want the file re-proved from scratch.

use crate::normalize::frames::Normalized;
use anyhow::{bail, Result};
use polars::prelude::*;
use rusqlite::Connection;
use std::path::Path;

/// How much a full load checks its new file before installing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckLevel {
    /// Keys proved as they are written, counts and key ranges of the file, the fact count
    /// against the rows read.
    #[default]
    Fast,
    /// Also `PRAGMA foreign_key_check` and `PRAGMA integrity_check` of the whole file.
    Full,
}

/// Rows a write into an existing target was given and did not leave there: what another
/// program's trigger does when it ignores or deletes them (scrobsync's own writes do not).
#[derive(Debug)]
pub struct LostRows(pub String);

impl std::fmt::Display for LostRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LostRows {}

/// After a window was written into an existing target that holds other software's triggers
/// (see `super::triggers`): every row it was given is there: its facts, its new dimension
/// rows, and every row its facts and new rows reference. One point lookup per distinct key,
/// in the transaction, before anything is committed.
fn check_window_landed(conn: &Connection, n: &Normalized) -> Result<()> {
    let d = &n.dims;
    let want: [(&str, &str, Vec<&Int64Chunked>); 5] = [
        (
            "scrobbles",
            "scrobble_id",
            vec![n.facts.column("scrobble_id")?.i64()?],
        ),
        (
            "users",
            "user_id",
            vec![
                d.users.column("user_id")?.i64()?,
                n.facts.column("user_id")?.i64()?,
            ],
        ),
        (
            "artists",
            "artist_id",
            vec![
                d.artists.column("artist_id")?.i64()?,
                d.albums.column("artist_id")?.i64()?,
                d.tracks.column("artist_id")?.i64()?,
            ],
        ),
        (
            "albums",
            "album_id",
            vec![
                d.albums.column("album_id")?.i64()?,
                d.tracks.column("album_id")?.i64()?,
            ],
        ),
        (
            "tracks",
            "track_id",
            vec![
                d.tracks.column("track_id")?.i64()?,
                n.facts.column("track_id")?.i64()?,
            ],
        ),
    ];
    for (table, key, columns) in want {
        // (a NULL is no reference: a track without an album)
        let keys: hashbrown::HashSet<i64> = columns
            .iter()
            .flat_map(|c| c.into_iter().flatten())
            .collect();
        let mut stmt = conn.prepare_cached(&format!("SELECT 1 FROM {table} WHERE {key} = ?1"))?;
        let mut missing = 0usize;
        let mut first = None;
        for k in keys {
            if !stmt.exists([k])? {
                missing += 1;
                first = Some(first.map_or(k, |f: i64| f.min(k)));
            }
        }
        if let Some(k) = first {
            return Err(LostRows(format!(
                "{missing} {table} {} that this write gave the target or that its rows reference {} not there after it (e.g. {key} {k}): something inside the write ignored or deleted {}",
                if missing == 1 { "row" } else { "rows" },
                if missing == 1 { "is" } else { "are" },
                if missing == 1 { "it" } else { "them" },
            ))
            .into());
        }
    }
    Ok(())
}

/// The windows an incremental write upserts into an existing target, watched where the file
/// holds other software's triggers (see `super::triggers`); scrobsync's own writes leave what
/// they are given, so without such triggers nothing is re-read. Watched, each window's rows
/// are looked up after it is written ([`check_window_landed`]), and [`Self::check`] compares
/// the user tables' row counts before the commit with what the writes added: rows a trigger
/// deleted or added anywhere in the file are found, not only among the rows written.
pub struct Tally {
    /// Row counts of the user tables when the write began (None: not watched).
    before: Option<[u64; 5]>,
    /// Scrobbles the windows added (ids that were not in the target before their write).
    facts_added: i64,
}

impl Tally {
    pub fn begin(conn: &Connection) -> Result<Self> {
        let before = if super::triggers::any_foreign(conn)? {
            Some(super::writer::table_counts(conn)?)
        } else {
            None
        };
        Ok(Self {
            before,
            facts_added: 0,
        })
    }

    /// Upserts a normalised window (see `writer::write_window`); returns the facts written.
    pub fn write(&mut self, conn: &Connection, n: &Normalized) -> Result<usize> {
        if self.before.is_none() {
            return super::writer::write_window(conn, n, true);
        }
        let mut stmt = conn.prepare_cached("SELECT 1 FROM scrobbles WHERE scrobble_id = ?1")?;
        for id in n.facts.column("scrobble_id")?.i64()?.into_iter().flatten() {
            if !stmt.exists([id])? {
                self.facts_added += 1;
            }
        }
        let written = super::writer::write_window(conn, n, true)?;
        check_window_landed(conn, n)?;
        Ok(written)
    }

    /// Each dimension table must hold its rows before plus `new_rows` (users, artists, albums,
    /// tracks), and `scrobbles` its rows before plus those the windows added, minus
    /// `facts_deleted` that the write deleted itself.
    pub fn check(&self, conn: &Connection, new_rows: [u64; 4], facts_deleted: u64) -> Result<()> {
        let Some(before) = self.before else {
            return Ok(());
        };
        let facts_net = self.facts_added - facts_deleted as i64;
        let after = super::writer::table_counts(conn)?;
        for (i, table) in super::schema::USER_TABLES.iter().enumerate() {
            let added = new_rows.get(i).map_or(facts_net, |&n| n as i64);
            if after[i] as i64 != before[i] as i64 + added {
                return Err(LostRows(format!(
                    "{table} holds {} rows after this write, but it held {} and the write added {added}: something inside the write deleted or added {table} rows",
                    after[i], before[i]
                ))
                .into());
            }
        }
        Ok(())
    }
}

fn failed(what: String) -> anyhow::Error {
    anyhow::anyhow!("internal error: {what}; the new target was not installed")
}

/// The greatest key written so far per dimension (users, artists, albums, tracks). Keys start
/// at 1 and are dense, so a key is valid exactly when it lies in `1..=bound`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyBounds {
    pub users: i64,
    pub artists: i64,
    pub albums: i64,
    pub tracks: i64,
}

/// The non-null values of an Int64 column, or an error naming a NULL.
fn keys<'a>(df: &'a DataFrame, col: &str, table: &str) -> Result<&'a [i64]> {
    let c = df.column(col)?.i64()?;
    if c.null_count() > 0 {
        return Err(failed(format!("a NULL {col} in new {table} rows")));
    }
    Ok(c.cont_slice()?)
}

/// New rows of a dimension must continue its keys: `bound + 1`, `bound + 2`, …
fn dense(ids: &[i64], bound: &mut i64, table: &str) -> Result<()> {
    for &id in ids {
        if id != *bound + 1 {
            return Err(failed(format!(
                "new {table} row with key {id} where key {} comes next",
                *bound + 1
            )));
        }
        *bound = id;
    }
    Ok(())
}

/// Every value of `refs` (NULLs allowed where `nullable`) must be a key in `1..=bound`.
fn within(refs: &Int64Chunked, bound: i64, what: &str, nullable: bool) -> Result<()> {
    if !nullable && refs.null_count() > 0 {
        return Err(failed(format!("a NULL {what}")));
    }
    if let (Some(lo), Some(hi)) = (refs.min(), refs.max()) {
        if lo < 1 || hi > bound {
            let bad = if lo < 1 { lo } else { hi };
            return Err(failed(format!(
                "a dangling {what} {bad} (keys written: 1 to {bound})"
            )));
        }
    }
    Ok(())
}

fn fill_keys(ids: impl IntoIterator<Item = i64>, bound: i64, what: &str) -> Result<()> {
    if let Some(id) = ids.into_iter().find(|&id| id < 1 || id > bound) {
        return Err(failed(format!(
            "an attribute fill for {what} {id}, which was never written"
        )));
    }
    Ok(())
}

impl KeyBounds {
    /// Checks one normalised window against the keys written before it and, if it is sound,
    /// extends the bounds by its new dimension rows. Called before the window is written.
    pub fn admit(&mut self, n: &Normalized) -> Result<()> {
        let mut next = *self;
        let d = &n.dims;
        dense(
            keys(&d.users, "user_id", "users")?,
            &mut next.users,
            "users",
        )?;
        dense(
            keys(&d.artists, "artist_id", "artists")?,
            &mut next.artists,
            "artists",
        )?;
        within(
            d.albums.column("artist_id")?.i64()?,
            next.artists,
            "artist key of an album",
            false,
        )?;
        dense(
            keys(&d.albums, "album_id", "albums")?,
            &mut next.albums,
            "albums",
        )?;
        within(
            d.tracks.column("artist_id")?.i64()?,
            next.artists,
            "artist key of a track",
            false,
        )?;
        within(
            d.tracks.column("album_id")?.i64()?,
            next.albums,
            "album key of a track",
            true,
        )?;
        dense(
            keys(&d.tracks, "track_id", "tracks")?,
            &mut next.tracks,
            "tracks",
        )?;
        let f = &n.fills;
        fill_keys(f.artist_mbids.iter().map(|x| x.0), next.artists, "artist")?;
        fill_keys(f.album_mbids.iter().map(|x| x.0), next.albums, "album")?;
        fill_keys(f.track_fills.iter().map(|x| x.0), next.tracks, "track")?;
        if n.facts.height() > 0 {
            within(
                n.facts.column("user_id")?.i64()?,
                next.users,
                "user key of a scrobble",
                false,
            )?;
            within(
                n.facts.column("track_id")?.i64()?,
                next.tracks,
                "track key of a scrobble",
                false,
            )?;
        }
        *self = next;
        Ok(())
    }
}

/// One fact row's share of [`check_written_facts`]' digest: every column weighs in, and the
/// keys are weighted by the row's own id, so that a value bound into another column or onto
/// another row changes the sum. (SQLite's `%` truncates like Rust's; no term overflows for keys
/// below 10^15, and their sum stays far inside i64.)
fn fact_term(id: i64, user: i64, track: i64, played: i64, loved: i64) -> i64 {
    (user * (id % 1009 + 1010) + track * (id % 1013 + 1014) + (played % 1_000_003) * 3 + loved)
        % 1_000_000_007
}

const FACT_DIGEST_SQL: &str = "SELECT count(*), ifnull(sum((user_id * (scrobble_id % 1009 + 1010) \
     + track_id * (scrobble_id % 1013 + 1014) + (played_at % 1000003) * 3 + loved) % 1000000007), 0) \
     FROM scrobbles WHERE scrobble_id BETWEEN ?1 AND ?2";

/// Reads a full load's window of facts back from the file, right after it was written, and
/// compares their count and digest with the admitted frame: what [`KeyBounds::admit`] proved of
/// the frame is then what the file holds, row by row and column by column. The window's rows
/// are still in SQLite's cache. (A full load's windows are disjoint, increasing id ranges, and
/// the file held no fact before it.)
pub fn check_written_facts(conn: &Connection, facts: &DataFrame) -> Result<()> {
    if facts.height() == 0 {
        return Ok(());
    }
    let col = |name: &str| -> Result<&[i64]> { Ok(facts.column(name)?.i64()?.cont_slice()?) };
    let (ids, users, tracks) = (col("scrobble_id")?, col("user_id")?, col("track_id")?);
    let (played, loved) = (col("played_at")?, col("loved")?);
    let (mut lo, mut hi, mut digest) = (i64::MAX, i64::MIN, 0i64);
    for i in 0..ids.len() {
        lo = lo.min(ids[i]);
        hi = hi.max(ids[i]);
        digest += fact_term(ids[i], users[i], tracks[i], played[i], loved[i]);
    }
    let (count, got): (i64, i64) = conn
        .prepare_cached(FACT_DIGEST_SQL)?
        .query_row([lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if count as usize != ids.len() {
        return Err(failed(format!(
            "{count} scrobbles with ids {lo} to {hi} in the new file but {} were written",
            ids.len()
        )));
    }
    if got != digest {
        return Err(failed(format!(
            "the scrobbles with ids {lo} to {hi} in the new file differ from those written"
        )));
    }
    Ok(())
}

/// The file must hold exactly the admitted keys of each dimension and `expected_facts` facts.
pub fn check_counts(conn: &Connection, bounds: &KeyBounds, expected_facts: u64) -> Result<()> {
    for (table, key, bound) in [
        ("users", "user_id", bounds.users),
        ("artists", "artist_id", bounds.artists),
        ("albums", "album_id", bounds.albums),
        ("tracks", "track_id", bounds.tracks),
    ] {
        let (count, lo, hi): (i64, Option<i64>, Option<i64>) = conn.query_row(
            &format!("SELECT count(*), min({key}), max({key}) FROM {table}"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
        let sound = count == bound
            && match (lo, hi) {
                (None, None) => bound == 0,
                (Some(lo), Some(hi)) => lo == 1 && hi == bound,
                _ => false,
            };
        if !sound {
            return Err(failed(format!(
                "{table} holds {count} rows with keys {} to {} where keys 1 to {bound} were written",
                lo.map_or("-".into(), |v| v.to_string()),
                hi.map_or("-".into(), |v| v.to_string()),
            )));
        }
    }
    let facts: i64 = conn.query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?;
    if facts as u64 != expected_facts {
        return Err(failed(format!(
            "{facts} scrobbles in the new file but {expected_facts} rows read"
        )));
    }
    check_sampled_references(conn, bounds)
}

/// Rows read back from each end of a table by [`check_sampled_references`].
const SAMPLE_ROWS: u32 = 10_000;

/// Reads the first and last [`SAMPLE_ROWS`] rows of every table with references back from the
/// file and checks their keys against the bounds: what [`KeyBounds::admit`] proved of the
/// frames must also be what was bound into the file (a writer that put a value into the wrong
/// column would fail here at once). Every row's references are re-read by `--check full`.
fn check_sampled_references(conn: &Connection, b: &KeyBounds) -> Result<()> {
    for (table, key, refs) in [
        (
            "scrobbles",
            "scrobble_id",
            &[("user_id", b.users, false), ("track_id", b.tracks, false)][..],
        ),
        ("albums", "album_id", &[("artist_id", b.artists, false)][..]),
        (
            "tracks",
            "track_id",
            &[
                ("artist_id", b.artists, false),
                ("album_id", b.albums, true),
            ][..],
        ),
    ] {
        for order in ["ASC", "DESC"] {
            let cols: Vec<String> = refs
                .iter()
                .map(|(c, _, _)| format!("count(*) - count({c}), min({c}), max({c})"))
                .collect();
            let sql = format!(
                "SELECT {} FROM (SELECT * FROM {table} ORDER BY {key} {order} LIMIT {SAMPLE_ROWS})",
                cols.join(", ")
            );
            conn.query_row(&sql, [], |r| {
                let mut out = Vec::new();
                for i in 0..refs.len() {
                    out.push((
                        r.get::<_, i64>(3 * i)?,
                        r.get::<_, Option<i64>>(3 * i + 1)?,
                        r.get::<_, Option<i64>>(3 * i + 2)?,
                    ));
                }
                Ok(out)
            })?
            .into_iter()
            .zip(refs)
            .try_for_each(|((nulls, lo, hi), (col, bound, nullable))| {
                let bad = match (lo, hi) {
                    (Some(lo), _) if lo < 1 => Some(lo),
                    (_, Some(hi)) if hi > *bound => Some(hi),
                    _ => None,
                };
                if let Some(v) = bad {
                    return Err(failed(format!(
                        "{table}.{col} holds {v} in the new file (keys written: 1 to {bound})"
                    )));
                }
                if nulls > 0 && !nullable {
                    return Err(failed(format!("{table}.{col} holds NULL in the new file")));
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

/// Dangling references from one table (`foreign_key_check` of that table).
fn dangling(conn: &Connection, table: &str) -> Result<()> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_foreign_key_check(?1)",
        [table],
        |r| r.get(0),
    )?;
    if n != 0 {
        return Err(failed(format!("{n} dangling foreign keys in {table}")));
    }
    Ok(())
}

/// `foreign_key_check` of every table but the facts.
fn check_dimensions(conn: &Connection) -> Result<()> {
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_master
             WHERE type = 'table' AND name <> 'scrobbles' AND name NOT LIKE 'sqlite_%'",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in &tables {
        dangling(conn, t)?;
    }
    Ok(())
}

fn check_integrity(conn: &Connection) -> Result<()> {
    let integrity: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
    if integrity != "ok" {
        bail!("SQLite integrity check failed ({integrity}); the new target was not installed");
    }
    Ok(())
}

/// `--check full`: the whole `foreign_key_check` and `integrity_check`, on two connections at
/// once (this one checks the facts' references, the biggest part; a second, read-only one in
/// another thread the other tables and the integrity). All of it only reads, and each side keeps
/// a core busy.
pub fn check_full(conn: &Connection, path: &Path) -> Result<()> {
    // Leave exclusive locking so that a second connection may read.
    conn.execute_batch("PRAGMA locking_mode = NORMAL; SELECT count(*) FROM sqlite_master;")?;
    let (rest, facts) = std::thread::scope(|s| {
        let rest = s.spawn(|| -> Result<()> {
            let other =
                Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
            other.execute_batch("PRAGMA cache_size = -16384;")?;
            check_dimensions(&other)?;
            check_integrity(&other)
        });
        let facts = dangling(conn, "scrobbles");
        (
            rest.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the check thread panicked"))),
            facts,
        )
    });
    facts?;
    rest?;
    conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE;")?;
    Ok(())
}
