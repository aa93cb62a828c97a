//! Bulk writes into SQLite: PRAGMA tuning, reused multi-row prepared INSERTs, index build after
//! the data, and the checks that must pass before a file may replace the user's target.

use super::check::{self, CheckLevel, KeyBounds};
use super::resume::{LoadProgress, Phase};
use super::schema::{IndexSet, INDEXES, QUERY_INDEXES, USER_TABLES};
use super::state;
use crate::normalize::frames::Normalized;
use crate::normalize::registry::Delta;
use crate::normalize::DimFrames;
use crate::pipeline::failpoint::{self, Damage};
use crate::source::identity::SourceIdentity;
use crate::source::plan::Recheck;
use anyhow::{Context, Result};
use polars::prelude::*;
use rusqlite::{Connection, Statement};
use std::path::{Path, PathBuf};

/// Rows per multi-row INSERT statement. 100 rows amortise the statement overhead well; beyond
/// that the gain is within noise (see `benches/pipeline.rs`).
pub const ROWS_PER_STATEMENT: usize = 100;

/// PRAGMAs for building a fresh file that nobody else sees until it is renamed into place. The
/// rollback journal and `synchronous = NORMAL` make each commit a durable point that a killed
/// load resumes from (see [`super::resume`]): a load appends, so the journal holds only the few
/// pages each commit changes that existed before it, and the commits are seconds apart. The index
/// build sorts on one thread: measured on 5M rows, SQLite's helper threads (`threads = 2`)
/// spent 16.8 CPU-seconds on the build against 12.6 without them, for no shorter build.
const BULK_PRAGMAS: &str = "
PRAGMA page_size = 8192;
PRAGMA journal_mode = PERSIST;
PRAGMA synchronous = NORMAL;
PRAGMA locking_mode = EXCLUSIVE;
PRAGMA temp_store = FILE;
PRAGMA cache_size = -16384;
PRAGMA threads = 0;
PRAGMA foreign_keys = OFF;
";

/// Page cache (KiB) while the indexes are built. `CREATE INDEX` sorts runs of about this size
/// in memory and merges them; small runs stay in the CPU caches. Measured on 5M rows here:
/// 1 MiB 4.2–4.4 s for the essential indexes, 32 MiB 7.3–7.9 s, 128 MiB slower still.
const INDEX_CACHE_KIB: u32 = 1024;

/// SQLite page cache (KiB) while the summary tables are counted.
const SUMMARY_CACHE_KIB: u32 = 65536;

/// Page cache (KiB) of the connection running `foreign_key_check` (`--check full`).
const CHECK_CACHE_KIB: u32 = 98304;

/// What a full load records in its new file and builds into it at the end.
pub struct Finish<'a> {
    pub run: &'a state::RunRecord<'a>,
    pub source: &'a SourceIdentity,
    pub recheck: Option<Recheck>,
    pub indexes: IndexSet,
    /// Build the full-text name index.
    pub fts: bool,
    /// How much to check before the file may be installed.
    pub check: CheckLevel,
    /// When the run began (the run log records its whole time).
    pub started: std::time::Instant,
    /// The load's progress record, updated at each durable point of the finish; None for a
    /// file that is not resumable.
    pub progress: Option<LoadProgress>,
}

/// A writer on a fresh SQLite file.
pub struct Writer {
    conn: Connection,
    path: PathBuf,
    /// The keys written so far: each window is checked against them before it is written.
    bounds: KeyBounds,
    windows: usize,
    /// The summaries, counted as the facts are written.
    counts: super::summary::Counts,
}

/// Whether an index named `name` exists (built by the run a resumed load continues).
fn index_exists(conn: &Connection, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1",
        [name],
        |r| r.get(0),
    )?)
}

/// The name an index statement creates.
fn index_name(sql: &str) -> &str {
    sql.split_whitespace()
        .skip_while(|w| *w != "INDEX")
        .nth(1)
        .unwrap_or("")
}

/// `table` may carry a conflict clause, e.g. `OR REPLACE INTO scrobbles`.
fn insert_sql(table: &str, columns: &[&str], rows: usize) -> String {
    let one = format!("({})", vec!["?"; columns.len()].join(","));
    format!(
        "INSERT {}{table}({}) VALUES {}",
        if table.starts_with("OR ") {
            ""
        } else {
            "INTO "
        },
        columns.join(","),
        vec![one.as_str(); rows].join(",")
    )
}

