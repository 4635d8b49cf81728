//! Bodies under one block, written by the session thread: up to
//! [`HOLD_MAX`] held in memory (hashed in batches, written by the commit
//! thread), larger ones written through a buffer and hashed as they arrive.

use super::budget::{HeldBody, Lease};
use crate::digest::Hasher;
use bytes::BytesMut;
use std::fs::File;
use std::io::{self, BufWriter};

/// Bodies up to this size are held in memory until whole, so that the
/// receiver can hash many of them together (their write waits too); a
/// larger one is written and hashed as it arrives. Bounds what a session
/// holds per file.
pub const HOLD_MAX: u64 = 256 << 10;

/// A buffer for a body of `size` bytes held in memory, and its lease from
/// `budget`: `None` when it is over [`HOLD_MAX`] or the budget is spent.
pub(super) fn hold(
    size: u64,
    budget: &std::sync::Arc<super::budget::Budget>,
) -> io::Result<Option<(BytesMut, Lease)>> {
    if size > HOLD_MAX {
        return Ok(None);
    }
    let size = usize::try_from(size).map_err(io::Error::other)?;
    Ok(budget
        .try_lease(size)
        .map(|lease| (crate::slab::buffer(size), lease)))
}

/// A small file's body, kept in memory until it is whole.
pub struct SmallWriter {
    /// Its partial; `None` for a file that gets one without a name
    /// (`O_TMPFILE`) once verified ([`super::small_file`]): a body on its
    /// way holds no descriptor and nothing open for writing.
    pub(super) file: Option<File>,
    pub(super) body: BytesMut,
    /// What pays for `body` in the receiver's memory budget.
    pub(super) lease: Lease,
}

/// A file under one block but over [`HOLD_MAX`]: written through a buffer
/// and hashed as it arrives. No block can complete, so there is nothing to
/// checkpoint.
pub struct StreamWriter {
    pub(super) out: BufWriter<File>,
    pub(super) md5: Hasher,
    pub(super) pos: u64,
    /// What pays for the buffer, if it is larger than the smallest.
    pub(super) _lease: Option<Lease>,
}

/// A small file's whole body, in memory.
pub struct Held {
    /// Its partial, if it has one yet (see [`SmallWriter`]).
    pub(super) file: Option<File>,
    pub(super) body: HeldBody,
}

impl Held {
    /// The partial, if it has one yet, and the body.
    pub fn into_parts(self) -> (Option<File>, HeldBody) {
        (self.file, self.body)
    }
}
