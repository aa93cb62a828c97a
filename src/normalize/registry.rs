//! Dimension key registries: exact text → surrogate key, kept in memory for the whole run.
//!
//! Keys are handed out in order of first appearance in ascending source-id order, so the same
//! source always gives the same keys, and a later sync of higher ids extends them exactly as a
//! full load of the whole source would. Lookups borrow the row's text (no allocation unless the
//! entity is new); album and track keys are built in one reused scratch buffer.
//!
//! Attribute rule (documented in the README): a dimension row keeps the first non-NULL mbid
//! (and, for tracks, duration) in source-id order; later rows only fill a value that is NULL.

use anyhow::Result;
use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

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

/// Whether an entry must be written: inserted, or updated (an attribute was filled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Already in the target, unchanged.
    Stored,
    /// Not in the target yet.
    New,
    /// In the target, but an attribute was filled since.
    Changed,
}

#[derive(Debug, Clone)]
pub struct Attr {
    pub id: i64,
    pub mbid: Option<Box<str>>,
    pub state: State,
}

#[derive(Debug, Clone)]
pub struct TrackAttr {
    pub id: i64,
    pub mbid: Option<Box<str>>,
    pub duration_ms: Option<i32>,
    pub state: State,
}

/// All four key maps and their next free ids.
#[derive(Debug, Default)]
pub struct Registry {
    pub(crate) users: HashMap<Box<str>, (i64, State)>,
    pub(crate) artists: HashMap<Box<str>, Attr>,
    /// key: artist_id (8 bytes LE) ++ title
    pub(crate) albums: HashMap<Box<[u8]>, Attr>,
    /// key: artist_id (8 bytes LE) ++ album_id or 0 (8 bytes LE) ++ title
    pub(crate) tracks: HashMap<Box<[u8]>, TrackAttr>,
    next_user: i64,
    next_artist: i64,
    next_album: i64,
    next_track: i64,
    scratch: Vec<u8>,
}

