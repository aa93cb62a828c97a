//! The target schema: a contract users query directly, so names never change.
//!
//! Tables are created without secondary indexes; those are built after the data is in
//! ([`INDEXES`]), which is several times faster than maintaining them row by row.

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
    artist_id INTEGER NOT NULL REFERENCES artists,
    title TEXT NOT NULL,
    mbid TEXT
);
CREATE TABLE tracks(
    track_id INTEGER PRIMARY KEY,
    artist_id INTEGER NOT NULL REFERENCES artists,
    album_id INTEGER REFERENCES albums,
    title TEXT NOT NULL,
    mbid TEXT,
    duration_ms INTEGER
);
CREATE TABLE scrobbles(
    scrobble_id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users,
    track_id INTEGER NOT NULL REFERENCES tracks,
    played_at INTEGER NOT NULL,
    loved INTEGER NOT NULL
);
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
