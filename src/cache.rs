//! The digest cache (sender, receiver, server): a retry, a resume, a later
//! send or check of an unchanged file never hashes it again.
//!
//! An entry is keyed by what changes whenever the content can have changed
//! ([`Version`]: device, inode, size, and mtime and ctime in nanoseconds).
//! It lives under `$XDG_CACHE_HOME/ftx/md5` (else `~/.cache/ftx/md5`): a
//! file of [`MIN_SIZE`] or more has an entry file of its own holding the
//! hex digest, smaller ones share one index of records (`index-v1`). A
//! stale entry can only cost a retry: the receiver verifies every file, and
//! a mismatch makes the sender forget the entry and hash afresh.

use crate::delta::BlockDigest;
use crate::digest::{hex, Md5Digest};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Files from this size on have an entry file each; smaller ones go into
/// one index of fixed-size records (see [`Index`]), read once into memory.
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
    /// The version `md` (of cap-std, from a no-follow stat) describes.
    pub fn of_cap(md: &cap_std::fs::Metadata) -> Version {
        use cap_std::fs::MetadataExt;
        Version {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
        }
    }

    /// Its seven numbers, in a fixed order (for the records that keep it:
    /// the small-file index, a partial's state file).
    pub fn words(&self) -> [u64; 7] {
        [
            self.dev,
            self.ino,
            self.len,
            self.mtime.0 as u64,
            self.mtime.1 as u64,
            self.ctime.0 as u64,
            self.ctime.1 as u64,
        ]
    }

    /// The version [`Version::words`] gave these numbers for.
    pub fn from_words(n: [u64; 7]) -> Version {
        Version {
            dev: n[0],
            ino: n[1],
            len: n[2],
            mtime: (n[3] as i64, n[4] as i64),
            ctime: (n[5] as i64, n[6] as i64),
        }
    }

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
    /// Small files' digests, read on first use.
    index: std::sync::Arc<std::sync::OnceLock<Option<Index>>>,
}

/// Records of small files' digests: one file of fixed-size records
/// (device, inode, size, mtime, ctime, MD5, then an XXH3-64 of the rest),
/// appended with `O_APPEND` (one `write` a record, so processes sharing
/// the cache never interleave), read whole into memory on first use; a
/// record that does not check out ends the reading. Past [`INDEX_MAX`]
/// records it starts over: a cache may forget, never lie.
#[derive(Debug)]
struct Index {
    /// Keyed by local file versions, not by anything a peer chooses: a
    /// fast hasher (SipHash cost a tenth of a check of 100,000 files).
    map: std::sync::Mutex<
        std::collections::HashMap<Version, Md5Digest, foldhash::fast::RandomState>,
    >,
    file: std::fs::File,
}

/// Bytes of one index record.
const RECORD: usize = 80;
/// Records read at most; a larger index is started over.
const INDEX_MAX: u64 = 2 << 20;

impl Index {
    fn open(dir: &std::path::Path) -> Option<Index> {
        use std::io::Read;
        let path = dir.join("index-v1");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .ok()?;
        let len = file.metadata().ok()?.len();
        if len > INDEX_MAX * RECORD as u64 {
            file.set_len(0).ok()?;
        } else if len % RECORD as u64 != 0 {
            // A torn last record (a writer stopped in the middle): cut
            // it, so that the next ones stay aligned.
            file.set_len(len - len % RECORD as u64).ok()?;
        }
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).ok()?;
        let mut map = std::collections::HashMap::with_capacity_and_hasher(
            raw.len() / RECORD,
            foldhash::fast::RandomState::default(),
        );
        for r in raw.chunks_exact(RECORD) {
            let sum = u64::from_le_bytes(r[72..80].try_into().ok()?);
            if xxhash_rust::xxh3::xxh3_64(&r[..72]) != sum {
                break;
            }
            let n =
                |i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            let v = Version::from_words(std::array::from_fn(n));
            let mut d = [0u8; 16];
            d.copy_from_slice(&r[56..72]);
            if d == FORGOTTEN {
                map.remove(&v);
            } else {
                map.insert(v, d);
            }
        }
        Some(Index {
            map: std::sync::Mutex::new(map),
            file,
        })
    }

    fn get(&self, v: &Version) -> Option<Md5Digest> {
        self.map.lock().ok()?.get(v).copied()
    }

    fn put(&self, v: Version, d: &Md5Digest) {
        use std::io::Write;
        let Ok(mut map) = self.map.lock() else { return };
        if map.get(&v) == Some(d) || (*d == FORGOTTEN && !map.contains_key(&v)) {
            return;
        }
        let mut r = Vec::with_capacity(RECORD);
        for n in v.words() {
            r.extend_from_slice(&n.to_le_bytes());
        }
        r.extend_from_slice(d);
        let sum = xxhash_rust::xxh3::xxh3_64(&r);
        r.extend_from_slice(&sum.to_le_bytes());
        // One write: appended whole, never interleaved with another's.
        if (&self.file).write_all(&r).is_ok() {
            if *d == FORGOTTEN {
                map.remove(&v);
            } else {
                map.insert(v, *d);
            }
        }
    }
}

