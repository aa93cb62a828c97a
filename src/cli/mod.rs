//! Command-line parsing: clap definitions, turned into the plain option values of the core.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

mod command;

const ABOUT: &str =
    "Move Last.fm scrobbles from PostgreSQL into a normalised SQLite database, fast.";

const AFTER_HELP: &str = "Examples:
  scrobsync demo     # seeds a local demo database, loads scrobsync-demo.sqlite
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync seed --rows 10000
  scrobsync load --target scrobsync-demo.sqlite --json

The source may be a postgresql:// URL or key=value pairs (host=… dbname=…); it may also come \
from SCROBSYNC_SOURCE or DATABASE_URL, and a service (service=NAME, PGSERVICE), PGHOST, PGPORT, \
PGUSER, PGDATABASE, PGPASSWORD, --password-command and ~/.pgpass fill in what it leaves out, \
as for psql.";

#[derive(Debug, Parser)]
#[command(name = "scrobsync", version, about = ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,

    /// No progress bar, no summary (only errors, and the --json output if asked for).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Full load: replace the target SQLite file with a normalised copy of the source.
    #[command(after_help = "Example:
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync load --target scrobsync-demo.sqlite --fts --json

The target is written to a temporary file beside it and renamed over it only after the load \
is complete and checked (keys, row counts; --check full adds SQLite's foreign-key and \
integrity checks); on any failure the target is left exactly as it was.")]
    Load(LoadArgs),

    /// Create the source table if absent and append generated, realistic scrobbles (COPY).
    #[command(after_help = "Example:
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync seed --rows 10000 --users 200

The same --rows/--users/--seed give the same rows. Seeding a table that already has rows \
appends new rows after its greatest id.")]
    Seed(SeedArgs),

    /// Incremental sync: add only the source rows above the target's mark (full load if no target).
    #[command(after_help = "Examples:
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync sync --target scrobsync-demo.sqlite
  scrobsync sync --target scrobsync-demo.sqlite --cursor played_at --lookback 2d

With the default --cursor id, a run reads rows with mark < id <= the source's greatest id at \
the start of the run, so back-dated imports (old played_at, new id) are picked up. Existing \
surrogate keys never change. The whole run commits in one transaction: a failed or killed run \
leaves the target at its previous mark, and the next run completes it.

--cursor played_at is for sources without a monotonic id: each run re-reads rows from \
(mark - lookback) on and upserts them by id, so overlap rows are not duplicated.

Updates or deletes of rows that were already synced are NOT picked up by sync; re-load the \
affected date range with `scrobsync backfill`, or run a full `scrobsync load`.")]
    Sync(SyncArgs),

    /// Re-load date ranges: replace each UTC window's scrobbles with the source's rows.
    #[command(after_help = "Examples:
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync backfill --target scrobsync-demo.sqlite \\
      --from 2024-01-01 --to 2024-04-01 --by month
  scrobsync backfill --target scrobsync-demo.sqlite \\
      --from 2024-01-01 --to 2024-04-01 --resume

Windows are half-open UTC ranges [from, to), cut at day / ISO-week (Monday) / month \
boundaries. Each window is replaced in one SQLite transaction: rows deleted in the source \
disappear, edited rows are replaced, nothing outside the window changes, and dimension keys \
stay stable. Finished windows are recorded, so --resume with the same arguments continues an \
interrupted backfill. Dimension rows no fact references any more are kept unless --prune. \
Dates: YYYY-MM-DD (UTC midnight) or RFC 3339 times such as 2024-03-01T12:00:00Z.")]
    Backfill(BackfillArgs),

    /// Compare source and target per UTC window (row count + content hash); --repair fixes.
    #[command(after_help = "Examples:
  export SCROBSYNC_SOURCE=postgresql://postgres@127.0.0.1:5432/scrobsync_demo
  scrobsync verify --target scrobsync-demo.sqlite
  scrobsync verify --target scrobsync-demo.sqlite \\
      --from 2024-01-01 --to 2025-01-01 --repair

Both sides compute, per window, the row count and a hash of the lossless tuples (id, \
username, epoch second, artist, album or NULL, track, loved) — PostgreSQL in SQL, the target \
in scrobsync — so no rows cross the network. Without --from/--to every row is compared. \
Exit codes: 0 all windows match; 3 some windows differ (after --repair: still differ); \
1 an error; 2 a command-line usage error.")]
    Verify(VerifyArgs),

    /// Show a target's marks, row counts per table and last runs.
    #[command(after_help = "Example:
  scrobsync status --target scrobsync-demo.sqlite --json")]
    Status(StatusArgs),

    /// End-to-end benchmark: read floor vs. full load (median of runs), peak RSS, sync cost.
    #[command(after_help = "Example:
  scrobsync bench --source postgresql://postgres@127.0.0.1:5432/bench \\
      --rows 1000000 --repeat 3

Seeds the source table up to --rows if it has fewer. The read floor is a binary COPY of the \
same columns to nowhere over the same connection (one stream). Loads run as child processes so \
their peak RSS is measured alone. With --sync-rows N, N rows are added to the source, synced \
into the loaded target and then deleted from the source again.")]
    Bench(BenchArgs),

    /// Source mapping files: `config example` prints one, `config check` validates one.
    #[command(
        subcommand,
        after_help = "Examples:
  scrobsync config example > mapping.toml
  scrobsync config check --config mapping.toml --source postgresql://postgres@127.0.0.1/music"
    )]
    Config(ConfigCommand),

    /// Seed a local demo database (if empty) and load it into a SQLite file.
    #[command(after_help = "Example:
  scrobsync demo --rows 200000 --target scrobsync-demo.sqlite

