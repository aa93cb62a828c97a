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
//!   no journal of the old file can ever be played into the new one;
//! - only regular files are opened, and only files that are scrobsync targets of a schema this
//!   build knows are written (see [`super::inspect`]): a FIFO or a device would block or never
//!   end, a look-alike belongs to someone else, and a newer target to a newer scrobsync. All is
//!   checked before the first statement that could change the file;
//! - a target that cannot be written is refused in one line before a run does any work.

use super::inspect::{self, Refused};
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

/// SQLite's extended code for "the file was renamed or removed while open".
const SQLITE_READONLY_DBMOVED: i32 = 1032;

/// SQLite's extended code for "the journal cannot be created: the folder is read-only".
const SQLITE_READONLY_DIRECTORY: i32 = 1544;

/// The side files SQLite keeps beside a database file.
pub const SIDE_FILES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// PRAGMAs for changing an existing target in place: the rollback journal makes every run's
/// single transaction atomic across crashes and kills; a large cache keeps the run in memory;
/// recursive triggers make the delete half of `INSERT OR REPLACE` update the summary tables.
const INCREMENTAL_PRAGMAS: &str = "
PRAGMA journal_mode = DELETE;
PRAGMA synchronous = FULL;
PRAGMA cache_size = -131072;
PRAGMA temp_store = MEMORY;
PRAGMA foreign_keys = OFF;
PRAGMA recursive_triggers = ON;
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

impl InUse {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

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
        Some(ErrorCode::ReadOnly) if extended == Some(SQLITE_READONLY_DBMOVED) => anyhow!(
            "{p} was replaced or removed by another process while this run used it; run the command again"
        ),
        Some(ErrorCode::ReadOnly) if extended == Some(SQLITE_READONLY_DIRECTORY) => anyhow!(
            "{p} is read-only: its folder is not writable ({e}), and SQLite writes the journal of every change there; make the folder writable or choose another --target"
        ),
        Some(ErrorCode::ReadOnly) => anyhow!(inspect::read_only(path, &e.to_string())),
        Some(ErrorCode::CannotOpen) => anyhow!(
            "{p} or its journal beside it cannot be opened ({e}); make the file and its folder readable and writable, or choose another --target"
        ),
        _ => anyhow!("cannot use target {p}: {e}"),
    }
}

/// An error of a step on the target: an SQLite error in it becomes the line [`explain`] gives.
fn explain_any(path: &Path, e: anyhow::Error) -> anyhow::Error {
    match e.downcast_ref::<rusqlite::Error>() {
        Some(s) => explain(path, s),
        None => e,
    }
}

/// An error of a write on the target: SQLite's read-only and cannot-open codes (the file or
/// its folder cannot be written) become the one line [`explain`] gives; others stay as they are.
fn explain_write(path: &Path, e: anyhow::Error) -> anyhow::Error {
    let mapped = e
        .chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
        .filter(|s| {
            matches!(
                s.sqlite_error_code(),
                Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen)
            )
        })
        .map(|s| explain(path, s));
    mapped.unwrap_or(e)
}

/// (device, inode) of the regular file `path` names now; anything else is refused.
fn regular_file_id(path: &Path) -> Result<FileId> {
    let m = inspect::regular_file(path)?;
    Ok((m.dev(), m.ino()))
}

/// Opens `path` with `flags`, making sure the connection and `file_id` describe the same file
/// (a rename between the two would otherwise go unnoticed), and that it is a regular file:
/// looked at before SQLite opens it and again before SQLite reads from it (SQLite reads nothing
/// until the first statement), so a FIFO put in its place meanwhile is never read.
fn open_conn(path: &Path, flags: OpenFlags) -> Result<(Connection, FileId)> {
    for _ in 0..5 {
        let before = regular_file_id(path)?;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| explain(path, &e))?;
        if regular_file_id(path)? == before {
            conn.busy_timeout(LOCK_WAIT)?;
            return Ok((conn, before));
        }
    }
    Err(InUse(format!(
        "{} keeps being replaced by another process; retry when it finishes",
        path.display()
    ))
    .into())
}

/// An existing target opened for changes.
pub struct Target {
    conn: Connection,
    path: PathBuf,
    id: FileId,
}

