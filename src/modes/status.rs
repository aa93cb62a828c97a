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

/// `.NAME.scrobsync-PID.tmp` files beside `path` whose process is gone.
fn leftover_temp_files(path: &Path) -> Vec<String> {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let prefix = format!(".{name}.scrobsync-");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let pid: u32 = file
                .strip_prefix(&prefix)?
                .split('.')
                .next()?
                .parse()
                .ok()?;
            (!Path::new(&format!("/proc/{pid}")).exists())
                .then(|| dir.join(&file).display().to_string())
        })
        .collect();
    out.sort();
    out
}

pub fn run(path: &Path, last: usize) -> Result<Status> {
    let conn = target::open_read_only(path)?;
    let num =
        |k: &str| -> Result<Option<i64>> { Ok(state::get(&conn, k)?.and_then(|v| v.parse().ok())) };
    let [users, artists, albums, tracks, scrobbles] = writer::table_counts(&conn)?;
    let mut stmt = conn.prepare(
        "SELECT run_id, mode, started_at, finished_at, outcome, hwm_before, hwm_after,
                rows_scrobbles, seconds
         FROM _scrobsync_runs ORDER BY run_id DESC LIMIT ?1",
    )?;
    let last_runs = stmt
        .query_map([last as i64], |r| {
            Ok(RunInfo {
                run_id: r.get(0)?,
                mode: r.get(1)?,
                started_at: r.get(2)?,
                finished_at: r.get(3)?,
                outcome: r.get(4)?,
                mark_before: r.get(5)?,
                mark_after: r.get(6)?,
                mark_before_text: super::id_text(r.get(5)?),
                mark_after_text: super::id_text(r.get(6)?),
                scrobbles_added: r.get(7)?,
                seconds: r.get(8)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
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
        leftover_temporary_files: leftover_temp_files(path),
    })
}
