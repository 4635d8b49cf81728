//! SYMLINK and LINK entries. They are checked when offered (the name, the
//! symlink's target, the hard link's earlier file) and answered at once,
//! but created only at END, after every file of the session is in place:
//! nothing the session writes can pass through a link it created. A link
//! that cannot be created then gets a second RESULT (status 2) before
//! SUMMARY. No link is ever followed: the receiver creates the link itself
//! (`symlinkat`, `linkat` without following) in a directory it opened
//! without following symlinks.

use super::admit;
use super::dirs::{dir_key, open_dirs};
use super::report::*;
use super::types::*;
use crate::protocol::{Frame, Reject, Status, WireName};
use crate::sanitize::escape_bytes;
use anyhow::Result;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// Whether a symlink at `link` pointing to `target` stays inside the
/// transferred tree: relative, and never climbing above the top directory
/// of `link` (`top/a/l -> ../b` is fine, `top/l -> ../x` is not). Pure.
pub(super) fn target_safe(link: &WireName, target: &[u8]) -> Result<(), String> {
    let shown = || escape_bytes(target);
    if target.is_empty() {
        return Err("empty link target".into());
    }
    if target.starts_with(b"/") {
        return Err(format!("absolute link target '{}'", shown()));
    }
    let climbs = || {
        format!(
            "link target '{}' climbs out of the transferred tree",
            shown()
        )
    };
    // Where the link sits: its parent directories, below OUT.
    let mut at: Vec<&[u8]> = link.components().map(|c| c.as_bytes()).collect();
    at.pop();
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                // At the top of OUT, or climbing to it: the tree is left.
                if at.pop().is_none() || at.is_empty() {
                    return Err(climbs());
                }
            }
            other => at.push(other),
        }
    }
    Ok(())
}

/// A link target as it may be stored: any bytes a symlink holds (no NUL),
/// at most 4096 of them; shown escaped wherever it is printed.
fn target_bytes(raw: &[u8]) -> Result<&[u8], String> {
    if raw.len() > crate::protocol::limits::MAX_NAME_LEN {
        return Err("link target longer than 4096 bytes".into());
    }
    if raw.contains(&0) {
        return Err("link target holds a NUL byte".into());
    }
    Ok(raw)
}

impl Session<'_, '_> {
    /// A SYMLINK offer.
    pub(super) fn symlink(
        &mut self,
        id: u32,
        mtime: (i64, u32),
        path: &[u8],
        target: &[u8],
    ) -> Result<()> {
        let name = match self.claim_name(path) {
            Ok(n) => n,
            Err(r) => return self.reject(id, path, r),
        };
        let target = match target_bytes(target) {
            Ok(t) => t.to_vec(),
            Err(why) => return self.reject(id, path, refusal(Reject::UnsafeLink, why)),
        };
        if !self.sh.cfg.allow_unsafe_links {
            if let Err(why) = target_safe(&name, &target) {
                let why = format!("{why} (the receiver allows it with --allow-unsafe-links)");
                return self.reject(id, path, refusal(Reject::UnsafeLink, why));
            }
        }
        self.accept_link(id, name, LinkKind::Symlink { target, mtime });
        Ok(())
    }

    /// A LINK offer: a hard link to an earlier file of this session.
    pub(super) fn hard_link(&mut self, id: u32, path: &[u8], target: &[u8]) -> Result<()> {
        let name = match self.claim_name(path) {
            Ok(n) => n,
            Err(r) => return self.reject(id, path, r),
        };
        let to = match WireName::from_bytes(target) {
            Ok(t)
                if self.seen.seen(admit::keys(t.as_bytes(), self.sh.folds))
                    == admit::Seen::Again =>
            {
                t
            }
            _ => {
                let r = refusal(
                    Reject::UnsafeLink,
                    "a hard link must point to a file offered earlier in the same session",
                );
                return self.reject(id, path, r);
            }
        };
        self.accept_link(id, name, LinkKind::Hard { to });
        Ok(())
    }

    fn accept_link(&mut self, id: u32, name: WireName, kind: LinkKind) {
        self.made_progress();
        self.links.push(PendingLink { id, name, kind });
        self.conn.queue(&Frame::Result {
            id,
            status: Status::Ok.code(),
            md5: [0; 16],
            message: "accepted; created at the end of the session".into(),
        });
    }

    /// Creates the session's links, in the order offered; a second RESULT
    /// for each one that cannot be.
    pub(super) fn finish_links(&mut self) {
        for link in std::mem::take(&mut self.links) {
            let shown = link.name.shown();
            match self.make_link(&link) {
                Ok(()) => {
                    self.stats.ok += 1;
                    if let (Some(m), LinkKind::Hard { to }) = (&self.sh.manifest, &link.kind) {
                        if let Some(d) = m.digest_of(to.as_bytes()) {
                            self.sh.to_manifest(&d, link.name.as_bytes());
                        }
                    }
                }
                Err(why) => {
                    let message = format!("cannot create link '{shown}': {why}");
                    let frame = failed(
                        self.sh,
                        self.peer,
                        &mut self.stats,
                        Failure {
                            id: link.id,
                            shown,
                            status: Status::IoError.code(),
                            md5: [0; 16],
                            message,
                        },
                    );
                    self.conn.queue(&frame);
                }
            }
        }
    }

