//! Body intake on the session thread: reads a BODY into the file's writer
//! (see [`crate::store`] for which thread writes it, by size), batches the
//! small bodies and hashes them together, verifies each file against its
//! offer and hands it to the commit thread.

use super::report::*;
use super::types::*;
use crate::conn::{Conn, ConnError};
use crate::digest::{digest_of, hex, Algo, Md5Digest};
use crate::net::Deadlined;
use crate::protocol::frame::file_flags;
use crate::protocol::{ErrorCode, Status};
use crate::protocol::{FileHeader, Frame};
use crate::sanitize::escape;
use crate::store;
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::io;
use std::time::Instant;

/// Small files received (up to [`store::HOLD_MAX`]) are hashed together
/// (see [`crate::md5multi`]) once this many wait...
pub(super) const SMALL_FILES: usize = 64;
/// ...or once their bodies take this many bytes, and whenever the session
/// is about to wait for the sender.
pub(super) const SMALL_BYTES: usize = 4 << 20;

/// Checks a received file's content against the offer. On failure the
/// partial is discarded.
pub(super) fn verify<'a>(
    r: Received<'a>,
    file: std::fs::File,
    body: store::budget::HeldBody,
    got: Md5Digest,
) -> Result<Verified<'a>, Failure> {
    let h = &r.h;
    if got == h.md5 {
        return Ok(Verified { r, file, body });
    }
    r.names.discard(&r.dir, r.id);
    let shown = escape(r.name.as_str());
    Err(Failure {
        id: h.id,
        status: Status::DigestMismatch.code(),
        md5: got,
        message: format!(
            "integrity failure for '{shown}': header MD5 {}, received data MD5 {}{}; discarded",
            hex(&h.md5),
            hex(&got),
            if r.offset > 0 {
                " (after a resume)"
            } else {
                ""
            }
        ),
        shown,
    })
}

