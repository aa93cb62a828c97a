//! Dimension key registries: exact text → surrogate key, kept in memory for the whole run.
//!
//! Keys are handed out in order of first appearance in ascending source-id order, so the same
//! source always gives the same keys, and a later sync of higher ids extends them exactly as a
//! full load of the whole source would. Lookups borrow the row's text (no allocation unless the
//! entity is new); album and track keys are built in reused scratch buffers.
//!
//! Tracks are keyed by the row's own text — artist name, album title or none, track title —
//! not by the artist and album keys: a row of a track seen before (most rows: at 5M rows,
//! three in four) then costs one lookup instead of three dependent ones (artist → album →
//! track), which was most of the normaliser's time. The artist and album maps are consulted
//! only for a new track or when the row brings a first mbid for them.
//!
//! Attribute rule (documented in the README): a dimension row keeps the first non-NULL mbid
//! (and, for tracks, duration) in source-id order; later rows only fill a value that is NULL.
//!
//! Only keys and "has a value" flags stay in memory. What changed since the last flush —
//! new rows and filled-in attributes — is collected in a [`Delta`] that the writer applies
//! with each window, so memory holds the key maps and one window's changes, nothing more.

use super::keymap::KeyMap;
use anyhow::Result;

/// Looks up dimension rows that exist in the target but are not in memory yet (incremental
/// modes). Called only on a registry miss, so the target is never scanned per batch: each
/// distinct entity costs at most one indexed lookup per run.
pub trait Resolver {
    fn user(&mut self, name: &str) -> Result<Option<i64>>;
    fn artist(&mut self, name: &str) -> Result<Option<(i64, Option<String>)>>;
    fn album(&mut self, artist_id: i64, title: &str) -> Result<Option<(i64, Option<String>)>>;
    /// (track_id, mbid, duration_ms)
    #[allow(clippy::type_complexity)]
    fn track(
        &mut self,
        artist_id: i64,
        album_id: Option<i64>,
        title: &str,
    ) -> Result<Option<(i64, Option<String>, Option<i64>)>>;

    /// Whether the target may hold entities at all; when not (a full load), looking ahead with
    /// [`Registry::preload`] is pointless.
    fn may_find(&self) -> bool {
        true
    }
}

/// The resolver of a full load: the target is empty, every miss is a new entity.
pub struct NoResolver;

impl Resolver for NoResolver {
    fn may_find(&self) -> bool {
        false
    }
    fn user(&mut self, _: &str) -> Result<Option<i64>> {
        Ok(None)
    }
    fn artist(&mut self, _: &str) -> Result<Option<(i64, Option<String>)>> {
        Ok(None)
    }
    fn album(&mut self, _: i64, _: &str) -> Result<Option<(i64, Option<String>)>> {
        Ok(None)
    }
    fn track(
        &mut self,
        _: i64,
        _: Option<i64>,
        _: &str,
    ) -> Result<Option<(i64, Option<String>, Option<i64>)>> {
        Ok(None)
    }
}

/// New dimension rows and attribute fills, waiting to be written.
#[derive(Debug, Default, Clone)]
#[allow(clippy::type_complexity)]
pub struct Delta {
    /// (user_id, name)
    pub users: Vec<(i64, Box<str>)>,
    /// (artist_id, name, mbid)
    pub artists: Vec<(i64, Box<str>, Option<Box<str>>)>,
    /// (album_id, artist_id, title, mbid)
    pub albums: Vec<(i64, i64, Box<str>, Option<Box<str>>)>,
    /// (track_id, artist_id, album_id, title, mbid, duration_ms)
    pub tracks: Vec<(
        i64,
        i64,
        Option<i64>,
        Box<str>,
        Option<Box<str>>,
        Option<i64>,
    )>,
    /// Filled-in mbid of an artist row written earlier: (artist_id, mbid).
    pub artist_mbids: Vec<(i64, Box<str>)>,
    /// (album_id, mbid)
    pub album_mbids: Vec<(i64, Box<str>)>,
    /// (track_id, mbid or None, duration or None): only the filled-in values are Some.
    pub track_fills: Vec<(i64, Option<Box<str>>, Option<i64>)>,
}

impl Delta {
    /// Counts of new users, artists, albums, tracks.
    pub fn new_rows(&self) -> [u64; 4] {
        [
            self.users.len() as u64,
            self.artists.len() as u64,
            self.albums.len() as u64,
            self.tracks.len() as u64,
        ]
    }

    /// Existing rows whose attributes got filled.
    pub fn fills(&self) -> u64 {
        (self.artist_mbids.len() + self.album_mbids.len() + self.track_fills.len()) as u64
    }
}

