//! Every mode agrees with a full load: the incremental modes (sync, backfill, verify --repair)
//! against a fresh full load of the same final source, on hand-made edge cases and on random
//! histories of source edits.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = run(&a);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

fn fails(args: &[&str], expect: &[&str]) -> String {
    let o = run(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
    for x in expect {
        assert!(e.contains(x), "expected '{x}' in: {e}");
    }
    e
}

fn one(target: &Path, sql: &str) -> i64 {
    Connection::open(target)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// The target as natural keys: every scrobble joined to its names (what a fresh full load of
/// the same source must give, whatever the surrogate keys are).
fn natural(target: &Path) -> Vec<String> {
    dump(
        &Connection::open(target).unwrap(),
        "SELECT s.scrobble_id, u.name, s.played_at, a.name, al.title, t.title, s.loved,
                al.artist_id = t.artist_id OR al.artist_id IS NULL
           FROM scrobbles s JOIN users u USING (user_id) JOIN tracks t USING (track_id)
           JOIN artists a ON a.artist_id = t.artist_id LEFT JOIN albums al ON al.album_id = t.album_id
          ORDER BY 1",
    )
}

/// The attributes of every entity the target's scrobbles reference, by natural key.
fn attributes(target: &Path) -> Vec<String> {
    let c = Connection::open(target).unwrap();
    let mut out = dump(
        &c,
        "SELECT 'artist', name, mbid FROM artists WHERE artist_id IN
           (SELECT artist_id FROM tracks WHERE track_id IN (SELECT track_id FROM scrobbles)) ORDER BY 2",
    );
    out.extend(dump(
        &c,
        "SELECT 'album', a.name, al.title, al.mbid FROM albums al JOIN artists a USING (artist_id)
          WHERE album_id IN (SELECT album_id FROM tracks WHERE track_id IN (SELECT track_id FROM scrobbles))
          ORDER BY 2, 3",
    ));
    out.extend(dump(
        &c,
        "SELECT 'track', a.name, al.title, t.title, t.mbid, t.duration_ms
           FROM tracks t JOIN artists a ON a.artist_id = t.artist_id
           LEFT JOIN albums al ON al.album_id = t.album_id
          WHERE t.track_id IN (SELECT track_id FROM scrobbles) ORDER BY 2, 3, 4",
    ));
    out
}

fn fresh_load(db: &TestDb, dir: &Path) -> std::path::PathBuf {
    let fresh = dir.join("fresh.sqlite");
    ok(&[
        "load",
        "--source",
        &db.url,
        "--target",
        fresh.to_str().unwrap(),
    ]);
    fresh
}

fn assert_same_attributes_as_full_load(db: &TestDb, target: &Path, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = fresh_load(db, dir.path());
    assert!(
        attributes(target) == attributes(&fresh),
        "{what}: attributes differ from a full load"
    );
}

fn assert_same_as_full_load(db: &TestDb, target: &Path, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fresh = fresh_load(db, dir.path());
    let (a, b) = (natural(target), natural(&fresh));
    assert_eq!(
        a.len(),
        b.len(),
        "{what}: row counts differ from a full load"
    );
    assert!(a == b, "{what}: the target differs from a full load");
    let fk: i64 = one(target, "SELECT count(*) FROM pragma_foreign_key_check");
    assert_eq!(fk, 0, "{what}: dangling keys");
    assert_eq!(summary_drift(target), 0, "{what}: summary tables drifted");
}

/// Rows in which the summary tables differ from counting the scrobbles afresh.
fn summary_drift(target: &Path) -> i64 {
    let both = |have: &str, want: &str| {
        format!(
            "(SELECT count(*) FROM (SELECT * FROM {have} EXCEPT {want})) + \
             (SELECT count(*) FROM ({want} EXCEPT SELECT * FROM {have}))"
        )
    };
    let per = |key: &str, filter: &str| {
        format!(
            "SELECT t.{key}, count(*) FROM scrobbles s JOIN tracks t USING (track_id) {filter} GROUP BY 1"
        )
    };
    let sql = [
        both("track_plays", "SELECT track_id, count(*) FROM scrobbles GROUP BY 1"),
        both("artist_plays", &per("artist_id", "")),
        both("album_plays", &per("album_id", "WHERE t.album_id IS NOT NULL")),
        both(
            "hourly_plays",
            "SELECT played_at - ((played_at % 3600) + 3600) % 3600, count(*) FROM scrobbles GROUP BY 1",
        ),
    ]
    .join(" + ");
    one(target, &format!("SELECT {sql}"))
}

const INSERT: &str =
    "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name) VALUES";

#[test]
fn pruned_greatest_keys_are_never_handed_out_again() {
    let db = TestDb::new("prunemax");
    seed(&db, &["--rows", "2000"]);
    let mut c = db.client();
    // The rows with the greatest ids bring the newest artist, album and track: greatest keys.
    c.batch_execute(&format!(
        "{INSERT} (9000000000000000001, 'u', '2020-02-02Z', 'Last Artist', 'Last Album', 'Last Track')"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    let max = |table: &str, key: &str| one(&target, &format!("SELECT max({key}) FROM {table}"));
    let before = [
        max("artists", "artist_id"),
        max("albums", "album_id"),
        max("tracks", "track_id"),
    ];
    assert_eq!(
        one(
            &target,
            "SELECT artist_id FROM artists WHERE name = 'Last Artist'"
        ),
        before[0]
    );
    c.batch_execute("DELETE FROM scrobbles WHERE id = 9000000000000000001")
        .unwrap();
    let s = ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2020-02-01",
        "--to",
        "2020-03-01",
        "--prune",
    ]);
    assert!(s["pruned"]["artists"].as_u64().unwrap() >= 1, "{s}");
    c.batch_execute(&format!(
        "{INSERT} (9000000000000000002, 'u', '2024-01-01Z', 'Brand New', 'New Album', 'New Track')"
    ))
    .unwrap();
    ok(&["sync", "--source", &db.url, "--target", t]);
    let got = [
        one(
            &target,
            "SELECT artist_id FROM artists WHERE name = 'Brand New'",
        ),
        one(
            &target,
            "SELECT album_id FROM albums WHERE title = 'New Album'",
        ),
        one(
            &target,
            "SELECT track_id FROM tracks WHERE title = 'New Track'",
        ),
    ];
    for (g, b) in got.iter().zip(before) {
        assert!(g > &b, "new key {g} must follow the pruned maximum {b}");
    }
}

/// The row that gave an artist its mbid changes: backfill keeps the old value (documented),
/// verify reports the artists' attributes, and --repair recomputes them from the source.
#[test]
fn changed_attributes_are_reported_and_repaired() {
    let (db, _dir, target) = loaded("attrs", "5000", "a.sqlite");
    let t = target.to_str().unwrap();
    let mut c = db.client();
    let row = c
        .query_one(
            "UPDATE scrobbles SET artist_mbid = 'aaaaaaaa-0000-4000-8000-000000000001', duration_ms = 4242
              WHERE id = (SELECT min(id) FROM scrobbles WHERE artist_mbid IS NOT NULL)
             RETURNING artist_name, to_char(played_at AT TIME ZONE 'UTC', 'YYYY-MM-01')",
            &[],
        )
        .unwrap();
    let (artist, month): (String, String) = (row.get(0), row.get(1));
    let next = format!("{}-01", {
        let (y, m): (i32, u32) = (month[..4].parse().unwrap(), month[5..7].parse().unwrap());
        if m == 12 {
            format!("{:04}-01", y + 1)
        } else {
            format!("{y:04}-{:02}", m + 1)
        }
    });
    ok(&[
        "backfill", "--source", &db.url, "--target", t, "--from", &month, "--to", &next,
    ]);
    let plain = run(&["verify", "--source", &db.url, "--target", t]);
    assert_eq!(plain.status.code(), Some(0), "the windows alone match");
    let o = run(&[
        "verify",
        "--attributes",
        "--json",
        "--source",
        &db.url,
        "--target",
        t,
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        report["differing"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        report["attributes_differ"]
            .as_array()
            .unwrap()
            .contains(&Value::from("artists")),
        "{report}"
    );
    let r = ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
    assert!(r["attributes_repaired"].as_u64().unwrap() >= 1, "{r}");
    let mbid: String = Connection::open(&target)
        .unwrap()
        .query_row("SELECT mbid FROM artists WHERE name = ?1", [&artist], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(mbid, "aaaaaaaa-0000-4000-8000-000000000001");
    assert_same_attributes_as_full_load(&db, &target, "after --repair");
    assert_eq!(
        run(&["verify", "--attributes", "--source", &db.url, "--target", t])
            .status
            .code(),
        Some(0)
    );
}

/// Rows a backfill wrote above the mark, deleted in the source before the next sync: the sync
/// reads fewer rows of that id range than the target holds, which is no loss (sync does not
/// delete; verify finds the row, backfill removes it) and must not stop every later sync.
#[test]
fn a_sync_goes_on_when_the_source_deleted_rows_above_the_mark() {
    let (db, _dir, target) = loaded("delabove", "2000", "d.sqlite");
    let t = target.to_str().unwrap();
    let mut c = db.client();
    c.batch_execute(&format!(
        "{INSERT} (9100000000000000011, 'u', '2022-02-02Z', 'a', NULL, 'x'),
                  (9100000000000000012, 'u', '2022-02-03Z', 'a', NULL, 'y')"
    ))
    .unwrap();
    ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2022-02-01",
        "--to",
        "2022-03-01",
    ]);
    c.batch_execute("DELETE FROM scrobbles WHERE id = 9100000000000000012")
        .unwrap();
    let s = ok(&["sync", "--source", &db.url, "--target", t]);
    assert_eq!(s["rows"]["scrobbles"], 0, "{s}");
    ok(&["sync", "--source", &db.url, "--target", t]);
    let o = run(&["verify", "--source", &db.url, "--target", t]);
    assert_eq!(o.status.code(), Some(3), "verify reports the deleted row");
    ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2022-02-01",
        "--to",
        "2022-03-01",
    ]);
    assert_same_as_full_load(&db, &target, "after the backfill");
}

#[test]
fn empty_windows_are_normal_windows() {
    let (db, _dir, target) = loaded("emptywin", "20000", "e.sqlite");
    let t = target.to_str().unwrap();
    let s = ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2030-01-01",
        "--to",
        "2030-03-01",
    ]);
    assert_eq!(s["windows_done"], 2);
    assert_eq!(s["rows_written"], 0);
    // Every row of one month deleted in the source: verify reports it, repair empties it.
    db.client()
        .batch_execute(
            "DELETE FROM scrobbles WHERE played_at >= '2015-03-01Z' AND played_at < '2015-04-01Z'",
        )
        .unwrap();
    let o = run(&["verify", "--source", &db.url, "--target", t]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let month =
        "SELECT count(*) FROM scrobbles WHERE played_at >= 1425168000 AND played_at < 1427846400";
    let in_month = one(&target, month);
    assert!(in_month > 0);
    ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
    assert_eq!(one(&target, month), 0);
    // The repair is in the run log, with the net change of the scrobble count.
    assert_eq!(
        one(
            &target,
            "SELECT rows_scrobbles FROM _scrobsync_runs WHERE mode = 'verify-repair' ORDER BY run_id DESC LIMIT 1"
        ),
        -in_month
    );
    assert_same_as_full_load(&db, &target, "after repairing an emptied month");
}

