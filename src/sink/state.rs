//! scrobsync's own bookkeeping inside the target (`_scrobsync_*` tables): the high-water mark
//! and a log of runs, so a target file describes where it came from and how far it got.

use crate::source::identity::SourceIdentity;
use crate::source::mapping::SourceTable;
use crate::source::plan::Recheck;
use crate::source::SourceUrl;
use anyhow::{anyhow, bail, Result};
use rusqlite::{params, Connection};

pub const STATE_TABLES: &str = "
CREATE TABLE IF NOT EXISTS _scrobsync_state(
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS _scrobsync_runs(
    run_id INTEGER PRIMARY KEY,
    mode TEXT NOT NULL,
    source TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    hwm_before INTEGER,
    hwm_after INTEGER,
    rows_scrobbles INTEGER NOT NULL,
    rows_users INTEGER NOT NULL,
    rows_artists INTEGER NOT NULL,
    rows_albums INTEGER NOT NULL,
    rows_tracks INTEGER NOT NULL,
    seconds REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS _scrobsync_backfill(
    job TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    window_end INTEGER NOT NULL,
    rows_deleted INTEGER NOT NULL,
    rows_written INTEGER NOT NULL,
    done_at TEXT NOT NULL,
    PRIMARY KEY (job, window_start)
);
";

/// One row of `_scrobsync_runs`.
#[derive(Debug, Clone)]
pub struct RunRecord<'a> {
    pub mode: &'a str,
    /// Redacted source URL (never the password).
    pub source: &'a str,
    pub started_at: String,
    pub outcome: &'a str,
    pub hwm_before: Option<i64>,
    pub hwm_after: Option<i64>,
    /// Scrobbles in the target after the run minus before it.
    pub scrobbles_net: i64,
    /// users, artists, albums, tracks added
    pub rows: [u64; 4],
    pub seconds: f64,
}

/// The `_scrobsync_state` key of the source identity (see `source::identity`).
pub const SOURCE_IDENTITY: &str = "source_identity";

/// The `_scrobsync_state` key of the schema version a load wrote (see
/// [`super::schema::SCHEMA_VERSION`]); what tells a target from a file that only looks like one.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The pending re-check of the id mark (see [`Recheck`]), or none.
pub fn recheck(conn: &Connection) -> Result<Option<Recheck>> {
    let num = |k: &str| -> Result<Option<i64>> { Ok(get(conn, k)?.and_then(|v| v.parse().ok())) };
    Ok(
        match (num("recheck_after_id")?, num("recheck_until_xmin")?) {
            (Some(after_id), Some(until_xmin)) => Some(Recheck {
                after_id,
                until_xmin,
            }),
            _ => None,
        },
    )
}

pub fn set_recheck(conn: &Connection, r: Option<Recheck>) -> Result<()> {
    match r {
        Some(r) => {
            set(conn, "recheck_after_id", &r.after_id.to_string())?;
            set(conn, "recheck_until_xmin", &r.until_xmin.to_string())?;
        }
        None => {
            conn.execute(
                "DELETE FROM _scrobsync_state WHERE key IN ('recheck_after_id', 'recheck_until_xmin')",
                [],
            )?;
        }
    }
    Ok(())
}

pub fn create(conn: &Connection) -> Result<()> {
    conn.execute_batch(STATE_TABLES)?;
    conn.execute_batch(super::open_ids::TABLE_SQL)?;
    Ok(())
}

pub fn set(conn: &Connection, key: &str, value: &str) -> Result<()> {
    conn.execute(
        "INSERT INTO _scrobsync_state(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, key: &str) -> Result<Option<String>> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .query_row(
            "SELECT value FROM _scrobsync_state WHERE key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()?)
}

/// Sets the time of the newest run-log row (after its transaction committed).
pub fn set_last_run_seconds(conn: &Connection, seconds: f64) -> Result<()> {
    conn.execute(
        "UPDATE _scrobsync_runs SET seconds = ?1 WHERE run_id = (SELECT max(run_id) FROM _scrobsync_runs)",
        [seconds],
    )?;
    Ok(())
}

pub fn record_run(conn: &Connection, r: &RunRecord) -> Result<()> {
    conn.execute(
        "INSERT INTO _scrobsync_runs(mode, source, started_at, finished_at, outcome, hwm_before,
             hwm_after, rows_scrobbles, rows_users, rows_artists, rows_albums, rows_tracks, seconds)
         VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ','now'), ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            r.mode,
            r.source,
            r.started_at,
            r.outcome,
            r.hwm_before,
            r.hwm_after,
            r.scrobbles_net,
            r.rows[0] as i64,
            r.rows[1] as i64,
            r.rows[2] as i64,
            r.rows[3] as i64,
            r.seconds
        ],
    )?;
    Ok(())
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Current UTC time as an ISO-8601 string, for run records.
pub fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Windows of backfill job `job` already done (their start, Unix seconds).
pub fn backfill_done(conn: &Connection, job: &str) -> Result<std::collections::HashSet<i64>> {
    let mut stmt = conn.prepare("SELECT window_start FROM _scrobsync_backfill WHERE job = ?1")?;
    let done = stmt
        .query_map([job], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(done)
}

/// Backfill jobs with windows recorded other than `job` (repairs excluded), as their keys.
pub fn backfill_other_jobs(conn: &Connection, job: &str) -> Result<Vec<String>> {
    let others = conn
        .prepare(
            "SELECT DISTINCT job FROM _scrobsync_backfill WHERE job <> ?1 AND job NOT LIKE 'repair:%'",
        )?
        .query_map([job], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(others)
}

/// Forgets the windows of `job` (a new, non-resumed run of it).
pub fn backfill_clear(conn: &Connection, job: &str) -> Result<()> {
    conn.execute("DELETE FROM _scrobsync_backfill WHERE job = ?1", [job])?;
    Ok(())
}

/// Records a window as done; called inside the window's own transaction.
pub fn backfill_window_done(
    conn: &Connection,
    job: &str,
    window: (i64, i64),
    deleted: u64,
    written: u64,
) -> Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO _scrobsync_backfill(job, window_start, window_end, rows_deleted,
             rows_written, done_at) VALUES (?1, ?2, ?3, ?4, ?5, strftime('%Y-%m-%dT%H:%M:%fZ','now'))",
        params![job, window.0, window.1, deleted as i64, written as i64],
    )?;
    Ok(())
}

/// Refuses to change a target with rows of another source than the one it was loaded from,
/// unless `allow` (`--allow-other-source`): then the run's source becomes the target's, and the
/// returned note (for the run log) says what it replaced. Call inside the run's transaction.
pub fn check_source(
    conn: &Connection,
    target: &std::path::Path,
    url: &SourceUrl,
    table: &SourceTable,
    allow: bool,
) -> Result<Option<String>> {
    let this = SourceIdentity::of(url, table);
    let stored = match get(conn, SOURCE_IDENTITY)? {
        Some(s) => SourceIdentity::from_state(&s),
        // A target written before identities were recorded: its redacted source URL.
        None => get(conn, "source")?
            .and_then(|s| SourceUrl::parse(&s).ok())
            .map(|u| SourceIdentity {
                mapping: String::new(),
                server: String::new(),
                ..SourceIdentity::of(&u, table)
            }),
    };
    let Some(stored) = stored else {
        set(conn, SOURCE_IDENTITY, &this.to_state())?;
        return Ok(None);
    };
    if stored.same_as(&this) {
        if stored.needs_update() {
            set(conn, SOURCE_IDENTITY, &this.to_state())?;
        }
        return Ok(None);
    }
    if !allow {
        bail!(
            "{} was loaded {}; use its source, or pass --allow-other-source to make this one its source",
            target.display(),
            stored.difference(&this)
        );
    }
    tracing::warn!(
        "{} was loaded from {}; --allow-other-source makes {} its source",
        target.display(),
        stored.describe(),
        this.describe()
    );
    set(conn, SOURCE_IDENTITY, &this.to_state())?;
    set(conn, "source", url.redacted())?;
    Ok(Some(format!(
        "{} (--allow-other-source; the target was from {})",
        url.redacted(),
        stored.describe()
    )))
}

/// A mark stored under `key` (`hwm`, `played_at_mark`), as a number.
pub fn mark(conn: &Connection, key: &str) -> Result<Option<i64>> {
    match get(conn, key)? {
        Some(v) => Ok(Some(v.parse().map_err(|_| {
            anyhow!("the target's stored mark '{key}' is not a number ({v}); the target is damaged, run a full `load`")
        })?)),
        None => Ok(None),
    }
}

/// A row of the run log, `_scrobsync_runs`.
#[derive(Debug, Clone)]
pub struct LoggedRun {
    pub run_id: i64,
    pub mode: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub hwm_before: Option<i64>,
    pub hwm_after: Option<i64>,
    pub rows_scrobbles: i64,
    pub seconds: f64,
}

/// The `n` most recent runs of the log, newest first.
pub fn last_runs(conn: &Connection, n: usize) -> Result<Vec<LoggedRun>> {
    let mut stmt = conn.prepare(
        "SELECT run_id, mode, started_at, finished_at, outcome, hwm_before, hwm_after,
                rows_scrobbles, seconds
         FROM _scrobsync_runs ORDER BY run_id DESC LIMIT ?1",
    )?;
    let runs = stmt
        .query_map([i64::try_from(n).unwrap_or(i64::MAX)], |r| {
            Ok(LoggedRun {
                run_id: r.get(0)?,
                mode: r.get(1)?,
                started_at: r.get(2)?,
                finished_at: r.get(3)?,
                outcome: r.get(4)?,
                hwm_before: r.get(5)?,
                hwm_after: r.get(6)?,
                rows_scrobbles: r.get(7)?,
                seconds: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(runs)
}
