//! Deterministic, realistic demo scrobbles, written to PostgreSQL with binary `COPY`.
//!
//! The data is meant to break naive pipelines: Zipf-like artist popularity, exact-text
//! identity traps (case, trailing spaces, combining accents), NULL vs '' albums, every kind of
//! awkward character, duplicate scrobbles, sparse ids with huge gaps, and timestamps from
//! 4714 BC to 9999 AD including exact UTC midnights and fractional seconds. Everything derives
//! from `(seed, row number)`, so the same options always give the same rows.

use super::conn::{explain_query_error, SourceUrl};
use super::plan::SourceTable;
use anyhow::{anyhow, bail, Context, Result};
use std::io::Write;

/// Options of `scrobsync seed`.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    pub rows: u64,
    pub users: u32,
    pub seed: u64,
}

/// One generated scrobble; `played_at` is microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    pub id: i64,
    pub username: String,
    pub played_at_us: i64,
    pub artist_name: String,
    pub artist_mbid: Option<[u8; 16]>,
    pub album_name: Option<String>,
    pub album_mbid: Option<[u8; 16]>,
    pub track_name: String,
    pub track_mbid: Option<[u8; 16]>,
    pub duration_ms: Option<i32>,
    pub loved: bool,
}

/// DDL of the default source table.
pub const SOURCE_DDL: &str = "CREATE TABLE IF NOT EXISTS scrobbles (
    id bigint PRIMARY KEY,
    username text NOT NULL,
    played_at timestamptz NOT NULL,
    artist_name text NOT NULL,
    artist_mbid uuid NULL,
    album_name text NULL,
    album_mbid uuid NULL,
    track_name text NOT NULL,
    track_mbid uuid NULL,
    duration_ms integer NULL,
    loved boolean NOT NULL DEFAULT false
)";

/// SplitMix64: tiny, fast, and good enough to make test data; also used as a hash.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn h(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED, |acc, &p| mix(acc ^ p))
}

/// Uniform in [0, 1).
fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "ri", "mu", "sen", "tra", "vel", "dor", "ny", "qui", "zo", "bel", "ash", "ter",
    "gon", "fi", "la", "mor", "ix", "pe", "ul", "sha", "den", "ro",
];
const CJK: [&str; 8] = ["坂本", "龍一", "東京", "事変", "夜", "音楽", "少女", "時代"];
const CYRILLIC: [&str; 8] = [
    "Кино",
    "Звери",
    "Сплин",
    "Ночь",
    "Город",
    "Мечта",
    "Ветер",
    "Лето",
];
const ARABIC: [&str; 6] = ["فيروز", "عمرو", "ليل", "حب", "شمس", "قمر"];
const EMOJI: [&str; 6] = ["🎸", "🔥", "🌙", "💿", "🦊", "✨"];

/// Names chosen to trip exact-text identity and escaping; always among the first artists.
const TRAP_ARTISTS: [&str; 16] = [
    "Radiohead",
    "radiohead",
    "Radiohead ",
    " Radiohead",
    "Sigur Rós",        // precomposed ó
    "Sigur Ro\u{301}s", // o + combining acute: looks the same, different bytes
    "AC/DC",
    "Guns N' Roses",
    "\"Weird Al\" Yankovic",
    "Crosby, Stills, Nash & Young",
    "Tab\tSeparated",
    "Line\nBreak",
    "Back\\slash \\N",
    "NULL",
    "",
    "🎵 Emoji Orchestra 🎵",
];

fn syllable_name(seed: u64, parts: u64) -> String {
    let n = 2 + (seed % 3) as usize;
    let mut s = String::new();
    for i in 0..n {
        s.push_str(SYLLABLES[(mix(seed ^ i as u64) % SYLLABLES.len() as u64) as usize]);
    }
    let mut c = s.chars();
    let mut out: String = match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    };
    if parts > 1 {
        out.push(' ');
        out.push_str(&syllable_name(mix(seed), 1));
    }
    out
}

