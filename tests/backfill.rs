//! Backfill and verify against a real PostgreSQL: exactly the changed months are reported,
//! backfill fixes only its windows, --repair fixes the rest, killed backfills resume.

mod common;

use common::*;
use predicates::prelude::*;
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;

fn verify(db: &TestDb, target: &Path, extra: &[&str]) -> (i32, Value) {
    let out = bin()
        .args(["verify", "--json", "--source", &db.url, "--target"])
        .arg(target)
        .args(extra)
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    assert!(
        code == 0 || code == 3,
        "verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

fn differing(report: &Value) -> Vec<String> {
    report["differing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["window"].as_str().unwrap().to_string())
        .collect()
}

fn backfill(db: &TestDb, target: &Path, args: &[&str]) -> Value {
    let out = bin()
        .args(["backfill", "--json", "--source", &db.url, "--target"])
        .arg(target)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "backfill: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn dims(conn: &Connection) -> Vec<(i64, String)> {
    let mut s = conn
        .prepare("SELECT artist_id, name FROM artists ORDER BY 1")
        .unwrap();
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn verify_reports_changed_months_and_backfill_repairs_them() {
    let db = TestDb::new("backfill");
    seed(&db, &["--rows", "30000", "--seed", "11"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b.sqlite");
    bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&target)
        .assert()
        .success();

    let (code, clean) = verify(&db, &target, &[]);
    assert_eq!(code, 0, "a fresh load verifies clean: {clean}");
    assert!(clean["windows_checked"].as_u64().unwrap() > 200);

    let mut client = db.client();
    let artists_before = dims(&Connection::open(&target).unwrap());
    client
        .batch_execute(
            "UPDATE scrobbles SET artist_name = 'Edited Artist'
              WHERE id IN (SELECT id FROM scrobbles WHERE played_at >= '2015-03-01Z' AND played_at < '2015-04-01Z' LIMIT 3);
             DELETE FROM scrobbles
              WHERE id IN (SELECT id FROM scrobbles WHERE played_at >= '2016-07-01Z' AND played_at < '2016-08-01Z' LIMIT 4);
             INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             SELECT (SELECT max(id) FROM scrobbles) + g, 'late importer', '2017-11-15 08:00:00.5Z',
                    'Back-dated Band', CASE WHEN g = 1 THEN NULL ELSE '' END, 'Old Song'
               FROM generate_series(1, 2) g;
             UPDATE scrobbles SET album_name = ''
              WHERE id = (SELECT id FROM scrobbles WHERE album_name IS NULL
                            AND played_at >= '2019-05-01Z' AND played_at < '2019-06-01Z' LIMIT 1);",
        )
        .unwrap();

    let (code, report) = verify(&db, &target, &[]);
    assert_eq!(code, 3, "differences exit with 3");
    assert_eq!(
        differing(&report),
        ["2015-03", "2016-07", "2017-11", "2019-05"]
    );
    let may = &report["differing"][3];
    assert_eq!(
        may["source_rows"], may["target_rows"],
        "NULL → '' changes content, not counts"
    );

    // Backfill one month: only that month is fixed.
    let s = backfill(
        &db,
        &target,
        &["--from", "2015-03-01", "--to", "2015-04-01"],
    );
    assert_eq!(s["windows_done"], 1);
    let (_, report) = verify(&db, &target, &[]);
    assert_eq!(differing(&report), ["2016-07", "2017-11", "2019-05"]);

    // --repair backfills exactly the rest and then verifies clean.
    let (code, report) = verify(&db, &target, &["--repair"]);
    assert_eq!(code, 0);
    assert_eq!(report["repaired"].as_array().unwrap().len(), 3);
    assert!(differing(&report["after_repair"]).is_empty());
    assert_lossless(&mut client, &target);

    // Existing keys never changed; the back-dated artist got a new one.
    let artists_after = dims(&Connection::open(&target).unwrap());
    assert_eq!(&artists_after[..artists_before.len()], &artists_before[..]);
    assert!(artists_after.iter().any(|(_, n)| n == "Back-dated Band"));

    // A range restricted verify only looks inside it.
    let (code, r) = verify(
        &db,
        &target,
        &["--from", "2015-01-01", "--to", "2016-01-01", "--by", "week"],
    );
    assert_eq!(code, 0);
    assert!(r["windows_checked"].as_u64().unwrap() <= 53);
}

#[test]
fn killed_backfill_leaves_whole_windows_and_resumes() {
    let db = TestDb::new("resume");
    seed(&db, &["--rows", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("r.sqlite");
    bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&target)
        .assert()
        .success();
    let mut client = db.client();
    // Change every month of the first half of 2018.
    client
        .batch_execute(
            "DELETE FROM scrobbles WHERE id IN (
                SELECT DISTINCT ON (date_trunc('month', played_at AT TIME ZONE 'UTC')) id FROM scrobbles
                 WHERE played_at >= '2018-01-01Z' AND played_at < '2018-07-01Z'
                 ORDER BY date_trunc('month', played_at AT TIME ZONE 'UTC'), id)",
        )
        .unwrap();
    let range = [
        "--from",
        "2018-01-01",
        "--to",
        "2018-07-01",
        "--by",
        "month",
    ];
    let out = bin()
        .args(["backfill", "--source", &db.url, "--target"])
        .arg(&target)
        .args(range)
        .env("SCROBSYNC_FAILPOINT", "abort-after-windows=2")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the failpoint kills the run");

    // Windows are whole: the first two are new, the other four still old.
    let (code, report) = verify(
        &db,
        &target,
        &["--from", "2018-01-01", "--to", "2018-07-01"],
    );
    assert_eq!(code, 3);
    assert_eq!(
        differing(&report),
        ["2018-03", "2018-04", "2018-05", "2018-06"]
    );

    // Run again without --resume: it says that the interrupted one could be continued (and is
    // killed at the same point again).
    let out = bin()
        .args(["backfill", "--source", &db.url, "--target"])
        .arg(&target)
        .args(range)
        .env("SCROBSYNC_FAILPOINT", "abort-after-windows=2")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("had finished 2 of 6 windows") && err.contains("--resume"),
        "{err}"
    );

    let mut args = range.to_vec();
    args.push("--resume");
    let s = backfill(&db, &target, &args);
    assert_eq!(s["windows_skipped"], 2);
    assert_eq!(s["windows_done"], 4);
    // Nothing left: --resume says so.
    let out = bin()
        .args(["backfill", "--source", &db.url, "--target"])
        .arg(&target)
        .args(&args)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to resume"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = verify(&db, &target, &[]);
    assert_eq!(code, 0);
    assert_lossless(&mut client, &target);
}

#[test]
fn prune_removes_unreferenced_dimension_rows_only_when_asked() {
    let db = TestDb::new("prune");
    seed(&db, &["--rows", "3000"]);
    let mut client = db.client();
    client
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
             VALUES (-5, 'ghost', '2020-02-02Z', 'Soon Gone', 'Vanishing')",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p.sqlite");
    bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&target)
        .assert()
        .success();
    client
        .batch_execute("DELETE FROM scrobbles WHERE id = -5")
        .unwrap();
    let count = |t: &Path| -> i64 {
        Connection::open(t)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM artists WHERE name = 'Soon Gone'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    backfill(
        &db,
        &target,
        &["--from", "2020-02-01", "--to", "2020-03-01"],
    );
    assert_eq!(count(&target), 1, "kept by default");
    let max_before: i64 = Connection::open(&target)
        .unwrap()
        .query_row("SELECT max(artist_id) FROM artists", [], |r| r.get(0))
        .unwrap();
    let s = backfill(
        &db,
        &target,
        &["--from", "2020-02-01", "--to", "2020-03-01", "--prune"],
    );
    assert_eq!(count(&target), 0);
    assert!(s["pruned"]["artists"].as_u64().unwrap() >= 1);
    assert_lossless(&mut client, &target);
    // A pruned key is never handed out again.
    client
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
             VALUES (-6, 'ghost', '2020-02-03Z', 'Newcomer', 'Fresh')",
        )
        .unwrap();
    backfill(
        &db,
        &target,
        &["--from", "2020-02-01", "--to", "2020-03-01"],
    );
    let id: i64 = Connection::open(&target)
        .unwrap()
        .query_row(
            "SELECT artist_id FROM artists WHERE name = 'Newcomer'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        id > max_before,
        "new key {id} must follow the pruned maximum {max_before}"
    );
}

#[test]
fn bad_backfill_and_verify_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("x.sqlite");
    let ts = t.to_str().unwrap();
    let url = "postgresql://postgres@127.0.0.1:5432/postgres";
    // Usage errors exit 2.
    for (args, code, msg) in [
        (
            vec!["backfill", "--from", "2024-02-01", "--to", "2024-01-01"],
            2,
            "--from must be before --to",
        ),
        (
            vec!["backfill", "--from", "2024-01-01", "--to", "2024-01-01"],
            2,
            "--from must be before --to",
        ),
        (
            vec!["backfill", "--from", "last tuesday", "--to", "2024-01-01"],
            2,
            "invalid value 'last tuesday' for '--from",
        ),
        (
            vec![
                "backfill",
                "--from",
                "2024-01-01",
                "--to",
                "2024-02-01",
                "--by",
                "year",
            ],
            2,
            "invalid value 'year' for '--by",
        ),
        (
            vec!["verify", "--by", "fortnight"],
            2,
            "possible values: day, week, month",
        ),
        (vec!["verify", "--from", "2024-13-45"], 2, "YYYY-MM-DD"),
    ] {
        bin()
            .args(&args)
            .args(["--source", url, "--target", ts])
            .assert()
            .code(code)
            .stderr(predicate::str::contains(msg));
    }
    assert!(!t.exists(), "nothing was created");
}

/// Every scrobble's album belongs to its track's artist (as a fresh load gives it).
fn album_artists_agree(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT count(*) FROM scrobbles s JOIN tracks t USING (track_id)
           JOIN albums a ON a.album_id = t.album_id WHERE a.artist_id <> t.artist_id",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn verify_sees_album_artists_and_stored_loved_values_and_repair_restores_them() {
    let db = TestDb::new("albumart");
    let mut c = db.client();
    c.batch_execute(scrobsync::modes::seed::SOURCE_DDL).unwrap();
    // Two artists with an album of the same title, a third with its own.
    c.batch_execute(
        "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name, loved)
         SELECT g, 'u' || (g % 3), '2024-01-01'::timestamptz + g * interval '7 hours',
                (ARRAY['X', 'Y', 'Z'])[1 + g % 3],
                CASE WHEN g % 3 = 2 THEN 'Other' WHEN g % 11 = 0 THEN NULL ELSE 'Same' END,
                'T' || (g % 4), g % 5 = 0
           FROM generate_series(1, 400) g",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.sqlite");
    let t = target.to_str().unwrap();
    bin()
        .args(["load", "--source", &db.url, "--target", t])
        .assert()
        .success();
    assert_eq!(verify(&db, &target, &[]).0, 0);
    let id =
        |conn: &Connection, sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let tamper: [&str; 11] = [
        // a track of X pointed at Y's album of the same title
        "UPDATE tracks SET album_id = (SELECT album_id FROM albums a JOIN artists r USING (artist_id) WHERE r.name = 'Y' AND a.title = 'Same')
          WHERE track_id = (SELECT min(t.track_id) FROM tracks t JOIN artists r USING (artist_id) WHERE r.name = 'X')",
        // Z's album moved to X
        "UPDATE albums SET artist_id = (SELECT artist_id FROM artists WHERE name = 'X')
          WHERE title = 'Other'",
        // a stored loved outside 0/1
        "UPDATE scrobbles SET loved = 2 WHERE scrobble_id = 10",
        // dimension rows gone (foreign keys are not enforced by default)
        "DELETE FROM users WHERE name = 'u1'",
        "DELETE FROM artists WHERE name = 'Y'",
        // two scrobbles' tracks swapped
        "UPDATE scrobbles SET track_id = CASE scrobble_id
              WHEN 20 THEN (SELECT track_id FROM scrobbles WHERE scrobble_id = 21)
              ELSE (SELECT track_id FROM scrobbles WHERE scrobble_id = 20) END
          WHERE scrobble_id IN (20, 21)",
        // a scrobble the source does not have (a duplicate under another id)
        "INSERT INTO scrobbles SELECT scrobble_id + 100000, user_id, track_id, played_at, loved
           FROM scrobbles WHERE scrobble_id = 30",
        // a play moved by one second
        "UPDATE scrobbles SET played_at = played_at + 1 WHERE scrobble_id = 40",
        // a track without album given album_id 0, which the tracks' unique index reads as none
        "UPDATE tracks SET album_id = 0 WHERE track_id = (SELECT min(track_id) FROM tracks WHERE album_id IS NULL AND track_id IN (SELECT track_id FROM scrobbles))",
        // microseconds written as seconds, and a time before any calendar: outside every window
        "UPDATE scrobbles SET played_at = played_at * 1000000 WHERE scrobble_id = 50",
        "UPDATE scrobbles SET played_at = -9000000000000 WHERE scrobble_id = 60",
    ];
    for sql in tamper {
        let conn = Connection::open(&target).unwrap();
        conn.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
            .unwrap();
        drop(conn);
        let (code, report) = verify(&db, &target, &[]);
        assert_eq!(code, 3, "{sql}: {report}");
        let (code, report) = verify(&db, &target, &["--repair"]);
        assert_eq!(code, 0, "{sql}: repaired: {report}");
        let conn = Connection::open(&target).unwrap();
        assert_eq!(album_artists_agree(&conn), 0, "{sql}");
        assert_eq!(
            id(
                &conn,
                "SELECT count(*) FROM scrobbles WHERE loved NOT IN (0, 1)"
            ),
            0
        );
        // Every scrobble as a fresh load gives it (the tampered rows stay, unreferenced).
        assert_eq!(source_tuples(&mut c), target_tuples(&conn), "{sql}");
    }
    // Without --attributes the summary says what was not compared.
    bin()
        .args(["verify", "--source", &db.url, "--target", t])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "were not compared: add --attributes",
        ));
}

