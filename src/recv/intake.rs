//! Body intake on the session thread: reads a BODY into the file's writer
//! (see [`crate::store`] for which thread writes it, by size), batches the
//! small bodies and hashes them together, verifies each file against its
//! offer and hands it to the commit thread.

use super::report::*;
use super::types::*;
use crate::digest::{hex, Md5Digest};
use crate::protocol::Frame;
use crate::protocol::{ErrorCode, Status};
use crate::sanitize::escape;
use crate::store;
use anyhow::{bail, Result};
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
    /// Receives the BODY of the first accepted file and verifies it.
    pub(super) fn body(&mut self, id: u32, offset: u64, length: u64) -> Result<()> {
        let expected = self
            .awaiting
            .front()
            .map(|a| (a.h.id, a.offset, a.h.size - a.offset));
        if expected != Some((id, offset, length)) {
            let msg = match expected {
                Some((i, o, l)) => format!(
                    "expected BODY id={i} offset={o} length={l}, got BODY id={id} offset={offset} length={length}"
                ),
                None => format!("BODY id={id} without an accepted FILE"),
            };
            let _ = self.conn.send(&Frame::Error {
                code: ErrorCode::Protocol.code(),
                message: msg.clone(),
            });
            bail!("protocol error: {msg}");
        }
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
        let opened = match resumed {
            Some(pair) => Ok(pair),
            None => store::create(&dir, &names, h.size, h.md5, &self.sh.budget)
                .map(|o| (o.writer, o.id)),
        };
        let (mut writer, file_id) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                // Never written to: what appeared at the partial's name
                // since the offer (another receiver's partial, a link...).
                // The body is read and dropped; the session goes on.
                self.conn
                    .read_body(length, |_| Ok(()))
                    .map_err(|e| fail_session(&mut self.conn, e, "in the middle of a body"))?;
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
        let mut write_err: Option<io::Error> = None;
        let bar = &self.bar;
        let read = self.conn.read_body(length, |chunk| {
            if write_err.is_none() {
                if let Err(e) = writer.write(chunk) {
                    write_err = Some(e);
                }
            }
            bar.inc(chunk.len() as u64);
            Ok(())
        });
        if let Err(e) = read {
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
        let bodies: Vec<&[u8]> = batch.iter().map(|u| &*u.body).collect();
        let digests = crate::md5multi::digests(&bodies);
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
