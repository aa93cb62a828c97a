//! Source-vs-target verification by UTC window.
//!
//! For each window both sides give the row count and an order-independent content hash of the
//! lossless tuples (id, username, floor epoch second, artist, album-or-NULL with the album's own
//! artist, track, loved as stored): PostgreSQL streams its rows as a load reads them
//! (`source`), the target's tables are joined in memory (`target`), and this process hashes both
//! the same way (`canonical`). With `--attributes` (and `--repair`) the same pass also digests
//! every entity's attributes (first non-NULL mbid and duration in source-id order).

mod canonical;
mod repair;
mod source;
mod target;

use super::attributes;
use super::windows::{By, DayKeys, OUTSIDE};
use crate::normalize::frames::InfinitePlayedAt;
use crate::pipeline;
use crate::pipeline::retry::RetryPolicy;
use crate::progress::Progress;
use crate::sink::target as sink_target;
use crate::source::checks::explain_infinite;
use crate::source::conn::ReadOnlyClient;
use crate::source::mapping::SourceSpec;
use crate::source::plan::{partition_slices, plan_full, SourceTable};
use crate::source::query::Slice;
use crate::source::SourceUrl;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Exit code of `verify` when windows differ (errors exit with 1, usage errors with 2).
pub const EXIT_DIFFERENT: u8 = 3;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub source: SourceUrl,
    pub table: SourceSpec,
    pub target: PathBuf,
    /// Unix seconds, inclusive; `None`: from the earliest row.
    pub from: Option<i64>,
    /// Unix seconds, exclusive; `None`: through the latest row.
    pub to: Option<i64>,
    pub by: By,
    pub repair: bool,
    /// Also compare dimension attributes (implied by `repair`; whole range only).
    pub attributes: bool,
    pub partitions: usize,
    /// With `repair`: accept a source other than the target's (`--allow-other-source`).
    pub allow_other_source: bool,
    pub retry: RetryPolicy,
}

/// Count and hash sum of one window on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest64 {
    pub rows: u64,
    pub hash: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct WindowDiff {
    pub window: String,
    pub start: i64,
    pub end: i64,
    pub start_rfc3339: Option<String>,
    pub end_rfc3339: Option<String>,
    pub source_rows: u64,
    pub target_rows: u64,
    pub source_hash: String,
    pub target_hash: String,
    /// The rows outside every window (a damaged target's `played_at`): a repair deletes the
    /// target's, and the windows their ids belong in are repaired as usual.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub outside: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub mode: &'static str,
    pub by: By,
    pub windows_checked: usize,
    pub source_rows: u64,
    pub target_rows: u64,
    pub differing: Vec<WindowDiff>,
    /// Dimensions whose attributes (mbid, duration) differ from what the source's rows give
    /// (checked when the whole time range is verified).
    pub attributes_differ: Vec<String>,
    /// The search index (`--fts`) does not hold exactly the dimension rows' names.
    pub search_index_differs: bool,
    /// The summary tables (plays per artist, album, track, hour) or their triggers do not
    /// match the target's scrobbles (checked when the whole time range is verified).
    pub summaries_differ: bool,
    /// How they differ, in words ("table album_plays is missing", "track_plays: 3 rows differ").
    pub summary_differences: Vec<String>,
    /// Whether the summary tables were compared (whole range, a target that has them).
    pub summaries_compared: bool,
    /// The target has summary tables, but only part of the time range was verified: they
    /// count the whole target and were not compared.
    pub summaries_skipped_for_range: bool,
    /// With `--repair`: the summary tables were counted anew from the scrobbles.
    pub summaries_recounted: bool,
    /// Triggers someone else put on the tables scrobsync writes ("trigger x on scrobbles"):
    /// not a difference by themselves, but they run inside every write and may change what
    /// scrobsync stores, so they are named.
    pub foreign_triggers: Vec<String>,
    /// Triggers of other software that are damage ("trigger x on track_plays is not
    /// scrobsync's …"): on scrobsync's own tables (summaries, state, search index; the next
    /// write drops them), or naming them in their body (every write is refused until they are
    /// dropped). Checked whatever the range.
    pub trigger_differences: Vec<String>,
    /// Whether attributes were compared at all (`--attributes`, `--repair`, whole range).
    pub attributes_compared: bool,
    /// With `--repair`: the windows that were backfilled, and the report after the repair.
    pub repaired: Vec<String>,
    /// With `--repair`: dimension rows whose attributes were set from the source.
    pub attributes_repaired: u64,
    pub after_repair: Option<Box<VerifyReport>>,
    /// Transient source faults survived by retrying (so far in this run).
    pub retries: u64,
    pub seconds: f64,
}

