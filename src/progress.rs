//! How the core reports progress without printing: it calls a [`Progress`] that the CLI
//! implements (a progress bar on a terminal), or [`NoProgress`] in tests and libraries.

/// Observer of a long-running job.
pub trait Progress: Send + Sync {
    /// A stage begins; `total` is the expected number of rows when known.
    fn stage(&self, _name: &str, _total: Option<u64>) {}
    /// `rows` more rows are done in the current stage.
    fn advance(&self, _rows: u64) {}
    /// A step is being retried after a transient fault (`Some` says which), or no longer is.
    fn retrying(&self, _note: Option<&str>) {}
    /// The job is over (successfully or not).
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
