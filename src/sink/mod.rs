//! The SQLite side: the target schema, the bulk writer and scrobsync's own state tables.
//! This is the only code that touches SQLite.

pub mod check;
pub mod facts;
pub mod inspect;
pub mod open_ids;
pub mod questions;
pub mod scan;
pub mod schema;
pub mod search;
pub mod state;
pub mod summary;
pub mod target;
pub mod temp;
pub mod writer;

pub use writer::Writer;
