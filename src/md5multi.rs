//! MD5 of many independent messages at once: the digest of each of a
//! batch of small files. One MD5 is a chain of dependent steps and cannot
//! go faster than [`crate::md5core`]; sixteen of them side by side fill
//! the sixteen 32-bit lanes of AVX-512 registers, one message per lane.
//! A lane whose message ends takes the next message in the batch, so
//! messages of different lengths keep every lane busy until the batch
//! runs out. CPUs without AVX-512 but with AVX2 use eight lanes; others
//! (checked at run time) hash each message in turn with
//! [`crate::md5core`].
//!
//! The results are the same as [`crate::md5core`]'s; the tests check them
//! against the `md-5` crate for random batches of random lengths.

use crate::md5core::{Digest, Md5};

/// The MD5 of each message, in order.
pub fn digests(msgs: &[&[u8]]) -> Vec<Digest> {
    #[cfg(target_arch = "x86_64")]
    if msgs.len() > 1 {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            return x86::digests(msgs, |s, b| unsafe { x86::avx512::compress(s, b) });
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            return x86::digests(msgs, |s, b| unsafe { x86::avx2::compress(s, b) });
        }
    }
    msgs.iter().map(|m| one(m)).collect()
}

/// The MD5 of one message.
fn one(m: &[u8]) -> Digest {
    let mut h = Md5::default();
    h.update(m);
    h.finish()
}

