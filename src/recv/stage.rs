//! Staged directories. A directory that a DIR entry makes (nothing was
//! there) is created under a working name, `.NAME.ftx-dir`, and the small
//! files that follow it are created at their own names inside it: no file
//! is under its final path before it is complete, as with an unnamed file
//! linked into place, but one rename puts a whole directory's files in
//! place instead of one `linkat` each (on tmpfs an unnamed open and its
//! link cost about 6 us a file more than a create at the final name:
//! `tests/bench/floor.sh`).
//!
//! A stage is open while its own files come. Each small file accepted
//! into it while it is open takes a [`Ticket`], and is created at its name
//! by the commit thread. The stage closes when the files move on to
//! another directory, when the next directory entry comes (a walk goes
//! depth first: it has left the stage, or goes inside it), when a file
//! that can resume or its [`STAGE_FILES`]th file is offered in it, when
//! the session ends, or when the commit thread has had nothing else to do
//! for [`super::commit`]'s moment while it holds RESULTs back (the sender
//! may be waiting for them); a file accepted later is created unnamed and
//! linked, as anywhere. A session stages at most 256 directories at a time
//! (each holds descriptors until it is in place); beyond, a directory is
//! made at its final name. The commit thread renames a closed stage into place
//! once no ticket of it is left (each is given back once the file's data is
//! durable, or the file is gone) and the stage it sits in (if any) is in
//! place; the files placed in it are then reported after a sync that began
//! after the rename, as a linked file is after its link.
//!
//! The working directory is locked (`flock`) from before it has its
//! working name until it is in place. One found unlocked was left by a
//! receiver that ended before it put it in place: nothing in it was
//! reported, and it is removed. One found locked belongs to another
//! session: the directory is then made at its final name, as before.

use cap_fs_ext::DirExt;
use cap_std::fs::Dir;
use std::ffi::{OsStr, OsString};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A stage closes after this many files were offered in it, so that the
/// RESULTs it holds back stay a small part of a sender's window.
pub(super) const STAGE_FILES: usize = 1024;

/// The suffix of a staged directory's working name (reserved: see
/// [`crate::protocol::name::RESERVED_SUFFIXES`]).
const SUFFIX: &str = ".ftx-dir";

const STAGED: u8 = 0;
const PLACED: u8 = 1;
const FAILED: u8 = 2;

/// A directory made under a working name, until it is put in place.
pub(super) struct Stage {
    /// The directory it is made in.
    parent: Dir,
    work: OsString,
    last: OsString,
    /// Its wire name, escaped (for messages).
    pub(super) shown: String,
    /// The nearest stage it is inside, if any: put in place first.
    pub(super) up: Option<Arc<Stage>>,
    closed: AtomicBool,
    state: AtomicU8,
    /// Tickets out: files to be created at their names in it whose data
    /// is not durable yet.
    pending: AtomicUsize,
    /// Files offered in it (the session's count, for [`STAGE_FILES`]).
    pub(super) offered: AtomicUsize,
    /// The working directory, open and locked until it is in place.
    lock: Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Stage {
    /// Makes `last` in `parent` as a stage: `None` when it cannot be one
    /// (its working name would be too long, or another session's stage
    /// of it is there), and the caller makes it at its final name.
    /// Returns the directory (open) and the stage.
    pub(super) fn make(
        parent: &Dir,
        last: &OsStr,
        shown: String,
        up: Option<Arc<Stage>>,
    ) -> io::Result<Option<(Dir, Arc<Stage>)>> {
        use std::os::unix::ffi::OsStrExt;
        let mut work = OsString::from(".");
        work.push(last);
        work.push(SUFFIX);
        if work.as_bytes().len() > 255 {
            return Ok(None);
        }
        // Made and locked under a name of this process's own first, so
        // that a stage under its working name is always locked while its
        // session lives.
        let private = crate::store::own_name("stage", SUFFIX);
        parent.create_dir(&private)?;
        let made = parent
            .open_dir_nofollow(&private)
            .and_then(|d| lock(&d).map(|held| (d, held)));
        let (dir, held) = match made {
            Ok(d) => d,
            Err(e) => {
                let _ = parent.remove_dir(&private);
                return Err(e);
            }
        };
        let mut tries = 0;
        loop {
            match rename_noreplace(parent, OsStr::new(&private), &work) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries == 0 => {
                    tries += 1;
                    if !remove_left(parent, &work) {
                        let _ = parent.remove_dir(&private);
                        return Ok(None);
                    }
                }
                Err(e) => {
                    let _ = parent.remove_dir(&private);
                    return Err(e);
                }
            }
        }
        let stage = Stage {
            parent: parent.try_clone()?,
            work,
            last: last.to_owned(),
            shown,
            up,
            closed: AtomicBool::new(false),
            state: AtomicU8::new(STAGED),
            pending: AtomicUsize::new(0),
            offered: AtomicUsize::new(0),
            lock: Mutex::new(Some(held)),
        };
        Ok(Some((dir, Arc::new(stage))))
    }

