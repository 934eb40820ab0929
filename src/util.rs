//! Small helpers shared by training, inference and evaluation: the worker thread pool,
//! reading text files with errors that name the file, base64.

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Builds a thread pool of `threads` workers (0 = one per core), each with its GEMM packing
/// buffers allocated up front.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool> {
    let mut b = rayon::ThreadPoolBuilder::new().start_handler(|_| crate::kernels::gemm::prepare_thread());
    if threads > 0 {
        b = b.num_threads(threads);
    }
    let pool = b.build()?;
    // Wait until every worker is running (and has run its start handler), so no thread starts
    // up later, in the middle of a step.
    pool.broadcast(|_| ());
    Ok(pool)
}

/// Peak resident set size of this process in bytes (getrusage).
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru.ru_maxrss as u64 * 1024
    }
}

/// Resident set size of this process now, in bytes (`VmRSS` of /proc/self/status; 0 where
/// there is no /proc).
pub fn current_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u64>().ok()))
        .map_or(0, |kb| kb * 1024)
}

/// Reads a UTF-8 text corpus, with errors that say what is wrong with the file.
pub fn read_corpus(path: &Path) -> Result<String> {
    ensure!(!path.as_os_str().is_empty(), "no data file given (set data.path in the config or pass --data)");
    let bytes = std::fs::read(path).with_context(|| format!("cannot read data file {}", path.display()))?;
    ensure!(!bytes.is_empty(), "data file {} is empty", path.display());
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!("data file {} is not valid UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to())
    })
}

/// The lines of a text file, without their `\n` / `\r\n` endings; a final newline does not start
/// another line. Invalid UTF-8 is an error naming the file and the line.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            match std::str::from_utf8(line) {
                Ok(s) => Ok(s.to_owned()),
                Err(e) => bail!(
                    "{}: line {} is not valid UTF-8 (byte {} of the line)",
                    path.display(),
                    i + 1,
                    e.valid_up_to() + 1
                ),
            }
        })
        .collect()
}

/// `*` wildcard matching (any run of characters, possibly empty).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Standard base64 (RFC 4648 alphabet, with padding) of `bytes`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(ALPHABET[(n >> shift & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