/// Opens an existing scrobsync target for reading and writing. Nothing is written before the
/// file passed every check: a regular file, a scrobsync target of a known schema version (read
/// only), writable with its folder.
pub fn open(path: &Path) -> Result<Target> {
    inspect::check_file(path)?;
    let (conn, id) = open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    inspect::check_target(&conn, path)?;
    inspect::check_writable(path)?;
    // SQLite opens a file it may not write read-only, silently.
    if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
        bail!(inspect::read_only(
            path,
            "SQLite could open it for reading only"
        ));
    }
    conn.execute_batch(INCREMENTAL_PRAGMAS)
        .map_err(|e| explain(path, &e))?;
    // Targets written before the views existed, or with an older version's, get this one's.
    super::schema::ensure_views(&conn).map_err(|e| explain(path, &e))?;
    super::state::create(&conn).map_err(|e| explain_any(path, e))?;
    crate::cancel::interrupt_on_signal(&conn);
    let target = Target {
        conn,
        path: path.to_path_buf(),
        id,
    };
    // check_target accepted the stored version as a number from 1 to this build's.
    let version: i64 = target
        .conn
        .query_row(
            "SELECT CAST(trim(value) AS INTEGER) FROM _scrobsync_state WHERE key = ?1",
            [super::state::SCHEMA_VERSION_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| explain(path, &e))?
        .unwrap_or(super::schema::SCHEMA_VERSION);
    warn_foreign_triggers(&target)?;
    if version < super::schema::SCHEMA_VERSION {
        upgrade(&target, version)?;
    } else {
        restore_summaries(&target)?;
    }
    Ok(target)
}

/// Names the triggers someone else put on the tables scrobsync writes (see
/// [`super::triggers::foreign`]) before a write: they stay, but they run inside it.
fn warn_foreign_triggers(target: &Target) -> Result<()> {
    let foreign =
        super::triggers::foreign(&target.conn).map_err(|e| explain_any(&target.path, e))?;
    if !foreign.is_empty() {
        tracing::warn!(
            "{}: {} {} not made by scrobsync: {} on every write and may change what scrobsync stores and counts (`verify` checks the result)",
            target.path.display(),
            foreign.join(", "),
            if foreign.len() == 1 { "was" } else { "were" },
            if foreign.len() == 1 { "it runs" } else { "they run" },
        );
    }
    Ok(())
}

/// A target of this version whose summary tables or triggers were dropped or altered (by
/// someone's SQL) gets them back, recounted, before anything is written: every write's
/// triggers need the tables, and a missing trigger leaves counts behind.
fn restore_summaries(target: &Target) -> Result<()> {
    let damage = super::summary::damage(&target.conn).map_err(|e| explain_any(&target.path, e))?;
    if damage.is_empty() {
        return Ok(());
    }
    tracing::warn!(
        "{}: {}; restoring and recounting the summary tables before writing",
        target.path.display(),
        damage.join(", ")
    );
    target.write(super::summary::build).with_context(|| {
        format!(
            "restoring the summary tables of {} failed; it is unchanged",
            target.path.display()
        )
    })
}

/// Brings a target of an older schema version up to this one, in one transaction: a kill
/// or an error leaves it as it was, and the next run upgrades it again. From version 1: the
/// query indexes, the summary tables and their triggers, fresh planner statistics.
fn upgrade(target: &Target, from: i64) -> Result<()> {
    let to = super::schema::SCHEMA_VERSION;
    let occupied =
        super::summary::occupied(&target.conn).map_err(|e| explain_any(&target.path, e))?;
    if !occupied.is_empty() {
        let them = if occupied.len() == 1 { "it" } else { "them" };
        bail!(
            "{} has {} where schema version {to} keeps its summary tables and their triggers; rename {them} (a table with ALTER TABLE … RENAME TO; a view, index or trigger by dropping {them} and creating {them} again under another name) and run again; nothing was changed",
            target.path.display(),
            occupied.join(" and "),
        );
    }
    tracing::warn!(
        "upgrading {} from schema version {from} to {to} (query indexes and summary tables); this happens once and takes about as long as a load's index build",
        target.path.display()
    );
    // Sort for the index builds on disk, as a load does: an in-memory sorter grows with the
    // rows (about 46 bytes each), and a cron `sync` is no place for gigabytes.
    target
        .conn
        .execute_batch("PRAGMA temp_store = FILE; PRAGMA cache_size = -16384;")?;
    let upgraded = target
        .write(|conn| {
            // `load --indexes full` of version 1 built this; (track_id, played_at) replaces it.
            conn.execute_batch("DROP INDEX IF EXISTS scrobbles_track;")?;
            for (name, sql) in super::schema::INDEXES_SINCE_V2 {
                crate::cancel::check()?;
                super::schema::ensure(conn, "index", name, sql)?;
            }
            crate::cancel::check()?;
            super::summary::build(conn)?;
            super::schema::analyse(conn)?;
            super::state::set(conn, super::state::SCHEMA_VERSION_KEY, &to.to_string())?;
            Ok(())
        })
        .with_context(|| {
            format!(
                "upgrading {} to schema version {to} failed; it is unchanged",
                target.path.display()
            )
        });
    target
        .conn
        .execute_batch(INCREMENTAL_PRAGMAS)
        .map_err(|e| explain(&target.path, &e))?;
    upgraded
}

