//! End-to-end CLI behaviour on bad input: one clear line, non-zero exit, no panic, no password,
//! and the previous target untouched.

mod common;

use common::*;
use predicates::prelude::*;
use std::path::Path;

const SECRET: &str = "Sup3rS3cretPw";

/// Runs a failing command and returns its stderr after the common assertions.
fn fails(args: &[&str], target_dir: Option<&Path>) -> String {
    let out = bin().args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code for {args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    assert!(
        !stderr.contains(SECRET) && !stdout.contains(SECRET),
        "password leaked: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line for {args:?}: {stderr}");
    if let Some(dir) = target_dir {
        let names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("scrobsync-"))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
    }
    lines[0].to_string()
}

/// A scrobsync target with known content that every failure must leave byte-for-byte as it
/// was.
fn precious_target(dir: &Path) -> std::path::PathBuf {
    let t = dir.join("precious.sqlite");
    fake_target(&t);
    t
}

fn assert_untouched(t: &Path) {
    // The same statements on a fresh file give the same bytes.
    let other = tempfile::tempdir().unwrap();
    let fresh = other.path().join("fresh.sqlite");
    fake_target(&fresh);
    assert_eq!(
        std::fs::read(t).unwrap(),
        std::fs::read(&fresh).unwrap(),
        "the previous target must be untouched"
    );
}

#[test]
fn unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    let url = format!("postgresql://postgres:{SECRET}@127.0.0.1:1/postgres");
    // A refused connection is transient: retried (here once, with a warning that must not
    // show the password either), then the error.
    for (verbosity, retries) in [("-v", "1"), ("-vvv", "0")] {
        let e = fails(
            &[
                "load",
                verbosity,
                "--retries",
                retries,
                "--source",
                &url,
                "--target",
                t.to_str().unwrap(),
            ],
            Some(dir.path()),
        );
        assert!(
            e.contains("connection refused") && e.contains("127.0.0.1:1"),
            "{e}"
        );
    }
    assert_untouched(&t);
}

#[test]
fn bad_urls() {
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    let ts = t.to_str().unwrap();
    let e = fails(
        &[
            "load",
            "--source",
            &format!("not a url {SECRET}"),
            "--target",
            ts,
        ],
        Some(dir.path()),
    );
    assert!(
        e.contains("invalid source") && e.contains("postgresql://"),
        "{e}"
    );
    let e = fails(
        &[
            "load",
            "--source",
            &format!("mysql://root:{SECRET}@localhost/db"),
            "--target",
            ts,
        ],
        None,
    );
    assert!(e.contains("not supported"), "{e}");
    // No source at all is a usage error.
    bin()
        .args(["load", "--target", ts])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("SCROBSYNC_SOURCE").and(predicate::str::contains("PGHOST")),
        );
    assert_untouched(&t);
}

#[test]
fn rejected_login_and_missing_database() {
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    let ts = t.to_str().unwrap();
    // (A rejected password is tested against a test endpoint in tests/auth.rs.)
    let e = fails(
        &[
            "load",
            "--source",
            &format!("postgresql://postgres:{SECRET}@127.0.0.1:5432/no_such_db_scrobsync"),
            "--target",
            ts,
        ],
        Some(dir.path()),
    );
    assert!(
        e.contains("no_such_db_scrobsync") && e.contains("does not exist"),
        "{e}"
    );
    assert_untouched(&t);
}

#[test]
fn missing_table_and_column() {
    let db = TestDb::new("missing");
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    let ts = t.to_str().unwrap();
    let e = fails(
        &["load", "--source", &db.url, "--target", ts],
        Some(dir.path()),
    );
    assert!(e.contains("source table 'scrobbles' not found"), "{e}");
    // The advice never writes generated rows into somebody's database; it names --config.
    assert!(e.contains("--config") && !e.contains("seed"), "{e}");
    db.client()
        .batch_execute(
            "CREATE TABLE scrobbles (id bigint primary key, username text not null,
             played_at timestamptz not null, artist_name text not null, artist_mbid uuid,
             album_name text, album_mbid uuid, track_name text not null, track_mbid uuid,
             duration_ms integer)",
        )
        .unwrap();
    let e = fails(
        &["load", "--source", &db.url, "--target", ts],
        Some(dir.path()),
    );
    assert!(
        e.contains("lacks a required column") && e.contains("loved"),
        "{e}"
    );
    db.client()
        .batch_execute("ALTER TABLE scrobbles ADD COLUMN loved text")
        .unwrap();
    let e = fails(
        &["load", "--source", &db.url, "--target", ts],
        Some(dir.path()),
    );
    assert!(e.contains("scrobbles.loved") && e.contains("text"), "{e}");
    assert_untouched(&t);
}

