//! The one trace of `scrobsync bench` on the read path: while an interrupted bench holds the
//! newest plays aside (see `modes::bench::held`), the source is incomplete, and every mode
//! refuses to read it rather than miss them quietly.

use anyhow::{bail, Result};

/// The table a `bench` holds plays aside in.
pub const TABLE: &str = "scrobsync_bench_held";
/// Set by `bench` for the runs it times: they read the source while plays are held.
pub const HOLDING_ENV: &str = "SCROBSYNC_BENCH_HOLDING";

/// Fails when plays are held aside (an interrupted `bench`): the source is incomplete then,
/// and reading it would quietly miss them. The runs a `bench` times are let through.
pub fn refuse_if_held(client: &mut crate::source::conn::ReadOnlyClient) -> Result<()> {
    if std::env::var_os(HOLDING_ENV).is_some() {
        return Ok(());
    }
    let held: bool = client
        .query_one(&format!("SELECT to_regclass('{TABLE}') IS NOT NULL"), &[])?
        .get(0);
    if held {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])?
            .get(0);
        bail!(
            "an interrupted `scrobsync bench` holds {n} plays of this database aside (table {TABLE}), \
             so the source is incomplete; put them back with `scrobsync bench --restore` (same --source) and run again"
        );
    }
    Ok(())
}
