//! What a target path names, looked at before scrobsync opens it and before it writes to it.
//!
//! Why: a target path comes from a user and may name anything.
//! - Opening a FIFO blocks until a writer comes, and reading a device never ends: only regular
//!   files are opened (symbolic links followed, as SQLite follows them), and only when the side
//!   files SQLite opens beside them are regular files too. [`regular_file`] looks with `stat`
//!   alone; `target` looks again right after SQLite opened the path, before SQLite reads a byte.
//! - A file that only looks like a target (some of the tables, other columns, no schema version)
//!   belongs to someone else: [`check_target`] compares it with scrobsync's own schema, reading
//!   only, and refuses it naming what differs, before any statement could change it.
//! - A target of a greater schema version was written by a newer scrobsync: this build does not
//!   know what changed, so it neither writes nor describes such a file.
//! - A target that cannot be written is refused in one line before a run does any work
//!   ([`check_writable`]), not with SQLite's error code in the middle of the run.

use super::schema::{SCHEMA_VERSION, USER_TABLES};
use super::state::SCHEMA_VERSION_KEY;
use super::summary;
use super::target::{explain, side_file, SIDE_FILES};
use anyhow::{bail, Result};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{FileType, Metadata};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// The state table every target has. The other `_scrobsync_*` tables may be missing from
/// targets of older builds; opening such a target for writing creates them.
const STATE_TABLE: &str = "_scrobsync_state";

/// A file refused as a target, before anything was written to it.
#[derive(Debug)]
pub enum Refused {
    /// Not a scrobsync target; `what` says how it differs ("has no table 'albums'").
    NotTarget { path: PathBuf, what: String },
    /// A target written by a newer scrobsync.
    Newer { path: PathBuf, version: i64 },
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NotTarget { path, what } => write!(
                f,
                "{} {what}: not a scrobsync target; choose another --target, or create one with `scrobsync load`",
                path.display()
            ),
            Refused::Newer { path, version } => write!(
                f,
                "{} was written by a newer scrobsync (schema version {version}, this build knows up to {SCHEMA_VERSION}); upgrade scrobsync",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Refused {}

fn not_target(path: &Path, what: String) -> anyhow::Error {
    Refused::NotTarget {
        path: path.to_path_buf(),
        what,
    }
    .into()
}

/// What a file is, in words, unless it is a regular file.
pub fn special_kind(t: FileType) -> Option<&'static str> {
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a folder")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("a special file")
    }
}

/// The one line for a target path that names something other than a regular file.
pub fn not_regular(path: &Path, kind: &str) -> String {
    format!(
        "{} is not a SQLite target (it is {kind}, not a regular file); give the path of a regular file",
        path.display()
    )
}

/// The metadata of the regular file `path` names (symbolic links followed); a missing path or
/// anything else is refused with one line. Opens nothing.
pub fn regular_file(path: &Path) -> Result<Metadata> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "target {} does not exist; create it with `scrobsync load`",
            path.display()
        ),
        Err(e) => bail!(
            "cannot look at target {} ({}); check the path and the permissions of its folders",
            path.display(),
            reason(&e)
        ),
    };
    match special_kind(meta.file_type()) {
        Some(kind) => bail!(not_regular(path, kind)),
        None => Ok(meta),
    }
}

/// Refuses a target path that is not a regular file, or that has beside it a side file SQLite
/// would open that is not a regular file (SQLite's hot-journal check opens `-journal`, which
/// blocks on a FIFO). Opens nothing.
pub fn check_file(path: &Path) -> Result<()> {
    regular_file(path)?;
    check_side_files(path)
}

