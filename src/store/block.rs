//! What the hash thread and the disk thread of a [`super::pipeline`] share:
//! aligned 1 MiB buffers, the messages between the two threads, and the
//! one function that cuts the stream into blocks for both.

use super::types::BLOCK;
use std::io;

/// Bytes per pipeline buffer.
pub(super) const PIPE_BUF: usize = 1 << 20;
/// Buffers in flight between the socket, the hasher and the disk: bounds the
/// memory of one transfer to `PIPE_DEPTH` MiB.
pub(super) const PIPE_DEPTH: usize = 8;

/// Alignment of pipeline buffers, so the disk thread can write them with
/// `O_DIRECT`.
pub(super) const ALIGN: usize = 4096;

/// A [`PIPE_BUF`]-byte buffer whose start is [`ALIGN`]-aligned.
pub struct Buf {
    pub(super) raw: Vec<u8>,
    pub(super) off: usize,
}

impl Buf {
    pub(super) fn new() -> Buf {
        let raw = vec![0u8; PIPE_BUF + ALIGN];
        let off = raw.as_ptr().align_offset(ALIGN).min(ALIGN);
        Buf { raw, off }
    }
}

impl std::ops::Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.off..self.off + PIPE_BUF]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + PIPE_BUF]
    }
}

/// Where the bytes of a pipeline buffer came from, which decides how the
/// disk thread puts them in the partial.
pub enum Fill {
    /// Received: written.
    Data,
    /// A hole's zeros: hashed like any bytes, but skipped on disk (a
    /// seek), so the partial stays sparse.
    Hole,
    /// Read from the file being replaced, at the same offset (a delta's
    /// SAME): cloned from it where the file system can (a reflink), else
    /// written.
    Old(std::sync::Arc<super::cold::ColdFile>),
}

/// What the hash thread hands to the disk thread, in stream order.
pub(super) enum ToDisk {
    /// Bytes to append (the buffer and how much of it is used), and where
    /// they came from.
    Data(Buf, usize, Fill),
    /// A block ended: its record, once the bytes before it are written.
    /// A block ended; its MD5 state (the disk thread has its XXH3).
    Block(Vec<u8>),
}

/// Cuts `data`, which starts at stream offset `*at`, at block boundaries:
/// `piece(bytes, ends_a_block)` for each part, in order; advances `*at`.
/// The hash thread (MD5 states) and the disk thread (XXH3) must cut the
/// stream at exactly the same places, so both use this.
pub(super) fn by_block(at: &mut u64, mut data: &[u8], mut piece: impl FnMut(&[u8], bool)) {
    while !data.is_empty() {
        let room = usize::try_from(BLOCK - *at % BLOCK).unwrap_or(usize::MAX);
        let (now, later) = data.split_at(room.min(data.len()));
        *at += now.len() as u64;
        piece(now, at.is_multiple_of(BLOCK));
        data = later;
    }
}

pub(super) fn pipeline_broken() -> io::Error {
    io::Error::other("internal error: the write pipeline stopped")
}
