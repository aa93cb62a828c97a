use super::*;
use crate::sink::schema;

/// A small target with its indexes and armed triggers, the way a load leaves one.
fn target() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    // as on scrobsync's connections (the bundled SQLite enforces foreign keys by default)
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    schema::create_tables(&c).unwrap();
    c.execute_batch(schema::INDEXES).unwrap();
    c.execute_batch(
        "INSERT INTO users VALUES (1, 'u1'), (2, 'u2');
         INSERT INTO artists VALUES (1, 'a1', NULL), (2, 'a2', NULL);
         INSERT INTO albums VALUES (1, 1, 'x', NULL), (2, 2, 'y', NULL);
         INSERT INTO tracks VALUES (1, 1, 1, 't1', NULL, NULL), (2, 1, NULL, 't2', NULL, NULL),
                                   (3, 2, 2, 't3', NULL, NULL);
         INSERT INTO scrobbles VALUES (1, 1, 1, 0, 0), (2, 1, 1, 3599, 0), (3, 2, 2, 3600, 1),
                                      (4, 2, 3, -1, 0), (5, 1, 3, -3600, 0), (6, 2, 1, 7300, 0);",
    )
    .unwrap();
    build(&c).unwrap();
    c.execute_batch("PRAGMA recursive_triggers = ON").unwrap();
    c
}

fn rows(c: &Connection, sql: &str) -> Vec<(i64, i64)> {
    let mut s = c.prepare(sql).unwrap();
    let r = s
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    r
}

fn exact(c: &Connection) -> Vec<String> {
    differences(c).unwrap().expect("has summaries")
}

#[test]
fn a_load_counts_plays_per_track_artist_album_and_utc_hour() {
    let c = target();
    assert_eq!(
        rows(&c, "SELECT * FROM track_plays ORDER BY 1"),
        [(1, 3), (2, 1), (3, 2)]
    );
    assert_eq!(
        rows(&c, "SELECT * FROM artist_plays ORDER BY 1"),
        [(1, 4), (2, 2)]
    );
    // track 2 has no album: its play counts for no album
    assert_eq!(
        rows(&c, "SELECT * FROM album_plays ORDER BY 1"),
        [(1, 3), (2, 2)]
    );
    // -1 and -3600 are in the hour starting at -3600 (floored, not truncated towards 0)
    assert_eq!(
        rows(&c, "SELECT * FROM hourly_plays ORDER BY 1"),
        [(-3600, 2), (0, 2), (3600, 1), (7200, 1)]
    );
    assert_eq!(exact(&c), Vec::<String>::new());
}

#[test]
fn every_change_of_scrobbles_or_tracks_keeps_them_exact() {
    let c = target();
    let steps = [
        "INSERT INTO scrobbles VALUES (7, 1, 2, 99999, 0)",
        "DELETE FROM scrobbles WHERE scrobble_id = 1",
        "UPDATE scrobbles SET track_id = 3, played_at = -7201 WHERE scrobble_id = 2",
        "UPDATE scrobbles SET loved = 1",
        "INSERT OR REPLACE INTO scrobbles VALUES (3, 1, 1, 5, 0)",
        "UPDATE tracks SET artist_id = 2, album_id = 2 WHERE track_id = 1",
        "UPDATE tracks SET album_id = NULL WHERE track_id = 3",
        "DELETE FROM tracks WHERE track_id = 2",
        "INSERT INTO tracks VALUES (2, 2, 1, 't2', NULL, NULL)",
        "INSERT INTO scrobbles VALUES (8, 2, 9, 1, 0)",
        "INSERT INTO tracks VALUES (9, 1, 1, 't9', NULL, NULL)",
        "UPDATE tracks SET track_id = 10 WHERE track_id = 9",
        "DELETE FROM scrobbles WHERE played_at < 0",
        "DELETE FROM tracks WHERE track_id NOT IN (SELECT track_id FROM scrobbles)",
        "DELETE FROM scrobbles",
    ];
    for sql in steps {
        c.execute_batch(sql).unwrap();
        assert_eq!(exact(&c), Vec::<String>::new(), "after {sql}");
    }
    for t in NAMES {
        let n: i64 = c
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{t} holds no rows without plays");
    }
}

