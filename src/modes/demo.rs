//! The demo flow behind the README's first command: make sure a demo database with generated
//! scrobbles exists on the given server, then hand back its URL for a normal load.

use super::seed::seed;
use crate::fixtures::SeedOptions;
use crate::source::conn::explain_query_error;
use crate::source::quote_ident;
use crate::source::SourceUrl;
use anyhow::{anyhow, Result};

/// Creates database `db` next to `admin`'s database if needed and seeds `rows` scrobbles when
/// its table is missing or empty. `status` receives one-line notes of what was done.
pub fn prepare(
    admin: &SourceUrl,
    db: &str,
    rows: u64,
    status: &mut dyn FnMut(&str),
) -> Result<SourceUrl> {
    let mut client = admin.connect()?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(db)))
            .map_err(|e| anyhow!("cannot create database '{db}': {}; pass --source with a user allowed to create databases", explain_query_error(&e)))?;
        status(&format!("created database {db}"));
    }
    let url = admin.with_database(db);
    let mut c = url.connect()?;
    let table_exists = c
        .query_one("SELECT to_regclass('scrobbles') IS NOT NULL", &[])?
        .get::<_, bool>(0);
    let have = table_exists
        && c.query_opt("SELECT 1 FROM scrobbles LIMIT 1", &[])?
            .is_some();
    if !have {
        status(&format!("seeding {rows} scrobbles into {db} ..."));
        let s = seed(
            &url,
            &SeedOptions {
                rows,
                users: 50,
                seed: 42,
            },
        )?;
        status(&format!("seeded {} rows in {:.1} s", s.rows, s.seconds));
    } else {
        status(&format!(
            "database {db} already has scrobbles; loading them"
        ));
    }
    Ok(url)
}

pub use crate::sink::questions::{top_artists, TOP_ARTISTS_SQL};

/// The README's first command: a demo database of `rows` generated scrobbles (made if
/// needed, see [`prepare`]) loaded into `target` with the default options.
pub fn run(
    admin: &SourceUrl,
    db: &str,
    rows: u64,
    target: &std::path::Path,
    progress: &dyn crate::progress::Progress,
    status: &mut dyn FnMut(&str),
) -> Result<super::load::LoadSummary> {
    if db.is_empty() || db.contains('\0') {
        anyhow::bail!("--database must be a non-empty name");
    }
    let url = prepare(admin, db, rows, status)?;
    let opts = super::load::LoadOptions {
        source: url,
        table: crate::source::mapping::SourceSpec::Default,
        target: target.to_path_buf(),
        partitions: crate::source::plan::default_partitions(),
        batch_rows: 50_000,
        indexes: crate::sink::schema::IndexSet::Essential,
        reader: Default::default(),
        force: false,
        fts: false,
        check: Default::default(),
        retry: Default::default(),
        resume: false,
    };
    super::load::run(&opts, progress)
}
