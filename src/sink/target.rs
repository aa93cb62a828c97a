//! An existing target: opening it safely, the stored marks, atomic replacement by a full load,
//! and the [`Resolver`] that finds dimension rows already in it through their unique indexes.
//!
//! A target is a file other programs may have open, and SQLite keeps side files beside it
//! (`-journal`, `-wal`, `-shm`) that belong to that very file. The rules here:
//! - every open waits a few seconds for another process's lock, then says the file is in use
//!   (never that it is not a database);
//! - every open may roll back a hot journal left by a killed run (read-only commands too: they
//!   open read-write with `query_only`, so SQLite can finish the roll-back);
//! - a write transaction checks that the path still names the file it opened, so a run that
//!   waited while a `load` replaced the target never commits into the replaced file;
//! - a load replaces the target only while it holds the old file's exclusive lock, after SQLite
//!   rolled back any hot journal, and removes the old file's side files before the rename, so
//!   no journal of the old file can ever be played into the new one.

use crate::normalize::registry::{Registry, Resolver};
use anyhow::{anyhow, bail, Context, Result};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long any command waits for another process's lock on the target before it gives up.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// SQLite's extended code for "a hot journal needs rolling back, but the file is read-only".
const SQLITE_READONLY_ROLLBACK: i32 = 776;

/// The side files SQLite keeps beside a database file.
pub const SIDE_FILES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// PRAGMAs for changing an existing target in place: the rollback journal makes every run's
/// single transaction atomic across crashes and kills; a large cache keeps the run in memory.
const INCREMENTAL_PRAGMAS: &str = "
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = FULL;
PRAGMA cache_size = -131072;
PRAGMA temp_store = MEMORY;
PRAGMA foreign_keys = OFF;
";

/// (device, inode) of the file a path names now.
type FileId = (u64, u64);

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// The side file `suffix` of `path` (`music.sqlite-journal`).
pub fn side_file(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// The target is locked by another process.
#[derive(Debug)]
pub struct InUse(String);

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InUse {}

/// Turns an SQLite error on the target into one line that names the problem and the fix.
pub fn explain(path: &Path, e: &rusqlite::Error) -> anyhow::Error {
    let p = path.display();
    let extended = e.sqlite_error().map(|s| s.extended_code);
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => InUse(format!(
            "{p} is in use by another process (locked); retry when it finishes"
        ))
        .into(),
        Some(ErrorCode::NotADatabase) => {
            anyhow!("{p} is not a SQLite database; choose another target path")
        }
        Some(ErrorCode::ReadOnly) if extended == Some(SQLITE_READONLY_ROLLBACK) => anyhow!(
            "{p} holds an unfinished transaction of an interrupted run ({p}-journal) that needs write access to roll back; make the file and its folder writable, then run the command again"
        ),
        Some(ErrorCode::DatabaseCorrupt) => anyhow!(
            "{p} is damaged ({e}); rebuild it with `scrobsync load --force`"
        ),
        Some(ErrorCode::ReadOnly) => anyhow!(
            "{p} is read-only ({e}); make it and its folder writable"
        ),
        _ => anyhow!("cannot use target {p}: {e}"),
    }
}

/// Opens `path` with `flags`, making sure the connection and `file_id` describe the same file
/// (a rename between the two would otherwise go unnoticed).
fn open_conn(path: &Path, flags: OpenFlags) -> Result<(Connection, FileId)> {
    for _ in 0..5 {
        let before =
            file_id(path).with_context(|| format!("cannot open target {}", path.display()))?;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| explain(path, &e))?;
        conn.busy_timeout(LOCK_WAIT)?;
        if file_id(path).ok() == Some(before) {
            return Ok((conn, before));
        }
    }
    bail!(
        "{} keeps being replaced by another process; retry when it finishes",
        path.display()
    )
}

/// An existing target opened for changes.
pub struct Target {
    pub conn: Connection,
    path: PathBuf,
    id: FileId,
}

/// Opens an existing scrobsync target for reading and writing.
pub fn open(path: &Path) -> Result<Target> {
    if !path.exists() {
        bail!(
            "target {} does not exist; create it with `scrobsync load`",
            path.display()
        );
    }
    let (conn, id) = open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    check_is_target(&conn, path)?;
    conn.execute_batch(INCREMENTAL_PRAGMAS)
        .map_err(|e| explain(path, &e))?;
    // Targets written before the views existed get them.
    conn.execute_batch(super::schema::VIEWS)
        .map_err(|e| explain(path, &e))?;
    super::state::create(&conn).map_err(|e| match e.downcast_ref::<rusqlite::Error>() {
        Some(s) => explain(path, s),
        None => e,
    })?;
    Ok(Target {
        conn,
        path: path.to_path_buf(),
        id,
    })
}

