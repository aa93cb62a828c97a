//! Source mappings against a real PostgreSQL: each example schema is built in a fresh database
//! from seeded canonical rows (kept as the ground truth), loaded through its config, and checked
//! with the lossless rule; type mismatches and writes are refused before anything is written.

mod common;

use common::*;
use predicates::prelude::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Seeds the canonical table (ground truth) and creates an example schema beside it.
fn prepared(tag: &str, schema: &str, fill: &str) -> TestDb {
    let db = TestDb::new(tag);
    seed(&db, &["--rows", "20000", "--seed", "5"]);
    let mut c = db.client();
    c.batch_execute(&std::fs::read_to_string(example(schema)).unwrap())
        .unwrap();
    c.batch_execute(fill).unwrap();
    db
}

fn load_with(db: &TestDb, config: &Path, target: &Path) {
    bin()
        .args(["load", "--source", &db.url, "--config"])
        .arg(config)
        .arg("--target")
        .arg(target)
        .args(["--batch-rows", "5000"])
        .assert()
        .success();
}

#[test]
fn epoch_seconds_table_with_awkward_names_is_lossless() {
    let db = prepared(
        "mapa",
        "epoch_seconds.sql",
        r#"INSERT INTO music."Plays"
           SELECT id, username, floor(extract(epoch FROM played_at))::int8, artist_name, artist_mbid,
                  album_name, track_name, duration_ms / 1000, CASE WHEN loved THEN 5 ELSE 1 END
             FROM scrobbles"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("a.sqlite");
    load_with(&db, &example("epoch_seconds.toml"), &target);
    // The canonical table holds the same scrobbles: the mapped load must give them back.
    assert_lossless(&mut db.client(), &target);
    let conn = Connection::open(&target).unwrap();
    let d: Option<i64> = conn
        .query_row("SELECT max(duration_ms) FROM tracks", [], |r| r.get(0))
        .unwrap();
    assert!(d.unwrap() % 1000 == 0, "duration_ms = length_s * 1000");

    // Sync, verify and backfill accept the same mapping.
    db.client()
        .batch_execute(
            r#"INSERT INTO music."Plays" ("Play ID", "user", ts, "Artist", title)
                 VALUES (-1, 'mapped', 1700000000, 'Mapped Artist', 'Mapped Song');
               INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
                 VALUES (-1, 'mapped', to_timestamp(1700000000), 'Mapped Artist', 'Mapped Song')"#,
        )
        .unwrap();
    bin()
        .args(["backfill", "--source", &db.url, "--config"])
        .arg(example("epoch_seconds.toml"))
        .arg("--target")
        .arg(&target)
        .args(["--from", "2023-11-01", "--to", "2023-12-01"])
        .assert()
        .success();
    bin()
        .args(["verify", "--source", &db.url, "--config"])
        .arg(example("epoch_seconds.toml"))
        .arg("--target")
        .arg(&target)
        .assert()
        .code(0);
    assert_lossless(&mut db.client(), &target);
}

#[test]
fn jsonb_query_joined_to_users_is_lossless() {
    let db = prepared(
        "mapb",
        "jsonb_listens.sql",
        "INSERT INTO users (name) SELECT DISTINCT username FROM scrobbles ORDER BY 1;
         INSERT INTO listens
         SELECT s.id, u.user_id, s.played_at, jsonb_strip_nulls(jsonb_build_object(
                  'artist', s.artist_name, 'artist_mbid', s.artist_mbid, 'album', s.album_name,
                  'album_mbid', s.album_mbid, 'track', s.track_name, 'track_mbid', s.track_mbid,
                  'duration_ms', s.duration_ms, 'loved', s.loved))
           FROM scrobbles s JOIN users u ON u.name = s.username",
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b.sqlite");
    load_with(&db, &example("jsonb_listens.toml"), &target);
    assert_lossless(&mut db.client(), &target);
    // mbids came through the JSON too
    let conn = Connection::open(&target).unwrap();
    let with_mbid: i64 = conn
        .query_row(
            "SELECT count(*) FROM artists WHERE mbid IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(with_mbid > 0);

    bin()
        .args(["config", "check", "--source", &db.url, "--config"])
        .arg(example("jsonb_listens.toml"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("played_at")
                .and(predicate::str::contains("timestamptz"))
                .and(predicate::str::contains("FROM listens")),
        );
    let out = bin()
        .args(["config", "check", "--json", "--source", &db.url, "--config"])
        .arg(example("jsonb_listens.toml"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "config-check");
    assert_eq!(report["valid"], true);
    assert!(report["table"].is_string());
    assert!(report["query"].as_str().unwrap().contains("FROM listens"));
    assert!(report["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["field"] == "played_at"));
}

#[test]
fn timestamp_with_zone_and_epoch_milliseconds() {
    let db = TestDb::new("mapc");
    db.client()
        .batch_execute(
            "CREATE TABLE \"Local Plays\" (n int PRIMARY KEY, who text, at timestamp, ms bigint,
                                          band text, song text);
             INSERT INTO \"Local Plays\" VALUES
               (1, 'x', '2024-01-15 12:00:00', -1, 'A', 'S'),
               (2, 'x', '2024-07-15 12:00:00.75', 1700000000123, 'A', 'S'),
               (3, 'x', '1960-06-01 00:00:00', -86400001, 'A', 'S');",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = |name: &str, head: &str, played_at: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                "[source]\ntable = \"Local Plays\"\n{head}\n[source.columns]\nid = \"n\"\nusername = \"who\"\nplayed_at = \"{played_at}\"\nartist_name = \"band\"\ntrack_name = \"song\"\n"
            ),
        )
        .unwrap();
        p
    };
    let epochs = |t: &Path| -> Vec<i64> {
        let c = Connection::open(t).unwrap();
        let mut s = c
            .prepare("SELECT played_at FROM scrobbles ORDER BY scrobble_id")
            .unwrap();
        s.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let t1 = dir.path().join("tz.sqlite");
    let c1 = cfg(
        "tz.toml",
        "played_at_type = \"timestamp\"\ntimezone = \"Europe/Berlin\"",
        "at",
    );
    load_with(&db, &c1, &t1);
    assert_eq!(
        epochs(&t1),
        vec![1_705_316_400, 1_721_037_600, -302_490_000]
    );
    let t2 = dir.path().join("ms.sqlite");
    let c2 = cfg("ms.toml", "played_at_type = \"epoch_milliseconds\"", "ms");
    load_with(&db, &c2, &t2);
    assert_eq!(epochs(&t2), vec![-1, 1_700_000_000, -86_401]);
}

fn refused(db: &TestDb, toml: &str, expect: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, toml).unwrap();
    let target = dir.path().join("t.sqlite");
    fake_target(&target);
    let previous = std::fs::read(&target).unwrap();
    let out = bin()
        .args(["load", "--source", &db.url, "--config"])
        .arg(&cfg)
        .arg("--target")
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for e in expect {
        assert!(err.contains(e), "expected '{e}' in: {err}");
    }
    assert_eq!(
        std::fs::read(&target).unwrap(),
        previous,
        "target untouched"
    );
}

#[test]
fn mismatches_are_refused_naming_field_and_column() {
    let db = TestDb::new("mapd");
    db.client()
        .batch_execute(
            "CREATE TABLE plays (pid bigint, who text, happened text, epoch_s bigint, band text,
                                 song text, fav int);
             INSERT INTO plays VALUES (1, 'u', 'yesterday', 1, 'b', 's', 1), (NULL, 'u', 'x', 2, 'b', 's', 0);",
        )
        .unwrap();
    let base = "[source]\ntable = \"plays\"\n";
    let cols = "id = \"pid\"\nusername = \"who\"\nartist_name = \"band\"\ntrack_name = \"song\"\n";
    refused(
        &db,
        &format!("{base}[source.columns]\n{cols}played_at = \"happened\"\n"),
        &["field played_at", "happened", "text", "timestamptz"],
    );
    refused(
        &db,
        &format!("{base}[source.columns]\n{cols}played_at = \"when_played\"\n"),
        &["field played_at", "when_played", "neither a column"],
    );
    refused(
        &db,
        &format!("{base}[source.columns]\nusername = \"who\"\nartist_name = \"band\"\ntrack_name = \"song\"\nplayed_at = \"epoch_s\"\n"),
        &["required field 'id'"],
    );
    refused(
        &db,
        &format!("{base}played_at_type = \"epoch_seconds\"\n[source.columns]\n{cols}played_at = \"epoch_s\"\nloved = \"fav\"\n"),
        &["field loved", "fav", "boolean"],
    );
    refused(
        &db,
        &format!("{base}played_at_type = \"epoch_seconds\"\n[source.columns]\n{cols}played_at = \"epoch_s\"\n"),
        &["field id", "NULL"],
    );
    refused(
        &db,
        "[source]\nquery = \"SELECT pid AS id, who AS username, band AS artist_name FROM plays\"\n",
        &["no column named 'played_at'"],
    );
    refused(
        &db,
        "[source]\ntable = \"plays\"\nbogus = 1\n",
        &["not valid", "bogus"],
    );
}

#[test]
fn a_mapping_can_only_read() {
    let db = TestDb::new("mape");
    db.client()
        .batch_execute(
            "CREATE TABLE keep (id bigint PRIMARY KEY, u text, t timestamptz, a text, s text);
             INSERT INTO keep VALUES (1, 'u', now(), 'a', 's');
             CREATE FUNCTION zap() RETURNS bigint LANGUAGE sql VOLATILE
                 AS 'DELETE FROM keep RETURNING 1::bigint';",
        )
        .unwrap();
    // A query that would delete rows through a function: refused by the read-only session.
    refused(
        &db,
        "[source]\nquery = \"SELECT id + zap() - 1 AS id, u AS username, t AS played_at, a AS artist_name, s AS track_name FROM keep\"\n",
        &["read-only transaction"],
    );
    let n: i64 = db
        .client()
        .query_one("SELECT count(*) FROM keep", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing was deleted");
    bin().args(["config", "example"]).assert().success().stdout(
        predicate::str::contains("[source]").and(predicate::str::contains("played_at_type")),
    );
}

#[test]
fn a_null_in_a_not_null_field_is_an_error_naming_field_and_ids() {
    let db = TestDb::new("nullloved");
    seed(&db, &["--rows", "3000", "--seed", "8"]);
    refused(
        &db,
        "[source]\ntable = \"scrobbles\"\n[source.columns]\nid = \"id\"\nusername = \"username\"\n\
         played_at = \"played_at\"\nartist_name = \"artist_name\"\ntrack_name = \"track_name\"\n\
         loved = \"CASE WHEN id % 97 = 3 THEN NULL ELSE loved END\"\n",
        &["NULL loved", "loved must not be NULL", "id "],
    );
    // verify names them too, instead of counting the rows as missing.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.sqlite");
    bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&target)
        .assert()
        .success();
    let cfg = dir.path().join("n.toml");
    std::fs::write(
        &cfg,
        "[source]\nquery = \"SELECT id, username, played_at, artist_name, album_name, track_name, CASE WHEN id % 97 = 3 THEN NULL ELSE loved END AS loved FROM scrobbles\"\n",
    )
    .unwrap();
    let (code, err) = run(&["verify", "--source", &db.url], &cfg, &target);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("NULL loved") && err.contains("id "), "{err}");
}

/// Runs the binary and returns (exit code, stderr).
fn run(args: &[&str], cfg: &Path, target: &Path) -> (i32, String) {
    let out = bin()
        .args(args)
        .arg("--config")
        .arg(cfg)
        .arg("--target")
        .arg(target)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_large_duration_is_stored_whole_by_every_mode() {
    let db = TestDb::new("bigdur");
    seed(&db, &["--rows", "3000", "--seed", "9"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[source]\ntable = \"scrobbles\"\n[source.columns]\nid = \"id\"\nusername = \"username\"\n\
         played_at = \"played_at\"\nartist_name = \"artist_name\"\ntrack_name = \"track_name\"\n\
         album_name = \"album_name\"\nduration_ms = \"5000000000::int8 + coalesce(duration_ms, 0)\"\n",
    )
    .unwrap();
    let target = dir.path().join("t.sqlite");
    let (code, err) = run(&["load", "--source", &db.url], &cfg, &target);
    assert_eq!(code, 0, "{err}");
    let least = |t: &Path| -> i64 {
        Connection::open(t)
            .unwrap()
            .query_row("SELECT min(duration_ms) FROM tracks", [], |r| r.get(0))
            .unwrap()
    };
    assert!(
        least(&target) >= 5_000_000_000,
        "no duration narrowed or lost"
    );
    // The attribute check computes the same values through SQL: nothing differs, and a
    // repair after blanking them writes them back whole.
    let (code, err) = run(
        &["verify", "--attributes", "--source", &db.url],
        &cfg,
        &target,
    );
    assert_eq!(code, 0, "{err}");
    Connection::open(&target)
        .unwrap()
        .execute("UPDATE tracks SET duration_ms = NULL", [])
        .unwrap();
    let (code, err) = run(&["verify", "--repair", "--source", &db.url], &cfg, &target);
    assert_eq!(code, 0, "{err}");
    assert!(least(&target) >= 5_000_000_000);
}

#[test]
fn unstable_ids_are_refused_and_trailing_comments_work() {
    let db = TestDb::new("unstable");
    seed(&db, &["--rows", "3000", "--seed", "10"]);
    refused(
        &db,
        "[source]\nquery = \"SELECT (random() * 1e9)::int8 AS id, username, played_at, artist_name, track_name FROM scrobbles\"\n",
        &["field id", "gives other values each time it is read"],
    );
    for id in [
        // stable within a statement, not between statements
        "id % 1000000000000 * 100 + extract(epoch FROM now())::int8 % 100",
        "id % 1000000000000 * 100 + extract(epoch FROM clock_timestamp())::int8 % 100",
        // always the ids 1..N, but given to other rows each time
        "row_number() OVER (ORDER BY random())",
        // another on each connection
        "id % 1000000000000 * 100000 + pg_backend_pid()",
    ] {
        refused(
            &db,
            &format!(
                "[source]\nquery = \"SELECT {id} AS id, username, played_at, artist_name, track_name FROM scrobbles\"\n"
            ),
            &["field id", "gives other values each time it is read"],
        );
    }
    // A stable mapping of a live source whose retention job deletes the oldest rows meanwhile
    // is not taken for an unstable one.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let retention = {
        let (url, stop) = (db.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for _ in 0..100 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                c.batch_execute("DELETE FROM scrobbles WHERE id = (SELECT min(id) FROM scrobbles)")
                    .unwrap();
                std::thread::sleep(std::time::Duration::from_millis(30));
            }
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("live.toml");
    std::fs::write(
        &cfg,
        "[source]\nquery = \"SELECT id, username, played_at, artist_name, album_name, track_name, loved FROM scrobbles\"\n",
    )
    .unwrap();
    let (code, err) = run(
        &["load", "--source", &db.url],
        &cfg,
        &dir.path().join("live.sqlite"),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    retention.join().unwrap();
    assert_eq!(code, 0, "{err}");
    for tail in ["-- the end", "; -- the end", ";\n/* done; */\n"] {
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            format!(
                "[source]\nquery = \"\"\"\nSELECT id, username, played_at, artist_name, album_name, track_name, loved FROM scrobbles {tail}\n\"\"\"\n"
            ),
        )
        .unwrap();
        let target = dir.path().join("t.sqlite");
        let (code, err) = run(&["load", "--source", &db.url, "--force"], &cfg, &target);
        assert_eq!(code, 0, "{tail}: {err}");
        assert_lossless(&mut db.client(), &target);
    }
}
