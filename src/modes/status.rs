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
    /// Temporary files that killed loads of this target left beside it (not resumable).
    pub leftover_temporary_files: Vec<String>,
    /// Interrupted loads of this target that `load --resume` continues.
    pub resumable_loads: Vec<ResumableLoad>,
}

/// An interrupted load that `load --resume` continues.
#[derive(Debug, Clone, Serialize)]
pub struct ResumableLoad {
    pub file: String,
    /// How far it got, in words.
    pub progress: String,
    pub rows_written: u64,
    /// The command that continues it.
    pub command: String,
}

/// `s` quoted for a POSIX shell where it needs to be.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@=,+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The interrupted loads of the target at `path`, with the command that continues each.
pub fn resumable(path: &Path) -> Vec<ResumableLoad> {
    crate::sink::temp::resumable_loads(path)
        .into_iter()
        .map(|(file, p)| {
            let mut command = format!(
                "scrobsync load --resume --source {} --target {}",
                shell_word(&p.source),
                shell_word(&path.display().to_string())
            );
            command.push(' ');
            command.push_str(&p.options);
            let mapped = crate::source::identity::SourceIdentity::from_state(&p.source_identity)
                .is_some_and(|i| i.relation != "scrobbles");
            if mapped {
                command.push_str(" --config <the same mapping>");
            }
            ResumableLoad {
                file,
                progress: p.describe(),
                rows_written: p.facts,
                command,
            }
        })
        .collect()
}

/// The status of a target that does not exist yet but whose first load was interrupted.
fn only_resumable(path: &Path, resumable_loads: Vec<ResumableLoad>) -> Status {
    Status {
        mode: "status",
        target: path.display().to_string(),
        source: None,
        high_water_mark: None,
        high_water_mark_text: None,
        played_at_mark: None,
        played_at_mark_rfc3339: None,
        rows: TableRows::default(),
        last_runs: Vec::new(),
        leftover_temporary_files: Vec::new(),
        resumable_loads,
    }
}

pub fn run(path: &Path, last: usize) -> Result<Status> {
    let resumable_loads = resumable(path);
    if !path.exists() && !resumable_loads.is_empty() {
        return Ok(only_resumable(path, resumable_loads));
    }
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
        leftover_temporary_files: crate::sink::temp::leftover_temp_files(path)
            .into_iter()
            .filter(|f| {
                !resumable_loads
                    .iter()
                    .any(|r| f.starts_with(r.file.as_str()))
            })
            .collect(),
        resumable_loads,
    })
}
