//! Crash-safe writes: a whole directory is written under a temporary name, fsynced, then
//! swapped into place with one atomic rename, so readers see either the old or the new
//! version, never a mix or a half-written file.

use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `files` (name, bytes) as the directory `dir`, replacing any previous one atomically.
pub fn write_dir_atomic(dir: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).with_context(|| format!("cannot create directory {}", parent.display()))?;
    let name = dir.file_name().context("checkpoint path has no final component")?.to_string_lossy().to_string();
    let tmp: PathBuf = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    for (fname, bytes) in files {
        let path = tmp.join(fname);
        let mut f = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(bytes).with_context(|| format!("cannot write {}", path.display()))?;
        f.sync_all()?;
    }
    File::open(&tmp)?.sync_all()?;
    if dir.exists() {
        exchange(&tmp, dir)?;
        // `tmp` now holds the previous version.
        fs::remove_dir_all(&tmp).ok();
    } else {
        fs::rename(&tmp, dir).with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    }
    File::open(parent)?.sync_all()?;
    Ok(())
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
