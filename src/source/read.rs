//! Source rows → Arrow record batches, one window of id slices at a time.
//!
//! Two readers produce the same batches: the direct binary-COPY reader ([`super::copy`], the
//! default, measured faster) and connectorx (`--reader connectorx`). Everything
//! connectorx-specific lives here.
//!
//! connectorx 0.4.6 offers `get_arrow` (materialises a whole result) and
//! `new_record_batch_iter` (streams, but into an unbounded channel, and panics when the
//! producer fails). We use `get_arrow` on one *window* of slices at a time, one partition query
//! per slice run in parallel by connectorx, from a reader thread that hands windows to the
//! pipeline through a bounded channel. Memory is then bounded by the window size times the
//! channel capacity, a failing query becomes an error, and a panic inside connectorx is caught.

use super::conn::SourceUrl;
use super::copy::CopyReader;
use super::plan::{Slice, SourceTable};
use anyhow::{anyhow, Result};
use arrow::record_batch::RecordBatch;
use connectorx::prelude::{get_arrow, SourceConn};
use connectorx::sql::CXQuery;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The rows of one window, as connectorx returned them (batches in no particular order).
pub struct Window {
    pub index: usize,
    pub batches: Vec<RecordBatch>,
    /// Wall time connectorx took for this window.
    pub read_time: Duration,
}

/// The partition query for one slice; `filter` is the plan's extra condition.
pub fn slice_query(table: &SourceTable, filter: &str, s: Slice) -> String {
    format!(
        "{} WHERE id BETWEEN {} AND {}{filter}",
        table.select_sql(),
        s.lo,
        s.hi
    )
}

/// Which reader turns source rows into Arrow batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReaderKind {
    /// `COPY … (FORMAT binary)` decoded by [`super::copy`].
    #[default]
    Copy,
    /// connectorx's `get_arrow` with its postgres source and arrow destination.
    Connectorx,
}

impl std::str::FromStr for ReaderKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "copy" => Ok(Self::Copy),
            "connectorx" => Ok(Self::Connectorx),
            other => Err(anyhow!("unknown reader '{other}'; use copy or connectorx")),
        }
    }
}

/// How a run reads: how many partition queries run in parallel, and which reader decodes them.
#[derive(Debug, Clone, Copy)]
pub struct ReadSettings {
    pub partitions: usize,
    pub reader: ReaderKind,
}

/// A reader for one run; it may keep connections between windows.
pub enum Reader {
    Copy(CopyReader),
    Connectorx(SourceUrl),
}

impl Reader {
    /// `rows_hint`: about how many rows a slice holds (to size buffers).
    pub fn new(kind: ReaderKind, url: SourceUrl, rows_hint: usize) -> Self {
        match kind {
            ReaderKind::Copy => Reader::Copy(CopyReader::new(url, rows_hint.min(1 << 20))),
            ReaderKind::Connectorx => Reader::Connectorx(url),
        }
    }

    /// Reads one window: one partition query per slice, in parallel.
    pub fn read_window(
        &mut self,
        table: &SourceTable,
        filter: &str,
        slices: &[Slice],
    ) -> Result<Vec<RecordBatch>> {
        match self {
            Reader::Copy(r) => r.read_window(table, filter, slices),
            Reader::Connectorx(url) => read_window(url, table, filter, slices),
        }
    }
}

/// Reads one window with connectorx: one connectorx partition per slice, in parallel.
pub fn read_window(
    url: &SourceUrl,
    table: &SourceTable,
    filter: &str,
    slices: &[Slice],
) -> Result<Vec<RecordBatch>> {
    let conn = SourceConn::try_from(url.connectorx_url().as_str()).map_err(|e| {
        anyhow!(
            "invalid source URL for the reader: {}",
            scrub(&e.to_string(), url)
        )
    })?;
    let queries: Vec<CXQuery<String>> = slices
        .iter()
        .map(|s| CXQuery::naked(slice_query(table, filter, *s)))
        .collect();
    let result = std::panic::catch_unwind(|| get_arrow(&conn, None, &queries, None));
    let dest = match result {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            return Err(anyhow!(
                "reading ids {} to {} from PostgreSQL failed: {}",
                slices.first().map_or(0, |s| s.lo),
                slices.last().map_or(0, |s| s.hi),
                scrub(&super::conn::describe_error(&e), url)
            ))
        }
        Err(_) => {
            return Err(anyhow!(
                "the PostgreSQL reader crashed (connectorx panicked); rerun with -v for details"
            ))
        }
    };
    dest.arrow().map_err(|e| {
        anyhow!(
            "collecting Arrow batches failed: {}",
            scrub(&e.to_string(), url)
        )
    })
}