/// The digest field of a record that takes an earlier one back.
const FORGOTTEN: Md5Digest = [0; 16];

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
        DigestCache {
            dir,
            index: std::sync::Arc::new(std::sync::OnceLock::new()),
        }
    }

    fn index(&self) -> Option<&Index> {
        let dir = self.dir.as_ref()?;
        self.index.get_or_init(|| Index::open(dir)).as_ref()
    }

    /// The cached digest of this version of a file, if any.
    pub fn get_version(&self, v: &Version) -> Option<Md5Digest> {
        if v.len < MIN_SIZE {
            return self.index()?.get(v);
        }
        self.read_entry(self.entry_path(v)?)
    }

    fn path(&self, md: &Metadata) -> Option<PathBuf> {
        self.entry_path(&Version::of(md))
    }

    fn entry_path(&self, v: &Version) -> Option<PathBuf> {
        if v.len < MIN_SIZE {
            return None;
        }
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
        self.get_version(&Version::of(md))
    }

    fn read_entry(&self, path: PathBuf) -> Option<Md5Digest> {
        let text = std::fs::read_to_string(path).ok()?;
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
        if md.len() < MIN_SIZE {
            if let Some(i) = self.index() {
                i.put(Version::of(md), d);
            }
            return;
        }
        let Some(path) = self.path(md) else { return };
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, hex(d)).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        // The whole digest is known: the checkpoints of its hashing go.
        if let Some(states) = self.states_path(&Version::of(md)) {
            let _ = std::fs::remove_file(states);
        }
    }

    /// The `algo` digest of `file`, open, as `md` (its `fstat`) describes
    /// it: the cached one when `use_cached` and `algo` is MD5, else hashed
    /// now, and kept only if the file did not change while it was read.
    pub fn digest_of(
        &self,
        algo: crate::digest::Algo,
        file: &std::fs::File,
        md: &Metadata,
        use_cached: bool,
    ) -> std::io::Result<Md5Digest> {
        let md5 = algo == crate::digest::Algo::Md5;
        if md5 && use_cached {
            if let Some(d) = self.get(md) {
                return Ok(d);
            }
        }
        let d = crate::digest::hash_reader_as(algo, file, md.len(), |_| {})?;
        if md5
            && file
                .metadata()
                .is_ok_and(|now| Version::of(&now) == Version::of(md))
        {
            self.put(md, &d);
        }
        Ok(d)
    }

    /// The block digests of this version of a file, cut in blocks of
    /// `block` bytes (see [`crate::delta`]), if they were kept.
    pub fn blocks(&self, v: &Version, block: u64, total: u32) -> Option<Vec<BlockDigest>> {
        let raw = std::fs::read(self.blocks_path(v, block)?).ok()?;
        let body = raw.len().checked_sub(8)?;
        if body != total as usize * 16 {
            return None;
        }
        let sum = u64::from_le_bytes(raw[body..].try_into().ok()?);
        if xxhash_rust::xxh3::xxh3_64(&raw[..body]) != sum {
            return None;
        }
        Some(
            raw[..body]
                .chunks_exact(16)
                .map(|c| {
                    let mut d = [0u8; 16];
                    d.copy_from_slice(c);
                    d
                })
                .collect(),
        )
    }

    /// Keeps the block digests of this version of a file (best effort;
    /// written atomically, with a checksum).
    pub fn put_blocks(&self, v: &Version, block: u64, digests: &[BlockDigest]) {
        let Some(path) = self.blocks_path(v, block) else {
            return;
        };
        let mut raw: Vec<u8> = digests.concat();
        let sum = xxhash_rust::xxh3::xxh3_64(&raw);
        raw.extend_from_slice(&sum.to_le_bytes());
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, raw).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    fn blocks_path(&self, v: &Version, block: u64) -> Option<PathBuf> {
        let mut p = self.entry_path(v)?.into_os_string();
        p.push(format!(".blocks-{block}"));
        Some(PathBuf::from(p))
    }

    /// Keeps the MD5 state after the first `at` bytes of this version of a
    /// file (a sender's checkpoint while it hashes a body it sends, so
    /// that a resume of it need not hash that prefix again). Appended as
    /// one checksummed record (best effort).
    pub fn put_state(&self, v: &Version, at: u64, state: &[u8]) {
        use std::io::Write;
        let Some(path) = self.states_path(v) else {
            return;
        };
        let Ok(len) = u16::try_from(state.len()) else {
            return;
        };
        let mut r = Vec::with_capacity(18 + state.len());
        r.extend_from_slice(&at.to_le_bytes());
        r.extend_from_slice(&len.to_le_bytes());
        r.extend_from_slice(state);
        let sum = xxhash_rust::xxh3::xxh3_64(&r);
        r.extend_from_slice(&sum.to_le_bytes());
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path);
        if let Ok(mut f) = file {
            // One write: appended whole, never interleaved with another's.
            let _ = f.write_all(&r);
        }
    }

    /// The latest MD5 state kept for this version of a file
    /// ([`DigestCache::put_state`]) that covers at most its first `at`
    /// bytes: how many it covers, and the state.
    pub fn state_before(&self, v: &Version, at: u64) -> Option<(u64, Vec<u8>)> {
        let raw = std::fs::read(self.states_path(v)?).ok()?;
        let mut rest = raw.as_slice();
        let mut found = None;
        while rest.len() >= 18 {
            let len = usize::from(u16::from_le_bytes([rest[8], rest[9]]));
            let Some(rec) = rest.get(..10 + len + 8) else {
                break;
            };
            let sum = u64::from_le_bytes(rec[10 + len..].try_into().ok()?);
            if xxhash_rust::xxh3::xxh3_64(&rec[..10 + len]) != sum {
                break;
            }
            let off = u64::from_le_bytes(rec[..8].try_into().ok()?);
            if off <= at && found.as_ref().is_none_or(|(best, _)| off > *best) {
                found = Some((off, rec[10..10 + len].to_vec()));
            }
            rest = &rest[10 + len + 8..];
        }
        found
    }

    fn states_path(&self, v: &Version) -> Option<PathBuf> {
        let mut p = self.entry_path(v)?.into_os_string();
        p.push(".md5-states");
        Some(PathBuf::from(p))
    }

    /// Forgets the entry of a file (after the receiver found it stale).
    pub fn forget(&self, md: &Metadata) {
        if md.len() < MIN_SIZE {
            if let Some(i) = self.index() {
                i.put(Version::of(md), &FORGOTTEN);
            }
            return;
        }
        if let Some(p) = self.path(md) {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_go_into_the_index_and_survive_a_reopening() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("c");
        let cache = DigestCache::at(Some(dir.clone()));
        let f = t.path().join("small");
        std::fs::write(&f, b"small").expect("write");
        let md = std::fs::metadata(&f).expect("md");
        assert_eq!(cache.get(&md), None);
        cache.put(&md, &[7; 16]);
        assert_eq!(cache.get(&md), Some([7; 16]));
        // Another process (a fresh cache) reads it back.
        assert_eq!(DigestCache::at(Some(dir.clone())).get(&md), Some([7; 16]));
        cache.forget(&md);
        assert_eq!(cache.get(&md), None);
        assert_eq!(DigestCache::at(Some(dir.clone())).get(&md), None);
        // A torn record at the end is ignored, the rest stays.
        cache.put(&md, &[8; 16]);
        let idx = dir.join("index-v1");
        let mut raw = std::fs::read(&idx).expect("index");
        raw.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&idx, &raw).expect("write");
        assert_eq!(DigestCache::at(Some(dir)).get(&md), Some([8; 16]));
        // Any write makes it another version.
        std::fs::write(&f, b"small").expect("write");
        let md2 = std::fs::metadata(&f).expect("md");
        assert_eq!(cache.get(&md2), None);
    }

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
    fn block_digests_are_kept_by_version_and_block_size() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = DigestCache::at(Some(t.path().join("c")));
        let f = t.path().join("f");
        std::fs::write(&f, vec![1u8; MIN_SIZE as usize]).expect("write");
        let v = Version::of(&std::fs::metadata(&f).expect("md"));
        assert_eq!(cache.blocks(&v, 65536, 2), None);
        cache.put_blocks(&v, 65536, &[[1; 16], [2; 16]]);
        assert_eq!(cache.blocks(&v, 65536, 2), Some(vec![[1; 16], [2; 16]]));
        assert_eq!(cache.blocks(&v, 65536, 3), None, "another count");
        assert_eq!(cache.blocks(&v, 131072, 2), None, "another block size");
        let other = Version { ctime: (0, 0), ..v };
        assert_eq!(cache.blocks(&other, 65536, 2), None, "another version");
        // A damaged entry is not believed.
        let p = cache.blocks_path(&v, 65536).expect("path");
        let mut raw = std::fs::read(&p).expect("read");
        raw[3] ^= 1;
        std::fs::write(&p, raw).expect("write");
        assert_eq!(cache.blocks(&v, 65536, 2), None);
    }

    #[test]
    fn hash_checkpoints_are_kept_by_version_and_go_with_the_digest() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = DigestCache::at(Some(t.path().join("c")));
        let f = t.path().join("f");
        std::fs::write(&f, vec![1u8; MIN_SIZE as usize]).expect("write");
        let md = std::fs::metadata(&f).expect("md");
        let v = Version::of(&md);
        assert_eq!(cache.state_before(&v, 4096), None);
        cache.put_state(&v, 4096, b"state one");
        cache.put_state(&v, 8192, b"state two");
        let one = Some((4096, b"state one".to_vec()));
        let two = Some((8192, b"state two".to_vec()));
        assert_eq!(cache.state_before(&v, 4096), one);
        assert_eq!(cache.state_before(&v, 8191), one);
        assert_eq!(cache.state_before(&v, 8192), two);
        assert_eq!(cache.state_before(&v, 1 << 30), two);
        assert_eq!(cache.state_before(&v, 4095), None);
        let other = Version { mtime: (0, 0), ..v };
        assert_eq!(cache.state_before(&other, 4096), None, "another version");
        // A torn record at the end: the ones before it still count.
        let p = cache.states_path(&v).expect("path");
        let mut raw = std::fs::read(&p).expect("read");
        raw.extend_from_slice(&[0, 0, 0]);
        std::fs::write(&p, raw).expect("write");
        assert_eq!(cache.state_before(&v, 8192), two);
        cache.put(&md, &[7; 16]);
        assert_eq!(cache.state_before(&v, 4096), None, "gone with the digest");
    }

    #[test]
    fn a_disabled_cache_keeps_nothing() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = t.path().join("f");
        std::fs::write(&f, b"small").expect("write");
        let md = std::fs::metadata(&f).expect("md");
        let off = DigestCache::at(None);
        off.put(&md, &[7; 16]);
        assert_eq!(off.get(&md), None);
    }
}
