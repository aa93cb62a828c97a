//! The query runner: id slices of the source read by a few workers at once, each on a
//! connection of its own, a slice read again from scratch after a transient fault. `verify`
//! streams its hashes through it (where the window driver hands Arrow batches to a sink, this
//! hands each worker's rows to a fold that needs no batches).

use super::{failpoint, retry::RetryPolicy};
use crate::progress::Progress;
use crate::source::query::Slice;
use anyhow::Result;
use std::sync::atomic::{AtomicUsize, Ordering};

/// How the slices of one run are read.
pub struct Queries<'a> {
    /// Workers at most (fewer when there are fewer slices).
    pub workers: usize,
    pub retry: RetryPolicy,
    pub progress: &'a dyn Progress,
    /// Slices done over every run that shares it (the failpoints count them).
    pub done: &'a AtomicUsize,
}

impl Queries<'_> {
    /// Reads every slice: a worker takes the next slice, `read` streams it on the worker's
    /// connection (made by `connect`, again after any failure) into a result, and `fold`
    /// adds the result to the worker's accumulator (made by `start`) once the slice is read
    /// whole. `read` may also update the accumulator, for what a second read of the slice
    /// cannot count twice. The accumulators come back, one per worker, or the first error.
    pub fn each_slice<C, R, A: Send>(
        &self,
        slices: &[Slice],
        connect: impl Fn() -> Result<C> + Sync,
        start: impl Fn() -> A + Sync,
        read: impl Fn(&mut C, &Slice, &mut A) -> Result<R> + Sync,
        fold: impl Fn(&mut A, R) + Sync,
    ) -> Result<Vec<A>> {
        let next = AtomicUsize::new(0);
        let workers = self.workers.max(1).min(slices.len());
        super::parallel::workers(workers, |_| -> Result<A> {
            let mut conn: Option<C> = None;
            let mut acc = start();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(slice) = slices.get(i) else {
                    return Ok(acc);
                };
                let what = format!("reading ids {} to {} of the source", slice.lo, slice.hi);
                let got = super::step(self.retry, &what, self.progress, || {
                    let r = (|| {
                        if conn.is_none() {
                            conn = Some(connect()?);
                        }
                        let c = conn.as_mut().expect("connected above");
                        read(c, slice, &mut acc)
                    })();
                    if r.is_err() {
                        conn = None;
                    }
                    r
                })?;
                fold(&mut acc, got);
                self.progress.advance(1);
                failpoint::pause(self.done.fetch_add(1, Ordering::SeqCst) + 1);
            }
        })
        .into_iter()
        .collect()
    }
}