fn artist_name(seed: u64, idx: u64) -> String {
    if (idx as usize) < TRAP_ARTISTS.len() {
        return TRAP_ARTISTS[idx as usize].to_string();
    }
    let r = h(&[seed, 1, idx]);
    let base = syllable_name(r, 1 + (r >> 60) % 2);
    let name = match r % 40 {
        0 => format!(
            "{} {}",
            CJK[(r >> 8) as usize % CJK.len()],
            CJK[(r >> 16) as usize % CJK.len()]
        ),
        1 => format!("{} {}", CYRILLIC[(r >> 8) as usize % CYRILLIC.len()], base),
        2 => ARABIC[(r >> 8) as usize % ARABIC.len()].to_string() + " " + &base,
        3 => format!("{} {}", EMOJI[(r >> 8) as usize % EMOJI.len()], base),
        4 => format!("{base}, the \"Band\""),
        5 => format!("Cafe\u{301} {base}"),
        6 => base.to_lowercase(),
        7 => format!("{base} "),
        _ => base,
    };
    // The index keeps generated names unique (collisions would merge artists on purpose-less luck).
    format!("{name} #{idx}")
}

fn album_title(seed: u64, artist: u64, album: u64) -> String {
    let r = h(&[seed, 2, artist, album]);
    match r % 30 {
        0 => format!("{} (Deluxe Edition)", syllable_name(r, 2)),
        1 => format!("Live at \"{}\"", syllable_name(r, 1)),
        2 => format!("{}\\{}", syllable_name(r, 1), syllable_name(mix(r), 1)),
        3 => format!("{} {}", CJK[(r >> 8) as usize % CJK.len()], album + 1),
        4 => format!("Greatest Hits {}", album + 1),
        _ => format!("{} {}", syllable_name(r, 2), album + 1),
    }
}

fn track_title(seed: u64, artist: u64, album: u64, track: u64) -> String {
    let r = h(&[seed, 3, artist, album, track]);
    match r % 25 {
        0 => format!("{}, Part {}", syllable_name(r, 1), track + 1),
        1 => format!(
            "{} ({} Remix)",
            syllable_name(r, 1),
            syllable_name(mix(r), 1)
        ),
        2 => format!("{}\t{}", syllable_name(r, 1), track + 1),
        3 => format!(
            "{} {}",
            CYRILLIC[(r >> 8) as usize % CYRILLIC.len()],
            track + 1
        ),
        4 => format!("Intro {}", track + 1),
        5 => "Intro".to_string(),
        6 => "intro".to_string(),
        _ => format!("{} {}", syllable_name(r, 2), track + 1),
    }
}

