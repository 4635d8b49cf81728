//! The extents of a body: one BODY for a dense file; BODY and HOLE
//! extents for a sparse one; BODY extents ended by a DIGEST for a stream.
//! What may come next is decided by pure functions ([`next_extent`],
//! [`next_stream_extent`]); [`Session::read_extents`] reads them.

use super::report::*;
use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::digest::Md5Digest;
use crate::net::Deadlined;
use crate::protocol::frame::file_flags;
use crate::protocol::{ErrorCode, FileHeader, Frame};
use std::io;

/// A BODY, HOLE or SAME frame: one extent of a file's body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Extent {
    pub(super) id: u32,
    pub(super) offset: u64,
    pub(super) length: u64,
    pub(super) kind: Piece,
}

/// What an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece {
    /// BODY: raw bytes follow.
    Data,
    /// HOLE: zeros, no bytes follow.
    Hole,
    /// SAME: the old file's bytes at the same offsets, no bytes follow.
    Same,
}

impl Extent {
    /// The extent a BODY, HOLE or SAME frame announces.
    pub(super) fn of(frame: &Frame) -> Option<Extent> {
        let (id, offset, length, kind) = match *frame {
            Frame::Body { id, offset, length } => (id, offset, length, Piece::Data),
            Frame::Hole { id, offset, length } => (id, offset, length, Piece::Hole),
            Frame::Same { id, offset, length } => (id, offset, length, Piece::Same),
            _ => return None,
        };
        Some(Extent {
            id,
            offset,
            length,
            kind,
        })
    }

    pub(super) fn what(&self) -> &'static str {
        match self.kind {
            Piece::Data => "BODY",
            Piece::Hole => "HOLE",
            Piece::Same => "SAME",
        }
    }
}

/// Why the extents of a body could not be read.
pub(super) enum ExtentError {
    Conn(ConnError),
    Protocol(String),
}

impl ExtentError {
    pub(super) fn into_anyhow(self, conn: &mut Conn<Deadlined>) -> anyhow::Error {
        match self {
            ExtentError::Conn(e) => fail_session(conn, e, "in the middle of a body"),
            ExtentError::Protocol(msg) => protocol_error(conn, msg),
        }
    }
}

/// Sends ERROR 1 on `conn` (best effort) and builds the error that ends
/// the session.
pub(super) fn protocol_error(conn: &mut Conn<Deadlined>, msg: String) -> anyhow::Error {
    conn.send_error(ErrorCode::Protocol, msg.clone());
    anyhow::anyhow!("protocol error: {msg}")
}

/// Whether `e` may be the next extent of file `id` (`size` bytes, `pos`
/// received so far): a dense file takes exactly one BODY for the rest; a
/// sparse one BODY and HOLE extents that start where the last one ended,
/// are not empty (unless the file is), and stay within the file. After
/// BLOCKS (`same` is the end of the bytes they cover), SAME extents within
/// those bytes may come too, and a dense body may be several BODY extents.
/// Pure.
pub(super) fn next_extent(
    e: &Extent,
    id: u32,
    pos: u64,
    size: u64,
    sparse: bool,
    same: Option<u64>,
) -> Result<(), String> {
    let rest = size.saturating_sub(pos);
    let within = e.length <= rest && (e.length > 0 || rest == 0);
    let ok = e.id == id
        && e.offset == pos
        && match e.kind {
            Piece::Data if sparse || same.is_some() => within,
            Piece::Data => e.length == rest,
            Piece::Hole => sparse && within,
            Piece::Same => {
                within && e.length > 0 && same.is_some_and(|end| e.offset + e.length <= end)
            }
        };
    if ok {
        return Ok(());
    }
    let mut kinds = vec!["BODY"];
    if sparse {
        kinds.push("HOLE");
    }
    if same.is_some() {
        kinds.push("SAME");
    }
    let whole = !sparse && same.is_none();
    Err(format!(
        "expected {} id={id} offset={pos} length{}{rest}{}, got {} id={} offset={} length={}",
        kinds.join(" or "),
        if whole { "=" } else { "<=" },
        match same {
            Some(end) => format!(" (SAME up to {end})"),
            None => String::new(),
        },
        e.what(),
        e.id,
        e.offset,
        e.length
    ))
}

/// Whether `e` may be the next extent of the stream `id` (`pos` bytes
/// received so far): a BODY where the last one ended (a stream has no
/// holes); the stream ends with its DIGEST. Pure.
pub(super) fn next_stream_extent(e: &Extent, id: u32, pos: u64) -> Result<(), String> {
    if e.id == id && e.kind == Piece::Data && e.offset == pos && pos.checked_add(e.length).is_some()
    {
        return Ok(());
    }
    Err(format!(
        "expected BODY id={id} offset={pos} or DIGEST, got {} id={} offset={} length={}",
        e.what(),
        e.id,
        e.offset,
        e.length
    ))
}

impl Session<'_, '_> {
    /// Sends ERROR 1 and builds the error that ends the session.
    pub(super) fn protocol_error(&mut self, msg: String) -> anyhow::Error {
        protocol_error(&mut self.conn, msg)
    }

