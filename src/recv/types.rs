//! The receiver's shared types: what every session shares ([`Shared`]), one
//! session's state ([`Session`]), a file on its way through the stages
//! (accepted → received → verified → committed), refusals and failures.
//! Every stage of the receiver depends on this file; it depends on none.

use crate::config::RecvConfig;
use crate::conn::Conn;
use crate::digest::Md5Digest;
use crate::events::Events;
use crate::net::{Activity, Deadlined};
use crate::progress::Progress;
use crate::protocol::Reject;
use crate::protocol::{DirHeader, FileHeader, WireName};
use crate::store;
use cap_std::fs::Dir;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

pub use crate::front::Shutdown;

/// A set of keys that are hashes of names a peer chose (xxh3, unseeded),
/// hashed again for the table with a random seed (foldhash): SipHash was
/// a twentieth of the receiver's instructions for small files.
pub(super) type KeySet<K> = HashSet<K, foldhash::quality::RandomState>;

/// Directories created by this receiver whose DIR entry has not come yet,
/// by [`super::dirs::dir_key`]. Bounded: beyond [`CreatedDirs::MAX`]
/// directories, newer ones are not remembered (their DIR entries then
/// leave their modes as created).
#[derive(Debug, Default)]
pub(super) struct CreatedDirs(KeySet<u128>);

impl CreatedDirs {
    /// Directories remembered at most (16 bytes each, and the set's own).
    pub(super) const MAX: usize = 1 << 18;

    /// Remembers that this receiver created `key`.
    pub(super) fn insert(&mut self, key: u128) {
        if self.0.len() < Self::MAX {
            self.0.insert(key);
        }
    }

    /// True if this receiver created `key` (and forgets it: a directory's
    /// DIR entry is applied once).
    pub(super) fn take(&mut self, key: u128) -> bool {
        self.0.remove(&key)
    }
}

/// State shared by every session of one receiver.
pub(super) struct Shared {
    pub(super) cfg: RecvConfig,
    /// The memory budget every held body is paid from.
    pub(super) budget: Arc<store::budget::Budget>,
    /// The process's umask, read at start: received modes are masked by it.
    pub(super) umask: u32,
    /// The output directory's file system folds names (case or Unicode
    /// normalisation), as macOS's and Windows' do: probed at start. Only
    /// then are names that differ by case alone refused as one file.
    pub(super) folds: bool,
    /// Small files are written without a name and linked into place
    /// (`O_TMPFILE`): the receiver does not replace files (`--overwrite`
    /// renames over the target) and OUT's file system takes them (probed
    /// at start, [`crate::store::unnamed_works`]).
    pub(super) unnamed: bool,
    /// Directories this receiver created and has not applied a DIR entry
    /// to yet: a DIR entry's mode and mtime are applied only to these.
    pub(super) created_dirs: Mutex<CreatedDirs>,
    pub(super) root: Dir,
    pub(super) progress: Progress,
    /// The live sessions (`--max-sessions`, eviction, interrupts).
    pub(super) slots: crate::front::Slots,
    /// Digests of files in OUT, by file version, kept outside OUT (the
    /// user's digest cache; disabled where that lies inside OUT).
    pub(super) digests: crate::cache::DigestCache,
    /// `--manifest FILE`: a line for every file verified or skipped.
    pub(super) manifest: Option<crate::manifest::Writer>,
    /// Names the live sessions remember (to refuse duplicates), in all: at
    /// most [`RecvConfig::max_names`].
    pub(super) remembered: AtomicUsize,
    /// Targets being written right now, by wire name, across sessions.
    pub(super) inflight: Mutex<Inflight>,
    /// Set on SIGINT/SIGTERM: no new session starts.
    pub(super) stopping: Shutdown,
    /// `--json` output.
    pub(super) events: Events,
}

impl Shared {
    /// Remembers a directory this receiver created.
    pub(super) fn created(&self, key: u128) {
        if let Ok(mut c) = self.created_dirs.lock() {
            c.insert(key);
        }
    }