/// Inserts `nrows` rows with one reused `ROWS_PER_STATEMENT`-row statement plus a one-row
/// statement for the remainder. `bind(stmt, first_param, row)` binds one row's values.
pub(super) fn bulk_insert<F>(
    conn: &Connection,
    table: &str,
    columns: &[&str],
    nrows: usize,
    mut bind: F,
) -> Result<()>
where
    F: FnMut(&mut Statement, usize, usize) -> rusqlite::Result<()>,
{
    let width = columns.len();
    let full = nrows / ROWS_PER_STATEMENT;
    if full > 0 {
        let mut multi = conn.prepare_cached(&insert_sql(table, columns, ROWS_PER_STATEMENT))?;
        for chunk in 0..full {
            let base = chunk * ROWS_PER_STATEMENT;
            for r in 0..ROWS_PER_STATEMENT {
                bind(&mut multi, r * width + 1, base + r)?;
            }
            multi
                .raw_execute()
                .with_context(|| format!("inserting into {table}"))?;
        }
    }
    let rest = full * ROWS_PER_STATEMENT;
    if rest < nrows {
        let mut single = conn.prepare_cached(&insert_sql(table, columns, 1))?;
        for row in rest..nrows {
            bind(&mut single, 1, row)?;
            single
                .raw_execute()
                .with_context(|| format!("inserting into {table}"))?;
        }
    }
    Ok(())
}

fn i64_col<'a>(df: &'a DataFrame, name: &str) -> Result<&'a Int64Chunked> {
    Ok(df.column(name)?.i64()?)
}

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<&'a StringChunked> {
    Ok(df.column(name)?.str()?)
}

