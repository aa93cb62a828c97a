//! Calendar windows in UTC — days, ISO weeks (Monday first) and months — and the date
//! arguments that bound them. Shared by `backfill` and `verify`, and mirrored in SQL so that
//! PostgreSQL and scrobsync put every row in the same window.

use anyhow::{anyhow, bail, Result};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum By {
    Day,
    Week,
    Month,
}

impl By {
    pub fn name(self) -> &'static str {
        match self {
            By::Day => "day",
            By::Week => "week",
            By::Month => "month",
        }
    }

    /// Start (Unix seconds) of the window that contains `t`.
    pub fn floor(self, t: i64) -> i64 {
        match self {
            By::Day => t - t.rem_euclid(86_400),
            // 1970-01-05 (day 4) was a Monday.
            By::Week => {
                let day = t.div_euclid(86_400);
                (day - (day - 4).rem_euclid(7)) * 86_400
            }
            By::Month => match DateTime::from_timestamp(t, 0) {
                Some(dt) => month_start(dt.year(), dt.month()),
                None => t,
            },
        }
    }

    /// Start of the window after the one starting at `start`.
    pub fn next(self, start: i64) -> i64 {
        match self {
            By::Day => start + 86_400,
            By::Week => start + 7 * 86_400,
            By::Month => match DateTime::from_timestamp(start, 0) {
                Some(dt) if dt.month() == 12 => month_start(dt.year() + 1, 1),
                Some(dt) => month_start(dt.year(), dt.month() + 1),
                None => i64::MAX,
            },
        }
    }

    /// A window's number: days or weeks since the epoch, or months since year 0 (astronomical
    /// years: 1 BC is 0). Both sides of `verify` number their rows' windows with it.
    pub fn key(self, t: i64) -> i64 {
        match self {
            By::Day => t.div_euclid(86_400),
            By::Week => (t.div_euclid(86_400) - 4).div_euclid(7),
            By::Month => match DateTime::from_timestamp(t, 0) {
                Some(dt) => dt.year() as i64 * 12 + dt.month0() as i64,
                None => i64::MIN,
            },
        }
    }

    /// Start (Unix seconds) of the window numbered `key`.
    pub fn key_start(self, key: i64) -> i64 {
        match self {
            By::Day => key * 86_400,
            By::Week => (key * 7 + 4) * 86_400,
            By::Month => month_start(key.div_euclid(12) as i32, key.rem_euclid(12) as u32 + 1),
        }
    }

    /// A short label for a window: `2024-03-05`, `2024-W10 (2024-03-04)`, `2024-03`.
    pub fn label(self, start: i64) -> String {
        let Some(dt) = DateTime::from_timestamp(start, 0) else {
            return start.to_string();
        };
        match self {
            By::Day => dt.format("%Y-%m-%d").to_string(),
            By::Week => format!("week of {}", dt.format("%Y-%m-%d")),
            By::Month => dt.format("%Y-%m").to_string(),
        }
    }
}

fn month_start(year: i32, month: u32) -> i64 {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp())
        .unwrap_or(i64::MIN)
}

/// The first second of the windows: PostgreSQL's first timestamp (4714-11-24 BC).
pub const FIRST_WINDOW_SECOND: i64 = -210_866_803_200;

/// The last second of the windows: the end of the year 200000, far beyond any play, and well
/// within what the calendar and a window's bounds in microseconds can express. (A target's
/// `played_at` beyond it is damage: a load refuses timestamps past the year 294246.)
pub const LAST_WINDOW_SECOND: i64 = 6_249_254_803_199;

/// The key of the seconds outside every window (see [`DayKeys::key`]).
pub const OUTSIDE: i64 = i64::MAX;

/// [`By::key`] of many epoch seconds in no particular order (a stream's rows come in id order),
/// cached per UTC day: every window is a run of whole days, so the day decides the key.
pub struct DayKeys {
    by: By,
    /// (day, key), direct-mapped by the day's low bits.
    slots: Vec<(i64, i64)>,
}

impl DayKeys {
    const SLOTS: usize = 4096;

    pub fn new(by: By) -> Self {
        Self {
            by,
            slots: vec![(i64::MIN, 0); Self::SLOTS],
        }
    }

    /// The window key of `epoch`, or [`OUTSIDE`] for a second outside the windows.
    pub fn key(&mut self, epoch: i64) -> i64 {
        if !(FIRST_WINDOW_SECOND..=LAST_WINDOW_SECOND).contains(&epoch) {
            return OUTSIDE;
        }
        let day = epoch.div_euclid(86_400);
        let slot = &mut self.slots[(day as u64 as usize) & (Self::SLOTS - 1)];
        if slot.0 != day {
            *slot = (day, self.by.key(epoch));
        }
        slot.1
    }
}

