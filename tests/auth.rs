//! Connecting like psql: the password from the source, PGPASSWORD or the password file, a
//! source given by the PG* variables alone or as key=value pairs, URL parameters decoded as
//! libpq decodes them — against a tiny PostgreSQL endpoint in the test that asks for a password
//! and records what it receives (the test server trusts every local login, so it cannot).

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

fn serve(mut s: TcpStream, expected: &str) -> Option<Login> {
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
    let _ = s.write_all(&reply);
    Some(Login { params, password })
}

impl AuthServer {
    fn start(expected: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let logins = Arc::new(Mutex::new(Vec::new()));
        let l = logins.clone();
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                if let Some(login) = serve(s, expected) {
                    l.lock().unwrap().push(login);
                }
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
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home)
        .args(["load", "-vvv", "--retries", "0", "--target"]);
    c.arg(home.join("t.sqlite"));
    if let Some(s) = source {
        c.args(["--source", s]);
    }
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
