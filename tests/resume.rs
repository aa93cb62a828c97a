//! `load --resume`: a load killed at any point continues from its last durable point and ends
//! with the file a load that was never killed makes; a changed source or other options are
//! refused, naming why.

mod common;

use common::*;
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// Every table and index of a target except scrobsync's run log and state (times differ), as
/// text, each table in key order.
fn contents(path: &Path) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut out = dump(
        &c,
        "SELECT type, name, tbl_name, sql FROM sqlite_master
         WHERE name NOT LIKE '\\_scrobsync%' ESCAPE '\\' AND name NOT LIKE 'sqlite_stat%'
         ORDER BY type, name",
    );
    let tables: Vec<String> = c
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table'
             AND name NOT LIKE '\\_scrobsync%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'
             AND name NOT LIKE 'names_fts%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(tables.len() >= 5, "{tables:?}");
    for t in tables {
        out.push(format!("-- {t}"));
        out.extend(dump(&c, &format!("SELECT * FROM \"{t}\" ORDER BY 1, 2")));
    }
    out.push("-- state".into());
    out.extend(dump(
        &c,
        "SELECT key, value FROM _scrobsync_state WHERE key IN ('hwm', 'schema_version', 'source_identity') ORDER BY key",
    ));
    out
}

/// The files in `dir`, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

const LOAD: [&str; 5] = ["load", "--batch-rows", "1000", "--partitions", "1"];

