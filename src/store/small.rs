//! Bodies under one block, written by the session thread: up to
//! [`HOLD_MAX`] held in memory (hashed in batches, written by the commit
//! thread), larger ones written through a buffer and hashed as they arrive.

use super::budget::{HeldBody, Lease};
use crate::digest::Hasher;
use std::fs::File;
use std::io::{self, BufWriter, Write};

/// Bodies up to this size are held in memory until whole, so that the
/// receiver can hash many of them together (their write waits too); a
/// larger one is written and hashed as it arrives. Bounds what a session
/// holds per file.
pub const HOLD_MAX: u64 = 256 << 10;

/// A small file's body, kept in memory until it is whole.
pub struct SmallWriter {
    pub(super) file: File,
    pub(super) body: Vec<u8>,
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
    pub(super) file: File,
    pub(super) body: HeldBody,
}

impl Held {
    /// Writes the body into the partial.
    pub fn write_out(&mut self) -> io::Result<()> {
        self.file.write_all(&self.body)
    }

    /// The partial and the body.
    pub fn into_parts(self) -> (File, HeldBody) {
        (self.file, self.body)
    }
}
