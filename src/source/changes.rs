//! Whether rows a killed load already read have changed since: what `load --resume` must know
//! before it continues a temporary file instead of starting over.
//!
//! Every row version PostgreSQL writes (insert, update) carries the id of the transaction that
//! wrote it (`xmin`). A row that was inserted, updated or re-inserted since a snapshot was taken
//! carries an id at or above that snapshot's oldest running transaction; a deleted row is gone
//! from the count. So the rows up to an id are those a load read in that snapshot when their
//! count is the same and none of them is that new.

use super::conn::ReadOnlyClient;
use super::mapping::SourceTable;
use anyhow::{bail, Context, Result};

/// Rows up to an id, and how many of them were written at or after a transaction id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowsSince {
    pub rows: u64,
    pub newer: u64,
}

/// Counts the rows of `table` with ids up to `through_id`, and those among them written by a
/// transaction at or after `since_xid` (a full 64-bit xid, e.g. a snapshot's xmin).
pub fn rows_since(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    through_id: i64,
    since_xid: i64,
) -> Result<RowsSince> {
    let versioned = match &table.versioned {
        Ok(v) => v,
        Err(why) => bail!(
            "{why}: scrobsync cannot tell whether the rows the killed load read have changed; run a plain load (without --resume)"
        ),
    };
    let next: i64 = client
        .query_one(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::int8",
            &[],
        )
        .context("cannot read the source's snapshot")?
        .get(0);
    // Transactions since: each row's 32-bit xmin is compared on the circle of 32-bit ids, which
    // is exact while fewer than 2^31 transactions lie between.
    let span = next - since_xid;
    if !(0..1 << 31).contains(&span) {
        bail!(
            "{span} transactions ran on the source since the killed load read its rows, too many to tell which rows changed; run a plain load (without --resume)"
        );
    }
    let base = since_xid & 0xffff_ffff;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*)::int8, \
                        count(*) FILTER (WHERE ((row_xmin::text::int8 - {base} + 4294967296) % 4294967296) < {span})::int8 \
                 FROM {versioned} WHERE id <= {through_id}"
            ),
            &[],
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot tell whether the rows the killed load read have changed ({e}); a source whose relation is a view has no row versions: run a plain load (without --resume)"
            )
        })?;
    let (rows, newer): (i64, i64) = (row.get(0), row.get(1));
    Ok(RowsSince {
        rows: rows as u64,
        newer: newer as u64,
    })
}
