//! The questions of `docs/queries.sql` — what people ask a target first — timed against a
//! target (the `questions` step of `scrobsync bench`), with parameters taken from its data:
//! the busiest user, artist (and its most played track), year and month, the worst cases.

use anyhow::{bail, Context, Result};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The question file, as shipped in `docs/`.
pub const QUERIES: &str = include_str!("../../docs/queries.sql");

/// One question: its title (the comment above it) and its SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub title: String,
    pub sql: String,
}

/// The questions of a file in its format: blocks separated by blank lines, each a `-- title`
/// line followed by one statement. Blocks of comments only are skipped.
pub fn parse(text: &str) -> Vec<Question> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut title = None;
        let mut sql = Vec::new();
        for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
            match line.strip_prefix("--") {
                Some(c) if sql.is_empty() => title = Some(c.trim().to_string()),
                _ => sql.push(line),
            }
        }
        if let (Some(title), false) = (title, sql.is_empty()) {
            out.push(Question {
                title,
                sql: sql.join("\n"),
            });
        }
    }
    out
}

/// How long one question took.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub question: String,
    pub seconds: f64,
    pub rows: u64,
}

/// The values bound to the questions' named parameters.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Params {
    pub user: String,
    pub artist: String,
    pub track: String,
    pub year: String,
    pub month: String,
}

fn one(conn: &Connection, sql: &str) -> Result<String> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(sql, [], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten()
        .unwrap_or_default())
}

/// The busiest user, artist, the artist's most played track, year and month of a target.
pub fn params(conn: &Connection) -> Result<Params> {
    Ok(Params {
        user: one(
            conn,
            "SELECT u.name FROM (SELECT user_id, count(*) AS n FROM scrobbles GROUP BY user_id
               ORDER BY n DESC LIMIT 1) x JOIN users u USING (user_id)",
        )?,
        artist: one(
            conn,
            "SELECT a.name FROM artist_plays p JOIN artists a USING (artist_id)
              ORDER BY p.plays DESC LIMIT 1",
        )?,
        track: one(
            conn,
            "SELECT t.title FROM tracks t JOIN track_plays p USING (track_id)
              WHERE t.artist_id = (SELECT artist_id FROM artist_plays ORDER BY plays DESC LIMIT 1)
              ORDER BY p.plays DESC LIMIT 1",
        )?,
        year: one(
            conn,
            "SELECT strftime('%Y', hour, 'unixepoch') AS y FROM hourly_plays GROUP BY y
              ORDER BY sum(plays) DESC LIMIT 1",
        )?,
        month: one(
            conn,
            "SELECT strftime('%Y-%m', hour, 'unixepoch') AS m FROM hourly_plays GROUP BY m
              ORDER BY sum(plays) DESC LIMIT 1",
        )?,
    })
}

/// Runs one question to its last row, with the named parameters it uses bound.
pub fn run(conn: &Connection, q: &Question, p: &Params) -> Result<Timing> {
    let t = Instant::now();
    let mut stmt = conn
        .prepare(&q.sql)
        .with_context(|| format!("question '{}'", q.title))?;
    let known = [
        (":user", &p.user),
        (":artist", &p.artist),
        (":track", &p.track),
        (":year", &p.year),
        (":month", &p.month),
    ];
    for i in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(i).unwrap_or("?");
        let Some((_, value)) = known.iter().find(|(k, _)| *k == name) else {
            bail!(
                "question '{}' has the parameter {name}, which scrobsync does not know",
                q.title
            );
        };
        stmt.raw_bind_parameter(i, value.as_str())?;
    }
    let mut rows = stmt.raw_query();
    let mut n = 0u64;
    while rows.next()?.is_some() {
        n += 1;
    }
    Ok(Timing {
        question: q.title.clone(),
        seconds: t.elapsed().as_secs_f64(),
        rows: n,
    })
}

/// Times every question of [`QUERIES`] on the target at `path`, on a connection with SQLite's
/// defaults (as the `sqlite3` shell and Datasette open it), reading only.
pub fn time_all(path: &Path) -> Result<(Params, Vec<Timing>)> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", path.display()))?;
    let p = params(&conn)?;
    let mut out = Vec::new();
    for q in parse(QUERIES) {
        crate::cancel::check()?;
        out.push(run(&conn, &q, &p)?);
    }
    Ok((p, out))
}

/// The question `demo` shows at the end: the three most played artists of a target, from
/// `artist_plays` (milliseconds at any size), ties by name.
pub const TOP_ARTISTS_SQL: &str = "SELECT a.name, p.plays FROM artist_plays p \
    JOIN artists a USING (artist_id) ORDER BY p.plays DESC, a.name LIMIT 3";

/// The answer to [`TOP_ARTISTS_SQL`] on the target at `path`: names with play counts.
pub fn top_artists(path: &Path) -> Result<Vec<(String, i64)>> {
    let conn = super::target::open_read_only(path)?;
    let mut stmt = conn.prepare(TOP_ARTISTS_SQL)?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_questions_parse_and_answer_on_an_empty_target() {
        let qs = parse(QUERIES);
        assert!(qs.len() >= 20, "{}", qs.len());
        assert!(qs.iter().all(|q| !q.sql.contains("--")), "{qs:?}");
        let c = Connection::open_in_memory().unwrap();
        crate::sink::schema::create_tables(&c).unwrap();
        crate::sink::schema::ensure_views(&c).unwrap();
        let p = params(&c).unwrap();
        for q in &qs {
            let t = run(&c, q, &p).unwrap();
            assert!(t.rows <= 1, "{}: {}", q.title, t.rows);
        }
    }

    #[test]
    fn blocks_without_a_statement_are_skipped() {
        let qs = parse("-- header\n-- more\n\n-- one\nSELECT 1;\n\n\n-- two\nSELECT\n  2;\n");
        assert_eq!(
            qs,
            [
                Question {
                    title: "one".into(),
                    sql: "SELECT 1;".into()
                },
                Question {
                    title: "two".into(),
                    sql: "SELECT\n2;".into()
                }
            ]
        );
    }
}
