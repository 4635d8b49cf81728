//! The sender's digest cache: a retry, a resume or a later send of an
//! unchanged file never hashes it again.
//!
//! An entry is keyed by what changes whenever the content can have changed:
//! device, inode, size, and mtime and ctime in nanoseconds (as `fstat` gives
//! them for the open file). It lives under `$XDG_CACHE_HOME/ftx/md5` (else
//! `~/.cache/ftx/md5`), one small file per key holding the hex digest. A
//! stale entry can only cost a retry: the receiver verifies every file, and
//! a mismatch makes the sender forget the entry and hash afresh.

use crate::digest::{hex, Md5Digest};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Files smaller than this are hashed rather than looked up: hashing them
/// costs less than the cache's own file operations.
pub const MIN_SIZE: u64 = 1 << 20;

/// One version of a file: what changes whenever its content can have
/// changed (any write changes the ctime, which no one can set back). The
/// cache's key, a server's digest table's key and its HTTP `ETag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub len: u64,
    /// Modification time: seconds, nanoseconds.
    pub mtime: (i64, i64),
    /// Change time: seconds, nanoseconds.
    pub ctime: (i64, i64),
}

impl Version {
    /// The version `md` describes.
    pub fn of(md: &Metadata) -> Version {
        Version {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }
}

/// The cache; does nothing when disabled or when no cache directory exists.
#[derive(Debug, Clone)]
pub struct DigestCache {
    dir: Option<PathBuf>,
}

/// The cache directory from the environment, if one can be found.
fn default_dir() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".cache"),
    };
    Some(base.join("ftx").join("md5"))
}

impl DigestCache {
    /// Opens the default cache when `enabled`.
    pub fn open(enabled: bool) -> Self {
        Self::at(if enabled { default_dir() } else { None })
    }

    /// A cache in `dir` (`None`: disabled).
    pub fn at(dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|d| std::fs::create_dir_all(d).is_ok());
        DigestCache { dir }
    }

    fn path(&self, md: &Metadata) -> Option<PathBuf> {
        if md.len() < MIN_SIZE {
            return None;
        }
        let v = Version::of(md);
        let key = format!(
            "{:x}-{:x}-{:x}-{}.{:09}-{}.{:09}",
            v.dev, v.ino, v.len, v.mtime.0, v.mtime.1, v.ctime.0, v.ctime.1
        );
        self.dir.as_ref().map(|d| d.join(key))
    }

    /// Where the default cache lives (nothing is created).
    pub fn default_location() -> Option<PathBuf> {
        default_dir()
    }

    /// The cached digest of the file with metadata `md`.
    pub fn get(&self, md: &Metadata) -> Option<Md5Digest> {
        let text = std::fs::read_to_string(self.path(md)?).ok()?;
        let text = text.trim();
        if text.len() != 32 {
            return None;
        }
        let mut d = [0u8; 16];
        for (i, b) in d.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(d)
    }

    /// Records a digest (best effort; written atomically).
    pub fn put(&self, md: &Metadata, d: &Md5Digest) {
        let Some(path) = self.path(md) else { return };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, hex(d)).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Forgets the entry of a file (after the receiver found it stale).
    pub fn forget(&self, md: &Metadata) {
        if let Some(p) = self.path(md) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_forget_and_change() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = DigestCache::at(Some(t.path().join("c")));
        let f = t.path().join("f");
        std::fs::write(&f, vec![1u8; MIN_SIZE as usize]).expect("write");
        let md = std::fs::metadata(&f).expect("md");
        assert_eq!(cache.get(&md), None);
        cache.put(&md, &[7; 16]);
        assert_eq!(cache.get(&md), Some([7; 16]));
        cache.forget(&md);
        assert_eq!(cache.get(&md), None);
        cache.put(&md, &[7; 16]);
        // Any write changes mtime/ctime (or size): the entry no longer applies.
        std::fs::write(&f, vec![2u8; MIN_SIZE as usize + 1]).expect("write");
        let md2 = std::fs::metadata(&f).expect("md");
        assert_eq!(cache.get(&md2), None);
    }

    #[test]
    fn small_files_and_disabled_cache_are_not_cached() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("f");
        std::fs::write(&f, b"small").expect("write");
        let md = std::fs::metadata(&f).expect("md");
        let cache = DigestCache::at(Some(t.path().join("c")));
        cache.put(&md, &[7; 16]);
        assert_eq!(cache.get(&md), None);
        let off = DigestCache::at(None);
        assert_eq!(off.get(&md), None);
    }
}
