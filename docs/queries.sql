-- Questions a target answers at once: the table in the README's "Querying a target" section,
-- timed by `scrobsync bench` (its "questions" step) on the target it loads.
-- Each question is a comment line and one statement, separated by blank lines. They take named
-- parameters; in the sqlite3 shell set them first, e.g.
--   .param set :user "'quisen_141'"
--   .param set :artist "'Radiohead'"
--   .param set :track "'Reckoner'"      (a track title of :artist)
--   .param set :year "'2015'"
--   .param set :month "'2015-03'"
-- The summary tables (artist_plays, album_plays, track_plays, hourly_plays) answer questions
-- over all plays; the indexes on scrobbles(played_at, track_id), (track_id, played_at) and
-- (user_id, played_at) answer questions about a period, an artist, a track or a user.

-- top artists overall
SELECT a.name AS artist, p.plays FROM (SELECT * FROM artist_plays ORDER BY plays DESC LIMIT 10) p JOIN artists a USING (artist_id) ORDER BY p.plays DESC;

-- top albums overall
SELECT ar.name AS artist, al.title AS album, p.plays FROM (SELECT * FROM album_plays ORDER BY plays DESC LIMIT 10) p JOIN albums al USING (album_id) JOIN artists ar ON ar.artist_id = al.artist_id ORDER BY p.plays DESC;

-- top tracks overall
SELECT a.name AS artist, t.title AS track, p.plays FROM (SELECT * FROM track_plays ORDER BY plays DESC LIMIT 10) p JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id ORDER BY p.plays DESC;

-- plays per year
SELECT strftime('%Y', hour, 'unixepoch') AS year, sum(plays) AS plays FROM hourly_plays GROUP BY year ORDER BY year;

-- plays per month
SELECT strftime('%Y-%m', hour, 'unixepoch') AS month, sum(plays) AS plays FROM hourly_plays GROUP BY month ORDER BY month;

-- plays per weekday (0 = Sunday, UTC)
SELECT strftime('%w', hour, 'unixepoch') AS weekday, sum(plays) AS plays FROM hourly_plays GROUP BY weekday ORDER BY weekday;

-- plays per hour of the day (UTC)
SELECT strftime('%H', hour, 'unixepoch') AS hour_of_day, sum(plays) AS plays FROM hourly_plays GROUP BY hour_of_day ORDER BY hour_of_day;

-- top artists of a year
SELECT a.name AS artist, sum(x.plays) AS plays FROM (SELECT track_id, count(*) AS plays FROM scrobbles WHERE played_at >= unixepoch(:year || '-01-01') AND played_at < unixepoch(:year || '-01-01', '+1 year') GROUP BY track_id) x JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top albums of a year
SELECT al.title AS album, sum(x.plays) AS plays FROM (SELECT track_id, count(*) AS plays FROM scrobbles WHERE played_at >= unixepoch(:year || '-01-01') AND played_at < unixepoch(:year || '-01-01', '+1 year') GROUP BY track_id) x JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id GROUP BY t.album_id ORDER BY plays DESC LIMIT 10;

-- top tracks of a month
SELECT t.title AS track, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) WHERE s.played_at >= unixepoch(:month || '-01') AND s.played_at < unixepoch(:month || '-01', '+1 month') GROUP BY s.track_id ORDER BY plays DESC LIMIT 10;

-- top artists of a month
SELECT a.name AS artist, sum(x.plays) AS plays FROM (SELECT track_id, count(*) AS plays FROM scrobbles WHERE played_at >= unixepoch(:month || '-01') AND played_at < unixepoch(:month || '-01', '+1 month') GROUP BY track_id) x JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top artists of a user
SELECT a.name AS artist, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top albums of a user
SELECT al.title AS album, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) GROUP BY t.album_id ORDER BY plays DESC LIMIT 10;

-- top tracks of a user
SELECT t.title AS track, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) GROUP BY s.track_id ORDER BY plays DESC LIMIT 10;

-- top artists of a user in a year
SELECT a.name AS artist, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) AND s.played_at >= unixepoch(:year || '-01-01') AND s.played_at < unixepoch(:year || '-01-01', '+1 year') GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- a user's plays per month
SELECT strftime('%Y-%m', played_at, 'unixepoch') AS month, count(*) AS plays FROM scrobbles WHERE user_id = (SELECT user_id FROM users WHERE name = :user) GROUP BY month ORDER BY month;

-- a user's loved tracks
SELECT a.name AS artist, t.title AS track, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) AND s.loved = 1 GROUP BY s.track_id ORDER BY plays DESC LIMIT 20;

-- a user's loved albums
SELECT al.title AS album, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) AND s.loved = 1 GROUP BY t.album_id ORDER BY plays DESC LIMIT 20;

-- a user's first plays
SELECT datetime(s.played_at, 'unixepoch') AS played_at, t.title AS track FROM scrobbles s JOIN tracks t USING (track_id) WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) ORDER BY s.played_at LIMIT 10;

-- a user's last plays
SELECT datetime(s.played_at, 'unixepoch') AS played_at, t.title AS track FROM scrobbles s JOIN tracks t USING (track_id) WHERE s.user_id = (SELECT user_id FROM users WHERE name = :user) ORDER BY s.played_at DESC LIMIT 10;

-- first and last play of an artist
SELECT datetime(min(s.played_at), 'unixepoch') AS first, datetime(max(s.played_at), 'unixepoch') AS last FROM tracks t JOIN scrobbles s USING (track_id) WHERE t.artist_id = (SELECT artist_id FROM artists WHERE name = :artist);

-- first and last play of a track
SELECT datetime(min(s.played_at), 'unixepoch') AS first, datetime(max(s.played_at), 'unixepoch') AS last FROM tracks t JOIN scrobbles s USING (track_id) WHERE t.artist_id = (SELECT artist_id FROM artists WHERE name = :artist) AND t.title = :track;

-- an artist's plays per year
SELECT strftime('%Y', s.played_at, 'unixepoch') AS year, count(*) AS plays FROM tracks t JOIN scrobbles s USING (track_id) WHERE t.artist_id = (SELECT artist_id FROM artists WHERE name = :artist) GROUP BY year ORDER BY year;

-- an artist's plays per month
SELECT strftime('%Y-%m', s.played_at, 'unixepoch') AS month, count(*) AS plays FROM tracks t JOIN scrobbles s USING (track_id) WHERE t.artist_id = (SELECT artist_id FROM artists WHERE name = :artist) GROUP BY month ORDER BY month;

-- an artist's top tracks
SELECT t.title AS track, p.plays FROM tracks t JOIN track_plays p USING (track_id) WHERE t.artist_id = (SELECT artist_id FROM artists WHERE name = :artist) ORDER BY p.plays DESC LIMIT 10;

-- a user's loved tracks through the loved_tracks view
SELECT artist, track, loved_plays FROM loved_tracks WHERE user = :user ORDER BY loved_plays DESC LIMIT 10;

-- count the plays view (what Datasette runs for its page)
SELECT count(*) FROM plays;
