//! Connecting like psql: the password from the source, its service, PGPASSWORD, the password
//! command or the password file, a source given by the PG* variables alone, as key=value pairs
//! or as a service, URL parameters decoded as libpq decodes them — against a tiny PostgreSQL
//! endpoint in the test that asks for a password and records what it receives (the test server
//! trusts every local login, so it cannot).

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What one connection attempt sent: its startup parameters and its password (if any).
#[derive(Debug, Clone)]
struct Login {
    params: HashMap<String, String>,
    password: Option<String>,
}

/// A PostgreSQL endpoint that asks for a cleartext password, records the login, and then ends
/// the session with an error: `accepted` for the expected password, 28P01 otherwise.
struct AuthServer {
    port: u16,
    logins: Arc<Mutex<Vec<Login>>>,
}

fn read_exact(s: &mut TcpStream, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).ok()?;
    Some(b)
}

fn error_response(code: &str, msg: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (t, v) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', msg)] {
        body.push(t);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Serves one login, recording it before the reply (a client that has its answer may look at
/// the record at once).
fn serve(mut s: TcpStream, expected: &str, logins: &Mutex<Vec<Login>>) -> Option<()> {
    let params = loop {
        let len = i32::from_be_bytes(read_exact(&mut s, 4)?.try_into().ok()?) as usize;
        let body = read_exact(&mut s, len - 4)?;
        let code = i32::from_be_bytes(body[..4].try_into().ok()?);
        if code == 80877103 || code == 80877104 {
            s.write_all(b"N").ok()?; // no TLS, no GSS
            continue;
        }
        let fields: Vec<String> = body[4..]
            .split(|b| *b == 0)
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let mut params = HashMap::new();
        for kv in fields.chunks(2) {
            if kv.len() == 2 && !kv[0].is_empty() {
                params.insert(kv[0].clone(), kv[1].clone());
            }
        }
        break params;
    };
    // AuthenticationCleartextPassword
    s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).ok()?;
    let password = (|| {
        let t = read_exact(&mut s, 1)?;
        if t[0] != b'p' {
            return None;
        }
        let len = i32::from_be_bytes(read_exact(&mut s, 4)?.try_into().ok()?) as usize;
        let body = read_exact(&mut s, len - 4)?;
        Some(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned())
    })();
    let reply = match &password {
        Some(p) if p == expected => error_response("XX000", "test endpoint: password accepted"),
        Some(_) => error_response(
            "28P01",
            &format!(
                "password authentication failed for user \"{}\"",
                params.get("user").cloned().unwrap_or_default()
            ),
        ),
        None => Vec::new(),
    };
    logins.lock().unwrap().push(Login { params, password });
    let _ = s.write_all(&reply);
    Some(())
}

impl AuthServer {
    fn start(expected: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let l = logins.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                let _ = serve(s, expected, &l);
            }
        });
        Self { port, logins }
    }

    fn last(&self) -> Login {
        self.logins
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a login")
    }
}

const PW: &str = "Corr3ct-H0rse";

/// Runs `load` with `source` (or none) and `env`, in a clean environment with HOME in `home`.
fn attempt(home: &std::path::Path, source: Option<&str>, env: &[(&str, &str)]) -> (i32, String) {
    attempt_with(home, source, &[], env)
}

/// Like [`attempt`], with more arguments for `load`. `home` is the system service file's
/// folder too (PGSYSCONFDIR).
fn attempt_with(
    home: &std::path::Path,
    source: Option<&str>,
    args: &[&str],
    env: &[(&str, &str)],
) -> (i32, String) {
    let mut c = bin();
    for v in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGPASSFILE",
        "PGCONNECT_TIMEOUT",
        "PGAPPNAME",
        "PGSERVICE",
        "PGSERVICEFILE",
        "SCROBSYNC_PASSWORD_COMMAND",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home).env("PGSYSCONFDIR", home);
    c.args(["load", "-vvv", "--retries", "0", "--target"]);
    c.arg(home.join("t.sqlite"));
    if let Some(s) = source {
        c.args(["--source", s]);
    }
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !all.contains(PW) && !all.contains("Wr0ng-pw"),
        "password printed: {all}"
    );
    (o.status.code().unwrap(), all)
}

