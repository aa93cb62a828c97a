//! User-facing jobs, each composing plan → read → normalise → write with its own transaction
//! boundaries.

pub mod backfill;
pub mod bench;
pub mod demo;
pub mod load;
pub mod status;
pub mod sync;
pub mod verify;
pub mod windows;

use serde::{Deserialize, Serialize};

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
