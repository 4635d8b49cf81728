//! Digests shared by both roles (MD5, or XXH3-128 on request): hashing a
//! file with progress, and hex.

use crate::md5core::Md5;
use std::io::{self, Read};

/// An MD5 digest.
pub type Md5Digest = [u8; 16];

/// Buffer size for hashing files.
const HASH_CHUNK: usize = 1 << 20;

/// Lower-case hex of a digest.
pub fn hex(d: &[u8]) -> String {
    let mut s = String::with_capacity(d.len() * 2);
    push_hex(&mut s, d);
    s
}

/// Appends `d` in lowercase hex to `out`.
pub fn push_hex(out: &mut String, d: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    // A digest's worth at a time, then one append (not one per digit).
    for part in d.chunks(32) {
        let mut hex = [0u8; 64];
        for (pair, b) in hex.chunks_exact_mut(2).zip(part) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        let hex = &hex[..2 * part.len()];
        out.push_str(std::str::from_utf8(hex).unwrap_or_default());
    }
}

/// Which digest a file is checked with: MD5 (the default, and what the
/// header's `md5` field is named after) or XXH3-128 (`--hash xxh3`), for
/// links faster than one core's MD5. Both are 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algo {
    /// MD5.
    #[default]
    Md5,
    /// XXH3, 128 bits (its big-endian bytes).
    Xxh3,
}

impl Algo {
    /// Its name, as the command line, the lines and `--json` say it.
    pub fn name(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Xxh3 => "xxh3",
        }
    }
}

/// A running digest: MD5 (see [`crate::md5core`]) or XXH3-128.
#[derive(Clone)]
pub enum Hasher {
    /// MD5.
    Md5(Md5),
    /// XXH3-128.
    Xxh3(Box<xxhash_rust::xxh3::Xxh3>),
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

impl Hasher {
    /// A fresh MD5.
    pub fn new() -> Self {
        Hasher::Md5(Md5::default())
    }

    /// A fresh hasher of `algo`.
    pub fn with(algo: Algo) -> Self {
        match algo {
            Algo::Md5 => Hasher::new(),
            Algo::Xxh3 => Hasher::Xxh3(Box::default()),
        }
    }

    /// Its algorithm.
    pub fn algo(&self) -> Algo {
        match self {
            Hasher::Md5(_) => Algo::Md5,
            Hasher::Xxh3(_) => Algo::Xxh3,
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Xxh3(h) => h.update(b),
        }
    }

    /// The digest of everything added.
    pub fn finish(self) -> Md5Digest {
        match self {
            Hasher::Md5(h) => h.finish(),
            Hasher::Xxh3(h) => h.digest128().to_be_bytes(),
        }
    }

    /// The hasher's internal state as bytes, to continue it later (MD5
    /// only: an XXH3 hasher saves nothing, and is rebuilt from the bytes).
    pub fn save(&self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.save(),
            Hasher::Xxh3(_) => Vec::new(),
        }
    }

    /// An MD5 continued from [`Hasher::save`]'s bytes; `None` if they are
    /// not a valid state.
    pub fn restore(bytes: &[u8]) -> Option<Hasher> {
        Md5::restore(bytes).map(Hasher::Md5)
    }
}

/// The digest of `data` with `algo`.
pub fn digest_of(algo: Algo, data: &[u8]) -> Md5Digest {
    let mut h = Hasher::with(algo);
    h.update(data);
    h.finish()
}

/// [`hash_reader`] with another algorithm.
pub fn hash_reader_as(
    algo: Algo,
    r: impl Read + Send,
    len: u64,
    progress: impl FnMut(u64),
) -> io::Result<Md5Digest> {
    if algo == Algo::Md5 {
        return hash_reader(r, len, progress);
    }
    hash_serial_with(Hasher::with(algo), r, len, progress)
}