fn private_file(path: &std::path::Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn every_source_of_the_password_reaches_the_server() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = server.port.to_string();
    let base = format!("postgresql://alice@127.0.0.1:{port}/music");

    // in the source URL
    let (code, out) = attempt(
        h,
        Some(&format!("postgresql://alice:{PW}@127.0.0.1:{port}/music")),
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some(PW));

    // PGPASSWORD
    let (_, out) = attempt(h, Some(&base), &[("PGPASSWORD", PW)]);
    assert!(out.contains("password accepted"), "{out}");

    // ~/.pgpass, with libpq's wildcards and escapes
    private_file(
        &h.join(".pgpass"),
        &format!(
            "# mine\nelsewhere:*:*:*:nope\n127.0.0.1:{port}:*:alice:{}\n",
            PW.replace('-', "\\-")
        ),
        0o600,
    );
    let (_, out) = attempt(h, Some(&base), &[]);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some(PW));

    // PGPASSFILE wins over ~/.pgpass
    let other = h.join("other.pass");
    private_file(&other, "*:*:*:*:Wr0ng-pw\n", 0o600);
    let (_, out) = attempt(h, Some(&base), &[("PGPASSFILE", other.to_str().unwrap())]);
    assert!(
        out.contains("rejected the password for user 'alice'"),
        "{out}"
    );
    assert!(out.contains("from the password file"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some("Wr0ng-pw"));

    // a password file others may read is ignored, with a warning; then no password at all
    private_file(&h.join(".pgpass"), &format!("*:*:*:*:{PW}\n"), 0o644);
    let (code, out) = attempt(h, Some(&base), &[]);
    assert_eq!(code, 1);
    assert!(out.contains("group or world access"), "{out}");
    for part in [
        "asks for a password for user 'alice'",
        "PGPASSWORD",
        "~/.pgpass",
        "source URL",
    ] {
        assert!(out.contains(part), "missing '{part}' in: {out}");
    }
    assert!(server.last().password.is_none());

    // a wrong password in the URL says so
    let (_, out) = attempt(
        h,
        Some(&format!(
            "postgresql://alice:Wr0ng-pw@127.0.0.1:{port}/music"
        )),
        &[],
    );
    assert!(
        out.contains("wrong password") && out.contains("given in the source"),
        "{out}"
    );
}

#[test]
fn a_source_from_pg_variables_or_key_value_pairs() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = server.port.to_string();

    // no --source at all: psql's variables
    let (_, out) = attempt(
        h,
        None,
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "carol"),
            ("PGDATABASE", "music db"),
            ("PGPASSWORD", PW),
            ("PGAPPNAME", "nightly-sync"),
        ],
    );
    assert!(out.contains("password accepted"), "{out}");
    let l = server.last();
    assert_eq!(l.params["user"], "carol");
    assert_eq!(l.params["database"], "music db");
    assert_eq!(l.params["application_name"], "nightly-sync");

    // a URL without host takes PGHOST; its options are decoded like libpq's
    let (_, _) = attempt(
        h,
        Some("postgresql:///music?options=-c%20statement_timeout%3D300"),
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "dave"),
            ("PGPASSWORD", PW),
        ],
    );
    let l = server.last();
    assert_eq!(l.params["database"], "music");
    assert_eq!(l.params["application_name"], "scrobsync");
    assert!(
        l.params["options"].starts_with("-c statement_timeout=300 "),
        "{:?}",
        l.params
    );
    assert!(l.params["options"].contains("default_transaction_read_only=on"));
    // no JIT: compiling a large expression runs on in LLVM, where no cancel reaches it
    assert!(l.params["options"].contains("-c jit=off"), "{:?}", l.params);

    // key=value conninfo
    let (_, out) = attempt(
        h,
        Some(&format!(
            "host=127.0.0.1 port={port} user=erin dbname='my music' password={PW}"
        )),
        &[],
    );
    assert!(out.contains("password accepted"), "{out}");
    let l = server.last();
    assert_eq!(
        (l.params["user"].as_str(), l.params["database"].as_str()),
        ("erin", "my music")
    );
}

