//! Transient faults of the source are survived: every mode's connections are cut in the middle
//! of a run (its backends terminated, or the server unreachable for a while behind a local
//! proxy) and the run still ends with a target equal to the source. Faults beyond `--retries`
//! and errors that are not transient fail at once, leaving the target as it was.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn ok(args: &[&str]) {
    let o = bin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs scrobsync with a pause after each window in `pauses`; at each pause `fault` runs (it
/// cuts the connections), then the run goes on. Returns the run's output.
fn run_with_faults(args: &[&str], pauses: &[usize], mut fault: impl FnMut()) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("paused");
    let list: Vec<String> = pauses.iter().map(|p| p.to_string()).collect();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args(args)
        .arg("--json")
        .env(
            "SCROBSYNC_FAILPOINT",
            format!("pause-after-windows={}", list.join(",")),
        )
        .env("SCROBSYNC_FAILPOINT_FILE", &flag)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut faults = 0;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if flag.exists() {
            fault();
            faults += 1;
            std::fs::remove_file(&flag).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        faults,
        pauses.len(),
        "every pause was reached: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Terminates every backend of the test database (the run's connections).
fn terminate(db: &TestDb) -> impl FnMut() + '_ {
    move || {
        let mut admin = postgres::Client::connect(&admin_url(), postgres::NoTls).unwrap();
        let n: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .unwrap()
            .get(0);
        assert!(n > 0, "the run had connections to cut");
    }
}

fn succeeded(out: &Output) -> Value {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("retry 1 of 5"), "a retry was logged: {err}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["retries"].as_u64().unwrap() >= 1, "{v}");
    v
}

#[test]
fn every_mode_survives_terminated_backends() {
    let db = TestDb::new("retry");
    seed(&db, &["--rows", "12000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("r.sqlite");
    let t = target.to_str().unwrap();

    // load: one fault, then one per window for three windows in a row
    for pauses in [&[2][..], &[1, 2, 3][..]] {
        let out = run_with_faults(
            &[
                "load",
                "--source",
                &db.url,
                "--target",
                t,
                "--batch-rows",
                "1000",
            ],
            pauses,
            terminate(&db),
        );
        let s = succeeded(&out);
        assert!(s["retries"].as_u64().unwrap() >= pauses.len() as u64, "{s}");
        assert_lossless(&mut db.client(), &target);
    }

    // sync
    seed(&db, &["--rows", "8000"]);
    let out = run_with_faults(
        &[
            "sync",
            "--source",
            &db.url,
            "--target",
            t,
            "--batch-rows",
            "1000",
        ],
        &[2],
        terminate(&db),
    );
    succeeded(&out);
    assert_lossless(&mut db.client(), &target);

    // backfill
    db.client()
        .batch_execute(
            "DELETE FROM scrobbles WHERE id % 7 = 0 AND played_at >= '2005-01-01Z' AND played_at < '2027-01-01Z'",
        )
        .unwrap();
    let out = run_with_faults(
        &[
            "backfill",
            "--source",
            &db.url,
            "--target",
            t,
            "--from",
            "2005-01-01",
            "--to",
            "2027-01-01",
            "--by",
            "month",
        ],
        &[3],
        terminate(&db),
    );
    succeeded(&out);
    assert_lossless(&mut db.client(), &target);

    // verify (after a repair of the attributes the deletes changed, so that all is equal)
    ok(&["verify", "--repair", "--source", &db.url, "--target", t]);
    let out = run_with_faults(
        &[
            "verify",
            "--source",
            &db.url,
            "--target",
            t,
            // one worker, so that slices remain to be read after the pause
            "--partitions",
            "1",
        ],
        &[2],
        terminate(&db),
    );
    let v = succeeded(&out);
    assert!(v["differing"].as_array().unwrap().is_empty(), "{v}");
}

#[test]
fn faults_beyond_retries_fail_and_leave_the_target() {
    let db = TestDb::new("noretry");
    seed(&db, &["--rows", "6000"]);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("n.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    let before = std::fs::read(&target).unwrap();
    seed(&db, &["--rows", "6000"]);
    let out = run_with_faults(
        &[
            "sync",
            "--retries",
            "0",
            "--source",
            &db.url,
            "--target",
            t,
            "--batch-rows",
            "1000",
        ],
        &[2],
        terminate(&db),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("57P01") || err.contains("closed"), "{err}");
    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "the target is untouched"
    );
    // The same load with retries succeeds.
    ok(&["sync", "--source", &db.url, "--target", t]);
    assert_eq!(verify_code(&db, &target), 0);
}

#[test]
fn errors_that_are_not_transient_are_not_retried() {
    let db = TestDb::new("noretry2");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = division_by_zero_mapping(dir.path());
    let t = Instant::now();
    let o = bin()
        .args([
            "load",
            "-v",
            "--source",
            &db.url,
            "--config",
            cfg.to_str().unwrap(),
            "--target",
        ])
        .arg(dir.path().join("d.sqlite"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("division by zero"), "{err}");
    assert!(!err.contains("retry 1 of"), "not retried: {err}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

/// A TCP proxy in front of the test server that can cut every connection and refuse service
/// for a while, as a restarting server does, without disturbing other tests.
struct Proxy {
    port: u16,
    down: Arc<AtomicBool>,
    /// While set, nothing is passed on in either direction, and connections stay open (a
    /// stalled server or network with TCP alive).
    stalled: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start() -> Self {
        let upstream = url::Url::parse(&admin_url()).unwrap();
        let up = format!(
            "{}:{}",
            upstream.host_str().unwrap(),
            upstream.port().unwrap_or(5432)
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(AtomicBool::new(false));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (d, o, st) = (down.clone(), open.clone(), stalled.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if d.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&up) else {
                    continue;
                };
                {
                    let mut o = o.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let st = st.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = from.read(&mut buf) {
                            while st.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            port,
            down,
            stalled,
            open,
        }
    }

    /// Cuts every open connection and turns new ones away until `up`.
    fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn url(&self, db: &TestDb) -> String {
        let mut u = url::Url::parse(&db.url).unwrap();
        u.set_host(Some("127.0.0.1")).unwrap();
        u.set_port(Some(self.port)).unwrap();
        u.to_string()
    }
}

#[test]
fn a_server_gone_for_seconds_is_survived() {
    let db = TestDb::new("proxy");
    seed(&db, &["--rows", "10000"]);
    let proxy = Proxy::start();
    let url = proxy.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let target: PathBuf = dir.path().join("p.sqlite");
    let t = target.to_str().unwrap();
    let out = run_with_faults(
        &[
            "load",
            "--source",
            &url,
            "--target",
            t,
            "--batch-rows",
            "1000",
        ],
        &[3],
        || {
            // down for 2.5 s while the run goes on and retries, then back
            proxy.cut();
            let down = proxy.down.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(2500));
                down.store(false, Ordering::SeqCst);
            });
        },
    );
    succeeded(&out);
    assert_lossless(&mut db.client(), &target);
}

#[test]
fn a_stalled_server_is_a_transient_fault_after_the_read_timeout() {
    let db = TestDb::new("stall");
    seed(&db, &["--rows", "10000"]);
    let proxy = Proxy::start();
    let url = proxy.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let target: PathBuf = dir.path().join("p.sqlite");
    let started = Instant::now();
    let out = run_with_faults(
        &[
            "load",
            "--source",
            &url,
            "--target",
            target.to_str().unwrap(),
            "--batch-rows",
            "1000",
            "--read-timeout",
            "1s",
        ],
        &[3],
        || {
            // Silent for 3 s with every connection alive, then passing data again.
            proxy.stalled.store(true, Ordering::SeqCst);
            let stalled = proxy.stalled.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(3000));
                stalled.store(false, Ordering::SeqCst);
            });
        },
    );
    let v = succeeded(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--read-timeout"), "the cause is named: {err}");
    assert!(v["retries"].as_u64().unwrap() >= 1);
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_lossless(&mut db.client(), &target);
}

#[test]
fn the_first_ctrl_c_ends_a_run_stuck_on_a_stalled_server() {
    let db = TestDb::new("stallint");
    seed(&db, &["--rows", "10000"]);
    let proxy = Proxy::start();
    let url = proxy.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("p.sqlite");
    fake_target(&target);
    let before = std::fs::read(&target).unwrap();
    let flag = dir.path().join("paused");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args(["load", "--source", &url, "--target"])
        .arg(&target)
        .args(["--batch-rows", "1000", "--force"])
        .env("SCROBSYNC_FAILPOINT", "pause-after-windows=2")
        .env("SCROBSYNC_FAILPOINT_FILE", &flag)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !flag.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server stops answering for good; the run waits on it (default read timeout: minutes).
    proxy.stalled.store(true, Ordering::SeqCst);
    std::fs::remove_file(&flag).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting on the stalled server"
    );
    let asked = Instant::now();
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let mut code = None;
    while asked.elapsed() < Duration::from_secs(10) {
        if let Some(status) = child.try_wait().unwrap() {
            code = status.code();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = asked.elapsed();
    if code.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    proxy.stalled.store(false, Ordering::SeqCst);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, Some(130), "one Ctrl-C ends the run: {err}");
    assert!(took < Duration::from_secs(3), "within 3 s: {took:?}");
    assert_eq!(std::fs::read(&target).unwrap(), before, "target untouched");
}

#[test]
fn a_mapping_that_takes_an_advisory_lock_does_not_deadlock_the_run() {
    let db = TestDb::new("advlock");
    seed(&db, &["--rows", "5000"]);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lock.toml");
    std::fs::write(
        &cfg,
        "[source]\nquery = \"SELECT id, username, played_at, artist_name, album_name, track_name, loved FROM scrobbles WHERE pg_advisory_lock(4242) IS NOT NULL\"\n",
    )
    .unwrap();
    let target = dir.path().join("l.sqlite");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("scrobsync"))
        .args(["load", "--source", &db.url, "--config"])
        .arg(&cfg)
        .arg("--target")
        .arg(&target)
        .args(["--partitions", "2", "--batch-rows", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    assert!(finished, "the run deadlocked on its own advisory lock");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_lossless(&mut db.client(), &target);
}

/// verify reads the source in one snapshot: a transaction that commits while it runs, changing
/// a row already hashed and one not yet read, is seen whole or not at all. Here the target
/// equals a state the source never had (old first row, new last row): a verify that read the
/// slices in snapshots of their own would call it equal.
#[test]
fn verify_reads_the_source_in_one_snapshot() {
    let db = TestDb::new("snapshot");
    seed(&db, &["--rows", "8000"]);
    let mut c = db.client();
    let (first, last): (i64, i64) = {
        let r = c
            .query_one("SELECT min(id), max(id) FROM scrobbles", &[])
            .unwrap();
        (r.get(0), r.get(1))
    };
    let set = |c: &mut postgres::Client, a: bool, b: bool| {
        c.execute(
            "UPDATE scrobbles SET loved = CASE WHEN id = $1 THEN $3::bool ELSE $4::bool END WHERE id IN ($1, $2)",
            &[&first, &last, &a, &b],
        )
        .unwrap();
    };
    set(&mut c, false, true);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("s.sqlite");
    let t = target.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", t]);
    // The source goes (false, false) -> (true, true); the target holds (false, true).
    set(&mut c, false, false);
    let out = run_with_faults(
        &[
            "verify",
            "--source",
            &db.url,
            "--target",
            t,
            "--partitions",
            "1",
        ],
        &[1],
        || set(&mut db.client(), true, true),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "a state the source never had is a difference: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Losing the snapshot's connection reads the source again in a new one.
    set(&mut c, false, true);
    let out = run_with_faults(
        &[
            "verify",
            "--source",
            &db.url,
            "--target",
            t,
            "--partitions",
            "1",
        ],
        &[1],
        terminate(&db),
    );
    let v = succeeded(&out);
    assert!(v["differing"].as_array().unwrap().is_empty(), "{v}");
}
