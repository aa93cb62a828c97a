//! The target schema: a contract users query directly, so names never change.
//!
//! Tables are created without secondary indexes; those are built after the data is in
//! ([`INDEXES`]), which is several times faster than maintaining them row by row.

use rusqlite::OptionalExtension;

/// The version of this schema, stored as `schema_version` in `_scrobsync_state` by every load.
/// A build refuses a target whose version is greater (see `inspect`): it would not know what a
/// newer scrobsync changed, so it must neither write nor describe such a file. Raise it with any
/// change to [`TABLES`] or the state tables that an older build would get wrong.
pub const SCHEMA_VERSION: i64 = 2;

/// Tables of the target, in creation order.
pub const TABLES: &str = "
CREATE TABLE users(
    user_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE artists(
    artist_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mbid TEXT
);
CREATE TABLE albums(
    album_id INTEGER PRIMARY KEY,
    artist_id INTEGER NOT NULL REFERENCES artists(artist_id),
    title TEXT NOT NULL,
    mbid TEXT
);
CREATE TABLE tracks(
    track_id INTEGER PRIMARY KEY,
    artist_id INTEGER NOT NULL REFERENCES artists(artist_id),
    album_id INTEGER REFERENCES albums(album_id),
    title TEXT NOT NULL,
    mbid TEXT,
    duration_ms INTEGER
);
CREATE TABLE scrobbles(
    scrobble_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(user_id),
    track_id INTEGER NOT NULL REFERENCES tracks(track_id),
    played_at INTEGER NOT NULL,
    loved INTEGER NOT NULL
);
";

/// Tables of the target: the user tables ([`TABLES`]) and the summaries
/// ([`super::summary::TABLES`]), in creation order.
pub fn create_tables(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)?;
    conn.execute_batch(super::summary::TABLES)
}

/// Views every target gets, for the questions people ask first (cost nothing to load). A
/// date before year 0 or after 9999 has no ISO text in SQLite: `played_at` is then NULL and
/// `played_at_epoch` still exact.
// The names come from correlated subqueries, not joins: a query that does not use a column
// never evaluates it, on every SQLite version, so `SELECT count(*) FROM (SELECT … FROM plays)`
// (what Datasette runs for every page of a view, within one second) counts scrobbles alone —
// with joins, SQLite 3.40 (Debian 12, the Python that Datasette runs on) joined five tables per
// row and took 16 s at 5M rows. A name that is missing (a damaged target) is NULL.
// `loved_tracks` reads the loved plays alone, in group order, from the partial index
// `scrobbles_loved`: its count (Datasette's, within one second) took 0.78 s at 5M rows
// grouping a scan of the table, 0.22 s from the index.
pub const VIEWS: [(&str, &str); 2] = [
    (
        "plays",
        "CREATE VIEW plays AS
SELECT s.scrobble_id,
       (SELECT u.name FROM users u WHERE u.user_id = s.user_id) AS user,
       (SELECT a.name FROM tracks t JOIN artists a ON a.artist_id = t.artist_id
         WHERE t.track_id = s.track_id) AS artist,
       (SELECT al.title FROM tracks t JOIN albums al ON al.album_id = t.album_id
         WHERE t.track_id = s.track_id) AS album,
       (SELECT t.title FROM tracks t WHERE t.track_id = s.track_id) AS track,
       strftime('%Y-%m-%dT%H:%M:%SZ', s.played_at, 'unixepoch') AS played_at,
       s.played_at AS played_at_epoch, s.loved
  FROM scrobbles s",
    ),
    (
        "loved_tracks",
        "CREATE VIEW loved_tracks AS
SELECT (SELECT u.name FROM users u WHERE u.user_id = l.user_id) AS user,
       (SELECT a.name FROM tracks t JOIN artists a ON a.artist_id = t.artist_id
         WHERE t.track_id = l.track_id) AS artist,
       (SELECT al.title FROM tracks t JOIN albums al ON al.album_id = t.album_id
         WHERE t.track_id = l.track_id) AS album,
       (SELECT t.title FROM tracks t WHERE t.track_id = l.track_id) AS track,
       l.loved_plays,
       strftime('%Y-%m-%dT%H:%M:%SZ', l.last_played, 'unixepoch') AS last_played
  FROM (SELECT user_id, track_id, count(*) AS loved_plays, max(played_at) AS last_played
          FROM scrobbles WHERE loved = 1 GROUP BY user_id, track_id) l",
    ),
];

/// Creates the views, and replaces one whose definition differs from this version's (the
/// names `plays` and `loved_tracks` belong to scrobsync; an older version's views are
/// brought up to date).
pub fn ensure_views(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (name, sql) in VIEWS {
        ensure(conn, "view", name, sql)?;
    }
    Ok(())
}

/// The stored definition of the schema object `name` of `kind` (table, index, view, trigger).
pub fn definition(
    conn: &rusqlite::Connection,
    kind: &str,
    name: &str,
) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT sql FROM sqlite_master WHERE type = ?1 AND name = ?2",
        [kind, name],
        |r| r.get(0),
    )
    .optional()
}

