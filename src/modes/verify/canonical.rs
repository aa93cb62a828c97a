//! The canonical encoding of a lossless tuple and of a dimension entity, and their hashes,
//! built the same way by scrobsync over both sides: the source's rows as PostgreSQL streams
//! them, the target's as its tables join. Every string is prefixed with its byte length and a
//! NULL album is its own tag, so `''` and NULL — and any shift of text between fields — encode
//! apart. Both sides are hashed by this process in one run, so the hash (xxh3) only has to be
//! the same function on both sides, not a stable format.

use xxhash_rust::xxh3::{xxh3_128, xxh3_64, xxh3_64_with_seed};

/// One lossless tuple, as both sides see it.
#[derive(Debug, Clone, Copy)]
pub struct Tuple<'a> {
    pub id: i64,
    pub user: &'a [u8],
    /// Floor of the epoch, seconds.
    pub epoch: i64,
    pub artist: &'a [u8],
    /// The album's artist and title, or None.
    pub album: Option<(&'a [u8], &'a [u8])>,
    pub track: &'a [u8],
    /// As stored: 0 or 1 (anything else hashes apart from every source value).
    pub loved: i64,
}

fn push_text(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s);
}

/// The hash of a user name (a part of [`row_hash`]).
pub fn user_hash(user: &[u8]) -> u64 {
    xxh3_64_with_seed(user, 1)
}

/// The hash of what a scrobble's track determines: the track's artist, its album (the album's
/// own artist and title, or none) and its title (a part of [`row_hash`]).
pub fn track_hash(
    buf: &mut Vec<u8>,
    artist: &[u8],
    album: Option<(&[u8], &[u8])>,
    track: &[u8],
) -> u64 {
    buf.clear();
    push_text(buf, artist);
    match album {
        Some((artist, title)) => {
            buf.push(1);
            push_text(buf, artist);
            push_text(buf, title);
        }
        None => buf.push(0),
    }
    push_text(buf, track);
    xxh3_64_with_seed(buf, 2)
}

/// The hash of one lossless tuple, from the hashes of its user and its track: the target hashes
/// each user and track once, and then every scrobble with no text at hand. A window's digest is
/// the wrapping sum.
pub fn row_hash(id: i64, user: u64, epoch: i64, track: u64, loved: i64) -> u64 {
    let mut b = [0u8; 40];
    b[..8].copy_from_slice(&id.to_le_bytes());
    b[8..16].copy_from_slice(&user.to_le_bytes());
    b[16..24].copy_from_slice(&epoch.to_le_bytes());
    b[24..32].copy_from_slice(&track.to_le_bytes());
    b[32..].copy_from_slice(&loved.to_le_bytes());
    xxh3_64(&b)
}

impl Tuple<'_> {
    /// [`row_hash`] of the tuple.
    pub fn hash(&self, buf: &mut Vec<u8>) -> u64 {
        row_hash(
            self.id,
            user_hash(self.user),
            self.epoch,
            track_hash(buf, self.artist, self.album, self.track),
            self.loved,
        )
    }
}

/// The hash of a row that cannot be encoded (a damaged target whose scrobble names a missing
/// dimension row): apart from every tuple's.
pub fn broken_row_hash(id: i64) -> u64 {
    let mut b = b"missing dimension row".to_vec();
    b.extend_from_slice(&id.to_le_bytes());
    xxh3_64(&b)
}

/// The identity of a dimension entity, as both sides name it: an artist by name, an album by its
/// artist's name and title, a track by artist name, album title (or none) and title.
pub fn entity_key(buf: &mut Vec<u8>, parts: &[Option<&[u8]>]) -> u128 {
    buf.clear();
    for p in parts {
        match p {
            Some(s) => {
                buf.push(1);
                push_text(buf, s);
            }
            None => buf.push(0),
        }
    }
    xxh3_128(buf)
}

/// The hash of an attribute's text value (an mbid).
pub fn text_hash(s: &[u8]) -> u64 {
    xxh3_64(s)
}

/// The hash of one entity with its attribute values (mbid hash, duration); a dimension's digest
/// is the wrapping sum over its entities.
pub fn entity_hash(key: u128, mbid: Option<u64>, duration: Option<i64>) -> u64 {
    let mut b = [0u8; 34];
    b[..16].copy_from_slice(&key.to_le_bytes());
    if let Some(m) = mbid {
        b[16] = 1;
        b[17..25].copy_from_slice(&m.to_le_bytes());
    }
    if let Some(d) = duration {
        b[25] = 1;
        b[26..34].copy_from_slice(&d.to_le_bytes());
    }
    xxh3_64(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(t: &Tuple) -> u64 {
        t.hash(&mut Vec::new())
    }

    #[test]
    fn null_and_empty_album_hash_apart() {
        let t = Tuple {
            id: 1,
            user: b"u",
            epoch: 0,
            artist: b"x",
            album: None,
            track: b"t",
            loved: 0,
        };
        assert_ne!(
            enc(&t),
            enc(&Tuple {
                album: Some((b"x", b"")),
                ..t
            })
        );
        // the album's own artist, and a stored loved outside 0/1, count
        assert_ne!(
            enc(&Tuple {
                album: Some((b"x", b"A")),
                ..t
            }),
            enc(&Tuple {
                album: Some((b"y", b"A")),
                ..t
            })
        );
        assert_ne!(enc(&Tuple { loved: 1, ..t }), enc(&Tuple { loved: 2, ..t }));
        // shifting text between fields, or a value between tuples, changes the hash
        assert_ne!(
            enc(&Tuple { user: b"u1", ..t }),
            enc(&Tuple {
                user: b"u",
                artist: b"1x",
                ..t
            })
        );
        assert_ne!(
            enc(&Tuple {
                artist: b"ab",
                track: b"c",
                ..t
            }),
            enc(&Tuple {
                artist: b"a",
                track: b"bc",
                ..t
            })
        );
        assert_ne!(enc(&Tuple { id: 2, ..t }), enc(&Tuple { epoch: 2, ..t }));
        assert_ne!(enc(&t), broken_row_hash(1));
    }

    #[test]
    fn entity_keys_tell_parts_and_nulls_apart() {
        let mut b = Vec::new();
        let k = |b: &mut Vec<u8>, p: &[Option<&[u8]>]| entity_key(b, p);
        assert_ne!(
            k(&mut b, &[Some(b"a"), None, Some(b"t")]),
            k(&mut b, &[Some(b"a"), Some(b""), Some(b"t")])
        );
        assert_ne!(
            k(&mut b, &[Some(b"ab"), Some(b"c")]),
            k(&mut b, &[Some(b"a"), Some(b"bc")])
        );
        assert_ne!(entity_hash(1, None, Some(0)), entity_hash(1, None, None));
        assert_ne!(entity_hash(1, Some(0), None), entity_hash(1, None, None));
    }
}
