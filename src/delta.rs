//! Delta updates (PROTOCOL.md, "Delta updates"): the blocks of a file,
//! their digests, and which of them a sender may send as SAME.
//!
//! Both sides use this: the receiver cuts the file an offer would replace
//! into blocks and sends their digests (BLOCKS); the sender compares each
//! whole block of its own file with the digest of the same block and
//! sends the equal ones as SAME, the rest as BODY. The whole-file digest
//! decides in the end, whatever the block digests said.

use crate::protocol::limits::{DELTA_BLOCKS_MAX, DELTA_BLOCK_MAX, DELTA_BLOCK_MIN};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use xxhash_rust::xxh3::Xxh3;

/// The digest of one block: its XXH3-128, big-endian.
pub type BlockDigest = [u8; 16];

/// Files smaller than this (the old one or the new one) are sent whole:
/// the digests and the round trip would save little.
pub const DELTA_MIN: u64 = 4 << 20;

/// Blocks the receiver aims at for one file: the smallest power of two
/// that cuts it into at most this many (and at least
/// [`DELTA_BLOCK_MIN`]). A changed byte costs one block on the wire; the
/// list stays within 64 KiB up to 256 GiB.
pub const TARGET_BLOCKS: u64 = 4096;

/// How a file of `len` bytes is cut: `(block, total)`, the block size and
/// the number of whole blocks; `None` when it is too small or so large
/// that even [`DELTA_BLOCK_MAX`] makes more than [`DELTA_BLOCKS_MAX`]
/// blocks (then it is sent whole). Pure.
pub fn cut(len: u64) -> Option<(u64, u32)> {
    if len < DELTA_MIN {
        return None;
    }
    let want = len.div_ceil(TARGET_BLOCKS).next_power_of_two();
    let block = want.clamp(u64::from(DELTA_BLOCK_MIN), u64::from(DELTA_BLOCK_MAX));
    let total = len / block;
    if total == 0 || total > u64::from(DELTA_BLOCKS_MAX) {
        return None;
    }
    Some((block, total as u32))
}

/// Reads `total` whole blocks of `block` bytes from the start of a file
/// (`read(buf, at)` fills `buf` from `at`) and returns their digests. An
/// error if the file is shorter. Reads go through an aligned buffer, so
/// that a reader may use `O_DIRECT`.
pub fn digests(
    read: impl Fn(&mut [u8], u64) -> io::Result<()> + Sync,
    block: u64,
    total: u32,
) -> io::Result<Vec<BlockDigest>> {
    // The two halves on two threads: the peer waits for the list (its
    // ACCEPT follows it), and nothing else runs meanwhile.
    let half = total / 2;
    let range = |from: u32, to: u32| -> io::Result<Vec<BlockDigest>> {
        const ALIGN: usize = 4096;
        let len = (1usize << 20).min(block as usize);
        let mut raw = vec![0u8; len + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        let buf = &mut raw[off..off + len];
        let mut h = Xxh3::new();
        (u64::from(from)..u64::from(to))
            .map(|i| digest_with(&read, i * block, block, buf, &mut h))
            .collect()
    };
    if half < 16 {
        return range(0, total);
    }
    std::thread::scope(|s| {
        let second = s.spawn(|| range(half, total));
        let mut first = range(0, half)?;
        let second = second
            .join()
            .map_err(|_| io::Error::other("internal error: a hashing thread panicked"))??;
        first.extend(second);
        Ok(first)
    })
}

/// The digest of the `len` bytes of `file` at `at`, read through `buf`
/// (any size) with `h` (reset first). An error if the file is shorter.
pub fn digest_at(
    file: &File,
    at: u64,
    len: u64,
    buf: &mut [u8],
    h: &mut Xxh3,
) -> io::Result<BlockDigest> {
    digest_with(&|b: &mut [u8], p| file.read_exact_at(b, p), at, len, buf, h)
}

fn digest_with(
    read: &impl Fn(&mut [u8], u64) -> io::Result<()>,
    at: u64,
    len: u64,
    buf: &mut [u8],
    h: &mut Xxh3,
) -> io::Result<BlockDigest> {
    h.reset();
    let end = at + len;
    let mut p = at;
    while p < end {
        let k = ((end - p) as usize).min(buf.len());
        read(&mut buf[..k], p)?;
        h.update(&buf[..k]);
        p += k as u64;
    }
    Ok(h.digest128().to_be_bytes())
}

/// The digest of one block's bytes.
pub fn digest(bytes: &[u8]) -> BlockDigest {
    xxhash_rust::xxh3::xxh3_128(bytes).to_be_bytes()
}

/// The old file's blocks, as a receiver's BLOCKS described them.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// Bytes per block.
    pub block: u64,
    /// Whole blocks covered.
    pub total: u32,
    /// Their digests, in order (complete once `len() == total`).
    pub digests: Vec<BlockDigest>,
}

