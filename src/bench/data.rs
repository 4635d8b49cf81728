//! The benchmark's working directory and its generated data: one large
//! random file and a tree of small random files.

use super::report::status;
use anyhow::{Context, Result};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Small files are 1..=SMALL_MAX bytes.
pub(super) const SMALL_MAX: u64 = 64 * 1024;
/// Small files per generated subdirectory.
pub(super) const FILES_PER_DIR: usize = 20;
/// Write buffer for generating the large file.
pub(super) const GEN_CHUNK: usize = 4 << 20;
/// The temporary working directory, removed on drop unless kept.
pub(super) struct WorkDir {
    pub(super) path: PathBuf,
    pub(super) keep: bool,
}

impl WorkDir {
    pub(super) fn create(parent: &Path, keep: bool) -> Result<WorkDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("ftx-bench-{}-{nanos}", std::process::id()));
        fs::create_dir(&path)
            .with_context(|| format!("cannot create work directory {}", path.display()))?;
        Ok(WorkDir { path, keep })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = fs::remove_dir_all(&self.path) {
                status(&format!("cannot remove {}: {e}", self.path.display()));
            }
        }
    }
}

/// xorshift64*: fast, not cryptographic; enough for incompressible data.
pub(super) struct XorShift(u64);

impl XorShift {
    pub(super) fn seeded() -> XorShift {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            seed = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
        }
        XorShift(u64::from_le_bytes(seed) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// A value in `1..=max`.
    pub(super) fn one_to(&mut self, max: u64) -> u64 {
        self.next() % max + 1
    }
}

pub(super) fn write_random_file(path: &Path, size: u64, rng: &mut XorShift) -> Result<()> {
    let ctx = || format!("cannot write {}", path.display());
    let mut f = File::create(path).with_context(ctx)?;
    let mut buf = vec![0u8; GEN_CHUNK];
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(GEN_CHUNK);
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n]).with_context(ctx)?;
        left -= n as u64;
    }
    f.sync_all().with_context(ctx)
}

/// Writes `files` random files of 1..=64 KiB as `dir/dNNNN/fNNNNNN.bin`,
/// [`FILES_PER_DIR`] per subdirectory. Returns the total bytes.
pub(super) fn write_small_tree(dir: &Path, files: usize, rng: &mut XorShift) -> Result<u64> {
    fs::create_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut buf = vec![0u8; SMALL_MAX as usize];
    let mut total = 0;
    let mut sub = PathBuf::new();
    for i in 0..files {
        if i % FILES_PER_DIR == 0 {
            sub = dir.join(format!("d{:04}", i / FILES_PER_DIR));
            fs::create_dir(&sub).with_context(|| format!("cannot create {}", sub.display()))?;
        }
        let len = rng.one_to(SMALL_MAX);
        let b = &mut buf[..len as usize];
        rng.fill(b);
        let p = sub.join(format!("f{i:06}.bin"));
        fs::write(&p, b).with_context(|| format!("cannot write {}", p.display()))?;
        total += len;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_fill_covers_odd_lengths() {
        let mut r = XorShift(1);
        let mut b = [0u8; 13];
        r.fill(&mut b);
        assert!(b.iter().any(|&x| x != 0));
        for _ in 0..1000 {
            let v = r.one_to(SMALL_MAX);
            assert!((1..=SMALL_MAX).contains(&v));
        }
    }
}
