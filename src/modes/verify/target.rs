//! The target's side of `verify`: the dimensions are read into memory once, then the facts are
//! scanned in one pass on two threads (a join per row would cost four b-tree lookups each).

use super::canonical::{
    broken_row_hash, entity_hash, entity_key, row_hash, text_hash, track_hash, user_hash,
};
use super::{join_all, AttrDigest, By, Digest64};
use crate::sink::target;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A dimension table in memory, indexed by its (dense) surrogate key.
struct Dim<T>(Vec<Option<T>>);

impl<T> Dim<T> {
    fn load(
        conn: &rusqlite::Connection,
        sql: &str,
        with_attributes: bool,
        mut row: impl FnMut(&rusqlite::Row) -> rusqlite::Result<(i64, T)>,
    ) -> Result<Self> {
        let mut v: Vec<Option<T>> = Vec::new();
        let mut stmt = conn.prepare(sql)?;
        let mut rows = stmt.query([with_attributes])?;
        while let Some(r) = rows.next()? {
            let (id, value) = row(r)?;
            let i =
                usize::try_from(id).map_err(|_| anyhow!("unexpected key {id} in the target"))?;
            if i >= v.len() {
                v.resize_with(i + 1, || None);
            }
            v[i] = Some(value);
        }
        Ok(Dim(v))
    }

    /// The row of key `id`, if the target has it.
    fn find(&self, id: i64) -> Option<&T> {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.0.get(i))
            .and_then(|o| o.as_ref())
    }
}

