//! Scoped worker threads for the modes: jobs run at once on their own threads, borrowing
//! what the caller holds; results come back in order, and a panic becomes an error.

use anyhow::{anyhow, Result};
use std::thread::ScopedJoinHandle;

fn join<T>(h: ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(anyhow!("a worker thread panicked")))
}

/// Runs `job(0)` … `job(n - 1)` at once, each on its own thread; their results in order.
pub fn workers<T, F>(n: usize, job: F) -> Vec<Result<T>>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
{
    std::thread::scope(|s| {
        let job = &job;
        let handles: Vec<_> = (0..n).map(|i| s.spawn(move || job(i))).collect();
        handles.into_iter().map(join).collect()
    })
}

/// Runs `a` on a thread of its own while `b` runs on this one; both results.
pub fn both<A, B>(
    a: impl FnOnce() -> Result<A> + Send,
    b: impl FnOnce() -> Result<B>,
) -> (Result<A>, Result<B>)
where
    A: Send,
{
    std::thread::scope(|s| {
        let h = s.spawn(a);
        let rb = b();
        (join(h), rb)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_a_panic_is_an_error() {
        let r = workers(4, |i| {
            if i == 2 {
                panic!("worker 2 fails");
            }
            Ok(i * 10)
        });
        assert_eq!(r[0].as_ref().unwrap(), &0);
        assert_eq!(r[3].as_ref().unwrap(), &30);
        assert!(r[2].as_ref().unwrap_err().to_string().contains("panicked"));
        let local = [1, 2, 3];
        let (a, b) = both(|| Ok(local.iter().sum::<i32>()), || Ok(local.len()));
        assert_eq!((a.unwrap(), b.unwrap()), (6, 3));
        let (a, b): (Result<()>, Result<()>) = both(|| panic!("a fails"), || Ok(()));
        assert!(a.is_err() && b.is_ok());
    }
}
