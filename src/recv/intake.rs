//! Body intake on the session thread: reads a BODY into the file's writer
//! (see [`crate::store`] for which thread writes it, by size), batches the
//! small bodies and hashes them together, verifies each file against its
//! offer and hands it to the commit thread.

use super::extents::*;
use super::report::*;
use super::types::*;
use crate::digest::{digest_of, hex, Algo, Md5Digest};
use crate::protocol::frame::file_flags;
use crate::protocol::Frame;
use crate::protocol::Status;
use crate::store;
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::io;
use std::os::unix::ffi::OsStrExt;
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
    r: Box<Received<'a>>,
    file: Option<std::fs::File>,
    body: store::budget::HeldBody,
    got: Md5Digest,
    blocks: Option<store::Blocks>,
) -> Result<Verified<'a>, Failure> {
    if got == r.h.md5 {
        return Ok(Verified {
            r,
            file,
            body,
            note: None,
            blocks,
            direct: false,
        });
    }
    Err(mismatch(r, got))
}

/// Discards a received file whose content is not what was offered (`got`
/// is its digest), and says why.
fn mismatch(r: Box<Received<'_>>, got: Md5Digest) -> Failure {
    let h = &r.h;
    r.names.discard(&r.dir, r.id);
    let shown = r.name.shown();
    Failure {
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
    }
}

