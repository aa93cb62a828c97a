//! User-facing jobs, each composing plan → read → normalise → write with its own transaction
//! boundaries.

pub mod attributes;
pub mod backfill;
pub mod bench;
pub mod demo;
pub mod load;
pub mod replace;
pub mod seed;
pub mod status;
pub mod sync;
pub mod verify;
pub mod windows;

use crate::progress::Progress;
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// What `scrobsync sync` did.
pub enum SyncOutcome {
    /// Synced an existing target.
    Synced(sync::SyncSummary),
    /// The target did not exist: loaded in full, which the next sync continues from.
    Loaded(load::LoadSummary),
}

/// `scrobsync sync`: an incremental sync of an existing target, or a full load where there is
/// none yet (with `--cursor played_at`, the mark is then the newest `played_at` loaded).
pub fn sync_or_load(opts: &sync::SyncOptions, progress: &dyn Progress) -> Result<SyncOutcome> {
    if opts.target.exists() {
        return Ok(SyncOutcome::Synced(sync::run(opts, progress)?));
    }
    let first = load::LoadOptions {
        source: opts.source.clone(),
        table: opts.table.clone(),
        target: opts.target.clone(),
        partitions: opts.partitions,
        batch_rows: opts.batch_rows,
        indexes: opts.indexes,
        reader: opts.reader,
        force: false,
        fts: false,
        check: opts.check,
        retry: opts.retry,
        resume: false,
    };
    let summary = load::run(&first, progress)?;
    if let sync::Cursor::PlayedAt { .. } = opts.cursor {
        sync::record_played_at_mark(&opts.target)?;
    }
    Ok(SyncOutcome::Loaded(summary))
}

/// An id as text for JSON: ids reach 2^63, and JSON readers keep only 53 bits of a number.
pub fn id_text(id: Option<i64>) -> Option<String> {
    id.map(|i| i.to_string())
}

/// Unix microseconds as RFC 3339 UTC text (None beyond chrono's range).
pub fn rfc3339_us(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Unix seconds as RFC 3339 UTC text.
pub fn rfc3339_s(s: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(s, 0).map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Rows per target table.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TableRows {
    pub users: u64,
    pub artists: u64,
    pub albums: u64,
    pub tracks: u64,
    pub scrobbles: u64,
}

/// Seconds spent per stage. Read, normalise and write overlap, so they can add up to more than
/// the wall time; `total` is the wall time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageSeconds {
    pub plan: f64,
    pub read: f64,
    pub normalize: f64,
    pub write: f64,
    pub index: f64,
    pub check: f64,
    pub total: f64,
}

impl StageSeconds {
    /// CPU figures whose `read` is what `total` leaves after the other stages: the reader's
    /// threads (decoding on as many threads as partitions, or connectorx's own) and the
    /// little else a run does.
    fn cpu_read_as_rest(mut self) -> Self {
        self.read =
            (self.total - self.plan - self.normalize - self.write - self.index - self.check)
                .max(0.0);
        self
    }
}
