//! Sink policies: when the windows the driver reads are committed to the target.
//!
//! - **A fresh file** (a full load): the writer's own transactions, in a file nobody sees
//!   until it is checked and installed — [`super::run_staged`] with the writer as the sink.
//! - **One transaction** (sync): every window inside the caller's transaction, so the run
//!   commits whole or not at all — [`into_transaction`].
//! - **A transaction per window** (backfill, `verify --repair`): each window replaced and
//!   committed on its own, so a failed run keeps the windows done — [`per_window`]. A window
//!   may read more rows while it is written (rows that moved out of it, [`Follow`]).
//!
//! Each policy checks, before the commit, that the sink wrote the rows that were read, and
//! fires the test failpoint that kills a run inside a transaction.

use super::retry::RetryPolicy;
use super::{drive, failpoint, Reading, Window, WindowReader};
use crate::progress::Progress;
use crate::sink::Transact;
use crate::source::query::{Filter, Slice, WindowSpec};
use anyhow::{bail, Result};
use arrow::record_batch::RecordBatch;
use rusqlite::Connection;

/// Every window into the transaction the caller holds on `conn`; `sink` returns the rows it
/// wrote. Returns the rows read.
pub fn into_transaction(
    conn: &Connection,
    reading: Reading<'_>,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    sink: impl FnMut(&Connection, Window) -> Result<u64>,
) -> Result<u64> {
    let retry = reading.retry;
    into_transaction_from(
        reading.window_reader(),
        retry,
        conn,
        windows,
        progress,
        sink,
    )
}

/// [`into_transaction`] over any reader.
pub(super) fn into_transaction_from<R: WindowReader>(
    reader: impl FnOnce() -> R + Send,
    retry: RetryPolicy,
    conn: &Connection,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    mut sink: impl FnMut(&Connection, Window) -> Result<u64>,
) -> Result<u64> {
    let mut done = 0usize;
    drive(reader, retry, windows, progress, Ok, |w| {
        let n = sink(conn, w)?;
        done += 1;
        failpoint::in_transaction(done, conn);
        Ok(n)
    })
}

/// What a window's sink wrote under [`per_window`]: the window's rows, and the rows it read
/// through [`Follow`] and wrote elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub followed: u64,
}

/// Each window in a transaction of its own on `target`: `sink` writes it (reading rows that
/// moved out of it through the [`Follow`] it is given), and the window is committed only when
/// the rows written are the rows read. Returns the rows read for the windows.
pub fn per_window(
    target: &impl Transact,
    reading: Reading<'_>,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    sink: impl FnMut(&Connection, Window, &mut Follow<'_>) -> Result<Written>,
) -> Result<u64> {
    let follow = Follow::new(Box::new(reading.reader(1024)), reading.retry, progress);
    let retry = reading.retry;
    let reader = reading.window_reader();
    per_window_from(reader, retry, follow, target, windows, progress, sink)
}

/// [`per_window`] over any reader.
pub(super) fn per_window_from<R: WindowReader>(
    reader: impl FnOnce() -> R + Send,
    retry: RetryPolicy,
    mut follow: Follow<'_>,
    target: &impl Transact,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    mut sink: impl FnMut(&Connection, Window, &mut Follow<'_>) -> Result<Written>,
) -> Result<u64> {
    let mut done = 0usize;
    drive(reader, retry, windows, progress, Ok, |w| {
        let (index, rows) = (w.index, w.rows);
        let n = target.atomically(|conn| {
            let before = follow.rows;
            let written = sink(conn, w, &mut follow)?;
            let followed = follow.rows - before;
            if written != (Written { rows, followed }) {
                bail!(
                    "internal error: window {} read {rows} rows and {followed} moved rows, but {} and {} were written; the window was not changed",
                    index + 1,
                    written.rows,
                    written.followed
                );
            }
            failpoint::in_transaction(done + 1, conn);
            Ok(written.rows)
        });
        let n = n.map_err(|e| kept_before(e, done))?;
        done += 1;
        Ok(n)
    })
}

/// A window's error, saying which windows before it stayed committed (a Ctrl-C and a busy
/// target keep their own errors, which the exit code depends on).
fn kept_before(e: anyhow::Error, done: usize) -> anyhow::Error {
    if done == 0
        || e.downcast_ref::<crate::cancel::Interrupted>().is_some()
        || e.downcast_ref::<crate::sink::target::InUse>().is_some()
    {
        return e;
    }
    e.context(format!(
        "window {} failed, and the {done} {} before it stayed committed",
        done + 1,
        if done == 1 { "window" } else { "windows" }
    ))
}

/// Reads, while a window is written, source rows by id wherever their `played_at` now lies:
/// the rows a window's replacement found gone from it. Retried as a whole on a transient
/// fault, on fresh connections.
pub struct Follow<'a> {
    reader: Box<dyn WindowReader + 'a>,
    retry: RetryPolicy,
    progress: &'a dyn Progress,
    /// Rows returned so far.
    rows: u64,
}

/// Ids per query of a [`Follow`] read.
const FOLLOW_IDS: usize = 10_000;

impl<'a> Follow<'a> {
    pub(super) fn new(
        reader: Box<dyn WindowReader + 'a>,
        retry: RetryPolicy,
        progress: &'a dyn Progress,
    ) -> Self {
        Self {
            reader,
            retry,
            progress,
            rows: 0,
        }
    }

    /// The source rows of `ids` (those the source still has).
    pub fn read_ids(&mut self, ids: &[i64]) -> Result<Vec<RecordBatch>> {
        let reader = &mut self.reader;
        let batches = super::step(self.retry, "reading moved rows", self.progress, || {
            let r = ids
                .chunks(FOLLOW_IDS)
                .map(|ids| {
                    reader.read(&WindowSpec {
                        slices: vec![Slice::ALL],
                        filter: Filter {
                            played_at: None,
                            ids: Some(ids.to_vec()),
                            ranges: None,
                        },
                    })
                })
                .collect::<Result<Vec<_>>>();
            if r.is_err() {
                reader.reset();
            }
            r
        })?
        .concat();
        self.rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        Ok(batches)
    }
}
