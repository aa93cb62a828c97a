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
