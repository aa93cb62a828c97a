//! What scrobsync must never do, tried as a hostile user would: damage a target (journals of a
//! killed run, other processes' locks, files that are not targets, symbolic links), write to
//! the source through a mapping, mix two sources in one target, or fail silently.

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

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    o
}

fn integrity(target: &Path) -> String {
    Connection::open(target)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

fn side(target: &Path, suffix: &str) -> std::path::PathBuf {
    let mut p = target.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// The first 8 bytes of a rollback journal that SQLite will play back (a hot journal).
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

fn assert_hot_journal(target: &Path) {
    let j = std::fs::read(side(target, "-journal")).expect("a journal beside the target");
    assert!(
        j.len() > 512 && j[..8] == JOURNAL_MAGIC,
        "the killed run must leave a hot journal (got {} bytes)",
        j.len()
    );
}

fn count(target: &Path, sql: &str) -> i64 {
    Connection::open(target)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// A sync killed in the middle of its commit leaves a hot journal; a following load must not
/// let SQLite play that journal into the new file.
#[test]
fn killed_sync_mid_commit_then_load_gives_a_sound_target() {
    let db = TestDb::new("hotj");
    seed(&db, &["--rows", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    seed(&db, &["--rows", "30000"]);
    let o = bin()
        .args(["sync", "--source", &db.url, "--target", t])
        .args(["--batch-rows", "2000"])
        .env("SCROBSYNC_FAILPOINT", "flush-and-abort-after-windows=3")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the failpoint kills the run");
    assert_hot_journal(&target);

    ok(&["load", "--source", &db.url, "--target", t]);
    for suffix in ["-journal", "-wal", "-shm"] {
        assert!(
            !side(&target, suffix).exists(),
            "{suffix} of the old file left beside the new target"
        );
    }
    assert_eq!(integrity(&target), "ok");
    assert_eq!(verify_code(&db, &target), 0);
    assert_lossless(&mut db.client(), &target);
    ok(&["sync", "--source", &db.url, "--target", t]);
    assert_eq!(count(&target, "SELECT count(*) FROM scrobbles"), 35_000);
}

/// A backfill killed mid-commit: even a read-only command (`status`) recovers the target to its
/// last committed state, and a load after that is sound.
#[test]
fn killed_backfill_mid_commit_is_recovered_by_status_and_load() {
    let db = TestDb::new("hotb");
    seed(&db, &["--rows", "20000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("b.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    let before = count(&target, "SELECT count(*) FROM scrobbles");
    db.client()
        .batch_execute("DELETE FROM scrobbles WHERE id % 3 = 0")
        .unwrap();
    let o = bin()
        .args(["backfill", "--source", &db.url, "--target", t])
        .args([
            "--from",
            "2005-01-01",
            "--to",
            "2026-01-01",
            "--by",
            "month",
        ])
        .env("SCROBSYNC_FAILPOINT", "flush-and-abort-after-windows=40")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the failpoint kills the run");
    assert_hot_journal(&target);

    let o = ok(&["status", "--json", "--target", t]);
    let status: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(!side(&target, "-journal").exists(), "status rolled it back");
    assert_eq!(integrity(&target), "ok");
    let after_windows = status["rows"]["scrobbles"].as_i64().unwrap();
    assert!(
        after_windows < before,
        "the 39 committed windows stay, the 40th is rolled back"
    );

    ok(&["load", "--source", &db.url, "--target", t]);
    assert_eq!(integrity(&target), "ok");
    assert_eq!(verify_code(&db, &target), 0);
    assert_lossless(&mut db.client(), &target);
}

/// Another process holds the target: load waits and refuses (the other process's work is not
/// lost in a replaced file), and every command says the file is in use, never that it is not
/// a database.
#[test]
fn a_target_in_use_is_neither_replaced_nor_called_broken() {
    let db = TestDb::new("busy");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("u.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);

    // A writer with an open transaction: load finishes its work, then refuses to replace.
    let holder = Connection::open(&target).unwrap();
    holder
        .execute_batch(
            "BEGIN IMMEDIATE; INSERT INTO _scrobsync_state VALUES ('holder', 'committed later');",
        )
        .unwrap();
    let o = run(&["load", "--source", &db.url, "--target", t]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is in use by another process (locked); retry when it finishes"),
        "{}",
        stderr(&o)
    );
    holder.execute_batch("COMMIT").unwrap();
    assert_eq!(
        count(
            &target,
            "SELECT count(*) FROM _scrobsync_state WHERE key = 'holder'"
        ),
        1,
        "the other process's commit landed in the target, not in a replaced file"
    );

    // An exclusive lock (a writer committing): every command says "in use".
    holder
        .execute_batch(
            "BEGIN EXCLUSIVE; UPDATE _scrobsync_state SET value = 'x' WHERE key = 'holder';",
        )
        .unwrap();
    let commands: Vec<Vec<String>> = [
        vec!["status", "--target", t],
        vec!["verify", "--source", &db.url, "--target", t],
        vec!["sync", "--source", &db.url, "--target", t],
        vec![
            "backfill",
            "--source",
            &db.url,
            "--target",
            t,
            "--from",
            "2010-01-01",
            "--to",
            "2010-02-01",
        ],
        vec!["load", "--source", &db.url, "--target", t],
    ]
    .iter()
    .map(|c| c.iter().map(|s| s.to_string()).collect())
    .collect();
    let outputs: Vec<Output> = std::thread::scope(|s| {
        let handles: Vec<_> = commands
            .iter()
            .map(|c| s.spawn(move || bin().args(c).output().unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (c, o) in commands.iter().zip(&outputs) {
        let e = stderr(o);
        assert_eq!(o.status.code(), Some(75), "{c:?}: {e}");
        assert!(
            e.contains("in use by another process (locked)"),
            "{c:?}: {e}"
        );
        assert!(
            !e.contains("delete it") && !e.contains("not a SQLite"),
            "{c:?}: {e}"
        );
    }
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    ok(&["load", "--source", &db.url, "--target", t]);
    assert_eq!(integrity(&target), "ok");

    // An idle connection in WAL mode: replacing the file would pull its WAL and shared memory
    // away from under it.
    let wal = Connection::open(&target).unwrap();
    let mode: String = wal
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let _: i64 = wal
        .query_row("SELECT count(*) FROM users", [], |r| r.get(0))
        .unwrap();
    let o = run(&["load", "--source", &db.url, "--target", t]);
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("in use by another process"),
        "{}",
        stderr(&o)
    );
    wal.execute_batch("INSERT INTO _scrobsync_state VALUES ('wal writer', 'still works')")
        .unwrap();
    drop(wal);
    ok(&["load", "--source", &db.url, "--target", t]);
    assert_eq!(integrity(&target), "ok");
    for suffix in ["-wal", "-shm"] {
        assert!(
            !side(&target, suffix).exists(),
            "{suffix} left beside the new target"
        );
    }
}

/// Load replaces only scrobsync targets (unless --force) and keeps symbolic links.
#[test]
fn load_replaces_only_targets_and_keeps_links() {
    let db = TestDb::new("repl");
    seed(&db, &["--rows", "1000"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let text = d.join("notes.txt");
    std::fs::write(&text, "my notes").unwrap();
    let other = d.join("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE mine(x); INSERT INTO mine VALUES (1);")
        .unwrap();
    let other_bytes = std::fs::read(&other).unwrap();
    let empty = d.join("empty.sqlite");
    std::fs::write(&empty, b"").unwrap();
    // Only the name of the state table does not make a target.
    let lookalike = d.join("lookalike.sqlite");
    Connection::open(&lookalike)
        .unwrap()
        .execute_batch("CREATE TABLE scrobbles(a); CREATE TABLE _scrobsync_state(key, value);")
        .unwrap();
    // A FIFO: refused at once (opening it to read a header would block).
    let fifo = d.join("fifo.sqlite");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    for (path, what) in [
        (&text, "not a SQLite database"),
        (&other, "not a scrobsync target"),
        (&empty, "empty file"),
        (&lookalike, "not a scrobsync target"),
        (&fifo, "not a regular file"),
    ] {
        let o = run(&[
            "load",
            "--source",
            &db.url,
            "--target",
            path.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(what) && e.contains("--force"), "{e}");
    }
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "my notes");
    assert_eq!(std::fs::read(&other).unwrap(), other_bytes);

    // A read-only target is not replaced without --force either.
    let ro = d.join("ro.sqlite");
    ok(&[
        "load",
        "--source",
        &db.url,
        "--target",
        ro.to_str().unwrap(),
    ]);
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&ro, perms).unwrap();
    let o = run(&[
        "load",
        "--source",
        &db.url,
        "--target",
        ro.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("read-only"), "{}", stderr(&o));

    ok(&[
        "load",
        "--force",
        "--source",
        &db.url,
        "--target",
        text.to_str().unwrap(),
    ]);
    assert_lossless(&mut db.client(), &text);

    // A symbolic link keeps pointing at the file it named, which is replaced.
    let real_dir = d.join("real");
    std::fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("music.sqlite");
    let link = d.join("link.sqlite");
    std::os::unix::fs::symlink("real/music.sqlite", &link).unwrap();
    for _ in 0..2 {
        ok(&[
            "load",
            "--source",
            &db.url,
            "--target",
            link.to_str().unwrap(),
        ]);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink(),
            "the link stays a link"
        );
        assert_lossless(&mut db.client(), &real);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&real_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, vec!["music.sqlite".to_string()]);
}

/// The source, as text: every row of scrobbles and the large objects.
fn source_fingerprint(db: &TestDb) -> (String, i64) {
    let mut c = db.client();
    let rows: String = c
        .query_one(
            "SELECT md5(string_agg(s::text, '|' ORDER BY id)) FROM scrobbles s",
            &[],
        )
        .unwrap()
        .get(0);
    let los: i64 = c
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .unwrap()
        .get(0);
    (rows, los)
}

/// A mapping's SQL that switches the session's read-only default off and then writes (large
/// objects, or a DELETE in a plpgsql function) must never change the source: every statement
/// runs in a transaction that is read-only from its start.
#[test]
fn a_mapping_that_tries_to_write_leaves_the_source_unchanged() {
    let db = TestDb::new("rowr");
    seed(&db, &["--rows", "6000"]);
    db.client()
        .batch_execute(
            "CREATE FUNCTION sneaky() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
             BEGIN
               PERFORM set_config('default_transaction_read_only', 'off', false);
               IF current_setting('transaction_read_only') = 'off' THEN
                 DELETE FROM scrobbles WHERE id = (SELECT min(id) FROM scrobbles);
               END IF;
               RETURN true;
             END $$;",
        )
        .unwrap();
    let before = source_fingerprint(&db);
    let dir = tempfile::tempdir().unwrap();
    let cols = "id, username, played_at, artist_name, track_name, album_name";
    let variants = [
        format!("select {cols} from scrobbles where set_config('default_transaction_read_only','off',false) is not null and (current_setting('transaction_read_only')='on' or lo_from_bytea(0,'x'::bytea) > 0)"),
        format!("select {cols} from scrobbles where sneaky()"),
        // large objects can be written even inside a read-only transaction
        format!("select {cols} from scrobbles, (select set_config('default_transaction_read_only','off',false), lo_from_bytea(0,'x'::bytea)) z"),
    ];
    for (i, q) in variants.iter().enumerate() {
        let cfg = dir.path().join(format!("w{i}.toml"));
        std::fs::write(
            &cfg,
            format!("[source]\nquery = \"{}\"\n", q.replace('"', "\\\"")),
        )
        .unwrap();
        let cfg = cfg.to_str().unwrap();
        for reader in ["copy", "connectorx"] {
            let target = dir.path().join(format!("w{i}-{reader}.sqlite"));
            let t = target.to_str().unwrap();
            let args = [
                "--source",
                &db.url,
                "--config",
                cfg,
                "--target",
                t,
                "--batch-rows",
                "1000",
                "--partitions",
                "2",
                "--reader",
                reader,
            ];
            let mut load = vec!["load"];
            load.extend_from_slice(&args);
            let o = run(&load);
            assert!(
                o.status.success() || stderr(&o).contains("read-only transaction"),
                "{}",
                stderr(&o)
            );
            assert_eq!(
                source_fingerprint(&db),
                before,
                "load with {reader}, variant {i}"
            );
            if o.status.success() {
                let mut sync = vec!["sync"];
                sync.extend_from_slice(&args);
                run(&sync);
                assert_eq!(source_fingerprint(&db), before, "sync with {reader}");
            }
        }
        let target = dir.path().join(format!("w{i}-copy.sqlite"));
        run(&[
            "verify",
            "--source",
            &db.url,
            "--config",
            cfg,
            "--target",
            target.to_str().unwrap(),
            "--partitions",
            "2",
        ]);
        run(&["config", "check", "--source", &db.url, "--config", cfg]);
        assert_eq!(
            source_fingerprint(&db),
            before,
            "verify/config check, variant {i}"
        );
    }
}

/// A target is tied to its source: sync, backfill and verify --repair refuse another one unless
/// --allow-other-source, which then makes it the target's source and is logged.
#[test]
fn another_source_is_refused_unless_allowed() {
    let a = TestDb::new("srca");
    let b = TestDb::new("srcb");
    seed(&a, &["--rows", "3000", "--seed", "1"]);
    seed(&b, &["--rows", "3500", "--seed", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("s.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &a.url, "--target", t]);
    let bytes = std::fs::read(&target).unwrap();
    for cmd in [
        vec!["sync", "--source", &b.url, "--target", t],
        vec![
            "backfill",
            "--source",
            &b.url,
            "--target",
            t,
            "--from",
            "2015-01-01",
            "--to",
            "2016-01-01",
        ],
        vec!["verify", "--repair", "--source", &b.url, "--target", t],
    ] {
        let o = run(&cmd);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {e}");
        assert!(
            e.contains(&format!("was loaded from database '{}'", a.name))
                && e.contains("--allow-other-source"),
            "{e}"
        );
        assert_eq!(
            std::fs::read(&target).unwrap(),
            bytes,
            "{cmd:?} changed the target"
        );
    }
    // verify alone only reads: comparing with another source is allowed.
    assert_eq!(
        run(&["verify", "--source", &b.url, "--target", t])
            .status
            .code(),
        Some(3)
    );
    ok(&["sync", "--source", &a.url, "--target", t]);

    ok(&[
        "sync",
        "--allow-other-source",
        "--source",
        &b.url,
        "--target",
        t,
    ]);
    let o = ok(&["status", "--json", "--target", t]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(s["source"].as_str().unwrap().ends_with(&b.name), "{s}");
    let logged: String = Connection::open(&target)
        .unwrap()
        .query_row(
            "SELECT source FROM _scrobsync_runs ORDER BY run_id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        logged.contains("--allow-other-source") && logged.contains(&a.name),
        "{logged}"
    );
    // Now tied to B.
    ok(&["sync", "--source", &b.url, "--target", t]);
    assert_eq!(
        run(&["sync", "--source", &a.url, "--target", t])
            .status
            .code(),
        Some(1)
    );
}

/// A reader thread that crashes ends the run with an error, never with a shorter target.
#[test]
fn a_crashed_reader_fails_every_mode() {
    let db = TestDb::new("rdpanic");
    seed(&db, &["--rows", "6000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p.sqlite");
    let t = target.to_str().unwrap();
    let crash = |args: &[&str]| {
        let o = bin()
            .args(args)
            .args(["--source", &db.url, "--target", t])
            .env("SCROBSYNC_FAILPOINT", "reader-panic-after-windows=1")
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains("reader thread crashed"), "{args:?}: {e}");
    };
    crash(&["load", "--batch-rows", "1000"]);
    assert!(!target.exists(), "no target from a crashed load");
    ok(&["load", "--source", &db.url, "--target", t]);
    let bytes = std::fs::read(&target).unwrap();
    seed(&db, &["--rows", "6000"]);
    crash(&["sync", "--batch-rows", "1000"]);
    assert_eq!(std::fs::read(&target).unwrap(), bytes);
    crash(&["backfill", "--from", "2005-01-01", "--to", "2007-01-01"]);
    assert_eq!(integrity(&target), "ok");
}

/// The default (fast) checks of a load catch what a writer or normaliser bug could do to a
/// window: facts that never reach the file, a fact pointing at a track key never written, a
/// dimension row admitted but lost, keys bound into the wrong columns. The target stays as it was each time; `--check full`
/// passes on sound data.
#[test]
fn a_damaged_window_fails_the_default_checks() {
    let db = TestDb::new("damage");
    // The damaged window lies more than 10,000 rows from either end of the table (the rows
    // the final check reads back).
    seed(&db, &["--rows", "30000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("d.sqlite");
    let t = target.to_str().unwrap();
    ok(&[
        "load", "--source", &db.url, "--target", t, "--check", "full",
    ]);
    let bytes = std::fs::read(&target).unwrap();
    for (damage, says) in [
        ("lose-facts", "in the new file but 1000 were written"),
        ("dangling-key", "dangling track key of a scrobble"),
        ("lose-track", "tracks holds"),
        ("swap-keys", "in the new file differ from those written"),
    ] {
        let o = bin()
            .args([
                "load",
                "--batch-rows",
                "1000",
                "--source",
                &db.url,
                "--target",
                t,
            ])
            .env("SCROBSYNC_FAILPOINT", format!("damage-window=15:{damage}"))
            .output()
            .unwrap();
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{damage}: {e}");
        assert!(
            e.contains(says) && e.contains("not installed"),
            "{damage}: {e}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), bytes, "{damage}");
    }
    // Undamaged, the default level passes too, with every row.
    ok(&["load", "--source", &db.url, "--target", t]);
    assert_lossless(&mut db.client(), &target);
}

/// The server's own reason (and SQLSTATE) reaches the user, not "db error".
#[test]
fn source_errors_keep_the_server_reason() {
    let db = TestDb::new("reason");
    seed(&db, &["--rows", "4000"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = division_by_zero_mapping(dir.path());
    for reader in ["copy", "connectorx"] {
        let o = run(&[
            "load",
            "--source",
            &db.url,
            "--config",
            cfg.to_str().unwrap(),
            "--reader",
            reader,
            "--target",
            dir.path().join("d.sqlite").to_str().unwrap(),
        ]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(
            e.contains("division by zero") && e.contains("22012"),
            "{reader}: {e}"
        );
    }

    // A backend terminated while it streams.
    let slow = dir.path().join("slow.toml");
    std::fs::write(
        &slow,
        "[source]\nquery = \"select id, username, played_at, artist_name, track_name from scrobbles \
         where case when id = (select min(id) from scrobbles) then pg_sleep(2) is not null else true end\"\n",
    )
    .unwrap();
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args([
            "load",
            "--retries",
            "0",
            "--source",
            &db.url,
            "--config",
            slow.to_str().unwrap(),
            "--target",
        ])
        .arg(dir.path().join("s.sqlite"))
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND state = 'active' AND query LIKE 'COPY%'",
                &[&db.name],
            )
            .unwrap()
            .get(0);
        if n > 0 || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("terminating connection due to administrator command") && e.contains("57P01"),
        "{e}"
    );
}

#[test]
fn the_same_server_spelled_otherwise_is_the_same_source_and_a_changed_mapping_says_so() {
    let db = TestDb::new("spelling");
    seed(&db, &["--rows", "2000", "--seed", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("s.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    let mut spellings = vec![
        format!("postgresql://postgres@127.1:5432/{}", db.name),
        format!("host=localhost port=5432 user=postgres dbname={}", db.name),
    ];
    if std::path::Path::new("/var/run/postgresql/.s.PGSQL.5432").exists() {
        spellings.push(format!(
            "host=/var/run/postgresql user=postgres dbname={}",
            db.name
        ));
        spellings.push(format!(
            "postgresql://postgres@%2Fvar%2Frun%2Fpostgresql/{}",
            db.name
        ));
    } else {
        eprintln!(
            "SKIPPED: no PostgreSQL socket in /var/run/postgresql; socket spellings untested"
        );
    }
    if std::path::Path::new("/var/run/postgresql/.s.PGSQL.5432").exists() {
        // As in libpq, a socket is never encrypted: sslmode=require does not stop it.
        spellings.push(format!(
            "host=/var/run/postgresql user=postgres dbname={} sslmode=require",
            db.name
        ));
    }
    for s in &spellings {
        ok(&["sync", "--source", s, "--target", t]);
    }
    // target_session_attrs as libpq reads it, against this primary.
    let with = |attrs: &str| format!("{}?target_session_attrs={attrs}", db.url);
    for good in ["any", "primary", "read-write", "prefer-standby"] {
        ok(&["sync", "--source", &with(good), "--target", t]);
    }
    for (bad, says) in [
        ("standby", "is a primary"),
        ("read-only", "is a primary"),
        ("sideways", "invalid target_session_attrs"),
    ] {
        let o = run(&["sync", "--source", &with(bad), "--target", t]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains(says), "{bad}: {}", stderr(&o));
    }
    // The same table through a mapping is another mapping: said in words.
    let cfg = dir.path().join("m.toml");
    std::fs::write(
        &cfg,
        "[source]\nquery = \"SELECT id, username, played_at, artist_name, album_name, track_name, loved FROM scrobbles\"\n",
    )
    .unwrap();
    let o = run(&[
        "sync",
        "--source",
        &db.url,
        "--target",
        t,
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("the mapping changed") && !e.contains("not from"),
        "{e}"
    );
}

#[test]
fn a_role_that_can_write_is_named_and_can_be_refused() {
    let db = TestDb::new("role");
    seed(&db, &["--rows", "2000", "--seed", "6"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("r.sqlite");
    let t = target.to_str().unwrap();
    // The test server's role is a superuser.
    let o = run(&["load", "--source", &db.url, "--target", t]);
    assert!(o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("is a superuser") && e.contains("pg_read_all_data"),
        "{e}"
    );
    let before = std::fs::read(&target).unwrap();
    let o = run(&[
        "sync",
        "--source",
        &db.url,
        "--target",
        t,
        "--require-read-only-role",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--require-read-only-role"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&target).unwrap(), before);

    // A role that can only read passes, and one with a write grant is named with its table.
    let role = format!("{}_r", db.name);
    let mut c = db.client();
    c.batch_execute(&format!(
        "CREATE ROLE \"{role}\" LOGIN; GRANT pg_read_all_data TO \"{role}\";"
    ))
    .unwrap();
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username(&role).unwrap();
    let reader = url.to_string();
    let o = run(&[
        "verify",
        "--source",
        &reader,
        "--target",
        t,
        "--require-read-only-role",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(!e.contains("can write") && !e.contains("superuser"), "{e}");
    // A grant on one column is a write right too.
    c.batch_execute(&format!("GRANT UPDATE (loved) ON scrobbles TO \"{role}\""))
        .unwrap();
    let o = run(&["verify", "--source", &reader, "--target", t]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{e}");
    assert!(
        e.contains("may write or create objects") && e.contains("scrobbles"),
        "{e}"
    );
    let o = run(&[
        "verify",
        "--source",
        &reader,
        "--target",
        t,
        "--require-read-only-role",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    c.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .unwrap();
}