#[test]
fn differences_name_every_kind_of_drift_and_a_rebuild_ends_them() {
    let tamper = [
        "UPDATE track_plays SET plays = plays + 1 WHERE track_id = 1",
        "DELETE FROM hourly_plays WHERE hour = 0",
        "INSERT INTO hourly_plays VALUES (36000, 1)",
        "UPDATE artist_plays SET plays = 7 WHERE artist_id = 2",
        "DELETE FROM album_plays WHERE album_id = 1",
        "INSERT INTO track_plays VALUES (99, 1)",
        "DROP TRIGGER scrobbles_counted_delete",
        "DROP TRIGGER tracks_counted_update",
        // REPLACE without recursive triggers: the replaced row's play is never taken out.
        "PRAGMA recursive_triggers = OFF; INSERT OR REPLACE INTO scrobbles VALUES (1, 1, 3, 0, 0)",
    ];
    for sql in tamper {
        let c = target();
        c.execute_batch(sql).unwrap();
        assert!(!exact(&c).is_empty(), "not seen: {sql}");
        build(&c).unwrap();
        assert_eq!(exact(&c), Vec::<String>::new(), "rebuilt after {sql}");
    }
}

#[test]
fn a_target_without_summaries_gets_them() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute_batch(schema::TABLES).unwrap();
    assert_eq!(differences(&c).unwrap(), None);
    c.execute_batch(
        "INSERT INTO tracks VALUES (1, 1, NULL, 't', NULL, NULL);
         INSERT INTO scrobbles VALUES (1, 1, 1, 10, 0), (2, 1, 1, 20, 0);",
    )
    .unwrap();
    build(&c).unwrap();
    assert_eq!(rows(&c, "SELECT * FROM track_plays"), [(1, 2)]);
    assert_eq!(exact(&c), Vec::<String>::new());
}

#[test]
fn hours_floor_like_the_triggers() {
    for t in [
        -7201,
        -3601,
        -3600,
        -1,
        0,
        1,
        3599,
        3600,
        i64::from(i32::MAX),
    ] {
        let c = Connection::open_in_memory().unwrap();
        let sql: i64 = c
            .query_row(
                &format!("SELECT {} FROM (SELECT ?1 AS played_at) s", hour!("s")),
                [t],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sql, hour_of(t), "{t}");
    }
    assert_eq!(
        hour_of(i64::MIN),
        i64::MIN,
        "saturates instead of overflowing"
    );
}

#[test]
fn a_missing_table_or_a_count_as_text_is_a_difference_and_build_restores_them() {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    c.execute_batch(schema::TABLES).unwrap();
    c.execute_batch(
        "INSERT INTO tracks VALUES (1, 1, 1, 't', NULL, NULL);
         INSERT INTO scrobbles VALUES (1, 1, 1, 10, 0), (2, 1, 1, 20, 0);",
    )
    .unwrap();
    build(&c).unwrap();
    c.execute_batch("DROP TABLE album_plays; UPDATE track_plays SET plays = 'two';")
        .unwrap();
    let found = differences(&c).unwrap().unwrap();
    assert!(
        found.iter().any(|d| d.contains("album_plays is missing")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|d| d.starts_with("track_plays")),
        "{found:?}"
    );
    assert!(c
        .execute("DELETE FROM scrobbles WHERE scrobble_id = 1", [])
        .is_err());
    arm(&c).unwrap();
    c.execute("DELETE FROM scrobbles WHERE scrobble_id = 1", [])
        .unwrap();
    build(&c).unwrap();
    assert_eq!(exact(&c), Vec::<String>::new());
    assert_eq!(rows(&c, "SELECT * FROM album_plays"), [(1, 1)]);
}

/// Sets the schema version a target stores, creating the state table.
fn set_version(c: &Connection, v: i64) {
    crate::sink::state::create(c).unwrap();
    crate::sink::state::set(c, crate::sink::state::SCHEMA_VERSION_KEY, &v.to_string()).unwrap();
}

#[test]
fn a_version_2_target_without_any_summary_is_damaged_not_summary_free() {
    let c = target();
    set_version(&c, 2);
    c.execute_batch(
        "DROP TABLE artist_plays; DROP TABLE album_plays; DROP TABLE track_plays;
         DROP TABLE hourly_plays; DROP TRIGGER scrobbles_counted_insert;
         DROP TRIGGER scrobbles_counted_delete; DROP TRIGGER scrobbles_counted_update;
         DROP TRIGGER tracks_counted_insert; DROP TRIGGER tracks_counted_delete;
         DROP TRIGGER tracks_counted_update;",
    )
    .unwrap();
    let found = exact(&c);
    assert_eq!(found.len(), 10, "4 tables and 6 triggers: {found:?}");
    build(&c).unwrap();
    assert_eq!(exact(&c), Vec::<String>::new());
    // Version 1 has none to compare, whatever its owner named a table.
    set_version(&c, 1);
    c.execute_batch("DROP TABLE artist_plays; CREATE TABLE artist_plays(x TEXT)")
        .unwrap();
    assert_eq!(differences(&c).unwrap(), None);
    assert_eq!(occupied(&c).unwrap(), ["a table named 'artist_plays'"]);
}

