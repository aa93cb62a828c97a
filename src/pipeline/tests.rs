//! The driver and its sink policies without PostgreSQL: a fake reader hands out windows of
//! known sizes, fails transiently or for good, or panics; the sinks write into in-memory
//! SQLite.

use super::commit::{into_transaction_from, per_window_from, Follow, Written};
use super::retry::RetryPolicy;
use super::*;
use crate::progress::NoProgress;
use crate::sink::Transact;
use crate::source::conn::SourceError;
use crate::source::query::{Filter, Slice};
use arrow::array::Int64Array;
use arrow::datatypes::{DataType, Field, Schema};
use rusqlite::Connection;
use std::sync::Arc;

/// What the fake reader does on an attempt to read a window.
#[derive(Clone, Copy)]
enum Step {
    Rows(i64),
    Transient,
    Fatal,
    Panic,
}

/// A reader that follows a script of steps (one per attempt, in order) and hands out windows
/// of one Int64 column `scrobble_id`, numbered from `first_id` upwards.
struct Fake {
    script: Vec<Step>,
    next: usize,
    first_id: i64,
    resets: Arc<AtomicUsize>,
}

use std::sync::atomic::AtomicUsize;

fn fake(script: &[Step]) -> (Fake, Arc<AtomicUsize>) {
    let resets = Arc::new(AtomicUsize::new(0));
    (
        Fake {
            script: script.to_vec(),
            next: 0,
            first_id: 1,
            resets: resets.clone(),
        },
        resets,
    )
}

fn batch(ids: impl IntoIterator<Item = i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "scrobble_id",
        DataType::Int64,
        false,
    )]));
    let col = Int64Array::from_iter_values(ids);
    RecordBatch::try_new(schema, vec![Arc::new(col)]).unwrap()
}

impl WindowReader for Fake {
    fn read(&mut self, spec: &WindowSpec) -> Result<Vec<RecordBatch>> {
        if let Some(ids) = &spec.filter.ids {
            // a follow read: the ids asked for, all still in the source
            return Ok(vec![batch(ids.iter().copied())]);
        }
        let step = self.script.get(self.next).copied().unwrap_or(Step::Fatal);
        self.next += 1;
        match step {
            Step::Rows(n) => {
                let first = self.first_id;
                self.first_id += n;
                // two batches, to count across them
                let half = first + n / 2;
                Ok(vec![batch(first..half), batch(half..first + n)])
            }
            Step::Transient => Err(SourceError::stalled("the server went away".into()).into()),
            Step::Fatal => Err(anyhow!("permission denied for table scrobbles")),
            Step::Panic => panic!("the fake reader panics"),
        }
    }
    fn reset(&mut self) {
        self.resets.fetch_add(1, Ordering::SeqCst);
    }
}

fn windows(n: usize) -> Vec<WindowSpec> {
    (0..n)
        .map(|_| WindowSpec {
            slices: vec![Slice::ALL],
            filter: Filter::default(),
        })
        .collect()
}

const ONE_RETRY: RetryPolicy = RetryPolicy { retries: 1 };

/// Drives `n` windows of the fake reader following `script` into `sink`, without a stage.
fn run_fake(script: &[Step], n: usize, sink: impl FnMut(Window) -> Result<u64>) -> Result<u64> {
    let (reader, _) = fake(script);
    drive(move || reader, ONE_RETRY, windows(n), &NoProgress, Ok, sink)
}

fn ids(w: &Window) -> Vec<i64> {
    batch_ids(&w.batches)
}

fn batch_ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

#[test]
fn windows_reach_the_sink_in_order_whole_and_counted() {
    let (reader, _) = fake(&[Step::Rows(5), Step::Rows(0), Step::Rows(7)]);
    let mut seen = Vec::new();
    let read = drive(
        move || reader,
        ONE_RETRY,
        windows(3),
        &NoProgress,
        |w| Ok((w.index, ids(&w))),
        |(index, ids)| {
            seen.push((index, ids.len()));
            Ok(ids.len() as u64)
        },
    )
    .unwrap();
    assert_eq!(read, 12);
    assert_eq!(seen, [(0, 5), (1, 0), (2, 7)]);
}

#[test]
fn a_transient_fault_rereads_the_window_whole_on_a_fresh_connection() {
    let (reader, resets) = fake(&[Step::Rows(3), Step::Transient, Step::Rows(4)]);
    let mut got = Vec::new();
    let read = drive(
        move || reader,
        ONE_RETRY,
        windows(2),
        &NoProgress,
        Ok,
        |w| {
            got.push(ids(&w));
            Ok(w.rows)
        },
    )
    .unwrap();
    assert_eq!(read, 7);
    assert_eq!(got, [vec![1, 2, 3], vec![4, 5, 6, 7]]);
    assert_eq!(resets.load(Ordering::SeqCst), 1);
}

