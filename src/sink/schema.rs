//! The target schema: a contract users query directly, so names never change.
//!
//! Tables are created without secondary indexes; those are built after the data is in
//! ([`INDEXES`]), which is several times faster than maintaining them row by row.

use rusqlite::OptionalExtension;

/// The version of this schema, stored as `schema_version` in `_scrobsync_state` by every load.
/// A build refuses a target whose version is greater (see `inspect`): it would not know what a
/// newer scrobsync changed, so it must neither write nor describe such a file. Raise it with any
/// change to [`TABLES`] or the state tables that an older build would get wrong.
pub const SCHEMA_VERSION: i64 = 1;

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

/// Views every target gets, for the questions people ask first (cost nothing to load). A
/// date before year 0 or after 9999 has no ISO text in SQLite: `played_at` is then NULL and
/// `played_at_epoch` still exact.
// The names come from correlated subqueries, not joins: a query that does not use a column
// never evaluates it, on every SQLite version, so `SELECT count(*) FROM (SELECT … FROM plays)`
// (what Datasette runs for every page of a view, within one second) counts scrobbles alone —
// with joins, SQLite 3.40 (Debian 12, the Python that Datasette runs on) joined five tables per
// row and took 16 s at 5M rows. A name that is missing (a damaged target) is NULL.
// `loved_tracks` groups a scan of the table (NOT INDEXED): with `--indexes full`, SQLite
// otherwise walked the user index to save the sort and looked every play up (12 s against
// 0.6 s at 5M rows).
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
          FROM scrobbles NOT INDEXED WHERE loved = 1 GROUP BY user_id, track_id) l",
    ),
];

/// Creates the views, and replaces one whose definition differs from this version's (the
/// names `plays` and `loved_tracks` belong to scrobsync; an older version's views are
/// brought up to date).
pub fn ensure_views(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    for (name, sql) in VIEWS {
        let current: Option<String> = conn
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?;
        if current.as_deref() != Some(sql) {
            conn.execute_batch(&format!("DROP VIEW IF EXISTS {name}; {sql};"))?;
        }
    }
    Ok(())
}

/// Indexes every target gets, built after the bulk load: the identity of albums and tracks
/// (what incremental runs look existing rows up by) and `played_at` (what backfill and verify
/// windows select by).
pub const INDEXES: &str = "
CREATE UNIQUE INDEX albums_identity ON albums(artist_id, title);
CREATE UNIQUE INDEX tracks_identity ON tracks(artist_id, ifnull(album_id, 0), title);
CREATE INDEX tracks_album ON tracks(album_id);
CREATE INDEX scrobbles_played_at ON scrobbles(played_at);
";

/// Indexes for typical listening-history queries (a user's plays over time, plays of a
/// track). On 5M scrobbles they cost about as much as the rest of the index build, so they
/// are opt-in: `--indexes full`, or create them later with this SQL.
pub const QUERY_INDEXES: &str = "
CREATE INDEX IF NOT EXISTS scrobbles_user_played ON scrobbles(user_id, played_at);
CREATE INDEX IF NOT EXISTS scrobbles_track ON scrobbles(track_id);
";

/// Which indexes a full load builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IndexSet {
    /// [`INDEXES`] only.
    #[default]
    Essential,
    /// [`INDEXES`] and [`QUERY_INDEXES`].
    Full,
}

/// The user-facing tables, for counts and checks.
pub const USER_TABLES: [&str; 5] = ["users", "artists", "albums", "tracks", "scrobbles"];