/// What the registry remembers of an artist or album: its key and whether it has an mbid.
/// Packed to 4-byte alignment (12 bytes instead of 16): there are millions of them.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Entry {
    id: i64,
    has_mbid: bool,
}

/// A learnt row whose key was already known under another id: the file holds one entity twice.
fn learnt(got: i64, id: i64, kind: &str, name: &str) -> Result<()> {
    if got != id {
        anyhow::bail!(
            "the temporary file holds the {kind} {name:?} under two keys ({got} and {id}); it cannot be resumed: run a plain load"
        );
    }
    Ok(())
}

/// Builds an album key in the reused buffer: the ids (8 bytes LE each), then the title.
fn composite_key(buf: &mut Vec<u8>, ids: &[i64], title: &str) {
    buf.clear();
    for id in ids {
        buf.extend_from_slice(&id.to_le_bytes());
    }
    buf.extend_from_slice(title.as_bytes());
}

impl Entry {
    fn stored(id: i64, mbid: Option<String>) -> Self {
        Entry {
            id,
            has_mbid: mbid.is_some(),
        }
    }

    /// First non-NULL mbid wins: record a fill when this row brings the first one.
    fn fill_mbid(&mut self, mbid: Option<&str>, fills: &mut Vec<(i64, Box<str>)>) {
        if let (false, Some(m)) = (self.has_mbid, mbid) {
            self.has_mbid = true;
            fills.push((self.id, m.into()));
        }
    }
}

/// What the registry remembers of a track. `artist_mbid` / `album_mbid` say that the track's
/// artist / album was known to have an mbid when last looked at (or, for the album, that there
/// is none): while they are true, rows of this track never need the artist and album maps. A
/// false one may be stale — another track may have filled it since — which only costs a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(C, packed(4))]
struct TrackEntry {
    id: i64,
    has_mbid: bool,
    has_duration: bool,
    artist_mbid: bool,
    album_mbid: bool,
}

/// The fields of one source row that identify and describe its track.
#[derive(Debug, Clone, Copy)]
pub struct TrackText<'a> {
    pub artist: &'a str,
    pub artist_mbid: Option<&'a str>,
    /// None: the row has no album (NULL), which is not the album `''`.
    pub album: Option<&'a str>,
    pub album_mbid: Option<&'a str>,
    pub title: &'a str,
    pub mbid: Option<&'a str>,
    pub duration_ms: Option<i64>,
}

/// Builds a track key from the row's text: artist length (4 bytes LE), artist, album tag (0:
/// none, 1: some), album length and album if some, title. Lengths keep it unambiguous, and the
/// tag keeps a NULL album apart from `''`.
fn track_key(buf: &mut Vec<u8>, artist: &str, album: Option<&str>, title: &str) {
    buf.clear();
    append_track_key(buf, artist, album, title);
}

/// [`track_key`] appended to what `buf` holds.
fn append_track_key(buf: &mut Vec<u8>, artist: &str, album: Option<&str>, title: &str) {
    buf.extend_from_slice(&(artist.len() as u32).to_le_bytes());
    buf.extend_from_slice(artist.as_bytes());
    match album {
        None => buf.push(0),
        Some(a) => {
            buf.push(1);
            buf.extend_from_slice(&(a.len() as u32).to_le_bytes());
            buf.extend_from_slice(a.as_bytes());
        }
    }
    buf.extend_from_slice(title.as_bytes());
}

/// The track keys of a block of rows, built and hashed by [`Registry::prepare_tracks`].
#[derive(Debug, Default)]
pub struct TrackBlock {
    keys: Vec<u8>,
    /// End of each row's key in `keys`.
    ends: Vec<usize>,
    hashes: Vec<u64>,
}

/// All four key maps, their next free ids, and the changes not yet flushed.
#[derive(Debug, Default)]
pub struct Registry {
    users: KeyMap<i64>,
    artists: KeyMap<Entry>,
    /// key: artist_id (8 bytes LE) ++ title
    albums: KeyMap<Entry>,
    /// key: see [`track_key`]
    tracks: KeyMap<TrackEntry>,
    next_user: i64,
    next_artist: i64,
    next_album: i64,
    next_track: i64,
    scratch: Vec<u8>,
    track_scratch: Vec<u8>,
    delta: Delta,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry for a target whose greatest ids are the given ones: new entities continue
    /// after them, so existing keys are never reused or changed.
    pub fn continuing_after(users: i64, artists: i64, albums: i64, tracks: i64) -> Self {
        Self {
            next_user: users,
            next_artist: artists,
            next_album: albums,
            next_track: tracks,
            ..Self::default()
        }
    }