#[test]
fn a_real_server_reached_through_pg_variables_only() {
    let db = TestDb::new("pgvars");
    seed(&db, &["--rows", "500"]);
    let admin = url::Url::parse(&admin_url()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("v.sqlite");
    let o = bin()
        .args(["load", "--target"])
        .arg(&t)
        .env("PGHOST", admin.host_str().unwrap())
        .env("PGPORT", admin.port().unwrap_or(5432).to_string())
        .env("PGUSER", admin.username())
        .env("PGDATABASE", &db.name)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_lossless(&mut db.client(), &t);
}

#[test]
fn a_password_command_supplies_the_password() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = server.port.to_string();
    let base = format!("postgresql://alice@127.0.0.1:{port}/music");

    // --password-command: its stdout less one trailing newline
    let cmd = format!("printf '%s\\r\\n' '{PW}'");
    let (code, out) = attempt_with(h, Some(&base), &["--password-command", &cmd], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some(PW));

    // SCROBSYNC_PASSWORD_COMMAND, which wins over ~/.pgpass; a rejected password names it
    private_file(&h.join(".pgpass"), &format!("*:*:*:*:{PW}\n"), 0o600);
    let (_, out) = attempt(
        h,
        Some(&base),
        &[("SCROBSYNC_PASSWORD_COMMAND", "echo Wr0ng-pw")],
    );
    assert!(
        out.contains("rejected the password") && out.contains("from the password command"),
        "{out}"
    );
    assert_eq!(server.last().password.as_deref(), Some("Wr0ng-pw"));

    // PGPASSWORD wins over the command, which then does not run at all
    let ran = h.join("ran");
    let cmd = format!("touch '{}'; echo Wr0ng-pw", ran.display());
    let (_, out) = attempt_with(
        h,
        Some(&base),
        &["--password-command", &cmd],
        &[("PGPASSWORD", PW)],
    );
    assert!(out.contains("password accepted"), "{out}");
    assert!(
        !ran.exists(),
        "the command ran although PGPASSWORD gave a password"
    );
}

#[test]
fn a_failing_password_command_is_one_clear_line() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let base = format!("postgresql://alice@127.0.0.1:{}/music", server.port);
    for (cmd, why) in [
        ("echo Wr0ng-pw; exit 3", "(exit status 3)"),
        (
            "scrobsync-no-such-command",
            "(exit status 127: command not found)",
        ),
        ("true", "printed no password"),
    ] {
        let (code, out) = attempt_with(h, Some(&base), &["--password-command", cmd], &[]);
        assert_eq!(code, 1, "{out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        assert!(
            line.contains("the password command")
                && line.contains(why)
                && line.ends_with("check --password-command / SCROBSYNC_PASSWORD_COMMAND"),
            "{cmd}: {out}"
        );
    }
    // Its stderr reaches the user (it may explain, or ask for a passphrase).
    let (_, out) = attempt_with(
        h,
        Some(&base),
        &["--password-command", "echo 'no such entry' >&2; exit 1"],
        &[],
    );
    assert!(out.contains("no such entry"), "{out}");
    assert!(
        server.logins.lock().unwrap().is_empty(),
        "no connection attempt without the password"
    );
}

#[test]
fn a_password_command_runs_once_per_process() {
    let db = TestDb::new("pwcmd");
    seed(&db, &["--rows", "3000"]);
    let mut source = url::Url::parse(&db.url).unwrap();
    // Whatever the test server wants, the command prints it (trust: anything).
    let secret = source
        .password()
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .or_else(|| std::env::var("PGPASSWORD").ok())
        .unwrap_or_else(|| "any-password".into());
    source.set_password(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let t = dir.path().join("t.sqlite");
    let o = bin()
        .args([
            "load",
            "--partitions",
            "2",
            "--batch-rows",
            "1000",
            "--target",
        ])
        .arg(&t)
        .args(["--source", source.as_str(), "--password-command"])
        .arg(format!(
            "echo run >> '{}'; printf '%s\\n' \"$TEST_SECRET\"",
            runs.display()
        ))
        .env("TEST_SECRET", &secret)
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "run\n",
        "the command runs once, not once per connection"
    );
    assert_lossless(&mut db.client(), &t);
}

