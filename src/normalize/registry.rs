//! Dimension key registries: exact text → surrogate key, kept in memory for the whole run.
//!
//! Keys are handed out in order of first appearance in ascending source-id order, so the same
//! source always gives the same keys, and a later sync of higher ids extends them exactly as a
//! full load of the whole source would. Lookups borrow the row's text (no allocation unless the
//! entity is new); album and track keys are built in one reused scratch buffer.
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
    ) -> Result<Option<(i64, Option<String>, Option<i32>)>>;
}

/// The resolver of a full load: the target is empty, every miss is a new entity.
pub struct NoResolver;

impl Resolver for NoResolver {
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
    ) -> Result<Option<(i64, Option<String>, Option<i32>)>> {
        Ok(None)
    }
}

/// New dimension rows and attribute fills, waiting to be written.
#[derive(Debug, Default)]
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
        Option<i32>,
    )>,
    /// Filled-in mbid of an artist row written earlier: (artist_id, mbid).
    pub artist_mbids: Vec<(i64, Box<str>)>,
    /// (album_id, mbid)
    pub album_mbids: Vec<(i64, Box<str>)>,
    /// (track_id, mbid or None, duration or None): only the filled-in values are Some.
    pub track_fills: Vec<(i64, Option<Box<str>>, Option<i32>)>,
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
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: i64,
    has_mbid: bool,
}

/// Builds an album or track key in the reused buffer: the ids (8 bytes LE each), then the title.
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

#[derive(Debug, Clone, Copy)]
struct TrackEntry {
    id: i64,
    has_mbid: bool,
    has_duration: bool,
}

