//! Crash-safe writes: a whole directory is written under a temporary name, fsynced, then
//! swapped into place with one atomic rename, so readers see either the old or the new
//! version, never a mix or a half-written file.
//!
//! A process killed in the middle of a write leaves its temporary directory `.NAME.tmp-PID`
//! behind, next to an intact `NAME`; the next write to `NAME` by another process removes the
//! temporary directories of processes that no longer run.
//!
//! Test hook: with `LMLAB_SAVE_PAUSE_MS` set, every directory write sleeps that long at three
//! points: halfway through writing the files (`files`), with the temporary directory complete
//! just before the exchange (`exchange`), and after the exchange, before the previous version is
//! removed (`cleanup`). With `LMLAB_SAVE_PAUSE_MARKER` set too, it first writes
//! `"<write number> <NAME> <point>"` to that file, so a test can kill the process at a known
//! point of a checkpoint save (tests/crash.rs).

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory writes so far in this process (numbers the test hook's markers).
static WRITES: AtomicU64 = AtomicU64::new(0);

/// Writes `files` (name, bytes) as the directory `dir`, replacing any previous one atomically.
pub fn write_dir_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let write_no = WRITES.fetch_add(1, Ordering::Relaxed) + 1;
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create directory {}", parent.display()))?;
    let name = dir.file_name().context("checkpoint path has no final component")?.to_string_lossy().to_string();
    remove_dead_temporaries(parent, &name);
    let tmp: PathBuf = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for (i, (fname, bytes)) in files.iter().enumerate() {
        if i == files.len() / 2 {
            test_pause(write_no, &name, "files");
        }
        let path = tmp.join(fname);
        let mut f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
        f.sync_all()?;
    }
    File::open(&tmp)?.sync_all()?;
    test_pause(write_no, &name, "exchange");
    if dir.exists() {
        exchange(&tmp, dir)?;
        // `tmp` now holds the previous version.
        test_pause(write_no, &name, "cleanup");
        fs::remove_dir_all(&tmp).ok();
    } else {
        fs::rename(&tmp, dir).with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    }
    File::open(parent)?.sync_all()?;
    Ok(())
}

/// Refuses to replace `dir` (as [`write_dir_atomic`] would, removing what it holds) unless it
/// does not exist, or is a directory holding nothing but entries named in `allowed` (files a
/// previous write of the same kind left). Protects a user's directory given by mistake.
pub fn check_replaceable(dir: &Path, allowed: &[&str]) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    anyhow::ensure!(dir.is_dir(), "{} exists and is not a directory", dir.display());
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        anyhow::ensure!(
            allowed.contains(&name.as_ref()),
            "{} already exists and holds {name}, which writing there would delete; give a new or empty directory",
            dir.display()
        );
    }
    Ok(())
}

/// Writes the file `path` atomically: a temporary file in the same directory, fsynced, then
/// renamed over `path`.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().context("file path has no final component")?.to_string_lossy().to_string();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path).with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Removes `.NAME.tmp-PID` directories in `parent` left by processes that have died (killed in
/// the middle of a write). Those of running processes are left alone: they may be writing.
/// Best effort: a leftover that cannot be removed is harmless.
fn remove_dead_temporaries(parent: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)).and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            fs::remove_dir_all(entry.path()).ok();
        }
    }
}

#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return true };
    // SAFETY: signal 0 only checks whether the process exists; nothing is sent.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Without a way to ask, every writer counts as alive and leftovers stay.
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// The test hook described in the module documentation.
fn test_pause(write_no: u64, name: &str, point: &str) {
    let Some(ms) = std::env::var("LMLAB_SAVE_PAUSE_MS").ok().and_then(|v| v.parse::<u64>().ok()) else {
        return;
    };
    if let Some(marker) = std::env::var_os("LMLAB_SAVE_PAUSE_MARKER") {
        // Written whole and renamed, so the test never reads half a marker.
        let _ = write_file_atomic(Path::new(&marker), format!("{write_no} {name} {point}\n").as_bytes());
    }
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// Atomically swaps two directory entries (Linux `renameat2(RENAME_EXCHANGE)`).
#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them relative to the cwd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot swap {} into {}", a.display(), b.display()));
    }
    Ok(())
}

/// Elsewhere: move the old directory aside, then rename; a crash in between leaves `b.old`.
#[cfg(not(target_os = "linux"))]
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let old = b.with_extension("old");
    fs::rename(b, &old)?;
    fs::rename(a, b)?;
    fs::rename(&old, a)?;
    Ok(())
}
