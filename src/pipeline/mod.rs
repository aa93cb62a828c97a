//! The pipeline driver: the only code that runs windows of source rows.
//!
//! A mode decides *what* to read (a list of [`WindowSpec`]s: id slices, each window possibly
//! restricted to a `played_at` range) and *what to do* with each window (its sink policy: write
//! into a fresh file, upsert inside one transaction, replace a time window per transaction).
//! The driver decides *how*: a reader thread one window ahead behind a bounded channel, an
//! optional stage thread (the full load normalises there while the calling thread writes),
//! retries of transient source faults, rows-read accounting, cancellation, test failpoints, and
//! turning a reader's error or panic into the run's error.
//!
//! A window is retried as a unit: it is read again from scratch on fresh connections, and only a
//! completely read window ever reaches the sink, so a retry can neither duplicate nor drop rows.
//! The plan (marks, cut points) is made before the driver starts and does not change.

pub mod commit;
pub mod failpoint;
pub mod parallel;
pub mod retry;
pub mod slices;
#[cfg(test)]
mod tests;

use crate::progress::Progress;
use crate::source::mapping::SourceTable;
use crate::source::query::WindowSpec;
use crate::source::read::{Reader, ReaderKind};
use crate::source::SourceUrl;
use anyhow::{anyhow, Result};
use arrow::record_batch::RecordBatch;
use retry::RetryPolicy;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, Instant};

/// What the driver reads with.
#[derive(Clone, Copy)]
pub struct Reading<'a> {
    pub url: &'a SourceUrl,
    pub table: &'a SourceTable,
    pub reader: ReaderKind,
    /// About how many rows a slice holds (to size buffers).
    pub rows_hint: usize,
    pub retry: RetryPolicy,
}

impl<'a> Reading<'a> {
    pub fn new(
        url: &'a SourceUrl,
        table: &'a SourceTable,
        reader: ReaderKind,
        rows_hint: usize,
        retry: RetryPolicy,
    ) -> Self {
        Self {
            url,
            table,
            reader,
            rows_hint,
            retry,
        }
    }
}

impl<'a> Reading<'a> {
    /// A reader of this run's table, keeping its connections between windows.
    fn reader(self, rows_hint: usize) -> TableReader<'a> {
        TableReader {
            reader: Reader::new(self.reader, self.url.clone(), rows_hint),
            table: self.table,
        }
    }

    /// What makes the run's window reader on the reader thread.
    fn window_reader(self) -> impl FnOnce() -> TableReader<'a> + Send {
        move || self.reader(self.rows_hint)
    }
}

/// What the driver reads windows with: a source reader over the run's table (a fake one in
/// the driver's tests).
pub trait WindowReader {
    /// Reads one window completely; on an error nothing of it is returned.
    fn read(&mut self, spec: &WindowSpec) -> Result<Vec<RecordBatch>>;
    /// Drops kept connections after a failure, so the next attempt connects afresh.
    fn reset(&mut self);
}

/// The source reader over one table.
struct TableReader<'a> {
    reader: Reader,
    table: &'a SourceTable,
}

impl WindowReader for TableReader<'_> {
    fn read(&mut self, spec: &WindowSpec) -> Result<Vec<RecordBatch>> {
        self.reader
            .read_window(self.table, &spec.filter, &spec.slices)
    }
    fn reset(&mut self) {
        self.reader.reset()
    }
}

/// One window's rows, read completely.
pub struct Window {
    pub index: usize,
    pub batches: Vec<RecordBatch>,
    /// Rows in `batches`, counted by the reader.
    pub rows: u64,
    /// Wall time of the read (of its last, successful attempt).
    pub read_time: Duration,
}

/// Reads `windows` in order and hands each to `sink` on the calling thread, which returns the
/// rows it wrote. Returns the rows read; a run whose sink wrote another number of rows than
/// were read fails (the one place that checks it).
pub fn run(
    reading: Reading<'_>,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    sink: impl FnMut(Window) -> Result<u64>,
) -> Result<u64> {
    run_staged(reading, windows, progress, Ok, sink)
}