/// A load of `db` into `target` that the failpoint `fp` kills; it must have died of it.
fn killed_load(db: &TestDb, target: &Path, fp: &str, extra: &[&str]) {
    let out = bin()
        .args(LOAD)
        .args(extra)
        .args(["--source", &db.url, "--target"])
        .arg(target)
        .env("SCROBSYNC_FAILPOINT", fp)
        .env("SCROBSYNC_DURABLE_SECONDS", "0")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        None,
        "{fp}: the load must be killed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `load --resume`; its JSON summary.
fn resumed(db: &TestDb, target: &Path, extra: &[&str]) -> serde_json::Value {
    let out = bin()
        .args(LOAD)
        .args(extra)
        .args(["--resume", "--json", "--source", &db.url, "--target"])
        .arg(target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn fresh_load(db: &TestDb, target: &Path, extra: &[&str]) {
    bin()
        .args(LOAD)
        .args(extra)
        .args(["--source", &db.url, "--target"])
        .arg(target)
        .assert()
        .success();
}

#[test]
fn a_load_killed_anywhere_resumes_to_the_file_a_fresh_load_makes() {
    let db = TestDb::new("resume");
    seed(&db, &["--rows", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.sqlite");
    fresh_load(&db, &fresh, &["--fts"]);
    let want = contents(&fresh);
    let rows = |p: &Path| -> i64 {
        Connection::open(p)
            .unwrap()
            .query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(rows(&fresh), 20_000);

    // While streaming (after a durable point, and with a window's pages written into the file
    // before its commit), during the index build, the summaries and the checks.
    for (fp, kept_rows) in [
        ("abort-after-windows=7", false),
        ("flush-and-abort-after-windows=9", false),
        ("abort-at=finishing", true),
        ("abort-at=checks", true),
        ("flush-and-abort-in-index=2", true),
        ("flush-and-abort-in-index=6", true),
        ("flush-and-abort-at=summaries", true),
    ] {
        let sub = tempfile::tempdir().unwrap();
        let t = sub.path().join("t.sqlite");
        killed_load(&db, &t, fp, &["--fts"]);
        assert!(!t.exists(), "{fp}: a killed load installs nothing");
        // status names it and the command that continues it
        let out = bin().args(["status", "--target"]).arg(&t).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{fp}: {text}");
        assert!(
            text.contains("interrupted load")
                && text.contains("load --resume")
                && text.contains("--fts"),
            "{fp}: {text}"
        );
        let summary = resumed(&db, &t, &["--fts"]);
        let kept = summary["resumed_rows"].as_u64().unwrap();
        if kept_rows {
            assert_eq!(kept, 20_000, "{fp}: {summary}");
        } else {
            assert!(kept > 0 && kept < 20_000, "{fp}: {summary}");
        }
        assert_eq!(summary["rows"]["scrobbles"], 20_000, "{fp}: {summary}");
        assert_eq!(contents(&t), want, "{fp}: the resumed file differs");
        assert_eq!(files(sub.path()), vec!["t.sqlite".to_string()], "{fp}");
        assert_eq!(verify_code(&db, &t), 0, "{fp}");
    }
}

#[test]
fn a_load_killed_at_a_random_moment_resumes() {
    let db = TestDb::new("resumekill");
    seed(&db, &["--rows", "150000"]);
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.sqlite");
    fresh_load(&db, &fresh, &[]);
    let want = contents(&fresh);
    for delay_ms in [300u64, 900] {
        let sub = tempfile::tempdir().unwrap();
        let t = sub.path().join("t.sqlite");
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
            .args(LOAD)
            .args(["--source", &db.url, "--target"])
            .arg(&t)
            .env("SCROBSYNC_DURABLE_SECONDS", "0.1")
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.success() {
            // Finished before the kill (a fast machine): nothing to resume.
            assert_eq!(contents(&t), want);
            continue;
        }
        let s = resumed(&db, &t, &[]);
        assert_eq!(s["rows"]["scrobbles"], 150_000, "{s}");
        assert_eq!(contents(&t), want, "killed after {delay_ms} ms");
    }
}

/// A load of `db` into a new target in a new folder, killed after its 5th window.
fn interrupted(db: &TestDb) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("t.sqlite");
    killed_load(db, &t, "abort-after-windows=5", &[]);
    (dir, t)
}

fn refused(db_url: &str, target: &Path, extra: &[&str]) -> String {
    let out = bin()
        .args(LOAD)
        .args(extra)
        .args(["--resume", "--source", db_url, "--target"])
        .arg(target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "one error line: {err}"
    );
    assert!(!target.exists());
    err
}

#[test]
fn resume_refuses_a_changed_source_or_other_options_and_takes_new_rows() {
    let db = TestDb::new("resumechg");
    seed(&db, &["--rows", "12000"]);
    let other = TestDb::new("resumeother");
    seed(&other, &["--rows", "12000"]);
    let mut client = db.client();

    // Nothing to resume.
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&db.url, &dir.path().join("none.sqlite"), &[]);
    assert!(err.contains("no interrupted load"), "{err}");

    let (dir, t) = interrupted(&db);
    // Other options, another source: refused, and the file stays for the right command.
    let err = refused(&db.url, &t, &["--fts"]);
    assert!(
        err.contains("cannot resume") && err.contains("--fts"),
        "{err}"
    );
    let err = refused(&other.url, &t, &[]);
    assert!(
        err.contains("cannot resume") && err.contains("source"),
        "{err}"
    );
    let kept: Vec<String> = files(dir.path())
        .into_iter()
        .filter(|f| f.ends_with(".tmp"))
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", files(dir.path()));

    // A row it read was changed on the source: refused.
    client
        .batch_execute("UPDATE scrobbles SET track_name = track_name || ' (live)' WHERE id = (SELECT min(id) FROM scrobbles)")
        .unwrap();
    let err = refused(&db.url, &t, &[]);
    assert!(err.contains("source changed below id"), "{err}");

    // A row it read was deleted: refused.
    let (_dir2, t2) = interrupted(&db);
    client
        .batch_execute("DELETE FROM scrobbles WHERE id = (SELECT min(id) FROM scrobbles)")
        .unwrap();
    let err = refused(&db.url, &t2, &[]);
    assert!(err.contains("source changed below id"), "{err}");

    // Rows added above what it read, while it was down: the resumed load takes them, and
    // equals a fresh load of the source as it is now.
    let (_dir3, t3) = interrupted(&db);
    client
        .batch_execute(
            "INSERT INTO scrobbles(id, username, played_at, artist_name, album_name, track_name, loved)
             SELECT m.top + row_number() OVER (ORDER BY id), username || '_new', played_at, artist_name, NULL, track_name || ' (new)', loved
             FROM scrobbles, (SELECT max(id) AS top FROM scrobbles) AS m ORDER BY id LIMIT 500",
        )
        .unwrap();
    let s = resumed(&db, &t3, &[]);
    let kept = s["resumed_rows"].as_u64().unwrap();
    assert!(kept > 0 && kept < 12_000, "{s}");
    let fresh = dir.path().join("fresh.sqlite");
    fresh_load(&db, &fresh, &[]);
    assert_eq!(contents(&t3), contents(&fresh));
    assert_lossless(&mut client, &t3);
}

#[test]
fn resume_refuses_a_table_made_anew_or_an_expression_mapping_and_keeps_its_file_when_the_source_is_down(
) {
    let db = TestDb::new("resumeswap");
    seed(&db, &["--rows", "12000"]);
    let mut client = db.client();

    // The table swapped for an identical copy: its rows' versions are older than the load,
    // yet it is another table (it might not have been identical).
    client
        .batch_execute(
            "CREATE TABLE scrobbles_copy (LIKE scrobbles INCLUDING ALL);
             INSERT INTO scrobbles_copy SELECT * FROM scrobbles;",
        )
        .unwrap();
    // Rows written before the interrupted load: make their versions as old as the load's.
    let (_dir0, t0) = interrupted(&db);
    client
        .batch_execute(
            "BEGIN; ALTER TABLE scrobbles RENAME TO scrobbles_old;
             ALTER TABLE scrobbles_copy RENAME TO scrobbles; COMMIT;",
        )
        .unwrap();
    let err = refused(&db.url, &t0, &[]);
    assert!(err.contains("made anew"), "{err}");

    // A mapping with an expression (here reading another table) cannot be resumed.
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("expr.toml");
    std::fs::write(
        &cfg,
        "[source]\ntable = \"scrobbles\"\n[source.columns]\nid = \"id\"\nplayed_at = \"played_at\"\n\
         artist_name = \"artist_name\"\ntrack_name = \"track_name\"\n\
         username = \"(SELECT upper(s.username) FROM scrobbles_old s WHERE s.id = scrobbles.id)\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let (_dir1, t1) = {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path().join("t.sqlite");
        killed_load(&db, &t, "abort-after-windows=3", &["--config", cfg]);
        (dir, t)
    };
    let err = refused(&db.url, &t1, &["--config", cfg]);
    assert!(err.contains("expression"), "{err}");

    // The source is not up (yet): the resume fails and keeps the file; once it is, it resumes.
    let (dir2, t2) = interrupted(&db);
    let mut down = url::Url::parse(&db.url).unwrap();
    down.set_port(Some(1)).unwrap();
    let out = bin()
        .args(LOAD)
        .args([
            "--resume",
            "--retries",
            "0",
            "--source",
            down.as_str(),
            "--target",
        ])
        .arg(&t2)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        files(dir2.path()).iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        files(dir2.path())
    );
    let s = resumed(&db, &t2, &[]);
    assert!(s["resumed_rows"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(verify_code(&db, &t2), 0);
}
