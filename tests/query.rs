//! A target ready to query: the `plays` and `loved_tracks` views answer a user's first
//! questions exactly as the raw tables do, and `load --fts` + `scrobsync search` find names
//! (case- and accent-blind), kept current by sync and backfill.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::{json, Value};

fn ok(args: &[&str]) -> String {
    let o = bin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn views_answer_the_first_questions() {
    let db = TestDb::new("views");
    seed(&db, &["--rows", "8000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("v.sqlite");
    ok(&["load", "--source", &db.url, "--target", t.to_str().unwrap()]);
    let c = Connection::open(&t).unwrap();
    // top artists of all time
    assert_eq!(
        dump(&c, "SELECT artist, count(*) FROM plays GROUP BY artist ORDER BY 2 DESC, 1 LIMIT 10"),
        dump(
            &c,
            "SELECT a.name, count(*) FROM scrobbles s JOIN tracks t USING (track_id)
               JOIN artists a ON a.artist_id = t.artist_id GROUP BY a.artist_id ORDER BY 2 DESC, 1 LIMIT 10"
        )
    );
    // plays per year (ISO text where SQLite has one, and the exact epoch always)
    assert_eq!(
        dump(&c, "SELECT substr(played_at, 1, 4), count(*) FROM plays GROUP BY 1 ORDER BY 1"),
        dump(
            &c,
            "SELECT strftime('%Y', played_at, 'unixepoch'), count(*) FROM scrobbles GROUP BY 1 ORDER BY 1"
        )
    );
    let n: i64 = c
        .query_row("SELECT count(*) FROM plays", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 8000);
    // a user's loved tracks
    let user: String = c
        .query_row(
            "SELECT u.name FROM scrobbles s JOIN users u USING (user_id) WHERE s.loved = 1 LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let q = format!(
        "SELECT artist, track, loved_plays FROM loved_tracks WHERE user = '{}' ORDER BY 1, 2, 3",
        user.replace('\'', "''")
    );
    let raw = format!(
        "SELECT a.name, t.title, count(*) FROM scrobbles s JOIN users u USING (user_id)
           JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id
          WHERE s.loved = 1 AND u.name = '{}' GROUP BY s.track_id ORDER BY 1, 2, 3",
        user.replace('\'', "''")
    );
    let got = dump(&c, &q);
    assert!(!got.is_empty());
    assert_eq!(got, dump(&c, &raw));
}

#[test]
fn search_finds_names_and_stays_current() {
    let db = TestDb::new("fts");
    seed(&db, &["--rows", "8000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("s.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let o = bin()
        .args(["search", "radiohead", "--target", ts])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fts"));

    ok(&["load", "--fts", "--source", &db.url, "--target", ts]);
    let hits: Value =
        serde_json::from_str(&ok(&["search", "RADIOHEAD", "--json", "--target", ts])).unwrap();
    let names: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "artist")
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Radiohead") && names.contains(&"radiohead"),
        "{names:?}"
    );
    let text = ok(&["search", "sigur ros", "--target", ts]);
    assert!(text.contains("Sigur R"), "accents do not matter: {text}");

    // sync adds new names; backfill --prune removes the ones no play names any more
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9200000000000000000, 'u', '2021-03-03Z', 'Zebra Quintet', 'Stripes', 'Gallop')",
        )
        .unwrap();
    ok(&["sync", "--source", &db.url, "--target", ts]);
    let text = ok(&["search", "zebra", "--target", ts]);
    assert!(text.contains("Zebra Quintet"), "{text}");
    assert!(ok(&["search", "gallop", "--target", ts]).contains("Zebra Quintet"));
    db.client()
        .batch_execute("DELETE FROM scrobbles WHERE id = 9200000000000000000")
        .unwrap();
    ok(&[
        "backfill",
        "--prune",
        "--source",
        &db.url,
        "--target",
        ts,
        "--from",
        "2021-03-01",
        "--to",
        "2021-04-01",
    ]);
    assert!(ok(&["search", "zebra", "--target", ts]).contains("nothing matches"));
}

/// The query plan of `sql` (the detail column of EXPLAIN QUERY PLAN).
/// Named parameters stay unbound (NULL): the plan does not depend on their values.
fn plan(c: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        out.push(r.get::<_, String>(3).unwrap());
    }
    out
}

