//! Source-vs-target verification by UTC window, without moving rows across the network.
//!
//! For each window both sides compute the row count and an order-independent content hash of
//! the lossless tuples (id, username, floor epoch second, artist, album-or-NULL with the album's
//! own artist, track, loved as stored):
//! PostgreSQL in SQL (`md5` of a canonical text per row, summed), the target in Rust over its
//! joined tables. The canonical text prefixes every string with its byte length and writes a
//! NULL album as `N`, so `''` and NULL — and any shift of text between fields — hash apart.

mod canonical;

use super::attributes;
use super::replace::{job_key, replace_windows, ReadSettings};
use super::windows::By;
use crate::normalize::frames::InfinitePlayedAt;
use crate::pipeline::retry::RetryPolicy;
use crate::pipeline::{self, failpoint};
use crate::progress::{Progress, Total};
use crate::sink::target;
use crate::source::checks::explain_infinite;
use crate::source::conn::ReadOnlyClient;
use crate::source::mapping::SourceSpec;
use crate::source::plan::{partition_slices, plan_full, SourceTable};
use crate::source::query::{Filter, TimeRange};
use crate::source::SourceUrl;
use anyhow::{anyhow, Context, Result};
use canonical::pg_row_md5;
pub use canonical::{canonical, row_hash, Tuple};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
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
            }
        }
    }
}

/// Joins scoped worker threads in order, turning a panic into an error.
fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T>>>) -> Vec<Result<T>> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(anyhow!("a verify thread panicked")))
        })
        .collect()
}

/// The fields the contract declares NOT NULL besides the id.
const NOT_NULL: [&str; 5] = [
    "username",
    "played_at",
    "artist_name",
    "track_name",
    "loved",
];

/// Rows a source hash query covers at most (about 5 s of PostgreSQL's time on 2 cores).
const VERIFY_SLICE_ROWS: usize = 2_000_000;

/// Per-window digests of the source, computed by PostgreSQL: `partitions` workers, each with
/// its own connection, hash id slices in turn (a transient fault retries that slice).
fn source_digests(
    opts: &VerifyOptions,
    table: &SourceTable,
    progress: &dyn Progress,
) -> Result<BTreeMap<i64, Digest64>> {
    let url = &opts.source;
    let workers = opts.partitions.max(1);
    let (slices, row_md5) = pipeline::step(
        opts.retry,
        "planning the verification",
        progress,
        || {
            let mut client = url.connect_reader()?;
            if opts.from.is_some() || opts.to.is_some() {
                crate::source::checks::warn_without_played_at_index(&mut client, table);
            }
            // More slices than workers, so that a retry redoes little, and none much larger than
            // VERIFY_SLICE_ROWS: PostgreSQL sends a slice's digests only when it has hashed all
            // of it, and a statement silent for longer than --read-timeout counts as stalled.
            let by_size = plan_full(&mut client, table, VERIFY_SLICE_ROWS)?.slices;
            let slices = if by_size.len() >= workers * 4 {
                by_size
            } else {
                partition_slices(&mut client, table, workers * 4)?
            };
            // Rows without a finite played_at belong to no window: they would be left out of both
            // sides' counts and look equal, so they are an error here as in every other mode.
            // So are NULLs in the fields the contract declares NOT NULL (one scan for both).
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
                    &mut client,
                    table,
                    i64::MAX,
                ));
            }
            let encoding: String = client
                .query_one("SELECT current_setting('server_encoding')", &[])
                .context("verifying the source failed")?
                .get(0);
            Ok((slices, pg_row_md5(encoding.eq_ignore_ascii_case("UTF8"))))
        },
    )?;
    let filter = Filter::played_at(TimeRange::seconds(opts.from, opts.to));
    progress.stage("hashing", Some(Total::exact(slices.len() as u64, "slices")));
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Vec<Result<Vec<(i64, i64, String)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers.min(slices.len()))
            .map(|_| {
                s.spawn(|| -> Result<Vec<(i64, i64, String)>> {
                    let mut client: Option<ReadOnlyClient> = None;
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(slice) = slices.get(i) else {
                            return Ok(out);
                        };
                        let sql = format!(
                            "SELECT {w} AS w, count(*), \
                                    sum(('x' || substr({row_md5}, 1, 16))::bit(64)::int8::numeric)::text \
                             FROM {t} WHERE {cond} AND isfinite(played_at) GROUP BY 1",
                            w = opts.by.pg_key_expr(),
                            t = table.sql_name(),
                            cond = filter.where_sql(*slice),
                        );
                        let what = format!("hashing ids {} to {} of the source", slice.lo, slice.hi);
                        let rows = pipeline::step(opts.retry, &what, progress, || {
                            let r = (|| {
                                if client.is_none() {
                                    client = Some(url.connect_reader()?);
                                }
                                let c = client.as_mut().expect("connected above");
                                c.query(&sql, &[]).context("verifying the source failed")
                            })();
                            if r.is_err() {
                                client = None;
                            }
                            r
                        })?;
                        out.extend(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))));
                        progress.advance(1);
                        failpoint::pause(done.fetch_add(1, Ordering::SeqCst) + 1);
                    }
                })
            })
            .collect();
        join_all(handles)
    });
    let mut out: BTreeMap<i64, Digest64> = BTreeMap::new();
    for part in results {
        for (w, n, sum) in part? {
            // The exact sum of signed 64-bit hashes, folded to 64 bits like the target's
            // wrapping sum.
            let sum: i128 = sum
                .parse()
                .map_err(|_| anyhow!("unexpected hash sum {sum}"))?;
            let d = out.entry(w).or_default();
            d.rows += n as u64;
            d.hash = d.hash.wrapping_add(sum as u64);
        }
    }
    Ok(out)
}

