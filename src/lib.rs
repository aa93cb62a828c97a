//! scrobsync: move Last.fm scrobbles from PostgreSQL into a normalised SQLite database.
//!
//! The pipeline has one folder per stage so each can be read (and tested) alone:
//! [`source`] plans and reads PostgreSQL rows as Arrow batches, [`pipeline`] is the driver that
//! runs windows of them (reader thread, retries, accounting), [`normalize`] turns them into
//! polars dimension and fact frames with stable surrogate keys, [`sink`] writes SQLite, and
//! [`modes`] composes plan, driver and a sink policy into user-facing jobs. The core never parses arguments or prints:
//! it reports through [`progress::Progress`] and returns summaries that the CLI renders.

pub mod cancel;
pub mod config;
pub mod cpu;
pub mod fixtures;
pub mod modes;
pub mod normalize;
pub mod pipeline;
pub mod progress;
pub mod sink;
pub mod source;