impl Writer {
    /// Creates the schema in a new file at `path` (which must not exist) and opens the bulk
    /// transaction.
    pub fn create(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot create SQLite file {}", path.display()))?;
        conn.execute_batch(BULK_PRAGMAS)?;
        super::schema::create_tables(&conn)?;
        super::schema::ensure_views(&conn)?;
        crate::cancel::interrupt_on_signal(&conn);
        state::create(&conn)?;
        conn.execute_batch("BEGIN")?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            bounds: KeyBounds::default(),
            windows: 0,
            counts: Default::default(),
        })
    }

    /// Opens the temporary file of a killed load to continue it: the keys written so far are
    /// those its progress record counts (checked against the file), and the summaries of the
    /// rows written before are counted again from the file.
    pub fn resume(path: &Path, progress: &LoadProgress) -> Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the temporary file {}", path.display()))?;
        conn.execute_batch(BULK_PRAGMAS)?;
        crate::cancel::interrupt_on_signal(&conn);
        let [users, artists, albums, tracks] = progress.dims.map(|n| n as i64);
        let bounds = KeyBounds {
            users,
            artists,
            albums,
            tracks,
        };
        check::check_counts(&conn, &bounds, progress.facts).map_err(|e| {
            anyhow::anyhow!(
                "the temporary file {} does not hold what its progress record says ({e:#}); it cannot be resumed: run a plain load",
                path.display()
            )
        })?;
        // The summaries of the rows written before, counted again from the file: a scan of
        // the scrobbles instead of the index-driven count after the indexes.
        let counts = if progress.summaries_done {
            super::summary::Counts::off()
        } else {
            super::summary::Counts::of_file(&conn)?
        };
        conn.execute_batch("BEGIN")?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
            bounds,
            windows: progress.windows as usize,
            counts,
        })
    }

    /// The connection (a resumed load learns its registry from it).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// A durable point: records `progress` and commits everything written so far with it.
    pub fn durable(&mut self, progress: &LoadProgress) -> Result<()> {
        progress.save(&self.conn)?;
        self.conn.execute_batch("COMMIT; BEGIN")?;
        Ok(())
    }

    /// Checks one normalised window against the keys written before it (see
    /// [`KeyBounds::admit`]) and writes it. Returns the number of facts written.
    pub fn write_window(&mut self, n: &Normalized) -> Result<usize> {
        self.windows += 1;
        let Some(damage) = failpoint::damage(self.windows) else {
            self.bounds.admit(n)?;
            let written = write_window(&self.conn, n, false)?;
            check::check_written_facts(&self.conn, &n.facts)?;
            self.counts.add(n);
            failpoint::in_transaction(self.windows, &self.conn);
            return Ok(written);
        };
        let (admitted, written) = damaged(n, damage, self.bounds.tracks)?;
        self.bounds.admit(&admitted)?;
        write_window(&self.conn, &written, false)?;
        check::check_written_facts(&self.conn, &admitted.facts)?;
        self.counts.add(&written);
        Ok(n.facts.height())
    }

    /// Commits the data, checks it (see [`super::check`]), builds the secondary indexes, counts
    /// the summary tables and arms their triggers (see [`super::summary`]), and analyses.
    /// Returns the wall and CPU seconds spent checking and indexing, and the run's total.
    ///
    /// The checks run before the secondary indexes exist: `integrity_check` (`--check full`)
    /// then costs a fraction of what it costs after (it cross-checks every index entry against
    /// its row, which for indexes that `CREATE INDEX` has just built from those very rows
    /// proves little).
    pub fn finish(
        mut self,
        expected_facts: u64,
        f: Finish<'_>,
        progress: &dyn crate::progress::Progress,
    ) -> Result<Finished> {
        let Finish {
            run,
            source,
            recheck,
            indexes,
            fts,
            check,
            started,
            progress: mut record,
        } = f;
        let t = std::time::Instant::now();
        let cpu = crate::cpu::Clock::process();
        // A resumed load that had finished streaming committed all of this before.
        if record.as_ref().is_none_or(|r| r.phase == Phase::Streaming) {
            if let Some(h) = run.hwm_after {
                state::set(&self.conn, "hwm", &h.to_string())?;
            }
            state::set_recheck(&self.conn, recheck)?;
            super::open_ids::record_after_load(&self.conn, state::unix_now())?;
            state::set(&self.conn, "source", run.source)?;
            state::set(&self.conn, state::SOURCE_IDENTITY, &source.to_state())?;
            state::set(
                &self.conn,
                state::SCHEMA_VERSION_KEY,
                &super::schema::SCHEMA_VERSION.to_string(),
            )?;
            if let Some(r) = &mut record {
                r.phase = Phase::Finishing;
                r.hwm = run.hwm_after;
                r.save(&self.conn)?;
            }
        }
        self.conn.execute_batch("COMMIT")?;
        failpoint::at("finishing");
        progress.stage("checking the new file (keys, row counts)", None);
        check::check_counts(&self.conn, &self.bounds, expected_facts)?;
        if check == CheckLevel::Full {
            // The normaliser's key maps are gone by now: foreign_key_check, which looks up
            // every fact's track at random, may use more cache without raising the peak.
            self.conn
                .execute_batch(&format!("PRAGMA cache_size = -{CHECK_CACHE_KIB};"))?;
            progress.stage("checking the new file (foreign keys, integrity)", None);
            check::check_full(&self.conn, &self.path)?;
        }
        failpoint::at("checks");
        let check_secs = t.elapsed().as_secs_f64();
        let check_cpu = cpu.seconds();
        tracing::debug!(seconds = check_secs, ?check, "checks");

        let t = std::time::Instant::now();
        let cpu = crate::cpu::Clock::process();
        // Summaries counted while the facts were written need no index: written now, they are
        // one durable point fewer for a resumed load to redo.
        let mut summaries_done = record.as_ref().is_some_and(|r| r.summaries_done);
        if self.counts.usable() && !summaries_done {
            self.summaries(expected_facts, &mut record, progress)?;
            summaries_done = true;
        }
        // A small cache on purpose: see INDEX_CACHE_KIB.
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{INDEX_CACHE_KIB};"))?;
        let mut statements: Vec<&str> = INDEXES.split(';').collect();
        if indexes == IndexSet::Full {
            statements.extend(QUERY_INDEXES.split(';'));
        }
        statements.retain(|s| !s.trim().is_empty());
        for (i, sql) in statements.iter().enumerate() {
            crate::cancel::check()?;
            // Each index is its own transaction: a durable point a resumed load skips.
            if index_exists(&self.conn, index_name(sql))? {
                continue;
            }
            progress.stage(
                &format!("building indexes {} of {}", i + 1, statements.len()),
                None,
            );
            let ti = std::time::Instant::now();
            self.conn.execute_batch("BEGIN")?;
            self.conn.execute_batch(sql).context("building indexes")?;
            failpoint::in_index(i + 1, &self.conn);
            self.conn.execute_batch("COMMIT")?;
            tracing::debug!(
                seconds = ti.elapsed().as_secs_f64(),
                index = sql.trim(),
                "index built"
            );
        }
        crate::cancel::check()?;
        if !summaries_done {
            self.summaries(expected_facts, &mut record, progress)?;
        }
        if fts && !record.as_ref().is_some_and(|r| r.fts_done) {
            progress.stage("building the search index", None);
            self.conn.execute_batch("BEGIN")?;
            super::search::create(&self.conn).context("building the search index")?;
            if let Some(r) = &mut record {
                r.fts_done = true;
                r.save(&self.conn)?;
            }
            self.conn.execute_batch("COMMIT")?;
        }
        progress.stage("analysing", None);
        tracing::debug!(seconds = t.elapsed().as_secs_f64(), "indexes built");
        super::schema::analyse(&self.conn).context("analysing")?;
        let index_secs = t.elapsed().as_secs_f64();
        let index_cpu = cpu.seconds();
        // The run log gets the run's whole time, the one the summary reports.
        let run = state::RunRecord {
            seconds: started.elapsed().as_secs_f64(),
            ..run.clone()
        };
        self.conn.execute_batch("BEGIN")?;
        state::record_run(&self.conn, &run)?;
        LoadProgress::clear(&self.conn)?;
        self.conn.execute_batch("COMMIT")?;
        self.conn
            .close()
            .map_err(|(_, e)| e)
            .with_context(|| format!("closing {}", self.path.display()))?;
        Ok(Finished {
            index: index_secs,
            check: check_secs,
            index_cpu,
            check_cpu,
            total: run.seconds,
        })
    }
}