impl<'a> Session<'a, '_> {
    /// Receives the body of the first accepted file and verifies it: one
    /// BODY from the accepted offset to the end, or, for a sparse file,
    /// BODY and HOLE extents that follow each other up to the end.
    pub(super) fn body(&mut self, first: Extent) -> Result<()> {
        let Some(a) = self.awaiting.front() else {
            let msg = format!("{} id={} without an accepted FILE", first.what(), first.id);
            return Err(self.protocol_error(msg));
        };
        let sparse = a.h.flags & file_flags::SPARSE != 0;
        // A body may start at 0 instead of a resume's offset: the sender
        // did not confirm the partial (see PREFIX); it starts over.
        let restart = first.offset == 0 && a.offset > 0;
        let from = if restart { 0 } else { a.offset };
        let stream = a.h.flags & file_flags::STREAM != 0;
        let checked = if stream {
            next_stream_extent(&first, a.h.id, 0)
        } else {
            next_extent(&first, a.h.id, from, a.h.size, sparse)
        };
        if let Err(msg) = checked {
            return Err(self.protocol_error(msg));
        }
        let length = first.length;
        let Some(a) = self.awaiting.pop_front() else {
            bail!("internal error: no accepted file");
        };
        let Awaiting {
            h,
            name,
            last,
            dir,
            names,
            resumed,
            offset,
            _guard,
        } = a;
        let started = Instant::now();
        let shown = escape(name.as_str());
        if length >= store::BLOCK {
            // This body takes a while: what is received goes in place now
            // (and the memory it holds goes back to the budget the body's
            // pipeline is about to lease from).
            self.verify_small();
            self.commits.nudge();
        }
        let (resumed, offset) = match resumed {
            Some((writer, id)) if restart => {
                drop(writer);
                names.discard(&dir, id);
                self.sh.log(&format!(
                    "{}: '{shown}': the sender did not confirm the partial; starting over",
                    self.peer
                ));
                (None, 0)
            }
            other => (other, offset),
        };
        let opened = match resumed {
            Some(pair) => Ok(pair),
            None => store::create(
                &dir,
                &names,
                // A stream's size is not known: as large as can be.
                if stream { u64::MAX } else { h.size },
                h.md5,
                file_flags::algo(h.flags),
                &self.sh.budget,
            )
            .map(|o| (o.writer, o.id)),
        };
        let (writer, file_id) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                // Never written to: what appeared at the partial's name
                // since the offer (another receiver's partial, a link...).
                // The body is read and dropped; the session goes on.
                if let Err(e) = self.read_extents(&h, offset, first, |_| Ok(()), |_| Ok(())) {
                    return Err(e.into_anyhow(&mut self.conn));
                }
                let why = if e.kind() == io::ErrorKind::AlreadyExists {
                    format!(
                        "'{}' appeared meanwhile and is never written to",
                        names.part
                    )
                } else {
                    e.to_string()
                };
                let message = format!("cannot create the partial of '{shown}': {why}");
                self.result_failed(Failure {
                    id: h.id,
                    shown,
                    status: Status::IoError.code(),
                    md5: [0; 16],
                    message,
                });
                return Ok(());
            }
        };
        self.bar.set_message(shown.clone());
        let write_err: RefCell<Option<io::Error>> = RefCell::default();
        let cell = RefCell::new(writer);
        let bar = self.bar.clone();
        let read = self.read_extents(
            &h,
            offset,
            first,
            |chunk| {
                if write_err.borrow().is_none() {
                    if let Err(e) = cell.borrow_mut().write(chunk) {
                        *write_err.borrow_mut() = Some(e);
                    }
                }
                bar.inc(chunk.len() as u64);
                Ok(())
            },
            |n| {
                if write_err.borrow().is_none() {
                    if let Err(e) = cell.borrow_mut().hole(n) {
                        *write_err.borrow_mut() = Some(e);
                    }
                }
                bar.inc(n);
                Ok(())
            },
        );
        let writer = cell.into_inner();
        let write_err = write_err.into_inner();
        if let Err(e) = read {
            let e = match e {
                ExtentError::Conn(e) => e,
                ExtentError::Protocol(msg) => {
                    names.discard(&dir, file_id);
                    return Err(self.protocol_error(msg));
                }
            };
            // Keep what arrived: checkpoint it so the next send resumes.
            let kept = match write_err {
                None => writer.suspend().ok(),
                Some(_) => None,
            };
            let kept = match kept {
                Some(n) => format!("kept {n} bytes to resume"),
                None => {
                    names.discard(&dir, file_id);
                    "partial discarded".to_string()
                }
            };
            return Err(fail_session(&mut self.conn, e, "in the middle of a body")
                .context(format!("receiving '{shown}' ({kept})")));
        }
        // File bytes moved: the session is making progress.
        self.progress = Instant::now();
        let mut h = h;
        if let Ok((end, Some(digest))) = &read {
            // A stream: its size and digest are known now.
            h.size = *end;
            h.md5 = *digest;
        } else if h.flags & file_flags::DIGEST_FOLLOWS != 0 {
            // The digest comes right after the body.
            match self.conn.read_frame() {
                Ok(Some(Frame::Digest { id, md5 })) if id == h.id => h.md5 = md5,
                Ok(Some(other)) => {
                    drop(writer);
                    names.discard(&dir, file_id);
                    let msg = format!("expected DIGEST id={}, got {}", h.id, other.name());
                    return Err(self.protocol_error(msg));
                }
                Ok(None) => {
                    let kept = writer.suspend().unwrap_or(0);
                    bail!("closed the connection before the DIGEST of '{shown}' (kept {kept} bytes to resume)");
                }
                Err(e) => {
                    let kept = writer.suspend().unwrap_or(0);
                    return Err(fail_session(&mut self.conn, e, "before a DIGEST")
                        .context(format!("receiving '{shown}' (kept {kept} bytes to resume)")));
                }
            }
        }
        let ended = match write_err {
            Some(e) => Err(e),
            None => writer.end(),
        };
        let r = Received {
            h,
            name,
            last,
            dir,
            names,
            id: file_id,
            offset,
            started,
            _guard,
        };
        let failure = match ended {
            Ok(store::Finished::Held(held)) => {
                let (file, body) = held.into_parts();
                self.small_bytes += body.len();
                self.small.push(Unhashed { r, file, body });
                if batch_due(self.small.len(), self.small_bytes) {
                    self.verify_small();
                }
                return Ok(());
            }
            Ok(store::Finished::Ready(file, got)) => {
                match verify(r, file, store::budget::HeldBody::default(), got) {
                    Ok(v) => self.commits.push(v),
                    Err(f) => self.result_failed(f),
                }
                return Ok(());
            }
            Err(e) => e,
        };
        r.names.discard(&r.dir, r.id);
        let message = format!("cannot write '{shown}': {failure}");
        self.result_failed(Failure {
            id: r.h.id,
            shown,
            status: Status::IoError.code(),
            md5: [0; 16],
            message,
        });
        Ok(())
    }

    /// Hashes the small files received since the last call, together, and
    /// hands those that check out to the commit thread.
    pub(super) fn verify_small(&mut self) {
        if self.small.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.small);
        self.small_bytes = 0;
        // MD5s many at a time; the (rare) XXH3 ones one by one.
        let md5: Vec<&[u8]> = batch
            .iter()
            .filter(|u| file_flags::algo(u.r.h.flags) == Algo::Md5)
            .map(|u| &*u.body)
            .collect();
        let mut md5 = crate::md5multi::digests(&md5).into_iter();
        let digests: Vec<_> = batch
            .iter()
            .map(|u| match file_flags::algo(u.r.h.flags) {
                Algo::Md5 => md5.next().unwrap_or_default(),
                other => digest_of(other, &u.body),
            })
            .collect();
        for (u, got) in batch.into_iter().zip(digests) {
            match verify(u.r, u.file, u.body, got) {
                Ok(v) => self.commits.push(v),
                Err(f) => self.result_failed(f),
            }
        }
    }
}

