//! The target's side of `verify`: the dimensions are read into memory once, then the facts are
//! scanned in one pass on two threads (a join per row would cost four b-tree lookups each).

use super::canonical::{
    broken_row_hash, entity_hash, entity_key, row_hash, text_hash, track_hash, user_hash,
};
use super::{AttrDigest, By, Digest64};
use crate::pipeline;
use crate::sink::scan::Scan;
use anyhow::{anyhow, bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// A dimension table in memory, indexed by its (dense) surrogate key.
struct Dim<T>(Vec<Option<T>>);

impl<T> Dim<T> {
    fn new() -> Self {
        Dim(Vec::new())
    }

    /// Keeps `value` as the row of key `id`.
    fn put(&mut self, id: i64, value: T) -> Result<()> {
        let i = usize::try_from(id).map_err(|_| anyhow!("unexpected key {id} in the target"))?;
        if i >= self.0.len() {
            self.0.resize_with(i + 1, || None);
        }
        self.0[i] = Some(value);
        Ok(())
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
fn mbid_hash(mbid: Option<&str>) -> Option<u64> {
    mbid.map(|s| text_hash(s.as_bytes()))
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
    fn load(scan: &Scan, attributes: bool) -> Result<Self> {
        let mut user_hashes = Dim::new();
        scan.users(|id, name| user_hashes.put(id, user_hash(name.as_bytes())))?;
        let mut artists = Dim::new();
        scan.artists(attributes, |id, name, mbid| {
            artists.put(
                id,
                Artist {
                    name: name.to_owned(),
                    mbid: mbid_hash(mbid),
                },
            )
        })?;
        let mut albums = Dim::new();
        scan.albums(attributes, |id, artist_id, title, mbid| {
            albums.put(
                id,
                Album {
                    artist_id,
                    title: title.to_owned(),
                    mbid: mbid_hash(mbid),
                },
            )
        })?;
        // The tracks last: each one's hash and key are computed from its row as it is read,
        // with the artists and albums at hand (no title is kept).
        let mut buf = Vec::with_capacity(256);
        let mut tracks = Dim::new();
        scan.tracks(attributes, |r| {
            let title = r.title;
            let artist = artists.find(r.artist_id).map(|a| a.name.as_bytes());
            let album = r.album_id.map(|a| albums.find(a));
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
            tracks.put(
                r.track_id,
                Track {
                    artist_id: r.artist_id,
                    album_id: r.album_id,
                    hash,
                    key,
                    mbid: mbid_hash(r.mbid),
                    duration: r.duration_ms,
                },
            )
        })?;
        Ok(Self {
            artists,
            albums,
            tracks,
            user_hashes,
        })
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
    let dims = TargetDims::load(&Scan::open(path)?, attributes)?;
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
    let parts: Vec<Result<Part>> = pipeline::parallel::workers(ranges.len(), |i| {
        let scan = Scan::open(path)?;
        digest_range(&scan, &dims, by, ranges[i], (from, to), attributes)
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
    scan: &Scan,
    dims: &TargetDims,
    by: By,
    ids: (i64, i64),
    range: (Option<i64>, Option<i64>),
    attributes: bool,
) -> Result<(BTreeMap<i64, Digest64>, Vec<bool>)> {
    let mut out: BTreeMap<i64, Digest64> = BTreeMap::new();
    let mut referenced = vec![false; if attributes { dims.tracks.0.len() } else { 0 }];
    let mut keys = super::DayKeys::new(by);
    scan.scrobbles(ids, range, |r| {
        if let Some(seen) = usize::try_from(r.track_id)
            .ok()
            .and_then(|i| referenced.get_mut(i))
        {
            *seen = true;
        }
        // A scrobble whose user, track, artist or album row is gone (a damaged target) hashes
        // apart from every source row: its window differs, and a repair writes it anew.
        let track_hash = dims.tracks.find(r.track_id).and_then(|t| t.hash);
        let hash = match (dims.user_hashes.find(r.user_id), track_hash) {
            (Some(&u), Some(t)) => row_hash(r.scrobble_id, u, r.played_at, t, r.loved),
            _ => broken_row_hash(r.scrobble_id),
        };
        let d = out.entry(keys.key(r.played_at)).or_default();
        d.rows += 1;
        d.hash = d.hash.wrapping_add(hash);
        Ok(())
    })?;
    Ok((out, referenced))
}
