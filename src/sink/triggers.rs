//! Triggers that other software put into a target, and what scrobsync does about them.
//!
//! SQLite runs every trigger inside the statement that fires it, so another program's trigger
//! runs inside scrobsync's writes. Three kinds:
//! - **on the user's data** (`scrobbles` and the dimension tables): the owner's. They stay, and
//!   `verify` and every write name them ([`foreign`]). Rows they change are differences for
//!   `verify`; rows they ignore or delete fail the write that lost them (see
//!   `check::check_window_landed`).
//! - **on scrobsync's own tables** (the summary tables, the `_scrobsync_*` state tables, the
//!   search index's FTS5 tables): damage. Those tables hold only what scrobsync keeps, and on
//!   an FTS5 shadow table a trigger runs inside SQLite's own maintenance of the index (one that
//!   ignores rows there crashed SQLite). `verify` reports them; every write transaction drops
//!   them first, with a warning ([`guard`]).
//! - **naming scrobsync's own tables in their body**, wherever they are: they would change
//!   scrobsync's bookkeeping (its marks, its counts) behind its back. `verify` reports them, and
//!   every write is refused until they are dropped ([`guard`]).
//!
//! [`guard`] runs at the start of every write transaction, under the write lock, so a trigger
//! made while a run waited or read the source is found too; [`name_in_error`] names them in
//! the error of a write they may have broken.

use super::check::LostRows;
use anyhow::{anyhow, bail, Result};
use rusqlite::{Connection, ErrorCode};

/// SQLite's extended code for "a trigger refused the change" (`RAISE(ABORT|FAIL|ROLLBACK)`).
const SQLITE_CONSTRAINT_TRIGGER: i32 = 1811;

/// scrobsync's own tables besides the summary tables (lower case): its state and the FTS5
/// tables of the search index (`names_fts` itself is virtual and takes no trigger).
const OWN_TABLES: [&str; 9] = [
    "_scrobsync_state",
    "_scrobsync_runs",
    "_scrobsync_open_ids",
    "_scrobsync_backfill",
    "names_fts_data",
    "names_fts_idx",
    "names_fts_content",
    "names_fts_docsize",
    "names_fts_config",
];

/// A trigger scrobsync did not make.
struct Trigger {
    name: String,
    table: String,
    sql: String,
}

impl Trigger {
    /// "trigger NAME on TABLE", with control characters escaped so that a name cannot break
    /// a line of output.
    fn words(&self) -> String {
        format!(
            "trigger {} on {}",
            self.name.escape_debug(),
            self.table.escape_debug()
        )
    }

    /// The SQL to drop it.
    fn drop_sql(&self) -> String {
        format!("DROP TRIGGER \"{}\"", self.name.replace('"', "\"\""))
    }

    fn on_own_table(&self) -> bool {
        own(&self.table.to_lowercase())
    }

    fn on_user_data(&self) -> bool {
        super::schema::USER_TABLES.contains(&self.table.to_lowercase().as_str())
    }

    /// scrobsync's own tables that its body names (empty for one on such a table: that one is
    /// damage for where it is).
    fn names_own_tables(&self) -> Vec<&'static str> {
        if self.on_own_table() {
            return Vec::new();
        }
        let body = self.sql.to_lowercase();
        super::summary::NAMES
            .iter()
            .chain(OWN_TABLES.iter())
            // the search index itself: writing it writes its FTS5 tables
            .chain(std::iter::once(&"names_fts"))
            .copied()
            .filter(|t| names_word(&body, t))
            .collect()
    }
}

/// Whether a table (lower case) is one of scrobsync's own.
fn own(table: &str) -> bool {
    super::summary::NAMES.contains(&table) || OWN_TABLES.contains(&table)
}

/// Whether `word` stands in `text` as a whole identifier (not inside a longer one).
fn names_word(text: &str, word: &str) -> bool {
    let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
    text.match_indices(word).any(|(i, _)| {
        !ident(text[..i].chars().next_back()) && !ident(text[i + word.len()..].chars().next())
    })
}

