//! The digest cache (sender, receiver, server): a retry, a resume, a later
//! send or check of an unchanged file never hashes it again.
//!
//! An entry is keyed by what changes whenever the content can have changed
//! ([`Version`]: device, inode, size, and mtime and ctime in nanoseconds).
//! It lives under `$XDG_CACHE_HOME/ftx/md5` (else `~/.cache/ftx/md5`): a
//! file of [`MIN_SIZE`] or more has an entry file of its own holding the
//! hex digest, smaller ones share one table of records (`index-v2`). A
//! stale entry can only cost a retry: the receiver verifies every file, and
//! a mismatch makes the sender forget the entry and hash afresh.

use crate::delta::BlockDigest;
use crate::digest::{hex, Md5Digest};
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Files under this size are not put in the cache as they are received:
/// one read and microseconds of MD5 give their digest again when it is
/// asked for (a re-send, `ftx check`, which then put it), and the put
/// itself costs a `statx` and a write into the table for each (a tenth of
/// the receiver's time for a tree of small files). The sender does not put
/// the small files it reads whole either.
pub const PUT_MIN: u64 = 4 << 10;

/// Files from this size on have an entry file each; smaller ones go into
/// one table of fixed-size records on disk (see [`Index`]).
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

/// Small files' digests: a table of fixed-size records on disk
/// (`index-v2`), looked up and written in place with `pread`/`pwrite`,
/// never read into memory: a cache of millions of files costs no memory
/// and no start-up time. A record is the XXH3-128 of the file's
/// [`Version`], its MD5, and an XXH3-64 of both; its bucket (four
/// records) and its slot in it are chosen by the key, so two versions
/// that share a slot replace each other (a cache may forget, never lie);
/// a record that does not check out (torn by a concurrent writer) is no
/// record.
#[derive(Debug)]
struct Index {
    file: std::fs::File,
}

/// Bytes of one record: key (16), MD5 (16), check (8), padding.
const RECORD: usize = 64;
/// Records in a bucket.
const WAYS: usize = 4;
/// Buckets in the table: 2^18 of 4 records, a million files in a 64 MiB
/// file (sparse until written).
const BUCKETS: u64 = 1 << 18;

impl Index {
    fn open(dir: &std::path::Path) -> Option<Index> {
        // The earlier layout, read whole into memory: gone.
        let _ = std::fs::remove_file(dir.join("index-v1"));
        let path = dir.join("index-v2");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ok()?;
        let size = BUCKETS * (WAYS * RECORD) as u64;
        if file.metadata().ok()?.len() != size {
            file.set_len(size).ok()?;
        }
        Some(Index { file })
    }

    /// The key of a version and the offset of its bucket.
    fn key(v: &Version) -> ([u8; 16], u64) {
        let mut raw = [0u8; 56];
        for (i, n) in v.words().iter().enumerate() {
            raw[i * 8..i * 8 + 8].copy_from_slice(&n.to_le_bytes());
        }
        let key = xxhash_rust::xxh3::xxh3_128(&raw);
        let bucket = (key as u64) & (BUCKETS - 1);
        (key.to_le_bytes(), bucket * (WAYS * RECORD) as u64)
    }

