//! scrobsync: move Last.fm scrobbles from PostgreSQL into a normalised SQLite database.
//!
//! The pipeline has one folder per stage so each can be read (and tested) alone:
//! [`source`] plans and reads PostgreSQL rows as Arrow batches, [`normalize`] turns them into
//! polars dimension and fact frames with stable surrogate keys, [`sink`] writes SQLite, and
//! [`modes`] composes the three into user-facing jobs. The core never parses arguments or prints:
//! it reports through [`progress::Progress`] and returns summaries that the CLI renders.

pub mod cancel;
pub mod config;
pub mod failpoint;
pub mod modes;
pub mod normalize;
pub mod progress;
pub mod sink;
pub mod source;
