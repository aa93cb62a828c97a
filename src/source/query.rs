//! The SQL of every read of source rows, built in one typed place: an id slice, an optional
//! `played_at` range and an optional id list become the WHERE clause that the readers, the
//! planner and `verify` share. Nothing else writes `" AND …"` fragments.

use super::mapping::SourceTable;

/// PostgreSQL's smallest timestamptz, 4714-11-24 00:00:00 BC, in Unix microseconds.
pub const PG_MIN_US: i64 = -210_866_803_200_000_000;

/// An inclusive id range `[lo, hi]` read by one partition query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub lo: i64,
    pub hi: i64,
}

impl Slice {
    /// Every id.
    pub const ALL: Slice = Slice {
        lo: i64::MIN,
        hi: i64::MAX,
    };
}

/// A range of `played_at` values in Unix microseconds: `lo` inclusive, `hi` inclusive or not;
/// a missing end is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    pub hi_inclusive: bool,
}

impl TimeRange {
    /// `[lo, hi]`: what a time-cursor sync reads (from the mark minus the lookback).
    pub fn from_until(lo: i64, hi: i64) -> Self {
        Self {
            lo: Some(lo),
            hi: Some(hi),
            hi_inclusive: true,
        }
    }

    /// `[lo, hi)`: a backfill or verify window.
    pub fn half_open(lo: i64, hi: i64) -> Self {
        Self {
            lo: Some(lo),
            hi: Some(hi),
            hi_inclusive: false,
        }
    }

    /// `[lo, hi)` in Unix seconds, either end optional (verify's `--from`/`--to`).
    pub fn seconds(lo: Option<i64>, hi: Option<i64>) -> Self {
        Self {
            lo: lo.map(|s| s.saturating_mul(1_000_000)),
            hi: hi.map(|s| s.saturating_mul(1_000_000)),
            hi_inclusive: false,
        }
    }

    /// A range that holds nothing.
    pub fn empty() -> Self {
        Self::half_open(0, 0)
    }

    /// The SQL condition on `played_at` (`true` when unbounded).
    pub fn sql(&self) -> String {
        // An end before PostgreSQL's first timestamp cannot be written as one (a month window
        // around it starts earlier): every finite timestamp lies after it, `-infinity` before.
        let bound = |us: i64| {
            if us < PG_MIN_US {
                "'-infinity'::timestamptz".to_string()
            } else {
                ts_sql(us)
            }
        };
        let mut parts = Vec::new();
        if let Some(lo) = self.lo {
            let op = if lo < PG_MIN_US { ">" } else { ">=" };
            parts.push(format!("played_at {op} {}", bound(lo)));
        }
        if let Some(hi) = self.hi {
            let op = if self.hi_inclusive || hi < PG_MIN_US {
                "<="
            } else {
                "<"
            };
            parts.push(format!("played_at {op} {}", bound(hi)));
        }
        if parts.is_empty() {
            "true".into()
        } else {
            parts.join(" AND ")
        }
    }
}

/// SQL for a `timestamptz` given in Unix microseconds, exact at any magnitude.
pub fn ts_sql(us: i64) -> String {
    format!("(timestamptz 'epoch' + {us}::int8 * interval '1 microsecond')")
}

/// The conditions a window adds to each of its id slices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub played_at: Option<TimeRange>,
    /// Only these ids (a backfill's rows that moved out of their window).
    pub ids: Option<Vec<i64>>,
    /// Only ids in these inclusive ranges (a sync's open ids, see `sink::open_ids`).
    pub ranges: Option<Vec<(i64, i64)>>,
}

/// Ranges at most this wide are written as a list of their ids (one index probe for the list)
/// rather than as a `BETWEEN` each.
pub(crate) const LIST_WIDTH: i64 = 16;

/// Whether the id range `[lo, hi]` is written as a list of its ids (else as a `BETWEEN`).
pub(crate) fn listed(lo: i64, hi: i64) -> bool {
    (hi as i128 - lo as i128) < LIST_WIDTH as i128
}

impl Filter {
    pub fn played_at(range: TimeRange) -> Self {
        Self {
            played_at: Some(range),
            ..Self::default()
        }
    }