/// Hashes exactly `len` bytes of `r`, calling `progress` with each chunk's
/// size. Fewer than `len` bytes is an `UnexpectedEof` error (the file shrank).
///
/// From [`OVERLAP_MIN`] bytes on, a helper thread reads the next chunks
/// while this one hashes: MD5 alone is the bound, not MD5 plus copying the
/// file out of the page cache (on the development machine that took about
/// 0.2 s off hashing a 1 GiB file).
pub fn hash_reader(
    r: impl Read + Send,
    len: u64,
    progress: impl FnMut(u64),
) -> io::Result<Md5Digest> {
    if len < OVERLAP_MIN {
        return hash_serial(r, len, progress);
    }
    hash_overlapped(r, len, progress)
}

/// Reads a whole file of `len` bytes (its size when it was opened) into
/// memory not zeroed first; an error if it has fewer.
pub fn read_whole(r: impl Read, len: u64) -> io::Result<Vec<u8>> {
    let mut data = Vec::with_capacity(usize::try_from(len).map_err(io::Error::other)?);
    r.take(len).read_to_end(&mut data)?;
    let got = data.len() as u64;
    if got < len {
        return Err(shrank(got, len));
    }
    Ok(data)
}

/// Reads `len` bytes of `file` and says whether it had more: one `read`
/// for a small file (its buffer has room for one more byte, so a file
/// that grew since it was measured shows it in the same call), into
/// memory not zeroed first (zeroing it was 3-4 % of the sender's CPU on
/// small files). Short of `len` bytes is an error, as in [`read_whole`].
pub fn read_whole_or_more(file: impl std::os::fd::AsFd, len: u64) -> io::Result<(Vec<u8>, bool)> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut data = Vec::with_capacity(len + 1);
    // At least one read, even of an empty file (a /proc file says 0 bytes
    // and has more).
    loop {
        match rustix::io::read(&file, rustix::buffer::spare_capacity(&mut data)) {
            Ok(0) => break,
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
        if data.len() >= len {
            break;
        }
    }
    let got = data.len();
    if got < len {
        return Err(shrank(got as u64, len as u64));
    }
    let more = got > len;
    data.truncate(len);
    Ok((data, more))
}

/// Files from this size on are read by a helper thread while hashed.
const OVERLAP_MIN: u64 = 4 * HASH_CHUNK as u64;
/// Buffers cycling between the reading and the hashing thread.
const OVERLAP_BUFS: usize = 3;

fn shrank(got: u64, len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file shrank while it was read ({got} of {len} bytes)"),
    )
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn hash_serial(r: impl Read, len: u64, progress: impl FnMut(u64)) -> io::Result<Md5Digest> {
    hash_serial_with(Hasher::new(), r, len, progress)
}

fn hash_serial_with(
    mut h: Hasher,
    mut r: impl Read,
    len: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<Md5Digest> {
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
        let n = fill(&mut r, &mut buf[..want])?;
        if n == 0 {
            return Err(shrank(len - left, len));
        }
        h.update(&buf[..n]);
        left -= n as u64;
        progress(n as u64);
    }
    Ok(h.finish())
}

