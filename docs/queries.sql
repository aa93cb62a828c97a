-- The questions timed in the README's "Querying a target" table (5M plays, sqlite3 3.40, 2 cores).
-- Replace the user, artist and dates with your own. Time them with: sqlite3 music.sqlite '.timer on' '<query>'

-- top artists overall
SELECT a.name, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top albums overall
SELECT ar.name, al.title, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id JOIN artists ar ON ar.artist_id = al.artist_id GROUP BY t.album_id ORDER BY plays DESC LIMIT 10;

-- top tracks overall
SELECT t.title, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) GROUP BY s.track_id ORDER BY plays DESC LIMIT 10;

-- top artists of a user
SELECT a.name, count(*) AS plays FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE u.name = 'quisen_141' GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top tracks of a user
SELECT t.title, count(*) AS plays FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id) WHERE u.name = 'quisen_141' GROUP BY s.track_id ORDER BY plays DESC LIMIT 10;

-- top artists of a year
SELECT a.name, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE s.played_at >= unixepoch('2015-01-01') AND s.played_at < unixepoch('2016-01-01') GROUP BY t.artist_id ORDER BY plays DESC LIMIT 10;

-- top albums of a month
SELECT al.title, count(*) AS plays FROM scrobbles s JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id WHERE s.played_at >= unixepoch('2015-03-01') AND s.played_at < unixepoch('2015-04-01') GROUP BY t.album_id ORDER BY plays DESC LIMIT 10;

-- plays per year
SELECT strftime('%Y', played_at, 'unixepoch') AS year, count(*) FROM scrobbles GROUP BY year ORDER BY year;

-- plays per month
SELECT strftime('%Y-%m', played_at, 'unixepoch') AS month, count(*) FROM scrobbles GROUP BY month ORDER BY month;

-- plays per weekday
SELECT strftime('%w', played_at, 'unixepoch') AS weekday, count(*) FROM scrobbles GROUP BY weekday;

-- plays per hour
SELECT strftime('%H', played_at, 'unixepoch') AS hour, count(*) FROM scrobbles GROUP BY hour;

-- loved tracks of a user
SELECT a.name, t.title, count(*) AS plays FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE u.name = 'quisen_141' AND s.loved = 1 GROUP BY s.track_id ORDER BY plays DESC LIMIT 20;

-- loved albums of a user
SELECT al.title, count(*) AS plays FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id) JOIN albums al ON al.album_id = t.album_id WHERE u.name = 'quisen_141' AND s.loved = 1 GROUP BY t.album_id ORDER BY plays DESC LIMIT 20;

-- first and last play of an artist
SELECT datetime(min(s.played_at), 'unixepoch'), datetime(max(s.played_at), 'unixepoch') FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE a.name = 'Mumormupe #87';

-- first and last play of a track
SELECT datetime(min(s.played_at), 'unixepoch'), datetime(max(s.played_at), 'unixepoch') FROM scrobbles s WHERE s.track_id = (SELECT track_id FROM tracks WHERE title = (SELECT title FROM tracks LIMIT 1 OFFSET 1000) LIMIT 1);

-- an artist's plays per year
SELECT strftime('%Y', s.played_at, 'unixepoch') AS year, count(*) FROM scrobbles s JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id WHERE a.name = 'Mumormupe #87' GROUP BY year;

-- a user's first plays
SELECT datetime(s.played_at, 'unixepoch'), t.title FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id) WHERE u.name = 'quisen_141' ORDER BY s.played_at LIMIT 10;

-- top artists via plays
SELECT artist, count(*) AS plays FROM plays GROUP BY artist ORDER BY plays DESC LIMIT 10;

-- plays per year via plays
SELECT substr(played_at, 1, 4) AS year, count(*) FROM plays GROUP BY year ORDER BY year;

-- loved_tracks of a user
SELECT artist, track, loved_plays FROM loved_tracks WHERE user = 'quisen_141' ORDER BY loved_plays DESC LIMIT 10;

-- count plays
SELECT count(*) FROM plays;
