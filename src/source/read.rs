//! Source rows → Arrow record batches: the reader interface.
//!
//! Two backends produce the same batches from the same partition queries
//! ([`super::query`]): the direct binary-COPY reader ([`super::copy`], the default, measured
//! faster) and connectorx ([`super::connectorx`], `--reader connectorx`). The pipeline driver
//! (`crate::pipeline`) runs them window by window; a reader only knows how to read one window.

use super::conn::SourceUrl;
use super::copy::CopyReader;
use super::mapping::SourceTable;
use super::query::{Filter, Slice};
use anyhow::{anyhow, Result};
use arrow::record_batch::RecordBatch;

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

    /// Reads one window: one partition query per slice, in parallel. On an error nothing of the
    /// window is returned.
    pub fn read_window(
        &mut self,
        table: &SourceTable,
        filter: &Filter,
        slices: &[Slice],
    ) -> Result<Vec<RecordBatch>> {
        match self {
            Reader::Copy(r) => r.read_window(table, filter, slices),
            Reader::Connectorx(url) => super::connectorx::read_window(url, table, filter, slices),
        }
    }

    /// Drops kept connections, so the next window connects afresh (after a failure).
    pub fn reset(&mut self) {
        if let Reader::Copy(r) = self {
            r.reset();
        }
    }
}
