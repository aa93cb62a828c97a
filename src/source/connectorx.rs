//! The connectorx reader (`--reader connectorx`): the same partition queries as the COPY reader,
//! run through connectorx's `get_arrow`. Everything connectorx-specific lives here.
//!
//! connectorx 0.4.6 offers `get_arrow` (materialises a whole result) and
//! `new_record_batch_iter` (streams, but into an unbounded channel, and panics when the
//! producer fails). We use `get_arrow` on one *window* of slices at a time, one partition query
//! per slice run in parallel by connectorx. Memory is then bounded by the window size, a failing
//! query becomes an error, and a panic inside connectorx is caught.
//!
//! Read-only: `get_arrow` opens a new connection pool per window, each connection with the
//! read-only session default (`SourceUrl::connectorx_url`); on each partition's connection,
//! `BEGIN TRANSACTION READ ONLY` runs before the COPY, and that transaction is never committed
//! (the pool is dropped at the end of the call, and PostgreSQL rolls back what a closed
//! connection left open), so even writes a read-only transaction allows are undone.

use super::conn::{describe_error, SourceError, SourceUrl};
use super::mapping::SourceTable;
use super::query::{slice_query, Filter, Slice};
use anyhow::{anyhow, Result};
use arrow::record_batch::RecordBatch;
use connectorx::prelude::{get_arrow, SourceConn};
use connectorx::sql::CXQuery;

/// Reads one window with connectorx: one connectorx partition per slice, in parallel.
pub fn read_window(
    url: &SourceUrl,
    table: &SourceTable,
    filter: &Filter,
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
        .map(|s| CXQuery::naked(slice_query(table, *s, filter)))
        .collect();
    // Each partition's connection first opens a read-only transaction that is never committed:
    // the connection closes at the end of the call and PostgreSQL rolls it back.
    let begin = ["BEGIN TRANSACTION READ ONLY".to_string()];
    let result = std::panic::catch_unwind(|| get_arrow(&conn, None, &queries, Some(&begin[..])));
    let dest = match result {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            let cause = SourceError::from_chain(&e, scrub(&describe_error(&e), url));
            return Err(anyhow::Error::new(cause).context(format!(
                "reading ids {} to {} from PostgreSQL failed",
                slices.first().map_or(0, |s| s.lo),
                slices.last().map_or(0, |s| s.hi),
            )));
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
