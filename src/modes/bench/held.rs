//! The sync measurement of `scrobsync bench` (default table only), on a scratch copy: the
//! source table is only ever read. [`prepare`] copies every play but the newest `n` into
//! [`SCRATCH`] and keeps those `n` in [`SCRATCH_HELD`]; a load reads the copy through a
//! mapping ([`mapping`]); [`arrive`] adds the held plays with ids after every existing one, as
//! new scrobbles arrive; the timed sync reads them; [`drop_scratch`] removes both tables (also
//! those an interrupted bench left).
//!
//! Builds before this one held the plays aside in the source table itself; [`restore`] still
//! puts such plays back (`bench --restore`, and first thing in every `bench` and `seed`).

use anyhow::{bail, Result};

/// The scratch copy the sync measurement loads and syncs.
pub const SCRATCH: &str = "scrobsync_bench_sync";
/// The newest plays, held back from the scratch copy until they arrive.
pub const SCRATCH_HELD: &str = "scrobsync_bench_sync_held";
/// Where builds before this one held plays aside (see [`restore`]).
const TABLE: &str = "scrobsync_bench_held";
/// Where builds before this one recorded the greatest id when plays were held, and whether
/// they arrived.
const MARK: &str = "scrobsync_bench_held_mark";
/// The advisory lock a `bench` (or a `seed`) holds on its database while it runs.
const LOCK: i64 = 0x5C0B_5C0B_BE4C;

/// Takes the session's bench lock, or fails when another `bench` or `seed` holds it; the
/// lock lasts until `client` is closed.
pub fn lock(client: &mut postgres::Client) -> Result<()> {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])?
        .get(0);
    if !got {
        bail!("another `scrobsync bench` or `scrobsync seed` is running on this database; run this when it has finished");
    }
    Ok(())
}

/// The default table's columns, named so that no column order is assumed.
const COLS: &str = "username, played_at, artist_name, artist_mbid, album_name, album_mbid, \
                    track_name, track_mbid, duration_ms, loved";

/// Copies the source's plays but the `n` newest (by `played_at`, up to now) into [`SCRATCH`]
/// (with the source's indexes on `id` and `played_at`), and those `n` into [`SCRATCH_HELD`].
pub fn prepare(client: &mut postgres::Client, n: u64) -> Result<()> {
    drop_scratch(client)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "CREATE TABLE {SCRATCH_HELD} AS SELECT id, {COLS} FROM scrobbles
          WHERE played_at <= now() ORDER BY played_at DESC, id DESC LIMIT {n};
         CREATE TABLE {SCRATCH} AS SELECT id, {COLS} FROM scrobbles s
          WHERE NOT EXISTS (SELECT 1 FROM {SCRATCH_HELD} h WHERE h.id = s.id);
         ALTER TABLE {SCRATCH} ADD PRIMARY KEY (id);
         CREATE INDEX ON {SCRATCH} (played_at);"
    ))?;
    tx.commit()?;
    client.batch_execute(&format!("VACUUM (ANALYZE) {SCRATCH}"))?;
    Ok(())
}

/// The mapping file's text that reads [`SCRATCH`] (the default table's columns).
pub fn mapping() -> String {
    let columns: String = std::iter::once("id")
        .chain(COLS.split(',').map(str::trim))
        .map(|c| format!("{c} = \"{c}\"\n"))
        .collect();
    format!("[source]\ntable = \"{SCRATCH}\"\n[source.columns]\n{columns}")
}

/// The held plays arrive as real scrobbles do: with the ids after every existing one, in
/// `played_at` order.
pub fn arrive(client: &mut postgres::Client) -> Result<()> {
    client.batch_execute(&format!(
        "INSERT INTO {SCRATCH} (id, {COLS})
         SELECT coalesce((SELECT max(id) FROM {SCRATCH}), (SELECT max(id) FROM scrobbles), 0)
                + row_number() OVER (ORDER BY played_at, id),
                {COLS}
           FROM {SCRATCH_HELD};
         ANALYZE {SCRATCH};"
    ))?;
    Ok(())
}

/// Drops the scratch tables, if there are any.
pub fn drop_scratch(client: &mut postgres::Client) -> Result<()> {
    client.batch_execute(&format!(
        "DROP TABLE IF EXISTS {SCRATCH}; DROP TABLE IF EXISTS {SCRATCH_HELD};"
    ))?;
    Ok(())
}

/// Puts back plays that a bench of an earlier build held aside in the source table, removing
/// the copies that arrived (exactly the ids it gave them), and drops its bookkeeping tables.
pub fn restore(client: &mut postgres::Client) -> Result<u64> {
    let held: bool = client
        .query_one(&format!("SELECT to_regclass('{MARK}') IS NOT NULL"), &[])?
        .get(0);
    if !held {
        return Ok(0);
    }
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "DELETE FROM scrobbles USING {MARK} m
          WHERE m.arrived AND id > m.max_id AND id <= m.max_id + m.n;"
    ))?;
    let clash: i64 = tx
        .query_one(
            &format!("SELECT count(*) FROM scrobbles s JOIN {TABLE} h ON s.id = h.id"),
            &[],
        )?
        .get(0);
    if clash > 0 {
        bail!(
            "{clash} row(s) of table scrobbles took the ids of plays an interrupted `scrobsync bench` \
             holds in {TABLE}; move them, then run `scrobsync bench` again to put the held plays back"
        );
    }
    let back = tx.execute(
        &format!("INSERT INTO scrobbles (id, {COLS}) SELECT id, {COLS} FROM {TABLE}"),
        &[],
    )?;
    tx.batch_execute(&format!("DROP TABLE {TABLE}; DROP TABLE {MARK};"))?;
    tx.commit()?;
    client.batch_execute("VACUUM (ANALYZE) scrobbles")?;
    Ok(back)
}