    /// Only ids in `ranges` (inclusive, disjoint).
    pub fn id_ranges(ranges: Vec<(i64, i64)>) -> Self {
        Self {
            ranges: Some(ranges),
            ..Self::default()
        }
    }

    /// The WHERE clause of one slice with these conditions.
    pub fn where_sql(&self, slice: Slice) -> String {
        let mut sql = format!("id BETWEEN {} AND {}", slice.lo, slice.hi);
        if let Some(r) = &self.played_at {
            sql.push_str(" AND ");
            sql.push_str(&r.sql());
        }
        if let Some(ids) = &self.ids {
            let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
            sql.push_str(&format!(" AND id IN ({})", list.join(",")));
        }
        if let Some(ranges) = &self.ranges {
            let mut list = Vec::new();
            let mut terms = Vec::new();
            for &(lo, hi) in ranges {
                if listed(lo, hi) {
                    list.extend((lo..=hi).map(|i| i.to_string()));
                } else {
                    terms.push(format!("id BETWEEN {lo} AND {hi}"));
                }
            }
            if !list.is_empty() {
                // One array constant: PostgreSQL parses it at once, where an IN list of
                // thousands of constants costs a parse and a plan node each.
                terms.push(format!("id = ANY('{{{}}}'::int8[])", list.join(",")));
            }
            if terms.is_empty() {
                terms.push("false".into());
            }
            sql.push_str(&format!(" AND ({})", terms.join(" OR ")));
        }
        sql
    }
}

/// The partition query of one slice: the canonical columns of the rows it selects.
pub fn slice_query(table: &SourceTable, slice: Slice, filter: &Filter) -> String {
    format!("{} WHERE {}", table.select_sql(), filter.where_sql(slice))
}

/// What one window reads: the same conditions over each of its id slices, in parallel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpec {
    pub slices: Vec<Slice>,
    pub filter: Filter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_before_the_first_timestamp_need_no_timestamp() {
        let month = TimeRange::half_open(PG_MIN_US - 86_400_000_000, PG_MIN_US + 1);
        assert_eq!(
            month.sql(),
            format!(
                "played_at > '-infinity'::timestamptz AND played_at < {}",
                ts_sql(PG_MIN_US + 1)
            )
        );
        let before = TimeRange::half_open(PG_MIN_US - 2, PG_MIN_US - 1);
        assert_eq!(
            before.sql(),
            "played_at > '-infinity'::timestamptz AND played_at <= '-infinity'::timestamptz"
        );
        assert_eq!(
            TimeRange::half_open(PG_MIN_US, 0).sql(),
            format!(
                "played_at >= {} AND played_at < {}",
                ts_sql(PG_MIN_US),
                ts_sql(0)
            )
        );
    }

    #[test]
    fn where_clauses() {
        let f = Filter {
            played_at: Some(TimeRange::half_open(0, 1_000_000)),
            ids: Some(vec![3, -4]),
            ranges: None,
        };
        let w = f.where_sql(Slice { lo: -5, hi: 9 });
        assert_eq!(
            w,
            "id BETWEEN -5 AND 9 AND played_at >= (timestamptz 'epoch' + 0::int8 * interval '1 microsecond') \
             AND played_at < (timestamptz 'epoch' + 1000000::int8 * interval '1 microsecond') AND id IN (3,-4)"
        );
        let open = Filter::id_ranges(vec![(1, 3), (10, 100), (i64::MAX, i64::MAX)]);
        assert_eq!(
            open.where_sql(Slice::ALL),
            format!(
                "id BETWEEN {} AND {} AND (id BETWEEN 10 AND 100 OR id = ANY('{{1,2,3,{}}}'::int8[]))",
                i64::MIN,
                i64::MAX,
                i64::MAX
            )
        );
        assert!(Filter::id_ranges(vec![])
            .where_sql(Slice::ALL)
            .ends_with("AND (false)"));
        assert_eq!(TimeRange::seconds(None, None).sql(), "true");
        assert!(TimeRange::seconds(Some(1), None)
            .sql()
            .starts_with("played_at >= "));
        assert!(TimeRange::from_until(1, 2).sql().contains("<="));
    }
}
