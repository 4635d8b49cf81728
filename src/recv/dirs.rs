//! DIR entries: directories are created (never through a symlink) when
//! offered; their modes and mtimes are applied at END, deepest first.

use super::types::*;
use crate::protocol::Status;
use crate::protocol::{DirHeader, Frame};
use crate::sanitize::escape;
use crate::store;
use anyhow::Result;
use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use std::io::{self};
use store::attrs::*;

/// Opens (creating when missing) each directory of `comps` below `root`,
/// never following a symlink.
pub(super) fn open_dirs(root: &Dir, comps: &[&str]) -> Result<Dir, Refusal> {
    let mut dir = root
        .try_clone()
        .map_err(|e| io_refusal("output directory", &e))?;
    for (i, c) in comps.iter().enumerate() {
        let what = || comps[..=i].join("/");
        let next = match dir.open_dir_nofollow(c) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                match dir.create_dir(c) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_refusal(&what(), &e)),
                }
                dir.open_dir_nofollow(c)
                    .map_err(|e| io_refusal(&what(), &e))?
            }
            Err(e) => return Err(io_refusal(&what(), &e)),
        };
        dir = next;
    }
    Ok(dir)
}

/// Ends a connection at once with a reset (linger 0), so a peer blocked on
impl<'a> Session<'a, '_> {
    pub(super) fn dir(&mut self, h: DirHeader) -> Result<()> {
        let name = match self.claim_name(&h.path) {
            Ok(n) => n,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        let comps: Vec<&str> = name.components().collect();
        match open_dirs(&self.sh.root, &comps) {
            Ok(_) => {
                self.dirs.push((name, h.clone()));
                self.conn.queue(&Frame::Result {
                    id: h.id,
                    status: Status::Ok.code(),
                    md5: [0; 16],
                    message: String::new(),
                });
                Ok(())
            }
            Err(r) => self.reject(h.id, &h.path, r),
        }
    }

    /// Applies directory modes and mtimes, deepest first, so writing into a
    /// directory no longer changes its mtime afterwards.
    pub(super) fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(n, _)| std::cmp::Reverse(n.depth()));
        for (name, h) in dirs {
            let comps: Vec<&str> = name.components().collect();
            let applied = open_dirs(&self.sh.root, &comps)
                .map_err(|r| r.1)
                .and_then(|d| {
                    readable_fd(&d)
                        .and_then(|fd| apply_attrs(&fd, h.mode, h.mtime_s, h.mtime_ns))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                self.sh.log(&format!(
                    "{}: cannot set mode/mtime of '{}': {e}",
                    self.peer,
                    escape(name.as_str())
                ));
            }
        }
    }
}
