//! `scrobsync seed`: appends generated scrobbles ([`crate::fixtures`]) to the default source
//! table with binary `COPY`, in one transaction.

use super::bench::held;
use crate::fixtures::copy::{copy_header, encode_binary_row};
use crate::fixtures::{mix, Generator, SeedOptions};
use crate::source::conn::{explain_query_error, SourceUrl};
use crate::source::plan::SourceTable;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;

/// DDL of the default source table.
pub const SOURCE_DDL: &str = "CREATE TABLE IF NOT EXISTS scrobbles (
    id bigint PRIMARY KEY,
    username text NOT NULL,
    played_at timestamptz NOT NULL,
    artist_name text NOT NULL,
    artist_mbid uuid NULL,
    album_name text NULL,
    album_mbid uuid NULL,
    track_name text NOT NULL,
    track_mbid uuid NULL,
    duration_ms integer NULL,
    loved boolean NOT NULL DEFAULT false
)";

/// Result of a seed run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedSummary {
    pub mode: &'static str,
    pub rows: u64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub seconds: f64,
}

/// Creates the default source table if absent and appends `opts.rows` generated rows after its
/// greatest id, in one transaction.
pub fn seed(url: &SourceUrl, opts: &SeedOptions) -> Result<SeedSummary> {
    let mut client = url.connect()?;
    // New ids continue after the greatest one, which must count plays that a bench of an
    // earlier build held aside (put back first); and no bench may run meanwhile.
    held::lock(&mut client)?;
    seed_locked(&mut client, opts)
}

/// [`seed`] over a session that already holds the bench lock (a `bench` seeding its source).
pub fn seed_locked(client: &mut postgres::Client, opts: &SeedOptions) -> Result<SeedSummary> {
    if opts.users == 0 {
        bail!("--users must be at least 1");
    }
    let t0 = std::time::Instant::now();
    held::restore(client)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(SOURCE_DDL)
        .map_err(|e| anyhow!("cannot create table scrobbles: {}", explain_query_error(&e)))?;
    let table = SourceTable::default();
    let max_id: Option<i64> = tx
        .query_one(
            &format!("SELECT max(id)::int8 FROM {}", table.sql_name()),
            &[],
        )?
        .get(0);
    let after = max_id.unwrap_or(0);
    // Rows after the first seed of a table use other random streams, so appends add new data.
    let opts_eff = SeedOptions {
        seed: if max_id.is_some() {
            mix(opts.seed ^ after as u64)
        } else {
            opts.seed
        },
        ..opts.clone()
    };
    let mut gen = Generator::new(opts_eff, after);
    if let Some(m) = max_id {
        if m > i64::MAX - (1 << 62) {
            bail!("table scrobbles already ends at id {m}; seed into a new database instead");
        }
    }
    let mut w = tx
        .copy_in(
            "COPY scrobbles (id, username, played_at, artist_name, artist_mbid, album_name, \
             album_mbid, track_name, track_mbid, duration_ms, loved) FROM STDIN (FORMAT binary)",
        )
        .map_err(|e| anyhow!("COPY into scrobbles failed: {}", explain_query_error(&e)))?;
    let mut buf = copy_header();
    let (mut first, mut last, mut n) = (None, None, 0u64);
    for row in &mut gen {
        first.get_or_insert(row.id);
        last = Some(row.id);
        n += 1;
        encode_binary_row(&mut buf, &row);
        if buf.len() >= 1 << 20 {
            w.write_all(&buf).context("sending rows to PostgreSQL")?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    w.write_all(&buf).context("sending rows to PostgreSQL")?;
    w.finish()
        .map_err(|e| anyhow!("COPY into scrobbles failed: {}", explain_query_error(&e)))?;
    // As a real source has: backfill and verify windows select by played_at.
    tx.batch_execute("CREATE INDEX IF NOT EXISTS scrobbles_played_at ON scrobbles (played_at)")
        .map_err(|e| {
            anyhow!(
                "cannot index scrobbles.played_at: {}",
                explain_query_error(&e)
            )
        })?;
    tx.commit()?;
    // After the commit: a failed ANALYZE inside the transaction would have rolled the rows
    // back at COMMIT without an error. Statistics are a nicety; the rows are kept either way.
    if let Err(e) = client.batch_execute("ANALYZE scrobbles") {
        tracing::warn!("ANALYZE scrobbles after seeding failed: {e}");
    }
    Ok(SeedSummary {
        mode: "seed",
        rows: n,
        first_id: first,
        last_id: last,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
