-- Example (b): listens with a timestamptz, users in their own table, and the track metadata
-- (names and mbids) inside a jsonb document.
CREATE TABLE users (
    user_id serial PRIMARY KEY,
    name    text NOT NULL UNIQUE
);
CREATE TABLE listens (
    listen_id   bigint PRIMARY KEY,
    user_id     integer NOT NULL REFERENCES users,
    listened_at timestamptz NOT NULL,
    data        jsonb NOT NULL   -- {"artist", "artist_mbid", "album", "album_mbid", "track",
                                 --  "track_mbid", "duration_ms", "loved"}; absent keys are NULL
);