impl VerifyReport {
    /// True when every window matched (after the repair, if there was one).
    pub fn all_equal(&self) -> bool {
        match &self.after_repair {
            Some(r) => r.all_equal(),
            None => {
                self.differing.is_empty()
                    && self.attributes_differ.is_empty()
                    && !self.search_index_differs
                    && !self.summaries_differ
                    && self.trigger_differences.is_empty()
            }
        }
    }
}

/// The fields the contract declares NOT NULL besides the id.
const NOT_NULL: [&str; 5] = [
    "username",
    "played_at",
    "artist_name",
    "track_name",
    "loved",
];

/// Rows an id slice of the source covers at most (the unit a transient fault makes read again).
const VERIFY_SLICE_ROWS: usize = 2_000_000;

/// Count and order-independent hash of a dimension's (identity, values) entities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttrDigest {
    pub entities: u64,
    pub hash: u64,
}

impl AttrDigest {
    fn add(&mut self, hash: u64) {
        self.entities += 1;
        self.hash = self.hash.wrapping_add(hash);
    }
}

/// A source row that no window can hold (a NULL in a NOT NULL field, a `played_at` of
/// ±infinity), met while streaming: [`check_rows`] then names all such rows.
#[derive(Debug)]
pub(crate) struct UnfitRow(pub String);

impl std::fmt::Display for UnfitRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnfitRow {}

/// Plans the source's id slices: more slices than workers, so that a retry redoes little, and
/// none larger than VERIFY_SLICE_ROWS.
fn plan_source(
    opts: &VerifyOptions,
    table: &SourceTable,
    progress: &dyn Progress,
) -> Result<Vec<Slice>> {
    let workers = opts.partitions.max(1);
    pipeline::step(opts.retry, "planning the verification", progress, || {
        let mut client = opts.source.connect_reader()?;
        if opts.from.is_some() || opts.to.is_some() {
            crate::source::checks::warn_without_played_at_index(&mut client, table);
            // A range's stream does not see the rows outside it: check the whole table first.
            check_rows(&mut client, table)?;
        }
        let by_size = plan_full(&mut client, table, VERIFY_SLICE_ROWS)?.slices;
        Ok(if by_size.len() >= workers * 4 {
            by_size
        } else {
            partition_slices(&mut client, table, workers * 4)?
        })
    })
}

/// Rows without a finite played_at belong to no window: they would be left out of both sides'
/// counts and look equal, so they are an error here as in every other mode. So are NULLs in
/// the fields the contract declares NOT NULL. One scan of the whole source finds them all (a
/// whole-range verify meets them in its stream, and then runs this to name them).
fn check_rows(client: &mut ReadOnlyClient, table: &SourceTable) -> Result<()> {
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE NOT isfinite(played_at)), {} FROM {}",
                NOT_NULL
                    .iter()
                    .map(|f| format!(
                        "count(*) FILTER (WHERE {f} IS NULL), min(id::int8) FILTER (WHERE {f} IS NULL)"
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                table.sql_name()
            ),
            &[],
        )
        .context("verifying the source failed")?;
    for (i, field) in NOT_NULL.iter().enumerate() {
        let n: i64 = row.get(1 + 2 * i);
        if n > 0 {
            let id: Option<i64> = row.get(2 + 2 * i);
            anyhow::bail!(
                "{n} source row(s) have a NULL {field} (id {}{}); {field} must not be NULL: fix those rows, or map {field} to a non-NULL expression with --config",
                id.map_or("NULL".into(), |i| i.to_string()),
                if n > 1 { ", …" } else { "" }
            );
        }
    }
    let infinite: i64 = row.get(0);
    if infinite > 0 {
        return Err(explain_infinite(
            InfinitePlayedAt { ids: Vec::new() }.into(),
            client,
            table,
            i64::MAX,
        ));
    }
    Ok(())
}

