//! The source's side of `verify`: PostgreSQL only streams the rows (binary COPY, the load's
//! encoding, in parallel id slices); this process computes the per-window digests and, when
//! asked, the dimension attributes, as the rows go by.

use super::canonical::{entity_hash, entity_key, text_hash, Tuple};
use super::{AttrDigest, Digest64, UnfitRow, VerifyOptions};
use crate::pipeline::{self, slices::Queries};
use crate::progress::{Progress, Total};
use crate::source::conn::{is_transient, ReadOnlyClient};
use crate::source::copy::{self, Value};
use crate::source::plan::SourceTable;
use crate::source::query::{Filter, Slice, TimeRange};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;

/// The columns a window digest needs, then those the attributes need.
const ROW_COLUMNS: [&str; 7] = [
    "id",
    "username",
    "played_at",
    "artist_name",
    "album_name",
    "track_name",
    "loved",
];
const ATTRIBUTE_COLUMNS: [&str; 4] = ["artist_mbid", "album_mbid", "track_mbid", "duration_ms"];

/// An entity's first non-NULL values in source-id order: (id, value) of each attribute.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct FirstValues {
    mbid: Option<(i64, u64)>,
    duration: Option<(i64, i64)>,
}

impl FirstValues {
    fn offer_mbid(&mut self, id: i64, v: Option<u64>) {
        if let Some(v) = v {
            if self.mbid.is_none_or(|(i, _)| id < i) {
                self.mbid = Some((id, v));
            }
        }
    }

    fn offer_duration(&mut self, id: i64, v: Option<i64>) {
        if let Some(v) = v {
            if self.duration.is_none_or(|(i, _)| id < i) {
                self.duration = Some((id, v));
            }
        }
    }

    fn merge(&mut self, other: &FirstValues) {
        if let Some((i, v)) = other.mbid {
            self.offer_mbid(i, Some(v));
        }
        if let Some((i, v)) = other.duration {
            self.offer_duration(i, Some(v));
        }
    }
}

/// A hasher for keys that are already hashes (entity keys are xxh3-128 values).
#[derive(Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

pub(super) type KeyMap<V> = hashbrown::HashMap<u128, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// Every entity the source's rows name, with its first values: artists, albums, tracks.
#[derive(Default)]
pub(super) struct SourceEntities([KeyMap<FirstValues>; 3]);

impl SourceEntities {
    fn merge(&mut self, other: SourceEntities) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            if mine.is_empty() {
                *mine = theirs;
                continue;
            }
            for (k, v) in theirs {
                mine.entry(k).or_default().merge(&v);
            }
        }
    }

    /// The per-dimension digests (artists, albums, tracks).
    pub(super) fn digests(&self) -> Vec<AttrDigest> {
        self.0
            .iter()
            .enumerate()
            .map(|(d, map)| {
                let mut digest = AttrDigest::default();
                for (k, v) in map {
                    let duration = if d == 2 {
                        v.duration.map(|x| x.1)
                    } else {
                        None
                    };
                    digest.add(entity_hash(*k, v.mbid.map(|x| x.1), duration));
                }
                digest
            })
            .collect()
    }
}

/// What the source gives: per-window digests, and the entities when attributes are compared.
pub(super) struct SourceDigests {
    pub windows: BTreeMap<i64, Digest64>,
    pub entities: Option<SourceEntities>,
}