#[test]
fn arm_replaces_a_view_or_an_altered_table_under_a_summary_name() {
    let c = target();
    c.execute_batch(
        "DROP TABLE hourly_plays; CREATE VIEW Hourly_Plays AS SELECT 1 AS hour, 1 AS plays;
         DROP TABLE album_plays; CREATE TABLE album_plays(album_id INTEGER, plays TEXT);
         ALTER TABLE track_plays ADD COLUMN note TEXT;",
    )
    .unwrap();
    let found = damage(&c).unwrap();
    assert_eq!(
        found,
        [
            "table album_plays is altered (not defined as scrobsync defines it)",
            "table track_plays is altered (not defined as scrobsync defines it)",
            "hourly_plays is a view, not a table",
        ],
        "in NAMES order"
    );
    assert_eq!(occupied(&c).unwrap().len(), 3);
    build(&c).unwrap();
    assert_eq!(damage(&c).unwrap(), Vec::<String>::new());
    assert_eq!(exact(&c), Vec::<String>::new());
    assert_eq!(
        rows(&c, "SELECT * FROM hourly_plays ORDER BY hour"),
        [(-3600, 2), (0, 2), (3600, 1), (7200, 1)],
        "recounted"
    );
}

#[test]
fn a_wrong_track_count_is_one_row_of_track_plays_and_nothing_else() {
    let c = target();
    c.execute_batch("UPDATE track_plays SET plays = plays + 1 WHERE track_id = 1")
        .unwrap();
    // artist 1's and album 1's sums of stored counts are off too, but their plays are not
    assert_eq!(exact(&c), ["track_plays: 1 row differs"]);
    // one artist's count changed: one row, not one gone and one added
    rebuild(&c).unwrap();
    c.execute_batch("UPDATE artist_plays SET plays = 40 WHERE artist_id = 2; DELETE FROM album_plays WHERE album_id = 1")
        .unwrap();
    assert_eq!(
        exact(&c),
        ["artist_plays: 1 row differs", "album_plays: 1 row differs"]
    );
}