/// Why the partial of the file `shown` (named `part` when it has a name)
/// could not be created.
pub(super) fn not_created(shown: &str, part: &std::ffi::OsStr, e: &io::Error) -> String {
    let why = if e.kind() == io::ErrorKind::AlreadyExists {
        format!(
            "'{}' appeared meanwhile and is never written to",
            crate::sanitize::escape_bytes(part.as_bytes())
        )
    } else {
        e.to_string()
    };
    format!("cannot create the partial of '{shown}': {why}")
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
        let same = a.old.as_ref().map(|o| o.covered);
        let checked = if stream {
            next_stream_extent(&first, a.h.id, 0)
        } else {
            next_extent(&first, a.h.id, from, a.h.size, sparse, same)
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
            attrs,
            old,
            ticket,
            _guard,
        } = a;
        let started = Instant::now();
        // The name as shown, made only for a message (not for every file).
        let shown = || name.shown();
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
                    "{}: '{}': the sender did not confirm the partial; starting over",
                    self.peer,
                    shown()
                ));
                (None, 0)
            }
            other => (other, offset),
        };
        let small = store::never_resumes(h.size, stream);
        let opened = match resumed {
            Some(pair) => Ok(pair),
            None if small => store::create_small(
                &dir,
                &names,
                h.size,
                h.md5,
                (file_flags::algo(h.flags), self.sh.unnamed),
                &self.sh.budget,
            )
            .map(|(o, discarded)| {
                if let Some(why) = discarded {
                    self.sh.log(&format!(
                        "{}: '{}': starting over: {why}",
                        self.peer,
                        shown()
                    ));
                }
                (o.writer, o.id)
            }),
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
                if let Err(e) =
                    self.read_extents(&h, offset, first, same, |_| Ok(()), |_, _| Ok(()))
                {
                    return Err(e.into_anyhow(&mut self.conn));
                }
                let message = not_created(&shown(), &names.part(), &e);
                self.result_failed(Failure {
                    id: h.id,
                    shown: shown(),
                    status: Status::IoError.code(),
                    md5: [0; 16],
                    message,
                });
                return Ok(());
            }
        };
        self.bodies += 1;
        if !self.bar.is_hidden() {
            self.bar
                .set_message(format!("{} files, now {}", self.bodies, shown()));
        }
        let write_err: RefCell<Option<io::Error>> = RefCell::default();
        let cell = RefCell::new(writer);
        let bar = self.bar.clone();
        // Nothing reads the bar under -q (each count reads the clock).
        let counted = self.sh.progress.shown();
        // Bytes of a body are progress as they come (never evicted).
        let moved = self.moved.clone();
        let matched = std::cell::Cell::new(0u64);
        let read = self.read_extents(
            &h,
            offset,
            first,
            same,
            |chunk| {
                if write_err.borrow().is_none() {
                    if let Err(e) = cell.borrow_mut().write(chunk) {
                        *write_err.borrow_mut() = Some(e);
                    }
                }
                if counted {
                    bar.inc(chunk.len() as u64);
                }
                moved.touch();
                Ok(())
            },
            |piece, n| {
                if write_err.borrow().is_none() {
                    let wrote = match (piece, &old) {
                        (Piece::Same, Some(old)) => {
                            matched.set(matched.get() + n);
                            cell.borrow_mut().same(&old.file, n).map_err(|e| {
                                io::Error::new(
                                    e.kind(),
                                    format!(
                                        "taking unchanged blocks from the file it replaces: {e}"
                                    ),
                                )
                            })
                        }
                        // (next_extent lets SAME come only after BLOCKS.)
                        (Piece::Same, None) => Err(io::Error::other("SAME without BLOCKS")),
                        _ => cell.borrow_mut().hole(n),
                    };
                    if let Err(e) = wrote {
                        *write_err.borrow_mut() = Some(e);
                    }
                }
                if counted {
                    bar.inc(n);
                }
                moved.touch();
                Ok(())
            },
        );
        self.stats.matched += matched.get();
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
                .context(format!("receiving '{}' ({kept})", shown())));
        }
        // File bytes moved: the session is making progress.
        self.made_progress();
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
                    bail!(
                        "closed the connection before the DIGEST of '{}' (kept {kept} bytes to resume)",
                        shown()
                    );
                }
                Err(e) => {
                    let kept = writer.suspend().unwrap_or(0);
                    return Err(fail_session(&mut self.conn, e, "before a DIGEST").context(
                        format!("receiving '{}' (kept {kept} bytes to resume)", shown()),
                    ));
                }
            }
        }
        let ended = match write_err {
            Some(e) => Err(e),
            None => writer.end(),
        };
        let r = Box::new(Received {
            h,
            name,
            last,
            dir,
            names,
            id: file_id,
            offset,
            started,
            arriving: started.elapsed(),
            attrs,
            ticket,
            _guard,
        });
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
            Ok(store::Finished::Ready(file, got, blocks)) => {
                match verify(
                    r,
                    Some(file),
                    store::budget::HeldBody::default(),
                    got,
                    blocks,
                ) {
                    Ok(v) => self.commits.push(v),
                    Err(f) => self.result_failed(f),
                }
                return Ok(());
            }
            Err(e) => e,
        };
        r.names.discard(&r.dir, r.id);
        let shown = r.name.shown();
        // A resumed prefix that did not check out (store's `PrefixCheck`):
        // the file is not what was offered, as for a digest mismatch, and
        // the sender sends it again from 0.
        let (status, message) = if failure.kind() == io::ErrorKind::InvalidData {
            (
                Status::DigestMismatch.code(),
                format!("integrity failure for '{shown}': {failure}; discarded"),
            )
        } else {
            (
                Status::IoError.code(),
                format!("cannot write '{shown}': {failure}"),
            )
        };
        self.result_failed(Failure {
            id: r.h.id,
            shown,
            status,
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
        // The next batch starts with this one's room: a batch grown from
        // nothing moved its files (hundreds of bytes each) ten times.
        let room = self.small.capacity();
        let batch = std::mem::replace(&mut self.small, Vec::with_capacity(room));
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
        for (Unhashed { r, file, body }, got) in batch.into_iter().zip(digests) {
            if self.commits.stop.get().is_some() {
                // OUT cannot take files (a create just failed for it): the
                // session ends with one error, not one for each of these.
                r.names.discard(&r.dir, r.id);
                continue;
            }
            match verify(r, file, body, got, None) {
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