/// All four key maps, their next free ids, and the changes not yet flushed.
#[derive(Debug, Default)]
pub struct Registry {
    users: KeyMap<i64>,
    artists: KeyMap<Entry>,
    /// key: artist_id (8 bytes LE) ++ title
    albums: KeyMap<Entry>,
    /// key: artist_id (8 bytes LE) ++ album_id or 0 (8 bytes LE) ++ title
    tracks: KeyMap<TrackEntry>,
    next_user: i64,
    next_artist: i64,
    next_album: i64,
    next_track: i64,
    scratch: Vec<u8>,
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
        Ok(e.id)
    }

    pub fn album(
        &mut self,
        artist_id: i64,
        title: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
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
        Ok(e.id)
    }

    pub fn track(
        &mut self,
        artist_id: i64,
        album_id: Option<i64>,
        title: &str,
        mbid: Option<&str>,
        duration_ms: Option<i32>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        let Registry {
            tracks,
            next_track,
            delta,
            scratch,
            ..
        } = self;
        composite_key(scratch, &[artist_id, album_id.unwrap_or(0)], title);
        let e = tracks.get_or_try_insert_with(scratch, || {
            Ok(match res.track(artist_id, album_id, title)? {
                Some((id, stored_mbid, stored_duration)) => TrackEntry {
                    id,
                    has_mbid: stored_mbid.is_some(),
                    has_duration: stored_duration.is_some(),
                },
                None => {
                    *next_track += 1;
                    delta.tracks.push((
                        *next_track,
                        artist_id,
                        album_id,
                        title.into(),
                        mbid.map(Into::into),
                        duration_ms,
                    ));
                    TrackEntry {
                        id: *next_track,
                        has_mbid: mbid.is_some(),
                        has_duration: duration_ms.is_some(),
                    }
                }
            })
        })?;
        let fill_mbid = if e.has_mbid { None } else { mbid };
        let fill_duration = if e.has_duration { None } else { duration_ms };
        if fill_mbid.is_some() || fill_duration.is_some() {
            e.has_mbid |= fill_mbid.is_some();
            e.has_duration |= fill_duration.is_some();
            delta
                .track_fills
                .push((e.id, fill_mbid.map(Into::into), fill_duration));
        }
        Ok(e.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_text_identity() {
        let mut r = Registry::new();
        let a = r.artist("Radiohead", None, &mut NoResolver).unwrap();
        let b = r.artist("radiohead", None, &mut NoResolver).unwrap();
        let c = r.artist("Radiohead ", None, &mut NoResolver).unwrap();
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(r.artist("Radiohead", None, &mut NoResolver).unwrap(), 1);
        // NULL album and '' album are different tracks.
        let empty = r.album(a, "", None, &mut NoResolver).unwrap();
        let t_none = r
            .track(a, None, "Creep", None, None, &mut NoResolver)
            .unwrap();
        let t_empty = r
            .track(a, Some(empty), "Creep", None, None, &mut NoResolver)
            .unwrap();
        assert_ne!(t_none, t_empty);
        assert_eq!(
            r.track(a, None, "Creep", None, None, &mut NoResolver)
                .unwrap(),
            t_none
        );
        // same album title under another artist is another album
        assert_ne!(r.album(b, "", None, &mut NoResolver).unwrap(), empty);
        let d = r.take_delta();
        assert_eq!(d.new_rows(), [0, 3, 2, 2]);
        assert_eq!(&*d.tracks[1].3, "Creep");
        assert_eq!(d.tracks[0].2, None);
        assert_eq!(d.tracks[1].2, Some(empty));
        assert_eq!(
            r.take_delta().new_rows(),
            [0, 0, 0, 0],
            "a delta is handed over once"
        );
    }

    #[test]
    fn first_non_null_attribute_wins() {
        let mut r = Registry::new();
        let id = r.artist("X", None, &mut NoResolver).unwrap();
        r.artist("X", Some("m1"), &mut NoResolver).unwrap();
        r.artist("X", Some("m2"), &mut NoResolver).unwrap();
        let t = r
            .track(id, None, "T", None, Some(5), &mut NoResolver)
            .unwrap();
        r.take_delta();
        r.track(id, None, "T", Some("tm"), Some(9), &mut NoResolver)
            .unwrap();
        r.track(id, None, "T", Some("later"), Some(7), &mut NoResolver)
            .unwrap();
        let d = r.take_delta();
        assert_eq!(d.track_fills.len(), 1);
        let (tid, mbid, dur) = &d.track_fills[0];
        assert_eq!((*tid, mbid.as_deref(), *dur), (t, Some("tm"), None));
    }

    #[test]
    fn new_row_then_fill_within_one_delta() {
        let mut r = Registry::new();
        r.artist("X", None, &mut NoResolver).unwrap();
        r.artist("X", Some("m1"), &mut NoResolver).unwrap();
        r.artist("X", Some("m2"), &mut NoResolver).unwrap();
        let d = r.take_delta();
        assert_eq!(d.artists.len(), 1);
        assert_eq!(d.artists[0].2, None);
        assert_eq!(d.artist_mbids, vec![(1, "m1".into())]);
    }

    /// A target that already holds artist "Known" as id 7 with no mbid.
    struct OneArtist;
    impl Resolver for OneArtist {
        fn user(&mut self, _: &str) -> Result<Option<i64>> {
            Ok(None)
        }
        fn artist(&mut self, name: &str) -> Result<Option<(i64, Option<String>)>> {
            Ok((name == "Known").then_some((7, None)))
        }
        fn album(&mut self, _: i64, _: &str) -> Result<Option<(i64, Option<String>)>> {
            Ok(None)
        }
        fn track(
            &mut self,
            _: i64,
            _: Option<i64>,
            _: &str,
        ) -> Result<Option<(i64, Option<String>, Option<i32>)>> {
            Ok(None)
        }
    }

    #[test]
    fn stored_entities_keep_their_keys_and_new_ones_continue() {
        let mut r = Registry::continuing_after(3, 10, 0, 0);
        assert_eq!(r.artist("Known", None, &mut OneArtist).unwrap(), 7);
        assert_eq!(r.artist("Fresh", None, &mut OneArtist).unwrap(), 11);
        // filling a NULL attribute of a stored row becomes an update, not a new row
        r.artist("Known", Some("mb"), &mut OneArtist).unwrap();
        assert_eq!(r.user("u", &mut OneArtist).unwrap(), 4);
        let d = r.take_delta();
        assert_eq!(d.new_rows(), [1, 1, 0, 0]);
        assert_eq!(d.artist_mbids, vec![(7, "mb".into())]);
    }
}