fn hash_overlapped(
    mut r: impl Read + Send,
    len: u64,
    mut progress: impl FnMut(u64),
) -> io::Result<Md5Digest> {
    use std::sync::mpsc::sync_channel;
    let (full_tx, full) = sync_channel::<io::Result<(Vec<u8>, usize)>>(OVERLAP_BUFS);
    let (empty, empty_rx) = sync_channel::<Vec<u8>>(OVERLAP_BUFS);
    for _ in 0..OVERLAP_BUFS {
        let _ = empty.send(vec![0u8; HASH_CHUNK]);
    }
    std::thread::scope(|sc| {
        sc.spawn(move || {
            let mut left = len;
            while left > 0 {
                // Ends when the hashing side is gone (error or done).
                let Ok(mut buf) = empty_rx.recv() else {
                    return;
                };
                let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                let read = match fill(&mut r, &mut buf[..want]) {
                    Ok(0) => Err(shrank(len - left, len)),
                    Ok(n) => Ok((buf, n)),
                    Err(e) => Err(e),
                };
                let failed = read.is_err();
                if let Ok((_, n)) = &read {
                    left -= *n as u64;
                }
                if full_tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        // `full` and `empty` are dropped when this closure returns, early or
        // not, which ends the reader before the scope waits for it.
        let (full, empty) = (full, empty);
        let mut h = Hasher::new();
        let mut done = 0u64;
        while done < len {
            let (buf, n) = match full.recv() {
                Ok(read) => read?,
                Err(_) => return Err(io::Error::other("the reading thread stopped")),
            };
            h.update(&buf[..n]);
            done += n as u64;
            progress(n as u64);
            let _ = empty.send(buf);
        }
        Ok(h.finish())
    })
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
    fn hex_is_every_byte_in_two_lowercase_digits() {
        let all: Vec<u8> = (0..=255).collect();
        let want: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), want);
        let mut out = String::from("x ");
        push_hex(&mut out, &all[..3]);
        assert_eq!(out, "x 000102");
        assert_eq!(hex(&[]), "");
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
        // The same through the reading thread, short by one byte and short
        // by more than the buffers in flight.
        let data = vec![7u8; OVERLAP_MIN as usize];
        for len in [OVERLAP_MIN + 1, OVERLAP_MIN + 10 * HASH_CHUNK as u64] {
            let e = hash_reader(&data[..], len, |_| {}).expect_err("short");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn read_whole_keeps_the_bytes_and_catches_a_short_file() {
        let data = read_whole(&b"abcdef"[..], 3).expect("read");
        assert_eq!(data, b"abc");
        let e = read_whole(&b"ab"[..], 3).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn read_whole_or_more_says_when_there_is_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |content: &[u8]| {
            let p = dir.path().join("f");
            std::fs::write(&p, content).expect("write");
            std::fs::File::open(&p).expect("open")
        };
        assert_eq!(
            read_whole_or_more(file(b"abc"), 3).expect("read"),
            (b"abc".to_vec(), false)
        );
        assert_eq!(
            read_whole_or_more(file(b"abcd"), 3).expect("read"),
            (b"abc".to_vec(), true)
        );
        assert_eq!(
            read_whole_or_more(file(b""), 0).expect("read"),
            (Vec::new(), false)
        );
        assert_eq!(
            read_whole_or_more(file(b"a"), 0).expect("read"),
            (Vec::new(), true),
            "said empty, reads more"
        );
        let e = read_whole_or_more(file(b"ab"), 3).expect_err("short");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        // Much more than said: still only what was said, and "more".
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        assert_eq!(
            read_whole_or_more(file(&big), 1000).expect("read"),
            (big[..1000].to_vec(), true)
        );
        // Read in pieces (a pipe gives what was written so far): the
        // extra byte may come with the last one.
        let (r, w) = rustix::pipe::pipe().expect("pipe");
        let writer = std::thread::spawn(move || {
            for piece in [&b"ab"[..], b"cd"] {
                rustix::io::write(&w, piece).expect("write");
                std::thread::yield_now();
            }
        });
        let got = read_whole_or_more(&r, 3).expect("read");
        writer.join().expect("writer");
        assert_eq!(got.0, b"abc");
    }

    #[test]
    fn overlapped_hashing_matches_serial() {
        let data: Vec<u8> = (0..OVERLAP_MIN as usize + 3 * HASH_CHUNK + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for len in [OVERLAP_MIN - 1, OVERLAP_MIN, data.len() as u64] {
            let part = &data[..len as usize];
            let mut seen = 0;
            let got = hash_reader(part, len, |n| seen += n).expect("hash");
            let want = hash_serial(part, len, |_| {}).expect("hash");
            assert_eq!(got, want, "{len} bytes");
            assert_eq!(seen, len, "progress adds up for {len} bytes");
        }
        // Only `len` bytes are hashed even if the reader has more.
        let got = hash_reader(&data[..], OVERLAP_MIN, |_| {}).expect("hash");
        let want = hash_serial(&data[..OVERLAP_MIN as usize], OVERLAP_MIN, |_| {}).expect("hash");
        assert_eq!(got, want);
    }
}