    /// True if this receiver created the directory `key` (once).
    pub(super) fn take_created(&self, key: u128) -> bool {
        self.created_dirs.lock().is_ok_and(|mut c| c.take(key))
    }

    /// Sets `stop` to why OUT cannot take any more files, if it cannot
    /// (see [`Shared::out_unusable`]; not asked again once `stop` is set).
    pub(super) fn stop_if_out_unusable(&self, stop: &std::sync::OnceLock<String>) {
        if stop.get().is_none() {
            if let Some(cause) = self.out_unusable() {
                let _ = stop.set(cause);
            }
        }
    }

    /// Why the output directory cannot take any more files, if that is
    /// so: its file system is read-only, full or out of inodes, or it
    /// cannot be written any more. Asked after a write failed, so that one cause ends the
    /// session with one error instead of a line for every file after it.
    pub(super) fn out_unusable(&self) -> Option<String> {
        use rustix::fs::{accessat, fstatvfs, Access, AtFlags, StatVfsMountFlags};
        let out = crate::sanitize::escape(&self.cfg.out.to_string_lossy());
        if let Ok(st) = fstatvfs(&self.root) {
            if st.f_flag.contains(StatVfsMountFlags::RDONLY) {
                return Some(format!("the file system of {out} is read-only"));
            }
            let root = rustix::process::geteuid().is_root();
            if st.f_bfree == 0 || (st.f_bavail == 0 && !root) {
                return Some(format!("the file system of {out} is full (no space left)"));
            }
            // Out of inodes (tmpfs, ext4): no file can be created however
            // much space is left. (A file system without a count says 0.)
            if st.f_files > 0 && (st.f_ffree == 0 || (st.f_favail == 0 && !root)) {
                return Some(format!(
                    "the file system of {out} has no free inodes left (no more files can be created)"
                ));
            }
        }
        if let Err(e) = accessat(
            &self.root,
            ".",
            Access::WRITE_OK | Access::EXEC_OK,
            AtFlags::EACCESS,
        ) {
            return Some(format!(
                "{out} can no longer be written ({})",
                io::Error::from(e)
            ));
        }
        None
    }

    /// A line on stderr, above the bars.
    pub(super) fn log(&self, line: &str) {
        self.progress.println(&format!("ftx: {line}"));
    }
}

impl Shared {
    /// Adds a file now in place (or found identical) to the manifest; a
    /// line that cannot be written is said (the manifest lacks it).
    pub(super) fn to_manifest(&self, digest: &crate::digest::Md5Digest, name: &[u8]) {
        if let Some(m) = &self.manifest {
            if let Err(e) = m.add(digest, name) {
                self.log(&format!(
                    "cannot add '{}' to the manifest {}: {e}",
                    crate::sanitize::escape_bytes(name),
                    crate::sanitize::escape(&m.path().to_string_lossy())
                ));
            }
        }
    }
}

impl crate::front::Host for Shared {
    fn stopping(&self) -> &Shutdown {
        &self.stopping
    }
    fn log(&self, line: &str) {
        Shared::log(self, line);
    }
    fn timeout(&self) -> std::time::Duration {
        self.cfg.timeout
    }
    fn token(&self) -> Option<&crate::auth::Token> {
        self.cfg.token.as_ref()
    }
    fn cipher(&self) -> Option<crate::secure::Cipher> {
        self.cfg.cipher
    }
    fn slots(&self) -> &crate::front::Slots {
        &self.slots
    }
}

/// What a pending link is.
pub(super) enum LinkKind {
    /// A symlink to `target`, with the link's own mtime.
    Symlink { target: Vec<u8>, mtime: (i64, u32) },
    /// A hard link to the earlier file `to`.
    Hard { to: WireName },
}

/// A link accepted in this session, created at END.
pub(super) struct PendingLink {
    pub(super) id: u32,
    pub(super) name: WireName,
    pub(super) kind: LinkKind,
}

