//! `scrobsync bench`: the end-to-end benchmark. Seeds the source if needed, measures the
//! *read floor* (how fast PostgreSQL can emit the rows: a binary `COPY` of the same columns to
//! nowhere, over the same connection parameters), runs full loads as child processes (so their
//! peak RSS is their own), `verify` with and without `--attributes` over the loaded target,
//! the questions of docs/queries.sql over that target, optionally an incremental sync of fresh
//! rows, and reports medians.

pub mod held;

use super::seed::seed_locked;
use super::StageSeconds;
use crate::fixtures::SeedOptions;
use crate::source::conn::ReadOnlyClient;
use crate::source::mapping::SourceSpec;
use crate::source::plan::SourceTable;
use crate::source::SourceUrl;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub source: SourceUrl,
    /// The default table is seeded up to `rows`; a mapped source is measured as it is.
    pub table: SourceSpec,
    /// The config file to hand to the child runs, if any.
    pub config: Option<PathBuf>,
    /// The scrobsync executable to run loads with.
    pub exe: PathBuf,
    pub rows: u64,
    pub repeat: usize,
    pub partitions: usize,
    pub batch_rows: usize,
    /// `essential` or `full`, passed to the load runs.
    pub indexes: String,
    /// `copy` or `connectorx`, passed to the load and sync runs.
    pub reader: String,
    /// `fast` or `full`, passed to the load runs.
    pub check: String,
    /// Newest plays held back and then synced (0: skip it; None: 1% of the rows).
    pub sync_rows: Option<u64>,
    /// Time `verify` and `verify --attributes` against the loaded target.
    pub verify: bool,
    /// Folder for the target files.
    pub workdir: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChildRun {
    pub seconds: f64,
    /// CPU seconds (user + system) of the child, from `wait4`.
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    pub summary: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncBench {
    /// The newest plays held back from the load and then added with new ids.
    pub rows: u64,
    /// Rows the sync read (more than `rows` when it re-checked the previous run's ids).
    pub rows_read: u64,
    pub seconds: f64,
    /// CPU seconds (user + system) of the sync process.
    pub cpu_seconds: f64,
    pub peak_rss_mib: f64,
    /// Sync wall time as a percentage of the median full-load wall time.
    pub percent_of_load: f64,
    pub stages: StageSeconds,
    /// CPU seconds per stage, as the sync reported them.
    pub cpu_stages: StageSeconds,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyBench {
    /// Median wall seconds of `scrobsync verify` over the loaded target.
    pub seconds: f64,
    pub runs: Vec<f64>,
    /// `seconds` over the median load's.
    pub ratio_to_load: f64,
    /// Median wall seconds of `scrobsync verify --attributes`.
    pub attributes_seconds: f64,
    pub attributes_runs: Vec<f64>,
    pub attributes_ratio_to_load: f64,
    /// Greatest peak RSS over the verify runs.
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    pub source: String,
    pub rows: u64,
    pub partitions: usize,
    pub batch_rows: usize,
    pub reader: String,
    /// Median seconds of the binary COPY of the source columns to nowhere.
    pub read_floor_seconds: f64,
    pub read_floor_runs: Vec<f64>,
    /// Median wall seconds of `scrobsync load`.
    pub load_seconds: f64,
    pub load_runs: Vec<f64>,
    pub ratio_to_read_floor: f64,
    pub rows_per_second: f64,
    /// Greatest peak RSS over the load runs.
    pub peak_rss_mib: f64,
    /// Stage seconds of the median load run.
    pub stages: StageSeconds,
    /// CPU seconds (user + system) of the median load run's process, from `wait4`.
    pub load_cpu_seconds: f64,
    /// CPU seconds per stage of the median load run, as it reported them.
    pub cpu_stages: StageSeconds,
    pub verify: Option<VerifyBench>,
    /// The questions of docs/queries.sql over the loaded target (sqlite defaults, one run each).
    pub questions: Vec<crate::sink::questions::Timing>,
    /// The values their parameters were given.
    pub question_params: crate::sink::questions::Params,
    pub sync: Option<SyncBench>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

/// Runs `exe args…`, returning its wall time, peak RSS (from `wait4`) and parsed JSON stdout.
/// The source URL travels in the environment, not on the command line where other local
/// users could read it (/proc/PID/cmdline).
fn run_child(exe: &PathBuf, source: &SourceUrl, args: &[String]) -> Result<ChildRun> {
    let t = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .env("SCROBSYNC_SOURCE", source.expose_for_child())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut out)?;
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut err)?;
    let mut status = 0;
    // SAFETY: plain syscall on our own child's pid with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = t.elapsed().as_secs_f64();
    if r != pid {
        bail!("waiting for the benchmark child failed");
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!(
            "benchmark run `{}` failed: {}",
            args.first().map_or("", |s| s.as_str()),
            err.trim()
        );
    }
    Ok(ChildRun {
        seconds,
        cpu_seconds: crate::cpu::of_usage(&usage),
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
        summary: serde_json::from_str(&out).context("parsing the child's --json summary")?,
    })
}

/// The read floor: one binary COPY of the canonical columns, bytes discarded.
fn read_floor(client: &mut ReadOnlyClient, table: &SourceTable) -> Result<f64> {
    let t = Instant::now();
    client
        .copy_out(
            &format!("COPY ({}) TO STDOUT (FORMAT binary)", table.select_sql()),
            |r| Ok(std::io::copy(r, &mut std::io::sink())?),
        )
        .context("COPY for the read floor failed")?;
    Ok(t.elapsed().as_secs_f64())
}

/// `bench --restore`: puts back the plays that an interrupted bench of an earlier version held
/// aside (returns how many) and drops the scratch tables of an interrupted bench.
pub fn restore(source: &SourceUrl) -> Result<u64> {
    let mut client = source.connect()?;
    held::lock(&mut client)?;
    let back = held::restore(&mut client)?;
    held::drop_scratch(&mut client)?;
    Ok(back)
}

pub fn run(opts: &BenchOptions, status: &mut dyn FnMut(&str)) -> Result<BenchReport> {
    // One bench per database at a time (they would take each other's held plays); the lock
    // lasts as long as this connection.
    let mut lock = opts.source.connect()?;
    held::lock(&mut lock)?;
    let mut client = opts.source.connect()?;
    if matches!(opts.table, SourceSpec::Default) {
        // Plays that an interrupted bench of an earlier build held aside go back first, and
        // the scratch tables of an interrupted one go.
        held::restore(&mut client)?;
        held::drop_scratch(&mut client)?;
        let exists: bool = client
            .query_one("SELECT to_regclass('scrobbles') IS NOT NULL", &[])?
            .get(0);
        let have: i64 = if exists {
            client
                .query_one("SELECT count(*) FROM scrobbles", &[])?
                .get(0)
        } else {
            0
        };
        if (have as u64) < opts.rows {
            let add = opts.rows - have as u64;
            status(&format!("seeding {add} rows (the table has {have}) ..."));
            seed_locked(
                &mut lock,
                &SeedOptions {
                    rows: add,
                    users: 200,
                    seed: 42,
                },
            )?;
            client.batch_execute("VACUUM (ANALYZE) scrobbles")?;
        } else if have as u64 > opts.rows {
            status(&format!(
                "note: the table has {have} rows, more than --rows; benchmarking all of them"
            ));
        }
    } else if opts.sync_rows != Some(0) {
        bail!("the sync measurement needs the default table (it copies it and adds the newest plays again); pass --sync-rows 0 with --config");
    }
    // Everything that reads the source runs read-only, as in the pipeline itself.
    drop(client);
    let mut client = opts.source.connect_reader()?;
    let table = opts.table.resolve(&mut client, &opts.source)?;
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}", table.sql_name()), &[])?
        .get(0);
    let repeat = opts.repeat.max(1);

    status("measuring the read floor ...");
    read_floor(&mut client, &table)?; // warm-up: caches and hint bits
    let floors = (0..repeat)
        .map(|_| read_floor(&mut client, &table))
        .collect::<Result<Vec<_>>>()?;

    std::fs::create_dir_all(&opts.workdir)?;
    let target = opts.workdir.join("scrobsync-bench.sqlite");
    let base = |cmd: &str| -> Vec<String> {
        let mut v = vec![
            cmd.into(),
            "--target".into(),
            target.display().to_string(),
            "--partitions".into(),
            opts.partitions.to_string(),
            "--batch-rows".into(),
            opts.batch_rows.to_string(),
            "--reader".into(),
            opts.reader.clone(),
            "--json".into(),
        ];
        if cmd == "load" {
            v.push("--indexes".into());
            v.push(opts.indexes.clone());
            // Only when asked for: a build to compare against may predate the option.
            if opts.check != "fast" {
                v.push("--check".into());
                v.push(opts.check.clone());
            }
        }
        if let Some(c) = &opts.config {
            v.push("--config".into());
            v.push(c.display().to_string());
        }
        v
    };
    let mut loads = Vec::new();
    for i in 0..repeat {
        status(&format!("load run {}/{repeat} ...", i + 1));
        loads.push(run_child(&opts.exe, &opts.source, &base("load"))?);
    }
    let load_runs: Vec<f64> = loads.iter().map(|r| r.seconds).collect();
    let load_seconds = median(&load_runs);
    let median_run = loads
        .iter()
        .find(|r| r.seconds == load_seconds)
        .expect("median is one of the runs");
    let stages: StageSeconds =
        serde_json::from_value(median_run.summary["seconds"].clone()).unwrap_or_default();
    let cpu_stages: StageSeconds =
        serde_json::from_value(median_run.summary["cpu_seconds"].clone()).unwrap_or_default();
    let load_cpu_seconds = median_run.cpu_seconds;
    let peak_rss_mib = loads.iter().map(|r| r.peak_rss_mib).fold(0.0, f64::max);

    let verify = if opts.verify {
        // verify over the last load's target (the source is as that load read it)
        let mut args = vec![
            "verify".to_string(),
            "--target".into(),
            target.display().to_string(),
            "--partitions".into(),
            opts.partitions.to_string(),
            "--json".into(),
        ];
        if let Some(c) = &opts.config {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        let mut plain = Vec::new();
        let mut attributes = Vec::new();
        for i in 0..repeat {
            status(&format!("verify run {}/{repeat} ...", i + 1));
            plain.push(run_child(&opts.exe, &opts.source, &args)?);
        }
        args.push("--attributes".into());
        for i in 0..repeat {
            status(&format!("verify --attributes run {}/{repeat} ...", i + 1));
            attributes.push(run_child(&opts.exe, &opts.source, &args)?);
        }
        let secs = |v: &[ChildRun]| v.iter().map(|r| r.seconds).collect::<Vec<_>>();
        let (runs, attributes_runs) = (secs(&plain), secs(&attributes));
        Some(VerifyBench {
            seconds: median(&runs),
            ratio_to_load: median(&runs) / load_seconds,
            attributes_seconds: median(&attributes_runs),
            attributes_ratio_to_load: median(&attributes_runs) / load_seconds,
            runs,
            attributes_runs,
            peak_rss_mib: plain
                .iter()
                .chain(&attributes)
                .map(|r| r.peak_rss_mib)
                .fold(0.0, f64::max),
        })
    } else {
        None
    };

    status("asking the questions of docs/queries.sql ...");
    let (question_params, questions) = crate::sink::questions::time_all(&target)?;

    let sync_rows = opts.sync_rows.unwrap_or(rows as u64 / 100);
    let sync = if sync_rows > 0 {
        let mut client = opts.source.connect()?;
        status(&format!(
            "copying all but the newest {sync_rows} plays to {} and loading them ...",
            held::SCRATCH
        ));
        held::prepare(&mut client, sync_rows)?;
        let mapping = opts.workdir.join("scrobsync-bench-sync.toml");
        let run = std::fs::write(&mapping, held::mapping())
            .map_err(anyhow::Error::from)
            .and_then(|_| {
                let args = |cmd: &str| {
                    let mut v = base(cmd);
                    v.push("--config".into());
                    v.push(mapping.display().to_string());
                    v
                };
                run_child(&opts.exe, &opts.source, &args("load"))?;
                status(&format!(
                    "{sync_rows} plays arrive with new ids; syncing ..."
                ));
                held::arrive(&mut client)?;
                run_child(&opts.exe, &opts.source, &args("sync"))
            });
        let _ = std::fs::remove_file(&mapping);
        // The scratch tables go whatever happened.
        if let Err(e) = held::drop_scratch(&mut client) {
            return Err(match run {
                Ok(_) => e,
                Err(r) => e.context(format!("after the sync measurement failed: {r:#}")),
            });
        }
        let run = run?;
        Some(SyncBench {
            rows: sync_rows,
            rows_read: run.summary["rows_read"].as_u64().unwrap_or(0),
            seconds: run.seconds,
            cpu_seconds: run.cpu_seconds,
            peak_rss_mib: run.peak_rss_mib,
            percent_of_load: 100.0 * run.seconds / load_seconds,
            stages: serde_json::from_value(run.summary["seconds"].clone()).unwrap_or_default(),
            cpu_stages: serde_json::from_value(run.summary["cpu_seconds"].clone())
                .unwrap_or_default(),
        })
    } else {
        None
    };
    let _ = std::fs::remove_file(&target);
    drop(lock);
    let read_floor_seconds = median(&floors);
    Ok(BenchReport {
        mode: "bench",
        source: opts.source.redacted().to_string(),
        rows: rows as u64,
        partitions: opts.partitions,
        batch_rows: opts.batch_rows,
        reader: opts.reader.clone(),
        read_floor_seconds,
        read_floor_runs: floors,
        load_seconds,
        load_runs,
        ratio_to_read_floor: load_seconds / read_floor_seconds,
        rows_per_second: rows as f64 / load_seconds,
        peak_rss_mib,
        stages,
        load_cpu_seconds,
        cpu_stages,
        verify,
        questions,
        question_params,
        sync,
    })
}
