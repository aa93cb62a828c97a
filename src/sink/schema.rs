//! The target schema: a contract users query directly, so names never change.
//!
//! Tables are created without secondary indexes; those are built after the data is in
//! ([`INDEXES`]), which is several times faster than maintaining them row by row.

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
// `plays` joins with LEFT JOINs although every key is there (NOT NULL, checked foreign keys):
// SQLite then leaves out the joins a query does not use, so `SELECT count(*) FROM plays` (what
// Datasette runs for every page of the view) counts scrobbles alone instead of joining five
// tables per row.
pub const VIEWS: &str = "
CREATE VIEW IF NOT EXISTS plays AS
SELECT s.scrobble_id, u.name AS user, a.name AS artist, al.title AS album, t.title AS track,
       strftime('%Y-%m-%dT%H:%M:%SZ', s.played_at, 'unixepoch') AS played_at,
       s.played_at AS played_at_epoch, s.loved
  FROM scrobbles s
  LEFT JOIN users u ON u.user_id = s.user_id
  LEFT JOIN tracks t ON t.track_id = s.track_id
  LEFT JOIN artists a ON a.artist_id = t.artist_id
  LEFT JOIN albums al ON al.album_id = t.album_id;
CREATE VIEW IF NOT EXISTS loved_tracks AS
SELECT u.name AS user, a.name AS artist, al.title AS album, t.title AS track,
       count(*) AS loved_plays,
       strftime('%Y-%m-%dT%H:%M:%SZ', max(s.played_at), 'unixepoch') AS last_played
  FROM scrobbles s
  JOIN users u ON u.user_id = s.user_id
  JOIN tracks t ON t.track_id = s.track_id
  JOIN artists a ON a.artist_id = t.artist_id
  LEFT JOIN albums al ON al.album_id = t.album_id
 WHERE s.loved = 1
 GROUP BY s.user_id, s.track_id;
";

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
