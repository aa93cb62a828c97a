//! Planning a read: the high-water mark, balanced id slices, and windows of slices.
//!
//! Slices are cut at sampled quantiles of `id`, not evenly between min and max, because real
//! ids are sparse and skewed: an even split would put nearly all rows into one slice. Every
//! slice is bounded by the high-water mark taken once at the start, so rows inserted while a
//! run is going wait for the next run instead of making slices inconsistent.

use super::conn::{explain_query_error, SourceUrl};
use super::{quote_table, COLUMNS};
use anyhow::{anyhow, bail, Context, Result};
use postgres::error::SqlState;
use postgres::types::Type;

/// The table (or, later, mapping) that rows are read from.
#[derive(Debug, Clone)]
pub struct SourceTable {
    /// As given by the user, e.g. `scrobbles` or `public.scrobbles`.
    pub name: String,
}

impl Default for SourceTable {
    fn default() -> Self {
        Self {
            name: "scrobbles".into(),
        }
    }
}

impl SourceTable {
    /// The quoted table name for SQL.
    pub fn sql_name(&self) -> String {
        quote_table(&self.name)
    }

    /// `SELECT <canonical columns> FROM <table>`, the start of every read query.
    pub fn select_sql(&self) -> String {
        format!("SELECT {} FROM {}", COLUMNS.join(", "), self.sql_name())
    }

    /// Checks that the table exists and every column has a type the pipeline can read, before
    /// anything is written. Errors name the table or column and the fix.
    pub fn validate(&self, client: &mut postgres::Client, url: &SourceUrl) -> Result<()> {
        let stmt = match client.prepare(&format!("{} LIMIT 0", self.select_sql())) {
            Ok(s) => s,
            Err(e) => {
                let code = e.code().cloned();
                let msg = explain_query_error(&e);
                return Err(if code == Some(SqlState::UNDEFINED_TABLE) {
                    anyhow!(
                        "source table '{}' not found in database '{}' ({msg}); create it (e.g. `scrobsync seed`) or point --source at the right database",
                        self.name,
                        url.database()
                    )
                } else if code == Some(SqlState::UNDEFINED_COLUMN) {
                    anyhow!(
                        "source table '{}' lacks a required column ({msg}); it needs columns {}",
                        self.name,
                        COLUMNS.join(", ")
                    )
                } else {
                    anyhow!("cannot read source table '{}': {msg}", self.name)
                });
            }
        };
        for (col, name) in stmt.columns().iter().zip(COLUMNS) {
            let ty = col.type_();
            let ok = match name {
                "id" => matches!(*ty, Type::INT8 | Type::INT4 | Type::INT2),
                "played_at" => *ty == Type::TIMESTAMPTZ,
                "duration_ms" => matches!(*ty, Type::INT4 | Type::INT2),
                "loved" => *ty == Type::BOOL,
                "artist_mbid" | "album_mbid" | "track_mbid" => {
                    matches!(*ty, Type::UUID | Type::TEXT | Type::VARCHAR)
                }
                _ => matches!(*ty, Type::TEXT | Type::VARCHAR),
            };
            if !ok {
                bail!(
                    "source column '{}.{}' has type {}, which scrobsync cannot read as {name}; change the column type",
                    self.name,
                    name,
                    ty.name()
                );
            }
        }
        Ok(())
    }
}

/// An inclusive id range `[lo, hi]` read by one partition query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub lo: i64,
    pub hi: i64,
}

/// What a run will read: all ids in `[min_id, hwm]`, cut into slices.
#[derive(Debug, Clone)]
pub struct ReadPlan {
    pub min_id: i64,
    /// The high-water mark: the greatest id this run reads.
    pub hwm: i64,
    /// Estimated number of rows (exact for small tables).
    pub est_rows: u64,
    pub slices: Vec<Slice>,
}

impl ReadPlan {
    /// Groups consecutive slices into windows of `partitions` slices, read in parallel.
    pub fn windows(&self, partitions: usize) -> Vec<Vec<Slice>> {
        self.slices
            .chunks(partitions.max(1))
            .map(|c| c.to_vec())
            .collect()
    }
}