/// Reads the whole scope of `opts` from the source in one snapshot: a connection exports it and
/// holds it while every slice is read in it, so a transaction that commits meanwhile is seen
/// whole or not at all, and a slice read again after a fault gives the same rows. If the holding
/// connection is lost, the source is read again in a new snapshot.
pub(super) fn digests(
    opts: &VerifyOptions,
    table: &SourceTable,
    slices: &[Slice],
    attributes: bool,
    progress: &dyn Progress,
) -> Result<SourceDigests> {
    let mut restarts = 0;
    // Slices done over all attempts (the failpoints count them).
    let done = AtomicUsize::new(0);
    loop {
        let holder = match pipeline::step(
            opts.retry,
            "exporting the source's snapshot",
            progress,
            || Ok(opts.source.connect_reader()?.export_snapshot()?),
        ) {
            Ok(h) => Some(h),
            Err(e) if !is_transient(&e) => {
                tracing::warn!(
                    "the source cannot export a snapshot ({e:#}): each id slice is read in a \
                     snapshot of its own, so a transaction that commits during the verification \
                     may be seen in part; verify again if it reports differences"
                );
                None
            }
            Err(e) => return Err(e),
        };
        let r = read_in(
            opts,
            table,
            slices,
            attributes,
            holder.as_ref().map(|h| h.id.as_str()),
            &done,
            progress,
        );
        match r {
            Err(e)
                if restarts < opts.retry.retries
                    && !crate::cancel::requested()
                    && holder.as_ref().is_some_and(|h| !h.alive()) =>
            {
                restarts += 1;
                tracing::warn!(
                    "the connection holding the source's snapshot was lost ({e:#}); reading the \
                     source again in a new snapshot (restart {restarts} of {})",
                    opts.retry.retries
                );
            }
            r => return r,
        }
    }
}

/// Reads the whole scope of `opts` with `opts.partitions` workers, each on its own connection
/// taking id slices in turn (a transient fault redoes that slice), in `snapshot` if given.
fn read_in(
    opts: &VerifyOptions,
    table: &SourceTable,
    slices: &[Slice],
    attributes: bool,
    snapshot: Option<&str>,
    done: &AtomicUsize,
    progress: &dyn Progress,
) -> Result<SourceDigests> {
    let url = &opts.source;
    let workers = opts.partitions.max(1);
    let mut columns: Vec<&str> = ROW_COLUMNS.to_vec();
    if attributes {
        columns.extend(ATTRIBUTE_COLUMNS);
    }
    let filter = Filter::played_at(TimeRange::seconds(opts.from, opts.to));
    let query = |s: &Slice| {
        format!(
            "{} WHERE {}",
            table.select_columns_sql(&columns),
            filter.where_sql(*s)
        )
    };
    let kinds = match slices.first() {
        Some(first) => pipeline::step(opts.retry, "planning the verification", progress, || {
            copy::column_kinds(&mut url.connect_reader()?, &query(first))
        })?,
        None => Vec::new(),
    };
    progress.stage("hashing", Some(Total::exact(slices.len() as u64, "slices")));
    type Part = (BTreeMap<i64, Digest64>, Option<SourceEntities>);
    let queries = Queries {
        workers,
        retry: opts.retry,
        progress,
        done,
    };
    let parts = queries.each_slice(
        slices,
        || {
            let mut c = url.connect_reader()?;
            c.set_snapshot(snapshot);
            Ok(c)
        },
        // Entities only ever keep the smallest id's value, so a slice read again after a
        // fault adds nothing twice.
        || -> Part { (BTreeMap::new(), attributes.then(SourceEntities::default)) },
        |c: &mut ReadOnlyClient, slice, part| {
            let mut hasher = RowHasher::new(opts.by, part.1.as_mut());
            copy::for_each_row(c, &query(slice), &kinds, |v| hasher.row(v))
                .context("verifying the source failed")?;
            Ok(hasher.windows)
        },
        |part, got| {
            for (w, d) in got {
                let e = part.0.entry(w).or_default();
                e.rows += d.rows;
                e.hash = e.hash.wrapping_add(d.hash);
            }
        },
    )?;
    let mut out = SourceDigests {
        windows: BTreeMap::new(),
        entities: attributes.then(SourceEntities::default),
    };
    for (windows, entities) in parts {
        for (w, d) in windows {
            let e = out.windows.entry(w).or_default();
            e.rows += d.rows;
            e.hash = e.hash.wrapping_add(d.hash);
        }
        if let (Some(all), Some(e)) = (out.entities.as_mut(), entities) {
            all.merge(e);
        }
    }
    Ok(out)
}