/// The hash of an mbid column's value.
fn mbid_hash(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<u64>> {
    Ok(r.get::<_, Option<String>>(i)?
        .map(|s| text_hash(s.as_bytes())))
}

struct Artist {
    name: String,
    mbid: Option<u64>,
}

struct Album {
    artist_id: i64,
    title: String,
    mbid: Option<u64>,
}

struct Track {
    artist_id: i64,
    album_id: Option<i64>,
    /// The part of the row hash the track determines (None: its artist, album or album artist
    /// row is missing).
    hash: Option<u64>,
    /// The entity key as the source names the track (with attributes only).
    key: u128,
    mbid: Option<u64>,
    duration: Option<i64>,
}

/// The target's dimension tables in memory (attributes only when they are compared), and the
/// hashes each scrobble needs of its user and track, computed once per row of those.
struct TargetDims {
    artists: Dim<Artist>,
    albums: Dim<Album>,
    tracks: Dim<Track>,
    user_hashes: Dim<u64>,
}

impl TargetDims {
    fn load(conn: &rusqlite::Connection, attributes: bool) -> Result<Self> {
        let mut dims = Self {
            user_hashes: Dim::load(
                conn,
                "SELECT user_id, name FROM users WHERE ?1 IS NOT NULL",
                attributes,
                |r| {
                    let name: String = r.get(1)?;
                    Ok((r.get(0)?, user_hash(name.as_bytes())))
                },
            )?,
            artists: Dim::load(
                conn,
                "SELECT artist_id, name, CASE WHEN ?1 THEN mbid END FROM artists",
                attributes,
                |r| {
                    Ok((
                        r.get(0)?,
                        Artist {
                            name: r.get(1)?,
                            mbid: mbid_hash(r, 2)?,
                        },
                    ))
                },
            )?,
            albums: Dim::load(
                conn,
                "SELECT album_id, artist_id, title, CASE WHEN ?1 THEN mbid END FROM albums",
                attributes,
                |r| {
                    Ok((
                        r.get(0)?,
                        Album {
                            artist_id: r.get(1)?,
                            title: r.get(2)?,
                            mbid: mbid_hash(r, 3)?,
                        },
                    ))
                },
            )?,
            tracks: Dim(Vec::new()),
        };
        // The tracks last: each one's hash and key are computed from its row as it is read,
        // with the artists and albums at hand (no title is kept).
        let mut buf = Vec::with_capacity(256);
        let (artists, albums) = (&dims.artists, &dims.albums);
        let tracks = Dim::load(
            conn,
            "SELECT track_id, artist_id, album_id, title, CASE WHEN ?1 THEN mbid END,
                    CASE WHEN ?1 THEN duration_ms END FROM tracks",
            attributes,
            |r| {
                let (artist_id, album_id): (i64, Option<i64>) = (r.get(1)?, r.get(2)?);
                let title = r.get_ref(3)?.as_bytes().map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        3,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?;
                let artist = artists.find(artist_id).map(|a| a.name.as_bytes());
                let album = album_id.map(|a| albums.find(a));
                let hash = (|| {
                    let album = match album {
                        Some(al) => {
                            let al = al?;
                            Some((
                                artists.find(al.artist_id)?.name.as_bytes(),
                                al.title.as_bytes(),
                            ))
                        }
                        None => None,
                    };
                    Some(track_hash(&mut buf, artist?, album, title))
                })();
                let key = if attributes {
                    entity_key(
                        &mut buf,
                        &[
                            artist,
                            album.flatten().map(|a| a.title.as_bytes()),
                            Some(title),
                        ],
                    )
                } else {
                    0
                };
                Ok((
                    r.get(0)?,
                    Track {
                        artist_id,
                        album_id,
                        hash,
                        key,
                        mbid: mbid_hash(r, 4)?,
                        duration: r.get(5)?,
                    },
                ))
            },
        )?;
        dims.tracks = tracks;
        Ok(dims)
    }

    /// The per-dimension attribute digests (artists, albums, tracks) of the entities the
    /// referenced tracks reach, named as the source names them.
    fn attribute_digests(&self, referenced: &[bool]) -> Vec<AttrDigest> {
        let mut kb = Vec::with_capacity(256);
        let mut artists = vec![false; self.artists.0.len()];
        let mut albums = vec![false; self.albums.0.len()];
        let mut digests = vec![AttrDigest::default(); 3];
        let artist_name = |id: i64| self.artists.find(id).map(|a| a.name.as_bytes());
        for (track_id, _) in referenced.iter().enumerate().filter(|(_, r)| **r) {
            let Some(t) = self.tracks.find(track_id as i64) else {
                continue;
            };
            if let Some(seen) = usize::try_from(t.artist_id)
                .ok()
                .and_then(|i| artists.get_mut(i))
            {
                *seen = true;
            }
            if let Some(seen) = t
                .album_id
                .and_then(|a| usize::try_from(a).ok())
                .and_then(|i| albums.get_mut(i))
            {
                *seen = true;
            }
            digests[2].add(entity_hash(t.key, t.mbid, t.duration));
        }
        for (id, _) in artists.iter().enumerate().filter(|(_, r)| **r) {
            if let Some(a) = self.artists.find(id as i64) {
                let key = entity_key(&mut kb, &[Some(a.name.as_bytes())]);
                digests[0].add(entity_hash(key, a.mbid, None));
            }
        }
        for (id, _) in albums.iter().enumerate().filter(|(_, r)| **r) {
            if let Some(a) = self.albums.find(id as i64) {
                let key = entity_key(
                    &mut kb,
                    &[artist_name(a.artist_id), Some(a.title.as_bytes())],
                );
                digests[1].add(entity_hash(key, a.mbid, None));
            }
        }
        digests
    }
}

/// What the target gives: per-window digests, and the attribute digests when asked for.
pub(super) struct TargetDigests {
    pub windows: BTreeMap<i64, Digest64>,
    pub attributes: Option<Vec<AttrDigest>>,
}

/// Per-window digests of the target (and its attribute digests with `attributes`). `split`
/// waits for the scrobble_id where the scan's two halves meet (None: one scan), or says that
/// the source side failed.
pub(super) fn digests(
    path: &Path,
    by: By,
    from: Option<i64>,
    to: Option<i64>,
    attributes: bool,
    split: impl FnOnce() -> Option<Option<i64>>,
) -> Result<TargetDigests> {
    let t = std::time::Instant::now();
    let conn = target::open_read_only(path)?;
    let dims = TargetDims::load(&conn, attributes)?;
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        "target dimensions read"
    );
    // Two halves by scrobble_id, each on its own connection and thread, split where the
    // source's balanced id slices have their middle (the target's ids are the source's).
    let Some(split) = split() else {
        bail!("the source side stopped");
    };
    let ranges = match split {
        Some(mid) if mid > i64::MIN => vec![(i64::MIN, mid - 1), (mid, i64::MAX)],
        _ => vec![(i64::MIN, i64::MAX)],
    };
    type Part = (BTreeMap<i64, Digest64>, Vec<bool>);
    let parts: Vec<Result<Part>> = std::thread::scope(|s| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(lo, hi)| {
                let dims = &dims;
                s.spawn(move || -> Result<Part> {
                    let conn = target::open_read_only(path)?;
                    digest_range(&conn, dims, by, (lo, hi), (from, to), attributes)
                })
            })
            .collect();
        join_all(handles)
    });
    let mut windows: BTreeMap<i64, Digest64> = BTreeMap::new();
    let mut referenced: Vec<bool> = Vec::new();
    for part in parts {
        let (w, r) = part?;
        for (k, d) in w {
            let e = windows.entry(k).or_default();
            e.rows += d.rows;
            e.hash = e.hash.wrapping_add(d.hash);
        }
        if referenced.is_empty() {
            referenced = r;
        } else {
            for (a, b) in referenced.iter_mut().zip(r) {
                *a |= b;
            }
        }
    }
    tracing::debug!(
        seconds = t.elapsed().as_secs_f64(),
        "target scrobbles hashed"
    );
    Ok(TargetDigests {
        windows,
        attributes: attributes.then(|| dims.attribute_digests(&referenced)),
    })
}