/// Cuts `[min, max]` at the given cut points into contiguous, non-overlapping slices.
/// A cut `c` ends a slice at `c` (inclusive); cuts outside `[min, max)` and duplicates are
/// ignored, so sampled quantiles can be passed as they are.
pub fn cut_slices(min: i64, max: i64, cuts: &[i64]) -> Vec<Slice> {
    if min > max {
        return Vec::new();
    }
    let mut cuts: Vec<i64> = cuts
        .iter()
        .copied()
        .filter(|&c| c >= min && c < max)
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lo = min;
    for c in cuts {
        out.push(Slice { lo, hi: c });
        lo = c + 1;
    }
    out.push(Slice { lo, hi: max });
    out
}

/// Above this estimated size the quantiles come from a block sample instead of every id.
const EXACT_QUANTILE_ROWS: f64 = 2_000_000.0;
/// How many sampled ids a block sample aims for.
const SAMPLE_TARGET: f64 = 300_000.0;

/// Plans a full read of `table`: high-water mark, row estimate and balanced slices of about
/// `rows_per_slice` rows each.
pub fn plan_full(
    client: &mut postgres::Client,
    table: &SourceTable,
    rows_per_slice: usize,
) -> Result<ReadPlan> {
    let t = table.sql_name();
    let row = client
        .query_one(
            &format!("SELECT min(id)::int8, max(id)::int8 FROM {t}"),
            &[],
        )
        .map_err(|e| {
            anyhow!(
                "cannot read id range of '{}': {}",
                table.name,
                explain_query_error(&e)
            )
        })?;
    let (min_id, hwm): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
    let (Some(min_id), Some(hwm)) = (min_id, hwm) else {
        return Ok(ReadPlan {
            min_id: 0,
            hwm: 0,
            est_rows: 0,
            slices: Vec::new(),
        });
    };
    let reltuples: f64 = client
        .query_one(
            "SELECT coalesce((SELECT reltuples::float8 FROM pg_class WHERE oid = to_regclass($1)), -1)",
            &[&table.name],
        )
        .map(|r| r.get(0))
        .unwrap_or(-1.0);

    let (est_rows, sample_clause) = if reltuples < EXACT_QUANTILE_ROWS {
        // Small or never analysed: count exactly, it is cheap at this size.
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {t} WHERE id <= $1"), &[&hwm])
            .context("counting source rows")?
            .get(0);
        (n as u64, String::new())
    } else {
        let pct = (SAMPLE_TARGET / reltuples * 100.0).clamp(0.01, 100.0);
        (reltuples as u64, format!(" TABLESAMPLE SYSTEM ({pct:.4})"))
    };
    let nslices = (est_rows as usize).div_ceil(rows_per_slice.max(1)).max(1);
    let cuts = if nslices > 1 {
        let fractions: Vec<f64> = (1..nslices).map(|i| i as f64 / nslices as f64).collect();
        let row = client
            .query_one(
                &format!(
                    "SELECT percentile_disc($1::float8[]) WITHIN GROUP (ORDER BY id)::int8[] \
                     FROM (SELECT id FROM {t}{sample_clause} WHERE id <= $2) s"
                ),
                &[&fractions, &hwm],
            )
            .context("sampling id quantiles")?;
        let cuts: Option<Vec<Option<i64>>> = row.get(0);
        cuts.unwrap_or_default().into_iter().flatten().collect()
    } else {
        Vec::new()
    };
    Ok(ReadPlan {
        min_id,
        hwm,
        est_rows,
        slices: cut_slices(min_id, hwm, &cuts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_contiguous_and_cover_the_range() {
        let s = cut_slices(1, 100, &[10, 50, 50, 200, -5, 100]);
        assert_eq!(
            s,
            vec![
                Slice { lo: 1, hi: 10 },
                Slice { lo: 11, hi: 50 },
                Slice { lo: 51, hi: 100 }
            ]
        );
    }

    #[test]
    fn extreme_ids_do_not_overflow() {
        let s = cut_slices(i64::MIN, i64::MAX, &[0]);
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            Slice {
                lo: i64::MIN,
                hi: 0
            }
        );
        assert_eq!(
            s[1],
            Slice {
                lo: 1,
                hi: i64::MAX
            }
        );
        assert!(cut_slices(5, 4, &[]).is_empty());
        assert_eq!(cut_slices(7, 7, &[7]), vec![Slice { lo: 7, hi: 7 }]);
    }

    #[test]
    fn windows_group_slices_in_order() {
        let plan = ReadPlan {
            min_id: 1,
            hwm: 50,
            est_rows: 50,
            slices: cut_slices(1, 50, &[10, 20, 30, 40]),
        };
        let w = plan.windows(2);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0][0].lo, 1);
        assert_eq!(w[2][0], Slice { lo: 41, hi: 50 });
    }
}
