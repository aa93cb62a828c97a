//! Terminal output: logging set-up ([`log`]), the progress bar ([`progress`]), and the
//! reports of every command as text or JSON ([`report`]), written to stdout so that a closed
//! pipe ends the process quietly.

mod log;
mod progress;
mod report;

pub use log::init_logging;
pub use progress::ProgressBar;
pub use report::SearchReport;

use anyhow::Result;
use scrobsync::source::mapping::Resolved;

/// `println!` that ends the process quietly on a closed pipe (see [`write_line`]).
macro_rules! outln {
    ($($t:tt)*) => {
        write_line(format_args!($($t)*))
    };
}

/// Collapses a message to one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A run's result as the user sees it: text by default, pretty JSON with `--json`.
pub trait Report: serde::Serialize {
    /// The text form, line by line.
    fn text(&self, w: &mut dyn std::fmt::Write) -> std::fmt::Result;
}

/// The text form of a report.
pub fn render(r: &impl Report) -> String {
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = r.text(&mut s);
    s
}

/// Prints a report in the form asked for. Nothing at all with `--quiet` and without `--json`.
pub fn emit(r: &impl Report, json: bool, quiet: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?);
    } else if !quiet {
        write_out(&render(r));
    }
    Ok(())
}

/// Writes a line to stdout; a closed pipe (`scrobsync status | head -1`) ends the process
/// quietly and successfully instead of with a panic.
pub fn write_line(args: std::fmt::Arguments) {
    write_out(&format!("{args}\n"));
}

/// Writes text to stdout, as [`write_line`] does.
fn write_out(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // A full disk under `--json > file`: never exit 0 with half the output.
        let _ = writeln!(
            std::io::stderr(),
            "error: cannot write the output ({e}); free space or choose another place"
        );
        std::process::exit(1);
    }
}

pub fn print_config_check(name: &str, r: &Resolved, json: bool) -> Result<()> {
    if json {
        let body = serde_json::json!({
            "mode": "config-check",
            "valid": true,
            "table": name,
            "query": r.query,
            "fields": r.fields,
        });
        outln!("{}", serde_json::to_string(&body)?);
        return Ok(());
    }
    outln!("mapping of {name} is valid");
    outln!("{:<12} {:<40} {:<12} as", "field", "from", "type");
    for f in &r.fields {
        outln!(
            "{:<12} {:<40} {:<12} {}",
            f.field,
            one_line(&f.source),
            f.source_type,
            one_line(&f.sql)
        );
    }
    outln!("resolved query:\n{}", r.query);
    Ok(())
}

/// After the demo's load: what the user now has, and how to ask it themselves.
pub fn print_demo_answer(target: &std::path::Path) -> Result<()> {
    use scrobsync::modes::demo::{top_artists, TOP_ARTISTS_SQL};
    outln!("\nmost played artists in {}:", target.display());
    for (name, plays) in top_artists(target)? {
        outln!("  {plays:>7}  {name}");
    }
    outln!(
        "(asked with: sqlite3 {} \"{TOP_ARTISTS_SQL}\")",
        target.display()
    );
    Ok(())
}