Connects to --source (by default the local server's postgres database), creates the database \
named by --database if needed, seeds it when its table is empty, then runs a full load.")]
    Demo(DemoArgs),

    /// Print a shell completion script (bash, zsh, fish or powershell) on stdout.
    #[command(after_help = "Examples:
  scrobsync completions bash > ~/.local/share/bash-completion/completions/scrobsync
  scrobsync completions zsh > ~/.zfunc/_scrobsync
  scrobsync completions fish > ~/.config/fish/completions/scrobsync.fish")]
    Completions(CompletionsArgs),

    /// Find artists, albums and tracks by name in a target loaded with --fts.
    #[command(after_help = "Examples:
  scrobsync search radiohead --target scrobsync-demo.sqlite
  scrobsync search 'sigur ros' --target scrobsync-demo.sqlite --json

Every word must match the start of a word of the name; case and accents do not matter.")]
    Search(SearchArgs),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Words to find (at most 32).
    #[arg(value_parser = search_term)]
    pub term: String,

    /// SQLite target (made by `load --fts`).
    #[arg(long)]
    pub target: PathBuf,

    /// At most this many results.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub limit: u64,

    /// Print machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Debug, Args)]
pub struct SourceArg {
    /// PostgreSQL URL or key=value pairs, e.g. postgresql://USER@HOST:5432/DB (the password from ~/.pgpass, PGPASSWORD or --password-command) [env: SCROBSYNC_SOURCE, then DATABASE_URL]
    #[arg(
        long,
        env = "SCROBSYNC_SOURCE",
        hide_env_values = true,
        hide_env = true
    )]
    pub source: Option<String>,

    #[command(flatten)]
    pub password: PasswordCommandArg,

    /// How long a statement may go without a byte from the server before the connection counts
    /// as lost (a stalled server or network) and the step is retried, e.g. 5m, 90s; 0: no limit.
    #[arg(long, value_parser = duration_arg, default_value = "5m", env = "SCROBSYNC_READ_TIMEOUT", value_name = "DURATION")]
    pub read_timeout: i64,

    /// Stop instead of warning when the source role can write (a superuser, or INSERT, UPDATE
    /// or DELETE on a table): connect as a read-only role (pg_read_all_data).
    #[arg(long)]
    pub require_read_only_role: bool,
}