/// Datasette counts a view's rows with `select count(*) from (select <columns> from view)`,
/// within one second: that count must read scrobbles alone, on any SQLite (the names come from
/// subqueries a count never runs). A target with an older version's views gets these on its
/// next run.
#[test]
fn counting_a_view_reads_scrobbles_alone_and_old_views_are_replaced() {
    let db = TestDb::new("viewplan");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("p.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let c = Connection::open(&t).unwrap();
    for (view, columns) in [
        (
            "plays",
            "scrobble_id, user, artist, album, track, played_at, played_at_epoch, loved",
        ),
        (
            "loved_tracks",
            "user, artist, album, track, loved_plays, last_played",
        ),
    ] {
        let p = plan(
            &c,
            &format!("select count(*) from (select {columns} from {view} )"),
        );
        assert!(
            p.iter().all(|l| ["users", "artists", "albums", "tracks"]
                .iter()
                .all(|t| !l.contains(t))),
            "{view}: {p:?}"
        );
    }
    // An older version's view (joins) is replaced when a run opens the target.
    c.execute_batch(
        "DROP VIEW plays; CREATE VIEW plays AS SELECT s.scrobble_id, u.name AS user FROM scrobbles s
           JOIN users u ON u.user_id = s.user_id",
    )
    .unwrap();
    drop(c);
    ok(&["sync", "--source", &db.url, "--target", ts]);
    let c = Connection::open(&t).unwrap();
    let (sql, n): (String, i64) = c
        .query_row(
            "SELECT sql, (SELECT count(*) FROM plays WHERE artist IS NOT NULL AND track IS NOT NULL)
               FROM sqlite_master WHERE name = 'plays'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sql, scrobsync::sink::schema::VIEWS[0].1);
    assert_eq!(n, 3000);
}

/// The README's `datasette music.sqlite` opens every table and view as a browser sees them.
/// Needs `datasette` on PATH; `.ci/run` installs it and sets SCROBSYNC_REQUIRE_DATASETTE=1, so
/// there the test cannot pass without running it.
#[test]
fn datasette_opens_every_table_and_view() {
    let have = std::process::Command::new("datasette")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("SCROBSYNC_REQUIRE_DATASETTE").is_none(),
            "datasette is not installed (pip install datasette)"
        );
        eprintln!("datasette is not installed: skipped");
        return;
    }
    let db = TestDb::new("datasette");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("music.sqlite");
    ok(&[
        "load",
        "--fts",
        "--source",
        &db.url,
        "--target",
        t.to_str().unwrap(),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("datasette")
        .arg("serve")
        .arg(&t)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let code = body.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body))
    };
    let started = std::time::Instant::now();
    while get("/").is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "datasette did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let result = std::panic::catch_unwind(|| {
        for page in [
            "users",
            "artists",
            "albums",
            "tracks",
            "scrobbles",
            "plays",
            "loved_tracks",
            "names_fts",
            "artist_plays",
            "album_plays",
            "track_plays",
            "hourly_plays",
        ] {
            let (code, body) = get(&format!("/music/{page}")).unwrap();
            assert_eq!(
                code,
                200,
                "/music/{page}: {}",
                &body[..body.len().min(2000)]
            );
        }
        // foreign keys are expanded into names: a scrobble's track shows its title
        let title: String = Connection::open(&t)
            .unwrap()
            .query_row(
                "SELECT t.title FROM scrobbles s JOIN tracks t USING (track_id) ORDER BY s.scrobble_id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let (_, body) = get("/music/scrobbles?_sort=scrobble_id&_size=1").unwrap();
        let escaped = title
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        assert!(
            body.contains(&escaped) || body.contains(&title),
            "the track's title {title:?} is shown"
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// The summary tables, counted afresh from the scrobbles: (table, want, have) queries.
const SUMMARIES: [(&str, &str); 4] = [
    (
        "SELECT track_id, count(*) FROM scrobbles GROUP BY 1 ORDER BY 1",
        "SELECT track_id, plays FROM track_plays ORDER BY 1",
    ),
    (
        "SELECT t.artist_id, count(*) FROM scrobbles s JOIN tracks t USING (track_id) GROUP BY 1 ORDER BY 1",
        "SELECT artist_id, plays FROM artist_plays ORDER BY 1",
    ),
    (
        "SELECT t.album_id, count(*) FROM scrobbles s JOIN tracks t USING (track_id)
          WHERE t.album_id IS NOT NULL GROUP BY 1 ORDER BY 1",
        "SELECT album_id, plays FROM album_plays ORDER BY 1",
    ),
    (
        "SELECT strftime('%Y-%m-%d %H', played_at, 'unixepoch'), count(*) FROM scrobbles GROUP BY 1 ORDER BY 1",
        "SELECT strftime('%Y-%m-%d %H', hour, 'unixepoch'), plays FROM hourly_plays ORDER BY 1",
    ),
];

fn assert_summaries_exact(t: &std::path::Path, what: &str) {
    let c = Connection::open(t).unwrap();
    for (want, have) in SUMMARIES {
        let (w, h) = (dump(&c, want), dump(&c, have));
        assert!(!w.is_empty(), "{what}: {want}");
        assert!(w == h, "{what}: {have} differs from counting the scrobbles");
    }
}

/// Runs a sync that must succeed; returns its stderr.
fn sync_ok(db: &TestDb, ts: &str) -> String {
    let o = bin()
        .args(["sync", "--source", &db.url, "--target", ts])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    err
}

/// Runs a sync that must fail with exit code 1; returns its stderr.
fn sync_failing(db: &TestDb, ts: &str) -> String {
    let o = bin()
        .args(["sync", "--source", &db.url, "--target", ts])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    err
}

fn verify_json(db: &TestDb, ts: &str, repair: bool) -> (i32, Value) {
    let mut args = vec!["verify", "--json", "--source", &db.url, "--target", ts];
    if repair {
        args.push("--repair");
    }
    let o = bin().args(&args).output().unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    (o.status.code().unwrap_or(-1), v)
}

/// Plays per artist, album, track and hour are in tables that every mode keeps exact, and
/// `verify` compares them with the scrobbles: damage is reported and `--repair` recounts.
#[test]
fn summary_tables_answer_like_the_scrobbles_and_verify_guards_them() {
    let db = TestDb::new("summary");
    seed(&db, &["--rows", "6000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("s.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    assert_summaries_exact(&t, "after the load");

    // sync (new plays, new names), a repair of changed windows, a backfill that deletes, prune
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9100000000000000001, 'new user', '2021-03-01 00:59:59Z', 'New Artist', 'New Album', 'New Track'),
                    (9100000000000000002, 'new user', '2021-03-01 01:00:00Z', 'New Artist', NULL, 'Other');
             UPDATE scrobbles SET track_name = track_name || ' (live)'
              WHERE id IN (SELECT id FROM scrobbles ORDER BY id LIMIT 40);
             DELETE FROM scrobbles WHERE id IN (SELECT id FROM scrobbles ORDER BY id DESC OFFSET 2 LIMIT 30);",
        )
        .unwrap();
    ok(&["sync", "--source", &db.url, "--target", ts]);
    assert_summaries_exact(&t, "after the sync");
    let (code, v) = verify_json(&db, ts, true);
    assert_eq!(code, 0, "{v}");
    assert_summaries_exact(&t, "after the repair of changed windows");
    db.client()
        .batch_execute("DELETE FROM scrobbles WHERE id = 9100000000000000001")
        .unwrap();
    ok(&[
        "backfill",
        "--prune",
        "--source",
        &db.url,
        "--target",
        ts,
        "--from",
        "2021-03-01",
        "--to",
        "2021-04-01",
    ]);
    assert_summaries_exact(&t, "after the backfill");
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(
        (code, &v["summaries_differ"]),
        (0, &Value::Bool(false)),
        "{v}"
    );
    assert_eq!(v["summaries_compared"], true);

    for damage in [
        "UPDATE artist_plays SET plays = plays + 1 WHERE artist_id = (SELECT min(artist_id) FROM artist_plays)",
        "DELETE FROM hourly_plays WHERE hour = (SELECT max(hour) FROM hourly_plays)",
        "DROP TRIGGER tracks_counted_delete",
        // A summary table gone (every write then fails in its triggers) and a count as text.
        "DROP TABLE album_plays",
        "UPDATE track_plays SET plays = 'many' WHERE track_id = (SELECT min(track_id) FROM track_plays)",
    ] {
        Connection::open(&t).unwrap().execute_batch(damage).unwrap();
        let (code, v) = verify_json(&db, ts, false);
        assert_eq!(code, 3, "{damage}: {v}");
        assert_eq!(v["summaries_differ"], true, "{damage}: {v}");
        assert!(v["differing"].as_array().unwrap().is_empty(), "{v}");
        let o = bin()
            .args(["verify", "--source", &db.url, "--target", ts])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("verify --repair recounts them"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let (code, v) = verify_json(&db, ts, true);
        assert_eq!(code, 0, "{damage}: {v}");
        assert_eq!(v["after_repair"]["summaries_differ"], false);
        assert_summaries_exact(&t, damage);
    }
}

const DROP_SUMMARIES: &str = "DROP TABLE artist_plays; DROP TABLE album_plays; DROP TABLE track_plays;
     DROP TABLE hourly_plays; DROP TRIGGER scrobbles_counted_insert; DROP TRIGGER scrobbles_counted_delete;
     DROP TRIGGER scrobbles_counted_update; DROP TRIGGER tracks_counted_insert;
     DROP TRIGGER tracks_counted_delete; DROP TRIGGER tracks_counted_update;";

/// A target of this schema version whose summary tables are gone, altered or replaced by
/// views is damaged, never "a target without summaries": `verify` names what is wrong and
/// exits 3, and every write (sync, backfill, repair) restores and recounts them first.
#[test]
fn dropped_or_altered_summary_tables_are_reported_and_restored_by_the_next_write() {
    let db = TestDb::new("sumdamage");
    seed(&db, &["--rows", "4000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("d.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let damage = |sql: &str| Connection::open(&t).unwrap().execute_batch(sql).unwrap();
    let named = |v: &Value, what: &str| {
        v["summary_differences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.as_str().unwrap().contains(what))
    };

    // Everything dropped: reported, and a plain sync (no --repair) restores it.
    damage(DROP_SUMMARIES);
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(
        (code, &v["summaries_compared"]),
        (3, &Value::Bool(true)),
        "{v}"
    );
    for table in ["artist_plays", "album_plays", "track_plays", "hourly_plays"] {
        assert!(
            named(&v, &format!("table {table} is missing")),
            "{table}: {v}"
        );
    }
    assert!(named(&v, "trigger scrobbles_counted_insert"), "{v}");
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9200000000000000001, 'u', '2031-01-01Z', 'After Damage', 'A', 'T')",
        )
        .unwrap();
    ok(&["sync", "--source", &db.url, "--target", ts]);
    assert_summaries_exact(&t, "after a sync over dropped summaries");
    assert_eq!(verify_json(&db, ts, false).0, 0);

    // Altered columns, a view in a table's place, one table dropped: a backfill restores.
    damage(
        "DROP TABLE hourly_plays; CREATE VIEW hourly_plays AS SELECT 1 AS hour, 2 AS plays;
         DROP TABLE album_plays; CREATE TABLE album_plays(album_id INTEGER, plays TEXT);
         DROP TABLE track_plays;",
    );
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(code, 3, "{v}");
    assert!(named(&v, "hourly_plays is a view"), "{v}");
    assert!(named(&v, "table album_plays is altered"), "{v}");
    assert!(named(&v, "table track_plays is missing"), "{v}");
    let o = bin()
        .args(["verify", "--source", &db.url, "--target", ts])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("table album_plays is altered"), "{text}");
    ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        ts,
        "--from",
        "2031-01-01",
        "--to",
        "2031-01-02",
    ]);
    assert_summaries_exact(&t, "after a backfill over altered summaries");
    assert_eq!(verify_json(&db, ts, false).0, 0);

    // And verify --repair, through the same first write.
    damage(DROP_SUMMARIES);
    let (code, v) = verify_json(&db, ts, true);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["summaries_differ"], true, "{v}");
    assert_eq!(v["after_repair"]["summaries_differ"], false, "{v}");
    assert_summaries_exact(&t, "after verify --repair over dropped summaries");
}

