use super::*;

fn row<'a>(
    artist: &'a str,
    artist_mbid: Option<&'a str>,
    album: Option<&'a str>,
    album_mbid: Option<&'a str>,
    title: &'a str,
    mbid: Option<&'a str>,
    duration_ms: Option<i64>,
) -> TrackText<'a> {
    TrackText {
        artist,
        artist_mbid,
        album,
        album_mbid,
        title,
        mbid,
        duration_ms,
    }
}

#[test]
fn exact_text_identity() {
    let mut r = Registry::new();
    let a = r.artist("Radiohead", None, &mut NoResolver).unwrap();
    let b = r.artist("radiohead", None, &mut NoResolver).unwrap();
    let c = r.artist("Radiohead ", None, &mut NoResolver).unwrap();
    assert_eq!((a, b, c), (1, 2, 3));
    assert_eq!(r.artist("Radiohead", None, &mut NoResolver).unwrap(), 1);
    // NULL album and '' album are different tracks.
    let t = |r: &mut Registry, artist: &str, album: Option<&str>, title: &str| {
        r.track(
            &row(artist, None, album, None, title, None, None),
            &mut NoResolver,
        )
        .unwrap()
    };
    let t_none = t(&mut r, "Radiohead", None, "Creep");
    let t_empty = t(&mut r, "Radiohead", Some(""), "Creep");
    assert_ne!(t_none, t_empty);
    assert_eq!(t(&mut r, "Radiohead", None, "Creep"), t_none);
    // the key's parts cannot run into each other
    let t_ab = t(&mut r, "Radiohead", Some("ab"), "c");
    let t_a = t(&mut r, "Radiohead", Some("a"), "bc");
    assert_ne!(t_ab, t_a);
    // same album title under another artist is another album
    let empty = r.album(a, "", None, &mut NoResolver).unwrap();
    assert_ne!(r.album(b, "", None, &mut NoResolver).unwrap(), empty);
    let d = r.take_delta();
    assert_eq!(d.new_rows(), [0, 3, 4, 4]);
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
fn entries_are_packed() {
    assert_eq!(std::mem::size_of::<Entry>(), 12);
    assert_eq!(std::mem::size_of::<TrackEntry>(), 12);
    assert_eq!(std::mem::align_of::<TrackEntry>(), 4);
}

#[test]
fn first_non_null_attribute_wins() {
    let mut r = Registry::new();
    let id = r.artist("X", None, &mut NoResolver).unwrap();
    r.artist("X", Some("m1"), &mut NoResolver).unwrap();
    r.artist("X", Some("m2"), &mut NoResolver).unwrap();
    let mut nr = NoResolver;
    let t = r
        .track(&row("X", None, None, None, "T", None, Some(5)), &mut nr)
        .unwrap();
    r.take_delta();
    r.track(
        &row("X", None, None, None, "T", Some("tm"), Some(9)),
        &mut nr,
    )
    .unwrap();
    r.track(
        &row("X", None, None, None, "T", Some("later"), Some(7)),
        &mut nr,
    )
    .unwrap();
    let d = r.take_delta();
    assert_eq!(d.track_fills.len(), 1);
    let (tid, mbid, dur) = &d.track_fills[0];
    assert_eq!((*tid, mbid.as_deref(), *dur), (t, Some("tm"), None));
    assert_eq!(id, 1);
}

/// A known track's row may bring the first mbid of its artist or album; that reaches the
/// artist and album rows even though the track lookup alone found the row's track.
#[test]
fn known_track_rows_fill_artist_and_album() {
    let mut r = Registry::new();
    let mut nr = NoResolver;
    let t = r
        .track(&row("A", None, Some("L"), None, "T", None, None), &mut nr)
        .unwrap();
    // another track of the same artist brings the artist's mbid first
    r.track(&row("A", Some("am1"), None, None, "U", None, None), &mut nr)
        .unwrap();
    let again = r
        .track(
            &row("A", Some("am2"), Some("L"), Some("lm"), "T", None, None),
            &mut nr,
        )
        .unwrap();
    assert_eq!(again, t);
    r.track(
        &row("A", Some("am3"), Some("L"), Some("lm2"), "T", None, None),
        &mut nr,
    )
    .unwrap();
    let d = r.take_delta();
    assert_eq!(d.new_rows(), [0, 1, 1, 2]);
    assert_eq!(d.artist_mbids, vec![(1, "am1".into())]);
    assert_eq!(d.album_mbids, vec![(1, "lm".into())]);
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
    ) -> Result<Option<(i64, Option<String>, Option<i64>)>> {
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