/// Refuses side files (`-journal`, `-wal`, `-shm`) that are not regular files, beside the path
/// and beside the file a symbolic link names (SQLite keeps them there). Opens nothing.
pub fn check_side_files(path: &Path) -> Result<()> {
    let mut bases = vec![path.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(path) {
        bases.push(real);
    }
    for base in &bases {
        for suffix in SIDE_FILES {
            let side = side_file(base, suffix);
            let Ok(meta) = std::fs::metadata(&side) else {
                continue;
            };
            if let Some(kind) = special_kind(meta.file_type()) {
                bail!(
                    "{} beside the target is {kind}, not a file SQLite made; remove it, then run the command again",
                    side.display()
                );
            }
        }
    }
    Ok(())
}

/// Refuses a target that cannot be written: the file itself (permission bits, the immutable
/// attribute, a read-only mount) or its folder, where SQLite creates the journal of every
/// change. Only for the commands that change a target: reading needs neither.
pub fn check_writable(path: &Path) -> Result<()> {
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if let Err(e) = may_write(&real, libc::W_OK) {
        bail!(read_only(path, &reason(&e)));
    }
    let dir = match real.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if let Err(e) = may_write(&dir, libc::W_OK | libc::X_OK) {
        bail!(
            "{} is read-only: its folder {} is not writable ({}), and SQLite writes the journal of every change there; make the folder writable or choose another --target",
            path.display(),
            dir.display(),
            reason(&e)
        );
    }
    Ok(())
}

/// The one line for a target file that cannot be written.
pub fn read_only(path: &Path, why: &str) -> String {
    format!(
        "{} is read-only ({why}); make it writable or choose another --target",
        path.display()
    )
}

/// Whether this process may write the file `path` names.
pub fn writable(path: &Path) -> bool {
    may_write(path, libc::W_OK).is_ok()
}

/// `access(2)`: unlike the permission bits, it also knows the immutable attribute and read-only
/// mounts, which stop root too.
fn may_write(path: &Path, mode: libc::c_int) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: access(2) only reads the NUL-terminated string, which outlives the call.
    if unsafe { libc::access(c.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An OS error in words, without its "(os error N)".
fn reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// A column as `pragma_table_info` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Column {
    /// Declared type in upper case; empty when none.
    decl: String,
    not_null: bool,
    /// Position in the primary key; 0 when not part of it.
    pk: i64,
}

impl std::fmt::Display for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.decl.is_empty() {
            "untyped"
        } else {
            &self.decl
        })?;
        if self.not_null {
            f.write_str(" NOT NULL")?;
        }
        if self.pk > 0 {
            f.write_str(" PRIMARY KEY")?;
        }
        Ok(())
    }
}

/// A table's columns by lower-case name.
type Columns = BTreeMap<String, Column>;

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Columns> {
    let mut s = conn
        .prepare("SELECT lower(name), upper(type), \"notnull\", pk FROM pragma_table_info(?1)")?;
    let rows = s.query_map([table], |r| {
        let column = Column {
            decl: r.get(1)?,
            not_null: r.get::<_, i64>(2)? != 0,
            pk: r.get(3)?,
        };
        Ok((r.get::<_, String>(0)?, column))
    })?;
    rows.collect()
}