/// What a finished session amounted to.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Stats {
    pub(super) ok: u32,
    pub(super) skipped: u32,
    pub(super) failed: u32,
    pub(super) bytes: u64,
    /// Files whose digest did not match (counted in `failed` too).
    pub(super) mismatched: u32,
    /// Offers answered "digest needed" (counted in `failed` too; not a
    /// failure: the sender offers them again).
    pub(super) asked_digest: u32,
    /// The sender's END said it has entries left for a next session.
    pub(super) more: bool,
    /// Entries the server named with LEFT (not offered).
    pub(super) left: u32,
    /// Bytes of bodies taken from the files they replace (SAME).
    pub(super) matched: u64,
}

/// A refusal of one offer: REJECT code and message.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal(pub(super) Reject, pub(super) String);

pub(super) fn refusal(code: Reject, msg: impl Into<String>) -> Refusal {
    Refusal(code, msg.into())
}

/// Maps an I/O error met while walking to a target into a refusal.
pub(super) fn io_refusal(what: &str, e: &io::Error) -> Refusal {
    match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => refusal(
            Reject::Conflict,
            format!("{what}: a symlink or a file is in the way"),
        ),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => refusal(Reject::NoSpace, format!("{what}: {e}")),
        _ => refusal(Reject::Io, format!("{what}: {e}")),
    }
}

/// One sender's session.
pub(super) struct Session<'a, 'c> {
    pub(super) sh: &'a Shared,
    pub(super) conn: Conn<Deadlined>,
    pub(super) peer: SocketAddr,
    /// This receiver dialed and pulled (the peer is a server: it may name
    /// entries it does not offer, with LEFT).
    pub(super) pulled: bool,
    /// Entries already offered in this session, and which files of them
    /// were placed (what a LINK may name). At most
    /// [`super::admit::MAX_ENTRIES`].
    pub(super) seen: super::admit::SeenNames,
    /// Directories refused in this session (keys of
    /// [`super::admit::dir_prefix_key`]): what is offered inside them is
    /// refused too.
    pub(super) refused_dirs: KeySet<u128>,
    /// Directories this session created (keys of
    /// [`super::dirs::dir_key`]), the most recent ones: nothing was in
    /// them but what this session put there, so a small file offered
    /// inside needs no look at its target (see [`Parent::fresh`]).
    pub(super) fresh_dirs: FreshDirs,
    /// XATTR frames received for the offer that follows them: its id,
    /// the attributes, their bytes.
    pub(super) attrs: Option<(u32, Vec<crate::xattr::Attr>, usize)>,
    /// [`Session::progress`] as the other sessions see it (for eviction);
    /// also touched by every body chunk.
    pub(super) moved: Activity,
    /// When the session last moved file bytes or settled an entry other
    /// than by a refusal: a session without progress for `--timeout` is
    /// ended, whatever it sends.
    pub(super) progress: Instant,
    /// SYMLINK and LINK entries accepted, created at END.
    pub(super) links: Vec<PendingLink>,
    /// Offers refused in this session (only the first few are logged).
    pub(super) refusals: u64,
    /// Directories whose attributes are applied at END.
    pub(super) dirs: Vec<(WireName, DirHeader, Vec<crate::xattr::Attr>)>,
    /// Accepted files whose BODY has not arrived yet, in acceptance order.
    pub(super) awaiting: VecDeque<Awaiting<'a>>,
    /// Small files received, their bodies in memory, not yet hashed.
    pub(super) small: Vec<Unhashed<'a>>,
    /// Body bytes in `small`.
    pub(super) small_bytes: usize,
    /// Verified files go to the session's commit thread through this.
    pub(super) commits: &'c Commits<'a>,
    pub(super) stats: Stats,
    pub(super) bar: crate::progress::Bar,
    /// Bodies started in this session, for the bar.
    pub(super) bodies: u64,
    /// The directory the last file went into (a walk sends a directory's
    /// files together), so the next file there costs no path walk.
    pub(super) parent: Option<Parent>,
    /// Staged directories this session made, by [`super::dirs::dir_key`],
    /// with each one's directory: what is below one that is not in place
    /// yet is opened from it.
    pub(super) stages: HashMap<u128, (Arc<super::stage::Stage>, Dir)>,
    /// The stages made since the last DIR entry closed the ones before:
    /// the next DIR closes them (the walk has left them).
    pub(super) open_stages: Vec<Arc<super::stage::Stage>>,
}