/// A dimension table in memory, indexed by its (dense) surrogate key.
struct Dim<T>(Vec<Option<T>>);

impl<T> Dim<T> {
    fn load(
        conn: &rusqlite::Connection,
        sql: &str,
        row: impl Fn(&rusqlite::Row) -> rusqlite::Result<(i64, T)>,
    ) -> Result<Self> {
        let mut v: Vec<Option<T>> = Vec::new();
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let (id, value) = row(r)?;
            let i =
                usize::try_from(id).map_err(|_| anyhow!("unexpected key {id} in the target"))?;
            if i >= v.len() {
                v.resize_with(i + 1, || None);
            }
            v[i] = Some(value);
        }
        Ok(Dim(v))
    }

    /// The row of key `id`, if the target has it.
    fn find(&self, id: i64) -> Option<&T> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .and_then(|o| o.as_ref())
    }
}

/// Per-window digests of the target: the dimensions are read into memory once, then the facts
/// are scanned in one pass (a join per row would cost four b-tree lookups each).
fn target_digests(
    path: &std::path::Path,
    by: By,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<BTreeMap<i64, Digest64>> {
    let conn = target::open_read_only(path)?;
    let users = Dim::load(&conn, "SELECT user_id, name FROM users", |r| {
        Ok((r.get(0)?, r.get::<_, String>(1)?))
    })?;
    let artists = Dim::load(&conn, "SELECT artist_id, name FROM artists", |r| {
        Ok((r.get(0)?, r.get::<_, String>(1)?))
    })?;
    let albums = Dim::load(
        &conn,
        "SELECT album_id, artist_id, title FROM albums",
        |r| Ok((r.get(0)?, (r.get::<_, i64>(1)?, r.get::<_, String>(2)?))),
    )?;
    let tracks = Dim::load(
        &conn,
        "SELECT track_id, artist_id, album_id, title FROM tracks",
        |r| {
            Ok((
                r.get(0)?,
                (
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                ),
            ))
        },
    )?;
    let dims = TargetDims {
        users,
        artists,
        albums,
        tracks,
    };
    // Two halves by scrobble_id, each on its own connection and thread: hashing is CPU work,
    // and PostgreSQL's side usually finishes first, leaving a core free.
    let total: i64 = conn.query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?;
    let mid: Option<i64> = conn
        .query_row(
            "SELECT scrobble_id FROM scrobbles ORDER BY scrobble_id LIMIT 1 OFFSET ?1",
            [total / 2],
            |r| r.get(0),
        )
        .ok();
    let ranges = match mid {
        Some(m) if total > 100_000 => vec![(i64::MIN, m - 1), (m, i64::MAX)],
        _ => vec![(i64::MIN, i64::MAX)],
    };
    let parts: Vec<Result<BTreeMap<i64, Digest64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(lo, hi)| {
                let dims = &dims;
                s.spawn(move || -> Result<BTreeMap<i64, Digest64>> {
                    let conn = target::open_read_only(path)?;
                    digest_range(&conn, dims, by, (lo, hi), (from, to))
                })
            })
            .collect();
        join_all(handles)
    });
    let mut out: BTreeMap<i64, Digest64> = BTreeMap::new();
    for part in parts {
        for (k, d) in part? {
            let e = out.entry(k).or_default();
            e.rows += d.rows;
            e.hash = e.hash.wrapping_add(d.hash);
        }
    }
    Ok(out)
}

