//! The target's rows streamed for `verify`, table by table, each row handed to a callback with
//! its text borrowed from SQLite's row buffer (nothing is copied per row). A value of a type
//! scrobsync never writes (a number for a name, text for a key) is an error.

use anyhow::Result;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Row};
use std::path::Path;

/// A read-only connection to a target for scans.
pub struct Scan {
    conn: Connection,
}

/// A row of `tracks` (attributes only when asked for).
pub struct TrackRow<'a> {
    pub track_id: i64,
    pub artist_id: i64,
    pub album_id: Option<i64>,
    /// Bytes as stored (not checked as UTF-8: the hash takes bytes).
    pub title: &'a [u8],
    pub mbid: Option<&'a str>,
    pub duration_ms: Option<i64>,
}

/// A row of `scrobbles`.
#[derive(Debug, Clone, Copy)]
pub struct ScrobbleRow {
    pub scrobble_id: i64,
    pub user_id: i64,
    pub track_id: i64,
    pub played_at: i64,
    pub loved: i64,
}

fn text<'a>(r: &'a Row, i: usize) -> rusqlite::Result<&'a str> {
    r.get_ref(i)?.as_str().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn text_or_null<'a>(r: &'a Row, i: usize) -> rusqlite::Result<Option<&'a str>> {
    match r.get_ref(i)? {
        ValueRef::Null => Ok(None),
        _ => text(r, i).map(Some),
    }
}

impl Scan {
    /// Opens the target at `path` for reading (see `target::open_read_only`).
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: super::target::open_read_only(path)?,
        })
    }

    /// Streams `sql` (with `?1` = `attributes`) to `f`, row by row.
    fn each(
        &self,
        sql: &str,
        attributes: bool,
        mut f: impl FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([attributes])?;
        while let Some(r) = rows.next()? {
            f(r)?;
        }
        Ok(())
    }

    /// Every user: (user_id, name).
    pub fn users(&self, mut f: impl FnMut(i64, &str) -> Result<()>) -> Result<()> {
        // `each` binds ?1 in every statement.
        self.each(
            "SELECT user_id, name FROM users WHERE ?1 IS NOT NULL",
            false,
            |r| f(r.get(0)?, text(r, 1)?),
        )
    }

    /// Every artist: (artist_id, name, mbid if `attributes`).
    pub fn artists(
        &self,
        attributes: bool,
        mut f: impl FnMut(i64, &str, Option<&str>) -> Result<()>,
    ) -> Result<()> {
        self.each(
            "SELECT artist_id, name, CASE WHEN ?1 THEN mbid END FROM artists",
            attributes,
            |r| f(r.get(0)?, text(r, 1)?, text_or_null(r, 2)?),
        )
    }

    /// Every album: (album_id, artist_id, title, mbid if `attributes`).
    pub fn albums(
        &self,
        attributes: bool,
        mut f: impl FnMut(i64, i64, &str, Option<&str>) -> Result<()>,
    ) -> Result<()> {
        self.each(
            "SELECT album_id, artist_id, title, CASE WHEN ?1 THEN mbid END FROM albums",
            attributes,
            |r| f(r.get(0)?, r.get(1)?, text(r, 2)?, text_or_null(r, 3)?),
        )
    }

    /// Every track (mbid and duration if `attributes`).
    pub fn tracks(
        &self,
        attributes: bool,
        mut f: impl FnMut(TrackRow<'_>) -> Result<()>,
    ) -> Result<()> {
        self.each(
            "SELECT track_id, artist_id, album_id, title, CASE WHEN ?1 THEN mbid END,
                    CASE WHEN ?1 THEN duration_ms END FROM tracks",
            attributes,
            |r| {
                let title = r.get_ref(3)?.as_bytes().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                f(TrackRow {
                    track_id: r.get(0)?,
                    artist_id: r.get(1)?,
                    album_id: r.get(2)?,
                    title,
                    mbid: text_or_null(r, 4)?,
                    duration_ms: r.get(5)?,
                })
            },
        )
    }

    /// The scrobbles with scrobble_id in `ids` (inclusive) and played_at in `from..to` (either
    /// end open when None), in scrobble_id order.
    pub fn scrobbles(
        &self,
        ids: (i64, i64),
        (from, to): (Option<i64>, Option<i64>),
        mut f: impl FnMut(ScrobbleRow) -> Result<()>,
    ) -> Result<()> {
        let sql = if from.is_some() || to.is_some() {
            "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
             WHERE scrobble_id BETWEEN ?3 AND ?4 AND played_at >= ?1 AND played_at < ?2"
        } else {
            // the whole table: walking the rows beats walking the played_at index
            "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
             WHERE scrobble_id BETWEEN ?3 AND ?4 AND ?1 <= ?2"
        };
        let mut stmt = self.conn.prepare(sql)?;
        let mut rows = stmt.query([
            from.unwrap_or(i64::MIN),
            to.unwrap_or(i64::MAX),
            ids.0,
            ids.1,
        ])?;
        while let Some(r) = rows.next()? {
            f(ScrobbleRow {
                scrobble_id: r.get(0)?,
                user_id: r.get(1)?,
                track_id: r.get(2)?,
                played_at: r.get(3)?,
                loved: r.get(4)?,
            })?;
        }
        Ok(())
    }
}