    fn bucket(&self, at: u64) -> Option<[u8; WAYS * RECORD]> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; WAYS * RECORD];
        self.file.read_exact_at(&mut b, at).ok()?;
        Some(b)
    }

    /// The digest of a record that checks out.
    fn valid(r: &[u8]) -> Option<([u8; 16], Md5Digest)> {
        let sum = u64::from_le_bytes(r[32..40].try_into().ok()?);
        if xxhash_rust::xxh3::xxh3_64(&r[..32]) != sum {
            return None;
        }
        Some((r[..16].try_into().ok()?, r[16..32].try_into().ok()?))
    }

    fn get(&self, v: &Version) -> Option<Md5Digest> {
        let (key, at) = Self::key(v);
        let b = self.bucket(at)?;
        b.chunks_exact(RECORD)
            .filter_map(Self::valid)
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d)
    }

    /// Writes the record of `v` into its slot of its bucket, whatever is
    /// there (one `pwrite`, no read first: the receiver puts every file it
    /// places). A version always goes to the same slot, so a newer digest
    /// replaces an older one and [`FORGOTTEN`] clears it; another version
    /// in that slot is forgotten (a cache may forget, never lie).
    fn put(&self, v: Version, d: &Md5Digest) {
        use std::os::unix::fs::FileExt;
        let (key, at) = Self::key(&v);
        let slot = usize::from(key[15]) % WAYS;
        let mut r = [0u8; RECORD];
        if *d != FORGOTTEN {
            r[..16].copy_from_slice(&key);
            r[16..32].copy_from_slice(d);
            let sum = xxhash_rust::xxh3::xxh3_64(&r[..32]);
            r[32..40].copy_from_slice(&sum.to_le_bytes());
        }
        // One write of one record: never interleaved with another's.
        let _ = self.file.write_all_at(&r, at + (slot * RECORD) as u64);
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

    /// Whether it keeps digests (not disabled, its directory exists).
    pub fn is_on(&self) -> bool {
        self.dir.is_some()
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
    pub fn forget(&self, v: &Version) {
        if v.len < MIN_SIZE {
            if let Some(i) = self.index() {
                i.put(*v, &FORGOTTEN);
            }
            return;
        }
        if let Some(p) = self.entry_path(v) {
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
        cache.forget(&Version::of(&md));
        assert_eq!(cache.get(&md), None);
        assert_eq!(DigestCache::at(Some(dir.clone())).get(&md), None);
        // A record that does not check out (torn) is no record.
        cache.put(&md, &[8; 16]);
        assert_eq!(DigestCache::at(Some(dir.clone())).get(&md), Some([8; 16]));
        let idx = dir.join("index-v2");
        let mut raw = std::fs::read(&idx).expect("index");
        let (key, at) = Index::key(&Version::of(&md));
        let at = at as usize;
        let r = raw[at..at + WAYS * RECORD]
            .chunks_exact(RECORD)
            .position(|r| r[..16] == key)
            .expect("the record");
        raw[at + r * RECORD + 20] ^= 1;
        std::fs::write(&idx, &raw).expect("write");
        assert_eq!(DigestCache::at(Some(dir.clone())).get(&md), None);
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
        cache.forget(&Version::of(&md));
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
    fn versions_that_share_a_slot_replace_each_other_and_never_lie() {
        let t = tempfile::tempdir().expect("tempdir");
        let index = Index::open(t.path()).expect("index");
        // Versions that fall into one slot of one bucket (found by trying).
        let version = |ino: u64| Version::from_words([1, ino, 10, 0, 0, 0, 0]);
        let place = |v: &Version| {
            let (key, at) = Index::key(v);
            (at, key[15] as usize % WAYS)
        };
        let first = place(&version(0));
        let same: Vec<Version> = (0..20_000_000u64)
            .map(version)
            .filter(|v| place(v) == first)
            .take(3)
            .collect();
        assert_eq!(same.len(), 3);
        for (i, v) in same.iter().enumerate() {
            index.put(*v, &[i as u8 + 1; 16]);
        }
        // The last one written is there; the others are forgotten, not
        // answered with its digest.
        assert_eq!(index.get(&same[2]), Some([3; 16]));
        assert_eq!(index.get(&same[0]), None);
        assert_eq!(index.get(&same[1]), None);
        // A newer digest of a version replaces its older one; forgetting
        // clears it.
        index.put(same[2], &[9; 16]);
        assert_eq!(index.get(&same[2]), Some([9; 16]));
        index.put(same[2], &FORGOTTEN);
        assert_eq!(index.get(&same[2]), None);
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
