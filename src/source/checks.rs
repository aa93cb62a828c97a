//! Checks of the source's rows that every mode shares: repeated ids across time windows, and
//! the ids of rows whose `played_at` is infinite.

use super::conn::{explain_query_error, ReadOnlyClient};
use super::mapping::SourceTable;
use super::query::TimeRange;
use crate::normalize::frames::InfinitePlayedAt;
use anyhow::{anyhow, bail, Context, Result};

/// Refuses a source where some row with `played_at` in `range` shares its id with another row
/// (anywhere): a time-window read cannot see the other copy, and an upsert would silently keep
/// one of the two. Skipped when a unique index on the default table's `id` rules it out.
pub fn check_unique_ids_in(
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    range: &TimeRange,
) -> Result<()> {
    if !table.mapped {
        let unique: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                  WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indnatts = 1
                    AND i.indpred IS NULL AND a.attname = 'id')",
                &[&table.name],
            )
            .context("checking the source's ids failed")?
            .get(0);
        if unique {
            return Ok(());
        }
    }
    let t = table.sql_name();
    let row = client
        .query_opt(
            &format!(
                "SELECT id::int8, count(*) FROM {t} WHERE id IN (SELECT id FROM {t} WHERE {}) \
                 GROUP BY id HAVING count(*) > 1 LIMIT 1",
                range.sql()
            ),
            &[],
        )
        .context("checking the source's ids failed")?;
    if let Some(r) = row {
        let (id, n): (i64, i64) = (r.get(0), r.get(1));
        bail!(
            "the source has duplicate ids (e.g. id {id}, {n} rows); ids must be unique: add a primary key or unique index on id, or fix the mapping's id, and run again"
        );
    }
    Ok(())
}

/// Warns (once per run) when the default table has no index whose first column is
/// `played_at`: then every time window of a backfill or verify reads the whole table.
pub fn warn_without_played_at_index(client: &mut ReadOnlyClient, table: &SourceTable) {
    if table.mapped {
        return;
    }
    let indexed = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
              WHERE i.indrelid = to_regclass($1) AND a.attname = 'played_at')",
            &[&table.name],
        )
        .map(|r| r.get::<_, bool>(0))
        .unwrap_or(true);
    if !indexed {
        tracing::warn!(
            "the source table {} has no index on played_at, so every window reads the whole table; \
             CREATE INDEX ON {} (played_at) makes windows cheap",
            table.name,
            table.name
        );
    }
}

/// Replaces the normaliser's per-window report of infinite timestamps by the full list of ids,
/// asked from PostgreSQL; other errors pass through.
pub fn explain_infinite(
    e: anyhow::Error,
    client: &mut ReadOnlyClient,
    table: &SourceTable,
    hwm: i64,
) -> anyhow::Error {
    let Some(inf) = e.downcast_ref::<InfinitePlayedAt>() else {
        return e;
    };
    const SHOW: i64 = 20;
    let sql = format!(
        "SELECT id::int8, count(*) OVER () FROM {} WHERE NOT isfinite(played_at) AND id <= $1 ORDER BY id LIMIT {SHOW}",
        table.sql_name()
    );
    match client.query(&sql, &[&hwm]) {
        Ok(rows) if !rows.is_empty() => {
            let total: i64 = rows[0].get(1);
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            let mut err = InfinitePlayedAt { ids }.to_string();
            if total > SHOW {
                err = err.replacen(
                    "; fix",
                    &format!(
                        " and {} more (SELECT id FROM {} WHERE NOT isfinite(played_at)); fix",
                        total - SHOW,
                        table.sql_name()
                    ),
                    1,
                );
            }
            anyhow!(err)
        }
        Ok(_) => anyhow!(inf.to_string()),
        Err(q) => anyhow!(
            "{inf} (listing all such rows failed: {})",
            explain_query_error(&q)
        ),
    }
}