/// Creates the schema object `name` of `kind` from `sql`, replacing one defined otherwise;
/// whether it had to.
pub fn ensure(
    conn: &rusqlite::Connection,
    kind: &str,
    name: &str,
    sql: &str,
) -> rusqlite::Result<bool> {
    if definition(conn, kind, name)?.as_deref() == Some(sql) {
        return Ok(false);
    }
    conn.execute_batch(&format!("DROP {kind} IF EXISTS {name}; {sql};"))?;
    Ok(true)
}

/// Indexes every target gets, built after the bulk load: the identity of albums and tracks
/// (what incremental runs look existing rows up by), `played_at` (what backfill and verify
/// windows select by, and questions about a period), and a scrobble's track and user with
/// the time (questions about an artist, album, track or user; the summaries count from them).
/// Each of the two costs about as much as the played_at index to build (see
/// docs/BENCHMARKS.md); without them, the questions of docs/queries.sql took 5–14 s at 5M plays.
// Both, not one: with the track index alone SQLite answered a user's questions through it
// (5.4 s at 5M); a wider covering index (track_id, played_at, user_id, loved) made a user's
// top artists 4.6 s. `played_at` carries `track_id` so a period's top lists read no table row.
// `scrobbles_loved` holds the loved plays only (a twentieth of them in a seeded source; 1.5 s
// to build at 5M): the `loved_tracks` view and a user's loved tracks read nothing else.
pub const INDEXES: &str = "
CREATE UNIQUE INDEX albums_identity ON albums(artist_id, title);
CREATE UNIQUE INDEX tracks_identity ON tracks(artist_id, ifnull(album_id, 0), title);
CREATE INDEX tracks_album ON tracks(album_id);
CREATE INDEX scrobbles_played_at ON scrobbles(played_at, track_id);
CREATE INDEX scrobbles_track_played ON scrobbles(track_id, played_at);
CREATE INDEX scrobbles_user_played ON scrobbles(user_id, played_at);
CREATE INDEX scrobbles_loved ON scrobbles(user_id, track_id, played_at) WHERE loved = 1;
";

/// The indexes a target of schema version 1 lacks or has in an older form (its
/// `scrobbles_played_at` was on `played_at` alone), by name, with their definitions.
pub const INDEXES_SINCE_V2: [(&str, &str); 4] = [
    (
        "scrobbles_played_at",
        "CREATE INDEX scrobbles_played_at ON scrobbles(played_at, track_id)",
    ),
    (
        "scrobbles_track_played",
        "CREATE INDEX scrobbles_track_played ON scrobbles(track_id, played_at)",
    ),
    (
        "scrobbles_user_played",
        "CREATE INDEX scrobbles_user_played ON scrobbles(user_id, played_at)",
    ),
    (
        "scrobbles_loved",
        "CREATE INDEX scrobbles_loved ON scrobbles(user_id, track_id, played_at) WHERE loved = 1",
    ),
];

/// Indexes that `--indexes full` adds. Every target now has the query indexes
/// ([`INDEXES`]), so there are none; the option stays for scripts that pass it.
pub const QUERY_INDEXES: &str = "";

/// Which indexes a full load builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexSet {
    /// [`INDEXES`] only.
    #[default]
    Essential,
    /// [`INDEXES`] and [`QUERY_INDEXES`] (now the same set).
    Full,
}

/// The user-facing tables, for counts and checks.
pub const USER_TABLES: [&str; 5] = ["users", "artists", "albums", "tracks", "scrobbles"];

/// Statistics for the query planner: a sampled `ANALYZE`, then exact figures for the
/// scrobbles' indexes, whose sample of 1000 rows misjudges how many plays a track or a user
/// has (SQLite then walked the track index for a user's questions). Rows per track come from
/// `track_plays`, rows per user from `users`: both exact and cheap.
pub fn analyse(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.execute_batch("PRAGMA analysis_limit = 1000; ANALYZE;")?;
    let count = |sql: &str| -> rusqlite::Result<i64> { conn.query_row(sql, [], |r| r.get(0)) };
    let rows = count("SELECT count(*) FROM scrobbles")?;
    if rows == 0 {
        return Ok(());
    }
    let per = |keys: i64| (rows + keys.max(1) - 1) / keys.max(1);
    // Tracks with plays, from the summary when there is one.
    let tracks = count("SELECT count(*) FROM track_plays")
        .or_else(|_| count("SELECT count(DISTINCT track_id) FROM scrobbles"))?;
    let users = count("SELECT count(*) FROM users")?;
    let stats = [
        ("scrobbles_played_at", format!("{rows} 1 1")),
        (
            "scrobbles_track_played",
            format!("{rows} {} 1", per(tracks)),
        ),
        ("scrobbles_user_played", format!("{rows} {} 1", per(users))),
    ];
    for (index, stat) in stats {
        conn.execute(
            "DELETE FROM sqlite_stat1 WHERE tbl = 'scrobbles' AND idx = ?1",
            [index],
        )?;
        conn.execute(
            "INSERT INTO sqlite_stat1(tbl, idx, stat)
             SELECT 'scrobbles', ?1, ?2 WHERE EXISTS
               (SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?1)",
            [index, stat.as_str()],
        )?;
    }
    // Connections opened from now on read these; this one reloads them.
    conn.execute_batch("ANALYZE sqlite_schema")?;
    Ok(())
}
