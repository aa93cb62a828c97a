//! Retries of transient source faults, with exponential backoff and jitter.
//!
//! What is transient is decided where the error is made (`source::conn::SourceError`): a
//! connection refused, reset or closed, the server shutting down or starting, too many
//! connections, a serialization failure or deadlock. Everything else — syntax, permissions, a
//! missing table, bad data, `infinity`, NULL or repeated ids, a full disk — fails at once.

use crate::progress::Progress;
use crate::source::conn::is_transient;
use anyhow::Result;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// How often a failed step is tried again (`--retries`; 0 turns retrying off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { retries: 5 }
    }
}

/// Retries done by this process so far (for the run's summary).
static RETRIES: AtomicU64 = AtomicU64::new(0);

pub fn count() -> u64 {
    RETRIES.load(Ordering::SeqCst)
}

/// The wait before retry `n` (1-based): 0.5 s doubling up to 30 s, ±25 % jitter so that
/// parallel readers do not reconnect in lockstep.
pub fn backoff(n: u32) -> Duration {
    let base = (0.5 * 2f64.powi(n.saturating_sub(1).min(16) as i32)).min(30.0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = 0.75 + 0.5 * ((nanos.wrapping_mul(2_654_435_761) >> 8) % 1000) as f64 / 1000.0;
    Duration::from_secs_f64(base * jitter)
}

/// Runs `attempt` until it succeeds, fails with an error that is not transient, or has failed
/// `policy.retries + 1` times. Every retry is a warning naming the cause, the attempt and the
/// wait, and shows on the progress bar. The wait ends early when the run is interrupted or
/// `stop` is set (the consumer is gone).
pub fn with_retries<T>(
    policy: RetryPolicy,
    what: &str,
    progress: &dyn Progress,
    stop: Option<&AtomicBool>,
    mut attempt: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut n = 0u32;
    loop {
        match attempt() {
            Ok(v) => {
                if n > 0 {
                    progress.retrying(None);
                }
                return Ok(v);
            }
            Err(e) if n < policy.retries && is_transient(&e) => {
                n += 1;
                RETRIES.fetch_add(1, Ordering::SeqCst);
                let wait = backoff(n);
                tracing::warn!(
                    "{what} failed ({}); retry {n} of {} in {:.1} s",
                    crate::source::conn::one_line(&format!("{e:#}")),
                    policy.retries,
                    wait.as_secs_f64()
                );
                progress.retrying(Some(&format!(
                    "retrying {what} ({n} of {})",
                    policy.retries
                )));
                sleep(wait, stop)?;
            }
            Err(e) if n > 0 => {
                progress.retrying(None);
                return Err(e.context(format!(
                    "{what} failed after {n} {}",
                    if n == 1 { "retry" } else { "retries" }
                )));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps `wait` in small steps, ending early (with an error) on a signal or `stop`.
fn sleep(wait: Duration, stop: Option<&AtomicBool>) -> Result<()> {
    let end = std::time::Instant::now() + wait;
    loop {
        crate::cancel::check()?;
        if stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
            anyhow::bail!("stopped");
        }
        let now = std::time::Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_with_jitter() {
        for (n, base) in [(1, 0.5), (2, 1.0), (3, 2.0), (7, 30.0), (40, 30.0)] {
            let w = backoff(n).as_secs_f64();
            assert!(
                w >= base * 0.75 - 1e-9 && w <= base * 1.25 + 1e-9,
                "{n}: {w}"
            );
        }
    }

    #[test]
    fn only_transient_errors_are_retried() {
        let p = crate::progress::NoProgress;
        let policy = RetryPolicy { retries: 3 };
        let mut calls = 0;
        let r: Result<()> = with_retries(policy, "x", &p, None, || {
            calls += 1;
            Err(anyhow::anyhow!("syntax error"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1, "not transient: tried once");
    }
}