/// A running reader thread: its rows-read counter and its end.
///
/// The counter is the reader's own (rows it decoded and handed on), so checking the rows
/// written against it compares two independent counts.
pub struct ReaderHandle {
    join: JoinHandle<()>,
    rows: Arc<AtomicU64>,
}

impl ReaderHandle {
    /// Starts `body` on a named thread; it counts the rows it hands on with [`RowCounter`].
    pub fn spawn(name: &str, body: impl FnOnce(RowCounter) + Send + 'static) -> Self {
        let rows = Arc::new(AtomicU64::new(0));
        let counter = RowCounter(rows.clone());
        let join = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(counter))
            .expect("spawning a reader thread");
        Self { join, rows }
    }

    /// Waits for the thread; a panic becomes an error. Returns the rows it read.
    pub fn finish(self) -> Result<u64> {
        self.join.join().map_err(|p| {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            anyhow!("the PostgreSQL reader thread crashed ({what}); nothing was committed from this run")
        })?;
        Ok(self.rows.load(Ordering::SeqCst))
    }
}

/// Counts the rows a reader thread hands on.
pub struct RowCounter(Arc<AtomicU64>);

impl RowCounter {
    pub fn add(&self, batches: &[RecordBatch]) {
        let n: usize = batches.iter().map(|b| b.num_rows()).sum();
        self.0.fetch_add(n as u64, Ordering::SeqCst);
    }
}

/// Starts a reader thread over `windows`; at most `capacity` windows wait in the channel.
/// The thread stops at the first error (sent as the last item) or when the receiver is gone.
pub fn spawn_reader(
    mut reader: Reader,
    table: SourceTable,
    filter: String,
    windows: Vec<Vec<Slice>>,
    capacity: usize,
) -> (Receiver<Result<Window>>, ReaderHandle) {
    let (tx, rx) = sync_channel(capacity.max(1));
    let handle = ReaderHandle::spawn("scrobsync-read", move |counter| {
        for (index, slices) in windows.into_iter().enumerate() {
            let _span = tracing::debug_span!("read_window", index, slices = slices.len()).entered();
            let t = Instant::now();
            let item = reader
                .read_window(&table, &filter, &slices)
                .map(|batches| Window {
                    index,
                    batches,
                    read_time: t.elapsed(),
                });
            let failed = item.is_err();
            if let Ok(w) = &item {
                counter.add(&w.batches);
                let rows: usize = w.batches.iter().map(|b| b.num_rows()).sum();
                tracing::debug!(
                    index,
                    rows,
                    ms = w.read_time.as_millis() as u64,
                    "window read"
                );
            }
            if tx.send(item).is_err() || failed {
                return;
            }
            crate::failpoint::reader_panic(index + 1);
        }
    });
    (rx, handle)
}

/// Removes anything that looks like the URL's password from a library's error text.
fn scrub(text: &str, url: &SourceUrl) -> String {
    let raw = url.connectorx_url();
    let mut out = super::conn::one_line(text);
    if let Ok(u) = url::Url::parse(&raw) {
        if let Some(p) = u.password() {
            if !p.is_empty() {
                out = out.replace(p, "***");
                let decoded = percent_encoding::percent_decode_str(p).decode_utf8_lossy();
                if !decoded.is_empty() {
                    out = out.replace(decoded.as_ref(), "***");
                }
            }
        }
    }
    out
}
