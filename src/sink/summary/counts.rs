//! The summaries of a full load, counted in memory while its facts are written: plays per
//! track and per UTC hour from each window's facts, and per artist and album from the tracks'
//! owners, written in key order at the end. Counting them afterwards from the scrobbles (see
//! [`super::rebuild`]) scans two indexes and joins tracks: 2.6 s of a 5M-row load here, against
//! well under a second for these inserts.
//!
//! It costs 12 bytes per distinct track (its plays, artist and album) and 4 per artist and
//! album at the end. Keys that do not fit (none a load hands out) turn the counts off, and the
//! load counts from the scrobbles instead.

use super::hour_of;
use crate::normalize::frames::Normalized;
use anyhow::{bail, Result};
use hashbrown::HashMap;
use rusqlite::Connection;

/// Plays per track and hour, and each track's artist and album, as written so far.
#[derive(Debug)]
pub struct Counts {
    /// Plays per track key (index 0 unused).
    tracks: Vec<u32>,
    /// (artist key, album key or 0) per track key.
    owners: Vec<(u32, u32)>,
    hours: HashMap<i64, u64>,
    /// False once something did not fit: the counts are dropped and the summaries are counted
    /// from the scrobbles.
    usable: bool,
}

impl Default for Counts {
    fn default() -> Self {
        Self {
            tracks: Vec::new(),
            owners: Vec::new(),
            hours: HashMap::new(),
            usable: true,
        }
    }
}

/// A key as an index, if it is one a load hands out (1 and up, within u32).
fn index(key: i64) -> Option<usize> {
    u32::try_from(key)
        .ok()
        .filter(|&k| k > 0)
        .map(|k| k as usize)
}

impl Counts {
    /// Counts that are off from the start: a resumed load, whose earlier rows were counted by
    /// a process that is gone, counts from the scrobbles.
    pub fn off() -> Self {
        Self {
            usable: false,
            ..Self::default()
        }
    }

    /// Whether the counts are on (the summaries are written from them).
    pub fn usable(&self) -> bool {
        self.usable
    }

    /// Counts one written window: its new tracks' owners, then its facts' plays.
    pub fn add(&mut self, n: &Normalized) {
        if self.usable && self.try_add(n).is_none() {
            tracing::debug!("summary counts off: a key does not fit; counting from the scrobbles");
            *self = Self {
                usable: false,
                ..Self::default()
            };
        }
    }

    /// Records a track's artist and album (None: keys that do not fit).
    fn owner(&mut self, id: Option<i64>, artist: Option<i64>, album: Option<i64>) -> Option<()> {
        let id = index(id?)?;
        let artist = u32::try_from(index(artist?)?).ok()?;
        let album = match album {
            None => 0,
            Some(a) => u32::try_from(index(a)?).ok()?,
        };
        if self.owners.len() <= id {
            self.owners.resize(id + 1, (0, 0));
            self.tracks.resize(id + 1, 0);
        }
        self.owners[id] = (artist, album);
        Some(())
    }

    /// Counts one play. Runs of plays in one hour (rows in id order are mostly in time order)
    /// count once in the map: `run` is the open one.
    fn play(&mut self, track: i64, at: i64, run: &mut Option<(i64, u64)>) -> Option<()> {
        let plays = self.tracks.get_mut(index(track)?)?;
        *plays = plays.checked_add(1)?;
        let hour = hour_of(at);
        *run = match *run {
            Some((h, n)) if h == hour => Some((h, n + 1)),
            Some((h, n)) => {
                *self.hours.entry(h).or_default() += n;
                Some((hour, 1))
            }
            None => Some((hour, 1)),
        };
        Some(())
    }