/// `--password-command`, for every command that connects to the source.
#[derive(Debug, Args)]
pub struct PasswordCommandArg {
    /// Shell command that prints the source's password, run once (sh -c) when neither the
    /// source, its service nor PGPASSWORD gives one, e.g. 'pass show db/music' [env:
    /// SCROBSYNC_PASSWORD_COMMAND]
    #[arg(
        long,
        env = "SCROBSYNC_PASSWORD_COMMAND",
        hide_env_values = true,
        hide_env = true,
        value_name = "CMD"
    )]
    pub password_command: Option<String>,
}

/// How a full or incremental read is cut and what a full load builds.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Partition queries read in parallel [default: half the number of CPUs, at least 1]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub partitions: Option<u16>,

    /// Rows per partition query; a window of rows in memory is about partitions × batch-rows.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1000..=10_000_000))]
    pub batch_rows: u64,

    /// Indexes to build on a full load. Every target now gets the identity indexes and the
    /// query indexes on scrobbles (played_at, track, user); full is the same set, kept for
    /// scripts that pass it.
    #[arg(long, value_enum, default_value_t = IndexesArg::Essential)]
    pub indexes: IndexesArg,

    /// How source rows become Arrow batches: copy (binary COPY decoded by scrobsync, faster)
    /// or connectorx.
    #[arg(long, value_enum, default_value_t = ReaderArg::Copy)]
    pub reader: ReaderArg,

    /// What a full load checks before its new file replaces the target: fast (keys proved as
    /// they are written, key ranges and row counts of the file) or full (also SQLite's
    /// foreign_key_check and integrity_check of every row, about a quarter of a large load).
    #[arg(long, value_enum, default_value_t = CheckArg::Fast)]
    pub check: CheckArg,
}

/// What a full load checks before installing its new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckArg {
    /// keys proved as they are written, key ranges and row counts of the file
    Fast,
    /// also SQLite's foreign_key_check and integrity_check of every row
    Full,
}

/// Which indexes a full load builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IndexesArg {
    /// identity indexes and the query indexes on scrobbles
    Essential,
    /// the same set (kept for scripts that pass it)
    Full,
}

/// How source rows become Arrow batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReaderArg {
    /// binary COPY decoded by scrobsync (faster)
    Copy,
    /// connectorx's get_arrow
    Connectorx,
}

/// What marks a sync's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CursorArg {
    /// the greatest source id loaded
    Id,
    /// the newest played_at loaded (needs --lookback)
    #[value(name = "played_at")]
    PlayedAt,
}

/// Window size of backfill and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ByArg {
    Day,
    Week,
    Month,
}

/// Shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

/// A date flag: `YYYY-MM-DD` (UTC midnight) or an RFC 3339 time, as Unix seconds.
fn date_arg(s: &str) -> Result<i64, String> {
    scrobsync::modes::windows::parse_date("the date", s).map_err(|e| {
        if e.to_string().contains("fraction") {
            "a fraction of a second is not allowed (windows start at whole seconds)".to_string()
        } else {
            "not a date; use YYYY-MM-DD (UTC midnight) or an RFC 3339 time such as 2024-03-01T12:00:00Z".to_string()
        }
    })
}

/// A search term with at least one word.
fn search_term(s: &str) -> Result<String, String> {
    if s.split_whitespace().next().is_none() {
        return Err("give at least one word to find".into());
    }
    Ok(s.to_string())
}