fn fill(slot: &mut Option<Box<str>>, value: Option<&str>, state: &mut State) {
    if slot.is_none() {
        if let Some(v) = value {
            *slot = Some(v.into());
            if *state == State::Stored {
                *state = State::Changed;
            }
        }
    }
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

    pub fn user(&mut self, name: &str, res: &mut dyn Resolver) -> Result<i64> {
        Ok(match self.users.entry_ref(name) {
            EntryRef::Occupied(o) => o.get().0,
            EntryRef::Vacant(v) => match res.user(name)? {
                Some(id) => v.insert((id, State::Stored)).0,
                None => {
                    self.next_user += 1;
                    v.insert((self.next_user, State::New)).0
                }
            },
        })
    }

    pub fn artist(
        &mut self,
        name: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        let a = match self.artists.entry_ref(name) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => match res.artist(name)? {
                Some((id, stored)) => v.insert(Attr {
                    id,
                    mbid: stored.map(Into::into),
                    state: State::Stored,
                }),
                None => {
                    self.next_artist += 1;
                    v.insert(Attr {
                        id: self.next_artist,
                        mbid: None,
                        state: State::New,
                    })
                }
            },
        };
        fill(&mut a.mbid, mbid, &mut a.state);
        Ok(a.id)
    }

    pub fn album(
        &mut self,
        artist_id: i64,
        title: &str,
        mbid: Option<&str>,
        res: &mut dyn Resolver,
    ) -> Result<i64> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&artist_id.to_le_bytes());
        self.scratch.extend_from_slice(title.as_bytes());
        let a = match self.albums.entry_ref(&self.scratch[..]) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => match res.album(artist_id, title)? {
                Some((id, stored)) => v.insert(Attr {
                    id,
                    mbid: stored.map(Into::into),
                    state: State::Stored,
                }),
                None => {
                    self.next_album += 1;
                    v.insert(Attr {
                        id: self.next_album,
                        mbid: None,
                        state: State::New,
                    })
                }
            },
        };
        fill(&mut a.mbid, mbid, &mut a.state);
        Ok(a.id)
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
        self.scratch.clear();
        self.scratch.extend_from_slice(&artist_id.to_le_bytes());
        self.scratch
            .extend_from_slice(&album_id.unwrap_or(0).to_le_bytes());
        self.scratch.extend_from_slice(title.as_bytes());
        let t = match self.tracks.entry_ref(&self.scratch[..]) {
            EntryRef::Occupied(o) => o.into_mut(),
            EntryRef::Vacant(v) => match res.track(artist_id, album_id, title)? {
                Some((id, stored_mbid, stored_duration)) => v.insert(TrackAttr {
                    id,
                    mbid: stored_mbid.map(Into::into),
                    duration_ms: stored_duration,
                    state: State::Stored,
                }),
                None => {
                    self.next_track += 1;
                    v.insert(TrackAttr {
                        id: self.next_track,
                        mbid: None,
                        duration_ms: None,
                        state: State::New,
                    })
                }
            },
        };
        fill(&mut t.mbid, mbid, &mut t.state);
        if t.duration_ms.is_none() && duration_ms.is_some() {
            t.duration_ms = duration_ms;
            if t.state == State::Stored {
                t.state = State::Changed;
            }
        }
        Ok(t.id)
    }

    /// Splits an album key into (artist_id, title).
    pub(crate) fn album_key_parts(key: &[u8]) -> (i64, &str) {
        let artist = i64::from_le_bytes(key[..8].try_into().expect("8-byte artist id"));
        (
            artist,
            std::str::from_utf8(&key[8..]).expect("keys are built from str"),
        )
    }

    /// Splits a track key into (artist_id, album_id or None, title).
    pub(crate) fn track_key_parts(key: &[u8]) -> (i64, Option<i64>, &str) {
        let artist = i64::from_le_bytes(key[..8].try_into().expect("8-byte artist id"));
        let album = i64::from_le_bytes(key[8..16].try_into().expect("8-byte album id"));
        (
            artist,
            (album != 0).then_some(album),
            std::str::from_utf8(&key[16..]).expect("keys are built from str"),
        )
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
    }

    #[test]
    fn first_non_null_attribute_wins() {
        let mut r = Registry::new();
        let id = r.artist("X", None, &mut NoResolver).unwrap();
        r.artist("X", Some("m1"), &mut NoResolver).unwrap();
        r.artist("X", Some("m2"), &mut NoResolver).unwrap();
        assert_eq!(r.artists["X"].mbid.as_deref(), Some("m1"));
        assert_eq!(r.artists["X"].id, id);
        let t = r
            .track(id, None, "T", None, Some(5), &mut NoResolver)
            .unwrap();
        r.track(id, None, "T", Some("tm"), Some(9), &mut NoResolver)
            .unwrap();
        let (_, attr) = r.tracks.iter().next().unwrap();
        assert_eq!(
            (attr.id, attr.duration_ms, attr.mbid.as_deref()),
            (t, Some(5), Some("tm"))
        );
    }

    #[test]
    fn key_parts_round_trip() {
        let mut r = Registry::new();
        let a = r.artist("A", None, &mut NoResolver).unwrap();
        let al = r.album(a, "Ålbum", None, &mut NoResolver).unwrap();
        r.track(a, Some(al), "tïtle", None, None, &mut NoResolver)
            .unwrap();
        let (k, _) = r.tracks.iter().next().unwrap();
        assert_eq!(Registry::track_key_parts(k), (a, Some(al), "tïtle"));
        let (k, _) = r.albums.iter().next().unwrap();
        assert_eq!(Registry::album_key_parts(k), (a, "Ålbum"));
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
        assert_eq!(r.artists["Known"].state, State::Stored);
        assert_eq!(r.artist("Fresh", None, &mut OneArtist).unwrap(), 11);
        assert_eq!(r.artists["Fresh"].state, State::New);
        // filling a NULL attribute of a stored row marks it for an update
        r.artist("Known", Some("mb"), &mut OneArtist).unwrap();
        assert_eq!(r.artists["Known"].state, State::Changed);
        assert_eq!(r.user("u", &mut OneArtist).unwrap(), 4);
    }
}
