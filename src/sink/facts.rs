//! Reads and deletions of scrobbles that the modes ask for by meaning (counts, a window's
//! rows, the newest play), so that their SQL lives beside the schema.

use anyhow::Result;
use rusqlite::Connection;

/// Scrobbles in the target.
pub fn count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?)
}

/// Scrobbles with `after < scrobble_id <= upto` (a primary-key range count).
pub fn count_ids(conn: &Connection, after: i64, upto: i64) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM scrobbles WHERE scrobble_id > ?1 AND scrobble_id <= ?2",
        [after, upto],
        |r| r.get(0),
    )?)
}

/// Scrobbles with `start <= played_at < end`.
pub fn count_window(conn: &Connection, (start, end): (i64, i64)) -> Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM scrobbles WHERE played_at >= ?1 AND played_at < ?2",
        [start, end],
        |r| r.get(0),
    )?)
}

/// Deletes the scrobbles with `start <= played_at < end`; their ids.
pub fn delete_window(conn: &Connection, (start, end): (i64, i64)) -> Result<Vec<i64>> {
    let ids = conn
        .prepare(
            "DELETE FROM scrobbles WHERE played_at >= ?1 AND played_at < ?2 RETURNING scrobble_id",
        )?
        .query_map([start, end], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(ids)
}

/// Deletes the scrobbles whose played_at lies outside `first..=last`; how many.
pub fn delete_outside(conn: &Connection, (first, last): (i64, i64)) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM scrobbles WHERE played_at < ?1 OR played_at > ?2",
        [first, last],
    )?)
}

/// Tracks whose `album_id` is 0 (which no load writes, and which the tracks' unique index
/// reads as "no album") get NULL, so a repair finds them by their identity.
pub fn clear_album_zero(conn: &Connection) -> Result<usize> {
    Ok(conn.execute("UPDATE tracks SET album_id = NULL WHERE album_id = 0", [])?)
}

/// The newest `played_at` (seconds) of the target, not counting plays dated more than a day
/// after the clock (a wrong date must not move a mark).
pub fn newest_played_at(conn: &Connection) -> Result<Option<i64>> {
    Ok(conn.query_row(
        "SELECT max(played_at) FROM scrobbles WHERE played_at <= unixepoch('now') + 86400",
        [],
        |r| r.get(0),
    )?)
}

/// The greatest key dimension `table` (key column `key`) ever handed out: its greatest row's,
/// or a greater one that `prune` deleted (recorded as `max_<key>` in the state table).
pub fn greatest_key(conn: &Connection, table: &str, key: &str) -> Result<i64> {
    let in_table: i64 = conn.query_row(
        &format!("SELECT ifnull(max({key}), 0) FROM {table}"),
        [],
        |r| r.get(0),
    )?;
    let pruned = super::state::get(conn, &format!("max_{key}"))?
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    Ok(in_table.max(pruned))
}

/// Deletes dimension rows no fact references any more, remembering the greatest keys (as
/// `max_*_id` in the state table) so they are never handed out again. Rows deleted per table:
/// users, artists, albums, tracks.
pub fn prune(conn: &Connection) -> Result<[u64; 4]> {
    for (t, k) in [
        ("users", "user_id"),
        ("artists", "artist_id"),
        ("albums", "album_id"),
        ("tracks", "track_id"),
    ] {
        let max = greatest_key(conn, t, k)?;
        super::state::set(conn, &format!("max_{k}"), &max.to_string())?;
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
    super::search::remove_missing(conn)?;
    Ok([users, artists, albums, tracks])
}

/// Which attributes an [`AttributeUpdate`] sets, and from which text fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttributeKind {
    /// fields: artist, mbid
    Artist,
    /// fields: artist, album, mbid
    Album,
    /// fields: artist, album, track, mbid, duration
    Track,
}

/// A prepared update of one dimension's attributes (mbid, duration) by natural key.
pub struct AttributeUpdate<'c>(rusqlite::Statement<'c>);

impl<'c> AttributeUpdate<'c> {
    pub fn new(conn: &'c Connection, kind: AttributeKind) -> Result<Self> {
        let sql = match kind {
            AttributeKind::Artist => {
                "UPDATE artists SET mbid = ?2 WHERE name = ?1 AND mbid IS NOT ?2"
            }
            AttributeKind::Album => {
                "UPDATE albums SET mbid = ?3
                  WHERE artist_id = (SELECT artist_id FROM artists WHERE name = ?1)
                    AND title = ?2 AND mbid IS NOT ?3"
            }
            AttributeKind::Track => {
                "UPDATE tracks SET mbid = ?4, duration_ms = CAST(?5 AS INTEGER)
                  WHERE artist_id = (SELECT artist_id FROM artists WHERE name = ?1)
                    AND ifnull(album_id, 0) = ifnull((SELECT al.album_id FROM albums al
                          JOIN artists a ON a.artist_id = al.artist_id
                         WHERE a.name = ?1 AND al.title = ?2), 0)
                    AND title = ?3
                    AND (mbid IS NOT ?4 OR duration_ms IS NOT CAST(?5 AS INTEGER))"
            }
        };
        Ok(Self(conn.prepare(sql)?))
    }

    /// Sets the attributes of the entity the fields name, if they differ; rows changed.
    pub fn apply(&mut self, fields: &[Option<String>]) -> Result<u64> {
        Ok(self.0.execute(rusqlite::params_from_iter(fields))? as u64)
    }
}
