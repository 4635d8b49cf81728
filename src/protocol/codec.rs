//! Encoding and decoding of frames, sans I/O.
//!
//! Decoding is two-step and never panics: [`decode`] first checks that a
//! whole frame is buffered (`Ok(None)` means "need more bytes"), then parses
//! it. A length above [`MAX_CONTROL_PAYLOAD`], an unknown type, a payload of
//! the wrong size or trailing bytes are errors, never allocations.

use super::frame::*;
use super::limits::{FRAME_HEADER_LEN, MAGIC, MAX_CONTROL_PAYLOAD};

/// Appends `s` as `len:u16 + bytes`, cutting it at 65535 bytes (on a char
/// boundary when it is text).
fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(&s[..n]);
}

/// Cuts a message to a length that keeps a control frame under the cap.
fn short_text(s: &str) -> &[u8] {
    const MAX: usize = 4096;
    if s.len() <= MAX {
        return s.as_bytes();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

/// Appends the encoding of `frame` (header and payload) to `out`.
///
/// Names longer than a `str` can carry are cut; messages are cut at 4 KiB so
/// a frame never exceeds [`MAX_CONTROL_PAYLOAD`].
pub fn encode(frame: &Frame, out: &mut Vec<u8>) {
    let start = out.len();
    out.push(frame.kind());
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Hello {
            version,
            flags,
            agent,
        } => {
            out.extend_from_slice(&MAGIC);
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&flags.to_be_bytes());
            put_str(out, short_text(agent));
        }
        Frame::Welcome {
            version,
            flags,
            nonce,
            agent,
        } => {
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(nonce);
            put_str(out, short_text(agent));
        }
        Frame::Auth { mac } => out.extend_from_slice(mac),
        Frame::File(h) => {
            out.extend_from_slice(&h.id.to_be_bytes());
            out.extend_from_slice(&h.size.to_be_bytes());
            out.extend_from_slice(&h.mode.to_be_bytes());
            out.extend_from_slice(&h.mtime_s.to_be_bytes());
            out.extend_from_slice(&h.mtime_ns.to_be_bytes());
            out.extend_from_slice(&h.flags.to_be_bytes());
            out.extend_from_slice(&h.md5);
            put_str(out, &h.path);
        }
        Frame::Dir(h) => {
            out.extend_from_slice(&h.id.to_be_bytes());
            out.extend_from_slice(&h.mode.to_be_bytes());
            out.extend_from_slice(&h.mtime_s.to_be_bytes());
            out.extend_from_slice(&h.mtime_ns.to_be_bytes());
            put_str(out, &h.path);
        }
        Frame::Symlink {
            id,
            mtime_s,
            mtime_ns,
            path,
            target,
        } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&mtime_s.to_be_bytes());
            out.extend_from_slice(&mtime_ns.to_be_bytes());
            put_str(out, path);
            put_str(out, target);
        }
        Frame::Link { id, path, target } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, path);
            put_str(out, target);
        }
        Frame::Body { id, offset, length } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&length.to_be_bytes());
        }
        Frame::Hole { id, offset, length } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&length.to_be_bytes());
        }
        Frame::End => {}
        Frame::Accept { id, offset } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
        }
        Frame::Skip { id, reason } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.push(*reason);
        }
        Frame::Reject { id, code, message } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            put_str(out, short_text(message));
        }
        Frame::Result {
            id,
            status,
            md5,
            message,
        } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.push(*status);
            out.extend_from_slice(md5);
            put_str(out, short_text(message));
        }
        Frame::Summary {
            files_ok,
            files_failed,
            bytes,
        } => {
            out.extend_from_slice(&files_ok.to_be_bytes());
            out.extend_from_slice(&files_failed.to_be_bytes());
            out.extend_from_slice(&bytes.to_be_bytes());
        }
        Frame::Error { code, message } => {
            out.extend_from_slice(&code.to_be_bytes());
            put_str(out, short_text(message));
        }
    }
    let len = (out.len() - start - FRAME_HEADER_LEN) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

/// Encodes one frame into a fresh buffer.
pub fn to_bytes(frame: &Frame) -> Vec<u8> {
    let mut v = Vec::new();
    encode(frame, &mut v);
    v
}

// ---------------------------------------------------------------- decoding