    /// No more files are created at their names in it.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// It is in place (or failed to be put there).
    pub(super) fn settled(&self) -> bool {
        self.state.load(Ordering::Acquire) != STAGED
    }

    pub(super) fn failed(&self) -> bool {
        self.state.load(Ordering::Acquire) == FAILED
    }

    /// Whether it may go in place now: closed, no ticket out, and the
    /// stage it is in placed.
    pub(super) fn ready(&self) -> bool {
        // Closed first, then no ticket: a ticket taken meanwhile saw it
        // closed and was given back ([`Ticket::of`]).
        self.is_closed()
            && !self.settled()
            && self.pending.load(Ordering::SeqCst) == 0
            && self.up.as_ref().is_none_or(|u| u.settled())
    }

    /// Puts it in place (`renameat2` with `RENAME_NOREPLACE`): nothing at
    /// its name is ever replaced. On failure it stays under its working
    /// name, and [`Stage::failed`] says so.
    pub(super) fn place(&self) -> io::Result<()> {
        let placed = match &self.up {
            Some(u) if u.failed() => Err(io::Error::other(format!(
                "the directory '{}' it is in could not be put in place",
                u.shown
            ))),
            _ => rename_noreplace(&self.parent, &self.work, &self.last),
        };
        let state = if placed.is_ok() { PLACED } else { FAILED };
        self.state.store(state, Ordering::Release);
        if let Ok(mut l) = self.lock.lock() {
            l.take();
        }
        placed
    }
}

/// A small file accepted into an open stage: created at its own name
/// there, and the stage waits for it (until this is dropped: once its data
/// is durable, or once it is gone).
pub(super) struct Ticket(Arc<Stage>);

impl Ticket {
    /// A ticket of `stage`, if it is open: `Err(true)` if it closed while
    /// the ticket was being taken (the commit thread, which may have seen
    /// the ticket and waited for it, is to look again).
    pub(super) fn of(stage: &Arc<Stage>) -> Result<Ticket, bool> {
        if stage.is_closed() {
            return Err(false);
        }
        // Taken, then the stage looked at again: the commit thread closes
        // it, then looks for tickets, so one of the two sees the other
        // (all four accesses sequentially consistent), and a stage never
        // goes in place with a file about to be created in it.
        stage.pending.fetch_add(1, Ordering::SeqCst);
        let ticket = Ticket(stage.clone());
        if stage.is_closed() {
            drop(ticket);
            return Err(true);
        }
        Ok(ticket)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `renameat2(dir, from, dir, to, RENAME_NOREPLACE)`.
fn rename_noreplace(dir: &Dir, from: &OsStr, to: &OsStr) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags};
    Ok(renameat_with(dir, from, dir, to, RenameFlags::NOREPLACE)?)
}

/// Locks the directory `dir` (`flock` on a descriptor of it opened for
/// reading: `dir` itself may be open only as a path), held while the
/// descriptor returned is open.
fn lock(dir: &Dir) -> io::Result<std::os::fd::OwnedFd> {
    use rustix::fs::{flock, FlockOperation, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, ".", flags, Mode::empty())?;
    flock(&fd, FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
}

/// Removes the stage `work` in `parent` if the receiver that made it has
/// ended (it is not locked); false if it is in use (or cannot be removed).
fn remove_left(parent: &Dir, work: &OsStr) -> bool {
    let Ok(left) = parent.open_dir_nofollow(work) else {
        return false;
    };
    if lock(&left).is_err() {
        return false;
    }
    parent.remove_dir_all(work).is_ok()
}
