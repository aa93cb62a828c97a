//! Test hooks, switched on by the `SCROBSYNC_FAILPOINT` environment variable, that make a run
//! fail at a chosen moment: the tests use them to prove that a failed or killed run leaves the
//! target as it was. Unset (as for every user), each hook is one environment lookup per window.

use rusqlite::Connection;

/// Refuses a `SCROBSYNC_FAILPOINT` that names no hook: a misspelt one would otherwise switch
/// nothing on, and the test relying on it would pass without the fault it meant to make.
pub fn check_env() -> anyhow::Result<()> {
    use std::env::VarError;
    let fp = match std::env::var("SCROBSYNC_FAILPOINT") {
        Err(VarError::NotPresent) => return Ok(()),
        Err(VarError::NotUnicode(_)) => {
            anyhow::bail!("SCROBSYNC_FAILPOINT is not valid UTF-8; unset it (it is a test hook)")
        }
        Ok(fp) => fp,
    };
    if !is_known(&fp) {
        anyhow::bail!(
            "SCROBSYNC_FAILPOINT={fp:?} is not a failpoint this build knows; unset it (it is a test hook)"
        );
    }
    if fp.starts_with("pause-after-windows=")
        && std::env::var_os("SCROBSYNC_FAILPOINT_FILE").is_none()
    {
        anyhow::bail!(
            "SCROBSYNC_FAILPOINT={fp:?} needs SCROBSYNC_FAILPOINT_FILE (the file it waits on)"
        );
    }
    Ok(())
}

/// Whether `fp` is one of the hooks below, spelt exactly as they read it (window numbers count
/// from 1, so 0 would never fire).
fn is_known(fp: &str) -> bool {
    let number = |s: &str| s.parse::<usize>().is_ok_and(|n| n >= 1);
    if let Some(list) = fp.strip_prefix("pause-after-windows=") {
        return list.split(',').all(number);
    }
    if let Some(rest) = fp.strip_prefix("damage-window=") {
        return rest.split_once(':').is_some_and(|(n, kind)| {
            number(n) && ["lose-facts", "dangling-key", "lose-track", "swap-keys"].contains(&kind)
        });
    }
    if let Some(stage) = fp
        .strip_prefix("abort-at=")
        .or_else(|| fp.strip_prefix("flush-and-abort-at="))
    {
        return STAGES.contains(&stage);
    }
    [
        "abort-after-windows=",
        "flush-and-abort-in-index=",
        "flush-and-abort-after-windows=",
        "reader-panic-after-windows=",
    ]
    .iter()
    .any(|p| fp.strip_prefix(p).is_some_and(number))
}

/// The moments of a load's finish that `abort-at=` and `flush-and-abort-at=` name.
const STAGES: [&str; 3] = ["finishing", "checks", "summaries"];

/// `abort-at=STAGE` aborts the process (a kill) when a load's finish reaches STAGE: `finishing`
/// (the data committed), `checks` (checked, no index built).
pub fn at(stage: &str) {
    if std::env::var("SCROBSYNC_FAILPOINT").ok().as_deref() == Some(&format!("abort-at={stage}")) {
        tracing::warn!("failpoint: aborting at {stage}");
        std::process::abort();
    }
}

/// `flush-and-abort-at=STAGE`, called inside a transaction of a load's finish (`summaries`):
/// writes its pages into the file and aborts, as [`in_transaction`] does.
pub fn in_transaction_at(stage: &str, conn: &Connection) {
    if std::env::var("SCROBSYNC_FAILPOINT").ok().as_deref()
        == Some(&format!("flush-and-abort-at={stage}"))
    {
        tracing::warn!("failpoint: flushing and aborting at {stage}");
        let _ = conn.cache_flush();
        std::process::abort();
    }
}

/// `flush-and-abort-in-index=N`: inside the transaction that builds a load's N-th index,
/// writes its pages into the file and aborts (a kill during the index build).
pub fn in_index(n: usize, conn: &Connection) {
    if value("flush-and-abort-in-index=") == Some(n) {
        tracing::warn!("failpoint: flushing and aborting while building index {n}");
        let _ = conn.cache_flush();
        std::process::abort();
    }
}

fn value(prefix: &str) -> Option<usize> {
    std::env::var("SCROBSYNC_FAILPOINT")
        .ok()?
        .strip_prefix(prefix)?
        .parse()
        .ok()
}