impl Writer {
    /// Arms and fills the summary tables, from the counts made while the facts were written
    /// or else from the scrobbles, in one transaction that records them done.
    fn summaries(
        &mut self,
        expected_facts: u64,
        record: &mut Option<LoadProgress>,
        progress: &dyn crate::progress::Progress,
    ) -> Result<()> {
        progress.stage("counting the summary tables", None);
        let ti = std::time::Instant::now();
        // Counting joins tracks with track_plays: a larger cache than the index builds' pays.
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{SUMMARY_CACHE_KIB}; BEGIN"))?;
        super::summary::arm(&self.conn).context("counting the summary tables")?;
        // Counted as the facts were written, or else from the scrobbles.
        let counts = std::mem::replace(&mut self.counts, super::summary::Counts::off());
        if !counts
            .write(&self.conn, expected_facts)
            .context("writing the summary tables")?
        {
            super::summary::rebuild(&self.conn).context("counting the summary tables")?;
        }
        if let Some(r) = record {
            r.summaries_done = true;
            r.save(&self.conn)?;
        }
        failpoint::in_transaction_at("summaries", &self.conn);
        self.conn.execute_batch("COMMIT")?;
        self.conn
            .execute_batch(&format!("PRAGMA cache_size = -{INDEX_CACHE_KIB};"))?;
        tracing::debug!(
            seconds = ti.elapsed().as_secs_f64(),
            "summary tables counted"
        );
        Ok(())
    }
}

/// What [`Writer::finish`] took: wall and CPU seconds of the index build (with the summaries,
/// the search index and the analysis) and of the checks, and the whole run's wall seconds.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    pub index: f64,
    pub check: f64,
    pub index_cpu: f64,
    pub check_cpu: f64,
    pub total: f64,
}