/// Parses `YYYY-MM-DD` (UTC midnight), `YYYY-MM-DDTHH:MM:SS` (UTC) or an RFC 3339 time with
/// an offset, into Unix seconds.
pub fn parse_date(flag: &str, s: &str) -> Result<i64> {
    let s = s.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp());
    }
    // Windows are whole seconds: a fraction would be silently dropped, so it is refused.
    let whole = |secs: i64, nanos: u32| -> Result<i64> {
        if nanos != 0 {
            bail!("{flag} '{s}' has a fraction of a second; windows start at whole seconds, give e.g. 2024-03-01T12:00:00Z");
        }
        Ok(secs)
    };
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return whole(dt.timestamp(), dt.timestamp_subsec_nanos());
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, f) {
            let dt = dt.and_utc();
            return whole(dt.timestamp(), dt.timestamp_subsec_nanos());
        }
    }
    Err(anyhow!(
        "cannot read {flag} '{s}' as a date; use YYYY-MM-DD (UTC) or e.g. 2024-03-01T00:00:00Z"
    ))
}

/// Checks `from < to` for the flags of a command.
pub fn check_range(from: i64, to: i64) -> Result<()> {
    if from >= to {
        bail!("--from must be before --to (the range is [from, to), half-open)");
    }
    Ok(())
}

/// The half-open windows `[start, end)` that cover `[from, to)`, cut at calendar boundaries
/// (the first and last are clipped to the range).
pub fn split(from: i64, to: i64, by: By) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut start = from;
    while start < to {
        let end = by.next(by.floor(start)).min(to);
        if end <= start {
            break;
        }
        out.push((start, end));
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i64 {
        parse_date("--from", s).unwrap()
    }

    /// The cache gives By::key for any second, also when days collide in its slots.
    #[test]
    fn day_keys_equal_by_key() {
        for by in [By::Day, By::Week, By::Month] {
            let mut cache = DayKeys::new(by);
            let mut t: i64 = -210_000_000_000; // about 4700 BC
            let mut x: u64 = 7;
            for _ in 0..200_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // jumps of up to ~3 years either way, and seconds at day edges
                t += (x % 200_000_000) as i64 - 99_000_000;
                for s in [
                    t,
                    t.div_euclid(86_400) * 86_400,
                    t.div_euclid(86_400) * 86_400 - 1,
                ] {
                    let want = if (FIRST_WINDOW_SECOND..=LAST_WINDOW_SECOND).contains(&s) {
                        by.key(s)
                    } else {
                        OUTSIDE
                    };
                    assert_eq!(cache.key(s), want, "{by:?} at {s}");
                }
            }
            assert_eq!(cache.key(LAST_WINDOW_SECOND + 1), OUTSIDE);
            assert_eq!(cache.key(i64::MIN), OUTSIDE);
            let last = by.floor(LAST_WINDOW_SECOND);
            assert_eq!(cache.key(LAST_WINDOW_SECOND), by.key(last));
            assert!(
                by.next(last) > LAST_WINDOW_SECOND,
                "{by:?}: the last window is whole"
            );
        }
    }

    #[test]
    fn months_weeks_days() {
        let w = split(d("2024-01-15"), d("2024-04-01"), By::Month);
        assert_eq!(
            w,
            vec![
                (d("2024-01-15"), d("2024-02-01")),
                (d("2024-02-01"), d("2024-03-01")),
                (d("2024-03-01"), d("2024-04-01"))
            ]
        );
        assert_eq!(By::Week.floor(d("2024-03-07")), d("2024-03-04"), "a Monday");
        assert_eq!(By::Week.floor(d("1969-12-31")), d("1969-12-29"));
        assert_eq!(By::Day.floor(-1), -86_400, "floor before 1970");
        assert_eq!(split(d("2024-01-01"), d("2024-01-03"), By::Day).len(), 2);
        assert_eq!(By::Month.next(d("2023-12-01")), d("2024-01-01"));
        assert_eq!(By::Month.floor(-1), d("1969-12-01"));
        assert_eq!(By::Month.label(d("2024-03-01")), "2024-03");
        for by in [By::Day, By::Week, By::Month] {
            for t in [-210_866_803_200, -1, 0, 1_700_000_000, 253_402_300_799] {
                let k = by.key(t);
                assert_eq!(by.key_start(k), by.floor(t), "{by:?} {t}");
                assert!(by.key_start(k) <= t && t < by.next(by.key_start(k)));
            }
        }
    }

    #[test]
    fn dates_and_errors() {
        assert_eq!(d("1970-01-02"), 86_400);
        assert_eq!(d("1970-01-01T01:00:00+01:00"), 0);
        assert_eq!(d("1970-01-01 00:00:10"), 10);
        assert!(parse_date("--from", "2024-13-01").is_err());
        assert!(parse_date("--from", "yesterday").is_err());
        assert!(check_range(5, 5).is_err());
    }
}