#[test]
fn triggers_of_others_are_named_and_those_on_or_naming_scrobsync_s_tables_are_damage() {
    use crate::sink::triggers;
    let c = target();
    crate::sink::state::create(&c).unwrap();
    crate::sink::search::create(&c).unwrap();
    c.execute_batch(
        "CREATE TABLE audit_log(id INTEGER);
         CREATE TABLE names_fts_mine(id INTEGER);
         CREATE TRIGGER audit AFTER INSERT ON scrobbles BEGIN INSERT INTO audit_log VALUES (new.scrobble_id); END;
         CREATE TRIGGER \"Odd\nName\" AFTER UPDATE ON Track_Plays BEGIN SELECT 1; END;
         CREATE TRIGGER on_log AFTER INSERT ON audit_log BEGIN SELECT 1; END;
         CREATE TRIGGER mine AFTER INSERT ON names_fts_mine BEGIN SELECT 1; END;
         CREATE TRIGGER runlog AFTER INSERT ON _scrobsync_runs BEGIN SELECT 1; END;
         CREATE TRIGGER shadow AFTER INSERT ON names_fts_data BEGIN SELECT 1; END;
         CREATE TRIGGER tamper AFTER INSERT ON users BEGIN
             UPDATE \"_scrobsync_state\" SET value = '1' WHERE key = 'schema_version';
         END;
         CREATE TRIGGER unindex AFTER INSERT ON artists BEGIN DELETE FROM names_fts; END;",
    )
    .unwrap();
    assert_eq!(
        triggers::foreign(&c).unwrap(),
        ["trigger audit on scrobbles"],
        "the owner's triggers on the user's data only"
    );
    let d = triggers::damage(&c).unwrap();
    assert_eq!(d.len(), 5, "{d:?}");
    assert!(
        d[0].starts_with("trigger Odd\\nName on Track_Plays is not scrobsync's"),
        "a name cannot break the line: {d:?}"
    );
    assert!(
        d[1].starts_with("trigger runlog on _scrobsync_runs is not scrobsync's"),
        "{d:?}"
    );
    assert!(
        d[2].starts_with("trigger shadow on names_fts_data is not scrobsync's"),
        "{d:?}"
    );
    assert!(
        d[3].starts_with("trigger tamper on users uses scrobsync's own table _scrobsync_state"),
        "{d:?}"
    );
    assert!(
        d[4].starts_with("trigger unindex on artists uses scrobsync's own table names_fts"),
        "the search index itself counts: {d:?}"
    );
    // a write is refused while one names scrobsync's tables, and changes nothing
    let e = triggers::guard(&c, std::path::Path::new("t.sqlite"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("drop it (DROP TRIGGER \"tamper\")"), "{e}");
    assert_eq!(triggers::damage(&c).unwrap().len(), 5);
    c.execute_batch("DROP TRIGGER tamper; DROP TRIGGER unindex")
        .unwrap();
    triggers::guard(&c, std::path::Path::new("t.sqlite")).unwrap();
    assert_eq!(triggers::damage(&c).unwrap(), Vec::<String>::new());
    assert_eq!(damage(&c).unwrap(), Vec::<String>::new());
    // the owner's triggers elsewhere stay, names_fts_mine's too
    let left: Vec<String> = {
        let mut s = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name IN ('audit', 'on_log', 'mine') ORDER BY 1")
            .unwrap();
        let v = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        v
    };
    assert_eq!(left, ["audit", "mine", "on_log"]);
}

#[test]
fn a_version_1_target_with_a_trigger_named_like_scrobsync_s_is_occupied() {
    let c = target();
    for (name, _) in TRIGGERS {
        c.execute_batch(&format!("DROP TRIGGER {name}")).unwrap();
    }
    c.execute_batch(
        "CREATE TRIGGER Scrobbles_Counted_Insert AFTER INSERT ON scrobbles BEGIN SELECT 1; END;",
    )
    .unwrap();
    assert_eq!(
        occupied(&c).unwrap(),
        ["a trigger named 'Scrobbles_Counted_Insert'"]
    );
}

/// A target written window by window from generated rows (NULL albums, negative times, the
/// fixtures' traps), its summaries counted as the facts were written.
fn loaded_with_counts(rows: u64, windows: usize) -> (Connection, Counts, u64) {
    use crate::fixtures::{copy::record_batch, Generator, SeedOptions};
    use crate::normalize::{window_frame, Normalizer};
    let all: Vec<_> = Generator::new(
        SeedOptions {
            rows,
            users: 7,
            seed: 3,
        },
        0,
    )
    .collect();
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("PRAGMA foreign_keys = OFF").unwrap();
    schema::create_tables(&c).unwrap();
    let mut norm = Normalizer::default();
    let mut counts = Counts::default();
    let mut facts = 0;
    for chunk in all.chunks(all.len().div_ceil(windows)) {
        let df = window_frame(vec![record_batch(chunk)]).unwrap();
        let out = norm
            .window(&df, &mut crate::normalize::registry::NoResolver)
            .unwrap();
        facts += crate::sink::writer::write_window(&c, &out, false).unwrap() as u64;
        counts.add(&out);
    }
    c.execute_batch(schema::INDEXES).unwrap();
    arm(&c).unwrap();
    (c, counts, facts)
}

#[test]
fn counts_made_while_writing_equal_a_count_of_the_scrobbles() {
    let (c, counts, facts) = loaded_with_counts(5000, 4);
    assert!(counts.write(&c, facts).unwrap());
    let held = |c: &Connection| {
        NAMES
            .iter()
            .map(|t| rows(c, &format!("SELECT * FROM {t} ORDER BY 1")))
            .collect::<Vec<_>>()
    };
    let written = held(&c);
    assert!(
        written[0].len() > 100 && written[3].len() > 100,
        "{written:?}"
    );
    assert_eq!(exact(&c), Vec::<String>::new());
    rebuild(&c).unwrap();
    assert_eq!(
        held(&c),
        written,
        "the same rows as counted from the scrobbles"
    );
    // Counted again from the file (a resumed load): the same rows.
    let (c2, _, facts2) = loaded_with_counts(5000, 4);
    let again = Counts::of_file(&c2).unwrap();
    assert!(again.usable());
    assert!(again.write(&c2, facts2).unwrap());
    assert_eq!(held(&c2), written, "counted from the file");
    // plays that do not add up to the facts written are an error, not a summary
    let (c, counts, facts) = loaded_with_counts(300, 1);
    let e = counts.write(&c, facts + 1).unwrap_err().to_string();
    assert!(e.contains("plays for"), "{e}");
}

#[test]
fn keys_that_do_not_fit_turn_the_counts_off() {
    use crate::normalize::{window_frame, Normalizer};
    let all: Vec<_> = crate::fixtures::Generator::new(
        crate::fixtures::SeedOptions {
            rows: 50,
            users: 2,
            seed: 1,
        },
        0,
    )
    .collect();
    let df = window_frame(vec![crate::fixtures::copy::record_batch(&all)]).unwrap();
    let mut out = Normalizer::default()
        .window(&df, &mut crate::normalize::registry::NoResolver)
        .unwrap();
    let mut counts = Counts::default();
    counts.add(&out);
    use polars::prelude::*;
    let shifted = out.dims.tracks.column("track_id").unwrap().i64().unwrap() + (1i64 << 40);
    out.dims
        .tracks
        .with_column(shifted.into_series().with_name("track_id".into()))
        .unwrap();
    counts.add(&out);
    let c = Connection::open_in_memory().unwrap();
    schema::create_tables(&c).unwrap();
    assert!(!counts.write(&c, 100).unwrap(), "off: the caller counts");
}