/// A directory below OUT that files go into, and how a file created
/// there gets its mode.
pub(super) struct OutDir {
    pub(super) dir: Dir,
    /// A file created there with a mode gets that mode less the umask
    /// (no default ACL decides instead): a small unnamed file is created
    /// with its final mode, without a `fchmod` (see
    /// [`store::small_file`]). Only asked where files are created
    /// unnamed.
    pub(super) plain_modes: bool,
    /// The nearest staged directory it is in (or is), until that one is
    /// in place: what is placed here is reported only after it.
    pub(super) stage: Option<Arc<super::stage::Stage>>,
    /// It is that stage's own directory: a small file may be created at
    /// its name here while the stage is open.
    pub(super) own: bool,
}

impl std::ops::Deref for OutDir {
    type Target = Dir;
    fn deref(&self) -> &Dir {
        &self.dir
    }
}

/// An open directory below OUT, by its wire path components.
pub(super) struct Parent {
    pub(super) comps: Vec<std::ffi::OsString>,
    pub(super) dir: Arc<OutDir>,
    /// Free bytes there as last asked of the file system, less what was
    /// accepted since.
    pub(super) free: Option<u64>,
    pub(super) asked: Instant,
    /// This session created it: a name in it that this session has not
    /// claimed yet is free, unless another process wrote there since (a
    /// small file's link then fails, loudly, and never replaces).
    pub(super) fresh: bool,
}

/// The directories a session created, the most recent up to
/// [`FreshDirs::MAX`] (forgotten all at once beyond: forgetting one costs
/// a look at the target of each file offered in it, as elsewhere).
#[derive(Default)]
pub(super) struct FreshDirs(KeySet<u128>);

impl FreshDirs {
    pub(super) const MAX: usize = 4096;

    pub(super) fn insert(&mut self, key: u128) {
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(key);
    }

    pub(super) fn contains(&self, key: u128) -> bool {
        self.0.contains(&key)
    }
}

/// Verified files on their way from a session thread to its commit thread,
/// which writes out the bodies held in memory, applies modes and mtimes,
/// makes the files durable and puts them in place in batches (group
/// commit): while it writes one batch, its sync thread syncs the one
/// before, and the session keeps receiving the next.
pub(super) struct Commits<'a> {
    pub(super) state: Mutex<CommitState<'a>>,
    /// The session and the commit thread wait on this one.
    pub(super) changed: Condvar,
    /// The sync thread waits on this one, for a sync asked of it.
    pub(super) sync_asked: Condvar,
    /// Why the output directory cannot take more files, once a commit
    /// failed because of it (see [`Shared::out_unusable`]): the session
    /// ends with one error instead of failing file after file.
    pub(super) stop: std::sync::OnceLock<String>,
}