fn uuid(x: u64) -> [u8; 16] {
    let a = mix(x).to_be_bytes();
    let b = mix(x ^ 0xABCD).to_be_bytes();
    let mut u = [0u8; 16];
    u[..8].copy_from_slice(&a);
    u[8..].copy_from_slice(&b);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

fn user_name(seed: u64, idx: u32) -> String {
    const TRAP_USERS: [&str; 6] = ["alice", "Alice", "alice ", "Ünïcødé", "用户", "o'brien"];
    if (idx as usize) < TRAP_USERS.len() {
        TRAP_USERS[idx as usize].to_string()
    } else {
        format!(
            "{}_{idx}",
            syllable_name(h(&[seed, 4, idx as u64]), 1).to_lowercase()
        )
    }
}

/// Seconds from 1970 to 2005-01-01 and to 2026-11-01: where ordinary scrobbles fall.
const T_START: i64 = 1_104_537_600;
const T_END: i64 = 1_793_491_200;
pub use super::query::PG_MIN_US;
/// 9999-12-31 23:59:59.999999 UTC in Unix microseconds.
pub const MAX_9999_US: i64 = 253_402_300_799_999_999;

/// Values every seeded dataset contains, early, so small seeds include them too.
const EXTREME_US: [i64; 8] = [
    PG_MIN_US,
    MAX_9999_US,
    -500_000,                   // 1969-12-31 23:59:59.5 → floor -1
    -1,                         // 1969-12-31 23:59:59.999999 → -1
    0,                          // the epoch itself
    -2_208_988_800_000_000 + 1, // 1900-01-01 00:00:00.000001
    -62_135_596_800_000_000,    // 0001-01-01 00:00:00
    946_684_799_999_999,        // 1999-12-31 23:59:59.999999
];

/// Generates rows `[start_row, start_row + count)` of the dataset for `opts`; ids continue
/// from `first_id` (exclusive) with sparse gaps.
pub struct Generator {
    opts: SeedOptions,
    artists: u64,
    row: u64,
    end: u64,
    next_id: i64,
    prev: Option<SeedRow>,
}

impl Generator {
    pub fn new(opts: SeedOptions, after_id: i64) -> Self {
        let artists = (opts.rows / 40).max(TRAP_ARTISTS.len() as u64 + 50);
        Self {
            end: opts.rows,
            opts,
            artists,
            row: 0,
            next_id: after_id,
            prev: None,
        }
    }

    fn next_id(&mut self, r: u64) -> i64 {
        let remaining = self.end - self.row;
        let step: i64 = if remaining <= 3 {
            // The last rows get ids far away, as imported legacy data tends to.
            1 << (58 + remaining)
        } else {
            match r % 10_000 {
                0 => 1_000_000_000,
                1..=9 => 1 + (mix(r) % 1_000_000) as i64,
                10..=500 => 2 + (r >> 40) as i64 % 5,
                _ => 1,
            }
        };
        self.next_id = self.next_id.saturating_add(step);
        self.next_id
    }
}

impl Iterator for Generator {
    type Item = SeedRow;

    fn next(&mut self) -> Option<SeedRow> {
        if self.row >= self.end {
            return None;
        }
        let seed = self.opts.seed;
        let n = self.row;
        let r = h(&[seed, 0, n]);
        let id = self.next_id(r);
        self.row += 1;

        // About 1% of scrobbles are duplicates of the previous one (double submissions).
        if r.is_multiple_of(100) {
            if let Some(mut p) = self.prev.clone() {
                p.id = id;
                return Some(p);
            }
        }

        let users = self.opts.users.max(1);
        let user = (mix(r ^ 7) % users as u64) as u32;
        // Zipf-like (s≈1) popularity: log-uniform rank.
        let u = unit(mix(r ^ 11));
        let artist = ((self.artists as f64).powf(u) as u64)
            .saturating_sub(1)
            .min(self.artists - 1);
        let ah = h(&[seed, 5, artist]);
        let albums = 1 + ah % 12;
        let album = mix(r ^ 13) % albums;
        let tracks = 4 + h(&[seed, 6, artist, album]) % 10;
        let track = mix(r ^ 17) % tracks;

        let no_album = mix(r ^ 19).is_multiple_of(20);
        let album_name = if no_album {
            None
        } else if artist % 97 == 3 && album == 0 {
            Some(String::new()) // '' is a real title, distinct from NULL
        } else {
            Some(album_title(seed, artist, album))
        };
        let album_key = if no_album { u64::MAX } else { album };
        let th = h(&[seed, 8, artist, album_key, track]);
        let rowvar = mix(r ^ 23);

        let artist_mbid = match (ah % 10, rowvar % 100) {
            (0..=2, _) => None,
            (_, 0..=1) => None,                // an old scrobbler that sent none
            (_, 2) => Some(uuid(ah ^ 0xDEAD)), // disagreeing mbid
            _ => Some(uuid(ah)),
        };
        let album_mbid = if no_album || ah.is_multiple_of(4) {
            None
        } else {
            Some(uuid(h(&[seed, 9, artist, album])))
        };
        let track_mbid = if th.is_multiple_of(3) {
            None
        } else {
            Some(uuid(th))
        };
        let duration_ms = match (th % 10, rowvar % 200) {
            (0, _) => None,
            (_, 0) => Some(((th >> 20) % 400_000) as i32 + 500),
            _ => Some(((th >> 20) % 400_000) as i32 + 60_000),
        };

        let played_at_us = if (n as usize) < EXTREME_US.len() {
            EXTREME_US[n as usize]
        } else {
            let t = mix(r ^ 29);
            let secs = T_START + (t % (T_END - T_START) as u64) as i64;
            match (t >> 40) % 20 {
                0 => (secs - secs.rem_euclid(86_400)) * 1_000_000, // exact UTC midnight
                1 => secs * 1_000_000,                             // whole second
                _ => secs * 1_000_000 + ((t >> 20) % 1_000_000) as i64,
            }
        };

        let row = SeedRow {
            id,
            username: user_name(seed, user),
            played_at_us,
            artist_name: artist_name(seed, artist),
            artist_mbid,
            album_name,
            album_mbid,
            track_name: track_title(seed, artist, album_key, track),
            track_mbid,
            duration_ms,
            loved: mix(r ^ 31).is_multiple_of(20),
        };
        self.prev = Some(row.clone());
        Some(row)
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// Appends one row in PostgreSQL's binary COPY format.
pub fn encode_binary_row(buf: &mut Vec<u8>, r: &SeedRow) {
    fn field(buf: &mut Vec<u8>, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
                buf.extend_from_slice(b);
            }
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    buf.extend_from_slice(&11i16.to_be_bytes());
    field(buf, Some(&r.id.to_be_bytes()));
    field(buf, Some(r.username.as_bytes()));
    field(
        buf,
        Some(&(r.played_at_us - PG_EPOCH_OFFSET_US).to_be_bytes()),
    );
    field(buf, Some(r.artist_name.as_bytes()));
    field(buf, r.artist_mbid.as_ref().map(|u| &u[..]));
    field(buf, r.album_name.as_ref().map(|s| s.as_bytes()));
    field(buf, r.album_mbid.as_ref().map(|u| &u[..]));
    field(buf, Some(r.track_name.as_bytes()));
    field(buf, r.track_mbid.as_ref().map(|u| &u[..]));
    let d = r.duration_ms.map(|d| d.to_be_bytes());
    field(buf, d.as_ref().map(|b| &b[..]));
    field(buf, Some(&[r.loved as u8]));
}

/// A complete binary COPY stream of `rows` (signature, header, rows, trailer), as PostgreSQL
/// would send it for the default table's columns: for decoder tests and benches.
pub fn binary_copy_stream(rows: &[SeedRow]) -> Vec<u8> {
    let mut buf = copy_header();
    for r in rows {
        encode_binary_row(&mut buf, r);
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    buf
}

/// The binary COPY signature and an empty header.
fn copy_header() -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf
}

/// Result of a seed run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeedSummary {
    pub mode: &'static str,
    pub rows: u64,
    pub first_id: Option<i64>,
    pub last_id: Option<i64>,
    pub seconds: f64,
}

/// The plays `scrobsync bench` holds back from a load and then lets arrive, to time a sync of
/// the newest plays (default table only). While they are held, they sit in [`held::TABLE`] and
/// [`held::MARK`] records the greatest id at that moment; [`held::restore`] puts them back with
/// their own ids, also after an interrupted bench (`bench` and `seed` call it first).
pub mod held {
    use anyhow::{bail, Result};

    pub const TABLE: &str = "scrobsync_bench_held";
    pub const MARK: &str = "scrobsync_bench_held_mark";
    /// Set by `bench` for the runs it times: they read the source while plays are held.
    pub const HOLDING_ENV: &str = "SCROBSYNC_BENCH_HOLDING";
    /// The advisory lock a `bench` (or a `seed`) holds on its database while it runs.
    const LOCK: i64 = 0x5C0B_5C0B_BE4C;

    /// Takes the session's bench lock, or fails when another `bench` or `seed` holds it; the
    /// lock lasts until `client` is closed.
    pub fn lock(client: &mut postgres::Client) -> Result<()> {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK])?
            .get(0);
        if !got {
            bail!("another `scrobsync bench` or `scrobsync seed` is running on this database; run this when it has finished");
        }
        Ok(())
    }

    /// Fails when plays are held aside (an interrupted `bench`): the source is incomplete then,
    /// and reading it would quietly miss them. The runs a `bench` times are let through.
    pub fn refuse_if_held(client: &mut crate::source::conn::ReadOnlyClient) -> Result<()> {
        if std::env::var_os(HOLDING_ENV).is_some() {
            return Ok(());
        }
        let held: bool = client
            .query_one(&format!("SELECT to_regclass('{TABLE}') IS NOT NULL"), &[])?
            .get(0);
        if held {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {TABLE}"), &[])?
                .get(0);
            bail!(
                "an interrupted `scrobsync bench` holds {n} plays of this database aside (table {TABLE}), \
                 so the source is incomplete; put them back with `scrobsync bench --restore` (same --source) and run again"
            );
        }
        Ok(())
    }
    /// The default table's columns, named so that no column order is assumed.
    const COLS: &str = "username, played_at, artist_name, artist_mbid, album_name, album_mbid, \
                        track_name, track_mbid, duration_ms, loved";

    /// Moves the `n` newest plays (by `played_at`, up to now) aside.
    pub fn hold_back(client: &mut postgres::Client, n: u64) -> Result<()> {
        restore(client)?;
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "CREATE TABLE {TABLE} AS SELECT id, {COLS} FROM scrobbles
              WHERE played_at <= now() ORDER BY played_at DESC, id DESC LIMIT {n};
             CREATE TABLE {MARK} AS
               SELECT max(id)::int8 AS max_id, (SELECT count(*) FROM {TABLE}) AS n,
                      false AS arrived
                 FROM scrobbles;
             DELETE FROM scrobbles s USING {TABLE} h WHERE s.id = h.id;"
        ))?;
        tx.commit()?;
        Ok(())
    }

    /// The held plays arrive as real scrobbles do: with the ids after every existing one, in
    /// `played_at` order.
    pub fn arrive(client: &mut postgres::Client) -> Result<()> {
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "INSERT INTO scrobbles (id, {COLS})
             SELECT (SELECT max_id FROM {MARK}) + row_number() OVER (ORDER BY played_at, id),
                    {COLS}
               FROM {TABLE};
             UPDATE {MARK} SET arrived = true;"
        ))?;
        tx.commit()?;
        Ok(())
    }

    /// Puts held plays back with their own ids, removing the copies that arrived (exactly the
    /// ids `arrive` gave them), and drops the bookkeeping tables.
    pub fn restore(client: &mut postgres::Client) -> Result<u64> {
        let held: bool = client
            .query_one(&format!("SELECT to_regclass('{MARK}') IS NOT NULL"), &[])?
            .get(0);
        if !held {
            return Ok(0);
        }
        let mut tx = client.transaction()?;
        tx.batch_execute(&format!(
            "DELETE FROM scrobbles USING {MARK} m
              WHERE m.arrived AND id > m.max_id AND id <= m.max_id + m.n;"
        ))?;
        let clash: i64 = tx
            .query_one(
                &format!("SELECT count(*) FROM scrobbles s JOIN {TABLE} h ON s.id = h.id"),
                &[],
            )?
            .get(0);
        if clash > 0 {
            bail!(
                "{clash} row(s) of table scrobbles took the ids of plays an interrupted `scrobsync bench` \
                 holds in {TABLE}; move them, then run `scrobsync bench` again to put the held plays back"
            );
        }
        let back = tx.execute(
            &format!("INSERT INTO scrobbles (id, {COLS}) SELECT id, {COLS} FROM {TABLE}"),
            &[],
        )?;
        tx.batch_execute(&format!("DROP TABLE {TABLE}; DROP TABLE {MARK};"))?;
        tx.commit()?;
        client.batch_execute("VACUUM (ANALYZE) scrobbles")?;
        Ok(back)
    }
}

