//! The plays `scrobsync bench` holds back from a load and then lets arrive, to time a sync of
//! the newest plays (default table only). While they are held, they sit in [`TABLE`] and
//! [`MARK`] records the greatest id at that moment; [`restore`] puts them back with their own
//! ids, also after an interrupted bench (`bench` and `seed` call it first). Every mode refuses
//! to read a source while plays are held (`source::held`).

use anyhow::{bail, Result};

pub use crate::source::held::{HOLDING_ENV, TABLE};
/// The table recording the greatest id when the plays were held, and whether they arrived.
pub const MARK: &str = "scrobsync_bench_held_mark";
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

/// Moves the `n` newest plays (by `played_at`, up to now) aside.
pub fn hold_back(client: &mut postgres::Client, n: u64) -> Result<()> {
    restore(client)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "CREATE TABLE {TABLE} AS SELECT id, {COLS} FROM scrobbles
          WHERE played_at <= now() ORDER BY played_at DESC, id DESC LIMIT {n};
         CREATE TABLE {MARK} AS
           SELECT max(id)::int8 AS max_id, (SELECT count(*) FROM {TABLE}) AS n,
                  false AS arrived
             FROM scrobbles;
         DELETE FROM scrobbles s USING {TABLE} h WHERE s.id = h.id;"
    ))?;
    tx.commit()?;
    Ok(())
}

/// The held plays arrive as real scrobbles do: with the ids after every existing one, in
/// `played_at` order.
pub fn arrive(client: &mut postgres::Client) -> Result<()> {
    let mut tx = client.transaction()?;
    tx.batch_execute(&format!(
        "INSERT INTO scrobbles (id, {COLS})
         SELECT (SELECT max_id FROM {MARK}) + row_number() OVER (ORDER BY played_at, id),
                {COLS}
           FROM {TABLE};
         UPDATE {MARK} SET arrived = true;"
    ))?;
    tx.commit()?;
    Ok(())
}

/// Puts held plays back with their own ids, removing the copies that arrived (exactly the
/// ids `arrive` gave them), and drops the bookkeeping tables.
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
