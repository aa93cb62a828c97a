//! Full-text search over artist, album and track names (`load --fts`, `scrobsync search`): an
//! FTS5 index `names_fts` with `unicode61 remove_diacritics 2`, so `sigur ros` finds
//! `Sigur Rós`. Kept current by `sync` and `backfill` when the target has it.

use anyhow::{bail, Result};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

const CREATE: &str = "CREATE VIRTUAL TABLE names_fts USING fts5(
    kind UNINDEXED, name, ref UNINDEXED, tokenize = 'unicode61 remove_diacritics 2');";

/// (kind, table, key column, name column)
const SOURCES: [(&str, &str, &str, &str); 3] = [
    ("artist", "artists", "artist_id", "name"),
    ("album", "albums", "album_id", "title"),
    ("track", "tracks", "track_id", "title"),
];

/// Whether the target has the search index.
pub fn exists(conn: &Connection) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE name = 'names_fts'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Creates the index over every dimension row.
pub fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(CREATE)?;
    add_after(conn, [0, 0, 0])
}

/// The greatest artist, album and track keys: what [`add_after`] continues from.
pub fn max_keys(conn: &Connection) -> Result<[i64; 3]> {
    let mut out = [0; 3];
    for (o, (_, table, key, _)) in out.iter_mut().zip(SOURCES) {
        *o = conn.query_row(
            &format!("SELECT ifnull(max({key}), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )?;
    }
    Ok(out)
}

/// Indexes the dimension rows with keys above `after` (new rows of a sync or backfill), if
/// the target has the index.
pub fn add_after(conn: &Connection, after: [i64; 3]) -> Result<()> {
    if !exists(conn)? {
        return Ok(());
    }
    for ((kind, table, key, name), a) in SOURCES.iter().zip(after) {
        conn.execute(
            &format!("INSERT INTO names_fts(kind, name, ref) SELECT '{kind}', {name}, {key} FROM {table} WHERE {key} > ?1"),
            [a],
        )?;
    }
    Ok(())
}

/// Whether the index holds exactly the names of the dimension rows, each once (`None`: the
/// target has no index).
pub fn matches(conn: &Connection) -> Result<Option<bool>> {
    if !exists(conn)? {
        return Ok(None);
    }
    let n: i64 = conn.query_row(
        "WITH dims AS (SELECT 'artist' AS kind, name, artist_id AS ref FROM artists
                       UNION ALL SELECT 'album', title, album_id FROM albums
                       UNION ALL SELECT 'track', title, track_id FROM tracks),
              idx AS (SELECT kind, name, ref FROM names_fts)
         SELECT (SELECT count(*) FROM (SELECT * FROM idx EXCEPT SELECT * FROM dims))
              + (SELECT count(*) FROM (SELECT * FROM dims EXCEPT SELECT * FROM idx))
              + abs((SELECT count(*) FROM idx) - (SELECT count(*) FROM dims))",
        [],
        |r| r.get(0),
    )?;
    Ok(Some(n == 0))
}

/// Builds the index anew from the dimension rows, if the target has it.
pub fn rebuild(conn: &Connection) -> Result<()> {
    if !exists(conn)? {
        return Ok(());
    }
    conn.execute("DELETE FROM names_fts", [])?;
    add_after(conn, [0, 0, 0])
}

/// Drops index entries whose dimension row is gone (after `backfill --prune`).
pub fn remove_missing(conn: &Connection) -> Result<()> {
    if !exists(conn)? {
        return Ok(());
    }
    for (kind, table, key, _) in SOURCES {
        conn.execute(
            &format!("DELETE FROM names_fts WHERE kind = '{kind}' AND ref NOT IN (SELECT {key} FROM {table})"),
            [],
        )?;
    }
    Ok(())
}

/// Words a search may combine (each is one more FTS5 term to intersect).
const MAX_WORDS: usize = 32;

/// One search result.
#[derive(Debug, Clone, Serialize)]
pub struct Hit {
    pub kind: String,
    pub name: String,
    /// The artist of an album or track.
    pub artist: Option<String>,
    pub plays: i64,
}

/// Names matching every word of `term` (as a prefix), best first.
/// [`search`] in the target file at `path`, opened read-only.
pub fn search_file(path: &std::path::Path, term: &str, limit: usize) -> Result<Vec<Hit>> {
    search(&super::target::open_read_only(path)?, term, limit)
}

pub fn search(conn: &Connection, term: &str, limit: usize) -> Result<Vec<Hit>> {
    if !exists(conn)? {
        bail!("this target has no search index; load it with `scrobsync load --fts`");
    }
    let mut words: Vec<&str> = term.split_whitespace().collect();
    words.sort_unstable();
    words.dedup();
    if words.len() > MAX_WORDS {
        bail!("a search term of at most {MAX_WORDS} different words, please");
    }
    let query: Vec<String> = words
        .iter()
        .map(|w| format!("\"{}\"*", w.replace('"', "\"\"")))
        .collect();
    if query.is_empty() {
        bail!("give a search term, e.g. scrobsync search radiohead --target music.sqlite");
    }
    let mut stmt = conn.prepare(
        "SELECT f.kind, f.name,
                CASE f.kind WHEN 'artist' THEN NULL
                     WHEN 'album' THEN (SELECT a.name FROM albums al JOIN artists a USING (artist_id) WHERE al.album_id = f.ref)
                     ELSE (SELECT a.name FROM tracks t JOIN artists a USING (artist_id) WHERE t.track_id = f.ref) END,
                CASE f.kind
                     WHEN 'artist' THEN (SELECT count(*) FROM scrobbles s JOIN tracks t USING (track_id) WHERE t.artist_id = f.ref)
                     WHEN 'album' THEN (SELECT count(*) FROM scrobbles s JOIN tracks t USING (track_id) WHERE t.album_id = f.ref)
                     ELSE (SELECT count(*) FROM scrobbles s WHERE s.track_id = f.ref) END
           FROM names_fts f WHERE names_fts MATCH ?1 ORDER BY rank LIMIT ?2",
    )?;
    let hits = stmt
        .query_map(rusqlite::params![query.join(" "), limit as i64], |r| {
            Ok(Hit {
                kind: r.get(0)?,
                name: r.get(1)?,
                artist: r.get(2)?,
                plays: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(hits)
}