/// Creates the default source table if absent and appends `opts.rows` generated rows after its
/// greatest id, in one transaction.
pub fn seed(url: &SourceUrl, opts: &SeedOptions) -> Result<SeedSummary> {
    let mut client = url.connect()?;
    // New ids continue after the greatest one, which must count plays a bench holds aside;
    // and no bench may hold plays aside meanwhile.
    held::lock(&mut client)?;
    seed_locked(&mut client, opts)
}

/// [`seed`] over a session that already holds the bench lock (a `bench` seeding its source).
pub fn seed_locked(client: &mut postgres::Client, opts: &SeedOptions) -> Result<SeedSummary> {
    if opts.users == 0 {
        bail!("--users must be at least 1");
    }
    let t0 = std::time::Instant::now();
    held::restore(client)?;
    let mut tx = client.transaction()?;
    tx.batch_execute(SOURCE_DDL)
        .map_err(|e| anyhow!("cannot create table scrobbles: {}", explain_query_error(&e)))?;
    let table = SourceTable::default();
    let max_id: Option<i64> = tx
        .query_one(
            &format!("SELECT max(id)::int8 FROM {}", table.sql_name()),
            &[],
        )?
        .get(0);
    let after = max_id.unwrap_or(0);
    // Rows after the first seed of a table use other random streams, so appends add new data.
    let opts_eff = SeedOptions {
        seed: if max_id.is_some() {
            mix(opts.seed ^ after as u64)
        } else {
            opts.seed
        },
        ..opts.clone()
    };
    let mut gen = Generator::new(opts_eff, after);
    if let Some(m) = max_id {
        if m > i64::MAX - (1 << 62) {
            bail!("table scrobbles already ends at id {m}; seed into a new database instead");
        }
    }
    let mut w = tx
        .copy_in(
            "COPY scrobbles (id, username, played_at, artist_name, artist_mbid, album_name, \
             album_mbid, track_name, track_mbid, duration_ms, loved) FROM STDIN (FORMAT binary)",
        )
        .map_err(|e| anyhow!("COPY into scrobbles failed: {}", explain_query_error(&e)))?;
    let mut buf = copy_header();
    let (mut first, mut last, mut n) = (None, None, 0u64);
    for row in &mut gen {
        first.get_or_insert(row.id);
        last = Some(row.id);
        n += 1;
        encode_binary_row(&mut buf, &row);
        if buf.len() >= 1 << 20 {
            w.write_all(&buf).context("sending rows to PostgreSQL")?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    w.write_all(&buf).context("sending rows to PostgreSQL")?;
    w.finish()
        .map_err(|e| anyhow!("COPY into scrobbles failed: {}", explain_query_error(&e)))?;
    // As a real source has: backfill and verify windows select by played_at.
    tx.batch_execute("CREATE INDEX IF NOT EXISTS scrobbles_played_at ON scrobbles (played_at)")
        .map_err(|e| {
            anyhow!(
                "cannot index scrobbles.played_at: {}",
                explain_query_error(&e)
            )
        })?;
    tx.commit()?;
    // After the commit: a failed ANALYZE inside the transaction would have rolled the rows
    // back at COMMIT without an error. Statistics are a nicety; the rows are kept either way.
    if let Err(e) = client.batch_execute("ANALYZE scrobbles") {
        tracing::warn!("ANALYZE scrobbles after seeding failed: {e}");
    }
    Ok(SeedSummary {
        mode: "seed",
        rows: n,
        first_id: first,
        last_id: last,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Builds an Arrow batch shaped exactly like the reader's output (connectorx's types for the
/// default table), for benchmarks and tests that must not need a database.
pub fn record_batch(rows: &[SeedRow]) -> arrow::record_batch::RecordBatch {
    use arrow::array::{
        ArrayRef, BooleanArray, Int32Array, Int64Array, StringArray, TimestampMicrosecondArray,
    };
    use std::sync::Arc;
    fn uuid_text(u: &Option<[u8; 16]>) -> Option<String> {
        u.map(|b| {
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        })
    }
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.id))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.username),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.played_at_us))
                .with_timezone("+00:00"),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.artist_name),
        )),
        Arc::new(
            rows.iter()
                .map(|r| uuid_text(&r.artist_mbid))
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.album_name.as_deref())
                .collect::<StringArray>(),
        ),
        Arc::new(
            rows.iter()
                .map(|r| uuid_text(&r.album_mbid))
                .collect::<StringArray>(),
        ),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &r.track_name),
        )),
        Arc::new(
            rows.iter()
                .map(|r| uuid_text(&r.track_mbid))
                .collect::<StringArray>(),
        ),
        Arc::new(rows.iter().map(|r| r.duration_ms).collect::<Int32Array>()),
        Arc::new(rows.iter().map(|r| Some(r.loved)).collect::<BooleanArray>()),
    ];
    arrow::record_batch::RecordBatch::try_from_iter(super::COLUMNS.iter().zip(cols))
        .expect("columns of equal length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(rows: u64) -> SeedOptions {
        SeedOptions {
            rows,
            users: 8,
            seed: 42,
        }
    }

    #[test]
    fn deterministic_and_sparse() {
        let a: Vec<_> = Generator::new(opts(5000), 0).collect();
        let b: Vec<_> = Generator::new(opts(5000), 0).collect();
        assert_eq!(a, b);
        assert_eq!(a.len(), 5000);
        assert!(
            a.windows(2).all(|w| w[0].id < w[1].id),
            "ids strictly increase"
        );
        assert!(a.last().unwrap().id > 1 << 59, "far ids at the end");
        assert!(a.iter().any(|r| r.album_name.is_none()));
        assert!(a.iter().any(|r| r.album_name.as_deref() == Some("")));
        assert!(a.iter().any(|r| r.played_at_us == PG_MIN_US));
        assert!(a
            .iter()
            .any(|r| r.played_at_us % 86_400_000_000 == 0 && r.played_at_us > 0));
        let dups = a
            .windows(2)
            .filter(|w| {
                w[0].played_at_us == w[1].played_at_us && w[0].track_name == w[1].track_name
            })
            .count();
        assert!(dups > 10, "duplicate scrobbles: {dups}");
    }

    #[test]
    fn popularity_is_skewed() {
        let rows: Vec<_> = Generator::new(opts(20_000), 0).collect();
        let mut counts = std::collections::HashMap::new();
        for r in &rows {
            *counts.entry(r.artist_name.clone()).or_insert(0usize) += 1;
        }
        let mut c: Vec<usize> = counts.values().copied().collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            c[0] > 20 * c[c.len() / 2],
            "top {} vs median {}",
            c[0],
            c[c.len() / 2]
        );
    }
}
