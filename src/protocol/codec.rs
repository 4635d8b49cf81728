//! Encoding and decoding of frames, sans I/O.
//!
//! Decoding is two-step and never panics: [`decode`] first checks that a
//! whole frame is buffered (`Ok(None)` means "need more bytes"), then parses
//! it. A length above [`MAX_CONTROL_PAYLOAD`], an unknown type, a payload of
//! the wrong size or trailing bytes are errors, never allocations.

use super::frame::*;
use super::limits::{
    DELTA_BLOCKS_MAX, DELTA_BLOCK_MAX, DELTA_BLOCK_MIN, DELTA_DIGESTS_PER_FRAME, FRAME_HEADER_LEN,
    MAGIC, MAX_CONTROL_PAYLOAD, MAX_PULL_PATHS,
};

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
        Frame::Noise { message } => out.extend_from_slice(message),
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
        Frame::Body { id, offset, length }
        | Frame::Hole { id, offset, length }
        | Frame::Same { id, offset, length } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&offset.to_be_bytes());
            out.extend_from_slice(&length.to_be_bytes());
        }
        Frame::Blocks {
            id,
            block,
            first,
            total,
            digests,
        } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
            out.extend_from_slice(&total.to_be_bytes());
            for d in digests.iter().take(DELTA_DIGESTS_PER_FRAME) {
                out.extend_from_slice(d);
            }
        }
        Frame::Xattr { id, name, value } => {
            out.extend_from_slice(&id.to_be_bytes());
            put_str(out, name);
            put_str(out, value);
        }
        Frame::Digest { id, md5 } | Frame::Prefix { id, md5 } => {
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(md5);
        }
        Frame::Ready | Frame::Push => {}
        Frame::End { flags } | Frame::Check { flags } => {
            out.extend_from_slice(&flags.to_be_bytes())
        }
        Frame::Pull {
            flags,
            part,
            parts,
            paths,
        } => {
            out.extend_from_slice(&flags.to_be_bytes());
            out.extend_from_slice(&part.to_be_bytes());
            out.extend_from_slice(&parts.to_be_bytes());
            let n = paths.len().min(MAX_PULL_PATHS);
            out.extend_from_slice(&(n as u16).to_be_bytes());
            for p in &paths[..n] {
                put_str(out, p);
            }
        }
        Frame::Left { path, message } => {
            put_str(out, path);
            put_str(out, short_text(message));
        }
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
    fn is_empty(&self) -> bool {
        self.buf.is_empty()
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
        kind::NOISE => Frame::Noise {
            message: r.array()?,
        },
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
        kind::SAME => Frame::Same {
            id: r.u32()?,
            offset: r.u64()?,
            length: r.u64()?,
        },
        kind::BLOCKS => {
            let id = r.u32()?;
            let block = r.u32()?;
            let first = r.u32()?;
            let total = r.u32()?;
            if !block.is_power_of_two() || !(DELTA_BLOCK_MIN..=DELTA_BLOCK_MAX).contains(&block) {
                return Err(FrameError::Field("BLOCKS block size"));
            }
            if total == 0 || total > DELTA_BLOCKS_MAX {
                return Err(FrameError::Field("BLOCKS total"));
            }
            let mut digests = Vec::new();
            while !r.is_empty() {
                if digests.len() == DELTA_DIGESTS_PER_FRAME {
                    return Err(FrameError::Field("BLOCKS holds too many digests"));
                }
                digests.push(r.array()?);
            }
            if digests.is_empty() || u64::from(first) + digests.len() as u64 > u64::from(total) {
                return Err(FrameError::Field("BLOCKS digests beyond its total"));
            }
            Frame::Blocks {
                id,
                block,
                first,
                total,
                digests,
            }
        }
        kind::PREFIX => Frame::Prefix {
            id: r.u32()?,
            md5: r.array()?,
        },
        kind::XATTR => Frame::Xattr {
            id: r.u32()?,
            name: r.bytes()?,
            value: r.bytes()?,
        },
        kind::DIGEST => Frame::Digest {
            id: r.u32()?,
            md5: r.array()?,
        },
        kind::BODY => Frame::Body {
            id: r.u32()?,
            offset: r.u64()?,
            length: r.u64()?,
        },
        kind::END => Frame::End { flags: r.u32()? },
        kind::READY => Frame::Ready,
        kind::PUSH => Frame::Push,
        kind::CHECK => Frame::Check { flags: r.u32()? },
        kind::PULL => {
            let flags = r.u32()?;
            let part = r.u16()?;
            let parts = r.u16()?;
            let count = usize::from(r.u16()?);
            if count > MAX_PULL_PATHS {
                return Err(FrameError::Field("PULL names too many paths"));
            }
            let mut paths = Vec::with_capacity(count);
            for _ in 0..count {
                paths.push(r.bytes()?);
            }
            Frame::Pull {
                flags,
                part,
                parts,
                paths,
            }
        }
        kind::LEFT => Frame::Left {
            path: r.bytes()?,
            message: r.text()?,
        },
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
#[path = "codec_tests.rs"]
mod tests;