/// Refuses a source with a repeated id, naming a few.
fn check_unique_ids(client: &mut ReadOnlyClient, table: &SourceTable) -> Result<()> {
    let rows = client
        .query(
            &format!(
                "SELECT id::int8 FROM {} GROUP BY id HAVING count(*) > 1 ORDER BY id LIMIT 5",
                table.sql_name()
            ),
            &[],
        )
        .context("verifying the source failed")?;
    if !rows.is_empty() {
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, i64>(0).to_string())
            .collect();
        anyhow::bail!(
            "the source has duplicate ids ({}{}); ids must be unique: fix those rows, or map id to \
             a unique column with --config",
            ids.join(", "),
            if rows.len() == 5 { ", …" } else { "" }
        );
    }
    Ok(())
}

/// The names of the dimensions whose digests differ.
fn attributes_differing(src: &[AttrDigest], dst: &[AttrDigest]) -> Vec<String> {
    attributes::DIMENSIONS
        .iter()
        .zip(src.iter().zip(dst))
        .filter(|(_, (a, b))| a != b)
        .map(|(d, _)| d.name().to_string())
        .collect()
}

fn compare(
    by: By,
    src: &BTreeMap<i64, Digest64>,
    dst: &BTreeMap<i64, Digest64>,
    from: Option<i64>,
    to: Option<i64>,
) -> (usize, Vec<WindowDiff>) {
    let keys: std::collections::BTreeSet<i64> = src.keys().chain(dst.keys()).copied().collect();
    let mut diffs = Vec::new();
    for &k in &keys {
        let (a, b) = (
            src.get(&k).copied().unwrap_or_default(),
            dst.get(&k).copied().unwrap_or_default(),
        );
        if a != b && k == OUTSIDE {
            diffs.push(WindowDiff {
                window: "outside 4714 BC to 200000 AD".into(),
                start: i64::MIN,
                end: i64::MAX,
                start_rfc3339: None,
                end_rfc3339: None,
                source_rows: a.rows,
                target_rows: b.rows,
                source_hash: format!("{:016x}", a.hash),
                target_hash: format!("{:016x}", b.hash),
                outside: true,
            });
        } else if a != b {
            let w = by.key_start(k);
            // clip the window to the verified range, so a repair touches nothing outside it
            let start = from.map_or(w, |f| w.max(f));
            let end = to.map_or(by.next(w), |t| by.next(w).min(t));
            diffs.push(WindowDiff {
                window: by.label(w),
                start,
                end,
                start_rfc3339: super::rfc3339_s(start),
                end_rfc3339: super::rfc3339_s(end),
                source_rows: a.rows,
                target_rows: b.rows,
                source_hash: format!("{:016x}", a.hash),
                target_hash: format!("{:016x}", b.hash),
                outside: false,
            });
        }
    }
    (keys.len(), diffs)
}

