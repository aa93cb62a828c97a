//! The PostgreSQL side: connection handling, planning of partitioned reads, the connectorx
//! readers, and the demo-data generator.

pub mod changes;
pub mod checks;
pub mod conn;
pub mod connectorx;
pub mod conninfo;
pub mod copy;
pub mod identity;
pub mod mapping;
pub mod password;
pub mod plan;
pub mod query;
pub mod read;
pub mod role;
pub mod service;

pub use conn::SourceUrl;

/// The canonical columns, in the order the reader selects them and the normaliser expects them.
pub const COLUMNS: [&str; 11] = [
    "id",
    "username",
    "played_at",
    "artist_name",
    "artist_mbid",
    "album_name",
    "album_mbid",
    "track_name",
    "track_mbid",
    "duration_ms",
    "loved",
];

/// Quotes an SQL identifier for PostgreSQL, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a possibly schema-qualified table name (`schema.table` or `table`).
pub fn quote_table(name: &str) -> String {
    name.split('.')
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(".")
}