/// Writes a fact frame (scrobble_id, user_id, track_id, played_at, loved). With `upsert`, a
/// scrobble already present is replaced (overlap windows of time-cursor syncs).
pub fn insert_facts(conn: &Connection, facts: &DataFrame, upsert: bool) -> Result<usize> {
    let n = facts.height();
    if n == 0 {
        return Ok(0);
    }
    let ids = i64_col(facts, "scrobble_id")?.cont_slice()?;
    let users = i64_col(facts, "user_id")?.cont_slice()?;
    let tracks = i64_col(facts, "track_id")?.cont_slice()?;
    let played = i64_col(facts, "played_at")?.cont_slice()?;
    let loved = i64_col(facts, "loved")?.cont_slice()?;
    let table = if upsert {
        "OR REPLACE INTO scrobbles"
    } else {
        "scrobbles"
    };
    bulk_insert(
        conn,
        table,
        &["scrobble_id", "user_id", "track_id", "played_at", "loved"],
        n,
        |s, p, i| {
            s.raw_bind_parameter(p, ids[i])?;
            s.raw_bind_parameter(p + 1, users[i])?;
            s.raw_bind_parameter(p + 2, tracks[i])?;
            s.raw_bind_parameter(p + 3, played[i])?;
            s.raw_bind_parameter(p + 4, loved[i])
        },
    )?;
    Ok(n)
}

/// Applies filled-in attributes of dimension rows written earlier. `coalesce` keeps a value
/// that is already there, so applying a fill twice or late never overwrites the first one.
pub fn write_fills(conn: &Connection, fills: &Delta) -> Result<()> {
    for (table, key, list) in [
        ("artists", "artist_id", &fills.artist_mbids),
        ("albums", "album_id", &fills.album_mbids),
    ] {
        if list.is_empty() {
            continue;
        }
        let mut stmt = conn.prepare_cached(&format!(
            "UPDATE {table} SET mbid = coalesce(mbid, ?2) WHERE {key} = ?1"
        ))?;
        for (id, mbid) in list {
            filled(
                stmt.execute(rusqlite::params![id, &**mbid])?,
                table,
                key,
                *id,
            )?;
        }
    }
    if !fills.track_fills.is_empty() {
        let mut stmt = conn.prepare_cached(
            "UPDATE tracks SET mbid = coalesce(mbid, ?2), duration_ms = coalesce(duration_ms, ?3)
             WHERE track_id = ?1",
        )?;
        for (id, mbid, duration) in &fills.track_fills {
            filled(
                stmt.execute(rusqlite::params![id, mbid.as_deref(), duration])?,
                "tracks",
                "track_id",
                *id,
            )?;
        }
    }
    Ok(())
}

/// A fill updates a row the target holds: one row changed, or something inside the write
/// (another program's trigger) ignored the update or removed the row.
fn filled(changed: usize, table: &str, key: &str, id: i64) -> Result<()> {
    if changed != 1 {
        return Err(check::LostRows(format!(
            "the update of {table} {key} {id} (its mbid or duration) changed {changed} rows instead of 1: something inside the write ignored it or removed the row"
        ))
        .into());
    }
    Ok(())
}

/// Writes one normalised window: new dimension rows, attribute fills, then the facts.
/// Returns the number of facts written.
pub fn write_window(conn: &Connection, n: &Normalized, upsert: bool) -> Result<usize> {
    insert_dims(conn, &n.dims)?;
    write_fills(conn, &n.fills)?;
    if upsert {
        // Into an indexed target: in played_at order the played_at index is updated page after
        // page instead of at random places.
        let mut sorted = n
            .facts
            .sort(["played_at"], SortMultipleOptions::default())?;
        sorted.as_single_chunk();
        insert_facts(conn, &sorted, upsert)
    } else {
        insert_facts(conn, &n.facts, upsert)
    }
}

