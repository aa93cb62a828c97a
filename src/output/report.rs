//! The text form of every command's report (the JSON form is their `Serialize`).

use super::Report;
use scrobsync::modes::backfill::BackfillSummary;
use scrobsync::modes::bench::BenchReport;
use scrobsync::modes::load::LoadSummary;
use scrobsync::modes::seed::SeedSummary;
use scrobsync::modes::status::Status;
use scrobsync::modes::sync::SyncSummary;
use scrobsync::modes::verify::VerifyReport;
use scrobsync::progress::thousands;
use std::fmt::{self, Write};

/// The line that says how many transient faults a run survived (none: no line).
fn print_retries(w: &mut dyn Write, n: u64) -> fmt::Result {
    if n > 0 {
        writeln!(
            w,
            "  survived {n} transient source fault{} by retrying",
            if n == 1 { "" } else { "s" }
        )?;
    }
    Ok(())
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
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        if self.hits.is_empty() {
            writeln!(w, "nothing matches '{}'", self.term)?;
        }
        for h in &self.hits {
            let by = h
                .artist
                .as_deref()
                .map_or(String::new(), |a| format!(" — {a}"));
            writeln!(
                w,
                "{:<6}  {}{by}  ({} plays)",
                h.kind,
                h.name,
                thousands(h.plays.max(0) as u64)
            )?;
        }
        Ok(())
    }
}

impl Report for LoadSummary {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        let r = &self.rows;
        let t = &self.seconds;
        writeln!(
            w,
            "loaded {} into {} in {:.2} s ({} rows/s)",
            count(r.scrobbles, "scrobble"),
            self.target,
            t.total,
            thousands(self.rows_per_second as u64)
        )?;
        writeln!(
            w,
            "  users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks),
        )?;
        writeln!(w, "  high-water mark {}", mark(self.high_water_mark))?;
        writeln!(
            w,
            "  seconds: plan {:.2} · read {:.2} · normalize {:.2} · write {:.2}",
            t.plan, t.read, t.normalize, t.write
        )?;
        writeln!(
            w,
            "           index {:.2} · check {:.2} ({} × {})",
            t.index,
            t.check,
            count(self.windows as u64, "window"),
            count(self.partitions as u64, "partition")
        )?;
        let c = &self.cpu_seconds;
        writeln!(
            w,
            "  CPU seconds: read {:.2} · normalize {:.2} · write {:.2}",
            c.read, c.normalize, c.write
        )?;
        writeln!(
            w,
            "               index {:.2} · check {:.2} · total {:.2}",
            c.index, c.check, c.total
        )?;
        print_retries(w, self.retries)?;
        Ok(())
    }
}

impl Report for SeedSummary {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        writeln!(
            w,
            "seeded {} scrobbles (ids {} to {}) in {:.2} s",
            thousands(self.rows),
            self.first_id.unwrap_or(0),
            self.last_id.unwrap_or(0),
            self.seconds
        )?;
        Ok(())
    }
}

fn mark(m: Option<i64>) -> String {
    m.map_or("-".into(), |v| v.to_string())
}

impl Report for SyncSummary {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        let r = &self.rows;
        if r.scrobbles == 0 && self.mark_before == self.mark_after {
            writeln!(
                w,
                "{} is already up to date (cursor {}, mark {}; {:.2} s)",
                self.target,
                self.cursor,
                mark(self.mark_after),
                self.seconds.total
            )?;
        } else {
            writeln!(
                w,
                "synced {} into {} in {:.2} s",
                count(r.scrobbles, "new scrobble"),
                self.target,
                self.seconds.total,
            )?;
            writeln!(
                w,
                "  cursor {}, mark {} → {}",
                self.cursor,
                mark(self.mark_before),
                mark(self.mark_after)
            )?;
        }
        writeln!(
            w,
            "  new: users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks),
        )?;
        writeln!(
            w,
            "  updated dimension rows {} · rows read {}",
            thousands(self.dimension_rows_updated),
            thousands(self.rows_read)
        )?;
        print_retries(w, self.retries)?;
        Ok(())
    }
}