/// Digests of the facts with scrobble_id in `ids` (inclusive) and played_at in `range`, and
/// (with `attributes`) which tracks they reference.
fn digest_range(
    conn: &rusqlite::Connection,
    dims: &TargetDims,
    by: By,
    ids: (i64, i64),
    range: (Option<i64>, Option<i64>),
    attributes: bool,
) -> Result<(BTreeMap<i64, Digest64>, Vec<bool>)> {
    let (from, to) = range;
    let sql = if from.is_some() || to.is_some() {
        "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
         WHERE scrobble_id BETWEEN ?3 AND ?4 AND played_at >= ?1 AND played_at < ?2"
    } else {
        // the whole table: walking the rows beats walking the played_at index
        "SELECT scrobble_id, user_id, track_id, played_at, loved FROM scrobbles
         WHERE scrobble_id BETWEEN ?3 AND ?4 AND ?1 <= ?2"
    };
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([
        from.unwrap_or(i64::MIN),
        to.unwrap_or(i64::MAX),
        ids.0,
        ids.1,
    ])?;
    let mut out: BTreeMap<i64, Digest64> = BTreeMap::new();
    let mut referenced = vec![false; if attributes { dims.tracks.0.len() } else { 0 }];
    let mut keys = super::DayKeys::new(by);
    while let Some(r) = rows.next()? {
        let (id, user, track, epoch, loved): (i64, i64, i64, i64, i64) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
        if let Some(seen) = usize::try_from(track)
            .ok()
            .and_then(|i| referenced.get_mut(i))
        {
            *seen = true;
        }
        // A scrobble whose user, track, artist or album row is gone (a damaged target) hashes
        // apart from every source row: its window differs, and a repair writes it anew.
        let track_hash = dims.tracks.find(track).and_then(|t| t.hash);
        let hash = match (dims.user_hashes.find(user), track_hash) {
            (Some(&u), Some(t)) => row_hash(id, u, epoch, t, loved),
            _ => broken_row_hash(id),
        };
        let w = keys.key(epoch);
        let d = out.entry(w).or_default();
        d.rows += 1;
        d.hash = d.hash.wrapping_add(hash);
    }
    Ok((out, referenced))
}
