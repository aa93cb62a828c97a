//! Ctrl-C and SIGTERM: the first one asks the running job to stop at the next window boundary,
//! where it cleans up as after any error (a full load removes its temporary file, a sync or a
//! backfill window rolls back); a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The error a job returns when it stopped because it was asked to.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal; the target keeps its last committed state (a load leaves the old file; a sync continues from its mark next time; a backfill continues with --resume)")
    }
}

impl std::error::Error for Interrupted {}

extern "C" fn on_signal(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handlers (called once by the CLI), and a watcher thread that interrupts the
/// SQLite statements of registered connections once a signal arrived: an index build or a long
/// check then stops within a moment instead of running to its end.
pub fn install() {
    // SAFETY: the handler only touches an atomic and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let _ = std::thread::Builder::new()
        .name("scrobsync-signal".into())
        .spawn(|| loop {
            if requested() {
                // Once each: the clean-up after the interrupt (a ROLLBACK) must not be cut too.
                if let Ok(mut handles) = SQLITE.lock() {
                    for h in handles.drain(..) {
                        h.interrupt();
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        });
}

/// SQLite connections whose statements a signal interrupts.
static SQLITE: std::sync::Mutex<Vec<rusqlite::InterruptHandle>> = std::sync::Mutex::new(Vec::new());

/// Lets a signal interrupt `conn`'s statements (a handle of a closed connection does nothing).
pub fn interrupt_on_signal(conn: &rusqlite::Connection) {
    if let Ok(mut handles) = SQLITE.lock() {
        handles.push(conn.get_interrupt_handle());
    }
}

/// Whether a signal asked the job to stop.
pub fn requested() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with [`Interrupted`] once a signal arrived.
pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(Interrupted.into());
    }
    Ok(())
}
