//! CPU time (user + system), for the stage figures `load`, `sync` and `bench` report beside
//! wall time: on 2 cores a stage's CPU says what it costs the machine, which its wall time,
//! overlapped with the other stages', does not.

use std::time::Duration;

/// A stopwatch of CPU time: of the calling thread ([`Clock::thread`]) for stages that overlap
/// others on threads of their own, or of the whole process ([`Clock::process`]) for stages
/// that run alone (their helper threads, such as SQLite's sorter, count too).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    id: libc::clockid_t,
    start: Duration,
}

impl Clock {
    pub fn thread() -> Self {
        Self::start(libc::CLOCK_THREAD_CPUTIME_ID)
    }

    pub fn process() -> Self {
        Self::start(libc::CLOCK_PROCESS_CPUTIME_ID)
    }

    fn start(id: libc::clockid_t) -> Self {
        Self {
            id,
            start: read(id),
        }
    }

    /// CPU seconds since the clock started.
    pub fn seconds(&self) -> f64 {
        read(self.id).saturating_sub(self.start).as_secs_f64()
    }
}

/// The CPU time a clock shows now (zero where it cannot be read).
fn read(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// CPU seconds (user + system) in a `rusage`, e.g. a child's from `wait4`.
pub fn of_usage(u: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_thread_shows_on_both_clocks_and_a_sleeping_one_on_neither() {
        let (thread, process) = (Clock::thread(), Clock::process());
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(200) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread.seconds();
        assert!(busy > 0.1, "thread CPU {busy}");
        assert!(process.seconds() >= busy);
        let idle = Clock::thread();
        std::thread::sleep(Duration::from_millis(200));
        assert!(idle.seconds() < 0.05, "sleeping used {}", idle.seconds());
    }
}