/// Like [`run`], with `stage` applied to each window on a thread of its own (overlapping the
/// sink's work on the previous window).
pub fn run_staged<T: Send>(
    reading: Reading<'_>,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    stage: impl FnMut(Window) -> Result<T> + Send,
    sink: impl FnMut(T) -> Result<u64>,
) -> Result<u64> {
    drive(
        reading.window_reader(),
        reading.retry,
        windows,
        progress,
        stage,
        sink,
    )
}

/// The driver itself, over any [`WindowReader`] (made on the reader thread by `reader`).
fn drive<R: WindowReader, T: Send>(
    reader: impl FnOnce() -> R + Send,
    retry: RetryPolicy,
    windows: Vec<WindowSpec>,
    progress: &dyn Progress,
    mut stage: impl FnMut(Window) -> Result<T> + Send,
    mut sink: impl FnMut(T) -> Result<u64>,
) -> Result<u64> {
    let stop = AtomicBool::new(false);
    let mut written = 0u64;
    let rows_read = std::thread::scope(|s| {
        let (tx_read, rx_read) = sync_channel::<Result<Window>>(1);
        let (tx_staged, rx_staged) = sync_channel::<Result<T>>(1);
        let stop = &stop;
        let reader = std::thread::Builder::new()
            .name("scrobsync-read".into())
            .spawn_scoped(s, move || {
                read_windows(reader(), retry, windows, tx_read, progress, stop)
            })
            .expect("spawning the reader thread");
        let stager = std::thread::Builder::new()
            .name("scrobsync-normalize".into())
            .spawn_scoped(s, move || {
                for item in rx_read {
                    let out = item.and_then(|w| {
                        crate::cancel::check()?;
                        stage(w)
                    });
                    let failed = out.is_err();
                    if tx_staged.send(out).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the stage thread");
        let mut outcome = Ok(());
        let mut done = 0usize;
        for item in rx_staged.iter() {
            match item.and_then(|t| {
                crate::cancel::check()?;
                sink(t)
            }) {
                Ok(n) => {
                    written += n;
                    done += 1;
                    failpoint::after_window(done);
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        drop(rx_staged);
        let staged = stager.join();
        let read = reader.join();
        outcome?;
        staged.map_err(|p| panicked("normaliser", p))?;
        read.map_err(|p| panicked("PostgreSQL reader", p))
    })?;
    if rows_read != written {
        return Err(anyhow!(
            "internal error: {rows_read} rows read but {written} written; nothing of this run was kept beyond its last commit"
        ));
    }
    Ok(rows_read)
}

/// The reader thread: reads each window (retrying transient faults on fresh connections) and
/// sends it on; an error ends the thread after it was sent. Returns the rows read.
fn read_windows(
    mut reader: impl WindowReader,
    retry: RetryPolicy,
    windows: Vec<WindowSpec>,
    tx: SyncSender<Result<Window>>,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> u64 {
    let mut rows_read = 0u64;
    for (index, spec) in windows.into_iter().enumerate() {
        let _span =
            tracing::debug_span!("read_window", index, slices = spec.slices.len()).entered();
        let mut t = Instant::now();
        let what = format!("reading window {} of the source", index + 1);
        let item = retry::with_retries(retry, &what, progress, Some(stop), || {
            t = Instant::now();
            reader.read(&spec).inspect_err(|_| reader.reset())
        })
        .map(|batches| {
            let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
            Window {
                index,
                batches,
                rows,
                read_time: t.elapsed(),
            }
        });
        let failed = item.is_err();
        if let Ok(w) = &item {
            rows_read += w.rows;
            tracing::debug!(
                index,
                rows = w.rows,
                ms = w.read_time.as_millis() as u64,
                "window read"
            );
        }
        if tx.send(item).is_err() || failed {
            break;
        }
        failpoint::reader_panic(index + 1);
        failpoint::pause(index + 1);
    }
    rows_read
}

fn panicked(what: &str, p: Box<dyn std::any::Any + Send>) -> anyhow::Error {
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    anyhow!("the {what} thread crashed ({msg}); nothing was committed from this run")
}

/// Runs a step that talks to the source (a plan, a check, a hash query) with the run's retry
/// policy.
pub fn step<T>(
    policy: RetryPolicy,
    what: &str,
    progress: &dyn Progress,
    attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    retry::with_retries(policy, what, progress, None, attempt)
}
