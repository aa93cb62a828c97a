//! An existing target, opened for an incremental run: validation, the stored marks, and the
//! [`Resolver`] that finds dimension rows already in it through their unique indexes.

use crate::normalize::registry::{Registry, Resolver};
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;

/// PRAGMAs for changing an existing target in place: the rollback journal makes every run's
/// single transaction atomic across crashes and kills; a large cache keeps the run in memory.
const INCREMENTAL_PRAGMAS: &str = "
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = FULL;
PRAGMA cache_size = -131072;
PRAGMA temp_store = MEMORY;
PRAGMA foreign_keys = OFF;
";

/// Opens an existing scrobsync target for reading and writing.
pub fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("cannot open target {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    check_is_target(&conn, path)?;
    conn.execute_batch(INCREMENTAL_PRAGMAS)?;
    super::state::create(&conn)?;
    Ok(conn)
}

/// Opens an existing target read-only (status, verify).
pub fn open_read_only(path: &Path) -> Result<Connection> {
    if !path.exists() {
        bail!(
            "target {} does not exist; create it with `scrobsync load`",
            path.display()
        );
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("cannot open target {}", path.display()))?;
    check_is_target(&conn, path)?;
    // Whole-table joins (verify) touch dimension pages at random: map the file instead of
    // reading it a page per system call.
    conn.execute_batch("PRAGMA mmap_size = 68719476736; PRAGMA cache_size = -65536;")?;
    Ok(conn)
}

fn check_is_target(conn: &Connection, path: &Path) -> Result<()> {
    let ok: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_scrobsync_state'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| {
            anyhow!(
                "{} is not a SQLite database ({e}); choose another target or delete it",
                path.display()
            )
        })?;
    if ok.is_none() {
        bail!(
            "{} is not a scrobsync target (no _scrobsync_state table); use `scrobsync load` to create one",
            path.display()
        );
    }
    Ok(())
}

/// A registry whose new keys continue after the target's greatest ones.
pub fn registry_for(conn: &Connection) -> Result<Registry> {
    let max = |t: &str, k: &str| -> Result<i64> {
        Ok(
            conn.query_row(&format!("SELECT ifnull(max({k}), 0) FROM {t}"), [], |r| {
                r.get(0)
            })?,
        )
    };
    Ok(Registry::continuing_after(
        max("users", "user_id")?,
        max("artists", "artist_id")?,
        max("albums", "album_id")?,
        max("tracks", "track_id")?,
    ))
}

/// Finds existing dimension rows by their identity, through the unique indexes.
pub struct TargetResolver<'c> {
    pub conn: &'c Connection,
}

impl Resolver for TargetResolver<'_> {
    fn user(&mut self, name: &str) -> Result<Option<i64>> {
        let mut s = self
            .conn
            .prepare_cached("SELECT user_id FROM users WHERE name = ?1")?;
        Ok(s.query_row([name], |r| r.get(0)).optional()?)
    }

    fn artist(&mut self, name: &str) -> Result<Option<(i64, Option<String>)>> {
        let mut s = self
            .conn
            .prepare_cached("SELECT artist_id, mbid FROM artists WHERE name = ?1")?;
        Ok(s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn album(&mut self, artist_id: i64, title: &str) -> Result<Option<(i64, Option<String>)>> {
        let mut s = self.conn.prepare_cached(
            "SELECT album_id, mbid FROM albums WHERE artist_id = ?1 AND title = ?2",
        )?;
        Ok(s.query_row(rusqlite::params![artist_id, title], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
    }

    fn track(
        &mut self,
        artist_id: i64,
        album_id: Option<i64>,
        title: &str,
    ) -> Result<Option<(i64, Option<String>, Option<i32>)>> {
        let mut s = self.conn.prepare_cached(
            "SELECT track_id, mbid, duration_ms FROM tracks
             WHERE artist_id = ?1 AND ifnull(album_id, 0) = ?2 AND title = ?3",
        )?;
        Ok(s.query_row(
            rusqlite::params![artist_id, album_id.unwrap_or(0), title],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
    }
}
