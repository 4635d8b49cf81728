//! What a server knows of its files' digests: MD5s by the file's identity
//! and times (device, inode, size, mtime and ctime to the nanosecond, as
//! the digest cache keys them), in memory and in the digest cache; and the
//! reverse, which file has a digest (`/by-md5/<hex>` over HTTP). A digest
//! is computed once per version of a file, however many ask at once.

use crate::cache::{DigestCache, Version};
use crate::digest::{hash_reader, Md5Digest};
use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// What a file's digest is a digest of.
type Key = Version;

fn key(md: &Metadata) -> Key {
    Version::of(md)
}

/// Remembered digests at most (a few dozen bytes each); beyond it, only the
/// digest cache remembers (files of 1 MiB and more).
const MAX_KNOWN: usize = 1 << 20;

/// The server's digests.
pub(crate) struct Digests {
    cache: DigestCache,
    known: Mutex<HashMap<Key, Md5Digest>>,
    /// Keys being hashed right now (others wait for them).
    hashing: Mutex<HashSet<Key>>,
    done: Condvar,
    /// Which file (root index, path beneath it) has a digest.
    by_md5: Mutex<HashMap<Md5Digest, (usize, PathBuf)>>,
}

impl Digests {
    /// Backed by `cache` (the server's).
    pub(crate) fn new(cache: DigestCache) -> Digests {
        Digests {
            cache,
            known: Mutex::new(HashMap::new()),
            hashing: Mutex::new(HashSet::new()),
            done: Condvar::new(),
            by_md5: Mutex::new(HashMap::new()),
        }
    }

    /// The digest of the file as `md` describes it, if known.
    pub(crate) fn known(&self, md: &Metadata) -> Option<Md5Digest> {
        if let Some(d) = self.known.lock().ok()?.get(&key(md)) {
            return Some(*d);
        }
        let d = self.cache.get(md)?;
        self.remember(md, d);
        Some(d)
    }

    fn remember(&self, md: &Metadata, d: Md5Digest) {
        if let Ok(mut k) = self.known.lock() {
            if k.len() < MAX_KNOWN {
                k.insert(key(md), d);
            }
        }
    }

    /// The digest of `file` (open, as `md` describes it): known, or
    /// hashed now (once: a second caller waits for the first). `None` when
    /// the file changed while it was hashed (its digest is of no version).
    pub(crate) fn of(&self, file: &File, md: &Metadata) -> std::io::Result<Option<Md5Digest>> {
        let k = key(md);
        loop {
            if let Some(d) = self.known(md) {
                return Ok(Some(d));
            }
            let mut busy = self
                .hashing
                .lock()
                .map_err(|_| std::io::Error::other("digest table poisoned"))?;
            if busy.insert(k) {
                break;
            }
            // Someone hashes this version: wait, bounded, then look again.
            let _ = self
                .done
                .wait_timeout(busy, std::time::Duration::from_millis(200));
        }
        let hashed = hash_reader(file, md.len(), |_| {});
        let after = file.metadata();
        if let Ok(mut busy) = self.hashing.lock() {
            busy.remove(&k);
        }
        self.done.notify_all();
        let d = hashed?;
        if after.ok().map(|a| key(&a)) != Some(k) {
            return Ok(None);
        }
        self.cache.put(md, &d);
        self.remember(md, d);
        Ok(Some(d))
    }

    /// Notes that the file at `rel` beneath root `root` has digest `d`.
    pub(crate) fn note(&self, d: Md5Digest, root: usize, rel: PathBuf) {
        if let Ok(mut m) = self.by_md5.lock() {
            if m.len() < MAX_KNOWN || m.contains_key(&d) {
                m.insert(d, (root, rel));
            }
        }
    }

    /// The file noted with digest `d`, if any.
    pub(crate) fn locate(&self, d: &Md5Digest) -> Option<(usize, PathBuf)> {
        self.by_md5.lock().ok()?.get(d).cloned()
    }

    /// How many digests are noted (for the log).
    pub(crate) fn noted(&self) -> usize {
        self.by_md5.lock().map_or(0, |m| m.len())
    }
}