#[test]
fn faults_beyond_the_retries_or_not_transient_fail_the_run_and_stop_the_sink() {
    for (script, want) in [
        (
            vec![Step::Rows(2), Step::Transient, Step::Transient],
            "after 1 retry",
        ),
        (vec![Step::Rows(2), Step::Fatal], "permission denied"),
    ] {
        let mut sunk = 0;
        let e = run_fake(&script, 3, |w| {
            sunk += 1;
            Ok(w.rows)
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains(want), "{e:#}");
        assert_eq!(sunk, 1, "only the window read before the fault");
    }
}

#[test]
fn a_panicking_reader_fails_the_run_instead_of_ending_it_short() {
    let e = run_fake(&[Step::Rows(2), Step::Panic], 3, |w| Ok(w.rows)).unwrap_err();
    let text = format!("{e:#}");
    assert!(
        text.contains("PostgreSQL reader thread crashed")
            && text.contains("the fake reader panics"),
        "{text}"
    );
}

#[test]
fn a_sink_error_or_a_stage_error_ends_the_run_with_it() {
    let e = run_fake(&[Step::Rows(2), Step::Rows(2), Step::Rows(2)], 3, |w| {
        if w.index == 1 {
            anyhow::bail!("disk full");
        }
        Ok(w.rows)
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "disk full");
    let (reader, _) = fake(&[Step::Rows(2), Step::Rows(2)]);
    let e = drive(
        move || reader,
        ONE_RETRY,
        windows(2),
        &NoProgress,
        |w| -> Result<Window> { anyhow::bail!("bad value in window {}", w.index + 1) },
        |w| Ok(w.rows),
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "bad value in window 1");
}

#[test]
fn rows_written_must_equal_rows_read() {
    let e = run_fake(&[Step::Rows(4), Step::Rows(4)], 2, |w| {
        Ok(w.rows - u64::from(w.index == 1))
    })
    .unwrap_err();
    assert!(e.to_string().contains("8 rows read but 7 written"), "{e:#}");
}

/// An in-memory target with one table of ids.
fn memory() -> Connection {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY)")
        .unwrap();
    c
}

fn insert(conn: &Connection, ids: &[i64]) -> Result<u64> {
    let mut st = conn.prepare_cached("INSERT INTO t(id) VALUES (?1)")?;
    for id in ids {
        st.execute([id])?;
    }
    Ok(ids.len() as u64)
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn one_transaction_keeps_nothing_of_a_failed_run() {
    let target = memory();
    let (reader, _) = fake(&[Step::Rows(3), Step::Rows(3), Step::Fatal]);
    let r = target.atomically(|conn| {
        into_transaction_from(
            move || reader,
            ONE_RETRY,
            conn,
            windows(3),
            &NoProgress,
            |c, w| insert(c, &ids(&w)),
        )
    });
    assert!(r.is_err());
    assert_eq!(
        count(&target),
        0,
        "the run's windows went with its transaction"
    );
    let (reader, _) = fake(&[Step::Rows(3), Step::Rows(3)]);
    let n = target
        .atomically(|conn| {
            into_transaction_from(
                move || reader,
                ONE_RETRY,
                conn,
                windows(2),
                &NoProgress,
                |c, w| insert(c, &ids(&w)),
            )
        })
        .unwrap();
    assert_eq!((n, count(&target)), (6, 6));
}

#[test]
fn a_transaction_per_window_keeps_the_windows_done_and_checks_followed_rows() {
    let target = memory();
    let (reader, _) = fake(&[Step::Rows(2), Step::Rows(2), Step::Fatal]);
    let (follower, _) = fake(&[]);
    let follow = Follow::new(Box::new(follower), ONE_RETRY, &NoProgress);
    let r = per_window_from(
        move || reader,
        ONE_RETRY,
        follow,
        &target,
        windows(3),
        &NoProgress,
        |c, w, _| {
            Ok(Written {
                rows: insert(c, &ids(&w))?,
                followed: 0,
            })
        },
    );
    assert!(r.is_err());
    assert_eq!(count(&target), 4, "two windows committed before the fault");

    // Rows read through the follower must be written too, or the window is not committed.
    let target = memory();
    let (reader, _) = fake(&[Step::Rows(2), Step::Rows(2)]);
    let (follower, _) = fake(&[]);
    let follow = Follow::new(Box::new(follower), ONE_RETRY, &NoProgress);
    let e = per_window_from(
        move || reader,
        ONE_RETRY,
        follow,
        &target,
        windows(2),
        &NoProgress,
        |c, w, follow| {
            let moved = follow.read_ids(&[100 + w.index as i64 * 10, 101 + w.index as i64 * 10])?;
            let moved_ids = batch_ids(&moved);
            // the second window forgets one of its moved rows
            let keep = if w.index == 1 { 1 } else { 2 };
            Ok(Written {
                rows: insert(c, &ids(&w))?,
                followed: insert(c, &moved_ids[..keep])?,
            })
        },
    )
    .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.starts_with("window 2 failed, and the 1 window before it stayed committed: ")
            && e.contains("window 2 read 2 rows and 2 moved rows, but 2 and 1 were written"),
        "{e}"
    );
    assert_eq!(
        count(&target),
        4,
        "the first window and its moved rows only"
    );
}
