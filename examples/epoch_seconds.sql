-- Example (a): other column names (mixed case, spaces, a reserved word), epoch-second times,
-- a rating instead of a loved flag, lengths in seconds.
CREATE SCHEMA IF NOT EXISTS music;
CREATE TABLE music."Plays" (
    "Play ID"   bigint PRIMARY KEY,
    "user"      text NOT NULL,
    ts          bigint NOT NULL,          -- seconds since 1970-01-01 UTC
    "Artist"    text NOT NULL,
    artist_mbid uuid,
    album       text,
    title       text NOT NULL,
    length_s    integer,
    rating      smallint
);
