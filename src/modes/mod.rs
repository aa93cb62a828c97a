//! User-facing jobs, each composing plan → read → normalise → write with its own transaction
//! boundaries.

pub mod attributes;
pub mod backfill;
pub mod bench;
pub mod demo;
pub mod load;
pub mod replace;
pub mod seed;
pub mod status;
pub mod sync;
pub mod verify;
pub mod windows;

use crate::sink::state;
use crate::source::identity::SourceIdentity;
use crate::source::mapping::SourceTable;
use crate::source::SourceUrl;
use anyhow::{bail, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// Refuses to change a target with rows of another source than the one it was loaded from,
/// unless `allow` (`--allow-other-source`): then the run's source becomes the target's, and the
/// returned note (for the run log) says what it replaced. Call inside the run's transaction.
pub fn check_source(
    conn: &Connection,
    target: &std::path::Path,
    url: &SourceUrl,
    table: &SourceTable,
    allow: bool,
) -> Result<Option<String>> {
    let this = SourceIdentity::of(url, table);
    let stored = match state::get(conn, state::SOURCE_IDENTITY)? {
        Some(s) => SourceIdentity::from_state(&s),
        // A target written before identities were recorded: its redacted source URL.
        None => state::get(conn, "source")?
            .and_then(|s| SourceUrl::parse(&s).ok())
            .map(|u| SourceIdentity {
                mapping: String::new(),
                server: String::new(),
                ..SourceIdentity::of(&u, table)
            }),
    };
    let Some(stored) = stored else {
        state::set(conn, state::SOURCE_IDENTITY, &this.to_state())?;
        return Ok(None);
    };
    if stored.same_as(&this) {
        if stored.needs_update() {
            state::set(conn, state::SOURCE_IDENTITY, &this.to_state())?;
        }
        return Ok(None);
    }
    if !allow {
        bail!(
            "{} was loaded {}; use its source, or pass --allow-other-source to make this one its source",
            target.display(),
            stored.difference(&this)
        );
    }
    tracing::warn!(
        "{} was loaded from {}; --allow-other-source makes {} its source",
        target.display(),
        stored.describe(),
        this.describe()
    );
    state::set(conn, state::SOURCE_IDENTITY, &this.to_state())?;
    state::set(conn, "source", url.redacted())?;
    Ok(Some(format!(
        "{} (--allow-other-source; the target was from {})",
        url.redacted(),
        stored.describe()
    )))
}

/// An id as text for JSON: ids reach 2^63, and JSON readers keep only 53 bits of a number.
pub fn id_text(id: Option<i64>) -> Option<String> {
    id.map(|i| i.to_string())
}

/// Unix microseconds as RFC 3339 UTC text (None beyond chrono's range).
pub fn rfc3339_us(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Unix seconds as RFC 3339 UTC text.
pub fn rfc3339_s(s: i64) -> Option<String> {
    chrono::DateTime::from_timestamp(s, 0).map(|d| d.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// Rows per target table.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TableRows {
    pub users: u64,
    pub artists: u64,
    pub albums: u64,
    pub tracks: u64,
    pub scrobbles: u64,
}

/// Seconds spent per stage. Read, normalise and write overlap, so they can add up to more than
/// the wall time; `total` is the wall time.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageSeconds {
    pub plan: f64,
    pub read: f64,
    pub normalize: f64,
    pub write: f64,
    pub index: f64,
    pub check: f64,
    pub total: f64,
}