    /// Reads the extents of a file's body, starting with `first` (already
    /// checked), handing data to `data` and holes and SAME extents (which
    /// carry no bytes) to `other`, until the file's end. `same`: the end of
    /// the bytes a BLOCKS list covered, if one was sent.
    pub(super) fn read_extents(
        &mut self,
        h: &FileHeader,
        start: u64,
        first: Extent,
        same: Option<u64>,
        mut data: impl FnMut(&[u8]) -> io::Result<()>,
        mut other: impl FnMut(Piece, u64) -> io::Result<()>,
    ) -> Result<(u64, Option<Md5Digest>), ExtentError> {
        let sparse = h.flags & file_flags::SPARSE != 0;
        let stream = h.flags & file_flags::STREAM != 0;
        let mut e = first;
        let mut pos = start;
        loop {
            if e.kind == Piece::Data {
                self.conn
                    .read_body(e.length, &mut data)
                    .map_err(|err| match err {
                        ConnError::BodyEof { got, .. } => ConnError::BodyEof {
                            got: pos - start + got,
                            len: h.size - start,
                        },
                        other => other,
                    })
                    .map_err(ExtentError::Conn)?;
            } else {
                other(e.kind, e.length).map_err(|e| ExtentError::Conn(ConnError::Io(e)))?;
            }
            pos += e.length;
            if !stream && pos >= h.size {
                return Ok((pos, None));
            }
            let frame = match self.conn.read_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    return Err(ExtentError::Conn(ConnError::BodyEof {
                        got: pos - start,
                        len: h.size - start,
                    }))
                }
                Err(e) => return Err(ExtentError::Conn(e)),
            };
            e = match (Extent::of(&frame), frame) {
                (Some(e), _) => e,
                (None, Frame::Digest { id, md5 }) if stream && id == h.id => {
                    return Ok((pos, Some(md5)));
                }
                (None, other) => {
                    return Err(ExtentError::Protocol(format!(
                        "{} in the middle of the body of id={}",
                        other.name(),
                        h.id
                    )))
                }
            };
            if stream {
                next_stream_extent(&e, h.id, pos).map_err(ExtentError::Protocol)?;
            } else {
                next_extent(&e, h.id, pos, h.size, sparse, same).map_err(ExtentError::Protocol)?;
            }
        }
    }
}

#[cfg(test)]
mod extent_tests {
    use super::*;

    fn ext(offset: u64, length: u64, hole: bool) -> Extent {
        Extent {
            id: 1,
            offset,
            length,
            kind: if hole { Piece::Hole } else { Piece::Data },
        }
    }

    fn same(offset: u64, length: u64) -> Extent {
        Extent {
            id: 1,
            offset,
            length,
            kind: Piece::Same,
        }
    }

    #[test]
    fn same_extents_come_only_after_blocks_and_within_them() {
        assert!(
            next_extent(&same(0, 50), 1, 0, 100, false, None).is_err(),
            "no BLOCKS"
        );
        assert!(next_extent(&same(0, 50), 1, 0, 100, false, Some(64)).is_ok());
        assert!(next_extent(&ext(50, 10, false), 1, 50, 100, false, Some(64)).is_ok());
        assert!(
            next_extent(&same(60, 10), 1, 60, 100, false, Some(64)).is_err(),
            "beyond the blocks"
        );
        assert!(
            next_extent(&same(60, 0), 1, 60, 100, false, Some(64)).is_err(),
            "empty"
        );
        assert!(
            next_extent(&ext(60, 10, true), 1, 60, 100, false, Some(64)).is_err(),
            "a hole in a dense file"
        );
        assert!(next_extent(&ext(60, 10, true), 1, 60, 100, true, Some(64)).is_ok());
        let msg = next_extent(&same(61, 1), 1, 60, 100, false, Some(64)).expect_err("gap");
        assert!(msg.contains("BODY or SAME id=1 offset=60"), "{msg}");
    }

    #[test]
    fn a_dense_body_is_one_body_for_the_rest() {
        assert!(next_extent(&ext(0, 100, false), 1, 0, 100, false, None).is_ok());
        assert!(next_extent(&ext(40, 60, false), 1, 40, 100, false, None).is_ok());
        assert!(
            next_extent(&ext(0, 50, false), 1, 0, 100, false, None).is_err(),
            "short"
        );
        assert!(
            next_extent(&ext(0, 200, false), 1, 0, 100, false, None).is_err(),
            "long"
        );
        assert!(
            next_extent(&ext(10, 90, false), 1, 0, 100, false, None).is_err(),
            "offset"
        );
        assert!(
            next_extent(&ext(0, 100, true), 1, 0, 100, false, None).is_err(),
            "hole"
        );
        let other = Extent {
            id: 2,
            ..ext(0, 100, false)
        };
        assert!(
            next_extent(&other, 1, 0, 100, false, None).is_err(),
            "other id"
        );
        assert!(
            next_extent(&ext(0, 0, false), 1, 0, 0, false, None).is_ok(),
            "empty file"
        );
    }

    #[test]
    fn a_sparse_body_is_contiguous_extents_within_the_file() {
        assert!(next_extent(&ext(0, 50, true), 1, 0, 100, true, None).is_ok());
        assert!(next_extent(&ext(50, 10, false), 1, 50, 100, true, None).is_ok());
        assert!(next_extent(&ext(60, 40, true), 1, 60, 100, true, None).is_ok());
        assert!(
            next_extent(&ext(61, 39, false), 1, 60, 100, true, None).is_err(),
            "gap"
        );
        assert!(
            next_extent(&ext(59, 41, false), 1, 60, 100, true, None).is_err(),
            "overlap"
        );
        assert!(
            next_extent(&ext(60, 41, true), 1, 60, 100, true, None).is_err(),
            "past the end"
        );
        assert!(
            next_extent(&ext(60, 0, false), 1, 60, 100, true, None).is_err(),
            "empty extent"
        );
        let msg = next_extent(&ext(61, 1, false), 1, 60, 100, true, None).expect_err("gap");
        assert!(msg.contains("BODY or HOLE id=1 offset=60"), "{msg}");
    }
}
