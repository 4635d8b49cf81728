//! Frames of protocol v1: the [`Frame`] enum, [`encode`] and [`decode`].
//!
//! Every message is a frame:
//!
//! ```text
//! +--------+----------------+---------------------+
//! | type:u8| len:u32 (BE)   | payload[len]        |
//! +--------+----------------+---------------------+
//! integers are big-endian; str = len:u16 + bytes
//! ```
//!
//! Decoding is two-step and never panics: [`decode`] first checks that a
//! whole frame is buffered (`Ok(None)` means "need more bytes"), then parses
//! it. A length above [`MAX_CONTROL_PAYLOAD`], an unknown type, a payload of
//! the wrong size or trailing bytes are errors, never allocations.
//!
//! BODY is the one frame followed by bytes outside it: its 20-byte payload
//! announces `length`, and exactly that many raw file bytes follow on the
//! wire. [`decode`] returns only the BODY header; the caller reads the raw
//! bytes.

use super::limits::{FRAME_HEADER_LEN, MAGIC, MAX_CONTROL_PAYLOAD};

/// Frame type bytes.
pub mod kind {
    /// S→R: magic, version, flags, agent.
    pub const HELLO: u8 = 0x01;
    /// R→S: version, flags, nonce, agent.
    pub const WELCOME: u8 = 0x02;
    /// S→R: HMAC over the nonce.
    pub const AUTH: u8 = 0x03;
    /// S→R: offer of a regular file.
    pub const FILE: u8 = 0x10;
    /// S→R: offer of a directory.
    pub const DIR: u8 = 0x11;
    /// S→R: header of a file body; raw bytes follow.
    pub const BODY: u8 = 0x12;
    /// S→R: no more entries.
    pub const END: u8 = 0x13;
    /// R→S: send the file from an offset.
    pub const ACCEPT: u8 = 0x20;
    /// R→S: do not send the file.
    pub const SKIP: u8 = 0x21;
    /// R→S: the offer is refused.
    pub const REJECT: u8 = 0x22;
    /// R→S: outcome of a file or directory.
    pub const RESULT: u8 = 0x23;
    /// R→S: answer to END.
    pub const SUMMARY: u8 = 0x24;
    /// Both ways: fatal for the session.
    pub const ERROR: u8 = 0x7F;
}

/// ERROR codes (fatal for the session).
pub mod error_code {
    /// The peer broke the protocol (malformed frame, unexpected frame).
    pub const PROTOCOL: u16 = 1;
    /// The peer speaks a version we do not.
    pub const VERSION: u16 = 2;
    /// Authentication failed.
    pub const AUTH: u16 = 3;
    /// The receiver serves too many sessions.
    pub const BUSY: u16 = 4;
    /// The peer was silent for too long.
    pub const TIMEOUT: u16 = 5;
    /// An internal error on the side that sends the ERROR.
    pub const INTERNAL: u16 = 6;
}

/// REJECT codes (the offer is refused; the session goes on).
pub mod reject_code {
    /// The name breaks the name rules.
    pub const UNSAFE_NAME: u16 = 10;
    /// Another file already sits under the name and `--overwrite` is off.
    pub const EXISTS: u16 = 11;
    /// The file does not fit in the free space.
    pub const NO_SPACE: u16 = 12;
    /// The name clashes: same target twice, file vs directory, or a symlink.
    pub const CONFLICT: u16 = 13;
    /// The receiver could not create or write the entry.
    pub const IO: u16 = 14;
    /// Another session is receiving this file right now (perhaps the
    /// sender's own earlier connection, not yet noticed dead): try again
    /// later. Senders treat it as a transient failure.
    pub const IN_PROGRESS: u16 = 15;
}

/// SKIP reasons.
pub mod skip_reason {
    /// The receiver already holds the same size and MD5.
    pub const IDENTICAL: u8 = 1;
}

/// RESULT status values.
pub mod result_status {
    /// Verified and in place under its final name.
    pub const OK: u8 = 0;
    /// The receiver's MD5 differs from the FILE header's.
    pub const DIGEST_MISMATCH: u8 = 1;
    /// The receiver failed to write the entry.
    pub const IO_ERROR: u8 = 2;
}

/// Re-exports so callers can name the code families as types.
pub use error_code as ErrorCode;
pub use reject_code as RejectCode;
pub use result_status as ResultStatus;

/// The offer of a regular file.
///
/// ```text
/// id:u32 size:u64 mode:u32 mtime_s:i64 mtime_ns:u32 md5:[16] path:str
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    /// Sender-chosen id, echoed in the answers.
    pub id: u32,
    /// Size of the whole file in bytes.
    pub size: u64,
    /// Unix mode; only `0o777` is ever applied.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// MD5 of the whole file, computed before the offer.
    pub md5: [u8; 16],
    /// Wire name, raw: validated by the receiver with [`super::WireName`].
    pub path: Vec<u8>,
}

/// The offer of a directory.
///
/// ```text
/// id:u32 mode:u32 mtime_s:i64 mtime_ns:u32 path:str
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirHeader {
    /// Sender-chosen id.
    pub id: u32,
    /// Unix mode; only `0o777` is ever applied.
    pub mode: u32,
    /// Modification time, seconds.
    pub mtime_s: i64,
    /// Modification time, nanoseconds part.
    pub mtime_ns: u32,
    /// Wire name, raw.
    pub path: Vec<u8>,
}

