//! `status`: what a target holds and how it got there, read from its own tables.

use super::TableRows;
use crate::sink::{state, target, writer};
use anyhow::Result;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub run_id: i64,
    pub mode: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: String,
    pub mark_before: Option<i64>,
    pub mark_after: Option<i64>,
    /// The marks as text (exact in every JSON reader).
    pub mark_before_text: Option<String>,
    pub mark_after_text: Option<String>,
    pub scrobbles_added: i64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub mode: &'static str,
    pub target: String,
    /// Redacted URL of the source of the last run.
    pub source: Option<String>,
    /// The id high-water mark (`sync` reads ids above it).
    pub high_water_mark: Option<i64>,
    /// The same, as text (exact in every JSON reader).
    pub high_water_mark_text: Option<String>,
    /// The played_at mark of `sync --cursor played_at`, in Unix microseconds.
    pub played_at_mark: Option<i64>,
    /// The same as RFC 3339 UTC text.
    pub played_at_mark_rfc3339: Option<String>,
    pub rows: TableRows,
    /// The most recent runs, newest first.
    pub last_runs: Vec<RunInfo>,
    /// Temporary files that killed loads of this target left beside it.
    pub leftover_temporary_files: Vec<String>,
}

pub fn run(path: &Path, last: usize) -> Result<Status> {
    let conn = target::open_read_only(path)?;
    let num =
        |k: &str| -> Result<Option<i64>> { Ok(state::get(&conn, k)?.and_then(|v| v.parse().ok())) };
    let [users, artists, albums, tracks, scrobbles] = writer::table_counts(&conn)?;
    let last_runs = state::last_runs(&conn, last)?
        .into_iter()
        .map(|r| RunInfo {
            run_id: r.run_id,
            mode: r.mode,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome,
            mark_before: r.hwm_before,
            mark_after: r.hwm_after,
            mark_before_text: super::id_text(r.hwm_before),
            mark_after_text: super::id_text(r.hwm_after),
            scrobbles_added: r.rows_scrobbles,
            seconds: r.seconds,
        })
        .collect();
    Ok(Status {
        mode: "status",
        target: path.display().to_string(),
        source: state::get(&conn, "source")?,
        high_water_mark: num("hwm")?,
        high_water_mark_text: super::id_text(num("hwm")?),
        played_at_mark: num("played_at_mark")?,
        played_at_mark_rfc3339: num("played_at_mark")?.and_then(super::rfc3339_us),
        rows: TableRows {
            users,
            artists,
            albums,
            tracks,
            scrobbles,
        },
        last_runs,
        leftover_temporary_files: crate::sink::temp::leftover_temp_files(path),
    })
}
