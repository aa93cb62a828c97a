//! The SQLite side: the target schema, the bulk writer and scrobsync's own state tables.
//! This is the only code that touches SQLite.

pub mod check;
pub mod facts;
pub mod inspect;
pub mod open_ids;
pub mod questions;
pub mod resume;
pub mod scan;
pub mod schema;
pub mod search;
pub mod state;
pub mod summary;
pub mod target;
pub mod temp;
pub mod triggers;
pub mod writer;

pub use writer::Writer;

use anyhow::Result;
use rusqlite::Connection;

/// Something that runs a function in one write transaction: committed when it returns `Ok`,
/// rolled back otherwise. A [`target::Target`] waits for other writers and explains SQLite's
/// errors; a bare connection (tests, scratch files) only begins and ends.
pub trait Transact {
    fn atomically<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T>;
}

impl Transact for target::Target {
    fn atomically<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.write(f)
    }
}

impl Transact for Connection {
    fn atomically<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}