    /// The counts of what a file holds, read from its tracks and scrobbles (a resumed load's:
    /// the process that counted the rows written before is gone). Off when a key does not fit.
    pub fn of_file(conn: &Connection) -> Result<Self> {
        let mut c = Self::default();
        let mut stmt = conn.prepare("SELECT track_id, artist_id, album_id FROM tracks")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if c.owner(r.get(0)?, r.get(1)?, r.get(2)?).is_none() {
                return Ok(Self::off());
            }
        }
        let mut stmt = conn.prepare("SELECT track_id, played_at FROM scrobbles")?;
        let mut rows = stmt.query([])?;
        let mut run = None;
        while let Some(r) = rows.next()? {
            if c.play(r.get(0)?, r.get(1)?, &mut run).is_none() {
                return Ok(Self::off());
            }
        }
        if let Some((h, n)) = run {
            *c.hours.entry(h).or_default() += n;
        }
        Ok(c)
    }

    fn try_add(&mut self, n: &Normalized) -> Option<()> {
        let t = &n.dims.tracks;
        if t.height() > 0 {
            let ids = t.column("track_id").ok()?.i64().ok()?;
            let artists = t.column("artist_id").ok()?.i64().ok()?;
            let albums = t.column("album_id").ok()?.i64().ok()?;
            for ((id, artist), album) in ids.iter().zip(artists).zip(albums) {
                self.owner(id, artist, album)?;
            }
        }
        let f = &n.facts;
        if f.height() > 0 {
            let tracks = f.column("track_id").ok()?.i64().ok()?;
            let played = f.column("played_at").ok()?.i64().ok()?;
            if tracks.null_count() + played.null_count() > 0 {
                return None;
            }
            let mut run: Option<(i64, u64)> = None;
            for (t, p) in tracks.downcast_iter().zip(played.downcast_iter()) {
                if t.len() != p.len() {
                    return None; // chunked apart: counted from the scrobbles instead
                }
                for (&track, &at) in t.values().iter().zip(p.values().iter()) {
                    self.play(track, at, &mut run)?;
                }
            }
            if let Some((h, n)) = run {
                *self.hours.entry(h).or_default() += n;
            }
        }
        Some(())
    }

    /// Writes the four summary tables (armed and empty) from the counts; `facts` is the number
    /// of scrobbles written, which the plays per track must add up to. False when the counts
    /// are off and the caller must count from the scrobbles.
    pub fn write(self, conn: &Connection, facts: u64) -> Result<bool> {
        if !self.usable {
            return Ok(false);
        }
        let total: u64 = self.tracks.iter().map(|&n| n as u64).sum();
        if total != facts {
            bail!("internal error: the summary counts hold {total} plays for {facts} scrobbles written");
        }
        let mut artists: Vec<u64> = Vec::new();
        let mut albums: Vec<u64> = Vec::new();
        for (&plays, &(artist, album)) in self.tracks.iter().zip(&self.owners) {
            if plays == 0 {
                continue;
            }
            for (sums, key) in [(&mut artists, artist), (&mut albums, album)] {
                let k = key as usize;
                if k == 0 {
                    continue;
                }
                if sums.len() <= k {
                    sums.resize(k + 1, 0);
                }
                sums[k] += plays as u64;
            }
        }
        let nonzero = |v: Vec<u64>| -> Vec<(i64, i64)> {
            v.into_iter()
                .enumerate()
                .filter(|&(_, n)| n > 0)
                .map(|(k, n)| (k as i64, n as i64))
                .collect()
        };
        let tracks = nonzero(self.tracks.iter().map(|&n| n as u64).collect());
        let mut hours: Vec<(i64, i64)> =
            self.hours.into_iter().map(|(h, n)| (h, n as i64)).collect();
        hours.sort_unstable();
        for (table, key, rows) in [
            ("track_plays", "track_id", tracks),
            ("artist_plays", "artist_id", nonzero(artists)),
            ("album_plays", "album_id", nonzero(albums)),
            ("hourly_plays", "hour", hours),
        ] {
            crate::cancel::check()?;
            crate::sink::writer::bulk_insert(
                conn,
                table,
                &[key, "plays"],
                rows.len(),
                |s, p, i| {
                    s.raw_bind_parameter(p, rows[i].0)?;
                    s.raw_bind_parameter(p + 1, rows[i].1)
                },
            )?;
        }
        Ok(true)
    }
}