/// A source table without a primary key: NULL and repeated ids are errors naming the count,
/// in every mode, never rows dropped or merged in silence.
#[test]
fn null_and_duplicate_ids_are_errors() {
    let db = TestDb::new("ids");
    seed(&db, &["--rows", "3000"]);
    let mut c = db.client();
    c.batch_execute(
        "ALTER TABLE scrobbles DROP CONSTRAINT scrobbles_pkey, ALTER COLUMN id DROP NOT NULL",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("i.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);

    c.batch_execute(&format!(
        "{INSERT} (NULL, 'u', '2020-01-01Z', 'a', NULL, 'x'), (NULL, 'u', '2020-01-02Z', 'a', NULL, 'y')"
    ))
    .unwrap();
    for cmd in ["load", "sync", "verify"] {
        fails(
            &[cmd, "--source", &db.url, "--target", t],
            &["2 row(s) with a NULL id"],
        );
    }
    c.batch_execute("DELETE FROM scrobbles WHERE id IS NULL")
        .unwrap();

    // Two new rows with one id: sync refuses instead of storing one.
    c.batch_execute(&format!(
        "{INSERT} (9100000000000000000, 'u', '2020-01-01Z', 'a', NULL, 'x'), (9100000000000000000, 'u', '2020-01-05Z', 'a', NULL, 'y')"
    ))
    .unwrap();
    let before = one(&target, "SELECT count(*) FROM scrobbles");
    for cmd in [
        vec!["sync", "--source", &db.url, "--target", t],
        vec![
            "sync",
            "--cursor",
            "played_at",
            "--lookback",
            "3000d",
            "--source",
            &db.url,
            "--target",
            t,
        ],
        vec!["load", "--source", &db.url, "--target", t],
        vec!["verify", "--source", &db.url, "--target", t],
        vec![
            "backfill",
            "--source",
            &db.url,
            "--target",
            t,
            "--from",
            "2020-01-01",
            "--to",
            "2020-02-01",
        ],
    ] {
        fails(&cmd, &["duplicate ids", "9100000000000000000"]);
    }
    assert_eq!(one(&target, "SELECT count(*) FROM scrobbles"), before);
    // The two copies in different months: a backfill of one month cannot see the other
    // copy, so it checks the ids of its range against the whole source.
    c.batch_execute("UPDATE scrobbles SET played_at = '2020-03-03Z' WHERE id = 9100000000000000000 AND track_name = 'y'")
        .unwrap();
    fails(
        &[
            "backfill",
            "--source",
            &db.url,
            "--target",
            t,
            "--from",
            "2020-01-01",
            "--to",
            "2020-02-01",
        ],
        &["duplicate ids", "9100000000000000000"],
    );
    assert_eq!(one(&target, "SELECT count(*) FROM scrobbles"), before);
}

/// A seeded source of `rows` plays, fully loaded into `file` in a temporary folder (kept alive
/// by the returned guard).
fn loaded(name: &str, rows: &str, file: &str) -> (TestDb, tempfile::TempDir, std::path::PathBuf) {
    let db = TestDb::new(name);
    seed(&db, &["--rows", rows]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join(file);
    ok(&[
        "load",
        "--source",
        &db.url,
        "--target",
        target.to_str().unwrap(),
    ]);
    (db, dir, target)
}

/// Syncs until scrobble `id` is in the target (true) or 40 syncs have not brought it. A re-check
/// waits for every transaction (of any database on this server) that was running at the mark;
/// the test suite runs others in parallel, so a few syncs may pass before it is due.
fn synced_until_present(db: &TestDb, target: &Path, id: i64) -> bool {
    let t = target.to_str().unwrap();
    let present = format!("SELECT count(*) FROM scrobbles WHERE scrobble_id = {id}");
    for _ in 0..40 {
        ok(&["sync", "--source", &db.url, "--target", t]);
        if one(target, &present) == 1 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// Transaction A takes id M+1 and commits late; B takes M+2 and commits at once; a sync in
/// between moves the mark to M+2. A's row must still arrive with a later sync.
#[test]
fn a_row_committed_out_of_id_order_is_not_missed() {
    let (db, _dir, target) = loaded("ooo", "2000", "o.sqlite");
    let t = target.to_str().unwrap();
    let m: i64 = db
        .client()
        .query_one("SELECT max(id) FROM scrobbles", &[])
        .unwrap()
        .get(0);
    let mut a = db.client();
    let mut tx = a.transaction().unwrap();
    tx.execute(
        &format!("{INSERT} ($1, 'late', '2021-06-01Z', 'Late Artist', NULL, 'Late')"),
        &[&(m + 1)],
    )
    .unwrap();
    db.client()
        .execute(
            &format!("{INSERT} ($1, 'early', '2021-06-02Z', 'Early Artist', NULL, 'Early')"),
            &[&(m + 2)],
        )
        .unwrap();
    let s = ok(&["sync", "--source", &db.url, "--target", t]);
    assert_eq!(s["mark_after"], m + 2);
    tx.commit().unwrap();
    assert!(
        synced_until_present(&db, &target, m + 1),
        "the late-committed row arrived"
    );
    assert_eq!(verify_code(&db, &target), 0);
    assert_same_as_full_load(&db, &target, "out-of-order commit");
}

/// A takes M+1; B, newer, takes M+2 and stays open; A takes M+3 and commits. The snapshot's own
/// xmax is then one past A's xid, so B is in no list of it. A sync moves the mark to M+3; B's row,
/// committed afterwards, must still arrive.
#[test]
fn a_row_of_a_newer_open_transaction_is_not_missed() {
    let (db, _dir, target) = loaded("newerxid", "2000", "n.sqlite");
    let t = target.to_str().unwrap();
    let m: i64 = db
        .client()
        .query_one("SELECT max(id) FROM scrobbles", &[])
        .unwrap()
        .get(0);
    let row = |id: i64, who: &str| {
        (
            format!("{INSERT} ($1, '{who}', '2021-06-01Z', '{who} Artist', NULL, '{who}')"),
            id,
        )
    };
    let (mut a, mut b) = (db.client(), db.client());
    let mut ta = a.transaction().unwrap();
    let (sql, id) = row(m + 1, "first");
    ta.execute(&sql, &[&id]).unwrap();
    let mut tb = b.transaction().unwrap();
    let (sql, id) = row(m + 2, "newer");
    tb.execute(&sql, &[&id]).unwrap();
    let (sql, id) = row(m + 3, "third");
    ta.execute(&sql, &[&id]).unwrap();
    ta.commit().unwrap();
    let s = ok(&["sync", "--source", &db.url, "--target", t]);
    assert_eq!(s["mark_after"], m + 3);
    tb.commit().unwrap();
    assert!(
        synced_until_present(&db, &target, m + 2),
        "the newer transaction's row arrived"
    );
    assert_eq!(verify_code(&db, &target), 0);
}

/// A difference in the month of PostgreSQL's first timestamp (4714-11-24 BC, which the seed
/// uses): that month's window starts before any timestamp PostgreSQL can write, and the repair
/// must still read it.
#[test]
fn a_repair_reaches_the_first_month_postgres_has() {
    let (db, _dir, target) = loaded("firstmonth", "2000", "f.sqlite");
    let t = target.to_str().unwrap();
    let first = "SELECT count(*) FROM scrobbles WHERE played_at < -210866000000";
    let n = one(&target, first);
    assert!(n >= 1, "the seed has a play in PostgreSQL's first month");
    Connection::open(&target)
        .unwrap()
        .execute("DELETE FROM scrobbles WHERE played_at < -210866000000", [])
        .unwrap();
    assert_ne!(verify_code(&db, &target), 0);
    ok(&[
        "verify", "--repair", "--by", "month", "--source", &db.url, "--target", t,
    ]);
    assert_eq!(one(&target, first), n);
    assert_eq!(verify_code(&db, &target), 0);
}

#[test]
fn backfill_moves_a_row_out_of_its_range() {
    let (db, _dir, target) = loaded("moveout", "20000", "m.sqlite");
    let t = target.to_str().unwrap();
    let id: i64 = db
        .client()
        .query_one(
            "UPDATE scrobbles SET played_at = '2019-01-15 10:00:00Z'
              WHERE id = (SELECT min(id) FROM scrobbles WHERE played_at >= '2016-05-01Z' AND played_at < '2016-06-01Z')
             RETURNING id",
            &[],
        )
        .unwrap()
        .get(0);
    let s = ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2016-05-01",
        "--to",
        "2016-06-01",
    ]);
    assert_eq!(s["rows_moved_out"], 1, "{s}");
    assert_eq!(
        one(
            &target,
            &format!("SELECT played_at FROM scrobbles WHERE scrobble_id = {id}")
        ),
        1_547_546_400
    );
    assert_eq!(verify_code(&db, &target), 0);
    assert_same_as_full_load(&db, &target, "a row moved out of the backfilled month");
}

#[test]
fn played_at_cursor_edges() {
    let db = TestDb::new("pacur");
    let mut c = db.client();
    c.batch_execute(scrobsync::modes::seed::SOURCE_DDL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("c.sqlite");
    let t = target.to_str().unwrap();
    let sync = [
        "sync",
        "--cursor",
        "played_at",
        "--lookback",
        "0s",
        "--source",
        &db.url,
        "--target",
        t,
    ];
    // An empty source: no mark from 4714 BC, no error on the next runs.
    ok(&sync);
    ok(&sync);
    let status = ok(&["status", "--target", t]);
    assert!(status["played_at_mark"].is_null(), "{status}");

    c.batch_execute(&format!(
        "{INSERT} (1, 'u', now() - interval '1 hour', 'a', NULL, 'one'),
                  (2, 'u', '2099-01-01Z', 'a', NULL, 'future')"
    ))
    .unwrap();
    ok(&sync);
    assert_eq!(
        one(&target, "SELECT count(*) FROM scrobbles"),
        1,
        "the 2099 row waits"
    );
    let mark = ok(&["status", "--target", t])["played_at_mark"]
        .as_i64()
        .unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(mark <= now_us, "the mark {mark} must not jump to 2099");
    // A row exactly at the mark arrives with --lookback 0s (the lower bound is inclusive).
    c.execute(
        &format!("{INSERT} (3, 'u', timestamptz 'epoch' + $1 * interval '1 microsecond', 'a', NULL, 'at mark')"),
        &[&(mark as f64)],
    )
    .unwrap();
    ok(&sync);
    assert_eq!(
        one(
            &target,
            "SELECT count(*) FROM scrobbles WHERE scrobble_id = 3"
        ),
        1
    );
    c.batch_execute(&format!("{INSERT} (4, 'u', 'infinity', 'a', NULL, 'inf')"))
        .unwrap();
    fails(&sync, &["infinity", "4"]);
    fails(
        &["verify", "--source", &db.url, "--target", t],
        &["infinity", "4"],
    );
}

#[test]
fn fractional_seconds_and_a_mismatched_resume_are_refused() {
    let (db, _dir, target) = loaded("resume2", "20000", "r.sqlite");
    let t = target.to_str().unwrap();
    let o = run(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2018-01-01T00:00:00.5Z",
        "--to",
        "2018-02-01",
    ]);
    assert_eq!(o.status.code(), Some(2), "a usage error");
    assert!(
        stderr(&o).contains("fraction of a second"),
        "{}",
        stderr(&o)
    );
    db.client()
        .batch_execute("DELETE FROM scrobbles WHERE id % 5 = 0")
        .unwrap();
    let o = bin()
        .args(["backfill", "--source", &db.url, "--target", t])
        .args([
            "--from",
            "2018-01-01",
            "--to",
            "2018-07-01",
            "--by",
            "month",
        ])
        .env("SCROBSYNC_FAILPOINT", "abort-after-windows=2")
        .output()
        .unwrap();
    assert!(!o.status.success());
    fails(
        &[
            "backfill",
            "--source",
            &db.url,
            "--target",
            t,
            "--from",
            "2018-01-01",
            "--to",
            "2018-07-01",
            "--by",
            "week",
            "--resume",
        ],
        &["nothing to resume", "--by month"],
    );
    ok(&[
        "backfill",
        "--source",
        &db.url,
        "--target",
        t,
        "--from",
        "2018-01-01",
        "--to",
        "2018-07-01",
        "--by",
        "month",
        "--resume",
    ]);
}

#[test]
fn verify_hashes_utf8_bytes_on_a_latin1_server() {
    let db = TestDb::new("latin1");
    let name = format!("{}_l1", db.name);
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        ))
        .unwrap();
    let url = db.url.replace(&db.name, &name);
    let result = std::panic::catch_unwind(|| {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        c.batch_execute(scrobsync::modes::seed::SOURCE_DDL).unwrap();
        c.batch_execute(&format!(
            "{INSERT} (1, 'jörg', '2020-01-01Z', 'Björk', 'Homogénic', 'Jóga'),
                      (2, 'zoë', '2020-02-01Z', 'Sigur Rós', NULL, 'Hoppípolla'),
                      (3, 'plain', '2020-02-02Z', 'Abc', '', 'Def')"
        ))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("l.sqlite");
        let t = target.to_str().unwrap();
        ok(&["load", "--source", &url, "--target", t]);
        let o = run(&["verify", "--source", &url, "--target", t]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(
            one(&target, "SELECT count(*) FROM artists WHERE name = 'Björk'"),
            1
        );
    });
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A tiny deterministic generator (xorshift), so a failing history can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Damages the target in one random way that a fresh load would not give; returns what it did.
fn tamper(target: &Path, rng: &mut Rng) -> String {
    let c = Connection::open(target).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))
        .unwrap();
    let pick = |rng: &mut Rng| -> i64 {
        c.query_row(
            "SELECT scrobble_id FROM scrobbles ORDER BY scrobble_id LIMIT 1 OFFSET ?1",
            [rng.below(n as u64) as i64],
            |r| r.get(0),
        )
        .unwrap()
    };
    let (a, b) = (pick(rng), pick(rng));
    let track_of = format!("(SELECT track_id FROM scrobbles WHERE scrobble_id = {a})");
    let kinds = [
        format!("UPDATE scrobbles SET loved = 1 - loved WHERE scrobble_id = {a}"),
        format!("UPDATE scrobbles SET loved = 2 WHERE scrobble_id = {a}"),
        format!("UPDATE scrobbles SET played_at = played_at + 1 WHERE scrobble_id = {a}"),
        format!("UPDATE scrobbles SET played_at = played_at - 86400 * 40 WHERE scrobble_id = {a}"),
        format!("DELETE FROM scrobbles WHERE scrobble_id = {a}"),
        format!(
            "INSERT INTO scrobbles SELECT (SELECT max(scrobble_id) FROM scrobbles) + 1000, user_id, \
             track_id, played_at, loved FROM scrobbles WHERE scrobble_id = {a}"
        ),
        format!(
            "UPDATE scrobbles SET user_id = (SELECT user_id FROM users WHERE user_id <> \
             (SELECT user_id FROM scrobbles WHERE scrobble_id = {a}) LIMIT 1) WHERE scrobble_id = {a}"
        ),
        format!(
            "UPDATE scrobbles SET track_id = (SELECT track_id FROM scrobbles WHERE scrobble_id = {b}) \
             WHERE scrobble_id = {a} AND {a} <> {b}; \
             UPDATE scrobbles SET played_at = played_at + 1 WHERE scrobble_id = {a} AND {a} = {b}"
        ),
        format!(
            "UPDATE artists SET name = name || ' (renamed)' WHERE artist_id = \
             (SELECT artist_id FROM tracks WHERE track_id = {track_of})"
        ),
        format!("UPDATE tracks SET title = title || '!' WHERE track_id = {track_of}"),
        format!(
            "UPDATE tracks SET album_id = CASE WHEN album_id IS NULL THEN \
             (SELECT min(album_id) FROM albums) ELSE NULL END WHERE track_id = {track_of}"
        ),
        format!(
            "UPDATE albums SET artist_id = (SELECT max(artist_id) FROM artists) + 1 WHERE album_id = \
             (SELECT album_id FROM tracks WHERE track_id = {track_of}); \
             UPDATE scrobbles SET loved = 2 WHERE scrobble_id = {a} AND \
             (SELECT album_id FROM tracks WHERE track_id = {track_of}) IS NULL"
        ),
        format!("DELETE FROM tracks WHERE track_id = {track_of}"),
        format!(
            "UPDATE tracks SET mbid = 'not-the-mbid', duration_ms = -1 WHERE track_id = {track_of}"
        ),
        format!(
            "UPDATE artists SET mbid = 'not-the-mbid' WHERE artist_id = \
             (SELECT artist_id FROM tracks WHERE track_id = {track_of})"
        ),
        format!("UPDATE track_plays SET plays = plays + 1 WHERE track_id = {track_of}"),
        format!(
            "DELETE FROM hourly_plays WHERE hour = (SELECT played_at - ((played_at % 3600) + 3600) \
             % 3600 FROM scrobbles WHERE scrobble_id = {a})"
        ),
        format!(
            "DROP TRIGGER scrobbles_counted_insert; INSERT INTO scrobbles SELECT \
             (SELECT max(scrobble_id) FROM scrobbles) + 1000, user_id, track_id, played_at, loved \
             FROM scrobbles WHERE scrobble_id = {a}"
        ),
        // A summary table gone (its triggers then fail every write) or a count that is text.
        "DROP TABLE album_plays".to_string(),
        format!("UPDATE artist_plays SET plays = 'many' WHERE artist_id = (SELECT artist_id FROM tracks WHERE track_id = {track_of})"),
        // A REPLACE without recursive triggers (SQLite's default): the replaced play is not
        // taken out of the summaries.
        format!(
            "INSERT OR REPLACE INTO scrobbles SELECT {a}, user_id, track_id, played_at, loved \
             FROM scrobbles WHERE scrobble_id = {b}"
        ),
    ];
    let sql = &kinds[rng.below(kinds.len() as u64) as usize];
    c.execute_batch(&format!("PRAGMA foreign_keys = OFF; {sql}"))
        .unwrap();
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Random histories of source edits, each followed by the mode meant for it, and after every
/// step the target must equal a fresh full load of the source (natural keys); now and then the
/// target is damaged at random, which `verify` must report and `--repair` undo.
#[test]
fn random_histories_agree_with_a_full_load() {
    let seed_value: u64 = std::env::var("SCROBSYNC_PROPERTY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_127);
    let steps: usize = std::env::var("SCROBSYNC_PROPERTY_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rng = Rng(seed_value);
    let db = TestDb::new("prop");
    seed(&db, &["--rows", "3000", "--seed", "9"]);
    let mut c = db.client();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("h.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    // New plays take ids above every id ever used, as a sequence gives them (deleting the
    // greatest row must not make a new row's id fall below the mark).
    let mut top: i64 = c
        .query_one("SELECT max(id) FROM scrobbles", &[])
        .unwrap()
        .get(0);
    // Months 2006-01 .. 2025-12 as (year, month).
    let month = |k: u64| (2006 + (k / 12) as i32, (k % 12) as u32 + 1);
    let start = |(y, m): (i32, u32)| format!("{y:04}-{m:02}-01");
    let next = |(y, m): (i32, u32)| if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    for step in 0..steps {
        let what = rng.below(7);
        let m = month(rng.below(240));
        let m2 = month(rng.below(240));
        let in_month = format!(
            "played_at >= '{}Z' AND played_at < '{}Z'",
            start(m),
            start(next(m))
        );
        let pick = format!("(SELECT id FROM scrobbles WHERE {in_month} ORDER BY id LIMIT 3)");
        let label = format!("step {step} (seed {seed_value}): op {what} on {}", start(m));
        eprintln!("{label}");
        let mut backfill_months = vec![m];
        match what {
            // new plays, some of new artists, recent and back-dated
            0 | 1 => {
                let when = if what == 0 {
                    "now() - interval '1 day'".to_string()
                } else {
                    format!("'{}Z'::timestamptz + interval '3 days'", start(m))
                };
                c.batch_execute(&format!(
                    "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name, loved)
                     SELECT mx + g, 'user ' || (g % 3), {when}, 'Artist ' || ({r} % 5 + g % 2), CASE WHEN g % 3 = 0 THEN NULL ELSE 'Album {r}' END,
                            'Track ' || g, g % 2 = 0
                       FROM (SELECT {top}::int8 AS mx) s, generate_series(1, 4) g",
                    r = rng.below(1000)
                ))
                .unwrap();
                top += 4;
            }
            // text edits, including '' and NULL albums
            2 => {
                c.batch_execute(&format!(
                    "UPDATE scrobbles SET track_name = track_name || ' (live)', album_name = CASE WHEN album_name IS NULL THEN '' ELSE NULL END
                      WHERE id IN {pick}"
                ))
                .unwrap();
            }
            // plays moved to another month: the backfill of their old month alone must move
            // them (half of the time), or of both months
            3 => {
                c.batch_execute(&format!(
                    "UPDATE scrobbles SET played_at = '{}Z'::timestamptz + interval '5 hours' WHERE id IN {pick}",
                    start(m2)
                ))
                .unwrap();
                if rng.below(2) == 0 {
                    backfill_months.push(m2);
                }
            }
            // deletes: a few rows, or a whole month (an empty window)
            4 => {
                let which = if rng.below(3) == 0 {
                    format!("(SELECT id FROM scrobbles WHERE {in_month})")
                } else {
                    pick.clone()
                };
                c.batch_execute(&format!("DELETE FROM scrobbles WHERE id IN {which}"))
                    .unwrap();
            }
            // attribute edits: the first non-NULL mbid/duration of an entity changes
            6 => {
                c.batch_execute(&format!(
                    "UPDATE scrobbles SET artist_mbid = md5(id::text || 'a{step}')::uuid, track_mbid = NULL,
                            duration_ms = coalesce(duration_ms, 0) + 1 WHERE id IN {pick}"
                ))
                .unwrap();
            }
            // a new artist at a low id (a back-filled import)
            _ => {
                c.batch_execute(&format!(
                    "{INSERT} ({}, 'importer', '{}Z', 'Imported {step}', 'Old Album', 'Old Song')",
                    -7_777_000 - step as i64,
                    start(m)
                ))
                .unwrap();
            }
        }
        // The mode meant for the edit: sync for new ids, else a backfill of the touched months
        // or a verify --repair, chosen at random.
        if what <= 1 {
            let s = ok(&["sync", "--source", &db.url, "--target", t]);
            eprintln!("  sync: {s}");
        } else if rng.below(2) == 0 {
            eprintln!("  backfill {backfill_months:?}");
            for mm in backfill_months {
                ok(&[
                    "backfill",
                    "--source",
                    &db.url,
                    "--target",
                    t,
                    "--from",
                    &start(mm),
                    "--to",
                    &start(next(mm)),
                ]);
            }
        } else {
            eprintln!("  repair");
            ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
            // A repair also recomputes the attributes.
            assert_same_attributes_as_full_load(&db, &target, &label);
        }
        assert_same_as_full_load(&db, &target, &label);
        // Now and then the target is damaged at random: verify must see it, a repair must
        // undo it.
        if rng.below(3) == 0 {
            let damage = tamper(&target, &mut rng);
            eprintln!("  tamper: {damage}");
            let o = run(&[
                "verify",
                "--attributes",
                "--json",
                "--source",
                &db.url,
                "--target",
                t,
            ]);
            assert_eq!(
                o.status.code(),
                Some(3),
                "{label}: verify missed {damage}: {}",
                String::from_utf8_lossy(&o.stdout)
            );
            ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
            // A repair rewrites every scrobble; damaged dimension rows it leaves behind are
            // unreferenced (not covered by verify, as documented), and a prune removes them.
            ok(&[
                "backfill",
                "--prune",
                "--source",
                &db.url,
                "--target",
                t,
                "--from",
                "2006-01-01",
                "--to",
                "2006-02-01",
            ]);
            assert_same_attributes_as_full_load(&db, &target, &format!("{label}, {damage}"));
            assert_same_as_full_load(&db, &target, &format!("{label}, {damage}"));
        }
    }
    ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
    assert_same_attributes_as_full_load(&db, &target, "after the final repair");
    assert_eq!(verify_code(&db, &target), 0);
}
