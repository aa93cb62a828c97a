//! Full loads against a real PostgreSQL: lossless on nasty data, stable keys, exact epochs.

mod common;

use common::*;
use predicates::prelude::*;
use rusqlite::Connection;
use serde_json::Value;

/// Hand-made rows for the rules that are easiest to get wrong. Negative ids on purpose.
const EDGE_ROWS: &str = r#"
INSERT INTO scrobbles (id, username, played_at, artist_name, artist_mbid, album_name, album_mbid,
                       track_name, track_mbid, duration_ms, loved) VALUES
 (-1, 'edge', '1969-12-31 23:59:59.5+00', 'Björk', NULL, NULL, NULL, 'Jóga', NULL, NULL, true),
 (-2, 'edge', '9999-12-31 23:59:59.999999+00', 'Björk', NULL, '', NULL, 'Jóga', NULL, 1000, false),
 (-3, 'edge', '4714-11-24 00:00:00+00 BC', 'Bjo' || U&'\0308' || 'rk', NULL, 'Homogenic', NULL, 'Jóga', NULL, NULL, false),
 (-4, 'Edge', '2020-03-01 00:00:00+14', 'Björk ', '11111111-1111-4111-8111-111111111111', 'Homogenic', NULL, 'Jóga', NULL, NULL, false),
 (-5, 'edge', '1900-06-30 12:00:00.000001-03:30', 'björk', NULL, 'Homogenic', NULL, 'Jóga', NULL, 2000, false),
 (-6, 'edge', '1970-01-01 00:00:00+00', 'Björk', '22222222-2222-4222-8222-222222222222', NULL, NULL, 'Jóga', NULL, 3000, false),
 (-7, 'edge', '1969-12-31 23:59:59.999999+00', 'Björk', '33333333-3333-4333-8333-333333333333', NULL, NULL, 'jóga', NULL, NULL, false)
"#;

fn load_json(url: &str, target: &std::path::Path, extra: &[&str]) -> Value {
    load_logged(url, target, extra).0
}

/// A load with scrobsync's debug log: its JSON summary and its stderr.
fn load_logged(url: &str, target: &std::path::Path, extra: &[&str]) -> (Value, String) {
    let out = bin()
        .args(["load", "--source", url, "--target"])
        .arg(target)
        .arg("--json")
        .args(extra)
        .env("RUST_LOG", "scrobsync=debug")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "load failed: {err}");
    let json = serde_json::from_slice(&out.stdout).expect("--json prints JSON on stdout");
    (json, err)
}

