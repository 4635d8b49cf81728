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
/// stands in for it. Each is made when asked for: a small file received
/// without a name never needs them (three allocations a file, before).
#[derive(Debug, Clone)]
pub struct Names {
    /// The target's last name, or the hex MD5 that stands in for it.
    stem: OsString,
    hashed: bool,
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
        if 1 + last.len() + ".ftx-state.tmp".len() <= MAX_COMPONENT_LEN {
            return Names {
                stem: last.to_owned(),
                hashed: false,
            };
        }
        let mut h = Hasher::new();
        h.update(last.as_bytes());
        Names {
            stem: hex(&h.finish()).into(),
            hashed: true,
        }
    }

    /// `.STEM` and `suffix` (with an "h" before the "part" or "state" of
    /// a hashed stem).
    fn named(&self, suffix: &str) -> OsString {
        let mut n = OsString::with_capacity(3 + self.stem.len() + suffix.len());
        n.push(".");
        n.push(&self.stem);
        n.push(if self.hashed { ".ftx-h" } else { ".ftx-" });
        n.push(suffix);
        n
    }

    /// The data: `.NAME.ftx-part`.
    pub fn part(&self) -> OsString {
        self.named("part")
    }

    /// The state: `.NAME.ftx-state`.
    pub fn state(&self) -> OsString {
        self.named("state")
    }

    /// Temporary for atomic state replacement.
    pub fn state_tmp(&self) -> OsString {
        self.named("state.tmp")
    }

    /// Removes the partial and its state (best effort), if the partial's
    /// name still holds the inode `id` (this writer's own): a file put there
    /// by someone else is left alone.
    pub fn discard(&self, dir: &Dir, id: FileId) {
        if id.is_unnamed() {
            // Nothing has its name, and it never checkpointed.
            return;
        }
        let part = self.part();
        if FileId::at(dir, &part).is_some_and(|at| at == id) {
            let _ = dir.remove_file(&part);
        }
        let _ = dir.remove_file(self.state());
        let _ = dir.remove_file(self.state_tmp());
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
