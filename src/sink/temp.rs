//! The temporary file a full load writes beside its target, and its atomic installation:
//! the target is replaced by a rename under the old target's lock (see
//! [`super::target::lock_for_replace`]), or the temporary file is removed.

use super::resume::LoadProgress;
use super::target::{check_replaceable, lock_for_replace, side_file, Existing, SIDE_FILES};
use anyhow::{anyhow, bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// A temporary file beside the target, removed on drop unless it was renamed into place.
pub struct TempTarget {
    path: PathBuf,
    /// The file the target path names (symbolic links followed).
    target: PathBuf,
    /// What was at `target` when the load started.
    existing: Existing,
    installed: bool,
    /// Left in place when dropped: an interrupted load that `load --resume` continues.
    kept: bool,
}

/// The file a target path finally names. Symbolic links are followed (dangling ones too), so a
/// load replaces the file a link points to and the link keeps pointing there.
fn resolve_links(path: &Path) -> Result<PathBuf> {
    let mut p = path.to_path_buf();
    for _ in 0..40 {
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let dest = fs::read_link(&p)
                    .with_context(|| format!("cannot read the symbolic link {}", p.display()))?;
                p = match p.parent() {
                    Some(dir) if dest.is_relative() => dir.join(dest),
                    _ => dest,
                };
            }
            _ => return Ok(p),
        }
    }
    bail!(
        "target {} is a loop of symbolic links; give a file path",
        path.display()
    )
}

impl TempTarget {
    /// A new empty temporary file beside the target `given` names (links followed), after
    /// checking that the target may be replaced (`force`) and removing stale ones.
    pub fn new(given: &Path, force: bool) -> Result<Self> {
        let (target, existing, dir, name) = Self::prepare(given, force)?;
        for (path, p) in resumable(&dir, &name) {
            tracing::warn!(
                "starting over: the interrupted load in {} ({}) is removed; `scrobsync load --resume` would have continued it",
                path.display(),
                p.describe()
            );
        }
        remove_stale_temp_files(&dir, &name);
        let t = Self::ours(target, existing, &dir, &name);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&t.path)
            .map_err(|e| {
                anyhow!(
                    "cannot write in target folder {}: {}; choose a writable folder",
                    dir.display(),
                    e
                )
            })?;
        Ok(t)
    }

    /// Takes over the temporary file of an interrupted load of the target (see
    /// [`super::resume`]), with its progress record; the newest one if there are several.
    pub fn resume(given: &Path, force: bool) -> Result<(Self, LoadProgress)> {
        let (target, existing, dir, name) = Self::prepare(given, force)?;
        let mut found = resumable(&dir, &name);
        found.sort_by_key(|(p, _)| fs::metadata(p).and_then(|m| m.modified()).ok());
        let Some((old, progress)) = found.pop() else {
            bail!(
                "no interrupted load of {} to resume (none left a temporary file beside it); run the load without --resume",
                target.display()
            );
        };
        let t = Self::ours(target, existing, &dir, &name);
        // Read through SQLite above, so a hot journal was rolled back: the side files are done.
        fs::rename(&old, &t.path).with_context(|| {
            format!(
                "cannot take over {} (another load may be resuming it)",
                old.display()
            )
        })?;
        for suffix in SIDE_FILES {
            let _ = fs::remove_file(side_file(&old, suffix));
        }
        Ok((t, progress))
    }

    /// This process's temporary file for target file `name` in `dir`, with nothing there yet.
    fn ours(target: PathBuf, existing: Existing, dir: &Path, name: &str) -> Self {
        let t = Self {
            path: dir.join(temp_name(name, std::process::id())),
            target,
            existing,
            installed: false,
            kept: false,
        };
        t.remove_files();
        t
    }

    /// Leaves the file in place for `load --resume` (an interrupted load).
    pub fn keep(&mut self) {
        self.kept = true;
    }

    /// Checks the target path and what is there: (file it names, what is there, folder, file name).
    fn prepare(given: &Path, force: bool) -> Result<(PathBuf, Existing, PathBuf, String)> {
        let target = resolve_links(given)?;
        let target = target.as_path();
        if target.is_dir() {
            bail!(
                "target {} is a folder; give a file path such as {}/scrobbles.sqlite",
                target.display(),
                target.display()
            );
        }
        let name = target
            .file_name()
            .ok_or_else(|| {
                anyhow!(
                    "target {} has no file name; give a file path",
                    target.display()
                )
            })?
            .to_string_lossy()
            .into_owned();
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.exists() {
            bail!(
                "target folder {} does not exist; create it first (mkdir -p {})",
                dir.display(),
                dir.display()
            );
        }
        if !dir.is_dir() {
            bail!(
                "target folder {} is not a folder; choose another target path",
                dir.display()
            );
        }
        let existing = check_replaceable(target, force)?;
        Ok((target.to_path_buf(), existing, dir, name))
    }

    /// The temporary file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remove_files(&self) {
        let _ = fs::remove_file(&self.path);
        for suffix in SIDE_FILES {
            let _ = fs::remove_file(side_file(&self.path, suffix));
        }
    }

    /// Makes the file durable and atomically replaces the target with it, under the old
    /// target's exclusive lock (see [`lock_for_replace`]).
    pub fn install(mut self) -> Result<()> {
        fs::File::open(&self.path)
            .and_then(|f| f.sync_all())
            .context("syncing the new target to disk")?;
        // The file was closed after its last commit: its journal holds nothing to play back.
        for suffix in SIDE_FILES {
            let _ = fs::remove_file(side_file(&self.path, suffix));
        }
        let target = self.target.clone();
        // What is there now, not what was there at the start: the target may have been
        // created, replaced or removed meanwhile.
        let existing = match self.existing {
            Existing::Forced { .. } => check_replaceable(&target, true)?,
            _ => check_replaceable(&target, false)?,
        };
        let lock = lock_for_replace(&target, existing)?;
        fs::rename(&self.path, &target)
            .with_context(|| format!("cannot replace {}", target.display()))?;
        self.installed = true;
        drop(lock);
        if let Some(dir) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// The name of the temporary file a load by process `pid` writes beside target file `name`.
fn temp_name(name: &str, pid: u32) -> String {
    format!(".{name}.scrobsync-{pid}.tmp")
}

/// Temporary files of loads of target file `name` in `dir` (side files included) whose process
/// is gone (a kill -9 or a power cut runs no clean-up), with their paths.
fn stale_temp_files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let prefix = format!(".{name}.scrobsync-");
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            let pid = file
                .strip_prefix(&prefix)
                .and_then(|rest| rest.split('.').next())
                .and_then(|p| p.parse::<u32>().ok());
            pid.is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .map(|entry| entry.path())
        .collect();
    out.sort();
    out
}

