//! MD5 helpers shared by both roles: hashing a file with progress, and hex.

use md5::digest::common::hazmat::{SerializableState, SerializedState};
use md5::{Digest, Md5};
use std::io::{self, Read};

/// An MD5 digest.
pub type Md5Digest = [u8; 16];

/// Buffer size for hashing files.
const HASH_CHUNK: usize = 1 << 20;

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter()
        .fold(String::with_capacity(d.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A running MD5.
#[derive(Clone, Default)]
pub struct Hasher(Md5);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Self {
        Hasher(Md5::new())
    }
    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        self.0.update(b);
    }
    /// The digest of everything added.
    pub fn finish(self) -> Md5Digest {
        self.0.finalize().into()
    }

    /// The hasher's internal state as bytes, to continue it later.
    pub fn save(&self) -> Vec<u8> {
        self.0.serialize().to_vec()
    }

    /// A hasher continued from [`Hasher::save`]'s bytes; `None` if they are
    /// not a valid state.
    pub fn restore(bytes: &[u8]) -> Option<Hasher> {
        let state = SerializedState::<Md5>::try_from(bytes).ok()?;
        Md5::deserialize(&state).ok().map(Hasher)
    }
}

/// Hashes exactly `len` bytes of `r`, calling `progress` with each chunk's
/// size. Fewer than `len` bytes is an `UnexpectedEof` error (the file shrank).
pub fn hash_reader(
    mut r: impl Read,
    len: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<Md5Digest> {
    let mut h = Hasher::new();
    // Sized to the file: zeroing a whole chunk for each small file costs
    // more than hashing it.
    let mut buf = vec![
        0u8;
        usize::try_from(len)
            .unwrap_or(HASH_CHUNK)
            .clamp(1, HASH_CHUNK)
    ];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match r.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "file shrank while it was read ({} of {len} bytes)",
                        len - left
                    ),
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        left -= n as u64;
        progress(n as u64);
    }
    Ok(h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let d = hash_reader(&b""[..], 0, |_| {}).expect("hash");
        assert_eq!(hex(&d), "d41d8cd98f00b204e9800998ecf8427e");
        let d = hash_reader(&b"abc"[..], 3, |_| {}).expect("hash");
        assert_eq!(hex(&d), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn saved_state_continues() {
        let mut h = Hasher::new();
        h.update(b"hello ");
        let saved = h.save();
        let mut r = Hasher::restore(&saved).expect("valid state");
        r.update(b"world");
        h.update(b"world");
        assert_eq!(r.finish(), h.finish());
        assert!(Hasher::restore(&saved[1..]).is_none());
    }

    #[test]
    fn short_input_is_an_error() {
        let e = hash_reader(&b"ab"[..], 3, |_| {}).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