/// True when the small bodies waiting (`files` of them, `bytes` in all)
/// are to be hashed now rather than wait for more. (They are also hashed
/// whenever the session is about to wait for the sender.)
pub(super) fn batch_due(files: usize, bytes: usize) -> bool {
    files >= SMALL_FILES || bytes >= SMALL_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_hashed_when_full_by_count_or_by_bytes() {
        assert!(!batch_due(0, 0));
        assert!(!batch_due(SMALL_FILES - 1, SMALL_BYTES - 1));
        assert!(batch_due(SMALL_FILES, 0));
        assert!(batch_due(1, SMALL_BYTES));
    }
}

/// A BODY or HOLE frame: one extent of a file's body.
#[derive(Debug, Clone, Copy)]
pub(super) struct Extent {
    pub(super) id: u32,
    pub(super) offset: u64,
    pub(super) length: u64,
    /// A HOLE: zeros, no bytes follow.
    pub(super) hole: bool,
}

impl Extent {
    fn what(&self) -> &'static str {
        if self.hole {
            "HOLE"
        } else {
            "BODY"
        }
    }
}

/// Why the extents of a body could not be read.
pub(super) enum ExtentError {
    Conn(ConnError),
    Protocol(String),
}

impl ExtentError {
    fn into_anyhow(self, conn: &mut Conn<Deadlined>) -> anyhow::Error {
        match self {
            ExtentError::Conn(e) => fail_session(conn, e, "in the middle of a body"),
            ExtentError::Protocol(msg) => {
                let _ = conn.send(&Frame::Error {
                    code: ErrorCode::Protocol.code(),
                    message: msg.clone(),
                });
                anyhow::anyhow!("protocol error: {msg}")
            }
        }
    }
}

