//! The progress bar on stderr (shown only on a terminal), and the writer that prints log lines
//! through it.

use scrobsync::progress::{thousands, Progress, Total};
use std::io::IsTerminal;

/// An indicatif bar on stderr, shown only when stderr is a terminal.
pub struct ProgressBar {
    bar: Option<indicatif::ProgressBar>,
    /// The current stage's name, shown again when a retry is over.
    stage: std::sync::Mutex<String>,
}

/// The bar of this process, if any: log lines are printed through it (see [`BarWriter`]).
static BAR: std::sync::OnceLock<indicatif::ProgressBar> = std::sync::OnceLock::new();

/// Counted work, in one line that fits the terminal (80 columns hold every stage with a
/// billion rows): the count with its unit, `~` before a total that is an estimate, the rate and
/// the time left; the bar takes what is left of the width.
fn bar_style(total: Total) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} {msg} {wide_bar} {count} {rate} eta {eta}")
        .expect("valid template")
        .with_key(
            "count",
            move |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(
                    w,
                    "{}/{}{} {}",
                    thousands(s.pos()),
                    if total.estimated { "~" } else { "" },
                    thousands(s.len().unwrap_or(total.n)),
                    total.unit
                );
            },
        )
        .with_key(
            "rate",
            |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", rate(s.per_sec()));
            },
        )
}

/// Items per second: whole numbers with separators, and one decimal below 10 so that slow
/// units (verify's slices) do not show as `0/s`.
fn rate(per_sec: f64) -> String {
    if per_sec < 10.0 {
        format!("{per_sec:.1}")
    } else {
        thousands(per_sec as u64)
    }
}

/// A stage without a count (index build, checks): a spinner and the time.
fn spinner_style() -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
        .expect("valid template")
}

impl ProgressBar {
    /// A bar on a terminal's stderr; none when it is not a terminal or with `--quiet`.
    pub fn new(quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = indicatif::ProgressBar::with_draw_target(
                None,
                indicatif::ProgressDrawTarget::stderr(),
            );
            b.set_style(spinner_style());
            let _ = BAR.set(b.clone());
            b
        });
        Self {
            bar,
            stage: Default::default(),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Writes log lines to stderr through the progress bar (which hides itself for the line and
/// redraws below it), so logs never tear the bar.
pub struct BarWriter;

impl std::io::Write for BarWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(b) if !b.is_finished() => b.suspend(|| std::io::stderr().write_all(buf))?,
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Progress for ProgressBar {
    fn stage(&self, name: &str, total: Option<Total>) {
        if let Ok(mut s) = self.stage.lock() {
            *s = name.to_string();
        }
        if let Some(b) = &self.bar {
            match total {
                Some(t) => {
                    if b.length() != Some(t.n) {
                        b.set_style(bar_style(t));
                        b.set_length(t.n);
                    }
                }
                None => {
                    b.set_style(spinner_style());
                    b.unset_length();
                }
            }
            b.set_message(name.to_string());
            b.enable_steady_tick(std::time::Duration::from_millis(200));
        }
    }
    fn advance(&self, rows: u64) {
        if let Some(b) = &self.bar {
            b.inc(rows);
        }
    }
    fn retrying(&self, note: Option<&str>) {
        if let Some(b) = &self.bar {
            let stage = self.stage.lock().map(|s| s.clone()).unwrap_or_default();
            b.set_message(match note {
                Some(n) => format!("{stage} — {n}"),
                None => stage,
            });
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rate, thousands};

    #[test]
    fn rates_keep_slow_units_visible() {
        assert_eq!(rate(0.4), "0.4");
        assert_eq!(rate(9.96), "10.0");
        assert_eq!(rate(12.7), "12");
        assert_eq!(rate(1_234_567.0), "1,234,567");
        assert_eq!(thousands(1000), "1,000");
    }
}
