//! `verify --repair`: the differences a verification found are written anew — rows outside
//! every window deleted, differing windows replaced from the source, attributes refreshed,
//! the search index and summary tables rebuilt — and the run is logged. The caller verifies
//! again.

use super::{VerifyOptions, VerifyReport};
use crate::modes::attributes;
use crate::modes::replace::{job_key, replace_windows, ReadSettings};
use crate::modes::windows::{FIRST_WINDOW_SECOND, LAST_WINDOW_SECOND};
use crate::pipeline;
use crate::progress::Progress;
use crate::sink::facts;
use crate::sink::target as sink_target;
use crate::source::plan::SourceTable;
use anyhow::Result;
use std::time::Instant;

/// Repairs what `report` found (see the module), recording the windows it rewrote and the
/// dimension rows whose attributes it set in `report`.
pub(super) fn repair(
    opts: &VerifyOptions,
    table: &SourceTable,
    report: &mut VerifyReport,
    progress: &dyn Progress,
) -> Result<()> {
    let started = Instant::now();
    let started_at = crate::sink::state::now_iso();
    let target = sink_target::open(&opts.target)?;
    let other_source = target.write(|conn| {
        crate::sink::state::check_source(
            conn,
            &opts.target,
            &opts.source,
            table,
            opts.allow_other_source,
        )
    })?;
    let facts_before = target.read(facts::count)?;
    // Repairs that the windows' backfill cannot make: rows outside every window, and a
    // track whose album_id is 0 (which the tracks' unique index reads as "no album", so a
    // backfill would take it for the album-less track and leave it as it is).
    let outside = report.differing.iter().any(|d| d.outside);
    target.write(|conn| {
        // A dropped summary table fails every statement whose triggers name it, and a
        // dropped trigger skips its counts: both are restored before anything is
        // rewritten; the counts themselves are redone at the end.
        if report.summaries_differ {
            crate::sink::summary::arm(conn)?;
        }
        if outside {
            let n = facts::delete_outside(conn, (FIRST_WINDOW_SECOND, LAST_WINDOW_SECOND))?;
            tracing::info!(rows = n, "deleted scrobbles outside every window");
        }
        facts::clear_album_zero(conn)?;
        Ok(())
    })?;
    let windows: Vec<(i64, i64)> = report
        .differing
        .iter()
        .filter(|d| !d.outside)
        .map(|d| (d.start, d.end))
        .collect();
    let mut new_rows = [0u64; 4];
    if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
        let job = format!("repair:{}", job_key(first.0, last.1, opts.by));
        let totals = replace_windows(
            &target,
            &opts.source,
            table,
            &windows,
            ReadSettings {
                partitions: opts.partitions,
                reader: Default::default(),
                retry: opts.retry,
            },
            &job,
            progress,
        )?;
        new_rows = totals.new_rows;
    }
    if !report.attributes_differ.is_empty() {
        report.attributes_repaired =
            pipeline::step(opts.retry, "repairing attributes", progress, || {
                attributes::refresh(&target, &opts.source, table)
            })?;
    }
    if report.search_index_differs {
        target.write(crate::sink::search::rebuild)?;
    }
    if report.summaries_differ {
        progress.stage("recounting the summary tables", None);
        target.write(crate::sink::summary::build)?;
        report.summaries_recounted = true;
    }
    let facts_after = target.read(facts::count)?;
    let source = other_source.unwrap_or_else(|| opts.source.redacted().to_string());
    let [users, artists, albums, tracks] = new_rows;
    target.write(|conn| {
        crate::sink::state::record_run(
            conn,
            &crate::sink::state::RunRecord {
                mode: "verify-repair",
                source: &source,
                started_at: started_at.clone(),
                outcome: "ok",
                hwm_before: None,
                hwm_after: None,
                scrobbles_net: facts_after - facts_before,
                rows: [users, artists, albums, tracks],
                seconds: started.elapsed().as_secs_f64(),
            },
        )
    })?;
    report.repaired = report.differing.iter().map(|d| d.window.clone()).collect();
    Ok(())
}
