//! The canonical text of a lossless tuple and its hash, built the same way by scrobsync (over
//! the target) and by PostgreSQL (over the source): every string prefixed with its byte length,
//! a NULL album written `N`, so `''` and NULL — and any shift of text between fields — hash
//! apart.

use md5::{Digest, Md5};
use std::fmt::Write as _;

/// One lossless tuple, as both sides see it.
#[derive(Debug, Clone, Copy)]
pub struct Tuple<'a> {
    pub id: i64,
    pub user: &'a str,
    /// Floor of the epoch, seconds.
    pub epoch: i64,
    pub artist: &'a str,
    /// The album's artist and title, or None.
    pub album: Option<(&'a str, &'a str)>,
    pub track: &'a str,
    /// As stored: 0 or 1 (anything else hashes apart from every source value).
    pub loved: i64,
}

/// The canonical text of one lossless tuple (see the module comment).
pub fn canonical(buf: &mut String, t: &Tuple) {
    buf.clear();
    let _ = write!(
        buf,
        "{}|{}:{}|{}|{}:{}|",
        t.id,
        t.user.len(),
        t.user,
        t.epoch,
        t.artist.len(),
        t.artist
    );
    match t.album {
        Some((artist, title)) => {
            let _ = write!(buf, "{}:{artist}/{}:{title}", artist.len(), title.len());
        }
        None => buf.push('N'),
    }
    let _ = write!(buf, "|{}:{}|", t.track.len(), t.track);
    match t.loved {
        0 => buf.push('0'),
        1 => buf.push('1'),
        other => {
            let _ = write!(buf, "?{other}");
        }
    }
}

/// The first 8 bytes of the md5 of `text`, as PostgreSQL's `('x'||substr(md5(t),1,16))::bit(64)::int8`.
pub fn row_hash(text: &str) -> u64 {
    let d = Md5::digest(text.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("16-byte digest"))
}

/// The same canonical text, built by PostgreSQL.
/// (`date_part` of a timestamp truncated to whole seconds is exact in float8 and much cheaper
/// than `extract`, which computes in numeric.)
const PG_CANONICAL: &str = "id::text || '|' || octet_length(username) || ':' || username || '|' \
    || date_part('epoch', date_trunc('second', played_at AT TIME ZONE 'UTC'))::int8 || '|' \
    || octet_length(artist_name) || ':' || artist_name || '|' \
    || coalesce(octet_length(artist_name) || ':' || artist_name || '/' \
                || octet_length(album_name) || ':' || album_name, 'N') || '|' \
    || octet_length(track_name) || ':' || track_name || '|' \
    || CASE WHEN loved THEN '1' WHEN NOT loved THEN '0' ELSE 'N' END";

/// The md5 (hex) of the canonical text's UTF-8 bytes, as the target computes it. On a server
/// whose encoding is not UTF-8 (LATIN1, …) lengths and bytes are taken of the text converted to
/// UTF-8; on a UTF-8 server that conversion would only cost time.
pub(super) fn pg_row_md5(utf8_server: bool) -> String {
    if utf8_server {
        format!("md5({PG_CANONICAL})")
    } else {
        let utf8 = PG_CANONICAL
            .replace("octet_length(", "octet_length(convert_to(")
            .replace(") || ':'", ", 'UTF8')) || ':'");
        format!("md5(convert_to({utf8}, 'UTF8'))")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_album_hash_apart() {
        let mut a = String::new();
        let mut b = String::new();
        let t = Tuple {
            id: 1,
            user: "u",
            epoch: 0,
            artist: "x",
            album: None,
            track: "t",
            loved: 0,
        };
        canonical(&mut a, &t);
        canonical(
            &mut b,
            &Tuple {
                album: Some(("x", "")),
                ..t
            },
        );
        assert_ne!(a, b);
        // the album's own artist, and a stored loved outside 0/1, count
        canonical(
            &mut a,
            &Tuple {
                album: Some(("x", "A")),
                ..t
            },
        );
        canonical(
            &mut b,
            &Tuple {
                album: Some(("y", "A")),
                ..t
            },
        );
        assert_ne!(a, b);
        canonical(&mut a, &Tuple { loved: 1, ..t });
        canonical(&mut b, &Tuple { loved: 2, ..t });
        assert_ne!(a, b);
        assert_ne!(row_hash(&a), row_hash(&b));
        // shifting text between fields changes the text
        canonical(&mut a, &Tuple { user: "u|1", ..t });
        canonical(&mut b, &Tuple { artist: "1|x", ..t });
        assert_ne!(a, b);
    }

    #[test]
    fn md5_prefix_matches_postgres_convention() {
        // md5('abc') = 900150983cd24fb0d6963f7d28e17f72
        assert_eq!(row_hash("abc"), 0x9001_5098_3cd2_4fb0);
    }
}