impl Report for Status {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        let r = &self.rows;
        writeln!(w, "target {}", self.target)?;
        writeln!(w, "  source {}", self.source.as_deref().unwrap_or("-"))?;
        writeln!(
            w,
            "  high-water mark (id) {} · played_at mark {}",
            mark(self.high_water_mark),
            self.played_at_mark_rfc3339.as_deref().unwrap_or("-")
        )?;
        writeln!(
            w,
            "  rows: scrobbles {} · users {} · artists {} · albums {} · tracks {}",
            thousands(r.scrobbles),
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks)
        )?;
        for run in &self.last_runs {
            writeln!(
                w,
                "  run {} {} {} {} {} scrobbles (net), mark {} → {}, {:.2} s",
                run.run_id,
                run.mode,
                run.finished_at,
                run.outcome,
                signed(run.scrobbles_added),
                mark(run.mark_before),
                mark(run.mark_after),
                run.seconds
            )?;
        }
        for f in &self.leftover_temporary_files {
            writeln!(w, "  leftover temporary file of a killed load: {f} (remove it with rm; the next load of this target removes it too)")?;
        }
        for r in &self.resumable_loads {
            writeln!(
                w,
                "  interrupted load: {} ({}); continue it with: {}",
                r.file, r.progress, r.command
            )?;
        }
        Ok(())
    }
}

impl Report for BenchReport {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|s| format!("{s:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let st = &self.stages;
        writeln!(
            w,
            "scrobsync bench — {} rows, {} partitions × {} rows per query, {} reader",
            thousands(self.rows),
            self.partitions,
            thousands(self.batch_rows as u64),
            self.reader
        )?;
        writeln!(w, "| measure | value |")?;
        writeln!(w, "|---|---|")?;
        writeln!(
            w,
            "| read floor (binary COPY to nowhere, median) | {:.2} s ({}) |",
            self.read_floor_seconds,
            runs(&self.read_floor_runs)
        )?;
        writeln!(
            w,
            "| load wall time (median) | {:.2} s ({}) |",
            self.load_seconds,
            runs(&self.load_runs)
        )?;
        writeln!(
            w,
            "| ratio to read floor | {:.2}× |",
            self.ratio_to_read_floor
        )?;
        writeln!(w, "| rows/s | {} |", thousands(self.rows_per_second as u64))?;
        writeln!(
            w,
            "| peak RSS (max over runs) | {:.0} MiB |",
            self.peak_rss_mib
        )?;
        writeln!(
            w,
            "| stages of the median run (s) | plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} · index {:.2} · check {:.2} |",
            st.plan, st.read, st.normalize, st.write, st.index, st.check
        )?;
        let c = &self.cpu_stages;
        writeln!(
            w,
            "| scrobsync CPU of the median run (user+sys) | {:.2} s: plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} · index {:.2} · check {:.2} |",
            self.load_cpu_seconds, c.plan, c.read, c.normalize, c.write, c.index, c.check
        )?;
        if let Some(v) = &self.verify {
            writeln!(
                w,
                "| verify (median) | {:.2} s = {:.2}× the load ({}) |",
                v.seconds,
                v.ratio_to_load,
                runs(&v.runs)
            )?;
            writeln!(
                w,
                "| verify --attributes (median) | {:.2} s = {:.2}× the load ({}; peak RSS {:.0} MiB) |",
                v.attributes_seconds,
                v.attributes_ratio_to_load,
                runs(&v.attributes_runs),
                v.peak_rss_mib
            )?;
        }
        if let Some(s) = &self.sync {
            let t = &s.stages;
            writeln!(
                w,
                "| sync of the newest {} plays ({} rows read) | {:.2} s = {:.1}% of the load (peak RSS {:.0} MiB) |",
                thousands(s.rows),
                thousands(s.rows_read),
                s.seconds,
                s.percent_of_load,
                s.peak_rss_mib
            )?;
            writeln!(
                w,
                "| stages of the sync (s) | plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} |",
                t.plan, t.read, t.normalize, t.write
            )?;
            let c = &s.cpu_stages;
            writeln!(
                w,
                "| scrobsync CPU of the sync (user+sys) | {:.2} s: plan {:.2} · read {:.2} · normalize {:.2} · write {:.2} |",
                s.cpu_seconds, c.plan, c.read, c.normalize, c.write
            )?;
        }
        if !self.questions.is_empty() {
            let p = &self.question_params;
            writeln!(w)?;
            writeln!(
                w,
                "questions of docs/queries.sql over the loaded target (user '{}', artist '{}', track '{}', year {}, month {}):",
                p.user, p.artist, p.track, p.year, p.month
            )?;
            writeln!(w, "| question | seconds | rows |")?;
            writeln!(w, "|---|---:|---:|")?;
            for q in &self.questions {
                writeln!(w, "| {} | {:.2} | {} |", q.question, q.seconds, q.rows)?;
            }
        }
        Ok(())
    }
}

