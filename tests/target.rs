//! The target file (issue 21): no command blocks on a path that is not a regular file, no
//! command changes a file that only looks like a target or was written by a newer scrobsync,
//! and a target that cannot be written gets one clear line while it can still be read.
//!
//! Every command runs with a deadline: one that blocks is killed and fails its assertions
//! instead of hanging the test run.

mod common;

use common::*;
use rusqlite::Connection;
use scrobsync::sink::schema::SCHEMA_VERSION;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Far longer than any refusal takes on a loaded machine; a command still running then blocked.
const DEADLINE: Duration = Duration::from_secs(30);

fn run(args: &[String]) -> Output {
    bin().args(args).timeout(DEADLINE).output().unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn ok(args: &[&str]) -> Output {
    let o = run(&strings(args));
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Runs the commands at once (each against its deadline) and returns their outputs in order.
fn run_all(commands: &[Vec<String>]) -> Vec<Output> {
    std::thread::scope(|s| {
        let handles: Vec<_> = commands.iter().map(|c| s.spawn(move || run(c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Asserts that a command ended by itself with exit code 1 and exactly one error line, naming
/// no SQLite error code, and returns that line.
fn refused(o: &Output, what: &str) -> String {
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.code().is_some(),
        "{what}: killed after {DEADLINE:?}: it blocked. {e}"
    );
    assert_eq!(o.status.code(), Some(1), "{what}: {e}");
    assert!(!e.contains("panicked"), "{what}: {e}");
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{what}: one error line: {e}");
    assert!(!lines[0].contains("Error code"), "{what}: {e}");
    lines[0].to_string()
}

/// Every command that opens an existing target (`load` replaces one).
fn every_command(db: &TestDb, target: &Path) -> Vec<Vec<String>> {
    let t = target.to_str().unwrap();
    let s = db.url.as_str();
    [
        vec!["status", "--target", t],
        vec!["search", "anything", "--target", t],
        vec!["verify", "--source", s, "--target", t],
        vec!["verify", "--repair", "--source", s, "--target", t],
        vec!["sync", "--source", s, "--target", t],
        vec![
            "backfill",
            "--source",
            s,
            "--target",
            t,
            "--from",
            "2010-01-01",
            "--to",
            "2010-02-01",
        ],
        vec!["load", "--source", s, "--target", t],
    ]
    .iter()
    .map(|c| strings(c))
    .collect()
}

/// What `path` itself is (a link is a link).
fn kind(path: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(path).unwrap().file_type()
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) only reads the NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Files in `dir` that a scrobsync run left behind: temporary loads, WAL side files.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".scrobsync-") || n.ends_with("-wal") || n.ends_with("-shm"))
        .collect()
}

/// A FIFO, a socket, a folder, a character device (through a link), a link to a FIFO, and a
/// target with a FIFO where SQLite looks for its journal: every command refuses each at once,
/// in one line, and leaves it as it was; `load --force` does not replace them either.
#[test]
fn a_path_that_is_not_a_regular_file_is_refused_at_once_by_every_command() {
    let db = TestDb::new("special");
    seed(&db, &["--rows", "200"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let fifo = d.join("fifo.sqlite");
    mkfifo(&fifo);
    let socket = d.join("socket.sqlite");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let folder = d.join("folder.sqlite");
    std::fs::create_dir(&folder).unwrap();
    let device = d.join("device.sqlite");
    std::os::unix::fs::symlink("/dev/null", &device).unwrap();
    let link = d.join("link.sqlite");
    std::os::unix::fs::symlink("fifo.sqlite", &link).unwrap();
    let beside = d.join("beside.sqlite");
    fake_target(&beside);
    let journal = d.join("beside.sqlite-journal");
    mkfifo(&journal);
    let beside_bytes = std::fs::read(&beside).unwrap();

    let cases: [(&Path, &str); 6] = [
        (fifo.as_path(), "(it is a FIFO"),
        (socket.as_path(), "(it is a socket"),
        (folder.as_path(), "is a folder"),
        (device.as_path(), "(it is a character device"),
        (link.as_path(), "(it is a FIFO"),
        (
            beside.as_path(),
            "beside.sqlite-journal beside the target is a FIFO",
        ),
    ];
    for (path, expect) in cases {
        let mut commands = every_command(&db, path);
        if path == fifo.as_path() || path == socket.as_path() {
            let t = path.to_str().unwrap();
            commands.push(strings(&[
                "load", "--force", "--source", &db.url, "--target", t,
            ]));
        }
        for (c, o) in commands.iter().zip(run_all(&commands)) {
            let what = format!("{} on {}", c[..2].join(" "), path.display());
            let e = refused(&o, &what);
            assert!(e.contains(expect), "{what}: {e}");
            if path != folder.as_path() && path != beside.as_path() {
                assert!(e.contains("give the path of a regular file"), "{what}: {e}");
            }
        }
    }

    assert!(kind(&fifo).is_fifo() && kind(&journal).is_fifo());
    assert!(kind(&socket).is_socket());
    assert!(kind(&folder).is_dir());
    assert!(kind(&device).is_symlink() && kind(&link).is_symlink());
    assert!(std::fs::metadata(&device)
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(std::fs::read(&beside).unwrap(), beside_bytes);
    assert!(leftovers(d).is_empty(), "{:?}", leftovers(d));

    // A link to a target is that target, as before.
    let real = d.join("real.sqlite");
    fake_target(&real);
    let to_real = d.join("to-real.sqlite");
    std::os::unix::fs::symlink("real.sqlite", &to_real).unwrap();
    ok(&["status", "--target", to_real.to_str().unwrap()]);
}

/// Files that look like targets, each with what the refusal must name.
fn lookalikes(d: &Path) -> Vec<(PathBuf, &'static str)> {
    let tables = scrobsync::sink::schema::TABLES;
    let state = scrobsync::sink::state::STATE_TABLES;
    let version =
        format!("INSERT INTO _scrobsync_state VALUES ('schema_version', '{SCHEMA_VERSION}');");
    let edit = |from: &str, to: &str| -> String {
        let t = tables.replace(from, to);
        assert_ne!(t, tables, "the schema changed: update this test");
        format!("{t}{state}{version}")
    };
    let six = "CREATE TABLE users(a); CREATE TABLE artists(a); CREATE TABLE albums(a);
               CREATE TABLE tracks(a); CREATE TABLE scrobbles(a);
               CREATE TABLE _scrobsync_state(key, value);";
    let cases: Vec<(&str, String, &'static str)> = vec![
        (
            "no-duration.sqlite",
            edit(",\n    duration_ms INTEGER", ""),
            "has a table 'tracks' without column 'duration_ms'",
        ),
        (
            "extra.sqlite",
            edit(
                "    loved INTEGER NOT NULL\n",
                "    loved INTEGER NOT NULL,\n    client TEXT\n",
            ),
            "has a table 'scrobbles' with a column 'client'",
        ),
        (
            "text-time.sqlite",
            edit("played_at INTEGER NOT NULL", "played_at TEXT NOT NULL"),
            "has a table 'scrobbles' whose column 'played_at' is TEXT NOT NULL",
        ),
        (
            "no-state.sqlite",
            tables.to_string(),
            "has no table '_scrobsync_state'",
        ),
        (
            "no-version.sqlite",
            format!("{tables}{state}"),
            "has no schema_version",
        ),
        (
            "no-albums.sqlite",
            format!("{tables}{state}{version}DROP TABLE albums;"),
            "has no table 'albums'",
        ),
        (
            "six-tables.sqlite",
            format!("{six}{version}"),
            "has a table '_scrobsync_state' whose column 'key' is untyped",
        ),
    ];
    cases
        .into_iter()
        .map(|(name, sql, expect)| {
            let p = d.join(name);
            Connection::open(&p).unwrap().execute_batch(&sql).unwrap();
            (p, expect)
        })
        .collect()
}

/// A SQLite file with some or all of the target's tables, other columns or no schema version
/// is refused by every command, naming what differs, and stays byte for byte as it was: no
/// table, view, index or state row is added to it first.
#[test]
fn a_file_that_only_looks_like_a_target_is_refused_and_left_unchanged() {
    let db = TestDb::new("lookalike");
    seed(&db, &["--rows", "200"]);
    let dir = tempfile::tempdir().unwrap();
    for (path, expect) in lookalikes(dir.path()) {
        let before = std::fs::read(&path).unwrap();
        let commands = every_command(&db, &path);
        for (c, o) in commands.iter().zip(run_all(&commands)) {
            let what = format!("{} on {}", c[..2].join(" "), path.display());
            let e = refused(&o, &what);
            assert!(e.contains("not a scrobsync target"), "{what}: {e}");
            assert!(e.contains(expect), "{what}: {e}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{} was changed",
            path.display()
        );
    }
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
}

fn set_version(path: &Path, version: i64) {
    Connection::open(path)
        .unwrap()
        .execute(
            "UPDATE _scrobsync_state SET value = ?1 WHERE key = 'schema_version'",
            [version.to_string()],
        )
        .unwrap();
}

/// A target written by a newer scrobsync is refused by every command, with the versions and
/// the fix, and never written; the version is what is reported even when the newer schema has
/// other columns. `load --force` replaces it with a target of this build's version.
#[test]
fn a_target_of_a_newer_schema_version_is_refused_and_never_written() {
    let db = TestDb::new("newer");
    seed(&db, &["--rows", "200"]);
    let dir = tempfile::tempdir().unwrap();
    let newer = SCHEMA_VERSION + 1;
    let plain = dir.path().join("newer.sqlite");
    fake_target(&plain);
    set_version(&plain, newer);
    let changed = dir.path().join("newer-columns.sqlite");
    fake_target(&changed);
    set_version(&changed, newer);
    Connection::open(&changed)
        .unwrap()
        .execute_batch("ALTER TABLE tracks ADD COLUMN rating INTEGER")
        .unwrap();
    let expect = format!(
        "was written by a newer scrobsync (schema version {newer}, this build knows up to {SCHEMA_VERSION}); upgrade scrobsync"
    );
    for path in [&plain, &changed] {
        let before = std::fs::read(path).unwrap();
        let commands = every_command(&db, path);
        for (c, o) in commands.iter().zip(run_all(&commands)) {
            let what = format!("{} on {}", c[..2].join(" "), path.display());
            let e = refused(&o, &what);
            assert!(e.contains(&expect), "{what}: {e}");
        }
        assert_eq!(
            std::fs::read(path).unwrap(),
            before,
            "{} was written",
            path.display()
        );
    }

    let t = plain.to_str().unwrap();
    ok(&["load", "--force", "--source", &db.url, "--target", t]);
    let version: String = Connection::open(&plain)
        .unwrap()
        .query_row(
            "SELECT value FROM _scrobsync_state WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION.to_string());
    ok(&["status", "--target", t]);
}

/// How a read-only setting is undone.
enum Undo {
    Attribute,
    Mode(u32),
}

/// Makes a file or folder read-only for this process until dropped. Root ignores permission
/// bits, so as root it sets the immutable attribute (`chattr +i`), which stops root too.
struct ReadOnly {
    path: PathBuf,
    undo: Undo,
}

impl ReadOnly {
    /// None when it cannot be done here (root without `chattr +i`): the case is then untested.
    fn set(path: &Path) -> Option<Self> {
        // SAFETY: geteuid(2) has no preconditions.
        let guard = if unsafe { libc::geteuid() } == 0 {
            let set = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            if !set {
                return None;
            }
            Self {
                path: path.to_path_buf(),
                undo: Undo::Attribute,
            }
        } else {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            let read_only = if path.is_dir() { 0o555 } else { 0o444 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(read_only)).unwrap();
            Self {
                path: path.to_path_buf(),
                undo: Undo::Mode(mode),
            }
        };
        // Only a setting that really stops writes makes a test.
        let stops = guard.stops_writes();
        stops.then_some(guard)
    }

    fn stops_writes(&self) -> bool {
        if self.path.is_dir() {
            let probe = self.path.join(".probe");
            let created = std::fs::File::create(&probe).is_ok();
            let _ = std::fs::remove_file(&probe);
            !created
        } else {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&self.path)
                .is_err()
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        match self.undo {
            Undo::Attribute => {
                let _ = std::process::Command::new("chattr")
                    .arg("-i")
                    .arg(&self.path)
                    .status();
            }
            Undo::Mode(mode) => {
                let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(mode));
            }
        }
    }
}

/// A target that cannot be written, because of the file or of its folder (where SQLite writes
/// its journal): every command that writes refuses in one line naming the problem and the fix,
/// before any work, and the file stays as it was; `status` and `verify` still read it.
#[test]
fn a_read_only_target_gets_one_clear_line_and_can_still_be_read() {
    let db = TestDb::new("readonly");
    seed(&db, &["--rows", "500"]);
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    let target = folder.join("t.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    // New rows, so that sync and verify --repair have something to write.
    seed(&db, &["--rows", "100"]);

    let cases = [
        (&target, "the file", "is read-only (", "make it writable"),
        (
            &folder,
            "the folder",
            "its folder",
            "make the folder writable",
        ),
    ];
    for (locked, what, problem, fix) in cases {
        let Some(_guard) = ReadOnly::set(locked) else {
            // Loud on purpose: this run does not test the read-only case of `what`.
            eprintln!(
                "SKIPPED: cannot make {} read-only here (as root that needs `chattr +i`); a read-only {what} is NOT tested",
                locked.display()
            );
            continue;
        };
        let before = std::fs::read(&target).unwrap();
        let s = db.url.as_str();
        let writing = [
            strings(&["sync", "--source", s, "--target", t]),
            strings(&[
                "backfill",
                "--source",
                s,
                "--target",
                t,
                "--from",
                "2000-01-01",
                "--to",
                "2030-01-01",
            ]),
            strings(&["verify", "--repair", "--source", s, "--target", t]),
        ];
        for c in &writing {
            let label = format!("{} with {what} read-only", c[..2].join(" "));
            let e = refused(&run(c), &label);
            assert!(
                e.contains(problem) && e.contains(fix) && e.contains("choose another --target"),
                "{label}: {e}"
            );
        }
        let e = refused(
            &run(&strings(&["load", "--source", s, "--target", t])),
            &format!("load with {what} read-only"),
        );
        assert!(e.contains("read-only") || e.contains("writable"), "{e}");

        ok(&["status", "--target", t]);
        let code = verify_code(&db, &target);
        assert!(
            code == 0 || code == 3,
            "verify with {what} read-only: {code}"
        );
        assert_eq!(std::fs::read(&target).unwrap(), before, "{what}");
    }
}
