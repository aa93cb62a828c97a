//! Shared test helpers: a uniquely named PostgreSQL database per test, dropped afterwards,
//! and the lossless check of a target against its source.
#![allow(dead_code)]

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// The server tests run against; override with SCROBSYNC_TEST_PG.
pub fn admin_url() -> String {
    std::env::var("SCROBSYNC_TEST_PG")
        .unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/postgres".into())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh database, dropped (with its connections) when the value goes away.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "scrobsync_t_{tag}_{}_{}_{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls)
            .expect("PostgreSQL must be running for the integration tests (see .ci/run)");
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        // A far-from-UTC zone with a 45-minute offset: results must not depend on it.
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{name}\" SET timezone TO 'Pacific/Chatham'"
            ))
            .unwrap();
        let mut url = url::Url::parse(&admin_url()).unwrap();
        url.set_path(&format!("/{name}"));
        Self {
            name,
            url: url.to_string(),
        }
    }

    pub fn client(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Ok(mut admin) = postgres::Client::connect(&admin_url(), postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// (id, username, floor epoch seconds, artist, album or NULL, track, loved)
pub type Tuple = (i64, String, i64, String, Option<String>, String, bool);

/// The lossless tuples of the source, with the epoch computed by PostgreSQL itself.
pub fn source_tuples(client: &mut postgres::Client) -> Vec<Tuple> {
    client
        .query(
            "SELECT id, username, floor(extract(epoch FROM played_at))::int8, artist_name,
                    album_name, track_name, loved
             FROM scrobbles ORDER BY id",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                r.get(6),
            )
        })
        .collect()
}

/// The same tuples, rebuilt by joining the target's tables.
pub fn target_tuples(conn: &Connection) -> Vec<Tuple> {
    let mut stmt = conn
        .prepare(
            "SELECT s.scrobble_id, u.name, s.played_at, a.name, al.title, t.title, s.loved
             FROM scrobbles s
             JOIN users u ON u.user_id = s.user_id
             JOIN tracks t ON t.track_id = s.track_id
             JOIN artists a ON a.artist_id = t.artist_id
             LEFT JOIN albums al ON al.album_id = t.album_id
             ORDER BY s.scrobble_id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let loved: i64 = r.get(6)?;
        assert!(
            loved == 0 || loved == 1,
            "loved must be 0 or 1, got {loved}"
        );
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            loved == 1,
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Asserts the lossless rule for every row, plus the structural checks of a target.
pub fn assert_lossless(client: &mut postgres::Client, target: &Path) {
    let conn = Connection::open(target).unwrap();
    let src = source_tuples(client);
    let dst = target_tuples(&conn);
    assert_eq!(src.len(), dst.len(), "row counts differ");
    for (s, d) in src.iter().zip(&dst) {
        assert_eq!(s, d, "row differs");
    }
    let dangling: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(dangling, 0, "foreign_key_check must be empty");
    // An album belongs to the artist of the scrobbles that name it.
    let mismatched: i64 = conn
        .query_row(
            "SELECT count(*) FROM tracks t JOIN albums al ON al.album_id = t.album_id
             WHERE al.artist_id <> t.artist_id",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0);
}

/// Rows per UTC day number (floor of epoch / 86400) on both sides.
pub fn assert_same_daily_counts(client: &mut postgres::Client, target: &Path) {
    let src: Vec<(i64, i64)> = client
        .query(
            "SELECT floor(extract(epoch FROM played_at) / 86400)::int8 d, count(*)
             FROM scrobbles GROUP BY d ORDER BY d",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let conn = Connection::open(target).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT (played_at - ((played_at % 86400) + 86400) % 86400) / 86400 AS d, count(*)
             FROM scrobbles GROUP BY d ORDER BY d",
        )
        .unwrap();
    let dst: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(src.len() > 100, "expected many distinct days");
    assert_eq!(src, dst);
}

/// All rows of a query as text, one string per row (for comparing whole tables).
pub fn dump(conn: &Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        let mut s = String::new();
        for i in 0..n {
            let v: rusqlite::types::Value = r.get(i)?;
            s.push_str(&format!("{v:?}|"));
        }
        Ok(s)
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// `scrobsync seed --source <db> ARGS`, which must succeed.
pub fn seed(db: &TestDb, args: &[&str]) {
    bin()
        .args(["seed", "--source", &db.url])
        .args(args)
        .assert()
        .success();
}

/// A minimal file that scrobsync accepts as an existing target (it has `_scrobsync_state`),
/// with a little content of its own.
pub fn fake_target(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(scrobsync::sink::schema::TABLES).unwrap();
    c.execute_batch(scrobsync::sink::state::STATE_TABLES)
        .unwrap();
    c.execute_batch(
        "INSERT INTO _scrobsync_state VALUES ('schema_version', '1'), ('note', 'previous target content');",
    )
    .unwrap();
}

/// A mapping whose query divides by zero in the middle of the rows (a data error, never
/// transient).
pub fn division_by_zero_mapping(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("div.toml");
    std::fs::write(
        &cfg,
        "[source]\nquery = \"select id, username, played_at, artist_name, track_name, \
         (case when id % 1000 = 999 then (1 / (id - id))::text end) as album_name from scrobbles\"\n",
    )
    .unwrap();
    cfg
}

/// The exit code of `verify` of `target` against `db` (0 equal, 3 differing).
pub fn verify_code(db: &TestDb, target: &Path) -> i32 {
    bin()
        .args(["verify", "--source", &db.url, "--target"])
        .arg(target)
        .output()
        .unwrap()
        .status
        .code()
        .unwrap()
}

pub fn bin() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("scrobsync").unwrap();
    c.env_remove("SCROBSYNC_SOURCE")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG");
    c
}