impl Report for BackfillSummary {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        writeln!(
            w,
            "backfilled {} of {} {} window{} into {} in {:.2} s",
            thousands(self.windows_done as u64),
            thousands(self.windows_total as u64),
            self.by.name(),
            if self.windows_total == 1 { "" } else { "s" },
            self.target,
            self.seconds,
        )?;
        writeln!(
            w,
            "  {} deleted, {} written, {} moved out (net {}); {} skipped as done",
            count(self.rows_deleted, "row"),
            thousands(self.rows_written),
            thousands(self.rows_moved_out),
            signed(self.net_scrobble_change),
            thousands(self.windows_skipped as u64)
        )?;
        let r = &self.rows;
        writeln!(
            w,
            "  new: users {} · artists {} · albums {} · tracks {}",
            thousands(r.users),
            thousands(r.artists),
            thousands(r.albums),
            thousands(r.tracks)
        )?;
        if let Some(p) = &self.pruned {
            writeln!(
                w,
                "  pruned: users {} · artists {} · albums {} · tracks {}",
                thousands(p.users),
                thousands(p.artists),
                thousands(p.albums),
                thousands(p.tracks)
            )?;
        }
        print_retries(w, self.retries)?;
        Ok(())
    }
}

fn print_verify_table(w: &mut dyn Write, r: &VerifyReport) -> fmt::Result {
    writeln!(
        w,
        "checked {} in {:.2} s",
        count(r.windows_checked as u64, &format!("{} window", r.by.name())),
        r.seconds,
    )?;
    writeln!(
        w,
        "  source {}, target {}",
        count(r.source_rows, "row"),
        count(r.target_rows, "row")
    )?;
    if !r.attributes_differ.is_empty() {
        writeln!(
            w,
            "attributes (mbid, duration) differ from the source's rows in: {} (verify --repair recomputes them)",
            r.attributes_differ.join(", ")
        )?;
    }
    if r.search_index_differs {
        writeln!(
            w,
            "the search index (names_fts) does not hold exactly the names of the target's rows (verify --repair rebuilds it)"
        )?;
    }
    if r.summaries_differ {
        writeln!(
            w,
            "the summary tables do not match the scrobbles ({}); verify --repair recounts them",
            r.summary_differences.join("; ")
        )?;
    }
    if !r.trigger_differences.is_empty() {
        writeln!(
            w,
            "triggers of other software are in scrobsync's way: {}",
            r.trigger_differences.join("; ")
        )?;
    }
    if r.summaries_skipped_for_range {
        writeln!(
            w,
            "the summary tables count the whole target and were not compared (verify without --from/--to compares them)"
        )?;
    }
    if !r.foreign_triggers.is_empty() {
        writeln!(
            w,
            "note: {} {} not made by scrobsync: {} on every write and may change what scrobsync stores (drop {} with DROP TRIGGER if {} not needed)",
            r.foreign_triggers.join(", "),
            if r.foreign_triggers.len() == 1 { "was" } else { "were" },
            if r.foreign_triggers.len() == 1 { "it runs" } else { "they run" },
            if r.foreign_triggers.len() == 1 { "it" } else { "them" },
            if r.foreign_triggers.len() == 1 { "it is" } else { "they are" },
        )?;
    }
    if r.differing.is_empty() {
        if r.attributes_compared {
            writeln!(w, "all windows match")?;
        } else {
            writeln!(
                w,
                "all windows match (scrobbles and names; mbid and duration were not compared: add --attributes)"
            )?;
        }
        return Ok(());
    }
    writeln!(
        w,
        "{:<22} {:>12} {:>12}  status",
        "window", "source rows", "target rows"
    )?;
    for d in &r.differing {
        let what = if d.source_rows == d.target_rows {
            "content differs"
        } else {
            "counts differ"
        };
        writeln!(
            w,
            "{:<22} {:>12} {:>12}  {what}",
            d.window,
            thousands(d.source_rows),
            thousands(d.target_rows)
        )?;
    }
    writeln!(
        w,
        "{} of {} {}",
        thousands(r.differing.len() as u64),
        thousands(r.windows_checked as u64),
        if r.windows_checked == 1 {
            "window differs"
        } else {
            "windows differ"
        }
    )?;
    Ok(())
}