#[derive(Default)]
pub(super) struct CommitState<'a> {
    pub(super) queue: Vec<Verified<'a>>,
    /// Body bytes in `queue`.
    pub(super) queued_bytes: u64,
    /// Bytes of the bodies in `queue` held in memory.
    pub(super) held_bytes: usize,
    /// The commit thread is working on a batch, or holds files that wait
    /// for a sync.
    pub(super) busy: bool,
    /// Files written by the commit thread that wait for the sync that makes
    /// their data durable, each open: they count with `queue` against the
    /// open-file bound.
    pub(super) written: usize,
    /// The sync the commit thread asked of its sync thread.
    pub(super) sync: SyncSlot<'a>,
    /// The commit thread is done: its sync thread ends.
    pub(super) sync_quit: bool,
    /// Commit what is queued now, without waiting for a full group.
    pub(super) urgent: bool,
    /// The session is over: the commit thread ends once the queue is empty.
    pub(super) closed: bool,
    /// What committed batches amounted to, not yet collected by the session.
    pub(super) stats: Stats,
    /// Files placed (by the portable-form key of their name,
    /// [`super::admit::keys`]), not yet collected by the session: a LINK
    /// may point to them.
    pub(super) placed: Vec<u64>,
    /// Why RESULTs could not be written, if they could not.
    pub(super) broken: Option<String>,
    /// The session thread waits for the commit thread (room in the queue,
    /// or the queue drained): only then does the commit thread wake it.
    pub(super) session_waits: bool,
    /// Stages the session made, not yet taken by the commit thread.
    pub(super) new_stages: Vec<Arc<super::stage::Stage>>,
    /// Stages not yet in place (or failed): the session's drain waits for
    /// them.
    pub(super) staged: usize,
    /// The session closed a stage: the commit thread may put it in place.
    pub(super) stage_closed: bool,
    /// The session waits for everything to be committed (it is ending):
    /// every stage is closed.
    pub(super) drained: bool,
}

/// A sync the commit thread asks of its sync thread: one that makes the
/// data of `written` durable (before they are linked into place) and the
/// names of `linked` (before they are reported).
pub(super) struct SyncJob<'a> {
    pub(super) written: Vec<(Verified<'a>, std::fs::File)>,
    pub(super) linked: super::commit::Linked<'a>,
    /// A stage was put in place (renamed in its parent) since the last
    /// sync: the whole file system is synced.
    pub(super) staged: bool,
}

/// A [`SyncJob`] on its way to the sync thread and back (`Idle` while it
/// runs: the commit thread knows one is in flight).
#[derive(Default)]
pub(super) enum SyncSlot<'a> {
    #[default]
    Idle,
    Asked(SyncJob<'a>),
    Done(SyncJob<'a>, std::io::Result<()>),
}

/// An accepted file whose body has not arrived yet.
pub(super) struct Awaiting<'a> {
    pub(super) h: FileHeader,
    pub(super) name: WireName,
    pub(super) last: std::ffi::OsString,
    pub(super) dir: Arc<OutDir>,
    pub(super) names: store::Names,
    /// The resumed partial, open; `None` for a fresh file, whose partial
    /// is created when its body starts.
    pub(super) resumed: Option<(store::PartialWriter, store::FileId)>,
    pub(super) offset: u64,
    /// Extended attributes and ACLs to set before it is placed.
    pub(super) attrs: Vec<crate::xattr::Attr>,
    /// The file it replaces, when BLOCKS were sent for it (a delta).
    pub(super) old: Option<Old>,
    /// Accepted into an open stage: created at its name there.
    pub(super) ticket: Option<super::stage::Ticket>,
    pub(super) _guard: InflightGuard<'a>,
}

/// The file an offer replaces by a delta update: open (no-follow, as it
/// was when its blocks were hashed), and the end of the bytes BLOCKS
/// covered, within which SAME extents may come.
pub(super) struct Old {
    pub(super) file: Arc<store::cold::ColdFile>,
    pub(super) covered: u64,
}

