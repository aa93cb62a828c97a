//! Logging: `tracing` to stderr, through the progress bar when there is one.

use super::progress::BarWriter;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Sets up logging at the level `-v`/`--quiet` (or `RUST_LOG`) ask for.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match verbose {
        _ if quiet => "error",
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| BarWriter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
