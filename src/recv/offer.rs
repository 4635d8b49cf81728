//! A FILE offer: gathers what the decision needs (the name, the claim, what
//! sits at the target, the partial, the free space), lets
//! [`super::admit`] decide, and answers ACCEPT (opening the partial),
//! SKIP or REJECT.

use super::admit::{self, Answer, Target};
use super::dirs::dir_key;
use super::types::*;
use crate::delta;
use crate::events::Event;
use crate::protocol::frame::file_flags;
use crate::protocol::{FileHeader, Frame, WireName};
use crate::protocol::{Reject, SkipReason};
use crate::store;
use anyhow::Result;
use cap_fs_ext::{FollowSymlinks, OpenOptionsFollowExt};
use cap_std::fs::{Dir, OpenOptions};
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

impl<'a> Session<'a, '_> {
    /// Validates a name and checks it was not offered before in this session.
    pub(super) fn claim_name(&mut self, raw: &[u8]) -> Result<WireName, Refusal> {
        // Nothing inside a directory that was refused: it would arrive
        // without its directory's entry (mode, mtime), and uncounted.
        if let Some(n) = admit::inside_refused(&self.refused_dirs, raw) {
            return Err(refusal(
                Reject::Conflict,
                format!(
                    "inside '{}', a directory that was refused",
                    crate::sanitize::escape_bytes(&raw[..n])
                ),
            ));
        }
        let name = WireName::from_bytes(raw);
        // A valid name is looked up and, when new, remembered in one step.
        let seen = match &name {
            Ok(n) => self.seen.claim(admit::keys(n.as_bytes(), self.sh.folds)),
            Err(_) => admit::Seen::New,
        };
        admit::name(name.as_ref().map(|_| ()), seen)?;
        if name.is_ok() {
            // (New: admit::name refused the others.)
            self.sh.remembered.fetch_add(1, Ordering::Relaxed);
            if self.seen.len().is_multiple_of(4096) {
                // What the commit thread placed so far: its list stays
                // short.
                for k in self.commits.take_placed() {
                    self.mark_placed(k);
                }
            }
        }
        // (admit::name refused every invalid name above.)
        name.map_err(|e| refusal(Reject::UnsafeName, e.to_string()))
    }

    pub(super) fn file(&mut self, h: FileHeader, attrs: Vec<crate::xattr::Attr>) -> Result<()> {
        let name = match self.claim_name(&h.path) {
            Ok(n) => n,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        let key: Arc<[u8]> = Arc::from(name.as_bytes());
        if let Err(r) = admit::claim(self.claim_inflight(&key)) {
            return self.reject(h.id, &h.path, r);
        }
        let guard = InflightGuard {
            map: &self.sh.inflight,
            name: key,
            holder: self.peer,
        };
        let (parents, last) = name.split_last();
        let dir = match self.parent_dir(&parents) {
            Ok(d) => d,
            Err(r) => return self.reject(h.id, &h.path, r),
        };
        let last = last.to_owned();
        let last = last.as_os_str();
        // A stream (standard input) cannot be hashed first: it is judged
        // like a different file (refused if a file is there, unless
        // --overwrite).
        let stream = h.flags & file_flags::STREAM != 0;
        let mut ticket = None;
        if let (Some(s), true) = (&dir.stage, dir.own) {
            // A file that can resume must have its partial where a later
            // session finds it: the stage goes in place first. So does
            // one with many files, whose RESULTs it holds back.
            let offered = s.offered.fetch_add(1, Ordering::Relaxed) + 1;
            if !store::never_resumes(h.size, stream) || offered >= super::stage::STAGE_FILES {
                self.close_stage(s);
            }
            match super::stage::Ticket::of(s) {
                Ok(t) => ticket = Some(t),
                Err(true) => self.commits.stage_closed(),
                Err(false) => {}
            }
        }
        if h.flags & file_flags::DIGEST_FOLLOWS != 0 && !stream {
            // Without the digest, an existing file or a partial cannot be
            // judged (identical? resumable?): the sender is asked for it.
            // Only a target with nothing there at all takes the body now.
            let names = store::Names::for_target(last);
            let target = dir.symlink_metadata(last);
            let at_target = !matches!(&target, Err(e) if e.kind() == io::ErrorKind::NotFound);
            let at_part = !matches!(
                dir.symlink_metadata(names.part()),
                Err(e) if e.kind() == io::ErrorKind::NotFound
            );
            if at_target || at_part {
                // With --overwrite, a file it replaces by a delta is no
                // obstacle: both sides hash as the body moves.
                let by_delta = self.sh.cfg.overwrite
                    && !at_part
                    && target
                        .as_ref()
                        .is_ok_and(|md| md.is_file() && delta::cut(md.len()).is_some())
                    && delta::cut(h.size).is_some();
                // A partial written the same way (without the digest):
                // resumed, the sender confirming its prefix and hashing on
                // from there (PREFIX), instead of hashing the whole file
                // first.
                if by_delta || (!at_target && store::unhashed_partial(&dir, &names, h.size)) {
                    return self.accept_file(h, name, (guard, ticket), dir, last, attrs);
                }
                self.conn.queue(&Frame::Reject {
                    id: h.id,
                    code: Reject::NeedDigest.code(),
                    message:
                        "something is at the target or a partial of it: offer again with the digest"
                            .into(),
                });
                return Ok(());
            }
        }
        // A small file is linked into place without a name until then,
        // never over anything: in a directory this session created, its
        // name is free (nothing to skip, nothing to refuse), and the look
        // at its target is saved (a tree of small files paid it for each).
        let fresh = self.parent.as_ref().is_some_and(|p| p.fresh);
        let answer = if fresh && self.sh.unnamed && store::never_resumes(h.size, stream) {
            Answer::Write
        } else {
            self.check_target(&dir, last, &h)
        };
        match answer {
            Answer::Write => self.accept_file(h, name, (guard, ticket), dir, last, attrs),
            Answer::Skip => {
                self.stats.ok += 1;
                self.stats.skipped += 1;
                self.sh.events.emit(|| Event::FileSkipped {
                    path: name.shown(),
                    bytes: h.size,
                    reason: SkipReason::Identical.reason().into(),
                    peer: Some(self.peer.to_string()),
                });
                self.conn.queue(&Frame::Skip {
                    id: h.id,
                    reason: SkipReason::Identical.code(),
                });
                self.made_progress();
                self.sh.to_manifest(&h.md5, name.as_bytes());
                self.mark_placed(admit::keys(name.as_bytes(), self.sh.folds).1);
                // The content is there; its attributes are set as sent.
                let unset = if attrs.is_empty() {
                    Vec::new()
                } else {
                    match dir.open_with(
                        last,
                        OpenOptions::new().read(true).follow(FollowSymlinks::No),
                    ) {
                        Ok(f) => crate::xattr::apply(f.into_std(), &attrs),
                        Err(e) => vec![format!("all ({e})")],
                    }
                };
                let note = if unset.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; these extended attributes could not be set: {}",
                        unset.join(", ")
                    )
                };
                self.sh.log(&format!(
                    "{}: skipped '{}': identical content already there{note}",
                    self.peer,
                    name.shown()
                ));
                Ok(())
            }
            Answer::Refuse(r) => self.reject(h.id, &h.path, r),
        }
    }

    /// Accepts a file offer that may be written: opens or resumes its
    /// partial, checks the space, and answers (BLOCKS and PREFIX first
    /// when they apply) ACCEPT.
    fn accept_file(
        &mut self,
        h: FileHeader,
        name: WireName,
        (guard, ticket): (InflightGuard<'a>, Option<super::stage::Ticket>),
        dir: Arc<OutDir>,
        last: &std::ffi::OsStr,
        attrs: Vec<crate::xattr::Attr>,
    ) -> Result<()> {
        let names = store::Names::for_target(last);
        if h.size >= crate::progress::PHASE_SHOWN_MIN {
            // A partial of it, if any, is read and hashed before the answer.
            self.bar
                .set_message(format!("{} files, checking {}", self.bodies, name.shown()));
        }
        let mut prefix = None;
        // A file under a block never checkpoints: nothing of it can
        // resume, and its partial's name is looked at when its body
        // starts (store::create_small), not here.
        let small = store::never_resumes(h.size, h.flags & file_flags::STREAM != 0);
        let slot = if small {
            Ok(store::Slot::Fresh { discarded: None })
        } else {
            store::prepare(
                &dir,
                &names,
                h.size,
                h.md5,
                file_flags::algo(h.flags),
                &self.sh.budget,
            )
        };
        let (resumed, offset, discarded) = match slot {
            Ok(store::Slot::Fresh { discarded }) => (None, 0, discarded),
            Ok(store::Slot::Resumed(o)) => {
                // Written without the digest: the sender confirms the
                // prefix, or sends it all from 0 instead.
                prefix = o.prefix;
                (Some((o.writer, o.id)), o.offset, o.discarded)
            }
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                let r = refusal(Reject::InProgress, format!("{e}; try again later"));
                return self.reject(h.id, &h.path, r);
            }
            Err(e) => {
                return self.reject(
                    h.id,
                    &h.path,
                    io_refusal(&crate::sanitize::escape_bytes(names.part().as_bytes()), &e),
                )
            }
        };
        if let Some(why) = &discarded {
            self.sh.log(&format!(
                "{}: '{}': starting over: {why}",
                self.peer,
                name.shown()
            ));
        }
        if let Err(r) = self.check_space(h.size - offset) {
            // A resumed partial stays, to resume when there is room.
            return self.reject(h.id, &h.path, r);
        }
        let old = self.delta_base(&dir, last, &h);
        if let Some(md5) = prefix {
            self.conn.queue(&Frame::Prefix { id: h.id, md5 });
        }
        self.conn.queue(&Frame::Accept { id: h.id, offset });
        self.made_progress();
        self.sh.events.emit(|| Event::FileStarted {
            path: name.shown(),
            bytes: h.size,
            offset,
            peer: Some(self.peer.to_string()),
        });
        if self.sh.progress.shown() {
            self.bar.set_length(self.bar.length().unwrap_or(0) + h.size);
            if offset > 0 {
                self.bar.inc(offset);
            }
        }
        let last = last.to_owned();
        self.awaiting.push_back(Awaiting {
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
            _guard: guard,
        });
        Ok(())
    }

    /// The file `last` that the offer `h` replaces, when it is to be
    /// replaced by a delta update (`--overwrite`, both at least
    /// [`delta::DELTA_MIN`], not a stream): its block digests (from the
    /// digest cache when it knows this version, else read and kept) are
    /// queued as BLOCKS, and it stays open for the SAME extents.
    fn delta_base(&mut self, dir: &Dir, last: &std::ffi::OsStr, h: &FileHeader) -> Option<Old> {
        if !self.sh.cfg.overwrite
            || h.flags & file_flags::STREAM != 0
            || delta::cut(h.size).is_none()
        {
            return None;
        }
        let file = dir
            .open_with(
                last,
                OpenOptions::new().read(true).follow(FollowSymlinks::No),
            )
            .ok()?
            .into_std();
        let md = file.metadata().ok()?;
        if !md.is_file() {
            return None;
        }
        let (block, total) = delta::cut(md.len())?;
        let old = store::cold::ColdFile::new(file);
        let file = old.file();
        let version = crate::cache::Version::of(&md);
        let digests = match self.sh.digests.blocks(&version, block, total) {
            Some(d) => d,
            None => {
                let d = match delta::digests(|b, at| old.read_exact_at(b, at), block, total) {
                    Ok(d) => d,
                    Err(e) => {
                        self.sh.log(&format!(
                            "{}: '{}': sent whole: cannot read the file it replaces: {e}",
                            self.peer,
                            crate::sanitize::escape_bytes(&h.path)
                        ));
                        return None;
                    }
                };
                let same = file
                    .metadata()
                    .is_ok_and(|now| crate::cache::Version::of(&now) == version);
                if same {
                    self.sh.digests.put_blocks(&version, block, &d);
                }
                d
            }
        };
        for (i, chunk) in digests
            .chunks(crate::protocol::limits::DELTA_DIGESTS_PER_FRAME)
            .enumerate()
        {
            self.conn.queue(&Frame::Blocks {
                id: h.id,
                block: block as u32,
                first: (i * crate::protocol::limits::DELTA_DIGESTS_PER_FRAME) as u32,
                total,
                digests: chunk.to_vec(),
            });
        }
        Some(Old {
            file: Arc::new(old),
            covered: block * u64::from(total),
        })
    }

    /// Opens (creating when missing) the directory `comps` below OUT, or
    /// reuses the one the previous file went into.
    pub(super) fn parent_dir(
        &mut self,
        comps: &[&std::ffi::OsStr],
    ) -> Result<Arc<OutDir>, Refusal> {
        if let Some(p) = &self.parent {
            if p.comps
                .iter()
                .map(|c| c.as_os_str())
                .eq(comps.iter().copied())
            {
                return Ok(p.dir.clone());
            }
        }
        let (dir, stage, own) = self.make_dirs(comps)?;
        // Files elsewhere end the run of files of the stage the last file
        // went into (a walk sends a directory's files together).
        if let Some(p) = &self.parent {
            if let (Some(s), true) = (&p.dir.stage, p.dir.own) {
                self.close_stage(s);
            }
        }
        // Only an unnamed file is ever created with its final mode.
        let plain_modes = self.sh.unnamed && !store::has_default_acl(&dir);
        let dir = Arc::new(OutDir {
            dir,
            plain_modes,
            stage,
            own,
        });
        let key = dir_key(comps);
        self.parent = Some(Parent {
            comps: comps.iter().map(|c| (*c).to_owned()).collect(),
            dir: dir.clone(),
            free: None,
            asked: Instant::now(),
            // OUT itself (no components) was there before.
            fresh: !comps.is_empty() && self.fresh_dirs.contains(key),
        });
        Ok(dir)
    }

    /// Refuses a body of `need` bytes that cannot fit in the directory of
    /// [`Session::parent_dir`]. Asks the file system again when the need is
    /// a large part of what was free, or after a second: other writers
    /// share the disk. Best effort: a full disk while writing is still
    /// reported as such.
    pub(super) fn check_space(&mut self, need: u64) -> Result<(), Refusal> {
        let Some(p) = self.parent.as_mut() else {
            return Ok(());
        };
        let free = match admit::known_free(need, p.free, p.asked.elapsed()) {
            Some(free) => free,
            None => {
                let vfs = rustix::fs::fstatvfs(&p.dir.dir)
                    .map_err(|e| io_refusal("free space", &e.into()))?;
                p.asked = Instant::now();
                vfs.f_bavail.saturating_mul(vfs.f_frsize)
            }
        };
        if let Err(r) = admit::space(need, free) {
            p.free = Some(free);
            return Err(r);
        }
        p.free = Some(free - need);
        Ok(())
    }

    /// Looks at whatever sits at the target name and lets
    /// [`admit::target`] decide.
    pub(super) fn check_target(&self, dir: &Dir, last: &std::ffi::OsStr, h: &FileHeader) -> Answer {
        let t = match dir.symlink_metadata(last) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Target::Absent,
            Err(e) => {
                let shown = crate::sanitize::escape_bytes(last.as_bytes());
                return Answer::Refuse(io_refusal(&shown, &e));
            }
            Ok(md) if md.is_symlink() => Target::Symlink,
            Ok(md) if !md.is_file() => Target::NotAFile,
            Ok(md) => Target::File {
                same_size: md.len() == h.size,
            },
        };
        admit::target(t, self.sh.cfg.overwrite, || self.same_content(dir, last, h))
    }

    /// True if the existing file `last` has the MD5 of the offer: it is
    /// hashed (a record kept beside it could go stale without a trace: a
    /// file changed in place can keep its size and mtime).
    pub(super) fn same_content(&self, dir: &Dir, last: &std::ffi::OsStr, h: &FileHeader) -> bool {
        same_content(self.sh, dir, last, h, true)
    }
}

/// True if the file `last` in `dir` has the digest of the offer `h`: from
/// the receiver's cache when `cached` and it knows this version of the
/// file, else hashed (and then cached).
pub(super) fn same_content(
    sh: &Shared,
    dir: &Dir,
    last: &std::ffi::OsStr,
    h: &FileHeader,
    cached: bool,
) -> bool {
    {
        let opened = dir.open_with(
            last,
            OpenOptions::new().read(true).follow(FollowSymlinks::No),
        );
        let Ok(file) = opened.map(|f| f.into_std()) else {
            return false;
        };
        let Ok(md) = file.metadata() else {
            return false;
        };
        // The receiver's cache, keyed by this version of the file (any
        // write changes its ctime): never a record that could go stale.
        md.len() == h.size
            && sh
                .digests
                .digest_of(file_flags::algo(h.flags), &file, &md, cached)
                .is_ok_and(|d| d == h.md5)
    }
}
