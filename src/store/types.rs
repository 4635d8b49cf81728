//! The store's shared names and sizes: the block and checkpoint sizes, the
//! names of a partial and its state file beside a target, and the no-follow
//! open every file access uses. Every file of the store depends on this one.

use crate::digest::{hex, Hasher};
use crate::protocol::limits::MAX_COMPONENT_LEN;
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// Bytes per checked block.
pub const BLOCK: u64 = 4 << 20;
/// Blocks between two checkpoints (64 MiB).
pub const CHECKPOINT_BLOCKS: usize = 16;
/// Write buffer in front of the partial file.
pub const WRITE_BUF: usize = 1 << 20;

/// Names of the partial and state files for target `last`. When
/// `.last.ftx-state.tmp` would not fit in a component, the MD5 of the name
/// stands in for it.
#[derive(Debug, Clone)]
pub struct Names {
    /// The data: `.NAME.ftx-part`.
    pub part: OsString,
    /// The state: `.NAME.ftx-state`.
    pub state: OsString,
    /// Temporary for atomic state replacement.
    pub state_tmp: OsString,
}

impl Names {
    /// The names beside target `last`.
    ///
    /// The hashed form uses other suffixes (`.ftx-hpart`, `.ftx-hstate`), so
    /// the partial of a long name can never be the partial of a short name
    /// that happens to be the hex digest. Names ending in any of these
    /// suffixes are refused on the wire ([`crate::protocol::name`]), so a
    /// peer cannot plant a partial or a state file either.
    pub fn for_target(last: &OsStr) -> Names {
        // One allocation a name (a receiver makes these for every file).
        let named = |suffix: &str| {
            let mut n = OsString::with_capacity(1 + last.len() + suffix.len());
            n.push(".");
            n.push(last);
            n.push(suffix);
            n
        };
        if 1 + last.len() + ".ftx-state.tmp".len() <= MAX_COMPONENT_LEN {
            return Names {
                part: named(".ftx-part"),
                state: named(".ftx-state"),
                state_tmp: named(".ftx-state.tmp"),
            };
        }
        let mut h = Hasher::new();
        h.update(last.as_bytes());
        let stem = hex(&h.finish());
        Names {
            part: format!(".{stem}.ftx-hpart").into(),
            state: format!(".{stem}.ftx-hstate").into(),
            state_tmp: format!(".{stem}.ftx-hstate.tmp").into(),
        }
    }

    /// Removes the partial and its state (best effort), if the partial's
    /// name still holds the inode `id` (this writer's own): a file put there
    /// by someone else is left alone.
    pub fn discard(&self, dir: &Dir, id: FileId) {
        if id.is_unnamed() {
            // Nothing has its name, and it never checkpointed.
            return;
        }
        if FileId::at(dir, &self.part).is_some_and(|at| at == id) {
            let _ = dir.remove_file(&self.part);
        }
        let _ = dir.remove_file(&self.state);
        let _ = dir.remove_file(&self.state_tmp);
    }
}

/// The identity of a file (device and inode), or of a file without a
/// name ([`FileId::unnamed`]: `O_TMPFILE`), which no name can ever be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId(Option<(u64, u64)>);

impl FileId {
    /// The identity of an open file.
    pub fn of(file: &std::fs::File) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let md = file.metadata()?;
        Ok(FileId(Some((md.dev(), md.ino()))))
    }

    /// The identity of what the name `name` in `dir` is now (not followed).
    pub fn at(dir: &Dir, name: &OsStr) -> Option<FileId> {
        use cap_std::fs::MetadataExt;
        let md = dir.symlink_metadata(name).ok()?;
        Some(FileId(Some((md.dev(), md.ino()))))
    }

    /// A file without a name: it is placed by linking it, and there is
    /// nothing to remove when it is discarded.
    pub fn unnamed() -> FileId {
        FileId(None)
    }

    /// True for [`FileId::unnamed`].
    pub fn is_unnamed(&self) -> bool {
        self.0.is_none()
    }
}

pub fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.follow(FollowSymlinks::No)
}