/// Hashes the streamed rows of one slice.
struct RowHasher<'e> {
    windows: BTreeMap<i64, Digest64>,
    entities: Option<&'e mut SourceEntities>,
    buf: Vec<u8>,
    key_buf: Vec<u8>,
    keys: super::DayKeys,
}

fn text<'a>(v: &Value<'a>, id: i64, field: &str) -> Result<Option<&'a [u8]>> {
    match *v {
        Value::Text(t) => Ok(Some(t)),
        Value::Null => Ok(None),
        other => bail!("source row {id}: {field} is {other:?}, where text was expected"),
    }
}

/// The error for a NULL in a field the contract declares NOT NULL.
fn null(id: i64, field: &str) -> anyhow::Error {
    UnfitRow(format!(
        "source row with id {id} has a NULL {field}; {field} must not be NULL: fix that row, or \
         map {field} to a non-NULL expression with --config"
    ))
    .into()
}

fn required<'a>(v: &Value<'a>, id: i64, field: &str) -> Result<&'a [u8]> {
    text(v, id, field)?.ok_or_else(|| null(id, field))
}

impl<'e> RowHasher<'e> {
    fn new(by: super::By, entities: Option<&'e mut SourceEntities>) -> Self {
        Self {
            windows: BTreeMap::new(),
            entities,
            buf: Vec::with_capacity(256),
            key_buf: Vec::with_capacity(256),
            keys: super::DayKeys::new(by),
        }
    }

    fn row(&mut self, v: &[Value]) -> Result<()> {
        let Value::Int(id) = v[0] else {
            bail!(
                "a source row has a NULL id; ids must be unique, non-NULL integers: fix that row, \
                 or map id to such a column with --config"
            );
        };
        let us = match v[2] {
            Value::Micros(us) => us,
            Value::Null => return Err(null(id, "played_at")),
            other => bail!("source row {id}: played_at is {other:?}"),
        };
        if us == i64::MAX || us == i64::MIN {
            // not finite: in no window, so it could not differ; an error as in every mode
            return Err(UnfitRow(format!(
                "source row with id {id} has played_at = {}infinity, which no window holds; fix \
                 or delete that row",
                if us == i64::MIN { "-" } else { "" }
            ))
            .into());
        }
        let epoch = us.div_euclid(1_000_000);
        let user = required(&v[1], id, "username")?;
        let artist = required(&v[3], id, "artist_name")?;
        let album = text(&v[4], id, "album_name")?;
        let track = required(&v[5], id, "track_name")?;
        let loved = match v[6] {
            Value::Bool(b) => i64::from(b),
            Value::Null => return Err(null(id, "loved")),
            other => bail!("source row {id}: loved is {other:?}"),
        };
        let hash = Tuple {
            id,
            user,
            epoch,
            artist,
            album: album.map(|a| (artist, a)),
            track,
            loved,
        }
        .hash(&mut self.buf);
        let w = self.keys.key(epoch);
        let d = self.windows.entry(w).or_default();
        d.rows += 1;
        d.hash = d.hash.wrapping_add(hash);
        if let Some(entities) = self.entities.as_deref_mut() {
            let mut scratch = [0u8; 36];
            let mbid = |v: &Value, scratch: &mut [u8; 36]| v.text(scratch).map(text_hash);
            let duration = match v[10] {
                Value::Int(d) => Some(d),
                Value::Null => None,
                other => bail!("source row {id}: duration_ms is {other:?}"),
            };
            let kb = &mut self.key_buf;
            let [artists, albums, tracks] = &mut entities.0;
            artists
                .entry(entity_key(kb, &[Some(artist)]))
                .or_default()
                .offer_mbid(id, mbid(&v[7], &mut scratch));
            if let Some(a) = album {
                albums
                    .entry(entity_key(kb, &[Some(artist), Some(a)]))
                    .or_default()
                    .offer_mbid(id, mbid(&v[8], &mut scratch));
            }
            let t = tracks
                .entry(entity_key(kb, &[Some(artist), album, Some(track)]))
                .or_default();
            t.offer_mbid(id, mbid(&v[9], &mut scratch));
            t.offer_duration(id, duration);
        }
        Ok(())
    }
}
