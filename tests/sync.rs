//! Incremental sync against a real PostgreSQL: stable keys, idempotence, kills, time cursor.

mod common;

use common::*;
use predicates::prelude::*;
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;

fn run_json(args: &[&str]) -> Value {
    let out = bin().args(args).arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sync(db: &TestDb, target: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "sync",
        "--source",
        &db.url,
        "--target",
        target.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_json(&args)
}

const DIM_TABLES: [&str; 4] = [
    "SELECT user_id, name FROM users ORDER BY 1",
    "SELECT artist_id, name FROM artists ORDER BY 1",
    "SELECT album_id, artist_id, title FROM albums ORDER BY 1",
    "SELECT track_id, artist_id, album_id, title FROM tracks ORDER BY 1",
];

/// New rows: new and known artists, back-dated plays, new users, an mbid for a known artist.
const NEW_ROWS: &str = r#"
INSERT INTO scrobbles (id, username, played_at, artist_name, artist_mbid, album_name, album_mbid,
                       track_name, track_mbid, duration_ms, loved)
SELECT m + g, 'alice', '2024-05-01 12:00:00.25+00'::timestamptz, 'Radiohead', NULL::uuid, 'OK Computer', NULL::uuid, 'Airbag', NULL::uuid, 284000, g % 2 = 0
  FROM (SELECT max(id) AS m FROM scrobbles) s, generate_series(1, 50) g
UNION ALL
SELECT m + 100 + g, 'newcomer ' || (g % 3), '1999-02-03 04:05:06+00'::timestamptz, 'Brand New Artist ' || (g % 7), NULL::uuid,
       CASE WHEN g % 5 = 0 THEN NULL ELSE 'Debut' END, NULL::uuid, 'Song ' || (g % 11), NULL::uuid, NULL::int, false
  FROM (SELECT max(id) AS m FROM scrobbles) s, generate_series(1, 400) g
"#;

#[test]
fn sync_adds_only_new_rows_keeps_keys_and_is_idempotent() {
    let db = TestDb::new("sync");
    seed(&db, &["--rows", "20000", "--seed", "3"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("s.sqlite");

    let first = sync(&db, &target, &[]);
    assert_eq!(first["mode"], "load", "no target yet: full load");
    let conn = Connection::open(&target).unwrap();
    let before: Vec<Vec<String>> = DIM_TABLES.iter().map(|q| dump(&conn, q)).collect();
    let radiohead: i64 = conn
        .query_row(
            "SELECT artist_id FROM artists WHERE name = 'Radiohead'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    drop(conn);

    let mut client = db.client();
    client.batch_execute(NEW_ROWS).unwrap();
    let s = sync(&db, &target, &["--partitions", "2", "--batch-rows", "1000"]);
    assert_eq!(s["mode"], "sync");
    assert_eq!(s["rows"]["scrobbles"], 450);
    assert_eq!(s["rows"]["users"], 3);
    assert_eq!(s["rows"]["artists"], 7);
    assert!(s["mark_after"].as_i64() > s["mark_before"].as_i64());
    assert_lossless(&mut client, &target);

    let conn = Connection::open(&target).unwrap();
    for (q, old) in DIM_TABLES.iter().zip(&before) {
        let now = dump(&conn, q);
        assert_eq!(
            &now[..old.len()],
            &old[..],
            "existing rows of `{q}` changed"
        );
    }
    let reused: i64 = conn
        .query_row(
            "SELECT count(DISTINCT t.artist_id) FROM scrobbles s JOIN tracks t USING(track_id)
             JOIN users u USING(user_id) WHERE u.name = 'alice' AND t.title = 'Airbag'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(reused, 1);
    let aid: i64 = conn
        .query_row(
            "SELECT DISTINCT t.artist_id FROM tracks t WHERE t.title = 'Airbag'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(aid, radiohead, "known artist keeps its key");
    drop(conn);

    // Load + sync gives exactly what one full load of the same source gives.
    let full = dir.path().join("full.sqlite");
    run_json(&[
        "load",
        "--source",
        &db.url,
        "--target",
        full.to_str().unwrap(),
    ]);
    let (a, b) = (
        Connection::open(&target).unwrap(),
        Connection::open(&full).unwrap(),
    );
    for q in [
        "SELECT * FROM users ORDER BY 1",
        "SELECT * FROM artists ORDER BY 1",
        "SELECT * FROM albums ORDER BY 1",
        "SELECT * FROM tracks ORDER BY 1",
        "SELECT * FROM scrobbles ORDER BY 1",
    ] {
        assert!(dump(&a, q) == dump(&b, q), "`{q}` differs from a full load");
    }
    drop((a, b));

    // A second sync adds nothing.
    let again = sync(&db, &target, &[]);
    assert_eq!(again["rows"]["scrobbles"], 0);
    // At most the previous run's ids are read again: their re-check when writing
    // transactions (of any database on the server) were running at that run's mark.
    assert!(again["rows_read"].as_u64().unwrap() <= 450, "{again}");
    assert_eq!(again["mark_after"], s["mark_after"]);
    let status = run_json(&["status", "--target", target.to_str().unwrap()]);
    assert_eq!(status["rows"]["scrobbles"], 20_450);
    assert_eq!(status["high_water_mark"], s["mark_after"]);
    assert_eq!(status["last_runs"].as_array().unwrap().len(), 3);
    assert_eq!(status["last_runs"][0]["scrobbles_added"], 0);
}

#[test]
fn killed_sync_leaves_previous_state_and_next_run_completes() {
    let db = TestDb::new("kill");
    seed(&db, &["--rows", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("k.sqlite");
    sync(&db, &target, &[]);
    let status_before = run_json(&["status", "--target", target.to_str().unwrap()]);

    seed(&db, &["--rows", "30000"]);
    let out = bin()
        .args([
            "sync",
            "--source",
            &db.url,
            "--target",
            target.to_str().unwrap(),
        ])
        .args(["--partitions", "1", "--batch-rows", "2000"])
        .env("SCROBSYNC_FAILPOINT", "abort-after-windows=3")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint must kill the run");

    let status_after = run_json(&["status", "--target", target.to_str().unwrap()]);
    assert_eq!(
        status_after["rows"], status_before["rows"],
        "a killed run changes nothing"
    );
    assert_eq!(
        status_after["high_water_mark"],
        status_before["high_water_mark"]
    );
    assert_eq!(status_after["last_runs"], status_before["last_runs"]);
    let conn = Connection::open(&target).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    drop(conn);

    let s = sync(&db, &target, &[]);
    assert_eq!(s["rows"]["scrobbles"], 30_000);
    assert_lossless(&mut db.client(), &target);
}

#[test]
fn played_at_cursor_upserts_overlap_without_duplicates() {
    let db = TestDb::new("cursor");
    seed(&db, &["--rows", "3000"]);
    let mut client = db.client();
    // A source without a usable id order: drop the far-future rows the generator includes.
    client
        .batch_execute("DELETE FROM scrobbles WHERE played_at > '2026-11-01'")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("c.sqlite");
    let first = sync(&db, &target, &["--cursor", "played_at", "--lookback", "1d"]);
    assert_eq!(first["mode"], "load");

    // New plays with ids below existing ones, one late row inside the lookback window, and
    // an edit of a row inside the window (picked up by the upsert).
    client
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (-100, 'late', '2026-11-02 10:00:00+00', 'Cursor Band', NULL, 'One'),
                    (-101, 'late', '2026-11-02 10:00:01+00', 'Cursor Band', '', 'Two'),
                    (-102, 'late', (SELECT max(played_at) - interval '1 hour' FROM scrobbles WHERE id > 0), 'Lagging', NULL, 'Three');
             UPDATE scrobbles SET loved = NOT loved
              WHERE id = (SELECT id FROM scrobbles WHERE id > 0 ORDER BY played_at DESC LIMIT 1);",
        )
        .unwrap();
    let s = sync(&db, &target, &["--cursor", "played_at", "--lookback", "1d"]);
    assert_eq!(s["cursor"], "played_at");
    assert_eq!(
        s["rows"]["scrobbles"], 3,
        "only the three new rows are added"
    );
    assert!(
        s["rows_read"].as_u64().unwrap() > 3,
        "the overlap window is re-read"
    );
    assert_lossless(&mut client, &target);
    let again = sync(&db, &target, &["--cursor", "played_at", "--lookback", "1d"]);
    assert_eq!(again["rows"]["scrobbles"], 0);
    assert_lossless(&mut client, &target);
    // status shows the played_at mark as a time, not as microseconds.
    let out = bin()
        .args(["status", "--target", target.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("played_at mark 2026-11-02T"), "{text}");
}

#[test]
fn sync_refuses_bad_cursor_arguments_and_foreign_files() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("x.sqlite");
    let url = "postgresql://postgres@127.0.0.1:5432/postgres";
    bin()
        .args([
            "sync",
            "--source",
            url,
            "--target",
            t.to_str().unwrap(),
            "--cursor",
            "played_at",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--lookback"));
    // --lookback belongs to the played_at cursor: a usage error too.
    bin()
        .args([
            "sync",
            "--source",
            url,
            "--target",
            t.to_str().unwrap(),
            "--lookback",
            "1d",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains(
            "--lookback only applies to --cursor played_at",
        ));
    bin()
        .args([
            "sync",
            "--source",
            url,
            "--target",
            t.to_str().unwrap(),
            "--cursor",
            "played_at",
            "--lookback",
            "3x",
        ])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("invalid duration"));
    std::fs::write(&t, b"not a database at all, just some bytes in a file").unwrap();
    bin()
        .args(["sync", "--source", url, "--target", t.to_str().unwrap()])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("not a").and(predicates::str::contains("x.sqlite")));
    assert_eq!(
        std::fs::read(&t).unwrap(),
        b"not a database at all, just some bytes in a file"
    );
    bin()
        .args([
            "status",
            "--target",
            dir.path().join("none.sqlite").to_str().unwrap(),
        ])
        .assert()
        .code(1)
        .stderr(predicates::str::contains("does not exist"));
}

/// A source whose ids come from a sequence, as applications insert them.
fn sequence_source(db: &TestDb) -> postgres::Client {
    let mut c = db.client();
    c.batch_execute(scrobsync::modes::seed::SOURCE_DDL).unwrap();
    c.batch_execute(
        "CREATE SEQUENCE plays_seq;
         ALTER TABLE scrobbles ALTER COLUMN id SET DEFAULT nextval('plays_seq');
         INSERT INTO scrobbles (username, played_at, artist_name, track_name)
         SELECT 'u' || (g % 5), '2024-01-01'::timestamptz + g * interval '1 minute', 'A' || (g % 9), 'T' || g
           FROM generate_series(1, 300) g;",
    )
    .unwrap();
    c
}

const ONE_PLAY: &str =
    "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name) VALUES ($1, 'late', now(), 'Late Artist', 'Late Track')";

#[test]
fn an_id_drawn_before_a_sync_and_committed_after_it_arrives_with_the_next_sync() {
    let db = TestDb::new("earlyid");
    let mut app = sequence_source(&db);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.sqlite");
    sync(&db, &target, &[]);

    for round in 0..2 {
        // A pooled-sequence application takes its id first and inserts later; meanwhile
        // another writer commits a greater id and a sync moves the mark past both.
        let early: i64 = app
            .query_one("SELECT nextval('plays_seq')", &[])
            .unwrap()
            .get(0);
        let mut other = db.client();
        other
            .execute(
                "INSERT INTO scrobbles (username, played_at, artist_name, track_name) VALUES ('b', now(), 'B', 'B')",
                &[],
            )
            .unwrap();
        let s = sync(&db, &target, &[]);
        assert_eq!(s["rows"]["scrobbles"], 1, "round {round}: {s}");
        assert!(s["mark_after"].as_i64().unwrap() > early);
        app.execute(ONE_PLAY, &[&early]).unwrap();

        let s = sync(&db, &target, &[]);
        assert_eq!(
            s["rows"]["scrobbles"], 1,
            "round {round}: the late row arrives: {s}"
        );
        assert_eq!(s["late_rows"], 1);
        let conn = Connection::open(&target).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM scrobbles WHERE scrobble_id = ?1",
                [early],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "round {round}");
        // Once there, it is not counted again.
        let s = sync(&db, &target, &[]);
        assert_eq!(s["rows"]["scrobbles"], 0);
        assert_eq!(s["late_rows"], 0);
        // The run log records the time the summary reports.
        let logged: f64 = Connection::open(&target)
            .unwrap()
            .query_row(
                "SELECT seconds FROM _scrobsync_runs ORDER BY run_id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(logged, s["seconds"]["total"].as_f64().unwrap());
    }
    assert_lossless(&mut app, &target);
    assert_eq!(verify_code(&db, &target), 0);
}

#[test]
fn a_row_held_in_a_slow_trigger_while_a_sync_runs_arrives_with_the_next_sync() {
    let db = TestDb::new("slowtrig");
    let mut app = sequence_source(&db);
    app.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.username = 'slow' THEN PERFORM pg_sleep(3); END IF; RETURN NEW; END $$;
         CREATE TRIGGER slow BEFORE INSERT ON scrobbles FOR EACH ROW EXECUTE FUNCTION slow();",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.sqlite");
    // The first run is a full load: its newest ids' gaps are kept too.
    let url = db.url.clone();
    let slow = std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.execute(
            "INSERT INTO scrobbles (username, played_at, artist_name, track_name) VALUES ('slow', now(), 'S', 'S')",
            &[],
        )
        .unwrap();
    });
    // The slow insert has drawn its id and sits in its trigger, without a transaction id.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let drawn: bool = app
            .query_one("SELECT last_value > 300 FROM plays_seq", &[])
            .unwrap()
            .get(0);
        if drawn || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    app.execute(
        "INSERT INTO scrobbles (username, played_at, artist_name, track_name) VALUES ('fast', now(), 'F', 'F')",
        &[],
    )
    .unwrap();
    let first = sync(&db, &target, &[]);
    assert_eq!(first["mode"], "load");
    slow.join().unwrap();

    let s = sync(&db, &target, &[]);
    // nextval takes a transaction id when it writes the sequence's WAL (every 32 values, or
    // after a checkpoint): then the load waits for the slow row and takes it itself.
    let loaded = first["rows"]["scrobbles"].as_u64().unwrap();
    assert!(loaded == 301 || loaded == 302, "{first}");
    assert_eq!(
        loaded + s["rows"]["scrobbles"].as_u64().unwrap(),
        302,
        "{s}"
    );
    assert_eq!(s["late_rows"].as_u64().unwrap(), 302 - loaded);
    assert_lossless(&mut app, &target);
}

#[test]
fn a_source_that_became_empty_does_not_move_the_mark() {
    let db = TestDb::new("emptied");
    let mut c = db.client();
    c.batch_execute(scrobsync::modes::seed::SOURCE_DDL).unwrap();
    c.batch_execute(
        "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
         SELECT -100 + g, 'u', '2024-01-01'::timestamptz, 'A', 'T' || g FROM generate_series(0, 40) g",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("e.sqlite");
    sync(&db, &target, &[]);
    c.batch_execute("DELETE FROM scrobbles").unwrap();
    let s = sync(&db, &target, &[]);
    assert_eq!(s["mark_after"], -60, "{s}");
    // A new row above every id ever used, but below 0.
    c.batch_execute(
        "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
         VALUES (-50, 'u', '2024-02-01', 'A', 'New')",
    )
    .unwrap();
    let s = sync(&db, &target, &[]);
    assert_eq!(s["rows"]["scrobbles"], 1, "{s}");
    assert_eq!(s["mark_after"], -50);
}

#[test]
fn more_open_ids_than_are_kept_are_merged_not_lost() {
    let db = TestDb::new("manygaps");
    let mut app = sequence_source(&db);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("g.sqlite");
    sync(&db, &target, &[]);
    let held: i64 = app
        .query_one("SELECT nextval('plays_seq')", &[])
        .unwrap()
        .get(0);
    // A sequence shared with other tables leaves a gap after every row: 25,000 of them.
    app.execute(
        "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
         SELECT $1::int8 + 2 * g, 'u', now(), 'A', 'T' || (g % 50) FROM generate_series(1, 25000) g",
        &[&held],
    )
    .unwrap();
    let s = sync(&db, &target, &[]);
    assert_eq!(s["rows"]["scrobbles"], 25000);
    let kept: i64 = Connection::open(&target)
        .unwrap()
        .query_row("SELECT count(*) FROM _scrobsync_open_ids", [], |r| r.get(0))
        .unwrap();
    assert!(kept <= 20_000, "{kept}");
    app.execute(ONE_PLAY, &[&held]).unwrap();
    let s = sync(&db, &target, &[]);
    assert_eq!(s["late_rows"], 1, "{s}");
    assert_eq!(
        s["rows"]["scrobbles"], 1,
        "rows read again are not counted: {s}"
    );
    assert_lossless(&mut app, &target);
}