impl Report for VerifyReport {
    fn text(&self, w: &mut dyn Write) -> fmt::Result {
        print_verify_table(w, self)?;
        if let Some(after) = &self.after_repair {
            writeln!(
                w,
                "repaired {} by backfill and the attributes of {}{}; verifying again:",
                count(self.repaired.len() as u64, "window"),
                count(self.attributes_repaired, "dimension row"),
                if self.summaries_recounted {
                    ", recounted the summary tables"
                } else {
                    ""
                }
            )?;
            print_verify_table(w, after)?;
        }
        print_retries(w, self.retries)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use scrobsync::modes::verify::{VerifyReport, WindowDiff};
    use scrobsync::modes::windows::By;

    fn verify_report() -> VerifyReport {
        VerifyReport {
            mode: "verify",
            by: By::Month,
            windows_checked: 12,
            source_rows: 1_234_567,
            target_rows: 1_234_567,
            differing: Vec::new(),
            attributes_differ: Vec::new(),
            search_index_differs: false,
            summaries_differ: false,
            summary_differences: Vec::new(),
            summaries_compared: true,
            summaries_skipped_for_range: false,
            summaries_recounted: false,
            foreign_triggers: Vec::new(),
            trigger_differences: Vec::new(),
            attributes_compared: false,
            repaired: Vec::new(),
            attributes_repaired: 0,
            after_repair: None,
            retries: 0,
            seconds: 1.5,
        }
    }

    #[test]
    fn a_matching_verify_says_what_it_did_not_compare() {
        let text = render(&verify_report());
        assert_eq!(
            text,
            "checked 12 month windows in 1.50 s\n  source 1,234,567 rows, target 1,234,567 rows\n\
             all windows match (scrobbles and names; mbid and duration were not compared: add --attributes)\n"
        );
    }

    #[test]
    fn a_differing_verify_names_windows_summaries_and_retries() {
        let mut r = verify_report();
        r.retries = 1;
        r.summaries_differ = true;
        r.summary_differences = vec![
            "table album_plays is missing".into(),
            "track_plays: 3 rows differ".into(),
        ];
        r.differing = vec![WindowDiff {
            window: "2021-03".into(),
            start: 0,
            end: 1,
            start_rfc3339: None,
            end_rfc3339: None,
            source_rows: 10,
            target_rows: 9,
            source_hash: String::new(),
            target_hash: String::new(),
            outside: false,
        }];
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "the summary tables do not match the scrobbles (table album_plays is missing; track_plays: 3 rows differ); verify --repair recounts them"
        );
        assert!(lines[4].starts_with("2021-03") && lines[4].ends_with("counts differ"));
        assert_eq!(lines[5], "1 of 12 windows differ");
        assert_eq!(lines[6], "  survived 1 transient source fault by retrying");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn a_partial_verify_says_the_summaries_were_not_compared_and_names_foreign_triggers() {
        let mut r = verify_report();
        r.summaries_compared = false;
        r.summaries_skipped_for_range = true;
        r.foreign_triggers = vec!["trigger audit on scrobbles".into()];
        let text = render(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[2],
            "the summary tables count the whole target and were not compared (verify without --from/--to compares them)"
        );
        assert_eq!(
            lines[3],
            "note: trigger audit on scrobbles was not made by scrobsync: it runs on every write and may change what scrobsync stores (drop it with DROP TRIGGER if it is not needed)"
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_repair_says_it_recounted_the_summaries() {
        let mut r = verify_report();
        r.summaries_recounted = true;
        r.repaired = vec!["2021-03".into()];
        r.after_repair = Some(Box::new(verify_report()));
        let text = render(&r);
        assert!(
            text.contains("repaired 1 window by backfill and the attributes of 0 dimension rows, recounted the summary tables; verifying again:"),
            "{text}"
        );
    }
}
