//! Terminal output: logging set-up, the progress bar, and human or JSON summaries.

use anyhow::Result;
use scrobsync::modes::backfill::BackfillSummary;
use scrobsync::modes::bench::BenchReport;
use scrobsync::modes::load::LoadSummary;
use scrobsync::modes::seed::SeedSummary;
use scrobsync::modes::status::Status;
use scrobsync::modes::sync::SyncSummary;
use scrobsync::modes::verify::VerifyReport;
use scrobsync::progress::{thousands, Progress, Total};
use scrobsync::source::mapping::Resolved;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// `println!` that ends the process quietly on a closed pipe (see [`write_line`]).
macro_rules! outln {
    ($($t:tt)*) => {
        write_line(format_args!($($t)*))
    };
}

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

/// Collapses a message to one line.
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

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

/// The line that says how many transient faults a run survived (none: no line).
fn print_retries(n: u64) {
    if n > 0 {
        outln!(
            "  survived {n} transient source fault{} by retrying",
            if n == 1 { "" } else { "s" }
        );
    }
}

/// A run's result as the user sees it: text by default, pretty JSON with `--json`.
pub trait Report: serde::Serialize {
    /// The text form, on stdout.
    fn text(&self);
}

/// Prints a report in the form asked for. Nothing at all with `--quiet` and without `--json`.
pub fn emit(r: &impl Report, json: bool, quiet: bool) -> Result<()> {
    if json {
        outln!("{}", serde_json::to_string(r)?);
    } else if !quiet {
        r.text();
    }
    Ok(())
}