impl Target {
    /// Runs `f` in one write transaction: committed if it succeeds, rolled back otherwise.
    pub fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.begin()?;
        match f(&self.conn) {
            Ok(v) => {
                self.conn
                    .execute_batch("COMMIT")
                    .map_err(|e| explain(&self.path, &e))
                    .context("committing")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Starts a write transaction (waiting [`LOCK_WAIT`] for other writers) on the file the
    /// path still names.
    fn begin(&self) -> Result<()> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| explain(&self.path, &e))?;
        if file_id(&self.path).ok() != Some(self.id) {
            let _ = self.conn.execute_batch("ROLLBACK");
            bail!(
                "{} was replaced by another run (a load) while this one waited for it; run the command again",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// Opens an existing target for reading (status, verify).
///
/// It opens read-write with `query_only`, so that SQLite can roll back a hot journal a killed
/// run left behind (a read-only connection cannot, and would fail); only when the file cannot be
/// opened for writing does it fall back to a read-only connection.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    if !path.exists() {
        bail!(
            "target {} does not exist; create it with `scrobsync load`",
            path.display()
        );
    }
    let conn = match open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok((c, _)) if !c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) => {
            c.execute_batch("PRAGMA query_only = 1;")?;
            c
        }
        _ => open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?.0,
    };
    check_is_target(&conn, path)?;
    // Whole-table joins (verify) touch dimension pages at random: map the file instead of
    // reading it a page per system call.
    conn.execute_batch("PRAGMA mmap_size = 68719476736; PRAGMA cache_size = -65536;")?;
    Ok(conn)
}

/// A scrobsync target has its state table with the schema version every load writes, and the
/// five user tables.
fn check_is_target(conn: &Connection, path: &Path) -> Result<()> {
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'
              AND name IN ('_scrobsync_state', 'users', 'artists', 'albums', 'tracks', 'scrobbles')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| explain(path, &e))?;
    let version: Option<String> = if tables == 6 {
        conn.query_row(
            "SELECT value FROM _scrobsync_state WHERE key = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| explain(path, &e))?
    } else {
        None
    };
    if version.is_none() {
        bail!(
            "{} is not a scrobsync target (no scrobsync tables and schema version); use `scrobsync load` to create one",
            path.display()
        );
    }
    Ok(())
}

/// What a full load found at its target path before it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Nothing there.
    Nothing,
    /// A scrobsync target: replaced under its lock.
    Target,
    /// Something else, replaced because `--force` was given.
    Forced { sqlite: bool },
}

/// Checks what `load` would replace at `path` (already resolved through symlinks): a missing
/// file or a scrobsync target is fine; anything else only with `force`.
pub fn check_replaceable(path: &Path, force: bool) -> Result<Existing> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::Nothing),
        Err(e) => bail!("cannot inspect target {}: {e}", path.display()),
    };
    let p = path.display();
    if meta.is_dir() {
        bail!("target {p} is a folder; give a file path such as {p}/scrobbles.sqlite");
    }
    // Only a regular file is opened to look at its header: opening a FIFO would block.
    let sqlite = meta.is_file() && is_sqlite_file(path);
    let refuse = |why: String| -> Result<Existing> {
        if force {
            tracing::warn!("replacing {p} ({why}) because --force was given");
            Ok(Existing::Forced { sqlite })
        } else {
            bail!("{why}; choose another target path, or pass --force to replace it")
        }
    };
    if !meta.is_file() {
        return refuse(format!("target {p} exists and is not a regular file"));
    }
    if meta.permissions().readonly() {
        return refuse(format!("target {p} is read-only"));
    }
    if !sqlite {
        if meta.len() == 0 {
            return refuse(format!(
                "target {p} exists and is an empty file, not a scrobsync target"
            ));
        }
        return refuse(format!("target {p} exists and is not a SQLite database"));
    }
    let checked = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|e| explain(path, &e))
        .and_then(|c| {
            c.busy_timeout(LOCK_WAIT)?;
            check_is_target(&c, path)
        });
    match checked {
        Ok(()) => Ok(Existing::Target),
        Err(e) if e.downcast_ref::<InUse>().is_some() => Err(e),
        Err(e) => refuse(format!(
            "target {p} exists and is not a scrobsync target ({})",
            e
        )),
    }
}

fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"SQLite format 3\0"
}