#[test]
fn verify_checks_the_search_index_and_repair_rebuilds_it() {
    let db = TestDb::new("ftsverify");
    seed(&db, &["--rows", "3000", "--seed", "12"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("f.sqlite");
    bin()
        .args(["load", "--fts", "--source", &db.url, "--target"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(verify(&db, &target, &[]).0, 0);
    for sql in [
        // a name gone from the index
        "DELETE FROM names_fts WHERE rowid = (SELECT min(rowid) FROM names_fts)",
        // a renamed artist: its scrobbles differ, and the index keeps the old name
        "UPDATE artists SET name = name || ' (renamed)' WHERE artist_id = 1",
    ] {
        Connection::open(&target).unwrap().execute(sql, []).unwrap();
        let (code, report) = verify(&db, &target, &[]);
        assert_eq!(code, 3, "{sql}: {report}");
        assert_eq!(report["search_index_differs"], true, "{sql}");
        let (code, report) = verify(&db, &target, &["--repair"]);
        assert_eq!(code, 0, "{sql}: {report}");
        let conn = Connection::open(&target).unwrap();
        let stale: i64 = conn
            .query_row(
                "SELECT count(*) FROM names_fts WHERE name LIKE '%(renamed)%' AND kind = 'artist'
                   AND ref NOT IN (SELECT artist_id FROM artists WHERE name LIKE '%(renamed)%')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(stale, 0);
    }
    assert_eq!(verify(&db, &target, &[]).0, 0);
}