/// Inserts dimension frames (used by full loads and, for new rows, by incremental modes).
pub fn insert_dims(conn: &Connection, dims: &DimFrames) -> Result<()> {
    let d = &dims.users;
    let (id, name) = (i64_col(d, "user_id")?, str_col(d, "name")?);
    bulk_insert(
        conn,
        "users",
        &["user_id", "name"],
        d.height(),
        |s, p, i| {
            s.raw_bind_parameter(p, id.get(i))?;
            s.raw_bind_parameter(p + 1, name.get(i))
        },
    )?;

    let d = &dims.artists;
    let (id, name, mbid) = (
        i64_col(d, "artist_id")?,
        str_col(d, "name")?,
        str_col(d, "mbid")?,
    );
    bulk_insert(
        conn,
        "artists",
        &["artist_id", "name", "mbid"],
        d.height(),
        |s, p, i| {
            s.raw_bind_parameter(p, id.get(i))?;
            s.raw_bind_parameter(p + 1, name.get(i))?;
            s.raw_bind_parameter(p + 2, mbid.get(i))
        },
    )?;

    let d = &dims.albums;
    let (id, artist, title, mbid) = (
        i64_col(d, "album_id")?,
        i64_col(d, "artist_id")?,
        str_col(d, "title")?,
        str_col(d, "mbid")?,
    );
    bulk_insert(
        conn,
        "albums",
        &["album_id", "artist_id", "title", "mbid"],
        d.height(),
        |s, p, i| {
            s.raw_bind_parameter(p, id.get(i))?;
            s.raw_bind_parameter(p + 1, artist.get(i))?;
            s.raw_bind_parameter(p + 2, title.get(i))?;
            s.raw_bind_parameter(p + 3, mbid.get(i))
        },
    )?;

    let d = &dims.tracks;
    let (id, artist, album, title, mbid) = (
        i64_col(d, "track_id")?,
        i64_col(d, "artist_id")?,
        i64_col(d, "album_id")?,
        str_col(d, "title")?,
        str_col(d, "mbid")?,
    );
    let duration = d.column("duration_ms")?.i64()?;
    bulk_insert(
        conn,
        "tracks",
        &[
            "track_id",
            "artist_id",
            "album_id",
            "title",
            "mbid",
            "duration_ms",
        ],
        d.height(),
        |s, p, i| {
            s.raw_bind_parameter(p, id.get(i))?;
            s.raw_bind_parameter(p + 1, artist.get(i))?;
            s.raw_bind_parameter(p + 2, album.get(i))?;
            s.raw_bind_parameter(p + 3, title.get(i))?;
            s.raw_bind_parameter(p + 4, mbid.get(i))?;
            s.raw_bind_parameter(p + 5, duration.get(i))
        },
    )?;
    Ok(())
}

/// Row counts of the user-facing tables, in [`USER_TABLES`] order.
pub fn table_counts(conn: &Connection) -> Result<[u64; 5]> {
    let mut out = [0u64; 5];
    for (i, t) in USER_TABLES.iter().enumerate() {
        let n: i64 = conn.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))?;
        out[i] = n as u64;
    }
    Ok(out)
}

/// Failpoint `damage-window=N:KIND`: what the window's admission sees and what is then
/// written, for a simulated writer or normaliser bug that the load's checks must catch.
fn damaged(
    n: &Normalized,
    damage: Damage,
    tracks_written: i64,
) -> Result<(Normalized, Normalized)> {
    let copy = |facts: DataFrame, dims: DimFrames| Normalized {
        facts,
        dims,
        fills: n.fills.clone(),
    };
    let same = || copy(n.facts.clone(), n.dims.clone());
    Ok(match damage {
        // A fact pointing at a track key never handed out.
        Damage::DanglingKey => {
            let mut facts = n.facts.clone();
            if facts.height() > 0 {
                let mut tracks: Vec<i64> = facts
                    .column("track_id")?
                    .i64()?
                    .into_no_null_iter()
                    .collect();
                tracks[0] = tracks_written + n.dims.tracks.height() as i64 + 1;
                facts.with_column(Column::new("track_id".into(), tracks))?;
            }
            (
                copy(facts.clone(), n.dims.clone()),
                copy(facts, n.dims.clone()),
            )
        }
        // Facts counted as written that never reach the file.
        Damage::LoseFacts => (same(), copy(n.facts.head(Some(0)), n.dims.clone())),
        // The window's last new track admitted, never inserted.
        Damage::LoseTrack => {
            let mut dims = n.dims.clone();
            let h = dims.tracks.height();
            dims.tracks = dims.tracks.slice(0, h.saturating_sub(1));
            (same(), copy(n.facts.clone(), dims))
        }
        // User and track keys bound into each other's column.
        Damage::SwapKeys => {
            let mut facts = n.facts.clone();
            facts.rename("user_id", "tmp".into())?;
            facts.rename("track_id", "user_id".into())?;
            facts.rename("tmp", "track_id".into())?;
            (same(), copy(facts, n.dims.clone()))
        }
    })
}