/// A cursor over one frame's payload; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated(self.what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_be_bytes(self.array()?))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, FrameError> {
        let n = self.u16()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    /// Peer text: decoded lossily (it is escaped before printing anyway).
    fn text(&mut self) -> Result<String, FrameError> {
        let n = self.u16()? as usize;
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }
    fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing(self.what, self.buf.len()))
        }
    }
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (read more and
/// try again), `Ok(Some((frame, consumed)))` when a whole frame was parsed,
/// and an error when the bytes can never become a valid frame. For BODY,
/// `consumed` covers the 25-byte header only: the raw bytes follow.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let t = buf[0];
    let what = kind_name(t);
    if what == "unknown" {
        return Err(FrameError::UnknownType(t));
    }
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len > MAX_CONTROL_PAYLOAD {
        return Err(FrameError::TooLong {
            len,
            max: MAX_CONTROL_PAYLOAD,
        });
    }
    let total = FRAME_HEADER_LEN + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader {
        buf: &buf[FRAME_HEADER_LEN..total],
        what,
    };
    let frame = match t {
        kind::HELLO => {
            if r.array::<4>()? != MAGIC {
                return Err(FrameError::BadMagic);
            }
            Frame::Hello {
                version: r.u16()?,
                flags: r.u32()?,
                agent: r.text()?,
            }
        }
        kind::WELCOME => Frame::Welcome {
            version: r.u16()?,
            flags: r.u32()?,
            nonce: r.array()?,
            agent: r.text()?,
        },
        kind::AUTH => Frame::Auth { mac: r.array()? },
        kind::FILE => Frame::File(FileHeader {
            id: r.u32()?,
            size: r.u64()?,
            mode: r.u32()?,
            mtime_s: r.i64()?,
            mtime_ns: r.u32()?,
            flags: r.u32()?,
            md5: r.array()?,
            path: r.bytes()?,
        }),
        kind::DIR => Frame::Dir(DirHeader {
            id: r.u32()?,
            mode: r.u32()?,
            mtime_s: r.i64()?,
            mtime_ns: r.u32()?,
            path: r.bytes()?,
        }),
        kind::SYMLINK => Frame::Symlink {
            id: r.u32()?,
            mtime_s: r.i64()?,
            mtime_ns: r.u32()?,
            path: r.bytes()?,
            target: r.bytes()?,
        },
        kind::LINK => Frame::Link {
            id: r.u32()?,
            path: r.bytes()?,
            target: r.bytes()?,
        },
        kind::HOLE => Frame::Hole {
            id: r.u32()?,
            offset: r.u64()?,
            length: r.u64()?,
        },
        kind::BODY => Frame::Body {
            id: r.u32()?,
            offset: r.u64()?,
            length: r.u64()?,
        },
        kind::END => Frame::End,
        kind::ACCEPT => Frame::Accept {
            id: r.u32()?,
            offset: r.u64()?,
        },
        kind::SKIP => Frame::Skip {
            id: r.u32()?,
            reason: r.u8()?,
        },
        kind::REJECT => Frame::Reject {
            id: r.u32()?,
            code: r.u16()?,
            message: r.text()?,
        },
        kind::RESULT => Frame::Result {
            id: r.u32()?,
            status: r.u8()?,
            md5: r.array()?,
            message: r.text()?,
        },
        kind::SUMMARY => Frame::Summary {
            files_ok: r.u32()?,
            files_failed: r.u32()?,
            bytes: r.u64()?,
        },
        kind::ERROR => Frame::Error {
            code: r.u16()?,
            message: r.text()?,
        },
        other => return Err(FrameError::UnknownType(other)),
    };
    r.finish()?;
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One valid frame of every type.
    pub(crate) fn samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: 1,
                flags: 0,
                agent: "ftx/0.1.0".into(),
            },
            Frame::Welcome {
                version: 1,
                flags: 1,
                nonce: [7; 32],
                agent: "ftx/0.1.0 ünï".into(),
            },
            Frame::Auth { mac: [9; 32] },
            Frame::File(FileHeader {
                id: 3,
                size: u64::MAX,
                mode: 0o100644,
                mtime_s: -5,
                mtime_ns: 999_999_999,
                flags: 1,
                md5: [0xab; 16],
                path: b"dir/with space/\xff".to_vec(),
            }),
            Frame::Dir(DirHeader {
                id: 4,
                mode: 0o40755,
                mtime_s: 1_700_000_000,
                mtime_ns: 1,
                path: b"dir".to_vec(),
            }),
            Frame::Body {
                id: 3,
                offset: 10,
                length: 20,
            },
            Frame::End,
            Frame::Accept { id: 3, offset: 0 },
            Frame::Skip { id: 3, reason: 1 },
            Frame::Reject {
                id: 3,
                code: reject_code::UNSAFE_NAME,
                message: "bad".into(),
            },
            Frame::Result {
                id: 3,
                status: result_status::OK,
                md5: [1; 16],
                message: String::new(),
            },
            Frame::Summary {
                files_ok: 1,
                files_failed: 2,
                bytes: 3,
            },
            Frame::Error {
                code: error_code::PROTOCOL,
                message: "boom".into(),
            },
            Frame::Symlink {
                id: 4,
                mtime_s: -1,
                mtime_ns: 5,
                path: b"lib/libfoo.so".to_vec(),
                target: b"libfoo.so.1".to_vec(),
            },
            Frame::Hole {
                id: 6,
                offset: 4096,
                length: 1 << 30,
            },
            Frame::Link {
                id: 5,
                path: b"b/same".to_vec(),
                target: b"a/same".to_vec(),
            },
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for f in samples() {
            let bytes = to_bytes(&f);
            let (back, used) = decode(&bytes)
                .expect("valid frame")
                .expect("complete frame");
            assert_eq!(back, f);
            assert_eq!(used, bytes.len(), "{}", f.name());
        }
    }

    #[test]
    fn every_strict_prefix_is_incomplete() {
        for f in samples() {
            let bytes = to_bytes(&f);
            for cut in 0..bytes.len() {
                assert_eq!(decode(&bytes[..cut]), Ok(None), "{} cut at {cut}", f.name());
            }
        }
    }

    #[test]
    fn frames_decode_back_to_back() {
        let mut buf = Vec::new();
        for f in samples() {
            encode(&f, &mut buf);
        }
        let mut at = 0;
        let mut n = 0;
        while let Some((_, used)) = decode(&buf[at..]).expect("valid") {
            at += used;
            n += 1;
        }
        assert_eq!(n, samples().len());
        assert_eq!(at, buf.len());
    }

    #[test]
    fn unknown_type_is_an_error() {
        for t in [0x00u8, 0x04, 0x17, 0x25, 0x7E, 0x80, 0xFF] {
            assert_eq!(decode(&[t]), Err(FrameError::UnknownType(t)));
            assert_eq!(decode(&[t, 0, 0, 0, 0]), Err(FrameError::UnknownType(t)));
        }
    }

    #[test]
    fn oversize_length_is_an_error_not_an_allocation() {
        for len in [MAX_CONTROL_PAYLOAD + 1, 1 << 31, u32::MAX] {
            let mut b = vec![kind::FILE];
            b.extend_from_slice(&len.to_be_bytes());
            assert!(matches!(decode(&b), Err(FrameError::TooLong { .. })));
        }
    }

    #[test]
    fn wrong_sizes_are_errors() {
        // END with a payload byte.
        assert!(matches!(
            decode(&[kind::END, 0, 0, 0, 1, 0]),
            Err(FrameError::Trailing(..))
        ));
        // ACCEPT with a short payload.
        assert!(matches!(
            decode(&[kind::ACCEPT, 0, 0, 0, 2, 0, 0]),
            Err(FrameError::Truncated(..))
        ));
        // FILE whose str length points past the payload.
        let mut f = to_bytes(&samples()[3]);
        let path_len_at = f.len() - b"dir/with space/\xff".len() - 2;
        f[path_len_at] = 0xff; // high byte of the path's u16 length
        assert!(decode(&f).is_err());
        // HELLO with a wrong magic.
        let mut h = to_bytes(&samples()[0]);
        h[5] = b'X';
        assert_eq!(decode(&h), Err(FrameError::BadMagic));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn arbitrary_payload_after_valid_type_never_panics(
            t in prop::sample::select(vec![1u8, 2, 3, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20, 0x21, 0x22, 0x23, 0x24, 0x7f]),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut b = vec![t];
            b.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            b.extend_from_slice(&payload);
            if let Ok(Some((_, used))) = decode(&b) {
                prop_assert!(used <= b.len());
            }
        }

        #[test]
        fn file_headers_round_trip(
            id in any::<u32>(), size in any::<u64>(), mode in any::<u32>(),
            mtime_s in any::<i64>(), mtime_ns in any::<u32>(), md5 in any::<[u8; 16]>(),
            path in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let f = Frame::File(FileHeader { id, size, mode, mtime_s, mtime_ns, flags: 0, md5, path });
            let b = to_bytes(&f);
            prop_assert_eq!(decode(&b), Ok(Some((f, b.len()))));
        }
    }
}