    fn make_link(&mut self, link: &PendingLink) -> Result<(), String> {
        let (parents, last) = link.name.split_last();
        let dir = open_dirs(&self.sh.root, &parents, |i| {
            self.sh.created(dir_key(&parents[..=i]));
        })
        .map_err(|r| r.1)?;
        let there = dir.symlink_metadata(last);
        match &link.kind {
            LinkKind::Symlink { target, mtime } => {
                match there {
                    Ok(md) if md.is_symlink() => {
                        let now = dir.read_link(last).map_err(|e| e.to_string())?;
                        if now.as_os_str().as_bytes() == target.as_slice() {
                            return Ok(()); // identical: nothing to do
                        }
                        self.make_room(&dir, last, md.is_dir())?;
                    }
                    Ok(md) => self.make_room(&dir, last, md.is_dir())?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.to_string()),
                }
                rustix::fs::symlinkat(std::ffi::OsStr::from_bytes(target), &dir, last)
                    .map_err(|e| e.to_string())?;
                let times = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: 0,
                        tv_nsec: rustix::fs::UTIME_OMIT,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: mtime.0,
                        tv_nsec: i64::from(mtime.1.min(999_999_999)),
                    },
                };
                // Best effort: the link's own mtime, never its target's.
                let _ = rustix::fs::utimensat(
                    &dir,
                    last,
                    &times,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                );
                Ok(())
            }
            LinkKind::Hard { to } => {
                if !self.seen.placed(admit::keys(to.as_bytes(), self.sh.folds)) {
                    return Err(format!("'{}' did not arrive in this session", to.shown()));
                }
                let (to_parents, to_last) = to.split_last();
                let to_dir = open_dirs(&self.sh.root, &to_parents, |_| {}).map_err(|r| r.1)?;
                let to_md = to_dir
                    .symlink_metadata(to_last)
                    .map_err(|e| e.to_string())?;
                if !to_md.is_file() {
                    return Err(format!("'{}' is not a regular file", to.shown()));
                }
                match there {
                    Ok(md) => {
                        use cap_std::fs::MetadataExt;
                        if md.is_file() && md.dev() == to_md.dev() && md.ino() == to_md.ino() {
                            return Ok(()); // already this very link
                        }
                        self.make_room(&dir, last, md.is_dir())?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.to_string()),
                }
                rustix::fs::linkat(&to_dir, to_last, &dir, last, rustix::fs::AtFlags::empty())
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Removes what sits at a link's name, with `--overwrite` only, and
    /// never a directory.
    fn make_room(
        &self,
        dir: &cap_std::fs::Dir,
        last: &std::ffi::OsStr,
        is_dir: bool,
    ) -> Result<(), String> {
        if is_dir {
            return Err("a directory sits at its name".into());
        }
        if !self.sh.cfg.overwrite {
            return Err(
                "something else sits at its name (receiver runs without --overwrite)".into(),
            );
        }
        dir.remove_file(last).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &str) -> WireName {
        WireName::parse(name).expect("name")
    }

    #[test]
    fn link_targets_inside_the_tree_are_safe() {
        assert!(target_safe(&at("top/lib/libfoo.so"), b"libfoo.so.1").is_ok());
        assert!(target_safe(&at("top/a/l"), b"../b/c").is_ok());
        assert!(target_safe(&at("top/a/b/l"), b"../../x").is_ok());
        assert!(target_safe(&at("top/l"), b"./x/./y").is_ok());
        assert!(target_safe(&at("l"), b"x").is_ok());
        // A dangling link inside the tree is fine.
        assert!(target_safe(&at("top/l"), b"missing").is_ok());
    }

    #[test]
    fn absolute_and_climbing_targets_are_not() {
        assert!(target_safe(&at("top/l"), b"/etc/passwd").is_err());
        assert!(target_safe(&at("top/l"), b"../x").is_err());
        assert!(target_safe(&at("top/a/l"), b"../../x").is_err());
        assert!(target_safe(&at("top/a/l"), b"b/../../../x").is_err());
        assert!(target_safe(&at("l"), b"../x").is_err());
        assert!(target_safe(&at("top/l"), b"").is_err());
        // Down then up within the tree is fine; up past the top is not.
        assert!(target_safe(&at("top/a/l"), b"b/../../c").is_ok());
    }

    #[test]
    fn targets_are_bytes_without_nul() {
        assert_eq!(target_bytes(b"ok/x"), Ok(&b"ok/x"[..]));
        assert!(target_bytes(b"\xff").is_ok());
        assert!(target_bytes(b"a\x1bb").is_ok());
        assert!(target_bytes(b"a\nb").is_ok());
        assert!(target_bytes(b"a\0b").is_err());
        assert!(target_bytes(&[b'a'; 5000]).is_err());
    }
}