#[test]
fn lossless_on_260k_nasty_rows_with_stable_keys() {
    let db = TestDb::new("nasty");
    // Above 250k analysed rows the plan cuts slices at a block sample's quantiles, which need
    // not see the outliers (ids −1…−7 below); every row must still be read.
    seed(&db, &["--rows", "260000", "--users", "40", "--seed", "7"]);
    let mut client = db.client();
    client.batch_execute(EDGE_ROWS).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.sqlite");

    let (summary, log) = load_logged(
        &db.url,
        &target,
        &["--partitions", "3", "--batch-rows", "20000"],
    );
    assert!(
        log.lines()
            .any(|l| l.contains("read planned") && l.contains("sampled=true")),
        "the plan must have cut at a sample: {log}"
    );
    assert_eq!(summary["rows"]["scrobbles"], 260_007);
    assert!(
        summary["windows"].as_u64().unwrap() > 1,
        "small batches must give several windows"
    );
    for stage in [
        "plan",
        "read",
        "normalize",
        "write",
        "index",
        "check",
        "total",
    ] {
        assert!(
            summary["seconds"][stage].is_number(),
            "missing stage {stage}"
        );
    }

    assert_lossless(&mut client, &target);
    assert_same_daily_counts(&mut client, &target);

    // Exact epochs, floor not truncation, independent of the database's Pacific/Chatham zone.
    let conn = Connection::open(&target).unwrap();
    for (id, epoch) in [
        (-1, -1i64),
        (-2, 253_402_300_799),
        (-3, -210_866_803_200),
        (-4, 1_582_970_400),
        (-5, -2_193_381_000),
        (-6, 0),
        (-7, -1),
    ] {
        let got: i64 = conn
            .query_row(
                "SELECT played_at FROM scrobbles WHERE scrobble_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(got, epoch, "played_at of id {id}");
    }
    // NULL album and '' album are different tracks; '' is an album row.
    let empty_albums: i64 = conn
        .query_row("SELECT count(*) FROM albums WHERE title = ''", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        empty_albums >= 2,
        "seeded and edge '' albums: {empty_albums}"
    );
    let t1: i64 = conn
        .query_row(
            "SELECT track_id FROM scrobbles WHERE scrobble_id = -1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let t2: i64 = conn
        .query_row(
            "SELECT track_id FROM scrobbles WHERE scrobble_id = -2",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_ne!(t1, t2);
    // Attribute rule: first non-NULL mbid in id order (-6 comes before -4's artist? no: -4 is
    // 'Björk ' with a trailing space, another artist). For 'Björk': ids -7 < -6, -7 wins.
    let mbid: Option<String> = conn
        .query_row("SELECT mbid FROM artists WHERE name = 'Björk'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(
        mbid.as_deref(),
        Some("33333333-3333-4333-8333-333333333333")
    );
    let dur: Option<i64> = conn
        .query_row(
            "SELECT duration_ms FROM tracks t JOIN artists a USING(artist_id)
             WHERE a.name = 'Björk' AND t.title = 'Jóga' AND t.album_id IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        dur,
        Some(3000),
        "first non-NULL duration in id order (-6) wins over none (-1)"
    );
    // Schema contract.
    let cols = dump(
        &conn,
        "SELECT name, type, \"notnull\", pk FROM pragma_table_info('tracks')",
    );
    assert_eq!(cols.len(), 6, "{cols:?}");
    let all: Vec<String> = dump(
        &conn,
        "SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
         WHERE m.type = 'table' AND m.name NOT LIKE '\\_%' ESCAPE '\\' AND m.name NOT LIKE 'sqlite%' ORDER BY m.name, p.cid",
    );
    let expect = [
        "album_plays|album_id",
        "album_plays|plays",
        "albums|album_id",
        "albums|artist_id",
        "albums|title",
        "albums|mbid",
        "artist_plays|artist_id",
        "artist_plays|plays",
        "artists|artist_id",
        "artists|name",
        "artists|mbid",
        "hourly_plays|hour",
        "hourly_plays|plays",
        "scrobbles|scrobble_id",
        "scrobbles|user_id",
        "scrobbles|track_id",
        "scrobbles|played_at",
        "scrobbles|loved",
        "track_plays|track_id",
        "track_plays|plays",
        "tracks|track_id",
        "tracks|artist_id",
        "tracks|album_id",
        "tracks|title",
        "tracks|mbid",
        "tracks|duration_ms",
        "users|user_id",
        "users|name",
    ];
    let got: Vec<String> = all
        .iter()
        .map(|s| {
            s.replace("Text(\"", "")
                .replace("\")", "")
                .trim_end_matches('|')
                .to_string()
        })
        .collect();
    assert_eq!(got, expect);
    drop(conn);

    // Keys are a function of the source: another partitioning gives identical tables, and so
    // does the connectorx reader (the same rows, decoded by another library).
    let a = Connection::open(&target).unwrap();
    for (name, args) in [
        (
            "again",
            [
                "--partitions",
                "1",
                "--batch-rows",
                "150000",
                "--reader",
                "copy",
            ],
        ),
        (
            "cx",
            [
                "--partitions",
                "2",
                "--batch-rows",
                "30000",
                "--reader",
                "connectorx",
            ],
        ),
    ] {
        let other = dir.path().join(format!("{name}.sqlite"));
        load_json(&db.url, &other, &args);
        let b = Connection::open(&other).unwrap();
        for sql in [
            "SELECT * FROM users ORDER BY user_id",
            "SELECT * FROM artists ORDER BY artist_id",
            "SELECT * FROM albums ORDER BY album_id",
            "SELECT * FROM tracks ORDER BY track_id",
            "SELECT * FROM scrobbles ORDER BY scrobble_id",
        ] {
            assert!(
                dump(&a, sql) == dump(&b, sql),
                "{sql} differs between loads ({name})"
            );
        }
    }
}

/// PostgreSQL stores timestamps up to 294276 AD; chrono (and so connectorx) stops at 262143.
/// The default reader loads the years between, and names a row beyond the microsecond range.
#[test]
fn far_future_timestamps() {
    let db = TestDb::new("future");
    let mut client = db.client();
    client
        .batch_execute(scrobsync::modes::seed::SOURCE_DDL)
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
             VALUES (1, 'u', '270000-06-01 00:00:00.5+00', 'a', 't')",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("future.sqlite");
    load_json(&db.url, &target, &[]);
    let got: i64 = Connection::open(&target)
        .unwrap()
        .query_row("SELECT played_at FROM scrobbles", [], |r| r.get(0))
        .unwrap();
    let expect: i64 = client
        .query_one(
            "SELECT floor(extract(epoch FROM played_at))::int8 FROM scrobbles",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(got, expect);

    client
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
             VALUES (2, 'u', '294276-12-31 23:59:59+00', 'a', 't')",
        )
        .unwrap();
    let before = std::fs::read(&target).unwrap();
    let out = bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("id 2") && err.contains("294246"), "{err}");
    // One error line (a warning of another kind, e.g. about writers elsewhere on a busy
    // server, may stand above it).
    let errors = err.lines().filter(|l| !l.contains(" WARN ")).count();
    assert_eq!(errors, 1, "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), before, "target untouched");
}

#[test]
fn empty_source_gives_empty_target() {
    let db = TestDb::new("empty");
    db.client()
        .batch_execute(scrobsync::modes::seed::SOURCE_DDL)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("empty.sqlite");
    let s = load_json(&db.url, &target, &[]);
    assert_eq!(s["rows"]["scrobbles"], 0);
    let conn = Connection::open(&target).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
    // Every foreign key names the column it refers to (Datasette and other browsers read
    // `PRAGMA foreign_key_list` to expand keys into names).
    let fks: Vec<(String, String, Option<String>)> = ["albums", "tracks", "scrobbles"]
        .iter()
        .flat_map(|t| {
            let mut s = conn
                .prepare(&format!(
                    "SELECT \"table\", \"from\", \"to\" FROM pragma_foreign_key_list('{t}')"
                ))
                .unwrap();
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(fks.len(), 5, "{fks:?}");
    // Counting the plays view reads scrobbles alone (the joins it does not need are left out).
    let plan: Vec<String> = conn
        .prepare("EXPLAIN QUERY PLAN SELECT count(*) FROM plays")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        plan.iter()
            .all(|p| !p.contains("users") && !p.contains("artists") && !p.contains("tracks")),
        "{plan:?}"
    );
    for (table, from, to) in &fks {
        assert_eq!(to.as_deref(), Some(from.as_str()), "{table}: {fks:?}");
    }
}

#[test]
fn source_from_env_and_replacing_an_existing_target() {
    let db = TestDb::new("env");
    bin()
        .args(["seed", "--rows", "3000"])
        .env("SCROBSYNC_SOURCE", &db.url)
        .assert()
        .success();
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.sqlite");
    std::fs::write(&target, b"old content").unwrap();
    // Not a scrobsync target: refused without --force, and left as it was.
    bin()
        .args(["load", "--target"])
        .arg(&target)
        .env("DATABASE_URL", &db.url)
        .assert()
        .code(1)
        .stderr(
            predicates::str::contains("not a SQLite database")
                .and(predicates::str::contains("--force")),
        );
    assert_eq!(std::fs::read(&target).unwrap(), b"old content");
    bin()
        .args(["load", "--force", "--target"])
        .arg(&target)
        .env("DATABASE_URL", &db.url)
        .assert()
        .success()
        .stdout(predicates::str::contains("loaded 3,000 scrobbles"));
    assert_lossless(&mut db.client(), &target);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        leftovers,
        vec!["t.sqlite".to_string()],
        "no temporary files left"
    );
}

#[test]
fn tls_when_the_url_asks_for_it() {
    let db = TestDb::new("tls");
    let ssl: String = db.client().query_one("SHOW ssl", &[]).unwrap().get(0);
    seed(&db, &["--rows", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("tls.sqlite");
    let url = format!("{}?sslmode=require", db.url);
    // CI sets SCROBSYNC_REQUIRE_TLS: there a server without TLS fails the test instead of
    // leaving the encrypted path untested.
    assert!(
        ssl == "on" || std::env::var_os("SCROBSYNC_REQUIRE_TLS").is_none(),
        "SCROBSYNC_REQUIRE_TLS is set but the server has ssl = off"
    );
    if ssl == "on" {
        let s = load_json(&url, &target, &[]);
        assert_eq!(s["rows"]["scrobbles"], 5000);
        assert_lossless(&mut db.client(), &target);
    } else {
        // A server without TLS: sslmode=require must refuse to go on unencrypted, not fall
        // back silently. The encrypted load itself is not tested then: say so.
        eprintln!("tls_when_the_url_asks_for_it: the server has ssl = off, so only the refusal was tested");
        let o = bin()
            .args(["load", "--retries", "0", "--source", &url, "--target"])
            .arg(&target)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(
            !target.exists(),
            "nothing loaded over an unencrypted connection"
        );
    }
}

/// The lossless rule at benchmark scale. Slow (about half a minute here), so it runs on demand:
/// `cargo test --release -- --ignored`.
#[test]
#[ignore]
fn lossless_on_1m_rows() {
    let db = TestDb::new("million");
    seed(&db, &["--rows", "1000000", "--users", "200"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.sqlite");
    let s = load_json(&db.url, &target, &[]);
    assert_eq!(s["rows"]["scrobbles"], 1_000_000);
    let mut client = db.client();
    assert_lossless(&mut client, &target);
    assert_same_daily_counts(&mut client, &target);
}