#[test]
fn a_service_file_names_the_server_like_libpq() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = server.port;
    std::fs::write(
        h.join(".pg_service.conf"),
        format!(
            "# mine\n[music]\nhost=127.0.0.1\nport={port}\nuser=svc\ndbname=music\npassword={PW}\n[other]\nhost=nowhere.invalid\n"
        ),
    )
    .unwrap();

    // service=NAME in key=value pairs; the source wins over its service
    let (_, out) = attempt(h, Some("service=music user=erin"), &[]);
    assert!(out.contains("password accepted"), "{out}");
    let l = server.last();
    assert_eq!(
        (l.params["user"].as_str(), l.params["database"].as_str()),
        ("erin", "music")
    );

    // ?service= in a URL; the service wins over the PG* variables
    let (_, out) = attempt(
        h,
        Some("postgresql://?service=music"),
        &[("PGUSER", "envuser"), ("PGPASSWORD", "Wr0ng-pw")],
    );
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().params["user"], "svc");

    // PGSERVICE alone is a source
    let (_, out) = attempt(h, None, &[("PGSERVICE", "music")]);
    assert!(out.contains("password accepted"), "{out}");

    // PGSERVICEFILE instead of ~/.pg_service.conf; the system file (PGSYSCONFDIR) after it
    let file = h.join("elsewhere.conf");
    let entry = |name: &str, user: &str| {
        format!("[{name}]\nhost=127.0.0.1\nport={port}\nuser={user}\npassword={PW}\n")
    };
    std::fs::write(&file, entry("music2", "frank")).unwrap();
    std::fs::write(h.join("pg_service.conf"), entry("system", "gina")).unwrap();
    let file_env = [("PGSERVICEFILE", file.to_str().unwrap())];
    let (_, out) = attempt(h, Some("service=music2"), &file_env);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().params["user"], "frank");
    let (_, out) = attempt(h, Some("service=system"), &file_env);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().params["user"], "gina");

    let (code, out) = attempt(h, Some("service=nope"), &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("service 'nope' not found in ") && out.contains(".pg_service.conf"),
        "{out}"
    );
}

#[test]
fn empty_url_passwords_and_password_file_colons_like_libpq() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let port = server.port;
    let empty = format!("postgresql://alice:@127.0.0.1:{port}/music");

    // `alice:@` has no password, so PGPASSWORD gives it (psql does the same)
    let (_, out) = attempt(h, Some(&empty), &[("PGPASSWORD", PW)]);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some(PW));

    // …or the password file, whose password ends at the first unescaped ':'
    private_file(
        &h.join(".pgpass"),
        &format!("127.0.0.1:{port}:*:alice:{PW}:added 2024-05\n"),
        0o600,
    );
    let (_, out) = attempt(h, Some(&empty), &[]);
    assert!(out.contains("password accepted"), "{out}");
    assert_eq!(server.last().password.as_deref(), Some(PW));
}

#[test]
fn a_url_fragment_is_refused_and_never_printed() {
    let server = AuthServer::start(PW);
    let home = tempfile::tempdir().unwrap();
    // `attempt` checks that PW appears nowhere in the output.
    let (code, out) = attempt(
        home.path(),
        Some(&format!(
            "postgresql://alice@127.0.0.1:{}/music#{PW}",
            server.port
        )),
        &[],
    );
    assert_eq!(code, 1);
    assert!(out.contains("fragment"), "{out}");
    assert!(server.logins.lock().unwrap().is_empty());
}

#[test]
fn a_commanded_password_is_never_shown_but_reaches_child_processes() {
    use scrobsync::source::SourceUrl;
    let u = SourceUrl::resolve_with(
        "postgresql://alice@db.example/music",
        &|_| None,
        Some("echo s3cret-pw"),
    )
    .unwrap();
    for shown in [u.redacted().to_string(), u.to_string(), format!("{u:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
    }
    // `bench` hands the source to its child processes, which must not run the command again.
    assert!(u.expose_for_child().contains("s3cret-pw"));
}