/// The tables of a database, by lower-case name.
fn tables(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut s = conn.prepare("SELECT lower(name) FROM sqlite_master WHERE type = 'table'")?;
    let rows = s.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// scrobsync's own tables and their columns, built in memory by the very statements a load
/// runs, so the check can never drift from the schema.
fn reference() -> Result<BTreeMap<String, Columns>> {
    let mem = Connection::open_in_memory()?;
    super::schema::create_tables(&mem)?;
    super::state::create(&mem)?;
    let mut out = BTreeMap::new();
    for t in tables(&mem)? {
        let c = columns(&mem, &t)?;
        out.insert(t, c);
    }
    Ok(out)
}

/// How the columns of `table` differ from scrobsync's, if they do.
fn column_difference(table: &str, ours: &Columns, theirs: &Columns) -> Option<String> {
    for (name, want) in ours {
        match theirs.get(name) {
            None => return Some(format!("has a table '{table}' without column '{name}'")),
            Some(have) if have != want => {
                return Some(format!(
                    "has a table '{table}' whose column '{name}' is {have}, not {want}"
                ))
            }
            Some(_) => {}
        }
    }
    theirs
        .keys()
        .find(|c| !ours.contains_key(*c))
        .map(|c| format!("has a table '{table}' with a column '{c}' that scrobsync's has not"))
}

/// How table `name` of the file differs from scrobsync's, if it does; a missing table differs
/// only when it is `required`.
fn table_difference(
    conn: &Connection,
    found: &BTreeSet<String>,
    ours: &BTreeMap<String, Columns>,
    name: &str,
    required: bool,
) -> rusqlite::Result<Option<String>> {
    let Some(want) = ours.get(name) else {
        return Ok(None);
    };
    if !found.contains(name) {
        return Ok(required.then(|| format!("has no table '{name}'")));
    }
    Ok(column_difference(name, want, &columns(conn, name)?))
}

/// The stored schema version must be there, a number, and one this build knows.
fn check_version(conn: &Connection, path: &Path) -> Result<()> {
    let stored: Option<Value> = conn
        .query_row(
            &format!("SELECT value FROM {STATE_TABLE} WHERE key = ?1"),
            [SCHEMA_VERSION_KEY],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| explain(path, &e))?;
    let (version, shown) = match stored {
        None => {
            return Err(not_target(
                path,
                format!("has no {SCHEMA_VERSION_KEY} in {STATE_TABLE}"),
            ))
        }
        Some(Value::Integer(v)) => (Some(v), v.to_string()),
        Some(Value::Text(s)) => (s.trim().parse::<i64>().ok(), format!("'{s}'")),
        Some(other) => (None, format!("a {} value", other.data_type())),
    };
    match version {
        Some(v) if v > SCHEMA_VERSION => Err(Refused::Newer {
            path: path.to_path_buf(),
            version: v,
        }
        .into()),
        Some(v) if v >= 1 => Ok(()),
        _ => Err(not_target(
            path,
            format!("has {SCHEMA_VERSION_KEY} {shown} in {STATE_TABLE}, which no scrobsync writes"),
        )),
    }
}

/// Checks, reading only, that `conn` (opened on `path`) is a scrobsync target this build
/// knows: it has the state table with a schema version no greater than [`SCHEMA_VERSION`] and
/// the user tables, and every scrobsync table it has has exactly scrobsync's columns (declared
/// type, NOT NULL, primary key). Refusals are [`Refused`]; SQLite's own errors (a lock, not a
/// database) come through [`explain`].
pub fn check_target(conn: &Connection, path: &Path) -> Result<()> {
    let sql = |e: rusqlite::Error| explain(path, &e);
    let found = tables(conn).map_err(sql)?;
    let ours = reference()?;
    if !ours.keys().any(|t| found.contains(t)) {
        return Err(not_target(path, "has none of scrobsync's tables".into()));
    }
    // The version before the other tables: a newer scrobsync may have changed any of them.
    if let Some(what) = table_difference(conn, &found, &ours, STATE_TABLE, true).map_err(sql)? {
        return Err(not_target(path, what));
    }
    check_version(conn, path)?;
    let mut checks: Vec<(&str, bool)> = USER_TABLES.iter().map(|t| (*t, true)).collect();
    checks.extend(
        ours.keys()
            .map(String::as_str)
            // The summary tables hold counts that the next write restores and recounts when
            // they are missing or altered (`summary::damage`); `verify` reports them.
            .filter(|t| {
                *t != STATE_TABLE && !USER_TABLES.contains(t) && !summary::NAMES.contains(t)
            })
            .map(|t| (t, false)),
    );
    for (name, required) in checks {
        if let Some(what) = table_difference(conn, &found, &ours, name, required).map_err(sql)? {
            return Err(not_target(path, what));
        }
    }
    Ok(())
}