    /// Remembers a user the target already holds (a resumed load's file): exactly what the
    /// row that wrote it left in the registry. A name known under another key is an error.
    pub fn learn_user(&mut self, name: &str, id: i64) -> Result<()> {
        let got = *self
            .users
            .get_or_try_insert_with(name.as_bytes(), || Ok(id))?;
        learnt(got, id, "user", name)
    }

    /// See [`Registry::learn_user`].
    pub fn learn_artist(&mut self, name: &str, id: i64, has_mbid: bool) -> Result<()> {
        let got = self
            .artists
            .get_or_try_insert_with(name.as_bytes(), || Ok(Entry { id, has_mbid }))?
            .id;
        learnt(got, id, "artist", name)
    }

    /// See [`Registry::learn_user`].
    pub fn learn_album(
        &mut self,
        artist_id: i64,
        title: &str,
        id: i64,
        has_mbid: bool,
    ) -> Result<()> {
        composite_key(&mut self.scratch, &[artist_id], title);
        let got = self
            .albums
            .get_or_try_insert_with(&self.scratch, || Ok(Entry { id, has_mbid }))?
            .id;
        learnt(got, id, "album", title)
    }

    /// See [`Registry::learn_user`]. The track's knowledge of its artist's and album's mbids
    /// starts false: that only makes its next row look them up.
    pub fn learn_track(
        &mut self,
        artist: &str,
        album: Option<&str>,
        title: &str,
        id: i64,
        has_mbid: bool,
        has_duration: bool,
    ) -> Result<()> {
        track_key(&mut self.track_scratch, artist, album, title);
        let e = TrackEntry {
            id,
            has_mbid,
            has_duration,
            artist_mbid: false,
            album_mbid: false,
        };
        let got = self
            .tracks
            .get_or_try_insert_with(&self.track_scratch, || Ok(e))?
            .id;
        learnt(got, id, "track", title)
    }

    /// Number of (users, artists, albums, tracks) known.
    pub fn counts(&self) -> [usize; 4] {
        [
            self.users.len(),
            self.artists.len(),
            self.albums.len(),
            self.tracks.len(),
        ]
    }

    /// Hands over the changes since the last call.
    pub fn take_delta(&mut self) -> Delta {
        std::mem::take(&mut self.delta)
    }

    /// Approximate bytes held by the key maps.
    pub fn approx_bytes(&self) -> usize {
        self.users.approx_bytes()
            + self.artists.approx_bytes()
            + self.albums.approx_bytes()
            + self.tracks.approx_bytes()
    }

    pub fn user(&mut self, name: &str, res: &mut dyn Resolver) -> Result<i64> {
        let Registry {
            users,
            next_user,
            delta,
            ..
        } = self;
        let id = users.get_or_try_insert_with(name.as_bytes(), || {
            Ok(match res.user(name)? {
                Some(id) => id,
                None => {
                    *next_user += 1;
                    delta.users.push((*next_user, name.into()));
                    *next_user
                }
            })
        })?;
        Ok(*id)
    }

    pub fn artist(
        &mut self,
        name: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        Ok(self.artist_entry(name, mbid, res)?.id)
    }