/// Every trigger of the file that scrobsync did not make, by name. One under the name of a
/// summary trigger is scrobsync's (restored when it is altered, see `summary::damage`).
fn not_ours(conn: &Connection) -> Result<Vec<Trigger>> {
    let mut stmt = conn.prepare(
        "SELECT name, tbl_name, ifnull(sql, '') FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
    )?;
    let all = stmt
        .query_map([], |r| {
            Ok(Trigger {
                name: r.get(0)?,
                table: r.get(1)?,
                sql: r.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(all
        .into_iter()
        .filter(|t| {
            !super::summary::TRIGGERS
                .iter()
                .any(|(ours, _)| ours.eq_ignore_ascii_case(&t.name))
        })
        .collect())
}

/// The owner's triggers on `scrobbles` and the dimension tables, in words ("trigger x on
/// scrobbles"): they run inside every write scrobsync makes and may change what it stores or
/// counts, so `verify` and every write name them. Those that name scrobsync's own tables are
/// not listed here but in [`damage`].
pub fn foreign(conn: &Connection) -> Result<Vec<String>> {
    Ok(not_ours(conn)?
        .iter()
        .filter(|t| t.on_user_data() && t.names_own_tables().is_empty())
        .map(Trigger::words)
        .collect())
}

/// Every trigger in the file that scrobsync did not make, wherever it is, in words.
pub fn all_foreign(conn: &Connection) -> Result<Vec<String>> {
    Ok(not_ours(conn)?.iter().map(Trigger::words).collect())
}

/// Whether any trigger scrobsync did not make is in the file.
pub fn any_foreign(conn: &Connection) -> Result<bool> {
    Ok(!not_ours(conn)?.is_empty())
}

/// Triggers that are damage, in words: those on scrobsync's own tables (the next write drops
/// them) and those whose body names them (every write is refused until they are dropped).
pub fn damage(conn: &Connection) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in not_ours(conn)? {
        if t.on_own_table() {
            out.push(format!(
                "{} is not scrobsync's (scrobsync's own tables hold only what scrobsync keeps; the next write drops it)",
                t.words()
            ));
        } else {
            let named = t.names_own_tables();
            if !named.is_empty() {
                out.push(format!(
                    "{} uses scrobsync's own {} {} (scrobsync refuses to write until it is dropped: {})",
                    t.words(),
                    if named.len() == 1 { "table" } else { "tables" },
                    named.join(", "),
                    t.drop_sql()
                ));
            }
        }
    }
    Ok(out)
}

/// Drops the triggers on scrobsync's own tables, with a warning naming each; returns how many.
pub fn drop_on_own_tables(conn: &Connection) -> Result<usize> {
    let found: Vec<Trigger> = not_ours(conn)?
        .into_iter()
        .filter(Trigger::on_own_table)
        .collect();
    for t in &found {
        tracing::warn!(
            "dropping {}: scrobsync's own tables hold only what scrobsync keeps",
            t.words()
        );
        conn.execute_batch(&t.drop_sql())?;
    }
    Ok(found.len())
}

/// What every write transaction does first, under the write lock: refuses to write while a
/// trigger names scrobsync's own tables, and drops those on them (see the module's text).
pub fn guard(conn: &Connection, path: &std::path::Path) -> Result<()> {
    let tampering: Vec<(Trigger, Vec<&str>)> = not_ours(conn)?
        .into_iter()
        .filter_map(|t| {
            let named = t.names_own_tables();
            (!named.is_empty()).then_some((t, named))
        })
        .collect();
    if let Some((t, named)) = tampering.first() {
        bail!(
            "{} in {} (not made by scrobsync) uses scrobsync's own {} {}, so it could change scrobsync's marks or counts inside its writes; drop it ({}) and run again; nothing was written in this transaction",
            t.words(),
            path.display(),
            if named.len() == 1 { "table" } else { "tables" },
            named.join(", "),
            t.drop_sql()
        );
    }
    drop_on_own_tables(conn)?;
    Ok(())
}

/// The error of a failed write transaction on `conn`, with the triggers other software put
/// into the file named where one may have caused it: one that refused the write
/// (`RAISE(ABORT)` and the like, whose words are quoted), an SQL error inside the write, or
/// rows that one ignored, deleted or added, which the checks of what a write left then find
/// ([`LostRows`]). Other errors (the file's locks, I/O, space, a Ctrl-C) stay as they are.
pub fn name_in_error(conn: &Connection, path: &std::path::Path, e: anyhow::Error) -> anyhow::Error {
    let sqlite = e
        .chain()
        .find_map(|c| c.downcast_ref::<rusqlite::Error>())
        .and_then(|s| match s {
            rusqlite::Error::SqliteFailure(f, msg) => Some((*f, msg.clone())),
            _ => None,
        });
    let lost = e.chain().any(|c| c.downcast_ref::<LostRows>().is_some());
    // SQL errors other than the file's own (locks, I/O, space, a Ctrl-C): a constraint
    // broken, "triggers nested too deep", a table a trigger names that is not there.
    let sql = sqlite.as_ref().is_some_and(|(f, _)| {
        !matches!(
            f.code,
            ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure
                | ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::OperationInterrupted
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::DatabaseCorrupt
                | ErrorCode::NotADatabase
        )
    });
    if !lost && !sql {
        return e;
    }
    // wherever they are: one on a table of the owner's may run from one on scrobbles
    let foreign = all_foreign(conn).unwrap_or_default();
    let p = path.display();
    let list = foreign.join(", ");
    if let Some((f, msg)) = sqlite.filter(|(f, _)| f.extended_code == SQLITE_CONSTRAINT_TRIGGER) {
        let said = msg.unwrap_or_else(|| f.to_string());
        return anyhow!(
            "a trigger refused this write to {p}, saying \"{}\" ({}); the write was rolled back: drop or change that trigger, then run again",
            said.escape_debug(),
            match foreign.len() {
                0 => "no trigger of other software is in the file".to_string(),
                1 => format!("{list}, not made by scrobsync"),
                _ => format!("one of {list}, not made by scrobsync"),
            }
        );
    }
    if foreign.is_empty() {
        return e;
    }
    e.context(format!(
        "{list} (not made by scrobsync) ran inside this write to {p} and may have caused what \
         follows; the write was rolled back"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_counts_only_as_a_whole_identifier() {
        assert!(names_word(
            "begin update _scrobsync_state set value = 1; end",
            "_scrobsync_state"
        ));
        assert!(names_word(
            "insert into \"track_plays\" values",
            "track_plays"
        ));
        assert!(names_word("delete from main.artist_plays;", "artist_plays"));
        assert!(!names_word(
            "insert into my_track_plays values",
            "track_plays"
        ));
        assert!(!names_word(
            "insert into track_plays_log values",
            "track_plays"
        ));
        assert!(!names_word("select 1", "track_plays"));
    }
}