fn verify_once(
    opts: &VerifyOptions,
    table: &SourceTable,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let t = Instant::now();
    // Attributes belong to whole entities, not windows: compared when the whole range is.
    let attributes_compared =
        opts.from.is_none() && opts.to.is_none() && (opts.attributes || opts.repair);
    // Both sides at once: the target reads its dimensions while the source is planned, then
    // PostgreSQL streams the source while this process hashes the target.
    let (split_tx, split_rx) = std::sync::mpsc::channel::<Option<i64>>();
    let (dst, src) = pipeline::parallel::both(
        move || {
            let t = Instant::now();
            let r = target::digests(
                &opts.target,
                opts.by,
                opts.from,
                opts.to,
                attributes_compared,
                // None when the source failed: nothing more to do
                || split_rx.recv().ok(),
            );
            tracing::info!(seconds = t.elapsed().as_secs_f64(), "target hashed");
            r
        },
        || {
            let slices = plan_source(opts, table, progress);
            let slices = match slices {
                Ok(s) => s,
                Err(e) => {
                    drop(split_tx);
                    return Err(e);
                }
            };
            // the middle of the source's balanced slices, unless there is little to split
            let _ = split_tx.send((slices.len() >= 2).then(|| slices[slices.len() / 2].lo));
            drop(split_tx);
            let t = Instant::now();
            let r = source::digests(opts, table, &slices, attributes_compared, progress);
            tracing::info!(seconds = t.elapsed().as_secs_f64(), "source hashed");
            match r {
                Err(e) if e.downcast_ref::<UnfitRow>().is_some() => {
                    // name every such row, not only the first one met
                    let mut client = opts.source.connect_reader()?;
                    check_rows(&mut client, table)?;
                    Err(e)
                }
                r => r,
            }
        },
    );
    let src = src?;
    let dst = dst.map_err(|e| {
        if !unreadable_value(&e) {
            return e;
        }
        e.context(format!(
            "reading the target {} failed: a value has a type scrobsync never writes, so the \
             file was changed by other software (a fresh `scrobsync load` rebuilds it)",
            opts.target.display()
        ))
    })?;
    let (checked, differing) = compare(opts.by, &src.windows, &dst.windows, opts.from, opts.to);
    if differing.iter().any(|d| d.source_rows > d.target_rows) {
        // More source rows than target rows may be a repeated id, which no target can hold: an
        // error, as in every mode, rather than a difference that no repair could remove.
        pipeline::step(opts.retry, "checking the source's ids", progress, || {
            check_unique_ids(&mut opts.source.connect_reader()?, table)
        })?;
    }
    let attributes_differ = match (&src.entities, &dst.attributes) {
        (Some(s), Some(d)) => attributes_differing(&s.digests(), d),
        _ => Vec::new(),
    };
    let (src, dst) = (src.windows, dst.windows);
    let target = sink_target::open_read_only(&opts.target)?;
    let search_index_differs = crate::sink::search::matches(&target)? == Some(false);
    let foreign_triggers = crate::sink::triggers::foreign(&target)?;
    let trigger_differences = crate::sink::triggers::damage(&target)?;
    for d in &trigger_differences {
        tracing::warn!("{d}");
    }
    for t in &foreign_triggers {
        tracing::warn!("{t} was not made by scrobsync: it runs on every write to the target");
    }
    // The summaries count the whole target: compared when the whole range is.
    let whole_range = opts.from.is_none() && opts.to.is_none();
    let summaries_skipped_for_range = !whole_range && crate::sink::summary::expected(&target)?;
    let summaries = if whole_range {
        progress.stage("comparing the summary tables", None);
        crate::sink::summary::differences(&target)
            .context("comparing the summary tables with the scrobbles")?
    } else {
        None
    };
    for d in summaries.iter().flatten() {
        tracing::warn!("summary tables: {d}");
    }
    drop(target);
    Ok(VerifyReport {
        mode: "verify",
        by: opts.by,
        windows_checked: checked,
        source_rows: src.values().map(|d| d.rows).sum(),
        target_rows: dst.values().map(|d| d.rows).sum(),
        differing,
        attributes_differ,
        attributes_compared,
        search_index_differs,
        summaries_differ: summaries.as_ref().is_some_and(|d| !d.is_empty()),
        summaries_compared: summaries.is_some(),
        summaries_skipped_for_range,
        summaries_recounted: false,
        foreign_triggers,
        trigger_differences,
        summary_differences: summaries.unwrap_or_default(),
        repaired: Vec::new(),
        attributes_repaired: 0,
        after_repair: None,
        retries: pipeline::retry::count(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Whether `e` is a value of the target that scrobsync cannot read as the type it writes there.
fn unreadable_value(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<rusqlite::Error>(),
            Some(
                rusqlite::Error::InvalidColumnType(..)
                    | rusqlite::Error::FromSqlConversionFailure(..)
                    | rusqlite::Error::IntegralValueOutOfRange(..)
                    | rusqlite::Error::Utf8Error(..)
            )
        )
    })
}

/// Runs `verify`, and with `repair` backfills exactly the differing windows and verifies again.
pub fn run(opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        super::windows::check_range(f, t)?;
    }
    // A target that cannot be opened (missing, busy, not scrobsync's) is said first, as it is,
    // before the source is asked anything.
    drop(sink_target::open_read_only(&opts.target)?);
    progress.stage("planning the verification", None);
    let table = pipeline::step(opts.retry, "resolving the source", progress, || {
        opts.table
            .resolve(&mut opts.source.connect_reader()?, &opts.source)
    })?;
    let mut report = verify_once(opts, &table, progress)?;
    if opts.repair && !report.all_equal() {
        repair::repair(opts, &table, &mut report, progress)?;
        report.after_repair = Some(Box::new(verify_once(opts, &table, progress)?));
    }
    report.retries = pipeline::retry::count();
    Ok(report)
}
