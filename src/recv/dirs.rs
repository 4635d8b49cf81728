//! DIR entries: directories are created (never through a symlink) when
//! offered; their modes and mtimes are applied at END, deepest first, and
//! only to directories this session created: a DIR entry never changes a
//! directory that was there before (`.ssh`, OUT's own subdirectories).

use super::stage::Stage;
use super::types::*;
use crate::protocol::Status;
use crate::protocol::{DirHeader, Frame};
use crate::sanitize::escape_bytes;
use crate::store;
use anyhow::Result;
use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use std::ffi::OsStr;
use std::io::{self};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;
use store::attrs::*;

/// A directory opened below OUT: the stage it is in (or is) while that is
/// not in place, and whether it is that stage's own directory.
pub(super) type StagedDir = (Dir, Option<Arc<Stage>>, bool);

/// A stage on a path: its directory, how many components it covers.
type StagedPrefix = Option<(Dir, usize, Arc<Stage>)>;

/// A session makes a directory at its final name instead of staging it
/// while this many of its stages are not in place yet (each holds three
/// descriptors until then).
const MAX_STAGES: usize = 256;

/// Opens (creating when missing) each directory of `comps` below `root`,
/// never following a symlink; `created(i)` is told of each component `i`
/// this call created.
pub(super) fn open_dirs(
    root: &Dir,
    comps: &[&OsStr],
    mut created: impl FnMut(usize),
) -> Result<Dir, Refusal> {
    let mut dir = root
        .try_clone()
        .map_err(|e| io_refusal("output directory", &e))?;
    for (i, c) in comps.iter().enumerate() {
        let what = || escape_bytes(&comps[..=i].join(OsStr::new("/")).into_vec());
        dir = open_dir(&dir, c, what, || created(i))?;
    }
    Ok(dir)
}

/// Opens (creating when missing) the directory `name` in `dir`, never
/// following a symlink; `created` is told if this call created it, and
/// `what` names it in a refusal.
fn open_dir(
    dir: &Dir,
    name: &OsStr,
    what: impl Fn() -> String,
    created: impl FnOnce(),
) -> Result<Dir, Refusal> {
    match dir.open_dir_nofollow(name) {
        Ok(d) => Ok(d),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match dir.create_dir(name) {
                Ok(()) => created(),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_refusal(&what(), &e)),
            }
            dir.open_dir_nofollow(name)
                .map_err(|e| io_refusal(&what(), &e))
        }
        Err(e) => Err(io_refusal(&what(), &e)),
    }
}

/// The key of a directory in [`CreatedDirs`]: a 128-bit hash of
/// its wire path, so the set stays small whatever the names' lengths.
pub(super) fn dir_key(comps: &[&OsStr]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for c in comps {
        h.update(c.as_bytes());
        h.update(b"/");
    }
    h.digest128()
}