/// Writes a line to stdout; a closed pipe (`scrobsync status | head -1`) ends the process
/// quietly and successfully instead of with a panic.
pub fn write_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out
        .write_fmt(args)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
    {
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

/// `+1,234` / `-3` / `0`.
fn signed(n: i64) -> String {
    match n {
        0 => "0".into(),
        n if n > 0 => format!("+{}", thousands(n as u64)),
        n => format!("-{}", thousands(n.unsigned_abs())),
    }
}

/// `1 window`, `2,000 windows`.
fn count(n: u64, what: &str) -> String {
    format!("{} {what}{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// The result of `scrobsync search`.
#[derive(serde::Serialize)]
pub struct SearchReport {
    pub mode: &'static str,
    pub term: String,
    pub hits: Vec<scrobsync::sink::search::Hit>,
}

impl Report for SearchReport {
    fn text(&self) {
        if self.hits.is_empty() {
            outln!("nothing matches '{}'", self.term);
        }
        for h in &self.hits {
            let by = h
                .artist
                .as_deref()
                .map_or(String::new(), |a| format!(" — {a}"));
            outln!(
                "{:<6}  {}{by}  ({} plays)",
                h.kind,
                h.name,
                thousands(h.plays.max(0) as u64)
            );
        }
    }
}

impl Report for LoadSummary {
    fn text(&self) {
        let r = &self.rows;
        let t = &self.seconds;
        outln!(
            "loaded {} into {} in {:.2} s ({} rows/s)",
            count(r.scrobbles, "scrobble"),
            self.target,
            t.total,
            thousands(self.rows_per_second as u64)
        );
        outln!(
            "  users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks),
        );
        outln!("  high-water mark {}", mark(self.high_water_mark));
        outln!(
            "  seconds: plan {:.2} · read {:.2} · normalize {:.2} · write {:.2}",
            t.plan,
            t.read,
            t.normalize,
            t.write
        );
        outln!(
            "           index {:.2} · check {:.2} ({} × {})",
            t.index,
            t.check,
            count(self.windows as u64, "window"),
            count(self.partitions as u64, "partition")
        );
        print_retries(self.retries);
    }
}

impl Report for SeedSummary {
    fn text(&self) {
        outln!(
            "seeded {} scrobbles (ids {} to {}) in {:.2} s",
            thousands(self.rows),
            self.first_id.unwrap_or(0),
            self.last_id.unwrap_or(0),
            self.seconds
        );
    }
}

fn mark(m: Option<i64>) -> String {
    m.map_or("-".into(), |v| v.to_string())
}

impl Report for SyncSummary {
    fn text(&self) {
        let r = &self.rows;
        if r.scrobbles == 0 && self.mark_before == self.mark_after {
            outln!(
                "{} is already up to date (cursor {}, mark {}; {:.2} s)",
                self.target,
                self.cursor,
                mark(self.mark_after),
                self.seconds.total
            );
        } else {
            outln!(
                "synced {} into {} in {:.2} s",
                count(r.scrobbles, "new scrobble"),
                self.target,
                self.seconds.total,
            );
            outln!(
                "  cursor {}, mark {} → {}",
                self.cursor,
                mark(self.mark_before),
                mark(self.mark_after)
            );
        }
        outln!(
            "  new: users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks),
        );
        outln!(
            "  updated dimension rows {} · rows read {}",
            thousands(self.dimension_rows_updated),
            thousands(self.rows_read)
        );
        print_retries(self.retries);
    }
}

impl Report for Status {
    fn text(&self) {
        let r = &self.rows;
        outln!("target {}", self.target);
        outln!("  source {}", self.source.as_deref().unwrap_or("-"));
        outln!(
            "  high-water mark (id) {} · played_at mark {}",
            mark(self.high_water_mark),
            self.played_at_mark_rfc3339.as_deref().unwrap_or("-")
        );
        outln!(
            "  rows: scrobbles {} · users {} · artists {} · albums {} · tracks {}",
            thousands(r.scrobbles),
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks)
        );
        for run in &self.last_runs {
            outln!(
                "  run {} {} {} {} {} scrobbles (net), mark {} → {}, {:.2} s",
                run.run_id,
                run.mode,
                run.finished_at,
                run.outcome,
                signed(run.scrobbles_added),
                mark(run.mark_before),
                mark(run.mark_after),
                run.seconds
            );
        }
        for f in &self.leftover_temporary_files {
            outln!("  leftover temporary file of a killed load: {f} (remove it with rm; the next load of this target removes it too)");
        }
    }
}

impl Report for BenchReport {
    fn text(&self) {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let st = &self.stages;
        outln!(
            "scrobsync bench — {} rows, {} partitions × {} rows per query, {} reader",
            thousands(self.rows),
            self.partitions,
            thousands(self.batch_rows as u64),
            self.reader
        );
        outln!("| measure | value |");
        outln!("|---|---|");
        outln!(
            "| read floor (binary COPY to nowhere, median) | {:.2} s ({}) |",
            self.read_floor_seconds,
            runs(&self.read_floor_runs)
        );
        outln!(
            "| load wall time (median) | {:.2} s ({}) |",
            self.load_seconds,
            runs(&self.load_runs)
        );
        outln!("| ratio to read floor | {:.2}× |", self.ratio_to_read_floor);
        outln!("| rows/s | {} |", thousands(self.rows_per_second as u64));
        outln!(
            "| peak RSS (max over runs) | {:.0} MiB |",
            self.peak_rss_mib
        );
        outln!(
            "| stages of the median run (s) | plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} · index {:.2} · check {:.2} |",
            st.plan, st.read, st.normalize, st.write, st.index, st.check
        );
        if let Some(v) = &self.verify {
            outln!(
                "| verify (median) | {:.2} s = {:.2}× the load ({}) |",
                v.seconds,
                v.ratio_to_load,
                runs(&v.runs)
            );
            outln!(
                "| verify --attributes (median) | {:.2} s = {:.2}× the load ({}; peak RSS {:.0} MiB) |",
                v.attributes_seconds,
                v.attributes_ratio_to_load,
                runs(&v.attributes_runs),
                v.peak_rss_mib
            );
        }
        if let Some(s) = &self.sync {
            let t = &s.stages;
            outln!(
                "| sync of the newest {} plays ({} rows read) | {:.2} s = {:.1}% of the load (peak RSS {:.0} MiB) |",
                thousands(s.rows),
                thousands(s.rows_read),
                s.seconds,
                s.percent_of_load,
                s.peak_rss_mib
            );
            outln!(
                "| stages of the sync (s) | plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} |",
                t.plan, t.read, t.normalize, t.write
            );
        }
        if !self.questions.is_empty() {
            let p = &self.question_params;
            outln!("");
            outln!(
                "questions of docs/queries.sql over the loaded target (user '{}', artist '{}', track '{}', year {}, month {}):",
                p.user, p.artist, p.track, p.year, p.month
            );
            outln!("| question | seconds | rows |");
            outln!("|---|---:|---:|");
            for q in &self.questions {
                outln!("| {} | {:.2} | {} |", q.question, q.seconds, q.rows);
            }
        }
    }
}

impl Report for BackfillSummary {
    fn text(&self) {
        outln!(
            "backfilled {} of {} {} into {} in {:.2} s",
            thousands(self.windows_done as u64),
            thousands(self.windows_total as u64),
            format!(
                "{} window{}",
                self.by.name(),
                if self.windows_total == 1 { "" } else { "s" }
            ),
            self.target,
            self.seconds,
        );
        outln!(
            "  {} deleted, {} written, {} moved out (net {}); {} skipped as done",
            count(self.rows_deleted, "row"),
            thousands(self.rows_written),
            thousands(self.rows_moved_out),
            signed(self.net_scrobble_change),
            thousands(self.windows_skipped as u64)
        );
        let r = &self.rows;
        outln!(
            "  new: users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks)
        );
        if let Some(p) = &self.pruned {
            outln!(
                "  pruned: users {} · artists {} · albums {} · tracks {}",
                thousands(p.users),
                thousands(p.artists),
                thousands(p.albums),
                thousands(p.tracks)
            );
        }
        print_retries(self.retries);
    }
}

fn print_verify_table(r: &VerifyReport) {
    outln!(
        "checked {} in {:.2} s",
        count(r.windows_checked as u64, &format!("{} window", r.by.name())),
        r.seconds,
    );
    outln!(
        "  source {}, target {}",
        count(r.source_rows, "row"),
        count(r.target_rows, "row")
    );
    if !r.attributes_differ.is_empty() {
        outln!(
            "attributes (mbid, duration) differ from the source's rows in: {} (verify --repair recomputes them)",
            r.attributes_differ.join(", ")
        );
    }
    if r.search_index_differs {
        outln!(
            "the search index (names_fts) does not hold exactly the names of the target's rows (verify --repair rebuilds it)"
        );
    }
    if r.summaries_differ {
        outln!(
            "the summary tables do not match the scrobbles ({}); verify --repair recounts them",
            r.summary_differences.join("; ")
        );
    }
    if r.differing.is_empty() {
        if r.attributes_compared {
            outln!("all windows match");
        } else {
            outln!(
                "all windows match (scrobbles and names; mbid and duration were not compared: add --attributes)"
            );
        }
        return;
    }
    outln!(
        "{:<22} {:>12} {:>12}  status",
        "window",
        "source rows",
        "target rows"
    );
    for d in &r.differing {
        let what = if d.source_rows == d.target_rows {
            "content differs"
        } else {
            "counts differ"
        };
        outln!(
            "{:<22} {:>12} {:>12}  {what}",
            d.window,
            thousands(d.source_rows),
            thousands(d.target_rows)
        );
    }
    outln!(
        "{} of {} {}",
        thousands(r.differing.len() as u64),
        thousands(r.windows_checked as u64),
        if r.windows_checked == 1 {
            "window differs"
        } else {
            "windows differ"
        }
    );
}

impl Report for VerifyReport {
    fn text(&self) {
        print_verify_table(self);
        if let Some(after) = &self.after_repair {
            outln!(
                "repaired {} by backfill and the attributes of {}; verifying again:",
                count(self.repaired.len() as u64, "window"),
                count(self.attributes_repaired, "dimension row")
            );
            print_verify_table(after);
        }
        print_retries(self.retries);
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
