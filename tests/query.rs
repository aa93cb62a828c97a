//! A target ready to query: the `plays` and `loved_tracks` views answer a user's first
//! questions exactly as the raw tables do, and `load --fts` + `scrobsync search` find names
//! (case- and accent-blind), kept current by sync and backfill.

mod common;

use common::*;
use rusqlite::Connection;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let o = bin().args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn views_answer_the_first_questions() {
    let db = TestDb::new("views");
    seed(&db, &["--rows", "8000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("v.sqlite");
    ok(&["load", "--source", &db.url, "--target", t.to_str().unwrap()]);
    let c = Connection::open(&t).unwrap();
    // top artists of all time
    assert_eq!(
        dump(&c, "SELECT artist, count(*) FROM plays GROUP BY artist ORDER BY 2 DESC, 1 LIMIT 10"),
        dump(
            &c,
            "SELECT a.name, count(*) FROM scrobbles s JOIN tracks t USING (track_id)
               JOIN artists a ON a.artist_id = t.artist_id GROUP BY a.artist_id ORDER BY 2 DESC, 1 LIMIT 10"
        )
    );
    // plays per year (ISO text where SQLite has one, and the exact epoch always)
    assert_eq!(
        dump(&c, "SELECT substr(played_at, 1, 4), count(*) FROM plays GROUP BY 1 ORDER BY 1"),
        dump(
            &c,
            "SELECT strftime('%Y', played_at, 'unixepoch'), count(*) FROM scrobbles GROUP BY 1 ORDER BY 1"
        )
    );
    let n: i64 = c
        .query_row("SELECT count(*) FROM plays", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 8000);
    // a user's loved tracks
    let user: String = c
        .query_row(
            "SELECT u.name FROM scrobbles s JOIN users u USING (user_id) WHERE s.loved = 1 LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let q = format!(
        "SELECT artist, track, loved_plays FROM loved_tracks WHERE user = '{}' ORDER BY 1, 2, 3",
        user.replace('\'', "''")
    );
    let raw = format!(
        "SELECT a.name, t.title, count(*) FROM scrobbles s JOIN users u USING (user_id)
           JOIN tracks t USING (track_id) JOIN artists a ON a.artist_id = t.artist_id
          WHERE s.loved = 1 AND u.name = '{}' GROUP BY s.track_id ORDER BY 1, 2, 3",
        user.replace('\'', "''")
    );
    let got = dump(&c, &q);
    assert!(!got.is_empty());
    assert_eq!(got, dump(&c, &raw));
}

#[test]
fn search_finds_names_and_stays_current() {
    let db = TestDb::new("fts");
    seed(&db, &["--rows", "8000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("s.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let o = bin()
        .args(["search", "radiohead", "--target", ts])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--fts"));

    ok(&["load", "--fts", "--source", &db.url, "--target", ts]);
    let hits: Value =
        serde_json::from_str(&ok(&["search", "RADIOHEAD", "--json", "--target", ts])).unwrap();
    let names: Vec<&str> = hits["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["kind"] == "artist")
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"Radiohead") && names.contains(&"radiohead"),
        "{names:?}"
    );
    let text = ok(&["search", "sigur ros", "--target", ts]);
    assert!(text.contains("Sigur R"), "accents do not matter: {text}");

    // sync adds new names; backfill --prune removes the ones no play names any more
    db.client()
        .batch_execute(
            "INSERT INTO scrobbles (id, username, played_at, artist_name, album_name, track_name)
             VALUES (9200000000000000000, 'u', '2021-03-03Z', 'Zebra Quintet', 'Stripes', 'Gallop')",
        )
        .unwrap();
    ok(&["sync", "--source", &db.url, "--target", ts]);
    let text = ok(&["search", "zebra", "--target", ts]);
    assert!(text.contains("Zebra Quintet"), "{text}");
    assert!(ok(&["search", "gallop", "--target", ts]).contains("Zebra Quintet"));
    db.client()
        .batch_execute("DELETE FROM scrobbles WHERE id = 9200000000000000000")
        .unwrap();
    ok(&[
        "backfill",
        "--prune",
        "--source",
        &db.url,
        "--target",
        ts,
        "--from",
        "2021-03-01",
        "--to",
        "2021-04-01",
    ]);
    assert!(ok(&["search", "zebra", "--target", ts]).contains("nothing matches"));
}

/// The query plan of `sql` (the detail column of EXPLAIN QUERY PLAN).
fn plan(c: &Connection, sql: &str) -> Vec<String> {
    c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Datasette counts a view's rows with `select count(*) from (select <columns> from view)`,
/// within one second: that count must read scrobbles alone, on any SQLite (the names come from
/// subqueries a count never runs). A target with an older version's views gets these on its
/// next run.
#[test]
fn counting_a_view_reads_scrobbles_alone_and_old_views_are_replaced() {
    let db = TestDb::new("viewplan");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("p.sqlite");
    let ts = t.to_str().unwrap();
    ok(&["load", "--source", &db.url, "--target", ts]);
    let c = Connection::open(&t).unwrap();
    for (view, columns) in [
        (
            "plays",
            "scrobble_id, user, artist, album, track, played_at, played_at_epoch, loved",
        ),
        (
            "loved_tracks",
            "user, artist, album, track, loved_plays, last_played",
        ),
    ] {
        let p = plan(
            &c,
            &format!("select count(*) from (select {columns} from {view} )"),
        );
        assert!(
            p.iter().all(|l| ["users", "artists", "albums", "tracks"]
                .iter()
                .all(|t| !l.contains(t))),
            "{view}: {p:?}"
        );
    }
    // An older version's view (joins) is replaced when a run opens the target.
    c.execute_batch(
        "DROP VIEW plays; CREATE VIEW plays AS SELECT s.scrobble_id, u.name AS user FROM scrobbles s
           JOIN users u ON u.user_id = s.user_id",
    )
    .unwrap();
    drop(c);
    ok(&["sync", "--source", &db.url, "--target", ts]);
    let c = Connection::open(&t).unwrap();
    let (sql, n): (String, i64) = c
        .query_row(
            "SELECT sql, (SELECT count(*) FROM plays WHERE artist IS NOT NULL AND track IS NOT NULL)
               FROM sqlite_master WHERE name = 'plays'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(sql, scrobsync::sink::schema::VIEWS[0].1);
    assert_eq!(n, 3000);
}

/// The README's `datasette music.sqlite` opens every table and view as a browser sees them.
/// Needs `datasette` on PATH; `.ci/run` installs it and sets SCROBSYNC_REQUIRE_DATASETTE=1, so
/// there the test cannot pass without running it.
#[test]
fn datasette_opens_every_table_and_view() {
    let have = std::process::Command::new("datasette")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert!(
            std::env::var_os("SCROBSYNC_REQUIRE_DATASETTE").is_none(),
            "datasette is not installed (pip install datasette)"
        );
        eprintln!("datasette is not installed: skipped");
        return;
    }
    let db = TestDb::new("datasette");
    seed(&db, &["--rows", "3000"]);
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("music.sqlite");
    ok(&[
        "load",
        "--fts",
        "--source",
        &db.url,
        "--target",
        t.to_str().unwrap(),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new("datasette")
        .arg("serve")
        .arg(&t)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let get = |path: &str| -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        let code = body.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body))
    };
    let started = std::time::Instant::now();
    while get("/").is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "datasette did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let result = std::panic::catch_unwind(|| {
        for page in [
            "users",
            "artists",
            "albums",
            "tracks",
            "scrobbles",
            "plays",
            "loved_tracks",
            "names_fts",
        ] {
            let (code, body) = get(&format!("/music/{page}")).unwrap();
            assert_eq!(
                code,
                200,
                "/music/{page}: {}",
                &body[..body.len().min(2000)]
            );
        }
        // foreign keys are expanded into names: a scrobble's track shows its title
        let title: String = Connection::open(&t)
            .unwrap()
            .query_row(
                "SELECT t.title FROM scrobbles s JOIN tracks t USING (track_id) ORDER BY s.scrobble_id LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let (_, body) = get("/music/scrobbles?_sort=scrobble_id&_size=1").unwrap();
        let escaped = title
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&#34;")
            .replace('\'', "&#39;");
        assert!(
            body.contains(&escaped) || body.contains(&title),
            "the track's title {title:?} is shown"
        );
    });
    let _ = server.kill();
    let _ = server.wait();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