/// The end of a message as MD5 pads it: its last bytes (fewer than a
/// block), 0x80, zeros and its length in bits, in one block or two.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Tail {
    bytes: [u8; 128],
    len: usize,
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl Tail {
    fn of(data: &[u8]) -> Tail {
        let rest = &data[data.len() / 64 * 64..];
        let mut bytes = [0u8; 128];
        bytes[..rest.len()].copy_from_slice(rest);
        bytes[rest.len()] = 0x80;
        let len = if rest.len() < 56 { 64 } else { 128 };
        let bits = (data.len() as u64).wrapping_mul(8);
        bytes[len - 8..len].copy_from_slice(&bits.to_le_bytes());
        Tail { bytes, len }
    }

    fn blocks(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tail;
    use crate::md5core::{Digest, INIT};

    /// What an empty lane hashes (its result is never used).
    static IDLE: [u8; 64] = [0; 64];

    /// Hashes the messages `N` at a time: `compress` hashes one block of
    /// each of `N` lanes, whose states are `state[word][lane]`.
    pub fn digests<const N: usize>(
        msgs: &[&[u8]],
        compress: impl Fn(&mut [[u32; N]; 4], &[&[u8; 64]; N]),
    ) -> Vec<Digest> {
        let tails: Vec<Tail> = msgs.iter().map(|m| Tail::of(m)).collect();
        let mut out = vec![[0u8; 16]; msgs.len()];
        let mut state = [[0u32; N]; 4];
        // Per lane: its message, whether it is in the tail, and the blocks
        // of the current part (whole blocks of the message, or the tail)
        // still to hash.
        let mut msg = [usize::MAX; N];
        let mut in_tail = [false; N];
        let mut left: [&[u8]; N] = [&[]; N];
        let mut queued = 0;
        loop {
            let mut run = usize::MAX;
            for l in 0..N {
                if left[l].is_empty() && msg[l] != usize::MAX {
                    if in_tail[l] {
                        let d = &mut out[msg[l]];
                        for w in 0..4 {
                            d[w * 4..w * 4 + 4].copy_from_slice(&state[w][l].to_le_bytes());
                        }
                        msg[l] = usize::MAX;
                    } else {
                        left[l] = tails[msg[l]].blocks();
                        in_tail[l] = true;
                    }
                }
                if msg[l] == usize::MAX && queued < msgs.len() {
                    let m = msgs[queued];
                    msg[l] = queued;
                    queued += 1;
                    left[l] = &m[..m.len() / 64 * 64];
                    in_tail[l] = left[l].is_empty();
                    if in_tail[l] {
                        left[l] = tails[msg[l]].blocks();
                    }
                    for (w, init) in INIT.iter().enumerate() {
                        state[w][l] = *init;
                    }
                }
                if msg[l] != usize::MAX {
                    run = run.min(left[l].len() / 64);
                }
            }
            if run == usize::MAX {
                return out;
            }
            // Every busy lane has `run` blocks before it needs attention.
            for _ in 0..run {
                let blocks: [&[u8; 64]; N] =
                    std::array::from_fn(|l| left[l].first_chunk::<64>().unwrap_or(&IDLE));
                compress(&mut state, &blocks);
                for part in left.iter_mut() {
                    if part.len() >= 64 {
                        *part = &part[64..];
                    }
                }
            }
        }
    }

    /// Sixteen lanes with AVX-512.
    pub mod avx512 {
        use crate::md5core::RC;
        use std::arch::x86_64::*;

        pub const LANES: usize = 16;

        /// The 16 × 16 words of the lanes' blocks, turned so that vector `i`
        /// holds word `i` of every lane.
        #[target_feature(enable = "avx512f")]
        unsafe fn transpose(blocks: &[&[u8; 64]; LANES]) -> [__m512i; 16] {
            // SAFETY: each load reads 64 bytes from a 64-byte block (an
            // unaligned load: no alignment needed); AVX-512F is enabled.
            let r: [__m512i; 16] =
                std::array::from_fn(|l| unsafe { _mm512_loadu_si512(blocks[l].as_ptr().cast()) });
            let mut t = [_mm512_setzero_si512(); 16];
            for k in 0..8 {
                t[2 * k] = _mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
                t[2 * k + 1] = _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
            }
            let mut u = [_mm512_setzero_si512(); 16];
            for g in 0..4 {
                let t = &t[4 * g..4 * g + 4];
                u[4 * g] = _mm512_unpacklo_epi64(t[0], t[2]);
                u[4 * g + 1] = _mm512_unpackhi_epi64(t[0], t[2]);
                u[4 * g + 2] = _mm512_unpacklo_epi64(t[1], t[3]);
                u[4 * g + 3] = _mm512_unpackhi_epi64(t[1], t[3]);
            }
            let mut w = [_mm512_setzero_si512(); 16];
            for m in 0..4 {
                let v01 = _mm512_shuffle_i32x4::<0x44>(u[m], u[4 + m]);
                let v23 = _mm512_shuffle_i32x4::<0xEE>(u[m], u[4 + m]);
                let x01 = _mm512_shuffle_i32x4::<0x44>(u[8 + m], u[12 + m]);
                let x23 = _mm512_shuffle_i32x4::<0xEE>(u[8 + m], u[12 + m]);
                w[m] = _mm512_shuffle_i32x4::<0x88>(v01, x01);
                w[4 + m] = _mm512_shuffle_i32x4::<0xDD>(v01, x01);
                w[8 + m] = _mm512_shuffle_i32x4::<0x88>(v23, x23);
                w[12 + m] = _mm512_shuffle_i32x4::<0xDD>(v23, x23);
            }
            w
        }

        /// One block of each lane.
        ///
        /// # Safety
        /// The CPU must support AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn compress(state: &mut [[u32; LANES]; 4], blocks: &[&[u8; 64]; LANES]) {
            let w = transpose(blocks);
            // SAFETY: a state row is 16 words, 64 bytes: one unaligned load.
            let load = |s: &[u32; LANES]| unsafe { _mm512_loadu_si512(s.as_ptr().cast()) };
            let (mut a, mut b, mut c, mut d) = (
                load(&state[0]),
                load(&state[1]),
                load(&state[2]),
                load(&state[3]),
            );
            let (a0, b0, c0, d0) = (a, b, c, d);
            // a = b + rotl(a + f(b, c, d) + w + k, s), with f one ternary-logic op.
            macro_rules! step {
                ($f:literal, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $i:literal, $s:literal) => {
                    $a = _mm512_add_epi32(
                        $a,
                        _mm512_add_epi32($w, _mm512_set1_epi32(RC[$i] as i32)),
                    );
                    $a = _mm512_add_epi32($a, _mm512_ternarylogic_epi32::<$f>($b, $c, $d));
                    $a = _mm512_add_epi32($b, _mm512_rol_epi32::<$s>($a));
                };
            }
            step!(0xCA, a, b, c, d, w[0], 0, 7);
            step!(0xCA, d, a, b, c, w[1], 1, 12);
            step!(0xCA, c, d, a, b, w[2], 2, 17);
            step!(0xCA, b, c, d, a, w[3], 3, 22);
            step!(0xCA, a, b, c, d, w[4], 4, 7);
            step!(0xCA, d, a, b, c, w[5], 5, 12);
            step!(0xCA, c, d, a, b, w[6], 6, 17);
            step!(0xCA, b, c, d, a, w[7], 7, 22);
            step!(0xCA, a, b, c, d, w[8], 8, 7);
            step!(0xCA, d, a, b, c, w[9], 9, 12);
            step!(0xCA, c, d, a, b, w[10], 10, 17);
            step!(0xCA, b, c, d, a, w[11], 11, 22);
            step!(0xCA, a, b, c, d, w[12], 12, 7);
            step!(0xCA, d, a, b, c, w[13], 13, 12);
            step!(0xCA, c, d, a, b, w[14], 14, 17);
            step!(0xCA, b, c, d, a, w[15], 15, 22);
            step!(0xE4, a, b, c, d, w[1], 16, 5);
            step!(0xE4, d, a, b, c, w[6], 17, 9);
            step!(0xE4, c, d, a, b, w[11], 18, 14);
            step!(0xE4, b, c, d, a, w[0], 19, 20);
            step!(0xE4, a, b, c, d, w[5], 20, 5);
            step!(0xE4, d, a, b, c, w[10], 21, 9);
            step!(0xE4, c, d, a, b, w[15], 22, 14);
            step!(0xE4, b, c, d, a, w[4], 23, 20);
            step!(0xE4, a, b, c, d, w[9], 24, 5);
            step!(0xE4, d, a, b, c, w[14], 25, 9);
            step!(0xE4, c, d, a, b, w[3], 26, 14);
            step!(0xE4, b, c, d, a, w[8], 27, 20);
            step!(0xE4, a, b, c, d, w[13], 28, 5);
            step!(0xE4, d, a, b, c, w[2], 29, 9);
            step!(0xE4, c, d, a, b, w[7], 30, 14);
            step!(0xE4, b, c, d, a, w[12], 31, 20);
            step!(0x96, a, b, c, d, w[5], 32, 4);
            step!(0x96, d, a, b, c, w[8], 33, 11);
            step!(0x96, c, d, a, b, w[11], 34, 16);
            step!(0x96, b, c, d, a, w[14], 35, 23);
            step!(0x96, a, b, c, d, w[1], 36, 4);
            step!(0x96, d, a, b, c, w[4], 37, 11);
            step!(0x96, c, d, a, b, w[7], 38, 16);
            step!(0x96, b, c, d, a, w[10], 39, 23);
            step!(0x96, a, b, c, d, w[13], 40, 4);
            step!(0x96, d, a, b, c, w[0], 41, 11);
            step!(0x96, c, d, a, b, w[3], 42, 16);
            step!(0x96, b, c, d, a, w[6], 43, 23);
            step!(0x96, a, b, c, d, w[9], 44, 4);
            step!(0x96, d, a, b, c, w[12], 45, 11);
            step!(0x96, c, d, a, b, w[15], 46, 16);
            step!(0x96, b, c, d, a, w[2], 47, 23);
            step!(0x39, a, b, c, d, w[0], 48, 6);
            step!(0x39, d, a, b, c, w[7], 49, 10);
            step!(0x39, c, d, a, b, w[14], 50, 15);
            step!(0x39, b, c, d, a, w[5], 51, 21);
            step!(0x39, a, b, c, d, w[12], 52, 6);
            step!(0x39, d, a, b, c, w[3], 53, 10);
            step!(0x39, c, d, a, b, w[10], 54, 15);
            step!(0x39, b, c, d, a, w[1], 55, 21);
            step!(0x39, a, b, c, d, w[8], 56, 6);
            step!(0x39, d, a, b, c, w[15], 57, 10);
            step!(0x39, c, d, a, b, w[6], 58, 15);
            step!(0x39, b, c, d, a, w[13], 59, 21);
            step!(0x39, a, b, c, d, w[4], 60, 6);
            step!(0x39, d, a, b, c, w[11], 61, 10);
            step!(0x39, c, d, a, b, w[2], 62, 15);
            step!(0x39, b, c, d, a, w[9], 63, 21);
            // SAFETY: a state row is 16 words, 64 bytes: one unaligned store
            // into memory borrowed mutably.
            let store =
                |s: &mut [u32; LANES], v| unsafe { _mm512_storeu_si512(s.as_mut_ptr().cast(), v) };
            store(&mut state[0], _mm512_add_epi32(a, a0));
            store(&mut state[1], _mm512_add_epi32(b, b0));
            store(&mut state[2], _mm512_add_epi32(c, c0));
            store(&mut state[3], _mm512_add_epi32(d, d0));
        }
    }

    /// Eight lanes with AVX2, for CPUs without AVX-512.
    pub mod avx2 {
        use crate::md5core::RC;
        use std::arch::x86_64::*;

        pub const LANES: usize = 8;

        /// The 8 × 8 words `rows`, turned so that vector `i` holds word `i`
        /// of every row.
        #[target_feature(enable = "avx2")]
        fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
            let mut t = [_mm256_setzero_si256(); 8];
            for k in 0..4 {
                t[2 * k] = _mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]);
                t[2 * k + 1] = _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]);
            }
            let mut u = [_mm256_setzero_si256(); 8];
            for g in 0..2 {
                let t = &t[4 * g..4 * g + 4];
                u[4 * g] = _mm256_unpacklo_epi64(t[0], t[2]);
                u[4 * g + 1] = _mm256_unpackhi_epi64(t[0], t[2]);
                u[4 * g + 2] = _mm256_unpacklo_epi64(t[1], t[3]);
                u[4 * g + 3] = _mm256_unpackhi_epi64(t[1], t[3]);
            }
            let mut w = [_mm256_setzero_si256(); 8];
            for m in 0..4 {
                w[m] = _mm256_permute2x128_si256::<0x20>(u[m], u[4 + m]);
                w[4 + m] = _mm256_permute2x128_si256::<0x31>(u[m], u[4 + m]);
            }
            w
        }

        /// One block of each lane.
        ///
        /// # Safety
        /// The CPU must support AVX2.
        #[target_feature(enable = "avx2")]
        pub unsafe fn compress(state: &mut [[u32; LANES]; 4], blocks: &[&[u8; 64]; LANES]) {
            // SAFETY (all loads and stores): each pointer is to 32 bytes
            // inside a 64-byte block or an 8-word state row.
            let lo: [__m256i; 8] =
                std::array::from_fn(|l| unsafe { _mm256_loadu_si256(blocks[l].as_ptr().cast()) });
            let hi: [__m256i; 8] = std::array::from_fn(|l| unsafe {
                _mm256_loadu_si256(blocks[l].as_ptr().add(32).cast())
            });
            let (w_lo, w_hi) = (transpose(lo), transpose(hi));
            let w: [__m256i; 16] =
                std::array::from_fn(|i| if i < 8 { w_lo[i] } else { w_hi[i - 8] });
            let load = |s: &[u32; LANES]| unsafe { _mm256_loadu_si256(s.as_ptr().cast()) };
            let (mut a, mut b, mut c, mut d) = (
                load(&state[0]),
                load(&state[1]),
                load(&state[2]),
                load(&state[3]),
            );
            let (a0, b0, c0, d0) = (a, b, c, d);
            let ones = _mm256_set1_epi32(-1);
            // The round functions, in the forms with fewest operations.
            let f = |b, c, d| _mm256_xor_si256(d, _mm256_and_si256(b, _mm256_xor_si256(c, d)));
            let g = |b, c, d| _mm256_xor_si256(c, _mm256_and_si256(d, _mm256_xor_si256(b, c)));
            let h = |b, c, d| _mm256_xor_si256(_mm256_xor_si256(b, c), d);
            let i = |b, c, d| _mm256_xor_si256(c, _mm256_or_si256(b, _mm256_xor_si256(d, ones)));
            macro_rules! step {
                ($f:ident, $a:ident, $b:ident, $c:ident, $d:ident, $w:expr, $i:literal, $s:literal) => {
                    $a = _mm256_add_epi32(
                        $a,
                        _mm256_add_epi32($w, _mm256_set1_epi32(RC[$i] as i32)),
                    );
                    $a = _mm256_add_epi32($a, $f($b, $c, $d));
                    $a = _mm256_add_epi32(
                        $b,
                        _mm256_or_si256(
                            _mm256_slli_epi32::<$s>($a),
                            _mm256_srli_epi32::<{ 32 - $s }>($a),
                        ),
                    );
                };
            }
            step!(f, a, b, c, d, w[0], 0, 7);
            step!(f, d, a, b, c, w[1], 1, 12);
            step!(f, c, d, a, b, w[2], 2, 17);
            step!(f, b, c, d, a, w[3], 3, 22);
            step!(f, a, b, c, d, w[4], 4, 7);
            step!(f, d, a, b, c, w[5], 5, 12);
            step!(f, c, d, a, b, w[6], 6, 17);
            step!(f, b, c, d, a, w[7], 7, 22);
            step!(f, a, b, c, d, w[8], 8, 7);
            step!(f, d, a, b, c, w[9], 9, 12);
            step!(f, c, d, a, b, w[10], 10, 17);
            step!(f, b, c, d, a, w[11], 11, 22);
            step!(f, a, b, c, d, w[12], 12, 7);
            step!(f, d, a, b, c, w[13], 13, 12);
            step!(f, c, d, a, b, w[14], 14, 17);
            step!(f, b, c, d, a, w[15], 15, 22);
            step!(g, a, b, c, d, w[1], 16, 5);
            step!(g, d, a, b, c, w[6], 17, 9);
            step!(g, c, d, a, b, w[11], 18, 14);
            step!(g, b, c, d, a, w[0], 19, 20);
            step!(g, a, b, c, d, w[5], 20, 5);
            step!(g, d, a, b, c, w[10], 21, 9);
            step!(g, c, d, a, b, w[15], 22, 14);
            step!(g, b, c, d, a, w[4], 23, 20);
            step!(g, a, b, c, d, w[9], 24, 5);
            step!(g, d, a, b, c, w[14], 25, 9);
            step!(g, c, d, a, b, w[3], 26, 14);
            step!(g, b, c, d, a, w[8], 27, 20);
            step!(g, a, b, c, d, w[13], 28, 5);
            step!(g, d, a, b, c, w[2], 29, 9);
            step!(g, c, d, a, b, w[7], 30, 14);
            step!(g, b, c, d, a, w[12], 31, 20);
            step!(h, a, b, c, d, w[5], 32, 4);
            step!(h, d, a, b, c, w[8], 33, 11);
            step!(h, c, d, a, b, w[11], 34, 16);
            step!(h, b, c, d, a, w[14], 35, 23);
            step!(h, a, b, c, d, w[1], 36, 4);
            step!(h, d, a, b, c, w[4], 37, 11);
            step!(h, c, d, a, b, w[7], 38, 16);
            step!(h, b, c, d, a, w[10], 39, 23);
            step!(h, a, b, c, d, w[13], 40, 4);
            step!(h, d, a, b, c, w[0], 41, 11);
            step!(h, c, d, a, b, w[3], 42, 16);
            step!(h, b, c, d, a, w[6], 43, 23);
            step!(h, a, b, c, d, w[9], 44, 4);
            step!(h, d, a, b, c, w[12], 45, 11);
            step!(h, c, d, a, b, w[15], 46, 16);
            step!(h, b, c, d, a, w[2], 47, 23);
            step!(i, a, b, c, d, w[0], 48, 6);
            step!(i, d, a, b, c, w[7], 49, 10);
            step!(i, c, d, a, b, w[14], 50, 15);
            step!(i, b, c, d, a, w[5], 51, 21);
            step!(i, a, b, c, d, w[12], 52, 6);
            step!(i, d, a, b, c, w[3], 53, 10);
            step!(i, c, d, a, b, w[10], 54, 15);
            step!(i, b, c, d, a, w[1], 55, 21);
            step!(i, a, b, c, d, w[8], 56, 6);
            step!(i, d, a, b, c, w[15], 57, 10);
            step!(i, c, d, a, b, w[6], 58, 15);
            step!(i, b, c, d, a, w[13], 59, 21);
            step!(i, a, b, c, d, w[4], 60, 6);
            step!(i, d, a, b, c, w[11], 61, 10);
            step!(i, c, d, a, b, w[2], 62, 15);
            step!(i, b, c, d, a, w[9], 63, 21);
            let store =
                |s: &mut [u32; LANES], v| unsafe { _mm256_storeu_si256(s.as_mut_ptr().cast(), v) };
            store(&mut state[0], _mm256_add_epi32(a, a0));
            store(&mut state[1], _mm256_add_epi32(b, b0));
            store(&mut state[2], _mm256_add_epi32(c, c0));
            store(&mut state[3], _mm256_add_epi32(d, d0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use md5::Digest as _;
    use proptest::prelude::*;

    fn reference(m: &[u8]) -> Digest {
        md5::Md5::digest(m).into()
    }

    /// Checks `digests` and, where the CPU has them, each SIMD path.
    fn check(msgs: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let mut paths = vec![("chosen", digests(&refs))];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                let d = x86::digests(&refs, |s, b| unsafe { x86::avx512::compress(s, b) });
                paths.push(("avx512", d));
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                let d = x86::digests(&refs, |s, b| unsafe { x86::avx2::compress(s, b) });
                paths.push(("avx2", d));
            }
        }
        for (path, got) in paths {
            assert_eq!(got.len(), msgs.len(), "{path}");
            for (m, d) in msgs.iter().zip(&got) {
                assert_eq!(*d, reference(m), "{path}: message of {} bytes", m.len());
            }
        }
    }

    #[test]
    fn every_length_around_the_padding_edges() {
        // Lengths 0..=200 cover one and two tail blocks and every offset
        // of the 0x80 byte; 33 messages cover a lane refill.
        for start in [0usize, 40, 100, 160] {
            let msgs: Vec<Vec<u8>> = (start..start + 41)
                .map(|n| (0..n).map(|i| (i * 7 + n) as u8).collect())
                .collect();
            check(&msgs);
        }
    }

    #[test]
    fn rfc_1321_vectors_in_one_batch() {
        let msgs: Vec<Vec<u8>> = [
            "",
            "a",
            "abc",
            "message digest",
            "abcdefghijklmnopqrstuvwxyz",
            "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        check(&msgs);
        assert_eq!(
            crate::digest::hex(&digests(&[b"abc", b""])[0]),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    proptest! {
        #[test]
        fn random_batches_match_md5(msgs in proptest::collection::vec(
            proptest::collection::vec(any::<u8>(), 0..3000), 0..40)) {
            check(&msgs);
        }
    }
}
