//! Terminal output: logging set-up, the progress bar, and human or JSON summaries.

use anyhow::Result;
use scrobsync::modes::backfill::BackfillSummary;
use scrobsync::modes::bench::BenchReport;
use scrobsync::modes::load::LoadSummary;
use scrobsync::modes::status::Status;
use scrobsync::modes::sync::SyncSummary;
use scrobsync::modes::verify::VerifyReport;
use scrobsync::progress::Progress;
use scrobsync::source::mapping::Resolved;
use scrobsync::source::seed::SeedSummary;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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

impl ProgressBar {
    pub fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({rate}, eta {eta})",
                )
                .expect("valid template")
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", thousands(s.per_sec() as u64));
                    },
                ),
            );
            b
        });
        Self {
            bar,
            stage: Default::default(),
        }
    }
}

impl Progress for ProgressBar {
    fn stage(&self, name: &str, total: Option<u64>) {
        if let Ok(mut s) = self.stage.lock() {
            *s = name.to_string();
        }
        if let Some(b) = &self.bar {
            b.set_message(name.to_string());
            if let Some(t) = total {
                b.set_length(t);
            }
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
        println!(
            "  survived {n} transient source fault{} by retrying",
            if n == 1 { "" } else { "s" }
        );
    }
}

fn thousands(n: u64) -> String {
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

pub fn print_load(s: &LoadSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let r = &s.rows;
    let t = &s.seconds;
    println!(
        "loaded {} scrobbles into {} in {:.2} s ({} rows/s)",
        thousands(r.scrobbles),
        s.target,
        t.total,
        thousands(s.rows_per_second as u64)
    );
    println!(
        "  users {} · artists {} · albums {} · tracks {} · high-water mark {}",
        thousands(r.users),
        thousands(r.artists),
        thousands(r.albums),
        thousands(r.tracks),
        s.high_water_mark.map_or("-".into(), |h| h.to_string())
    );
    println!(
        "  seconds: plan {:.2} · read {:.2} · normalise {:.2} · write {:.2} · index {:.2} · check {:.2} ({} windows × {} partitions)",
        t.plan, t.read, t.normalize, t.write, t.index, t.check, s.windows, s.partitions
    );
    print_retries(s.retries);
    Ok(())
}

pub fn print_seed(s: &SeedSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
    } else {
        println!(
            "seeded {} scrobbles (ids {}..={}) in {:.2} s",
            thousands(s.rows),
            s.first_id.unwrap_or(0),
            s.last_id.unwrap_or(0),
            s.seconds
        );
    }
    Ok(())
}

fn mark(m: Option<i64>) -> String {
    m.map_or("-".into(), |v| v.to_string())
}

pub fn print_sync(s: &SyncSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let r = &s.rows;
    println!(
        "synced {} new scrobbles into {} in {:.2} s (cursor {}, mark {} → {})",
        thousands(r.scrobbles),
        s.target,
        s.seconds.total,
        s.cursor,
        mark(s.mark_before),
        mark(s.mark_after)
    );
    println!(
        "  new: users {} · artists {} · albums {} · tracks {} · updated dimension rows {} · rows read {}",
        thousands(r.users),
        thousands(r.artists),
        thousands(r.albums),
        thousands(r.tracks),
        thousands(s.dimension_rows_updated),
        thousands(s.rows_read)
    );
    print_retries(s.retries);
    Ok(())
}

pub fn print_status(s: &Status, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    let r = &s.rows;
    println!("target {}", s.target);
    println!("  source {}", s.source.as_deref().unwrap_or("-"));
    println!(
        "  high-water mark (id) {} · played_at mark {}",
        mark(s.high_water_mark),
        mark(s.played_at_mark)
    );
    println!(
        "  rows: scrobbles {} · users {} · artists {} · albums {} · tracks {}",
        thousands(r.scrobbles),
        thousands(r.users),
        thousands(r.artists),
        thousands(r.albums),
        thousands(r.tracks)
    );
    for run in &s.last_runs {
        println!(
            "  run {} {} {} {} +{} scrobbles, mark {} → {}, {:.2} s",
            run.run_id,
            run.mode,
            run.finished_at,
            run.outcome,
            thousands(run.scrobbles_added.max(0) as u64),
            mark(run.mark_before),
            mark(run.mark_after),
            run.seconds
        );
    }
    Ok(())
}

pub fn print_bench(r: &BenchReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    let runs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let st = &r.stages;
    println!(
        "scrobsync bench — {} rows, {} partitions × {} rows per query, {} reader",
        thousands(r.rows),
        r.partitions,
        thousands(r.batch_rows as u64),
        r.reader
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| read floor (binary COPY to nowhere, median) | {:.2} s ({}) |",
        r.read_floor_seconds,
        runs(&r.read_floor_runs)
    );
    println!(
        "| load wall time (median) | {:.2} s ({}) |",
        r.load_seconds,
        runs(&r.load_runs)
    );
    println!("| ratio to read floor | {:.2}× |", r.ratio_to_read_floor);
    println!("| rows/s | {} |", thousands(r.rows_per_second as u64));
    println!("| peak RSS (max over runs) | {:.0} MiB |", r.peak_rss_mib);
    println!(
        "| stages of the median run (s) | plan {:.2} · read {:.2} · normalise {:.2} · write {:.2} · index {:.2} · check {:.2} |",
        st.plan, st.read, st.normalize, st.write, st.index, st.check
    );
    if let Some(s) = &r.sync {
        println!(
            "| sync of {} new rows | {:.2} s = {:.1}% of the load (peak RSS {:.0} MiB) |",
            thousands(s.rows),
            s.seconds,
            s.percent_of_load,
            s.peak_rss_mib
        );
    }
    Ok(())
}

pub fn print_backfill(s: &BackfillSummary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!(
        "backfilled {} of {} {} windows into {} in {:.2} s ({} skipped as done): {} rows deleted, {} written (net {:+})",
        s.windows_done,
        s.windows_total,
        s.by.name(),
        s.target,
        s.seconds,
        s.windows_skipped,
        thousands(s.rows_deleted),
        thousands(s.rows_written),
        s.net_scrobble_change
    );
    let r = &s.rows;
    println!(
        "  new: users {} · artists {} · albums {} · tracks {}",
        thousands(r.users),
        thousands(r.artists),
        thousands(r.albums),
        thousands(r.tracks)
    );
    if let Some(p) = &s.pruned {
        println!(
            "  pruned: users {} · artists {} · albums {} · tracks {}",
            thousands(p.users),
            thousands(p.artists),
            thousands(p.albums),
            thousands(p.tracks)
        );
    }
    print_retries(s.retries);
    Ok(())
}

fn print_verify_table(r: &VerifyReport) {
    println!(
        "checked {} {} windows in {:.2} s: source {} rows, target {} rows",
        r.windows_checked,
        r.by.name(),
        r.seconds,
        thousands(r.source_rows),
        thousands(r.target_rows)
    );
    if !r.attributes_differ.is_empty() {
        println!(
            "attributes (mbid, duration) differ from the source's rows in: {} (verify --repair recomputes them)",
            r.attributes_differ.join(", ")
        );
    }
    if r.differing.is_empty() {
        println!("all windows match");
        return;
    }
    println!(
        "{:<22} {:>12} {:>12}  status",
        "window", "source rows", "target rows"
    );
    for d in &r.differing {
        let what = if d.source_rows == d.target_rows {
            "content differs"
        } else {
            "counts differ"
        };
        println!(
            "{:<22} {:>12} {:>12}  {what}",
            d.window,
            thousands(d.source_rows),
            thousands(d.target_rows)
        );
    }
    println!(
        "{} of {} windows differ",
        r.differing.len(),
        r.windows_checked
    );
}

pub fn print_verify(r: &VerifyReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    print_verify_table(r);
    if let Some(after) = &r.after_repair {
        println!(
            "repaired {} windows by backfill, {} dimension rows' attributes; verifying again:",
            r.repaired.len(),
            r.attributes_repaired
        );
        print_verify_table(after);
    }
    print_retries(r.retries);
    Ok(())
}

pub fn print_config_check(name: &str, r: &Resolved, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!("mapping of {name} is valid");
    println!("{:<12} {:<40} {:<12} as", "field", "from", "type");
    for f in &r.fields {
        println!(
            "{:<12} {:<40} {:<12} {}",
            f.field,
            one_line(&f.source),
            f.source_type,
            one_line(&f.sql)
        );
    }
    println!("resolved query:\n{}", r.query);
    Ok(())
}
