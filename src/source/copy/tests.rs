use super::*;

#[test]
fn uuid_formatting_matches_postgres() {
    let b: [u8; 16] = [
        0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
        0x11,
    ];
    let mut s = [0u8; 36];
    format_uuid(&b, &mut s);
    assert_eq!(
        std::str::from_utf8(&s).unwrap(),
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    );
}

/// A tuple split at every possible byte boundary decodes to the same row.
#[test]
fn decodes_units_split_anywhere() {
    let names: Vec<String> = ["id", "name", "at", "ok"].map(String::from).to_vec();
    let kinds = [Kind::I64, Kind::Text, Kind::TimestampTz, Kind::Bool];
    let mut stream = SIGNATURE.to_vec();
    stream.extend_from_slice(&0i32.to_be_bytes());
    stream.extend_from_slice(&0i32.to_be_bytes());
    for (id, name, at) in [(7i64, Some("Sigur Rós"), -1i64), (9, None, i64::MAX)] {
        stream.extend_from_slice(&4i16.to_be_bytes());
        stream.extend_from_slice(&8i32.to_be_bytes());
        stream.extend_from_slice(&id.to_be_bytes());
        match name {
            Some(n) => {
                stream.extend_from_slice(&(n.len() as i32).to_be_bytes());
                stream.extend_from_slice(n.as_bytes());
            }
            None => stream.extend_from_slice(&(-1i32).to_be_bytes()),
        }
        stream.extend_from_slice(&8i32.to_be_bytes());
        stream.extend_from_slice(&at.to_be_bytes());
        stream.extend_from_slice(&1i32.to_be_bytes());
        stream.push(1);
    }
    stream.extend_from_slice(&(-1i16).to_be_bytes());
    for cut in 0..stream.len() {
        let mut dec = Decoder::new(&names, &kinds, 4);
        let used = dec.feed(&stream[..cut]).unwrap();
        let mut rest = stream[used..cut].to_vec();
        rest.extend_from_slice(&stream[cut..]);
        assert_eq!(dec.feed(&rest).unwrap(), rest.len(), "cut at {cut}");
        let batch = dec.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        let df = crate::normalize::frames::batch_to_frame(&batch).unwrap();
        let ids: Vec<_> = df.column("id").unwrap().i64().unwrap().iter().collect();
        assert_eq!(ids, vec![Some(7), Some(9)]);
        let names: Vec<_> = df.column("name").unwrap().str().unwrap().iter().collect();
        assert_eq!(names, vec![Some("Sigur Rós"), None]);
        let at: Vec<_> = df.column("at").unwrap().i64().unwrap().iter().collect();
        assert_eq!(
            at,
            vec![Some(PG_EPOCH_US - 1), Some(infinity_sentinels().0)]
        );
    }
}

/// The generator's nasty rows, encoded as PostgreSQL sends them, decode to exactly the
/// batch the generator builds directly (uuids as PostgreSQL prints them, NULLs, text).
#[test]
fn decodes_generated_rows_exactly() {
    use crate::fixtures::copy::{binary_copy_stream, record_batch};
    use crate::fixtures::{Generator, SeedOptions};
    let rows: Vec<_> = Generator::new(
        SeedOptions {
            rows: 20_000,
            users: 30,
            seed: 11,
        },
        0,
    )
    .collect();
    let got = decode_canonical(&binary_copy_stream(&rows)).unwrap();
    let want = record_batch(&rows);
    assert_eq!(got.num_rows(), 20_000);
    for (i, name) in crate::source::COLUMNS.iter().enumerate() {
        assert_eq!(
            got.column(i).as_ref(),
            want.column(i).as_ref(),
            "column {name}"
        );
    }
    let mut extra = binary_copy_stream(&rows[..1]);
    extra.push(0);
    assert!(decode_canonical(&extra).is_err());
}

#[test]
fn a_stream_without_trailer_is_an_error() {
    let names = vec!["id".to_string()];
    let mut dec = Decoder::new(&names, &[Kind::I64], 1);
    let mut stream = SIGNATURE.to_vec();
    stream.extend_from_slice(&[0; 8]);
    assert_eq!(dec.feed(&stream).unwrap(), stream.len());
    assert!(dec.finish().is_err());
}