/// `abort-after-windows=N` aborts the process after the N-th window (a kill): a sync calls it
/// inside its one transaction, a backfill after the window's own commit.
pub fn after_window(written: usize) {
    if value("abort-after-windows=") == Some(written) {
        tracing::warn!("failpoint: aborting after window {written}");
        std::process::abort();
    }
}

/// `flush-and-abort-after-windows=N`, called inside the transaction that wrote the N-th window:
/// writes the transaction's pages into the database file, for which SQLite first syncs a valid
/// journal header, then aborts. That is the state a kill in the middle of a commit leaves: a
/// hot journal beside a half-written file.
pub fn in_transaction(written: usize, conn: &Connection) {
    if value("flush-and-abort-after-windows=") == Some(written) {
        tracing::warn!("failpoint: flushing and aborting after window {written}");
        let _ = conn.cache_flush();
        std::process::abort();
    }
}

/// What `damage-window=N:KIND` does to the N-th window a full load writes: the faults the
/// load's default checks must catch (a writer or normaliser bug, simulated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// `lose-facts`: the window's facts are counted as written but never inserted.
    LoseFacts,
    /// `dangling-key`: a fact points at a track key that was never handed out.
    DanglingKey,
    /// `lose-track`: the window's last new track row is admitted but never inserted.
    LoseTrack,
    /// `swap-keys`: the window's facts are admitted, then written with their user and track
    /// keys in each other's column (a binding mistake).
    SwapKeys,
}

/// The damage planned for the `written`-th window, if any.
pub fn damage(written: usize) -> Option<Damage> {
    let fp = std::env::var("SCROBSYNC_FAILPOINT").ok()?;
    let (n, kind) = fp.strip_prefix("damage-window=")?.split_once(':')?;
    if n.parse() != Ok(written) {
        return None;
    }
    let d = match kind {
        "lose-facts" => Damage::LoseFacts,
        "dangling-key" => Damage::DanglingKey,
        "lose-track" => Damage::LoseTrack,
        "swap-keys" => Damage::SwapKeys,
        _ => return None,
    };
    tracing::warn!("failpoint: damaging window {written} ({kind})");
    Some(d)
}

/// `reader-panic-after-windows=N`: the reader thread panics after it handed on N windows, to
/// prove that a crashed reader fails the run instead of ending it early with fewer rows.
pub fn reader_panic(sent: usize) {
    if value("reader-panic-after-windows=") == Some(sent) {
        panic!("failpoint: the reader panics after window {sent}");
    }
}

/// `pause-after-windows=N[,M…]` with `SCROBSYNC_FAILPOINT_FILE=PATH`: after the N-th window
/// (or source query) is read, writes PATH and waits until the test removes it (at most a
/// minute) — the moment a test cuts the run's connections to prove that the run survives.
pub fn pause(done: usize) {
    let Ok(fp) = std::env::var("SCROBSYNC_FAILPOINT") else {
        return;
    };
    let Some(list) = fp.strip_prefix("pause-after-windows=") else {
        return;
    };
    if !list.split(',').any(|n| n.parse() == Ok(done)) {
        return;
    }
    let Ok(path) = std::env::var("SCROBSYNC_FAILPOINT_FILE") else {
        return;
    };
    tracing::warn!("failpoint: paused after window {done}");
    if std::fs::write(&path, done.to_string()).is_err() {
        return;
    }
    let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::path::Path::new(&path).exists() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::is_known;

    #[test]
    fn only_well_formed_hooks_are_known() {
        for ok in [
            "abort-after-windows=3",
            "flush-and-abort-after-windows=1",
            "reader-panic-after-windows=2",
            "pause-after-windows=1,4",
            "damage-window=2:swap-keys",
            "abort-at=checks",
            "flush-and-abort-at=summaries",
            "flush-and-abort-in-index=2",
        ] {
            assert!(is_known(ok), "{ok}");
        }
        for bad in [
            "",
            "abort-after-window=3",
            "abort-after-windows=x",
            "pause-after-windows=1,,2",
            "damage-window=2",
            "damage-window=2:lose-everything",
            "damage-window=two:lose-facts",
            "abort-after-windows=3 ",
            "damage-window= 2:lose-facts",
            "pause-after-windows=1, 2",
            "abort-after-windows=0",
            "abort-at=nowhere",
            "flush-and-abort-in-index=0",
        ] {
            assert!(!is_known(bad), "{bad}");
        }
    }
}