/// Whether `e` may be the next extent of file `id` (`size` bytes, `pos`
/// received so far): a dense file takes exactly one BODY for the rest; a
/// sparse one BODY and HOLE extents that start where the last one ended,
/// are not empty (unless the file is), and stay within the file. Pure.
pub(super) fn next_extent(
    e: &Extent,
    id: u32,
    pos: u64,
    size: u64,
    sparse: bool,
) -> Result<(), String> {
    let rest = size.saturating_sub(pos);
    let ok = e.id == id
        && e.offset == pos
        && if sparse {
            e.length <= rest && (e.length > 0 || rest == 0)
        } else {
            !e.hole && e.length == rest
        };
    if ok {
        return Ok(());
    }
    Err(format!(
        "expected {} id={id} offset={pos} length{}{rest}, got {} id={} offset={} length={}",
        if sparse { "BODY or HOLE" } else { "BODY" },
        if sparse { "<=" } else { "=" },
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
    if e.id == id && !e.hole && e.offset == pos && pos.checked_add(e.length).is_some() {
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
        let _ = self.conn.send(&Frame::Error {
            code: ErrorCode::Protocol.code(),
            message: msg.clone(),
        });
        anyhow::anyhow!("protocol error: {msg}")
    }

    /// Reads the extents of a file's body, starting with `first` (already
    /// checked), handing data to `data` and holes to `hole`, until the
    /// file's end.
    fn read_extents(
        &mut self,
        h: &FileHeader,
        start: u64,
        first: Extent,
        mut data: impl FnMut(&[u8]) -> io::Result<()>,
        mut hole: impl FnMut(u64) -> io::Result<()>,
    ) -> Result<(u64, Option<Md5Digest>), ExtentError> {
        let sparse = h.flags & file_flags::SPARSE != 0;
        let stream = h.flags & file_flags::STREAM != 0;
        let mut e = first;
        let mut pos = start;
        loop {
            if e.hole {
                hole(e.length).map_err(|e| ExtentError::Conn(ConnError::Io(e)))?;
            } else {
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
            }
            pos += e.length;
            if !stream && pos >= h.size {
                return Ok((pos, None));
            }
            e = match self.conn.read_frame() {
                Ok(Some(Frame::Body { id, offset, length })) => Extent {
                    id,
                    offset,
                    length,
                    hole: false,
                },
                Ok(Some(Frame::Hole { id, offset, length })) => Extent {
                    id,
                    offset,
                    length,
                    hole: true,
                },
                Ok(Some(Frame::Digest { id, md5 })) if stream && id == h.id => {
                    return Ok((pos, Some(md5)));
                }
                Ok(Some(other)) => {
                    return Err(ExtentError::Protocol(format!(
                        "{} in the middle of the body of id={}",
                        other.name(),
                        h.id
                    )))
                }
                Ok(None) => {
                    return Err(ExtentError::Conn(ConnError::BodyEof {
                        got: pos - start,
                        len: h.size - start,
                    }))
                }
                Err(e) => return Err(ExtentError::Conn(e)),
            };
            if stream {
                next_stream_extent(&e, h.id, pos).map_err(ExtentError::Protocol)?;
            } else {
                next_extent(&e, h.id, pos, h.size, sparse).map_err(ExtentError::Protocol)?;
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
            hole,
        }
    }

    #[test]
    fn a_dense_body_is_one_body_for_the_rest() {
        assert!(next_extent(&ext(0, 100, false), 1, 0, 100, false).is_ok());
        assert!(next_extent(&ext(40, 60, false), 1, 40, 100, false).is_ok());
        assert!(
            next_extent(&ext(0, 50, false), 1, 0, 100, false).is_err(),
            "short"
        );
        assert!(
            next_extent(&ext(0, 200, false), 1, 0, 100, false).is_err(),
            "long"
        );
        assert!(
            next_extent(&ext(10, 90, false), 1, 0, 100, false).is_err(),
            "offset"
        );
        assert!(
            next_extent(&ext(0, 100, true), 1, 0, 100, false).is_err(),
            "hole"
        );
        let other = Extent {
            id: 2,
            ..ext(0, 100, false)
        };
        assert!(next_extent(&other, 1, 0, 100, false).is_err(), "other id");
        assert!(
            next_extent(&ext(0, 0, false), 1, 0, 0, false).is_ok(),
            "empty file"
        );
    }

    #[test]
    fn a_sparse_body_is_contiguous_extents_within_the_file() {
        assert!(next_extent(&ext(0, 50, true), 1, 0, 100, true).is_ok());
        assert!(next_extent(&ext(50, 10, false), 1, 50, 100, true).is_ok());
        assert!(next_extent(&ext(60, 40, true), 1, 60, 100, true).is_ok());
        assert!(
            next_extent(&ext(61, 39, false), 1, 60, 100, true).is_err(),
            "gap"
        );
        assert!(
            next_extent(&ext(59, 41, false), 1, 60, 100, true).is_err(),
            "overlap"
        );
        assert!(
            next_extent(&ext(60, 41, true), 1, 60, 100, true).is_err(),
            "past the end"
        );
        assert!(
            next_extent(&ext(60, 0, false), 1, 60, 100, true).is_err(),
            "empty extent"
        );
        let msg = next_extent(&ext(61, 1, false), 1, 60, 100, true).expect_err("gap");
        assert!(msg.contains("BODY or HOLE id=1 offset=60"), "{msg}");
    }
}