impl Remote {
    /// Adds the digests of one BLOCKS frame; an error (a protocol
    /// violation) unless it continues the list where it stopped, with the
    /// same block size and total.
    pub fn add(
        &mut self,
        block: u32,
        first: u32,
        total: u32,
        digests: Vec<BlockDigest>,
    ) -> Result<(), String> {
        if self.digests.is_empty() {
            self.block = u64::from(block);
            self.total = total;
        }
        if u64::from(block) != self.block
            || total != self.total
            || first as usize != self.digests.len()
            || self.digests.len() + digests.len() > total as usize
        {
            return Err(format!(
                "BLOCKS block={block} first={first} total={total} does not continue block={} first={} total={}",
                self.block,
                self.digests.len(),
                self.total
            ));
        }
        self.digests.extend(digests);
        Ok(())
    }

    /// All digests arrived.
    pub fn complete(&self) -> bool {
        self.total > 0 && self.digests.len() == self.total as usize
    }

    /// The end of the bytes the blocks cover.
    pub fn covered(&self) -> u64 {
        self.block * u64::from(self.total)
    }

    /// The block whose digest to compare for `[at, at + len)` of a file of
    /// `size` bytes, if that range is exactly one whole block covered by
    /// the list (and whole in the new file too). Pure.
    pub fn block_at(&self, at: u64, len: u64, size: u64) -> Option<usize> {
        if self.block == 0 || len != self.block || !at.is_multiple_of(self.block) || at + len > size
        {
            return None;
        }
        let i = (at / self.block) as usize;
        (i < self.digests.len()).then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_follows_the_file_size() {
        assert_eq!(cut(DELTA_MIN - 1), None);
        assert_eq!(cut(4 << 20), Some((64 << 10, 64)));
        assert_eq!(cut(1 << 30), Some((256 << 10, 4096)));
        assert_eq!(cut((1 << 30) + 1), Some((512 << 10, 2048)));
        assert_eq!(cut(64 << 30), Some((16 << 20, 4096)));
        assert_eq!(cut(1 << 40), Some((64 << 20, 16384)));
        assert_eq!(cut(4 << 40), Some((64 << 20, 65536)));
        assert_eq!(cut((4 << 40) + (64 << 20)), None);
    }

    #[test]
    fn digests_cover_whole_blocks_only() {
        let t = tempfile::tempdir().expect("tempdir");
        let p = t.path().join("f");
        let data: Vec<u8> = (0..(200u32 << 10)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).expect("write");
        let f = File::open(&p).expect("open");
        let read = |b: &mut [u8], at| f.read_exact_at(b, at);
        let d = digests(read, 64 << 10, 3).expect("digests");
        assert_eq!(d.len(), 3);
        for (i, x) in d.iter().enumerate() {
            assert_eq!(*x, digest(&data[i * (64 << 10)..(i + 1) * (64 << 10)]));
        }
        assert!(digests(read, 64 << 10, 4).is_err(), "past the end");
    }

    #[test]
    fn a_list_continues_in_order_or_is_refused() {
        let mut r = Remote::default();
        assert!(r.add(65536, 0, 3, vec![[1; 16], [2; 16]]).is_ok());
        assert!(!r.complete());
        assert!(r.add(65536, 0, 3, vec![[3; 16]]).is_err(), "restarts");
        assert!(r.add(131072, 2, 3, vec![[3; 16]]).is_err(), "other block");
        assert!(r.add(65536, 2, 4, vec![[3; 16]]).is_err(), "other total");
        assert!(r.add(65536, 2, 3, vec![[3; 16]]).is_ok());
        assert!(r.complete());
        assert_eq!(r.covered(), 3 * 65536);
        assert_eq!(r.block_at(65536, 65536, 1 << 20), Some(1));
        assert_eq!(r.block_at(65537, 65536, 1 << 20), None, "unaligned");
        assert_eq!(r.block_at(3 * 65536, 65536, 1 << 20), None, "not covered");
        assert_eq!(r.block_at(0, 65536, 1000), None, "short in the new file");
    }
}
