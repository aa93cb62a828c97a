//! Criterion benches of the two in-process stages, on generated in-memory data, so that
//! regressions show without a database:
//!   cargo bench --bench pipeline
//! `read`: a binary COPY stream (as PostgreSQL sends it) → Arrow batch, by the default reader.
//! `normalize`: Arrow batch (as the reader decoded it) → polars frame → fact frame with
//! surrogate keys (fresh and warm registry).
//! `write`: a normalised window (new dimension rows + facts) → SQLite through reused 100-row INSERTs.
//! `check`: the key admission of a normalised window (what the default check proves per window).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scrobsync::fixtures::copy::binary_copy_stream;
use scrobsync::fixtures::{Generator, SeedOptions, SeedRow};
use scrobsync::normalize::{window_frame, Normalizer};
use scrobsync::sink::Writer;

const ROWS: u64 = 100_000;

/// The rows as the default reader hands them on: decoded from a binary COPY stream.
fn batch() -> arrow::record_batch::RecordBatch {
    scrobsync::source::copy::decode_canonical(&binary_copy_stream(&rows())).unwrap()
}

fn read(c: &mut Criterion) {
    let stream = binary_copy_stream(&rows());
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(20);
    g.bench_function("100k_rows_copy_decode", |bench| {
        bench.iter(|| scrobsync::source::copy::decode_canonical(&stream).unwrap())
    });
    g.finish();
}

fn rows() -> Vec<SeedRow> {
    Generator::new(
        SeedOptions {
            rows: ROWS,
            users: 50,
            seed: 1,
        },
        0,
    )
    .collect()
}

fn normalize(c: &mut Criterion) {
    let b = batch();
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(20);
    g.bench_function("100k_rows_arrow_to_polars_only", |bench| {
        bench.iter(|| window_frame(vec![b.clone()]).unwrap())
    });
    g.bench_function("100k_rows_fresh_registry", |bench| {
        bench.iter(|| {
            let df = window_frame(vec![b.clone()]).unwrap();
            Normalizer::default().normalize(&df).unwrap()
        })
    });
    let df = window_frame(vec![b.clone()]).unwrap();
    let mut warm = Normalizer::default();
    warm.normalize(&df).unwrap();
    g.bench_function("100k_rows_warm_registry", |bench| {
        bench.iter(|| {
            let df = window_frame(vec![b.clone()]).unwrap();
            warm.normalize(&df).unwrap()
        })
    });
    g.finish();
}

fn write(c: &mut Criterion) {
    let df = window_frame(vec![batch()]).unwrap();
    let out = Normalizer::default()
        .window(&df, &mut scrobsync::normalize::registry::NoResolver)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("write");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(20);
    let mut i = 0;
    g.bench_function("100k_rows_window", |bench| {
        bench.iter(|| {
            i += 1;
            let path = dir.path().join(format!("b{i}.sqlite"));
            let mut w = Writer::create(&path).unwrap();
            w.write_window(&out).unwrap();
            drop(w);
            std::fs::remove_file(&path).unwrap();
        })
    });
    g.finish();
}

fn check(c: &mut Criterion) {
    let df = window_frame(vec![batch()]).unwrap();
    let out = Normalizer::default()
        .window(&df, &mut scrobsync::normalize::registry::NoResolver)
        .unwrap();
    let mut g = c.benchmark_group("check");
    g.throughput(Throughput::Elements(ROWS));
    g.sample_size(50);
    g.bench_function("100k_rows_admit_keys", |bench| {
        bench.iter(|| {
            let mut bounds = scrobsync::sink::check::KeyBounds::default();
            bounds.admit(&out).unwrap();
            bounds
        })
    });
    // What the default check reads back of each window right after writing it.
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    conn.execute_batch(scrobsync::sink::schema::TABLES).unwrap();
    scrobsync::sink::writer::write_window(&conn, &out, false).unwrap();
    g.bench_function("100k_rows_read_back_facts", |bench| {
        bench.iter(|| scrobsync::sink::check::check_written_facts(&conn, &out.facts).unwrap())
    });
    g.finish();
}

criterion_group!(benches, read, normalize, write, check);
criterion_main!(benches);
