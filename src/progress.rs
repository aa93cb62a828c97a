//! How the core reports progress without printing: it calls a [`Progress`] that the CLI
//! implements (a progress bar on a terminal), or [`NoProgress`] in tests and libraries.

/// Observer of a long-running job.
pub trait Progress: Send + Sync {
    /// A stage begins; `total` is how much it holds, when known.
    fn stage(&self, _name: &str, _total: Option<Total>) {}
    /// `rows` more rows are done in the current stage.
    fn advance(&self, _rows: u64) {}
    /// A step is being retried after a transient fault (`Some` says which), or no longer is.
    fn retrying(&self, _note: Option<&str>) {}
    /// The job is over (successfully or not).
    fn finish(&self) {}
}

/// How much a counted stage holds: `n` of `unit`, exactly or as an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Total {
    pub n: u64,
    pub unit: &'static str,
    pub estimated: bool,
}

impl Total {
    pub fn exact(n: u64, unit: &'static str) -> Self {
        Self {
            n,
            unit,
            estimated: false,
        }
    }

    pub fn about(n: u64, unit: &'static str) -> Self {
        Self {
            n,
            unit,
            estimated: true,
        }
    }
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