/// Temporary files of killed loads of target file `name` in `dir` that can be resumed, with
/// their progress records.
fn resumable(dir: &Path, name: &str) -> Vec<(PathBuf, LoadProgress)> {
    stale_temp_files(dir, name)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .filter_map(|p| match super::resume::inspect(&p) {
            Ok(Some(progress)) => Some((p, progress)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(file = %p.display(), "not resumable: {e:#}");
                None
            }
        })
        .collect()
}

/// Interrupted loads of the target at `path` that `load --resume` continues (for `status`):
/// each temporary file with its progress.
pub fn resumable_loads(path: &Path) -> Vec<(String, LoadProgress)> {
    // Beside the file a link names, where a load writes.
    let path = resolve_links(path).unwrap_or_else(|_| path.to_path_buf());
    split_path(&path)
        .map(|(dir, name)| resumable(&dir, &name))
        .unwrap_or_default()
        .into_iter()
        .map(|(p, r)| (p.display().to_string(), r))
        .collect()
}

/// Removes temporary files that killed loads of the same target left behind, so they do not
/// pile up.
fn remove_stale_temp_files(dir: &Path, name: &str) {
    for path in stale_temp_files(dir, name) {
        tracing::info!(file = %path.display(), "removing a temporary file left by a killed run");
        let _ = fs::remove_file(path);
    }
}

/// The folder and file name of a target path (`.` for a bare name).
fn split_path(path: &Path) -> Option<(PathBuf, String)> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Some((dir, name))
}

/// Temporary files that killed loads of the target at `path` left beside it (for `status`).
pub fn leftover_temp_files(path: &Path) -> Vec<String> {
    let path = resolve_links(path).unwrap_or_else(|_| path.to_path_buf());
    split_path(&path)
        .map(|(dir, name)| stale_temp_files(&dir, &name))
        .unwrap_or_default()
        .into_iter()
        .map(|p| p.display().to_string())
        .collect()
}

impl Drop for TempTarget {
    fn drop(&mut self) {
        if !self.installed && !self.kept {
            self.remove_files();
        }
    }
}