/// A file whose whole body arrived, on its way to being verified and
/// committed.
pub(super) struct Received<'a> {
    pub(super) h: FileHeader,
    pub(super) name: WireName,
    pub(super) last: std::ffi::OsString,
    pub(super) dir: Arc<OutDir>,
    pub(super) names: store::Names,
    /// The partial's inode: only this one is renamed into place or removed.
    pub(super) id: store::FileId,
    pub(super) offset: u64,
    pub(super) started: Instant,
    /// How long its body took to arrive: whether its line goes on a
    /// terminal (not the wait for the sync of its group).
    pub(super) arriving: std::time::Duration,
    /// Extended attributes and ACLs to set before it is placed.
    pub(super) attrs: Vec<crate::xattr::Attr>,
    /// Accepted into an open stage: created at its name there (given back
    /// once its data is durable).
    pub(super) ticket: Option<super::stage::Ticket>,
    pub(super) _guard: InflightGuard<'a>,
}

/// A verified file waiting to be written out (if small), given its mode,
/// mtime and digest record, made durable and renamed into place: all of
/// it on the commit thread.
pub(super) struct Verified<'a> {
    /// Boxed, as in [`Unhashed`].
    pub(super) r: Box<Received<'a>>,
    /// `None` for a small body held without a file: the commit thread
    /// creates it (see [`super::commit::held_file`]), on the thread that
    /// also writes it and links it (made on the session thread, with the
    /// rest on the commit thread, the same system calls cost a third more
    /// CPU: two cores working on one directory's entries and inodes).
    pub(super) file: Option<std::fs::File>,
    /// The body, if not written to `file` yet (a small file).
    pub(super) body: store::budget::HeldBody,
    /// Attributes that could not be set (named, with why), for the RESULT.
    pub(super) note: Option<String>,
    /// Its delta block digests, computed as it was written: kept in the
    /// digest cache once it is placed.
    pub(super) blocks: Option<store::Blocks>,
    /// Created at its own name in its directory's open stage (see
    /// [`super::stage`]): nothing to link, it is in place with the stage.
    pub(super) direct: bool,
}

/// A small file received, its body in memory to be hashed with others
/// (see [`crate::md5multi`]).
pub(super) struct Unhashed<'a> {
    /// Boxed: it goes through several queues, and moving 300 bytes at
    /// each step cost more than one allocation (memcpy was the receiver's
    /// busiest user-space function).
    pub(super) r: Box<Received<'a>>,
    /// Its partial; `None` until it is verified (see
    /// [`store::create_small`]).
    pub(super) file: Option<std::fs::File>,
    pub(super) body: store::budget::HeldBody,
}

/// Why a file failed, for its RESULT and the log.
pub(super) struct Failure {
    pub(super) id: u32,
    /// The name as shown (escaped).
    pub(super) shown: String,
    pub(super) status: u8,
    pub(super) md5: Md5Digest,
    pub(super) message: String,
}

impl Stats {
    pub(super) fn add(&mut self, o: Stats) {
        self.ok += o.ok;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.bytes += o.bytes;
        self.mismatched += o.mismatched;
        self.asked_digest += o.asked_digest;
        self.more |= o.more;
        self.left += o.left;
        self.matched += o.matched;
    }
}

/// Removes a wire name from the in-flight map when dropped (if this
/// session still holds it).
pub(super) struct InflightGuard<'a> {
    pub(super) map: &'a Mutex<Inflight>,
    /// The map's own key (one allocation for both).
    pub(super) name: Arc<[u8]>,
    pub(super) holder: SocketAddr,
}

/// The names being received, by every session, and which peer holds each
/// (an insert and a remove per file, one lookup each; names come from
/// peers, hence a randomly seeded hasher).
pub(super) type Inflight = HashMap<Arc<[u8]>, SocketAddr, foldhash::quality::RandomState>;

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            // Removed at once; put back in the rare case that another
            // session from the same host took the name over meanwhile.
            if let Some((name, holder)) = m.remove_entry(&*self.name) {
                if holder != self.holder {
                    m.insert(name, holder);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_classify_errors() {
        let e = io::Error::from_raw_os_error(libc::ELOOP);
        assert_eq!(io_refusal("x", &e).0, Reject::Conflict);
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(io_refusal("x", &e).0, Reject::NoSpace);
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(io_refusal("x", &e).0, Reject::Io);
    }
}