/// A duration such as 90s, 15m, 2h, 7d or 1h30m, in microseconds.
fn duration_arg(s: &str) -> Result<i64, String> {
    scrobsync::modes::sync::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
pub struct MappingArg {
    /// TOML file mapping another PostgreSQL schema onto scrobsync's fields (see `scrobsync config example`).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    pub source: SourceArg,

    #[command(flatten)]
    pub retry: RetryArg,

    #[command(flatten)]
    pub mapping: MappingArg,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// SQLite file to create or replace (a symbolic link keeps pointing where it points).
    #[arg(long)]
    pub target: PathBuf,

    /// Replace --target even if it is not a scrobsync target (another file or database).
    #[arg(long)]
    pub force: bool,

    /// Also build a full-text search index over artist, album and track names (for
    /// `scrobsync search`; kept current by sync and backfill).
    #[arg(long)]
    pub fts: bool,

    /// Continue the load of --target that was interrupted (kill, power loss, Ctrl-C) from its
    /// last durable point, with the same source, mapping, --indexes and --fts. Refused when
    /// the rows it read have changed on the source since.
    #[arg(long)]
    pub resume: bool,

    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--retries`, for the commands that read the source.
#[derive(Debug, Args)]
pub struct RetryArg {
    /// Retries of a step after a transient source fault (connection lost or refused, server
    /// restarting, too many connections, serialization failure), with backoff from 0.5 s
    /// doubling up to 30 s; 0 turns retrying off.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub retries: u32,
}

/// `--allow-other-source`, for the commands that change an existing target.
#[derive(Debug, Args)]
pub struct OtherSourceArg {
    /// Accept a source other than the one the target was loaded from (host, port, database or
    /// mapping differ); it becomes the target's source, and the run log records the change.
    #[arg(long)]
    pub allow_other_source: bool,
}

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub source: SourceArg,

    /// Number of scrobbles to generate.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Number of distinct users.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub users: u32,

    /// Random seed; the same seed gives the same data.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Server to use; the demo database is created next to this URL's database.
    #[arg(
        long,
        env = "SCROBSYNC_SOURCE",
        hide_env_values = true,
        hide_env = true,
        default_value = "postgresql://postgres@127.0.0.1:5432/postgres"
    )]
    pub source: String,

    #[command(flatten)]
    pub password: PasswordCommandArg,

    /// Name of the demo database.
    #[arg(long, default_value = "scrobsync_demo")]
    pub database: String,

    /// Scrobbles to seed when the demo table is empty.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// SQLite file to create or replace.
    #[arg(long, default_value = "scrobsync-demo.sqlite")]
    pub target: PathBuf,

    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub source: SourceArg,

    #[command(flatten)]
    pub retry: RetryArg,

    #[command(flatten)]
    pub mapping: MappingArg,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// SQLite target to bring up to date (created by a full load when absent).
    #[arg(long)]
    pub target: PathBuf,

    /// What marks progress: the source id (default) or played_at (needs --lookback).
    #[arg(long, value_enum, default_value_t = CursorArg::Id)]
    pub cursor: CursorArg,

    /// With --cursor played_at: how far before the mark each run re-reads, e.g. 1h, 2d, 1h30m.
    #[arg(long, value_parser = duration_arg, required_if_eq("cursor", "played_at"))]
    pub lookback: Option<i64>,

    /// How long ids below the mark that no row had at a sync are read again by later syncs
    /// (rows whose ids were taken before a sync and committed after it), e.g. 1d, 12h; the next
    /// sync always reads them once.
    #[arg(long, value_parser = duration_arg, default_value = "1d", value_name = "DURATION")]
    pub recheck_for: i64,

    #[command(flatten)]
    pub other_source: OtherSourceArg,

    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// SQLite target to describe.
    #[arg(long)]
    pub target: PathBuf,

    /// How many recent runs to list.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,

    /// Print machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub source: SourceArg,

    #[command(flatten)]
    pub mapping: MappingArg,

    #[command(flatten)]
    pub pipeline: PipelineArgs,

    /// Rows the source should have (seeded if it has fewer).
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub rows: u64,

    /// Runs of the read floor and of the load; medians are reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub repeat: u64,

    /// Newest plays to hold back from one more load (of a scratch copy of the table) and then
    /// let arrive, with new ids, for a timed `sync` (0 skips it) [default: 1% of the rows]
    #[arg(long)]
    pub sync_rows: Option<u64>,

    /// Do not time `verify` and `verify --attributes` against the loaded target.
    #[arg(long)]
    pub skip_verify: bool,

    /// Only put back the plays that an interrupted bench of an earlier version held aside in
    /// the source table, and drop scratch tables an interrupted bench left, then stop.
    #[arg(long)]
    pub restore: bool,

    /// The scrobsync executable whose load and sync runs are timed, e.g. another build to
    /// compare against [default: this one]
    #[arg(long, value_name = "PATH")]
    pub exe: Option<PathBuf>,

    /// Folder for the benchmark's target file [default: the system temp folder]
    #[arg(long)]
    pub workdir: Option<PathBuf>,

    /// Print machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub source: SourceArg,

    #[command(flatten)]
    pub retry: RetryArg,

    #[command(flatten)]
    pub mapping: MappingArg,

    /// Existing SQLite target (made by `load` or `sync`).
    #[arg(long)]
    pub target: PathBuf,

    /// Start of the range, inclusive (UTC).
    #[arg(long)]
    #[arg(value_parser = date_arg)]
    pub from: i64,

    /// End of the range, exclusive (UTC).
    #[arg(long)]
    #[arg(value_parser = date_arg)]
    pub to: i64,

    /// Window size: day, week or month.
    #[arg(long, value_enum, default_value_t = ByArg::Month)]
    pub by: ByArg,

    /// Continue an interrupted backfill with the same --from/--to/--by.
    #[arg(long)]
    pub resume: bool,

    /// Delete dimension rows that no scrobble references any more.
    #[arg(long)]
    pub prune: bool,

    #[command(flatten)]
    pub other_source: OtherSourceArg,

    /// Partition queries read in parallel per window [default: half the number of CPUs, at least 1]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub partitions: Option<u16>,

    /// How source rows become Arrow batches: copy or connectorx (see `load --help`).
    #[arg(long, value_enum, default_value_t = ReaderArg::Copy)]
    pub reader: ReaderArg,

    /// Print a machine-readable summary on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub source: SourceArg,

    #[command(flatten)]
    pub retry: RetryArg,

    #[command(flatten)]
    pub mapping: MappingArg,

    /// SQLite target to check.
    #[arg(long)]
    pub target: PathBuf,

    /// Start of the range, inclusive (UTC) [default: the earliest row]
    #[arg(long)]
    #[arg(value_parser = date_arg)]
    pub from: Option<i64>,

    /// End of the range, exclusive (UTC) [default: after the latest row]
    #[arg(long)]
    #[arg(value_parser = date_arg)]
    pub to: Option<i64>,

    /// Window size: day, week or month.
    #[arg(long, value_enum, default_value_t = ByArg::Month)]
    pub by: ByArg,

    /// Backfill exactly the differing windows, then verify again (also compares and
    /// recomputes the dimension attributes when the whole range is verified).
    #[arg(long)]
    pub repair: bool,

    /// Also compare the dimension attributes (first non-NULL mbid and duration) with the
    /// source; costs a GROUP BY of the whole source per dimension.
    #[arg(long)]
    pub attributes: bool,

    #[command(flatten)]
    pub other_source: OtherSourceArg,

    /// Source connections used to hash in parallel [default: number of CPUs]
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub partitions: Option<u16>,

    /// Print a machine-readable report on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented example mapping.
    #[command(after_help = "Example:
  scrobsync config example > mapping.toml")]
    Example,
    /// Check a mapping against the source and print the resolved query and field types.
    #[command(after_help = "Example:
  scrobsync config check --config examples/epoch_seconds.toml --source postgresql://postgres@127.0.0.1/music")]
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub source: SourceArg,

    /// The mapping file to check.
    #[arg(long)]
    pub config: PathBuf,

    /// Print machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}