    fn artist_entry(
        &mut self,
        name: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<Entry> {
        let Registry {
            artists,
            next_artist,
            delta,
            ..
        } = self;
        let e = artists.get_or_try_insert_with(name.as_bytes(), || {
            Ok(match res.artist(name)? {
                Some((id, stored)) => Entry::stored(id, stored),
                None => {
                    *next_artist += 1;
                    delta
                        .artists
                        .push((*next_artist, name.into(), mbid.map(Into::into)));
                    Entry {
                        id: *next_artist,
                        has_mbid: mbid.is_some(),
                    }
                }
            })
        })?;
        e.fill_mbid(mbid, &mut delta.artist_mbids);
        Ok(*e)
    }

    pub fn album(
        &mut self,
        artist_id: i64,
        title: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        Ok(self.album_entry(artist_id, title, mbid, res)?.id)
    }

    fn album_entry(
        &mut self,
        artist_id: i64,
        title: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<Entry> {
        let Registry {
            albums,
            next_album,
            delta,
            scratch,
            ..
        } = self;
        composite_key(scratch, &[artist_id], title);
        let e = albums.get_or_try_insert_with(scratch, || {
            Ok(match res.album(artist_id, title)? {
                Some((id, stored)) => Entry::stored(id, stored),
                None => {
                    *next_album += 1;
                    delta
                        .albums
                        .push((*next_album, artist_id, title.into(), mbid.map(Into::into)));
                    Entry {
                        id: *next_album,
                        has_mbid: mbid.is_some(),
                    }
                }
            })
        })?;
        e.fill_mbid(mbid, &mut delta.album_mbids);
        Ok(*e)
    }

    /// The track key of one source row, creating (or finding in the target) its artist, album
    /// and track as needed and recording first non-NULL attributes.
    pub fn track(&mut self, row: &TrackText<'_>, res: &mut dyn Resolver) -> Result<i64> {
        let mut key = std::mem::take(&mut self.track_scratch);
        track_key(&mut key, row.artist, row.album, row.title);
        let hash = self.tracks.hash(&key);
        let out = self.track_with_key(hash, &key, row, res);
        self.track_scratch = key;
        out
    }

    /// Looks up, ahead of a window's rows, the users and tracks (with their artists and
    /// albums) that the registry does not know yet, each kind sorted by its target index's key
    /// order: the probes then walk each index from one end to the other instead of jumping
    /// around it, and read each of its pages once. What is found is remembered exactly as a
    /// lookup of the row itself would remember it; what is not found is left for the rows,
    /// which hand out new keys in their order as always. Only existing keys are learnt here, so
    /// the keys given out do not change.
    pub fn preload(
        &mut self,
        users: &[&str],
        rows: &[TrackText<'_>],
        res: &mut dyn Resolver,
    ) -> Result<()> {
        if !res.may_find() {
            return Ok(());
        }
        let mut names: Vec<&str> = users
            .iter()
            .copied()
            .filter(|u| self.users.get_mut(u.as_bytes()).is_none())
            .collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            if let Some(id) = res.user(name)? {
                self.users
                    .get_or_try_insert_with(name.as_bytes(), || Ok(id))?;
            }
        }

        let mut key = Vec::new();
        let mut missing: Vec<&TrackText<'_>> = rows
            .iter()
            .filter(|r| {
                track_key(&mut key, r.artist, r.album, r.title);
                self.tracks.get_mut(&key).is_none()
            })
            .collect();
        let mut artists: Vec<&str> = missing
            .iter()
            .map(|r| r.artist)
            .filter(|a| self.artists.get_mut(a.as_bytes()).is_none())
            .collect();
        artists.sort_unstable();
        artists.dedup();
        for name in artists {
            if let Some((id, mbid)) = res.artist(name)? {
                self.artists
                    .get_or_try_insert_with(name.as_bytes(), || Ok(Entry::stored(id, mbid)))?;
            }
        }
        let artist_id =
            |reg: &mut Self, name: &str| reg.artists.get_mut(name.as_bytes()).map(|e| e.id);

        let mut albums: Vec<(i64, &str)> = Vec::new();
        for r in &missing {
            if let (Some(a), Some(t)) = (artist_id(self, r.artist), r.album) {
                composite_key(&mut key, &[a], t);
                if self.albums.get_mut(&key).is_none() {
                    albums.push((a, t));
                }
            }
        }
        albums.sort_unstable();
        albums.dedup();
        for (a, title) in albums {
            if let Some((id, mbid)) = res.album(a, title)? {
                composite_key(&mut key, &[a], title);
                self.albums
                    .get_or_try_insert_with(&key, || Ok(Entry::stored(id, mbid)))?;
            }
        }

        // Tracks whose artist and album (if any) exist in the target, in index order.
        let mut tracks: Vec<(i64, i64, &str, &TrackText<'_>)> = Vec::new();
        for r in missing.drain(..) {
            let Some(a) = artist_id(self, r.artist) else {
                continue;
            };
            let album = match r.album {
                Some(t) => {
                    composite_key(&mut key, &[a], t);
                    match self.albums.get_mut(&key) {
                        Some(e) => Some(e.id),
                        None => continue,
                    }
                }
                None => None,
            };
            tracks.push((a, album.unwrap_or(0), r.title, r));
        }
        tracks.sort_unstable_by(|x, y| (x.0, x.1, x.2).cmp(&(y.0, y.1, y.2)));
        tracks.dedup_by(|x, y| {
            (x.0, x.1, x.2) == (y.0, y.1, y.2) && x.3.album.is_some() == y.3.album.is_some()
        });
        for (a, album, title, r) in tracks {
            let album = r.album.map(|_| album);
            if let Some((id, mbid, duration)) = res.track(a, album, title)? {
                track_key(&mut key, r.artist, r.album, r.title);
                // Known from here on, as after a lookup by its first row; the rows fill what
                // the target lacks (`track_with_key` on a known track), and consult the artist
                // and album maps for their mbids (the flags start false).
                let e = TrackEntry {
                    id,
                    has_mbid: mbid.is_some(),
                    has_duration: duration.is_some(),
                    artist_mbid: false,
                    album_mbid: false,
                };
                self.tracks.get_or_try_insert_with(&key, || Ok(e))?;
            }
        }
        Ok(())
    }

    /// Builds and hashes the track keys of a block of rows and asks the CPU for their table
    /// slots and keys ahead of [`Registry::track_prepared`], so that the cache misses of the
    /// block's lookups overlap instead of following one another.
    pub fn prepare_tracks(&self, rows: &[TrackText<'_>], block: &mut TrackBlock) {
        block.keys.clear();
        block.ends.clear();
        block.hashes.clear();
        for r in rows {
            let start = block.keys.len();
            append_track_key(&mut block.keys, r.artist, r.album, r.title);
            let hash = self.tracks.hash(&block.keys[start..]);
            self.tracks.prefetch(hash);
            block.ends.push(block.keys.len());
            block.hashes.push(hash);
        }
        for &hash in &block.hashes {
            self.tracks.prefetch_key(hash);
        }
    }

    /// [`Registry::track`] of row `j` of a block made by [`Registry::prepare_tracks`] (rows
    /// must be taken in order: keys are handed out in order of first appearance).
    pub fn track_prepared(
        &mut self,
        block: &TrackBlock,
        j: usize,
        row: &TrackText<'_>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        let start = if j == 0 { 0 } else { block.ends[j - 1] };
        let key = &block.keys[start..block.ends[j]];
        self.track_with_key(block.hashes[j], key, row, res)
    }

    fn track_with_key(
        &mut self,
        hash: u64,
        key: &[u8],
        row: &TrackText<'_>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        let &TrackText {
            artist,
            artist_mbid,
            album,
            album_mbid,
            title,
            mbid,
            duration_ms,
        } = row;
        if let Some(e) = self.tracks.get_mut_hashed(hash, key).map(|e| *e) {
            // A known track: only a first mbid or duration in this row needs more work.
            let mut now = e;
            let artist_fill = artist_mbid.is_some() && !e.artist_mbid;
            let album_fill = album.is_some() && album_mbid.is_some() && !e.album_mbid;
            if artist_fill || album_fill {
                let a = self.artist_entry(artist, artist_mbid, res)?;
                now.artist_mbid = a.has_mbid;
                if let Some(t) = album {
                    now.album_mbid = self.album_entry(a.id, t, album_mbid, res)?.has_mbid;
                }
            }
            let fill_mbid = if e.has_mbid { None } else { mbid };
            let fill_duration = if e.has_duration { None } else { duration_ms };
            if fill_mbid.is_some() || fill_duration.is_some() {
                now.has_mbid |= fill_mbid.is_some();
                now.has_duration |= fill_duration.is_some();
                self.delta
                    .track_fills
                    .push((e.id, fill_mbid.map(Into::into), fill_duration));
            }
            if now != e {
                *self.tracks.get_mut_hashed(hash, key).expect("found above") = now;
            }
            return Ok(e.id);
        }

        // A new track key: resolve its artist and album first (they may be known).
        let a = self.artist_entry(artist, artist_mbid, res)?;
        let al = match album {
            Some(t) => Some(self.album_entry(a.id, t, album_mbid, res)?),
            None => None,
        };
        let album_id = al.map(|e| e.id);
        let mut e = TrackEntry {
            id: 0,
            has_mbid: mbid.is_some(),
            has_duration: duration_ms.is_some(),
            artist_mbid: a.has_mbid,
            album_mbid: al.is_none_or(|e| e.has_mbid),
        };
        match res.track(a.id, album_id, title)? {
            Some((id, stored_mbid, stored_duration)) => {
                // In the target already: fill what it lacks and this row has.
                e.id = id;
                let fill_mbid = if stored_mbid.is_some() { None } else { mbid };
                let fill_duration = if stored_duration.is_some() {
                    None
                } else {
                    duration_ms
                };
                e.has_mbid = stored_mbid.is_some() || mbid.is_some();
                e.has_duration = stored_duration.is_some() || duration_ms.is_some();
                if fill_mbid.is_some() || fill_duration.is_some() {
                    self.delta
                        .track_fills
                        .push((id, fill_mbid.map(Into::into), fill_duration));
                }
            }
            None => {
                self.next_track += 1;
                e.id = self.next_track;
                self.delta.tracks.push((
                    e.id,
                    a.id,
                    album_id,
                    title.into(),
                    mbid.map(Into::into),
                    duration_ms,
                ));
            }
        }
        self.tracks.get_or_try_insert_hashed(hash, key, || Ok(e))?;
        Ok(e.id)
    }
}

#[cfg(test)]
mod tests;
