//! Summary tables: plays per artist, album, track and UTC hour, so the questions people ask
//! first ("top artists", "plays per month") read thousands of rows instead of every scrobble.
//!
//! They are exact at every commit: a full load counts them after the data is in, and triggers
//! keep them current through every later change of `scrobbles` or `tracks` (sync, backfill,
//! prune, repair, and anyone else's SQL). What they hold, as a rule `verify` checks:
//! - `track_plays`: per `track_id`, the scrobbles naming it;
//! - `artist_plays` / `album_plays`: per `artist_id` / `album_id`, the sum of `track_plays` over
//!   the tracks of that artist / album (a play counts for its track's artist and album);
//! - `hourly_plays`: per `hour` (the epoch second starting a UTC hour), the scrobbles in it.
//!
//! Rows with no plays are absent. `INSERT OR REPLACE` deletes through triggers only under
//! `PRAGMA recursive_triggers = ON`, which scrobsync's own connections set; another program's
//! REPLACE may leave them off (`verify` reports it, `verify --repair` recounts).

use anyhow::Result;
use rusqlite::{Connection, OptionalExtension};

mod counts;
pub use counts::Counts;

/// The summary tables, created with the others by every load (see `schema::TABLES`), and
/// again by [`build`] where one was dropped.
pub const TABLES: &str = "
CREATE TABLE IF NOT EXISTS artist_plays(
    artist_id INTEGER PRIMARY KEY REFERENCES artists(artist_id),
    plays INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS album_plays(
    album_id INTEGER PRIMARY KEY REFERENCES albums(album_id),
    plays INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS track_plays(
    track_id INTEGER PRIMARY KEY REFERENCES tracks(track_id),
    plays INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hourly_plays(
    hour INTEGER PRIMARY KEY,
    plays INTEGER NOT NULL
);
";

/// The summary tables' names.
pub const NAMES: [&str; 4] = ["artist_plays", "album_plays", "track_plays", "hourly_plays"];

/// The UTC hour a `played_at` second falls in (floored, also before 1970).
/// `$row` is a row reference (`new`, `old`, a table alias) with a `played_at` column.
macro_rules! hour {
    ($row:literal) => {
        concat!(
            $row,
            ".played_at - ((",
            $row,
            ".played_at % 3600) + 3600) % 3600"
        )
    };
}

/// SQL counting one play of the scrobble row `$row` (`new` or `old`) in every summary.
macro_rules! add_play {
    ($row:literal) => {
        concat!(
            "INSERT INTO track_plays(track_id, plays) VALUES (",
            $row,
            ".track_id, 1)
    ON CONFLICT(track_id) DO UPDATE SET plays = plays + 1;
  INSERT INTO artist_plays(artist_id, plays)
    SELECT artist_id, 1 FROM tracks WHERE track_id = ",
            $row,
            ".track_id
    ON CONFLICT(artist_id) DO UPDATE SET plays = plays + 1;
  INSERT INTO album_plays(album_id, plays)
    SELECT album_id, 1 FROM tracks WHERE track_id = ",
            $row,
            ".track_id AND album_id IS NOT NULL
    ON CONFLICT(album_id) DO UPDATE SET plays = plays + 1;
  INSERT INTO hourly_plays(hour, plays) VALUES (",
            hour!($row),
            ", 1)
    ON CONFLICT(hour) DO UPDATE SET plays = plays + 1;"
        )
    };
}

/// SQL taking one play of the scrobble row `$row` out of every summary; rows reaching 0 go.
macro_rules! remove_play {
    ($row:literal) => {
        concat!(
            "UPDATE artist_plays SET plays = plays - 1
    WHERE artist_id = (SELECT artist_id FROM tracks WHERE track_id = ",
            $row,
            ".track_id);
  DELETE FROM artist_plays WHERE plays <= 0
    AND artist_id = (SELECT artist_id FROM tracks WHERE track_id = ",
            $row,
            ".track_id);
  UPDATE album_plays SET plays = plays - 1
    WHERE album_id = (SELECT album_id FROM tracks WHERE track_id = ",
            $row,
            ".track_id);
  DELETE FROM album_plays WHERE plays <= 0
    AND album_id = (SELECT album_id FROM tracks WHERE track_id = ",
            $row,
            ".track_id);
  UPDATE track_plays SET plays = plays - 1 WHERE track_id = ",
            $row,
            ".track_id;
  DELETE FROM track_plays WHERE track_id = ",
            $row,
            ".track_id AND plays <= 0;
  UPDATE hourly_plays SET plays = plays - 1 WHERE hour = ",
            hour!($row),
            ";
  DELETE FROM hourly_plays WHERE hour = ",
            hour!($row),
            " AND plays <= 0;"
        )
    };
}

/// A track's plays counted for (`add`) or taken from (`remove`) its artist and album.
macro_rules! track_owners {
    (add, $row:literal) => {
        concat!(
            "INSERT INTO artist_plays(artist_id, plays)
    SELECT ",
            $row,
            ".artist_id, plays FROM track_plays WHERE track_id = ",
            $row,
            ".track_id
    ON CONFLICT(artist_id) DO UPDATE SET plays = plays + excluded.plays;
  INSERT INTO album_plays(album_id, plays)
    SELECT ",
            $row,
            ".album_id, plays FROM track_plays
     WHERE track_id = ",
            $row,
            ".track_id AND ",
            $row,
            ".album_id IS NOT NULL
    ON CONFLICT(album_id) DO UPDATE SET plays = plays + excluded.plays;"
        )
    };
    (remove, $row:literal) => {
        concat!(
            "UPDATE artist_plays SET plays = plays -
    coalesce((SELECT plays FROM track_plays WHERE track_id = ",
            $row,
            ".track_id), 0)
    WHERE artist_id = ",
            $row,
            ".artist_id;
  DELETE FROM artist_plays WHERE artist_id = ",
            $row,
            ".artist_id AND plays <= 0;
  UPDATE album_plays SET plays = plays -
    coalesce((SELECT plays FROM track_plays WHERE track_id = ",
            $row,
            ".track_id), 0)
    WHERE album_id = ",
            $row,
            ".album_id;
  DELETE FROM album_plays WHERE album_id = ",
            $row,
            ".album_id AND plays <= 0;"
        )
    };
}

/// The triggers that keep the summaries exact, by name. A track with no plays changes
/// nothing, so pruning unplayed dimension rows costs one lookup per row.
pub const TRIGGERS: [(&str, &str); 6] = [
    (
        "scrobbles_counted_insert",
        concat!(
            "CREATE TRIGGER scrobbles_counted_insert AFTER INSERT ON scrobbles BEGIN\n  ",
            add_play!("new"),
            "\nEND"
        ),
    ),
    (
        "scrobbles_counted_delete",
        concat!(
            "CREATE TRIGGER scrobbles_counted_delete AFTER DELETE ON scrobbles BEGIN\n  ",
            remove_play!("old"),
            "\nEND"
        ),
    ),
    (
        "scrobbles_counted_update",
        concat!(
            "CREATE TRIGGER scrobbles_counted_update AFTER UPDATE OF track_id, played_at ON scrobbles BEGIN\n  ",
            remove_play!("old"),
            "\n  ",
            add_play!("new"),
            "\nEND"
        ),
    ),
    (
        "tracks_counted_insert",
        concat!(
            "CREATE TRIGGER tracks_counted_insert AFTER INSERT ON tracks
WHEN EXISTS (SELECT 1 FROM track_plays WHERE track_id = new.track_id) BEGIN\n  ",
            track_owners!(add, "new"),
            "\nEND"
        ),
    ),
    (
        "tracks_counted_delete",
        concat!(
            "CREATE TRIGGER tracks_counted_delete AFTER DELETE ON tracks
WHEN EXISTS (SELECT 1 FROM track_plays WHERE track_id = old.track_id) BEGIN\n  ",
            track_owners!(remove, "old"),
            "\nEND"
        ),
    ),
    (
        "tracks_counted_update",
        concat!(
            "CREATE TRIGGER tracks_counted_update AFTER UPDATE OF track_id, artist_id, album_id ON tracks
WHEN EXISTS (SELECT 1 FROM track_plays WHERE track_id IN (old.track_id, new.track_id)) BEGIN\n  ",
            track_owners!(remove, "old"),
            "\n  ",
            track_owners!(add, "new"),
            "\nEND"
        ),
    ),
];

/// Whether the target should have summaries: a schema version of 2 or more (version 1 has
/// none; a target of version 2 missing some or all of them is damaged, see [`differences`]).
/// A database without a stored version (a bare schema) has them when any of their tables
/// or triggers is there.
pub fn expected(conn: &Connection) -> Result<bool> {
    if let Some(version) = stored_version(conn)? {
        return Ok(version >= 2);
    }
    let mut names: Vec<&str> = NAMES.to_vec();
    names.extend(TRIGGERS.iter().map(|(name, _)| *name));
    let list = names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(conn
        .query_row(
            &format!("SELECT 1 FROM sqlite_master WHERE lower(name) IN ({list}) LIMIT 1"),
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The schema version stored in the target, if it has one (a bare database in tests has not).
fn stored_version(conn: &Connection) -> Result<Option<i64>> {
    let has_state = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_scrobsync_state'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !has_state {
        return Ok(None);
    }
    Ok(super::state::get(conn, super::state::SCHEMA_VERSION_KEY)?
        .and_then(|v| v.trim().parse().ok()))
}

/// What stands where a summary table belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// The table as this version defines it.
    Ours,
    /// Nothing.
    Missing,
    /// A table defined otherwise, or an object of another kind (`kind`: table, view, index).
    Other { kind: String },
}

/// The summary tables' definitions as SQLite stores them (without `IF NOT EXISTS`), by name.
fn definitions() -> Result<Vec<(&'static str, String)>> {
    let mem = Connection::open_in_memory()?;
    mem.execute_batch(TABLES)?;
    let mut out = Vec::new();
    for name in NAMES {
        let sql = super::schema::definition(&mem, "table", name)?
            .ok_or_else(|| anyhow::anyhow!("summary table {name} was not created"))?;
        out.push((name, sql));
    }
    Ok(out)
}

/// What stands where each summary table belongs (names compare without case, as SQLite's).
fn slots(conn: &Connection) -> Result<Vec<(&'static str, Slot)>> {
    let mut out = Vec::new();
    for (name, want) in definitions()? {
        let found: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT type, sql FROM sqlite_master
                  WHERE lower(name) = ?1 AND type IN ('table', 'view', 'index')",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let slot = match found {
            None => Slot::Missing,
            Some((kind, sql)) if kind == "table" && sql.as_deref() == Some(want.as_str()) => {
                Slot::Ours
            }
            Some((kind, _)) => Slot::Other { kind },
        };
        out.push((name, slot));
    }
    Ok(out)
}

/// What is wrong with the summaries' tables and triggers, in words: missing, altered, or
/// another kind of object under a summary table's name (other software's triggers on them are
/// `triggers::damage`). Empty when all are this version's.
pub fn damage(conn: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, slot) in slots(conn)? {
        match slot {
            Slot::Ours => {}
            Slot::Missing => out.push(format!("table {name} is missing")),
            Slot::Other { kind } if kind == "table" => out.push(format!(
                "table {name} is altered (not defined as scrobsync defines it)"
            )),
            Slot::Other { kind } => {
                out.push(format!("{name} is {} {kind}, not a table", article(&kind)))
            }
        }
    }
    for (name, sql) in TRIGGERS {
        if super::schema::definition(conn, "trigger", name)?.as_deref() != Some(sql) {
            out.push(format!("trigger {name} is missing or altered"));
        }
    }
    Ok(out)
}

/// Objects under the summary tables' names that a version-1 target may hold as its owner's
/// own (a table, view or index scrobsync did not make), in words: upgrading such a target
/// would have to drop them, so it is refused naming them instead.
pub fn occupied(conn: &Connection) -> Result<Vec<String>> {
    let mut out: Vec<String> = slots(conn)?
        .into_iter()
        .filter_map(|(name, slot)| match slot {
            Slot::Other { kind } => Some(format!("{} {kind} named '{name}'", article(&kind))),
            _ => None,
        })
        .collect();
    // Version 1 has no triggers: one under a summary trigger's name, defined otherwise, is its
    // owner's own (one defined as scrobsync defines it would stay as it is).
    for (name, sql) in TRIGGERS {
        let found: Option<(String, Option<String>)> = conn
            .query_row(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND lower(name) = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((found, have)) = found {
            if found != name || have.as_deref() != Some(sql) {
                out.push(format!("a trigger named '{found}'"));
            }
        }
    }
    Ok(out)
}

/// "a" or "an" before a kind of schema object.
fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Counts runs of equal keys in a query that returns one ordered key per row, handing each
/// (key, count) to `f` in key order. Memory stays constant whatever the number of keys.
fn runs(
    conn: &Connection,
    sql: &str,
    key: impl Fn(i64) -> i64,
    mut f: impl FnMut(i64, i64) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut current: Option<(i64, i64)> = None;
    let mut seen = 0u64;
    while let Some(r) = rows.next()? {
        seen += 1;
        if seen.is_multiple_of(1_000_000) {
            crate::cancel::check()?;
        }
        let k = key(r.get(0)?);
        current = match current {
            Some((c, n)) if c == k => Some((c, n + 1)),
            Some((c, n)) => {
                f(c, n)?;
                Some((k, 1))
            }
            None => Some((k, 1)),
        };
    }
    if let Some((c, n)) = current {
        f(c, n)?;
    }
    Ok(())
}

/// `played_at`'s UTC hour, as the triggers compute it. Within an hour of the smallest
/// integer (no load or trigger stores such a time) it saturates instead of overflowing.
pub fn hour_of(t: i64) -> i64 {
    t.checked_sub(t.rem_euclid(3600)).unwrap_or(i64::MIN)
}

/// The scans that count plays per track and per hour: each reads one index in key order
/// (`scrobbles_track_played`, `scrobbles_played_at`), so counting needs no sort.
const TRACK_SCAN: &str = "SELECT track_id FROM scrobbles ORDER BY track_id";
const HOUR_SCAN: &str = "SELECT played_at FROM scrobbles ORDER BY played_at";

/// Per artist and per album, the sum of their tracks' plays.
const ARTIST_SUMS: &str = "SELECT t.artist_id, sum(p.plays) FROM tracks t
    JOIN track_plays p ON p.track_id = t.track_id GROUP BY t.artist_id";
const ALBUM_SUMS: &str = "SELECT t.album_id, sum(p.plays) FROM tracks t
    JOIN track_plays p ON p.track_id = t.track_id WHERE t.album_id IS NOT NULL GROUP BY t.album_id";

/// Per artist and per album, the plays of their tracks counted from the scrobbles (what
/// [`ARTIST_SUMS`] and [`ALBUM_SUMS`] give while `track_plays` is right).
const ARTIST_COUNTS: &str = "SELECT t.artist_id, count(*) FROM scrobbles s
    JOIN tracks t ON t.track_id = s.track_id GROUP BY t.artist_id";
const ALBUM_COUNTS: &str = "SELECT t.album_id, count(*) FROM scrobbles s
    JOIN tracks t ON t.track_id = s.track_id WHERE t.album_id IS NOT NULL GROUP BY t.album_id";

/// "1 row differs", "3 rows differ".
fn rows_differ(n: u64) -> String {
    if n == 1 {
        "1 row differs".to_string()
    } else {
        format!("{n} rows differ")
    }
}

/// Counts every summary anew from the scrobbles and tracks (a load after its indexes, an
/// upgraded target, `verify --repair`). Triggers are left as they are.
pub fn rebuild(conn: &Connection) -> Result<()> {
    for t in NAMES {
        conn.execute(&format!("DELETE FROM {t}"), [])?;
    }
    let t = std::time::Instant::now();
    {
        let mut ins = conn.prepare("INSERT INTO track_plays(track_id, plays) VALUES (?1, ?2)")?;
        runs(
            conn,
            TRACK_SCAN,
            |k| k,
            |k, n| {
                ins.execute([k, n])?;
                Ok(())
            },
        )?;
        tracing::debug!(seconds = t.elapsed().as_secs_f64(), "track_plays counted");
        let mut ins = conn.prepare("INSERT INTO hourly_plays(hour, plays) VALUES (?1, ?2)")?;
        runs(conn, HOUR_SCAN, hour_of, |k, n| {
            ins.execute([k, n])?;
            Ok(())
        })?;
        tracing::debug!(seconds = t.elapsed().as_secs_f64(), "hourly_plays counted");
    }
    conn.execute(
        &format!("INSERT INTO artist_plays(artist_id, plays) {ARTIST_SUMS}"),
        [],
    )?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "artist_plays counted");
    conn.execute(
        &format!("INSERT INTO album_plays(album_id, plays) {ALBUM_SUMS}"),
        [],
    )?;
    tracing::debug!(seconds = t.elapsed().as_secs_f64(), "album_plays counted");
    Ok(())
}

/// Creates the triggers (or replaces one whose definition is not this version's).
pub fn ensure_triggers(conn: &Connection) -> Result<()> {
    for (name, sql) in TRIGGERS {
        super::schema::ensure(conn, "trigger", name, sql)?;
    }
    Ok(())
}

/// Makes every summary table this version's and arms the triggers, without counting: what a
/// write to a damaged target and `verify --repair` do first (every write's triggers need the
/// tables). A table defined otherwise, or a view or index under its name, is dropped and
/// created anew: in a target of this version those names are scrobsync's, and the tables
/// hold only counts that [`rebuild`] recounts from the scrobbles.
pub fn arm(conn: &Connection) -> Result<()> {
    for (name, slot) in slots(conn)? {
        if let Slot::Other { kind } = slot {
            tracing::warn!("replacing the {kind} {name} with scrobsync's summary table");
            conn.execute_batch(&format!("DROP {kind} \"{name}\""))?;
        }
    }
    super::triggers::drop_on_own_tables(conn)?;
    conn.execute_batch(TABLES)?;
    ensure_triggers(conn)
}

/// Makes every summary table this version's, counts every summary anew and arms the
/// triggers: a load after its indexes, an upgraded target, `verify --repair`.
pub fn build(conn: &Connection) -> Result<()> {
    arm(conn)?;
    rebuild(conn)
}

/// How the summaries of a target differ from what its scrobbles and tracks give, in words
/// (`None`: the target has no summaries, see [`expected`]). Empty when they match and every
/// table and trigger is there as this version defines it.
pub fn differences(conn: &Connection) -> Result<Option<Vec<String>>> {
    if !expected(conn)? {
        return Ok(None);
    }
    let mut out = damage(conn)?;
    let missing: Vec<&str> = slots(conn)?
        .into_iter()
        .filter(|(_, slot)| *slot != Slot::Ours)
        .map(|(name, _)| name)
        .collect();
    fn same(k: i64) -> i64 {
        k
    }
    /// A summary counted by streaming: table, key column, scan, key of a scanned value.
    type Streamed = (&'static str, &'static str, &'static str, fn(i64) -> i64);
    let streamed: [Streamed; 2] = [
        ("track_plays", "track_id", TRACK_SCAN, same),
        ("hourly_plays", "hour", HOUR_SCAN, hour_of),
    ];
    let mut tracks_wrong = false;
    for (table, key, scan, key_of) in streamed {
        if missing.contains(&table) {
            continue;
        }
        let mut stored =
            conn.prepare(&format!("SELECT {key}, plays FROM {table} ORDER BY {key}"))?;
        let mut stored = stored.query([])?;
        // A count that is not an integer (someone's SQL) differs from every count.
        let next = |rows: &mut rusqlite::Rows<'_>| -> Result<Option<(i64, Option<i64>)>> {
            Ok(match rows.next()? {
                Some(r) => Some((r.get(0)?, r.get(1).ok())),
                None => None,
            })
        };
        let mut have = next(&mut stored)?;
        let mut wrong = 0u64;
        runs(conn, scan, key_of, |k, n| {
            // Stored keys before k have no scrobbles at all.
            while have.is_some_and(|(s, _)| s < k) {
                wrong += 1;
                have = next(&mut stored)?;
            }
            match have {
                Some((s, p)) if s == k => {
                    wrong += u64::from(p != Some(n));
                    have = next(&mut stored)?;
                }
                _ => wrong += 1,
            }
            Ok(())
        })?;
        while have.is_some() {
            wrong += 1;
            have = next(&mut stored)?;
        }
        if wrong > 0 {
            tracks_wrong |= table == "track_plays";
            out.push(format!("{table}: {}", rows_differ(wrong)));
        }
    }
    for (table, key, sums, counted) in [
        ("artist_plays", "artist_id", ARTIST_SUMS, ARTIST_COUNTS),
        ("album_plays", "album_id", ALBUM_SUMS, ALBUM_COUNTS),
    ] {
        if missing.contains(&table) {
            continue;
        }
        // Summed from the stored track counts while they are right (cheap); counted from the
        // scrobbles when they are not, so a wrong track count is not also reported here.
        let want = if tracks_wrong || missing.contains(&"track_plays") {
            counted
        } else {
            sums
        };
        // Keys whose row differs (a changed count is one key, not a row gone and one added).
        let n: i64 = conn.query_row(
            &format!(
                "WITH want(k, plays) AS ({want}), have(k, plays) AS (SELECT {key}, plays FROM {table})
                 SELECT count(DISTINCT k) FROM (
                     SELECT k FROM (SELECT * FROM have EXCEPT SELECT * FROM want)
                     UNION ALL
                     SELECT k FROM (SELECT * FROM want EXCEPT SELECT * FROM have))"
            ),
            [],
            |r| r.get(0),
        )?;
        if n > 0 {
            out.push(format!("{table}: {}", rows_differ(n as u64)));
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests;