/// One message of protocol v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// ```text
    /// magic:"FTX1" version:u16 flags:u32 agent:str
    /// ```
    Hello {
        /// Protocol version.
        version: u16,
        /// Feature flags (none defined yet).
        flags: u32,
        /// Free-form software name.
        agent: String,
    },
    /// ```text
    /// version:u16 flags:u32 nonce:[32] agent:str
    /// ```
    Welcome {
        /// Protocol version.
        version: u16,
        /// Bit 0: AUTH required.
        flags: u32,
        /// Random challenge for AUTH.
        nonce: [u8; 32],
        /// Free-form software name.
        agent: String,
    },
    /// ```text
    /// mac:[32]
    /// ```
    Auth {
        /// HMAC-SHA256 of the nonce under the shared token.
        mac: [u8; 32],
    },
    /// A file offer.
    File(FileHeader),
    /// A directory offer.
    Dir(DirHeader),
    /// ```text
    /// id:u32 offset:u64 length:u64      then `length` raw bytes
    /// ```
    Body {
        /// Id of the accepted file.
        id: u32,
        /// Equals the accepted offset.
        offset: u64,
        /// Number of raw bytes that follow; `offset + length == size`.
        length: u64,
    },
    /// No more entries (empty payload).
    End,
    /// ```text
    /// id:u32 offset:u64
    /// ```
    Accept {
        /// Id of the offer.
        id: u32,
        /// Send from here (0 = whole file).
        offset: u64,
    },
    /// ```text
    /// id:u32 reason:u8
    /// ```
    Skip {
        /// Id of the offer.
        id: u32,
        /// See [`skip_reason`].
        reason: u8,
    },
    /// ```text
    /// id:u32 code:u16 message:str
    /// ```
    Reject {
        /// Id of the offer.
        id: u32,
        /// See [`reject_code`].
        code: u16,
        /// Human-readable reason (peer text: escape before printing).
        message: String,
    },
    /// ```text
    /// id:u32 status:u8 md5:[16] message:str
    /// ```
    Result {
        /// Id of the entry.
        id: u32,
        /// See [`result_status`].
        status: u8,
        /// MD5 the receiver computed (zero for directories).
        md5: [u8; 16],
        /// Human-readable detail.
        message: String,
    },
    /// ```text
    /// files_ok:u32 files_failed:u32 bytes:u64
    /// ```
    Summary {
        /// Entries verified or skipped.
        files_ok: u32,
        /// Entries that failed or were refused.
        files_failed: u32,
        /// Body bytes received in the session.
        bytes: u64,
    },
    /// ```text
    /// code:u16 message:str
    /// ```
    Error {
        /// See [`error_code`].
        code: u16,
        /// Human-readable reason.
        message: String,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte is not one of protocol v1.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The length field is above the control-frame cap.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLong {
        /// Announced length.
        len: u32,
        /// The cap.
        max: u32,
    },
    /// The payload is shorter than its fields need.
    #[error("{0} frame is truncated")]
    Truncated(&'static str),
    /// The payload has bytes after its last field.
    #[error("{0} frame has {1} trailing bytes")]
    Trailing(&'static str, usize),
    /// HELLO does not start with "FTX1".
    #[error("bad magic: not an ftx peer")]
    BadMagic,
}

/// Name of a frame type, for messages.
pub fn kind_name(t: u8) -> &'static str {
    match t {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::AUTH => "AUTH",
        kind::FILE => "FILE",
        kind::DIR => "DIR",
        kind::BODY => "BODY",
        kind::END => "END",
        kind::ACCEPT => "ACCEPT",
        kind::SKIP => "SKIP",
        kind::REJECT => "REJECT",
        kind::RESULT => "RESULT",
        kind::SUMMARY => "SUMMARY",
        kind::ERROR => "ERROR",
        _ => "unknown",
    }
}

impl Frame {
    /// The type byte of this frame.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => kind::HELLO,
            Frame::Welcome { .. } => kind::WELCOME,
            Frame::Auth { .. } => kind::AUTH,
            Frame::File(_) => kind::FILE,
            Frame::Dir(_) => kind::DIR,
            Frame::Body { .. } => kind::BODY,
            Frame::End => kind::END,
            Frame::Accept { .. } => kind::ACCEPT,
            Frame::Skip { .. } => kind::SKIP,
            Frame::Reject { .. } => kind::REJECT,
            Frame::Result { .. } => kind::RESULT,
            Frame::Summary { .. } => kind::SUMMARY,
            Frame::Error { .. } => kind::ERROR,
        }
    }

    /// Name of this frame's type, for messages.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind())
    }
}

// ---------------------------------------------------------------- encoding

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
        Frame::Body { id, offset, length } => {
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
                code: RejectCode::UNSAFE_NAME,
                message: "bad".into(),
            },
            Frame::Result {
                id: 3,
                status: ResultStatus::OK,
                md5: [1; 16],
                message: String::new(),
            },
            Frame::Summary {
                files_ok: 1,
                files_failed: 2,
                bytes: 3,
            },
            Frame::Error {
                code: ErrorCode::PROTOCOL,
                message: "boom".into(),
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
        for t in [0x00u8, 0x04, 0x14, 0x25, 0x7E, 0x80, 0xFF] {
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
            t in prop::sample::select(vec![1u8, 2, 3, 0x10, 0x11, 0x12, 0x13, 0x20, 0x21, 0x22, 0x23, 0x24, 0x7f]),
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
            let f = Frame::File(FileHeader { id, size, mode, mtime_s, mtime_ns, md5, path });
            let b = to_bytes(&f);
            prop_assert_eq!(decode(&b), Ok(Some((f, b.len()))));
        }
    }
}