impl<'a> Session<'a, '_> {
    /// Opens the directory `comps` below OUT, creating what is missing
    /// ([`open_dirs`]), and remembers what it created: receiver-wide, for
    /// the DIR entries' modes and mtimes; in this session, as fresh when
    /// it made the directory itself ([`FreshDirs`]).
    ///
    /// Below a stage of this session not yet in place, from that stage's
    /// directory (its final path does not exist yet); the stage comes
    /// back with the directory, and whether it is the stage's own.
    pub(super) fn make_dirs(&mut self, comps: &[&OsStr]) -> Result<StagedDir, Refusal> {
        let (base, from, stage) = match self.staged_prefix(comps)? {
            Some((dir, from, stage)) => (Some(dir), from, Some(stage)),
            None => (None, 0, None),
        };
        let mut made = false;
        let dir = open_dirs(
            base.as_ref().unwrap_or(&self.sh.root),
            &comps[from..],
            |i| {
                self.sh.created(dir_key(&comps[..=from + i]));
                made = from + i + 1 == comps.len();
            },
        )?;
        if made {
            self.fresh_dirs.insert(dir_key(comps));
        }
        let own = stage.is_some() && from == comps.len();
        Ok((dir, stage, own))
    }

    /// The deepest stage of this session on the path `comps` that is not
    /// in place yet: its directory, how many components it covers, and the
    /// stage. Stages in place are forgotten now and then.
    fn staged_prefix(&mut self, comps: &[&OsStr]) -> Result<StagedPrefix, Refusal> {
        if self.stages.is_empty() {
            return Ok(None);
        }
        if self.stages.len() >= 64 {
            self.stages.retain(|_, (s, _)| !s.settled());
        }
        for n in (1..=comps.len()).rev() {
            if let Some((stage, dir)) = self.stages.get(&dir_key(&comps[..n])) {
                if stage.settled() {
                    break;
                }
                let dir = dir.try_clone().map_err(|e| io_refusal(&stage.shown, &e))?;
                return Ok(Some((dir, n, stage.clone())));
            }
        }
        Ok(None)
    }

    /// No more files at their names in `stage`: the commit thread puts it
    /// in place once their data is durable.
    pub(super) fn close_stage(&self, stage: &Stage) {
        if !stage.is_closed() {
            stage.close();
            self.commits.stage_closed();
        }
    }

    /// Makes the directory `comps` of a DIR entry: as a stage when nothing
    /// is at its name and a stage can be made ([`Stage::make`]: where one
    /// cannot, for whatever reason, at its final name, which says what is
    /// wrong if anything is); else opens it, creating it if missing, in
    /// its parent (opened once).
    fn make_dir(&mut self, comps: &[&OsStr], shown: String) -> Result<(), Refusal> {
        let Some((&last, parents)) = comps.split_last() else {
            return self.make_dirs(comps).map(drop);
        };
        let (parent, up, _) = self.make_dirs(parents)?;
        // A directory inside a stage ends the run of that stage's own
        // files: it goes in place first, and this one after it.
        if let Some(up) = &up {
            self.close_stage(up);
        }
        let key = dir_key(comps);
        // Each stage holds descriptors until it is in place.
        if self.commits.stages_out() < MAX_STAGES {
            match parent.symlink_metadata(last) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Ok(Some((dir, stage))) = Stage::make(&parent, last, shown.clone(), up) {
                        self.sh.created(key);
                        self.fresh_dirs.insert(key);
                        self.stages.insert(key, (stage.clone(), dir));
                        self.commits.add_stage(stage.clone());
                        self.open_stages.push(stage);
                        return Ok(());
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(io_refusal(&shown, &e)),
            }
        }
        open_dir(
            &parent,
            last,
            || shown.clone(),
            || {
                self.sh.created(key);
                self.fresh_dirs.insert(key);
            },
        )
        .map(drop)
    }

    pub(super) fn dir(&mut self, h: DirHeader, attrs: Vec<crate::xattr::Attr>) -> Result<()> {
        let name = match self.claim_name(&h.path) {
            Ok(n) => n,
            Err(r) => return self.refuse_dir(h, r),
        };
        // A directory comes after everything in the directories made
        // before it but those it is in (a walk goes depth first): their
        // stages hold no more files of their own.
        for s in std::mem::take(&mut self.open_stages) {
            self.close_stage(&s);
        }
        let comps: Vec<&OsStr> = name.components().collect();
        match self.make_dir(&comps, name.shown()) {
            Ok(()) => {
                // Only a directory this receiver created gets the entry's
                // mode and mtime (at END); one that was there is left as
                // it is.
                if self.sh.take_created(dir_key(&comps)) {
                    self.dirs.push((name, h.clone(), attrs));
                }
                self.made_progress();
                self.conn.queue(&Frame::Result {
                    id: h.id,
                    status: Status::Ok.code(),
                    md5: [0; 16],
                    message: String::new(),
                });
                Ok(())
            }
            Err(r) => self.refuse_dir(h, r),
        }
    }

    /// Refuses a DIR entry, and with it everything offered inside it.
    fn refuse_dir(&mut self, h: DirHeader, r: Refusal) -> Result<()> {
        self.refused_dirs
            .insert(super::admit::dir_prefix_key(&h.path));
        self.reject(h.id, &h.path, r)
    }

    /// Applies directory modes and mtimes, deepest first, so writing into a
    /// directory no longer changes its mtime afterwards.
    pub(super) fn finish_dirs(&mut self) {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(n, _, _)| std::cmp::Reverse(n.depth()));
        for (name, h, attrs) in dirs {
            let comps: Vec<&OsStr> = name.components().collect();
            let mode = dir_mode(h.mode, self.sh.umask);
            let applied = open_dirs(&self.sh.root, &comps, |_| {})
                .map_err(|r| r.1)
                .and_then(|d| {
                    readable_fd(&d)
                        .and_then(|fd| {
                            let unset = crate::xattr::apply(&fd, &attrs);
                            apply_attrs(&fd, Some(mode), h.mtime_s, h.mtime_ns)?;
                            if unset.is_empty() {
                                Ok(())
                            } else {
                                Err(io::Error::other(format!(
                                    "these extended attributes could not be set: {}",
                                    unset.join(", ")
                                )))
                            }
                        })
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                self.sh.log(&format!(
                    "{}: cannot set mode/mtime of '{}': {e}",
                    self.peer,
                    name.shown()
                ));
            }
        }
    }
}