impl Target {
    /// Runs `f` on the target outside a write transaction: reads, each statement on its own.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn).map_err(|e| explain_write(&self.path, e))
    }

    /// A registry whose new keys continue after the target's (see [`registry_for`]).
    pub fn registry(&self) -> Result<Registry> {
        registry_for(&self.conn)
    }

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
                Err(super::triggers::name_in_error(
                    &self.conn,
                    &self.path,
                    explain_write(&self.path, e),
                ))
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
        // Other software's triggers are looked at under the write lock, so none made while
        // this run waited or read the source runs inside it unseen.
        if let Err(e) = super::triggers::guard(&self.conn, &self.path) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(explain_any(&self.path, e));
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
    inspect::check_file(path)?;
    let conn = match open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE) {
        Ok((c, _)) if !c.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) => {
            c.execute_batch("PRAGMA query_only = 1;")?;
            c
        }
        _ => open_conn(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?.0,
    };
    inspect::check_target(&conn, path)?;
    // Whole-table joins (verify) touch dimension pages at random: map the file instead of
    // reading it a page per system call.
    conn.execute_batch("PRAGMA mmap_size = 68719476736; PRAGMA cache_size = -65536;")?;
    crate::cancel::interrupt_on_signal(&conn);
    Ok(conn)
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
/// file or a scrobsync target of a known schema version is fine; another regular file only
/// with `force`; anything else never (renaming over a device or a FIFO takes away what other
/// programs use, and opening one to look inside would block). Looks inside by reading only.
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
    if let Some(kind) = inspect::special_kind(meta.file_type()) {
        bail!(
            "{}; --force replaces only regular files",
            inspect::not_regular(path, kind)
        );
    }
    inspect::check_side_files(path)?;
    let sqlite = is_sqlite_file(path);
    let refuse = |why: String| -> Result<Existing> {
        if force {
            tracing::warn!("replacing {p} ({why}) because --force was given");
            Ok(Existing::Forced { sqlite })
        } else {
            bail!("{why}; choose another target path, or pass --force to replace it")
        }
    };
    // The bits, and access(2) for what stops root too (the immutable attribute).
    if meta.permissions().readonly() || !inspect::writable(path) {
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
    let checked = open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .and_then(|(c, _)| inspect::check_target(&c, path));
    match checked {
        Ok(()) => Ok(Existing::Target),
        Err(e) if e.downcast_ref::<InUse>().is_some() => Err(e),
        Err(e) => match e.downcast_ref::<Refused>() {
            Some(Refused::NotTarget { what, .. }) => refuse(format!(
                "target {p} exists and is not a scrobsync target (it {what})"
            )),
            Some(Refused::Newer { .. }) => refuse(e.to_string()),
            None => refuse(format!(
                "target {p} exists and is not a scrobsync target ({e})"
            )),
        },
    }
}

/// Whether `path` starts with SQLite's header. Opened non-blocking and read only when it is
/// still a regular file: had a FIFO taken its place since it was looked at, opening or reading
/// it would block.
fn is_sqlite_file(path: &Path) -> bool {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut head = [0u8; 16];
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    f.metadata().is_ok_and(|m| m.is_file())
        && f.read_exact(&mut head).is_ok()
        && &head == b"SQLite format 3\0"
}

/// Whether another process has the database open in WAL mode. Every such connection holds a
/// read lock on the "dead man switch" byte of the `-shm` file for as long as it is open, even
/// when idle (and an idle WAL connection holds no lock on the database file itself, so SQLite
/// would let the WAL be switched off under it).
fn wal_in_use(path: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    /// Offset of the dead-man-switch byte in the `-shm` file (SQLite's unix VFS).
    const DMS: libc::off_t = 128;
    // Non-blocking, and only a regular file counts: a FIFO in its place must not block.
    let Ok(shm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(side_file(path, "-shm"))
    else {
        return false;
    };
    if !shm.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
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
                let (conn, _) = open_conn(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
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
    let max = |t: &str, k: &str| super::facts::greatest_key(conn, t, k);
    Ok(Registry::continuing_after(
        max("users", "user_id")?,
        max("artists", "artist_id")?,
        max("albums", "album_id")?,
        max("tracks", "track_id")?,
    ))
}

/// Finds existing dimension rows by their identity, through the unique indexes.
pub struct TargetResolver<'c> {
    conn: &'c Connection,
}

impl<'c> TargetResolver<'c> {
    /// A resolver on the connection of a write transaction.
    pub fn new(conn: &'c Connection) -> Self {
        Self { conn }
    }
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
    ) -> Result<Option<(i64, Option<String>, Option<i64>)>> {
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
