//! A full load's progress, recorded in its temporary file at every durable point, so that a
//! load that was killed (kill -9, power loss, Ctrl-C) continues with `load --resume` instead of
//! starting over.
//!
//! The temporary file is written with a rollback journal and commits at durable points: every
//! few seconds while the rows stream in, after the data, after each index, after the
//! summaries and after the search index. The progress record is written in the same
//! transaction as what it describes, so the file and the record never disagree: a kill rolls
//! both back to the last durable point together.

use super::state;
use crate::normalize::registry::Registry;
use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `_scrobsync_state` key of the record; a finished load removes it.
const KEY: &str = "load_progress";

/// Where a load is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Rows are streaming in; those with ids up to `through_id` are in the file.
    Streaming,
    /// Every row is in; the indexes, summaries and checks follow.
    Finishing,
}

/// What a resumed load must match and where it continues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadProgress {
    /// The source identity (server, database, mapping), as `_scrobsync_state` records it.
    pub source_identity: String,
    /// The redacted source, for messages and `status`.
    pub source: String,
    /// The source database's and table's object ids: a database made anew or a table swapped
    /// in under the same name holds rows whose versions may be older than the load.
    #[serde(default)]
    pub source_oids: String,
    /// What else decides the file's content: the index set and the search index.
    pub options: String,
    /// The oldest writing transaction of the source when its rows began to be read (a full
    /// xid); every row version newer than it counts as changed when the load resumes.
    pub snapshot_xmin: i64,
    pub phase: Phase,
    /// Every source row with an id up to this one is in the file (None: no window yet).
    pub through_id: Option<i64>,
    /// The high-water mark of the run that finished streaming (Finishing only).
    pub hwm: Option<i64>,
    /// Facts written, and users, artists, albums, tracks written.
    pub facts: u64,
    pub dims: [u64; 4],
    /// Windows written (all runs).
    pub windows: u64,
    /// When the first run started.
    pub started_at: String,
    /// The summary tables are counted; the search index is built (built indexes are found
    /// by name in the file).
    #[serde(default)]
    pub summaries_done: bool,
    #[serde(default)]
    pub fts_done: bool,
}

impl LoadProgress {
    /// Records the progress in the open transaction of `conn`.
    pub fn save(&self, conn: &Connection) -> Result<()> {
        state::set(conn, KEY, &serde_json::to_string(self)?)
    }

    /// The record of a temporary file, if it has one.
    pub fn load(conn: &Connection) -> Result<Option<Self>> {
        match state::get(conn, KEY)? {
            None => Ok(None),
            Some(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("the load progress recorded in the temporary file is unreadable ({text})")
            })?)),
        }
    }

    /// Removes the record (the load is complete).
    pub fn clear(conn: &Connection) -> Result<()> {
        conn.execute("DELETE FROM _scrobsync_state WHERE key = ?1", [KEY])?;
        Ok(())
    }

    /// How far it got, in words.
    pub fn describe(&self) -> String {
        match self.phase {
            Phase::Streaming => format!(
                "{} rows written in {} windows{}",
                self.facts,
                self.windows,
                self.through_id
                    .map(|i| format!(", ids up to {i}"))
                    .unwrap_or_default()
            ),
            Phase::Finishing => format!(
                "all {} rows written; building indexes and checking",
                self.facts
            ),
        }
    }
}

/// The load progress of the temporary file at `path`, read through SQLite (which rolls a hot
/// journal back first, so what is read is the last durable point). None when the file is not
/// a resumable load.
pub fn inspect(path: &Path) -> Result<Option<LoadProgress>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let has_state: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = '_scrobsync_state'",
        [],
        |r| r.get(0),
    )?;
    if !has_state {
        return Ok(None);
    }
    LoadProgress::load(&conn)
}

/// Learns every dimension row of a resumed load's file into a registry that continues after
/// its greatest keys, exactly as the rows that wrote them left the killed run's registry: the
/// keys the rest of the load hands out are those a load that was never killed hands out.
pub fn registry_of(conn: &Connection) -> Result<Registry> {
    let max = |table: &str, key: &str| -> Result<i64> {
        Ok(conn.query_row(
            &format!("SELECT ifnull(max({key}), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )?)
    };
    let mut reg = Registry::continuing_after(
        max("users", "user_id")?,
        max("artists", "artist_id")?,
        max("albums", "album_id")?,
        max("tracks", "track_id")?,
    );
    let mut stmt = conn.prepare("SELECT user_id, name FROM users")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        reg.learn_user(r.get_ref(1)?.as_str()?, r.get(0)?)?;
    }
    let mut stmt = conn.prepare("SELECT artist_id, name, mbid IS NOT NULL FROM artists")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        reg.learn_artist(r.get_ref(1)?.as_str()?, r.get(0)?, r.get(2)?)?;
    }
    let mut stmt =
        conn.prepare("SELECT album_id, artist_id, title, mbid IS NOT NULL FROM albums")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        reg.learn_album(r.get(1)?, r.get_ref(2)?.as_str()?, r.get(0)?, r.get(3)?)?;
    }
    let mut stmt = conn.prepare(
        "SELECT t.track_id, a.name, al.title, t.title, t.mbid IS NOT NULL, t.duration_ms IS NOT NULL
         FROM tracks t JOIN artists a ON a.artist_id = t.artist_id
              LEFT JOIN albums al ON al.album_id = t.album_id",
    )?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let album = match r.get_ref(2)? {
            rusqlite::types::ValueRef::Null => None,
            v => Some(v.as_str()?),
        };
        reg.learn_track(
            r.get_ref(1)?.as_str()?,
            album,
            r.get_ref(3)?.as_str()?,
            r.get(0)?,
            r.get(4)?,
            r.get(5)?,
        )?;
        n += 1;
    }
    let tracks: i64 = conn.query_row("SELECT count(*) FROM tracks", [], |r| r.get(0))?;
    if n as i64 != tracks {
        bail!(
            "the temporary file's tracks do not all have their artist and album ({n} of {tracks}); it cannot be resumed: run a plain load"
        );
    }
    Ok(reg)
}
