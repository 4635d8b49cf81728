//! The body of a file the receiver replaces by a delta update (it sent
//! BLOCKS): each whole block of the file whose digest equals the digest
//! of the same block of the receiver's old file goes as SAME (no bytes),
//! the rest as BODY. See PROTOCOL.md, "Delta updates".

use super::types::*;
use crate::conn::Conn;
use crate::delta::Remote;
use crate::protocol::Frame;
use crate::secure::Wire;
use anyhow::Context;
use std::fs::File;
use xxhash_rust::xxh3::Xxh3;

/// What the extent being gathered is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Run {
    Same,
    Body,
}

impl Sender<'_> {
    /// Sends `extents` of `file` (`(offset, length, hole)`, as
    /// [`Sender::send_extents`] does) as a delta against `remote`.
    pub(super) fn send_delta(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        file: &File,
        extents: &[(u64, u64, bool)],
        remote: &Remote,
    ) -> Result<(), Broken> {
        let size = self.items[idx].entry.size;
        let local = crate::sanitize::escape(&self.items[idx].entry.local.to_string_lossy());
        let mut buf = vec![0u8; (remote.block as usize).min(1 << 20)];
        let mut h = Xxh3::new();
        // The run being gathered: (kind, start, length).
        let mut run: Option<(Run, u64, u64)> = None;
        for &(at, len, hole) in extents {
            if hole {
                if let Some(r) = run.take() {
                    self.emit(conn, id, idx, file, r)?;
                }
                self.send_extents(conn, id, idx, file, &[(at, len, true)])?;
                continue;
            }
            let end = at + len;
            let mut p = at;
            while p < end {
                let next = ((p / remote.block + 1) * remote.block).min(end);
                let piece = next - p;
                let same = match remote.block_at(p, piece, size) {
                    Some(i) => {
                        crate::delta::digest_at(file, p, piece, &mut buf, &mut h)
                            .with_context(|| format!("cannot read {local}"))?
                            == remote.digests[i]
                    }
                    None => false,
                };
                let kind = if same { Run::Same } else { Run::Body };
                run = match run {
                    Some((k, start, n)) if k == kind => Some((k, start, n + piece)),
                    other => {
                        if let Some(r) = other {
                            self.emit(conn, id, idx, file, r)?;
                        }
                        Some((kind, p, piece))
                    }
                };
                p = next;
            }
        }
        if let Some(r) = run.take() {
            self.emit(conn, id, idx, file, r)?;
        }
        Ok(())
    }

    /// Sends one gathered run: SAME (counted as matched, not on the wire)
    /// or BODY.
    fn emit(
        &mut self,
        conn: &mut Conn<Wire>,
        id: u32,
        idx: usize,
        file: &File,
        (kind, at, len): (Run, u64, u64),
    ) -> Result<(), Broken> {
        match kind {
            Run::Same => {
                conn.queue(&Frame::Same {
                    id,
                    offset: at,
                    length: len,
                });
                self.moved(idx, len, false);
                self.tally.matched += len;
                Ok(())
            }
            Run::Body => self.send_extents(conn, id, idx, file, &[(at, len, false)]),
        }
    }
}