/// Whether another process has the database open in WAL mode. Every such connection holds a
/// read lock on the "dead man switch" byte of the `-shm` file for as long as it is open, even
/// when idle (and an idle WAL connection holds no lock on the database file itself, so SQLite
/// would let the WAL be switched off under it).
fn wal_in_use(path: &Path) -> bool {
    use std::os::unix::io::AsRawFd;
    /// Offset of the dead-man-switch byte in the `-shm` file (SQLite's unix VFS).
    const DMS: libc::off_t = 128;
    let Ok(shm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(side_file(path, "-shm"))
    else {
        return false;
    };
    // SAFETY: a plain fcntl(F_GETLK) on a file descriptor we own, with a zeroed flock.
    unsafe {
        let mut fl: libc::flock = std::mem::zeroed();
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = DMS;
        fl.l_len = 1;
        libc::fcntl(shm.as_raw_fd(), libc::F_GETLK, &mut fl) == 0
            && fl.l_type != libc::F_UNLCK as libc::c_short
    }
}

/// Holds the old target's exclusive lock while a load renames its new file into place.
pub struct ReplaceLock {
    _conn: Option<Connection>,
}

/// Takes the old file at `path` out of use so it can be replaced: SQLite rolls back any hot
/// journal of it, a WAL is checkpointed away, and an exclusive lock keeps every other process
/// out until the lock is dropped (after the rename). Waits [`LOCK_WAIT`] for other processes,
/// then refuses. Side files of the old file are removed while the lock is held.
pub fn lock_for_replace(path: &Path, existing: Existing) -> Result<ReplaceLock> {
    let conn = match existing {
        Existing::Target | Existing::Forced { sqlite: true } if path.exists() => {
            let lock = || -> Result<Connection> {
                if wal_in_use(path) {
                    return Err(InUse(format!(
                        "{} is in use by another process (locked); retry when it finishes",
                        path.display()
                    ))
                    .into());
                }
                let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .map_err(|e| explain(path, &e))?;
                conn.busy_timeout(LOCK_WAIT)?;
                let mode: String = conn
                    .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(|e| explain(path, &e))?;
                if mode.eq_ignore_ascii_case("wal") {
                    // Leaving WAL needs the only connection; SQLite answers with the mode it
                    // is in, so "wal" means another process has the file open.
                    let now: String = conn
                        .query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0))
                        .map_err(|e| explain(path, &e))?;
                    if now.eq_ignore_ascii_case("wal") {
                        return Err(InUse(format!(
                            "{} is in use by another process (locked); retry when it finishes",
                            path.display()
                        ))
                        .into());
                    }
                }
                conn.execute_batch("BEGIN EXCLUSIVE")
                    .map_err(|e| explain(path, &e))?;
                // Reading a page makes SQLite take its locks and roll back a hot journal now.
                conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map_err(|e| explain(path, &e))?;
                Ok(conn)
            };
            match lock() {
                Ok(c) => Some(c),
                Err(e)
                    if matches!(existing, Existing::Forced { .. })
                        && e.downcast_ref::<InUse>().is_none() =>
                {
                    tracing::warn!("replacing {} without its lock: {e:#}", path.display());
                    None
                }
                Err(e) => {
                    return Err(e.context(format!(
                        "the new target was not installed; {} is unchanged",
                        path.display()
                    )))
                }
            }
        }
        _ => None,
    };
    for suffix in SIDE_FILES {
        let f = side_file(path, suffix);
        match std::fs::remove_file(&f) {
            Ok(()) => tracing::info!(file = %f.display(), "removed a side file of the old target"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!(
                "cannot remove {} ({e}); the new target was not installed, remove that file and run the load again",
                f.display()
            ),
        }
    }
    Ok(ReplaceLock { _conn: conn })
}

/// A registry whose new keys continue after the target's greatest ones, counting keys that
/// `backfill --prune` deleted (recorded as `max_*_id`), so a pruned key is never handed out again.
pub fn registry_for(conn: &Connection) -> Result<Registry> {
    let max = |t: &str, k: &str| -> Result<i64> {
        let in_table: i64 =
            conn.query_row(&format!("SELECT ifnull(max({k}), 0) FROM {t}"), [], |r| {
                r.get(0)
            })?;
        let pruned = super::state::get(conn, &format!("max_{k}"))?
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        Ok(in_table.max(pruned))
    };
    Ok(Registry::continuing_after(
        max("users", "user_id")?,
        max("artists", "artist_id")?,
        max("albums", "album_id")?,
        max("tracks", "track_id")?,
    ))
}

/// Finds existing dimension rows by their identity, through the unique indexes.
pub struct TargetResolver<'c> {
    pub conn: &'c Connection,
}

impl Resolver for TargetResolver<'_> {
    fn user(&mut self, name: &str) -> Result<Option<i64>> {
        let mut s = self
            .conn
            .prepare_cached("SELECT user_id FROM users WHERE name = ?1")?;
        Ok(s.query_row([name], |r| r.get(0)).optional()?)
    }

    fn artist(&mut self, name: &str) -> Result<Option<(i64, Option<String>)>> {
        let mut s = self
            .conn
            .prepare_cached("SELECT artist_id, mbid FROM artists WHERE name = ?1")?;
        Ok(s.query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn album(&mut self, artist_id: i64, title: &str) -> Result<Option<(i64, Option<String>)>> {
        let mut s = self.conn.prepare_cached(
            "SELECT album_id, mbid FROM albums WHERE artist_id = ?1 AND title = ?2",
        )?;
        Ok(s.query_row(rusqlite::params![artist_id, title], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?)
    }

    fn track(
        &mut self,
        artist_id: i64,
        album_id: Option<i64>,
        title: &str,
    ) -> Result<Option<(i64, Option<String>, Option<i32>)>> {
        let mut s = self.conn.prepare_cached(
            "SELECT track_id, mbid, duration_ms FROM tracks
             WHERE artist_id = ?1 AND ifnull(album_id, 0) = ?2 AND title = ?3",
        )?;
        Ok(s.query_row(
            rusqlite::params![artist_id, album_id.unwrap_or(0), title],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?)
    }
}
