//! The checkpoint codec, sans I/O: the state file beside a partial (format
//! in [`super`]'s documentation). Decoding never trusts what it reads: a
//! state that is truncated, corrupt, for another block size or longer than
//! its file is an error saying why.

use super::types::*;
use crate::cache::Version;
use crate::digest::Md5Digest;
use xxhash_rust::xxh3::xxh3_64;

pub(super) const MAGIC: &[u8; 8] = b"FTXPART2";

/// Bytes of the header before the records: magic, size, md5, block,
/// count, state length, and the partial's version when the state was
/// written ([`written`]).
const HEAD: usize = 8 + 8 + 16 + 8 + 4 + 2 + VERSION_LEN;
/// Bytes of a file version in the header: seven u64.
const VERSION_LEN: usize = 56;

/// One checked block: its XXH3 and the MD5 state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BlockRec {
    pub(super) xxh3: u64,
    pub(super) md5_state: Vec<u8>,
}

/// Encodes a state file. `written`: the partial's version (as `fstat`
/// gave it) once the bytes this state describes were synced.
pub(super) fn encode_state(
    size: u64,
    md5: &Md5Digest,
    blocks: &[BlockRec],
    written: Option<&Version>,
) -> Vec<u8> {
    let state_len = blocks.first().map_or(0, |b| b.md5_state.len());
    let mut v = Vec::with_capacity(HEAD + 8 + blocks.len() * (8 + state_len));
    v.extend_from_slice(MAGIC);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(md5);
    v.extend_from_slice(&BLOCK.to_be_bytes());
    v.extend_from_slice(&(blocks.len() as u32).to_be_bytes());
    v.extend_from_slice(&(state_len as u16).to_be_bytes());
    for n in written.map_or([0; 7], Version::words) {
        v.extend_from_slice(&n.to_be_bytes());
    }
    for b in blocks {
        v.extend_from_slice(&b.xxh3.to_be_bytes());
        v.extend_from_slice(&b.md5_state);
    }
    let trailer = xxh3_64(&v);
    v.extend_from_slice(&trailer.to_be_bytes());
    v
}

/// Decodes a state file; `Err` says why it cannot be trusted.
pub(super) fn decode_state(b: &[u8]) -> Result<(u64, Md5Digest, Vec<BlockRec>), &'static str> {
    if b.len() < HEAD + 8 {
        return Err("state file is truncated");
    }
    let (body, trailer) = b.split_at(b.len() - 8);
    let mut t = [0u8; 8];
    t.copy_from_slice(trailer);
    if xxh3_64(body) != u64::from_be_bytes(t) || &body[..8] != MAGIC {
        return Err("state file is corrupt");
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let size = u64_at(8);
    let mut md5 = [0u8; 16];
    md5.copy_from_slice(&body[16..32]);
    if u64_at(32) != BLOCK {
        return Err("state file uses another block size");
    }
    let n = u32::from_be_bytes([body[40], body[41], body[42], body[43]]) as usize;
    let state_len = u16::from_be_bytes([body[44], body[45]]) as usize;
    let rec = 8 + state_len;
    if (body.len() - HEAD) != n.saturating_mul(rec) {
        return Err("state file has the wrong length");
    }
    if (n as u64).saturating_mul(BLOCK) > size {
        return Err("state file covers more than the file");
    }
    let blocks = body[HEAD..]
        .chunks_exact(rec)
        .map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&c[..8]);
            BlockRec {
                xxh3: u64::from_be_bytes(a),
                md5_state: c[8..].to_vec(),
            }
        })
        .collect();
    Ok((size, md5, blocks))
}

/// The partial's version recorded in a state file that [`decode_state`]
/// accepted: what it was when the state was written (`None` if unknown).
/// A partial that still has it was not written to since (any write
/// changes its ctime, which cannot be set back).
pub(super) fn written(b: &[u8]) -> Option<Version> {
    let at = HEAD - VERSION_LEN;
    let f = b.get(at..HEAD)?;
    let n = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&f[i * 8..i * 8 + 8]);
        u64::from_be_bytes(a)
    };
    (f.iter().any(|b| *b != 0)).then(|| Version::from_words(std::array::from_fn(n)))
}