/// Triggers someone else put on scrobsync's tables are named by `verify` and by every write;
/// one on a summary table is damage that the next write removes, and counts that a trigger on
/// the scrobbles corrupted are a difference that `verify --repair` recounts.
#[test]
fn triggers_of_others_are_named_and_cannot_hide_wrong_counts() {
    let db = TestDb::new("sumtrig");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    Connection::open(&t)
        .unwrap()
        .execute_batch(
            "CREATE TABLE audit_log(id INTEGER);
             CREATE TRIGGER audit AFTER INSERT ON scrobbles BEGIN
                 INSERT INTO audit_log VALUES (new.scrobble_id);
             END;
             CREATE TRIGGER inflate AFTER INSERT ON scrobbles BEGIN
                 UPDATE artist_plays SET plays = plays + 100;
             END;
             CREATE TRIGGER on_counts AFTER UPDATE ON track_plays BEGIN SELECT 1; END;",
        )
        .unwrap();
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(
        code, 3,
        "triggers on or naming scrobsync's tables are damage: {v}"
    );
    assert_eq!(
        v["foreign_triggers"],
        json!(["trigger audit on scrobbles"]),
        "{v}"
    );
    let damage = v["trigger_differences"].to_string();
    assert!(
        damage.contains("trigger inflate on scrobbles uses scrobsync's own table artist_plays")
            && damage.contains("trigger on_counts on track_plays is not scrobsync's"),
        "{v}"
    );

    // No write while a trigger could change scrobsync's counts behind its back.
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9130000000000000001, 'u', '2031-01-01Z', 'A', 'B', 'C')",
        )
        .unwrap();
    let before = std::fs::read(&t).unwrap();
    let err = sync_failing(&db, ts);
    assert!(
        err.contains("trigger inflate on scrobbles in")
            && err
                .contains("drop it (DROP TRIGGER \"inflate\") and run again; nothing was written"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&t).unwrap(),
        before,
        "the target is unchanged"
    );

    // Without it, the sync runs the owner's trigger and drops the one on the counts (and a
    // new track without an album references no album).
    Connection::open(&t)
        .unwrap()
        .execute_batch("DROP TRIGGER inflate")
        .unwrap();
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9130000000000000002, 'u', '2031-01-02Z', 'A', NULL, 'No album')",
        )
        .unwrap();
    let err = sync_ok(&db, ts);
    assert!(
        err.contains("trigger audit on scrobbles was not made by scrobsync")
            && err.contains("dropping trigger on_counts on track_plays"),
        "{err}"
    );
    let names = dump(
        &Connection::open(&t).unwrap(),
        "SELECT name FROM sqlite_master WHERE name IN ('audit', 'on_counts')",
    );
    assert!(
        names.len() == 1 && names[0].contains("audit"),
        "the owner's trigger stays, the one on counts goes: {names:?}"
    );
    assert_eq!(
        dump(
            &Connection::open(&t).unwrap(),
            "SELECT count(*) FROM audit_log"
        ),
        ["Integer(2)|"],
        "the owner's trigger ran for the new scrobbles"
    );
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(code, 0, "{v}");
    let o = bin()
        .args(["verify", "--source", &db.url, "--target", ts])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("note: trigger audit on scrobbles was not made by scrobsync"),
        "{text}"
    );

    // Counts changed behind scrobsync's back are a difference that a repair recounts.
    Connection::open(&t)
        .unwrap()
        .execute_batch("UPDATE artist_plays SET plays = plays + 100")
        .unwrap();
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(code, 3, "{v}");
    assert!(
        v["summary_differences"][0]
            .as_str()
            .unwrap()
            .starts_with("artist_plays: "),
        "{v}"
    );
    let (code, v) = verify_json(&db, ts, true);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["summaries_recounted"], true, "{v}");
    assert_summaries_exact(&t, "after the repair");

    // A verify of part of the range says that it did not compare the summaries.
    Connection::open(&t)
        .unwrap()
        .execute_batch("UPDATE track_plays SET plays = plays + 1")
        .unwrap();
    let o = bin()
        .args([
            "verify",
            "--source",
            &db.url,
            "--target",
            ts,
            "--from",
            "2031-01-01",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{text}");
    assert!(
        text.contains("the summary tables count the whole target and were not compared"),
        "{text}"
    );
}

/// Triggers on scrobsync's own tables (state, search index and its FTS5 shadow tables) are
/// damage that `verify` reports and the next write drops before it writes; a trigger of the
/// owner's that refuses or ignores rows is named in the error of the write it broke, and
/// nothing of that write is kept.
#[test]
fn triggers_on_scrobsync_s_tables_are_dropped_and_triggers_that_break_a_write_are_named() {
    let db = TestDb::new("owntrig");
    seed(&db, &["--rows", "2000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts, "--fts"]);
    Connection::open(&t)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER shadow AFTER INSERT ON names_fts_data BEGIN SELECT 1; END;
             CREATE TRIGGER runlog AFTER INSERT ON _scrobsync_runs BEGIN SELECT 1; END;",
        )
        .unwrap();
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(code, 3, "{v}");
    let diffs = v["trigger_differences"].to_string();
    assert!(
        diffs.contains("trigger shadow on names_fts_data is not scrobsync's")
            && diffs.contains("trigger runlog on _scrobsync_runs is not scrobsync's"),
        "{v}"
    );
    let add = |id: i64, artist: &str| {
        db.client()
            .batch_execute(&format!(
                "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
                 VALUES ({id}, 'u', '2031-01-01Z', '{artist}', 'B', 'C')"
            ))
            .unwrap();
    };
    add(9_130_000_000_000_000_001, "Brand New Artist");
    let err = sync_ok(&db, ts);
    assert!(
        err.contains("dropping trigger shadow on names_fts_data")
            && err.contains("dropping trigger runlog on _scrobsync_runs"),
        "{err}"
    );
    assert_eq!(verify_json(&db, ts, false).0, 0);
    let found = ok(&["search", "--target", ts, "brand new"]);
    assert!(found.contains("Brand New Artist"), "{found}");

    // A trigger of the owner's breaks the sync: it fails naming the trigger, keeping nothing.
    let failed_sync_with = |triggers: &str| {
        Connection::open(&t)
            .unwrap()
            .execute_batch(triggers)
            .unwrap();
        sync_failing(&db, ts)
    };
    let state = || {
        dump(
            &Connection::open(&t).unwrap(),
            "SELECT (SELECT count(*) FROM scrobbles), (SELECT value FROM _scrobsync_state WHERE key = 'hwm')",
        )
    };
    let before = state();
    add(9_130_000_000_000_000_002, "Another");
    let cases: [(&str, &[&str]); 5] = [
        // one that refuses rows: named, with what it said
        (
            "CREATE TRIGGER no_more BEFORE INSERT ON scrobbles BEGIN SELECT RAISE(ABORT, 'closed for writes'); END;",
            &[
                "a trigger refused this write to",
                "saying \"closed for writes\" (trigger no_more on scrobbles, not made by scrobsync); the write was rolled back",
            ],
        ),
        // one that ignores rows: blamed for the lost rows, not reported as a bug
        (
            "DROP TRIGGER no_more;
             CREATE TRIGGER skip BEFORE INSERT ON scrobbles BEGIN SELECT RAISE(IGNORE); END;",
            &[
                "trigger skip on scrobbles (not made by scrobsync) ran inside this write to",
                "may have caused what follows; the write was rolled back: 1 scrobbles row that this write gave the target",
            ],
        ),
        // one that ignores new dimension rows: the facts would point at nothing
        (
            "DROP TRIGGER skip;
             CREATE TRIGGER no_new_artists BEFORE INSERT ON artists BEGIN SELECT RAISE(IGNORE); END;",
            &[
                "trigger no_new_artists on artists (not made by scrobsync) ran inside this write",
                "1 artists row that this write gave the target or that its rows reference is not there after it",
            ],
        ),
        // one that deletes rows that were there before, elsewhere
        (
            "DROP TRIGGER no_new_artists;
             CREATE TRIGGER purge AFTER INSERT ON scrobbles BEGIN DELETE FROM users WHERE user_id = 1; END;",
            &[
                "trigger purge on scrobbles",
                "and the write added 0: something inside the write deleted or added users rows",
            ],
        ),
        // one that deletes what was just written, elsewhere
        (
            "DROP TRIGGER purge;
             CREATE TRIGGER forget AFTER INSERT ON scrobbles BEGIN DELETE FROM users WHERE user_id = new.user_id; END;",
            &["trigger forget on scrobbles", "users row"],
        ),
    ];
    for (triggers, says) in cases {
        let err = failed_sync_with(triggers);
        for part in says {
            assert!(err.contains(part), "{part:?} in {err}");
        }
        assert_eq!(state(), before, "the target is unchanged");
    }

    // A backfill runs beside an audit trigger, and fails beside one that deletes other
    // scrobbles, keeping the window as it was.
    let backfill = |triggers: &str| {
        Connection::open(&t)
            .unwrap()
            .execute_batch(triggers)
            .unwrap();
        bin()
            .args([
                "backfill",
                "--source",
                &db.url,
                "--target",
                ts,
                "--from",
                "2031-01-01",
                "--to",
                "2031-01-03",
            ])
            .output()
            .unwrap()
    };
    let o = backfill(
        "DROP TRIGGER forget;
         CREATE TABLE audit(id INTEGER);
         CREATE TRIGGER audited AFTER INSERT ON scrobbles BEGIN INSERT INTO audit VALUES (new.scrobble_id); END;",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let before = state();
    let o = backfill(
        "CREATE TRIGGER thin AFTER INSERT ON scrobbles BEGIN
             DELETE FROM scrobbles WHERE scrobble_id = (SELECT min(scrobble_id) FROM scrobbles);
         END;",
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("trigger thin on scrobbles")
            && err.contains("something inside the write deleted or added scrobbles rows"),
        "{err}"
    );
    assert_eq!(state(), before, "the target is unchanged");
}

/// Triggers are looked at inside every write transaction, under the write lock: one made
/// after a run opened the target (while it read the source) is found before anything is written.
#[test]
fn a_trigger_made_while_a_run_reads_the_source_is_found_by_its_write() {
    let db = TestDb::new("trigrace");
    seed(&db, &["--rows", "500"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts, "--fts"]);
    let target = scrobsync::sink::target::open(&t).unwrap();
    let other = Connection::open(&t).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER late BEFORE INSERT ON names_fts_data BEGIN SELECT RAISE(IGNORE); END;",
        )
        .unwrap();
    target.write(|_| Ok(())).unwrap();
    let left = dump(&other, "SELECT name FROM sqlite_master WHERE name = 'late'");
    assert!(left.is_empty(), "dropped by the write: {left:?}");
    other
        .execute_batch(
            "CREATE TRIGGER later AFTER INSERT ON scrobbles BEGIN DELETE FROM hourly_plays; END;",
        )
        .unwrap();
    let e = target
        .write(|c| {
            c.execute_batch("DELETE FROM scrobbles")?;
            Ok(())
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("trigger later on scrobbles in"), "{e}");
    let n = dump(&other, "SELECT count(*) FROM scrobbles");
    assert_eq!(n, ["Integer(500)|"], "nothing was written");
}

/// A version-1 target whose owner made an object under a summary table's name is not
/// upgraded over it: the write is refused naming the object, and nothing is changed.
#[test]
fn a_version_1_target_with_an_object_named_like_a_summary_table_is_not_upgraded_over_it() {
    let db = TestDb::new("sumoccupied");
    seed(&db, &["--rows", "2000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("o.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let c = Connection::open(&t).unwrap();
    c.execute_batch(DROP_SUMMARIES).unwrap();
    c.execute_batch(
        "UPDATE _scrobsync_state SET value = '1' WHERE key = 'schema_version';
         CREATE TABLE artist_plays(artist TEXT, note TEXT);
         INSERT INTO artist_plays VALUES ('mine', 'keep me');",
    )
    .unwrap();
    drop(c);
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(
        (code, &v["summaries_compared"]),
        (0, &Value::Bool(false)),
        "a version-1 target has no summaries to compare: {v}"
    );
    let err = sync_failing(&db, ts);
    assert!(
        err.contains("a table named 'artist_plays'") && err.contains("rename"),
        "{err}"
    );
    let c = Connection::open(&t).unwrap();
    let kept: String = c
        .query_row("SELECT note FROM artist_plays", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, "keep me");
    let version: String = c
        .query_row(
            "SELECT value FROM _scrobsync_state WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, "1", "nothing was changed");
}

/// A target written before the summary tables existed (schema version 1) gets them, with the
/// query indexes, on its next write; a read-only command leaves it as it is.
#[test]
fn a_target_of_schema_version_1_gets_its_summaries_on_the_next_write() {
    let db = TestDb::new("upgrade");
    seed(&db, &["--rows", "4000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("u.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    Connection::open(&t)
        .unwrap()
        .execute_batch(
            "DROP TABLE artist_plays; DROP TABLE album_plays; DROP TABLE track_plays;
             DROP TABLE hourly_plays; DROP INDEX scrobbles_track_played;
             DROP INDEX scrobbles_user_played; DROP INDEX scrobbles_played_at; DROP INDEX scrobbles_loved;
             CREATE INDEX scrobbles_played_at ON scrobbles(played_at);
             CREATE INDEX scrobbles_track ON scrobbles(track_id);
             DROP TRIGGER scrobbles_counted_insert; DROP TRIGGER scrobbles_counted_delete;
             DROP TRIGGER scrobbles_counted_update; DROP TRIGGER tracks_counted_insert;
             DROP TRIGGER tracks_counted_delete; DROP TRIGGER tracks_counted_update;
             UPDATE _scrobsync_state SET value = '1' WHERE key = 'schema_version';",
        )
        .unwrap();
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["summaries_compared"], false, "{v}");
    let version = |t: &std::path::Path| -> String {
        Connection::open(t)
            .unwrap()
            .query_row(
                "SELECT value FROM _scrobsync_state WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert_eq!(version(&t), "1", "verify only reads");
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9100000000000000009, 'u', '2030-05-05Z', 'Upgraded', 'A', 'T')",
        )
        .unwrap();
    ok(&["sync", "--source", &db.url, "--target", ts]);
    assert_eq!(version(&t), "2");
    assert_summaries_exact(&t, "after the upgrade");
    let c = Connection::open(&t).unwrap();
    let indexes = dump(
        &c,
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'scrobbles' ORDER BY name",
    );
    let want: Vec<String> = [
        "CREATE INDEX scrobbles_loved ON scrobbles(user_id, track_id, played_at) WHERE loved = 1",
        "CREATE INDEX scrobbles_played_at ON scrobbles(played_at, track_id)",
        "CREATE INDEX scrobbles_track_played ON scrobbles(track_id, played_at)",
        "CREATE INDEX scrobbles_user_played ON scrobbles(user_id, played_at)",
    ]
    .iter()
    .map(|s| format!("Text({s:?})|"))
    .collect();
    assert_eq!(indexes, want);
    let (code, v) = verify_json(&db, ts, false);
    assert_eq!(
        (code, &v["summaries_compared"]),
        (0, &Value::Bool(true)),
        "{v}"
    );
}

/// With the statistics a load writes, SQLite answers an artist's questions through the track
/// index and a user's through the user index (the wrong index made such questions 10–40×
/// slower), and the questions over all plays read the summary tables, not the scrobbles.
#[test]
fn questions_use_the_index_made_for_them() {
    let db = TestDb::new("plans");
    seed(&db, &["--rows", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("q.sqlite");
    ok(&["load", "--source", &db.url, "--target", t.to_str().unwrap()]);
    let c = Connection::open(&t).unwrap();
    let qs = scrobsync::sink::questions::parse(scrobsync::sink::questions::QUERIES);
    let find = |title: &str| -> String {
        qs.iter()
            .find(|q| q.title == title)
            .unwrap_or_else(|| panic!("no question '{title}'"))
            .sql
            .clone()
    };
    let uses = |title: &str, index: &str| {
        let p = plan(&c, &find(title));
        assert!(p.iter().any(|l| l.contains(index)), "{title}: {p:?}");
        p
    };
    uses("first and last play of an artist", "scrobbles_track_played");
    uses("an artist's plays per year", "scrobbles_track_played");
    for q in ["top artists of a user", "a user's first plays"] {
        let p = uses(q, "scrobbles_user_played");
        assert!(
            p.iter().all(|l| !l.contains("scrobbles_track_played")),
            "{q}: {p:?}"
        );
    }
    // loved plays come from the partial index of loved plays, through the view too
    uses("a user's loved tracks", "scrobbles_loved");
    uses(
        "a user's loved tracks through the loved_tracks view",
        "scrobbles_loved",
    );
    let p = plan(&c, "SELECT count(*) FROM loved_tracks");
    assert!(p.iter().any(|l| l.contains("scrobbles_loved")), "{p:?}");
    uses("top artists of a year", "scrobbles_played_at");
    for q in [
        "top artists overall",
        "top tracks overall",
        "plays per month",
    ] {
        let p = plan(&c, &find(q));
        assert!(p.iter().all(|l| !l.contains("scrobbles")), "{q}: {p:?}");
    }
    // and the answers are those of the plain tables
    let p = scrobsync::sink::questions::params(&c).unwrap();
    assert!(!p.user.is_empty() && !p.artist.is_empty() && !p.year.is_empty());
    let top: Vec<String> = dump(&c, &find("top artists overall"));
    let plain = dump(
        &c,
        "SELECT a.name, count(*) AS n FROM scrobbles s JOIN tracks t USING (track_id)
           JOIN artists a ON a.artist_id = t.artist_id GROUP BY t.artist_id ORDER BY n DESC LIMIT 10",
    );
    let counts = |v: &[String]| {
        v.iter()
            .map(|r| {
                r.trim_end_matches('|')
                    .rsplit('|')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&top), counts(&plain));
}