/// The target's dimension tables in memory.
struct TargetDims {
    users: Dim<String>,
    artists: Dim<String>,
    /// artist_id, title
    albums: Dim<(i64, String)>,
    tracks: Dim<(i64, Option<i64>, String)>,
}

/// Digests of the facts with scrobble_id in `ids` (inclusive) and played_at in `range`.
fn digest_range(
    conn: &rusqlite::Connection,
    dims: &TargetDims,
    by: By,
    ids: (i64, i64),
    range: (Option<i64>, Option<i64>),
) -> Result<BTreeMap<i64, Digest64>> {
    let (from, to) = range;
    let sql = if from.is_some() || to.is_some() {
        "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
         WHERE scrobble_id BETWEEN ?3 AND ?4 AND played_at >= ?1 AND played_at < ?2"
    } else {
        // the whole table: walking the rows beats walking the played_at index
        "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
         WHERE scrobble_id BETWEEN ?3 AND ?4 AND ?1 <= ?2"
    };
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([
        from.unwrap_or(i64::MIN),
        to.unwrap_or(i64::MAX),
        ids.0,
        ids.1,
    ])?;
    let mut out: BTreeMap<i64, Digest64> = BTreeMap::new();
    let mut buf = String::with_capacity(256);
    let mut last_window: Option<(i64, i64, i64)> = None; // (start, end, key) of the last window
    while let Some(r) = rows.next()? {
        let (id, user, track, epoch, loved): (i64, i64, i64, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        // A scrobble whose user, track, artist or album row is gone (a damaged target) hashes
        // apart from every source row: its window differs, and a repair writes it anew.
        let tuple = (|| {
            let (artist, album, title) = dims.tracks.find(track)?;
            let album = match album {
                Some(a) => {
                    let (album_artist, title) = dims.albums.find(*a)?;
                    Some((dims.artists.find(*album_artist)?.as_str(), title.as_str()))
                }
                None => None,
            };
            Some(Tuple {
                id,
                user: dims.users.find(user)?,
                epoch,
                artist: dims.artists.find(*artist)?,
                album,
                track: title,
                loved,
            })
        })();
        match tuple {
            Some(t) => canonical(&mut buf, &t),
            None => {
                buf.clear();
                let _ = write!(buf, "{id}|a dimension row is missing");
            }
        }
        let w = match last_window {
            Some((s, e, k)) if epoch >= s && epoch < e => k,
            _ => {
                let s = by.floor(epoch);
                let k = by.key(epoch);
                last_window = Some((s, by.next(s), k));
                k
            }
        };
        let d = out.entry(w).or_default();
        d.rows += 1;
        d.hash = d.hash.wrapping_add(row_hash(&buf));
    }
    Ok(out)
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
        if a != b {
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
    // Both sides at once: PostgreSQL works in its backends while this process hashes the target.
    let (src, dst) = std::thread::scope(|s| {
        let src = s.spawn(|| {
            let t = Instant::now();
            let r = source_digests(opts, table, progress);
            tracing::info!(seconds = t.elapsed().as_secs_f64(), "source hashed");
            r
        });
        let t = Instant::now();
        let dst = target_digests(&opts.target, opts.by, opts.from, opts.to);
        tracing::info!(seconds = t.elapsed().as_secs_f64(), "target hashed");
        (
            src.join()
                .unwrap_or_else(|_| Err(anyhow!("the verify thread panicked"))),
            dst,
        )
    });
    let (src, dst) = (src?, dst?);
    let (checked, differing) = compare(opts.by, &src, &dst, opts.from, opts.to);
    // Attributes belong to whole entities, not windows: checked when the whole range is.
    // (A GROUP BY of the whole source per dimension: several times the cost of the window
    // hashes at 5M rows, so only when asked for or repairing.)
    let attributes_compared =
        opts.from.is_none() && opts.to.is_none() && (opts.attributes || opts.repair);
    let attributes_differ = if attributes_compared {
        let t = Instant::now();
        progress.stage("comparing attributes", None);
        let src = pipeline::step(
            opts.retry,
            "reading the source's attributes",
            progress,
            || attributes::source_digests(&opts.source, table),
        )?;
        let dst = attributes::target_digests(&target::open_read_only(&opts.target)?)?;
        tracing::info!(seconds = t.elapsed().as_secs_f64(), "attributes compared");
        attributes::differing(&src, &dst)
    } else {
        Vec::new()
    };
    Ok(VerifyReport {
        mode: "verify",
        by: opts.by,
        windows_checked: checked,
        source_rows: src.values().map(|d| d.rows).sum(),
        target_rows: dst.values().map(|d| d.rows).sum(),
        differing,
        attributes_differ,
        attributes_compared,
        search_index_differs: crate::sink::search::matches(&target::open_read_only(&opts.target)?)?
            == Some(false),
        repaired: Vec::new(),
        attributes_repaired: 0,
        after_repair: None,
        retries: pipeline::retry::count(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Runs `verify`, and with `repair` backfills exactly the differing windows and verifies again.
pub fn run(opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    if let (Some(f), Some(t)) = (opts.from, opts.to) {
        super::windows::check_range(f, t)?;
    }
    progress.stage("planning the verification", None);
    let table = pipeline::step(opts.retry, "resolving the source", progress, || {
        opts.table
            .resolve(&mut opts.source.connect_reader()?, &opts.source)
    })?;
    let mut report = verify_once(opts, &table, progress)?;
    if opts.repair && !report.all_equal() {
        let started = Instant::now();
        let started_at = crate::sink::state::now_iso();
        let target = target::open(&opts.target)?;
        let other_source = target.write(|conn| {
            super::check_source(
                conn,
                &opts.target,
                &opts.source,
                &table,
                opts.allow_other_source,
            )
        })?;
        let count = |t: &target::Target| -> Result<i64> {
            Ok(t.conn
                .query_row("SELECT count(*) FROM scrobbles", [], |r| r.get(0))?)
        };
        let facts_before = count(&target)?;
        let windows: Vec<(i64, i64)> = report.differing.iter().map(|d| (d.start, d.end)).collect();
        let mut new_rows = [0u64; 4];
        if let (Some(first), Some(last)) = (windows.first(), windows.last()) {
            let job = format!("repair:{}", job_key(first.0, last.1, opts.by));
            let totals = replace_windows(
                &target,
                &opts.source,
                &table,
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
                    attributes::refresh(&target, &opts.source, &table)
                })?;
        }
        if report.search_index_differs {
            target.write(crate::sink::search::rebuild)?;
        }
        let facts_after = count(&target)?;
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
        drop(target);
        report.repaired = report.differing.iter().map(|d| d.window.clone()).collect();
        report.after_repair = Some(Box::new(verify_once(opts, &table, progress)?));
    }
    report.retries = pipeline::retry::count();
    Ok(report)
}