#[test]
fn bad_target_paths() {
    let db = TestDb::new("paths");
    seed(&db, &["--rows", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/folder/x.sqlite");
    let e = fails(
        &[
            "load",
            "--source",
            &db.url,
            "--target",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert!(e.contains("does not exist") && e.contains("mkdir"), "{e}");
    let file = dir.path().join("plainfile");
    std::fs::write(&file, b"x").unwrap();
    let under_file = file.join("x.sqlite");
    let e = fails(
        &[
            "load",
            "--source",
            &db.url,
            "--target",
            under_file.to_str().unwrap(),
        ],
        None,
    );
    assert!(e.contains("not a folder"), "{e}");
    // Root ignores permission bits, so use a read-only file system for "cannot write".
    let e = fails(
        &[
            "load",
            "--source",
            &db.url,
            "--target",
            "/proc/scrobsync-test.sqlite",
        ],
        None,
    );
    assert!(e.contains("cannot write in target folder /proc"), "{e}");
    let e = fails(
        &[
            "load",
            "--source",
            &db.url,
            "--target",
            dir.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(e.contains("is a folder"), "{e}");
}

#[test]
fn infinite_timestamps_stop_the_load_naming_ids() {
    let db = TestDb::new("inf");
    seed(&db, &["--rows", "5000"]);
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
             VALUES (-77, 'u', 'infinity', 'a', 't'), (-78, 'u', '-infinity', 'a', 't')",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    let e = fails(
        &["load", "--source", &db.url, "--target", t.to_str().unwrap()],
        Some(dir.path()),
    );
    assert!(
        e.contains("-77") && e.contains("-78") && e.contains("infinity"),
        "{e}"
    );
    assert_untouched(&t);
}

#[test]
fn help_has_examples() {
    for sub in [
        None,
        Some("load"),
        Some("seed"),
        Some("demo"),
        Some("sync"),
        Some("status"),
        Some("backfill"),
        Some("verify"),
        Some("bench"),
        Some("config"),
    ] {
        let mut c = bin();
        if let Some(s) = sub {
            c.arg(s);
        }
        c.arg("--help")
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
    bin().args(["load", "--help"]).assert().stdout(
        predicate::str::contains("--source")
            .and(predicate::str::contains("--target"))
            .and(predicate::str::contains("--partitions"))
            .and(predicate::str::contains("--batch-rows"))
            .and(predicate::str::contains("--json")),
    );
}

#[test]
fn password_never_printed_even_on_success_at_trace_level() {
    let db = TestDb::new("pw");
    seed(&db, &["--rows", "2000"]);
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_password(Some(SECRET)).unwrap(); // trust auth accepts any password
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("ok.sqlite");
    let out = bin()
        .args([
            "load",
            "-vvv",
            "--json",
            "--source",
            url.as_str(),
            "--target",
            t.to_str().unwrap(),
        ])
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = [out.stdout, out.stderr].concat();
    let text = String::from_utf8_lossy(&all);
    assert!(!text.contains(SECRET), "password printed");
    assert!(text.contains("***"), "the redacted URL is shown");
    let conn = rusqlite::Connection::open(&t).unwrap();
    let runs: String = conn
        .query_row(
            "SELECT group_concat(source) FROM _scrobsync_runs",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!runs.contains(SECRET) && runs.contains("***"), "{runs}");
}

#[test]
fn ctrl_c_stops_a_load_cleanly_and_stale_temp_files_are_swept() {
    let db = TestDb::new("sigint");
    seed(&db, &["--rows", "200000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = precious_target(dir.path());
    // A temporary file of a killed earlier run (its pid does not exist).
    let stale = dir.path().join(".precious.sqlite.scrobsync-4000000.tmp");
    std::fs::write(&stale, b"half-written").unwrap();
    // status names it, and how to remove it
    bin()
        .args(["status", "--target"])
        .arg(&t)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("leftover temporary file").and(predicate::str::contains(
                ".precious.sqlite.scrobsync-4000000.tmp",
            )),
        );
    // The load pauses after its third window (a failpoint) and is interrupted there: in the
    // middle of streaming, whatever the machine's speed.
    let (out, _) = interrupted_at(
        &[
            "load",
            "--batch-rows",
            "1000",
            "--partitions",
            "1",
            "--source",
            &db.url,
            "--target",
        ],
        &t,
        3,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    // What the stopped load leaves, and nothing about other commands.
    assert!(
        err.contains("interrupted: the target is as it was")
            && err.contains("scrobsync load --resume"),
        "{err}"
    );
    assert!(!err.contains("next sync"), "{err}");
    assert_untouched(&t);
    let files = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    // The stale file was swept; the interrupted load's file stays for --resume, and status
    // says how to continue it.
    let left: Vec<String> = files()
        .into_iter()
        .filter(|f| !f.ends_with("-journal"))
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!left.iter().any(|f| f.contains("4000000")), "{left:?}");
    bin()
        .args(["status", "--target"])
        .arg(&t)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("interrupted load")
                .and(predicate::str::contains("scrobsync load --resume --source"))
                .and(predicate::str::contains("leftover").not()),
        );
    // A plain load over it would start over; --resume continues it and replaces the target.
    let out = bin()
        .args([
            "load",
            "--resume",
            "--json",
            "--batch-rows",
            "1000",
            "--source",
            &db.url,
            "--target",
        ])
        .arg(&t)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["resumed_rows"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["rows"]["scrobbles"], 200_000, "{summary}");
    assert_eq!(files(), vec!["precious.sqlite".to_string()]);
    assert_lossless(&mut db.client(), &t);
}

#[test]
fn completions_quiet_runs_and_closed_pipes() {
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let o = bin().args(["completions", shell]).output().unwrap();
        assert!(o.status.success());
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(
            text.contains("scrobsync") && text.contains("backfill"),
            "{shell}"
        );
    }
    bin()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("possible values"));
    bin()
        .args(["backfill", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("day").and(predicate::str::contains("month")));

    let db = TestDb::new("quiet");
    seed(&db, &["--rows", "300"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("q.sqlite");
    let o = bin()
        .args(["load", "-q", "--source", &db.url, "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "quiet: {o:?}");

    // `scrobsync status … | head -1`: the reader is gone before anything is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = std::process::Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args(["status", "--target"])
        .arg(&t)
        .stdout(writer)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.is_empty(), "a closed pipe ends quietly: {err}");
}

#[test]
fn demo_ends_with_what_the_user_now_has() {
    let name = format!("scrobsync_t_demo_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("demo.sqlite");
    let o = bin()
        .args([
            "demo",
            "--rows",
            "3000",
            "--database",
            &name,
            "--source",
            &admin_url(),
            "--target",
        ])
        .arg(&t)
        .output()
        .unwrap();
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("loaded 3,000 scrobbles"), "{out}");
    assert!(out.contains(" s (") && out.contains(" rows/s)"), "{out}");
    assert!(
        out.contains("most played artists") && out.contains("sqlite3 "),
        "{out}"
    );
    let top: i64 = rusqlite::Connection::open(&t)
        .unwrap()
        .query_row(
            "SELECT max(c) FROM (SELECT count(*) c FROM scrobbles s JOIN tracks USING (track_id) GROUP BY artist_id)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        out.contains(&top.to_string()),
        "the top count {top} is shown: {out}"
    );
}

#[test]
fn json_answers_even_on_errors_and_names_its_mode() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("none.sqlite");
    let o = bin()
        .args(["status", "--json", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 1);
    assert!(
        v["error"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );
    // usage errors too, with clap's message only
    let o = bin()
        .args(["verify", "--json", "--by", "year", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 2);
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("'year'") && !msg.contains("Usage") && !msg.starts_with("error:"),
        "{v}"
    );

    let db = TestDb::new("jsonmode");
    seed(&db, &["--rows", "200"]);
    let t = dir.path().join("j.sqlite");
    let o = bin()
        .args(["load", "--json", "--source", &db.url, "--target"])
        .arg(&t)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mode"], "load");
    // One object on one line, for logs and `jq -c` pipelines.
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .trim_end()
            .lines()
            .count(),
        1
    );
    let hwm = v["high_water_mark_text"].as_str().unwrap();
    let exact: i64 = db
        .client()
        .query_one("SELECT max(id) FROM scrobbles", &[])
        .unwrap()
        .get(0);
    assert_eq!(hwm, exact.to_string(), "ids beyond 2^53 stay exact as text");
    let o = bin()
        .args(["status", "--json", "--target"])
        .arg(&t)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["mode"], "status");
    assert_eq!(v["high_water_mark_text"], hwm);
}

#[test]
fn summaries_speak_plainly() {
    let db = TestDb::new("words");
    seed(&db, &["--rows", "1500"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("w.sqlite");
    let ts = t.to_str().unwrap();
    let out = |args: &[&str]| {
        let o = bin().args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let load = out(&["load", "--source", &db.url, "--target", ts]);
    assert!(load.contains("(1 window × 1 partition)"), "{load}");
    for line in load.lines() {
        assert!(
            line.chars().count() <= 80 || line.contains(ts),
            "over 80 columns: {line}"
        );
    }
    let again = out(&["sync", "--source", &db.url, "--target", ts]);
    assert!(again.contains("already up to date"), "{again}");
    let v = out(&[
        "verify",
        "--source",
        &db.url,
        "--target",
        ts,
        "--from",
        "2020-01-01",
        "--to",
        "2020-02-01",
    ]);
    assert!(v.contains("checked 1 month window in"), "{v}");
    assert!(!v.contains("..="), "no Rust range syntax: {v}");
}

/// The examples of `--help`, run as written (with the test's own database as the source and
/// a temporary folder as the working directory).
#[test]
fn help_examples_run_as_written() {
    let db = TestDb::new("helpex");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["load", "sync", "backfill", "verify", "status", "search"] {
        // As an 80-column terminal shows it: no example may be split by the wrapping.
        let o = bin()
            .args([cmd, "--help"])
            .env("COLUMNS", "80")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&o.stdout).into_owned();
        let block: Vec<&str> = help
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            .collect();
        let mut examples: Vec<String> = Vec::new();
        let mut continued = false;
        for l in &block {
            assert!(l.chars().count() <= 80, "{cmd}: {l}");
            if continued {
                examples
                    .last_mut()
                    .unwrap()
                    .push_str(l.trim_end_matches('\\'));
            } else {
                assert!(
                    l.starts_with("  scrobsync ") || l.starts_with("  export "),
                    "{cmd}: an example split by wrapping: {l}"
                );
                if l.starts_with("  scrobsync ") {
                    examples.push(l.trim_end_matches('\\').to_string());
                }
            }
            continued = l.ends_with('\\') && (continued || l.starts_with("  scrobsync "));
        }
        assert!(!examples.is_empty(), "{cmd} --help has an example");
        for line in &examples {
            let args: Vec<String> = shell_words(line.trim()).into_iter().skip(1).collect();
            let o = bin()
                .current_dir(dir.path())
                .env("SCROBSYNC_SOURCE", &db.url)
                .args(&args)
                .output()
                .unwrap();
            let code = o.status.code().unwrap();
            assert!(
                code == 0 || (cmd == "verify" && code == 3),
                "`{line}` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}

/// Splits a command line at spaces, honouring single quotes (enough for the help examples).
fn shell_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[test]
fn the_run_log_records_the_reported_time() {
    let db = TestDb::new("runtime");
    seed(&db, &["--rows", "2000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("r.sqlite");
    let o = bin()
        .args(["load", "--json", "--source", &db.url, "--target"])
        .arg(&t)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reported = v["seconds"]["total"].as_f64().unwrap();
    let logged: f64 = rusqlite::Connection::open(&t)
        .unwrap()
        .query_row("SELECT seconds FROM _scrobsync_runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(logged, reported);
}

/// Rows inserted, updated and deleted in table `scrobbles` since the statistics began.
fn source_writes(client: &mut postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT pg_stat_clear_snapshot()::text IS NULL OR true, (n_tup_ins + n_tup_upd + n_tup_del)::int8
               FROM pg_stat_user_tables WHERE relname = 'scrobbles'",
            &[],
        )
        .unwrap()
        .get(1)
}

/// `bench` measures the newest plays arriving on a scratch copy of the source table: all but
/// the newest plays are loaded, those arrive with new ids and are synced. The source table is
/// never written, the copy is dropped afterwards, and plays that a bench of an earlier build
/// held aside are put back.
#[test]
fn bench_syncs_the_newest_plays_and_restores_the_source() {
    let db = TestDb::new("benchrun");
    seed(&db, &["--rows", "3000"]);
    let mut client = db.client();
    let before = source_tuples(&mut client);
    // The seed's counts reach the statistics when its backend has exited.
    let mut writes = source_writes(&mut client);
    for _ in 0..100 {
        if writes >= 3000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        writes = source_writes(&mut client);
    }
    let dir = tempfile::tempdir().unwrap();
    let bench = |rows: &str, sync_rows: &str| -> serde_json::Value {
        let out = bin()
            .args([
                "bench", "--source", &db.url, "--rows", rows, "--repeat", "1",
            ])
            .args(["--sync-rows", sync_rows, "--json", "--workdir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = bench("3000", "40");
    assert_eq!(report["rows"], 3000);
    assert!(report["ratio_to_read_floor"].as_f64().unwrap() > 0.0);
    assert!(report["peak_rss_mib"].as_f64().unwrap() > 0.0);
    assert!(report["stages"]["check"].as_f64().is_some());
    let sync = &report["sync"];
    assert_eq!(sync["rows"], 40);
    assert!(sync["rows_read"].as_u64().unwrap() >= 40, "{sync}");
    assert_eq!(source_tuples(&mut client), before);
    // (watched for a second: a backend's counts arrive when it has exited)
    for _ in 0..10 {
        assert_eq!(
            source_writes(&mut client),
            writes,
            "the bench wrote to the source table"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let scratch = |client: &mut postgres::Client| -> i64 {
        client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'scrobsync_bench%'",
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(scratch(&mut client), 0);

    // A bench of an earlier build, killed after the held plays arrived (it held them in the
    // source table itself), and the scratch copy of a bench killed now.
    let interrupt = |client: &mut postgres::Client| {
        client
            .batch_execute(
                "CREATE TABLE scrobsync_bench_held AS SELECT * FROM scrobbles ORDER BY played_at DESC LIMIT 7;
                 CREATE TABLE scrobsync_bench_held_mark AS
                   SELECT max(id)::int8 AS max_id, 7::int8 AS n, true AS arrived FROM scrobbles;
                 DELETE FROM scrobbles s USING scrobsync_bench_held h WHERE s.id = h.id;
                 INSERT INTO scrobbles (id, username, played_at, artist_name, track_name)
                 SELECT (SELECT max_id FROM scrobsync_bench_held_mark) + row_number() OVER (ORDER BY id),
                        username, played_at, artist_name, track_name
                   FROM scrobsync_bench_held;",
            )
            .unwrap();
        assert_ne!(source_tuples(client), before);
    };
    interrupt(&mut client);
    let out = bin()
        .args(["bench", "--restore", "--json", "--source", &db.url])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["plays_put_back"], 7);
    assert_eq!(source_tuples(&mut client), before);
    // The next bench puts them back first, too, and drops a scratch copy left behind.
    interrupt(&mut client);
    client
        .batch_execute("CREATE TABLE scrobsync_bench_sync AS SELECT * FROM scrobbles LIMIT 5")
        .unwrap();
    assert!(bench("2990", "0")["sync"].is_null());
    assert_eq!(source_tuples(&mut client), before);
    assert_eq!(scratch(&mut client), 0);
}

#[test]
fn a_bench_or_seed_refuses_while_another_holds_the_database() {
    // An empty database: the bench seeds it itself once it may.
    let db = TestDb::new("benchlock");
    let table = |client: &mut postgres::Client| -> Option<i64> {
        let exists: bool = client
            .query_one("SELECT to_regclass('scrobbles') IS NOT NULL", &[])
            .unwrap()
            .get(0);
        exists.then(|| {
            client
                .query_one("SELECT count(*) FROM scrobbles", &[])
                .unwrap()
                .get(0)
        })
    };
    // Another bench (or seed) holds its lock for as long as its session lives.
    let mut other = db.client();
    let got: bool = other
        .query_one("SELECT pg_try_advisory_lock($1)", &[&0x5C0B_5C0B_BE4Ci64])
        .unwrap()
        .get(0);
    assert!(got);
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["seed", "--source", &db.url, "--rows", "100"],
        vec![
            "bench", "--source", &db.url, "--rows", "500", "--repeat", "1",
        ],
    ] {
        let out = bin().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("another `scrobsync bench`"), "{err}");
        assert_eq!(table(&mut db.client()), None, "{args:?}");
    }
    let released: bool = other
        .query_one("SELECT pg_advisory_unlock($1)", &[&0x5C0B_5C0B_BE4Ci64])
        .unwrap()
        .get(0);
    assert!(released);
    let out = bin()
        .args([
            "bench", "--source", &db.url, "--rows", "500", "--repeat", "1",
        ])
        .args(["--sync-rows", "0", "--json", "--workdir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rows"], 500);
    assert_eq!(table(&mut db.client()), Some(500));
}

#[test]
fn an_unknown_failpoint_is_refused() {
    let db = TestDb::new("failpointname");
    seed(&db, &["--rows", "100"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("t.sqlite");
    fake_target(&target);
    let before = std::fs::read(&target).unwrap();
    // A misspelt hook must not let a test run without the fault it asked for.
    for fp in [
        "abort-after-window=1",
        "abort-after-windows=1 ",
        "pause-after-windows=1",
    ] {
        let out = bin()
            .args(["load", "--source", &db.url, "--target"])
            .arg(&target)
            .env("SCROBSYNC_FAILPOINT", fp)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{fp}: {err}");
        assert!(err.contains("SCROBSYNC_FAILPOINT"), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), before, "{fp}");
    }
}

#[test]
fn an_error_into_a_closed_stderr_is_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
            .args(["status", "--target"])
            .arg(dir.path().join("none.sqlite"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let code = child.wait().unwrap().code();
        assert_eq!(code, Some(1), "an error exit, not a panic (101)");
    }
}

/// The progress lines a terminal of 80 columns shows, from a run under `script` (a pty).
fn progress_lines(cmd: &str, log: &Path) -> Vec<String> {
    let bin = assert_cmd::cargo::cargo_bin("scrobsync");
    let status = std::process::Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("stty cols 80 rows 24; {} {cmd}", bin.display()))
        .arg(log)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("`script` (util-linux) runs a command in a pty");
    assert!(status.success(), "{cmd}");
    let raw = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
    let mut plain = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // an escape sequence: ESC [ params letter
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    plain
        .split(['\r', '\n'])
        .filter(|l| l.contains(" eta "))
        .map(str::to_string)
        .collect()
}

#[test]
fn progress_lines_fit_80_columns_with_units() {
    let db = TestDb::new("pbar");
    seed(&db, &["--rows", "120000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("p.sqlite");
    let log = dir.path().join("pty.log");
    let src = format!("--source {} --target {}", db.url, t.display());
    for (cmd, unit) in [
        (format!("load {src} --batch-rows 1000 -q"), ""),
        (format!("load {src} --batch-rows 1000"), " rows "),
        (format!("verify {src}"), " slices "),
        (
            format!("backfill {src} --from 2015-01-01 --to 2017-01-01"),
            " windows ",
        ),
    ] {
        let lines = progress_lines(&cmd, &log);
        if unit.is_empty() {
            assert!(lines.is_empty(), "-q draws no bar: {lines:?}");
            continue;
        }
        assert!(!lines.is_empty(), "{cmd}: a bar was drawn");
        for l in &lines {
            assert!(
                l.chars().count() <= 80,
                "{cmd}: {} columns: {l}",
                l.chars().count()
            );
            assert!(l.contains(unit), "{cmd}: the count names its unit: {l}");
        }
    }
}

/// The first Ctrl-C ends `verify` with exit 130, promptly, and says that nothing was changed.
#[test]
fn ctrl_c_ends_a_verify() {
    let db = TestDb::new("sigintverify");
    seed(&db, &["--rows", "100000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("v.sqlite");
    bin()
        .args(["load", "--source", &db.url, "--target"])
        .arg(&t)
        .assert()
        .success();
    // verify pauses after its first source slice (a failpoint) and is interrupted there.
    let (out, waited) = interrupted_at(
        &[
            "verify",
            "--partitions",
            "4",
            "--source",
            &db.url,
            "--target",
        ],
        &t,
        1,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: nothing was changed"), "{err}");
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");
}

/// Runs `scrobsync args… target` with a pause failpoint after window `after`, sends SIGINT once
/// the run has paused there; its output and the time from the signal to its end.
fn interrupted_at(
    args: &[&str],
    target: &std::path::Path,
    after: usize,
) -> (std::process::Output, std::time::Duration) {
    let flag = target.with_extension("paused");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args(args)
        .arg(target)
        .env(
            "SCROBSYNC_FAILPOINT",
            format!("pause-after-windows={after}"),
        )
        .env("SCROBSYNC_FAILPOINT_FILE", &flag)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !flag.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(flag.exists(), "the run never reached window {after}");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let asked = std::time::Instant::now();
    std::fs::remove_file(&flag).unwrap();
    let out = child.wait_with_output().unwrap();
    (out, asked.elapsed())
}
